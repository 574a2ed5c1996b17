//! Durable audit appends per second: 64 concurrent writers sharing group
//! commits against one writer whose every event waits for its own flush.
//! Both run in the same process, one after the other, on the same disk.
//! Then `audit query` over 1M events, with and without an indexed filter,
//! and `audit export` in each format against reading alone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use metergate::store::index::Query;
use metergate::store::{Category, EventDraft, Outcome, Store};

fn event(i: u64) -> EventDraft {
    EventDraft::new("write-registers.allow", Category::Modbus, Outcome::Allow)
        .principal("svc:scada-operator")
        .source("10.20.0.5")
        .door("modbus")
        .meter("meter-1")
        .action("write FC 6 registers 5000..5001 values [21212]")
        .permission("Peak Demand Reset")
        .reason("allowed by policy `north-operators` statement 1 via role Operator")
        .detail("n", i)
}

/// `events` durable appends from `writers` tasks; event `n` is `make(n)`.
async fn burst(
    store: &Arc<Store>,
    writers: u64,
    events: u64,
    make: fn(u64) -> EventDraft,
) -> Duration {
    let start = Instant::now();
    let per = events / writers;
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let s = store.clone();
            tokio::spawn(async move {
                for i in 0..per {
                    s.log()
                        .append(make(w * per + i))
                        .await
                        .expect("durable append");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("writer task");
    }
    start.elapsed()
}

/// A runtime with two workers and a fresh store (the directory lives as
/// long as the returned guard).
fn setup() -> (tokio::runtime::Runtime, tempfile::TempDir, Arc<Store>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    (rt, dir, store)
}

fn appends(c: &mut Criterion) {
    let (rt, _dir, store) = setup();
    let mut group = c.benchmark_group("audit_durable_append");
    group.sample_size(10);
    for writers in [1u64, 64] {
        let events = if writers == 1 { 256 } else { 64 * 64 };
        group.throughput(Throughput::Elements(events));
        group.bench_function(BenchmarkId::new("writers", writers), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += rt.block_on(burst(&store, writers, events, event));
                }
                total
            })
        });
    }
    group.finish();
    let (flushes, events) = (store.log().flushes(), store.log().last_seq());
    eprintln!(
        "flushes: {flushes} for {events} events ({:.1} events per flush)",
        events as f64 / flushes.max(1) as f64
    );
    assert!(
        store.verify(None).ok(),
        "the chain written by the benchmark verifies"
    );
}

/// `audit query` on 1M events: the newest 100 of one principal (of 1000)
/// in a time range covering the middle of the log, against the same query
/// answered by walking the log without the index.
fn query(c: &mut Criterion) {
    const EVENTS: u64 = 1_000_000;
    let (rt, _dir, store) = setup();
    let started = Instant::now();
    rt.block_on(burst(&store, 64, EVENTS, |n| {
        event(n).principal(format!("user:u{}", n % 1000))
    }));
    eprintln!(
        "wrote {} events with their index in {:.1} s",
        store.log().last_seq(),
        started.elapsed().as_secs_f64()
    );
    let first = store.log().get(1).unwrap().unwrap().time;
    let last = store.log().tail(1).unwrap()[0].time;
    let q = Query {
        since: Some(first + (last - first) / 4),
        until: Some(first + 3 * (last - first) / 4),
        principal: Some("user:u421".into()),
        limit: 100,
        ..Query::default()
    };
    let hits = store.log().query(&q).unwrap();
    assert_eq!(hits.len(), 100);
    let mut group = c.benchmark_group("audit_query_1m");
    group.sample_size(20);
    group.bench_function("indexed", |b| {
        b.iter(|| store.log().query(&q).unwrap().len())
    });
    // Without an indexed filter the query walks the log backwards from the
    // end of the range (outcome is not indexed): the cost the index avoids.
    let scan = Query {
        principal: None,
        outcome: Some(Outcome::Deny),
        ..q.clone()
    };
    group.sample_size(10);
    group.bench_function("scan, no match", |b| {
        b.iter(|| store.log().query(&scan).unwrap().len())
    });
    group.finish();
}

/// `audit export` throughput: reading 20k stored events and writing them
/// in each format, against only reading and decoding them (the floor).
fn export(c: &mut Criterion) {
    use metergate::store::export::{Format, Origin, format};
    const EVENTS: u64 = 20_000;
    let (rt, _dir, store) = setup();
    rt.block_on(burst(&store, 64, EVENTS, event));
    let origin = Origin::here(13);
    let mut group = c.benchmark_group("audit_export");
    group.throughput(Throughput::Elements(EVENTS));
    group.sample_size(10);
    group.bench_function("read only", |b| {
        b.iter(|| store.log().range(1, EVENTS as usize).unwrap().len())
    });
    for (name, f) in [
        ("jsonl", Format::Jsonl),
        ("cef", Format::Cef),
        ("rfc5424", Format::Rfc5424),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut bytes = 0;
                for ev in store.log().range(1, EVENTS as usize).unwrap() {
                    bytes += format(f, &ev, &origin).len() + 1;
                }
                bytes
            })
        });
    }
    group.finish();
}

criterion_group!(benches, appends, query, export);
criterion_main!(benches);
