//! No one grants what they do not hold (DESIGN §7), through the core the
//! control socket runs: (caller holding X) × (change conferring Y) → allowed,
//! or refused naming what the caller lacks. Each row starts from the same
//! directory, so one row's change never helps another.

mod common;

use common::gateway::{gateway, run, run_argv};
use common::*;
use metergate::model::*;
use metergate::store::Entity;

/// sam holds SecAdmin (User Management, Certificate Management) everywhere;
/// olga is an Operator; root-admin holds Administrator; the group
/// `auditors` carries a policy granting SecAuditor (Security Logs Access),
/// the group `crews` carries ReadOnly.
fn directory() -> Fixture {
    let f = Fixture::new();
    f.add(vec![
        Entity::User(user_with_role("sam", "SecAdmin", "*")),
        Entity::User(user_with_role("olga", "Operator", "*")),
        Entity::User(user("root-admin", &[ADMINISTRATOR])),
        Entity::ServiceUser({
            let mut s = ServiceUser::new("integration");
            s.policies = vec![ADMINISTRATOR.into()];
            s
        }),
        Entity::Policy(Policy::new(
            "audit-all",
            vec![Statement::allow_role(
                "SecAuditor",
                vec![MeterSelector::All],
            )],
        )),
    ]);
    f.add(vec![
        Entity::Group(Group::new("auditors", &[], &["audit-all"])),
        Entity::Group(Group::new("crews", &[], &[READ_ONLY])),
    ]);
    f
}

/// One row: who runs which words, the exit code and what the answer shows.
type Row = (PrincipalId, Vec<&'static str>, u8, &'static str);

