//! `audit query` over the log's indexes returns exactly what a brute-force
//! scan of every event returns, for any events and any filters; the index
//! catches up with events a stop left unindexed.

use metergate::store::Store;
use metergate::store::index::Query;
use metergate::store::log::{Category, EventDraft, Outcome, SecurityEvent};
use proptest::prelude::*;

const PRINCIPALS: [&str; 4] = ["user:alice", "user:bob", "svc:scada-1", "local:root"];
const METERS: [&str; 3] = ["meter-1", "meter-2", "meter-3"];
const CODES: [&str; 4] = [
    "login.allow",
    "login.deny",
    "write-registers.deny",
    "admin.change",
];
const DOORS: [&str; 3] = ["modbus", "ssh", "control-socket"];
const OUTCOMES: [Outcome; 4] = [
    Outcome::Allow,
    Outcome::Deny,
    Outcome::Success,
    Outcome::Failure,
];

#[derive(Clone, Debug)]
struct Ev {
    principal: Option<usize>,
    meter: Option<usize>,
    code: usize,
    door: Option<usize>,
    outcome: usize,
}

fn arb_event() -> impl Strategy<Value = Ev> {
    (
        prop::option::weighted(0.8, 0..PRINCIPALS.len()),
        prop::option::of(0..METERS.len()),
        0..CODES.len(),
        prop::option::weighted(0.8, 0..DOORS.len()),
        0..OUTCOMES.len(),
    )
        .prop_map(|(principal, meter, code, door, outcome)| Ev {
            principal,
            meter,
            code,
            door,
            outcome,
        })
}

#[derive(Clone, Debug)]
struct Q {
    principal: Option<usize>,
    meter: Option<usize>,
    code: Option<usize>,
    door: Option<usize>,
    outcome: Option<usize>,
    /// Indexes into the written events for the time range.
    since: Option<usize>,
    until: Option<usize>,
    limit: usize,
}

fn arb_query() -> impl Strategy<Value = Q> {
    (
        prop::option::of(0..PRINCIPALS.len()),
        prop::option::weighted(0.3, 0..METERS.len()),
        prop::option::weighted(0.3, 0..CODES.len()),
        prop::option::weighted(0.3, 0..DOORS.len()),
        prop::option::weighted(0.3, 0..OUTCOMES.len()),
        prop::option::weighted(0.4, 0..200usize),
        prop::option::weighted(0.4, 0..200usize),
        1..40usize,
    )
        .prop_map(
            |(principal, meter, code, door, outcome, since, until, limit)| Q {
                principal,
                meter,
                code,
                door,
                outcome,
                since,
                until,
                limit,
            },
        )
}

fn draft(e: &Ev) -> EventDraft {
    let mut d = EventDraft::new(CODES[e.code], Category::Audit, OUTCOMES[e.outcome]);
    d.principal = e.principal.map(|i| PRINCIPALS[i].to_string());
    d.meter = e.meter.map(|i| METERS[i].to_string());
    d.door = e.door.map(|i| DOORS[i].to_string());
    d
}

fn brute_force(all: &[SecurityEvent], q: &Query) -> Vec<u64> {
    let mut hits: Vec<u64> = all.iter().filter(|e| q.matches(e)).map(|e| e.seq).collect();
    let keep = hits.len().saturating_sub(q.limit);
    hits.drain(..keep);
    hits
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn query_equals_a_scan_of_every_event(
        events in prop::collection::vec(arb_event(), 1..200),
        queries in prop::collection::vec(arb_query(), 1..12),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for e in &events {
            store.log().append_blocking(draft(e)).unwrap();
            // Spread the times a little so time ranges cut between events.
            if e.code == 0 {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        }
        let all = store.log().tail(usize::MAX).unwrap();
        prop_assert_eq!(all.len(), events.len());
        for q in &queries {
            let at = |i: Option<usize>| i.map(|i| all[i % all.len()].time);
            let query = Query {
                since: at(q.since),
                until: at(q.until),
                principal: q.principal.map(|i| PRINCIPALS[i].to_string()),
                meter: q.meter.map(|i| METERS[i].to_string()),
                code: q.code.map(|i| CODES[i].to_string()),
                door: q.door.map(|i| DOORS[i].to_string()),
                outcome: q.outcome.map(|i| OUTCOMES[i]),
                limit: q.limit,
                before: None,
            };
            let got: Vec<u64> = store.log().query(&query).unwrap().iter().map(|e| e.seq).collect();
            prop_assert_eq!(got, brute_force(&all, &query), "{:?}", query);
        }
    }
}

#[test]
fn the_index_catches_up_with_events_written_without_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        for i in 0..20 {
            let mut d = EventDraft::new("login.allow", Category::Authentication, Outcome::Allow);
            d.principal = Some(if i % 2 == 0 { "user:alice" } else { "user:bob" }.into());
            store.log().append_blocking(d).unwrap();
        }
    }
    // Lose the index entirely, as if a crash had hit before it was written.
    std::fs::remove_dir_all(dir.path().join("audit-index")).unwrap();
    let store = Store::open(dir.path()).unwrap();
    let q = Query {
        principal: Some("user:alice".into()),
        limit: 100,
        ..Query::default()
    };
    let hits = store.log().query(&q).unwrap();
    assert_eq!(hits.len(), 10);
    assert!(
        hits.iter()
            .all(|e| e.principal.as_deref() == Some("user:alice"))
    );
}
