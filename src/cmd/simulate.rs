//! `offplan simulate SCHEDULE`: event-simulate a schedule on its hardware profile, check
//! invariants 1 and 2, and print what one step does.

use anyhow::Context;
use models::figures::{MemoryFigures, PlanFigures, StepBreakdown};
use models::schedule::Prediction;
use models::trace::Trace;
use models::{Bytes, Program, Schedule, Seconds};
use planner::simulate::worst_case_peak;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Schedule file (written by `offplan plan`).
    #[arg(value_name = "SCHEDULE")]
    pub schedule: PathBuf,
    /// Hardware profile (default: models/hardware/<the schedule's hardware>.ron).
    #[arg(long, value_name = "PATH")]
    pub hardware: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Report {
    schedule: String,
    model: String,
    hardware: String,
    actions: usize,
    step_time_s: f64,
    peak_allocated_bytes: u64,
    fixed_overhead_bytes: u64,
    peak_device_bytes: u64,
    peak_at: String,
    peak_action: usize,
    peak_time_s: f64,
    worst_case_peak_allocated_bytes: u64,
    budget_bytes: u64,
    budget_holds: bool,
    compute_time_s: f64,
    h2d_bytes: u64,
    d2h_bytes: u64,
    h2d_time_s: f64,
    d2h_time_s: f64,
    exposed_transfer_s: f64,
    hidden_transfer_s: f64,
    planned_step_time_s: f64,
    planned_peak_allocated_bytes: u64,
    /// Bytes of the arena the executor lays every tensor out in (models::arena); None when the
    /// schedule cannot be laid out statically.
    arena_bytes: Option<u64>,
    /// Pinned host memory the schedule holds, and what the profile lets a run pin (None: no
    /// limit stated).
    pinned_host_bytes: u64,
    host_pinnable_bytes: Option<u64>,
    /// The figures today's model predicts otherwise than the file stores ("what: stored -> today").
    stored_prediction_differs: Vec<String>,
    simulate_seconds: f64,
    /// Live peak, arena, device, headroom and host memory, as every output names them.
    memory: MemoryJson,
    /// The step's parts (they sum to `step_time_s`), as every output names them.
    step: StepJson,
    /// The training setup the schedule carries (AdamW and its learning-rate schedule, with
    /// where each value came from).
    setup: models::TrainingSetup,
}

/// `models::figures::MemoryFigures` in bytes.
#[derive(Serialize)]
struct MemoryJson {
    live_peak_bytes: u64,
    arena_bytes: u64,
    fixed_overhead_bytes: u64,
    pool_rounding_bytes: u64,
    pinned_mapping_bytes: u64,
    device_bytes: u64,
    budget_bytes: u64,
    /// Budget less device: negative when over the budget.
    headroom_bytes: i128,
    host_memory_bytes: u64,
}

impl MemoryJson {
    fn of(m: &MemoryFigures) -> MemoryJson {
        MemoryJson {
            live_peak_bytes: m.live_peak.0,
            arena_bytes: m.arena.0,
            fixed_overhead_bytes: m.fixed_overhead.0,
            pool_rounding_bytes: m.pool_rounding.0,
            pinned_mapping_bytes: m.pinned_mapping.0,
            device_bytes: m.device.0,
            budget_bytes: m.budget.0,
            headroom_bytes: m.headroom(),
            host_memory_bytes: m.host_memory.0,
        }
    }
}

/// `models::figures::StepBreakdown` in seconds.
#[derive(Serialize)]
struct StepJson {
    step_time_s: f64,
    compute_busy_s: f64,
    /// Part of `compute_busy_s`.
    recompute_s: f64,
    waiting_on_h2d_s: f64,
    waiting_on_d2h_s: f64,
    waiting_on_host_s: f64,
    waiting_on_launches_s: f64,
    after_compute_s: f64,
}

