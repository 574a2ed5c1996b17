//! Settings › Access in a real browser (Debian's headless Chromium through
//! Selenium) against the demo: Support Access granted to tomorrow with the
//! default Administrator policy and revoked; user groups, service users and
//! their access keys, roles as 18 checkboxes, and a custom policy made and
//! edited with the statement editor; and what an auditor is not offered,
//! with forged posts refused by the guard. Each change is checked in the
//! core afterwards, not on the page alone.

#[path = "common/daemon.rs"]
mod daemon;

#[path = "common/console.rs"]
mod console;

use console::{browse, demo, login, ok, steps, with_temporary};
use serde_json::{Value, json};

fn tomorrow() -> String {
    (time::OffsetDateTime::now_utc().date() + time::Duration::days(1)).to_string()
}

fn shown(g: &console::Demo, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&g.d.mg(&all).ok().stdout).unwrap()
}

#[test]
fn support_access_is_granted_until_tomorrow_with_administrator_then_revoked() {
    let g = demo();
    let admin = g.d.demo_password("admin");
    let day = tomorrow();
    let r = browse(
        g.port,
        &g.ca,
        steps(vec![
            login("admin", &admin),
            vec![
                json!({"go": "/support"}),
                json!({"see": "Support access is not granted"}),
                json!({"keep": "before", "id": "support-status"}),
                json!({"attr": ["input[name='until']", "min"]}),
                json!({"attr": ["input[name='until']", "type"]}),
                json!({"attr": ["select[name='policy'] option[selected]", "value"]}),
                json!({"shot": "support"}),
                json!({"click": "Grant support access"}),
                json!({"see": format!("Support access ends at 00:00 UTC on {day}")}),
                json!({"keep": "granted", "id": "support-status"}),
                json!({"shot": "support-granted"}),
                json!({"click": "Revoke support access"}),
                json!({"see": "Are you sure?"}),
                json!({"click": "Revoke"}),
                json!({"see": "Support access is not granted"}),
                json!({"keep": "revoked", "id": "support-status"}),
                // The Audit page shows the change.
                json!({"go": "/audit?door=web&code=admin.change"}),
                json!({"see": format!("granted support access until {day} with Administrator")}),
            ],
        ]),
    );
    ok(&r);
    let kept = &r["kept"];
    assert_eq!(kept["before"], "INACTIVE", "{kept}");
    assert_eq!(kept["granted"], "ACTIVE", "{kept}");
    assert_eq!(kept["revoked"], "INACTIVE", "{kept}");
    let records = r["records"].as_array().unwrap();
    // A date picker whose earliest date is tomorrow; Administrator picked.
    assert_eq!(records[0]["value"], day.as_str(), "{}", records[0]);
    assert_eq!(records[1]["value"], "date", "{}", records[1]);
    assert_eq!(records[2]["value"], "Administrator", "{}", records[2]);
    assert_eq!(shown(&g, &["support", "show"])["granted"], false);
    let changes =
        g.d.mg(&["audit", "query", "--door", "web", "--principal", "admin"]);
    let changes = &changes.ok().stdout;
    assert!(
        changes.contains(&format!(
            "support grant --until={day} --policy=Administrator"
        )),
        "{changes}"
    );
    assert!(changes.contains("support revoke"), "{changes}");
}

