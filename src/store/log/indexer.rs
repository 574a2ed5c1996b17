//! The indexer: a thread that keeps the log's secondary indexes following
//! the log, off the path of acknowledgements, yielding to appends.

use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::Shared;

/// How often the indexer looks for new events.
const INDEX_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// Above this many new events per second the indexer waits for a quieter
/// moment (a burst of durable appends goes first), and it stops between
/// batches whenever appends are waiting…
const BUSY_RATE: u64 = 100;
/// …but past this lag it indexes at any rate, between group commits.
const MAX_LAG: u64 = 500_000;

/// Starts the indexer thread; it runs until `stop`'s sender is dropped.
/// `last_seq` is the log's head at open.
pub(super) fn spawn(
    tree: sled::Tree,
    index: sled::Tree,
    indexing: Arc<Mutex<()>>,
    shared: Arc<Shared>,
    last_seq: u64,
    stop: mpsc::Receiver<()>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("audit-indexer".into())
        .spawn(move || {
            let mut seen = last_seq;
            let mut indexed = crate::store::index::high(&index).unwrap_or(0);
            while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(INDEX_EVERY) {
                let now = shared.last_seq.load(Ordering::Acquire);
                let rate = now.saturating_sub(seen) * 1000 / INDEX_EVERY.as_millis().max(1) as u64;
                seen = now;
                let lagging = now.saturating_sub(indexed) >= MAX_LAG;
                // Appends waiting always go first; a query indexes
                // whatever is still missing itself.
                let busy = || shared.pending.load(Ordering::Relaxed) > 0;
                if now == indexed || (!lagging && (rate > BUSY_RATE || busy())) {
                    continue;
                }
                if let Ok(_turn) = indexing.lock()
                    && let Err(e) = crate::store::index::catch_up_unless(&tree, &index, busy)
                {
                    tracing::warn!(error = %e, "security log index not updated");
                }
                indexed = crate::store::index::high(&index).unwrap_or(indexed);
            }
        })
}
