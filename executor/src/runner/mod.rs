//! Runs any schedule on the GPU: every action of `Schedule::actions` on its lane (compute, the
//! two copy streams, and a host stream whose work runs through cuLaunchHostFunc), with the
//! schedule's events between lanes; blocks that live off the GPU in pinned host memory; the CPU
//! embedding and host AdamW on the host's cores. One step is measured action by action (events
//! around every op, copy, wait and allocation) for the lane times and the memory over time.
//!
//! The portable part (what a run reports, which tensors need host copies, the schedule checks)
//! builds without CUDA; the issuing is in `issue` behind the `cuda` feature.

#[cfg(feature = "cuda")]
mod arena;
#[cfg(feature = "cuda")]
mod issue;

use crate::state::StateHomes;
use crate::train::{RunOptions, RunResult};
use crate::training::Training;
use crate::ExecError;
use models::order::{check_host_copies, OrderError};
use models::program::{OpKind, Program};
use models::schedule::{Action, Lane, Schedule, SCHEDULE_FORMAT_VERSION};
use models::trace::StepTimes;
use serde::Serialize;

/// Where a schedule's tensors get device memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum Allocator {
    /// One allocation for the step, each tensor at the offset `models::arena` plans: the device
    /// holds exactly the predicted bytes.
    #[default]
    Arena,
    /// Each `Alloc` from CUDA's stream-ordered pool, which may reserve more than it hands out
    /// (fragmentation: 3-5% on the H100 records) and so exceed the budget.
    Pool,
}

impl Allocator {
    pub fn label(self) -> &'static str {
        match self {
            Allocator::Arena => "arena",
            Allocator::Pool => "pool",
        }
    }
}

/// A debug option: before a share of the actions on each lane (compute, both copy streams, the
/// host stream), the runner queues a delay on that lane's own stream (a spin kernel, which the
/// host stream's host work waits behind too), so the lanes run at other relative speeds than
/// usual. A schedule whose events order every access gives bitwise the same numbers however its
/// lanes are slowed; one that relies on a lane being fast enough does not.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct SlowLanes {
    /// Seed of the delays (the same seed, the same delays).
    pub seed: u64,
    /// Share of each lane's actions that get a delay, in (0, 1].
    pub share: f64,
    /// Longest delay; each is uniform in [0, longest].
    pub longest: models::Seconds,
}

impl SlowLanes {
    /// The delay before action `i` of `step` on `lane`, if it gets one: a pure function of the
    /// seed, the step, the action and the lane.
    pub fn delay_ns(&self, step: u32, i: usize, lane: Lane) -> Option<u64> {
        let key = (i as u64) | (u64::from(step) << 40) | ((lane.index() as u64) << 60);
        let mut x = self.seed ^ key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut next = || {
            // splitmix64
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let unit = |z: u64| (z >> 11) as f64 / (1u64 << 53) as f64;
        (unit(next()) < self.share).then(|| (unit(next()) * self.longest.0 * 1e9) as u64)
    }

    fn check(&self) -> Result<(), ExecError> {
        let (share, longest) = (self.share, self.longest.0);
        if !(share > 0.0 && share <= 1.0 && (0.0..=1.0).contains(&longest)) {
            return Err(ExecError::Refused(format!(
                "slowed lanes need a share in (0, 1] and a longest delay of at most 1 s, got {} and {} s",
                self.share, self.longest.0
            )));
        }
        Ok(())
    }
}

/// Tensor bytes in use right after an allocation or free of the measured step, at the time the
/// compute stream reached it: the pool's used bytes, or with an arena the bytes of the tensors
/// the executor holds in it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct MemoryPoint {
    pub action: usize,
    pub ms: f64,
    pub used: u64,
}

