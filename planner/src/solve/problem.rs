//! The placement problem as the solvers see it: one choice per decision group, each choice's
//! memory at every slot and terms in every stage, the memory rows that can bind under the
//! budget, and each stage's time as a function of the few groups that touch it.

use crate::decisions::{ActChoice, Decisions, Group, OwnerChoice};
use crate::model::{Contribution, Rates, StageModel, StageTerms};
use std::collections::BTreeMap;

/// Scale of times in the solvers (milliseconds, so that rows are well scaled).
pub const MS: f64 = 1e3;
/// Scale of memory in the solvers' rows (MiB).
pub const MIB: f64 = (1u64 << 20) as f64;

/// One decision group's choices and their contributions.
pub struct GroupChoices {
    pub group: Group,
    pub owner: Vec<OwnerChoice>,
    pub acts: Vec<ActChoice>,
    pub contributions: Vec<Contribution>,
}

impl GroupChoices {
    pub fn len(&self) -> usize {
        self.contributions.len()
    }
    /// Writes choice `k` into `d`.
    pub fn apply(&self, k: usize, d: &mut Decisions) {
        match self.group {
            Group::Owner(o) => d.set_owner(o, self.owner[k]),
            Group::Acts(l) => d.layers[l as usize] = self.acts[k],
        }
    }
    /// Index of the choice `d` makes for this group.
    pub fn index_in(&self, d: &Decisions) -> usize {
        match self.group {
            Group::Owner(o) => self.owner.iter().position(|c| *c == d.owner(o)).unwrap_or(0),
            Group::Acts(l) => self.acts.iter().position(|c| *c == d.layers[l as usize]).unwrap_or(0),
        }
    }
    /// The leanest choice: the smallest memory at its own peak, then the smallest in total.
    pub fn leanest(&self) -> usize {
        (0..self.len())
            .min_by_key(|k| {
                let live = &self.contributions[*k].live;
                (live.iter().max().copied().unwrap_or(0), live.iter().sum::<u64>())
            })
            .unwrap_or(0)
    }
}

/// Every group's choices with their contributions.
pub fn enumerate(model: &StageModel) -> Vec<GroupChoices> {
    let program = model.program;
    Decisions::groups(program)
        .into_iter()
        .map(|group| match group {
            Group::Owner(o) => {
                let owner = OwnerChoice::all(program, o);
                let contributions = owner.iter().map(|c| model.owner(o, *c)).collect();
                GroupChoices { group, owner, acts: Vec::new(), contributions }
            }
            Group::Acts(l) => {
                let acts = ActChoice::all();
                let contributions = acts.iter().map(|c| model.acts(l, *c)).collect();
                GroupChoices { group, owner: Vec::new(), acts, contributions }
            }
        })
        .collect()
}

/// A memory row: sum of coefficients of the chosen choices <= rhs (MiB).
#[derive(Clone, Debug)]
pub struct MemRow {
    pub terms: Vec<(usize, usize, f64)>,
    pub rhs: f64,
}

/// One stage's terms as a linear function of the choices: a constant (the fixed part) plus
/// what each (group, choice) adds.
#[derive(Clone, Debug, Default)]
pub struct StageLinear {
    pub constant: StageTerms,
    pub terms: Vec<(usize, usize, StageTerms)>,
}

/// The problem under one budget.
pub struct Problem<'m, 'a> {
    pub model: &'m StageModel<'a>,
    pub fixed: Contribution,
    pub groups: Vec<GroupChoices>,
    /// Bytes the pool may hold at any slot.
    pub cap: u64,
    /// Bytes of host memory the plan may pin (None: no limit).
    pub host_cap: Option<u64>,
    /// The memory rows that can bind.
    pub rows: Vec<MemRow>,
    /// The slots of the memory rows: a plan whose live bytes fit at these fits at every slot
    /// (the others are dominated by one of them, or cannot exceed the capacity).
    pub binding_slots: Vec<usize>,
    /// Live bytes of each group's each choice at the binding slots, side by side (what local
    /// search reads on every move).
    pub binding_live: Vec<Vec<Vec<i64>>>,
    /// Per stage.
    pub stages: Vec<StageLinear>,
}

