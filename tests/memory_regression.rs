//! The memory regression suite (DESIGN.md invariant 4): every run record in reports/records is
//! planned again with today's code (its config, its hardware profile, its budget, its block
//! decisions), simulated, and held to what the run measured: the pool peak within 1%, the step
//! time within 10% where the record has measured lane times. A failure lists every case outside
//! target, worst first, each broken into the model's terms (pool peak, pool granularity, fixed
//! overhead; compute, H2D, D2H, host and compute-wait time), so it says which term is off.
//! It also holds offload to "never changes the numbers": losses against the all-on-GPU record
//! of the same setup.
//!
//! Needs no GPU. `live_records_on_the_gpu` (ignored by default) re-runs the all-on-GPU cases on
//! a GPU where one is present: `cargo test --test memory_regression -- --ignored`.

use models::{Bytes, HardwareProfile, Program};
use reports::calibration::{loss_mismatches, worst_first, Case, RePlan, LOSS_TOLERANCE, PEAK_TOLERANCE, STEP_TOLERANCE};
use reports::record::{load_dir, Record, ALL_ON_GPU};
use std::path::{Path, PathBuf};

/// Records whose step time the model is known to miss, with the reason. Their pool peak is held
/// to target like every other record's; their step time must still be outside target, so that
/// a fix of the model has to take them off this list.
const RUN56_INSTANCE: &str = "device runs 5 and 6 ran on a machine slower than the one the profile was calibrated on (run 8): the host lane 7-31% and the D2H lane 7-17% over the model with host sharing; the same schedules on run 7's and run 8's machines are within target (gpt3-2.7b@24GiB -5.4% and -0.9%, gpt3-6.7b@40GiB -8.6% and +1.6%)";
const HOST_LANE_NOISE: &str = "gpt2-124m@1.65GiB is bound by its host lane (host AdamW of 7 M parameters per layer): host work ran 22-48% over the model in these runs, and one schedule on one machine measured 46.9 and 57.1 ms minutes apart (run 7); six other runs of it (runs 4, 6, 7, 8) are within target (+6.4% to -8.0%)";
const KNOWN_STEP_MISSES: &[(&str, &str)] = &[
    ("run-gpt2-124m-nvidia-h100-80gb-hbm3-1795459954.ron", HOST_LANE_NOISE),
    ("run-gpt2-124m-nvidia-h100-80gb-hbm3-1795460534.ron", HOST_LANE_NOISE),
    ("run-gpt2-124m-nvidia-h100-80gb-hbm3-1795460548.ron", HOST_LANE_NOISE),
    ("run-gpt2-124m-nvidia-h100-80gb-hbm3-1795468911.ron", HOST_LANE_NOISE),
    ("run-gpt3-2.7b-nvidia-h100-80gb-hbm3-1795460032.ron", RUN56_INSTANCE),
    ("run-gpt3-2.7b-nvidia-h100-80gb-hbm3-1795460635.ron", RUN56_INSTANCE),
    ("run-gpt3-2.7b-nvidia-h100-80gb-hbm3-1795460711.ron", RUN56_INSTANCE),
    ("run-gpt3-6.7b-nvidia-h100-80gb-hbm3-1795460249.ron", RUN56_INSTANCE),
    ("run-gpt3-2.7b-nvidia-h100-80gb-hbm3-1795460358.ron", RUN56_INSTANCE),
    (
        "run-gpt3-2.7b-nvidia-h100-80gb-hbm3-1795450092.ron",
        "pool-allocator run of the second session, on the machine of the gpt3-1.3b run below: the H2D lane 13.5% and the D2H lane 8.3% slower than calibrated, the compute lane within 2.3% since each op counts the parameter views it touches (before, the whole layer's weights and gradients, which priced the compute lane high and hid the slow copies)",
    ),
    (
        "run-gpt3-1.3b-nvidia-h100-80gb-hbm3-1795450183.ron",
        "pool-allocator run of the second session: both copy lanes 11-14% slower than calibrated on that machine (H2D 520 vs 446 ms); the same config at the same budget on run 8's machine is within target (-4.4%)",
    ),
    (
        "run-gpt3-125m-nvidia-h100-80gb-hbm3-1795448560.ron",
        "CPU embedding: the host lane ran 20.8 ms against 9.8 ms predicted; the executor of the time zeroed the untied table gradient (77 MB) on one thread, which the cost model does not count (fixed since: the same strategy in run 4 is within target)",
    ),
    (
        "run-gpt3-125m-nvidia-h100-80gb-hbm3-1795448592.ron",
        "host AdamW and the CPU embedding while every layer's activations stream both ways, with the single-threaded zeroing above: the host lane ran 81 ms against 37 ms predicted; the same strategy in runs 4 and 7 is within target (+0.4%, -3.2%)",
    ),
];

