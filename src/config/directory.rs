//! `[directory]`: where identities and policies live — sled in the state
//! directory (one gateway), or PostgreSQL shared by many gateways.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::errors::{ConfigError, Key, Source};
use super::interval::Interval;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    #[default]
    Local,
    Postgres,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDirectory {
    #[serde(default)]
    pub backend: Backend,
    /// `postgres://USER@HOST:PORT/DATABASE` (no password in it).
    pub url: Option<String>,
    /// This gateway's name, unique among the gateways sharing the directory.
    pub gateway: Option<String>,
    /// PEM file of the CA that signed the server's certificate (pinned).
    pub ca: Option<PathBuf>,
    /// A file holding the database password (0600), never the password.
    pub password_file: Option<PathBuf>,
    /// How long decisions go on from the last snapshot while the server
    /// cannot be reached; beyond it new logins are refused.
    pub max_stale: Option<Interval>,
    /// Connections kept for changes and reads (the follower has its own).
    pub pool_size: Option<usize>,
}

/// The PostgreSQL directory, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostgresDirectory {
    pub url: String,
    pub gateway: String,
    pub ca: PathBuf,
    pub password_file: Option<PathBuf>,
    pub max_stale: Duration,
    pub pool_size: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum DirectoryConfig {
    #[default]
    Local,
    Postgres(PostgresDirectory),
}

/// Decisions on a snapshot older than this are what a leaver deactivated
/// elsewhere could still use: an hour bounds that, and rides out a
/// database failover or a maintenance window.
const DEFAULT_MAX_STALE: Duration = Duration::from_secs(3600);

pub(super) fn directory(
    raw: &Option<RawDirectory>,
    base: &Path,
    src: &Source,
) -> Result<DirectoryConfig, ConfigError> {
    let Some(d) = raw else {
        return Ok(DirectoryConfig::Local);
    };
    let key = |k: &str| Key::new("directory").at(k);
    if d.backend == Backend::Local {
        for (name, given) in [
            ("url", d.url.is_some()),
            ("gateway", d.gateway.is_some()),
            ("ca", d.ca.is_some()),
            ("password_file", d.password_file.is_some()),
            ("max_stale", d.max_stale.is_some()),
            ("pool_size", d.pool_size.is_some()),
        ] {
            if given {
                return Err(src.err(
                    &key(name),
                    "belongs to backend = \"postgres\"; the local directory has no such setting",
                ));
            }
        }
        return Ok(DirectoryConfig::Local);
    }
    let abs = |p: &PathBuf| {
        if p.is_relative() {
            base.join(p)
        } else {
            p.clone()
        }
    };
    let url = d.url.clone().ok_or_else(|| {
        src.err(
            &key("url"),
            "is missing: give postgres://USER@HOST:PORT/DATABASE",
        )
    })?;
    let parsed: tokio_postgres::Config = url.parse().map_err(|e| {
        src.err(
            &key("url"),
            format!("is not a PostgreSQL URL: {e} (give postgres://USER@HOST:PORT/DATABASE)"),
        )
    })?;
    // A password in the URL would sit in a file many can read and in
    // every error that quotes it: it belongs in password_file.
    if parsed.get_password().is_some() {
        return Err(src.err(
            &key("url"),
            "must not carry a password: put it in password_file (0600)",
        ));
    }
    if parsed.get_hosts().is_empty() || parsed.get_user().is_none() {
        return Err(src.err(
            &key("url"),
            "must name the host and the user: postgres://USER@HOST:PORT/DATABASE",
        ));
    }
    let gateway = d.gateway.clone().ok_or_else(|| {
        src.err(
            &key("gateway"),
            "is missing: name this gateway, e.g. \"site-north-1\"",
        )
    })?;
    if gateway.is_empty()
        || gateway.len() > 64
        || !gateway
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(src.err(
            &key("gateway"),
            format!("`{gateway}`: use 1 to 64 letters, digits, '-', '_' or '.'"),
        ));
    }
    // The directory holds password hashes and policies: the server is
    // always reached over TLS, and only a server our CA signed will do.
    let ca = d.ca.as_ref().map(abs).ok_or_else(|| {
        src.err(
            &key("ca"),
            "is missing: give the PEM file of the CA that signed the server's certificate (TLS is required)",
        )
    })?;
    if let Err(e) = std::fs::metadata(&ca) {
        return Err(src.err(&key("ca"), format!("cannot read {}: {e}", ca.display())));
    }
    let max_stale = d.max_stale.map(|i| i.0).unwrap_or(DEFAULT_MAX_STALE);
    if max_stale < Duration::from_secs(10) {
        return Err(src.err(&key("max_stale"), "must be at least 10s"));
    }
    let pool_size = d.pool_size.unwrap_or(4);
    if !(1..=64).contains(&pool_size) {
        return Err(src.err(&key("pool_size"), "must be between 1 and 64"));
    }
    Ok(DirectoryConfig::Postgres(PostgresDirectory {
        url,
        gateway,
        ca,
        password_file: d.password_file.as_ref().map(abs),
        max_stale,
        pool_size,
    }))
}
