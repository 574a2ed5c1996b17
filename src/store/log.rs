//! The security log: hash-chained events in sled, appended by one writer
//! thread that group-commits (one flush for every event queued meanwhile) and
//! acknowledges an event only after sled has flushed it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;

use std::sync::Mutex;

use super::index::Query;

/// How often the indexer looks for new events.
const INDEX_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// Above this many new events per second the indexer waits for a quieter
/// moment (a burst of durable appends goes first), and it stops between
/// batches whenever appends are waiting…
const BUSY_RATE: u64 = 100;
/// …but past this lag it indexes at any rate, between group commits.
const MAX_LAG: u64 = 500_000;
use std::thread::JoinHandle;

use ring::digest::SHA256;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::model::micros;

/// The encoding version of [`SecurityEvent`]; the hash covers the encoding,
/// so a field is never added without a new version.
pub const EVENT_VERSION: u32 = 1;

/// `prev_hash` of the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Most events one flush may cover; bounds the latency of the first.
const MAX_BATCH: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    Authentication,
    Authorization,
    Session,
    Modbus,
    File,
    Admin,
    Audit,
    System,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Failure,
    Allow,
    Deny,
}

/// One security event exactly as DESIGN §4 fixes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityEvent {
    pub v: u32,
    pub seq: u64,
    /// UTC, microseconds since the epoch.
    pub time: i64,
    pub code: String,
    pub category: Category,
    pub outcome: Outcome,
    pub principal: Option<String>,
    pub source: Option<String>,
    pub door: Option<String>,
    pub meter: Option<String>,
    pub action: Option<String>,
    pub permission: Option<String>,
    pub reason: Option<String>,
    pub detail: BTreeMap<String, String>,
    pub prev_hash: String,
    pub hash: String,
}

/// The canonical encoding the hash covers: every field but `hash`, in this
/// order, as compact JSON. The writer produces the same bytes by splicing
/// (see [`seal`]); verify re-derives them through this struct.
#[derive(Serialize)]
struct Canonical<'a> {
    v: u32,
    seq: u64,
    time: i64,
    #[serde(flatten)]
    fields: DraftFields<'a>,
    prev_hash: &'a str,
}

impl SecurityEvent {
    /// SHA-256 over (previous event's hash, canonical encoding), hex. Derived
    /// here from the fields through [`Canonical`], independently of the
    /// writer's splicing, so verify checks both agree.
    pub fn compute_hash(&self) -> String {
        let fields = DraftFields {
            code: &self.code,
            category: self.category,
            outcome: self.outcome,
            principal: &self.principal,
            source: &self.source,
            door: &self.door,
            meter: &self.meter,
            action: &self.action,
            permission: &self.permission,
            reason: &self.reason,
            detail: &self.detail,
        };
        let body = Canonical {
            v: self.v,
            seq: self.seq,
            time: self.time,
            fields,
            prev_hash: &self.prev_hash,
        };
        let json = serde_json::to_vec(&body).unwrap_or_default();
        let mut ctx = ring::digest::Context::new(&SHA256);
        match hex::decode(&self.prev_hash) {
            Ok(raw) => ctx.update(&raw),
            Err(_) => ctx.update(self.prev_hash.as_bytes()),
        }
        ctx.update(&json);
        hex::encode(ctx.finish().as_ref())
    }
}

/// What a door or the guard wants logged; the log adds seq, time and hashes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventDraft {
    pub code: String,
    pub category: Category,
    pub outcome: Outcome,
    pub principal: Option<String>,
    pub source: Option<String>,
    pub door: Option<String>,
    pub meter: Option<String>,
    pub action: Option<String>,
    pub permission: Option<String>,
    pub reason: Option<String>,
    pub detail: BTreeMap<String, String>,
}

impl EventDraft {
    pub fn new(code: &str, category: Category, outcome: Outcome) -> EventDraft {
        EventDraft {
            code: code.to_string(),
            category,
            outcome,
            principal: None,
            source: None,
            door: None,
            meter: None,
            action: None,
            permission: None,
            reason: None,
            detail: BTreeMap::new(),
        }
    }

