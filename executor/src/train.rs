//! Training steps all on the GPU: the public entry point [`run_all_on_gpu`]. Built with the
//! `cuda` feature it opens the device; without it (or with no device) it fails with
//! [`ExecError::NoGpu`], which the command line turns into its "no CUDA device" exit code.

use crate::host::AdamW;
use crate::training::{SavedCheckpoint, Training, TrainingSummary, ValidationLoss};
use crate::ExecError;
use models::program::Program;
use models::training::TrainingSetup;
use serde::Serialize;
use std::path::PathBuf;

/// What to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub steps: u32,
    pub seed: u64,
    /// AdamW and its learning-rate schedule over `steps` (`models::training`).
    pub setup: TrainingSetup,
    /// Write the reference export (weights, optimizer, batches, step-1 gradients, losses) here.
    pub export: Option<PathBuf>,
    /// Peak dense bf16 FLOP/s of the device, for MFU.
    pub peak_flops: f64,
}

impl RunOptions {
    /// AdamW's hyper-parameters for `step` (from 1) of a run whose first step here is `first`
    /// (1, or the step after a resumed checkpoint's): the setup's, with the learning rate its
    /// schedule gives that step of the whole run, the steps before `first` and `steps` more
    /// (past them, the floor), so a resumed run keeps the uninterrupted run's rates. The kernel
    /// and host AdamW both take their scalars from this, so a per-step rate needs no recompiling.
    pub fn adamw_at(&self, step: u32, first: u32) -> AdamW {
        let s = &self.setup;
        AdamW {
            lr: s.lr_at(step, first - 1 + self.steps) as f32,
            beta1: s.beta1 as f32,
            beta2: s.beta2 as f32,
            eps: s.eps as f32,
            weight_decay: s.weight_decay as f32,
        }
    }
}

/// What a run tells its caller as it goes: each start-up phase as it begins, then each step.
#[derive(Clone, Copy, Debug)]
pub enum Progress<'a> {
    Phase(Phase),
    Step(&'a StepReport),
    /// A checkpoint was saved after a step.
    Saved(&'a SavedCheckpoint),
    /// The validation loss after a step.
    Validated(&'a ValidationLoss),
}

/// The start-up phases of a run, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The CUDA context and streams.
    Opening,
    /// The kernels (NVRTC, or the on-disk cache).
    Compiling,
    /// Device memory of the persistent tensors (the arena, or the pool).
    Allocating,
    /// Pinned host memory for the off-GPU blocks: bytes.
    Pinning(u64),
    /// Initial weights and optimizer state on the GPU and in the host copies.
    Initializing,
    /// The machine's rates probed before the first step.
    Probing,
    /// Step 1 is about to begin.
    Training,
}

impl Phase {
    pub fn label(self) -> String {
        match self {
            Phase::Opening => "opening the device".into(),
            Phase::Compiling => "compiling kernels".into(),
            Phase::Allocating => "allocating device memory".into(),
            Phase::Pinning(b) => format!("pinning {:.1} GiB of host memory, kernels compiling beside", b as f64 / (1u64 << 30) as f64),
            Phase::Initializing => "initial weights and optimizer state".into(),
            Phase::Probing => "probing the machine's rates".into(),
            Phase::Training => "training".into(),
        }
    }
}

/// One measured step.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StepReport {
    pub step: u32,
    pub loss: f64,
    /// The learning rate the step's updates used (as the kernel got it, in f32).
    pub lr: f64,
    /// The global norm of the step's gradients before clipping (clipped steps).
    pub grad_norm: Option<f64>,
    /// The exact checksum of the step's gradients (clipped steps; `host::grad_checksum`).
    #[serde(skip)]
    pub grad_checksum: Option<u64>,
    pub ms: f64,
    pub tokens_per_s: f64,
    pub mfu: f64,
}

impl StepReport {
    /// A step of `tokens` tokens at learning rate `lr` that took `ms`, with the model's FLOPs
    /// per step against the device's peak rate (MFU).
    pub fn new(step: u32, loss: f64, lr: f32, ms: f64, tokens: u64, model_flops: f64, peak_flops: f64) -> StepReport {
        let secs = ms / 1e3;
        StepReport {
            step,
            loss,
            lr: lr as f64,
            grad_norm: None,
            grad_checksum: None,
            ms,
            tokens_per_s: tokens as f64 / secs,
            mfu: model_flops / secs / peak_flops,
        }
    }

    /// The same step with its gradients' global norm and checksum (a clipped step).
    pub fn with_gradients(self, grad_norm: Option<f64>, grad_checksum: Option<u64>) -> StepReport {
        StepReport { grad_norm, grad_checksum, ..self }
    }
}

