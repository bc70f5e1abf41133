//! `offplan simulate SCHEDULE`: event-simulate a schedule on its hardware profile, check
//! invariants 1 and 2, and print what one step does.

use anyhow::Context;
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
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let schedule = Schedule::load(&args.schedule)?;
    let hw = super::schedule_hardware(args.hardware.as_deref(), &schedule)?;
    let program = Program::build(&schedule.model);
    schedule.check_digest(&models::digest::program_digest(&program), &args.schedule)?;
    let started = Instant::now();
    let checked = planner::check_schedule(&program, &hw, &schedule).with_context(|| format!("refusing {}", args.schedule.display()))?;
    let holds = checked.over_budget.is_none();
    let took = started.elapsed().as_secs_f64();
    let (worst, _) = worst_case_peak(&program, &hw, &schedule)?;
    let p = checked.today;
    let mut report = report(&args.schedule, &schedule, &hw.name, &checked.trace, &p, worst, holds, took);
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
        print_table(&report, &p, &schedule);
    }
    if !holds {
        anyhow::bail!(
            "the schedule needs {} of device memory ({} allocated + {} fixed overhead), over its budget {}",
            p.peak_device(),
            p.peak_allocated,
            p.fixed_overhead,
            schedule.budget
        );
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn report(path: &Path, s: &Schedule, hw: &str, t: &Trace, p: &Prediction, worst: Bytes, holds: bool, took: f64) -> Report {
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
    }
}

fn print_table(r: &Report, p: &Prediction, s: &Schedule) {
    let secs = |x: f64| Seconds(x).to_string();
    println!("{} on {} — {} ({} actions), simulated in {}", r.model, r.hardware, r.schedule, r.actions, secs(r.simulate_seconds));
    println!("  step time         {:>12}   (planned {})", secs(r.step_time_s), s.prediction.step_time);
    println!(
        "  compute busy      {:>12}   ({:.1}% of the step)",
        secs(r.compute_time_s),
        100.0 * r.compute_time_s / r.step_time_s.max(1e-30)
    );
    println!(
        "  peak allocated    {:>12}   at {} ({}), action {}",
        p.peak_allocated.to_string(),
        p.peak_at,
        secs(r.peak_time_s),
        r.peak_action
    );
    if let Some(a) = r.arena_bytes {
        let over = 100.0 * (a as f64 - p.peak_allocated.0 as f64) / (p.peak_allocated.0 as f64).max(1.0);
        println!(
            "  arena             {:>12}   every tensor at a planned offset in one allocation ({over:+.2}% over the peak)",
            Bytes(a).to_string()
        );
    }
    println!(
        "  + fixed overhead  {:>12}   = {} on the device (planned {} allocated)",
        p.fixed_overhead.to_string(),
        p.peak_device(),
        s.prediction.peak_allocated
    );
    println!(
        "  worst timing      {:>12}   allocated, the most any timing the waits allow can reach",
        Bytes(r.worst_case_peak_allocated_bytes).to_string()
    );
    let pinnable =
        r.host_pinnable_bytes.map_or_else(|| "the profile states no host limit".to_string(), |h| format!("of {} a run may pin", Bytes(h)));
    println!("  host memory       {:>12}   pinned ({pinnable})", p.pinned_host.to_string());
    println!("  host -> device    {:>12}   in {}", p.h2d_bytes.to_string(), secs(r.h2d_time_s));
    println!("  device -> host    {:>12}   in {}", p.d2h_bytes.to_string(), secs(r.d2h_time_s));
    println!("  transfer exposed  {:>12}   (compute waited on copies); hidden {}", secs(r.exposed_transfer_s), secs(r.hidden_transfer_s));
    let worst_device = Bytes(r.worst_case_peak_allocated_bytes) + p.fixed_overhead;
    let verdict = if !r.budget_holds {
        "DOES NOT HOLD".to_string()
    } else if worst_device > s.budget {
        format!("holds as simulated, but some timing could reach {worst_device}")
    } else {
        "holds under any timing".to_string()
    };
    println!("  budget            {:>12}   {verdict}", s.budget.to_string());
}
