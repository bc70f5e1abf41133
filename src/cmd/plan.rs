//! `offplan plan`: solve where every block lives under a budget, write `schedule.ron`, print a
//! summary.

use super::{CodedError, TargetArgs, EXIT_INFEASIBLE};
use anyhow::Context;
use models::schedule::BlockDecision;
use models::{Bytes, Placement, Program};
use planner::PlanError;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Device memory the step may use, fixed overhead included (24GiB, 22.5GB, ...).
    #[arg(long, value_name = "SIZE", value_parser = super::size_flag)]
    pub budget: Bytes,
    /// Folder to write schedule.ron (and pictures) into; created if missing.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Stop the solver after this many seconds and keep its best plan (with its gap).
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    pub time_limit: f64,
    #[command(flatten)]
    pub solve: super::SolveArgs,
    /// Instead of solving, place blocks by named presets applied left to right, e.g.
    /// `offload-all`, `host-optimizer,cpu-embedding`, `offload-first=4` (see `planner::strategy`).
    #[arg(long, value_name = "NAMES")]
    pub strategy: Option<String>,
    #[command(flatten)]
    pub training: super::SetupArgs,
    /// Tokens per optimizer step, instead of --batch and --micro-batches: the planner chooses
    /// the micro-batch size B and the micro-batches K (B x K x T = N) with every placement.
    #[arg(long, value_name = "N", conflicts_with_all = ["micro_batches", "batch", "strategy"])]
    pub tokens_per_step: Option<u64>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (cfg, hw) = args.target.load()?;
    // Checked before anything is solved or written; its clipping and micro-batches change the
    // step, the schedule carries it to `simulate` and `run`.
    let mut setup = args.training.resolve(&cfg)?;
    let mut program = Program::for_setup(&cfg, &setup);
    let opts = super::solve_options(args.time_limit, &args.solve, 2)?;
    let presets = match &args.strategy {
        Some(names) => Some(planner::strategy::parse_strategy(names).map_err(super::usage)?),
        None => None,
    };
    // Found before the solve: an --out that cannot be written.
    let out = models::io::StagedDir::new(&args.out).with_context(|| format!("--out {}: cannot write there", args.out.display()))?;
    let mut choices = None;
    let planned = match (&args.strategy, &presets, args.tokens_per_step) {
        (Some(names), Some(presets), _) => planner::strategy::strategy_plan(&program, &hw, args.budget, names, presets),
        (_, _, Some(n)) => {
            let message = format!("choosing B and K of {n} tokens per step for {} layers", cfg.layers);
            with_spinner(&message, || planner::plan_tokens(&cfg, setup.clipping(), n, &hw, args.budget, &opts)).map(|(plan, p, c)| {
                setup.micro_batches = p.micro_batches;
                setup.sources.micro_batches = models::training::Source::Flag(format!("--tokens-per-step {n}: the planner's choice"));
                program = p;
                choices = Some(c);
                plan
            })
        }
        _ => {
            let message = format!("solving placement for {} layers (limit {:.0} s)", program.config.layers, opts.time_limit().0);
            with_spinner(&message, || planner::plan(&program, &hw, args.budget, &opts))
        }
    };
    let plan = planned.map_err(|e| match e {
        PlanError::Infeasible { .. } | PlanError::HostMemory { .. } => {
            anyhow::Error::new(CodedError { code: EXIT_INFEASIBLE, message: e.to_string() })
        }
        PlanError::OverCard { .. } | PlanError::BadDecisions(_) => super::usage(e.to_string()),
        other => anyhow::Error::new(other).context("planning failed"),
    })?;
    let mut plan = plan;
    plan.schedule.setup = setup;
    plan.schedule.save(&out.path().join("schedule.ron")).with_context(|| format!("writing schedule.ron into {}", args.out.display()))?;
    write_pictures(out.path(), &program, &hw, &plan)?;
    out.commit().with_context(|| format!("moving the plan's files into {}", args.out.display()))?;
    print_summary(&program, &hw, &plan, &args.out.join("schedule.ron"), &opts);
    if let Some(choices) = choices {
        print_batch_choices(&program, &choices);
    }
    Ok(())
}

