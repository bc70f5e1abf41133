//! The MILP: one binary per (group, choice), one continuous time per stage.
//!
//! minimise   sum_s T_s
//! subject to sum_c x[g][c] = 1                                   every group g
//!            base(p) + sum_{g,c} x[g][c] * live[g][c](p) <= cap   every slot p that can bind
//!            T_s >= each lane expression of model.rs (compute, two copy rows, two host rows)
//!
//! Stage times are written exactly per stage instead (the rows above remain only for a stage
//! with more than `HULL_LIMIT` combinations): the groups with a term in stage s, each with its
//! choices split into classes (choices that put the same terms into s), give one weight z[s][c]
//! per combination c of classes, with
//!            sum_{c: class of g in c = q} z[s][c] = sum_{k in q} x[g][k]   every g in s, class q
//!            T_s >= sum_c z[s][c] * stage_time(c)
//! For 0/1 choices one z is 1 and this is the stage time; the relaxation is the convex hull of
//! each stage's max(compute, copies, host) (the rows above let it hide a fraction of every copy
//! behind the compute: a root bound about 6% low on gpt3-2.7b at 24 GiB, 3% with the hull).
//!
//! Structure used for speed: each group's smallest curve goes into the constant (coefficients
//! are what a choice adds over the group's leanest choice); a slot whose memory cannot fall
//! after it is dominated by the next slot; slots that cannot exceed the capacity even with every
//! group at its largest choice are dropped; times are in milliseconds and memory in MiB so the
//! rows are well scaled.
//!
//! How a solve goes:
//! 1. starting points (heuristics, periodic patterns) improved by local search: a first plan;
//! 2. the Lagrangian bound of `dual`: the memory rows priced, the rest minimised exactly by a
//!    dynamic program over the stages, the prices found by column generation, the feasible set
//!    split on a large item (the embedding table) when the bound alone leaves too wide a gap;
//!    the master's mixture of plans rounded along the layers (`dither`), made to fit (`repair`)
//!    and improved gives the plans. When the best plan is within the gap of that bound, done:
//!    the reported bound is the Lagrangian one (valid for any multipliers, see `dual`);
//! 3. otherwise HiGHS's branch and bound on this MILP, from the best plan, stopping at the
//!    first plan the Lagrangian bound proves (objective_target) or at its own gap; the bound
//!    reported is the larger of the two.
//! Measured on this 2-core machine (`solve::timing`), gpt3-2.7b at 24 GiB: 0.55 s, was 9-11 s
//! with HiGHS alone; gpt3-175b at 80 GiB: 1.1 s per solve, was 13 s. Where the bound does not
//! close the gap (gpt3-2.7b at 16 GiB: 1.15% after 3 s) HiGHS runs after it.
//!
//! Knobs for measuring (environment, read per solve): OFFPLAN_HIGHS_LOG (HiGHS log on stderr),
//! OFFPLAN_SOLVE_TRACE (phase times), OFFPLAN_HIGHS_OPTS ("key=value,..." HiGHS options),
//! OFFPLAN_EXT_LIMIT (the largest stage given the exact formulation; 0: none, as before),
//! OFFPLAN_NO_PATTERNS (no periodic starting points), OFFPLAN_LS_SECONDS (local search time),
//! OFFPLAN_NO_DUAL (HiGHS alone, as before the Lagrangian bound), OFFPLAN_NO_DITHER (no
//! rounding of the master's mixture), OFFPLAN_ROUND_SECONDS (local search after a rounding).

