//! What a simulation (or a measured run) of a schedule gives: memory over time by category,
//! the work on each lane, and where each block is. The simulator writes it; reports plot it.

use crate::inventory::{BlockId, MemoryCategory};
use crate::schedule::{Lane, Prediction};
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
    /// The lane sat ready while the host was still issuing the work before its next action.
    Issue,
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

/// One step's time, broken into lanes: predicted (the simulator's trace) or measured (the
/// executor's events around every action of one step).
#[derive(Clone, Copy, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct StepTimes {
    /// The whole step, ms.
    pub step_ms: f64,
    /// Compute-lane busy time (ops and recomputation), ms.
    pub compute_ms: f64,
    /// Bytes copied host to device in the step.
    pub h2d_bytes: u64,
    /// Bytes copied device to host in the step.
    pub d2h_bytes: u64,
    /// H2D copy-lane busy time, ms.
    pub h2d_ms: f64,
    /// D2H copy-lane busy time, ms.
    pub d2h_ms: f64,
    /// Host-lane busy time (CPU embedding, host AdamW), ms; measured: as the host functions
    /// timed themselves.
    pub host_ms: f64,
    /// Time the compute lane spent waiting on other lanes (copies and host work), ms.
    pub compute_wait_ms: f64,
}

impl StepTimes {
    /// The simulator's step times: busy time of each lane from the trace's spans (its waits on
    /// other lanes and on the host's issuing apart),
    /// bytes from the prediction, and the compute lane's waits on any other lane (copies and
    /// host work alike, as the executor times every compute-lane wait).
    pub fn predicted(prediction: &Prediction, trace: &Trace) -> StepTimes {
        let busy = |lane: Lane| -> f64 {
            trace
                .spans
                .iter()
                .filter(|s| s.lane == lane && !matches!(s.kind, SpanKind::Wait | SpanKind::Issue))
                .map(|s| (s.end.0 - s.start.0) * 1e3)
                .sum()
        };
        StepTimes {
            step_ms: prediction.step_time.0 * 1e3,
            compute_ms: prediction.compute_time.0 * 1e3,
            h2d_bytes: prediction.h2d_bytes.0,
            d2h_bytes: prediction.d2h_bytes.0,
            h2d_ms: busy(Lane::HostToDevice),
            d2h_ms: busy(Lane::DeviceToHost),
            host_ms: busy(Lane::Host),
            compute_wait_ms: trace
                .spans
                .iter()
                .filter(|s| s.lane == Lane::Compute && s.kind == SpanKind::Wait)
                .map(|s| (s.end.0 - s.start.0) * 1e3)
                .sum(),
        }
    }
}

/// Seconds each start-up phase of a run took, and the time from the run's start to the start of
/// step 1.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Startup {
    /// The CUDA context and streams.
    pub open_s: f64,
    /// The kernels: NVRTC, or reading them from the cache.
    pub compile_s: f64,
    /// Device memory of the persistent tensors (and the arena).
    pub allocate_s: f64,
    /// Pinning the host memory of the off-GPU blocks (the kernels compile beside it).
    pub pin_s: f64,
    /// What pinning added to start-up beyond the kernels' time beside it.
    #[serde(default)]
    pub pin_wait_s: f64,
    /// Initial weights and optimizer state.
    pub init_s: f64,
    /// The probe of the machine's rates before the first step.
    #[serde(default)]
    pub probe_s: f64,
    pub time_to_first_step_s: f64,
    /// Kernel files compiled by NVRTC, and read from the on-disk cache instead.
    pub kernels_compiled: u32,
    pub kernels_cached: u32,
}