    pub fn principal(mut self, p: impl ToString) -> Self {
        self.principal = Some(p.to_string());
        self
    }
    pub fn source(mut self, s: impl ToString) -> Self {
        self.source = Some(s.to_string());
        self
    }
    pub fn door(mut self, d: impl ToString) -> Self {
        self.door = Some(d.to_string());
        self
    }
    pub fn meter(mut self, m: impl ToString) -> Self {
        self.meter = Some(m.to_string());
        self
    }
    pub fn action(mut self, a: impl ToString) -> Self {
        self.action = Some(a.to_string());
        self
    }
    pub fn permission(mut self, p: impl ToString) -> Self {
        self.permission = Some(p.to_string());
        self
    }
    pub fn reason(mut self, r: impl ToString) -> Self {
        self.reason = Some(r.to_string());
        self
    }
    pub fn detail(mut self, k: &str, v: impl ToString) -> Self {
        self.detail.insert(k.to_string(), v.to_string());
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    #[error("the security log cannot make the event durable: {0}")]
    Unavailable(String),
    #[error("the security log is closed")]
    Closed,
}

type Ack = tokio::sync::oneshot::Sender<Result<u64, AuditError>>;

struct Job {
    /// The draft's fields (`code` to `detail`) as canonical JSON without
    /// braces, serialized by the appending task so the one writer thread
    /// only splices in seq, time and prev_hash and hashes.
    fields: Vec<u8>,
    ack: Ack,
}

struct Shared {
    /// Set by tests (and by a failed flush) to make every append fail.
    failing: AtomicBool,
    injected: AtomicBool,
    last_seq: AtomicU64,
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
    /// One indexer at a time (the thread or a query catching up).
    indexing: Arc<Mutex<()>>,
}

impl AuditLog {
    /// Opens the log on `tree`, flushing through `db`.
    pub fn open(
        db: &sled::Db,
        tree: sled::Tree,
        index: sled::Tree,
    ) -> Result<AuditLog, sled::Error> {
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
            flushes: AtomicU64::new(0),
            pending: AtomicU64::new(0),
        });
        let (tx, rx) = mpsc::channel::<Job>();
        let writer = {
            let (db, tree, shared) = (db.clone(), tree.clone(), shared.clone());
            let head = Head {
                seq: last_seq,
                hash: last_hash,
                time: last_time,
            };
            std::thread::Builder::new()
                .name("audit-writer".into())
                .spawn(move || writer_loop(tree, db, rx, shared, head))
                .map_err(sled::Error::Io)?
        };
        // The indexes follow the log in their own thread, off the path of
        // acknowledgements (an event is durable before it is indexed; a
        // query first indexes whatever is still missing).
        let indexing = Arc::new(Mutex::new(()));
        let (idx_tx, idx_rx) = mpsc::channel::<()>();
        let indexer = {
            let (tree, index, indexing, shared) = (
                tree.clone(),
                index.clone(),
                indexing.clone(),
                shared.clone(),
            );
            std::thread::Builder::new()
                .name("audit-indexer".into())
                .spawn(move || {
                    let mut seen = last_seq;
                    let mut indexed = super::index::high(&index).unwrap_or(0);
                    while let Err(mpsc::RecvTimeoutError::Timeout) =
                        idx_rx.recv_timeout(INDEX_EVERY)
                    {
                        let now = shared.last_seq.load(Ordering::Acquire);
                        let rate =
                            now.saturating_sub(seen) * 1000 / INDEX_EVERY.as_millis().max(1) as u64;
                        seen = now;
                        let lagging = now.saturating_sub(indexed) >= MAX_LAG;
                        // Appends waiting always go first; a query indexes
                        // whatever is still missing itself.
                        let busy = || shared.pending.load(Ordering::Relaxed) > 0;
                        if now == indexed || (!lagging && (rate > BUSY_RATE || busy())) {
                            continue;
                        }
                        if let Ok(_turn) = indexing.lock()
                            && let Err(e) = super::index::catch_up_unless(&tree, &index, busy)
                        {
                            tracing::warn!(error = %e, "security log index not updated");
                        }
                        indexed = super::index::high(&index).unwrap_or(indexed);
                    }
                })
                .map_err(sled::Error::Io)?
        };
        Ok(AuditLog {
            inner: Arc::new(Inner {
                tx: Some(tx),
                idx_tx: Some(idx_tx),
                threads: vec![writer, indexer],
                shared,
            }),
            tree,
            index,
            indexing,
        })
    }

    fn submit(&self, draft: EventDraft) -> tokio::sync::oneshot::Receiver<Result<u64, AuditError>> {
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

    /// Walks the whole chain.
    pub fn verify(&self) -> VerifyReport {
        verify_tree(&self.tree)
    }
}

