//! Permission policies: statements of {effect, permissions and/or roles,
//! meters}, meter selectors, the managed policies, and the policy file format.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::permission::{Permission, PermissionSet};
use super::principal::check_name;

/// Name of the managed policy that holds every permission on every meter and
/// may make API calls (the break-glass path).
pub const ADMINISTRATOR: &str = "Administrator";
/// Name of the managed read-only policy (no API calls, no security logs).
pub const READ_ONLY: &str = "ReadOnly";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    Allow,
    Deny,
}

/// Which meters a statement is about: an id, a glob over ids, or a tag match.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MeterSelector {
    /// `*`: every meter.
    All,
    /// An exact meter id.
    Id(String),
    /// A glob over meter ids with `*` and `?`.
    Glob(String),
    /// `key=value`: meters whose tag `key` has that value.
    Tag(String, String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a meter selector: use a meter id, a glob such as `meter-*`, `*`, or a tag match such as `site=north`"
)]
pub struct BadSelector(pub String);

impl MeterSelector {
    pub fn parse(text: &str) -> Result<MeterSelector, BadSelector> {
        let bad = || BadSelector(text.to_string());
        let t = text.trim();
        if t == "*" {
            return Ok(MeterSelector::All);
        }
        if let Some((k, v)) = t.split_once('=') {
            let (k, v) = (k.trim(), v.trim());
            check_name(k).map_err(|_| bad())?;
            if v.is_empty()
                || !v
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            {
                return Err(bad());
            }
            return Ok(MeterSelector::Tag(k.to_string(), v.to_string()));
        }
        if t.contains(['*', '?']) {
            let ok = !t.is_empty()
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-*?".contains(c));
            return if ok {
                Ok(MeterSelector::Glob(t.to_string()))
            } else {
                Err(bad())
            };
        }
        check_name(t).map_err(|_| bad())?;
        Ok(MeterSelector::Id(t.to_string()))
    }

    /// Whether the meter `id` with `tags` is selected.
    pub fn matches(&self, id: &str, tags: &BTreeMap<String, String>) -> bool {
        match self {
            MeterSelector::All => true,
            MeterSelector::Id(m) => m == id,
            MeterSelector::Glob(g) => glob_match(g.as_bytes(), id.as_bytes()),
            MeterSelector::Tag(k, v) => tags.get(k).is_some_and(|x| x == v),
        }
    }
}

/// `*` matches any run of characters, `?` exactly one; iterative with
/// backtracking to the last star, so it is linear-ish and never recursive.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

impl fmt::Display for MeterSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MeterSelector::All => f.write_str("*"),
            MeterSelector::Id(s) | MeterSelector::Glob(s) => f.write_str(s),
            MeterSelector::Tag(k, v) => write!(f, "{k}={v}"),
        }
    }
}

impl Serialize for MeterSelector {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MeterSelector {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        MeterSelector::parse(&text).map_err(serde::de::Error::custom)
    }
}

fn all_meters() -> Vec<MeterSelector> {
    vec![MeterSelector::All]
}

/// One statement of a policy. Global permissions (User Management, Security
/// Logs Access, Password Self-Management) are not about meters: a statement
/// grants or denies them whatever its selectors say.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    pub effect: Effect,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub permissions: Vec<Permission>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    #[serde(default = "all_meters")]
    pub meters: Vec<MeterSelector>,
    /// A session may use what this statement allows only once it proved a
    /// second factor (at login or by stepping up).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_mfa: bool,
    /// What this statement allows is usable only in a session that is
    /// being recorded (an interactive SSH channel whose recording is
    /// written); refused when recording is impossible, even in fail-open.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_recording: bool,
}

impl Statement {
    pub fn allow_role(role: &str, meters: Vec<MeterSelector>) -> Statement {
        Statement {
            effect: Effect::Allow,
            permissions: vec![],
            roles: vec![role.into()],
            meters,
            require_mfa: false,
            require_recording: false,
        }
    }

    pub fn permission_set(&self) -> PermissionSet {
        self.permissions.iter().copied().collect()
    }
}

impl fmt::Display for Statement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let effect = match self.effect {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
        };
        let mut what: Vec<String> = self.roles.iter().map(|r| format!("role {r}")).collect();
        what.extend(self.permissions.iter().map(|p| format!("\"{p}\"")));
        let meters: Vec<String> = self.meters.iter().map(|m| m.to_string()).collect();
        write!(
            f,
            "{effect} {} on meters {}{}{}",
            what.join(", "),
            meters.join(", "),
            if self.require_mfa {
                " (with a second factor)"
            } else {
                ""
            },
            if self.require_recording {
                " (recorded)"
            } else {
                ""
            }
        )
    }
}

/// A custom permission policy, as stored and as written in a policy file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDocument {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default, rename = "statement")]
    pub statements: Vec<Statement>,
}

