//! Gradient accumulation planned and simulated: K micro-batches are K passes of one in time and
//! in what each decision moves, the gradients are kept between them, and the solver's three-pass
//! model stands for any K.

use models::program::Clipping;
use models::{Bytes, GptConfig, HardwareProfile, Program, Seconds};
use planner::strategy::{parse_strategy, strategy_decisions, strategy_plan};
use planner::*;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}
fn h200() -> HardwareProfile {
    HardwareProfile::load(&root().join("models/hardware/h200.ron")).unwrap()
}
fn config(name: &str) -> GptConfig {
    GptConfig::load(&root().join(format!("models/configs/{name}.ron"))).unwrap()
}
fn program(name: &str, k: u32) -> Program {
    Program::build_accumulating(&config(name), Clipping::GlobalNorm, k)
}
fn under(p: &Program, strategy: &str) -> Plan {
    strategy_plan(p, &h200(), Bytes::UNLIMITED, strategy, &parse_strategy(strategy).unwrap()).unwrap()
}

#[test]
fn each_pass_moves_what_its_decisions_say_and_the_gradients_go_to_the_host_once() {
    let (one, three) = (program("gpt2-tiny", 1), program("gpt2-tiny", 3));
    let grads: u64 = one.inventory.owners().iter().map(|o| one.inventory.tensor(one.inventory.params(*o).grads).bytes.0).sum();
    for strategy in ["keep-all", "stream-weights", "host-optimizer", "offload-all", "recompute-all", "stream-weights,host-optimizer"] {
        let (a, b) = (under(&one, strategy), under(&three, strategy));
        let (pa, pb) = (&a.schedule.prediction, &b.schedule.prediction);
        // Its own schedule checks out against the program of three passes.
        check_schedule(&three, &h200(), &b.schedule).unwrap_or_else(|e| panic!("{strategy}: {e}"));
        // Three passes of compute, one set of updates: under three steps' time; where compute
        // is most of the step, over two.
        let (ta, tb) = (pa.step_time.0, pb.step_time.0);
        assert!(tb > ta && tb < 3.0 * ta, "{strategy}: {tb} s for three micro-batches, {ta} s for one");
        if strategy == "keep-all" {
            assert!(tb > 2.0 * ta, "{tb} s for three micro-batches, {ta} s for one");
        }
        // Memory: the gradients are kept from the first backward on, so the peak grows by at
        // most their bytes (and never shrinks).
        assert!(pb.peak_allocated >= pa.peak_allocated, "{strategy}");
        assert!(pb.peak_allocated.0 <= pa.peak_allocated.0 + grads, "{strategy}: {} vs {}", pb.peak_allocated, pa.peak_allocated);
    }
    // Streamed weights come in for every pass; host-updated gradients go to the host once.
    let h2d = |p: &Plan| p.schedule.prediction.h2d_bytes.0 as f64;
    let d2h = |p: &Plan| p.schedule.prediction.d2h_bytes.0 as f64;
    let (sa, sb) = (under(&one, "stream-weights"), under(&three, "stream-weights"));
    // Each pass brings them in for its forward and its backward, the update once more: 2K + 1
    // loads against 3.
    let ratio = h2d(&sb) / h2d(&sa);
    assert!((ratio - 7.0 / 3.0).abs() < 0.01, "streamed weights: {ratio} times the bytes in for three micro-batches");
    let (ha, hb) = (under(&one, "host-optimizer"), under(&three, "host-optimizer"));
    assert_eq!(d2h(&ha), d2h(&hb), "the summed gradients go to the host once");
    // Offloaded activations go out and come back in every pass.
    let (oa, ob) = (under(&one, "offload-all"), under(&three, "offload-all"));
    assert!((d2h(&ob) / d2h(&oa) - 3.0).abs() < 0.05, "{} vs {}", d2h(&ob), d2h(&oa));
}

