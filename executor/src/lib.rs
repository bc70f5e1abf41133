//! executor
pub mod host;
