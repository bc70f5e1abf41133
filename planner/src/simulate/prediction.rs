//! A schedule's `Prediction` from its simulated trace.

use super::labels::peak_label;
use models::schedule::{Action, Prediction};
use models::trace::{SpanKind, Trace};
use models::{Bytes, HardwareProfile, Program, Schedule, Seconds};

/// Fills a prediction from a trace: peak and where, fixed overhead, step time, compute busy time
/// and exposed transfer (the compute lane waiting on copy lanes) as `step_breakdown` gives them,
/// bytes each way, hidden transfer (copy time not exposed), the arena's size, the pinned host
/// memory and the device memory it all takes. `solver` is left `None`.
pub fn prediction_from_trace(trace: &Trace, schedule: &Schedule, program: &Program, hw: &HardwareProfile) -> Prediction {
    let inv = &program.inventory;
    let (mut h2d, mut d2h) = (Bytes::ZERO, Bytes::ZERO);
    for a in &schedule.actions {
        match *a {
            Action::Prefetch(t) => h2d += inv.tensor(t).bytes,
            Action::Evict(t) => d2h += inv.tensor(t).bytes,
            _ => {}
        }
    }
    let step = super::step_breakdown(schedule, trace);
    let exposed = step.exposed_transfer();
    let copying: Seconds =
        trace.spans.iter().filter(|s| matches!(s.kind, SpanKind::Prefetch | SpanKind::Evict)).map(|s| s.end - s.start).sum();
    let arena = models::arena::plan_arena(program, schedule, models::arena::ARENA_ALIGN).ok().map(|a| a.size);
    let pinned = schedule.pinned_bytes(program);
    Prediction {
        peak_allocated: trace.peak_allocated,
        peak_action: trace.peak_action,
        peak_at: peak_label(program, schedule, trace.peak_action),
        fixed_overhead: hw.fixed_overhead,
        step_time: trace.step_time,
        compute_time: step.compute_busy,
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