/// The budget a record without one (an all-on-GPU run) is re-planned under: no limit.
const NO_BUDGET: Bytes = Bytes::UNLIMITED;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn records() -> Vec<(String, Record)> {
    let all = load_dir(&root().join("reports/records")).unwrap_or_else(|e| panic!("{e}"));
    all.into_iter().map(|(p, r): (PathBuf, Record)| (p.file_name().unwrap().to_string_lossy().into_owned(), r)).collect()
}

fn hardware(record: &Record) -> Result<HardwareProfile, String> {
    let path = root().join("models/hardware").join(format!("{}.ron", record.hardware_name()));
    HardwareProfile::load(&path).map_err(|e| format!("hardware profile {}: {e}", path.display()))
}

/// Today's plan of the record, against what it measured.
fn case_of(file: &str, record: &Record) -> Case {
    let replan = |r: &Record, hw: &HardwareProfile| -> Result<RePlan, String> {
        let budget = r.budget_bytes.map_or(NO_BUDGET, Bytes);
        let (plan, over_budget) = planner::replan_uncapped(&r.program(), hw, budget, &r.decisions).map_err(|e| e.to_string())?;
        Ok(RePlan { prediction: plan.schedule.prediction, trace: plan.trace, over_budget })
    };
    Case::of_record(file, record, &root().join("models/hardware"), &replan)
}

#[test]
fn every_record_is_predicted_within_target() {
    let records = records();
    assert!(!records.is_empty(), "no records in reports/records");
    let cases = worst_first(records.iter().map(|(f, r)| case_of(f, r)).collect());
    let known = |c: &Case| KNOWN_STEP_MISSES.iter().any(|(f, _)| *f == c.file);
    for c in cases.iter().filter(|c| known(c)) {
        let why = KNOWN_STEP_MISSES.iter().find(|(f, _)| *f == c.file).map(|(_, w)| *w).unwrap_or_default();
        eprintln!("known step-time miss ({why}):\n{}", c.explain());
        assert!(c.error.is_none() && c.over_budget.is_none() && c.peak_error().abs() <= PEAK_TOLERANCE, "{}", c.explain());
        assert!(
            c.step_checked() && c.step_error().abs() > STEP_TOLERANCE,
            "{} is now within target: take it off KNOWN_STEP_MISSES",
            c.file
        );
    }
    let failing: Vec<&Case> = cases.iter().filter(|c| !c.passes() && !known(c)).collect();
    let checked_steps = cases.iter().filter(|c| c.step_checked()).count();
    eprintln!(
        "{} records ({} with measured lane times), {} within target (pool peak {:.0}%, step {:.0}%), {} known step-time misses",
        cases.len(),
        checked_steps,
        cases.iter().filter(|c| c.passes()).count(),
        100.0 * PEAK_TOLERANCE,
        100.0 * STEP_TOLERANCE,
        KNOWN_STEP_MISSES.len()
    );
    assert!(
        failing.is_empty(),
        "{} of {} records are outside target, worst first (re-run `offplan report reports/records --out DIR` for the table):\n{}",
        failing.len(),
        cases.len(),
        failing.iter().map(|c| c.explain()).collect::<Vec<_>>().join("\n")
    );
    // The suite can fail: a pool peak 2% off is caught, and the pool term is named.
    let mut off = cases[0].clone();
    off.predicted_pool = off.measured_pool + off.measured_pool / 50;
    assert!(!off.passes() && off.terms_off().starts_with("pool peak"), "{}", off.explain());
}

