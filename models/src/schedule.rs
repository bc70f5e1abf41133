//! The schedule format: the ordered actions of one training step across the compute stream, the
//! two copy streams and the host, with explicit cross-stream waits, plus the plan's decisions and
//! predictions. The planner writes it, the simulator and the executor read it.
//!
//! Semantics (shared by the simulator and the executor):
//! - Actions are issued in list order. Each goes to one `Lane`; a lane runs its actions in order.
//!   Lanes run concurrently; the only ordering between lanes is `Record` / `Wait`.
//! - `Alloc` / `Free` are stream-ordered on their lane (cuMemAllocAsync / cuMemFreeAsync): memory
//!   is taken when the lane reaches the action and given back when the lane reaches the free.
//!   Memory freed on one lane is reused by another only after a `Wait` on an event recorded after
//!   the free, so the budget holds under any timing (DESIGN.md invariant 2).
//! - `Prefetch` copies a block's tensor from pinned host memory into its (already allocated)
//!   device buffer, on the H2D lane. `Evict` copies a device tensor to pinned host memory on the
//!   D2H lane. Weights whose host copy is current need no `Evict` before their `Free`.
//! - The step is periodic: where a tensor is at the end is where it is at the start of the next
//!   step; `Schedule::initial_residency` says where each persistent tensor starts.

use crate::config::GptConfig;
use crate::inventory::{BlockId, TensorId};
use crate::program::OpId;
use crate::training::TrainingSetup;
use crate::units::{Bytes, Seconds};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Bumped on any change that an older reader would misread.
/// 3: the schedule carries its training setup (`setup`).
pub const SCHEDULE_FORMAT_VERSION: u32 = 3;

/// Where work runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Lane {
    Compute,
    HostToDevice,
    DeviceToHost,
    /// Host threads (CPU embedding, host AdamW).
    Host,
}

impl Lane {
    pub const ALL: [Lane; 4] = [Lane::Compute, Lane::HostToDevice, Lane::DeviceToHost, Lane::Host];
    /// Its place in `ALL` (0 compute, 1 H2D, 2 D2H, 3 host): lanes index per-lane arrays.
    pub fn index(self) -> usize {
        match self {
            Lane::Compute => 0,
            Lane::HostToDevice => 1,
            Lane::DeviceToHost => 2,
            Lane::Host => 3,
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            Lane::Compute => "compute",
            Lane::HostToDevice => "H2D",
            Lane::DeviceToHost => "D2H",
            Lane::Host => "host",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(pub u32);

/// One step of the schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Action {
    /// Run a program op on the compute lane.
    Run(OpId),
    /// Re-run a forward op inside backward to rebuild saved activations (recomputation).
    Recompute(OpId),
    /// Run a program op on the host lane (CPU embedding lookup/scatter, host AdamW).
    HostRun(OpId),
    /// Take device memory for a tensor, ordered on a lane.
    Alloc(TensorId, Lane),
    /// Give a tensor's device memory back, ordered on a lane.
    Free(TensorId, Lane),
    /// Copy a tensor host -> device into its allocation (H2D lane).
    Prefetch(TensorId),
    /// Copy a tensor device -> host (D2H lane); its device memory stays until a `Free`.
    Evict(TensorId),
    /// Mark a point on a lane.
    Record(EventId, Lane),
    /// A lane waits until an event's point has been reached.
    Wait(EventId, Lane),
}

impl Action {
    /// The lane the action is ordered on.
    pub fn lane(&self) -> Lane {
        match *self {
            Action::Run(_) | Action::Recompute(_) => Lane::Compute,
            Action::HostRun(_) => Lane::Host,
            Action::Prefetch(_) => Lane::HostToDevice,
            Action::Evict(_) => Lane::DeviceToHost,
            Action::Alloc(_, l) | Action::Free(_, l) | Action::Record(_, l) | Action::Wait(_, l) => l,
        }
    }
}

/// Where a block lives, as the plan decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Placement {
    /// On the GPU for the whole step (weights, optimizer state) or from forward to backward
    /// (activations).
    Gpu,
    /// In pinned host memory, brought to the GPU around each use and sent back or dropped after.
    Streamed,
    /// On the host, used there: CPU embedding, host AdamW (optimizer state), or gradients
    /// sent to the host for it.
    Host,
    /// Activations copied to the host after forward and brought back for backward.
    Offloaded,
    /// Activations dropped after forward and rebuilt from the layer input in backward.
    Recomputed,
}

impl Placement {
    pub fn label(self) -> &'static str {
        match self {
            Placement::Gpu => "gpu",
            Placement::Streamed => "streamed",
            Placement::Host => "host",
            Placement::Offloaded => "offloaded",
            Placement::Recomputed => "recomputed",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BlockDecision {
    pub block: BlockId,
    pub name: String,
    pub placement: Placement,
    /// How many ops before first use its prefetch is issued (streamed/offloaded blocks).
    pub prefetch_distance: Option<u32>,
}

/// How a solve ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SolveStatus {
    /// The plan is proved within the requested gap of the best plan of the solver's model.
    Proved,
    /// The time limit stopped the search first: the gap is what was proved by then.
    TimeLimit,
    /// The search's work budget ran out first (it counts its work, so that its answer is the
    /// same on every machine): the gap is what was proved by then; a larger effort searches on.
    WorkLimit,
    /// A starting point that fits the device was faster than the solver's answer and was kept.
    /// The solver worked under a smaller budget (room for the most pinned memory any plan
    /// maps), so its bound does not hold for this plan's budget: the gap is unknown.
    StartingPointKept,
}

impl SolveStatus {
    pub fn label(self) -> &'static str {
        match self {
            SolveStatus::Proved => "proved within the gap",
            SolveStatus::TimeLimit => "stopped at the time limit",
            SolveStatus::WorkLimit => "stopped at its work budget",
            SolveStatus::StartingPointKept => "a faster starting point that fits the device was kept (no bound for it)",
        }
    }
}

/// What the solver reports about its answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SolverReport {
    /// The solver's model (its size) and what proved the bound.
    pub solver: String,
    /// Objective of the chosen plan in the solver's model.
    pub objective: Seconds,
    /// Best lower bound proved for this plan's budget; None where none holds.
    pub bound: Option<Seconds>,
    /// (objective - bound) / objective; None where no bound holds.
    pub gap: Option<f64>,
    pub solve_seconds: f64,
    pub status: SolveStatus,
}

