//! The log near and at its capacity (DESIGN §4, IEC 62443 CR 2.9): the
//! warning, drop-oldest behind a signed cut marker, refuse, and the quota of
//! events from unauthenticated traffic.

use std::sync::Mutex;
use std::sync::atomic::Ordering;

use time::OffsetDateTime;

use crate::model::micros;

use super::event::{Category, EventDraft, Outcome, SecurityEvent, draft_fields};
use super::writer::{Head, Writer};
use super::{AuditError, AuditLog, key_seq};
use crate::store::cut::{self, CutMarker};
use crate::store::index::IndexKeys;

/// What the log does when it is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WhenFull {
    /// Cut the oldest events behind a signed marker.
    #[default]
    DropOldest,
    /// Refuse new events (the failure rule applies).
    Refuse,
}

/// How the log behaves near and at its capacity (DESIGN §4, IEC 62443
/// CR 2.9); the config's `[audit]` makes one.
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
    /// `events` stored at most, the warning from `warn_at_percent` of them
    /// (at most 100) on; `keep_unforwarded` when forwarding is configured.
    pub fn new(
        events: u64,
        warn_at_percent: u8,
        when_full: WhenFull,
        keep_unforwarded: bool,
        unauthenticated_per_hour: u64,
    ) -> Capacity {
        Capacity {
            events,
            warn_at: events / 100 * u64::from(warn_at_percent.min(100)),
            when_full,
            keep_unforwarded,
            unauthenticated_per_hour,
        }
    }
}

impl Default for Capacity {
    /// What the default `[audit]` gives without forwarding.
    fn default() -> Self {
        Capacity::new(10_000_000, 90, WhenFull::DropOldest, false, 3600)
    }
}

/// The quota of events from unauthenticated traffic.
pub(super) struct Quota {
    pub(super) window: std::time::Instant,
    pub(super) used: u64,
    /// Suppressed since the last summary event.
    pub(super) unreported: u64,
}

impl AuditLog {
    /// Applies new capacity settings (a reload).
    pub fn set_capacity(&self, c: Capacity) {
        if let Ok(mut cap) = self.inner.shared.capacity.lock() {
            *cap = c;
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
}

/// Room for events besides the incoming ones: a cut and a warning.
const OWN_EVENTS: u64 = 2;

/// Before a batch of `n` events: applies the capacity rule (DESIGN §4).
/// At capacity, `drop-oldest` cuts the oldest events (at least 1% of the
/// capacity at a time, never one not yet forwarded) behind a signed marker;
/// `refuse` (or nothing droppable) refuses the batch. Returns the fields of
/// the events the log writes about itself (the cut, the warning).
pub(super) fn make_room(w: &Writer, head: &Head, n: u64) -> Result<Vec<Vec<u8>>, AuditError> {
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
            let sent = sh.forward.delivered();
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
pub(super) fn remove_before(
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
                crate::store::index::remove(&mut entries, &keys, key_seq(&k));
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