use super::model::{Contribution, Rates, StageModel, StageTerms};
use crate::decisions::{ActChoice, Decisions, Group, OwnerChoice};
use crate::PlanError;
use good_lp::{highs, variable, Expression, ProblemVariables, SolverModel, Variable};
use models::schedule::SolverReport;
use models::{Bytes, Seconds};
use std::time::Instant;

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
    pub fn is_empty(&self) -> bool {
        self.contributions.is_empty()
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

pub struct SolveOutcome {
    pub decisions: Decisions,
    pub report: SolverReport,
}

/// Limits of one solve.
#[derive(Clone, Debug)]
pub struct SolveLimits {
    pub time_limit: f64,
    pub mip_rel_gap: f64,
    pub threads: u32,
}

const MS: f64 = 1e3;
/// Most class combinations a stage may have for its exact local formulation.
const HULL_LIMIT: usize = 4096;
/// Work of the solve's phases, counted rather than timed so that a plan is the same on every
/// machine and under any load (the time limit only stops a phase early as a safety net): move
/// evaluations of local search on the starting points, shared between them (about 0.05 s on
/// this project's 2-core machine), and after each rounding of the master's mixture (0.1 s);
/// column generation iterations of the Lagrangian bound before branch and bound (3 s on the
/// largest shipped configs); moves that make a rounded mixture fit.
const LOCAL_SEARCH_WORK: u64 = 150_000;
const ROUND_WORK: u64 = 300_000;
const DUAL_ITERATIONS: usize = 500;
const REPAIR_MOVES_PER_GROUP: usize = 8;

/// A phase's allowance: units of work, and the wall-clock deadline of the whole solve.
#[derive(Clone, Copy, Debug)]
pub struct Effort {
    pub work: u64,
    pub deadline: Instant,
}

impl Effort {
    pub fn new(work: u64, deadline: Instant) -> Effort {
        Effort { work, deadline }
    }
    /// Spends one unit; false once none is left or the deadline has passed.
    pub fn spend(&mut self) -> bool {
        if self.work == 0 || Instant::now() >= self.deadline {
            self.work = 0;
            return false;
        }
        self.work -= 1;
        true
    }
    pub fn spent(&self) -> bool {
        self.work == 0 || Instant::now() >= self.deadline
    }
}
const MIB: f64 = (1u64 << 20) as f64;

/// Solves for the decisions minimising the stage model's step time within `budget`.
/// `warm` must be feasible (the caller checks it); it becomes HiGHS's first incumbent.
/// `starts` must fit the budget; each is improved by local search (a fifth of the time limit
/// shared between them) and the best becomes HiGHS's first incumbent.
pub fn solve(model: &StageModel, budget: Bytes, starts: &[Decisions], limits: &SolveLimits) -> Result<SolveOutcome, PlanError> {
    let t0 = Instant::now();
    let trace = std::env::var("OFFPLAN_SOLVE_TRACE").is_ok();
    let fixed = model.fixed();
    let groups = enumerate(model);
    if trace {
        eprintln!("solve: enumerated at {:.2} s", t0.elapsed().as_secs_f64());
    }
    let mut starts = starts.to_vec();
    if std::env::var("OFFPLAN_NO_PATTERNS").is_err() {
        starts.extend(patterns(model, &fixed, &groups, &starts, model.capacity(budget)));
    }
    if trace {
        eprintln!("solve: patterns at {:.2} s", t0.elapsed().as_secs_f64());
    }
    let cost = |d: &Decisions| eval_picks(model, &fixed, &groups, &groups.iter().map(|g| g.index_in(d)).collect::<Vec<_>>()).0;
    let deadline = t0 + std::time::Duration::from_secs_f64(limits.time_limit);
    let share = LOCAL_SEARCH_WORK / starts.len().max(1) as u64;
    let warm = starts
        .iter()
        .map(|w| improve(model, &groups, w, model.capacity(budget), Effort::new(share, deadline)))
        .map(|d| (cost(&d), d))
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, d)| d);
    let warm = warm.as_ref();
    if trace {
        eprintln!("solve: warm start at {:.2} s", t0.elapsed().as_secs_f64());
    }
    let cap = model.capacity(budget);
    let mem_rows = memory_rows(model, budget, &fixed, &groups)?;
    let terms = stage_terms(model, &fixed, &groups);
    let gap_ok = |best: f64, bound: f64| best - bound <= limits.mip_rel_gap * best;
    // Best plan known (picks, ms) and best bound proved (ms), with how it was proved.
    let mut best: Option<(f64, Vec<usize>)> = warm.map(|w| {
        let p: Vec<usize> = groups.iter().map(|g| g.index_in(w)).collect();
        (eval_picks(model, &fixed, &groups, &p).0 * MS, p)
    });
    let mut bound = f64::NEG_INFINITY;
    let mut how: Vec<String> = Vec::new();
    let mut status = String::from("Optimal");
    // A Lagrangian bound by dynamic programming over the stages (see `dual`): when it proves the
    // best plan known within the gap, no branch and bound is needed.
    if std::env::var("OFFPLAN_NO_DUAL").is_err() {
        let td = Instant::now();
        let dp = super::dual::StageDp::new(&groups, &terms, &model.rates, MS, 1 << 16);
        if trace {
            eprintln!("solve: dp built ({}) in {:.3} s", dp.is_some(), td.elapsed().as_secs_f64());
        }
        if let Some(dp) = dp {
            let upper = best.as_ref().map_or(f64::INFINITY, |b| b.0);
            let dual_effort = Effort::new(DUAL_ITERATIONS as u64, td + std::time::Duration::from_secs_f64(limits.time_limit * 0.5));
            let starts: Vec<Vec<usize>> = starts.iter().map(|d| groups.iter().map(|g| g.index_in(d)).collect()).collect();
            // Plans from the master's mixture: rounded along the layers, made to fit, improved.
            let no_round = std::env::var("OFFPLAN_NO_DITHER").is_ok();
            let mut round = |xbar: &[Vec<f64>]| -> Option<(f64, Vec<usize>)> {
                if no_round || xbar.is_empty() {
                    return None;
                }
                let tr = Instant::now();
                let p = repair(
                    model,
                    &fixed,
                    &groups,
                    &dither(&groups, xbar),
                    cap,
                    Effort::new((groups.len() * REPAIR_MOVES_PER_GROUP) as u64, deadline),
                )?;
                let mut d = warm.cloned().unwrap_or_else(|| Decisions::all_gpu(model.program));
                for (g, k) in groups.iter().zip(&p) {
                    g.apply(*k, &mut d);
                }
                let d = improve(model, &groups, &d, cap, Effort::new(ROUND_WORK, deadline));
                let p: Vec<usize> = groups.iter().map(|g| g.index_in(&d)).collect();
                let (t, peak) = eval_picks(model, &fixed, &groups, &p);
                if trace {
                    eprintln!("solve: rounded mixture in {:.2} s", tr.elapsed().as_secs_f64());
                }
                (peak <= cap).then_some((t * MS, p))
            };
            let res = super::dual::branch_and_price(
                model,
                &fixed,
                &groups,
                &dp,
                &mem_rows,
                cap,
                &starts,
                upper,
                limits.mip_rel_gap,
                limits.threads,
                dual_effort,
                trace,
                &mut round,
            );
            if trace {
                eprintln!(
                    "solve: dual done at {:.2} s: bound {:.4} ms after {} iterations",
                    t0.elapsed().as_secs_f64(),
                    res.bound,
                    res.iterations
                );
            }
            if res.bound > bound {
                bound = res.bound;
                how = vec![format!("Lagrangian bound of the memory rows by stage DP ({} columns, {} nodes)", res.iterations, res.nodes)];
            }
            if let Some((t, p)) = res.best {
                if best.as_ref().is_none_or(|b| t < b.0) {
                    best = Some((t, p));
                }
            }
        }
    }
    // Any plan at or below this time is proved within the gap by the bound so far.
    let target = bound.is_finite().then(|| bound / (1.0 - limits.mip_rel_gap) * (1.0 - 1e-9));
    let proved_early = best.as_ref().is_some_and(|b| gap_ok(b.0, bound));
    if !proved_early {
        let left = limits.time_limit - t0.elapsed().as_secs_f64();
        let r = branch_and_bound(
            model,
            budget,
            &groups,
            &mem_rows,
            &terms,
            best.as_ref().map(|b| b.1.as_slice()),
            None,
            target,
            left,
            limits.mip_rel_gap,
            limits.threads,
            trace,
        )?;
        status = r.status.clone();
        let t = eval_picks(model, &fixed, &groups, &r.picks);
        if t.1 <= cap && best.as_ref().is_none_or(|b| t.0 * MS < b.0) {
            best = Some((t.0 * MS, r.picks));
        }
        if r.bound > bound {
            bound = r.bound;
            how = vec!["HiGHS branch and bound".into()];
        } else {
            how.push("HiGHS branch and bound".into());
        }
    }
    let Some((objective, picks)) = best else {
        return Err(PlanError::Solver("no plan found within the time limit".into()));
    };
    let mut decisions = warm.cloned().unwrap_or_else(|| Decisions::all_gpu(model.program));
    for (g, k) in groups.iter().zip(&picks) {
        g.apply(*k, &mut decisions);
    }
    let objective = objective / MS;
    let bound = (bound / MS).min(objective);
    let gap = if objective > 0.0 { ((objective - bound) / objective).max(0.0) } else { 0.0 };
    let binaries: usize = groups.iter().map(|g| g.len()).sum();
    Ok(SolveOutcome {
        decisions,
        report: SolverReport {
            solver: format!(
                "stage model: {binaries} choices, {} stage times, {} memory rows; bound: {}",
                model.n_stages(),
                mem_rows.len(),
                how.join(", ")
            ),
            objective: Seconds(objective),
            bound: Seconds(bound),
            gap,
            solve_seconds: t0.elapsed().as_secs_f64(),
            status,
        },
    })
}

