//! The fleet: connections to meters (the pool), the meter simulator and its
//! SSH console.

pub mod console;
pub mod files;
pub mod meter_sftp;
pub mod meter_ssh;
pub mod pool;
pub mod simulator;
pub mod units;
