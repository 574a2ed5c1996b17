//! `[lockout]` and `[limits]`: the password lockout, the interval between
//! two peak demand resets, and the connection limits every listener keeps.

use std::time::Duration;

use serde::Deserialize;

use super::errors::{ConfigError, Key, Source};
use super::interval::Interval;

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Minimum time between two peak demand resets of one meter.
    pub peak_demand_reset_interval: Interval,
    /// Live connections one network listener holds at most (default 4096;
    /// the descriptor budget, shared by all of them, may allow fewer).
    pub connections_per_listener: usize,
    /// Live connections one source address holds across the network
    /// listeners (default 64: a flood from a few addresses cannot take the
    /// descriptors a control room's SCADA needs).
    pub connections_per_source: usize,
    /// A Modbus client sends its first complete request within this of
    /// connecting, TLS handshake included (default 10s: silent connections
    /// hold nothing for long).
    pub first_request_timeout: Interval,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            peak_demand_reset_interval: Interval(Duration::from_secs(15 * 60)),
            connections_per_listener: 4096,
            connections_per_source: 64,
            first_request_timeout: Interval(Duration::from_secs(10)),
        }
    }
}

/// Password lockout (IEC 62443 CR 1.11): consecutive failures within a
/// window lock password login for a while; keys and Modbus never lock.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Lockout {
    pub failures: u32,
    pub window: Interval,
    pub duration: Interval,
}

impl Default for Lockout {
    fn default() -> Self {
        let fifteen = Interval(Duration::from_secs(15 * 60));
        Lockout {
            failures: 5,
            window: fifteen,
            duration: fifteen,
        }
    }
}

/// Checks `[lockout]` and `[limits]`.
pub(super) fn check(lockout: &Lockout, limits: &Limits, src: &Source) -> Result<(), ConfigError> {
    if lockout.failures == 0 {
        return Err(src.err(&Key::new("lockout.failures"), "must be at least 1"));
    }
    for (key, value) in [
        (
            "limits.connections_per_listener",
            limits.connections_per_listener,
        ),
        (
            "limits.connections_per_source",
            limits.connections_per_source,
        ),
    ] {
        if value == 0 {
            return Err(src.err(&Key::new(key), "must be at least 1"));
        }
    }
    if limits.first_request_timeout.0.is_zero() {
        return Err(src.err(
            &Key::new("limits.first_request_timeout"),
            "must be longer than zero",
        ));
    }
    Ok(())
}