/// The memory rows that can bind: coefficients (MiB) of what each choice adds over its group's
/// leanest, against the room the leanest choices leave at that slot.
pub(super) fn memory_rows(
    model: &StageModel,
    budget: Bytes,
    fixed: &Contribution,
    groups: &[GroupChoices],
) -> Result<Vec<super::dual::MemRow>, PlanError> {
    let cap = model.capacity(budget) as f64;
    let n_slots = model.n_slots();
    // Memory rows.
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
        return Err(PlanError::Infeasible {
            budget,
            floor: model.hw.budget_for(Bytes(*b as u64)),
            reason: format!(
                "at {} even the leanest choices hold {} (plus {} fixed overhead and the pool's fragmentation room)",
                model.slot_label(p),
                Bytes(*b as u64),
                model.hw.fixed_overhead
            ),
        });
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
    let mut mem_rows: Vec<super::dual::MemRow> = Vec::new();
    for &p in &candidates {
        let worst: f64 =
            base[p] + groups.iter().enumerate().map(|(gi, g)| (0..g.len()).map(|k| coef(gi, k, p)).fold(0.0, f64::max)).sum::<f64>();
        if worst <= cap {
            continue;
        }
        let mut row = super::dual::MemRow { terms: Vec::new(), rhs: (cap - base[p]) / MIB };
        for (gi, g) in groups.iter().enumerate() {
            for k in 0..g.len() {
                let c = coef(gi, k, p);
                if c > 0.0 {
                    row.terms.push((gi, k, c / MIB));
                }
            }
        }
        mem_rows.push(row);
    }
    Ok(mem_rows)
}

/// Each stage's fixed terms and the terms each (group, choice) adds to it.
pub(super) fn stage_terms(
    model: &StageModel,
    fixed: &Contribution,
    groups: &[GroupChoices],
) -> Vec<(StageTerms, Vec<(usize, usize, StageTerms)>)> {
    let n_stages = model.n_stages();
    // Every term as constant + sum of x * coefficient.
    let mut terms: Vec<(StageTerms, Vec<(usize, usize, StageTerms)>)> = vec![(StageTerms::default(), Vec::new()); n_stages];
    for (s, st) in &fixed.stages {
        terms[*s].0 = add_terms(&terms[*s].0, st);
    }
    for (gi, g) in groups.iter().enumerate() {
        for (k, c) in g.contributions.iter().enumerate() {
            for (s, st) in &c.stages {
                terms[*s].1.push((gi, k, st.clone()));
            }
        }
    }
    terms
}

/// What one branch and bound gave (times in ms).
struct BranchAndBound {
    picks: Vec<usize>,
    bound: f64,
    status: String,
}

