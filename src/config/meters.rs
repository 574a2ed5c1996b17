//! `[[meters]]` and `[profiles.NAME]`: the meters behind the gateway, the
//! profiles that say what each allows, and the meter-side accounts.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::model::{AccountRule, MeterSelector, Profile, check_name};

use super::errors::{ConfigError, Source};
use super::interval::Interval;

/// A meter as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeterConfig {
    pub id: String,
    pub tags: BTreeMap<String, String>,
    /// Where the meter answers Modbus/TCP (`host:port`).
    pub address: Option<String>,
    pub unit_id: u8,
    pub profile: String,
    /// The unit id SCADA uses to reach this meter through the proxy.
    pub gateway_unit: Option<u8>,
    /// Which listener's unit map it is in (index into `modbus.listen`).
    pub listener: usize,
    /// Connections the gateway opens to the meter at most (meters accept
    /// about 8 in all).
    pub max_connections: usize,
    /// How long the meter has to answer one request.
    pub timeout: Duration,
    /// Requests the gateway may have in flight on one connection to the
    /// meter (1: one at a time, safe for meters that cannot queue them).
    pub pipeline: usize,
    /// The meter's SFTP file store on the gateway's disk (a directory).
    pub files: Option<PathBuf>,
    /// Or the meter's own SFTP server, reached as a meter-side account.
    pub sftp: Option<ConsoleConfig>,
    /// The meter's SSH console, if it has one.
    pub console: Option<ConsoleConfig>,
    /// Meter-side accounts replacing the profile's list.
    pub accounts: Option<Vec<AccountRule>>,
}

/// A meter's SSH console (Terminal Access): where it answers and its pinned
/// host key (OpenSSH public key line; no trust on first use).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    pub address: String,
    pub host_key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMeter {
    id: Spanned<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    address: Option<String>,
    #[serde(default = "one")]
    unit_id: u8,
    profile: Spanned<String>,
    #[serde(default)]
    gateway_unit: Option<Spanned<u8>>,
    #[serde(default)]
    listener: Option<String>,
    #[serde(default = "two")]
    max_connections: usize,
    #[serde(default)]
    timeout: Option<Interval>,
    #[serde(default = "one_usize")]
    pipeline: usize,
    #[serde(default)]
    files: Option<PathBuf>,
    #[serde(default)]
    sftp: Option<Spanned<ConsoleConfig>>,
    #[serde(default)]
    console: Option<Spanned<ConsoleConfig>>,
    #[serde(default)]
    accounts: Option<Spanned<Vec<AccountRule>>>,
}

fn one_usize() -> usize {
    1
}

fn two() -> usize {
    2
}

fn one() -> u8 {
    1
}

const WRITE_FUNCTIONS: [u8; 7] = [5, 6, 15, 16, 21, 22, 23];
const READ_FUNCTIONS: [u8; 5] = [1, 2, 3, 4, 23];

/// Each meter-side account entry names a role or a permission, not both.
fn check_accounts(accounts: &[AccountRule]) -> Result<(), String> {
    for (i, a) in accounts.iter().enumerate() {
        if a.role.is_some() == a.permission.is_some() {
            return Err(format!(
                "entry {} (account `{}`) names a role or a permission, exactly one",
                i + 1,
                a.account
            ));
        }
        check_name(&a.account).map_err(|e| format!("entry {}: {e}", i + 1))?;
    }
    Ok(())
}

fn check_range(functions: &[u8], allowed: &[u8], start: u16, count: u16) -> Result<(), String> {
    if functions.is_empty() {
        return Err("`functions` is empty".into());
    }
    if let Some(f) = functions.iter().find(|f| !allowed.contains(f)) {
        return Err(format!(
            "function code {f} is not allowed here (allowed: {allowed:?})"
        ));
    }
    if count == 0 || start as u32 + count as u32 > 65_536 {
        return Err(format!(
            "range start {start} count {count} is empty or runs past register 65535"
        ));
    }
    Ok(())
}

