//! The fleet-scale world the guard and directory benchmarks share: meters
//! over 50 sites, policies of three statements, users with three policies
//! each and 100 groups of two policies (every 100th user in each).

use std::collections::BTreeMap;
use std::path::Path;

use metergate::config::{Config, MeterConfig};
use metergate::guard::{Action, Request};
use metergate::model::*;
use metergate::store::{Entity, Expect, Op};

pub const METERS: usize = 10_000;
pub const SITES: usize = 50;

/// The example config (its settings and profiles).
pub fn config() -> Config {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/metergate.toml"
    ))
    .unwrap();
    Config::parse(Path::new("metergate.toml"), &text).unwrap().0
}

/// `METERS` meters `m-00000`.., tagged `site=sN`.
pub fn meters() -> Vec<MeterConfig> {
    (0..METERS)
        .map(|i| MeterConfig {
            id: format!("m-{i:05}"),
            tags: BTreeMap::from([("site".to_string(), format!("s{}", i % SITES))]),
            address: None,
            unit_id: 1,
            profile: "ion-sim".into(),
            gateway_unit: None,
            listener: 0,
            max_connections: 2,
            timeout: std::time::Duration::from_secs(1),
            pipeline: 1,
            files: None,
            sftp: None,
            console: None,
            accounts: None,
        })
        .collect()
}

/// The ops that make `policies` policies, `users` users and 100 groups.
pub fn ops(users: usize, policies: usize) -> Vec<Op> {
    let roles = ["Viewer", "Operator", "Engineer", "Installer"];
    let mut ops = Vec::new();
    for p in 0..policies {
        let statements = vec![
            Statement::allow_role(
                roles[p % 4],
                vec![MeterSelector::parse(&format!("site=s{}", p % SITES)).unwrap()],
            ),
            Statement {
                effect: Effect::Allow,
                permissions: vec![Permission::DataView, Permission::TerminalAccess],
                roles: vec![],
                meters: vec![MeterSelector::parse(&format!("m-{:03}*", p % 100)).unwrap()],
                require_mfa: false,
                require_recording: false,
            },
            Statement {
                effect: Effect::Deny,
                permissions: vec![Permission::MasterReset],
                roles: vec![],
                meters: vec![MeterSelector::parse(&format!("m-{:05}", (p * 7) % METERS)).unwrap()],
                require_mfa: false,
                require_recording: false,
            },
        ];
        ops.push(Op::Put(
            Entity::Policy(Policy::new(&format!("pol-{p}"), statements)),
            Expect::New,
        ));
    }
    for u in 0..users {
        let mut user = User::new(&format!("u{u}"), "u@example.net");
        user.policies = (0..3)
            .map(|k| format!("pol-{}", (u * 31 + k * 101) % policies))
            .collect();
        user.policies.sort();
        user.policies.dedup();
        ops.push(Op::Put(Entity::User(user), Expect::New));
    }
    for g in 0..100 {
        let mut group = Group::new(&format!("g{g}"), &[], &[]);
        group.members = (0..users)
            .filter(|u| u % 100 == g)
            .map(|u| format!("u{u}"))
            .collect();
        group.policies = vec![
            format!("pol-{}", (g * 13) % policies),
            format!("pol-{}", (g * 17 + 1) % policies),
        ];
        ops.push(Op::Put(Entity::Group(group), Expect::New));
    }
    ops
}

/// 4096 reads and writes by users spread over `users`, on meters spread
/// over the fleet.
pub fn requests(users: usize) -> Vec<Request> {
    (0..4096)
        .map(|i| Request {
            read_only: false,
            certificate: None,
            second_factor: false,
            recorded: false,
            principal: PrincipalId::User(format!("u{}", (i * 7919) % users)),
            source: None,
            door: "bench",
            action: if i % 2 == 0 {
                Action::ReadRegisters {
                    meter: format!("m-{:05}", (i * 104_729) % METERS),
                    function: 3,
                    start: 3000,
                    count: 10,
                }
            } else {
                Action::WriteRegisters {
                    meter: format!("m-{:05}", (i * 104_729) % METERS),
                    function: 6,
                    start: 5000,
                    values: metergate::guard::WriteValues::Known(vec![21212]),
                    read: None,
                }
            },
        })
        .collect()
}