/// The MILP of the module's top comment with HiGHS, from `warm` (picks), over the choices
/// `allowed` leaves (all when None), for at most `time_limit` seconds.
#[allow(clippy::too_many_arguments)]
fn branch_and_bound(
    model: &StageModel,
    budget: Bytes,
    groups: &[GroupChoices],
    mem_rows: &[super::dual::MemRow],
    terms: &[(StageTerms, Vec<(usize, usize, StageTerms)>)],
    warm: Option<&[usize]>,
    allowed: Option<&[Vec<bool>]>,
    target: Option<f64>,
    time_limit: f64,
    mip_rel_gap: f64,
    threads: u32,
    trace: bool,
) -> Result<BranchAndBound, PlanError> {
    let t0 = Instant::now();
    let n_stages = model.n_stages();
    let r = model.rates;
    let mut vars = ProblemVariables::new();
    let x: Vec<Vec<Variable>> = groups
        .iter()
        .enumerate()
        .map(|(gi, g)| {
            (0..g.len())
                .map(|k| vars.add(if allowed.is_none_or(|a| a[gi][k]) { variable().binary() } else { variable().binary().max(0.0) }))
                .collect()
        })
        .collect();
    let t: Vec<Variable> = (0..n_stages).map(|_| vars.add(variable().min(0.0))).collect();
    // Column indices, in the order the variables were added (HiGHS columns follow it).
    let mut col = 0usize;
    let xi: Vec<Vec<usize>> = x
        .iter()
        .map(|xs| {
            xs.iter()
                .map(|_| {
                    col += 1;
                    col - 1
                })
                .collect()
        })
        .collect();
    let ti: Vec<usize> = (0..n_stages).map(|s| col + s).collect();
    let objective: Expression = t.iter().copied().sum();
    let mut rows: Vec<good_lp::Constraint> = Vec::new();

    for xs in &x {
        let e: Expression = xs.iter().copied().sum();
        rows.push(e.eq(1.0));
    }

    // Memory rows, a hair below the capacity so that rounding in the solver never lets a plan over it.
    for row in mem_rows {
        let mut e = Expression::from(0.0);
        for (gi, k, c) in &row.terms {
            e += x[*gi][*k] * *c;
        }
        rows.push(e.leq(row.rhs - 1e-6));
    }
    // Stages whose time gets the exact local formulation (see `local_hull`).
    let ext_limit: usize = std::env::var("OFFPLAN_EXT_LIMIT").ok().and_then(|v| v.parse().ok()).unwrap_or(HULL_LIMIT);
    let mut hulls: Vec<Option<LocalHull>> = Vec::with_capacity(n_stages);
    for (c0, vs) in terms {
        hulls.push(local_hull(groups, c0, vs, &r, ext_limit));
    }
    let mut z: Vec<Vec<Variable>> = Vec::with_capacity(n_stages);
    let mut zi: Vec<Vec<usize>> = Vec::with_capacity(n_stages);
    let mut zcol = col + n_stages;
    for h in &hulls {
        let n = h.as_ref().map_or(0, |h| h.times.len());
        z.push((0..n).map(|_| vars.add(variable().min(0.0))).collect());
        zi.push(
            (0..n)
                .map(|_| {
                    zcol += 1;
                    zcol - 1
                })
                .collect(),
        );
    }
    for (s, h) in hulls.iter().enumerate() {
        let Some(h) = h else { continue };
        // T_s >= sum_c z_c time_c, and the combinations' marginals are the groups' choices.
        let mut e = Expression::from(0.0);
        for (c, tc) in h.times.iter().enumerate() {
            e += z[s][c] * (tc * MS);
        }
        rows.push((t[s] - e).geq(0.0));
        for (j, (gi, classes)) in h.groups.iter().enumerate() {
            let n_classes = classes.iter().copied().max().map_or(0, |m| m + 1);
            let stride: usize = h.groups[j + 1..].iter().map(|(_, cl)| cl.iter().copied().max().map_or(0, |m| m + 1)).product();
            for q in 0..n_classes {
                if j > 0 && q + 1 == n_classes {
                    continue; // implied by the other classes and the first group's rows
                }
                let mut e = Expression::from(0.0);
                for c in 0..h.times.len() {
                    if (c / stride) % n_classes == q {
                        e += z[s][c];
                    }
                }
                for (k, cl) in classes.iter().enumerate() {
                    if *cl == q {
                        e -= x[*gi][k];
                    }
                }
                rows.push(e.eq(0.0));
            }
        }
    }
    for (s, (c0, vs)) in terms.iter().enumerate() {
        if hulls[s].is_some() {
            continue;
        }
        let lin = |f: &dyn Fn(&StageTerms) -> f64| -> Expression {
            let mut e = Expression::from(f(c0) * MS);
            for (gi, k, st) in vs {
                let v = f(st);
                if v != 0.0 {
                    e += x[*gi][*k] * (v * MS);
                }
            }
            e
        };
        let any = |f: &dyn Fn(&StageTerms) -> f64| f(c0) != 0.0 || vs.iter().any(|(_, _, q)| f(q) != 0.0);
        let copies = any(&|q| q.h2d) || any(&|q| q.d2h);
        let host = any(&|q| q.host) || any(&|q| q.after_host);
        // One row per lane expression (model.rs): compute always, the copy lanes with copies or
        // host work, the host ones with host work.
        let wanted = |i: usize| if Rates::HOST_LANES[i] { host } else { i == 0 || copies || host };
        for i in (0..5).filter(|&i| wanted(i)) {
            rows.push((t[s] - lin(&|q| r.lanes(q)[i])).geq(0.0));
        }
        // Disjunctive cuts: the relaxation may overlap a fraction of a copy with all of a
        // stage's compute; no 0/1 choice can. With each group's coefficients shifted so its
        // smallest is 0 (exact, one choice per group), A(x) = A0 + sum a x and T >= A, T >= B >= B0:
        //   T >= m + sum (a - (m - A0))^+ x,  m = max(A0, B0),
        // valid because a chosen set with any positive term gives at most A(x), and none gives m.
        let fns: [&dyn Fn(&StageTerms) -> f64; 5] =
            [&|q| r.lanes(q)[0], &|q| r.lanes(q)[1], &|q| r.lanes(q)[2], &|q| r.lanes(q)[3], &|q| r.lanes(q)[4]];
        let shifted: Vec<(f64, Vec<(usize, usize, f64)>)> = fns.iter().map(|f| shift(groups, c0, vs, *f)).collect();
        let floor_t = shifted.iter().map(|(c, _)| *c).fold(0.0, f64::max);
        for (a0, a) in &shifted {
            {
                let m = floor_t;
                if m <= *a0 {
                    continue; // no stronger than T >= A
                }
                let mut e = Expression::from(m * MS);
                let mut any_term = false;
                for (gi, k, v) in a {
                    let c = v - (m - a0);
                    if c > 0.0 {
                        e += x[*gi][*k] * (c * MS);
                        any_term = true;
                    }
                }
                if any_term {
                    rows.push((t[s] - e).geq(0.0));
                }
            }
        }
    }

    let mut problem = highs(vars.minimise(objective.clone()));
    for row in rows {
        problem.add_constraint(row);
    }
    let mut m = problem.into_inner();
    if trace {
        eprintln!("solve: model built at {:.2} s", t0.elapsed().as_secs_f64());
    }
    m.set_option("output_flag", std::env::var("OFFPLAN_HIGHS_LOG").is_ok());
    m.set_option("log_to_console", std::env::var("OFFPLAN_HIGHS_LOG").is_ok());
    m.set_option("time_limit", (time_limit - t0.elapsed().as_secs_f64()).max(0.01));
    m.set_option("mip_rel_gap", mip_rel_gap);
    // Measured on the benchmark problems: presolve finds little to remove from the exact
    // stage rows and its restarts cost more than they save (2.7b 15-17 s -> 10-12 s, 175b
    // 11 s -> 7.7 s).
    m.set_option("presolve", "off");
    if let Some(t) = target {
        // Stop at the first plan below it (the gap is then proved by the caller's bound).
        m.set_option("objective_target", t);
    }
    m.set_option("threads", threads.max(1) as i32);
    if let Ok(opts) = std::env::var("OFFPLAN_HIGHS_OPTS") {
        for kv in opts.split(',').filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap();
            if let Ok(i) = v.parse::<i32>() {
                m.set_option(k, i);
            } else if let Ok(f) = v.parse::<f64>() {
                m.set_option(k, f);
            } else if v == "true" || v == "false" {
                m.set_option(k, v == "true");
            } else {
                m.set_option(k, v);
            }
        }
    }
    let n_cols = zcol;
    if let Some(w) = warm {
        let mut cols = vec![0.0; n_cols];
        for (gi, k) in w.iter().enumerate() {
            cols[xi[gi][*k]] = 1.0;
        }
        for (s, h) in hulls.iter().enumerate() {
            if let Some(h) = h {
                let mut c = 0;
                for (gi, classes) in &h.groups {
                    let n_classes = classes.iter().copied().max().map_or(0, |m| m + 1);
                    c = c * n_classes + classes[w[*gi]];
                }
                cols[zi[s][c]] = 1.0;
            }
        }
        for (s, (c0, vs)) in terms.iter().enumerate() {
            let mut q = c0.clone();
            for (gi, k, st) in vs {
                if w[*gi] == *k {
                    q = add_terms(&q, st);
                }
            }
            cols[ti[s]] = r.stage_time(&q) * MS;
        }
        let _ = m.try_set_solution(Some(&cols), None, None, None);
    }
    let solved = m.try_solve().map_err(|e| PlanError::Solver(format!("HiGHS: {e:?}")))?;
    if trace {
        eprintln!("solve: HiGHS done at {:.2} s", t0.elapsed().as_secs_f64());
    }
    let status = format!("{:?}", solved.status());
    if status.contains("Infeasible") {
        return Err(PlanError::Infeasible {
            budget,
            floor: crate::plan::floor_of(model).0,
            reason: "no combination of placements keeps every slot within the budget".into(),
        });
    }
    let cols = solved.get_solution().columns().to_vec();
    if cols.len() != n_cols || !format!("{:?}", solved.primal_solution_status()).contains("Feasible") {
        return Err(PlanError::Solver(format!("HiGHS found no solution (status {status})")));
    }
    let picks: Vec<usize> = groups
        .iter()
        .enumerate()
        .map(|(gi, g)| (0..g.len()).max_by(|a, b| cols[xi[gi][*a]].total_cmp(&cols[xi[gi][*b]])).unwrap_or(0))
        .collect();
    let objective = solved.objective_value();
    let bound = solved.double_info_value(c"mip_dual_bound").unwrap_or(f64::NAN);
    let bound = if bound.is_finite() { bound.min(objective) } else { objective * (1.0 - solved.mip_gap().clamp(0.0, 1.0)) };
    Ok(BranchAndBound { picks, bound, status })
}

