//! One module per subcommand; shared argument groups and exit codes here.

pub mod calibrate;
pub mod explain;
pub mod inspect;
pub mod plan;
pub mod report;
pub mod run;
pub mod simulate;
pub mod sweep;
pub mod tokenize;

use anyhow::Context;
use models::{GptConfig, HardwareProfile};
use std::path::{Path, PathBuf};

/// Exit codes: 1 any error, 2 bad usage (clap), 3 budget below the feasible floor,
/// 4 no usable GPU.
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_INFEASIBLE: u8 = 3;
pub const EXIT_NO_GPU: u8 = 4;

/// Errors that carry their own exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CodedError {
    pub code: u8,
    pub message: String,
}

pub fn exit_code(e: &anyhow::Error) -> u8 {
    e.chain().find_map(|c| c.downcast_ref::<CodedError>()).map(|c| c.code).unwrap_or(1)
}

/// The model and micro-batch shape, as every subcommand takes them.
#[derive(clap::Args, Clone, Debug)]
pub struct ModelArgs {
    /// GPT config file (models/configs/*.ron).
    #[arg(long, value_name = "PATH")]
    pub model: PathBuf,
    /// Micro-batch size (overrides the config).
    #[arg(long, value_name = "B")]
    pub batch: Option<u32>,
    /// Sequence length (overrides the config; at most its max_seq).
    #[arg(long, value_name = "T")]
    pub seq: Option<u32>,
    /// Output-layer vocabulary chunks (overrides the config; must divide padded_vocab).
    #[arg(long, value_name = "K")]
    pub output_chunks: Option<u32>,
}

impl ModelArgs {
    pub fn load(&self) -> anyhow::Result<GptConfig> {
        let cfg = GptConfig::load(&self.model)?;
        cfg.with_shape(self.batch, self.seq, self.output_chunks).map_err(|m| anyhow::anyhow!("{}: {m}", self.model.display()))
    }
}

/// A model and the hardware it is planned for, as plan and sweep take them.
#[derive(clap::Args, Clone, Debug)]
pub struct TargetArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Hardware profile (models/hardware/*.ron).
    #[arg(long, value_name = "PATH")]
    pub hardware: PathBuf,
}

impl TargetArgs {
    pub fn load(&self) -> anyhow::Result<(GptConfig, HardwareProfile)> {
        Ok((self.model.load()?, load_hardware(&self.hardware)?))
    }
}

/// A usage error (exit code 2) with its message.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(CodedError { code: EXIT_USAGE, message: message.into() })
}

/// How hard the solver tries, as plan and sweep take it.
#[derive(clap::Args, Clone, Debug)]
pub struct SolveArgs {
    /// Stop once the plan is proved within this fraction of the best (0.01 is 1%).
    #[arg(long, value_name = "FRACTION", default_value_t = 0.01)]
    pub gap: f64,
    /// How much work the search may do before it stops with the gap it has proved, as a
    /// multiple of the default (it counts its work, so a plan does not depend on the machine).
    #[arg(long, value_name = "MULTIPLE", default_value_t = 1.0)]
    pub effort: f64,
}

/// Solver options from the command's flags; a bad value is a usage error naming the flag.
pub fn solve_options(time_limit: f64, args: &SolveArgs, threads: u32) -> anyhow::Result<planner::SolveOptions> {
    let o = planner::SolveOptions::new();
    let o = o.with_time_limit(models::Seconds(time_limit)).map_err(|m| usage(format!("--time-limit: {m}")))?;
    let o = o.with_gap(args.gap).map_err(|m| usage(format!("--gap: {m}")))?;
    let o = o.with_effort(args.effort).map_err(|m| usage(format!("--effort: {m}")))?;
    o.with_threads(threads).map_err(|m| usage(format!("threads: {m}")))
}

pub fn load_hardware(path: &Path) -> anyhow::Result<HardwareProfile> {
    HardwareProfile::load(path).with_context(|| "loading the hardware profile".to_string())
}
