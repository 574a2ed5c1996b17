//! Meters and their profiles: which registers Data View may read, which
//! (function, range, values) each write permission allows, and which
//! permissions reach which parts of the meter's file tree.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::permission::Permission;
use super::policy::glob_match;

/// A meter behind the gateway.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meter {
    pub id: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    pub profile: String,
}

/// Registers Data View may read with the listed function codes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadRule {
    pub functions: Vec<u8>,
    pub start: u16,
    pub count: u16,
}

/// One allowlist entry of a write permission. Several meter actions share one
/// command register and differ only by the value written, so `values`
/// matters: when present, only those values are allowed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteRule {
    pub permission: Permission,
    pub functions: Vec<u8>,
    pub start: u16,
    pub count: u16,
    #[serde(default)]
    pub values: Option<Vec<u16>>,
}

impl WriteRule {
    pub fn covers(&self, function: u8, address: u16) -> bool {
        self.functions.contains(&function)
            && address >= self.start
            && (address as u32) < self.start as u32 + self.count as u32
    }
}

impl ReadRule {
    pub fn covers(&self, function: u8, start: u16, count: u16) -> bool {
        self.functions.contains(&function)
            && start >= self.start
            && start as u32 + count as u32 <= self.start as u32 + self.count as u32
    }
}

/// Which permissions may read and which may write the paths a pattern
/// matches (`*` within one path segment, `**` across segments).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathRule {
    pub pattern: String,
    pub read: Vec<Permission>,
    pub write: Vec<Permission>,
}

/// What a meter allows, by permission; the guard evaluates it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub read: Vec<ReadRule>,
    #[serde(default)]
    pub write: Vec<WriteRule>,
    #[serde(default)]
    pub paths: Vec<PathRule>,
    /// Named meter actions for the shell (`reset-peak-demand METER`): each
    /// is a register write, so the write allowlist above decides which
    /// permission it needs.
    #[serde(default)]
    pub actions: Vec<MeterAction>,
    /// Meter-side accounts for console and file sessions, least privileged
    /// first (DESIGN §2); a meter's own list replaces its profile's.
    #[serde(default)]
    pub accounts: Vec<AccountRule>,
}

/// A named meter action: what register write it makes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeterAction {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// 6 (one register) or 16 (several).
    pub function: u8,
    pub address: u16,
    /// What it writes: fixed `values`, one list per argument in `choices`
    /// (`test-mode METER on`), or the gateway's UTC clock as year, month,
    /// day, hour, minute, second (`clock = true`).
    #[serde(default)]
    pub values: Vec<u16>,
    #[serde(default)]
    pub choices: BTreeMap<String, Vec<u16>>,
    #[serde(default)]
    pub clock: bool,
}

impl MeterAction {
    /// Why the action is ill-formed, if it is.
    pub fn problem(&self) -> Option<String> {
        let kinds = usize::from(!self.values.is_empty())
            + usize::from(!self.choices.is_empty())
            + usize::from(self.clock);
        if kinds != 1 {
            return Some("give exactly one of `values`, `choices` or `clock = true`".into());
        }
        if !matches!(self.function, 6 | 16) {
            return Some(format!(
                "function {} is not a register write (6 or 16)",
                self.function
            ));
        }
        let n = if self.clock {
            6
        } else {
            self.values
                .len()
                .max(self.choices.values().map(Vec::len).max().unwrap_or(0))
        };
        if self.function == 6 && n != 1 {
            return Some("function 6 writes exactly one register".into());
        }
        if self.choices.values().any(Vec::is_empty) {
            return Some("a choice writes at least one value".into());
        }
        if self.address as usize + n > 0x1_0000 {
            return Some("the write runs past register 65535".into());
        }
        None
    }

    /// The values to write for `argument` at `now` (UTC), or why not.
    pub fn values_for(
        &self,
        argument: Option<&str>,
        now: time::OffsetDateTime,
    ) -> Result<Vec<u16>, String> {
        if self.clock {
            let now = now.to_offset(time::UtcOffset::UTC);
            return Ok(vec![
                u16::try_from(now.year()).unwrap_or(0),
                u16::from(u8::from(now.month())),
                u16::from(now.day()),
                u16::from(now.hour()),
                u16::from(now.minute()),
                u16::from(now.second()),
            ]);
        }
        if !self.choices.is_empty() {
            let names = || self.choices.keys().cloned().collect::<Vec<_>>().join("|");
            return match argument {
                Some(a) => self
                    .choices
                    .get(a)
                    .cloned()
                    .ok_or_else(|| format!("`{}` takes {}", self.name, names())),
                None => Err(format!("`{}` takes {}", self.name, names())),
            };
        }
        Ok(self.values.clone())
    }
}

/// One meter-side account mapping: callers holding `role` on the meter, or
/// using `permission`, log in to the meter as `account`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountRule {
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub permission: Option<Permission>,
    pub account: String,
}

/// What a file operation does, for the permission it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileOp {
    List,
    Stat,
    Read,
    Write,
    Create,
    Rename,
    Remove,
    Mkdir,
    Rmdir,
    SetStat,
}

impl FileOp {
    pub fn is_read(self) -> bool {
        matches!(self, FileOp::List | FileOp::Stat | FileOp::Read)
    }
}

impl Profile {
    /// The permissions that may do `op` on `path` (relative to the meter's
    /// root): the first path rule that matches, else the general file system
    /// permissions.
    pub fn file_permissions(&self, op: FileOp, path: &str) -> Vec<Permission> {
        let path = path.trim_matches('/');
        match self
            .paths
            .iter()
            .find(|r| path_glob_match(&r.pattern, path))
        {
            Some(rule) if op.is_read() => rule.read.clone(),
            Some(rule) => rule.write.clone(),
            None if op.is_read() => vec![
                Permission::FileSystemReadOnlyAccess,
                Permission::FileSystemReadAndWriteAccess,
            ],
            None => vec![Permission::FileSystemReadAndWriteAccess],
        }
    }

    /// The function codes this profile knows at all (reads and writes).
    pub fn functions(&self) -> Vec<u8> {
        let mut f: Vec<u8> = self
            .read
            .iter()
            .flat_map(|r| r.functions.iter().copied())
            .chain(self.write.iter().flat_map(|w| w.functions.iter().copied()))
            .collect();
        f.sort_unstable();
        f.dedup();
        f
    }
}

/// Matches a path against a pattern segment by segment: `**` matches any
/// number of segments (none included), other segments are globs.
pub fn path_glob_match(pattern: &str, path: &str) -> bool {
    let pat: Vec<&str> = pattern
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match_segments(&pat, &segs)
}

fn match_segments(pat: &[&str], segs: &[&str]) -> bool {
    match pat.split_first() {
        None => segs.is_empty(),
        Some((&"**", rest)) => (0..=segs.len()).any(|skip| match_segments(rest, &segs[skip..])),
        Some((p, rest)) => match segs.split_first() {
            Some((s, more)) => glob_match(p.as_bytes(), s.as_bytes()) && match_segments(rest, more),
            None => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_patterns() {
        for (pat, path, expected) in [
            ("firmware/**", "firmware", true),
            ("firmware/**", "firmware/a/b.bin", true),
            ("firmware/**", "firmware-evil/x", false),
            ("logs/*.log", "logs/events.log", true),
            ("logs/*.log", "logs/sub/events.log", false),
            ("**/*.csv", "logs/energy.csv", true),
        ] {
            assert_eq!(path_glob_match(pat, path), expected, "{pat} vs {path}");
        }
    }
}
