//! `[[meters]]` and `[profiles.NAME]`: the meters behind the gateway, the
//! profiles that say what each allows, and the meter-side accounts.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::model::{AccountRule, MeterAction, MeterSelector, Profile, check_name};

use super::errors::{ConfigError, Key, Source};
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
    id: String,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    address: Option<String>,
    #[serde(default = "one")]
    unit_id: u8,
    profile: String,
    #[serde(default)]
    gateway_unit: Option<u8>,
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
    sftp: Option<ConsoleConfig>,
    #[serde(default)]
    console: Option<ConsoleConfig>,
    #[serde(default)]
    accounts: Option<Vec<AccountRule>>,
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

/// Each meter-side account entry (of the list at `list`) names a role or a
/// permission, not both, and a valid account name.
fn check_accounts(src: &Source, list: &Key, accounts: &[AccountRule]) -> Result<(), ConfigError> {
    for (i, a) in accounts.iter().enumerate() {
        let entry = list.index(i);
        if a.role.is_some() == a.permission.is_some() {
            // Both: the second written is the one too many; neither: the
            // entry lacks one.
            let at = src
                .last_written([entry.at("role"), entry.at("permission")])
                .unwrap_or_else(|| entry.clone());
            return Err(src.err(
                &at,
                format!(
                    "entry {} (account `{}`) names a role or a permission, exactly one",
                    i + 1,
                    a.account
                ),
            ));
        }
        check_name(&a.account)
            .map_err(|e| src.err(&entry.at("account"), format!("entry {}: {e}", i + 1)))?;
    }
    Ok(())
}

/// A register range's function codes and extent; the error names the field
/// at fault (`functions` or `count`).
fn check_range(
    functions: &[u8],
    allowed: &[u8],
    start: u16,
    count: u16,
) -> Result<(), (&'static str, String)> {
    if functions.is_empty() {
        return Err(("functions", "`functions` is empty".into()));
    }
    if let Some(f) = functions.iter().find(|f| !allowed.contains(f)) {
        return Err((
            "functions",
            format!("function code {f} is not allowed here (allowed: {allowed:?})"),
        ));
    }
    if count == 0 || start as u32 + count as u32 > 65_536 {
        return Err((
            "count",
            format!("range start {start} count {count} is empty or runs past register 65535"),
        ));
    }
    Ok(())
}

/// The key of the meter action at `entry` that its problem (see
/// [`MeterAction::problem`], whose order of checks this follows) is about.
fn action_fault(src: &Source, entry: &Key, a: &MeterAction) -> Key {
    let given: Vec<&str> = [
        ("values", !a.values.is_empty()),
        ("choices", !a.choices.is_empty()),
        ("clock", a.clock),
    ]
    .into_iter()
    .filter_map(|(name, given)| given.then_some(name))
    .collect();
    let [what] = given[..] else {
        // None: the entry lacks one; several: the last written is too many.
        return src
            .last_written(given.iter().map(|g| entry.at(g)))
            .unwrap_or_else(|| entry.clone());
    };
    if !matches!(a.function, 6 | 16) {
        return entry.at("function");
    }
    let n = if a.clock {
        6
    } else {
        a.values
            .len()
            .max(a.choices.values().map(Vec::len).max().unwrap_or(0))
    };
    if a.function == 6 && n != 1 {
        return entry.at(what);
    }
    if let Some((name, _)) = a.choices.iter().find(|(_, v)| v.is_empty()) {
        return entry.at("choices").at(name);
    }
    entry.at("address")
}

