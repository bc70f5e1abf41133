//! `offplan export megatron PLAN`: the Megatron-LM command line closest to a plan, what the plan
//! does that those flags cannot say, and offplan's prediction for the exported configuration
//! beside the plan's (the translation is `planner::megatron`).

use anyhow::Context;
use models::schedule::Prediction;
use models::{Program, Schedule};
use planner::megatron::{MegatronExport, MegatronKnobs};
use planner::Decisions;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// What to export to.
    #[arg(value_enum, value_name = "TARGET")]
    pub target: Target,
    /// A plan folder (written by `offplan plan`) or its schedule.ron.
    #[arg(value_name = "PLAN")]
    pub plan: PathBuf,
    /// Hardware profile the exported configuration is predicted on (default: the plan's).
    #[arg(long, value_name = "PATH")]
    pub hardware: Option<PathBuf>,
    /// Also write the arguments and notes to this file (a shell script's text).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Target {
    /// Megatron-LM's pretrain_gpt.py command-line arguments.
    Megatron,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let Target::Megatron = args.target;
    let path = schedule_path(&args.plan);
    let schedule = Schedule::load(&path)?;
    let program = Program::for_setup(&schedule.model, &schedule.setup);
    schedule.check_digest(&models::digest::program_digest(&program), &path)?;
    let hw = super::schedule_hardware(args.hardware.as_deref(), &schedule)?;
    let decisions = Decisions::from_block_decisions(&program, &schedule.decisions)
        .with_context(|| format!("reading the decisions of {}", path.display()))?;
    let export = planner::megatron::export(&program, &schedule.setup, &decisions);
    let planned = planner::replan_record(&program, &hw, schedule.budget, &schedule.decisions)
        .with_context(|| format!("simulating {}", path.display()))?;
    let exported = predict(&program, &hw, schedule.budget, &export.knobs.decisions(&program))?;
    let fastest = planner::megatron::fastest_within(&program, &hw, schedule.budget)
        .context("simulating Megatron-LM's knobs")?
        .map(|(k, plan, n)| (k, plan.schedule.prediction, n));
    let mut text = render(&path, &schedule, &hw.name, &export, &planned.schedule.prediction, &exported);
    text.push_str(&render_fastest(&program, &planned.schedule.prediction, fastest.as_ref()));
    print!("{text}");
    if let Some(out) = &args.out {
        models::io::write_atomic(out, text.as_bytes()).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

/// `plan` as given, or its schedule.ron when it is a folder.
fn schedule_path(plan: &Path) -> PathBuf {
    if plan.is_dir() {
        plan.join("schedule.ron")
    } else {
        plan.to_path_buf()
    }
}

/// The exported configuration planned and simulated under the plan's budget; over it, its
/// prediction without the cap and how far over.
struct Exported {
    prediction: models::schedule::Prediction,
    over_budget: Option<String>,
}

fn predict(program: &Program, hw: &models::HardwareProfile, budget: models::Bytes, d: &Decisions) -> anyhow::Result<Exported> {
    let blocks = d.block_decisions(program);
    let (plan, over_budget) = planner::replan_uncapped(program, hw, budget, &blocks).context("simulating the exported configuration")?;
    Ok(Exported { prediction: plan.schedule.prediction, over_budget })
}

fn render_fastest(program: &Program, planned: &Prediction, fastest: Option<&(MegatronKnobs, Prediction, usize)>) -> String {
    use std::fmt::Write;
    let mut t = String::new();
    let Some((knobs, p, searched)) = fastest else {
        let _ = writeln!(t, "# No setting of Megatron-LM's knobs (recompute, CPU offloading, optimizer offload) fits this budget.");
        return t;
    };
    let _ = writeln!(
        t,
        "# The fastest setting of Megatron-LM's knobs within the budget ({searched} settings that fit, the fewest optimizer owners on the host for each count of layers):"
    );
    let flags: Vec<String> =
        knobs.args(program).iter().map(|a| a.value.as_ref().map_or(a.flag.to_string(), |v| format!("{} {v}", a.flag))).collect();
    let _ = writeln!(t, "#   {}", if flags.is_empty() { "(no knob needed)".to_string() } else { flags.join(" ") });
    let _ = writeln!(
        t,
        "#   step {:.2} ms, live peak {}, device {}: the plan's step is {:+.1}% against it",
        p.step_time.0 * 1e3,
        p.peak_allocated,
        p.peak_device(),
        100.0 * (planned.step_time.0 / p.step_time.0 - 1.0)
    );
    t
}

fn render(path: &Path, s: &Schedule, hw: &str, e: &MegatronExport, planned: &models::schedule::Prediction, exported: &Exported) -> String {
    use std::fmt::Write;
    let mut t = String::new();
    let _ = writeln!(t, "# Megatron-LM (pretrain_gpt.py) arguments closest to {}", path.display());
    let _ = writeln!(t, "# {} under {} on {}, one GPU; add your data, tokenizer and --train-iters.", s.model.name, s.budget, hw);
    let _ = writeln!(t, "{}", e.command_line());
    if e.cannot_say.is_empty() {
        let _ = writeln!(t, "# Everything the plan decides is said by these flags.");
    } else {
        let _ = writeln!(t, "# What the plan does that these flags cannot say:");
        for c in &e.cannot_say {
            let _ = writeln!(t, "#  - {c}");
        }
    }
    let line = |p: &models::schedule::Prediction| {
        format!("step {:.2} ms, live peak {}, device {}", p.step_time.0 * 1e3, p.peak_allocated, p.peak_device())
    };
    let _ = writeln!(t, "# offplan's prediction on {hw}, budget {}, both as offplan's executor would run them:", s.budget);
    let _ = writeln!(t, "#   the plan:                     {}", line(planned));
    let fits = match &exported.over_budget {
        None => "within the budget".to_string(),
        Some(why) => format!("OVER the budget: {why}"),
    };
    let _ = writeln!(t, "#   the exported configuration:   {} ({fits})", line(&exported.prediction));
    let dt = exported.prediction.step_time.0 / planned.step_time.0 - 1.0;
    let _ = writeln!(t, "#   the exported step is {:+.1}% against the plan's", 100.0 * dt);
    t
}
