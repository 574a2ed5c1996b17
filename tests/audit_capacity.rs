//! The log at its capacity (DESIGN §4, IEC 62443 CR 2.9/2.10): a warning at
//! the threshold; drop-oldest cuts behind a signed marker that verify
//! accepts (and rejects when edited), never dropping what is not forwarded;
//! refuse applies the failure rule; unauthenticated traffic has its quota.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use metergate::config::{AuditConfig, OnFailure, WhenFull};
use metergate::guard::Reason;
use metergate::store::log::Capacity;
use metergate::store::{AuditError, Category, EventDraft, Outcome, Store, open_raw};

fn event(i: usize) -> EventDraft {
    EventDraft::new("test.event", Category::System, Outcome::Success)
        .principal(format!("local:p{}", i % 3))
        .reason(format!("event number {i}"))
}

fn capacity(events: u64, when_full: WhenFull, forwarding: bool) -> Capacity {
    let c = AuditConfig {
        capacity_events: events,
        warn_at_percent: 90,
        when_full,
        unauthenticated_events_per_hour: 5,
        ..AuditConfig::default()
    };
    c.capacity(forwarding)
}

fn codes(store: &Store, code: &str) -> Vec<metergate::store::SecurityEvent> {
    store
        .log()
        .range(0, 1_000_000)
        .unwrap()
        .into_iter()
        .filter(|e| e.code == code)
        .collect()
}

fn verify_cli(dir: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_metergate"))
        .args(["audit", "verify", "--state-dir"])
        .arg(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn drop_oldest_keeps_the_log_within_capacity_behind_a_signed_cut_that_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint_before;
    {
        let store =
            Store::open_with(dir.path(), capacity(1000, WhenFull::DropOldest, false)).unwrap();
        for i in 0..950 {
            store.log().append_blocking(event(i)).unwrap();
        }
        // The warning came once, at 90 %, before anything was cut.
        let warnings = codes(&store, "audit.capacity-warning");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(store.log().status().dropped, 0);
        checkpoint_before = store.checkpoint().unwrap().unwrap();
        for i in 950..2500 {
            store.log().append_blocking(event(i)).unwrap();
        }
        let st = store.log().status();
        assert!(st.stored <= 1000, "{} stored", st.stored);
        assert!(st.first_seq > 1 && st.dropped > 0, "{st:?}");
        assert_eq!(st.stored, st.last_seq - st.first_seq + 1);
        // Hovering near capacity does not repeat the warning.
        assert!(codes(&store, "audit.capacity-warning").len() <= 1);
        let cuts = codes(&store, "audit.log-cut");
        assert!(!cuts.is_empty(), "the cut shows in the log itself");
        let last = cuts.last().unwrap();
        assert_eq!(
            last.detail["first_kept_seq"],
            st.last_cut.as_ref().unwrap().first_kept_seq.to_string()
        );
        // Live verify passes and says where the log was cut.
        let report = store.verify(None);
        assert!(report.ok(), "{report:?}");
        assert_eq!(
            report.cut.as_ref().map(|c| c.first_kept_seq),
            Some(st.first_seq)
        );
        // A checkpoint from before the cut: its event is gone, the rest verifies.
        let found = store.check_checkpoint(&checkpoint_before, None);
        assert!(found.passes(), "{found}");
        // Queries see only what is kept.
        let q = metergate::store::index::Query {
            principal: Some("local:p1".into()),
            limit: 10_000,
            ..Default::default()
        };
        let got = store.log().query(&q).unwrap();
        assert!(got.iter().all(|e| e.seq >= st.first_seq));
        assert!(!got.is_empty());
    }
    // The index dropped the cut events' entries too.
    let index = sled::open(dir.path().join("audit-index")).unwrap();
    let tree = index.open_tree("audit_index").unwrap();
    let first = {
        let db = open_raw(dir.path()).unwrap();
        let t = db.open_tree("audit").unwrap();
        u64::from_be_bytes(t.first().unwrap().unwrap().0.as_ref().try_into().unwrap())
    };
    let stale = tree
        .iter()
        .keys()
        .filter_map(|k| k.ok())
        .filter(|k| !k.starts_with(b"\xff"))
        .filter(|k| {
            let seq = u64::from_be_bytes(k[k.len() - 8..].try_into().unwrap());
            seq < first
        })
        .count();
    assert_eq!(stale, 0, "index entries of dropped events remain");
    drop(tree);
    drop(index);
    let (code, out) = verify_cli(dir.path());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("cut at seq"), "{out}");
}

#[test]
fn an_edited_or_missing_cut_marker_fails_verify() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store =
            Store::open_with(dir.path(), capacity(1000, WhenFull::DropOldest, false)).unwrap();
        for i in 0..1200 {
            store.log().append_blocking(event(i)).unwrap();
        }
    }
    let (code, out) = verify_cli(dir.path());
    assert_eq!(code, 0, "{out}");
    // Edit the marker's prev_hash: its signature no longer matches.
    {
        let db = open_raw(dir.path()).unwrap();
        let cuts = db.open_tree("audit_cuts").unwrap();
        let (k, v) = cuts.last().unwrap().unwrap();
        let mut m: serde_json::Value = serde_json::from_slice(&v).unwrap();
        m["dropped_from"] = serde_json::json!(2);
        cuts.insert(k, serde_json::to_vec(&m).unwrap()).unwrap();
        db.flush().unwrap();
    }
    let (code, out) = verify_cli(dir.path());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("signature does not match"), "{out}");
    // Without any marker the missing events are named.
    {
        let db = open_raw(dir.path()).unwrap();
        db.open_tree("audit_cuts").unwrap().clear().unwrap();
        db.flush().unwrap();
    }
    let (code, out) = verify_cli(dir.path());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no signed cut marker"), "{out}");
}

