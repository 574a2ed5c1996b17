//! The shared directory (issue 21), side by side in one run against a real
//! PostgreSQL 15 started here as the tests start it:
//! 1. the guard's decision on a snapshot loaded from PostgreSQL against the
//!    same world loaded from sled (criterion);
//! 2. loading that snapshot (100k users, 10k policies, 10k meters) from each;
//! 3. propagation: a change made through one gateway process, until each of
//!    the others holds it (2 and 8 gateways), p50 and p99;
//! 4. admin changes per second through the HTTPS API (examples/api_load)
//!    into each backend.
//!
//! usage: cargo build --release --examples && cargo bench --bench directory

#[path = "../tests/common/api.rs"]
mod api;
#[path = "../tests/common/daemon.rs"]
mod daemon;
#[path = "../tests/common/postgres.rs"]
mod postgres;
#[path = "common/world.rs"]
mod world;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use metergate::config::DirectoryConfig;
use metergate::doors::admin::protocol::Request as SocketRequest;
use metergate::doors::admin::server::call;
use metergate::guard::{Guard, GuardSettings, Request};
use metergate::model::*;
use metergate::store::Store;
use metergate::store::log::Capacity;
use time::macros::datetime;
use world::{METERS, config, meters};

const USERS: usize = 100_000;
const POLICIES: usize = 10_000;

/// Opens the store and compiles the guard's snapshot: what a start costs.
fn open(dir: &Path, backend: &DirectoryConfig) -> Guard {
    let c = config();
    let store = Arc::new(Store::open_configured(dir, Capacity::default(), backend).unwrap());
    Guard::with_fleet(
        store,
        GuardSettings::from_config(&c),
        meters(),
        c.profiles.clone(),
    )
}

/// 100k users with three policies each, 10k policies, 100 groups.
fn populate(guard: &Guard) {
    guard
        .change(
            world::ops(USERS, POLICIES),
            &PrincipalId::Local("bench".into()),
            datetime!(2026-12-03 12:00 UTC),
        )
        .unwrap();
}

