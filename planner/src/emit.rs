//! From decisions to a schedule: the ordered actions of every route's items.
//!
//! Every `Alloc` and `Free` is on the compute lane, and the compute lane waits at the end of
//! each stage for that stage's copies and host work. So the memory in use is a function of the
//! compute lane's position alone (the budget holds under any timing), and a stage lasts as long
//! as the slowest of its lanes: the step time is the sum over stages of that maximum, which is
//! what the stage model (`model`) adds up.

use crate::decisions::Decisions;
use crate::model::StageModel;
use crate::route::{Item, Stages};
use crate::PlanError;
use models::inventory::TensorId;
use models::schedule::{Action, EventId, Lane, Prediction, Schedule, SCHEDULE_FORMAT_VERSION};
use models::{Bytes, HardwareProfile, OpId, Program};

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
pub fn emit(program: &Program, hw: &HardwareProfile, decisions: &Decisions, budget: Bytes) -> Result<Schedule, PlanError> {
    decisions.validate(program)?;
    let model = StageModel::new(program, hw);
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
        setup: models::TrainingSetup::gpt3_for(program),
        hardware: hw.name.clone(),
        budget,
        strategy: "planner".into(),
        decisions: decisions.block_decisions(program),
        host_resident: host_resident(program, &items),
        actions,
        prediction,
        checksum: String::new(),
    })
}
