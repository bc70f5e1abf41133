//! `offplan run`: training steps on the GPU, measured. With a SCHEDULE it carries out every
//! action the plan names (offload, prefetch, recompute, host work) and compares the measured
//! memory and lane times with the simulator's; with `--model` it runs everything on the GPU.
//! Per-step loss, ms, tokens/s and MFU; a record (RON), `loss.svg`/`.png` (training and
//! validation loss against step, from the record) and, for a schedule, `memory.svg` (the
//! measured pool memory over the step on the prediction) under `--out`.

use super::run_console::Console;
use super::{CodedError, ModelArgs, EXIT_NO_GPU};
use anyhow::Context;
use executor::checkpoint::Checkpoint;
use executor::data::{TrainData, ValidationSet};
use executor::{ExecError, RunOptions, RunResult, SavePlan, StartFrom, StepReport, Training};
use models::schedule::Schedule;
use models::{HardwareProfile, Program};
use planner::LifetimeGraph;
use reports::record::{steady_median_ms, MemoryPeaks, Record, StepRecord, StepTimes, TrainingRecord, RECORD_VERSION};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A schedule written by `offplan plan` (DIR/schedule.ron); without it, `--model` runs
    /// everything on the GPU.
    #[arg(value_name = "SCHEDULE", required_unless_present = "model", conflicts_with = "model")]
    pub schedule: Option<PathBuf>,
    /// GPT config file, to run everything on the GPU (no schedule).
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// Micro-batch size (overrides the config; with --model).
    #[arg(long, value_name = "B", requires = "model")]
    pub batch: Option<u32>,
    /// Sequence length (overrides the config; with --model).
    #[arg(long, value_name = "T", requires = "model")]
    pub seq: Option<u32>,
    /// Training steps to run (a schedule run adds one more, measured action by action).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub steps: u32,
    /// Folder for the record (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Also write the PyTorch reference export here (all-on-GPU runs only).
    #[arg(long, value_name = "DIR", requires = "model")]
    pub export: Option<PathBuf>,
    /// Hardware profile: the fixed overhead of an all-on-GPU prediction; for a schedule, the
    /// profile it was planned for is read from models/hardware/<name>.ron unless this is given.
    #[arg(long, value_name = "PATH")]
    pub hardware: Option<PathBuf>,
    /// Peak dense bf16 TFLOP/s for MFU (llm.c's H100 SXM figure by default).
    #[arg(long, default_value_t = super::MFU_PEAK_TFLOPS)]
    pub peak_tflops: f64,
    /// The training setup (with --model; a schedule carries its own, as `offplan plan` was told).
    #[command(flatten)]
    pub training: super::SetupArgs,
    /// Seed of the initial weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where a schedule's tensors get device memory: `arena` (one allocation, every tensor at a
    /// planned offset: the device holds exactly the predicted bytes) or `pool` (CUDA's
    /// stream-ordered pool per allocation, which can fragment past the budget).
    #[arg(long, value_enum, default_value_t = AllocatorArg::Arena)]
    pub allocator: AllocatorArg,
    /// Token files to train on: a path or a glob (quote it), llm.c shards as `offplan tokenize`
    /// writes them, or plain uint16 files with `--data-format raw`; without it, the shipped
    /// corpus.
    #[arg(long, value_name = "PATTERN")]
    pub data: Option<String>,
    /// The token files' format: `llmc` (the default) or `raw` (plain uint16, nanoGPT's .bin).
    #[arg(long, value_name = "FORMAT", default_value = "llmc", requires = "data")]
    pub data_format: executor::data::ShardFormat,
    /// Save checkpoints into DIR/step_NNNNNNNN/ (and DIR/latest) after the last step, and
    /// every --save-every steps.
    #[arg(long, value_name = "DIR")]
    pub save: Option<PathBuf>,
    /// Also save after every N-th step (N at least 1).
    #[arg(long, value_name = "N", requires = "save", value_parser = clap::value_parser!(u32).range(1..))]
    pub save_every: Option<u32>,
    /// Save the weights and config.json only (a checkpoint to share; it cannot be resumed).
    #[arg(long, requires = "save")]
    pub weights_only: bool,
    /// Checkpoints kept in the --save folder (the newest).
    #[arg(long, value_name = "N", default_value_t = 3, requires = "save", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub keep: u32,
    /// Continue a run saved with --save (a checkpoint folder, or a --save folder: its newest):
    /// weights, optimizer state, step count and data position; refused for another config or
    /// program. The schedule may be another one of the same model (another budget).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["init_from", "export"])]
    pub resume: Option<PathBuf>,
    /// Start from Hugging Face GPT-2 safetensors weights (DIR/model.safetensors, as
    /// save_pretrained writes it): a fresh optimizer, step 1.
    #[arg(long, value_name = "DIR")]
    pub init_from: Option<PathBuf>,
    /// Validation token files (same format as --data): the mean loss over --val-batches fixed
    /// batches (the files' first rows) every --val-every steps and after the last. With --model
    /// a forward pass per batch; under a SCHEDULE the schedule's whole step with its updates
    /// left out, so every block stays where the schedule keeps it and the budget holds.
    #[arg(long, value_name = "PATTERN")]
    pub val_data: Option<String>,
    /// Validate after every N-th step (N at least 1; and after the last).
    #[arg(long, value_name = "N", default_value_t = 100, requires = "val_data", value_parser = clap::value_parser!(u32).range(1..))]
    pub val_every: u32,
    /// Validation batches (at least 1; fewer if the files hold fewer).
    #[arg(long, value_name = "M", default_value_t = 20, requires = "val_data", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub val_batches: u32,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocatorArg {
    Arena,
    Pool,
}