#[test]
fn the_three_pass_model_prices_any_number_of_micro_batches_as_the_full_program() {
    let hw = h200();
    for (name, k) in [("gpt2-tiny", 7), ("gpt3-125m", 5)] {
        let full = program(name, k);
        let three = StageModel::solving_program(&full).expect("more than three passes are solved on three");
        assert_eq!(three.micro_batches, 3);
        let (exact, standing) = (StageModel::new(&full, &hw), StageModel::repeating(&three, &hw, k));
        let untied = !full.config.tied_embeddings;
        let strategies = ["keep-all", "stream-weights,host-optimizer", "offload-all", "recompute-all", "cpu-embedding,stream-output"];
        for strategy in strategies.into_iter().filter(|s| untied || !s.contains("cpu-embedding")) {
            let d = strategy_decisions(&full, &parse_strategy(strategy).unwrap()).unwrap();
            let (e, s) = (exact.evaluate(&d), standing.evaluate(&d));
            let rel = (s.step_time.0 - e.step_time.0).abs() / e.step_time.0;
            assert!(rel < 1e-9, "{name} K {k} {strategy}: {} s standing for {} s", s.step_time, e.step_time);
            assert_eq!(s.peak, e.peak, "{name} K {k} {strategy}");
            assert_eq!(s.pinned, e.pinned, "{name} K {k} {strategy}");
        }
    }
    assert!(StageModel::solving_program(&program("gpt2-tiny", 3)).is_none());
}

#[test]
fn the_planner_amortises_the_update_over_micro_batches() {
    // gpt3-6.7b at batch 1 under 24 GiB on the H200: host AdamW of 6.9B parameters dominates a
    // step of one micro-batch; over 32 the plan spends far less per token.
    let hw = h200();
    let opts = SolveOptions::new().with_time_limit(Seconds(30.0)).unwrap();
    let cfg = config("gpt3-6.7b").with_shape(Some(1), None, None).unwrap();
    let per_token = |k: u32| {
        let p = Program::build_accumulating(&cfg, Clipping::GlobalNorm, k);
        let plan = plan(&p, &hw, Bytes::gib(24.0), &opts).unwrap();
        assert!(plan.schedule.prediction.peak_device() <= Bytes::gib(24.0));
        let objective = plan.schedule.prediction.solver.as_ref().unwrap().objective.0;
        let simulated = plan.schedule.prediction.step_time.0;
        assert!((objective - simulated).abs() <= 0.05 * simulated, "K {k}: solver {objective} s, simulated {simulated} s");
        simulated / p.tokens_per_step() as f64
    };
    let (one, many) = (per_token(1), per_token(32));
    assert!(many < 0.3 * one, "{many} s per token over 32 micro-batches, {one} over one");
}

#[test]
fn tokens_per_step_chooses_the_fastest_micro_batch_size_that_fits() {
    let hw = h200();
    let cfg = config("gpt3-125m");
    let opts = SolveOptions::new().with_time_limit(Seconds(20.0)).unwrap();
    let tokens = 64 * cfg.seq as u64;
    let (plan, program, choices) = plan_tokens(&cfg, Clipping::GlobalNorm, tokens, &hw, Bytes::gib(2.0), &opts).unwrap();
    assert_eq!(program.tokens_per_step(), tokens);
    let sizes: Vec<(u32, u32)> = choices.iter().map(|c| (c.batch, c.micro_batches)).collect();
    assert_eq!(sizes, vec![(1, 64), (2, 32), (4, 16), (8, 8), (16, 4), (32, 2), (64, 1)]);
    // The chosen one is the fastest the search priced, and its plan fits.
    let fastest =
        choices.iter().filter(|c| c.step.is_ok()).min_by(|a, b| a.step.as_ref().unwrap().0.total_cmp(&b.step.as_ref().unwrap().0)).unwrap();
    assert_eq!((program.config.batch, program.micro_batches), (fastest.batch, fastest.micro_batches));
    assert!(plan.schedule.prediction.peak_device() <= Bytes::gib(2.0));
    // Something did not fit 2 GiB (all 64 sequences at once), and said why.
    assert!(choices.iter().any(|c| c.step.as_ref().is_err_and(|e| e.contains("floor"))), "{choices:?}");
    // A count of tokens no B x K x T makes is refused, naming the flag.
    let e = plan_tokens(&cfg, Clipping::GlobalNorm, tokens + 1, &hw, Bytes::gib(2.0), &opts).err().unwrap().to_string();
    assert!(e.contains("--tokens-per-step") && e.contains("not a multiple of the sequence length"), "{e}");
}
