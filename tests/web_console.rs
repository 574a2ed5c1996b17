//! The web console in a real browser (Debian's headless Chromium through
//! Selenium) against the demo: logins (temporary password, second factor),
//! users and their policies, deactivation that ends every session, what a
//! viewer is not offered, forged and CSRF-less posts, killed and idle
//! sessions, and the headers of every page. Screenshots of the pages are
//! left in the test's target directory.

#[path = "common/api.rs"]
mod api;
#[path = "common/daemon.rs"]
mod daemon;
#[path = "common/ssh.rs"]
mod ssh;

#[path = "common/console.rs"]
mod console;

use std::process::Command;

use console::{browse, demo, login, ok, steps, with_temporary};
use daemon::free_port;
use serde_json::{Value, json};

#[test]
fn an_administrator_adds_a_user_who_sets_a_password_at_first_login() {
    let g = demo();
    let admin = g.d.demo_password("admin");
    let r = browse(
        g.port,
        &g.ca,
        steps(vec![
            vec![
                json!({"go": "/"}),
                json!({"at": "/login"}),
                json!({"shot": "login"}),
            ],
            login("admin", &admin),
            vec![
                json!({"see": "Settings › Access › Users"}),
                json!({"shot": "users"}),
                json!({"fill": {"name": "nina", "email": "nina@example.org", "first": "Nina"}}),
                json!({"click": "Add user"}),
                json!({"see": "User nina created"}),
                json!({"keep": "temporary", "id": "secret"}),
                json!({"click": "Log out"}),
                json!({"at": "/login"}),
            ],
        ]),
    );
    ok(&r);
    let temporary = r["kept"]["temporary"].as_str().unwrap().to_string();
    let r = browse(
        g.port,
        &g.ca,
        steps(vec![
            login("nina", &temporary),
            vec![
                json!({"at": "/login/new-password"}),
                json!({"shot": "new-password"}),
                json!({"fill": {"new": "short", "repeat": "short"}}),
                json!({"click": "Set password"}),
                json!({"see": "too short"}),
                json!({"fill": {"new": "Copper meadow 4 lantern", "repeat": "Copper meadow 4 lantern"}}),
                json!({"click": "Set password"}),
                // Nina manages nobody: her page is her profile.
                json!({"see": "Signed in as user:nina"}),
                json!({"not_see": "Users"}),
                json!({"shot": "profile"}),
            ],
        ]),
    );
    ok(&r);
    let changed =
        g.d.mg(&[
            "audit",
            "query",
            "--code",
            "password.changed",
            "--door",
            "web",
        ])
        .ok()
        .stdout
        .clone();
    assert!(changed.contains("user:nina"), "{changed}");
    let started =
        g.d.mg(&["audit", "query", "--code", "session.start", "--door", "web"])
            .ok()
            .stdout
            .clone();
    assert!(
        started.contains("user:nina") && started.contains("user:admin"),
        "{started}"
    );
}

#[test]
fn a_policy_is_added_then_deleted_with_a_confirmation_and_each_change_is_an_event() {
    let g = demo();
    let admin = g.d.demo_password("admin");
    let r = browse(
        g.port,
        &g.ca,
        steps(vec![
            login("admin", &admin),
            vec![
                json!({"go": "/users/crew"}),
                json!({"see": "Unique ID"}),
                // The copy button: shown by our script (CSP `script-src
                // 'self'`), which copies or, if the clipboard is refused,
                // selects the id.
                json!({"click": "Copy"}),
                json!({"wait_in": ["#copy-unique-id", "e"]}),
                json!({"keep": "copy", "id": "copy-unique-id"}),
                json!({"select": {"policy": "ReadOnly"}}),
                json!({"click": "Add"}),
                json!({"see": "policy ReadOnly attached"}),
                json!({"shot": "user"}),
                json!({"click": "Delete"}),
                json!({"see": "Are you sure?"}),
                json!({"shot": "confirm"}),
                json!({"click": "Delete"}),
                json!({"see": "policy ReadOnly detached"}),
            ],
        ]),
    );
    ok(&r);
    let copy = r["kept"]["copy"].as_str().unwrap();
    assert!(copy == "Copied" || copy.starts_with("Selected"), "{copy}");
    let changes =
        g.d.mg(&["audit", "query", "--code", "admin.change", "--door", "web"])
            .ok()
            .stdout
            .clone();
    assert!(
        changes.contains("attached") && changes.contains("detached"),
        "{changes}"
    );
    assert!(changes.contains("user:admin"), "{changes}");
}