impl From<AllocatorArg> for executor::Allocator {
    fn from(a: AllocatorArg) -> Self {
        match a {
            AllocatorArg::Arena => executor::Allocator::Arena,
            AllocatorArg::Pool => executor::Allocator::Pool,
        }
    }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
}

/// The commit this binary was built from (build.rs).
fn commit() -> String {
    env!("OFFPLAN_BUILD_COMMIT").to_string()
}

fn pct(m: f64, p: f64) -> f64 {
    if p > 0.0 {
        100.0 * (m - p) / p
    } else {
        0.0
    }
}

/// Runs `f` with a console over `steps` steps as its progress callback.
fn with_console<T>(steps: u32, f: impl FnOnce(&mut dyn FnMut(executor::Progress)) -> T) -> T {
    let mut console = Console::new(steps);
    let out = f(&mut |p| console.handle(p));
    console.finish();
    out
}

/// The run's probes, and how far they moved over the run.
fn print_probes(p: &models::hardware::RunProbes) {
    for (when, r) in [("before the first step", &p.start), ("after the last step", &p.end)] {
        match r {
            Some(r) => println!(
                "probe {when}: copies {:.1}/{:.1} GB/s ({:.1}+{:.1} at once), products {:.1} TFLOP/s, attention {:.1} TFLOP/s, host AdamW {:.2} G params/s, host ops {}, issue {}, host hand-off {}, beside host AdamW {} ({:.2} s)",
                r.h2d.0 / 1e9,
                r.d2h.0 / 1e9,
                r.h2d_duplex.0 / 1e9,
                r.d2h_duplex.0 / 1e9,
                r.matmul_flops.0 / 1e12,
                r.attention_flops.0 / 1e12,
                r.host_adam_params_per_second / 1e9,
                r.host_ops.map_or("not probed".to_string(), |b| format!("{:.1} GB/s", b / 1e9)),
                r.issue.map_or("not probed".to_string(), |i| format!("{:.2}/{:.2} us a kernel/product", i.kernel.0 * 1e6, i.product.0 * 1e6)),
                r.host_call.map_or("not probed".to_string(), |h| format!("{:.1} us", h * 1e6)),
                r.host_sharing.map_or("not probed".to_string(), |h| format!(
                    "H2D keeps {:.2}, D2H {:.2}, both {:.2}+{:.2} (host {:.2}/{:.2}/{:.2})",
                    h.beside_h2d.h2d, h.beside_d2h.d2h, h.beside_both.h2d, h.beside_both.d2h, h.beside_h2d.host, h.beside_d2h.host, h.beside_both.host
                )),
                r.seconds
            ),
            None => println!("probe {when}: none (see the warning above)"),
        }
    }
    if let Some(d) = p.drift() {
        println!(
            "the probed rates moved by at most {:.1}% between the probes (`offplan report` judges the run by its step replayed under each)",
            100.0 * d
        );
    }
}

