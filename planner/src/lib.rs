//! When each tensor lives where: the lifetime graph, the LP/MILP placement, schedule emission and
//! the simulator.

pub mod decisions;
pub mod emit;
pub mod heuristics;
pub mod lifetime;
pub mod plan;
pub mod simulate;
pub mod solve;
pub mod strategy;

pub use decisions::{replan_record, Decisions};
pub use heuristics::{heuristic_schedule, Heuristic};
pub use lifetime::LifetimeGraph;
pub use plan::{feasible_floor, plan, Plan, PlanError, PlanOptions};
pub use simulate::{prediction_from_trace, simulate, simulate_with_timing, SimError};
