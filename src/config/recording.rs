//! `[recording]`: session recordings of interactive SSH sessions (shell,
//! console pass-through, exec): what is kept, how much, and for how long.

use std::time::Duration;

use serde::Deserialize;

use super::errors::{ConfigError, Key, Source};
use super::interval::Interval;

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordingConfig {
    /// On by default: an interactive session on a meter that leaves no
    /// record of what was done is what this product exists to prevent
    /// (NERC CIP-005 asks for it).
    pub enabled: bool,
    /// Keystrokes are kept as input events only when this is on. Off by
    /// default: meters' own password prompts do not echo, so what is typed
    /// there reaches the recording only as input.
    pub input: bool,
    /// The running chain hash lands in the audit log at least this often
    /// while a session writes output (and at its end): a crash loses at
    /// most this much from what the log vouches for.
    pub checkpoint: Interval,
    /// Bytes all recordings together may take on disk.
    pub capacity_bytes: u64,
    /// Bytes one recording may take; beyond, it cannot be written
    /// (`audit.on_failure` decides).
    pub max_session_bytes: u64,
    /// Bytes one principal's recordings may take together: one crew
    /// member filling the disk must not refuse (fail-closed) or blind
    /// (fail-open) everybody else's sessions.
    pub max_principal_bytes: u64,
    /// A warning event and metric when recordings fill this much.
    pub warn_at_percent: u8,
    /// Recordings older than this are removed (each removal an event),
    /// never before their events were forwarded when forwarding is on.
    pub keep: Interval,
}

impl Default for RecordingConfig {
    fn default() -> Self {
        RecordingConfig {
            enabled: true,
            input: false,
            checkpoint: Interval(Duration::from_secs(5)),
            capacity_bytes: 10 * 1024 * 1024 * 1024,
            max_session_bytes: 1024 * 1024 * 1024,
            max_principal_bytes: 2 * 1024 * 1024 * 1024,
            warn_at_percent: 90,
            // A year: audits of remote access look back that far.
            keep: Interval(Duration::from_secs(365 * 86_400)),
        }
    }
}

pub(super) fn check(r: &RecordingConfig, src: &Source) -> Result<(), ConfigError> {
    let key = |k: &str| Key::new("recording").at(k);
    let cp = r.checkpoint.0.as_secs();
    if !(1..=3600).contains(&cp) {
        return Err(src.err(&key("checkpoint"), "must be between 1s and 1h"));
    }
    if r.capacity_bytes < 1024 * 1024 {
        return Err(src.err(&key("capacity_bytes"), "must be at least 1 MiB (1048576)"));
    }
    if r.max_session_bytes < 64 * 1024 || r.max_session_bytes > r.capacity_bytes {
        return Err(src.err(
            &key("max_session_bytes"),
            "must be at least 64 KiB (65536) and at most recording.capacity_bytes",
        ));
    }
    if r.max_principal_bytes < r.max_session_bytes {
        return Err(src.err(
            &key("max_principal_bytes"),
            "must be at least recording.max_session_bytes",
        ));
    }
    if !(1..=100).contains(&r.warn_at_percent) {
        return Err(src.err(&key("warn_at_percent"), "must be between 1 and 100"));
    }
    if r.keep.0 < Duration::from_secs(86_400) {
        return Err(src.err(&key("keep"), "must be at least 1d"));
    }
    Ok(())
}