/// What a run measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunResult {
    pub device: String,
    pub driver: String,
    pub steps: Vec<StepReport>,
    /// Stream-ordered pool: CU_MEMPOOL_ATTR_USED_MEM_HIGH over the run.
    pub pool_used_high: u64,
    /// CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH over the run.
    pub pool_reserved_high: u64,
    /// Device memory in use (total - free, cuMemGetInfo), the most seen after any step.
    pub device_used_high: u64,
    /// Device memory in use right after the context was created, before any allocation.
    pub device_used_at_start: u64,
    pub device_total: u64,
    /// Tokens of the training data (the shipped corpus or `--data`'s files).
    pub corpus_tokens: usize,
    /// What it trained on, from where, and the checkpoints it saved.
    pub training: TrainingSummary,
    /// The state after the last step, if the run was asked to keep it
    /// (`Training::keep_final_state`).
    #[serde(skip)]
    pub final_state: Option<crate::state::ModelState>,
    /// How long each start-up phase took, and the time to the first step.
    pub startup: models::trace::Startup,
    /// The machine's rates, probed before the first step and after the last.
    pub probes: models::hardware::RunProbes,
}

/// Runs `opts.steps` training steps of `program`, everything on the GPU, on batches of the
/// shipped corpus from the seed's initial state; `progress` as it goes.
pub fn run_all_on_gpu(program: &Program, opts: &RunOptions, progress: &mut dyn FnMut(Progress)) -> Result<RunResult, ExecError> {
    run_all_on_gpu_with(program, opts, Training::corpus(program, opts.seed)?, progress)
}

/// As [`run_all_on_gpu`], on `training`'s data, from its start (the seed, `--init-from`
/// weights or a `--resume` checkpoint: steps then count on from the saved one), saving the
/// checkpoints it asks for.
pub fn run_all_on_gpu_with(
    program: &Program,
    opts: &RunOptions,
    training: Training,
    progress: &mut dyn FnMut(Progress),
) -> Result<RunResult, ExecError> {
    imp::run(program, opts, training, progress)
}

#[cfg(feature = "cuda")]
pub(crate) use imp::open_device;

#[cfg(feature = "cuda")]
impl RunResult {
    /// What a run measured: its steps, the pool's high-water marks, the most device memory in
    /// use after any step, and the device as it was opened.
    pub(crate) fn measured(
        device: &crate::gpu::DeviceInfo,
        steps: Vec<StepReport>,
        pool: &crate::gpu::PoolStats,
        device_used_high: u64,
        training: &mut Training,
        startup: models::trace::Startup,
        probes: models::hardware::RunProbes,
    ) -> RunResult {
        RunResult {
            device: device.name.clone(),
            driver: device.driver.clone(),
            steps,
            pool_used_high: pool.used_high,
            pool_reserved_high: pool.reserved_high,
            device_used_high,
            device_used_at_start: device.used(),
            device_total: device.total,
            corpus_tokens: training.summary().tokens as usize,
            training: training.summary().clone(),
            final_state: training.final_state.take(),
            startup,
            probes,
        }
    }
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use super::*;
    pub fn run(_: &Program, _: &RunOptions, _: Training, _: &mut dyn FnMut(Progress)) -> Result<RunResult, ExecError> {
        Err(ExecError::NoGpu("this offplan was built without the `cuda` feature".into()))
    }
}

#[cfg(feature = "cuda")]
mod imp {
    use super::*;
    use crate::export::{f32_bytes, i32_bytes, ExportWriter};
    use crate::gpu::{elapsed_ms, record, DeviceInfo, Gpu};
    use crate::startup::StartClock;
    use crate::state::device::{load_state, LiveState};
    use crate::state::StateHomes;
    use crate::step::{Capture, Step};
    use crate::training::StartFrom;

    /// Opens device 0 and reports what it is and what is free.
    pub fn open_device() -> Result<(Gpu, DeviceInfo), ExecError> {
        let gpu = Gpu::new().map_err(ExecError::opening)?;
        let info = gpu.info()?;
        tracing::info!(
            "device: {} (driver {}), {:.1} GiB, {:.0} MiB in use, {:.0} MiB free before allocating",
            info.name,
            info.driver,
            info.total as f64 / (1u64 << 30) as f64,
            info.used() as f64 / (1u64 << 20) as f64,
            info.free as f64 / (1u64 << 20) as f64
        );
        Ok((gpu, info))
    }