/// The start-up phases as the record keeps them.
fn print_startup(s: &models::trace::Startup) {
    println!(
        "start-up: {:.2} s to the first step (device {:.2} s, kernels {:.2} s: {} compiled, {} from the cache, allocation {:.2} s, pinning {:.2} s, initial state {:.2} s, probe {:.2} s)",
        s.time_to_first_step_s, s.open_s, s.compile_s, s.kernels_compiled, s.kernels_cached, s.allocate_s, s.pin_s, s.init_s, s.probe_s
    );
}

fn gpu_error(e: ExecError) -> anyhow::Error {
    match e {
        ExecError::NoGpu(m) => CodedError { code: EXIT_NO_GPU, message: format!("no CUDA device: {m}") }.into(),
        ExecError::Refused(m) => anyhow::anyhow!("refusing the schedule: {m}"),
        other => anyhow::Error::new(other).context("running the step on the GPU"),
    }
}

fn print_memory(measured: &MemoryPeaks, predicted: &MemoryPeaks) {
    println!("memory (measured vs predicted):");
    for (what, m, p) in [
        ("pool USED_MEM_HIGH", measured.allocated_bytes, predicted.allocated_bytes),
        ("pool RESERVED_MEM_HIGH", measured.reserved_bytes, predicted.reserved_bytes),
        ("device in use (cuMemGetInfo)", measured.device_bytes, predicted.device_bytes),
    ] {
        println!("  {what:<30} {:>14} vs {:>14}  ({:+.2}%)", mib(m), mib(p), pct(m as f64, p as f64));
    }
}

fn steps_of(reports: &[StepReport]) -> Vec<StepRecord> {
    reports
        .iter()
        .map(|s| StepRecord {
            step: s.step,
            loss: s.loss,
            lr: Some(s.lr),
            grad_norm: s.grad_norm,
            ms: s.ms,
            tokens_per_s: s.tokens_per_s,
            mfu: s.mfu,
        })
        .collect()
}