#[test]
fn deactivation_ends_the_users_ssh_and_browser_sessions() {
    let g = demo();
    let dir = g.d.dir.path();
    let key = dir.join("crew-key");
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .output()
        .expect("ssh-keygen runs");
    assert!(out.status.success());
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    g.d.mg(&["user", "add-key", "crew", public.trim()]).ok();
    let mut held = ssh::hold(g.ssh, &key, "crew");
    let (admin, crew) = (g.d.demo_password("admin"), g.d.demo_password("crew"));
    let r = browse(
        g.port,
        &g.ca,
        steps(vec![
            vec![json!({"browser": "crew"})],
            login("crew", &crew),
            vec![
                json!({"see": "Signed in as user:crew"}),
                json!({"browser": "main"}),
            ],
            login("admin", &admin),
            vec![
                json!({"go": "/sessions"}),
                json!({"see": "web"}),
                json!({"shot": "sessions"}),
                json!({"go": "/users/crew"}),
                json!({"click": "Deactivate"}),
                json!({"see": "INACTIVE"}),
                json!({"browser": "crew"}),
                json!({"go": "/profile"}),
                json!({"at": "/login"}),
                json!({"browser": "main"}),
                json!({"go": "/users/crew"}),
                json!({"click": "Activate"}),
                json!({"see": "ACTIVE"}),
            ],
        ]),
    );
    ok(&r);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while held.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "crew's SSH session was not ended"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    for door in ["web", "ssh"] {
        let ends =
            g.d.mg(&[
                "audit",
                "query",
                "--code",
                "session.end",
                "--principal",
                "crew",
                "--door",
                door,
            ])
            .ok()
            .stdout
            .clone();
        assert!(ends.contains("user deactivated"), "{door}: {ends}");
    }
}

#[test]
fn what_a_person_may_not_do_is_not_offered_and_forged_posts_are_refused() {
    let g = demo();
    // An auditor: Security Logs Access shows the lists, but changes nothing.
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
                json!({"see": "Settings › Access › Users"}),
                json!({"not_see": "Add user"}),
                json!({"go": "/users/crew"}),
                json!({"see": "Unique ID"}),
                json!({"not_see": "Deactivate"}),
                json!({"not_see": "Resend temporary password"}),
                json!({"not_see": "Add to User Group"}),
                json!({"shot": "user-read-only"}),
                // Forged: the admin's form, with audrey's cookie and token.
                json!({"forge": "/users/crew/deactivate", "csrf": "page"}),
                json!({"forge": "/users/crew/deactivate", "csrf": "none"}),
                json!({"forge": "/users/crew/deactivate", "csrf": "wrong"}),
                json!({"forge": "/users", "fields": {"name": "mallory", "email": "m@example.org"}, "csrf": "wrong"}),
            ],
        ]),
    );
    ok(&r);
    let records = r["records"].as_array().unwrap();
    assert_eq!(records[0]["status"], 403, "{}", records[0]);
    assert!(
        records[0]["body"].as_str().unwrap().contains("DENY"),
        "{}",
        records[0]
    );
    for rec in &records[1..] {
        assert_eq!(rec["status"], 403, "{rec}");
        assert!(rec["body"].as_str().unwrap().contains("CSRF"), "{rec}");
    }
    let show = g.d.mg(&["user", "show", "crew"]).ok().stdout.clone();
    assert!(
        show.contains("ACTIVE") && !show.contains("INACTIVE"),
        "{show}"
    );
    assert_eq!(g.d.mg(&["user", "show", "mallory"]).code, 2);
    let denied =
        g.d.mg(&[
            "audit",
            "query",
            "--code",
            "admin.deny",
            "--principal",
            "audrey",
            "--door",
            "web",
        ])
        .ok()
        .stdout
        .clone();
    assert!(denied.contains("user deactivate -- crew"), "{denied}");
}