fn key_seq(key: &[u8]) -> u64 {
    key.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

/// The newest event the writer has put in the tree.
struct Head {
    seq: u64,
    hash: String,
    time: i64,
}

/// The fields of the canonical encoding that come from the draft, in order.
#[derive(Serialize)]
struct DraftFields<'a> {
    code: &'a str,
    category: Category,
    outcome: Outcome,
    principal: &'a Option<String>,
    source: &'a Option<String>,
    door: &'a Option<String>,
    meter: &'a Option<String>,
    action: &'a Option<String>,
    permission: &'a Option<String>,
    reason: &'a Option<String>,
    detail: &'a BTreeMap<String, String>,
}

/// `"code":…,"detail":{…}`: the draft's part of the canonical encoding.
fn draft_fields(d: &EventDraft) -> Vec<u8> {
    let f = DraftFields {
        code: &d.code,
        category: d.category,
        outcome: d.outcome,
        principal: &d.principal,
        source: &d.source,
        door: &d.door,
        meter: &d.meter,
        action: &d.action,
        permission: &d.permission,
        reason: &d.reason,
        detail: &d.detail,
    };
    // Serializing plain strings, enums and a BTreeMap cannot fail.
    let mut bytes = serde_json::to_vec(&f).unwrap_or_else(|_| b"{}".to_vec());
    bytes.pop();
    bytes.remove(0);
    bytes
}

/// Seals an event: builds its canonical encoding from the draft's fields,
/// hashes (previous hash, encoding) and returns the stored record (the
/// encoding with `"hash"` appended) and the hash. The bytes equal what
/// `serde_json` makes of [`Canonical`], which `compute_hash` re-derives.
fn seal(v: u32, seq: u64, time: i64, fields: &[u8], prev_hash: &str) -> (Vec<u8>, String) {
    let mut bytes = Vec::with_capacity(fields.len() + 200);
    bytes.extend_from_slice(format!("{{\"v\":{v},\"seq\":{seq},\"time\":{time},").as_bytes());
    bytes.extend_from_slice(fields);
    bytes.extend_from_slice(b",\"prev_hash\":\"");
    bytes.extend_from_slice(prev_hash.as_bytes());
    bytes.extend_from_slice(b"\"}");
    let mut ctx = ring::digest::Context::new(&SHA256);
    match hex::decode(prev_hash) {
        Ok(raw) => ctx.update(&raw),
        Err(_) => ctx.update(prev_hash.as_bytes()),
    }
    ctx.update(&bytes);
    let hash = hex::encode(ctx.finish().as_ref());
    bytes.pop();
    bytes.extend_from_slice(b",\"hash\":\"");
    bytes.extend_from_slice(hash.as_bytes());
    bytes.extend_from_slice(b"\"}");
    (bytes, hash)
}

/// How long the writer may wait for the writers that the previous flush
/// released to queue their next event (PostgreSQL's `commit_delay` idea):
/// only when that flush covered several events, so a lone writer never waits.
const COMMIT_DELAY: std::time::Duration = std::time::Duration::from_micros(500);

