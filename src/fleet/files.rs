//! A meter's local file store, sandboxed without check-then-use: every path
//! is opened relative to the store's root directory with openat2 and
//! RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS, and operations on a final name go
//! through its parent directory's descriptor (unlinkat, mkdirat, renameat2,
//! fstatat without following). `..`, absolute paths, NUL bytes, symlinks
//! planted in the store and races that swap a directory for a symlink
//! cannot leave the root: the kernel refuses them while resolving.
//! Uploads are written to a temporary file beside their target and renamed
//! over it; the store's usage is counted for its quota (`usage`).

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod upload;
mod usage;
pub use upload::{Begun, Opening, upload_target};
pub use usage::{OverQuota, Usage};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{FileStat, Mode, SFlag, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};

/// Uploads are written under a name like this, renamed on close.
pub const UPLOAD_PREFIX: &str = ".metergate-upload-";

/// When this process first reached a store (seconds since the epoch): every
/// upload file it writes is at least this young.
fn started() -> i64 {
    static STARTED: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *STARTED.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    })
}

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("`{0}` is not a path inside the meter's store")]
    BadPath(String),
    #[error("no such file or directory")]
    NotFound,
    #[error("it already exists")]
    Exists,
    #[error("a symbolic link or a path leaving the store: refused")]
    Escape,
    #[error("not a directory")]
    NotADirectory,
    #[error("the directory is not empty")]
    NotEmpty,
    #[error("it is a directory")]
    IsADirectory,
    #[error("not a regular file")]
    NotAFile,
    #[error("the upload would exceed the maximum upload size ({0} bytes)")]
    TooLarge(u64),
    #[error(transparent)]
    OverQuota(#[from] OverQuota),
    #[error("{0}")]
    Io(String),
}

impl From<Errno> for FileError {
    fn from(e: Errno) -> Self {
        match e {
            Errno::ENOENT => FileError::NotFound,
            Errno::EEXIST => FileError::Exists,
            // openat2 says EXDEV when resolution would leave the root, ELOOP
            // when it meets a symlink.
            Errno::EXDEV | Errno::ELOOP => FileError::Escape,
            Errno::ENOTDIR => FileError::NotADirectory,
            Errno::ENOTEMPTY => FileError::NotEmpty,
            Errno::EISDIR => FileError::IsADirectory,
            other => FileError::Io(other.desc().to_string()),
        }
    }
}

impl From<std::io::Error> for FileError {
    fn from(e: std::io::Error) -> Self {
        match e.raw_os_error() {
            Some(code) => Errno::from_raw(code).into(),
            None => FileError::Io(e.to_string()),
        }
    }
}

/// A path inside a store: plain names only (no `.`, `..`, `/` or NUL);
/// empty for the root itself.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RelPath(Vec<String>);

impl RelPath {
    pub fn new(names: Vec<String>) -> Result<RelPath, FileError> {
        for n in &names {
            if n.is_empty() || n == "." || n == ".." || n.contains('/') || n.contains('\0') {
                return Err(FileError::BadPath(n.clone()));
            }
        }
        Ok(RelPath(names))
    }

    pub fn names(&self) -> &[String] {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The path as text, `a/b/c` ("" for the root).
    pub fn text(&self) -> String {
        self.0.join("/")
    }

    fn os(&self) -> PathBuf {
        if self.0.is_empty() {
            PathBuf::from(".")
        } else {
            PathBuf::from(self.text())
        }
    }

    /// The parent and the final name (None for the root).
    pub fn split(&self) -> Option<(RelPath, &str)> {
        let (last, parent) = self.0.split_last()?;
        Some((RelPath(parent.to_vec()), last))
    }

    pub fn join(&self, name: &str) -> Result<RelPath, FileError> {
        let mut v = self.0.clone();
        v.push(name.to_string());
        RelPath::new(v)
    }
}

/// A fresh temporary name beside `rel` for an upload to it (renamed over
/// `rel` when the upload is complete).
pub fn upload_name(rel: &RelPath) -> Result<RelPath, FileError> {
    let (parent, name) = rel.split().ok_or_else(|| FileError::BadPath("/".into()))?;
    let mut random = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random)
        .map_err(|_| FileError::Io("no randomness".into()))?;
    parent.join(&format!("{UPLOAD_PREFIX}{}-{name}", hex::encode(random)))
}