impl SolverReport {
    /// "1.23%", or "unknown" without a bound.
    pub fn gap_label(&self) -> String {
        self.gap.map_or_else(|| "unknown".into(), |g| format!("{:.2}%", g * 100.0))
    }
}

/// What the plan predicts for one step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// Highest sum of live tensor bytes (the pool's `allocated` high-water mark).
    pub peak_allocated: Bytes,
    /// Index into `actions` where the peak is reached.
    pub peak_action: usize,
    /// Name of the op or action at the peak, for people.
    pub peak_at: String,
    /// Context, modules and library memory outside the pool (hardware profile).
    pub fixed_overhead: Bytes,
    pub step_time: Seconds,
    /// Compute-lane busy time (ops and recomputation).
    pub compute_time: Seconds,
    pub h2d_bytes: Bytes,
    pub d2h_bytes: Bytes,
    /// Copy time that the compute lane waited for.
    pub exposed_transfer: Seconds,
    /// Copy time overlapped with compute.
    pub hidden_transfer: Seconds,
    pub solver: Option<SolverReport>,
    /// Bytes of the one arena the executor takes for the step, every allocation at the offset
    /// `models::arena` plans (at least `peak_allocated`: a static layout cannot always reuse
    /// every gap). None for a schedule that cannot be laid out statically, or one written
    /// before arenas.
    #[serde(default)]
    pub arena: Option<Bytes>,
    /// Pinned host memory the executor holds for the schedule (`Schedule::pinned_bytes`).
    #[serde(default)]
    pub pinned_host: Bytes,
    /// Device memory the run holds at its peak (`HardwareProfile::device_bytes` of the arena
    /// and the pinned memory); None in schedules written before it.
    #[serde(default)]
    pub device: Option<Bytes>,
}

impl Prediction {
    /// Device bytes the executor takes for tensors: the arena, or else the pool's peak.
    pub fn tensor_bytes(&self) -> Bytes {
        self.arena.unwrap_or(self.peak_allocated)
    }

    /// Device memory the process needs: the tensors' memory plus fixed overhead (and, where
    /// predicted, the pool's rounding and the mapping of pinned host memory).
    pub fn peak_device(&self) -> Bytes {
        self.device.unwrap_or(self.tensor_bytes() + self.fixed_overhead)
    }
}

