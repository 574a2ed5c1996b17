//! `[audit]`: what happens when an event cannot be made durable or the log
//! is full, its capacity, and forwarding to a syslog collector.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::errors::{ConfigError, Key, Source};
use crate::store::log::Capacity;

/// What to do when an event cannot be made durable (DESIGN §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnFailure {
    /// Writes, logins and admin changes that cannot be logged are refused;
    /// reads and running sessions go on (IEC 62443 CR 2.10).
    #[default]
    FailClosed,
    /// Everything goes on; an alarm is raised in metrics and status.
    FailOpen,
}

/// What to do when the log reaches its capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum WhenFull {
    #[default]
    DropOldest,
    Refuse,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    pub on_failure: OnFailure,
    pub when_full: WhenFull,
    /// Capacity of the log, counted in events (not bytes: sled reclaims
    /// space lazily, so its size on disk says little).
    pub capacity_events: u64,
    /// A warning event and metric when the log is this full.
    pub warn_at_percent: u8,
    /// Reads are counted in metrics; set this to also log every read.
    pub read_events: bool,
    /// Events from unauthenticated traffic (aggregated garbage, refused
    /// sources, failed handshakes) logged per hour; beyond, only counted
    /// (and the count logged), so such traffic cannot fill the log.
    pub unauthenticated_events_per_hour: u64,
    /// Forwarding to a syslog collector (none by default).
    pub forward: Option<ForwardConfig>,
}

/// `[audit.forward]`: a syslog collector that receives every event, at
/// least once, in RFC 5424 with RFC 5425 octet-counted framing.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardConfig {
    /// `tcp://HOST:PORT` or `tls://HOST:PORT`.
    pub target: String,
    /// tls: the CA (PEM) the collector's certificate must chain to.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// tls: the name the collector's certificate must carry (default: HOST).
    #[serde(default)]
    pub server_name: Option<String>,
    /// tls: a client certificate and key for collectors that ask for one.
    #[serde(default)]
    pub certificate: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// Syslog facility (default 13, "log audit").
    #[serde(default = "default_facility")]
    pub facility: u8,
}

fn default_facility() -> u8 {
    13
}

/// How forwarded events travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Tls,
}

impl ForwardConfig {
    /// The target, checked: (transport, host, port).
    pub fn endpoint(&self) -> Result<(Transport, String, u16), String> {
        let bad = || {
            format!(
                "`{}` is not a collector address: use tcp://HOST:PORT or tls://HOST:PORT",
                self.target
            )
        };
        let (transport, rest) = if let Some(r) = self.target.strip_prefix("tcp://") {
            (Transport::Tcp, r)
        } else if let Some(r) = self.target.strip_prefix("tls://") {
            (Transport::Tls, r)
        } else {
            return Err(bad());
        };
        let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || port == 0 {
            return Err(bad());
        }
        Ok((transport, host.to_string(), port))
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            on_failure: OnFailure::FailClosed,
            when_full: WhenFull::DropOldest,
            capacity_events: 10_000_000,
            warn_at_percent: 90,
            read_events: false,
            unauthenticated_events_per_hour: 3600,
            forward: None,
        }
    }
}

impl From<WhenFull> for crate::store::log::WhenFull {
    fn from(w: WhenFull) -> Self {
        match w {
            WhenFull::DropOldest => crate::store::log::WhenFull::DropOldest,
            WhenFull::Refuse => crate::store::log::WhenFull::Refuse,
        }
    }
}

impl AuditConfig {
    /// The log's capacity rule from `[audit]`; `forwarding`: a forwarder
    /// runs, so drop-oldest keeps what it has not delivered.
    pub fn capacity(&self, forwarding: bool) -> Capacity {
        Capacity::new(
            self.capacity_events,
            self.warn_at_percent,
            self.when_full.into(),
            forwarding,
            self.unauthenticated_events_per_hour,
        )
    }
}

/// Checks `[audit]` and resolves the forwarding paths against `base`, the
/// config's directory.
pub(super) fn check(audit: &mut AuditConfig, base: &Path, src: &Source) -> Result<(), ConfigError> {
    if !(1..=99).contains(&audit.warn_at_percent) {
        return Err(src.err(
            &Key::new("audit.warn_at_percent"),
            "must be between 1 and 99",
        ));
    }
    if audit.capacity_events < 1000 {
        return Err(src.err(
            &Key::new("audit.capacity_events"),
            "must be at least 1000 events",
        ));
    }
    let forward = Key::new("audit.forward");
    if let Some(f) = &mut audit.forward {
        let (transport, _, _) = f
            .endpoint()
            .map_err(|e| src.err(&forward.at("target"), e))?;
        if f.facility > 23 {
            return Err(src.err(
                &forward.at("facility"),
                "must be a syslog facility number, 0 to 23",
            ));
        }
        if f.certificate.is_some() != f.key.is_some() {
            let given = if f.certificate.is_some() {
                "certificate"
            } else {
                "key"
            };
            return Err(src.err(
                &forward.at(given),
                "give both certificate and key, or neither",
            ));
        }
        match transport {
            Transport::Tls if f.ca.is_none() => {
                return Err(src.err(
                    &forward.at("ca"),
                    "tls:// needs the CA (PEM) that signed the collector's certificate",
                ));
            }
            Transport::Tcp if f.ca.is_some() || f.certificate.is_some() => {
                return Err(src.err(
                    &forward.at("target"),
                    "ca, certificate and key apply to tls:// only",
                ));
            }
            _ => {}
        }
        for p in [&mut f.ca, &mut f.certificate, &mut f.key]
            .into_iter()
            .flatten()
        {
            *p = base.join(&*p);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The store's default capacity is the default `[audit]`'s.
    #[test]
    fn default_capacity_is_the_default_config() {
        assert_eq!(AuditConfig::default().capacity(false), Capacity::default());
    }
}
