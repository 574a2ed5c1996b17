//! Effective access against brute force: over generated worlds (users,
//! a group, a service user, support with a meter boundary, allows and
//! denies with roles, selectors and second-factor conditions), what
//! `user permissions` and `who-can` say must be exactly what `check`
//! decides for every (principal, permission, meter).

mod common;

use common::*;
use metergate::guard::Holder;
use metergate::model::*;
use metergate::store::Entity;
use proptest::prelude::*;

const METERS: [&str; 3] = ["meter-1", "meter-2", "meter-3"];
const SELECTORS: [&str; 6] = [
    "*",
    "meter-1",
    "meter-3",
    "meter-*",
    "site=north",
    "site=south",
];
const ROLES: [&str; 4] = ["Viewer", "Operator", "Engineer", "SecAuditor"];
const PERMS: [Permission; 7] = [
    Permission::DataView,
    Permission::PeakDemandReset,
    Permission::MasterReset,
    Permission::TerminalAccess,
    Permission::SecurityLogsAccess,
    Permission::UserManagement,
    Permission::FirmwareManagement,
];
const USERS: [&str; 3] = ["u0", "u1", "u2"];

fn arb_statement() -> impl Strategy<Value = Statement> {
    (
        prop::bool::weighted(0.7),
        prop::sample::subsequence(PERMS.to_vec(), 0..3),
        prop::sample::subsequence(ROLES.to_vec(), 0..2),
        prop::sample::subsequence(SELECTORS.to_vec(), 1..3),
        prop::bool::weighted(0.2),
    )
        .prop_filter("names something", |(_, p, r, _, _)| {
            !p.is_empty() || !r.is_empty()
        })
        .prop_map(|(allow, perms, roles, meters, mfa)| {
            let mut st = statement(
                if allow { Effect::Allow } else { Effect::Deny },
                &perms,
                &roles,
                &meters,
            );
            st.require_mfa = mfa && allow;
            st
        })
}

/// Policies p0..pn, and who holds which (a bit per policy): the three
/// users, the group, the service user and support; group members.
#[derive(Debug, Clone)]
struct World {
    policies: Vec<Vec<Statement>>,
    holds: [u8; 6],
    members: Vec<bool>,
    inactive: bool,
}

fn arb_world() -> impl Strategy<Value = World> {
    (
        prop::collection::vec(prop::collection::vec(arb_statement(), 1..4), 1..5),
        prop::array::uniform6(any::<u8>()),
        prop::collection::vec(any::<bool>(), 3),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(policies, holds, members, inactive)| World {
            policies,
            holds,
            members,
            inactive,
        })
}

fn build(w: &World) -> Fixture {
    // Support may reach only the north site, whatever its policies say.
    let f = Fixture::with_config(|c| {
        c.support.meters = Some(vec![MeterSelector::parse("site=north").unwrap()]);
        // Generated worlds may pair any permissions.
        c.separation_of_duties.clear();
    });
    let names: Vec<String> = (0..w.policies.len()).map(|i| format!("p{i}")).collect();
    let held = |who: usize| -> Vec<&str> {
        names
            .iter()
            .enumerate()
            .filter(|(i, _)| w.holds[who] & (1 << i) != 0)
            .map(|(_, n)| n.as_str())
            .collect()
    };
    let mut es: Vec<Entity> = w
        .policies
        .iter()
        .zip(&names)
        .map(|(sts, n)| Entity::Policy(Policy::new(n, sts.clone())))
        .collect();
    for (i, u) in USERS.iter().enumerate() {
        let mut u = user(u, &held(i));
        if i == 2 && w.inactive {
            u.status = Status::Inactive;
        }
        es.push(Entity::User(u));
    }
    let members: Vec<&str> = USERS
        .iter()
        .zip(&w.members)
        .filter(|(_, m)| **m)
        .map(|(u, _)| *u)
        .collect();
    es.push(Entity::Group(Group::new("g", &members, &held(3))));
    let mut s = ServiceUser::new("s");
    s.policies = held(4).iter().map(|x| x.to_string()).collect();
    es.push(Entity::ServiceUser(s));
    es.push(Entity::Support(SupportAccess::new(
        Day::parse("2026-12-24").unwrap(),
        &held(5),
    )));
    f.add(es);
    f
}

fn principals() -> Vec<PrincipalId> {
    let mut all: Vec<PrincipalId> = USERS.iter().map(|u| uid(u)).collect();
    all.push(PrincipalId::Service("s".into()));
    all.push(PrincipalId::Support);
    all
}