/// Where a persistent tensor is when the step starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Residency {
    Gpu,
    Host,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub format_version: u32,
    /// `digest::program_digest` of the program this was planned for.
    pub inventory_digest: String,
    pub model: GptConfig,
    /// Name of the hardware profile planned for.
    pub hardware: String,
    /// Pool bytes plus fixed overhead the plan must stay under.
    pub budget: Bytes,
    /// How the placement was chosen: "planner" (the solver) or the presets applied
    /// (`offplan plan --strategy`). Empty in files written before it existed.
    #[serde(default)]
    pub strategy: String,
    /// The optimizer and learning-rate schedule the step trains with (`simulate` and `run`
    /// read it from here; its `grad_clip` says whether the program is clipped).
    pub setup: TrainingSetup,
    pub decisions: Vec<BlockDecision>,
    /// Persistent tensors that start (and end) the step on the host; all others start on the GPU.
    pub host_resident: Vec<TensorId>,
    pub actions: Vec<Action>,
    pub prediction: Prediction,
    /// SHA-256 of everything above, written by `save`: a file edited by hand is refused.
    #[serde(default)]
    pub checksum: String,
}

/// Errors reading a schedule.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("cannot read schedule {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path} is not a schedule: {message}")]
    Parse { path: String, message: String },
    #[error("{path} is schedule format {found}, this offplan reads format {expected}: re-plan with this version (offplan plan ...)")]
    Version { path: String, found: u32, expected: u32 },
    #[error("{path} was planned for program {found}, but this model builds program {expected}: the config or offplan changed since; re-plan (offplan plan ...)")]
    Digest { path: String, found: String, expected: String },
    #[error("{path} was changed after offplan wrote it (its checksum does not match its contents): re-plan rather than edit a schedule (offplan plan ...)")]
    Edited { path: String },
}

impl Schedule {
    /// Reads a schedule and checks its format version. The digest check needs the program:
    /// `check_digest`.
    pub fn load(path: &Path) -> Result<Schedule, ScheduleError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ScheduleError::Io { path: p.clone(), source: e })?;
        // Read the version first so an old file gets the version message, not a parse error.
        #[derive(Deserialize)]
        #[serde(rename = "Schedule")]
        struct Head {
            format_version: u32,
        }
        if let Ok(h) = ron::from_str::<Head>(&text) {
            if h.format_version != SCHEDULE_FORMAT_VERSION {
                return Err(ScheduleError::Version { path: p, found: h.format_version, expected: SCHEDULE_FORMAT_VERSION });
            }
        }
        let s: Schedule = ron::from_str(&text).map_err(|e| ScheduleError::Parse { path: p.clone(), message: e.to_string() })?;
        if s.checksum != s.compute_checksum() {
            return Err(ScheduleError::Edited { path: p });
        }
        Ok(s)
    }

    /// The checksum of this schedule's contents (everything but the checksum itself).
    pub fn compute_checksum(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut c = self.clone();
        c.checksum.clear();
        Sha256::digest(c.to_ron().as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn check_digest(&self, expected: &str, path: &Path) -> Result<(), ScheduleError> {
        if self.inventory_digest != expected {
            return Err(ScheduleError::Digest {
                path: path.display().to_string(),
                found: self.inventory_digest.clone(),
                expected: expected.to_string(),
            });
        }
        Ok(())
    }

    /// The schedule as RON text.
    pub fn to_ron(&self) -> String {
        ron::ser::to_string_pretty(self, ron::ser::PrettyConfig::default().compact_arrays(true)).expect("schedule serialises")
    }
}

impl Schedule {
    /// Tensors that need a pinned host copy: those that start on the host, those copied either
    /// way, and those host work reads or writes (the token ids excepted: the host has the batch).
    pub fn pinned_tensors(&self, program: &crate::Program) -> Vec<TensorId> {
        let inv = &program.inventory;
        let mut need = vec![false; inv.tensors.len()];
        for t in &self.host_resident {
            need[t.index()] = true;
        }
        for a in &self.actions {
            match a {
                Action::Prefetch(t) | Action::Evict(t) => need[t.index()] = true,
                Action::HostRun(op) => {
                    for t in program.op(*op).touches() {
                        need[t.index()] = true;
                    }
                }
                _ => {}
            }
        }
        need[inv.io.tokens.index()] =
            self.actions.iter().any(|a| matches!(a, Action::Prefetch(t) | Action::Evict(t) if *t == inv.io.tokens));
        inv.tensors.iter().filter(|t| need[t.id.index()]).map(|t| t.id).collect()
    }

    /// Bytes of pinned host memory the executor holds for this schedule.
    pub fn pinned_bytes(&self, program: &crate::Program) -> Bytes {
        self.pinned_tensors(program).iter().map(|t| program.inventory.tensor(*t).bytes).sum()
    }

    /// Writes the schedule as RON with its checksum, atomically.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let mut s = self.clone();
        s.checksum = self.compute_checksum();
        crate::io::write_atomic(path, s.to_ron().as_bytes())
    }
}
