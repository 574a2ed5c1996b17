//! Shared fixture: a guard over a fresh store in a temporary directory, with
//! the example config's meters and the simulated meter's profile.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use metergate::config::Config;
use metergate::guard::{Action, Guard, Request, WriteValues};
use metergate::model::*;
use metergate::store::{Entity, Expect, Op, Store};
use time::OffsetDateTime;
use time::macros::datetime;

pub mod gateway;

pub const NOW: OffsetDateTime = datetime!(2026-11-23 12:00 UTC);

pub fn example_config(state_dir: &Path) -> Config {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/metergate.toml"
    ))
    .expect("example config is readable");
    let text = text.replace(
        "state_dir = \"/var/lib/metergate\"",
        &format!("state_dir = {:?}", state_dir.display().to_string()),
    );
    Config::parse(Path::new("config/metergate.toml"), &text)
        .expect("example config parses")
        .0
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub guard: Arc<Guard>,
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = example_config(dir.path());
        let store = Arc::new(Store::open(&config.state_dir).expect("store opens"));
        let guard = Arc::new(Guard::new(store, &config));
        Fixture { dir, guard }
    }

    pub fn with_config(edit: impl FnOnce(&mut Config)) -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = example_config(dir.path());
        edit(&mut config);
        let capacity = config.audit.capacity(config.audit.forward.is_some());
        let store = Arc::new(Store::open_with(&config.state_dir, capacity).expect("store opens"));
        let guard = Arc::new(Guard::new(store, &config));
        Fixture { dir, guard }
    }

    pub fn add(&self, entities: Vec<Entity>) {
        let ops = entities
            .into_iter()
            .map(|e| Op::Put(e, Expect::New))
            .collect();
        self.guard
            .change(ops, &PrincipalId::Local("test".into()), NOW)
            .expect("change applies");
    }
}

pub fn user(name: &str, policies: &[&str]) -> User {
    let mut u = User::new(name, &format!("{name}@example.net"));
    u.policies = policies.iter().map(|s| s.to_string()).collect();
    u
}

pub fn user_with_role(name: &str, role: &str, meters: &str) -> User {
    let mut u = User::new(name, &format!("{name}@example.net"));
    u.inline = vec![Statement::allow_role(
        role,
        vec![MeterSelector::parse(meters).unwrap()],
    )];
    u
}

pub fn statement(
    effect: Effect,
    permissions: &[Permission],
    roles: &[&str],
    meters: &[&str],
) -> Statement {
    Statement {
        effect,
        permissions: permissions.to_vec(),
        roles: roles.iter().map(|s| s.to_string()).collect(),
        meters: meters
            .iter()
            .map(|m| MeterSelector::parse(m).unwrap())
            .collect(),
        require_mfa: false,
        require_recording: false,
    }
}

/// Any statement (mostly allows) naming some of `permissions` or `roles`
/// on one or two of `selectors`, for property tests.
pub fn arb_statement(
    permissions: &[Permission],
    roles: &[&'static str],
    selectors: &[&'static str],
) -> impl proptest::strategy::Strategy<Value = Statement> + use<> {
    use proptest::prelude::*;
    (
        prop::bool::weighted(0.7),
        prop::sample::subsequence(permissions.to_vec(), 0..3),
        prop::sample::subsequence(roles.to_vec(), 0..2),
        prop::sample::subsequence(selectors.to_vec(), 1..3),
    )
        .prop_filter("names something", |(_, p, r, _)| {
            !p.is_empty() || !r.is_empty()
        })
        .prop_map(|(allow, perms, roles, meters)| {
            statement(
                if allow { Effect::Allow } else { Effect::Deny },
                &perms,
                &roles,
                &meters,
            )
        })
}

pub fn uid(name: &str) -> PrincipalId {
    PrincipalId::User(name.into())
}

pub fn req(who: &PrincipalId, action: Action) -> Request {
    Request {
        read_only: false,
        certificate: None,
        principal: who.clone(),
        source: Some("127.0.0.1".into()),
        door: "test",
        action,
        second_factor: false,
        recorded: false,
    }
}

pub fn read(meter: &str, start: u16, count: u16) -> Action {
    Action::ReadRegisters {
        meter: meter.into(),
        function: 3,
        start,
        count,
    }
}

pub fn write(meter: &str, function: u8, start: u16, values: &[u16]) -> Action {
    Action::WriteRegisters {
        meter: meter.into(),
        function,
        start,
        values: WriteValues::Known(values.to_vec()),
        read: None,
    }
}
