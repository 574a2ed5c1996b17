//! The security log: hash-chained events in sled, appended by one writer
//! thread that group-commits (one flush for every event queued meanwhile) and
//! acknowledges an event only after sled has flushed it.
//!
//! The handle and its state live here; the event and its encoding in
//! `event`, the group commit in `writer`, the capacity rule and the quota in
//! `capacity`, the index follower in `indexer`, the chain walk in `verify`.

mod capacity;
mod event;
mod indexer;
mod verify;
mod writer;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::cut::{self, CutMarker};
use super::forward::ForwardState;
use super::index::Query;

pub use capacity::{Capacity, WhenFull};
pub use event::{Category, EVENT_VERSION, EventDraft, GENESIS_HASH, Outcome, SecurityEvent};
pub use verify::{VerifyReport, verify_after, verify_chain, verify_tree};

use capacity::{Quota, remove_before};
use writer::{Head, Job, Writer};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    #[error("the security log cannot make the event durable: {0}")]
    Unavailable(String),
    #[error("the security log is full: {0}")]
    Full(String),
    #[error("the security log is closed")]
    Closed,
}

/// What `audit status` and the metrics show of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogStatus {
    pub first_seq: u64,
    pub last_seq: u64,
    /// Events stored now.
    pub stored: u64,
    pub capacity: Capacity,
    pub pending: u64,
    pub failing: bool,
    /// Events refused because the log was full, since start.
    pub refused_full: u64,
    /// Events removed by drop-oldest, since start.
    pub dropped: u64,
    /// The newest cut marker, if the log was ever cut.
    pub last_cut: Option<CutMarker>,
    /// Unauthenticated-traffic events only counted (quota), since start.
    pub suppressed: u64,
    /// The forwarder's delivered seq (0 without forwarding).
    pub forwarded: u64,
}

struct Shared {
    /// Set by tests (and by a failed flush) to make every append fail.
    failing: AtomicBool,
    injected: AtomicBool,
    last_seq: AtomicU64,
    /// Oldest stored seq (0 while empty).
    first_seq: AtomicU64,
    capacity: Mutex<Capacity>,
    refused_full: AtomicU64,
    dropped: AtomicU64,
    /// The warning event was written; re-armed below the threshold.
    warned: AtomicBool,
    quota: Mutex<Quota>,
    suppressed: AtomicU64,
    /// The forwarder's state, for what it has delivered.
    forward: Arc<ForwardState>,
    flushes: AtomicU64,
    /// Events handed to the writer and not yet durable (or refused).
    pending: AtomicU64,
}

struct Inner {
    tx: Option<mpsc::Sender<Job>>,
    /// Dropping it stops the indexer.
    idx_tx: Option<mpsc::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
    /// This gateway's name when it shares a directory: every event's
    /// detail names it, so a SIEM merging many gateways' logs can tell them
    /// apart.
    gateway: std::sync::OnceLock<String>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue ends the writer after its last flush: nothing
        // acknowledged is left behind.
        self.tx.take();
        self.idx_tx.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Handle to the security log; cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
    tree: sled::Tree,
    index: sled::Tree,
    cuts: sled::Tree,
    /// One indexer at a time (the thread or a query catching up).
    indexing: Arc<Mutex<()>>,
}

