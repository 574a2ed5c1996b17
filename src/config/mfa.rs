//! `[mfa]`: when people must have proved a second factor (TOTP) to use a
//! permission, beyond the statements that say `require_mfa = true`.

use serde::Deserialize;

use super::errors::{ConfigError, Key, Source};
use crate::model::Permission;

/// Which permissions need a second factor, whatever the statements say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MfaRequired {
    /// Only statements with `require_mfa = true`. The default: turning a
    /// requirement on before people have enrolled would lock
    /// administrators out of what they manage.
    #[default]
    Never,
    /// The permissions that change a meter's behaviour or who may reach it
    /// ([`Permission::is_privileged`]), plus the statements that say so.
    ForPrivileged,
    /// Every permission: a person without a factor may only enrol one.
    Always,
}

impl MfaRequired {
    /// Whether this setting alone asks a second factor for `p`.
    pub fn requires(self, p: Permission) -> bool {
        match self {
            MfaRequired::Never => false,
            MfaRequired::ForPrivileged => p.is_privileged(),
            MfaRequired::Always => true,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MfaConfig {
    pub required: MfaRequired,
    /// The name authenticator apps show for the gateway's codes.
    pub issuer: String,
}

impl Default for MfaConfig {
    fn default() -> Self {
        MfaConfig {
            required: MfaRequired::Never,
            issuer: "metergate".into(),
        }
    }
}

pub(super) fn check(mfa: &MfaConfig, src: &Source) -> Result<(), ConfigError> {
    let issuer = &mfa.issuer;
    if issuer.is_empty()
        || issuer.len() > 64
        || issuer.contains(':')
        || issuer.chars().any(char::is_control)
    {
        return Err(src.err(
            &Key::new("mfa").at("issuer"),
            "must be 1-64 characters without `:` or control characters (authenticator apps split the label at `:`)",
        ));
    }
    Ok(())
}
