//! SFTP paths, resolved lexically: `/` is the meters, `/METER/…` a path in
//! that meter's store; `..` never climbs above `/`.

use crate::fleet::files::{FileError, RelPath};

/// Where a path leads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `/`: the meters.
    Root,
    /// A meter's store and the path inside it.
    Meter { meter: String, rel: RelPath },
}

/// Resolves an SFTP path (absolute, or relative to `/`) lexically: `.` is
/// dropped, `..` goes up, but never above `/`; NUL bytes and empty paths
/// beyond the root are refused. The store then opens the result without
/// following symlinks, so the lexical answer is the physical one.
pub fn resolve(path: &str) -> Result<Target, FileError> {
    if path.contains('\0') {
        return Err(FileError::BadPath(path.escape_debug().to_string()));
    }
    let mut names: Vec<String> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if names.pop().is_none() {
                    return Err(FileError::Escape);
                }
            }
            p => names.push(p.to_string()),
        }
    }
    if names.is_empty() {
        return Ok(Target::Root);
    }
    let meter = names.remove(0);
    Ok(Target::Meter {
        meter,
        rel: RelPath::new(names)?,
    })
}

pub(super) fn display(t: &Target) -> String {
    match t {
        Target::Root => "/".into(),
        Target::Meter { meter, rel } if rel.is_root() => format!("/{meter}"),
        Target::Meter { meter, rel } => format!("/{meter}/{}", rel.text()),
    }
}
