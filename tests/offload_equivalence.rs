//! Offload changes nothing but placement: for each strategy of Executor II (every layer's
//! activations offloaded, streamed weights, the output layer streamed chunk by chunk,
//! recomputation, streamed optimizer state, host AdamW, the CPU embedding, a mix, and the
//! planner's own plans at three budgets) ten training steps of the clipped step (GPT-3's setup:
//! the global norm clipped at 1.0) give bitwise the all-on-GPU run's losses, gradients and
//! final weights and optimizer state, and still do with every lane slowed at random (a race
//! would show). Each step's gradients are compared by the global norm (the f64 sum of every
//! owner's 256 partial sums of squares, made on the GPU or, for the CPU embedding, on the host)
//! and by an exact checksum of every gradient bit made beside it (`host::grad_checksum`).
//!
//! Needs a GPU; without one each test says so and passes (CI has none). On the GPU machine the
//! test binary is built here and carried (`cargo test --release --test offload_equivalence
//! --no-run`), and finds the configs from the working directory.

use executor::{Allocator, ExecError, RunOptions, SlowLanes, Training};
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
    let cfg = cfg.with_shape(Some(2), Some(256), None).unwrap();
    let program = Program::for_setup(&cfg, &models::TrainingSetup::gpt3(&cfg));
    assert_eq!(program.clipping, models::program::Clipping::GlobalNorm, "GPT-3's setup clips");
    program
}

fn hardware() -> HardwareProfile {
    HardwareProfile::load(&root().join("models/hardware/h100-sxm.ron")).unwrap()
}

/// Ten steps of GPT-3's schedule for the model (a warmup step, then cosine to the floor): every
/// strategy must follow the same per-step rates, on the GPU and on the host alike.
fn opts(program: &Program) -> RunOptions {
    RunOptions { steps: 10, seed: 3, setup: models::TrainingSetup::gpt3(&program.config), export: None, peak_flops: 989e12 }
}

/// What a run must reproduce: its losses, and the final weights and optimizer state (fp32
/// master, m and v: the last carry every gradient of the run through AdamW), as digests.
#[derive(Clone, Debug, PartialEq)]
struct Outcome {
    losses: Vec<f64>,
    /// Each step's global gradient norm before clipping.
    grad_norms: Vec<f64>,
    /// Each step's exact gradient checksum (every gradient bit of every owner).
    grad_checksums: Vec<u64>,
    weights: String,
    optimizer: String,
}

impl Outcome {
    fn of(r: &executor::RunResult) -> Outcome {
        let state = r.final_state.as_ref().expect("the run keeps its final state");
        Outcome {
            losses: r.steps.iter().map(|s| s.loss).collect(),
            grad_norms: r.steps.iter().map(|s| s.grad_norm.expect("a clipped step reports its norm")).collect(),
            grad_checksums: r.steps.iter().map(|s| s.grad_checksum.expect("a clipped step reports its checksum")).collect(),
            weights: state.weights_digest(),
            optimizer: state.optimizer_digest(),
        }
    }

    /// What differs from `want`: the largest loss difference, and whether the gradient norms
    /// or the final state do.
    fn diff(&self, want: &Outcome) -> (f64, bool) {
        let norms = self.grad_norms.iter().map(|n| n.to_bits()).ne(want.grad_norms.iter().map(|n| n.to_bits()))
            || self.grad_checksums != want.grad_checksums;
        (max_diff(&self.losses, &want.losses), norms || self.weights != want.weights || self.optimizer != want.optimizer)
    }
}

fn training(program: &Program) -> Training {
    Training::corpus(program, opts(program).seed).unwrap().keep_final_state()
}

/// The all-on-GPU losses and the keep-all schedule's outcome (a schedule run trains one more,
/// measured, step, so its final state is the reference for schedules), its losses held to the
/// all-on-GPU step's; or None (and a message) without a GPU.
fn baseline(program: &Program) -> Option<Outcome> {
    let base = match executor::run_all_on_gpu(program, &opts(program), &mut |_| {}) {
        Err(ExecError::NoGpu(m)) => {
            eprintln!("skipped: no CUDA device ({m})");
            return None;
        }
        Err(e) => panic!("all-on-GPU run: {e}"),
        Ok(r) => r,
    };
    let keep_all =
        planner::strategy::strategy_plan(program, &hardware(), Bytes::gib(40.0), "keep-all", &[planner::strategy::Preset::KeepAll])
            .unwrap()
            .schedule;
    let reference = outcome_with(program, &keep_all, Allocator::Arena, None);
    let losses: Vec<f64> = base.steps.iter().map(|s| s.loss).collect();
    assert_eq!(reference.losses, losses, "the keep-all schedule's losses differ from the all-on-GPU step's");
    let checksums: Vec<u64> = base.steps.iter().map(|s| s.grad_checksum.expect("a clipped step reports its checksum")).collect();
    assert_eq!(reference.grad_checksums, checksums, "the keep-all schedule's gradients differ from the all-on-GPU step's");
    let norms: Vec<f64> = base.steps.iter().map(|s| s.grad_norm.expect("a clipped step reports its norm")).collect();
    assert_eq!(reference.grad_norms, norms, "the keep-all schedule's gradient norms differ from the all-on-GPU step's");
    // Clipping acts: GPT-3's 1.0 is below the norms of a step from random weights.
    assert!(norms.iter().any(|n| *n > 1.0), "no step clipped: {norms:?}");
    Some(reference)
}

