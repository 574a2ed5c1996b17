//! Guard decision cost at fleet scale (audit sink excluded): 10k principals,
//! 10k meters, and 100 / 1k / 10k policies. Each principal has the same
//! number of policies in every world, so the ratio shows whether the total
//! number of policies leaks into a decision.

#[path = "common/world.rs"]
mod world;

use std::path::Path;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use metergate::guard::{Guard, GuardSettings};
use metergate::model::*;
use metergate::store::Store;
use time::macros::datetime;
use world::{METERS, config, meters, ops};

const PRINCIPALS: usize = 10_000;

fn world(policies: usize, dir: &Path) -> Guard {
    let config = config();
    let store = Arc::new(Store::open(dir).unwrap());
    let guard = Guard::with_fleet(
        store,
        GuardSettings::from_config(&config),
        meters(),
        config.profiles.clone(),
    );
    guard
        .change(
            ops(PRINCIPALS, policies),
            &PrincipalId::Local("bench".into()),
            datetime!(2026-11-23 12:00 UTC),
        )
        .unwrap();
    guard
}

fn requests() -> Vec<metergate::guard::Request> {
    world::requests(PRINCIPALS)
}

fn decisions(c: &mut Criterion) {
    let now = datetime!(2026-11-23 12:00 UTC);
    let reqs = requests();
    let mut group = c.benchmark_group("guard_decide");
    for policies in [100usize, 1_000, 10_000] {
        let dir = tempfile::tempdir().unwrap();
        let guard = world(policies, dir.path());
        let allowed = reqs.iter().filter(|r| guard.decide(r, now).allowed).count();
        eprintln!(
            "{policies} policies: {allowed} of {} sample requests allowed",
            reqs.len()
        );
        let mut i = 0usize;
        group.bench_function(
            BenchmarkId::new("10k_principals_10k_meters", format!("{policies}_policies")),
            |b| {
                b.iter(|| {
                    i = (i + 1) & 4095;
                    std::hint::black_box(guard.decide(&reqs[i], now))
                })
            },
        );
    }
    group.finish();
}

/// p50 and p99 of `f` over `n` runs, in milliseconds.
fn percentiles(n: usize, mut f: impl FnMut(usize)) -> (f64, f64) {
    let mut ms: Vec<f64> = (0..n)
        .map(|i| {
            let t = std::time::Instant::now();
            f(i);
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    (ms[n / 2], ms[n * 99 / 100])
}

/// `user permissions` (every meter) and `who-can` (a meter permission on
/// one meter) on the same world: p50 and p99 printed, criterion's median
/// alongside.
fn effective_access(c: &mut Criterion) {
    let now = datetime!(2026-11-23 12:00 UTC);
    let dir = tempfile::tempdir().unwrap();
    let guard = world(1_000, dir.path());
    let user = |i: usize| PrincipalId::User(format!("u{}", (i * 7919) % PRINCIPALS));
    let meter = |i: usize| format!("m-{:05}", (i * 104_729) % METERS);
    let sample = guard
        .effective(metergate::guard::Holder::Principal(&user(1)), None, now)
        .unwrap();
    eprintln!(
        "user permissions of u7919: {} meter groups, {} meters with a grant of {}",
        sample.meters.len(),
        sample.meters.iter().map(|g| g.meters.len()).sum::<usize>(),
        sample.considered
    );
    let (p50, p99) = percentiles(300, |i| {
        std::hint::black_box(
            guard
                .effective(metergate::guard::Holder::Principal(&user(i)), None, now)
                .unwrap(),
        );
    });
    eprintln!("user permissions (10k meters): p50 {p50:.2} ms, p99 {p99:.2} ms");
    let (p50, p99) = percentiles(300, |i| {
        std::hint::black_box(
            guard
                .who_can(Permission::PeakDemandReset, Some(&meter(i)), now)
                .unwrap(),
        );
    });
    eprintln!("who-can (10k principals): p50 {p50:.2} ms, p99 {p99:.2} ms");
    let mut group = c.benchmark_group("effective_access");
    group.sample_size(20);
    let mut i = 0usize;
    group.bench_function("user_permissions_10k_meters", |b| {
        b.iter(|| {
            i += 1;
            std::hint::black_box(
                guard
                    .effective(metergate::guard::Holder::Principal(&user(i)), None, now)
                    .unwrap(),
            )
        })
    });
    group.bench_function("who_can_10k_principals", |b| {
        b.iter(|| {
            i += 1;
            std::hint::black_box(
                guard
                    .who_can(Permission::PeakDemandReset, Some(&meter(i)), now)
                    .unwrap(),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, decisions, effective_access);
criterion_main!(benches);