/// What a schedule run measured: what any run measures, and what running a schedule adds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScheduleRunResult {
    /// Device, steps, pool and device peaks, as an all-on-GPU run reports them.
    pub run: RunResult,
    pub device_free_at_start: u64,
    pub allocator: Allocator,
    /// Bytes of the arena, when the run used one.
    pub arena_bytes: Option<u64>,
    /// Pinned host memory the run holds for off-GPU blocks.
    pub pinned_bytes: u64,
    /// The step measured action by action (its time is in `lanes.step_ms`, not in `run.steps`):
    /// each lane's busy time and bytes, and the compute lane's waits.
    pub measured_step: u32,
    pub lanes: StepTimes,
    pub memory: Vec<MemoryPoint>,
    /// Every compute action of a step, in order (a recomputed op twice): its span timed in the
    /// first step with the compute lane held ahead of the host (the GPU alone), its issue time
    /// in the measured step. A run of one step times both in that step, as it runs.
    pub ops: Vec<OpSpan>,
    /// Every host op of the measured step (CPU embedding, host AdamW, host norms), as each timed
    /// itself on the host's threads.
    pub host_ops: Vec<HostOpSpan>,
    /// The host's time to issue each timed step's actions (the steps after the first, the
    /// measured one left out): a step whose issue time nears its GPU time is bound by the host's
    /// launches, not by the kernels.
    pub issue_ms: Vec<f64>,
}

/// One compute action of a step: its span on the compute stream (CUDA events before and after
/// it) and the host's time to issue its launches.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct OpSpan {
    pub op: models::program::OpId,
    pub gpu_ms: f64,
    pub issue_ms: f64,
}

/// One host op of the measured step and its own time on the host.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct HostOpSpan {
    pub op: models::program::OpId,
    pub ms: f64,
}

/// Checks that `schedule` is one this executor can run for `program`: its format version and
/// program digest, its ops, every event recorded before any wait on it, and no race on a host
/// copy.
pub fn check_schedule(program: &Program, schedule: &Schedule) -> Result<(), ExecError> {
    if schedule.format_version != SCHEDULE_FORMAT_VERSION {
        return Err(ExecError::Refused(format!(
            "the schedule is format {}, this offplan runs format {SCHEDULE_FORMAT_VERSION}: re-plan it with this offplan (offplan plan ...)",
            schedule.format_version
        )));
    }
    let digest = models::digest::program_digest(program);
    if schedule.inventory_digest != digest {
        return Err(ExecError::Refused(format!(
            "the schedule was planned for program {}, this offplan builds {digest} for its model: the config or offplan changed since; re-plan it (offplan plan ...)",
            schedule.inventory_digest
        )));
    }
    for (i, a) in schedule.actions.iter().enumerate() {
        match a {
            Action::Run(op) | Action::Recompute(op) | Action::HostRun(op) if op.index() >= program.ops.len() => {
                return Err(ExecError::Refused(format!("action {i} names op {}, the program has {}", op.0, program.ops.len())));
            }
            Action::HostRun(op) if !models::cost::runs_on_host(program.op(*op).kind) => {
                return Err(ExecError::Refused(format!(
                    "action {i} runs {} on the host; only the embedding, AdamW, partial norms and the clip scale run there",
                    program.op(*op).name
                )));
            }
            Action::Run(op) | Action::Recompute(op) if program.op(*op).kind == OpKind::ClipScale => {
                return Err(ExecError::Refused(format!("action {i} runs clip_scale on the GPU; it runs on the host (HostRun)")));
            }
            _ => {}
        }
    }
    // Every wait binds to an earlier record, and the host copies are read and written in an order
    // the events fix (the executor's host memory depends on it; the device side is the
    // simulator's to check).
    check_host_copies(program, &schedule.actions).map_err(|e| match e {
        OrderError::HostRace { .. } => ExecError::Refused(format!("{e}: re-plan it (offplan plan ...)")),
        other => ExecError::Refused(other.to_string()),
    })?;
    Ok(())
}

/// Runs `opts.steps` steps of `schedule` on batches of the shipped corpus from the seed's
/// initial state; `progress` as it goes. Refuses a schedule of another format or program, and
/// one whose budget (less the fixed overhead it assumes) exceeds the device's free memory.
pub fn run_schedule(
    program: &Program,
    schedule: &Schedule,
    opts: &RunOptions,
    allocator: Allocator,
    progress: &mut dyn FnMut(crate::train::Progress),
) -> Result<ScheduleRunResult, ExecError> {
    run_schedule_with(program, schedule, opts, allocator, Training::corpus(program, opts.seed)?, progress)
}

/// As [`run_schedule`], on `training`'s data, from its start (a checkpoint's state is loaded
/// into the device buffers and host copies where this schedule keeps them, so a checkpoint
/// saved under one budget resumes under another), saving the checkpoints it asks for
/// (gathered from where the schedule keeps each owner, [`StateHomes::of_schedule`]).
pub fn run_schedule_with(
    program: &Program,
    schedule: &Schedule,
    opts: &RunOptions,
    allocator: Allocator,
    training: Training,
    progress: &mut dyn FnMut(crate::train::Progress),
) -> Result<ScheduleRunResult, ExecError> {
    start(program, schedule, opts, allocator, None, training, progress)
}

