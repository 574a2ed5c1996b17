//! The bytes a local store holds, for its quota: counted once by walking the
//! tree, then kept as the gateway changes them, in one counter per store
//! that every handle, channel and connection shares.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// How old a count may grow before the tree is walked again, when no upload
/// is open on the store: changes made beside the gateway (a mirror, the
/// meter's own logs) are seen within this time, and never more than one
/// walk happens per store in it.
const REFRESH: Duration = Duration::from_secs(60);

/// One store's count.
#[derive(Default)]
pub struct Usage {
    count: Mutex<Count>,
    /// Held while the gateway changes a file's size by its name (an upload
    /// renamed over its target, a remove, a replacing rename, a truncate),
    /// so the size it reads before is the size the change replaced.
    naming: Mutex<()>,
}

#[derive(Default)]
struct Count {
    /// Bytes of regular files, uploads in progress included; None until
    /// the first walk.
    bytes: Option<u64>,
    /// Uploads open on the store.
    uploads: usize,
    /// Bumped at every change, so a walk that raced one is not applied.
    changes: u64,
    walked: Option<Instant>,
}

/// Why bytes could not be reserved.
#[derive(Debug, thiserror::Error)]
#[error("the meter's store quota ({quota} bytes) would be exceeded")]
pub struct OverQuota {
    pub quota: u64,
}

/// Which store a count is for: its path, device and inode (a store opened
/// anew for every request is one count; a directory made again in its
/// place, even one that reuses the inode, is another).
type Key = (PathBuf, u64, u64);

/// The counts of every store, process-wide.
fn registry() -> &'static Mutex<HashMap<Key, Arc<Usage>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<Key, Arc<Usage>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// A poisoned lock still holds a usable count (every update is one
/// assignment), so it is taken as it is.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Usage {
    /// The shared count of the store at `path` whose root is (`dev`,
    /// `ino`).
    pub fn of(path: &Path, dev: u64, ino: u64) -> Arc<Usage> {
        lock(registry())
            .entry((path.to_path_buf(), dev, ino))
            .or_default()
            .clone()
    }

    /// Whether the tree should be walked now: never counted, or idle and
    /// stale. The token given back is passed to [`Usage::walked`].
    pub fn wants_walk(&self) -> Option<u64> {
        let c = lock(&self.count);
        let stale = c.walked.is_none_or(|t| t.elapsed() >= REFRESH);
        (c.bytes.is_none() || (c.uploads == 0 && stale)).then_some(c.changes)
    }

    /// The result of a walk begun at `token`; dropped when a change
    /// happened meanwhile (the count it would replace is newer).
    pub fn walked(&self, token: u64, bytes: u64) {
        let mut c = lock(&self.count);
        if c.changes == token || c.bytes.is_none() {
            c.bytes = Some(bytes);
            c.changes += 1;
            c.walked = Some(Instant::now());
        }
    }

    /// Bytes held now (0 before the first walk).
    pub fn bytes(&self) -> u64 {
        lock(&self.count).bytes.unwrap_or(0)
    }

    /// Takes `bytes` if the store stays within `quota` with them.
    pub fn reserve(&self, bytes: u64, quota: u64) -> Result<(), OverQuota> {
        if bytes == 0 {
            return Ok(());
        }
        let mut c = lock(&self.count);
        let now = c.bytes.unwrap_or(0);
        match now.checked_add(bytes) {
            Some(total) if total <= quota => {
                c.bytes = Some(total);
                c.changes += 1;
                Ok(())
            }
            _ => Err(OverQuota { quota }),
        }
    }

    /// Gives back `bytes` (a file shrank or went away).
    pub fn release(&self, bytes: u64) {
        self.adjust(0, bytes);
    }

    /// Counts `plus` and gives back `minus` in one step (before the first
    /// walk there is nothing to adjust: the walk will count).
    pub fn adjust(&self, plus: u64, minus: u64) {
        let mut c = lock(&self.count);
        if let Some(now) = c.bytes
            && plus != minus
        {
            c.bytes = Some(now.saturating_add(plus).saturating_sub(minus));
            c.changes += 1;
        }
    }

    /// An upload began (its temporary file is counted as it grows).
    pub fn upload_began(&self) {
        let mut c = lock(&self.count);
        c.uploads += 1;
        c.changes += 1;
    }

    /// An upload was stored or discarded.
    pub fn upload_ended(&self) {
        let mut c = lock(&self.count);
        c.uploads = c.uploads.saturating_sub(1);
        c.changes += 1;
    }

    /// Held while a file's size changes by its name (see `naming`).
    pub fn naming(&self) -> MutexGuard<'_, ()> {
        lock(&self.naming)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_from_many_threads_never_pass_the_quota() {
        let u = Arc::new(Usage::default());
        u.walked(0, 1_000);
        let granted: u64 = (0..8)
            .map(|_| {
                let u = u.clone();
                std::thread::spawn(move || {
                    (0..1_000).filter(|_| u.reserve(7, 10_000).is_ok()).count() as u64 * 7
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .sum();
        assert_eq!(u.bytes(), 1_000 + granted);
        assert!(u.bytes() <= 10_000 && u.bytes() > 10_000 - 7);
        u.release(granted);
        assert_eq!(u.bytes(), 1_000);
    }

    #[test]
    fn a_walk_that_raced_a_change_is_not_applied() {
        let u = Usage::default();
        let first = u.wants_walk().expect("never counted: walk");
        u.walked(first, 500);
        assert_eq!(u.wants_walk(), None, "just counted");
        u.upload_began();
        u.reserve(100, 1_000).unwrap();
        // A walk begun before the reservation would forget it.
        u.walked(first, 500);
        assert_eq!(u.bytes(), 600);
        u.upload_ended();
    }

    #[test]
    fn one_directory_is_one_count() {
        let at = Path::new("/nowhere");
        let a = Usage::of(at, u64::MAX, 1);
        let b = Usage::of(at, u64::MAX, 1);
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &Usage::of(at, u64::MAX, 2)));
        assert!(!Arc::ptr_eq(
            &a,
            &Usage::of(Path::new("/else"), u64::MAX, 1)
        ));
    }
}
