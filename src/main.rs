//! `offplan`: plan, simulate and run memory offload for GPT training. This binary only wires the
//! library crates (models, planner, executor, reports) to the command line.

mod cmd;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Every command's exit codes, shown by each --help.
const EXIT_CODES: &str = "Exit codes: 0 success, 1 error, 2 bad usage, 3 budget or host memory below what any plan needs, 4 no usable GPU.";

#[derive(Parser)]
#[command(
    name = "offplan",
    version,
    about = "Memory-offload planner, simulator and GPU executor for GPT training",
    after_help = EXIT_CODES
)]
struct Cli {
    /// Show the libraries' diagnostics on standard error: -v what each phase did, -vv its
    /// details, -vvv everything.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Parameter count, bytes per class, activations per layer, all-on-GPU peak, FLOPs per step.
    #[command(after_help = EXIT_CODES)]
    Inspect(cmd::inspect::Args),
    /// Solve where every block lives under a budget; write schedule.ron and pictures.
    #[command(after_help = EXIT_CODES)]
    Plan(cmd::plan::Args),
    /// Event-simulate a schedule: memory over time, step time, invariant checks.
    #[command(after_help = EXIT_CODES)]
    Simulate(cmd::simulate::Args),
    /// Plan at budgets from the floor to the all-on-GPU peak; chart step time against budget.
    #[command(after_help = EXIT_CODES)]
    Sweep(cmd::sweep::Args),
    /// Why a block sits where it does in a schedule.
    #[command(after_help = EXIT_CODES)]
    Explain(cmd::explain::Args),
    /// A plan in another tool's terms: the Megatron-LM arguments closest to it, and their cost.
    #[command(after_help = EXIT_CODES)]
    Export(cmd::export::Args),
    /// Run training steps on the GPU (all on the GPU, or as a schedule says) and measure.
    #[command(after_help = EXIT_CODES)]
    Run(cmd::run::Args),
    /// Measure the GPU and the host (copy rates, products, kernels, overheads); write a hardware profile.
    #[command(after_help = EXIT_CODES)]
    Calibrate(cmd::calibrate::Args),
    /// Re-plan every run record with today's code: predicted against measured, table and charts.
    #[command(after_help = EXIT_CODES)]
    Report(cmd::report::Args),
    /// Text files to llm.c token shards (GPT-2 BPE) for training on your own data.
    #[command(after_help = EXIT_CODES)]
    Tokenize(cmd::tokenize::Args),
}

fn main() -> ExitCode {
    quiet_on_closed_stdout();
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => tracing::Level::WARN,
        1 => tracing::Level::INFO,
        2 => tracing::Level::DEBUG,
        _ => tracing::Level::TRACE,
    };
    tracing_subscriber::fmt().with_max_level(level).with_writer(std::io::stderr).with_target(false).without_time().init();
    let result = match cli.command {
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Plan(a) => cmd::plan::run(a),
        Command::Simulate(a) => cmd::simulate::run(a),
        Command::Sweep(a) => cmd::sweep::run(a),
        Command::Explain(a) => cmd::explain::run(a),
        Command::Export(a) => cmd::export::run(a),
        Command::Run(a) => cmd::run::run(a),
        Command::Calibrate(a) => cmd::calibrate::run(a),
        Command::Report(a) => cmd::report::run(a),
        Command::Tokenize(a) => cmd::tokenize::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(cmd::exit_code(&e))
        }
    }
}

/// A reader that stops early (`offplan report DIR | head`) closes the pipe, and `println!`
/// panics on the next line: stop quietly instead, as a filter does.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload.downcast_ref::<String>().map(String::as_str).or_else(|| payload.downcast_ref::<&str>().copied()).unwrap_or("");
        if msg.contains("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info)
    }));
}