/// The profiles, checked.
pub(super) fn profiles(
    raw: &BTreeMap<String, Spanned<Profile>>,
    src: &Source,
) -> Result<BTreeMap<String, Profile>, ConfigError> {
    let mut profiles = BTreeMap::new();
    for (name, spanned) in raw {
        let at = spanned.span().start;
        let key = format!("profiles.{name}");
        check_name(name).map_err(|e| src.err_at(at, &key, e.to_string()))?;
        let profile = spanned.get_ref();
        for (i, r) in profile.read.iter().enumerate() {
            check_range(&r.functions, &READ_FUNCTIONS, r.start, r.count)
                .map_err(|m| src.err_at(at, &format!("{key}.read[{i}]"), m))?;
        }
        for (i, w) in profile.write.iter().enumerate() {
            check_range(&w.functions, &WRITE_FUNCTIONS, w.start, w.count)
                .map_err(|m| src.err_at(at, &format!("{key}.write[{i}]"), m))?;
            if w.values.as_ref().is_some_and(|v| v.is_empty()) {
                return Err(src.err_at(
                    at,
                    &format!("{key}.write[{i}].values"),
                    "an empty value list allows nothing; leave `values` out to allow any value"
                        .into(),
                ));
            }
        }
        for (j, a) in profile.actions.iter().enumerate() {
            if let Some(problem) = a.problem() {
                return Err(src.err_at(at, &format!("{key}.actions[{j}] ({})", a.name), problem));
            }
            if profile.actions[..j].iter().any(|b| b.name == a.name) {
                return Err(src.err_at(
                    at,
                    &format!("{key}.actions[{j}]"),
                    format!("action `{}` is defined twice", a.name),
                ));
            }
        }
        check_accounts(&profile.accounts)
            .map_err(|e| src.err_at(at, &format!("{key}.accounts"), e))?;
        for (i, p) in profile.paths.iter().enumerate() {
            if p.pattern.trim_matches('/').is_empty() || p.pattern.contains("..") {
                return Err(src.err_at(
                    at,
                    &format!("{key}.paths[{i}].pattern"),
                    format!(
                        "`{}` is not a path pattern under the meter's root",
                        p.pattern
                    ),
                ));
            }
        }
        profiles.insert(name.clone(), profile.clone());
    }
    Ok(profiles)
}

