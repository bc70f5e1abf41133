//! Why no plan came out.

use models::Bytes;

/// Why no plan came out.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("budget {budget} is below the {floor} floor: {reason}")]
    Infeasible { budget: Bytes, floor: Bytes, reason: String },
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
