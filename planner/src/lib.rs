//! When each tensor lives where: the lifetime graph, the LP/MILP placement, schedule emission and
//! the simulator.

pub mod lifetime;

pub use lifetime::LifetimeGraph;
