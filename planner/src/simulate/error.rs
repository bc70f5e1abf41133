//! Why a schedule does not simulate.

use models::trace::Trace;
use models::{Bytes, Seconds};

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
