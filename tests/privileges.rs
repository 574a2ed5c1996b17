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

#[tokio::test]
async fn a_change_confers_only_what_its_caller_holds() {
    let local = PrincipalId::Local("root".into());
    #[rustfmt::skip]
    let table: Vec<(PrincipalId, &str, u8, &str)> = vec![
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
    let mut failures = Vec::new();
    for (who, line, code, needle) in table {
        let f = directory();
        let ctx = gateway(&f);
        let r = run(&ctx, &who, line).await;
        if r.code != code || !r.text().contains(needle) {
            failures.push(format!(
                "{who} `{line}`: expected {code} with {needle:?}, got {} {:?}",
                r.code,
                r.text()
            ));
        }
        // A refused grant changed nothing.
        if code != 0 {
            let dir = f.guard.directory();
            let sam = &dir.users["sam"];
            let olga = &dir.users["olga"];
            if !sam.policies.is_empty()
                || !olga.policies.is_empty()
                || olga.inline.len() != 1
                || dir.groups.values().any(|g| !g.members.is_empty())
                || dir.support.is_some()
                || dir.roles["SecAdmin"]
                    .permissions
                    .contains(Permission::MasterReset)
            {
                failures.push(format!(
                    "{who} `{line}` was refused but changed the directory"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
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
    let table: Vec<(PrincipalId, Vec<&str>, u8, &str)> = vec![
        (uid("sam"), vec!["user", "add-key", "root-admin", KEY], 2, "a credential for a holder of the Administrator policy needs the Administrator policy"),
        (uid("sam"), vec!["user", "add-key", "olga", KEY], 2, "would confer Data View on meter-"),
        (uid("sam"), vec!["service-user", "key", "create", "integration"], 2, "needs the Administrator policy"),
        (uid("sam"), vec!["user", "add-key", "sam", KEY], 0, "key added"),
        (admin.clone(), vec!["user", "add-key", "olga", KEY], 0, "key added"),
        (admin, vec!["service-user", "key", "create", "integration"], 0, "key id: "),
    ];
    let mut failures = Vec::new();
    for (who, argv, code, needle) in table {
        let f = directory();
        let ctx = gateway(&f);
        let r = run_argv(&ctx, &who, &argv).await;
        if r.code != code || !r.text().contains(needle) {
            failures.push(format!(
                "{who} `{}`: expected {code} with {needle:?}, got {} {:?}",
                argv.join(" "),
                r.code,
                r.text()
            ));
        }
        if code != 0 {
            let dir = f.guard.directory();
            if dir.users.values().any(|u| !u.ssh_keys.is_empty())
                || dir.service_users.values().any(|s| !s.keys.is_empty())
            {
                failures.push(format!(
                    "{who} `{}` was refused but a credential was stored",
                    argv.join(" ")
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