impl<'m, 'a> Problem<'m, 'a> {
    /// The problem of placing `model`'s groups within `cap` pool bytes and `host_cap` bytes of
    /// pinned host memory; Err with the reason when even the leanest choices exceed one of them.
    pub fn new(model: &'m StageModel<'a>, cap: u64, host_cap: Option<u64>) -> Result<Problem<'m, 'a>, String> {
        let fixed = model.fixed();
        let groups = enumerate(model);
        let (mut rows, binding_slots) = memory_rows(model, cap, &fixed, &groups)?;
        if let Some(h) = host_cap {
            rows.extend(host_row(h, &fixed, &groups)?);
        }
        let stages = stage_terms(model, &fixed, &groups);
        let binding_live = groups
            .iter()
            .map(|g| g.contributions.iter().map(|c| binding_slots.iter().map(|p| c.live[*p] as i64).collect()).collect())
            .collect();
        Ok(Problem { model, fixed, groups, cap, host_cap, rows, binding_slots, binding_live, stages })
    }

    /// Pinned host bytes of one choice per group.
    pub fn pinned(&self, pick: &[usize]) -> u64 {
        self.fixed.pinned + self.groups.iter().zip(pick).map(|(g, k)| g.contributions[*k].pinned).sum::<u64>()
    }

    /// Whether one choice per group fits both memories.
    pub fn feasible(&self, pick: &[usize]) -> bool {
        self.eval(pick).1 <= self.cap && self.host_cap.is_none_or(|h| self.pinned(pick) <= h)
    }

    pub fn rates(&self) -> &Rates {
        &self.model.rates
    }

    /// Each group's choice in `d`.
    pub fn picks_of(&self, d: &Decisions) -> Vec<usize> {
        self.groups.iter().map(|g| g.index_in(d)).collect()
    }

    /// The decisions of one choice per group.
    pub fn decisions(&self, pick: &[usize]) -> Decisions {
        let mut d = Decisions::all_gpu(self.model.program);
        for (g, k) in self.groups.iter().zip(pick) {
            g.apply(*k, &mut d);
        }
        d
    }

    /// Every group at its leanest choice.
    pub fn leanest(&self) -> Vec<usize> {
        self.groups.iter().map(GroupChoices::leanest).collect()
    }

    /// Step time (s) and peak bytes of one choice per group.
    pub fn eval(&self, pick: &[usize]) -> (f64, u64) {
        let (live, terms) = self.totals(pick);
        let r = self.rates();
        (terms.iter().map(|t| r.stage_time(t)).sum(), live.into_iter().max().unwrap_or(0) as u64)
    }

    /// Live bytes at every slot and terms of every stage of the fixed part plus one choice per
    /// group (`pick[g]`); live as i64 so that moves can subtract.
    /// The groups' curves are added as their changes, then summed once along the slots: the
    /// same integers as adding every curve, at the cost of the groups' items.
    pub fn totals(&self, pick: &[usize]) -> (Vec<i64>, Vec<StageTerms>) {
        let n = self.fixed.live.len();
        let mut delta = vec![0i64; n + 1];
        let mut terms = vec![StageTerms::default(); self.model.n_stages()];
        for (s, t) in &self.fixed.stages {
            terms[*s] = &terms[*s] + t;
        }
        for (g, k) in self.groups.iter().zip(pick) {
            let c = &g.contributions[*k];
            for &(slot, bytes) in &c.delta {
                delta[slot] += bytes;
            }
            for (s, t) in &c.stages {
                terms[*s] = &terms[*s] + t;
            }
        }
        let mut acc = 0i64;
        let live = self
            .fixed
            .live
            .iter()
            .zip(&delta)
            .map(|(f, d)| {
                acc += d;
                *f as i64 + acc
            })
            .collect();
        (live, terms)
    }

    /// A row's value under one choice per group (0 for the empty pick of an artificial column).
    pub fn row_value(row: &MemRow, pick: &[usize]) -> f64 {
        if pick.is_empty() {
            0.0
        } else {
            row.terms.iter().filter(|(gi, k, _)| pick[*gi] == *k).map(|t| t.2).sum()
        }
    }
}