/// The profiles, checked.
pub(super) fn profiles(
    raw: &BTreeMap<String, Profile>,
    src: &Source,
) -> Result<BTreeMap<String, Profile>, ConfigError> {
    let mut profiles = BTreeMap::new();
    for (name, profile) in raw {
        let key = Key::new("profiles").at(name);
        check_name(name).map_err(|e| src.err(&key, e.to_string()))?;
        for (i, r) in profile.read.iter().enumerate() {
            check_range(&r.functions, &READ_FUNCTIONS, r.start, r.count)
                .map_err(|(field, m)| src.err(&key.at("read").index(i).at(field), m))?;
        }
        for (i, w) in profile.write.iter().enumerate() {
            let entry = key.at("write").index(i);
            check_range(&w.functions, &WRITE_FUNCTIONS, w.start, w.count)
                .map_err(|(field, m)| src.err(&entry.at(field), m))?;
            if w.values.as_ref().is_some_and(|v| v.is_empty()) {
                return Err(src.err(
                    &entry.at("values"),
                    "an empty value list allows nothing; leave `values` out to allow any value",
                ));
            }
        }
        for (j, a) in profile.actions.iter().enumerate() {
            let entry = key.at("actions").index(j);
            if let Some(problem) = a.problem() {
                let at = action_fault(src, &entry, a);
                return Err(src.err_named(&at, &format!("{at} ({})", a.name), problem));
            }
            if profile.actions[..j].iter().any(|b| b.name == a.name) {
                return Err(src.err(
                    &entry.at("name"),
                    format!("action `{}` is defined twice", a.name),
                ));
            }
        }
        check_accounts(src, &key.at("accounts"), &profile.accounts)?;
        for (i, p) in profile.paths.iter().enumerate() {
            if p.pattern.trim_matches('/').is_empty() || p.pattern.contains("..") {
                return Err(src.err(
                    &key.at("paths").index(i).at("pattern"),
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
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let list = Key::new("meters");
    for (i, m) in raw.iter().enumerate() {
        let entry = list.index(i);
        let id = &m.id;
        check_name(id).map_err(|e| src.err(&entry.at("id"), e.to_string()))?;
        if let Some(first) = seen.insert(id, i) {
            return Err(src.err(
                &entry.at("id"),
                format!(
                    "duplicate meter id `{id}` (first at line {})",
                    src.line_of(&list.index(first).at("id"))
                ),
            ));
        }
        let profile = &m.profile;
        if !profiles.contains_key(profile) {
            return Err(src.err(
                &entry.at("profile"),
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
                return Err(src.err(
                    &entry.at("tags").at(k),
                    format!(
                        "tag `{k} = \"{v}\"` must be a name and a value of letters, digits, `.`, `_`, `-`"
                    ),
                ));
            }
        }
        if m.unit_id == 0 || m.unit_id > 247 {
            return Err(src.err(
                &entry.at("unit_id"),
                format!("unit id {} is outside 1-247", m.unit_id),
            ));
        }
        let listener = match &m.listener {
            None => 0,
            Some(l) => modbus_listen.iter().position(|x| x == l).ok_or_else(|| {
                src.err(
                    &entry.at("listener"),
                    format!(
                        "`{l}` is not one of modbus.listen ({})",
                        modbus_listen.join(", ")
                    ),
                )
            })?,
        };
        let gateway_unit = match m.gateway_unit {
            None => None,
            Some(unit) => {
                let key = entry.at("gateway_unit");
                if !(1..=247).contains(&unit) {
                    return Err(src.err(
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
                    return Err(src.err(
                        &key,
                        format!(
                            "gateway unit {unit} is already meter `{}`'s on this listener",
                            other.id
                        ),
                    ));
                }
                if m.address.is_none() {
                    return Err(src.err(
                        &key,
                        "a meter reached through the proxy needs an `address` (host:port)",
                    ));
                }
                Some(unit)
            }
        };
        if m.files.is_some() && m.sftp.is_some() {
            return Err(src.err(
                &entry.at("sftp"),
                "a meter's store is either local (`files`) or upstream (`sftp`), not both",
            ));
        }
        for (what, c) in [("console", &m.console), ("sftp", &m.sftp)]
            .into_iter()
            .filter_map(|(w, c)| c.as_ref().map(|c| (w, c)))
        {
            if russh::keys::PublicKey::from_openssh(&c.host_key).is_err() {
                return Err(src.err(
                    &entry.at(what).at("host_key"),
                    "not an OpenSSH public key line (`ssh-ed25519 AAAA…`): the meter's host key is pinned, never learned",
                ));
            }
            if c.address
                .rsplit_once(':')
                .is_none_or(|(_, p)| p.parse::<u16>().is_err())
            {
                return Err(src.err(
                    &entry.at(what).at("address"),
                    format!("`{}` is not host:port", c.address),
                ));
            }
        }
        if let Some(accounts) = &m.accounts {
            check_accounts(src, &entry.at("accounts"), accounts)?;
        }
        if m.max_connections == 0 {
            return Err(src.err(&entry.at("max_connections"), "must be at least 1"));
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
            sftp: m.sftp.clone(),
            console: m.console.clone(),
            accounts: m.accounts.clone(),
        });
    }
    Ok(meters)
}
