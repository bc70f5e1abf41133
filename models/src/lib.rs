//! What is trained and on what: GPT configs, hardware profiles, the step program, the tensor
//! inventory, the time model, and the schedule format every other crate speaks.

pub mod arena;
pub mod config;
pub mod cost;
pub mod digest;
pub mod error;
pub mod figures;
pub mod hardware;
pub mod inventory;
pub mod io;
pub mod order;
pub mod parallel;
pub mod program;
pub mod runs;
pub mod schedule;
pub mod trace;
pub mod training;
pub mod units;

pub use config::{Attention, DType, GptConfig, Precision};
pub use error::ModelError;
pub use hardware::{HardwareProfile, Interconnect, IssueCosts, LinkRate};
pub use inventory::{Block, BlockId, BlockKind, Inventory, MemoryCategory, Owner, Tensor, TensorClass, TensorId};
pub use parallel::{
    Collective, CollectiveKind, Group, ParallelCommunication, ParallelError, ParallelMemory, Parallelism, StageCommunication, StageMemory,
    ZeroStage,
};
pub use program::{Op, OpId, OpKind, Program};
pub use schedule::{Action, Lane, Placement, Schedule};
pub use training::{SetupSpec, TrainingSetup};
pub use units::{Bytes, BytesPerSecond, Flops, FlopsPerSecond, Seconds};
