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

pub fn load_hardware(path: &Path) -> anyhow::Result<HardwareProfile> {
    HardwareProfile::load(path).with_context(|| "loading the hardware profile".to_string())
}
