//! When each tensor lives where: the lifetime graph, the placement solver, schedule emission and
//! the simulator.
//!
//! Layers, each importing only those above it in this list:
//! - `error`, `decisions`: the vocabulary (what the planner decides, why it fails);
//! - `lifetime`: the lifetime graph of the all-on-GPU program;
//! - `route`: what each decision puts into which stage of the step;
//! - `model`: the stage model, memory and time as linear functions of the decisions;
//! - `solve`: the solvers over the stage model;
//! - `emit`, `simulate`: the schedule of a set of decisions, and its event simulation;
//! - `planned`: a schedule emitted and simulated, with the simulator's prediction;
//! - `floor`, `heuristics`, `strategy`: the feasible floor, the policies people use, presets;
//! - `megatron`: a plan said in Megatron-LM's flags, those flags as decisions, and their fastest
//!   setting within a budget;
//! - `plan`: the entry point.

mod decisions;
mod emit;
mod error;
mod floor;
mod heuristics;
mod lifetime;
pub mod megatron;
mod model;
mod plan;
mod planned;
mod route;
#[cfg(test)]
mod shipped;
pub mod simulate;
mod solve;
pub mod strategy;

pub use decisions::{ActChoice, Decisions, OwnerChoice};
pub use emit::emit;
pub use error::PlanError;
pub use floor::feasible_floor;
pub use heuristics::{heuristic_schedule, offload_first, Heuristic};
pub use lifetime::LifetimeGraph;
pub use model::StageModel;
pub use plan::{plan, plan_tokens, BatchChoice};
pub use planned::{check_schedule, clipping_cost, figures, finish, replan_record, replan_uncapped, Checked, ClippingCost, Plan};
pub use simulate::{prediction_from_trace, simulate, simulate_with_timing, step_breakdown, SimError};
pub use solve::SolveOptions;