/// A policy file that could not be read, with where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct PolicyFileError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl PolicyDocument {
    /// Parses the TOML policy format of DESIGN §3; errors carry line and column.
    pub fn parse(file: &str, text: &str) -> Result<PolicyDocument, PolicyFileError> {
        let doc: PolicyDocument = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
            PolicyFileError {
                file: file.into(),
                line,
                column,
                message: e.message().trim().to_string(),
            }
        })?;
        let at = |message: String| PolicyFileError {
            file: file.into(),
            line: 1,
            column: 1,
            message,
        };
        check_name(&doc.name).map_err(|e| at(format!("name: {e}")))?;
        if is_managed(&doc.name) {
            return Err(at(format!(
                "name: `{}` is a managed policy and cannot be redefined",
                doc.name
            )));
        }
        // As every other description: one line a terminal shows as it is.
        if doc.description.chars().count() > 256 {
            return Err(at("description: longer than 256 characters".into()));
        }
        if doc.description.chars().any(char::is_control) {
            return Err(at("description: contains control characters".into()));
        }
        if doc.statements.is_empty() {
            return Err(at("a policy needs at least one [[statement]]".into()));
        }
        for (i, st) in doc.statements.iter().enumerate() {
            if st.permissions.is_empty() && st.roles.is_empty() {
                return Err(at(format!(
                    "statement {}: names no permissions and no roles",
                    i + 1
                )));
            }
            if st.meters.is_empty() {
                return Err(at(format!(
                    "statement {}: `meters` is empty (use [\"*\"] for every meter)",
                    i + 1
                )));
            }
            if st.require_mfa && st.effect == Effect::Deny {
                return Err(at(format!(
                    "statement {}: `require_mfa` is for allow statements (a deny needs no factor to hold)",
                    i + 1
                )));
            }
            if st.require_recording && st.effect == Effect::Deny {
                return Err(at(format!(
                    "statement {}: `require_recording` is for allow statements (a deny holds recorded or not)",
                    i + 1
                )));
            }
        }
        Ok(doc)
    }
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
    (line, column)
}

/// Whether `name` is one of the built-in, immutable policies.
pub fn is_managed(name: &str) -> bool {
    name == ADMINISTRATOR || name == READ_ONLY
}

/// The statements of a managed policy.
pub fn managed_statements(name: &str) -> Option<Vec<Statement>> {
    let allow = |perms: Vec<Permission>| Statement {
        effect: Effect::Allow,
        permissions: perms,
        roles: vec![],
        meters: all_meters(),
        require_mfa: false,
        require_recording: false,
    };
    match name {
        ADMINISTRATOR => Some(vec![allow(Permission::ALL.to_vec())]),
        READ_ONLY => Some(vec![allow(vec![
            Permission::DataView,
            Permission::FileSystemReadOnlyAccess,
        ])]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_parse_and_match() {
        let tags: BTreeMap<String, String> = [("site".to_string(), "north".to_string())].into();
        for (sel, id, expected) in [
            ("*", "meter-1", true),
            ("meter-1", "meter-1", true),
            ("meter-1", "meter-10", false),
            ("meter-*", "meter-10", true),
            ("m?ter-1", "meter-1", true),
            ("*-1", "meter-2", false),
            ("site=north", "meter-9", true),
            ("site=south", "meter-9", false),
        ] {
            let s = MeterSelector::parse(sel).unwrap();
            assert_eq!(s.matches(id, &tags), expected, "{sel} vs {id}");
        }
        for bad in ["", "site=", "a b", "=x", "met/er"] {
            assert!(MeterSelector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_design_policy_file_parses() {
        let text = r#"
name = "north-operators"
description = "Operators on the northern site, never master reset"
[[statement]]
effect = "allow"
roles = ["Operator"]
meters = ["site=north"]
[[statement]]
effect = "deny"
permissions = ["Master Reset"]
meters = ["*"]
"#;
        let doc = PolicyDocument::parse("p.toml", text).unwrap();
        assert_eq!(doc.statements.len(), 2);
        assert_eq!(doc.statements[1].permissions, vec![Permission::MasterReset]);
    }

    #[test]
    fn policy_file_errors_carry_line_and_column() {
        let text = "name = \"x\"\n[[statement]]\neffect = \"allow\"\npermissions = [\"Reset Everything\"]\n";
        let e = PolicyDocument::parse("p.toml", text).unwrap_err();
        assert_eq!(e.line, 4, "{e}");
        assert!(e.message.contains("unknown permission"), "{e}");
        let e = PolicyDocument::parse(
            "p.toml",
            "name = \"x\"\n[[statement]]\neffect = \"maybe\"\n",
        )
        .unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        let e = PolicyDocument::parse(
            "p.toml",
            "name = \"Administrator\"\n[[statement]]\neffect = \"allow\"\nroles=[\"a\"]\n",
        )
        .unwrap_err();
        assert!(e.message.contains("managed"), "{e}");
    }

    #[test]
    fn a_description_is_one_short_line() {
        let with = |d: &str| {
            let doc = format!(
                "name = \"x\"\ndescription = {}\n[[statement]]\neffect = \"allow\"\nroles = [\"a\"]\n",
                toml::Value::String(d.into())
            );
            PolicyDocument::parse("p.toml", &doc)
        };
        assert!(with("north, read only").is_ok());
        // An escape sequence would drive the terminal `policy show` prints to.
        let e = with("\u{1b}[2J\u{1b}[31mall is well").unwrap_err();
        assert!(e.message.contains("control characters"), "{e}");
        let e = with(&"x".repeat(257)).unwrap_err();
        assert!(e.message.contains("256"), "{e}");
    }
}