impl AuditLog {
    /// Opens the log on `tree`, flushing through `db`; `forward` tells it
    /// what the forwarder has delivered.
    pub fn open(
        db: &sled::Db,
        tree: sled::Tree,
        index: sled::Tree,
        cuts: sled::Tree,
        signing: Arc<ring::signature::Ed25519KeyPair>,
        capacity: Capacity,
        forward: Arc<ForwardState>,
    ) -> Result<AuditLog, sled::Error> {
        let indexing = Arc::new(Mutex::new(()));
        // A cut interrupted by a stop: its marker is durable, so finish it.
        if let Some(m) = cut::latest(&cuts) {
            let removed = remove_before(&tree, &index, &indexing, m.first_kept_seq)?;
            if removed > 0 {
                db.flush()?;
                tracing::info!(
                    removed,
                    first_kept_seq = m.first_kept_seq,
                    "finished a cut a stop interrupted"
                );
            }
        }
        let first_seq = tree.first()?.map(|(k, _)| key_seq(&k)).unwrap_or(0);
        let caught_up = super::index::catch_up(&tree, &index)?;
        if caught_up > 0 {
            tracing::info!(events = caught_up, "indexed events a stop left unindexed");
        }
        let (last_seq, last_hash, last_time) = match tree.last()? {
            Some((_, v)) => match serde_json::from_slice::<SecurityEvent>(&v) {
                Ok(ev) => (ev.seq, ev.hash, ev.time),
                // A broken head still lets the daemon start; verify names it.
                Err(_) => (
                    key_seq(&tree.last()?.map(|(k, _)| k).unwrap_or_default()),
                    GENESIS_HASH.to_string(),
                    0,
                ),
            },
            None => (0, GENESIS_HASH.to_string(), 0),
        };
        let shared = Arc::new(Shared {
            failing: AtomicBool::new(false),
            injected: AtomicBool::new(false),
            last_seq: AtomicU64::new(last_seq),
            first_seq: AtomicU64::new(first_seq),
            capacity: Mutex::new(capacity),
            refused_full: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            warned: AtomicBool::new(false),
            quota: Mutex::new(Quota {
                window: std::time::Instant::now(),
                used: 0,
                unreported: 0,
            }),
            suppressed: AtomicU64::new(0),
            forward,
            flushes: AtomicU64::new(0),
            pending: AtomicU64::new(0),
        });
        let (tx, rx) = mpsc::channel::<Job>();
        let writer = {
            let w = Writer {
                db: db.clone(),
                tree: tree.clone(),
                index: index.clone(),
                cuts: cuts.clone(),
                indexing: indexing.clone(),
                signing,
                shared: shared.clone(),
            };
            let head = Head {
                seq: last_seq,
                hash: last_hash,
                time: last_time,
            };
            writer::spawn(w, rx, head).map_err(sled::Error::Io)?
        };
        // The indexes follow the log in their own thread, off the path of
        // acknowledgements (an event is durable before it is indexed; a
        // query first indexes whatever is still missing).
        let (idx_tx, idx_rx) = mpsc::channel::<()>();
        let indexer = indexer::spawn(
            tree.clone(),
            index.clone(),
            indexing.clone(),
            shared.clone(),
            last_seq,
            idx_rx,
        )
        .map_err(sled::Error::Io)?;
        Ok(AuditLog {
            inner: Arc::new(Inner {
                tx: Some(tx),
                idx_tx: Some(idx_tx),
                threads: vec![writer, indexer],
                shared,
                gateway: std::sync::OnceLock::new(),
            }),
            tree,
            index,
            cuts,
            indexing,
        })
    }

    /// Oldest stored seq (0 while empty).
    pub fn first_seq(&self) -> u64 {
        self.inner.shared.first_seq.load(Ordering::Acquire)
    }

    pub fn status(&self) -> LogStatus {
        let sh = &self.inner.shared;
        let (first, last) = (self.first_seq(), self.last_seq());
        LogStatus {
            first_seq: first,
            last_seq: last,
            stored: if first == 0 || last < first {
                0
            } else {
                last - first + 1
            },
            capacity: sh.capacity.lock().map(|c| c.clone()).unwrap_or_default(),
            pending: self.pending(),
            failing: self.is_failing(),
            refused_full: sh.refused_full.load(Ordering::Relaxed),
            dropped: sh.dropped.load(Ordering::Relaxed),
            last_cut: cut::latest(&self.cuts),
            suppressed: sh.suppressed.load(Ordering::Relaxed),
            forwarded: sh.forward.delivered(),
        }
    }

