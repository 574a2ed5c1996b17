//! Config errors and warnings, and the source text they point into: every
//! error names the file, the line of the offending key, and the key.

use std::fmt;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::model::line_col;

/// A config that cannot be used, with where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {key}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub key: String,
    pub message: String,
}

/// Something legal but worth a second look (`check-config` prints these).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    pub line: usize,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.line, self.key, self.message)
    }
}

/// A key as people write it: `meters[0].console.host_key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Key(Vec<Seg>);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Seg {
    Name(String),
    Index(usize),
}

impl Key {
    /// A key named in the code (`"audit.forward"`), split at its dots;
    /// names from the file (meters, profiles, tags) go through [`Key::at`].
    pub(super) fn new(dotted: &str) -> Key {
        Key(dotted.split('.').map(|n| Seg::Name(n.into())).collect())
    }

    /// The key `name` inside this one.
    pub(super) fn at(&self, name: &str) -> Key {
        let mut k = self.clone();
        k.0.push(Seg::Name(name.into()));
        k
    }

    /// The `i`-th entry of this array.
    pub(super) fn index(&self, i: usize) -> Key {
        let mut k = self.clone();
        k.0.push(Seg::Index(i));
        k
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Name(n) if i == 0 => write!(f, "{n}")?,
                Seg::Name(n) => write!(f, ".{n}")?,
                Seg::Index(j) => write!(f, "[{j}]")?,
            }
        }
        Ok(())
    }
}

/// The config text being validated, with the position of every key in it,
/// so errors and warnings name the line of the key they are about.
pub(super) struct Source<'a> {
    file: String,
    text: &'a str,
    /// The parsed document with spans (None when it does not parse).
    doc: Option<DeTable<'a>>,
}

impl<'a> Source<'a> {
    pub(super) fn new(file: String, text: &'a str) -> Source<'a> {
        let doc = DeTable::parse(text).ok().map(Spanned::into_inner);
        Source { file, text, doc }
    }

    /// The line (1-based) of a byte offset.
    pub(super) fn line(&self, offset: usize) -> usize {
        line_col(self.text, offset).0
    }

    /// An error at the line of `offset`.
    pub(super) fn err_at(&self, offset: usize, key: &str, message: String) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            line: self.line(offset),
            key: key.to_string(),
            message,
        }
    }

    /// Where `key` is written: the key itself (an array entry: the entry);
    /// a key the file leaves out, at its nearest written parent (the table
    /// that lacks it). Also how many parts of `key` the file writes.
    fn locate(&self, key: &Key) -> (usize, Option<usize>) {
        let (mut found, mut at) = (0, None);
        let mut table = self.doc.as_ref();
        let mut array: Option<&[Spanned<DeValue<'_>>]> = None;
        for seg in &key.0 {
            let (offset, value) = match seg {
                Seg::Name(n) => {
                    match table.and_then(|t| t.iter().find(|(k, _)| *k.get_ref() == *n)) {
                        Some((k, v)) => (k.span().start, v),
                        None => break,
                    }
                }
                Seg::Index(i) => match array.and_then(|a| a.get(*i)) {
                    Some(v) => (v.span().start, v),
                    None => break,
                },
            };
            (found, at) = (found + 1, Some(offset));
            table = value.get_ref().as_table();
            array = value.get_ref().as_array().map(|a| &a[..]);
        }
        (found, at)
    }

    /// The line of `key` (see [`Source::locate`]; 0 when not even its first
    /// part is written).
    pub(super) fn line_of(&self, key: &Key) -> usize {
        self.locate(key).1.map_or(0, |o| self.line(o))
    }

    /// Whether the file writes `key` itself.
    fn writes(&self, key: &Key) -> bool {
        self.locate(key).0 == key.0.len()
    }

    /// Of `keys`, the one written last in the file (None: none is written):
    /// when two keys exclude each other, the second is the one at fault.
    pub(super) fn last_written(&self, keys: impl IntoIterator<Item = Key>) -> Option<Key> {
        keys.into_iter()
            .filter(|k| self.writes(k))
            .max_by_key(|k| self.locate(k).1)
    }

    /// An error about `key`, at its line.
    pub(super) fn err(&self, key: &Key, message: impl Into<String>) -> ConfigError {
        self.err_named(key, &key.to_string(), message)
    }

    /// An error at `key`'s line, naming it as `shown`.
    pub(super) fn err_named(
        &self,
        key: &Key,
        shown: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            line: self.line_of(key),
            key: shown.to_string(),
            message: message.into(),
        }
    }

    /// A warning about `key`, at its line.
    pub(super) fn warning(&self, key: &Key, message: String) -> ConfigWarning {
        ConfigWarning {
            line: self.line_of(key),
            key: key.to_string(),
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"state_dir = "/x"
[profiles."north.v2"]
[[profiles."north.v2".write]]
permission = "Master Reset"
functions = [6,
  16]
[[meters]]
id = "a"
console = { address = "h:1", host_key = "k" }
[[meters]]
id = "b"
[meters.tags]
site = "north"
"#;

    fn line(key: &Key) -> usize {
        Source::new("f".into(), TEXT).line_of(key)
    }

    #[test]
    fn keys_are_found_on_their_own_line() {
        let profile = Key::new("profiles").at("north.v2");
        assert_eq!(profile.to_string(), "profiles.north.v2");
        assert_eq!(line(&profile), 2);
        let write = profile.at("write").index(0);
        assert_eq!(write.to_string(), "profiles.north.v2.write[0]");
        assert_eq!(line(&write), 3);
        assert_eq!(line(&write.at("functions")), 5);
        assert_eq!(line(&write.at("functions").index(1)), 6);
        let meters = Key::new("meters");
        assert_eq!(line(&meters.index(0).at("console").at("host_key")), 9);
        assert_eq!(line(&meters.index(1)), 10);
        assert_eq!(line(&meters.index(1).at("id")), 11);
        assert_eq!(line(&meters.index(1).at("tags").at("site")), 13);
    }

    #[test]
    fn a_key_left_out_is_found_at_the_table_that_lacks_it() {
        let meters = Key::new("meters");
        assert_eq!(line(&meters.index(1).at("profile")), 10);
        assert_eq!(line(&meters.index(0).at("console").at("nope")), 9);
        assert_eq!(line(&Key::new("state_dir.deeper")), 1);
        assert_eq!(line(&Key::new("audit.forward")), 0);
    }

    #[test]
    fn of_two_keys_the_one_written_last_is_at_fault() {
        let src = Source::new("f".into(), TEXT);
        let m = Key::new("meters").index(0);
        let last = src.last_written([m.at("console"), m.at("id"), m.at("files")]);
        assert_eq!(last, Some(m.at("console")));
        assert_eq!(src.last_written([m.at("files")]), None);
    }
}
