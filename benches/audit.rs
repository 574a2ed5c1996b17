//! Durable audit appends per second: 64 concurrent writers sharing group
//! commits against one writer whose every event waits for its own flush.
//! Both run in the same process, one after the other, on the same disk.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
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

async fn burst(store: &Arc<Store>, writers: u64, events: u64) -> Duration {
    let start = Instant::now();
    let per = events / writers;
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let s = store.clone();
            tokio::spawn(async move {
                for i in 0..per {
                    s.log()
                        .append(event(w * per + i))
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

fn appends(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let mut group = c.benchmark_group("audit_durable_append");
    group.sample_size(10);
    for writers in [1u64, 64] {
        let events = if writers == 1 { 256 } else { 64 * 64 };
        group.throughput(Throughput::Elements(events));
        group.bench_function(BenchmarkId::new("writers", writers), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += rt.block_on(burst(&store, writers, events));
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
        store.log().verify().ok(),
        "the chain written by the benchmark verifies"
    );
}

criterion_group!(benches, appends);
criterion_main!(benches);
