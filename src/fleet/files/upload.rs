//! Uploads into a local store: a temporary file beside the target, started
//! empty or as a copy of the file it will replace (a reflink where the file
//! system offers one), renamed over the target when complete, so the name
//! always holds the old file or the new one whole. Sizes are counted in the
//! store's usage as they grow.

use std::fs::File;
use std::os::fd::AsFd;
use std::sync::Arc;

use nix::fcntl::OFlag;
use nix::sys::stat::{FileStat, Mode, SFlag};

use super::{FileError, LocalStore, RelPath, Usage, is_dir, is_file, upload_name};

/// How an upload treats the file it writes to (SFTP's open flags).
#[derive(Clone, Copy, Debug, Default)]
pub struct Opening {
    /// A missing file is created (otherwise: no such file).
    pub create: bool,
    /// The upload starts empty (otherwise: from the file's bytes).
    pub truncate: bool,
    /// An existing file is refused, also when one appears before the close.
    pub exclusive: bool,
}

/// An upload begun: its temporary file, open to read and write.
pub struct Begun {
    pub file: File,
    pub temp: RelPath,
    /// The bytes it starts with (kept from the file it replaces), counted
    /// in the usage.
    pub size: u64,
    pub usage: Arc<Usage>,
}

/// What the target of an upload is now: None when there is none; a
/// directory, a link or anything but a regular file is refused.
pub fn upload_target(st: Option<&FileStat>, how: Opening) -> Result<Option<u64>, FileError> {
    match st {
        None if how.create => Ok(None),
        None => Err(FileError::NotFound),
        Some(_) if how.exclusive => Err(FileError::Exists),
        Some(st) if is_dir(st) => Err(FileError::IsADirectory),
        Some(st) if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK => {
            Err(FileError::Escape)
        }
        Some(st) if !is_file(st) => Err(FileError::NotAFile),
        Some(st) => Ok(Some(st.st_size.max(0) as u64)),
    }
}

impl LocalStore {
    /// Begins an upload to `rel`: the temporary file starts empty, or,
    /// when the file exists and is not truncated, as a copy of it (its
    /// permission bits kept). That copy counts against `max` and `quota`.
    pub fn begin_upload(
        &self,
        rel: &RelPath,
        how: Opening,
        max: u64,
        quota: u64,
    ) -> Result<Begun, FileError> {
        let existing = match self.stat(rel) {
            Ok(st) => Some(st),
            Err(FileError::NotFound) => None,
            Err(e) => return Err(e),
        };
        upload_target(existing.as_ref(), how)?;
        let source = match &existing {
            Some(_) if !how.truncate => {
                let f = self.open_read(rel)?;
                let size = nix::sys::stat::fstat(&f)?.st_size.max(0) as u64;
                if size > max {
                    return Err(FileError::TooLarge(max));
                }
                Some((f, size))
            }
            _ => None,
        };
        let usage = self.usage()?;
        let size = source.as_ref().map_or(0, |s| s.1);
        usage.reserve(size, quota)?;
        usage.upload_began();
        let temp = upload_name(rel)?;
        let started = self.at(
            &temp,
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL,
            Mode::from_bits_truncate(0o640),
        );
        let file = match started {
            Ok(fd) => File::from(fd),
            Err(e) => {
                usage.release(size);
                usage.upload_ended();
                return Err(e);
            }
        };
        let begun = Begun {
            file,
            temp,
            size,
            usage,
        };
        match self.fill(&begun, existing.as_ref(), source) {
            Ok(size) => Ok(Begun { size, ..begun }),
            Err(e) => {
                self.discard_upload(&begun.temp, begun.size);
                Err(e)
            }
        }
    }

