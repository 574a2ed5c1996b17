//! `[lockout]` and `[limits]`: the limits the guard keeps state for — the
//! password lockout and the interval between two peak demand resets.

use std::time::Duration;

use serde::Deserialize;

use super::errors::{ConfigError, Key, Source};
use super::interval::Interval;

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Minimum time between two peak demand resets of one meter.
    pub peak_demand_reset_interval: Interval,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            peak_demand_reset_interval: Interval(Duration::from_secs(15 * 60)),
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

/// Checks `[lockout]`.
pub(super) fn check(lockout: &Lockout, src: &Source) -> Result<(), ConfigError> {
    if lockout.failures == 0 {
        return Err(src.err(&Key::new("lockout.failures"), "must be at least 1"));
    }
    Ok(())
}
