//! Routing blocks to stages: what each decision group's choice puts into the step (allocations,
//! frees, copies each way, host work, recomputation), stage by stage.
//!
//! Every transfer belongs to one stage:
//! - a block needed from stage s on is allocated when stage s-1 starts and copied in during
//!   s-1 (double buffering, one stage ahead: [`crate::decisions::PREFETCH_STAGES`]);
//! - a block changed on the GPU and not needed for a while is copied out during the stage after
//!   its last use and freed when that stage ends;
//! - host work (CPU embedding, host AdamW) runs in the stage its inputs arrive in;
//! - clipped, each owner's partial norm is copied to the host in the clip stage, where the host
//!   makes the scale and sends it back within the stage; each update, GPU or host, runs in its
//!   owner's own update stage after it.

mod stages;

pub use stages::Stages;

use crate::decisions::{ActChoice, Decisions, Group, OwnerChoice};
use models::inventory::{Owner, TensorId};
use models::program::OpKind;
use models::{OpId, Placement, Program};

/// One thing a route puts into the schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Item {
    /// On the GPU from before the step to after it (counted at every slot, no action).
    Resident(TensorId),
    /// Allocated before the op at `slot` (or at the stage's start).
    Alloc { slot: usize, tensor: TensorId },
    /// Freed after the op at `slot` (after the stage's waits at its last slot).
    Free { slot: usize, tensor: TensorId },
    /// Copied host to device during `stage`; after the host work of `after_host`, if set.
    H2D { stage: usize, tensor: TensorId, after_host: Option<usize> },
    /// Copied device to host during `stage`; `feeds_host`: host work of this stage reads it.
    D2H { stage: usize, tensor: TensorId, feeds_host: bool },
    /// A program op run on the host during `stage`; `after_d2h`: waits for this stage's
    /// host-bound copies.
    Host { stage: usize, op: OpId, after_d2h: bool },
    /// A forward op re-run at the start of `stage` (recomputation).
    Recompute { stage: usize, op: OpId },
}

/// What each group's choice puts into the schedule, and the items no choice changes.
pub struct Router<'a> {
    pub program: &'a Program,
    pub stages: Stages,
    /// Per tensor: the decision group whose choice moves it (None: always as the program says).
    pub group_of: Vec<Option<Group>>,
    /// Per tensor: the ops that touch it, in program order (each once), so a route costs the
    /// tensor's uses rather than a pass over the program.
    touched_by: Vec<Vec<usize>>,
    /// Per tensor: the ops that allocate or free it, in program order, with which they do.
    alloc_free: Vec<Vec<AllocFree>>,
}

/// An op's part in a tensor's program route.
#[derive(Clone, Copy, Debug)]
struct AllocFree {
    op: usize,
    allocs: bool,
    frees: bool,
}