/// The budget holds on the device. For every record, the device memory outside the pool (device
/// peak less what the pool reserved) is the profile's fixed overhead and the mapping of the
/// schedule's pinned host memory, within its `pool_slack`;
/// for every run that laid its tensors out in an arena, the device peak is within the budget.
/// Runs on the stream-ordered pool alone could exceed it by the pool's fragmentation (reserved
/// less used), which is why the executor takes an arena: they are counted, not held.
#[test]
fn every_recorded_device_peak_fits_the_planners_allowance() {
    let mut wrong = Vec::new();
    let (mut arena_runs, mut pool_over) = (0, Vec::new());
    for (file, r) in records() {
        let hw = hardware(&r).unwrap_or_else(|e| panic!("{file}: {e}"));
        // The pinned host memory the schedule needs, whose mapping takes device memory.
        let pinned = match r.budget_bytes {
            Some(b) => planner::replan_record(&r.program(), &hw, Bytes(b), &r.decisions)
                .map(|p| p.schedule.prediction.pinned_host)
                .unwrap_or_else(|e| panic!("{file}: {e}")),
            None => Bytes::ZERO,
        };
        let allowed = hw.device_bytes(Bytes::ZERO, pinned) + hw.pool_slack;
        let outside = r.measured.device_bytes.saturating_sub(r.measured.reserved_bytes);
        if outside > allowed.0 {
            wrong.push(format!(
                "{file}: {} outside the pool, above the fixed overhead, the mapping of {pinned} pinned and the slack: {allowed}",
                Bytes(outside)
            ));
        }
        let Some(budget) = r.budget_bytes else { continue };
        if r.used_arena() {
            arena_runs += 1;
            if r.measured.device_bytes > budget {
                wrong.push(format!(
                    "{file}: an arena run used {} on the device, above its budget {}",
                    Bytes(r.measured.device_bytes),
                    Bytes(budget)
                ));
            }
        } else if r.measured.device_bytes > budget {
            pool_over.push(format!(
                "{file}: {} over (the pool reserved {} beyond what it handed out)",
                Bytes(r.measured.device_bytes - budget),
                Bytes(r.measured.reserved_bytes - r.measured.allocated_bytes)
            ));
        }
    }
    eprintln!("{arena_runs} arena runs held to their budget; {} pool runs over theirs:\n{}", pool_over.len(), pool_over.join("\n"));
    assert!(wrong.is_empty(), "device peaks outside the planner's allowance:\n{}", wrong.join("\n"));
}

/// A record with probes is judged replayed under them: its step predicted with the probed
/// rates, the shipped profile's prediction kept beside it, held to 5%, and refused as noisy when
/// the step replayed under its start probe and under its end probe differ by more than 5%. No H200 record may be excused.
#[test]
fn probed_records_are_replayed_under_their_own_rates() {
    assert!(
        KNOWN_STEP_MISSES.iter().all(|(f, _)| !f.contains("h200")),
        "an H200 record is on the known-misses list: fix the model or run it again"
    );
    let (file, mut r) = records()
        .into_iter()
        .find(|(_, r)| r.measured_time.is_some() && r.budget_bytes.is_some() && r.measured_time.unwrap().h2d_ms > 0.0)
        .expect("a record with lane times and copies");
    let plain = case_of(&file, &r);
    let hw = hardware(&r).unwrap();
    // The machine's copies at half the profile's rates, its products as the profile says.
    let half = models::hardware::ProbeRates {
        h2d: models::BytesPerSecond(hw.h2d.0 / 2.0),
        d2h: models::BytesPerSecond(hw.d2h.0 / 2.0),
        h2d_duplex: models::BytesPerSecond(hw.h2d_duplex.0 / 2.0),
        d2h_duplex: models::BytesPerSecond(hw.d2h_duplex.0 / 2.0),
        matmul_flops: hw.matmul_flops,
        attention_flops: hw.attention_flops,
        host_adam_params_per_second: hw.host_adam_params_per_second,
        host_ops: None,
        issue: None,
        host_call: None,
        host_sharing: None,
        seconds: 0.5,
    };
    r.probe = Some(models::hardware::RunProbes { start: Some(half.clone()), end: Some(half.clone()) });
    let probed = case_of(&file, &r);
    assert!(probed.probed() && probed.step_tolerance() == 0.05);
    assert_eq!(probed.shipped_step_ms, Some(plain.predicted_time.step_ms), "the shipped profile's step is kept beside");
    assert!(
        probed.predicted_time.h2d_ms > 1.9 * plain.predicted_time.h2d_ms,
        "{} vs {}",
        probed.predicted_time.h2d_ms,
        plain.predicted_time.h2d_ms
    );
    assert_eq!(probed.probe_drift, Some(0.0));
    assert!(!probed.noisy());
    // Copies half as fast again at the end as at the start: the step replayed under each probe
    // differs by more than 5%, a noisy machine.
    let mut faster = half.clone();
    for r in [&mut faster.h2d, &mut faster.d2h, &mut faster.h2d_duplex, &mut faster.d2h_duplex] {
        r.0 *= 1.5;
    }
    r.probe = Some(models::hardware::RunProbes { start: Some(half), end: Some(faster) });
    let noisy = case_of(&file, &r);
    assert!(noisy.noisy() && !noisy.passes() && noisy.terms_off().contains("run it again"), "{}", noisy.explain());
}

