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
//! `worst_case_peak` bounds the peak over every timing the happens-before order allows (used by
//! tests and `offplan simulate` to show that the budget holds under any timing).

mod engine;
mod order;
mod prediction;
mod record;
#[cfg(test)]
mod tests;

pub use order::worst_case_peak;
pub use prediction::prediction_from_trace;

use models::schedule::{Action, Lane};
use models::trace::Trace;
use models::{Bytes, HardwareProfile, Program, Schedule, Seconds};

/// Why a schedule does not simulate. Each names the action (index in `schedule.actions` and
/// what it does), and the op and tensor concerned.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("action {action} ({label}) refers to {what}, which this program does not have")]
    UnknownId { action: usize, label: String, what: String },
    #[error("action {action} ({label}) waits for event {event} on the {lane} lane, but no earlier action records it: the lane would wait forever (deadlock)")]
    UnrecordedEvent { action: usize, label: String, event: u32, lane: &'static str },
    #[error("the {lane} lane is stuck at action {action} ({label}): nothing left can record what it waits for (deadlock)")]
    Deadlock { action: usize, label: String, lane: &'static str },
    #[error("action {action} ({label}) and action {other} ({other_label}) both use {tensor} ({place}) and one writes it, but no Record/Wait orders them: some timing reorders them")]
    Race { action: usize, label: String, other: usize, other_label: String, tensor: String, place: &'static str },
    #[error("action {action} ({label}): op {op} uses {tensor}, which is not allocated on the GPU")]
    NotAllocated { action: usize, label: String, op: String, tensor: String },
    #[error("action {action} ({label}): op {op} starts at {at} but its input {tensor} is not on the GPU yet: {why}")]
    NotArrived { action: usize, label: String, op: String, tensor: String, at: Seconds, why: String },
    #[error("action {action} ({label}): host op {op} reads {tensor}, whose host copy is not current: {why}")]
    NotOnHost { action: usize, label: String, op: String, tensor: String, why: String },
    #[error("action {action} ({label}): op {op} cannot run on the host")]
    NotAHostOp { action: usize, label: String, op: String },
    #[error("action {action} ({label}): {tensor} has no GPU allocation to copy into; allocate it first")]
    PrefetchUnallocated { action: usize, label: String, tensor: String },
    #[error("action {action} ({label}): {tensor} has no current host copy to bring in")]
    NoHostCopy { action: usize, label: String, tensor: String },
    #[error("action {action} ({label}): {tensor} is not allocated on the GPU, there is nothing to evict")]
    EvictUnallocated { action: usize, label: String, tensor: String },
    #[error("action {action} ({label}): the GPU copy of {tensor} holds no data yet: {why}")]
    EvictEmpty { action: usize, label: String, tensor: String, why: String },
    #[error("action {action} ({label}): {tensor} is already allocated on the GPU (double alloc)")]
    DoubleAlloc { action: usize, label: String, tensor: String },
    #[error("action {action} ({label}): {tensor} is not allocated on the GPU (double free)")]
    DoubleFree { action: usize, label: String, tensor: String },
    #[error("action {action} ({label}) frees {tensor} while action {user} ({user_label}) still uses it")]
    FreedInUse { action: usize, label: String, tensor: String, user: usize, user_label: String },
    #[error("action {action} ({label}) frees {tensor}, a persistent tensor whose only current copy is on the GPU: evict it first")]
    LostData { action: usize, label: String, tensor: String },
    #[error("the step does not end where it began, so the next step would not find {tensor} where this one did: {why}")]
    NotPeriodic { tensor: String, why: String },
    #[error("peak {peak} allocated + {fixed_overhead} fixed overhead = {} exceeds the budget {budget}, at action {action} ({at})", *peak + *fixed_overhead)]
    OverBudget { peak: Bytes, fixed_overhead: Bytes, budget: Bytes, action: usize, at: String, trace: Box<Trace> },
}

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
    let order = order::Order::build(program, &schedule.actions)?;
    // Timing first: its errors are the concrete ones ("at 40 us its prefetch is still copying");
    // the race check then catches what this timing happened to get right.
    let trace = engine::Engine::new(program, hw, schedule, &order, scale).run()?;
    order.check_races(program, &schedule.actions)?;
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

/// What an action does, for messages: `Run layer0.qkv`, `Alloc layer0.fch on compute`.
pub fn action_label(program: &Program, action: &Action) -> String {
    let op = |o: models::OpId| program.ops.get(o.index()).map(|o| o.name.clone()).unwrap_or_else(|| format!("op #{}", o.0));
    let t = |t: models::TensorId| {
        program.inventory.tensors.get(t.index()).map(|t| t.name.clone()).unwrap_or_else(|| format!("tensor #{}", t.0))
    };
    match *action {
        Action::Run(o) => format!("Run {}", op(o)),
        Action::Recompute(o) => format!("Recompute {}", op(o)),
        Action::HostRun(o) => format!("HostRun {}", op(o)),
        Action::Alloc(x, l) => format!("Alloc {} on {}", t(x), l.label()),
        Action::Free(x, l) => format!("Free {} on {}", t(x), l.label()),
        Action::Prefetch(x) => format!("Prefetch {}", t(x)),
        Action::Evict(x) => format!("Evict {}", t(x)),
        Action::Record(e, l) => format!("Record event {} on {}", e.0, l.label()),
        Action::Wait(e, l) => format!("Wait event {} on {}", e.0, l.label()),
    }
}

/// Where the peak is, for people: the op its lane runs next after the allocation that reached
/// it (`layer3.fc (Alloc layer3.fch on compute)`), or the action itself.
pub fn peak_label(program: &Program, schedule: &Schedule, action: usize) -> String {
    let Some(a) = schedule.actions.get(action) else { return "start of step".into() };
    let lane = a.lane();
    let next_op = schedule.actions[action..].iter().find_map(|b| match *b {
        Action::Run(o) | Action::Recompute(o) | Action::HostRun(o) if b.lane() == lane => program.ops.get(o.index()),
        _ => None,
    });
    match next_op {
        Some(op) if !matches!(a, Action::Run(_) | Action::Recompute(_) | Action::HostRun(_)) => {
            format!("{} ({})", op.name, action_label(program, a))
        }
        _ => action_label(program, a),
    }
}

pub(crate) fn lane_index(l: Lane) -> usize {
    match l {
        Lane::Compute => 0,
        Lane::HostToDevice => 1,
        Lane::DeviceToHost => 2,
        Lane::Host => 3,
    }
}
