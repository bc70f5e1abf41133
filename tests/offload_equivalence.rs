//! Offload changes nothing but placement: for each strategy of Executor II (every layer's
//! activations offloaded, streamed weights, the output layer streamed chunk by chunk,
//! recomputation, streamed optimizer state, host AdamW, the CPU embedding, a mix, and the
//! planner's own plan under a tight budget) ten training steps give the all-on-GPU run's losses.
//!
//! Needs a GPU; without one each test says so and passes (CI has none). On the GPU machine the
//! test binary is built here and carried (`cargo test --release --test offload_equivalence
//! --no-run`), and finds the configs from the working directory.

use executor::{Allocator, ExecError, RunOptions};
use models::{Bytes, GptConfig, HardwareProfile, Program, Seconds};
use std::path::PathBuf;

/// Strategies whose ops run the same kernels on the same data as the all-on-GPU step: copies
/// and recomputation reproduce every byte, so the losses are bitwise equal.
const SAME_KERNELS: &[&str] =
    &["offload-all", "stream-weights", "stream-output", "recompute-all", "streamed-optimizer", "offload-first=3,recompute-all"];

/// Strategies with work on the host, held bitwise too: the CPU embedding's gather and scatter
/// are exact, and host AdamW does the kernel's fp32 operations on the kernel's scalars (computed
/// once on the host, `AdamwScalars`) in the same order with no fused multiply-add on either side,
/// so every update is the GPU's to the bit (on the H200, device run 17: all ten losses equal).
/// Before that, NVRTC's contractions and its own `powf` let a weight differ in its last bit, and
/// training amplified it to 4.4e-2 after 10 steps.
const HOST_WORK: &[&str] = &["host-optimizer", "cpu-embedding", "offload-all,host-optimizer,cpu-embedding,stream-output"];

fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if manifest.join("models/configs").is_dir() {
        manifest
    } else {
        std::env::current_dir().expect("a working directory")
    }
}

fn small_125m() -> Program {
    let cfg = GptConfig::load(&root().join("models/configs/gpt3-125m.ron")).unwrap();
    Program::build(&cfg.with_shape(Some(2), Some(256), None).unwrap())
}

fn hardware() -> HardwareProfile {
    HardwareProfile::load(&root().join("models/hardware/h100-sxm.ron")).unwrap()
}

/// Ten steps of GPT-3's schedule for the model (a warmup step, then cosine to the floor): every
/// strategy must follow the same per-step rates, on the GPU and on the host alike.
fn opts(program: &Program) -> RunOptions {
    RunOptions { steps: 10, seed: 3, setup: models::TrainingSetup::gpt3(&program.config), export: None, peak_flops: 989e12 }
}

/// The all-on-GPU losses, or None (and a message) without a GPU.
fn baseline(program: &Program) -> Option<Vec<f64>> {
    match executor::run_all_on_gpu(program, &opts(program), &mut |_| {}) {
        Err(ExecError::NoGpu(m)) => {
            eprintln!("skipped: no CUDA device ({m})");
            None
        }
        Err(e) => panic!("all-on-GPU run: {e}"),
        Ok(r) => Some(r.steps.iter().map(|s| s.loss).collect()),
    }
}

/// The losses of `schedule` run with `allocator`; its pool peak held to the prediction (the
/// arena, or the live peak).
fn losses_with(program: &Program, schedule: &models::Schedule, allocator: Allocator) -> Vec<f64> {
    let r = executor::run_schedule(program, schedule, &opts(program), allocator, &mut |_| {})
        .unwrap_or_else(|e| panic!("{}: {e}", schedule.strategy));
    let predicted = match allocator {
        Allocator::Arena => schedule.prediction.tensor_bytes().0,
        Allocator::Pool => schedule.prediction.peak_allocated.0,
    };
    assert!(
        r.run.pool_used_high <= predicted,
        "{} ({}): pool peak {} above the predicted {predicted}",
        schedule.strategy,
        allocator.label(),
        r.run.pool_used_high
    );
    r.run.steps.iter().map(|s| s.loss).collect()
}

fn losses_of(program: &Program, schedule: &models::Schedule) -> Vec<f64> {
    losses_with(program, schedule, Allocator::Arena)
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// Every strategy's schedule passes the executor's own checks (its events bind, its host copies
/// never race), on any machine.
#[test]
fn every_strategys_schedule_passes_the_executors_checks() {
    let program = small_125m();
    let hw = hardware();
    for names in SAME_KERNELS.iter().chain(HOST_WORK) {
        let presets = planner::strategy::parse_strategy(names).unwrap();
        let plan = planner::strategy::strategy_plan(&program, &hw, Bytes::gib(40.0), names, &presets).unwrap();
        executor::runner::check_schedule(&program, &plan.schedule).unwrap_or_else(|e| panic!("{names}: {e}"));
    }
}

#[test]
fn every_strategy_trains_like_the_all_on_gpu_step() {
    let program = small_125m();
    let Some(base) = baseline(&program) else { return };
    let hw = hardware();
    let mut report = Vec::new();
    for names in SAME_KERNELS.iter().chain(HOST_WORK) {
        let presets = planner::strategy::parse_strategy(names).unwrap();
        let plan = planner::strategy::strategy_plan(&program, &hw, Bytes::gib(40.0), names, &presets).unwrap();
        let losses = losses_of(&program, &plan.schedule);
        let d = max_diff(&losses, &base);
        eprintln!("{names:<60} max |loss diff| {d:.3e} over {} steps (allowed: none)", losses.len());
        report.push((names, d));
    }
    let bad: Vec<_> = report.iter().filter(|(_, d)| *d != 0.0).collect();
    assert!(bad.is_empty(), "losses differ from the all-on-GPU run: {bad:?}");
}

#[test]
fn the_planners_mixed_plan_under_a_tight_budget_trains_like_the_all_on_gpu_step() {
    let program = small_125m();
    let hw = hardware();
    let floor = planner::feasible_floor(&program, &hw);
    let all = planner::strategy::strategy_plan(&program, &hw, Bytes::gib(40.0), "keep-all", &[planner::strategy::Preset::KeepAll]).unwrap();
    // Halfway between the floor and everything on the GPU: the plan must mix placements.
    let budget = Bytes((floor.0 + all.schedule.prediction.peak_device().0) / 2);
    let opts_plan = planner::SolveOptions::new().with_time_limit(Seconds(20.0)).unwrap().with_gap(0.01).unwrap();
    let plan = planner::plan(&program, &hw, budget, &opts_plan).unwrap();
    let off = plan.schedule.decisions.iter().filter(|d| d.placement != models::Placement::Gpu).count();
    assert!(off > 0, "a budget below keep-all must move something off the GPU");
    executor::runner::check_schedule(&program, &plan.schedule).unwrap();
    let Some(base) = baseline(&program) else { return };
    let losses = losses_of(&program, &plan.schedule);
    let host = plan.schedule.actions.iter().any(|a| matches!(a, models::schedule::Action::HostRun(_)));
    let d = max_diff(&losses, &base);
    eprintln!("planner at {budget} ({off} blocks off the GPU, host work: {host}): max |loss diff| {d:.3e}");
    assert!(d == 0.0, "planner's plan (host work: {host}): losses differ by {d}");
    // Where the memory comes from changes nothing either: the pool gives the same losses.
    let pooled = losses_with(&program, &plan.schedule, Allocator::Pool);
    assert_eq!(pooled, losses, "the arena and the pool give different losses");
}
