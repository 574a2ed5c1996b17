//! This gateway's copy of the shared directory on its own disk: a gateway
//! restarted while PostgreSQL is away still decides, on its last copy.

use std::sync::atomic::{AtomicI64, Ordering};

use sled::Transactional;

use super::{StoreError, Write};

/// The copy's records (key → JSON, as in PostgreSQL) and what they are.
pub(crate) struct SharedCopy {
    records: sled::Tree,
    meta: sled::Tree,
    /// The last contact written down (µs).
    saved_contact: AtomicI64,
}

const VERSION: &[u8] = b"version";
const DIRECTORY: &[u8] = b"directory_id";
const CONTACT: &[u8] = b"last_contact";
/// How often the last contact is written down (µs): after a restart,
/// `max_stale` counts from at most this much after the real last contact.
const CONTACT_EVERY: i64 = 5_000_000;

/// What a start without the server has to go on.
pub(crate) struct Copied {
    pub records: Vec<Write>,
    pub version: u64,
    /// Which shared directory it is a copy of.
    pub directory_id: String,
    /// When the server was last reached (µs).
    pub last_contact: i64,
}

impl SharedCopy {
    pub fn open(db: &sled::Db) -> Result<SharedCopy, StoreError> {
        Ok(SharedCopy {
            records: db.open_tree("shared_directory_copy")?,
            meta: db.open_tree("shared_directory_copy_meta")?,
            saved_contact: AtomicI64::new(0),
        })
    }

    /// The whole directory at `version`, replacing what the copy held. The
    /// version goes first, so a copy cut short by a crash is no copy.
    pub fn replace(
        &self,
        records: &[Write],
        version: u64,
        directory_id: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        self.meta.remove(VERSION)?;
        self.meta.insert(DIRECTORY, directory_id.as_bytes())?;
        self.records.clear()?;
        let mut batch = sled::Batch::default();
        for (key, value) in records {
            if let Some(v) = value {
                batch.insert(key.as_slice(), v.as_slice());
            }
        }
        self.records.apply_batch(batch)?;
        self.meta.insert(CONTACT, &now.to_be_bytes())?;
        self.meta.insert(VERSION, &version.to_be_bytes())?;
        self.saved_contact.store(now, Ordering::Relaxed);
        Ok(())
    }

    /// Records changed from version `from` to `to`, all or nothing; a copy
    /// not at `from` (a change it missed) is no copy from now on.
    pub fn apply(&self, records: &[Write], from: u64, to: u64) -> Result<(), StoreError> {
        let at = self
            .meta
            .get(VERSION)?
            .and_then(|v| <[u8; 8]>::try_from(&v[..]).ok())
            .map(u64::from_be_bytes);
        if at != Some(from) {
            self.forget()?;
            return Err(StoreError::Sled(format!(
                "the copy was at {at:?}, not {from}: dropped until the next start reads the whole directory"
            )));
        }
        let version = to;
        (&self.records, &self.meta)
            .transaction(|(r, m)| {
                for (key, value) in records {
                    match value {
                        Some(v) => r.insert(key.as_slice(), v.as_slice())?,
                        None => r.remove(key.as_slice())?,
                    };
                }
                m.insert(VERSION, &version.to_be_bytes())?;
                Ok(())
            })
            .map_err(|e: sled::transaction::TransactionError| StoreError::Sled(e.to_string()))
    }

    /// Makes the copy no copy (a change it could not keep).
    pub fn forget(&self) -> Result<(), StoreError> {
        self.meta.remove(VERSION)?;
        Ok(())
    }

    /// The server answered at `at` (µs); written down now and then.
    pub fn reached(&self, at: i64) {
        if at - self.saved_contact.load(Ordering::Relaxed) < CONTACT_EVERY {
            return;
        }
        self.saved_contact.store(at, Ordering::Relaxed);
        if let Err(e) = self.meta.insert(CONTACT, &at.to_be_bytes()) {
            tracing::warn!(error = %e, "the time of the last contact could not be kept");
        }
    }

    /// The copy, if this gateway ever had the whole directory.
    pub fn load(&self) -> Result<Option<Copied>, StoreError> {
        let number = |key: &[u8]| -> Result<Option<[u8; 8]>, StoreError> {
            Ok(self
                .meta
                .get(key)?
                .and_then(|v| <[u8; 8]>::try_from(&v[..]).ok()))
        };
        let Some(version) = number(VERSION)? else {
            return Ok(None);
        };
        let last_contact = number(CONTACT)?.map(i64::from_be_bytes).unwrap_or(0);
        let directory_id = self
            .meta
            .get(DIRECTORY)?
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .unwrap_or_default();
        let records = self
            .records
            .iter()
            .map(|item| item.map(|(k, v)| (k.to_vec(), Some(v.to_vec()))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(Copied {
            records,
            version: u64::from_be_bytes(version),
            directory_id,
            last_contact,
        }))
    }
}