    /// Gives the temporary file the existing file's permission bits and,
    /// when it is kept, its bytes (never more than were reserved); returns
    /// the size it then has (a file that shrank meanwhile gives back the
    /// rest of the reservation).
    fn fill(
        &self,
        begun: &Begun,
        existing: Option<&FileStat>,
        source: Option<(File, u64)>,
    ) -> Result<u64, FileError> {
        use std::os::unix::fs::PermissionsExt;
        if let Some(st) = existing {
            let mode = std::fs::Permissions::from_mode(st.st_mode & 0o777);
            begun.file.set_permissions(mode)?;
        }
        let Some((mut from, reserved)) = source else {
            return Ok(0);
        };
        // std's copy between files is copy_file_range(2), which clones
        // (reflinks) on file systems that can (btrfs, XFS) and copies in
        // the kernel elsewhere.
        // At most what was reserved (the size checked against the limit
        // and the quota): a file that grew since is copied as it was.
        use std::io::Read;
        let copied = std::io::copy(&mut (&mut from).take(reserved), &mut &begun.file)?;
        begun.usage.release(reserved - copied);
        Ok(copied)
    }

    /// Renames a complete upload over `rel` (refused if `rel` appeared
    /// and the upload was exclusive). `reserved` bytes were counted for
    /// it; the count becomes its final size, less the file it replaced.
    /// Returns the final size.
    pub fn commit_upload(
        &self,
        temp: &RelPath,
        rel: &RelPath,
        exclusive: bool,
        reserved: u64,
    ) -> Result<u64, FileError> {
        let _naming = self.usage.naming();
        let size = self.file_size(temp);
        // The replaced file's bytes are given back by the rename; the
        // upload's own go from what was reserved to what it holds.
        self.rename_counted(temp, rel, !exclusive)?;
        self.usage.adjust(size, reserved);
        self.usage.upload_ended();
        Ok(size)
    }

    /// Removes an upload's temporary file and gives back what it held.
    pub fn discard_upload(&self, temp: &RelPath, reserved: u64) {
        if let Ok((dir, name)) = self.parent(temp) {
            let _ =
                nix::unistd::unlinkat(dir.as_fd(), name, nix::unistd::UnlinkatFlags::NoRemoveDir);
        }
        self.usage.release(reserved);
        self.usage.upload_ended();
    }