/// The meters, checked against the profiles and the plain listeners
/// (`modbus.listen`); relative file stores are resolved against `base`.
pub(super) fn meters(
    raw: &[RawMeter],
    profiles: &BTreeMap<String, Profile>,
    modbus_listen: &[String],
    base: &Path,
    src: &Source,
) -> Result<Vec<MeterConfig>, ConfigError> {
    let mut meters = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, m) in raw.iter().enumerate() {
        let id = m.id.get_ref();
        let at = m.id.span().start;
        check_name(id).map_err(|e| src.err_at(at, &format!("meters[{i}].id"), e.to_string()))?;
        if let Some(first) = seen.insert(id.clone(), at) {
            return Err(src.err_at(
                at,
                &format!("meters[{i}].id"),
                format!(
                    "duplicate meter id `{id}` (first at line {})",
                    src.line(first)
                ),
            ));
        }
        let profile = m.profile.get_ref();
        if !profiles.contains_key(profile) {
            return Err(src.err_at(
                m.profile.span().start,
                &format!("meters[{i}].profile"),
                if profiles.is_empty() {
                    format!("unknown profile `{profile}` (no [profiles.NAME] is defined)")
                } else {
                    format!(
                        "unknown profile `{profile}` (defined: {})",
                        profiles.keys().cloned().collect::<Vec<_>>().join(", ")
                    )
                },
            ));
        }
        for (k, v) in &m.tags {
            if check_name(k).is_err() || MeterSelector::parse(&format!("{k}={v}")).is_err() {
                return Err(src.err_at(
                    at,
                    &format!("meters[{i}].tags.{k}"),
                    format!(
                        "tag `{k} = \"{v}\"` must be a name and a value of letters, digits, `.`, `_`, `-`"
                    ),
                ));
            }
        }
        if m.unit_id == 0 || m.unit_id > 247 {
            return Err(src.err_at(
                at,
                &format!("meters[{i}].unit_id"),
                format!("unit id {} is outside 1-247", m.unit_id),
            ));
        }
        let listener = match &m.listener {
            None => 0,
            Some(l) => modbus_listen.iter().position(|x| x == l).ok_or_else(|| {
                src.err_at(
                    at,
                    &format!("meters[{i}].listener"),
                    format!(
                        "`{l}` is not one of modbus.listen ({})",
                        modbus_listen.join(", ")
                    ),
                )
            })?,
        };
        let gateway_unit = match &m.gateway_unit {
            None => None,
            Some(u) => {
                let unit = *u.get_ref();
                let key = format!("meters[{i}].gateway_unit");
                if !(1..=247).contains(&unit) {
                    return Err(src.err_at(
                        u.span().start,
                        &key,
                        format!(
                            "unit {unit} is outside 1-247 (0 is broadcast, 248-255 are reserved)"
                        ),
                    ));
                }
                if let Some(other) = meters
                    .iter()
                    .find(|o: &&MeterConfig| o.listener == listener && o.gateway_unit == Some(unit))
                {
                    return Err(src.err_at(
                        u.span().start,
                        &key,
                        format!(
                            "gateway unit {unit} is already meter `{}`'s on this listener",
                            other.id
                        ),
                    ));
                }
                if m.address.is_none() {
                    return Err(src.err_at(
                        u.span().start,
                        &key,
                        "a meter reached through the proxy needs an `address` (host:port)".into(),
                    ));
                }
                Some(unit)
            }
        };
        if let (Some(_), Some(s)) = (&m.files, &m.sftp) {
            return Err(src.err_at(
                s.span().start,
                &format!("meters[{i}].sftp"),
                "a meter's store is either local (`files`) or upstream (`sftp`), not both".into(),
            ));
        }
        for (what, spanned) in [("console", &m.console), ("sftp", &m.sftp)]
            .into_iter()
            .filter_map(|(w, c)| c.as_ref().map(|c| (w, c)))
        {
            let (c, at) = (spanned.get_ref(), spanned.span().start);
            if russh::keys::PublicKey::from_openssh(&c.host_key).is_err() {
                return Err(src.err_at(
                    at,
                    &format!("meters[{i}].{what}.host_key"),
                    "not an OpenSSH public key line (`ssh-ed25519 AAAA…`): the meter's host key is pinned, never learned".into(),
                ));
            }
            if c.address
                .rsplit_once(':')
                .is_none_or(|(_, p)| p.parse::<u16>().is_err())
            {
                return Err(src.err_at(
                    at,
                    &format!("meters[{i}].{what}.address"),
                    format!("`{}` is not host:port", c.address),
                ));
            }
        }
        if let Some(accounts) = &m.accounts {
            check_accounts(accounts.get_ref()).map_err(|e| {
                src.err_at(accounts.span().start, &format!("meters[{i}].accounts"), e)
            })?;
        }
        if m.max_connections == 0 {
            return Err(src.err_at(
                at,
                &format!("meters[{i}].max_connections"),
                "must be at least 1".into(),
            ));
        }
        meters.push(MeterConfig {
            id: id.clone(),
            tags: m.tags.clone(),
            address: m.address.clone(),
            unit_id: m.unit_id,
            profile: profile.clone(),
            gateway_unit,
            listener,
            max_connections: m.max_connections,
            timeout: m.timeout.map(|t| t.0).unwrap_or(Duration::from_secs(1)),
            pipeline: m.pipeline.clamp(1, 64),
            files: m.files.as_ref().map(|f| base.join(f)),
            sftp: m.sftp.as_ref().map(|c| c.get_ref().clone()),
            console: m.console.as_ref().map(|c| c.get_ref().clone()),
            accounts: m.accounts.as_ref().map(|a| a.get_ref().clone()),
        });
    }
    Ok(meters)
}
