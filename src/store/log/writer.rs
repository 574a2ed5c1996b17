//! The writer: one thread takes every event queued meanwhile, seals them
//! into the chain, flushes once and acknowledges them all (group commit).

use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use time::OffsetDateTime;

use crate::model::micros;

use super::capacity::make_room;
use super::event::{EVENT_VERSION, EventDraft, draft_fields, seal};
use super::{AuditError, AuditLog, Shared};

/// Most events one flush may cover; bounds the latency of the first.
const MAX_BATCH: usize = 4096;

pub(super) type Ack = tokio::sync::oneshot::Sender<Result<u64, AuditError>>;

pub(super) struct Job {
    /// The draft's fields (`code` to `detail`) as canonical JSON without
    /// braces, serialized by the appending task so the one writer thread
    /// only splices in seq, time and prev_hash and hashes.
    fields: Vec<u8>,
    ack: Ack,
}

impl AuditLog {
    fn submit(
        &self,
        mut draft: EventDraft,
    ) -> tokio::sync::oneshot::Receiver<Result<u64, AuditError>> {
        if let Some(gateway) = self.inner.gateway.get() {
            draft
                .detail
                .entry("gateway".to_string())
                .or_insert_with(|| gateway.clone());
        }
        let (ack, rx) = tokio::sync::oneshot::channel();
        if let Some(tx) = &self.inner.tx {
            // A send error drops `ack`, which the receiver sees as Closed.
            self.inner.shared.pending.fetch_add(1, Ordering::Relaxed);
            if tx
                .send(Job {
                    fields: draft_fields(&draft),
                    ack,
                })
                .is_err()
            {
                self.inner.shared.pending.fetch_sub(1, Ordering::Relaxed);
            }
        }
        rx
    }

    /// Names this gateway in every event from now on (once; later calls
    /// change nothing).
    pub fn name_gateway(&self, name: &str) {
        let _ = self.inner.gateway.set(name.to_string());
    }

    /// Appends an event; resolves with its seq once it is durable.
    pub async fn append(&self, draft: EventDraft) -> Result<u64, AuditError> {
        self.submit(draft).await.unwrap_or(Err(AuditError::Closed))
    }

    /// Like [`AuditLog::append`], for threads outside the async runtime.
    pub fn append_blocking(&self, draft: EventDraft) -> Result<u64, AuditError> {
        self.submit(draft)
            .blocking_recv()
            .unwrap_or(Err(AuditError::Closed))
    }
}

/// The newest event the writer has put in the tree.
pub(super) struct Head {
    pub(super) seq: u64,
    pub(super) hash: String,
    pub(super) time: i64,
}

/// How long the writer may wait for the writers that the previous flush
/// released to queue their next event (PostgreSQL's `commit_delay` idea):
/// only when that flush covered several events, so a lone writer never waits.
const COMMIT_DELAY: std::time::Duration = std::time::Duration::from_micros(500);

/// What the writer thread owns.
pub(super) struct Writer {
    pub(super) db: sled::Db,
    pub(super) tree: sled::Tree,
    pub(super) index: sled::Tree,
    pub(super) cuts: sled::Tree,
    pub(super) indexing: Arc<Mutex<()>>,
    pub(super) signing: Arc<ring::signature::Ed25519KeyPair>,
    pub(super) shared: Arc<Shared>,
}

/// Starts the writer thread; it ends after its last flush once every
/// sender of the queue is gone.
pub(super) fn spawn(
    w: Writer,
    rx: mpsc::Receiver<Job>,
    head: Head,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("audit-writer".into())
        .spawn(move || writer_loop(w, rx, head))
}

/// Takes every event queued meanwhile (waiting briefly for as many as the
/// last flush covered), makes room for them (capacity), seals and inserts
/// them in one batch, flushes once and acknowledges them all: group commit.
/// An event is acknowledged only after sled has flushed it.
fn writer_loop(w: Writer, rx: mpsc::Receiver<Job>, mut head: Head) {
    let shared = w.shared.clone();
    let mut last_batch = 1usize;
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        if last_batch > 1 && jobs.len() < last_batch {
            let deadline = std::time::Instant::now() + COMMIT_DELAY;
            while jobs.len() < last_batch.min(MAX_BATCH) {
                match rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
                {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
        }
        last_batch = jobs.len();
        let taken = jobs.len() as u64;
        let refuse = |jobs: Vec<Job>, e: AuditError| {
            for j in jobs {
                let _ = j.ack.send(Err(e.clone()));
            }
            shared.pending.fetch_sub(taken, Ordering::Relaxed);
        };
        if shared.injected.load(Ordering::Relaxed) {
            refuse(jobs, AuditError::Unavailable("failure injected".into()));
            continue;
        }
        // The log's own events (a cut, the capacity warning) go first.
        let own = match make_room(&w, &head, taken) {
            Ok(own) => own,
            Err(e) => {
                if matches!(e, AuditError::Full(_)) {
                    shared.refused_full.fetch_add(taken, Ordering::Relaxed);
                } else {
                    shared.failing.store(true, Ordering::Relaxed);
                    tracing::error!(error = %e, "security log could not make room");
                }
                refuse(jobs, e);
                continue;
            }
        };
        let time = micros(OffsetDateTime::now_utc()).max(head.time);
        let mut batch = sled::Batch::default();
        let (mut seq, mut hash) = (head.seq, head.hash.clone());
        let mut acks = Vec::with_capacity(jobs.len());
        for fields in own.iter() {
            seq += 1;
            let (bytes, h) = seal(EVENT_VERSION, seq, time, fields, &hash);
            hash = h;
            batch.insert(&seq.to_be_bytes(), bytes);
        }
        for j in jobs {
            seq += 1;
            let (bytes, h) = seal(EVENT_VERSION, seq, time, &j.fields, &hash);
            hash = h;
            batch.insert(&seq.to_be_bytes(), bytes);
            acks.push((j.ack, seq));
        }
        let result = match w.tree.apply_batch(batch) {
            Err(e) => Err(AuditError::Unavailable(e.to_string())),
            Ok(()) => {
                // The records are in the tree now, whatever the flush does.
                if shared.first_seq.load(Ordering::Acquire) == 0 {
                    shared.first_seq.store(head.seq + 1, Ordering::Release);
                }
                head = Head { seq, hash, time };
                shared.last_seq.store(seq, Ordering::Release);
                w.db.flush()
                    .map(|_| ())
                    .map_err(|e| AuditError::Unavailable(e.to_string()))
            }
        };
        shared.flushes.fetch_add(1, Ordering::Relaxed);
        shared.pending.fetch_sub(taken, Ordering::Relaxed);
        match result {
            Ok(()) => {
                shared.failing.store(false, Ordering::Relaxed);
                for (ack, seq) in acks {
                    let _ = ack.send(Ok(seq));
                }
            }
            Err(e) => {
                shared.failing.store(true, Ordering::Relaxed);
                tracing::error!(error = %e, "security log write failed");
                for (ack, _) in acks {
                    let _ = ack.send(Err(e.clone()));
                }
            }
        }
    }
}
