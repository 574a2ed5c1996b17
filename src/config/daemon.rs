//! `[daemon]`, `[control]` and `[metrics]`: how the daemon runs (its
//! account, log level, stop), where admins reach it, where metrics are served.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::errors::{ConfigError, ConfigWarning, Key, Source};
use super::interval::Interval;

/// The control socket of DESIGN §3.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// Default /run/metergate/control.sock.
    pub socket: Option<PathBuf>,
    /// Group whose members may use the socket; default `metergate-admin`;
    /// "" for none (then only root and the daemon's own user).
    pub group: Option<String>,
    /// Octal file mode of the socket; default "0660".
    pub mode: Option<String>,
}

impl ControlConfig {
    pub fn socket_path(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(|| PathBuf::from("/run/metergate/control.sock"))
    }

    pub fn group_name(&self) -> Option<String> {
        match self.group.as_deref() {
            None => Some("metergate-admin".into()),
            Some("") => None,
            Some(g) => Some(g.into()),
        }
    }

    /// The socket's mode (validated at load).
    pub fn mode_bits(&self) -> u32 {
        self.mode
            .as_deref()
            .and_then(|m| u32::from_str_radix(m, 8).ok())
            .unwrap_or(0o660)
    }
}

/// How the daemon runs (DESIGN §3; the systemd unit sets the same account).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// Started as root: bind the listeners, then run as this user.
    pub user: Option<String>,
    /// Its group (default: the user's primary group).
    pub group: Option<String>,
    /// Keep running as root when started as root without `user` (the demo
    /// does); refused otherwise, because every parser would run as root.
    pub allow_root: bool,
    /// How long a graceful stop waits for live sessions to finish.
    pub drain_timeout: Interval,
    /// The log level when RUST_LOG is not set (error, warn, info, debug, trace).
    pub log_level: Option<String>,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            user: None,
            group: None,
            allow_root: false,
            drain_timeout: Interval(Duration::from_secs(10)),
            log_level: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    listen: String,
}

/// `[metrics]`: where Prometheus metrics are served (loopback only).
pub(super) fn metrics_listen(
    raw: &Option<RawMetrics>,
    src: &Source,
) -> Result<Option<std::net::SocketAddr>, ConfigError> {
    let Some(m) = raw else {
        return Ok(None);
    };
    let key = Key::new("metrics.listen");
    let text = &m.listen;
    let addr: std::net::SocketAddr = text.parse().map_err(|_| {
        src.err(
            &key,
            format!("`{text}` is not an address such as 127.0.0.1:9802"),
        )
    })?;
    // Metrics say which meters are down and who is connected:
    // loopback only; a remote scraper comes through a local agent.
    if !addr.ip().is_loopback() {
        return Err(src.err(
            &key,
            format!("`{text}` is not a loopback address (127.0.0.1 or [::1])"),
        ));
    }
    Ok(Some(addr))
}

/// Checks `[daemon]`.
pub(super) fn check_daemon(
    daemon: &DaemonConfig,
    src: &Source,
    warnings: &mut Vec<ConfigWarning>,
) -> Result<(), ConfigError> {
    let key = Key::new("daemon");
    if let Some(l) = &daemon.log_level
        && !["error", "warn", "info", "debug", "trace"].contains(&l.as_str())
    {
        return Err(src.err(
            &key.at("log_level"),
            format!("`{l}` is not one of error, warn, info, debug, trace"),
        ));
    }
    if daemon.group.is_some() && daemon.user.is_none() {
        return Err(src.err(
            &key.at("group"),
            "a group without daemon.user: give the user too",
        ));
    }
    if daemon.allow_root && daemon.user.is_none() {
        warnings.push(src.warning(
            &key.at("allow_root"),
            "started as root, the daemon keeps running as root (every parser too); prefer daemon.user".into(),
        ));
    }
    Ok(())
}

/// Checks `[control]`.
pub(super) fn check_control(control: &ControlConfig, src: &Source) -> Result<(), ConfigError> {
    if let Some(m) = &control.mode
        && u32::from_str_radix(m, 8).map_or(true, |b| b > 0o777)
    {
        return Err(src.err(
            &Key::new("control.mode"),
            format!("`{m}` is not an octal file mode such as \"0660\""),
        ));
    }
    Ok(())
}
