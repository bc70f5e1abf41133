//! A schedule's `Prediction` from its simulated trace.

use super::labels::peak_label;
use models::schedule::{Action, Lane, Prediction};
use models::trace::{SpanKind, Trace};
use models::{Bytes, HardwareProfile, Program, Schedule, Seconds};
use std::collections::HashMap;

/// Fills a prediction from a trace: peak and where, fixed overhead, step time, compute busy time,
/// bytes each way, exposed transfer (time the compute lane waited on events recorded on a copy
/// lane), hidden transfer (copy time not exposed), the arena's size, the pinned host memory and the
/// device memory it all takes. `solver` is left `None`.
pub fn prediction_from_trace(trace: &Trace, schedule: &Schedule, program: &Program, hw: &HardwareProfile) -> Prediction {
    let inv = &program.inventory;
    let (mut h2d, mut d2h) = (Bytes::ZERO, Bytes::ZERO);
    // The lane of the record each wait binds to (the latest earlier record of its event).
    let mut record_lane: HashMap<u32, Lane> = HashMap::new();
    let mut wait_on: Vec<Option<Lane>> = vec![None; schedule.actions.len()];
    for (i, a) in schedule.actions.iter().enumerate() {
        match *a {
            Action::Prefetch(t) => h2d += inv.tensor(t).bytes,
            Action::Evict(t) => d2h += inv.tensor(t).bytes,
            Action::Record(e, l) => {
                record_lane.insert(e.0, l);
            }
            Action::Wait(e, _) => wait_on[i] = record_lane.get(&e.0).copied(),
            _ => {}
        }
    }
    let len = |s: &models::trace::Span| s.end - s.start;
    let mut compute = Seconds::ZERO;
    let mut exposed = Seconds::ZERO;
    let mut copying = Seconds::ZERO;
    for s in &trace.spans {
        match s.kind {
            SpanKind::Op | SpanKind::Recompute => compute += len(s),
            SpanKind::Prefetch | SpanKind::Evict => copying += len(s),
            SpanKind::Wait if s.lane == Lane::Compute => {
                if matches!(wait_on.get(s.action).copied().flatten(), Some(Lane::HostToDevice | Lane::DeviceToHost)) {
                    exposed += len(s);
                }
            }
            _ => {}
        }
    }
    let arena = models::arena::plan_arena(program, schedule, models::arena::ARENA_ALIGN).ok().map(|a| a.size);
    let pinned = schedule.pinned_bytes(program);
    Prediction {
        peak_allocated: trace.peak_allocated,
        peak_action: trace.peak_action,
        peak_at: peak_label(program, schedule, trace.peak_action),
        fixed_overhead: hw.fixed_overhead,
        step_time: trace.step_time,
        compute_time: compute,
        h2d_bytes: h2d,
        d2h_bytes: d2h,
        exposed_transfer: exposed,
        hidden_transfer: (copying - exposed).max(Seconds::ZERO),
        solver: None,
        arena,
        pinned_host: pinned,
        device: Some(hw.device_bytes(arena.unwrap_or(trace.peak_allocated), pinned)),
    }
}