    /// Reads stored events from `from` on (at most `max`), oldest first.
    pub fn range(&self, from: u64, max: usize) -> Result<Vec<SecurityEvent>, sled::Error> {
        let mut out = Vec::with_capacity(max.min(4096));
        for item in self.tree.range(from.to_be_bytes()..).take(max) {
            let (_, v) = item?;
            if let Ok(ev) = serde_json::from_slice(&v) {
                out.push(ev);
            }
        }
        Ok(out)
    }

    /// Raw stored records from `from` on (at most `max`): (seq, JSON).
    pub fn raw_range(&self, from: u64, max: usize) -> Result<Vec<(u64, sled::IVec)>, sled::Error> {
        let mut out = Vec::with_capacity(max.min(4096));
        for item in self.tree.range(from.to_be_bytes()..).take(max) {
            let (k, v) = item?;
            out.push((key_seq(&k), v));
        }
        Ok(out)
    }

    /// The first seq at or after time `t` (UTC µs), by binary search.
    pub fn seq_at(&self, t: i64) -> Result<u64, sled::Error> {
        let (first, last) = (self.first_seq().max(1), self.last_seq());
        super::index::first_seq_at(&self.tree, t, first, last)
    }

    /// Seq of the newest event.
    pub fn last_seq(&self) -> u64 {
        self.inner.shared.last_seq.load(Ordering::Acquire)
    }

    /// Events waiting to be made durable (the writer's backlog).
    pub fn pending(&self) -> u64 {
        self.inner.shared.pending.load(Ordering::Relaxed)
    }

    /// How many flushes the writer has done (group commit makes it far fewer
    /// than events).
    pub fn flushes(&self) -> u64 {
        self.inner.shared.flushes.load(Ordering::Relaxed)
    }

    /// Whether a flush has failed since start (the alarm of DESIGN §4).
    pub fn is_failing(&self) -> bool {
        self.inner.shared.failing.load(Ordering::Relaxed)
            || self.inner.shared.injected.load(Ordering::Relaxed)
    }

    /// Makes every append fail as if the disk had gone away (for tests of
    /// the failure rule and for drills).
    pub fn inject_failure(&self, on: bool) {
        self.inner.shared.injected.store(on, Ordering::Relaxed);
    }

    pub(crate) fn tree(&self) -> &sled::Tree {
        &self.tree
    }

    /// The newest events matching `q`, oldest first.
    pub fn query(&self, q: &Query) -> Result<Vec<SecurityEvent>, sled::Error> {
        if let Ok(_turn) = self.indexing.lock() {
            super::index::catch_up(&self.tree, &self.index)?;
        }
        super::index::run(&self.tree, &self.index, q)
    }

    /// Reads one event.
    pub fn get(&self, seq: u64) -> Result<Option<SecurityEvent>, sled::Error> {
        Ok(self
            .tree
            .get(seq.to_be_bytes())?
            .and_then(|v| serde_json::from_slice(&v).ok()))
    }

    /// The newest `n` events, oldest first.
    pub fn tail(&self, n: usize) -> Result<Vec<SecurityEvent>, sled::Error> {
        let mut out = Vec::with_capacity(n.min(1024));
        for item in self.tree.iter().rev().take(n) {
            let (_, v) = item?;
            if let Ok(ev) = serde_json::from_slice(&v) {
                out.push(ev);
            }
        }
        out.reverse();
        Ok(out)
    }

    /// Walks the chain (from `from`, or from the start or the signed cut
    /// marker), checking cut markers against `trusted_key`.
    pub fn verify(&self, trusted_key: Option<&str>, from: Option<u64>) -> VerifyReport {
        verify_chain(&self.tree, Some(&self.cuts), trusted_key, from)
    }

    pub(crate) fn cuts(&self) -> &sled::Tree {
        &self.cuts
    }
}

fn key_seq(key: &[u8]) -> u64 {
    key.try_into().map(u64::from_be_bytes).unwrap_or(0)
}
