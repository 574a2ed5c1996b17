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

use crate::config::{AuditConfig, WhenFull};
use crate::model::micros;

use super::cut::{self, CutMarker};
use super::index::IndexKeys;

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
    #[error("the security log is full: {0}")]
    Full(String),
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

/// How the log behaves near and at its capacity (DESIGN §4, IEC 62443
/// CR 2.9), from `[audit]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capacity {
    /// Counted in events (sled reclaims space lazily: bytes on disk say
    /// little).
    pub events: u64,
    /// A warning event and metric from this many events on.
    pub warn_at: u64,
    pub when_full: WhenFull,
    /// Forwarding is configured: drop-oldest never drops an event the
    /// forwarder has not delivered.
    pub keep_unforwarded: bool,
    /// Events from unauthenticated traffic (aggregated garbage, refused
    /// sources) the log takes per hour; beyond, they are only counted.
    pub unauthenticated_per_hour: u64,
}

impl Capacity {
    pub fn from_config(c: &AuditConfig, forwarding: bool) -> Capacity {
        Capacity {
            events: c.capacity_events,
            warn_at: c.capacity_events / 100 * u64::from(c.warn_at_percent.min(100)),
            when_full: c.when_full,
            keep_unforwarded: forwarding,
            unauthenticated_per_hour: c.unauthenticated_events_per_hour,
        }
    }
}

impl Default for Capacity {
    fn default() -> Self {
        Capacity::from_config(&AuditConfig::default(), false)
    }
}

/// The quota of events from unauthenticated traffic.
struct Quota {
    window: std::time::Instant,
    used: u64,
    /// Suppressed since the last summary event.
    unreported: u64,
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
    /// Highest seq the forwarder has delivered.
    forwarded: AtomicU64,
    refused_full: AtomicU64,
    dropped: AtomicU64,
    /// The warning event was written; re-armed below the threshold.
    warned: AtomicBool,
    quota: Mutex<Quota>,
    suppressed: AtomicU64,
    forward: super::forward::ForwardState,
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
    cuts: sled::Tree,
    /// One indexer at a time (the thread or a query catching up).
    indexing: Arc<Mutex<()>>,
}