impl StepJson {
    fn of(b: &StepBreakdown) -> StepJson {
        StepJson {
            step_time_s: b.step.0,
            compute_busy_s: b.compute_busy.0,
            recompute_s: b.recompute.0,
            waiting_on_h2d_s: b.waiting_on_h2d.0,
            waiting_on_d2h_s: b.waiting_on_d2h.0,
            waiting_on_host_s: b.waiting_on_host.0,
            waiting_on_launches_s: b.waiting_on_launches.0,
            after_compute_s: b.after_compute.0,
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let schedule = Schedule::load(&args.schedule)?;
    let hw = super::schedule_hardware(args.hardware.as_deref(), &schedule)?;
    let program = Program::for_setup(&schedule.model, &schedule.setup);
    schedule.check_digest(&models::digest::program_digest(&program), &args.schedule)?;
    let started = Instant::now();
    let checked = planner::check_schedule(&program, &hw, &schedule).with_context(|| format!("refusing {}", args.schedule.display()))?;
    let holds = checked.over_budget.is_none();
    let took = started.elapsed().as_secs_f64();
    let (worst, _) = worst_case_peak(&program, &hw, &schedule)?;
    let figures = checked.figures(&hw, &schedule);
    let p = checked.today;
    let mut report = report(&args.schedule, &schedule, &hw.name, &checked.trace, &p, &figures, worst, holds, took);
    report.host_pinnable_bytes = hw.host_pinnable.map(|b| b.0);
    report.stored_prediction_differs = checked.differences.clone();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        if !checked.differences.is_empty() {
            println!(
                "note: today's model predicts otherwise than this file stores ({}); the figures below are today's",
                checked.differences.join("; ")
            );
        }
        print_table(&report, &p, &schedule, &figures);
    }
    if !holds {
        anyhow::bail!(
            "the schedule's live peak {} + {} fixed overhead is over its budget {} (device {})",
            p.peak_allocated,
            p.fixed_overhead,
            schedule.budget,
            p.peak_device()
        );
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn report(
    path: &Path,
    s: &Schedule,
    hw: &str,
    t: &Trace,
    p: &Prediction,
    figures: &PlanFigures,
    worst: Bytes,
    holds: bool,
    took: f64,
) -> Report {
    let lane_time = |k: models::trace::SpanKind| t.spans.iter().filter(|x| x.kind == k).map(|x| (x.end - x.start).0).sum::<f64>() + 0.0;
    Report {
        schedule: path.display().to_string(),
        model: s.model.name.clone(),
        hardware: hw.to_string(),
        actions: s.actions.len(),
        step_time_s: p.step_time.0,
        peak_allocated_bytes: p.peak_allocated.0,
        fixed_overhead_bytes: p.fixed_overhead.0,
        peak_device_bytes: p.peak_device().0,
        peak_at: p.peak_at.clone(),
        peak_action: p.peak_action,
        peak_time_s: t.peak_time.0,
        worst_case_peak_allocated_bytes: worst.0,
        budget_bytes: s.budget.0,
        budget_holds: holds,
        compute_time_s: p.compute_time.0,
        h2d_bytes: p.h2d_bytes.0,
        d2h_bytes: p.d2h_bytes.0,
        h2d_time_s: lane_time(models::trace::SpanKind::Prefetch),
        d2h_time_s: lane_time(models::trace::SpanKind::Evict),
        exposed_transfer_s: p.exposed_transfer.0,
        hidden_transfer_s: p.hidden_transfer.0,
        planned_step_time_s: s.prediction.step_time.0,
        planned_peak_allocated_bytes: s.prediction.peak_allocated.0,
        arena_bytes: p.arena.map(|a| a.0),
        pinned_host_bytes: p.pinned_host.0,
        host_pinnable_bytes: None,
        stored_prediction_differs: Vec::new(),
        simulate_seconds: took,
        memory: MemoryJson::of(&figures.memory),
        step: StepJson::of(&figures.step),
        setup: s.setup.clone(),
    }
}

fn print_table(r: &Report, p: &Prediction, s: &Schedule, figures: &PlanFigures) {
    let secs = |x: f64| Seconds(x).to_string();
    println!("{} on {} — {} ({} actions), simulated in {}", r.model, r.hardware, r.schedule, r.actions, secs(r.simulate_seconds));
    for l in figures.memory.lines() {
        println!("  {l}");
    }
    println!("  {:<17}{:>12}  into the step, action {}", "live peak reached", secs(r.peak_time_s), r.peak_action);
    println!(
        "  {:<17}{:>12}  live, the most any timing the waits allow can reach",
        "worst timing",
        Bytes(r.worst_case_peak_allocated_bytes).to_string()
    );
    for l in figures.step.lines() {
        println!("  {l}");
    }
    if (s.prediction.step_time.0 - r.step_time_s).abs() > 1e-9 * r.step_time_s.abs() {
        println!("  (the file's planned step time: {})", s.prediction.step_time);
    }
    println!("  {:<17}{:>12}  in {}", "host -> device", p.h2d_bytes.to_string(), secs(r.h2d_time_s));
    println!("  {:<17}{:>12}  in {}", "device -> host", p.d2h_bytes.to_string(), secs(r.d2h_time_s));
    println!(
        "  {:<17}{:>12}  waiting on H2D + waiting on D2H; hidden {}",
        "transfer exposed",
        secs(r.exposed_transfer_s),
        secs(r.hidden_transfer_s)
    );
    let worst_device = Bytes(r.worst_case_peak_allocated_bytes) + p.fixed_overhead;
    let verdict = if !r.budget_holds {
        "DOES NOT HOLD".to_string()
    } else if !figures.memory.fits() {
        format!("the live tensors fit under any timing, but the device figure is {}", figures.memory.headroom_words())
    } else if worst_device > s.budget {
        format!("holds as simulated, but some timing could reach {worst_device}")
    } else {
        "holds under any timing".to_string()
    };
    println!("  {:<17}{:>12}  {verdict}", "budget", s.budget.to_string());
    println!("  training setup (its clipping is part of the step simulated):");
    for l in s.setup.lines() {
        println!("    {l}");
    }
}