/// The outcome of `schedule` run with `allocator` (and its lanes slowed, if asked); its pool
/// peak held to the prediction (the arena, or the live peak).
fn outcome_with(program: &Program, schedule: &models::Schedule, allocator: Allocator, slow: Option<SlowLanes>) -> Outcome {
    let r = match slow {
        None => executor::run_schedule_with(program, schedule, &opts(program), allocator, training(program), &mut |_| {}),
        Some(slow) => executor::run_schedule_slowed(program, schedule, &opts(program), allocator, slow, training(program), &mut |_| {}),
    }
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
    Outcome::of(&r.run)
}

fn outcome_of(program: &Program, schedule: &models::Schedule) -> Outcome {
    outcome_with(program, schedule, Allocator::Arena, None)
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
        let (d, state_differs) = outcome_of(&program, &plan.schedule).diff(&base);
        eprintln!(
            "{names:<60} max |loss diff| {d:.3e} over {} steps, gradients (norms, checksums) and final state {} (allowed: none)",
            base.losses.len(),
            if state_differs { "DIFFERS" } else { "equal" }
        );
        report.push((names, d, state_differs));
    }
    let bad: Vec<_> = report.iter().filter(|(_, d, state)| *d != 0.0 || *state).collect();
    assert!(bad.is_empty(), "losses or final weights and optimizer state differ from the all-on-GPU run's: {bad:?}");
}

/// The planner's plans at a quarter, half and three quarters of the way from the floor to
/// everything on the GPU: each must move something off the GPU.
fn mixed_plans(program: &Program, hw: &HardwareProfile) -> Vec<(Bytes, models::Schedule)> {
    let floor = planner::feasible_floor(program, hw);
    let all = planner::strategy::strategy_plan(program, hw, Bytes::gib(40.0), "keep-all", &[planner::strategy::Preset::KeepAll]).unwrap();
    let top = all.schedule.prediction.peak_device().0;
    let opts_plan = planner::SolveOptions::new().with_time_limit(Seconds(20.0)).unwrap().with_gap(0.01).unwrap();
    [1u64, 2, 3]
        .iter()
        .map(|q| {
            let budget = Bytes(floor.0 + (top - floor.0) * q / 4);
            let plan = planner::plan(program, hw, budget, &opts_plan).unwrap_or_else(|e| panic!("plan at {budget}: {e}"));
            let off = plan.schedule.decisions.iter().filter(|d| d.placement != models::Placement::Gpu).count();
            assert!(off > 0, "a budget of {budget}, below keep-all, must move something off the GPU");
            executor::runner::check_schedule(program, &plan.schedule).unwrap();
            (budget, plan.schedule)
        })
        .collect()
}

#[test]
fn the_planners_mixed_plans_at_three_budgets_train_like_the_all_on_gpu_step() {
    let program = small_125m();
    let hw = hardware();
    let plans = mixed_plans(&program, &hw);
    let Some(base) = baseline(&program) else { return };
    for (budget, schedule) in &plans {
        let got = outcome_of(&program, schedule);
        let off = schedule.decisions.iter().filter(|d| d.placement != models::Placement::Gpu).count();
        let host = schedule.actions.iter().any(|a| matches!(a, models::schedule::Action::HostRun(_)));
        let (d, state_differs) = got.diff(&base);
        eprintln!(
            "planner at {budget} ({off} blocks off the GPU, host work: {host}): max |loss diff| {d:.3e}, gradients or final state differ: {state_differs}"
        );
        assert!(
            d == 0.0 && !state_differs,
            "planner's plan at {budget} (host work: {host}): losses differ by {d}, final state differs: {state_differs}"
        );
        // Where the memory comes from changes nothing either: the pool gives the same numbers.
        let pooled = outcome_with(&program, schedule, Allocator::Pool, None);
        assert_eq!(pooled, got, "at {budget} the arena and the pool give different numbers");
    }
}

/// A race hides when the lanes keep their usual relative speeds. Here every lane, compute
/// included, gets random delays queued on its own stream before about a third of its work (up to
/// 300 us each, different in every step): every strategy and the planner's plans must still give
/// bitwise the all-on-GPU losses and final state.
#[test]
fn every_schedule_with_its_lanes_slowed_at_random_trains_like_the_all_on_gpu_step() {
    let program = small_125m();
    let hw = hardware();
    let mut schedules: Vec<(String, models::Schedule)> = SAME_KERNELS
        .iter()
        .chain(HOST_WORK)
        .map(|names| {
            let presets = planner::strategy::parse_strategy(names).unwrap();
            (names.to_string(), planner::strategy::strategy_plan(&program, &hw, Bytes::gib(40.0), names, &presets).unwrap().schedule)
        })
        .collect();
    schedules.extend(mixed_plans(&program, &hw).into_iter().map(|(b, s)| (format!("planner at {b}"), s)));
    let Some(base) = baseline(&program) else { return };
    let mut bad = Vec::new();
    for (seed, (name, schedule)) in schedules.iter().enumerate() {
        let slow = SlowLanes { seed: 11 + seed as u64, share: 0.35, longest: Seconds(300e-6) };
        let (d, state_differs) = outcome_with(&program, schedule, Allocator::Arena, Some(slow)).diff(&base);
        eprintln!("{name:<60} slowed (seed {}): max |loss diff| {d:.3e}, gradients or final state differ: {state_differs}", slow.seed);
        if d != 0.0 || state_differs {
            bad.push((name.clone(), d, state_differs));
        }
    }
    assert!(bad.is_empty(), "slowed lanes changed the losses or the final state: {bad:?}");
}
