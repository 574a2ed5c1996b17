//! Verify: walks the hash chain from seq 1 or from a signed cut marker and
//! names the first bad record.

use super::event::{EVENT_VERSION, GENESIS_HASH, SecurityEvent};
use super::key_seq;
use crate::store::cut;

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
    pub cut: Option<cut::CutMarker>,
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
    let (start, prev) = match from {
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
        None => match cuts.and_then(|c| cut::at(c, oldest)) {
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
    walk(tree, start, prev, report)
}

/// Continues a verification that ended at event `seq` with head `hash`:
/// that event must still be the one verified (same hash, content matching
/// it), and every event after it must follow. What lies before `seq` is not
/// walked again: the full walk (`verify_chain`) proves it.
pub fn verify_after(tree: &sled::Tree, seq: u64, hash: &str) -> VerifyReport {
    let report = VerifyReport {
        events: 0,
        first_seq: None,
        last_seq: Some(seq),
        head_hash: hash.to_string(),
        problem: None,
        cut: None,
        from: None,
    };
    let anchor = match tree.get(seq.to_be_bytes()) {
        Ok(Some(v)) => serde_json::from_slice::<SecurityEvent>(&v).ok(),
        _ => None,
    };
    match anchor {
        Some(ev) if ev.seq == seq && ev.hash == hash && ev.compute_hash() == hash => {}
        _ => {
            return VerifyReport {
                problem: Some((
                    seq,
                    format!("event {seq} is no longer the event verified before (hash {hash})"),
                )),
                ..report
            };
        }
    }
    walk(tree, seq + 1, hash.to_string(), report)
}

/// Walks the events from `start`, each following `prev`, into `report`.
fn walk(tree: &sled::Tree, start: u64, mut prev: String, mut report: VerifyReport) -> VerifyReport {
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
