//! Refused and malformed traffic from sources that have not logged in,
//! aggregated per (source, kind) so that a flood cannot flood the log.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::guard::Guard;
use crate::store::{Category, EventDraft, Outcome};

/// A source address and the kind of refused traffic from it; `None` is a
/// local caller (the control socket).
type FloodKey = (Option<IpAddr>, &'static str);

/// The first event of each (source, kind) in an interval is logged at once
/// (it is visible while someone is testing); the rest are counted into one
/// event at the interval's end.
pub struct Floods {
    guard: Arc<Guard>,
    door: &'static str,
    counts: Mutex<HashMap<FloodKey, (u64, String)>>,
}

/// Distinct sources remembered per interval; beyond, they share one entry
/// (0.0.0.0), so the table is bounded whatever the number of sources.
const FLOOD_SOURCES: usize = 10_000;

/// The category an aggregated event is filed under, from its kind: refused
/// TLS handshakes and SSH logins that never happened are authentication,
/// refused connections are the system's, the rest is Modbus traffic.
fn category(kind: &str) -> Category {
    if kind.starts_with("mbaps.") || kind.starts_with("ssh.") || kind.starts_with("api.") {
        Category::Authentication
    } else if kind.starts_with("connection.") {
        Category::System
    } else {
        Category::Modbus
    }
}

impl Floods {
    pub fn new(guard: Arc<Guard>, door: &'static str) -> Floods {
        Floods {
            guard,
            door,
            counts: Mutex::new(HashMap::new()),
        }
    }

    pub fn door(&self) -> &'static str {
        self.door
    }

    /// Counts one refusal of `kind` from `source`.
    pub fn count(&self, source: Option<IpAddr>, kind: &'static str, reason: &str) {
        let first = {
            let Ok(mut c) = self.counts.lock() else {
                return;
            };
            let key = if c.len() >= FLOOD_SOURCES && !c.contains_key(&(source, kind)) {
                (Some(IpAddr::from([0u8, 0, 0, 0])), kind)
            } else {
                (source, kind)
            };
            match c.get_mut(&key) {
                Some(entry) => {
                    entry.0 += 1;
                    false
                }
                None => {
                    c.insert(key, (0, reason.to_string()));
                    true
                }
            }
        };
        if first {
            let ev = self.event(source, kind, reason, 1);
            let guard = self.guard.clone();
            tokio::spawn(async move {
                guard.record_unauthenticated(ev).await;
            });
        }
    }

    fn event(&self, source: Option<IpAddr>, kind: &str, reason: &str, count: u64) -> EventDraft {
        let ev = EventDraft::new(kind, category(kind), Outcome::Deny)
            .door(self.door)
            .reason(reason)
            .detail("count", count);
        match source {
            Some(ip) => ev.source(ip),
            None => ev.source("local"),
        }
    }

    /// One event per (source, kind) with the count since its first.
    pub async fn flush(&self) {
        let drained: Vec<_> = match self.counts.lock() {
            Ok(mut c) => c.drain().collect(),
            Err(_) => return,
        };
        for ((source, kind), (count, reason)) in drained {
            if count > 0 {
                let ev = self.event(source, kind, &reason, count);
                self.guard.record_unauthenticated(ev).await;
            }
        }
        // What the quota held back is counted in one event.
        self.guard.report_suppressed().await;
    }

    pub async fn flush_every(self: Arc<Self>, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            self.flush().await;
        }
    }
}
