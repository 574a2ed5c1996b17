//! `[api]`: the HTTPS listener of the admin API (and, later, the web
//! console): its address, certificate and key, an optional client CA for
//! mutual TLS, and the bearer tokens' lifetime.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::errors::{ConfigError, Key, Source};
use super::interval::Interval;

/// The HTTPS admin API. There is no plain-HTTP listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiConfig {
    pub listen: std::net::SocketAddr,
    /// The gateway's certificate chain (PEM), e.g. from `metergate cert
    /// server`.
    pub certificate: PathBuf,
    pub key: PathBuf,
    /// When set, clients must present a certificate chaining to it.
    pub client_ca: Option<PathBuf>,
    /// How long a bearer token lives (default 1h).
    pub token_lifetime: Duration,
    /// The TLS handshake within this of accept (a request's headers then
    /// have 10 s, a connection 5 minutes).
    pub handshake_timeout: Duration,
    /// Requests one token may make per second (429 beyond, with
    /// Retry-After).
    pub requests_per_second: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApi {
    listen: Option<String>,
    #[serde(default)]
    certificate: Option<PathBuf>,
    #[serde(default)]
    key: Option<PathBuf>,
    #[serde(default)]
    client_ca: Option<PathBuf>,
    #[serde(default)]
    token_lifetime: Option<Interval>,
    #[serde(default)]
    handshake_timeout: Option<Interval>,
    #[serde(default)]
    requests_per_second: Option<u32>,
}

/// The `[api]` section, checked: None when there is none or it has no
/// listener.
pub(super) fn api(
    raw: Option<RawApi>,
    base: &Path,
    src: &Source,
) -> Result<Option<ApiConfig>, ConfigError> {
    let Some(a) = raw else {
        return Ok(None);
    };
    let Some(listen) = &a.listen else {
        return Ok(None);
    };
    let section = Key::new("api");
    let listen = listen.parse().map_err(|_| {
        src.err(
            &section.at("listen"),
            format!("`{listen}` is not an address such as 127.0.0.1:8443 or [::1]:8443"),
        )
    })?;
    let abs = |p: PathBuf| if p.is_relative() { base.join(p) } else { p };
    let (certificate, key) =
        super::mbaps::certificate_and_key(a.certificate, a.key, &section, base, src)?;
    let token_lifetime = a.token_lifetime.map_or(Duration::from_secs(3600), |i| i.0);
    // A day at most: a token is a bearer secret, and its key's removal
    // ends it anyway; a long lifetime only widens what a leak gives.
    if token_lifetime.is_zero() || token_lifetime > Duration::from_secs(24 * 3600) {
        return Err(src.err(&section.at("token_lifetime"), "must be between 1s and 24h"));
    }
    let handshake_timeout = a.handshake_timeout.map_or(Duration::from_secs(10), |i| i.0);
    if handshake_timeout.is_zero() {
        return Err(src.err(&section.at("handshake_timeout"), "must be at least 1s"));
    }
    let requests_per_second = a.requests_per_second.unwrap_or(50);
    if requests_per_second == 0 {
        return Err(src.err(&section.at("requests_per_second"), "must be at least 1"));
    }
    Ok(Some(ApiConfig {
        listen,
        certificate,
        key,
        client_ca: a.client_ca.map(abs),
        token_lifetime,
        handshake_timeout,
        requests_per_second,
    }))
}
