//! One module per subcommand; shared argument groups and exit codes here.

pub mod calibrate;
pub mod explain;
pub mod export;
pub mod inspect;
pub mod plan;
pub mod report;
pub mod run;
mod run_console;
pub mod simulate;
pub mod sweep;
pub mod tokenize;

use anyhow::Context;
use models::{Bytes, GptConfig, HardwareProfile};
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
        // The flags are what is wrong here, not the file: a usage error.
        cfg.with_shape(self.batch, self.seq, self.output_chunks)
            .map_err(|m| usage(format!("{} with --batch/--seq/--output-chunks: {m}", self.model.display())))
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
    /// Host memory the plan may pin (default: the profile's host_pinnable; a profile without
    /// one holds plans to no host limit).
    #[arg(long, value_name = "SIZE", value_parser = size_flag)]
    pub host_memory: Option<Bytes>,
}

impl TargetArgs {
    pub fn load(&self) -> anyhow::Result<(GptConfig, HardwareProfile)> {
        let mut hw = load_hardware(&self.hardware)?;
        if let Some(h) = self.host_memory {
            if h == Bytes::ZERO {
                return Err(usage("--host-memory must be positive (e.g. 4TiB)"));
            }
            hw.host_pinnable = Some(h);
            hw.host_memory = Some(hw.host_memory.map_or(h, |m| m.max(h)));
        }
        Ok((self.model.load()?, hw))
    }
}

/// Dense bf16 TFLOP/s that MFU is taken against: NVIDIA's figure for H100 SXM, which the H200
/// shares (llm.c reports MFU against it).
pub const MFU_PEAK_TFLOPS: f64 = 989.0;

/// The training setup, as plan, sweep and `run --model` take it: a `--setup` file and flags
/// that override it; absent both, GPT-3's values for the model's size (`models::training`).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct SetupArgs {
    /// Training setup file (RON `TrainingSetup(lr: 3e-4, warmup: 10, ...)`; any field may be
    /// left out; see models/setups/). The flags below override it.
    #[arg(long, value_name = "FILE")]
    pub setup: Option<PathBuf>,
    /// Peak learning rate (default: GPT-3's for the model's size, Table 2.1).
    #[arg(long, value_name = "LR", allow_hyphen_values = true)]
    pub lr: Option<f64>,
    /// Learning-rate floor the cosine decays to (default: a tenth of the peak, as GPT-3).
    #[arg(long, value_name = "LR", allow_hyphen_values = true)]
    pub min_lr: Option<f64>,
    /// Linear warmup steps (default: a tenth of the run's steps).
    #[arg(long, value_name = "STEPS", allow_hyphen_values = true)]
    pub warmup: Option<u32>,
    /// AdamW weight decay on matrices (default 0.1, GPT-3).
    #[arg(long, value_name = "WD", allow_hyphen_values = true)]
    pub weight_decay: Option<f64>,
    /// Adam beta1 (default 0.9, GPT-3).
    #[arg(long, value_name = "B1", allow_hyphen_values = true)]
    pub beta1: Option<f64>,
    /// Adam beta2 (default 0.95, GPT-3).
    #[arg(long, value_name = "B2", allow_hyphen_values = true)]
    pub beta2: Option<f64>,
    /// Adam epsilon (default 1e-8, GPT-3).
    #[arg(long, value_name = "EPS", allow_hyphen_values = true)]
    pub eps: Option<f64>,
    /// Clip the gradients' global norm to this (default 1.0, GPT-3; 0 turns clipping off).
    /// Clipping makes every update wait for every gradient: the plan prices that.
    #[arg(long, value_name = "NORM", allow_hyphen_values = true)]
    pub grad_clip: Option<f64>,
    /// Micro-batches of the config's batch per optimizer step, their gradients summed before
    /// the updates (gradient accumulation; default 1).
    #[arg(long, value_name = "K", allow_hyphen_values = true)]
    pub micro_batches: Option<u32>,
}

impl SetupArgs {
    /// The flags' values as a spec.
    fn flags(&self) -> models::SetupSpec {
        models::SetupSpec {
            lr: self.lr,
            min_lr: self.min_lr,
            warmup: self.warmup,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
            grad_clip: self.grad_clip,
            micro_batches: self.micro_batches,
        }
    }

    /// Whether any setup flag or file was given (a schedule run takes none: its setup is the
    /// schedule's).
    pub fn any(&self) -> bool {
        self.setup.is_some() || self.flags() != models::SetupSpec::default()
    }

    /// The setup for `cfg`: flags over the file over GPT-3's defaults. A bad value is a usage
    /// error naming the field and the flag or file it came from; an unreadable or malformed
    /// file is an error of the file (exit 1, as every input file).
    pub fn resolve(&self, cfg: &GptConfig) -> anyhow::Result<models::TrainingSetup> {
        let file = match &self.setup {
            Some(p) => Some((p.as_path(), models::SetupSpec::load(p).context("loading the --setup file")?)),
            None => None,
        };
        models::TrainingSetup::resolve(cfg, file.as_ref().map(|(p, s)| (*p, s)), &self.flags()).map_err(|e| usage(e.to_string()))
    }
}

/// The setup checked against a run of `steps` (the warmup must fit), as a usage error.
pub fn check_run(setup: &models::TrainingSetup, steps: u32) -> anyhow::Result<()> {
    setup.check_run(steps).map_err(|e| usage(format!("{e} (--steps {steps})")))
}

/// A size given on the command line: as `Bytes` reads it, but a plain number below 1 MiB is
/// refused (`--budget 24` is 24 bytes, never what was meant).
pub fn size_flag(s: &str) -> Result<Bytes, String> {
    let b: Bytes = s.parse().map_err(|e: models::units::ParseBytesError| e.to_string())?;
    let plain = s.trim().chars().all(|c| c.is_ascii_digit() || c == '_' || c == '.');
    if plain && b.0 < models::units::MIB {
        return Err(format!("`{s}` would be {s} bytes: give a unit, e.g. {s}GiB"));
    }
    Ok(b)
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

/// The hardware profile a schedule is simulated or run on: `explicit`, else the one it was
/// planned for, `models/hardware/<name>.ron` from here or from the source tree this was built
/// from.
pub fn schedule_hardware(explicit: Option<&Path>, schedule: &models::Schedule) -> anyhow::Result<HardwareProfile> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => {
            let rel = Path::new("models/hardware").join(format!("{}.ron", schedule.hardware));
            if rel.exists() {
                rel
            } else {
                Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
            }
        }
    };
    HardwareProfile::load(&path).with_context(|| {
        format!("loading the hardware profile `{}` the schedule was planned for (give its file with --hardware)", schedule.hardware)
    })
}

pub fn load_hardware(path: &Path) -> anyhow::Result<HardwareProfile> {
    HardwareProfile::load(path).with_context(|| "loading the hardware profile".to_string())
}
