//! What one admin change costs at fleet scale, in-process on the local
//! backend: the shared benchmark world (100k users, 10k policies, 100
//! groups, 10k meters), then a user's policy attached and detached, each
//! change timed from `Guard::change` until the guard decides on it.
//!
//! usage: cargo run --release --example change_cost [-- ROUNDS]

// Only the world's directory and fleet are used here, not its requests.
#[allow(dead_code)]
#[path = "../benches/common/world.rs"]
mod world;

use std::sync::Arc;
use std::time::Instant;

use metergate::guard::{Guard, GuardSettings};
use metergate::model::{PrincipalId, READ_ONLY};
use metergate::store::{Entity, Expect, Op, Store};
use time::macros::datetime;

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = world::config();
    let store = Arc::new(Store::open(dir.path()).expect("the store opens"));
    let guard = Guard::with_fleet(
        store,
        GuardSettings::from_config(&config),
        world::meters(),
        config.profiles.clone(),
    );
    let by = PrincipalId::Local("bench".into());
    let now = datetime!(2026-12-03 12:00 UTC);
    let t = Instant::now();
    guard
        .change(world::ops(100_000, 10_000), &by, now)
        .expect("the world is made");
    eprintln!("world written in {:.2} s", t.elapsed().as_secs_f64());
    let mut ms = Vec::new();
    for i in 0..rounds {
        let mut u = guard.directory().users["u5"].clone();
        if i % 2 == 0 {
            u.policies.push(READ_ONLY.into());
        } else {
            u.policies.retain(|p| p != READ_ONLY);
        }
        let version = u.version;
        let t = Instant::now();
        guard
            .change(
                vec![Op::Put(Entity::User(u), Expect::Version(version))],
                &by,
                now,
            )
            .expect("the change is made");
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    println!(
        "one change at 100k users, 10k policies ({rounds} changes): p50 {:.1} ms, max {:.1} ms",
        ms[ms.len() / 2],
        ms[ms.len() - 1]
    );
}
