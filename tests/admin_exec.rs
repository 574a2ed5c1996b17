//! Who may run which admin command (DESIGN §3's table), for principals that
//! cannot reach the control socket themselves: service users (API calls need
//! Administrator) and users without the permission.

mod common;

use common::gateway::{gateway, run_input as run};
use common::*;
use metergate::commands::{Gateway, Input};
use metergate::model::*;
use metergate::store::Entity;

fn ctx() -> (Fixture, Gateway) {
    let f = Fixture::new();
    let mut svc_admin = ServiceUser::new("integration");
    svc_admin.policies = vec![ADMINISTRATOR.into()];
    let mut svc_um = ServiceUser::new("provisioner");
    svc_um.inline = vec![Statement::allow_role("SecAdmin", vec![MeterSelector::All])];
    f.add(vec![
        Entity::ServiceUser(svc_admin),
        Entity::ServiceUser(svc_um),
        Entity::User(user_with_role("sam", "SecAdmin", "*")),
        Entity::User(user_with_role("aud", "SecAuditor", "*")),
        Entity::User(user_with_role("olga", "Operator", "*")),
        Entity::User(user("root-admin", &[ADMINISTRATOR])),
    ]);
    let ctx = gateway(&f);
    (f, ctx)
}

#[tokio::test]
async fn who_may_run_which_admin_command() {
    let (_f, ctx) = ctx();
    let svc = |n: &str| PrincipalId::Service(n.into());
    #[rustfmt::skip]
    let table: Vec<(PrincipalId, &str, u8, &str)> = vec![
        // Service users: an admin command is an API call, Administrator only.
        (svc("provisioner"), "user list", 2, "error: DENY: an API call (admin command) by a service user needs the Administrator policy"),
        (svc("provisioner"), "group add g1", 2, "needs the Administrator policy"),
        (svc("integration"), "group add g2", 0, "group g2 created"),
        // User Management changes; Security Logs Access only views.
        (uid("sam"), "group add g3", 0, "group g3 created"),
        (uid("aud"), "group add g4", 2, "error: DENY: no statement allows it"),
        (uid("aud"), "user list", 0, "NAME"),
        (uid("aud"), "review", 0, "WHO CAN DO WHAT WHERE"),
        // Its one line is the event of this very read, logged before the answer.
        (uid("aud"), "audit tail -n 1", 0, "read-audit.allow Allow user:aud audit tail -n 1: allowed"),
        (uid("sam"), "audit tail -n 1", 2, "error: DENY"),
        (uid("olga"), "user list", 2, "error: DENY: no statement allows it"),
        // Re-issuing a temporary password needs Administrator, not just UM.
        (uid("sam"), "user resend-password olga", 2, "needs the Administrator policy"),
        (uid("root-admin"), "user resend-password olga", 0, "temporary password: "),
        // Anyone let in may edit their own names (and nothing else).
        (uid("olga"), "user edit olga --first Olga", 0, "user olga updated"),
        (uid("olga"), "user edit olga --email o@example.net", 2, "error: DENY"),
        (uid("olga"), "user edit sam --first Samuel", 2, "error: DENY"),
    ];
    let mut failures = Vec::new();
    for (who, line, code, needle) in table {
        let req = Input {
            argv: line.split(' ').map(String::from).collect(),
            json: false,
            files: Default::default(),
            precondition: None,
        };
        let r = run(&ctx, &who, &req).await;
        let text = format!("{}{}", r.stdout, r.stderr);
        if r.code != code || !text.contains(needle) {
            failures.push(format!(
                "{who} `{line}`: expected {code} with {needle:?}, got {} {text:?}",
                r.code
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Every refusal and every change left an event naming the caller.
    let tail = ctx.guard.store().log().tail(200).unwrap();
    assert!(
        tail.iter()
            .any(|e| e.code == "admin.deny" && e.principal.as_deref() == Some("svc:provisioner"))
    );
    assert!(tail.iter().any(|e| e.code == "admin.change"
        && e.principal.as_deref() == Some("user:sam")
        && e.reason.as_deref() == Some("created group g3")));
}

#[tokio::test]
async fn deactivating_a_user_ends_their_live_sessions() {
    let (_f, ctx) = ctx();
    let olga = uid("olga");
    let session = ctx.sessions.register(&olga, "10.0.0.7", "ssh", None, 0);
    let mut ended = session.ended.clone();
    let req = Input {
        argv: ["user", "deactivate", "olga"].map(String::from).to_vec(),
        json: false,
        files: Default::default(),
        precondition: None,
    };
    let r = run(&ctx, &PrincipalId::Local("root".into()), &req).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("1 live sessions ended"), "{r:?}");
    tokio::time::timeout(std::time::Duration::from_secs(5), ended.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ended.borrow().as_deref(), Some("user deactivated"));
}

/// Editing a policy gives its new allows to everyone holding it: only one
/// who holds them may (no one grants what they do not hold, issue 19's
/// `policy edit`).
#[tokio::test]
async fn a_policy_edit_confers_only_what_the_editor_holds() {
    let (f, ctx) = ctx();
    f.add(vec![Entity::Policy(Policy::new(
        "readers",
        vec![Statement {
            effect: Effect::Allow,
            permissions: vec![Permission::DataView],
            roles: vec![],
            meters: vec![MeterSelector::All],
            require_mfa: false,
            require_recording: false,
        }],
    ))]);
    let edit = Input {
        argv: ["policy", "edit", "readers", "--file", "p.toml"]
            .map(String::from)
            .to_vec(),
        json: false,
        files: [(
            "p.toml".to_string(),
            "name = \"readers\"\n[[statement]]\neffect = \"allow\"\npermissions = [\"Data View\", \"Master Reset\"]\n"
                .to_string(),
        )]
        .into_iter()
        .collect(),
        precondition: None,
    };
    // (who) → exit code, words: sam manages users but holds no meter
    // permission, so he may not hand any out through a policy.
    for (who, code, words) in [
        ("sam", 2, "error: DENY: the change would confer"),
        ("root-admin", 0, "version 2"),
    ] {
        let r = run(&ctx, &uid(who), &edit).await;
        assert_eq!(r.code, code, "{who}: {r:?}");
        assert!(
            format!("{}{}", r.stdout, r.stderr).contains(words),
            "{who}: {r:?}"
        );
    }
}
