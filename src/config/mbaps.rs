//! `[mbaps]`: the Modbus/TCP Security listeners (TLS with client
//! certificates), their certificate, key, client CA and CRL.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::pki::NameFrom;

use super::errors::{ConfigError, Key, Source};
use super::interval::Interval;

/// Modbus/TCP Security listeners (TLS, mutual authentication).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MbapsConfig {
    /// Addresses; the i-th serves the same meters as `modbus.listen[i]`.
    pub listen: Vec<String>,
    /// The gateway's certificate chain (PEM).
    pub certificate: PathBuf,
    pub key: PathBuf,
    /// The CAs client certificates must chain to (default: `ca.crt` beside
    /// the gateway's certificate, i.e. the gateway's own CA).
    pub client_ca: PathBuf,
    /// The CRL, re-read when it changes (default: `crl.pem` beside the
    /// client CA); a missing file means nothing is revoked yet.
    pub crl: PathBuf,
    /// Where a client certificate names its service user.
    pub name_from: NameFrom,
    pub handshake_timeout: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMbaps {
    #[serde(default)]
    listen: Vec<String>,
    #[serde(default)]
    certificate: Option<PathBuf>,
    #[serde(default)]
    key: Option<PathBuf>,
    #[serde(default)]
    client_ca: Option<PathBuf>,
    #[serde(default)]
    crl: Option<PathBuf>,
    #[serde(default)]
    identity: NameFrom,
    #[serde(default)]
    handshake_timeout: Option<Interval>,
}

/// A TLS listener's certificate and key (both required), resolved against
/// `base`; shared by `[mbaps]` and `[api]`.
pub(super) fn certificate_and_key(
    certificate: Option<PathBuf>,
    key: Option<PathBuf>,
    section: &Key,
    base: &Path,
    src: &Source,
) -> Result<(PathBuf, PathBuf), ConfigError> {
    let abs = |p: PathBuf| if p.is_relative() { base.join(p) } else { p };
    let certificate = abs(certificate.ok_or_else(|| {
        src.err(
            &section.at("certificate"),
            "missing: the gateway's certificate (PEM), e.g. from `metergate cert server`",
        )
    })?);
    let key = abs(key.ok_or_else(|| {
        src.err(
            &section.at("key"),
            "missing: the gateway's private key (PEM)",
        )
    })?);
    Ok((certificate, key))
}

/// The `[mbaps]` section, checked: None when there is none or it has no
/// listener. `plain_listeners` is the number of `modbus.listen` entries.
pub(super) fn mbaps(
    raw: Option<RawMbaps>,
    base: &Path,
    plain_listeners: usize,
    src: &Source,
) -> Result<Option<MbapsConfig>, ConfigError> {
    let Some(m) = raw.filter(|m| !m.listen.is_empty()) else {
        return Ok(None);
    };
    let section = Key::new("mbaps");
    for (i, l) in m.listen.iter().enumerate() {
        if l.parse::<std::net::SocketAddr>().is_err() {
            return Err(src.err(
                &section.at("listen").index(i),
                format!("`{l}` is not an address such as 0.0.0.0:802 or [::1]:8802"),
            ));
        }
    }
    if m.listen.len() > plain_listeners.max(1) {
        return Err(src.err(
            &section.at("listen"),
            format!(
                "{} TLS listeners but {} unit maps: the i-th TLS listener serves the meters of modbus.listen[i]",
                m.listen.len(),
                plain_listeners.max(1)
            ),
        ));
    }
    let abs = |p: PathBuf| if p.is_relative() { base.join(p) } else { p };
    let (certificate, key) = certificate_and_key(m.certificate, m.key, &section, base, src)?;
    let client_ca = match m.client_ca {
        Some(p) => abs(p),
        None => certificate
            .parent()
            .unwrap_or(Path::new("."))
            .join("ca.crt"),
    };
    let crl = match m.crl {
        Some(p) => abs(p),
        None => client_ca.parent().unwrap_or(Path::new(".")).join("crl.pem"),
    };
    let handshake_timeout = m
        .handshake_timeout
        .map(|i| i.0)
        .unwrap_or(Duration::from_secs(10));
    if handshake_timeout.is_zero() {
        return Err(src.err(&section.at("handshake_timeout"), "must be at least 1s"));
    }
    // A missing CRL would lift every revocation: refuse to start rather
    // than serve a revoked certificate (the CA folder always has one).
    if !crl.exists() {
        return Err(src.err(
            &section.at("crl"),
            format!(
                "{} does not exist: without it a revoked certificate would be accepted; point mbaps.crl at the CA's crl.pem (written by `metergate cert init-ca` and each `cert revoke`)",
                crl.display()
            ),
        ));
    }
    Ok(Some(MbapsConfig {
        listen: m.listen,
        certificate,
        key,
        client_ca,
        crl,
        name_from: m.identity,
        handshake_timeout,
    }))
}