#[test]
fn a_second_factor_at_login_headers_cookies_and_a_killed_session() {
    let g = demo();
    let admin = g.d.demo_password("admin");
    // The administrator has a factor: the login asks for a code (pyotp's).
    let v: Value = serde_json::from_str(
        &g.d.mg(&["--json", "user", "mfa", "enroll", "admin"])
            .ok()
            .stdout,
    )
    .unwrap();
    let secret = v["secret"].as_str().unwrap().to_string();
    let code = Command::new("python3")
        .args([
            "-c",
            "import pyotp, sys; print(pyotp.TOTP(sys.argv[1]).now())",
            &secret,
        ])
        .output()
        .expect("python3 runs");
    let code = String::from_utf8_lossy(&code.stdout).trim().to_string();
    g.d.mg(&["user", "mfa", "confirm", "admin", &code]).ok();
    let crew = g.d.demo_password("crew");
    let r = browse(
        g.port,
        &g.ca,
        steps(vec![
            vec![json!({"browser": "crew"})],
            login("crew", &crew),
            vec![
                json!({"see": "Signed in as user:crew"}),
                json!({"browser": "main"}),
            ],
            login("admin", &admin),
            vec![
                json!({"at": "/login/code"}),
                json!({"shot": "code"}),
                json!({"fill": {"code": "000000"}}),
                json!({"click": "Continue"}),
                json!({"see": "refused"}),
                json!({"code": secret}),
                json!({"click": "Continue"}),
                json!({"see": "Settings › Access › Users"}),
                json!({"cookies": true}),
                json!({"headers": "/users"}),
                json!({"headers": "/sessions"}),
                json!({"headers": "/profile"}),
                json!({"headers": "/users/crew"}),
                json!({"headers": "/groups"}),
                json!({"headers": "/service-users"}),
                json!({"headers": "/policies"}),
                json!({"headers": "/roles"}),
                json!({"headers": "/support"}),
                json!({"headers": "/audit/live"}),
                // `session kill` from the Sessions page: crew's next click
                // lands on the login page.
                json!({"go": "/sessions"}),
                json!({"click_in_row": ["user:crew", "Kill"]}),
                json!({"see": "ended"}),
                json!({"browser": "crew"}),
                json!({"go": "/profile"}),
                json!({"at": "/login"}),
            ],
        ]),
    );
    ok(&r);
    let records = r["records"].as_array().unwrap();
    let cookies = records[0]["cookies"].as_array().unwrap();
    let session = cookies
        .iter()
        .find(|c| c["name"] == "__Host-mg_session")
        .expect("the session cookie");
    assert_eq!(session["httpOnly"], true, "{session}");
    assert_eq!(session["secure"], true, "{session}");
    assert_eq!(session["sameSite"], "Strict", "{session}");
    for rec in &records[1..] {
        let h = &rec["values"];
        assert_eq!(rec["status"], 200, "{rec}");
        assert!(
            h["content-security-policy"]
                .as_str()
                .unwrap()
                .contains("default-src 'self'"),
            "{rec}"
        );
        assert!(
            !h["content-security-policy"]
                .as_str()
                .unwrap()
                .contains("unsafe"),
            "{rec}"
        );
        assert_eq!(h["x-frame-options"], "DENY", "{rec}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{rec}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{rec}");
        assert!(
            h["strict-transport-security"]
                .as_str()
                .unwrap()
                .starts_with("max-age="),
            "{rec}"
        );
    }
    let logins = g.d.mg(&["audit", "export"]).ok().stdout.clone();
    assert!(
        logins.lines().any(|l| l.contains("login.success")
            && l.contains("\"door\":\"web\"")
            && l.contains("second_factor")),
        "no web login with a second factor in the log"
    );
    let ended =
        g.d.mg(&["audit", "query", "--code", "session.end", "--door", "web"])
            .ok()
            .stdout
            .clone();
    assert!(
        ended.contains("user:crew") && ended.contains("ended by user:admin"),
        "{ended}"
    );
}

