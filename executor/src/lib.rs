//! The executor: runs a GPT training step on a real GPU (NVRTC kernels of `executor/kernels`,
//! cuBLASLt products, the stream-ordered allocator) and measures it.
//!
//! What runs is plain Rust, testable without a GPU: [`kernels`] describes every kernel's launch
//! (parameters, geometry, the elements each buffer must hold), [`ops`] what each op of the step
//! program launches, [`host`] the work a schedule may put on the CPU. CUDA sits behind the
//! `cuda` feature, and all `unsafe` in [`gpu`] (and the one memory map of `mmap`, for token
//! shards and checkpoints); without the feature (or without a device)
//! everything else builds and tests, and [`train::run_all_on_gpu`] answers [`ExecError::NoGpu`].

pub mod calibrate;
pub mod checkpoint;
pub mod data;
pub mod export;
#[cfg(feature = "cuda")]
pub mod gpu;
pub mod host;
pub mod init;
pub mod kernel_cache;
pub mod kernels;
mod mmap;
pub mod ops;
pub mod runner;
#[cfg(feature = "cuda")]
mod start;
pub mod startup;
pub mod state;
#[cfg(feature = "cuda")]
pub mod step;
pub mod train;
pub mod training;

pub use host::AdamW;
pub use runner::{
    run_schedule, run_schedule_slowed, run_schedule_with, Allocator, HostOpSpan, MemoryPoint, OpSpan, ScheduleRunResult, SlowLanes,
};
pub use state::{Home, ModelState, StateHomes, StateSource};
pub use train::{run_all_on_gpu, run_all_on_gpu_with, Phase, Progress, RunOptions, RunResult, StepReport};
pub use training::{SavePlan, SavedCheckpoint, StartFrom, Training, TrainingSummary, ValidationLoss};

/// Errors of a run.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// No usable CUDA device (or a build without CUDA).
    #[error("no CUDA device: {0}")]
    NoGpu(String),
    #[cfg(feature = "cuda")]
    #[error(transparent)]
    Gpu(#[from] gpu::GpuError),
    #[error(transparent)]
    Data(#[from] data::DataError),
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    #[error("the executor cannot run this config: {0}")]
    Unsupported(String),
    #[error("writing the export: {0}")]
    Io(#[from] std::io::Error),
    /// The schedule cannot run here (format, program digest, budget larger than free memory).
    #[error("refusing the schedule: {0}")]
    Refused(String),
    /// Host work (CPU embedding, host AdamW) failed inside a step.
    #[error("host work failed: {0}")]
    Host(String),
    /// A launch whose arguments do not fit its kernel (a bug, not an input).
    #[error(transparent)]
    Launch(#[from] kernels::LaunchError),
    /// A calibration measured something that makes no sense.
    #[error("calibration: {0}")]
    Calibration(String),
    #[error("the loss is {loss} at step {step}")]
    Diverged { step: u32, loss: f64 },
}

#[cfg(feature = "cuda")]
impl ExecError {
    /// Opening the device: no driver or device is [`ExecError::NoGpu`], anything else a GPU error.
    pub(crate) fn opening(e: gpu::GpuError) -> ExecError {
        match e {
            gpu::GpuError::NoDevice(m) => ExecError::NoGpu(m),
            other => ExecError::Gpu(other),
        }
    }
}
