//! End-to-end checks of the planner: plans fit, the solver's objective agrees with the
//! simulator, the MILP equals exhaustive search on a tiny model, plans beat the heuristics.

use models::{Attention, Bytes, GptConfig, HardwareProfile, Precision, Program, Seconds};
use planner::decisions::{ActChoice, Decisions, OwnerChoice};
use planner::solve::StageModel;
use planner::*;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}
fn h100() -> HardwareProfile {
    HardwareProfile::load(&root().join("models/hardware/h100-sxm.ron")).unwrap()
}
fn config(name: &str) -> GptConfig {
    GptConfig::load(&root().join(format!("models/configs/{name}.ron"))).unwrap()
}
fn quick() -> PlanOptions {
    PlanOptions { time_limit: Seconds(8.0), mip_rel_gap: 0.01, threads: 2 }
}

/// The budget everything on the GPU needs, as the planner counts it (with the pool's rounding,
/// which the floor counts too).
fn all_gpu_device_peak(p: &Program, hw: &HardwareProfile) -> Bytes {
    hw.budget_for(StageModel::new(p, hw).evaluate(&Decisions::all_gpu(p)).peak) + hw.pool_reserve_granularity
}

fn assert_agrees(plan: &Plan, what: &str) {
    let pr = &plan.schedule.prediction;
    let obj = pr.solver.as_ref().expect("solver report").objective.0;
    let sim = pr.step_time.0;
    assert!((sim - obj).abs() <= 0.02 * sim, "{what}: simulated {sim} s vs solver objective {obj} s");
    assert!(pr.peak_device() <= plan.schedule.budget, "{what}: peak {} over budget {}", pr.peak_device(), plan.schedule.budget);
}

#[test]
fn gpt3_2_7b_batch2_seq2048_fits_24gib_on_h100() {
    let hw = h100();
    let cfg = config("gpt3-2.7b").with_shape(Some(2), Some(2048), None).unwrap();
    let p = Program::build(&cfg);
    let budget = Bytes::gib(24.0);
    let plan = plan(&p, &hw, budget, &quick()).unwrap();
    assert_agrees(&plan, "gpt3-2.7b @ 24GiB");
    // It really had to move things: all on the GPU needs far more.
    assert!(all_gpu_device_peak(&p, &hw) > Bytes::gib(40.0));
    // The budget holds under any timing, not only the simulated one.
    let (worst, _) = planner::simulate::worst_case_peak(&p, &hw, &plan.schedule).unwrap();
    assert!(worst + hw.fixed_overhead <= budget, "worst-case peak {worst}");
}

#[test]
fn solver_objective_agrees_with_simulator_on_every_shipped_config() {
    let hw = h100();
    let mut n = 0;
    for e in std::fs::read_dir(root().join("models/configs")).unwrap() {
        let path = e.unwrap().path();
        let cfg = GptConfig::load(&path).unwrap();
        let p = Program::build(&cfg);
        let floor = feasible_floor(&p, &hw);
        let top = all_gpu_device_peak(&p, &hw);
        // A budget that binds: between the floor and everything on the GPU, at most the card.
        let budget = Bytes(((floor.0 as f64 * 0.6 + top.0 as f64 * 0.4) as u64).min(hw.memory.0.max(floor.0)));
        let plan = plan(&p, &hw, budget, &quick()).unwrap_or_else(|e| panic!("{}: {e}", cfg.name));
        assert_agrees(&plan, &format!("{} @ {budget}", cfg.name));
        n += 1;
    }
    assert!(n >= 9);
}

#[test]
fn infeasible_budget_names_the_floor() {
    let hw = h100();
    let p = Program::build(&config("gpt3-2.7b"));
    let floor = feasible_floor(&p, &hw);
    let below = Bytes(floor.0 - (64 << 20));
    match plan(&p, &hw, below, &quick()) {
        Err(PlanError::Infeasible { budget, floor: f, reason }) => {
            assert_eq!(budget, below);
            assert_eq!(f, floor);
            assert!(reason.contains("largest single op"), "{reason}");
        }
        other => panic!("expected Infeasible, got {:?}", other.map(|p| p.schedule.prediction)),
    }
    // At the floor itself a plan exists.
    let at = plan(&p, &hw, floor, &quick()).unwrap();
    assert!(at.schedule.prediction.peak_device() <= floor);
}

fn tiny_one_layer() -> GptConfig {
    GptConfig {
        name: "one-layer".into(),
        layers: 1,
        hidden: 64,
        heads: 4,
        vocab: 1000,
        padded_vocab: 1024,
        max_seq: 64,
        batch: 2,
        seq: 64,
        tied_embeddings: true,
        attention: Attention::Materialized,
        precision: Precision::default(),
        output_chunks: 1,
    }
}