fn unix_time() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// What both kinds of run record the same way, from what the run measured: its measured
/// peaks (printed against `predicted`), steps, medians and corpus; the caller sets what a
/// schedule adds.
fn new_record(args: &Args, program: &Program, result: &RunResult, predicted: MemoryPeaks, mut notes: Vec<String>) -> Record {
    let measured = MemoryPeaks {
        allocated_bytes: result.pool_used_high,
        reserved_bytes: result.pool_reserved_high,
        device_bytes: result.device_used_high,
    };
    print_memory(&measured, &predicted);
    let steps = steps_of(&result.steps);
    let median_ms = steady_median_ms(&steps);
    let median_tokens_per_s = if median_ms > 0.0 { program.config.tokens() as f64 / (median_ms / 1e3) } else { 0.0 };
    let t = &result.training;
    notes.insert(
        0,
        match &t.pattern {
            Some(_) => format!("data: {}", t.data),
            None => format!("corpus: {} GPT-2 tokens (executor/corpus)", result.corpus_tokens),
        },
    );
    let training = TrainingRecord {
        data_pattern: t.pattern.clone(),
        data_shards: t.shards,
        data_tokens: t.tokens,
        first_step: t.first_step,
        start: t.start.clone(),
        checkpoints: t.checkpoints.iter().map(|c| (c.step, c.dir.display().to_string())).collect(),
        val_pattern: t.val_pattern.clone(),
        validation: t.validation.iter().map(|v| (v.step, v.loss)).collect(),
    };
    for v in &t.validation {
        println!("validation loss after step {}: {:.6} (mean of {} batches)", v.step, v.loss, v.batches);
    }
    Record {
        version: RECORD_VERSION,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        config: program.config.clone(),
        schedule: "all-on-gpu".into(),
        schedule_digest: models::digest::program_digest(program),
        device: result.device.clone(),
        driver: result.driver.clone(),
        commit: commit(),
        unix_time: unix_time(),
        predicted,
        measured,
        device_bytes_at_start: result.device_used_at_start,
        peak_flops: args.peak_tflops * 1e12,
        model_flops: program.model_flops().0,
        steps,
        median_ms,
        median_tokens_per_s,
        notes,
        hardware: String::new(),
        budget_bytes: None,
        strategy: reports::record::ALL_ON_GPU.into(),
        decisions: Vec::new(),
        predicted_time: None,
        measured_time: None,
        allocator: String::new(),
        startup: Some(result.startup.clone()),
        probe: Some(result.probes.clone()),
        training: Some(training),
        clipping: program.clipping,
        op_times: Vec::new(),
        host_op_times: Vec::new(),
        issue_ms: None,
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.schedule.is_some() && args.training.any() {
        return Err(super::usage(
            "a schedule carries its training setup: give --setup, --lr, --warmup, ... to `offplan plan` (or run --model without a schedule)",
        ));
    }
    if !(args.peak_tflops.is_finite() && args.peak_tflops > 0.0 && args.peak_tflops < 1e6) {
        return Err(super::usage(format!("--peak-tflops must be a positive rate below 1e6, got {}", args.peak_tflops)));
    }
    // Found before anything runs: an --out that cannot be written.
    let out = models::io::StagedDir::new(&args.out).with_context(|| format!("--out {}: cannot write there", args.out.display()))?;
    match args.schedule.clone() {
        Some(path) => run_schedule(&args, &path, out.path())?,
        None => run_all_on_gpu(&args, out.path())?,
    }
    for f in out.commit().with_context(|| format!("moving the record into {}", args.out.display()))? {
        println!("wrote {}", f.display());
    }
    Ok(())
}

fn options(args: &Args, setup: &models::TrainingSetup) -> RunOptions {
    RunOptions {
        steps: args.steps,
        seed: args.seed,
        setup: setup.clone(),
        export: args.export.clone(),
        peak_flops: args.peak_tflops * 1e12,
    }
}

/// Steps of the whole run the learning rate spans: those before a resumed checkpoint and
/// `steps` more, so a resumed run keeps the uninterrupted run's rates.
fn run_length(training: &Training, steps: u32) -> u32 {
    training.first_step() - 1 + steps
}

/// The setup as the run follows it: each value and its source, and the warmup in steps.
fn print_setup(setup: &models::TrainingSetup, steps: u32) {
    println!(
        "training setup: lr {:.3e} peak after {} warmup steps, cosine to {:.3e} at step {steps}",
        setup.lr,
        setup.warmup_steps(steps),
        setup.min_lr
    );
    for l in setup.lines() {
        println!("  {l}");
    }
}

/// The run's data, start and saves, all checked before a device is opened: the data files
/// (and the first batch's tokens), the checkpoint against this config and program, the save
/// folder.
fn training(args: &Args, program: &Program) -> anyhow::Result<Training> {
    let cfg = &program.config;
    if let Some(dir) = &args.save {
        if dir.exists() && !dir.is_dir() {
            return Err(super::usage(format!("--save {}: it is a file, not a folder", dir.display())));
        }
    }
    let digest = models::digest::program_digest(program);
    let from = match (&args.resume, &args.init_from) {
        (Some(dir), _) => StartFrom::Resume(
            Checkpoint::open_resume(dir, cfg, &program.inventory, &digest).with_context(|| format!("--resume {}", dir.display()))?,
        ),
        (None, Some(dir)) => StartFrom::Weights(
            Checkpoint::open_weights(dir, cfg, &program.inventory).with_context(|| format!("--init-from {}", dir.display()))?,
        ),
        (None, None) => StartFrom::Seed,
    };
    let what = match &args.data {
        Some(p) => format!("--data {p}"),
        None => "the shipped corpus".into(),
    };
    let data =
        TrainData::open(args.data.as_deref(), args.data_format, cfg.batch, cfg.seq, cfg.vocab, args.seed).with_context(|| what.clone())?;
    let save = args.save.as_ref().map(|dir| SavePlan {
        dir: dir.clone(),
        every: args.save_every,
        weights_only: args.weights_only,
        keep: args.keep as usize,
    });
    let mut t = Training::new(data, args.data.clone(), from, save, args.seed).with_context(|| what)?;
    if let Some(p) = &args.val_data {
        let set = ValidationSet::open(p, args.data_format, cfg.batch, cfg.seq, cfg.vocab, args.val_batches as usize)
            .with_context(|| format!("--val-data {p}"))?;
        println!("validation: {} batches of {}", set.len(), set.set().describe());
        t = t.with_validation(&set, p, args.val_every).with_context(|| format!("--val-data {p}"))?;
    }
    println!("data: {}; start: {}", t.summary().data, t.summary().start);
    Ok(t)
}

fn run_all_on_gpu(args: &Args, out: &Path) -> anyhow::Result<()> {
    let model = args.model.clone().expect("clap requires --model without a schedule");
    let cfg = ModelArgs { model, batch: args.batch, seq: args.seq, output_chunks: None }.load()?;
    let setup = args.training.resolve(&cfg)?;
    if setup.micro_batches > 1 {
        return Err(super::usage(format!("--micro-batches {}: {}", setup.micro_batches, executor::ops::NO_ACCUMULATION)));
    }
    let program = Program::for_setup(&cfg, &setup);
    program.check_lifetimes().map_err(|m| anyhow::anyhow!("the step program is inconsistent: {m}"))?;
    let (predicted_peak, _) = LifetimeGraph::build(&program).peak();
    let hw_path = args.hardware.clone().unwrap_or_else(|| PathBuf::from("models/hardware/h100-sxm.ron"));
    let hw: Option<HardwareProfile> = HardwareProfile::load(&hw_path).ok();
    let fixed = hw.as_ref().map(|h| h.fixed_overhead.0).unwrap_or(0);
    println!(
        "{}: {} layers, C {}, {} heads, B {} x T {}, {} output chunks, {:?} attention; {} steps, all on the GPU",
        cfg.name, cfg.layers, cfg.hidden, cfg.heads, cfg.batch, cfg.seq, cfg.output_chunks, cfg.attention, args.steps
    );
    println!("planner: all-on-GPU peak {} (pool), + {} fixed overhead ({})", mib(predicted_peak.0), mib(fixed), hw_path.display());
    let training = training(args, &program)?;
    let total = run_length(&training, args.steps);
    super::check_run(&setup, total)?;
    print_setup(&setup, total);
    let result =
        with_console(args.steps, |p| executor::run_all_on_gpu_with(&program, &options(args, &setup), training, p)).map_err(gpu_error)?;
    print_startup(&result.startup);
    print_probes(&result.probes);

    let predicted =
        MemoryPeaks { allocated_bytes: predicted_peak.0, reserved_bytes: predicted_peak.0, device_bytes: predicted_peak.0 + fixed };
    let mut record = new_record(args, &program, &result, predicted, Vec::new());
    println!("  device in use before allocating: {}", mib(result.device_used_at_start));
    println!(
        "median step (after the first): {:.2} ms, {:.0} tok/s, MFU {:.1}%",
        record.median_ms,
        record.median_tokens_per_s,
        100.0 * program.model_flops().0 / (record.median_ms / 1e3) / (args.peak_tflops * 1e12)
    );
    record.hardware = hw.map(|h| h.name).unwrap_or_default();
    record.write(out).with_context(|| format!("writing the record under {}", args.out.display()))?;
    write_loss_chart(args, out, &record)?;
    if let Some(d) = &args.export {
        println!("reference export: {}", d.display());
    }
    Ok(())
}

fn run_schedule(args: &Args, path: &Path, out: &Path) -> anyhow::Result<()> {
    let schedule = Schedule::load(path)?;
    if schedule.setup.micro_batches > 1 {
        return Err(super::usage(format!(
            "{}: {} micro-batches per step: {}",
            path.display(),
            schedule.setup.micro_batches,
            executor::ops::NO_ACCUMULATION
        )));
    }
    let program = Program::for_setup(&schedule.model, &schedule.setup);
    schedule.check_digest(&models::digest::program_digest(&program), path)?;
    let hw = super::schedule_hardware(args.hardware.as_deref(), &schedule)?;
    check_host_memory(&schedule, &program, &hw)?;
    // The simulator checks the schedule (every op's inputs on the GPU, no races between lanes,
    // the budget under any timing) before anything runs, and gives the prediction to compare.
    let checked = planner::check_schedule(&program, &hw, &schedule).with_context(|| format!("refusing {}", path.display()))?;
    if let Some(m) = &checked.over_budget {
        anyhow::bail!("refusing {}: with today's model {m}: plan again", path.display());
    }
    if !checked.differences.is_empty() {
        println!(
            "note: today's model predicts otherwise than this file stores ({}); comparing with today's",
            checked.differences.join("; ")
        );
    }
    let trace = checked.trace;
    let cfg = &program.config;
    let p = &checked.today;
    println!(
        "{}: {} layers, B {} x T {}, {} output chunks; schedule {} ({}), budget {}; {} steps + 1 measured",
        cfg.name,
        cfg.layers,
        cfg.batch,
        cfg.seq,
        cfg.output_chunks,
        path.display(),
        if schedule.strategy.is_empty() { "unnamed strategy" } else { &schedule.strategy },
        schedule.budget,
        args.steps
    );
    let allocator = executor::Allocator::from(args.allocator);
    // With an arena the pool hands out the arena alone; with the pool, its peak of live bytes.
    let predicted = match allocator {
        executor::Allocator::Arena => MemoryPeaks {
            allocated_bytes: p.tensor_bytes().0,
            reserved_bytes: hw.pool_reserved(p.tensor_bytes()).0,
            device_bytes: p.peak_device().0,
        },
        executor::Allocator::Pool => MemoryPeaks {
            allocated_bytes: p.peak_allocated.0,
            reserved_bytes: p.peak_allocated.0,
            device_bytes: (p.peak_allocated + p.fixed_overhead).0,
        },
    };
    println!(
        "predicted: live peak {} at {}, {} for tensors with the {} allocator, {} on the device, step {}",
        p.peak_allocated,
        p.peak_at,
        models::Bytes(predicted.allocated_bytes),
        allocator.label(),
        models::Bytes(predicted.device_bytes),
        p.step_time
    );
    let training = training(args, &program)?;
    let total = run_length(&training, args.steps);
    super::check_run(&schedule.setup, total).with_context(|| format!("{}'s training setup", path.display()))?;
    print_setup(&schedule.setup, total);
    let opts = options(args, &schedule.setup);
    let result =
        with_console(args.steps, |p| executor::run_schedule_with(&program, &schedule, &opts, allocator, training, p)).map_err(gpu_error)?;
    print_startup(&result.run.startup);
    print_probes(&result.run.probes);

    let run = &result.run;
    let l = result.lanes;
    let mut notes = vec![
        format!("pinned host memory: {} bytes", result.pinned_bytes),
        format!("step {} measured action by action took {:.3} ms", result.measured_step, l.step_ms),
        format!("allocator: {}; predicted live peak {} bytes", allocator.label(), p.peak_allocated.0),
    ];
    if let Some(a) = result.arena_bytes {
        notes.push(format!("arena: {a} bytes"));
    }
    let mut record = new_record(args, &program, run, predicted, notes);
    record.allocator = allocator.label().to_string();
    println!("  device in use before allocating: {}; pinned host memory {}", mib(run.device_used_at_start), mib(result.pinned_bytes));
    if record.measured.device_bytes > schedule.budget.0 {
        println!("  WARNING: the device used {} more than the budget", mib(record.measured.device_bytes - schedule.budget.0));
    }

    let predicted_time = StepTimes::predicted(p, &trace);
    let measured_time = StepTimes { step_ms: record.median_ms, ..l };
    println!("lanes (step {} measured action by action: {:.2} ms) vs the simulator:", result.measured_step, l.step_ms);
    for (what, m, pr) in [
        ("step (median of the timed steps)", measured_time.step_ms, predicted_time.step_ms),
        ("compute busy", measured_time.compute_ms, predicted_time.compute_ms),
        ("compute waiting on other lanes", measured_time.compute_wait_ms, predicted_time.compute_wait_ms),
        ("host-to-device busy", measured_time.h2d_ms, predicted_time.h2d_ms),
        ("device-to-host busy", measured_time.d2h_ms, predicted_time.d2h_ms),
        ("host work", measured_time.host_ms, predicted_time.host_ms),
    ] {
        println!("  {what:<34} {m:>10.2} ms vs {pr:>10.2} ms  ({:+.1}%)", pct(m, pr));
    }
    println!("  bytes: {} H2D, {} D2H", mib(l.h2d_bytes), mib(l.d2h_bytes));
    println!("median step (after the first): {:.2} ms, {:.0} tok/s", record.median_ms, record.median_tokens_per_s);

    let samples: Vec<(f64, u64)> = result.memory.iter().map(|m| (m.ms, m.used)).collect();
    let chart = reports::measured::MeasuredMemoryChart::new(&schedule, &trace, &samples, l.step_ms, &run.device);
    reports::measured::write_measured_memory(out, &chart).with_context(|| format!("writing memory.svg into {}", args.out.display()))?;

    record.schedule = path.display().to_string();
    record.schedule_digest = schedule.inventory_digest.clone();
    record.hardware = schedule.hardware.clone();
    record.budget_bytes = Some(schedule.budget.0);
    record.strategy = if schedule.strategy.is_empty() { "unnamed".into() } else { schedule.strategy.clone() };
    record.decisions = schedule.decisions.clone();
    record.predicted_time = Some(predicted_time);
    record.measured_time = Some(measured_time);
    record.op_times = reports::record::OpKindTime::table(&program, &hw, result.ops.iter().map(|o| (o.op, o.gpu_ms, o.issue_ms)));
    record.host_op_times = reports::record::HostOpKindTime::table(&program, &hw, result.host_ops.iter().map(|o| (o.op, o.ms)));
    record.issue_ms = (!result.issue_ms.is_empty()).then(|| reports::record::median(&result.issue_ms));
    print_op_times(&record.op_times, record.issue_ms, record.median_ms);
    print_host_op_times(&record.host_op_times);
    record.write(out).with_context(|| format!("writing the record under {}", args.out.display()))?;
    write_loss_chart(args, out, &record)?;
    Ok(())
}

/// `loss.svg`/`loss.png` beside the record, drawn from it alone (as `reports` would draw it
/// from the record's file).
fn write_loss_chart(args: &Args, out: &Path, record: &Record) -> anyhow::Result<()> {
    reports::write_loss_chart(out, record).with_context(|| format!("writing loss.svg into {}", args.out.display()))?;
    Ok(())
}

/// The measured step's host ops by kind against the profile.
fn print_host_op_times(rows: &[reports::record::HostOpKindTime]) {
    if rows.is_empty() {
        return;
    }
    println!("host ops by kind vs the profile (each as it timed itself in the measured step):");
    println!("  {:<12} {:>5} {:>11} {:>11} {:>8}", "kind", "runs", "measured ms", "profile ms", "error");
    for r in rows {
        println!(
            "  {:<12} {:>5} {:>11.3} {:>11.3} {:>+7.1}%",
            r.kind,
            r.runs,
            r.measured_ms,
            r.predicted_ms,
            pct(r.predicted_ms, r.measured_ms)
        );
    }
}

/// Refuses, before anything is pinned, a schedule whose pinned host memory this host cannot
/// give: more than what is available now (less room for the system) and more than the
/// profile says a run may pin on this kind of machine (its memory may grow as it is touched).
fn check_host_memory(schedule: &Schedule, program: &Program, hw: &HardwareProfile) -> anyhow::Result<()> {
    let need = schedule.pinned_bytes(program);
    let Some(mem) = executor::calibrate::HostMemory::read() else { return Ok(()) };
    let allowed = models::Bytes(mem.pinnable()).max(hw.host_pinnable.unwrap_or(models::Bytes::ZERO));
    if need > allowed {
        anyhow::bail!(
            "the schedule pins {need} of host memory, but this host has {} available of {} (a run may pin {allowed}): plan again with --host-memory {allowed} or a larger device budget",
            models::Bytes(mem.available),
            models::Bytes(mem.total)
        );
    }
    Ok(())
}

/// The compute actions by kind against the profile (timed with the GPU held), and how long the host took
/// to issue a step beside how long the step ran.
fn print_op_times(rows: &[reports::record::OpKindTime], issue_ms: Option<f64>, step_ms: f64) {
    if rows.is_empty() {
        return;
    }
    println!("compute actions by kind vs the profile (CUDA events around each, in the first step with the GPU held ahead of the host; issue times from the measured step):");
    println!(
        "  {:<12} {:>5} {:>8} {:>11} {:>11} {:>8} {:>11}",
        "kind", "runs", "launches", "measured ms", "profile ms", "error", "issue ms"
    );
    for r in rows {
        println!(
            "  {:<12} {:>5} {:>8} {:>11.3} {:>11.3} {:>+7.1}% {:>11.3}",
            r.kind,
            r.runs,
            r.launches,
            r.measured_ms,
            r.predicted_ms,
            pct(r.predicted_ms, r.measured_ms),
            r.issue_ms
        );
    }
    if let Some(i) = issue_ms {
        println!("  the host issued a timed step's actions in {i:.2} ms (median) of its {step_ms:.2} ms");
    }
}
