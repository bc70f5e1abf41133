//! The step time as the compute lane spends it (`models::figures::StepBreakdown`), from a
//! simulated trace: busy, waiting on each other lane, and after its last op. The one place that
//! sorts the compute lane's waits by the lane they wait on; the prediction's exposed transfer
//! is read from it.

use models::figures::StepBreakdown;
use models::schedule::{Action, Lane};
use models::trace::{SpanKind, Trace};
use models::{Schedule, Seconds};
use std::collections::HashMap;

/// Per action, for a `Wait`: the lane of the record it binds to (the latest earlier record of
/// its event, as `cudaStreamWaitEvent` binds at issue).
pub(crate) fn waited_lanes(schedule: &Schedule) -> Vec<Option<Lane>> {
    let mut record_lane: HashMap<u32, Lane> = HashMap::new();
    let mut wait_on = vec![None; schedule.actions.len()];
    for (i, a) in schedule.actions.iter().enumerate() {
        match *a {
            Action::Record(e, l) => {
                record_lane.insert(e.0, l);
            }
            Action::Wait(e, _) => wait_on[i] = record_lane.get(&e.0).copied(),
            _ => {}
        }
    }
    wait_on
}

/// The step of `trace` (a simulation of `schedule`) broken into what the compute lane did. The
/// simulator's compute lane is never idle but while it waits (on another lane, or for the host
/// to issue its next op), so the parts sum to the step. A
/// wait on the compute lane's own event costs no time (its record came first on the lane); one
/// bound to no record cannot be simulated; either would count as waiting on the host.
pub fn step_breakdown(schedule: &Schedule, trace: &Trace) -> StepBreakdown {
    let wait_on = waited_lanes(schedule);
    let mut b = StepBreakdown { step: trace.step_time, ..StepBreakdown::default() };
    let mut compute_end = Seconds::ZERO;
    for s in trace.spans.iter().filter(|s| s.lane == Lane::Compute) {
        let len = s.end - s.start;
        compute_end = compute_end.max(s.end);
        match s.kind {
            SpanKind::Op => b.compute_busy += len,
            SpanKind::Recompute => {
                b.compute_busy += len;
                b.recompute += len;
            }
            SpanKind::Wait => match wait_on.get(s.action).copied().flatten() {
                Some(Lane::HostToDevice) => b.waiting_on_h2d += len,
                Some(Lane::DeviceToHost) => b.waiting_on_d2h += len,
                Some(Lane::Host | Lane::Compute) | None => b.waiting_on_host += len,
            },
            SpanKind::Issue => b.waiting_on_launches += len,
            SpanKind::HostOp | SpanKind::Prefetch | SpanKind::Evict => {}
        }
    }
    b.after_compute = (trace.step_time - compute_end).max(Seconds::ZERO);
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shipped::{h100, program};
    use crate::{strategy, SolveOptions};
    use models::Bytes;

    fn assert_sums(what: &str, schedule: &Schedule, trace: &Trace) -> StepBreakdown {
        let b = step_breakdown(schedule, trace);
        let off = (b.sum() - b.step).0.abs();
        assert!(off < 1e-6, "{what}: parts {} vs step {} ({b:?})", b.sum(), b.step);
        assert_eq!(b.step, trace.step_time);
        assert!(b.recompute <= b.compute_busy);
        b
    }

    #[test]
    fn the_parts_sum_to_the_step_on_shipped_plans() {
        let hw = h100();
        let opts = SolveOptions::new();
        let mut waited = [false; 3];
        for (name, gib) in [("gpt2-124m", 2.0), ("gpt3-125m", 2.25), ("gpt3-1.3b", 10.75), ("gpt3-2.7b", 24.0), ("gpt3-6.7b", 26.0)] {
            let p = program(name);
            let plan = crate::plan(&p, &hw, Bytes::gib(gib), &opts).unwrap();
            let b = assert_sums(&format!("{name} at {gib} GiB"), &plan.schedule, &plan.trace);
            // The prediction's exposed transfer is the breakdown's waits on copies.
            assert!((plan.schedule.prediction.exposed_transfer - b.exposed_transfer()).0.abs() < 1e-12);
            for (w, t) in waited.iter_mut().zip([b.waiting_on_h2d, b.waiting_on_d2h, b.waiting_on_host]) {
                *w |= t.0 > 0.0;
            }
            // Perturbed durations (every third action twice as long) still add up.
            let t = crate::simulate_with_timing(&p, &hw, &plan.schedule, &|i| if i % 3 == 0 { 2.0 } else { 1.0 }).unwrap();
            assert_sums(&format!("{name} at {gib} GiB, perturbed"), &plan.schedule, &t);
        }
        assert!(waited.iter().all(|w| *w), "some plan waits on each of H2D, D2H and host: {waited:?}");
    }

    #[test]
    fn the_parts_sum_to_the_step_on_presets() {
        let hw = h100();
        let p = program("gpt3-125m");
        for names in ["keep-all", "recompute-all", "offload-all", "host-optimizer,cpu-embedding", "stream-weights,streamed-optimizer"] {
            let presets = strategy::parse_strategy(names).unwrap();
            let plan = strategy::strategy_plan(&p, &hw, Bytes::gib(80.0), names, &presets).unwrap();
            let b = assert_sums(names, &plan.schedule, &plan.trace);
            if names == "keep-all" {
                assert_eq!((b.waiting_on_h2d, b.waiting_on_d2h, b.waiting_on_host), (Seconds::ZERO, Seconds::ZERO, Seconds::ZERO));
            }
        }
    }
}