#[test]
fn an_idle_browser_session_ends_at_the_ssh_doors_idle_timeout() {
    let ssh = free_port();
    let a = api::api_with(&format!(
        "\n[ssh]\nlisten = [\"127.0.0.1:{ssh}\"]\nidle_timeout = \"2s\"\n"
    ));
    let temporary = with_temporary(&a.d, "ivy");
    let good = "Meadow clock 5 ferry";
    let r = browse(
        a.port,
        &a.ca,
        steps(vec![
            login("ivy", &temporary),
            vec![
                json!({"fill": {"new": good, "repeat": good}}),
                json!({"click": "Set password"}),
                json!({"see": "Signed in as user:ivy"}),
                json!({"wait": 3}),
                json!({"go": "/profile"}),
                json!({"at": "/login"}),
            ],
        ]),
    );
    ok(&r);
    let ended =
        a.d.mg(&["audit", "query", "--code", "session.end", "--door", "web"])
            .ok()
            .stdout
            .clone();
    assert!(ended.contains("user:ivy"), "{ended}");
}

#[test]
fn a_person_enrols_a_factor_and_changes_their_password_on_their_profile() {
    let g = demo();
    let admin = g.d.demo_password("admin");
    let new = "Lantern quarry 8 willow";
    // crew holds no Password Self-Management: no password form.
    let crew = g.d.demo_password("crew");
    let r = browse(
        g.port,
        &g.ca,
        steps(vec![
            login("crew", &crew),
            vec![
                json!({"see": "Second factor"}),
                json!({"not_see": "Change password"}),
            ],
        ]),
    );
    ok(&r);
    let r = browse(
        g.port,
        &g.ca,
        steps(vec![
            login("admin", &admin),
            vec![
                json!({"go": "/profile"}),
                json!({"see": "Second factor"}),
                json!({"click": "Enrol an authenticator app"}),
                json!({"see": "Scan this with an authenticator app"}),
                json!({"shot": "enrol"}),
                json!({"keep": "secret", "id": "secret"}),
                // Confirmed with the code of this step: the login below uses the next.
                json!({"code": "kept:secret", "offset": 0}),
                json!({"click": "Confirm"}),
                json!({"see": "Your second factor is active"}),
                json!({"keep": "recovery", "id": "recovery"}),
                json!({"go": "/profile"}),
                json!({"fill": {"current": "not my password", "new": new, "repeat": new}}),
                json!({"click": "Change password"}),
                json!({"see": "that is not your current password"}),
                json!({"fill": {"current": admin, "new": new, "repeat": new}}),
                json!({"click": "Change password"}),
                json!({"see": "password changed"}),
                json!({"click": "Log out"}),
                json!({"see": "Log in"}),
            ],
            login("admin", new),
            vec![
                json!({"at": "/login/code"}),
                json!({"code": "kept:secret", "offset": 30}),
                json!({"click": "Continue"}),
                json!({"see": "Settings › Access › Users"}),
                json!({"go": "/profile"}),
                json!({"see": "This session gave one"}),
            ],
        ]),
    );
    ok(&r);
    let secret = r["kept"]["secret"].as_str().unwrap();
    assert_eq!(secret.len(), 32, "{secret}");
    assert_eq!(
        r["kept"]["recovery"].as_str().unwrap().lines().count(),
        10,
        "{r}"
    );
    let shown = g.d.mg(&["user", "show", "admin"]).ok().stdout.clone();
    assert!(shown.contains("second factor:    active"), "{shown}");
    for code in ["mfa.enroll", "mfa.confirm", "password.changed"] {
        let e =
            g.d.mg(&["audit", "query", "--code", code, "--door", "web"])
                .ok()
                .stdout
                .clone();
        assert!(e.contains("user:admin"), "{code}: {e}");
    }
    let all = g.d.mg(&["audit", "export"]).ok().stdout.clone();
    assert!(!all.contains(secret), "the secret is in the log");
    assert!(!all.contains(new), "a password is in the log");
}

