//! From decisions to a schedule: stages, tensor routes, and the ordered actions.
//!
//! The step is cut into stages: a prologue, the embedding, each layer's forward, the head (one
//! stage per output chunk), each layer's backward with its Adam update, the embedding's backward,
//! and an epilogue of three stages that drain the copies and host updates still in flight.
//! Every transfer belongs to one stage:
//! - a block needed from stage s on is allocated when stage s-1 starts and copied in during
//!   s-1 (double buffering, one stage ahead: `PREFETCH_STAGES`);
//! - a block changed on the GPU and not needed for a while is copied out during the stage after
//!   its last use and freed when that stage ends;
//! - host work (CPU embedding, host AdamW) runs in the stage its inputs arrive in.
//!
//! Every `Alloc` and `Free` is on the compute lane, and the compute lane waits at the end of
//! each stage for that stage's copies and host work. So the memory in use is a function of the
//! compute lane's position alone (the budget holds under any timing), and a stage lasts as long
//! as the slowest of its lanes: the step time is the sum over stages of that maximum, which is
//! what the solver's model (`solve::model`) adds up.

use crate::decisions::{ActChoice, Decisions, Group, OwnerChoice};
use models::inventory::{Owner, TensorId};
use models::program::OpKind;
use models::schedule::{Action, EventId, Lane, Prediction, Schedule, SCHEDULE_FORMAT_VERSION};
use models::{Bytes, HardwareProfile, OpId, Placement, Program};
use std::ops::Range;

/// How many stages ahead of first use a prefetch is issued.
pub const PREFETCH_STAGES: u32 = 1;
/// Stages with no compute after the last op, to drain copies and host updates.
const EPILOGUE: usize = 3;

/// One stage of the step.
#[derive(Clone, Debug, PartialEq)]
pub struct Stage {
    pub name: String,
    /// Program op indices.
    pub ops: Range<usize>,
    /// Memory checkpoints: one per op, or one for a stage without ops.
    pub slots: Range<usize>,
}

/// The step cut into stages, and where each op's memory checkpoint (slot) is.
#[derive(Clone, Debug)]
pub struct Stages {
    pub stages: Vec<Stage>,
    pub slot_of_op: Vec<usize>,
    pub stage_of_op: Vec<usize>,
    pub n_slots: usize,
    /// Per slot: the op run there, if any.
    pub op_of_slot: Vec<Option<usize>>,
}

impl Stages {
    pub fn build(program: &Program) -> Stages {
        let starts_stage = |k: OpKind| {
            matches!(k, OpKind::Embed | OpKind::Ln1(_) | OpKind::LnF | OpKind::OutBwd(_) | OpKind::FcProjBwd(_) | OpKind::EmbedBwd)
                || matches!(k, OpKind::OutFwd(i) if i > 0)
        };
        let mut cuts: Vec<usize> = program.ops.iter().enumerate().filter(|(_, o)| starts_stage(o.kind)).map(|(i, _)| i).collect();
        if cuts.first() != Some(&0) {
            cuts.insert(0, 0);
        }
        let mut stages = vec![Stage { name: "prologue".into(), ops: 0..0, slots: 0..1 }];
        let mut slot = 1;
        for (j, &a) in cuts.iter().enumerate() {
            let b = cuts.get(j + 1).copied().unwrap_or(program.ops.len());
            let name = stage_name(program.ops[a].kind);
            stages.push(Stage { name, ops: a..b, slots: slot..slot + (b - a) });
            slot += b - a;
        }
        for e in 0..EPILOGUE {
            stages.push(Stage { name: format!("epilogue{e}"), ops: 0..0, slots: slot..slot + 1 });
            slot += 1;
        }
        let mut slot_of_op = vec![0; program.ops.len()];
        let mut stage_of_op = vec![0; program.ops.len()];
        let mut op_of_slot = vec![None; slot];
        for (s, st) in stages.iter().enumerate() {
            for (k, i) in st.ops.clone().enumerate() {
                slot_of_op[i] = st.slots.start + k;
                stage_of_op[i] = s;
                op_of_slot[st.slots.start + k] = Some(i);
            }
        }
        Stages { stages, slot_of_op, stage_of_op, n_slots: slot, op_of_slot }
    }