/// Takes every event queued meanwhile (waiting briefly for as many as the
/// last flush covered), seals and inserts them in one batch, flushes once and
/// acknowledges them all: group commit. An event is acknowledged only after
/// sled has flushed it.
fn writer_loop(
    tree: sled::Tree,
    db: sled::Db,
    rx: mpsc::Receiver<Job>,
    shared: Arc<Shared>,
    mut head: Head,
) {
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
        if shared.injected.load(Ordering::Relaxed) {
            for j in jobs {
                let _ = j
                    .ack
                    .send(Err(AuditError::Unavailable("failure injected".into())));
            }
            shared.pending.fetch_sub(taken, Ordering::Relaxed);
            continue;
        }
        let time = micros(OffsetDateTime::now_utc()).max(head.time);
        let mut batch = sled::Batch::default();
        let (mut seq, mut hash) = (head.seq, head.hash.clone());
        let mut acks = Vec::with_capacity(jobs.len());
        for j in jobs {
            seq += 1;
            let (bytes, h) = seal(EVENT_VERSION, seq, time, &j.fields, &hash);
            hash = h;
            batch.insert(&seq.to_be_bytes(), bytes);
            acks.push((j.ack, seq));
        }
        let result = match tree.apply_batch(batch) {
            Err(e) => Err(AuditError::Unavailable(e.to_string())),
            Ok(()) => {
                // The records are in the tree now, whatever the flush does.
                head = Head { seq, hash, time };
                shared.last_seq.store(seq, Ordering::Release);
                db.flush()
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

/// What `audit verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub events: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub head_hash: String,
    /// The first bad seq and what is wrong with it.
    pub problem: Option<(u64, String)>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problem.is_none()
    }
}

/// Walks the chain from seq 1 and stops at the first bad record.
pub fn verify_tree(tree: &sled::Tree) -> VerifyReport {
    let mut report = VerifyReport {
        events: 0,
        first_seq: None,
        last_seq: None,
        head_hash: GENESIS_HASH.into(),
        problem: None,
    };
    let mut prev = GENESIS_HASH.to_string();
    for (expected, item) in (1u64..).zip(tree.iter()) {
        let (k, v) = match item {
            Ok(kv) => kv,
            Err(e) => {
                report.problem = Some((expected, format!("the store cannot be read here: {e}")));
                return report;
            }
        };
        let key = key_seq(&k);
        let fail = |seq: u64, why: String| Some((seq, why));
        if key != expected {
            report.problem = fail(
                expected,
                format!("event {expected} is missing (the next stored event is {key})"),
            );
            return report;
        }
        let ev: SecurityEvent = match serde_json::from_slice(&v) {
            Ok(ev) => ev,
            Err(e) => {
                report.problem = fail(key, format!("event {key} cannot be decoded: {e}"));
                return report;
            }
        };
        if ev.seq != key {
            report.problem = fail(
                key,
                format!(
                    "the record stored as event {key} says it is event {} (records moved or swapped)",
                    ev.seq
                ),
            );
            return report;
        }
        if ev.v != EVENT_VERSION {
            report.problem = fail(
                key,
                format!("event {key} has unknown encoding version {}", ev.v),
            );
            return report;
        }
        if ev.prev_hash != prev {
            report.problem = fail(
                key,
                format!(
                    "event {key} does not follow event {}: its prev_hash does not match (a record before it was changed, removed or reordered)",
                    key - 1
                ),
            );
            return report;
        }
        if ev.compute_hash() != ev.hash {
            report.problem = fail(
                key,
                format!("event {key} was modified: its content does not match its hash"),
            );
            return report;
        }
        report.first_seq.get_or_insert(key);
        report.last_seq = Some(key);
        report.events += 1;
        prev = ev.hash;
    }
    report.head_hash = prev;
    report
}