#[test]
fn browser_sessions_keep_the_ssh_doors_cap_per_person() {
    let g = demo();
    let crew = g.d.demo_password("crew");
    // The demo's cap is the SSH default: 4 live sessions per principal.
    let r = browse(
        g.port,
        &g.ca,
        json!([{"logins": {"user": "crew", "password": crew, "times": 5}}]),
    );
    ok(&r);
    let answers = r["records"][0]["logins"].as_array().unwrap();
    for a in &answers[..4] {
        assert_eq!(a["status"], 303, "{a}");
    }
    assert_eq!(answers[4]["status"], 429, "{}", answers[4]);
    assert!(
        answers[4]["body"]
            .as_str()
            .unwrap()
            .contains("4 live sessions"),
        "{}",
        answers[4]
    );
    let refused =
        g.d.mg(&[
            "audit",
            "query",
            "--code",
            "session.refused",
            "--door",
            "web",
        ])
        .ok()
        .stdout
        .clone();
    assert!(refused.contains("user:crew"), "{refused}");
}

#[test]
fn where_the_gateway_requires_a_factor_a_browser_session_steps_up() {
    let g = demo();
    g.d.reload_with(|text| format!("{text}\n[mfa]\nrequired = \"for-privileged\"\n"));
    let admin = g.d.demo_password("admin");
    let r = browse(
        g.port,
        &g.ca,
        steps(vec![
            login("admin", &admin),
            vec![
                // Viewing needs no factor (Security Logs Access); changing
                // (User Management) does: the buttons are not offered.
                json!({"go": "/users/crew"}),
                json!({"see": "Unique ID"}),
                json!({"not_see": "Deactivate"}),
                // A forged change is refused with the reason and a prompt.
                json!({"forge": "/users/crew/deactivate", "csrf": "page"}),
                json!({"go": "/profile"}),
                json!({"click": "Enrol an authenticator app"}),
                json!({"see": "Scan this with an authenticator app"}),
                json!({"keep": "secret", "id": "secret"}),
                json!({"code": "kept:secret", "offset": 0}),
                json!({"click": "Confirm"}),
                json!({"see": "Your second factor is active"}),
                // Confirming is not stepping up.
                json!({"go": "/users/crew"}),
                json!({"not_see": "Deactivate"}),
                json!({"go": "/profile"}),
                json!({"code": "kept:secret", "offset": 30}),
                json!({"click": "Step up"}),
                json!({"see": "second factor accepted"}),
                json!({"go": "/users/crew"}),
                json!({"see": "Deactivate"}),
            ],
        ]),
    );
    ok(&r);
    let forged = &r["records"][0];
    assert_eq!(forged["status"], 403, "{forged}");
    let body = forged["body"].as_str().unwrap();
    assert!(
        body.contains("needs a second factor") && body.contains("Step up"),
        "{forged}"
    );
    let up =
        g.d.mg(&["audit", "query", "--code", "mfa.step-up", "--door", "web"])
            .ok()
            .stdout
            .clone();
    assert!(up.contains("user:admin"), "{up}");
}

