//! The stage model: memory at every slot and time of every stage as linear functions of the
//! decisions (`terms` gives a stage's time). The solvers optimise it; heuristics and tests
//! evaluate it directly.

mod terms;

pub use terms::{Rates, StageTerms};

use crate::decisions::{ActChoice, Decisions, Group, OwnerChoice};
use crate::route::{Item, Router};
use models::cost::{copy_work_bytes, host_op_time, op_time, Direction};
use models::{Bytes, HardwareProfile, Program, Seconds};

/// What one group choice (or the fixed part) contributes.
#[derive(Clone, Debug)]
pub struct Contribution {
    /// Bytes live at each slot (allocation granularity applied).
    pub live: Vec<u64>,
    /// The same curve as changes: `live[p]` is the sum of the bytes of the entries at slots up
    /// to `p` (what a sum of many contributions adds up first, costing their items).
    pub delta: Vec<(usize, i64)>,
    /// Whether something is freed after each slot.
    pub frees_at: Vec<bool>,
    /// Sparse per-stage terms.
    pub stages: Vec<(usize, StageTerms)>,
    /// Bytes of pinned host memory it needs (its tensors' host copies).
    pub pinned: u64,
}

/// A contribution as changes (see `StageModel::sparse`).
struct Sparse {
    delta: Vec<(usize, i64)>,
    frees_after: Vec<usize>,
    stages: Vec<(usize, StageTerms)>,
    pinned: u64,
}

/// What a set of decisions gives under the stage model.
#[derive(Clone, Debug)]
pub struct Evaluation {
    pub step_time: Seconds,
    pub compute_time: Seconds,
    pub peak: Bytes,
    pub peak_slot: usize,
    pub h2d_bytes: Bytes,
    pub d2h_bytes: Bytes,
    pub exposed: Seconds,
    pub hidden: Seconds,
    pub stage_times: Vec<f64>,
    /// Pinned host memory the plan needs.
    pub pinned: Bytes,
}

pub struct StageModel<'a> {
    pub program: &'a Program,
    pub hw: &'a HardwareProfile,
    pub router: Router<'a>,
    pub rates: Rates,
    /// Rounded bytes per tensor.
    bytes: Vec<u64>,
    /// GPU seconds per op.
    op_secs: Vec<f64>,
    /// How many times each stage runs in the step it stands for: 1, or the micro-batches its
    /// pass stands for ([`StageModel::repeating`]).
    weights: Vec<f64>,
}

/// Passes of the program a step of many micro-batches is solved on: the first, one that stands
/// for every middle pass, and the last (with the updates).
pub const SOLVED_PASSES: u32 = 3;