    pub fn run(
        program: &Program,
        opts: &RunOptions,
        mut training: Training,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<RunResult, ExecError> {
        let cfg = &program.config;
        let inv = &program.inventory;
        let mut clock = StartClock::new(progress);
        let (gpu, _) = open_device()?;
        // The start probe on the empty device, as a schedule's run takes it: beside the step's
        // tensors it would measure with less memory, and a failed one would leave them reserved.
        clock.phase(Phase::Probing, progress);
        let start_probe = crate::startup::probe_or_warn(&gpu, program, "before the first step");
        let device = gpu.info()?;
        let total = device.total;

        clock.phase(Phase::Compiling, progress);
        let mut step = Step::new(&gpu, program, opts.adamw_at(1, 1))?;
        step.max_grad_norm = opts.setup.grad_clip;
        clock.compiled(step.kernels().stats(), progress);
        clock.phase(Phase::Initializing, progress);
        match &training.from {
            StartFrom::Seed => {
                let (free, _) = gpu.mem_info()?;
                crate::start::initialize(&gpu, &step, None, opts.seed, free / 4)?;
            }
            StartFrom::Weights(c) | StartFrom::Resume(c) => load_state(&gpu, &step, None, c)?,
        }
        let homes = StateHomes::all_on_gpu(program);
        gpu.reset_pool_highs()?;
        let mut export = match &opts.export {
            Some(dir) => {
                let mut w = ExportWriter::new(dir)?;
                for owner in inv.owners() {
                    let t = inv.params(owner);
                    let views = inv.tensor(t.weights).views.clone();
                    let n = t.params;
                    let mut weights = vec![0u8; 2 * n as usize];
                    gpu.download(&gpu.compute, &mut weights, step.buffer(t.weights)?)?;
                    let mut optimizer = vec![0u8; 12 * n as usize];
                    gpu.download(&gpu.compute, &mut optimizer, step.buffer(t.optimizer)?)?;
                    w.add(&format!("{owner}.weights"), "bf16", vec![n], &weights, views)?;
                    w.add(&format!("{owner}.optimizer"), "f32", vec![3, n], &optimizer, vec![])?;
                }
                Some(w)
            }
            None => None,
        };
        gpu.reset_pool_highs()?;
        let startup = clock.training(progress);

        let (b, t) = (cfg.batch as u64, cfg.seq as u64);
        let flops = program.model_flops().0;
        let start = gpu.timing_event()?;
        let end = gpu.timing_event()?;
        let mut reports = Vec::new();
        let mut device_used_high = 0u64;
        let first = training.first_step();
        let last = first + opts.steps - 1;
        for s in first..=last {
            let batch = training.next_batch()?;
            step.upload_batch(&gpu, &batch)?;
            if let Some(w) = export.as_mut() {
                let i = s - first;
                if s == first {
                    w.add("tokens", "i32", vec![b, t], &i32_bytes(&batch.inputs), vec![])?;
                    w.add("targets", "i32", vec![b, t], &i32_bytes(&batch.targets), vec![])?;
                }
                w.add(&format!("tokens_step{i}"), "i32", vec![b, t], &i32_bytes(&batch.inputs), vec![])?;
                w.add(&format!("targets_step{i}"), "i32", vec![b, t], &i32_bytes(&batch.targets), vec![])?;
            }
            // This step's learning rate, for the kernels' scalars.
            step.adamw = opts.adamw_at(s, first);
            let mut capture = Capture::default();
            let capturing = export.is_some() && s == first;
            record(&start, &gpu.compute)?;
            step.run(&gpu, s, if capturing { Some(&mut capture) } else { None })?;
            record(&end, &gpu.compute)?;
            let ms = elapsed_ms(&start, &end)? as f64;
            let loss = step.mean_loss(&gpu)?;
            let (free, _) = gpu.mem_info()?;
            device_used_high = device_used_high.max(total - free);
            let r = StepReport::new(s, loss, step.adamw.lr, ms, b * t, flops, opts.peak_flops)
                .with_gradients(step.grad_norm, step.grad_checksum);
            progress(Progress::Step(&r));
            reports.push(r);
            if capturing {
                let w = export.as_mut().expect("capturing implies export");
                w.add("loss", "f32", vec![1], &f32_bytes(&[loss as f32]), vec![])?;
                if let Some(l) = &capture.logits {
                    w.add("logits", "bf16", vec![b, t, (cfg.padded_vocab / cfg.output_chunks) as u64], l, vec![])?;
                }
                for (owner, g) in &capture.grads {
                    let gt = inv.params(*owner).grads;
                    let views = inv.tensor(gt).views.clone();
                    w.add(&format!("{owner}.grads"), "bf16", vec![inv.params(*owner).params], g, views)?;
                }
            }
            if !loss.is_finite() {
                return Err(ExecError::Diverged { step: s, loss });
            }
            if let Some(batches) = training.validation_due(s, last) {
                let mut sum = 0.0;
                for b in batches {
                    step.upload_batch(&gpu, b)?;
                    sum += step.forward_loss(&gpu)?;
                }
                let v = ValidationLoss { step: s, loss: sum / batches.len() as f64, batches: batches.len() };
                progress(Progress::Validated(&v));
                training.validated(v);
            }
            let live = LiveState::new(&gpu, &step, None, &homes);
            if let Some(saved) = training.after_step(s, last, program, &live, opts.seed, &opts.adamw_at(s, first), None)? {
                progress(Progress::Saved(&saved));
            }
        }
        gpu.synchronize()?;
        let pool = gpu.pool_stats()?;
        if let Some(w) = export {
            // The peak's hyper-parameters, and the rate each step used.
            let lrs = reports.iter().map(|r| r.lr as f32).collect();
            let steps = crate::export::ExportSteps {
                losses: reports.iter().map(|r| r.loss).collect(),
                lrs,
                grad_clip: if program.clipping == models::program::Clipping::GlobalNorm { opts.setup.grad_clip } else { 0.0 },
                grad_norms: reports.iter().filter_map(|r| r.grad_norm).collect(),
            };
            w.finish(cfg, &opts.adamw_at(opts.setup.warmup_steps(opts.steps).max(1), 1), steps)?;
        }
        drop(step);
        gpu.synchronize()?;
        gpu.trim_pool()?;
        let end_probe = crate::startup::probe_or_warn(&gpu, program, "after the last step");
        let probes = models::hardware::RunProbes { start: start_probe, end: end_probe };
        Ok(RunResult::measured(&device, reports, &pool, device_used_high, &mut training, startup, probes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use models::GptConfig;

    /// The highest live bytes of the all-on-GPU program (persistent tensors plus allocations in
    /// program order), as the planner's lifetime graph counts them.
    fn live_peak(p: &Program) -> u64 {
        let inv = &p.inventory;
        let mut live: u64 = inv.tensors.iter().filter(|t| t.persistent).map(|t| t.bytes.0).sum();
        let mut peak = live;
        for op in &p.ops {
            live += op.allocs.iter().map(|t| inv.tensor(*t).bytes.0).sum::<u64>();
            peak = peak.max(live);
            live -= op.frees.iter().map(|t| inv.tensor(*t).bytes.0).sum::<u64>();
        }
        peak
    }

    /// Three steps of gpt2-tiny on the GPU: every loss is finite, and the pool's
    /// USED_MEM_HIGH equals the program's peak of live bytes. Skips (passes, with a message)
    /// where there is no GPU, as in CI.
    #[test]
    fn tiny_steps_on_the_gpu_or_skip() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/configs/gpt2-tiny.ron");
        let program = Program::build(&GptConfig::load(&path).unwrap());
        let opts = RunOptions { steps: 3, seed: 1, setup: TrainingSetup::gpt3(&program.config), export: None, peak_flops: 989e12 };
        match run_all_on_gpu(&program, &opts, &mut |_| {}) {
            Err(ExecError::NoGpu(m)) => eprintln!("skipped: no CUDA device ({m})"),
            Err(e) => panic!("{e}"),
            Ok(r) => {
                assert_eq!(r.steps.len(), 3);
                assert!(r.steps.iter().all(|s| s.loss.is_finite()));
                let lrs: Vec<f64> = r.steps.iter().map(|s| s.lr).collect();
                assert_eq!(lrs, (1..=3).map(|s| opts.adamw_at(s, 1).lr as f64).collect::<Vec<_>>());
                assert_eq!(r.pool_used_high, live_peak(&program));
            }
        }
    }

    /// Each step's AdamW carries the schedule's rate in f32 and the setup's other values.
    #[test]
    fn each_step_gets_its_learning_rate() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/configs/gpt2-tiny.ron");
        let cfg = GptConfig::load(&path).unwrap();
        let mut setup = TrainingSetup::gpt3(&cfg);
        setup.warmup = models::training::Warmup::Steps(2);
        let opts = RunOptions { steps: 10, seed: 0, setup: setup.clone(), export: None, peak_flops: 1.0 };
        assert_eq!(opts.adamw_at(1, 1), AdamW { lr: (setup.lr / 2.0) as f32, ..AdamW::default() });
        assert_eq!(opts.adamw_at(2, 1).lr, setup.lr as f32);
        assert_eq!(opts.adamw_at(10, 1).lr, setup.min_lr as f32);
        assert_eq!(opts.adamw_at(11, 1).lr, setup.min_lr as f32, "the schedule runner's measured step: the floor");
        assert!((3..10).all(|s| opts.adamw_at(s, 1).lr >= opts.adamw_at(s + 1, 1).lr));
    }
}