/// [`run_schedule_with`] with its lanes slowed at random ([`SlowLanes`]): a test for races.
/// Every step is delayed, the measured one included, so its times are not the schedule's.
pub fn run_schedule_slowed(
    program: &Program,
    schedule: &Schedule,
    opts: &RunOptions,
    allocator: Allocator,
    slow: SlowLanes,
    training: Training,
    progress: &mut dyn FnMut(crate::train::Progress),
) -> Result<ScheduleRunResult, ExecError> {
    slow.check()?;
    start(program, schedule, opts, allocator, Some(slow), training, progress)
}

/// The checks every schedule run makes before it opens the device, then the run.
fn start(
    program: &Program,
    schedule: &Schedule,
    opts: &RunOptions,
    allocator: Allocator,
    slow: Option<SlowLanes>,
    training: Training,
    progress: &mut dyn FnMut(crate::train::Progress),
) -> Result<ScheduleRunResult, ExecError> {
    check_schedule(program, schedule)?;
    // Found before anything runs: a schedule that loses an owner's state between steps cannot
    // be read back (a run that saves nothing never reads the homes).
    let homes = match StateHomes::of_schedule(program, schedule) {
        Ok(h) => h,
        Err(e) if training.reads_state() => return Err(ExecError::Refused(format!("cannot read its state back: {e}"))),
        Err(_) => StateHomes { owners: Vec::new() },
    };
    imp(program, schedule, opts, allocator, slow, training, homes, progress)
}

#[cfg(feature = "cuda")]
#[allow(clippy::too_many_arguments)]
fn imp(
    program: &Program,
    schedule: &Schedule,
    opts: &RunOptions,
    allocator: Allocator,
    slow: Option<SlowLanes>,
    training: Training,
    homes: StateHomes,
    progress: &mut dyn FnMut(crate::train::Progress),
) -> Result<ScheduleRunResult, ExecError> {
    issue::run(program, schedule, opts, allocator, slow, training, &homes, progress)
}