    pub fn first_slot(&self, s: usize) -> usize {
        self.stages[s].slots.start
    }
    pub fn last_slot(&self, s: usize) -> usize {
        self.stages[s].slots.end - 1
    }
    pub fn len(&self) -> usize {
        self.stages.len()
    }
    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }
}

fn stage_name(k: OpKind) -> String {
    match k {
        OpKind::Embed => "embed".into(),
        OpKind::Ln1(l) => format!("layer{l}.fwd"),
        OpKind::LnF => "head.fwd".into(),
        OpKind::OutFwd(i) => format!("chunk{i}.fwd"),
        OpKind::OutBwd(i) => format!("chunk{i}.bwd"),
        OpKind::FcProjBwd(l) => format!("layer{l}.bwd"),
        OpKind::EmbedBwd => "embed.bwd".into(),
        other => format!("{other:?}"),
    }
}

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
        Router { program, stages: Stages::build(program), group_of }
    }

    /// Items of every tensor no decision moves.
    pub fn fixed_items(&self) -> Vec<Item> {
        let mut out = Vec::new();
        for t in &self.program.inventory.tensors {
            if self.group_of[t.id.index()].is_none() {
                self.program_route(t.id, &mut out);
            }
        }
        out
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
            host_ops.extend([OpKind::Embed, OpKind::EmbedBwd].iter().filter_map(|k| self.program.find(*k).map(|o| o.id)));
        }
        let gpu_uses = |t: TensorId| -> Vec<usize> {
            self.program.ops.iter().filter(|o| !host_ops.contains(&o.id) && o.touches().any(|x| x == t)).map(|o| o.id.index()).collect()
        };
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
                let last_dres = gpu_uses(inv.head.dres).last().copied().unwrap_or(0);
                st.stage_of_op[last_dres] + 1
            };
            if cpu_embedding {
                let bwd = self.program.find(OpKind::EmbedBwd).map(|o| o.id).expect("embed_bwd");
                out.push(Item::Host { stage: update_stage, op: bwd, after_d2h: true });
            }
            out.push(Item::Host { stage: update_stage, op: adam, after_d2h: true });
            if c.weights == Placement::Gpu {
                // The updated bf16 weights come back into the resident buffer.
                out.push(Item::H2D { stage: update_stage + 1, tensor: p.weights, after_host: Some(update_stage) });
            }
        } else {
            self.program_route(p.grads, &mut out);
        }
        if owner == Owner::Embedding {
            let dres = inv.head.dres;
            if cpu_embedding {
                let embed = self.program.op(OpId(0));
                debug_assert_eq!(embed.kind, OpKind::Embed);
                let s = st.stage_of_op[0];
                out.push(Item::Host { stage: s, op: embed.id, after_d2h: false });
                for t in &embed.allocs {
                    out.push(Item::H2D { stage: s, tensor: *t, after_host: Some(s) });
                }
                let uses = gpu_uses(dres);
                let last = *uses.last().expect("dres is used");
                self.program_route_until(dres, last, &mut out);
                let s = st.stage_of_op[last] + 1;
                out.push(Item::D2H { stage: s, tensor: dres, feeds_host: true });
                out.push(Item::Free { slot: st.last_slot(s), tensor: dres });
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
        let uses =
            |t: TensorId| -> Vec<usize> { self.program.ops.iter().filter(|o| o.touches().any(|x| x == t)).map(|o| o.id.index()).collect() };
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
                let bwd = self.program.find(OpKind::FcProjBwd(l)).expect("layer backward").id.index();
                let s = st.stage_of_op[bwd];
                for t in inner {
                    let u = uses(t);
                    let fwd_last = *u.iter().rfind(|i| st.stage_of_op[**i] < s).expect("forward use");
                    let alloc = *u.first().expect("allocated");
                    out.push(Item::Alloc { slot: st.slot_of_op[alloc], tensor: t });
                    out.push(Item::Free { slot: st.slot_of_op[fwd_last], tensor: t });
                    out.push(Item::Alloc { slot: st.first_slot(s), tensor: t });
                    let free = self.program.ops.iter().find(|o| o.frees.contains(&t)).expect("freed").id.index();
                    out.push(Item::Free { slot: st.slot_of_op[free], tensor: t });
                }
                for op in self.program.recompute_ops(l) {
                    out.push(Item::Recompute { stage: s, op });
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
        if self.program.inventory.tensor(t).persistent {
            out.push(Item::Resident(t));
            return;
        }
        for op in self.program.ops.iter().take(until.saturating_add(1)) {
            let slot = self.stages.slot_of_op[op.id.index()];
            if op.allocs.contains(&t) {
                out.push(Item::Alloc { slot, tensor: t });
            }
            if op.frees.contains(&t) && op.id.index() < until {
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

/// Ops whose GPU run is replaced by a host run in these items.
pub fn host_ops(items: &[Item]) -> Vec<OpId> {
    items.iter().filter_map(|i| if let Item::Host { op, .. } = i { Some(*op) } else { None }).collect()
}

/// Persistent tensors that start the step on the host: those with no `Resident` item.
pub fn host_resident(program: &Program, items: &[Item]) -> Vec<TensorId> {
    let mut resident = vec![false; program.inventory.tensors.len()];
    for i in items {
        if let Item::Resident(t) = i {
            resident[t.index()] = true;
        }
    }
    program.inventory.tensors.iter().filter(|t| t.persistent && !resident[t.id.index()]).map(|t| t.id).collect()
}

/// The ordered actions of `items`, and for each slot the action index where its memory is
/// reached (the op's run, or the last allocation of an empty stage).
pub fn actions(program: &Program, stages: &Stages, items: &[Item]) -> (Vec<Action>, Vec<usize>) {
    let n_st = stages.len();
    let mut allocs: Vec<Vec<TensorId>> = vec![Vec::new(); stages.n_slots];
    let mut frees: Vec<Vec<TensorId>> = vec![Vec::new(); stages.n_slots];
    let mut h2d: Vec<Vec<(TensorId, Option<usize>)>> = vec![Vec::new(); n_st];
    let mut d2h: Vec<Vec<(TensorId, bool)>> = vec![Vec::new(); n_st];
    let mut host: Vec<Vec<(OpId, bool)>> = vec![Vec::new(); n_st];
    let mut recompute: Vec<Vec<OpId>> = vec![Vec::new(); n_st];
    let mut on_host = vec![false; program.ops.len()];
    for it in items {
        match *it {
            Item::Resident(_) => {}
            Item::Alloc { slot, tensor } => allocs[slot].push(tensor),
            Item::Free { slot, tensor } => frees[slot].push(tensor),
            Item::H2D { stage, tensor, after_host } => h2d[stage].push((tensor, after_host)),
            Item::D2H { stage, tensor, feeds_host } => d2h[stage].push((tensor, feeds_host)),
            Item::Host { stage, op, after_d2h } => {
                host[stage].push((op, after_d2h));
                on_host[op.index()] = true;
            }
            Item::Recompute { stage, op } => recompute[stage].push(op),
        }
    }
    for v in allocs.iter_mut().chain(frees.iter_mut()) {
        v.sort();
    }
    for v in &mut host {
        v.sort();
    }
    for v in &mut recompute {
        v.sort();
    }
    // Host-bound copies first, so host work starts as early as it can.
    for v in &mut d2h {
        v.sort_by_key(|(t, feeds)| (!*feeds, *t));
    }
    // Copies that wait for the host last, so the others do not queue behind them.
    for v in &mut h2d {
        v.sort_by_key(|(t, after)| (after.is_some(), *t));
    }

    let mut acts = Vec::new();
    let mut slot_action = vec![0; stages.n_slots];
    let mut next_event = 0u32;
    let mut event = || {
        next_event += 1;
        EventId(next_event - 1)
    };
    let mut host_event: Vec<Option<EventId>> = vec![None; n_st];
    for (s, stage) in stages.stages.iter().enumerate() {
        let first = stage.slots.start;
        let last = stage.slots.end - 1;
        for t in &allocs[first] {
            acts.push(Action::Alloc(*t, Lane::Compute));
        }
        slot_action[first] = acts.len().saturating_sub(1);
        let lanes_busy = !h2d[s].is_empty() || !d2h[s].is_empty() || !host[s].is_empty();
        let start = if lanes_busy {
            let e = event();
            acts.push(Action::Record(e, Lane::Compute));
            Some(e)
        } else {
            None
        };
        let mut end_waits = Vec::new();
        // D2H lane.
        let mut feed_event = None;
        if !d2h[s].is_empty() {
            acts.push(Action::Wait(start.unwrap(), Lane::DeviceToHost));
            let feeds = d2h[s].iter().filter(|(_, f)| *f).count();
            for (k, (t, _)) in d2h[s].iter().enumerate() {
                acts.push(Action::Evict(*t));
                if k + 1 == feeds {
                    let e = event();
                    acts.push(Action::Record(e, Lane::DeviceToHost));
                    feed_event = Some(e);
                }
            }
            if feeds < d2h[s].len() {
                let e = event();
                acts.push(Action::Record(e, Lane::DeviceToHost));
                end_waits.push(e);
            } else {
                end_waits.push(feed_event.unwrap());
            }
        }
        // Host lane.
        if !host[s].is_empty() {
            let mut waited = false;
            for (op, after) in &host[s] {
                if *after && !waited {
                    if let Some(e) = feed_event {
                        acts.push(Action::Wait(e, Lane::Host));
                    }
                    waited = true;
                }
                acts.push(Action::HostRun(*op));
            }
            let e = event();
            acts.push(Action::Record(e, Lane::Host));
            host_event[s] = Some(e);
            end_waits.push(e);
        }
        // H2D lane.
        if !h2d[s].is_empty() {
            acts.push(Action::Wait(start.unwrap(), Lane::HostToDevice));
            let mut waited: Option<usize> = None;
            for (t, after) in &h2d[s] {
                if let Some(hs) = after {
                    if waited != Some(*hs) {
                        if let Some(e) = host_event[*hs] {
                            acts.push(Action::Wait(e, Lane::HostToDevice));
                        }
                        waited = Some(*hs);
                    }
                }
                acts.push(Action::Prefetch(*t));
            }
            let e = event();
            acts.push(Action::Record(e, Lane::HostToDevice));
            end_waits.push(e);
        }
        // Compute lane.
        for op in &recompute[s] {
            acts.push(Action::Recompute(*op));
        }
        for i in stage.ops.clone() {
            let slot = stages.slot_of_op[i];
            if slot != first {
                for t in &allocs[slot] {
                    acts.push(Action::Alloc(*t, Lane::Compute));
                }
            }
            if !on_host[i] {
                acts.push(Action::Run(OpId(i as u32)));
            }
            slot_action[slot] = acts.len().saturating_sub(1);
            if slot != last {
                for t in &frees[slot] {
                    acts.push(Action::Free(*t, Lane::Compute));
                }
            }
        }
        for e in end_waits {
            acts.push(Action::Wait(e, Lane::Compute));
        }
        for t in &frees[last] {
            acts.push(Action::Free(*t, Lane::Compute));
        }
    }
    (acts, slot_action)
}

/// Builds the schedule of `decisions`, with the stage model's prediction (the planner replaces
/// it with the simulator's).
pub fn emit(program: &Program, hw: &HardwareProfile, decisions: &Decisions, budget: Bytes) -> Result<Schedule, crate::PlanError> {
    decisions.validate(program)?;
    let model = crate::solve::model::StageModel::new(program, hw);
    let items = model.router.items(decisions);
    let (actions, slot_action) = actions(program, &model.router.stages, &items);
    let eval = model.evaluate(decisions);
    let peak_action = slot_action[eval.peak_slot];
    let prediction = Prediction {
        peak_allocated: eval.peak,
        peak_action,
        peak_at: model.slot_label(eval.peak_slot),
        fixed_overhead: hw.fixed_overhead,
        step_time: eval.step_time,
        compute_time: eval.compute_time,
        h2d_bytes: eval.h2d_bytes,
        d2h_bytes: eval.d2h_bytes,
        exposed_transfer: eval.exposed,
        hidden_transfer: eval.hidden,
        solver: None,
        arena: None,
        pinned_host: models::Bytes(0),
        device: None,
    };
    Ok(Schedule {
        format_version: SCHEDULE_FORMAT_VERSION,
        inventory_digest: models::digest::program_digest(program),
        model: program.config.clone(),
        hardware: hw.name.clone(),
        budget,
        strategy: "planner".into(),
        decisions: decisions.block_decisions(program),
        host_resident: host_resident(program, &items),
        actions,
        prediction,
    })
}