/// Every combination of choices of a one-layer model, each emitted and simulated.
#[test]
fn milp_equals_exhaustive_search_on_a_tiny_model() {
    let mut hw = h100();
    // No room beyond live bytes (slack, the pool's rounding, the pinned-memory mapping): the
    // solver then sees the budget itself, and its optimum is what exhaustive search finds.
    hw.pool_slack = Bytes::ZERO;
    hw.pool_slack_fraction = 0.0;
    hw.pool_reserve_granularity = Bytes::ZERO;
    hw.pinned_device_fraction = 0.0;
    // A slow link so that placement matters for time.
    hw.h2d.0 /= 1000.0;
    hw.d2h.0 /= 1000.0;
    hw.h2d_duplex.0 /= 1000.0;
    hw.d2h_duplex.0 /= 1000.0;
    let p = Program::build(&tiny_one_layer());
    let floor = feasible_floor(&p, &hw);
    let top = all_gpu_device_peak(&p, &hw);
    for frac in [0.3, 0.7] {
        let budget = Bytes(floor.0 + ((top.0 - floor.0) as f64 * frac) as u64);
        let owners = p.inventory.owners();
        let choices: Vec<Vec<OwnerChoice>> = owners.iter().map(|o| OwnerChoice::all(&p, *o)).collect();
        let acts = ActChoice::all();
        let model = StageModel::new(&p, &hw);
        // The capacity plan() gives the solver (room for the pinned memory's mapping taken off).
        let cap = model.capacity(planner::plan::solver_budget(&model, budget));
        let mut best: Option<(f64, Decisions)> = None;
        let mut best_model: Option<f64> = None;
        let mut count = 0;
        let total: usize = choices.iter().map(Vec::len).product::<usize>() * acts.len();
        for idx in 0..total {
            let mut rest = idx;
            let mut d = Decisions::all_gpu(&p);
            for (o, cs) in owners.iter().zip(&choices) {
                d.set_owner(*o, cs[rest % cs.len()]);
                rest /= cs.len();
            }
            d.layers[0] = acts[rest % acts.len()];
            let mut s = planner::emit::emit(&p, &hw, &d, budget).unwrap();
            s.budget = Bytes(u64::MAX / 4);
            let trace = simulate(&p, &hw, &s).unwrap_or_else(|e| panic!("{d:?}: {e}"));
            count += 1;
            let e = model.evaluate(&d);
            if e.peak.0 <= cap && best_model.is_none_or(|t| e.step_time.0 < t) {
                best_model = Some(e.step_time.0);
            }
            // Fits as the planner counts it: the pool peak within the capacity the budget leaves.
            if trace.peak_allocated.0 <= cap && best.as_ref().is_none_or(|(t, _)| trace.step_time.0 < *t) {
                best = Some((trace.step_time.0, d));
            }
        }
        assert_eq!(count, total);
        let (best_time, _) = best.expect("something fits above the floor");
        let opts = PlanOptions { time_limit: Seconds(30.0), mip_rel_gap: 0.0, threads: 1 };
        let plan = plan(&p, &hw, budget, &opts).unwrap();
        // Exactly the optimum of the model it solves...
        let objective = plan.schedule.prediction.solver.as_ref().unwrap().objective.0;
        let best_model = best_model.unwrap();
        assert!((objective - best_model).abs() <= 1e-6 * best_model, "budget {budget}: MILP {objective} vs exhaustive {best_model}");
        // ...and, simulated, within 0.1% of the best simulated plan (the model approximates
        // host-work chains and a copy that waits for the host).
        let got = plan.schedule.prediction.step_time.0;
        assert!(got <= best_time * 1.001, "budget {budget}: MILP plan simulates to {got} vs exhaustive {best_time}");
    }
}

#[test]
fn plan_is_never_slower_than_a_heuristic_that_fits() {
    let hw = h100();
    let p = Program::build(&config("gpt2-124m"));
    let floor = feasible_floor(&p, &hw);
    let top = all_gpu_device_peak(&p, &hw);
    let mut compared = 0;
    for frac in [0.2, 0.5, 0.8, 1.0] {
        let budget = Bytes(floor.0 + ((top.0 - floor.0) as f64 * frac) as u64);
        let plan = plan(&p, &hw, budget, &quick()).unwrap();
        let ours = plan.schedule.prediction.step_time.0;
        for h in Heuristic::ALL {
            if h == Heuristic::ModuleQueue && p.config.output_chunks != 4 {
                // Planned on its own 4-chunk program; compared below on a 4-chunk config.
            }
            if let Ok(s) = heuristic_schedule(h, &p, &hw, budget) {
                assert!(
                    ours <= s.prediction.step_time.0 * (1.0 + 1e-9),
                    "{budget}: plan {ours} slower than {h:?} {}",
                    s.prediction.step_time.0
                );
                compared += 1;
            }
        }
    }
    assert!(compared >= 8, "only {compared} heuristic plans fit");
}

#[test]
fn every_heuristic_schedule_simulates_cleanly() {
    let hw = h100();
    let p = Program::build(&config("gpt2-tiny"));
    for h in Heuristic::ALL {
        let s = heuristic_schedule(h, &p, &hw, Bytes::gib(80.0)).unwrap();
        assert!(s.prediction.step_time.0 > 0.0, "{h:?}");
    }
}
