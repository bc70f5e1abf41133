//! The stage model: memory at every slot and time of every stage as linear functions of the
//! decisions. The MILP optimises it; heuristics and tests evaluate it directly.
//!
//! A stage lasts as long as its slowest lane (the emitted schedule makes every lane finish a
//! stage's work before the next stage starts):
//!   T_s = max( compute_s,
//!              both copy lanes together: max(b/d2h + a*k1, a/h2d + b*k2)  (duplex, exact for
//!              two copies that start together: k1 = (1 - d2h_dup/d2h)/h2d_dup, k2 likewise),
//!              host chain: host-bound copies at the duplex rate + host work + copies that wait
//!              for it )
//! with a, b the stage's H2D and D2H bytes; where the profile says host work and copies slow
//! each other (`host_sharing`), the copy lanes and the host chain take the extra time of running
//! beside each other ([`Rates::lanes`]).

use crate::decisions::{ActChoice, Decisions, Group, OwnerChoice};
use crate::emit::{Item, Router};
use models::cost::{host_op_time, op_time};
use models::hardware::{HostSharing, Shares};
use models::{Bytes, HardwareProfile, Program, Seconds};

/// Linear per-stage quantities of one group choice (or of the fixed part).
#[derive(Clone, Debug, Default)]
pub struct StageTerms {
    /// Compute-lane seconds (host-run ops subtract their GPU time, recomputation adds).
    pub compute: f64,
    pub h2d: f64,
    pub d2h: f64,
    /// D2H bytes host work of this stage reads.
    pub feed: f64,
    /// Host seconds.
    pub host: f64,
    /// H2D bytes that wait for this stage's host work.
    pub after_host: f64,
}

impl StageTerms {
    fn add(&mut self, o: &StageTerms, k: f64) {
        self.compute += k * o.compute;
        self.h2d += k * o.h2d;
        self.d2h += k * o.d2h;
        self.feed += k * o.feed;
        self.host += k * o.host;
        self.after_host += k * o.after_host;
    }
}

/// What one group choice (or the fixed part) contributes.
#[derive(Clone, Debug)]
pub struct Contribution {
    /// Bytes live at each slot (allocation granularity applied).
    pub live: Vec<u64>,
    /// Whether something is freed after each slot.
    pub frees_at: Vec<bool>,
    /// Sparse per-stage terms.
    pub stages: Vec<(usize, StageTerms)>,
}

/// Rate constants of the stage-time formula.
#[derive(Clone, Copy, Debug)]
pub struct Rates {
    pub h2d: f64,
    pub d2h: f64,
    pub h2d_dup: f64,
    pub d2h_dup: f64,
    pub k1: f64,
    pub k2: f64,
    /// Host work beside copies one way (`HardwareProfile::host_sharing`; all 1 without): the
    /// shares of their speed host work and the copies keep.
    pub beside_h2d: Shares,
    pub beside_d2h: Shares,
}

impl Rates {
    pub fn new(hw: &HardwareProfile) -> Rates {
        let (h2d, d2h, h2d_dup, d2h_dup) = (hw.h2d.0, hw.d2h.0, hw.h2d_duplex.0, hw.d2h_duplex.0);
        let sharing = hw.host_sharing;
        let pick = |f: fn(&HostSharing) -> Shares| sharing.as_ref().map(f).unwrap_or(Shares::FULL);
        Rates {
            h2d,
            d2h,
            h2d_dup,
            d2h_dup,
            k1: (1.0 - d2h_dup / d2h).max(0.0) / h2d_dup,
            k2: (1.0 - h2d_dup / h2d).max(0.0) / d2h_dup,
            beside_h2d: pick(|h| h.beside_h2d),
            beside_d2h: pick(|h| h.beside_d2h),
        }
    }