impl<'a> Router<'a> {
    pub fn new(program: &'a Program) -> Router<'a> {
        let inv = &program.inventory;
        let mut group_of = vec![None; inv.tensors.len()];
        for o in inv.owners() {
            let p = inv.params(o);
            for t in [p.weights, p.grads, p.optimizer] {
                group_of[t.index()] = Some(Group::Owner(o));
            }
        }
        for (l, a) in inv.acts.iter().enumerate() {
            for t in inv.block(inv.tensor(a.x_in).block).tensors.iter().chain(&inv.block_of(a.ln1).tensors) {
                group_of[t.index()] = Some(Group::Acts(l as u32));
            }
        }
        // The CPU embedding's backward reads dres on the host: its route is the embedding's.
        group_of[inv.head.dres.index()] = Some(Group::Owner(Owner::Embedding));
        // A partial norm is made where its owner's gradient is.
        for o in inv.owners() {
            if let Some(t) = inv.grad_norm(o) {
                group_of[t.index()] = Some(Group::Owner(o));
            }
        }
        let mut touched_by: Vec<Vec<usize>> = vec![Vec::new(); inv.tensors.len()];
        let mut alloc_free: Vec<Vec<AllocFree>> = vec![Vec::new(); inv.tensors.len()];
        for (i, op) in program.ops.iter().enumerate() {
            for t in op.touches() {
                let uses = &mut touched_by[t.index()];
                if uses.last() != Some(&i) {
                    uses.push(i);
                }
            }
            for t in op.allocs.iter().chain(&op.frees) {
                let list = &mut alloc_free[t.index()];
                if list.last().map(|e| e.op) != Some(i) {
                    list.push(AllocFree { op: i, allocs: op.allocs.contains(t), frees: op.frees.contains(t) });
                }
            }
        }
        Router { program, stages: Stages::build(program), group_of, touched_by, alloc_free }
    }

    /// The ops that touch `t`, in program order.
    fn uses(&self, t: TensorId) -> &[usize] {
        &self.touched_by[t.index()]
    }

    /// Items of every tensor no decision moves, and the clip scale's host work.
    pub fn fixed_items(&self) -> Vec<Item> {
        let mut out = Vec::new();
        for t in &self.program.inventory.tensors {
            if self.group_of[t.id.index()].is_none() {
                self.program_route(t.id, &mut out);
            }
        }
        if let (Some(clip), Some(s)) = (&self.program.inventory.clip, self.clip_stage()) {
            let op = self.program.clip_scale_op().expect("a clipped program has its scale op").id;
            out.push(Item::Host { stage: s, op, after_d2h: true });
            out.push(Item::H2D { stage: s, tensor: clip.scale, after_host: Some(s) });
        }
        out
    }

    /// The stage of the clip scale, in a clipped step.
    fn clip_stage(&self) -> Option<usize> {
        self.program.clip_scale_op().map(|o| self.stages.stage_of_op[o.id.index()])
    }

    /// Items of one group under one choice.
    pub fn owner_items(&self, owner: Owner, c: OwnerChoice) -> Vec<Item> {
        let inv = &self.program.inventory;
        let p = *inv.params(owner);
        let st = &self.stages;
        let mut out = Vec::new();
        let adam = self.program.find(OpKind::Adam(owner)).map(|o| o.id);
        let host_adam = c.optimizer == Placement::Host;
        let cpu_embedding = owner == Owner::Embedding && c.weights == Placement::Host;
        // Ops of this owner that run on the host: their touches are not GPU uses.
        let mut host_ops: Vec<OpId> = Vec::new();
        if host_adam {
            host_ops.extend(adam);
        }
        if cpu_embedding {
            for k in [OpKind::Embed, OpKind::EmbedBwd, OpKind::GradNorm(owner)] {
                host_ops.extend(self.program.find_all(k).map(|o| o.id));
            }
        }
        let gpu_uses =
            |t: TensorId| -> Vec<usize> { self.uses(t).iter().copied().filter(|i| !host_ops.contains(&OpId(*i as u32))).collect() };
        // The CPU embedding's dres: made on the GPU each micro-batch, its rows scattered on the host.
        let dres_uses = if cpu_embedding { gpu_uses(inv.head.dres) } else { Vec::new() };
        let last_dres_of = |micro: u32| dres_uses.iter().copied().rfind(|i| self.program.ops[*i].micro == micro);
        // Weights.
        match c.weights {
            Placement::Gpu => out.push(Item::Resident(p.weights)),
            Placement::Streamed => self.off_gpu_route(p.weights, &gpu_uses(p.weights), &mut out),
            _ => {}
        }
        // Optimizer state.
        match c.optimizer {
            Placement::Gpu => out.push(Item::Resident(p.optimizer)),
            Placement::Streamed => self.off_gpu_route(p.optimizer, &gpu_uses(p.optimizer), &mut out),
            _ => {}
        }
        // Gradients, and the host update.
        if host_adam {
            let adam = adam.expect("every owner has an Adam op");
            let uses = gpu_uses(p.grads);
            let update_stage = if let Some(&last) = uses.last() {
                self.program_route_until(p.grads, last, &mut out);
                let s = st.stage_of_op[last] + 1;
                out.push(Item::D2H { stage: s, tensor: p.grads, feeds_host: true });
                out.push(Item::Free { slot: st.last_slot(s), tensor: p.grads });
                s
            } else {
                // CPU embedding: the gradient is scattered on the host, in the stage dres arrives.
                let last_dres = dres_uses.last().copied().unwrap_or(0);
                st.stage_of_op[last_dres] + 1
            };
            if cpu_embedding {
                // Each micro-batch's rows are scattered in the stage its dres arrives.
                for bwd in self.program.find_all(OpKind::EmbedBwd) {
                    let last_dres = last_dres_of(bwd.micro).unwrap_or(0);
                    out.push(Item::Host { stage: st.stage_of_op[last_dres] + 1, op: bwd.id, after_d2h: true });
                }
                if let Some(norm) = self.program.find(OpKind::GradNorm(owner)) {
                    out.push(Item::Host { stage: update_stage, op: norm.id, after_d2h: true });
                }
            }
            // Clipped, the update needs the scale: in the owner's own update stage (after the
            // clip stage, so the scale's copy to the GPU waits for the scale alone), one owner
            // per stage as on the GPU, so no stage's time depends on every owner's choice.
            let update_stage = match self.clip_stage() {
                Some(_) => st.stage_of_op[adam.index()].max(update_stage),
                None => update_stage,
            };
            out.push(Item::Host { stage: update_stage, op: adam, after_d2h: true });
            if c.weights == Placement::Gpu {
                // The updated bf16 weights come back into the resident buffer.
                out.push(Item::H2D { stage: update_stage + 1, tensor: p.weights, after_host: Some(update_stage) });
            }
        } else {
            self.program_route(p.grads, &mut out);
        }
        // The partial norm: made on the GPU beside the gradient and copied to the host for the
        // scale, or made on the host where the CPU embedding scattered the gradient.
        if let (Some(norm), Some(clip)) = (inv.grad_norm(owner), self.clip_stage()) {
            if !cpu_embedding {
                let op = self.program.find(OpKind::GradNorm(owner)).expect("every owner has a partial norm").id.index();
                out.push(Item::Alloc { slot: st.slot_of_op[op], tensor: norm });
                out.push(Item::D2H { stage: clip, tensor: norm, feeds_host: true });
                out.push(Item::Free { slot: st.last_slot(clip), tensor: norm });
            }
        }
        if owner == Owner::Embedding {
            let dres = inv.head.dres;
            if cpu_embedding {
                for embed in self.program.find_all(OpKind::Embed) {
                    let s = st.stage_of_op[embed.id.index()];
                    out.push(Item::Host { stage: s, op: embed.id, after_d2h: false });
                    for t in &embed.allocs {
                        out.push(Item::H2D { stage: s, tensor: *t, after_host: Some(s) });
                    }
                    // This micro-batch's dres: made on the GPU, sent to the host after its last use.
                    let m = embed.micro;
                    let last = last_dres_of(m).expect("dres is used");
                    self.program_route_within(dres, embed.id.index()..=last, &mut out);
                    let s = st.stage_of_op[last] + 1;
                    out.push(Item::D2H { stage: s, tensor: dres, feeds_host: true });
                    out.push(Item::Free { slot: st.last_slot(s), tensor: dres });
                }
            } else {
                self.program_route(dres, &mut out);
            }
        }
        out
    }

    pub fn act_items(&self, l: u32, c: ActChoice) -> Vec<Item> {
        let inv = &self.program.inventory;
        let a = inv.acts[l as usize];
        let st = &self.stages;
        let mut out = Vec::new();
        let uses = |t: TensorId| -> Vec<usize> { self.uses(t).to_vec() };
        match c.input {
            Placement::Offloaded => self.off_gpu_route(a.x_in, &uses(a.x_in), &mut out),
            _ => self.program_route(a.x_in, &mut out),
        }
        let inner = inv.block_of(a.ln1).tensors.clone();
        match c.inner {
            Placement::Offloaded => {
                for t in inner {
                    self.off_gpu_route(t, &uses(t), &mut out);
                }
            }
            Placement::Recomputed => {
                // Each micro-batch makes the activations, drops them after its forward and
                // rebuilds them at the start of its layer's backward.
                for m in 0..self.program.micro_batches {
                    let bwd = self.program.find_in(OpKind::FcProjBwd(l), m).expect("layer backward").id.index();
                    let s = st.stage_of_op[bwd];
                    for &t in &inner {
                        let u: Vec<usize> = uses(t).into_iter().filter(|i| self.program.ops[*i].micro == m).collect();
                        let fwd_last = *u.iter().rfind(|i| st.stage_of_op[**i] < s).expect("forward use");
                        let alloc = *u.first().expect("allocated");
                        out.push(Item::Alloc { slot: st.slot_of_op[alloc], tensor: t });
                        out.push(Item::Free { slot: st.slot_of_op[fwd_last], tensor: t });
                        out.push(Item::Alloc { slot: st.first_slot(s), tensor: t });
                        let free = self.alloc_free[t.index()].iter().find(|e| e.frees && e.op >= bwd).expect("freed").op;
                        out.push(Item::Free { slot: st.slot_of_op[free], tensor: t });
                    }
                    for op in self.program.recompute_ops(l, m) {
                        out.push(Item::Recompute { stage: s, op });
                    }
                }
            }
            _ => {
                for t in inner {
                    self.program_route(t, &mut out);
                }
            }
        }
        out
    }

    pub fn group_items(&self, g: Group, d: &Decisions) -> Vec<Item> {
        match g {
            Group::Owner(o) => self.owner_items(o, d.owner(o)),
            Group::Acts(l) => self.act_items(l, d.layers[l as usize]),
        }
    }

    /// Every item of a whole plan.
    pub fn items(&self, d: &Decisions) -> Vec<Item> {
        let mut v = self.fixed_items();
        for g in Decisions::groups(self.program) {
            v.extend(self.group_items(g, d));
        }
        v
    }

    /// The program's own allocations and frees of `t` (persistent: resident).
    fn program_route(&self, t: TensorId, out: &mut Vec<Item>) {
        self.program_route_until(t, usize::MAX, out)
    }

    /// The program's allocations and frees of `t` up to op `until` (frees after it dropped).
    fn program_route_until(&self, t: TensorId, until: usize, out: &mut Vec<Item>) {
        self.program_route_within(t, 0..=until, out)
    }

    /// The program's allocations and frees of `t` by the ops in `ops` (a free by the last
    /// dropped).
    fn program_route_within(&self, t: TensorId, ops: std::ops::RangeInclusive<usize>, out: &mut Vec<Item>) {
        if self.program.inventory.tensor(t).persistent {
            out.push(Item::Resident(t));
            return;
        }
        let until = *ops.end();
        for e in self.alloc_free[t.index()].iter().filter(|e| ops.contains(&e.op)) {
            let slot = self.stages.slot_of_op[e.op];
            if e.allocs {
                out.push(Item::Alloc { slot, tensor: t });
            }
            if e.frees && e.op < until {
                out.push(Item::Free { slot, tensor: t });
            }
        }
    }

    /// A tensor kept off the GPU between groups of uses (streamed or offloaded): brought in the
    /// stage before each group (unless the program creates it there), sent out in the stage after
    /// (if the GPU copy changed), or freed at its last use.
    fn off_gpu_route(&self, t: TensorId, uses: &[usize], out: &mut Vec<Item>) {
        let st = &self.stages;
        let prog = self.program;
        if uses.is_empty() {
            return;
        }
        // Groups of use stages, merged when a round trip would save nothing.
        let mut groups: Vec<(usize, usize, Vec<usize>)> = Vec::new();
        for &u in uses {
            let s = st.stage_of_op[u];
            match groups.last_mut() {
                Some(g) if s <= g.1 + 2 => {
                    g.1 = s;
                    g.2.push(u);
                }
                _ => groups.push((s, s, vec![u])),
            }
        }
        let persistent = prog.inventory.tensor(t).persistent;
        let mut host_current = persistent;
        for (start, end, ops) in groups {
            let first = ops[0];
            let last = *ops.last().unwrap();
            if prog.ops[first].allocs.contains(&t) {
                out.push(Item::Alloc { slot: st.slot_of_op[first], tensor: t });
            } else {
                out.push(Item::Alloc { slot: st.first_slot(start - 1), tensor: t });
                out.push(Item::H2D { stage: start - 1, tensor: t, after_host: None });
            }
            if ops.iter().any(|i| prog.ops[*i].writes.contains(&t) || prog.ops[*i].allocs.contains(&t)) {
                host_current = false;
            }
            if prog.ops[last].frees.contains(&t) {
                out.push(Item::Free { slot: st.slot_of_op[last], tensor: t });
            } else if !host_current {
                out.push(Item::D2H { stage: end + 1, tensor: t, feeds_host: false });
                out.push(Item::Free { slot: st.last_slot(end + 1), tensor: t });
                host_current = true;
            } else {
                out.push(Item::Free { slot: st.slot_of_op[last], tensor: t });
            }
        }
    }
}