#[test]
fn every_strategy_gives_the_losses_of_all_on_gpu() {
    let records = records();
    let named: Vec<(String, &Record)> = records.iter().map(|(f, r)| (f.clone(), r)).collect();
    let (pairs, issues) = loss_mismatches(&named);
    let others = records.iter().filter(|(_, r)| r.strategy_name() != ALL_ON_GPU).count();
    eprintln!("{pairs} records compared with an all-on-GPU record of the same setup ({others} records of other strategies)");
    assert!(issues.is_empty(), "losses differ by more than {LOSS_TOLERANCE:e} from all-on-GPU:\n{}", issues.join("\n"));
    // Every record whose setup matches an earlier all-on-GPU record was compared (the shipped
    // records repeat gpt2-124m and gpt3-1.3b runs, so there is at least one pair).
    assert!(pairs >= 1, "no two records share a setup");
}

/// On a GPU: runs every record's case again and holds the pool's high-water mark to today's
/// prediction (1%): each config of the all-on-GPU records for 2 steps, and each schedule record
/// planned again from its decisions and run for 1 step in an arena. OFFPLAN_LIVE_FILTER keeps the records whose file name
/// contains it. Where there is no GPU it says so and passes.
#[test]
#[ignore = "needs a GPU; cargo test --test memory_regression -- --ignored"]
fn live_records_on_the_gpu() {
    let filter = std::env::var("OFFPLAN_LIVE_FILTER").unwrap_or_default();
    let mut seen = Vec::new();
    let mut checked = 0;
    for (file, r) in records() {
        if !file.contains(&filter) {
            continue;
        }
        let all_gpu = r.strategy_name() == ALL_ON_GPU;
        let key = (r.config.clone(), r.decisions.clone(), r.budget_bytes);
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        let case = case_of(&file, &r);
        assert!(case.error.is_none() && case.over_budget.is_none(), "{}", case.explain());
        let program = r.program();
        let steps = if all_gpu { 2 } else { 1 };
        // Memory and time do not depend on the rate: a constant one, as the records' runs had.
        let setup = models::TrainingSetup::constant(&r.config, 3e-4);
        let opts = executor::RunOptions { steps, seed: 0, setup, export: None, peak_flops: r.peak_flops };
        let (predicted, run) = if all_gpu {
            (case.predicted_pool, executor::run_all_on_gpu(&program, &opts, &mut |_| {}))
        } else {
            let hw = hardware(&r).unwrap();
            let budget = r.budget_bytes.map_or(NO_BUDGET, Bytes);
            let plan = planner::replan_record(&program, &hw, budget, &r.decisions).unwrap_or_else(|e| panic!("{file}: {e}"));
            let run = executor::run_schedule(&program, &plan.schedule, &opts, executor::Allocator::Arena, &mut |_| {}).map(|s| s.run);
            (plan.schedule.prediction.tensor_bytes().0, run)
        };
        match run {
            Err(executor::ExecError::NoGpu(m)) => {
                eprintln!("skipped: no CUDA device ({m})");
                return;
            }
            Err(e) => panic!("{file}: {e}"),
            Ok(run) => {
                let err = reports::calibration::rel(predicted as f64, run.pool_used_high as f64);
                eprintln!(
                    "{file} live: pool peak {} predicted {predicted} ({:+.2}%), device {}",
                    run.pool_used_high,
                    100.0 * err,
                    run.device_used_high
                );
                assert!(
                    err.abs() <= PEAK_TOLERANCE,
                    "{file} live: predicted pool peak {predicted} vs measured {} ({:+.2}%)",
                    run.pool_used_high,
                    100.0 * err
                );
                // The device peak is not held here: the runs share one process, whose pool keeps
                // what earlier runs reserved (run 5 saw 5.7 GB for a 1.7 GB budget after
                // all-on-GPU runs). Each recorded run is a process of its own, and
                // every_recorded_device_peak_fits_the_planners_allowance holds those.
                checked += 1;
            }
        }
    }
    eprintln!("{checked} cases run live");
}