    /// Sets the size of an existing file in place (SETSTAT): growth counts
    /// against `max` and `quota` like an upload, shrinking gives bytes
    /// back. Returns the size it had.
    pub fn set_size(
        &self,
        rel: &RelPath,
        size: u64,
        max: u64,
        quota: u64,
    ) -> Result<u64, FileError> {
        let usage = self.usage()?;
        let _naming = usage.naming();
        let st = self.stat(rel)?;
        let was = upload_target(Some(&st), Opening::default())?.unwrap_or(0);
        if size > was {
            if size > max {
                return Err(FileError::TooLarge(max));
            }
            usage.reserve(size - was, quota)?;
        }
        let resized = self
            .at(rel, OFlag::O_WRONLY, Mode::empty())
            .map(File::from)
            .and_then(|f| Ok(f.set_len(size)?));
        match resized {
            Ok(()) if size < was => usage.release(was - size),
            Ok(()) => {}
            Err(e) => {
                usage.release(size.saturating_sub(was));
                return Err(e);
            }
        }
        Ok(was)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{FileExt, PermissionsExt};

    use super::*;

    fn rel(p: &str) -> RelPath {
        RelPath::new(p.split('/').map(String::from).collect()).unwrap()
    }

    const BIG: u64 = 1 << 30;
    const KEEP: Opening = Opening {
        create: true,
        truncate: false,
        exclusive: false,
    };

    fn store() -> (tempfile::TempDir, LocalStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        (dir, s)
    }

    #[test]
    fn an_upload_without_truncate_starts_as_the_file_and_replaces_it_whole() {
        let (dir, s) = store();
        let f = dir.path().join("f");
        std::fs::write(&f, "hello world").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o604)).unwrap();
        let b = s.begin_upload(&rel("f"), KEEP, BIG, BIG).unwrap();
        assert_eq!(b.size, 11);
        b.file.write_all_at(b"WORLD!", 6).unwrap();
        // Until the close, the name holds the old file.
        assert_eq!(std::fs::read(&f).unwrap(), b"hello world");
        b.usage.reserve(1, BIG).unwrap();
        assert_eq!(s.commit_upload(&b.temp, &rel("f"), false, 12).unwrap(), 12);
        assert_eq!(std::fs::read(&f).unwrap(), b"hello WORLD!");
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o604, "the file keeps its permission bits");
        assert_eq!(s.list(&RelPath::default()).unwrap().len(), 1);
        assert_eq!(b.usage.bytes(), s.count_bytes().unwrap());
    }

    #[test]
    fn open_flags_mean_what_open_2_says() {
        let (dir, s) = store();
        std::fs::write(dir.path().join("f"), "x").unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        let only_write = Opening::default();
        let exclusive = Opening {
            exclusive: true,
            ..KEEP
        };
        // (path, how) -> refused with
        let table = [
            ("missing", only_write, "no such file or directory"),
            ("f", exclusive, "it already exists"),
            ("d", KEEP, "it is a directory"),
        ];
        for (path, how, why) in table {
            let e = s.begin_upload(&rel(path), how, BIG, BIG).err();
            assert_eq!(e.map(|e| e.to_string()).as_deref(), Some(why), "{path}");
        }
        // An exclusive upload does not replace a file that appeared
        // before its close.
        let b = s.begin_upload(&rel("new"), exclusive, BIG, BIG).unwrap();
        std::fs::write(dir.path().join("new"), "first").unwrap();
        let e = s.commit_upload(&b.temp, &rel("new"), true, 0);
        assert!(matches!(e, Err(FileError::Exists)), "{e:?}");
        s.discard_upload(&b.temp, 0);
        assert_eq!(std::fs::read(dir.path().join("new")).unwrap(), b"first");
    }

    #[test]
    fn the_usage_follows_every_change_as_a_walk_would_count_it() {
        let (dir, s) = store();
        std::fs::write(dir.path().join("a"), vec![1u8; 100]).unwrap();
        let usage = s.usage().unwrap();
        let walk = || s.count_bytes().unwrap();
        assert_eq!(usage.bytes(), 100);
        // A truncating upload of 50 bytes over a's 100.
        let trunc = Opening {
            truncate: true,
            ..KEEP
        };
        let b = s.begin_upload(&rel("a"), trunc, BIG, BIG).unwrap();
        usage.reserve(50, BIG).unwrap();
        b.file.write_all_at(&[2u8; 50], 0).unwrap();
        assert_eq!(usage.bytes(), walk());
        s.commit_upload(&b.temp, &rel("a"), false, 50).unwrap();
        assert_eq!((usage.bytes(), walk()), (50, 50));
        // A discarded upload gives its bytes back.
        let b = s.begin_upload(&rel("a"), KEEP, BIG, BIG).unwrap();
        assert_eq!(usage.bytes(), 100, "the copy counts");
        s.discard_upload(&b.temp, b.size);
        assert_eq!((usage.bytes(), walk()), (50, 50));
        // Size changes: within the limit and the quota, else refused.
        assert_eq!(s.set_size(&rel("a"), 80, 90, 200).unwrap(), 50);
        assert_eq!((usage.bytes(), walk()), (80, 80));
        let too_large = s.set_size(&rel("a"), 91, 90, 200);
        assert!(matches!(too_large, Err(FileError::TooLarge(90))));
        std::fs::write(dir.path().join("b"), vec![3u8; 10]).unwrap();
        usage.adjust(10, 0);
        let over = s.set_size(&rel("a"), 85, 90, 94);
        assert!(matches!(over, Err(FileError::OverQuota(_))), "{over:?}");
        assert_eq!(s.set_size(&rel("a"), 20, 90, 94).unwrap(), 80);
        assert_eq!((usage.bytes(), walk()), (30, 30));
        // A replacing rename and a remove.
        s.rename(&rel("b"), &rel("a"), true).unwrap();
        assert_eq!((usage.bytes(), walk()), (10, 10));
        s.remove(&rel("a")).unwrap();
        assert_eq!((usage.bytes(), walk()), (0, 0));
    }
}