#[test]
fn groups_service_users_roles_and_a_policy_from_the_statement_editor() {
    let g = demo();
    let admin = g.d.demo_password("admin");
    let r = browse(
        g.port,
        &g.ca,
        steps(vec![
            login("admin", &admin),
            // User Groups: create, a member, a policy, rename, delete.
            vec![
                json!({"go": "/groups"}),
                json!({"see": "Settings › Access › User Groups"}),
                json!({"fill": {"name": "ops-north"}}),
                json!({"click": "Create"}),
                json!({"see": "User group ops-north"}),
                json!({"fill": {"user": "crew"}}),
                json!({"click": "Add member"}),
                json!({"see": "added to group ops-north"}),
                json!({"select": {"policy": "ReadOnly"}}),
                json!({"click": "Add"}),
                json!({"see": "attached"}),
                json!({"shot": "group"}),
                json!({"fill": {"new_name": "ops-south"}}),
                json!({"click": "Rename"}),
                json!({"see": "User group ops-south"}),
            ],
            // Service Users: create, a key whose secret is shown once.
            vec![
                json!({"go": "/service-users"}),
                json!({"fill": {"name": "meter-reader", "description": "reads meters"}}),
                json!({"click": "Create"}),
                json!({"see": "Service user meter-reader"}),
                json!({"click": "Generate access key"}),
                json!({"see": "shown this once"}),
                json!({"keep": "secret", "id": "secret"}),
                json!({"go": "/service-users/meter-reader"}),
                json!({"see": "ACTIVE"}),
                json!({"not_see": "kept"}),
                json!({"shot": "service-user"}),
            ],
            // Roles: a new one from checkboxes, then one box moved.
            vec![
                json!({"go": "/roles"}),
                json!({"see": "Front Panel Restart"}),
                json!({"fill": {"name": "Reader"}}),
                json!({"tick": "form[action='/roles'] input[name='Data_View']"}),
                json!({"click": "Create role"}),
                json!({"see": "Save Reader"}),
                json!({"tick": "form[action='/roles/Reader'] input[name='Data_View']"}),
                json!({"tick": "form[action='/roles/Reader'] input[name='Time_Synchronization']"}),
                json!({"click": "Save Reader"}),
                json!({"see": "role Reader updated"}),
                json!({"shot": "roles"}),
                // Changed meanwhile elsewhere: this page is stale, and its
                // save must not undo that change.
                json!({"run": [daemon::BIN, "--socket", g.d.socket, "role", "edit", "Reader", "--add", "Comm Config"]}),
                json!({"tick": "form[action='/roles/Reader'] input[name='Front_Panel_Config']"}),
                json!({"click": "Save Reader"}),
                json!({"see": "read it again"}),
            ],
            // The statement editor: a statement with nothing picked is
            // refused with the reason, and what was typed stays.
            vec![
                json!({"go": "/policies"}),
                json!({"see": "Administrator"}),
                json!({"click": "Create custom policy"}),
                json!({"element": "form.editor"}),
                json!({"fill": {"name": "north-readers", "description": "north, read only"}}),
                json!({"select": {"s0.effect": "allow"}}),
                json!({"click": "Save policy"}),
                json!({"see": "error:"}),
                json!({"attr": ["input[name='name']", "value"]}),
                json!({"tick": "input[name='s0.role'][value='Reader']"}),
                json!({"tick": "input[name='s0.permission'][value='Data View']"}),
                json!({"fill": {"s0.meters": "meter-1 meter-2"}}),
                json!({"shot": "policy-editor"}),
                json!({"click": "Save policy"}),
                json!({"see": "policy north-readers created"}),
                json!({"see": "meter-1 meter-2"}),
                json!({"click": "Edit"}),
                json!({"element": "form.editor"}),
                json!({"select": {"s1.effect": "deny"}}),
                json!({"tick": "input[name='s1.permission'][value='Time Synchronization']"}),
                // Meters left blank: refused, never "every meter".
                json!({"click": "Save policy"}),
                json!({"see": "`meters` is empty"}),
                json!({"fill": {"s1.meters": "*"}}),
                json!({"click": "Save policy"}),
                json!({"see": "policy north-readers saved"}),
                json!({"see": "DENY"}),
                json!({"shot": "policy"}),
            ],
        ]),
    );
    ok(&r);
    let records = r["records"].as_array().unwrap();
    assert_eq!(records[0]["code"], 0, "{}", records[0]);
    // The typed name survived the refused save.
    assert_eq!(records[1]["value"], "north-readers", "{records:?}");
    let group = shown(&g, &["group", "show", "ops-south"]);
    assert_eq!(group["members"], json!(["crew"]), "{group}");
    assert_eq!(group["policies"], json!(["ReadOnly"]), "{group}");
    let keys = shown(&g, &["service-user", "key", "list", "meter-reader"]);
    assert_eq!(keys.as_array().map(Vec::len), Some(1), "{keys}");
    let secret = r["kept"]["secret"].as_str().unwrap();
    assert!(secret.len() >= 20, "{secret}");
    let role = shown(&g, &["role", "show", "Reader"]);
    assert_eq!(
        role["permissions"],
        json!([
            {"permission": "Time Synchronization", "enforceable_at_gateway": true},
            {"permission": "Comm Config", "enforceable_at_gateway": true}
        ]),
        "{role}"
    );
    let policy = shown(&g, &["policy", "show", "north-readers"]);
    let st = &policy["statements"];
    assert_eq!(st[0]["effect"], "allow", "{policy}");
    assert_eq!(st[0]["roles"], json!(["Reader"]), "{policy}");
    assert_eq!(st[0]["permissions"], json!(["Data View"]), "{policy}");
    assert_eq!(st[0]["meters"], json!(["meter-1", "meter-2"]), "{policy}");
    assert_eq!(st[1]["effect"], "deny", "{policy}");
    assert_eq!(
        st[1]["permissions"],
        json!(["Time Synchronization"]),
        "{policy}"
    );
    assert_eq!(policy["version"], 2, "{policy}");

    // Deleting asks first, then it is gone.
    let r = browse(
        g.port,
        &g.ca,
        steps(vec![
            login("admin", &admin),
            vec![
                json!({"go": "/groups/ops-south"}),
                json!({"click": "Delete user group"}),
                json!({"see": "Are you sure?"}),
                json!({"click": "Delete"}),
                // Each deletion lands before the next page is asked for.
                json!({"see": "group ops-south deleted"}),
                json!({"go": "/service-users/meter-reader"}),
                json!({"click": "Delete service user"}),
                json!({"see": "Are you sure?"}),
                json!({"click": "Delete"}),
                json!({"see": "service user meter-reader deleted"}),
                json!({"go": "/policies/north-readers"}),
                json!({"click": "Delete policy"}),
                json!({"see": "Are you sure?"}),
                json!({"click": "Delete"}),
                json!({"see": "Settings › Access › Permission Policies"}),
            ],
        ]),
    );
    ok(&r);
    for gone in [
        vec!["group", "show", "ops-south"],
        vec!["service-user", "show", "meter-reader"],
        vec!["policy", "show", "north-readers"],
    ] {
        assert_eq!(g.d.mg(&gone).code, 2, "{gone:?} is still there");
    }
}

