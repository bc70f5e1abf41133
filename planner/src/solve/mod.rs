//! Choosing the decisions: a MILP over one choice per group (owner, layer activations) on the
//! stage model, warm-started from the best heuristic, with HiGHS.

pub mod milp;
pub mod model;

pub use milp::{solve, SolveOutcome};
pub use model::{Evaluation, StageModel};
