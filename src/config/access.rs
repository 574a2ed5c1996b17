//! `[support]`, `[[separation_of_duties]]`, `[review]`: bounds beside the
//! policies (the vendor's reach, exclusive permissions, review schedule).

use serde::Deserialize;

use crate::model::{MeterSelector, Permission};

use super::errors::{ConfigError, Key, Source};
use super::interval::Interval;

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SupportConfig {
    /// The vendor's SSH public keys (OpenSSH lines).
    pub keys: Vec<String>,
    /// The meters support may ever reach, whatever its policies say (the
    /// site owner's boundary on the vendor). Default: every meter.
    pub meters: Option<Vec<MeterSelector>>,
}

/// When `review` says a review is due, and when an account counts as unused
/// ("audit users and roles on a schedule and after staff changes").
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReviewConfig {
    pub interval: Interval,
    pub unused_after: Interval,
}

impl Default for ReviewConfig {
    fn default() -> Self {
        let ninety = Interval(std::time::Duration::from_secs(90 * 86_400));
        ReviewConfig {
            interval: ninety,
            unused_after: ninety,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSod {
    permissions: Vec<Permission>,
}

/// The separation-of-duties pairs, checked.
pub(super) fn separation_of_duties(
    raw: &[RawSod],
    src: &Source,
) -> Result<Vec<(Permission, Permission)>, ConfigError> {
    let mut pairs = Vec::new();
    for (i, sod) in raw.iter().enumerate() {
        let p = &sod.permissions;
        if p.len() != 2 || p[0] == p[1] {
            return Err(src.err(
                &Key::new("separation_of_duties").index(i).at("permissions"),
                "a separation-of-duties entry names exactly two different permissions",
            ));
        }
        pairs.push((p[0], p[1]));
    }
    Ok(pairs)
}

/// Checks support's SSH keys.
pub(super) fn check_support(support: &SupportConfig, src: &Source) -> Result<(), ConfigError> {
    for (i, k) in support.keys.iter().enumerate() {
        if russh::keys::PublicKey::from_openssh(k).is_err() {
            return Err(src.err(
                &Key::new("support.keys").index(i),
                "not an OpenSSH public key line (`ssh-ed25519 AAAA… comment`)",
            ));
        }
    }
    Ok(())
}