#[cfg(not(feature = "cuda"))]
#[allow(clippy::too_many_arguments)]
fn imp(
    _: &Program,
    _: &Schedule,
    _: &RunOptions,
    _: Allocator,
    _: Option<SlowLanes>,
    _: Training,
    _: StateHomes,
    _: &mut dyn FnMut(crate::train::Progress),
) -> Result<ScheduleRunResult, ExecError> {
    Err(ExecError::NoGpu("this offplan was built without the `cuda` feature".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use models::schedule::EventId;
    use models::GptConfig;

    fn tiny() -> Program {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/configs/gpt2-tiny.ron");
        Program::build(&GptConfig::load(&path).unwrap())
    }

    fn empty_schedule(p: &Program) -> Schedule {
        Schedule {
            format_version: SCHEDULE_FORMAT_VERSION,
            inventory_digest: models::digest::program_digest(p),
            model: p.config.clone(),
            setup: models::TrainingSetup::gpt3(&p.config),
            hardware: "h100-sxm".into(),
            budget: models::Bytes::gib(80.0),
            strategy: String::new(),
            decisions: vec![],
            host_resident: vec![],
            actions: p.ops.iter().map(|o| Action::Run(o.id)).collect(),
            prediction: models::schedule::Prediction {
                peak_allocated: models::Bytes(0),
                peak_action: 0,
                peak_at: String::new(),
                fixed_overhead: models::Bytes(0),
                step_time: models::Seconds(0.0),
                compute_time: models::Seconds(0.0),
                h2d_bytes: models::Bytes(0),
                d2h_bytes: models::Bytes(0),
                exposed_transfer: models::Seconds(0.0),
                hidden_transfer: models::Seconds(0.0),
                solver: None,
                arena: None,
                pinned_host: models::Bytes(0),
                device: None,
            },
            checksum: String::new(),
        }
    }

    /// The delays are the seed's alone, about the share asked for, and within the longest.
    #[test]
    fn slowed_lanes_are_repeatable_and_bounded() {
        let slow = SlowLanes { seed: 7, share: 0.3, longest: models::Seconds(200e-6) };
        let draws: Vec<_> = (0..4000).map(|i| slow.delay_ns(1, i, Lane::ALL[i % 4])).collect();
        let again: Vec<_> = (0..4000).map(|i| slow.delay_ns(1, i, Lane::ALL[i % 4])).collect();
        assert_eq!(draws, again);
        let other: Vec<_> = (0..4000).map(|i| SlowLanes { seed: 8, ..slow }.delay_ns(1, i, Lane::ALL[i % 4])).collect();
        assert_ne!(draws, other);
        let step2: Vec<_> = (0..4000).map(|i| slow.delay_ns(2, i, Lane::ALL[i % 4])).collect();
        assert_ne!(draws, step2);
        let delayed: Vec<u64> = draws.iter().flatten().copied().collect();
        let share = delayed.len() as f64 / draws.len() as f64;
        assert!((share - 0.3).abs() < 0.03, "share {share}");
        assert!(delayed.iter().all(|&d| d <= 200_000));
        assert!(delayed.iter().any(|&d| d > 150_000) && delayed.iter().any(|&d| d < 50_000));
        assert!(SlowLanes { share: 0.0, ..slow }.check().is_err());
        assert!(SlowLanes { longest: models::Seconds(2.0), ..slow }.check().is_err());
    }

    /// `Schedule::pinned_tensors` is what the runner pins (tested here, where schedules are
    /// built by hand).
    #[test]
    fn host_copies_for_resident_copied_and_host_touched_tensors() {
        let p = tiny();
        let inv = &p.inventory;
        let mut s = empty_schedule(&p);
        let l0 = inv.layers[0];
        let a1 = inv.acts[1];
        s.host_resident = vec![l0.optimizer];
        s.actions.push(Action::Evict(a1.ln1));
        let adam = p.find(OpKind::Adam(models::inventory::Owner::Layer(1))).unwrap().id;
        s.actions.push(Action::HostRun(adam));
        let got = s.pinned_tensors(&p);
        let l1 = inv.layers[1];
        let mut want = vec![l0.optimizer, a1.ln1, l1.weights, l1.grads, l1.optimizer];
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn refuses_other_versions_digests_and_waits_before_records() {
        let p = tiny();
        let ok = empty_schedule(&p);
        check_schedule(&p, &ok).unwrap();

        let mut s = ok.clone();
        s.format_version += 1;
        let e = check_schedule(&p, &s).unwrap_err().to_string();
        assert!(e.contains("format") && e.contains("re-plan"), "{e}");

        let mut s = ok.clone();
        s.inventory_digest = "0000".into();
        let e = check_schedule(&p, &s).unwrap_err().to_string();
        assert!(e.contains("0000") && e.contains("re-plan"), "{e}");

        let mut s = ok.clone();
        s.actions.insert(0, Action::Wait(EventId(7), Lane::Compute));
        s.actions.push(Action::Record(EventId(7), Lane::HostToDevice));
        let e = check_schedule(&p, &s).unwrap_err().to_string();
        assert!(e.contains("event 7"), "{e}");

        let mut s = ok;
        let ln1 = p.find(OpKind::Ln1(0)).unwrap().id;
        s.actions.push(Action::HostRun(ln1));
        assert!(check_schedule(&p, &s).unwrap_err().to_string().contains("on the host"));
    }

    /// Host AdamW writes the host copy of a layer's weights; a prefetch reads it: refused unless
    /// an event orders the two.
    #[test]
    fn refuses_a_race_on_a_host_copy() {
        let p = tiny();
        let adam = p.find(OpKind::Adam(models::inventory::Owner::Layer(1))).unwrap().id;
        let w = p.inventory.layers[1].weights;
        let mut s = empty_schedule(&p);
        s.actions.extend([Action::HostRun(adam), Action::Prefetch(w)]);
        let e = check_schedule(&p, &s).unwrap_err().to_string();
        assert!(e.contains("host copy of layer1.weights") && e.contains("re-plan"), "{e}");
        let mut s = empty_schedule(&p);
        s.actions.extend([
            Action::HostRun(adam),
            Action::Record(EventId(0), Lane::Host),
            Action::Wait(EventId(0), Lane::HostToDevice),
            Action::Prefetch(w),
        ]);
        check_schedule(&p, &s).unwrap();
    }
}
