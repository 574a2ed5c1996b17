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