/// Each micro-batch size the search priced, against the one it chose.
fn print_batch_choices(chosen: &Program, choices: &[planner::BatchChoice]) {
    let best = choices.iter().find(|c| c.batch == chosen.config.batch).and_then(|c| c.step.clone().ok());
    println!(
        "micro-batch      B {} x K {} chosen of {} tokens per step; each B the search priced (solver's step time):",
        chosen.config.batch,
        chosen.micro_batches,
        chosen.tokens_per_step()
    );
    for c in choices {
        let why = match (&c.step, best) {
            (Ok(t), Some(b)) if c.batch == chosen.config.batch => {
                format!("{t}  chosen ({:.0} tokens/s)", chosen.tokens_per_step() as f64 / b.0)
            }
            (Ok(t), Some(b)) => format!("{t}  {:+.1}% slower", 100.0 * (t.0 / b.0 - 1.0)),
            (Ok(t), None) => t.to_string(),
            (Err(e), _) => format!("does not fit: {e}"),
        };
        println!("  B {:>4} x K {:>5}  {why}", c.batch, c.micro_batches);
    }
}

/// The single place where the plan's pictures (memory.svg/png, timeline.svg, placement.svg) and
/// summary.md are written.
fn write_pictures(dir: &Path, program: &Program, hw: &models::HardwareProfile, plan: &planner::Plan) -> anyhow::Result<()> {
    reports::write_plan_pictures(dir, program, &plan.schedule, &plan.trace, &plan.figures(hw))
        .with_context(|| format!("writing pictures into {}", dir.display()))?;
    Ok(())
}

/// Runs `work` (the planner), with a spinner saying `message` once it has taken more than a
/// second.
fn with_spinner<T: Send>(message: &str, work: impl FnOnce() -> Result<T, PlanError> + Send) -> Result<T, PlanError> {
    std::thread::scope(|s| {
        let worker = s.spawn(work);
        let start = std::time::Instant::now();
        let mut bar: Option<indicatif::ProgressBar> = None;
        while !worker.is_finished() {
            std::thread::sleep(Duration::from_millis(50));
            if bar.is_none() && start.elapsed() > Duration::from_secs(1) {
                let b = indicatif::ProgressBar::new_spinner();
                b.set_message(message.to_string());
                b.enable_steady_tick(Duration::from_millis(100));
                bar = Some(b);
            }
        }
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        worker.join().expect("planner thread panicked")
    })
}

/// "0-3,7" style ranges of layer numbers.
fn ranges(ls: Vec<u32>) -> String {
    models::runs::ranges(&ls, "-", ",")
}