pub(super) fn add_terms(a: &StageTerms, b: &StageTerms) -> StageTerms {
    StageTerms {
        compute: a.compute + b.compute,
        h2d: a.h2d + b.h2d,
        d2h: a.d2h + b.d2h,
        feed: a.feed + b.feed,
        host: a.host + b.host,
        after_host: a.after_host + b.after_host,
    }
}

/// Local search on the stage model from `start`: move one group at a time to the choice that
/// lowers the step time most while every slot stays within `cap` bytes, until no move helps.
/// Gives HiGHS a strong first incumbent (and is what a time-limited solve falls back on).
pub fn improve(model: &StageModel, groups: &[GroupChoices], start: &Decisions, cap: u64, mut effort: Effort) -> Decisions {
    let fixed = model.fixed();
    let r = model.rates;
    let mut pick: Vec<usize> = groups.iter().map(|g| g.index_in(start)).collect();
    let (mut live, mut terms) = totals(model, &fixed, groups, &pick);
    let cap = cap as i64;
    // Time change of moving groups to new choices (exact over the stages they touch).
    let delta_of = |terms: &[StageTerms], pick: &[usize], moves: &[(usize, usize)], effort: &mut Effort| -> f64 {
        if !effort.spend() {
            return 0.0;
        }
        let mut touched: Vec<usize> = moves
            .iter()
            .flat_map(|(gi, k)| groups[*gi].contributions[pick[*gi]].stages.iter().chain(&groups[*gi].contributions[*k].stages))
            .map(|(s, _)| *s)
            .collect();
        touched.sort();
        touched.dedup();
        let mut delta = 0.0;
        for s in touched {
            let mut t = terms[s].clone();
            let before = r.stage_time(&t);
            for (gi, k) in moves {
                if let Some((_, q)) = groups[*gi].contributions[pick[*gi]].stages.iter().find(|(x, _)| *x == s) {
                    t = sub_terms(&t, q);
                }
                if let Some((_, q)) = groups[*gi].contributions[*k].stages.iter().find(|(x, _)| *x == s) {
                    t = add_terms(&t, q);
                }
            }
            delta += r.stage_time(&t) - before;
        }
        delta
    };
    let fits = |live: &[i64], pick: &[usize], moves: &[(usize, usize)]| -> bool {
        (0..live.len()).all(|p| {
            let mut l = live[p];
            for (gi, k) in moves {
                l += groups[*gi].contributions[*k].live[p] as i64 - groups[*gi].contributions[pick[*gi]].live[p] as i64;
            }
            l <= cap
        })
    };
    let apply = |live: &mut Vec<i64>, terms: &mut Vec<StageTerms>, pick: &mut Vec<usize>, moves: &[(usize, usize)]| {
        for (gi, k) in moves {
            let (old, new) = (&groups[*gi].contributions[pick[*gi]], &groups[*gi].contributions[*k]);
            for (p, l) in live.iter_mut().enumerate() {
                *l += new.live[p] as i64 - old.live[p] as i64;
            }
            for (s, q) in &old.stages {
                terms[*s] = sub_terms(&terms[*s], q);
            }
            for (s, q) in &new.stages {
                terms[*s] = add_terms(&terms[*s], q);
            }
            pick[*gi] = *k;
        }
    };
    for _pass in 0..50 {
        if effort.spent() {
            break;
        }
        let mut improved = false;
        // Single moves that fit.
        for gi in 0..groups.len() {
            let mut best: Option<(f64, usize)> = None;
            for k in 0..groups[gi].len() {
                if k == pick[gi] || !fits(&live, &pick, &[(gi, k)]) {
                    continue;
                }
                let delta = delta_of(&terms, &pick, &[(gi, k)], &mut effort);
                if delta < -1e-12 && best.is_none_or(|(d, _)| delta < d) {
                    best = Some((delta, k));
                }
            }
            if let Some((_, k)) = best {
                apply(&mut live, &mut terms, &mut pick, &[(gi, k)]);
                improved = true;
            }
        }
        if improved {
            continue;
        }
        // Pair moves: a faster choice that does not fit alone, with another group giving way.
        let mut best: Option<(f64, [(usize, usize); 2])> = None;
        for gi in 0..groups.len() {
            if effort.spent() {
                break;
            }
            for k in 0..groups[gi].len() {
                if k == pick[gi] || delta_of(&terms, &pick, &[(gi, k)], &mut effort) >= -1e-12 {
                    continue;
                }
                for hj in 0..groups.len() {
                    if hj == gi {
                        continue;
                    }
                    for k2 in 0..groups[hj].len() {
                        if k2 == pick[hj] {
                            continue;
                        }
                        let moves = [(gi, k), (hj, k2)];
                        let delta = delta_of(&terms, &pick, &moves, &mut effort);
                        if delta < -1e-12 && best.is_none_or(|(d, _)| delta < d) && fits(&live, &pick, &moves) {
                            best = Some((delta, moves));
                        }
                    }
                }
            }
        }
        match best {
            Some((_, moves)) if !effort.spent() => apply(&mut live, &mut terms, &mut pick, &moves),
            Some((_, moves)) => {
                apply(&mut live, &mut terms, &mut pick, &moves);
                break;
            }
            None => break,
        }
    }
    let mut d = start.clone();
    for (g, k) in groups.iter().zip(&pick) {
        g.apply(*k, &mut d);
    }
    d
}