#[test]
fn the_audit_page_check_and_review() {
    let g = demo();
    let admin = g.d.demo_password("admin");
    g.d.mg(&["user", "deactivate", "viewer"]).ok();
    let r = browse(
        g.port,
        &g.ca,
        steps(vec![
            login("admin", &admin),
            vec![
                json!({"go": "/audit"}),
                json!({"see": "Chain: ok:"}),
                // The next load checks only what came since, continuing
                // from the head the first walked to.
                json!({"go": "/audit"}),
                json!({"see": "continued from seq"}),
                json!({"click": "Verify the whole chain and the recordings now"}),
                json!({"see": "events verified (seq 1.."}),
                json!({"fill": {"code": "admin.change"}}),
                json!({"click": "Filter"}),
                json!({"see": "deactivated user viewer"}),
                json!({"shot": "audit"}),
                json!({"fetch": "/audit/export?format=cef"}),
                json!({"fetch": "/audit/export?format=jsonl"}),
                json!({"go": "/check"}),
                json!({"fill": {"principal": "user:crew", "meter": "meter-1"}}),
                json!({"select": {"permission": "Master Reset"}}),
                json!({"click": "Ask the guard"}),
                json!({"see": "DENY Master Reset"}),
                json!({"shot": "check"}),
                json!({"go": "/review"}),
                json!({"see": "WHO CAN DO WHAT WHERE"}),
                json!({"click": "Record that the review was done"}),
                json!({"see": "review recorded"}),
            ],
        ]),
    );
    ok(&r);
    let cef = &r["records"][0];
    assert_eq!(cef["status"], 200, "{cef}");
    assert!(cef["body"].as_str().unwrap().starts_with("CEF:0|"), "{cef}");
    assert!(
        cef["values"]["content-disposition"]
            .as_str()
            .unwrap()
            .contains("attachment"),
        "{cef}"
    );
    let jsonl = &r["records"][1];
    let first: Value =
        serde_json::from_str(jsonl["body"].as_str().unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(first["seq"], 1, "{jsonl}");
    let acked =
        g.d.mg(&["audit", "query", "--code", "admin.change", "--door", "web"])
            .ok()
            .stdout
            .clone();
    assert!(acked.contains("review acknowledged"), "{acked}");
}

#[test]
fn a_recording_plays_in_the_browser_for_security_logs_access_only() {
    let g = demo();
    // crew's exec session, recorded.
    let key = ssh::keygen(g.d.dir.path(), "crew");
    g.d.mg(&["user", "add-key", "crew", &ssh::public_line(&key)])
        .ok();
    let r = ssh::ssh(g.ssh, &key, "crew", &[], "whoami");
    assert_eq!(r.code, 0, "{r:?}");
    let id = {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let out =
                g.d.mg(&["--json", "session", "recordings"])
                    .ok()
                    .stdout
                    .clone();
            let all: Vec<Value> = serde_json::from_str(out.trim()).unwrap();
            if let Some(r) = all
                .iter()
                .find(|r| r["principal"] == "user:crew" && r["state"] == "ended")
            {
                break r["id"].as_str().unwrap().to_string();
            }
            assert!(std::time::Instant::now() < deadline, "{all:?}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    let player = format!("/recordings/{id}");
    let r = browse(
        g.port,
        &g.ca,
        steps(vec![
            login("admin", &g.d.demo_password("admin")),
            vec![
                json!({"go": "/recordings"}),
                json!({"see": "user:crew"}),
                json!({"shot": "recordings"}),
                json!({"click": "Play"}),
                // The vendored player draws the terminal and plays it.
                json!({"element": ".ap-player"}),
                json!({"see": "principal:  user:crew"}),
                json!({"shot": "player"}),
                json!({"console_errors": true}),
                json!({"headers": player}),
                json!({"fetch": format!("{player}/cast")}),
            ],
            vec![json!({"browser": "viewer"})],
            login("viewer", &g.d.demo_password("viewer")),
            vec![
                json!({"not_see": "Recordings"}),
                json!({"go": "/recordings"}),
                json!({"see": "DENY"}),
                json!({"fetch": format!("{player}/cast")}),
            ],
        ]),
    );
    ok(&r);
    let records = r["records"].as_array().unwrap();
    // No script refused, nothing failed to load (Chromium's own favicon
    // probe aside).
    let errors: Vec<&Value> = records[0]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| !e.as_str().unwrap_or("").contains("/favicon.ico"))
        .collect();
    assert!(errors.is_empty(), "{records:?}");
    let csp = records[1]["values"]["content-security-policy"]
        .as_str()
        .unwrap();
    assert!(
        csp.contains("script-src 'self' 'wasm-unsafe-eval'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(records[2]["status"], 200, "{records:?}");
    assert!(
        records[2]["body"]
            .as_str()
            .unwrap()
            .starts_with("{\"version\":2"),
        "{records:?}"
    );
    // The viewer (no Security Logs Access) gets neither page nor file.
    assert_eq!(records[3]["status"], 403, "{records:?}");
    // The admin's read is an event of door web.
    let reads =
        g.d.mg(&[
            "audit",
            "query",
            "--code",
            "recording.read",
            "--door",
            "web",
        ])
        .ok()
        .stdout
        .clone();
    assert!(reads.contains("user:admin"), "{reads}");
}