impl<'a> StageModel<'a> {
    pub fn new(program: &'a Program, hw: &'a HardwareProfile) -> StageModel<'a> {
        let bytes = program.inventory.tensors.iter().map(|t| t.bytes.round_up(hw.alloc_granularity).0).collect();
        let op_secs = program.ops.iter().map(|o| op_time(o, hw).0).collect();
        let router = Router::new(program);
        let weights = vec![1.0; router.stages.len()];
        StageModel { program, hw, router, rates: Rates::new(hw), bytes, op_secs, weights }
    }

    /// The model of a step of `micro_batches` passes, on `program` of [`SOLVED_PASSES`] (its
    /// `solving_program`): the middle pass's stages count `micro_batches - 2` times. Every pass
    /// between the first and the last makes the same allocations, copies and host work in the
    /// same stages, and a stage's time is homogeneous in its terms, so scaling the middle
    /// stage's terms prices all of them; memory is the same at each. The solvers then work on
    /// three passes however many the step has, and the plan is emitted and simulated in full.
    pub fn repeating(program: &'a Program, hw: &'a HardwareProfile, micro_batches: u32) -> StageModel<'a> {
        assert_eq!(program.micro_batches, SOLVED_PASSES.min(micro_batches), "a repeating model solves the program of three passes");
        let mut m = StageModel::new(program, hw);
        if micro_batches > SOLVED_PASSES {
            for (w, stage) in m.weights.iter_mut().zip(&m.router.stages.stages) {
                if stage.ops.clone().next().is_some_and(|i| program.ops[i].micro == 1) {
                    *w = (micro_batches - 2) as f64;
                }
            }
        }
        m
    }

    /// The program a step's placement is solved on: `program` itself, or for more than
    /// [`SOLVED_PASSES`] micro-batches the same step of three (see [`StageModel::repeating`]).
    pub fn solving_program(program: &Program) -> Option<Program> {
        if program.micro_batches <= SOLVED_PASSES {
            return None;
        }
        let mut three = Program::build_accumulating(&program.config, program.clipping, SOLVED_PASSES);
        // The step's tokens, targets and losses (every micro-batch's) are the full step's.
        let (inv, full) = (&mut three.inventory, &program.inventory);
        for id in [full.io.tokens, full.io.targets, full.io.losses] {
            inv.tensors[id.index()] = full.tensor(id).clone();
            let block = full.tensor(id).block;
            inv.blocks[block.index()] = full.block(block).clone();
        }
        Some(three)
    }

    pub fn n_stages(&self) -> usize {
        self.router.stages.len()
    }
    pub fn n_slots(&self) -> usize {
        self.router.stages.n_slots
    }

    /// Memory available to the pool under `budget`.
    pub fn capacity(&self, budget: Bytes) -> u64 {
        self.hw.pool_capacity(budget).0
    }

    pub fn slot_label(&self, slot: usize) -> String {
        let st = &self.router.stages;
        match st.op_of_slot[slot] {
            Some(i) => self.program.ops[i].name.clone(),
            None => st.stages.iter().find(|s| s.slots.contains(&slot)).map(|s| s.name.clone()).unwrap_or_default(),
        }
    }

    /// The fixed part: tensors no decision moves, and every op's GPU time.
    pub fn fixed(&self) -> Contribution {
        let mut c = self.contribution(&self.router.fixed_items());
        let mut per_stage = vec![0.0; self.n_stages()];
        for (i, t) in self.op_secs.iter().enumerate() {
            per_stage[self.router.stages.stage_of_op[i]] += t;
        }
        for (s, t) in per_stage.into_iter().enumerate() {
            if t > 0.0 {
                c.stages.push((s, StageTerms { compute: t * self.weights[s], ..Default::default() }));
            }
        }
        c
    }

    pub fn owner(&self, o: models::Owner, choice: OwnerChoice) -> Contribution {
        self.contribution(&self.router.owner_items(o, choice))
    }
    pub fn acts(&self, l: u32, choice: ActChoice) -> Contribution {
        self.contribution(&self.router.act_items(l, choice))
    }
    pub fn group(&self, g: Group, d: &Decisions) -> Contribution {
        self.contribution(&self.router.group_items(g, d))
    }

    /// Memory curve and stage terms of a list of items.
    pub fn contribution(&self, items: &[Item]) -> Contribution {
        let n = self.n_slots();
        let sparse = self.sparse(items);
        let mut delta = vec![0i64; n + 1];
        let mut frees_at = vec![false; n];
        for &(slot, bytes) in &sparse.delta {
            delta[slot] += bytes;
        }
        for &slot in &sparse.frees_after {
            frees_at[slot] = true;
        }
        let mut live = vec![0u64; n];
        let mut acc = 0i64;
        for s in 0..n {
            acc += delta[s];
            debug_assert!(acc >= 0, "negative live bytes at slot {s}");
            live[s] = acc.max(0) as u64;
        }
        Contribution { live, delta: sparse.delta, frees_at, stages: sparse.stages, pinned: sparse.pinned }
    }

    /// The most bytes `items` hold live at any slot, and their sum over the slots: the maximum
    /// and the sum of [`StageModel::contribution`]'s curve, from the changes alone (costing the
    /// items, not the slots).
    pub fn live_extent(&self, items: &[Item]) -> (u64, u64) {
        let n = self.n_slots();
        let mut delta = self.sparse(items).delta;
        delta.sort_by_key(|e| e.0);
        let (mut acc, mut from, mut max, mut sum) = (0i64, 0usize, 0u64, 0u64);
        let mut hold = |until: usize, acc: i64, from: &mut usize| {
            if until > *from {
                let v = acc.max(0) as u64;
                max = max.max(v);
                sum += v * (until - *from) as u64;
                *from = until;
            }
        };
        for (slot, bytes) in delta {
            hold(slot.min(n), acc, &mut from);
            acc += bytes;
        }
        hold(n, acc, &mut from);
        (max, sum)
    }

    /// What `items` contribute, as changes: bytes allocated (+) or freed (-) at the slot where
    /// the live curve changes, the slots something is freed after, per-stage terms in stage
    /// order, and the pinned bytes. Costs the items, not the slots.
    fn sparse(&self, items: &[Item]) -> Sparse {
        let mut delta = Vec::with_capacity(items.len());
        let mut frees_after = Vec::new();
        let mut stages: std::collections::BTreeMap<usize, StageTerms> = Default::default();
        let st = &self.router.stages;
        // Tensors that need a pinned host copy: copied either way, or touched by host work
        // (the token ids excepted: the host has the batch), as `Schedule::pinned_tensors`.
        let mut pinned: Vec<models::TensorId> = Vec::new();
        let tokens = self.program.inventory.io.tokens;
        for it in items {
            match *it {
                Item::H2D { tensor, .. } | Item::D2H { tensor, .. } => pinned.push(tensor),
                Item::Host { op, .. } => pinned.extend(self.program.op(op).touches().filter(|t| *t != tokens)),
                _ => {}
            }
            match *it {
                Item::Resident(t) => delta.push((0, self.bytes[t.index()] as i64)),
                Item::Alloc { slot, tensor } => delta.push((slot, self.bytes[tensor.index()] as i64)),
                Item::Free { slot, tensor } => {
                    delta.push((slot + 1, -(self.bytes[tensor.index()] as i64)));
                    frees_after.push(slot);
                }
                Item::H2D { stage, tensor, after_host } => {
                    let e = stages.entry(stage).or_default();
                    let b = copy_work_bytes(self.program.inventory.tensor(tensor).bytes.as_f64(), Direction::HostToDevice, self.hw);
                    e.h2d += b;
                    if after_host == Some(stage) {
                        e.after_host += b;
                    }
                }
                Item::D2H { stage, tensor, feeds_host } => {
                    let e = stages.entry(stage).or_default();
                    let b = copy_work_bytes(self.program.inventory.tensor(tensor).bytes.as_f64(), Direction::DeviceToHost, self.hw);
                    e.d2h += b;
                    if feeds_host {
                        e.feed += b;
                    }
                }
                Item::Host { stage, op, .. } => {
                    let o = self.program.op(op);
                    let host = host_op_time(o, self.program, self.hw).map(|s| s.0).unwrap_or(0.0);
                    stages.entry(stage).or_default().host += host;
                    // The op no longer runs on the GPU, in the stage it was in.
                    stages.entry(st.stage_of_op[op.index()]).or_default().compute -= self.op_secs[op.index()];
                }
                Item::Recompute { stage, op } => {
                    stages.entry(stage).or_default().compute += self.op_secs[op.index()];
                }
            }
        }
        pinned.sort();
        pinned.dedup();
        let pinned = pinned.iter().map(|t| self.program.inventory.tensor(*t).bytes.0).sum();
        let stages = stages
            .into_iter()
            .map(|(s, t)| match self.weights[s] {
                1.0 => (s, t),
                w => {
                    let mut scaled = StageTerms::default();
                    scaled.add_scaled(&t, w);
                    (s, scaled)
                }
            })
            .collect();
        Sparse { delta, frees_after, stages, pinned }
    }

    /// Memory and time of a whole plan.
    /// The same as combining the fixed part and every group's contribution, but each group
    /// costs its items rather than a curve over every slot: the live bytes are integers, so
    /// adding the groups' changes first gives the same curve, and the stage terms are added in
    /// the same order.
    pub fn evaluate(&self, d: &Decisions) -> Evaluation {
        let fixed = self.fixed();
        let n = self.n_slots();
        let mut terms = vec![StageTerms::default(); self.n_stages()];
        for (s, t) in &fixed.stages {
            terms[*s].add_scaled(t, 1.0);
        }
        let mut delta = vec![0i64; n + 1];
        let mut pinned = fixed.pinned;
        for g in Decisions::groups(self.program) {
            let part = self.sparse(&self.router.group_items(g, d));
            for &(slot, bytes) in &part.delta {
                delta[slot] += bytes;
            }
            for (s, t) in &part.stages {
                terms[*s].add_scaled(t, 1.0);
            }
            pinned += part.pinned;
        }
        let mut acc = 0i64;
        let live = fixed
            .live
            .iter()
            .zip(&delta)
            .map(|(f, d)| {
                acc += d;
                f + acc.max(0) as u64
            })
            .collect();
        self.finish(live, terms, pinned)
    }

    /// Adds contributions up into an evaluation.
    pub fn combine(&self, parts: &[&Contribution]) -> Evaluation {
        let n = self.n_slots();
        let mut live = vec![0u64; n];
        let mut terms = vec![StageTerms::default(); self.n_stages()];
        for p in parts {
            for (l, x) in live.iter_mut().zip(&p.live) {
                *l += x;
            }
            for (s, t) in &p.stages {
                terms[*s].add_scaled(t, 1.0);
            }
        }
        self.finish(live, terms, parts.iter().map(|p| p.pinned).sum())
    }

    /// An evaluation from the live bytes at each slot, the stage terms and the pinned bytes.
    fn finish(&self, live: Vec<u64>, terms: Vec<StageTerms>, pinned: u64) -> Evaluation {
        let (peak_slot, peak) = live.iter().enumerate().fold((0, 0), |(bi, bv), (i, v)| if *v > bv { (i, *v) } else { (bi, bv) });
        let r = &self.rates;
        let stage_times: Vec<f64> = terms.iter().map(|t| r.stage_time(t)).collect();
        let compute: f64 = terms.iter().map(|t| t.compute.max(0.0)).sum();
        let step: f64 = stage_times.iter().sum();
        let mut hidden = 0.0;
        for t in &terms {
            let copies = r.copies(t.h2d, t.d2h);
            hidden += copies.min(t.compute.max(0.0));
        }
        Evaluation {
            step_time: Seconds(step),
            compute_time: Seconds(compute),
            peak: Bytes(peak),
            peak_slot,
            h2d_bytes: Bytes(terms.iter().map(|t| t.h2d).sum::<f64>() as u64),
            d2h_bytes: Bytes(terms.iter().map(|t| t.d2h).sum::<f64>() as u64),
            exposed: Seconds((step - compute).max(0.0)),
            hidden: Seconds(hidden),
            stage_times,
            pinned: Bytes(pinned),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use models::Placement;

    /// `evaluate`, which adds up each group's changes, gives what combining every group's
    /// whole curve gives, to the bit.
    #[test]
    fn evaluate_equals_combining_every_contribution() {
        let hw = crate::shipped::h100();
        for name in ["gpt2-tiny", "gpt3-125m"] {
            let p = crate::shipped::program(name);
            let model = StageModel::new(&p, &hw);
            for shift in 0..12 {
                let d = crate::decisions::varied(&p, shift, (3, 5));
                let mut parts = vec![model.fixed()];
                parts.extend(Decisions::groups(&p).into_iter().map(|g| model.group(g, &d)));
                let want = model.combine(&parts.iter().collect::<Vec<_>>());
                let got = model.evaluate(&d);
                assert_eq!(got.step_time.0.to_bits(), want.step_time.0.to_bits(), "{name}, shift {shift}");
                assert_eq!((got.peak, got.peak_slot, got.pinned), (want.peak, want.peak_slot, want.pinned), "{name}, shift {shift}");
                assert_eq!(got.stage_times, want.stage_times, "{name}, shift {shift}");
                assert_eq!((got.h2d_bytes, got.d2h_bytes), (want.h2d_bytes, want.d2h_bytes));
            }
        }
    }

    /// A choice's peak and total from its changes are its whole curve's, for every choice of
    /// every group (the feasible floor picks by them).
    #[test]
    fn live_extent_is_the_curves_maximum_and_sum() {
        let hw = crate::shipped::h100();
        for name in ["gpt2-tiny", "gpt3-125m"] {
            let p = crate::shipped::program(name);
            let model = StageModel::new(&p, &hw);
            let r = &model.router;
            let mut items: Vec<Vec<crate::route::Item>> = vec![r.fixed_items()];
            for g in Decisions::groups(&p) {
                match g {
                    Group::Owner(o) => items.extend(OwnerChoice::all(&p, o).into_iter().map(|c| r.owner_items(o, c))),
                    Group::Acts(l) => items.extend(ActChoice::all().into_iter().map(|c| r.act_items(l, c))),
                }
            }
            for it in &items {
                let live = model.contribution(it).live;
                let want = (live.iter().max().copied().unwrap_or(0), live.iter().sum::<u64>());
                assert_eq!(model.live_extent(it), want, "{name}");
            }
        }
    }

    /// The pinned host memory the stage model counts, group by group, is what the emitted
    /// schedule pins: no tensor is counted by two groups.
    #[test]
    fn pinned_memory_adds_up_to_the_schedules() {
        let hw = crate::shipped::h100();
        for name in ["gpt2-tiny", "gpt3-125m"] {
            let p = crate::shipped::program(name);
            let model = StageModel::new(&p, &hw);
            for shift in 0..12 {
                let d = crate::decisions::varied(&p, shift, (5, 7));
                let s = crate::emit::emit(&p, &hw, &d, Bytes::UNLIMITED).unwrap();
                assert_eq!(model.evaluate(&d).pinned, s.pinned_bytes(&p), "{name}, shift {shift}: {d:?}");
            }
            let lean = Decisions::all_gpu(&p).with_optimizer(Placement::Host);
            let s = crate::emit::emit(&p, &hw, &lean, Bytes::UNLIMITED).unwrap();
            assert_eq!(model.evaluate(&lean).pinned, s.pinned_bytes(&p));
        }
    }
}