/// The memory rows that can bind: coefficients (MiB) of what each choice adds over its group's
/// leanest, against the room the leanest choices leave at that slot. Structure used for speed:
/// a slot whose memory cannot fall after it is dominated by the next slot; slots that cannot
/// exceed the capacity even with every group at its largest choice are dropped. Returns the rows
/// and their slots.
fn memory_rows(model: &StageModel, cap: u64, fixed: &Contribution, groups: &[GroupChoices]) -> Result<(Vec<MemRow>, Vec<usize>), String> {
    let cap = cap as f64;
    let n_slots = model.n_slots();
    let mut base: Vec<f64> = fixed.live.iter().map(|b| *b as f64).collect();
    let mut can_fall: Vec<bool> = fixed.frees_at.clone();
    let mut mins: Vec<Vec<u64>> = Vec::with_capacity(groups.len());
    for g in groups {
        let m: Vec<u64> = (0..n_slots).map(|p| g.contributions.iter().map(|c| c.live[p]).min().unwrap_or(0)).collect();
        for p in 0..n_slots {
            base[p] += m[p] as f64;
            can_fall[p] |= g.contributions.iter().any(|c| c.frees_at[p]);
        }
        mins.push(m);
    }
    if let Some((p, b)) = base.iter().enumerate().find(|(_, b)| **b > cap) {
        return Err(format!(
            "at {} even the leanest choices hold {} (plus {} fixed overhead and the pool's fragmentation room)",
            model.slot_label(p),
            models::Bytes(*b as u64),
            model.hw.fixed_overhead
        ));
    }
    let coef = |gi: usize, k: usize, p: usize| (groups[gi].contributions[k].live[p] - mins[gi][p]) as f64;
    let mut candidates: Vec<usize> = (0..n_slots).filter(|p| can_fall[*p] || *p + 1 == n_slots).collect();
    // A slot is dropped when its next candidate holds at least as much under every choice.
    let dominated = |p: usize, q: usize| {
        base[q] >= base[p] && groups.iter().enumerate().all(|(gi, g)| (0..g.len()).all(|k| coef(gi, k, q) >= coef(gi, k, p)))
    };
    let mut kept = Vec::new();
    for (i, &p) in candidates.iter().enumerate() {
        let next = candidates.get(i + 1).copied();
        let prev = kept.last().copied();
        if next.is_some_and(|q| dominated(p, q)) || prev.is_some_and(|q| dominated(p, q)) {
            continue;
        }
        kept.push(p);
    }
    candidates = kept;
    let mut mem_rows: Vec<MemRow> = Vec::new();
    let mut slots = Vec::new();
    for &p in &candidates {
        let worst: f64 =
            base[p] + groups.iter().enumerate().map(|(gi, g)| (0..g.len()).map(|k| coef(gi, k, p)).fold(0.0, f64::max)).sum::<f64>();
        if worst <= cap {
            continue;
        }
        let mut row = MemRow { terms: Vec::new(), rhs: (cap - base[p]) / MIB };
        for (gi, g) in groups.iter().enumerate() {
            for k in 0..g.len() {
                let c = coef(gi, k, p);
                if c > 0.0 {
                    row.terms.push((gi, k, c / MIB));
                }
            }
        }
        mem_rows.push(row);
        slots.push(p);
    }
    Ok((mem_rows, slots))
}