/// Runs each row on a fresh `fixture` (after `prepare`, as the gateway's
/// own console); a refused row must leave the directory as it was.
async fn check_table(fixture: fn() -> Fixture, prepare: &[&str], rows: Vec<Row>) {
    let mut failures = Vec::new();
    for (who, argv, code, needle) in rows {
        let f = fixture();
        let ctx = gateway(&f);
        for line in prepare {
            let r = run(&ctx, &PrincipalId::Local("root".into()), line).await;
            assert_eq!(r.code, 0, "{line}: {r:?}");
        }
        let before = f.guard.directory();
        let r = run_argv(&ctx, &who, &argv).await;
        let line = argv.join(" ");
        if r.code != code || !r.text().contains(needle) {
            failures.push(format!(
                "{who} `{line}`: expected {code} with {needle:?}, got {} {:?}",
                r.code,
                r.text()
            ));
        }
        if code != 0 && *f.guard.directory() != *before {
            failures.push(format!(
                "{who} `{line}` was refused but changed the directory"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A row from words separated by spaces.
fn row(who: PrincipalId, line: &'static str, code: u8, needle: &'static str) -> Row {
    (who, line.split(' ').collect(), code, needle)
}

#[tokio::test]
async fn a_change_confers_only_what_its_caller_holds() {
    let local = PrincipalId::Local("root".into());
    #[rustfmt::skip]
    let table: Vec<(PrincipalId, &'static str, u8, &'static str)> = vec![
        // SecAdmin cannot make itself or anyone else Administrator.
        (uid("sam"), "user attach sam Administrator", 2, "conferring the managed Administrator policy needs the Administrator policy"),
        (uid("sam"), "user attach olga Administrator", 2, "conferring the managed Administrator policy needs the Administrator policy"),
        (uid("sam"), "group attach crews Administrator", 2, "needs the Administrator policy"),
        (uid("sam"), "support grant --until 2026-12-31", 2, "needs the Administrator policy"),
        // ...nor reach the audit log through a group.
        (uid("sam"), "group add-member auditors sam", 2, "would confer Security Logs Access, which you do not hold"),
        (uid("sam"), "group attach crews audit-all", 2, "would confer Security Logs Access"),
        // ...nor add to a role it holds what it does not hold.
        (uid("sam"), "role edit SecAdmin --add master-reset", 2, "would confer Master Reset on meter-"),
        // ...nor hand out meter permissions it lacks.
        (uid("sam"), "user grant-role olga Engineer", 2, "would confer Data View on meter-"),
        (uid("sam"), "user attach olga ReadOnly", 2, "would confer Data View on meter-"),
        // What sam holds, sam may confer.
        (uid("sam"), "user grant-role olga SecAdmin", 0, "allow role SecAdmin"),
        // An Administrator may do each of these...
        (uid("root-admin"), "user attach sam Administrator", 0, "policy Administrator attached to user sam"),
        (uid("root-admin"), "user attach olga Administrator", 0, "attached to user olga"),
        (uid("root-admin"), "group add-member auditors olga", 0, "user olga added to group auditors"),
        (uid("root-admin"), "role edit SecAdmin --add master-reset", 0, "SecAdmin"),
        (uid("root-admin"), "support grant --until 2026-12-31", 0, "support access"),
        // ...but separation of duties holds whoever asks.
        (uid("root-admin"), "group add-member auditors sam", 2, "separation of duties"),
        // The gateway's own console is Administrator (break-glass).
        (local.clone(), "user attach sam Administrator", 0, "attached to user sam"),
        (local.clone(), "user grant-role olga Engineer", 0, "allow role Engineer"),
        (local, "group add-member auditors sam", 2, "separation of duties"),
    ];
    let rows = table
        .into_iter()
        .map(|(who, line, code, needle)| row(who, line, code, needle))
        .collect();
    check_table(directory, &[], rows).await;
}

#[tokio::test]
async fn a_refused_grant_is_logged_as_a_denial_naming_the_permission() {
    let f = directory();
    let ctx = gateway(&f);
    let r = run(&ctx, &uid("sam"), "group add-member auditors sam").await;
    assert_eq!(r.code, 2, "{r:?}");
    let tail = f.guard.store().log().tail(50).unwrap();
    let denial = tail
        .iter()
        .find(|e| e.code == "admin.deny" && e.principal.as_deref() == Some("user:sam"))
        .expect("a denial event");
    assert!(
        denial
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("Security Logs Access")),
        "{denial:?}"
    );
    // The refusal is not also logged as an applied change.
    assert!(
        !tail
            .iter()
            .any(|e| e.code == "admin.change" && e.principal.as_deref() == Some("user:sam")),
        "{tail:?}"
    );
}

/// A credential for someone is all of that someone: whoever holds an SSH key
/// or an access key acts as its principal.
#[tokio::test]
async fn a_credential_is_given_only_for_what_its_giver_holds() {
    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    let admin = uid("root-admin");
    #[rustfmt::skip]
    let table: Vec<Row> = vec![
        (uid("sam"), vec!["user", "add-key", "root-admin", KEY], 2, "a credential or access for a holder of the Administrator policy needs the Administrator policy"),
        (uid("sam"), vec!["user", "add-key", "olga", KEY], 2, "would confer Data View on meter-"),
        (uid("sam"), vec!["service-user", "key", "create", "integration"], 2, "needs the Administrator policy"),
        (uid("sam"), vec!["user", "add-key", "sam", KEY], 0, "key added"),
        (admin.clone(), vec!["user", "add-key", "olga", KEY], 0, "key added"),
        (admin, vec!["service-user", "key", "create", "integration"], 0, "key id: "),
    ];
    check_table(directory, &[], table).await;
}

/// Dormant Administrators (deactivated, lapsed, an ended support grant), a
/// deny group bob (SecAdmin and Engineer) is in, and an Administrator under
/// a deny of Master Reset.
fn dormant() -> Fixture {
    let f = Fixture::new();
    let lapsed = Day::parse("2026-11-01").unwrap();
    let mut sleeper = user("sleeper", &[ADMINISTRATOR]);
    sleeper.status = Status::Inactive;
    let mut gone = user("gone", &[ADMINISTRATOR]);
    gone.end_date = Some(lapsed);
    let mut robot = ServiceUser::new("robot");
    robot.policies = vec![ADMINISTRATOR.into()];
    robot.status = Status::Inactive;
    let mut bob = user_with_role("bob", "SecAdmin", "*");
    bob.inline
        .push(Statement::allow_role("Engineer", vec![MeterSelector::All]));
    let mut capped = user("capped", &[ADMINISTRATOR]);
    capped.inline = vec![statement(
        Effect::Deny,
        &[Permission::MasterReset],
        &[],
        &["*"],
    )];
    f.add(vec![
        Entity::User(sleeper),
        Entity::User(gone),
        Entity::ServiceUser(robot),
        Entity::User(bob),
        Entity::User(capped),
        Entity::User(user_with_role("olga", "Operator", "*")),
        Entity::User(user("root-admin", &[ADMINISTRATOR])),
        Entity::Policy(Policy::new(
            "no-console",
            vec![statement(
                Effect::Deny,
                &[Permission::TerminalAccess],
                &[],
                &["*"],
            )],
        )),
        Entity::Support(SupportAccess::new(lapsed, &[ADMINISTRATOR])),
    ]);
    f.add(vec![Entity::Group(Group::new(
        "contractors",
        &["bob"],
        &["no-console"],
    ))]);
    f
}

/// Bringing access back, lifting a deny, or granting while under a bound
/// or a deny of one's own: each is a grant, checked as one.
#[tokio::test]
async fn access_brought_back_or_a_deny_lifted_is_a_grant_too() {
    #[rustfmt::skip]
    let table: Vec<(PrincipalId, &'static str, u8, &'static str)> = vec![
        (uid("bob"), "user activate sleeper", 2, "needs the Administrator policy"),
        (uid("bob"), "user set-end-date gone none", 2, "needs the Administrator policy"),
        (uid("bob"), "user set-end-date gone 2030-01-01", 2, "needs the Administrator policy"),
        (uid("bob"), "service-user activate robot", 2, "needs the Administrator policy"),
        (uid("bob"), "support update --until 2030-01-01", 2, "needs the Administrator policy"),
        // Where temporary passwords are mailed is a credential: changing an
        // Administrator's email would take over the next one.
        (uid("bob"), "user edit root-admin --email thief@example.org", 2, "needs the Administrator policy"),
        // Even of someone who holds little now: the address outlives it.
        (uid("bob"), "user edit olga --email thief@example.org", 2, "changing another person's email"),
        (uid("bob"), "group remove-member contractors bob", 2, "would confer Terminal Access on meter-"),
        (uid("bob"), "group delete contractors", 2, "would confer Terminal Access on meter-"),
        (uid("bob"), "group detach contractors no-console", 2, "would confer Terminal Access on meter-"),
        // An Administrator under a deny confers nothing the deny withholds.
        (uid("capped"), "user attach olga Administrator", 2, "would confer Master Reset on meter-"),
        (uid("capped"), "user grant-role olga Installer", 2, "would confer Master Reset on meter-"),
        // Support is bounded and time-bound: it never confers Administrator.
        (PrincipalId::Support, "user attach olga Administrator", 2, "needs the Administrator policy"),
        // Shortening access or adding a deny confers nothing.
        (uid("bob"), "user set-end-date olga 2030-01-01", 0, "access end date 2030-01-01"),
        (uid("bob"), "user attach olga no-console", 0, "attached to user olga"),
        // An Administrator holding it all may do each.
        (uid("root-admin"), "user activate sleeper", 0, "user sleeper is ACTIVE"),
        (uid("root-admin"), "user edit olga --email olga@new.example", 0, "user olga updated"),
        (uid("root-admin"), "user set-end-date gone none", 0, "access end date none"),
        (uid("root-admin"), "support update --until 2030-01-01", 0, "support access now ends"),
        (uid("root-admin"), "group remove-member contractors bob", 0, "removed from group contractors"),
    ];
    let (support, others): (Vec<_>, Vec<_>) = table
        .into_iter()
        .map(|(who, line, code, needle)| row(who, line, code, needle))
        .partition(|r| r.0 == PrincipalId::Support);
    check_table(dormant, &[], others).await;
    // Support in force (its grant renewed by the gateway's own console).
    check_table(dormant, &["support update --until 2026-12-31"], support).await;
}

/// Two changes that each pass alone but together grant Master Reset (a role
/// granted, and the role widened) cannot both pass: changes run one at a
/// time, each checked against the directory it applies to.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_halves_of_a_grant_cannot_pass_together() {
    for round in 0..40 {
        let f = Fixture::new();
        f.add(vec![Entity::User(user_with_role("bob", "SecAdmin", "*"))]);
        let ctx = std::sync::Arc::new(gateway(&f));
        let bob = uid("bob");
        let r = run(&ctx, &bob, "role create Empty").await;
        assert_eq!(r.code, 0, "{r:?}");
        // Two tasks on a multi-threaded runtime, as two admin connections.
        let grant = tokio::spawn({
            let (ctx, bob) = (ctx.clone(), bob.clone());
            async move { run(&ctx, &bob, "user grant-role bob Empty").await }
        });
        let widen = tokio::spawn({
            let (ctx, bob) = (ctx.clone(), bob.clone());
            async move { run(&ctx, &bob, "role edit Empty --add master-reset").await }
        });
        let (a, b) = (grant.await.unwrap(), widen.await.unwrap());
        let holds = f
            .guard
            .decide_permission(&bob, Permission::MasterReset, Some("meter-1"), true, NOW)
            .allowed;
        assert!(
            !holds,
            "round {round}: bob granted himself Master Reset: {a:?} {b:?}"
        );
    }
}