fn sub_terms(a: &StageTerms, b: &StageTerms) -> StageTerms {
    StageTerms {
        compute: a.compute - b.compute,
        h2d: a.h2d - b.h2d,
        d2h: a.d2h - b.d2h,
        feed: a.feed - b.feed,
        host: a.host - b.host,
        after_host: a.after_host - b.after_host,
    }
}

/// A stage's linear term with each group's coefficients shifted so its smallest choice adds 0
/// (the shift goes into the constant; exact because every group takes one choice).
fn shift(
    groups: &[GroupChoices],
    c0: &StageTerms,
    vs: &[(usize, usize, StageTerms)],
    f: &dyn Fn(&StageTerms) -> f64,
) -> (f64, Vec<(usize, usize, f64)>) {
    let mut per_group: std::collections::BTreeMap<usize, Vec<f64>> = Default::default();
    for (gi, k, q) in vs {
        per_group.entry(*gi).or_insert_with(|| vec![0.0; groups[*gi].len()])[*k] += f(q);
    }
    let mut a0 = f(c0);
    let mut terms = Vec::new();
    for (gi, coefs) in per_group {
        let lo = coefs.iter().copied().fold(f64::INFINITY, f64::min);
        a0 += lo;
        for (k, c) in coefs.into_iter().enumerate() {
            if c - lo > 0.0 {
                terms.push((gi, k, c - lo));
            }
        }
    }
    (a0, terms)
}

