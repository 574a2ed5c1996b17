//! The fleet: connections to meters (the pool) and the meter simulator.

pub mod pool;
pub mod simulator;
