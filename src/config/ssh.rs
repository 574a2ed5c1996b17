//! `[ssh]`: the SSH door's listeners, host key, session limits, the
//! meter-side credentials file and the SFTP limits.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::errors::{ConfigError, Key, Source};
use super::interval::Interval;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSsh {
    #[serde(default)]
    listen: Vec<String>,
    #[serde(default)]
    host_key: Option<PathBuf>,
    #[serde(default)]
    idle_timeout: Option<Interval>,
    #[serde(default)]
    max_session: Option<Interval>,
    #[serde(default)]
    max_sessions_per_principal: Option<usize>,
    #[serde(default)]
    meter_credentials: Option<PathBuf>,
    #[serde(default)]
    max_upload_bytes: Option<u64>,
    #[serde(default)]
    store_quota_bytes: Option<u64>,
    #[serde(default)]
    login_grace: Option<Interval>,
    #[serde(default)]
    max_startups: Option<String>,
    #[serde(default)]
    per_source_max_startups: Option<usize>,
}

/// `[ssh]`: the SSH door (the gateway shell; SFTP later).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SshConfig {
    pub listen: Vec<std::net::SocketAddr>,
    /// The ed25519 host key (OpenSSH format), generated 0600 at first start.
    pub host_key: PathBuf,
    /// A session that sends nothing for this long is closed (default 15m).
    pub idle_timeout: Duration,
    /// No session lasts longer (default 12h).
    pub max_session: Duration,
    /// Live SSH sessions one principal may hold (IEC 62443 CR 2.7; default 4).
    pub max_sessions_per_principal: usize,
    /// The meter-side accounts' credentials (TOML `[METER] account =
    /// "secret"`, 0600, read at each console login, never shown).
    pub meter_credentials: Option<PathBuf>,
    /// SFTP: the largest file one upload may write (default 1 GiB).
    pub max_upload_bytes: u64,
    /// SFTP: the most a meter's store may hold (default 10 GiB).
    pub store_quota_bytes: u64,
    /// Banner, key exchange and login within this of connecting (default
    /// 60s, OpenSSH's LoginGraceTime): silent connections hold nothing.
    pub login_grace: Duration,
    /// Connections not yet logged in, as OpenSSH's MaxStartups.
    pub max_startups: MaxStartups,
}

/// `start:rate:full` (OpenSSH's MaxStartups, default 10:30:100): beyond
/// `start` connections not yet logged in, a new one from an address that
/// already has one waiting is dropped with probability `rate`% rising to
/// 100% at `full`; an address with none waiting is admitted until `full`.
/// No address holds more than `per_source` waiting connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxStartups {
    pub start: usize,
    pub rate: u32,
    pub full: usize,
    pub per_source: usize,
}

impl Default for MaxStartups {
    fn default() -> Self {
        MaxStartups {
            start: 10,
            rate: 30,
            full: 100,
            // A crew behind one NAT logs in a few at a time; ten waiting
            // logins from one address are plenty.
            per_source: 10,
        }
    }
}

fn max_startups(text: &str) -> Result<(usize, u32, usize), String> {
    let parts: Vec<&str> = text.split(':').collect();
    let bad = || {
        format!(
            "`{text}` is not start:rate:full (such as 10:30:100, rate a percentage, start ≤ full)"
        )
    };
    let [start, rate, full] = parts[..] else {
        return Err(bad());
    };
    let (Ok(start), Ok(rate), Ok(full)) = (
        start.parse::<usize>(),
        rate.parse::<u32>(),
        full.parse::<usize>(),
    ) else {
        return Err(bad());
    };
    if start == 0 || start > full || rate > 100 {
        return Err(bad());
    }
    Ok((start, rate, full))
}

/// The `[ssh]` section, checked: None when there is none or it has no
/// listener. Relative paths are resolved against `base`; the host key
/// defaults to one in `state_dir`.
pub(super) fn ssh(
    raw: &Option<RawSsh>,
    base: &Path,
    state_dir: &Path,
    src: &Source,
) -> Result<Option<SshConfig>, ConfigError> {
    let Some(raw_ssh) = raw else {
        return Ok(None);
    };
    let section = Key::new("ssh");
    let mut listen = Vec::new();
    for (i, l) in raw_ssh.listen.iter().enumerate() {
        listen.push(l.parse().map_err(|_| {
            src.err(
                &section.at("listen").index(i),
                format!("`{l}` is not an address such as 0.0.0.0:22 or 127.0.0.1:2222"),
            )
        })?);
    }
    let max_sessions = raw_ssh.max_sessions_per_principal.unwrap_or(4);
    if max_sessions == 0 {
        return Err(src.err(
            &section.at("max_sessions_per_principal"),
            "must be at least 1",
        ));
    }
    let mut startups = MaxStartups::default();
    if let Some(text) = &raw_ssh.max_startups {
        let (start, rate, full) =
            max_startups(text).map_err(|m| src.err(&section.at("max_startups"), m))?;
        (startups.start, startups.rate, startups.full) = (start, rate, full);
    }
    if let Some(n) = raw_ssh.per_source_max_startups {
        if n == 0 {
            return Err(src.err(&section.at("per_source_max_startups"), "must be at least 1"));
        }
        startups.per_source = n;
    }
    let login_grace = raw_ssh.login_grace.map_or(Duration::from_secs(60), |i| i.0);
    if login_grace.is_zero() {
        return Err(src.err(&section.at("login_grace"), "must be longer than zero"));
    }
    Ok((!listen.is_empty()).then(|| SshConfig {
        listen,
        host_key: match &raw_ssh.host_key {
            Some(p) => base.join(p),
            None => state_dir.join("ssh_host_ed25519_key"),
        },
        idle_timeout: raw_ssh
            .idle_timeout
            .map_or(Duration::from_secs(15 * 60), |i| i.0),
        max_session: raw_ssh
            .max_session
            .map_or(Duration::from_secs(12 * 3600), |i| i.0),
        max_sessions_per_principal: max_sessions,
        meter_credentials: raw_ssh.meter_credentials.as_ref().map(|p| base.join(p)),
        max_upload_bytes: raw_ssh.max_upload_bytes.unwrap_or(1 << 30),
        store_quota_bytes: raw_ssh.store_quota_bytes.unwrap_or(10 << 30),
        login_grace,
        max_startups: startups,
    }))
}
