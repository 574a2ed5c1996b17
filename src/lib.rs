//! metergate: a gateway in front of fleets of electricity meters. Every door
//! asks one guard; every decision that matters lands in one hash-chained log.

pub mod commands;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod doors;
pub mod fleet;
pub mod guard;
pub mod listen;
pub mod mail;
pub mod mbap;
pub mod metrics;
pub mod model;
pub mod pki;
pub mod recording;
pub mod remote;
pub mod service;
pub mod sessions;
pub mod sshkeys;
pub mod store;
