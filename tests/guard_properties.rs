//! Properties of the decision that must hold for any policies: adding an
//! allow never removes a permission, adding a deny never adds one, removing
//! a membership whose policies hold no deny never adds one, and order of
//! policies and statements does not matter.

mod common;

use common::*;
use metergate::guard::Guard;
use metergate::model::*;
use metergate::store::{Entity, Expect, Op, Store};
use proptest::prelude::*;
use std::sync::Arc;

const METERS: [&str; 3] = ["meter-1", "meter-2", "meter-3"];
const SELECTORS: [&str; 6] = [
    "*",
    "meter-1",
    "meter-2",
    "meter-*",
    "site=north",
    "site=south",
];
const ROLES: [&str; 4] = ["Viewer", "Operator", "Engineer", "SecAuditor"];
const PERMS: [Permission; 6] = [
    Permission::DataView,
    Permission::PeakDemandReset,
    Permission::MasterReset,
    Permission::TerminalAccess,
    Permission::SecurityLogsAccess,
    Permission::FirmwareManagement,
];

fn arb_statement() -> impl Strategy<Value = Statement> {
    common::arb_statement(&PERMS, &ROLES, &SELECTORS)
}

fn arb_policies() -> impl Strategy<Value = Vec<Vec<Statement>>> {
    prop::collection::vec(prop::collection::vec(arb_statement(), 1..4), 0..4)
}

/// A world: policies p0..pn attached to user `u` directly, and `group_policies`
/// attached through group `g` (when `member`).
struct World {
    _dir: tempfile::TempDir,
    guard: Guard,
}

fn world(direct: &[Vec<Statement>], group_policies: &[Vec<Statement>], member: bool) -> World {
    let dir = tempfile::tempdir().unwrap();
    let config = example_config(dir.path());
    let store = Arc::new(Store::open(&config.state_dir).unwrap());
    let guard = Guard::new(store, &config);
    let mut ops = Vec::new();
    let mut names = Vec::new();
    for (i, sts) in direct.iter().enumerate() {
        ops.push(Op::Put(
            Entity::Policy(Policy::new(&format!("p{i}"), sts.clone())),
            Expect::New,
        ));
        names.push(format!("p{i}"));
    }
    let mut gnames = Vec::new();
    for (i, sts) in group_policies.iter().enumerate() {
        ops.push(Op::Put(
            Entity::Policy(Policy::new(&format!("g{i}"), sts.clone())),
            Expect::New,
        ));
        gnames.push(format!("g{i}"));
    }
    let mut u = User::new("u", "u@example.net");
    u.policies = names;
    ops.push(Op::Put(Entity::User(u), Expect::New));
    let members: &[&str] = if member { &["u"] } else { &[] };
    let g = Group::new(
        "g",
        members,
        &gnames.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
    );
    ops.push(Op::Put(Entity::Group(g), Expect::New));
    guard
        .change(ops, &PrincipalId::Local("t".into()), NOW)
        .unwrap();
    World { _dir: dir, guard }
}

/// The set of (permission, meter) pairs the user is allowed.
fn allowed(w: &World) -> Vec<(Permission, &'static str)> {
    let mut out = Vec::new();
    for p in Permission::ALL {
        for m in METERS {
            if w.guard
                .decide_permission(&uid("u"), p, Some(m), true, NOW)
                .allowed
            {
                out.push((p, m));
            }
        }
    }
    out
}

fn subset(a: &[(Permission, &str)], b: &[(Permission, &str)]) -> bool {
    a.iter().all(|x| b.contains(x))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn adding_an_allow_never_removes_a_permission(policies in arb_policies(), extra in arb_statement()) {
        let before = allowed(&world(&policies, &[], false));
        let mut more = policies.clone();
        let allow = Statement { effect: Effect::Allow, ..extra };
        more.push(vec![allow]);
        let after = allowed(&world(&more, &[], false));
        prop_assert!(subset(&before, &after), "before {before:?}\nafter {after:?}");
    }

    #[test]
    fn adding_a_deny_never_adds_a_permission(policies in arb_policies(), extra in arb_statement()) {
        let before = allowed(&world(&policies, &[], false));
        let mut more = policies.clone();
        let deny = Statement { effect: Effect::Deny, ..extra };
        more.push(vec![deny]);
        let after = allowed(&world(&more, &[], false));
        prop_assert!(subset(&after, &before), "before {before:?}\nafter {after:?}");
    }

    #[test]
    fn removing_a_membership_without_denies_never_adds_a_permission(direct in arb_policies(), group in arb_policies()) {
        let group: Vec<Vec<Statement>> = group
            .into_iter()
            .map(|sts| sts.into_iter().map(|s| Statement { effect: Effect::Allow, ..s }).collect())
            .collect();
        let member = allowed(&world(&direct, &group, true));
        let not_member = allowed(&world(&direct, &group, false));
        prop_assert!(subset(&not_member, &member), "member {member:?}\nnot member {not_member:?}");
    }

    #[test]
    fn the_order_of_policies_and_statements_does_not_matter(policies in arb_policies()) {
        let before = allowed(&world(&policies, &[], false));
        let mut reversed: Vec<Vec<Statement>> = policies.iter().rev().cloned().collect();
        for sts in reversed.iter_mut() {
            sts.reverse();
        }
        let after = allowed(&world(&reversed, &[], false));
        prop_assert_eq!(before, after);
    }
}
