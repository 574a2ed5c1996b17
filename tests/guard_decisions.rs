//! The guard's decisions, as tables of (who, what, where) → expected
//! decision, reading like the product documents.

mod common;

use common::*;
use metergate::guard::{Action, AdminOp, Reason, WriteValues};
use metergate::model::*;
use metergate::store::Entity;
use time::Duration;
use time::macros::datetime;

/// The cast: one principal per situation the product documents describe.
fn cast() -> Fixture {
    let f = Fixture::with_config(|c| {
        // Let FC 22 reach two entries, so the mask-write rule is what decides.
        let p = c.profiles.get_mut("ion-sim").unwrap();
        for w in p.write.iter_mut() {
            if w.permission == Permission::PeakDemandReset || w.permission == Permission::CommConfig
            {
                w.functions.push(22);
            }
        }
    });
    let deny_meters = Policy::new(
        "no-meters",
        vec![statement(Effect::Deny, &Permission::ALL, &[], &["*"])],
    );
    let north_ops = Policy::new(
        "north-operators",
        vec![
            statement(Effect::Allow, &[], &["Operator"], &["site=north"]),
            statement(Effect::Deny, &[Permission::MasterReset], &[], &["*"]),
        ],
    );
    let mut inactive = user("ivan", &[ADMINISTRATOR]);
    inactive.status = Status::Inactive;
    let mut ended = user("erin", &[ADMINISTRATOR]);
    ended.end_date = Some(Day::parse("2026-11-23").unwrap());
    let mut ends_tomorrow = user("tom", &[READ_ONLY]);
    ends_tomorrow.end_date = Some(Day::parse("2026-11-24").unwrap());
    let mut temp_expired = user("tess", &[READ_ONLY]);
    temp_expired.password = Some(PasswordRecord {
        hash: "$argon2id$not-checked-here".into(),
        temporary: true,
        issued_at: micros(NOW - Duration::days(31)),
    });
    let mut temp_fresh = user("fred", &[READ_ONLY]);
    temp_fresh.password = Some(PasswordRecord {
        hash: "x".into(),
        temporary: true,
        issued_at: micros(NOW - Duration::days(29)),
    });
    let mut svc_admin = ServiceUser::new("integration");
    svc_admin.policies = vec![ADMINISTRATOR.into()];
    let mut svc_ro = ServiceUser::new("scada-viewer");
    svc_ro.policies = vec![READ_ONLY.into()];
    f.add(vec![
        Entity::Policy(deny_meters),
        Entity::Policy(north_ops),
        Entity::User(user("alice", &[ADMINISTRATOR])),
        Entity::User(user("dave", &[])),
        Entity::User(user("rob", &[READ_ONLY])),
        Entity::User(user("nora", &["north-operators"])),
        Entity::User(user_with_role("olga", "Operator", "*")),
        Entity::User(user_with_role("eve", "Engineer", "*")),
        Entity::User(user_with_role("ian", "Installer", "*")),
        Entity::User(user_with_role("fiona", "Viewer", "*")),
        Entity::User(user_with_role("sam", "SecAdmin", "*")),
        Entity::User(user_with_role("aud", "SecAuditor", "*")),
        Entity::User(inactive),
        Entity::User(ended),
        Entity::User(ends_tomorrow),
        Entity::User(temp_expired),
        Entity::User(temp_fresh),
        Entity::ServiceUser(svc_admin),
        Entity::ServiceUser(svc_ro),
        Entity::Group(Group::new("contractors", &["alice"], &["no-meters"])),
        Entity::Support(SupportAccess::new(
            Day::parse("2026-11-24").unwrap(),
            &[ADMINISTRATOR],
        )),
    ]);
    // Firmware and file rules need a user with exactly these permissions.
    let mut fw = user("fw", &[]);
    fw.inline = vec![statement(
        Effect::Allow,
        &[Permission::FirmwareManagement],
        &[],
        &["*"],
    )];
    let mut rw = user("rw", &[]);
    rw.inline = vec![statement(
        Effect::Allow,
        &[Permission::FileSystemReadAndWriteAccess],
        &[],
        &["*"],
    )];
    f.add(vec![Entity::User(fw), Entity::User(rw)]);
    f
}