#[test]
fn an_auditor_is_offered_no_change_and_forged_ones_are_refused_by_the_guard() {
    let g = demo();
    let temporary = with_temporary(&g.d, "audrey");
    g.d.mg(&["user", "grant-role", "audrey", "SecAuditor"]).ok();
    let good = "Harbour lights 7 quietly";
    let r = browse(
        g.port,
        &g.ca,
        steps(vec![
            login("audrey", &temporary),
            vec![
                json!({"fill": {"new": good, "repeat": good}}),
                json!({"click": "Set password"}),
                // The new password is set before the next page is asked for.
                json!({"element": "form.logout"}),
                json!({"go": "/groups"}),
                json!({"see": "Settings › Access › User Groups"}),
                json!({"not_see": "Create user group"}),
                json!({"go": "/service-users"}),
                json!({"see": "provisioner"}),
                json!({"not_see": "Create service user"}),
                json!({"go": "/service-users/provisioner"}),
                json!({"not_see": "Generate access key"}),
                json!({"go": "/roles"}),
                json!({"see": "Front Panel Restart"}),
                json!({"not_see": "Save Viewer"}),
                json!({"not_see": "Create role"}),
                json!({"go": "/policies"}),
                json!({"not_see": "Create custom policy"}),
                json!({"go": "/support"}),
                json!({"see": "Support access is not granted"}),
                json!({"not_see": "Grant support access"}),
                // Forged: the forms an administrator would get, with
                // audrey's own cookie and CSRF token.
                json!({"forge": "/support/grant", "fields": {"until": tomorrow(), "policy": "Administrator"}}),
                json!({"forge": "/roles/SecAuditor", "fields": {"Data_View": "on", "Master_Reset": "on", "Security_Logs_Access": "on"}}),
                json!({"forge": "/policies", "fields": {"name": "mine", "s0.effect": "allow", "s0.permission": "Master Reset"}}),
                json!({"forge": "/groups", "fields": {"name": "evil"}}),
                json!({"forge": "/service-users/provisioner/key-create"}),
            ],
        ]),
    );
    ok(&r);
    for rec in r["records"].as_array().unwrap() {
        assert_eq!(rec["status"], 403, "{rec}");
        assert!(rec["body"].as_str().unwrap().contains("DENY"), "{rec}");
    }
    assert_eq!(shown(&g, &["support", "show"])["granted"], false);
    let role = shown(&g, &["role", "show", "SecAuditor"]);
    assert!(!role.to_string().contains("Master Reset"), "{role}");
    assert_eq!(g.d.mg(&["policy", "show", "mine"]).code, 2);
    assert_eq!(g.d.mg(&["group", "show", "evil"]).code, 2);
    let keys = shown(&g, &["service-user", "key", "list", "provisioner"]);
    assert_eq!(keys.as_array().map(Vec::len), Some(1), "{keys}");
    let denied = g.d.mg(&[
        "audit",
        "query",
        "--code",
        "admin.deny",
        "--principal",
        "audrey",
        "--door",
        "web",
    ]);
    let denied = &denied.ok().stdout;
    for what in [
        "support grant",
        "role edit",
        "policy create",
        "group add",
        "key create",
    ] {
        assert!(denied.contains(what), "{what}: {denied}");
    }
}