/// Groups decisions by (what, placement): layer blocks as ranges, the rest by name.
fn decision_lines(ds: &[BlockDecision]) -> Vec<String> {
    let mut layered: BTreeMap<(String, &'static str), Vec<u32>> = BTreeMap::new();
    let mut others: Vec<String> = Vec::new();
    for d in ds {
        let name = &d.name;
        if let Some(rest) = name.strip_prefix("layer") {
            if let Some((num, what)) = rest.split_once('.') {
                if let Ok(l) = num.parse::<u32>() {
                    layered.entry((what.to_string(), d.placement.label())).or_default().push(l);
                    continue;
                }
            }
        }
        others.push(format!("{:<24} {}", name, d.placement.label()));
    }
    let mut lines: Vec<String> =
        layered.into_iter().map(|((what, p), ls)| format!("{:<24} {:<10} layers {}", format!("layer.{what}"), p, ranges(ls))).collect();
    // Output chunks and the rest: collapse identical chunk placements.
    let mut chunk: BTreeMap<(String, String), Vec<u32>> = BTreeMap::new();
    for d in ds.iter().filter(|d| d.name.starts_with("chunk")) {
        if let Some((num, what)) = d.name["chunk".len()..].split_once('.') {
            if let Ok(c) = num.parse::<u32>() {
                chunk.entry((what.to_string(), d.placement.label().to_string())).or_default().push(c);
            }
        }
    }
    others.retain(|l| !l.starts_with("chunk"));
    for ((what, p), cs) in chunk {
        lines.push(format!("{:<24} {:<10} chunks {}", format!("chunk.{what}"), p, ranges(cs)));
    }
    lines.extend(others);
    lines
}

fn print_summary(program: &Program, hw: &models::HardwareProfile, plan: &planner::Plan, path: &Path, opts: &planner::SolveOptions) {
    let s = &plan.schedule;
    let p = &s.prediction;
    let c = &program.config;
    match s.setup.micro_batches {
        1 => println!(
            "{} (batch {} x seq {}, {} output chunks) on {} within {}",
            c.name, c.batch, c.seq, c.output_chunks, s.hardware, s.budget
        ),
        k => println!(
            "{} ({k} micro-batches of batch {} x seq {}: {} tokens per step, {} output chunks) on {} within {}",
            c.name,
            c.batch,
            c.seq,
            k as u64 * c.tokens(),
            c.output_chunks,
            s.hardware,
            s.budget
        ),
    }
    println!("decisions:");
    for l in decision_lines(&s.decisions) {
        println!("  {l}");
    }
    let off: Vec<&BlockDecision> = s.decisions.iter().filter(|d| d.placement != Placement::Gpu).collect();
    println!("  ({} of {} blocks off the GPU or recomputed)", off.len(), s.decisions.len());
    let figures = plan.figures(hw);
    for l in figures.memory.lines().iter().chain(&figures.step.lines()) {
        println!("{l}");
    }
    println!("training setup (clipping is part of the planned step; `run` follows the rest step by step):");
    for l in s.setup.lines() {
        println!("  {l}");
    }
    match planner::clipping_cost(program, hw, s, opts) {
        Ok(Some(cost)) => println!("clipping         {}", cost.line()),
        Ok(None) => {}
        Err(e) => println!("clipping         its cost could not be found: {e}"),
    }
    let step_s = p.step_time.0;
    if step_s > 0.0 {
        let tokens = program.tokens_per_step() as f64;
        let mfu = program.model_flops().0 / step_s / (super::MFU_PEAK_TFLOPS * 1e12);
        println!(
            "throughput       {:.0} tokens/s ({} tokens per step), MFU {:.1}% (6N + 6LTC per token over {} TFLOP/s, the dense bf16 peak of H100/H200 SXM)",
            tokens / step_s,
            program.tokens_per_step(),
            100.0 * mfu,
            super::MFU_PEAK_TFLOPS
        );
    }
    println!("transfers        {} host->device, {} device->host", p.h2d_bytes, p.d2h_bytes);
    println!(
        "transfer time    {} hidden behind compute, {} exposed (waiting on H2D + waiting on D2H)",
        p.hidden_transfer, p.exposed_transfer
    );
    println!(
        "room kept        {} + {:.1}% of the pool: what the solver leaves beyond the live peak for the arena's layout and the memory outside the pool",
        hw.pool_slack,
        100.0 * hw.pool_slack_fraction
    );
    if let Some(r) = &p.solver {
        let bound = r.bound.map_or_else(|| "none".to_string(), |b| b.to_string());
        println!(
            "solver           {}: objective {}, bound {bound}, gap {}, {:.2} s, {}",
            r.solver,
            r.objective,
            r.gap_label(),
            r.solve_seconds,
            r.status.label()
        );
    }
    println!("wrote {}", path.display());
}

#[cfg(test)]
mod tests {
    #[test]
    fn ranges_group_consecutive_layers() {
        assert_eq!(super::ranges(vec![3, 0, 1, 2, 7, 9, 10]), "0-3,7,9-10");
    }
}