fn file(meter: &str, op: FileOp, path: &str) -> Action {
    Action::File {
        meter: meter.into(),
        op,
        path: path.into(),
    }
}

#[test]
fn decisions_read_like_the_product_documents() {
    use Action::*;
    let f = cast();
    let svc = |n: &str| PrincipalId::Service(n.into());
    #[rustfmt::skip]
    let table: Vec<(PrincipalId, Action, bool, &str)> = vec![
        // Deny precedence: Administrator directly, but a group policy denies.
        (uid("alice"), read("meter-1", 3000, 10), false, "denied by policy `no-meters` statement 1"),
        (uid("alice"), Admin { op: AdminOp::Change, target: "user x".into() }, false, "denied by policy `no-meters`"),
        // Default deny.
        (uid("dave"), read("meter-1", 3000, 10), false, "no statement allows"),
        (uid("nobody"), read("meter-1", 3000, 10), false, "unknown principal"),
        // Gate checks come before any policy.
        (uid("ivan"), read("meter-1", 3000, 10), false, "inactive"),
        (uid("erin"), read("meter-1", 3000, 10), false, "access ended at 2026-11-23"),
        (uid("tom"), read("meter-1", 3000, 10), true, "allowed by policy `ReadOnly`"),
        (uid("tess"), read("meter-1", 3000, 10), false, "temporary password expired"),
        (uid("fred"), read("meter-1", 3000, 10), true, "ReadOnly"),
        (PrincipalId::Support, read("meter-3", 3000, 10), true, "Administrator"),
        // ReadOnly reads, never writes.
        (uid("rob"), read("meter-3", 3000, 10), true, "ReadOnly"),
        (uid("rob"), write("meter-3", 6, 5000, &[21212]), false, "no statement allows"),
        (uid("rob"), read("meter-3", 4000, 1), false, "does not let Data View read"),
        // Roles through a policy, scoped by tag; the policy's own deny.
        (uid("nora"), write("meter-1", 6, 5000, &[21212]), true, "north-operators` statement 1 via role Operator"),
        (uid("nora"), write("meter-3", 6, 5000, &[21212]), false, "no statement allows"),
        // One command register, two actions: the value decides.
        (uid("olga"), write("meter-2", 6, 5000, &[1115]), false, "no statement allows"),
        (uid("olga"), write("meter-2", 6, 5000, &[4242]), false, "no allowlist entry"),
        (uid("ian"), write("meter-2", 6, 5000, &[1115]), true, "via role Installer"),
        (uid("fiona"), write("meter-2", 6, 5000, &[21212]), false, "no statement allows"),
        // Each write permission through its own entry.
        (uid("olga"), write("meter-1", 16, 5010, &[2026, 11, 23, 12, 0, 0]), true, "Operator"),
        (uid("fiona"), write("meter-1", 16, 5010, &[2026, 11, 23, 12, 0, 0]), false, "no statement allows"),
        (uid("eve"), write("meter-1", 6, 5020, &[1]), true, "Engineer"),
        (uid("eve"), write("meter-1", 6, 5020, &[7]), false, "no allowlist entry"),
        (uid("olga"), write("meter-1", 6, 5020, &[1]), false, "no statement allows"),
        (uid("eve"), write("meter-1", 16, 5030, &[1, 2]), true, "Engineer"),
        (uid("olga"), write("meter-1", 16, 5030, &[1, 2]), false, "no statement allows"),
        (uid("eve"), write("meter-1", 16, 5040, &[1]), true, "Engineer"),
        (uid("eve"), write("meter-1", 16, 5100, &[1; 100]), true, "Engineer"),
        (uid("eve"), write("meter-1", 16, 5100, &[1; 101]), false, "no allowlist entry"),
        // An FC 16 spanning an allowed and a forbidden register.
        (uid("olga"), write("meter-1", 16, 5014, &[0, 0, 0]), false, "register 5016"),
        (uid("eve"), write("meter-1", 16, 5038, &[0; 4]), true, "Engineer"),
        // FC 23: both parts are authorized.
        (uid("olga"), WriteRegisters { meter: "meter-1".into(), function: 23, start: 5010, values: WriteValues::Known(vec![2026, 11, 23, 12, 0, 0]), read: Some((3000, 10)) }, true, "Operator"),
        (uid("olga"), WriteRegisters { meter: "meter-1".into(), function: 23, start: 5000, values: WriteValues::Known(vec![1115]), read: Some((3000, 10)) }, false, "register 5000"),
        (uid("olga"), WriteRegisters { meter: "meter-1".into(), function: 23, start: 5010, values: WriteValues::Known(vec![0; 6]), read: Some((4000, 10)) }, false, "does not let Data View read"),
        // FC 22 cannot show its values: only entries without a value list.
        (uid("olga"), WriteRegisters { meter: "meter-1".into(), function: 22, start: 5000, values: WriteValues::Any { count: 1 }, read: None }, false, "writing any value to register 5000"),
        (uid("eve"), WriteRegisters { meter: "meter-1".into(), function: 22, start: 5030, values: WriteValues::Any { count: 1 }, read: None }, true, "Engineer"),
        // Diagnostics and unknown meters.
        (uid("ian"), Diagnostics { meter: "meter-1".into(), sub_function: 1 }, false, "privileged"),
        (uid("ian"), read("meter-99", 3000, 1), false, "no such meter"),
        // Files: firmware/ belongs to Firmware Management.
        (uid("fw"), file("meter-1", FileOp::Write, "firmware/v2.bin"), true, "Firmware Management"),
        (uid("rw"), file("meter-1", FileOp::Write, "firmware/v2.bin"), false, "no statement allows"),
        (uid("rw"), file("meter-1", FileOp::Write, "config/a.cfg"), true, "File System Read and Write Access"),
        (uid("fw"), file("meter-1", FileOp::Write, "config/a.cfg"), false, "no statement allows"),
        (uid("rob"), file("meter-1", FileOp::Read, "firmware/v1.bin"), true, "ReadOnly"),
        (uid("rob"), file("meter-1", FileOp::Remove, "logs/events.log"), false, "no statement allows"),
        (uid("olga"), Terminal { meter: "meter-1".into() }, true, "Operator"),
        (uid("fiona"), Terminal { meter: "meter-1".into() }, false, "no statement allows"),
        // Admin: permission table, API calls, resend.
        (uid("sam"), Admin { op: AdminOp::Change, target: "user x".into() }, true, "SecAdmin"),
        (uid("aud"), Admin { op: AdminOp::Change, target: "user x".into() }, false, "no statement allows"),
        (uid("aud"), Admin { op: AdminOp::View, target: "user list".into() }, true, "SecAuditor"),
        (uid("aud"), ReadAudit { what: "tail".into() }, true, "SecAuditor"),
        (uid("sam"), ReadAudit { what: "tail".into() }, false, "no statement allows"),
        (uid("sam"), Admin { op: AdminOp::ResendPassword, target: "user x".into() }, false, "needs the Administrator policy"),
        (PrincipalId::Local("root".into()), Admin { op: AdminOp::ResendPassword, target: "user x".into() }, true, "Administrator"),
        (svc("scada-viewer"), Admin { op: AdminOp::View, target: "user list".into() }, false, "needs the Administrator policy"),
        (svc("integration"), Admin { op: AdminOp::Change, target: "user x".into() }, true, "Administrator"),
        (svc("scada-viewer"), read("meter-1", 3000, 10), true, "ReadOnly"),
    ];
    let mut failures = Vec::new();
    for (who, action, allowed, reason) in &table {
        let d = f.guard.decide(&req(who, action.clone()), NOW);
        let text = d.to_string();
        if d.allowed != *allowed || !text.contains(reason) {
            failures.push(format!(
                "{who} {action}: expected {} containing {reason:?}, got {text}",
                if *allowed { "ALLOW" } else { "DENY" }
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} decisions wrong:\n{}",
        failures.len(),
        table.len(),
        failures.join("\n")
    );
}

#[test]
fn support_access_ends_at_midnight_utc_at_the_start_of_its_end_date() {
    let f = cast();
    let ask = |now| {
        f.guard
            .decide(&req(&PrincipalId::Support, read("meter-1", 3000, 1)), now)
    };
    assert!(ask(datetime!(2026-11-23 23:59:59 UTC)).allowed);
    let d = ask(datetime!(2026-11-24 00:00 UTC));
    assert!(!d.allowed);
    assert_eq!(
        d.reason,
        Reason::SupportEnded(Day::parse("2026-11-24").unwrap())
    );
    let tom = |now| {
        f.guard
            .decide(&req(&uid("tom"), read("meter-1", 3000, 1)), now)
    };
    assert!(tom(datetime!(2026-11-23 23:59 UTC)).allowed);
    assert!(!tom(datetime!(2026-11-24 00:00 UTC)).allowed);
}

#[test]
fn support_is_held_inside_the_configs_boundary() {
    let f = Fixture::with_config(|c| {
        c.support.meters = Some(vec![MeterSelector::parse("site=north").unwrap()])
    });
    f.add(vec![Entity::Support(SupportAccess::new(
        Day::parse("2027-01-01").unwrap(),
        &[ADMINISTRATOR],
    ))]);
    let ask = |m: &str| {
        f.guard
            .decide(&req(&PrincipalId::Support, read(m, 3000, 1)), NOW)
    };
    assert!(ask("meter-1").allowed);
    let d = ask("meter-3");
    assert_eq!(
        (d.allowed, d.reason),
        (false, Reason::OutsideSupportBoundary)
    );
}

#[test]
fn check_answers_per_permission_with_the_reason() {
    let f = cast();
    let d = f.guard.decide_permission(
        &uid("nora"),
        Permission::MasterReset,
        Some("meter-1"),
        true,
        NOW,
    );
    assert!(!d.allowed);
    assert!(
        d.to_string()
            .starts_with("DENY Master Reset: denied by policy `north-operators` statement 2"),
        "{d}"
    );
    let d = f.guard.decide_permission(
        &uid("nora"),
        Permission::PeakDemandReset,
        Some("meter-2"),
        true,
        NOW,
    );
    assert!(d.to_string().starts_with("ALLOW Peak Demand Reset: allowed by policy `north-operators` statement 1 via role Operator"), "{d}");
    let d = f
        .guard
        .decide_permission(&uid("aud"), Permission::SecurityLogsAccess, None, true, NOW);
    assert!(d.allowed, "{d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_racing_peak_demand_resets_get_one_allow() {
    let f = cast();
    let mut tasks = Vec::new();
    for who in ["olga", "nora", "eve", "ian"] {
        let g = f.guard.clone();
        tasks.push(tokio::spawn(async move {
            g.authorize(&req(&uid(who), write("meter-1", 6, 5000, &[21212])), NOW)
                .await
        }));
    }
    let mut allowed = 0;
    for t in tasks {
        let d = t.await.unwrap();
        if d.allowed {
            allowed += 1;
        } else {
            assert!(matches!(d.reason, Reason::PeakDemandLockout { .. }), "{d}");
            assert!(
                d.to_string()
                    .contains("next reset is allowed at 2026-11-23T12:15:00Z"),
                "{d}"
            );
        }
        assert!(d.event.is_some(), "every reset decision is logged: {d}");
    }
    assert_eq!(allowed, 1);
    // Another meter has its own slot; the interval ends after 15 minutes.
    async fn reset(f: &Fixture, m: &str, now: time::OffsetDateTime) -> metergate::guard::Decision {
        f.guard
            .authorize(&req(&uid("olga"), write(m, 6, 5000, &[21212])), now)
            .await
    }
    assert!(reset(&f, "meter-2", NOW).await.allowed);
    assert!(
        !reset(&f, "meter-1", NOW + Duration::minutes(14))
            .await
            .allowed
    );
    assert!(
        reset(&f, "meter-1", NOW + Duration::minutes(15))
            .await
            .allowed
    );
    // A master reset clears peaks too: it restarts the interval.
    let later = NOW + Duration::hours(2);
    assert!(
        f.guard
            .authorize(&req(&uid("ian"), write("meter-3", 6, 5000, &[1115])), later)
            .await
            .allowed
    );
    assert!(
        !reset(&f, "meter-3", later + Duration::minutes(1))
            .await
            .allowed
    );
}

#[tokio::test]
async fn the_peak_demand_slot_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = example_config(dir.path());
    {
        let store = std::sync::Arc::new(metergate::store::Store::open(&config.state_dir).unwrap());
        let guard = metergate::guard::Guard::new(store, &config);
        guard
            .change(
                vec![metergate::store::Op::Put(
                    Entity::User(user_with_role("olga", "Operator", "*")),
                    metergate::store::Expect::New,
                )],
                &PrincipalId::Local("t".into()),
                NOW,
            )
            .unwrap();
        assert!(
            guard
                .authorize(&req(&uid("olga"), write("meter-1", 6, 5000, &[21212])), NOW)
                .await
                .allowed
        );
    }
    let store = std::sync::Arc::new(metergate::store::Store::open(&config.state_dir).unwrap());
    let guard = metergate::guard::Guard::new(store, &config);
    let d = guard
        .authorize(
            &req(&uid("olga"), write("meter-1", 6, 5000, &[21212])),
            NOW + Duration::minutes(5),
        )
        .await;
    assert!(matches!(d.reason, Reason::PeakDemandLockout { .. }), "{d}");
}

#[test]
fn a_change_creating_a_separation_of_duties_conflict_is_refused() {
    let f = cast();
    let put = |e: Entity, version: u64| {
        let op = metergate::store::Op::Put(e, metergate::store::Expect::Version(version));
        f.guard.change(vec![op], &uid("admin"), NOW)
    };
    // sam holds User Management through SecAdmin; adding SecAuditor would
    // give him Security Logs Access too.
    let dir = f.guard.store().directory();
    let mut sam = dir.users["sam"].clone();
    sam.inline.push(Statement::allow_role(
        "SecAuditor",
        vec![MeterSelector::All],
    ));
    let err = put(Entity::User(sam.clone()), sam.version).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("user:sam")
            && text.contains("User Management")
            && text.contains("Security Logs Access"),
        "{text}"
    );
    assert!(
        !f.guard
            .decide(
                &req(
                    &uid("sam"),
                    Action::ReadAudit {
                        what: "tail".into()
                    }
                ),
                NOW
            )
            .allowed
    );
    // Through a group membership: same refusal.
    let err = f.guard.change(
        vec![metergate::store::Op::Put(
            Entity::Group(Group::new("auditors", &["sam"], &[])),
            metergate::store::Expect::New,
        )],
        &uid("admin"),
        NOW,
    );
    assert!(err.is_ok(), "a group without policies gives nothing");
    // Administrator is the break-glass path: exempt.
    let mut alice = f.guard.store().directory().users["alice"].clone();
    alice.inline.push(Statement::allow_role(
        "SecAuditor",
        vec![MeterSelector::All],
    ));
    put(Entity::User(alice.clone()), alice.version).unwrap();
    // Changing a role so that holders would get both is refused too.
    let mut sec_admin = f.guard.store().directory().roles["SecAdmin"].clone();
    sec_admin.permissions.insert(Permission::SecurityLogsAccess);
    let err = put(Entity::Role(sec_admin.clone()), sec_admin.version).unwrap_err();
    assert!(err.to_string().contains("separation of duties"), "{err}");
    // Editing a policy that reaches sam only through his group: refused.
    f.guard
        .change(
            vec![
                metergate::store::Op::Put(
                    Entity::Policy(Policy::new("audit-view", vec![])),
                    metergate::store::Expect::New,
                ),
                metergate::store::Op::Put(
                    Entity::Group({
                        let mut g = f.guard.store().directory().groups["auditors"].clone();
                        g.policies.push("audit-view".into());
                        g
                    }),
                    metergate::store::Expect::Version(1),
                ),
            ],
            &uid("admin"),
            NOW,
        )
        .unwrap();
    let mut policy = f.guard.store().directory().policies["audit-view"].clone();
    policy.statements = vec![Statement::allow_role(
        "SecAuditor",
        vec![MeterSelector::All],
    )];
    let err = put(Entity::Policy(policy.clone()), policy.version).unwrap_err();
    assert!(
        err.to_string().contains("separation of duties") && err.to_string().contains("user:sam"),
        "{err}"
    );
}