impl AuditLog {
    /// Opens the log on `tree`, flushing through `db`.
    pub fn open(
        db: &sled::Db,
        tree: sled::Tree,
        index: sled::Tree,
        cuts: sled::Tree,
        signing: Arc<ring::signature::Ed25519KeyPair>,
        capacity: Capacity,
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
            forwarded: AtomicU64::new(0),
            refused_full: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            warned: AtomicBool::new(false),
            quota: Mutex::new(Quota {
                window: std::time::Instant::now(),
                used: 0,
                unreported: 0,
            }),
            suppressed: AtomicU64::new(0),
            forward: Default::default(),
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
            std::thread::Builder::new()
                .name("audit-writer".into())
                .spawn(move || writer_loop(w, rx, head))
                .map_err(sled::Error::Io)?
        };
        // The indexes follow the log in their own thread, off the path of
        // acknowledgements (an event is durable before it is indexed; a
        // query first indexes whatever is still missing).
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
            cuts,
            indexing,
        })
    }

    /// Applies new capacity settings (a reload).
    pub fn set_capacity(&self, c: Capacity) {
        if let Ok(mut cap) = self.inner.shared.capacity.lock() {
            *cap = c;
        }
    }

    /// The forwarder has delivered everything up to `seq` (drop-oldest may
    /// now drop it).
    pub fn set_forwarded(&self, seq: u64) {
        self.inner.shared.forwarded.store(seq, Ordering::Release);
    }

    /// The syslog forwarder's state.
    pub fn forward_state(&self) -> &super::forward::ForwardState {
        &self.inner.shared.forward
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
            forwarded: sh.forwarded.load(Ordering::Relaxed),
        }
    }

    /// Appends an event caused by unauthenticated traffic (aggregated
    /// garbage, refused sources), within its own hourly quota so that such
    /// traffic cannot fill the log; beyond it the event is only counted and
    /// the count goes into the next [`AuditLog::report_suppressed`] event.
    /// `Ok(None)`: counted, not logged.
    pub async fn append_unauthenticated(
        &self,
        draft: EventDraft,
    ) -> Result<Option<u64>, AuditError> {
        let sh = &self.inner.shared;
        let per_hour = sh
            .capacity
            .lock()
            .map(|c| c.unauthenticated_per_hour)
            .unwrap_or(0);
        let within = match sh.quota.lock() {
            Ok(mut q) => {
                if q.window.elapsed() >= std::time::Duration::from_secs(3600) {
                    q.window = std::time::Instant::now();
                    q.used = 0;
                }
                if q.used < per_hour {
                    q.used += 1;
                    true
                } else {
                    q.unreported += 1;
                    false
                }
            }
            Err(_) => true,
        };
        if within {
            return self.append(draft).await.map(Some);
        }
        sh.suppressed.fetch_add(1, Ordering::Relaxed);
        Ok(None)
    }

    /// Logs how many unauthenticated-traffic events the quota suppressed
    /// since the last such report (nothing if none): called every flood
    /// interval and at shutdown, so no count is lost silently.
    pub async fn report_suppressed(&self) -> Result<(), AuditError> {
        let (n, per_hour) = match self.inner.shared.quota.lock() {
            Ok(mut q) => (
                std::mem::take(&mut q.unreported),
                self.inner
                    .shared
                    .capacity
                    .lock()
                    .map(|c| c.unauthenticated_per_hour)
                    .unwrap_or(0),
            ),
            Err(_) => return Ok(()),
        };
        if n == 0 {
            return Ok(());
        }
        let ev = EventDraft::new("audit.quota-exceeded", Category::Audit, Outcome::Failure)
            .reason(format!(
                "{n} events from unauthenticated traffic were counted, not logged: over the quota of {per_hour} per hour"
            ))
            .detail("suppressed", n)
            .detail("quota_per_hour", per_hour);
        self.append(ev).await.map(|_| ())
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

/// What the writer thread owns.
struct Writer {
    db: sled::Db,
    tree: sled::Tree,
    index: sled::Tree,
    cuts: sled::Tree,
    indexing: Arc<Mutex<()>>,
    signing: Arc<ring::signature::Ed25519KeyPair>,
    shared: Arc<Shared>,
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

/// Room for events besides the incoming ones: a cut and a warning.
const OWN_EVENTS: u64 = 2;

/// Before a batch of `n` events: applies the capacity rule (DESIGN §4).
/// At capacity, `drop-oldest` cuts the oldest events (at least 1% of the
/// capacity at a time, never one not yet forwarded) behind a signed marker;
/// `refuse` (or nothing droppable) refuses the batch. Returns the fields of
/// the events the log writes about itself (the cut, the warning).
fn make_room(w: &Writer, head: &Head, n: u64) -> Result<Vec<Vec<u8>>, AuditError> {
    let sh = &w.shared;
    let cap = sh.capacity.lock().map(|c| c.clone()).unwrap_or_default();
    let first = sh.first_seq.load(Ordering::Acquire);
    let mut stored = if first == 0 || head.seq < first {
        0
    } else {
        head.seq - first + 1
    };
    let mut own = Vec::new();
    if stored + n + OWN_EVENTS > cap.events {
        if cap.when_full == WhenFull::Refuse {
            return Err(AuditError::Full(format!(
                "it holds {stored} of {} events and audit.when_full = refuse",
                cap.events
            )));
        }
        let need = stored + n + OWN_EVENTS - cap.events;
        let mut count = need.max(cap.events / 100).min(stored);
        if cap.keep_unforwarded {
            let sent = sh.forwarded.load(Ordering::Acquire);
            count = count.min(sent.saturating_sub(first.saturating_sub(1)));
        }
        if count < need {
            return Err(AuditError::Full(format!(
                "it holds {stored} of {} events and the oldest are not forwarded yet (drop-oldest never drops those)",
                cap.events
            )));
        }
        let marker =
            trim(w, head, first, count).map_err(|e| AuditError::Unavailable(e.to_string()))?;
        stored -= count;
        let ev = EventDraft::new("audit.log-cut", Category::Audit, Outcome::Success)
            .reason(format!(
                "the log reached its capacity of {} events: drop-oldest removed events {}..{}; a signed marker keeps the chain verifiable from seq {}",
                cap.events,
                marker.dropped_from,
                marker.first_kept_seq - 1,
                marker.first_kept_seq
            ))
            .detail("first_kept_seq", marker.first_kept_seq)
            .detail("dropped_from", marker.dropped_from)
            .detail("dropped", count)
            .detail("prev_hash", &marker.prev_hash);
        own.push(draft_fields(&ev));
    }
    let after = stored + n + own.len() as u64;
    if after >= cap.warn_at {
        if !sh.warned.swap(true, Ordering::Relaxed) {
            let ev = EventDraft::new("audit.capacity-warning", Category::Audit, Outcome::Failure)
                .reason(format!(
                    "the log holds {after} of its {} events (warning at {}); then audit.when_full = {} applies",
                    cap.events,
                    cap.warn_at,
                    match cap.when_full {
                        WhenFull::DropOldest => "drop-oldest",
                        WhenFull::Refuse => "refuse",
                    }
                ))
                .detail("stored", after)
                .detail("capacity", cap.events);
            own.push(draft_fields(&ev));
        }
    } else {
        sh.warned.store(false, Ordering::Relaxed);
    }
    Ok(own)
}

/// Cuts `count` events from `first` on: the signed marker is made durable
/// first, then the events and their index entries are removed (a stop in
/// between is finished at the next open).
fn trim(w: &Writer, head: &Head, first: u64, count: u64) -> Result<CutMarker, sled::Error> {
    let new_first = first + count;
    let prev_hash = if new_first <= head.seq {
        w.tree
            .get(new_first.to_be_bytes())?
            .and_then(|v| serde_json::from_slice::<SecurityEvent>(&v).ok())
            .map(|e| e.prev_hash)
            .ok_or_else(|| {
                sled::Error::Unsupported(format!(
                    "event {new_first} cannot be read to cut the log before it"
                ))
            })?
    } else {
        head.hash.clone()
    };
    let marker = cut::sign(
        &w.signing,
        new_first,
        &prev_hash,
        first,
        micros(OffsetDateTime::now_utc()),
    );
    let bytes = serde_json::to_vec(&marker).unwrap_or_default();
    w.cuts.insert(new_first.to_be_bytes(), bytes)?;
    w.db.flush()?;
    remove_before(&w.tree, &w.index, &w.indexing, new_first)?;
    w.shared.first_seq.store(new_first, Ordering::Release);
    w.shared.dropped.fetch_add(count, Ordering::Relaxed);
    Ok(marker)
}

/// Removes the events before `seq` and their index entries, in batches.
fn remove_before(
    tree: &sled::Tree,
    index: &sled::Tree,
    indexing: &Mutex<()>,
    seq: u64,
) -> Result<u64, sled::Error> {
    const CHUNK: usize = 10_000;
    // No indexer may add entries for events being removed meanwhile.
    let _turn = indexing.lock();
    let mut removed = 0;
    loop {
        let (mut events, mut entries) = (sled::Batch::default(), sled::Batch::default());
        let mut n = 0;
        for item in tree.range(..seq.to_be_bytes()).take(CHUNK) {
            let (k, v) = item?;
            if let Ok(keys) = serde_json::from_slice::<IndexKeys>(&v) {
                super::index::remove(&mut entries, &keys, key_seq(&k));
            }
            events.remove(k);
            n += 1;
        }
        if n == 0 {
            return Ok(removed);
        }
        index.apply_batch(entries)?;
        tree.apply_batch(events)?;
        removed += n;
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
    /// The log starts after a cut (drop-oldest) whose signed marker verified.
    pub cut: Option<super::cut::CutMarker>,
    /// `--from SEQ`: the walk started there, trusting that event's prev_hash.
    pub from: Option<u64>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problem.is_none()
    }

    /// One line for people: what was verified and from where.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} events verified (seq {}..{}), head hash {}",
            self.events,
            self.first_seq.unwrap_or(0),
            self.last_seq.unwrap_or(0),
            self.head_hash
        );
        if let Some(f) = self.from {
            s += &format!("; walked from seq {f} (its prev_hash taken as given)");
        } else if let Some(c) = &self.cut {
            s += &format!(
                "; the log was cut at seq {} by drop-oldest (events {}..{} removed at {}), the signed cut marker verifies",
                c.first_kept_seq,
                c.dropped_from,
                c.first_kept_seq - 1,
                crate::model::rfc3339(c.time)
            );
        }
        s
    }
}