/// The row of the pinned host memory, where it can bind: coefficients (MiB) of what each choice
/// pins over its group's least, against the room the least leave.
fn host_row(host_cap: u64, fixed: &Contribution, groups: &[GroupChoices]) -> Result<Option<MemRow>, String> {
    let mins: Vec<u64> = groups.iter().map(|g| g.contributions.iter().map(|c| c.pinned).min().unwrap_or(0)).collect();
    let base = fixed.pinned + mins.iter().sum::<u64>();
    if base > host_cap {
        return Err(format!(
            "even the placements that pin the least host memory pin {}, more than the {} the host allows",
            models::Bytes(base),
            models::Bytes(host_cap)
        ));
    }
    let most = fixed.pinned + groups.iter().map(|g| g.contributions.iter().map(|c| c.pinned).max().unwrap_or(0)).sum::<u64>();
    if most <= host_cap {
        return Ok(None);
    }
    let mut row = MemRow { terms: Vec::new(), rhs: (host_cap - base) as f64 / MIB };
    for (gi, g) in groups.iter().enumerate() {
        for (k, c) in g.contributions.iter().enumerate() {
            if c.pinned > mins[gi] {
                row.terms.push((gi, k, (c.pinned - mins[gi]) as f64 / MIB));
            }
        }
    }
    Ok(Some(row))
}

/// Each stage's fixed terms and the terms each (group, choice) adds to it.
fn stage_terms(model: &StageModel, fixed: &Contribution, groups: &[GroupChoices]) -> Vec<StageLinear> {
    let mut stages = vec![StageLinear::default(); model.n_stages()];
    for (s, st) in &fixed.stages {
        stages[*s].constant = &stages[*s].constant + st;
    }
    for (gi, g) in groups.iter().enumerate() {
        for (k, c) in g.contributions.iter().enumerate() {
            for (s, st) in &c.stages {
                stages[*s].terms.push((gi, k, st.clone()));
            }
        }
    }
    stages
}

/// The exact time of one stage over every combination of its groups' local choices.
pub struct LocalHull {
    /// The groups with a term in this stage, each with its choices' class (equal terms here).
    pub groups: Vec<(usize, Vec<usize>)>,
    /// Stage time of each combination of classes (mixed radix, first group most significant).
    pub times: Vec<f64>,
}

/// Each group's total terms in one stage, per choice.
pub fn per_group_terms(groups: &[GroupChoices], stage: &StageLinear) -> BTreeMap<usize, Vec<StageTerms>> {
    let mut per_group: BTreeMap<usize, Vec<StageTerms>> = Default::default();
    for (gi, k, q) in &stage.terms {
        let e = per_group.entry(*gi).or_insert_with(|| vec![StageTerms::default(); groups[*gi].len()]);
        e[*k] = &e[*k] + q;
    }
    per_group
}

/// The convex hull of T_s >= stage_time(terms) over the groups touching stage s: one weight per
/// combination of the groups' local classes, whose marginals are the groups' choices. Exact for
/// integral choices, and its relaxation cannot hide part of a copy behind compute. None when the
/// stage has no group or more than `limit` combinations.
pub fn local_hull(groups: &[GroupChoices], stage: &StageLinear, r: &Rates, limit: usize) -> Option<LocalHull> {
    let mut hull_groups = Vec::new();
    let mut reps: Vec<Vec<StageTerms>> = Vec::new();
    let mut n = 1usize;
    for (gi, ts) in per_group_terms(groups, stage) {
        let mut classes = Vec::with_capacity(ts.len());
        let mut rep: Vec<StageTerms> = Vec::new();
        for t in &ts {
            match rep.iter().position(|u| u.approx_eq(t)) {
                Some(q) => classes.push(q),
                None => {
                    classes.push(rep.len());
                    rep.push(t.clone());
                }
            }
        }
        if rep.len() < 2 {
            continue; // the same here under every choice: constant
        }
        n = n.saturating_mul(rep.len());
        hull_groups.push((gi, classes));
        reps.push(rep);
    }
    if hull_groups.is_empty() || n > limit {
        return None;
    }
    // Constant part: the fixed terms plus the single class of groups left out.
    let mut base = stage.constant.clone();
    for (gi, k, q) in &stage.terms {
        if !hull_groups.iter().any(|(g, _)| g == gi) && *k == 0 {
            base = &base + q;
        }
    }
    let mut times = Vec::with_capacity(n);
    for c in 0..n {
        let mut t = base.clone();
        let mut rest = c;
        for rep in reps.iter().rev() {
            t = &t + &rep[rest % rep.len()];
            rest /= rep.len();
        }
        times.push(r.stage_time(&t));
    }
    Some(LocalHull { groups: hull_groups, times })
}