/// The exact time of one stage over every combination of its groups' local choices.
pub(super) struct LocalHull {
    /// The groups with a term in this stage, each with its choices' class (equal terms here).
    pub groups: Vec<(usize, Vec<usize>)>,
    /// Stage time of each combination of classes (mixed radix, first group most significant).
    pub times: Vec<f64>,
}

/// The convex hull of T_s >= stage_time(terms) over the groups touching stage s: one weight per
/// combination of the groups' local classes, whose marginals are the groups' choices. Exact for
/// integral choices, and its relaxation cannot hide part of a copy behind compute. None when the
/// stage has no group or more than `limit` combinations.
pub(super) fn local_hull(
    groups: &[GroupChoices],
    c0: &StageTerms,
    vs: &[(usize, usize, StageTerms)],
    r: &super::model::Rates,
    limit: usize,
) -> Option<LocalHull> {
    let mut per_group: std::collections::BTreeMap<usize, Vec<StageTerms>> = Default::default();
    for (gi, k, q) in vs {
        let e = per_group.entry(*gi).or_insert_with(|| vec![StageTerms::default(); groups[*gi].len()]);
        e[*k] = add_terms(&e[*k], q);
    }
    let same = |a: &StageTerms, b: &StageTerms| {
        let close = |x: f64, y: f64| (x - y).abs() <= 1e-12 * (1.0 + x.abs().max(y.abs()));
        close(a.compute, b.compute)
            && close(a.h2d, b.h2d)
            && close(a.d2h, b.d2h)
            && close(a.feed, b.feed)
            && close(a.host, b.host)
            && close(a.after_host, b.after_host)
    };
    let mut hull_groups = Vec::new();
    let mut reps: Vec<Vec<StageTerms>> = Vec::new();
    let mut n = 1usize;
    for (gi, ts) in per_group {
        let mut classes = Vec::with_capacity(ts.len());
        let mut rep: Vec<StageTerms> = Vec::new();
        for t in &ts {
            match rep.iter().position(|u| same(u, t)) {
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
    let mut base = c0.clone();
    for (gi, k, q) in vs {
        if !hull_groups.iter().any(|(g, _)| g == gi) && *k == 0 {
            base = add_terms(&base, q);
        }
    }
    let mut times = Vec::with_capacity(n);
    for c in 0..n {
        let mut t = base.clone();
        let mut rest = c;
        for rep in reps.iter().rev() {
            t = add_terms(&t, &rep[rest % rep.len()]);
            rest /= rep.len();
        }
        times.push(r.stage_time(&t));
    }
    Some(LocalHull { groups: hull_groups, times })
}

/// Step time and peak bytes of one choice per group (`fixed` included).
pub(super) fn eval_picks(model: &StageModel, fixed: &Contribution, groups: &[GroupChoices], pick: &[usize]) -> (f64, u64) {
    let (live, terms) = totals(model, fixed, groups, pick);
    let r = model.rates;
    (terms.iter().map(|t| r.stage_time(t)).sum(), live.into_iter().max().unwrap_or(0) as u64)
}

/// Live bytes at every slot and terms of every stage of the fixed part plus one choice per
/// group (`pick[g]`); live as i64 so that moves can subtract.
fn totals(model: &StageModel, fixed: &Contribution, groups: &[GroupChoices], pick: &[usize]) -> (Vec<i64>, Vec<StageTerms>) {
    let mut live: Vec<i64> = fixed.live.iter().map(|b| *b as i64).collect();
    let mut terms = vec![StageTerms::default(); model.n_stages()];
    for (s, t) in &fixed.stages {
        terms[*s] = add_terms(&terms[*s], t);
    }
    for (g, k) in groups.iter().zip(pick) {
        let c = &g.contributions[*k];
        for (l, x) in live.iter_mut().zip(&c.live) {
            *l += *x as i64;
        }
        for (s, t) in &c.stages {
            terms[*s] = add_terms(&terms[*s], t);
        }
    }
    (live, terms)
}

/// Periodic starting points: every layer's owner choice alternating between two choices (odd and
/// even layers), with one activation choice for every layer, the other groups as in the best
/// start or at their leanest. Single-group moves cannot reach such patterns (the optimum of a
/// budget that binds often alternates: a layer streaming its weights next to one streaming its
/// optimizer state shares the link best). Returns the two fastest that fit.
fn patterns(model: &StageModel, fixed: &Contribution, groups: &[GroupChoices], starts: &[Decisions], cap: u64) -> Vec<Decisions> {
    let cost = |d: &Decisions| eval_picks(model, fixed, groups, &groups.iter().map(|g| g.index_in(d)).collect::<Vec<_>>()).0;
    let best = starts.iter().map(|d| (cost(d), d)).min_by(|a, b| a.0.total_cmp(&b.0)).map(|(_, d)| d);
    let lean: Vec<usize> = groups
        .iter()
        .map(|g| {
            (0..g.len())
                .min_by_key(|k| (g.contributions[*k].live.iter().max().copied().unwrap_or(0), g.contributions[*k].live.iter().sum::<u64>()))
                .unwrap_or(0)
        })
        .collect();
    let mut bases = vec![lean];
    if let Some(b) = best {
        bases.push(groups.iter().map(|g| g.index_in(b)).collect());
    }
    let layer_owner = |g: &GroupChoices| match g.group {
        Group::Owner(models::Owner::Layer(l)) => Some(l),
        _ => None,
    };
    let Some(proto) = groups.iter().find(|g| layer_owner(g).is_some()) else { return Vec::new() };
    let n_owner = proto.len();
    let n_acts = ActChoice::all().len();
    let mut found: Vec<(f64, Vec<usize>)> = Vec::new();
    for base in &bases {
        for a in 0..n_owner {
            for b in 0..n_owner {
                for u in 0..n_acts {
                    let mut pick = base.clone();
                    for (gi, g) in groups.iter().enumerate() {
                        match g.group {
                            Group::Owner(models::Owner::Layer(l)) if g.len() == n_owner => pick[gi] = if l % 2 == 0 { a } else { b },
                            Group::Acts(_) => pick[gi] = u,
                            _ => {}
                        }
                    }
                    let (t, peak) = eval_picks(model, fixed, groups, &pick);
                    if peak <= cap {
                        found.push((t, pick));
                    }
                }
            }
        }
    }
    found.sort_by(|x, y| x.0.total_cmp(&y.0));
    found.dedup_by(|x, y| x.1 == y.1);
    let template = starts.first().cloned().unwrap_or_else(|| Decisions::all_gpu(model.program));
    found
        .into_iter()
        .take(2)
        .map(|(_, pick)| {
            let mut d = template.clone();
            for (g, k) in groups.iter().zip(&pick) {
                g.apply(*k, &mut d);
            }
            d
        })
        .collect()
}

/// Rounds a mixture of plans (each group's weight on each choice) to one plan by error
/// diffusion along the layers: a choice with weight 0.25 on every layer's owner goes to every
/// fourth layer, spread out as the mixture suggests (layer groups of one kind share the error;
/// other groups take their heaviest choice).
pub(super) fn dither(groups: &[GroupChoices], xbar: &[Vec<f64>]) -> Vec<usize> {
    let mut owner_err: Vec<f64> = Vec::new();
    let mut acts_err: Vec<f64> = Vec::new();
    let mut pick = Vec::with_capacity(groups.len());
    for (g, x) in groups.iter().zip(xbar) {
        let err = match g.group {
            Group::Owner(models::Owner::Layer(_)) => Some(&mut owner_err),
            Group::Acts(_) => Some(&mut acts_err),
            _ => None,
        };
        let k = match err {
            Some(e) => {
                e.resize(x.len(), 0.0);
                let k = (0..x.len()).max_by(|a, b| (e[*a] + x[*a]).total_cmp(&(e[*b] + x[*b]))).unwrap_or(0);
                for (j, v) in x.iter().enumerate() {
                    e[j] += v - if j == k { 1.0 } else { 0.0 };
                }
                k
            }
            None => (0..x.len()).max_by(|a, b| x[*a].total_cmp(&x[*b])).unwrap_or(0),
        };
        pick.push(k);
    }
    pick
}

/// Makes a plan fit: while some slot is over `cap`, takes the move (one group to another
/// choice) with the least time added per byte of excess removed. None if no move helps.
pub(super) fn repair(
    model: &StageModel,
    fixed: &Contribution,
    groups: &[GroupChoices],
    start: &[usize],
    cap: u64,
    mut effort: Effort,
) -> Option<Vec<usize>> {
    let r = model.rates;
    let mut pick = start.to_vec();
    let (mut live, mut terms) = totals(model, fixed, groups, &pick);
    let cap = cap as i64;
    let excess = |live: &[i64]| -> i64 { live.iter().map(|l| (l - cap).max(0)).sum() };
    let mut ex = excess(&live);
    while ex > 0 {
        if !effort.spend() {
            return None;
        }
        let mut best: Option<(f64, usize, usize)> = None;
        for (gi, g) in groups.iter().enumerate() {
            let old = &g.contributions[pick[gi]];
            for (k, new) in g.contributions.iter().enumerate() {
                if k == pick[gi] {
                    continue;
                }
                let mut e = 0i64;
                for (p, l) in live.iter().enumerate() {
                    e += (l + new.live[p] as i64 - old.live[p] as i64 - cap).max(0);
                }
                if e >= ex {
                    continue;
                }
                let mut dt = 0.0;
                let mut touched: Vec<usize> = old.stages.iter().chain(&new.stages).map(|(s, _)| *s).collect();
                touched.sort();
                touched.dedup();
                for s in touched {
                    let mut t = terms[s].clone();
                    if let Some((_, q)) = old.stages.iter().find(|(x, _)| *x == s) {
                        t = sub_terms(&t, q);
                    }
                    if let Some((_, q)) = new.stages.iter().find(|(x, _)| *x == s) {
                        t = add_terms(&t, q);
                    }
                    dt += r.stage_time(&t) - r.stage_time(&terms[s]);
                }
                let score = dt / (ex - e) as f64;
                if best.is_none_or(|(b, _, _)| score < b) {
                    best = Some((score, gi, k));
                }
            }
        }
        let (_, gi, k) = best?;
        let (old, new) = (&groups[gi].contributions[pick[gi]], &groups[gi].contributions[k]);
        for (p, l) in live.iter_mut().enumerate() {
            *l += new.live[p] as i64 - old.live[p] as i64;
        }
        for (s, q) in &old.stages {
            terms[*s] = sub_terms(&terms[*s], q);
        }
        for (s, q) in &new.stages {
            terms[*s] = add_terms(&terms[*s], q);
        }
        pick[gi] = k;
        ex = excess(&live);
    }
    Some(pick)
}
