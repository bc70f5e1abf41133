//! The simulator: an event simulation of a schedule on the four lanes of `models::schedule`
//! (compute, H2D, D2H, host), giving memory over time, the work on each lane, where each block
//! is, and the step time; and the checker of DESIGN.md invariants 1 and 2.
//!
//! How it runs (`engine`): every lane takes its actions in list order. `Alloc`, `Free`, `Record`
//! and a satisfied `Wait` take no time; `Run`/`Recompute` take `cost::op_time`, `HostRun`
//! `cost::host_op_time`, copies move their bytes at the link rate, which is the duplex rate while
//! the other direction copies too (a copy's remaining bytes progress at the rate in force, and
//! the rate changes when the other direction starts or stops). Memory is taken and given back
//! when a lane reaches the `Alloc`/`Free`, rounded up to the allocator granularity.
//!
//! What it checks, each a `SimError`:
//! - statically (`order`): every `Wait` has a `Record` of its event earlier in the list (a
//!   `Wait` binds to the latest one, as `cudaStreamWaitEvent` does at issue); after the timed
//!   run, every two accesses of a tensor's device buffer or host copy of which one writes are ordered
//!   by lanes and `Record`/`Wait` (happens-before), so no timing can reorder them;
//! - in the simulated timing: an op touches only allocated tensors and reads only tensors whose
//!   data is on the GPU (a prefetch into them has completed, or an op produced them); host ops
//!   read only current host copies; copies go into and out of allocated buffers; no double
//!   alloc/free, no free while a copy or op uses the tensor, no free of the only current copy of
//!   a persistent tensor; the step ends where it began (periodic);
//! - the budget: peak allocated + fixed overhead within `schedule.budget`, else
//!   `SimError::OverBudget`, which carries the full trace so callers can still show it.
//!
//! `step_breakdown` says how the compute lane spends the step (busy, waiting on each other
//! lane, after its last op); the prediction and every output read the step's parts from it.
//!
//! `worst_case_peak` bounds the peak over every timing the happens-before order allows (used by
//! tests and `offplan simulate` to show that the budget holds under any timing).

mod breakdown;
mod engine;
mod error;
mod labels;
mod order;
mod prediction;
mod record;
#[cfg(test)]
mod tests;

pub use breakdown::step_breakdown;
pub use error::SimError;
pub use labels::{action_label, peak_label};
pub use order::worst_case_peak;
pub use prediction::prediction_from_trace;

use models::trace::Trace;
use models::{HardwareProfile, Program, Schedule};

/// Simulates one step of `schedule` with the cost model's durations.
pub fn simulate(program: &Program, hw: &HardwareProfile, schedule: &Schedule) -> Result<Trace, SimError> {
    simulate_with_timing(program, hw, schedule, &|_| 1.0)
}

/// Simulates with the duration of action `i` multiplied by `scale(i)` (a copy's bytes count
/// `scale(i)` times, so its duration scales whatever the rate).
pub fn simulate_with_timing(
    program: &Program,
    hw: &HardwareProfile,
    schedule: &Schedule,
    scale: &dyn Fn(usize) -> f64,
) -> Result<Trace, SimError> {
    let order = order::order_of(program, &schedule.actions)?;
    // Timing first: its errors are the concrete ones ("at 40 us its prefetch is still copying");
    // the race check then catches what this timing happened to get right.
    let trace = engine::Engine::new(program, hw, schedule, &order, scale).run()?;
    order::check_races(&order, program, &schedule.actions)?;
    let device_peak = trace.peak_allocated + hw.fixed_overhead;
    if device_peak > schedule.budget {
        return Err(SimError::OverBudget {
            peak: trace.peak_allocated,
            fixed_overhead: hw.fixed_overhead,
            budget: schedule.budget,
            action: trace.peak_action,
            at: peak_label(program, schedule, trace.peak_action),
            trace: Box::new(trace),
        });
    }
    Ok(trace)
}