/// Walks the whole chain from seq 1 (or from a signed cut marker); stops at
/// the first bad record.
pub fn verify_tree(tree: &sled::Tree) -> VerifyReport {
    verify_chain(tree, None, None, None)
}

/// Walks the chain and stops at the first bad record. The walk starts at
/// seq 1 with the genesis hash, or, when the oldest events were dropped, at
/// the first kept event with the prev_hash its signed marker (in `cuts`,
/// checked against `trusted_key`) names; `from` starts it at that seq,
/// taking its prev_hash as given.
pub fn verify_chain(
    tree: &sled::Tree,
    cuts: Option<&sled::Tree>,
    trusted_key: Option<&str>,
    from: Option<u64>,
) -> VerifyReport {
    let mut report = VerifyReport {
        events: 0,
        first_seq: None,
        last_seq: None,
        head_hash: GENESIS_HASH.into(),
        problem: None,
        cut: None,
        from: None,
    };
    let oldest = match tree.first() {
        Ok(Some((k, _))) => key_seq(&k),
        Ok(None) => {
            if let Some(f) = from {
                report.problem = Some((f, format!("the log is empty: there is no event {f}")));
            }
            return report;
        }
        Err(e) => {
            report.problem = Some((1, format!("the store cannot be read here: {e}")));
            return report;
        }
    };
    let (start, mut prev) = match from {
        Some(f) if f >= oldest => match tree.get(f.to_be_bytes()) {
            Ok(Some(v)) => match serde_json::from_slice::<SecurityEvent>(&v) {
                Ok(ev) => {
                    report.from = Some(f);
                    (f, ev.prev_hash)
                }
                Err(e) => {
                    report.problem = Some((f, format!("event {f} cannot be decoded: {e}")));
                    return report;
                }
            },
            _ => {
                report.problem = Some((f, format!("there is no event {f} in the log")));
                return report;
            }
        },
        Some(f) => {
            report.problem = Some((
                f,
                format!("event {f} is no longer in the log: the oldest event is {oldest}"),
            ));
            return report;
        }
        None if oldest == 1 => (1, GENESIS_HASH.to_string()),
        None => match cuts.and_then(|c| super::cut::at(c, oldest)) {
            None => {
                report.problem = Some((
                    1,
                    format!(
                        "events 1..{} are missing and no signed cut marker accounts for them",
                        oldest - 1
                    ),
                ));
                return report;
            }
            Some(marker) => {
                if let Err(why) = marker.check(trusted_key) {
                    report.problem = Some((oldest, why));
                    return report;
                }
                let prev = marker.prev_hash.clone();
                report.cut = Some(marker);
                (oldest, prev)
            }
        },
    };
    for (expected, item) in (start..).zip(tree.range(start.to_be_bytes()..)) {
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