/// What `user permissions` says of (permission, meter): allowed, and
/// whether it needs a second factor; None when it does not list it.
fn listed(
    e: &metergate::guard::Effective,
    p: Permission,
    meter: &str,
) -> Option<(bool, bool, bool)> {
    let grants = if p.is_global() {
        &e.global
    } else {
        &e.meters
            .iter()
            .find(|g| g.meters.iter().any(|m| m == meter))?
            .grants
    };
    grants.iter().find(|g| g.permission == p).map(|g| {
        (
            g.decision.allowed,
            g.needs_second_factor,
            g.removed_allow.is_some(),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn effective_access_and_who_can_agree_with_check_everywhere(w in arb_world(), late in any::<bool>()) {
        let f = build(&w);
        // After support's end date, support holds nothing.
        let now = if late { time::macros::datetime!(2026-12-24 00:00 UTC) } else { NOW };
        for who in principals() {
            let e = f.guard.effective(Holder::Principal(&who), None, now).unwrap();
            for p in Permission::ALL {
                for m in METERS {
                    let meter = (!p.is_global()).then_some(m);
                    let with = f.guard.decide_permission(&who, p, meter, true, now);
                    let without = f.guard.decide_permission(&who, p, meter, false, now);
                    let explicit_deny = matches!(with.reason, metergate::guard::Reason::Denied { .. });
                    let expected = if with.allowed {
                        Some((true, !without.allowed))
                    } else if explicit_deny {
                        Some((false, false))
                    } else {
                        None
                    };
                    let got = listed(&e, p, m).map(|(a, f, _)| (a, f));
                    prop_assert_eq!(got, expected, "{} {} on {}: check says {}; {:?}", who, p, m, with, e);
                    let who_can = f.guard.who_can(p, meter, now).unwrap();
                    prop_assert_eq!(
                        who_can.iter().any(|(id, _)| *id == who),
                        with.allowed,
                        "who-can {} on {} and {}: check says {}", p, m, who, with
                    );
                }
            }
        }
        // A group's permissions are what a member holding only the group's
        // policies gets.
        let g = f.guard.effective(Holder::Group("g"), None, now).unwrap();
        let probe = Fixture::with_config(|c| c.separation_of_duties.clear());
        let mut es: Vec<Entity> = w
            .policies
            .iter()
            .enumerate()
            .map(|(i, sts)| Entity::Policy(Policy::new(&format!("p{i}"), sts.clone())))
            .collect();
        es.push(Entity::User(user("only-group", &[])));
        es.push(Entity::Group(Group::new(
            "g",
            &["only-group"],
            &(0..w.policies.len())
                .filter(|i| w.holds[3] & (1 << i) != 0)
                .map(|i| format!("p{i}"))
                .collect::<Vec<_>>()
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>(),
        )));
        probe.add(es);
        let member = probe.guard.effective(Holder::Principal(&uid("only-group")), None, NOW).unwrap();
        for p in Permission::ALL {
            for m in METERS {
                prop_assert_eq!(listed(&g, p, m), listed(&member, p, m), "group g: {} on {}", p, m);
            }
        }
    }
}

#[test]
fn a_deny_names_the_allow_it_takes_away_and_meters_group_by_what_applies() {
    let f = Fixture::new();
    f.add(vec![
        Entity::Policy(Policy::new(
            "north-ops",
            vec![statement(
                Effect::Allow,
                &[],
                &["Operator"],
                &["site=north"],
            )],
        )),
        Entity::Policy(Policy::new(
            "no-reset-2",
            vec![statement(
                Effect::Deny,
                &[Permission::PeakDemandReset],
                &[],
                &["meter-2"],
            )],
        )),
        Entity::User(user("alice", &["north-ops", "no-reset-2"])),
    ]);
    let e = f
        .guard
        .effective(Holder::Principal(&uid("alice")), None, NOW)
        .unwrap();
    // meter-1 and meter-2 differ (the deny), meter-3 holds nothing.
    let groups: Vec<Vec<String>> = e.meters.iter().map(|g| g.meters.clone()).collect();
    assert_eq!(groups, vec![vec!["meter-1"], vec!["meter-2"]], "{e:?}");
    let reset2 = e.meters[1]
        .grants
        .iter()
        .find(|g| g.permission == Permission::PeakDemandReset)
        .unwrap();
    assert!(!reset2.decision.allowed);
    assert_eq!(
        reset2.decision.reason.to_string(),
        "denied by policy `no-reset-2` statement 1 (an explicit deny beats every allow)"
    );
    assert_eq!(
        reset2.removed_allow.as_ref().unwrap().to_string(),
        "allowed by policy `north-ops` statement 1 via role Operator"
    );
    assert_eq!(e.considered, 3);
    // One meter asked: only it.
    let one = f
        .guard
        .effective(Holder::Principal(&uid("alice")), Some("meter-3"), NOW)
        .unwrap();
    assert!(one.meters.is_empty() && one.considered == 1, "{one:?}");
    assert!(
        f.guard
            .effective(Holder::Principal(&uid("alice")), Some("meter-9"), NOW)
            .is_err()
    );
    assert!(
        f.guard
            .effective(Holder::Principal(&uid("nobody")), None, NOW)
            .is_err()
    );
}
