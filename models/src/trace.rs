//! What a simulation (or a measured run) of a schedule gives: memory over time by category,
//! the work on each lane, and where each block is. The simulator writes it; reports plot it.

use crate::inventory::{BlockId, MemoryCategory};
use crate::schedule::Lane;
use crate::units::{Bytes, Seconds};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Device memory at one instant, by category (pool allocations only; fixed overhead apart).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemorySample {
    pub time: Seconds,
    pub by_category: BTreeMap<MemoryCategory, Bytes>,
}

impl MemorySample {
    pub fn total(&self) -> Bytes {
        self.by_category.values().copied().sum()
    }
}

/// What a span of lane time was spent on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SpanKind {
    Op,
    Recompute,
    HostOp,
    Prefetch,
    Evict,
    /// The lane sat waiting for an event of another lane.
    Wait,
}

/// One piece of work on one lane.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Span {
    pub lane: Lane,
    pub kind: SpanKind,
    pub start: Seconds,
    pub end: Seconds,
    pub label: String,
    /// Index of the schedule action.
    pub action: usize,
}

/// Where a block is over an interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BlockState {
    Gpu,
    Host,
    InFlight,
    /// Dropped, to be recomputed.
    Recomputed,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BlockSpan {
    pub block: BlockId,
    pub state: BlockState,
    pub start: Seconds,
    pub end: Seconds,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    pub step_time: Seconds,
    pub peak_allocated: Bytes,
    pub peak_time: Seconds,
    pub peak_action: usize,
    /// One sample after every change of memory, in time order.
    pub memory: Vec<MemorySample>,
    pub spans: Vec<Span>,
    pub blocks: Vec<BlockSpan>,
}