    /// The stage's lane expressions, each linear in the terms; the stage lasts as long as the
    /// largest (the host ones only count with host work). Copies and host work beside them slow
    /// each other: for two parties started together, one keeping share s1 and the other s2, the
    /// last ends at max(W1 + W2 (1 - s1)/s2, W2 + W1 (1 - s2)/s1) (W: time alone), exact like
    /// the duplex rows; host work is paired with each direction's copies that do not feed it
    /// or wait for it, at the shares measured beside that direction alone.
    pub fn lanes(&self, t: &StageTerms) -> [f64; 5] {
        // Host work starts once its feed is in: the H2D copies that started with the stage have
        // run that long already (negative means none left beside it; the D2H row then binds,
        // as it is never below the chain). The D2H lane moves the feed first, so the rest of
        // its copies all run beside the host work.
        let h2d_beside = (t.h2d - t.after_host) / self.h2d_dup - t.feed / self.d2h_dup;
        let d2h_beside = (t.d2h - t.feed) / self.d2h_dup;
        let chain = t.feed / self.d2h_dup + t.host + t.after_host / self.h2d_dup;
        let (h, d) = (self.beside_h2d, self.beside_d2h);
        [
            t.compute,
            t.d2h / self.d2h + t.h2d * self.k1 + t.host * (1.0 - d.d2h) / d.host,
            t.h2d / self.h2d + t.d2h * self.k2 + t.host * (1.0 - h.h2d) / h.host,
            chain + h2d_beside * (1.0 - h.host) / h.h2d,
            chain + d2h_beside * (1.0 - d.host) / d.d2h,
        ]
    }

    /// Which of [`Self::lanes`] are host lanes (zero without host work).
    pub const HOST_LANES: [bool; 5] = [false, false, false, true, true];

    /// Time for both copy lanes to finish a stage's copies started together (no host work).
    pub fn copies(&self, a: f64, b: f64) -> f64 {
        (b / self.d2h + a * self.k1).max(a / self.h2d + b * self.k2)
    }

    pub fn stage_time(&self, t: &StageTerms) -> f64 {
        let host = t.host > 0.0 || t.after_host > 0.0;
        self.lanes(t).iter().zip(Self::HOST_LANES).filter(|(_, h)| host || !h).map(|(x, _)| *x).fold(0.0, f64::max)
    }
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
}

impl<'a> StageModel<'a> {
    pub fn new(program: &'a Program, hw: &'a HardwareProfile) -> StageModel<'a> {
        let bytes = program.inventory.tensors.iter().map(|t| t.bytes.round_up(hw.alloc_granularity).0).collect();
        let op_secs = program.ops.iter().map(|o| op_time(o, hw).0).collect();
        StageModel { program, hw, router: Router::new(program), rates: Rates::new(hw), bytes, op_secs }
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
                c.stages.push((s, StageTerms { compute: t, ..Default::default() }));
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
        let mut delta = vec![0i64; n + 1];
        let mut frees_at = vec![false; n];
        let mut stages: std::collections::BTreeMap<usize, StageTerms> = Default::default();
        let st = &self.router.stages;
        for it in items {
            match *it {
                Item::Resident(t) => delta[0] += self.bytes[t.index()] as i64,
                Item::Alloc { slot, tensor } => delta[slot] += self.bytes[tensor.index()] as i64,
                Item::Free { slot, tensor } => {
                    delta[slot + 1] -= self.bytes[tensor.index()] as i64;
                    frees_at[slot] = true;
                }
                Item::H2D { stage, tensor, after_host } => {
                    let e = stages.entry(stage).or_default();
                    let b = self.program.inventory.tensor(tensor).bytes.as_f64();
                    e.h2d += b;
                    if after_host == Some(stage) {
                        e.after_host += b;
                    }
                }
                Item::D2H { stage, tensor, feeds_host } => {
                    let e = stages.entry(stage).or_default();
                    let b = self.program.inventory.tensor(tensor).bytes.as_f64();
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
        let mut live = vec![0u64; n];
        let mut acc = 0i64;
        for s in 0..n {
            acc += delta[s];
            debug_assert!(acc >= 0, "negative live bytes at slot {s}");
            live[s] = acc.max(0) as u64;
        }
        Contribution { live, frees_at, stages: stages.into_iter().collect() }
    }

    /// Memory and time of a whole plan.
    pub fn evaluate(&self, d: &Decisions) -> Evaluation {
        let mut parts = vec![self.fixed()];
        for g in Decisions::groups(self.program) {
            parts.push(self.group(g, d));
        }
        self.combine(&parts.iter().collect::<Vec<_>>())
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
                terms[*s].add(t, 1.0);
            }
        }
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
        }
    }
}