#[test]
fn verify_from_walks_the_recent_part_only() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        for i in 0..100 {
            store.log().append_blocking(event(i)).unwrap();
        }
    }
    // Break event 10: a full walk names it; a walk from 50 does not see it.
    {
        let db = open_raw(dir.path()).unwrap();
        let t = db.open_tree("audit").unwrap();
        let v = t.get(10u64.to_be_bytes()).unwrap().unwrap();
        let text = String::from_utf8(v.to_vec())
            .unwrap()
            .replace("event number 9", "event number 999");
        t.insert(10u64.to_be_bytes(), text.as_bytes()).unwrap();
        db.flush().unwrap();
    }
    let (code, out) = verify_cli(dir.path());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("first bad seq 10"), "{out}");
    let out = Command::new(env!("CARGO_BIN_EXE_metergate"))
        .args(["audit", "verify", "--from", "50", "--state-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("51 events verified (seq 50..100)") && text.contains("walked from seq 50"),
        "{text}"
    );
}

#[tokio::test]
async fn drop_oldest_never_drops_an_event_not_yet_forwarded() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), capacity(1000, WhenFull::DropOldest, true)).unwrap();
    let mut refused = 0;
    for i in 0..1100 {
        match store.log().append(event(i)).await {
            Ok(_) => {}
            Err(AuditError::Full(why)) => {
                assert!(why.contains("not forwarded"), "{why}");
                refused += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(refused >= 100, "{refused} refused");
    assert_eq!(store.log().first_seq(), 1, "nothing was dropped");
    assert_eq!(store.log().status().refused_full, refused);
    // Once the forwarder has delivered the oldest half, they may go.
    store.set_forward_cursor(500).unwrap();
    for i in 0..50 {
        store.log().append(event(i)).await.unwrap();
    }
    let first = store.log().first_seq();
    assert!(first > 1 && first <= 501, "first kept {first}");
    assert!(store.verify(None).ok());
}

#[tokio::test]
async fn refuse_applies_the_failure_rule_writes_refused_reads_served() {
    let f = Fixture::with_config(|c| {
        c.audit.capacity_events = 1000;
        c.audit.when_full = WhenFull::Refuse;
        c.audit.on_failure = OnFailure::FailClosed;
    });
    f.add(vec![metergate::store::Entity::User(user_with_role(
        "olga", "Operator", "*",
    ))]);
    let log = f.guard.store().log();
    let mut full = None;
    for i in 0..1100 {
        if let Err(e) = log.append(event(i)).await {
            full = Some(e);
            break;
        }
    }
    assert!(
        matches!(&full, Some(AuditError::Full(why)) if why.contains("refuse")),
        "{full:?}"
    );
    let table = [
        (write("meter-1", 16, 5010, &[2026, 11, 23, 12, 0, 0]), false),
        (read("meter-1", 3000, 10), true),
    ];
    for (action, allowed) in table {
        let d = f
            .guard
            .authorize(&req(&uid("olga"), action.clone()), NOW)
            .await;
        assert_eq!(d.allowed, allowed, "{action:?}: {}", d.reason);
        if !allowed {
            assert_eq!(d.reason, Reason::AuditUnavailable);
        }
    }
    assert!(log.status().refused_full >= 2);
    // The log is intact and nothing in it was dropped.
    assert_eq!(log.first_seq(), 1);
    assert!(f.guard.store().verify(None).ok());
}

#[tokio::test]
async fn refuse_when_failing_open_lets_writes_through_with_an_alarm() {
    let f = Fixture::with_config(|c| {
        c.audit.capacity_events = 1000;
        c.audit.when_full = WhenFull::Refuse;
        c.audit.on_failure = OnFailure::FailOpen;
    });
    f.add(vec![metergate::store::Entity::User(user_with_role(
        "olga", "Operator", "*",
    ))]);
    let log = f.guard.store().log();
    for i in 0..1000 {
        let _ = log.append(event(i)).await;
    }
    let d = f
        .guard
        .authorize(
            &req(
                &uid("olga"),
                write("meter-1", 16, 5010, &[2026, 11, 23, 12, 0, 0]),
            ),
            NOW,
        )
        .await;
    assert!(d.allowed, "{}", d.reason);
    assert!(
        f.guard
            .counters
            .audit_alarm
            .load(std::sync::atomic::Ordering::Relaxed)
    );
}

#[tokio::test]
async fn unauthenticated_traffic_has_its_own_quota_and_the_rest_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        Store::open_with(dir.path(), capacity(10_000, WhenFull::DropOldest, false)).unwrap();
    let mut logged = 0;
    for i in 0..20 {
        let ev = EventDraft::new("modbus.malformed", Category::Modbus, Outcome::Deny)
            .source(format!("192.0.2.{i}"));
        if store
            .log()
            .append_unauthenticated(ev)
            .await
            .unwrap()
            .is_some()
        {
            logged += 1;
        }
    }
    assert_eq!(logged, 5);
    assert_eq!(store.log().status().suppressed, 15);
    // Authenticated events are not held back by it.
    store.log().append(event(1)).await.unwrap();
    store.log().report_suppressed().await.unwrap();
    let reports = codes(&store, "audit.quota-exceeded");
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].detail["suppressed"], "15");
    // Nothing more to report: no second event.
    store.log().report_suppressed().await.unwrap();
    assert_eq!(codes(&store, "audit.quota-exceeded").len(), 1);
}
