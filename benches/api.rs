//! The bearer check of every API call: the presented token's SHA-256, the
//! token table, the key and service user still standing, the Login
//! decision and Administrator. Goal (issue 16): at most 5 µs a call. The
//! directory holds 10k users and 1k service users, so its size shows.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use metergate::config::Config;
use metergate::guard::Guard;
use metergate::guard::api::Grant;
use metergate::model::*;
use metergate::store::secrets::{self, Secret};
use metergate::store::{Entity, Expect, Op, Store};

fn world(dir: &Path) -> (Guard, String) {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/metergate.toml"
    ))
    .unwrap();
    let (config, _) = Config::parse(Path::new("metergate.toml"), &text).unwrap();
    let store = Arc::new(Store::open(dir).unwrap());
    let guard = Guard::new(store, &config);
    let secret = Secret::new("bench-secret-bench-secret-bench-secret-1");
    let hash = secrets::hash_key_secret(&secret).unwrap();
    let mut ops: Vec<Op> = (0..10_000)
        .map(|i| {
            let u = User::new(&format!("u{i:05}"), &format!("u{i}@example.net"));
            Op::Put(Entity::User(u), Expect::New)
        })
        .collect();
    for i in 0..1_000 {
        let mut s = ServiceUser::new(&format!("svc{i:04}"));
        s.keys.push(AccessKey {
            id: format!("MGKBENCH{i:011}"),
            secret_hash: hash.clone(),
            status: Status::Active,
            created: 0,
            last_used: None,
        });
        s.policies.push(ADMINISTRATOR.into());
        ops.push(Op::Put(Entity::ServiceUser(s), Expect::New));
    }
    guard
        .change(
            ops,
            &PrincipalId::Local("root".into()),
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let grant = rt.block_on(guard.grant_token(
        "MGKBENCH00000000500",
        secret,
        IpAddr::from([127, 0, 0, 1]),
        Duration::from_secs(3600),
        || true,
    ));
    let Grant::Issued { token, .. } = grant else {
        panic!("no token");
    };
    (guard, token)
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let (guard, token) = world(dir.path());
    let source = IpAddr::from([127, 0, 0, 1]);
    let mut g = c.benchmark_group("api");
    g.bench_function("bearer check (10k users, 1k service users)", |b| {
        b.iter(|| {
            let now = time::OffsetDateTime::now_utc();
            std::hint::black_box(guard.bearer(&token, source, now).is_ok())
        })
    });
    g.bench_function("unknown token", |b| {
        let wrong = format!("mgt_{}", "0".repeat(64));
        b.iter(|| {
            let now = time::OffsetDateTime::now_utc();
            std::hint::black_box(guard.bearer(&wrong, source, now).is_err())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
