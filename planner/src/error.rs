//! Why no plan came out.

use models::Bytes;

/// Why no plan came out.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("budget {budget} is below the {floor} floor: {reason}")]
    Infeasible { budget: Bytes, floor: Bytes, reason: String },
    /// The budget is more than the card has.
    #[error("budget {budget} is more than {name}'s {card} of device memory (the budget counts the fixed overhead too): plan again with a budget of at most {card}")]
    OverCard { budget: Bytes, card: Bytes, name: String },
    /// No plan fits the device budget and the host memory a run may pin together.
    #[error("no plan fits {budget} of device memory with {pinnable} of pinned host memory ({source_of}): {reason}")]
    HostMemory { budget: Bytes, pinnable: Bytes, source_of: String, reason: String },
    #[error("invalid decisions: {0}")]
    BadDecisions(String),
    #[error("the solver failed: {0}")]
    Solver(String),
    #[error("the emitted schedule does not simulate: {0}")]
    Simulation(Box<crate::SimError>),
}

impl From<crate::SimError> for PlanError {
    fn from(e: crate::SimError) -> Self {
        PlanError::Simulation(Box::new(e))
    }
}