/// The suite on a v2 record with block decisions (host AdamW, recomputation, streamed layer
/// weights) whose measurement matched its prediction: it passes through the RON file, fails when
/// the measured pool peak is 3% higher (naming the pool term) and when the recorded budget is
/// below today's plan.
#[test]
fn a_v2_record_with_decisions_is_replanned_from_its_file() {
    use planner::ActChoice;
    use reports::record::{MemoryPeaks, StepRecord, StepTimes, RECORD_VERSION};
    let cfg = models::GptConfig::load(&root().join("models/configs/gpt3-1.3b.ron")).unwrap().with_shape(Some(1), Some(256), None).unwrap();
    let program = Program::build(&cfg);
    let hw = HardwareProfile::load(&root().join("models/hardware/h100-sxm.ron")).unwrap();
    let mut d = planner::Decisions::all_gpu(&program).with_optimizer(models::Placement::Host);
    d.layers.iter_mut().for_each(|a| *a = ActChoice::RECOMPUTE);
    let d = d.with_streamed_weights(|o| matches!(o, models::Owner::Layer(_)));
    let plan = planner::finish(&program, &hw, NO_BUDGET, &d, None).unwrap();
    let p = &plan.schedule.prediction;
    let peaks = MemoryPeaks { allocated_bytes: p.peak_allocated.0, reserved_bytes: p.peak_allocated.0, device_bytes: p.peak_device().0 };
    let times = StepTimes::predicted(p, &plan.trace);
    let record = Record {
        version: RECORD_VERSION,
        command: "offplan run --schedule s.ron".into(),
        config: cfg,
        schedule: "s.ron".into(),
        schedule_digest: plan.schedule.inventory_digest.clone(),
        device: "test".into(),
        driver: "test".into(),
        commit: "unknown".into(),
        unix_time: 0,
        predicted: peaks.clone(),
        measured: peaks,
        device_bytes_at_start: 0,
        peak_flops: 989e12,
        model_flops: program.model_flops().0,
        steps: vec![StepRecord { step: 1, loss: 11.0, lr: None, grad_norm: None, ms: times.step_ms, tokens_per_s: 1.0, mfu: 0.0 }],
        median_ms: times.step_ms,
        median_tokens_per_s: 1.0,
        notes: vec![],
        hardware: "h100-sxm".into(),
        budget_bytes: Some(p.peak_device().0 + (64 << 20)),
        strategy: "host-optimizer,recompute-all,stream-weights".into(),
        decisions: plan.schedule.decisions.clone(),
        predicted_time: Some(times),
        measured_time: Some(times),
        allocator: String::new(),
        startup: None,
        probe: None,
        clipping: Default::default(),
        training: None,
        op_times: Vec::new(),
        host_op_times: Vec::new(),
        issue_ms: None,
    };
    assert!(!record.decisions.is_empty());
    let dir = tempfile::tempdir().unwrap();
    let path = record.write(dir.path()).unwrap();
    let loaded = Record::load(&path).unwrap();
    assert_eq!(loaded, record);
    let case = case_of("v2.ron", &loaded);
    assert!(case.passes(), "{}", case.explain());
    assert_eq!(case.predicted_pool, p.peak_allocated.0);
    assert!(case.step_checked() && case.step_error().abs() < 1e-9);
    // Dropping the decisions (all on the GPU) changes the prediction: they were used.
    let mut all_gpu = loaded.clone();
    all_gpu.decisions.clear();
    assert!(case_of("g.ron", &all_gpu).predicted_pool > case.predicted_pool);
    // Measured 3% above the prediction: the pool term is named.
    let mut higher = loaded.clone();
    higher.measured.allocated_bytes += higher.measured.allocated_bytes * 3 / 100;
    let c = case_of("h.ron", &higher);
    assert!(!c.passes() && c.terms_off().starts_with("pool peak"), "{}", c.explain());
    // A recorded budget below today's plan: over budget, still broken into terms.
    let mut tight = loaded.clone();
    tight.budget_bytes = Some(p.peak_device().0 / 2);
    let c = case_of("t.ron", &tight);
    assert!(c.over_budget.is_some() && !c.passes() && c.explain().contains("pool peak"), "{}", c.explain());
    // Measured step 20% slower on the compute lane: the step and compute terms are named.
    let mut slow = loaded;
    let m = slow.measured_time.as_mut().unwrap();
    m.step_ms *= 1.25;
    m.compute_ms += m.step_ms * 0.2;
    let c = case_of("s.ron", &slow);
    assert!(!c.passes() && c.terms_off().contains("step time") && c.terms_off().contains("compute lane"), "{}", c.explain());
}
