//! What a schedule guarantees whatever the timing, in the simulator's words: the happens-before
//! order and its races (`models::order`, shared with the executor), and the worst peak any
//! timing can reach.

use super::error::SimError;
use super::labels::action_label;
use models::order::{Order, OrderError, Place};
use models::schedule::Action;
use models::{Bytes, HardwareProfile, Program, Schedule, TensorId};
use std::collections::HashMap;

/// The schedule's happens-before order (`models::order`), its faults named as the simulator
/// names them.
pub(crate) fn order_of(program: &Program, actions: &[Action]) -> Result<Order, SimError> {
    Order::build(program, actions).map_err(|e| match e {
        OrderError::Unrecorded { action, event } => {
            let lane = match actions[action] {
                Action::Wait(_, w) => w.label(),
                _ => actions[action].lane().label(),
            };
            SimError::UnrecordedEvent { action, label: action_label(program, &actions[action]), event, lane }
        }
        OrderError::UnknownId { action, what } => SimError::UnknownId { action, label: format!("{:?}", actions[action]), what },
        OrderError::HostRace { first, second, tensor } => race_error(program, actions, second, first, tensor, Place::Host),
    })
}

/// Refuses a race on a tensor's device buffer or host copy.
pub(crate) fn check_races(order: &Order, program: &Program, actions: &[Action]) -> Result<(), SimError> {
    match order.first_race(program, actions, &[Place::Device, Place::Host]) {
        Some(r) => Err(race_error(program, actions, r.action, r.other, program.inventory.tensor(r.tensor).name.clone(), r.place)),
        None => Ok(()),
    }
}

fn race_error(program: &Program, actions: &[Action], action: usize, other: usize, tensor: String, place: Place) -> SimError {
    SimError::Race {
        action,
        label: action_label(program, &actions[action]),
        other,
        other_label: action_label(program, &actions[other]),
        tensor,
        place: place.label(),
    }
}

/// The highest allocated bytes any timing allowed by the schedule's happens-before order can
/// reach, and the action (an `Alloc`) where: an allocation counts as live at another's moment
/// unless it certainly comes after it, or its free certainly comes before. An upper bound on
/// `simulate_with_timing`'s peak for every `scale` (exact when all memory actions are on one
/// lane). Quadratic in the number of allocations.
pub fn worst_case_peak(program: &Program, hw: &HardwareProfile, schedule: &Schedule) -> Result<(Bytes, usize), SimError> {
    let order = order_of(program, &schedule.actions)?;
    let inv = &program.inventory;
    let g = hw.alloc_granularity;
    // Live intervals: (alloc action or None = at start, free action or None = at end, bytes).
    let mut intervals: Vec<(Option<usize>, Option<usize>, u64)> = Vec::new();
    let mut open: HashMap<TensorId, usize> = HashMap::new();
    let host_start: std::collections::HashSet<TensorId> = schedule.host_resident.iter().copied().collect();
    for t in &inv.tensors {
        if t.persistent && !host_start.contains(&t.id) {
            open.insert(t.id, intervals.len());
            intervals.push((None, None, t.bytes.round_up(g).0));
        }
    }
    for (i, a) in schedule.actions.iter().enumerate() {
        match *a {
            Action::Alloc(t, _) => {
                open.insert(t, intervals.len());
                intervals.push((Some(i), None, inv.tensor(t).bytes.round_up(g).0));
            }
            Action::Free(t, _) => {
                if let Some(k) = open.remove(&t) {
                    intervals[k].1 = Some(i);
                }
            }
            _ => {}
        }
    }
    let start: u64 = intervals.iter().filter(|x| x.0.is_none()).map(|x| x.2).sum();
    // Resident all step long (most of a step's bytes): live at every moment.
    let always: u64 = intervals.iter().filter(|x| x.0.is_none() && x.1.is_none()).map(|x| x.2).sum();
    intervals.retain(|x| x.0.is_some() || x.1.is_some());
    let mut best = (start, 0usize);
    for &(a, _, _) in &intervals {
        let Some(a) = a else { continue };
        let live: u64 = always
            + intervals
                .iter()
                .filter(|(s, f, _)| {
                    let after = s.is_some_and(|s| s != a && order.happens_before(a, s));
                    let freed = f.is_some_and(|f| order.happens_before(f, a));
                    !after && !freed
                })
                .map(|x| x.2)
                .sum::<u64>();
        if live > best.0 {
            best = (live, a);
        }
    }
    Ok((Bytes(best.0), best.1))
}