#[test]
fn the_access_lists_search_and_page_by_name() {
    let g = demo();
    for i in 0..55 {
        g.d.mg(&["group", "add", &format!("g{i:02}")]).ok();
    }
    let admin = g.d.demo_password("admin");
    let r = browse(
        g.port,
        &g.ca,
        steps(vec![
            login("admin", &admin),
            vec![
                json!({"go": "/groups"}),
                json!({"see": "50 of 55 user groups"}),
                json!({"not_see": "g50"}),
                json!({"click": "Next page"}),
                json!({"see": "5 of 55 user groups"}),
                json!({"see": "g54"}),
                json!({"not_see": "g49"}),
                json!({"go": "/groups"}),
                json!({"fill": {"q": "g1"}}),
                json!({"click": "Search"}),
                json!({"see": "10 of 10 user groups"}),
                json!({"go": "/policies?q=admin"}),
                json!({"see": "1 of 1 policies"}),
                json!({"go": "/service-users?q=scada"}),
                json!({"see": "2 of 2 service users"}),
            ],
        ]),
    );
    ok(&r);
}

/// With `[mail]` and no printing, the console says where the temporary
/// password went, never what it is; the message is in the outbox.
#[test]
fn with_mail_the_console_says_where_the_password_went() {
    let mut g = demo();
    let admin = g.d.demo_password("admin");
    let text = std::fs::read_to_string(&g.d.config).unwrap().replace(
        "print_temporary_password = true",
        "print_temporary_password = false",
    );
    std::fs::write(&g.d.config, text).unwrap();
    g.d.restart(None);
    let outbox = g.d.config.with_file_name("mail");
    let count = || std::fs::read_dir(&outbox).map(|r| r.count()).unwrap_or(0);
    let before = count();
    let r = browse(
        g.port,
        &g.ca,
        steps(vec![
            login("admin", &admin),
            vec![
                json!({"go": "/users"}),
                json!({"fill": {"name": "mia", "email": "mia@example.org"}}),
                json!({"click": "Add user"}),
                json!({"see": "User mia created: the temporary password was sent by mail to mia@example.org"}),
                json!({"not_see": "It is shown only now"}),
                json!({"click": "Resend temporary password"}),
                json!({"see": "New temporary password for mia: the temporary password was sent by mail to mia@example.org"}),
                json!({"console_errors": true}),
            ],
        ]),
    );
    ok(&r);
    assert_eq!(count(), before + 2, "two messages in {outbox:?}");
}