fn requests() -> Vec<Request> {
    world::requests(USERS)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// 1 and 2: the same world on each backend; decisions and loads.
fn snapshot_and_decisions(pg: &postgres::Postgres, c: &mut Criterion) {
    let local_dir = tempfile::tempdir().unwrap();
    let shared_dir = tempfile::tempdir().unwrap();
    let backends = [
        ("local", local_dir.path(), DirectoryConfig::Local),
        ("postgres", shared_dir.path(), pg.directory_config("bench")),
    ];
    for (name, dir, backend) in &backends {
        let t = Instant::now();
        populate(&open(dir, backend));
        eprintln!(
            "{name}: the world written in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    // Loads, alternated: local; postgres as a restart finds it (its copy on
    // disk, then what changed since: nothing); postgres on a first start
    // (no copy: the whole directory from the server).
    let mut loads: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for _ in 0..3 {
        for (name, dir, backend) in &backends {
            let t = Instant::now();
            let guard = open(dir, backend);
            let took = t.elapsed().as_secs_f64();
            assert_eq!(guard.store().directory().users.len(), USERS);
            drop(guard);
            loads.entry(name).or_default().push(took);
        }
        let fresh = tempfile::tempdir().unwrap();
        let t = Instant::now();
        let guard = open(fresh.path(), &backends[1].2);
        let took = t.elapsed().as_secs_f64();
        assert_eq!(guard.store().directory().users.len(), USERS);
        drop(guard);
        loads.entry("first").or_default().push(took);
    }
    let (l, p, f) = (
        median(loads["local"].clone()),
        median(loads["postgres"].clone()),
        median(loads["first"].clone()),
    );
    println!(
        "snapshot load, {USERS} users, {POLICIES} policies, {METERS} meters, store opened and \
         snapshot compiled (median of 3): local {l:.2} s; postgres restart (copy + changes since) \
         {p:.2} s, {:.2}x local; postgres first start (whole directory from the server) {f:.2} s, {:.2}x local",
        p / l,
        f / l
    );

    let now = datetime!(2026-12-03 12:00 UTC);
    let reqs = requests();
    let mut group = c.benchmark_group("directory_guard_decide");
    for (name, dir, backend) in &backends {
        let guard = open(dir, backend);
        let allowed = reqs.iter().filter(|r| guard.decide(r, now).allowed).count();
        eprintln!(
            "{name}: {allowed} of {} sample requests allowed",
            reqs.len()
        );
        let mut i = 0usize;
        group.bench_function(*name, |b| {
            b.iter(|| {
                i = (i + 1) & 4095;
                std::hint::black_box(guard.decide(&reqs[i], now))
            })
        });
    }
    group.finish();
}

fn socket_call(rt: &tokio::runtime::Runtime, socket: &Path, argv: &[&str]) -> String {
    let req = SocketRequest {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        json: true,
        files: BTreeMap::new(),
    };
    let r = rt.block_on(call(socket, &req)).unwrap();
    assert_eq!(r.code, 0, "{argv:?}: {}", r.stdout);
    r.stdout
}

/// The directory version a gateway decides on.
async fn version_of(socket: &Path) -> u64 {
    let req = SocketRequest {
        argv: vec!["directory".into(), "status".into()],
        json: true,
        files: BTreeMap::new(),
    };
    let r = call(socket, &req).await.unwrap();
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    v["snapshot_version"].as_u64().unwrap()
}

/// 3: a change through gateway 0 of `n`, until every other holds it.
fn propagation(pg: &postgres::Postgres, n: usize, rounds: usize, world: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let gateways: Vec<daemon::Daemon> = (0..n)
        .map(|i| {
            daemon::Daemon::start_text(|sock| {
                daemon::gateway_config(sock, &pg.directory_section(&format!("gw{n}-{i}")))
            })
        })
        .collect();
    let sockets: Vec<PathBuf> = gateways.iter().map(|g| g.socket.clone()).collect();
    let probe = format!("probe{n}");
    socket_call(
        &rt,
        &sockets[0],
        &["user", "add", &probe, "--email", "p@example.org"],
    );
    // Everyone caught up before the first round.
    let start = rt.block_on(version_of(&sockets[0]));
    for s in &sockets {
        while rt.block_on(version_of(s)) < start {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let mut writer = Vec::new();
    let mut slowest = Vec::new();
    for round in 0..rounds {
        let target = start + round as u64 + 1;
        let verb = if round % 2 == 0 { "attach" } else { "detach" };
        let t0 = Instant::now();
        let watchers: Vec<_> = sockets[1..]
            .iter()
            .cloned()
            .map(|s| {
                rt.spawn(async move {
                    let deadline = Instant::now() + Duration::from_secs(10);
                    while version_of(&s).await < target {
                        assert!(Instant::now() < deadline, "a gateway did not catch up");
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    t0.elapsed().as_secs_f64() * 1000.0
                })
            })
            .collect();
        socket_call(&rt, &sockets[0], &["user", verb, &probe, "ReadOnly"]);
        writer.push(t0.elapsed().as_secs_f64() * 1000.0);
        let worst = watchers
            .into_iter()
            .map(|w| rt.block_on(w).unwrap())
            .fold(0.0f64, f64::max);
        slowest.push(worst);
    }
    writer.sort_by(|a, b| a.total_cmp(b));
    slowest.sort_by(|a, b| a.total_cmp(b));
    println!(
        "propagation, {world}, {n} gateways, {rounds} changes: committed through gateway 0 p50 {:.1} ms p99 {:.1} ms; \
         held by every other gateway p50 {:.1} ms p99 {:.1} ms (from the command's start; polled every 2 ms)",
        percentile(&writer, 0.5),
        percentile(&writer, 0.99),
        percentile(&slowest, 0.5),
        percentile(&slowest, 0.99),
    );
}

/// 4: admin changes a second through the API, into each backend.
fn api_changes(pg: &postgres::Postgres) {
    let load = Path::new(daemon::BIN)
        .parent()
        .unwrap()
        .join("examples/api_load");
    assert!(
        load.exists(),
        "{} is missing: cargo build --release --examples",
        load.display()
    );
    let rate = "requests_per_second = 1000000\n";
    let gateways = [
        ("local", api::api_with(rate)),
        (
            "postgres",
            api::api_with(&format!("{rate}\n{}", pg.directory_section("api"))),
        ),
    ];
    let mut keys = Vec::new();
    for (_, a) in &gateways {
        for i in 0..16 {
            a.d.mg(&[
                "user",
                "add",
                &format!("load{i}"),
                "--email",
                "l@example.org",
            ])
            .ok();
        }
        keys.push(api::key_of(&a.d, "provisioner"));
    }
    println!(
        "admin changes through the API (attach/detach a policy), 3 s runs alternated, medians of 3:"
    );
    for clients in [1usize, 16] {
        let mut got: BTreeMap<&str, Vec<(f64, f64, f64)>> = BTreeMap::new();
        for _ in 0..3 {
            for ((name, a), (id, secret)) in gateways.iter().zip(&keys) {
                let out = std::process::Command::new(&load)
                    .args(["--door", "api", "--op", "change", "--seconds", "3"])
                    .args(["--clients", &clients.to_string()])
                    .args(["--url", &format!("https://127.0.0.1:{}", a.port)])
                    .arg("--cacert")
                    .arg(&a.ca)
                    .env("METERGATE_KEY_ID", id)
                    .env("METERGATE_KEY_SECRET", secret)
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{out:?}");
                let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                // Each client's first request may find the state the last
                // run left (attached already: 409); nothing else may fail.
                let statuses = r["statuses"].as_object().unwrap();
                for (code, n) in statuses {
                    let n = n.as_u64().unwrap();
                    assert!(
                        code.starts_with('2') || code == "409" && n <= clients as u64,
                        "{name}: {statuses:?}"
                    );
                }
                got.entry(name).or_default().push((
                    r["rps"].as_f64().unwrap(),
                    r["p50_us"].as_f64().unwrap(),
                    r["p99_us"].as_f64().unwrap(),
                ));
            }
        }
        let med = |name: &str, k: usize| {
            median(
                got[name]
                    .iter()
                    .map(|t| [t.0, t.1, t.2][k])
                    .collect::<Vec<_>>(),
            )
        };
        for name in ["local", "postgres"] {
            println!(
                "  {clients:>2} clients {name:8} {:>7.0} changes/s  p50 {:>6.0} µs  p99 {:>6.0} µs",
                med(name, 0),
                med(name, 1),
                med(name, 2)
            );
        }
        println!(
            "  {clients:>2} clients postgres/local throughput {:.2}",
            med("postgres", 0) / med("local", 0)
        );
    }
}

fn main() {
    // DIRECTORY_BENCH=big runs only the 100k-user propagation (what the
    // incremental snapshot is for); unset, everything.
    let only_big = std::env::var("DIRECTORY_BENCH").is_ok_and(|v| v == "big");
    let mut c = Criterion::default().configure_from_args();
    let big = postgres::Postgres::start();
    if only_big {
        let dir = tempfile::tempdir().unwrap();
        populate(&open(dir.path(), &big.directory_config("bench")));
    } else {
        snapshot_and_decisions(&big, &mut c);
    }
    // A change recompiles only the principals it reaches, on the gateway
    // that makes it and on every other: at this size it still clones and
    // checks the directory once on each.
    for n in [2, 8] {
        propagation(&big, n, 20, "the 100k-user directory");
    }
    drop(big);
    if only_big {
        return;
    }
    let pg = postgres::Postgres::start();
    for n in [2, 8] {
        propagation(&pg, n, 50, "a small directory");
    }
    api_changes(&pg);
    c.final_summary();
}