/// One entry of a listing.
pub struct Entry {
    pub name: String,
    pub stat: FileStat,
}

/// A meter's file store on the gateway's disk.
pub struct LocalStore {
    root: OwnedFd,
    path: PathBuf,
    /// The bytes it holds, shared with every other opening of it.
    usage: Arc<Usage>,
}

fn how(flags: OFlag) -> OpenHow {
    OpenHow::new().flags(flags | OFlag::O_CLOEXEC).resolve(
        ResolveFlag::RESOLVE_BENEATH
            | ResolveFlag::RESOLVE_NO_SYMLINKS
            | ResolveFlag::RESOLVE_NO_MAGICLINKS,
    )
}

impl LocalStore {
    pub fn open(path: &Path) -> Result<LocalStore, FileError> {
        // Fixed before this process writes any upload.
        started();
        let root = nix::fcntl::open(
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let st = nix::sys::stat::fstat(root.as_fd())?;
        Ok(LocalStore {
            usage: Usage::of(path, st.st_dev, st.st_ino),
            root,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn at(&self, rel: &RelPath, flags: OFlag, mode: Mode) -> Result<OwnedFd, FileError> {
        Ok(openat2(
            self.root.as_fd(),
            &rel.os(),
            how(flags).mode(mode),
        )?)
    }

    /// The directory that holds `rel`'s final name, and that name.
    fn parent<'a>(&self, rel: &'a RelPath) -> Result<(OwnedFd, &'a str), FileError> {
        let (parent, name) = rel.split().ok_or_else(|| FileError::BadPath("/".into()))?;
        Ok((
            self.at(&parent, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty())?,
            name,
        ))
    }

    /// What `rel` is, without following a symlink at its end.
    pub fn stat(&self, rel: &RelPath) -> Result<FileStat, FileError> {
        if rel.is_root() {
            return Ok(nix::sys::stat::fstat(self.root.as_fd())?);
        }
        let (dir, name) = self.parent(rel)?;
        Ok(fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW)?)
    }

    pub fn open_read(&self, rel: &RelPath) -> Result<File, FileError> {
        Ok(File::from(self.at(rel, OFlag::O_RDONLY, Mode::empty())?))
    }

    /// Opens `rel` with the open(2) `flags` given, a new file with mode
    /// 0640 (the simulated meter's own server writes in place, as a simple
    /// meter would; the gateway's uploads go through `upload`).
    pub fn open_with(&self, rel: &RelPath, flags: OFlag) -> Result<File, FileError> {
        // openat2 takes a mode only with O_CREAT.
        let mode = match flags.contains(OFlag::O_CREAT) {
            true => Mode::from_bits_truncate(0o640),
            false => Mode::empty(),
        };
        Ok(File::from(self.at(rel, flags, mode)?))
    }

    pub fn list(&self, rel: &RelPath) -> Result<Vec<Entry>, FileError> {
        let fd = self.at(rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty())?;
        let mut dir = nix::dir::Dir::from_fd(fd)?;
        let mut out = Vec::new();
        let dfd = dir.as_fd().try_clone_to_owned()?;
        for e in dir.iter() {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name == "." || name == ".." || name.starts_with(UPLOAD_PREFIX) {
                continue;
            }
            if let Ok(stat) = fstatat(dfd.as_fd(), e.file_name(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                out.push(Entry { name, stat });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    pub fn mkdir(&self, rel: &RelPath) -> Result<(), FileError> {
        let (dir, name) = self.parent(rel)?;
        Ok(mkdirat(dir.as_fd(), name, Mode::from_bits_truncate(0o750))?)
    }

    pub fn rmdir(&self, rel: &RelPath) -> Result<(), FileError> {
        let (dir, name) = self.parent(rel)?;
        Ok(unlinkat(dir.as_fd(), name, UnlinkatFlags::RemoveDir)?)
    }

    /// Removes a file; its bytes leave the store's usage.
    pub fn remove(&self, rel: &RelPath) -> Result<(), FileError> {
        let (dir, name) = self.parent(rel)?;
        let _naming = self.usage.naming();
        let size = self.file_size(rel);
        unlinkat(dir.as_fd(), name, UnlinkatFlags::NoRemoveDir)?;
        self.usage.release(size);
        Ok(())
    }

    /// Renames within the store; `replace` allows overwriting the target
    /// (posix-rename; the replaced file's bytes leave the usage), otherwise
    /// an existing target is refused.
    pub fn rename(&self, from: &RelPath, to: &RelPath, replace: bool) -> Result<(), FileError> {
        let _naming = self.usage.naming();
        self.rename_counted(from, to, replace)
    }

    /// [`LocalStore::rename`], the naming lock held by the caller.
    fn rename_counted(&self, from: &RelPath, to: &RelPath, replace: bool) -> Result<(), FileError> {
        let (a, an) = self.parent(from)?;
        let (b, bn) = self.parent(to)?;
        let flags = if replace {
            nix::fcntl::RenameFlags::empty()
        } else {
            nix::fcntl::RenameFlags::RENAME_NOREPLACE
        };
        let replaced = match self.stat(from) {
            Ok(moved) if replace && from != to => match self.stat(to) {
                // The same file under two names stays.
                Ok(gone) if is_file(&gone) && (moved.st_ino != gone.st_ino) => {
                    gone.st_size.max(0) as u64
                }
                _ => 0,
            },
            _ => 0,
        };
        nix::fcntl::renameat2(a.as_fd(), an, b.as_fd(), bn, flags)?;
        self.usage.release(replaced);
        Ok(())
    }

    /// The size of `rel` if it is a regular file, else 0 (what the usage
    /// counts for it).
    fn file_size(&self, rel: &RelPath) -> u64 {
        match self.stat(rel) {
            Ok(st) if is_file(&st) => st.st_size.max(0) as u64,
            _ => 0,
        }
    }

    /// The file system's figures under `rel` (statvfs@openssh.com): the
    /// eleven numbers of statvfs, in its order.
    pub fn statvfs(&self, rel: &RelPath) -> Result<[u64; 11], FileError> {
        let fd = self.at(rel, OFlag::O_PATH, Mode::empty())?;
        let v = nix::sys::statvfs::fstatvfs(&fd)?;
        Ok([
            v.block_size() as u64,
            v.fragment_size() as u64,
            v.blocks() as u64,
            v.blocks_free() as u64,
            v.blocks_available() as u64,
            v.files() as u64,
            v.files_free() as u64,
            v.files_available() as u64,
            v.filesystem_id() as u64,
            v.flags().bits() as u64,
            v.name_max() as u64,
        ])
    }

    /// The store's usage for its quota, counted by a walk the first time
    /// (and again when it is idle and stale, see `usage`), then kept as the
    /// gateway changes the store.
    pub fn usage(&self) -> Result<Arc<Usage>, FileError> {
        if let Some(token) = self.usage.wants_walk() {
            let bytes = self.count_bytes()?;
            self.usage.walked(token, bytes);
        }
        Ok(self.usage.clone())
    }

    /// Bytes of regular files in the store, uploads in progress included;
    /// walks without following symlinks.
    fn count_bytes(&self) -> Result<u64, FileError> {
        fn walk(store: &LocalStore, rel: &RelPath, depth: usize) -> Result<u64, FileError> {
            if depth > 32 {
                return Ok(0);
            }
            let fd = store.at(rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty())?;
            let mut dir = nix::dir::Dir::from_fd(fd)?;
            let dfd = dir.as_fd().try_clone_to_owned()?;
            let mut total = 0;
            let mut subdirs: Vec<String> = Vec::new();
            for e in dir.iter() {
                let e = e?;
                let name = e.file_name().to_string_lossy().into_owned();
                if name == "." || name == ".." {
                    continue;
                }
                let Ok(st) = fstatat(dfd.as_fd(), e.file_name(), AtFlags::AT_SYMLINK_NOFOLLOW)
                else {
                    continue;
                };
                if is_file(&st) && name.starts_with(UPLOAD_PREFIX) && st.st_mtime < started() {
                    // An upload a stopped or crashed daemon left behind: no
                    // upload of this process is older than its start.
                    if unlinkat(dfd.as_fd(), e.file_name(), UnlinkatFlags::NoRemoveDir).is_ok() {
                        tracing::info!(store = %store.path.display(), file = %name, "removed an upload left by an earlier run");
                        continue;
                    }
                }
                if is_file(&st) {
                    total += st.st_size.max(0) as u64;
                } else if is_dir(&st) {
                    subdirs.push(name);
                }
            }
            for d in subdirs {
                if let Ok(r) = rel.join(&d) {
                    total += walk(store, &r, depth + 1)?;
                }
            }
            Ok(total)
        }
        walk(self, &RelPath::default(), 0)
    }
}

/// Whether a stat is a directory, a regular file or something else.
fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT
}

pub fn is_dir(st: &FileStat) -> bool {
    kind(st) == SFlag::S_IFDIR
}

pub fn is_file(st: &FileStat) -> bool {
    kind(st) == SFlag::S_IFREG
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(p: &str) -> RelPath {
        RelPath::new(
            p.split('/')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn uploads_an_earlier_run_left_are_removed_and_not_counted_new_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("m");
        std::fs::create_dir_all(root.join("logs")).unwrap();
        std::fs::write(root.join("logs/a.log"), "kept").unwrap();
        let stale = root.join(format!("logs/{UPLOAD_PREFIX}00-a.log"));
        std::fs::write(&stale, vec![0u8; 1000]).unwrap();
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(hour_ago)
            .unwrap();
        let s = LocalStore::open(&root).unwrap();
        // An upload of this run, begun after the store was reached.
        let fresh = root.join(format!("logs/{UPLOAD_PREFIX}01-b.log"));
        std::fs::write(&fresh, "xy").unwrap();
        assert_eq!(s.usage().unwrap().bytes(), 4 + 2);
        assert!(!stale.exists());
        assert!(fresh.exists());
    }

    #[test]
    fn a_symlink_planted_in_the_store_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("m");
        std::fs::create_dir_all(root.join("logs")).unwrap();
        std::fs::write(root.join("logs/a.log"), "x").unwrap();
        std::os::unix::fs::symlink("/", root.join("escape")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("logs/passwd")).unwrap();
        let s = LocalStore::open(&root).unwrap();
        // (what, result) table: the symlink is refused wherever it appears.
        assert!(s.open_read(&rel("logs/a.log")).is_ok());
        for p in ["escape/etc/passwd", "logs/passwd", "escape"] {
            assert!(
                matches!(s.open_read(&rel(p)), Err(FileError::Escape)),
                "{p}"
            );
        }
        assert!(matches!(s.list(&rel("escape")), Err(FileError::Escape)));
        let how = Opening {
            create: true,
            ..Opening::default()
        };
        assert!(matches!(
            s.begin_upload(&rel("escape/tmp/x"), how, 1 << 20, 1 << 20),
            Err(FileError::Escape)
        ));
        assert!(matches!(
            s.begin_upload(&rel("logs/passwd"), how, 1 << 20, 1 << 20),
            Err(FileError::Escape)
        ));
        // The link itself can be seen (lstat) and removed, never followed.
        assert!(!is_dir(&s.stat(&rel("escape")).unwrap()));
        assert!(RelPath::new(vec!["..".into()]).is_err());
        assert!(RelPath::new(vec!["a\0b".into()]).is_err());
    }
}
