//! The gateway shell on the demo (its meters, consoles and users), driven by
//! OpenSSH's `ssh` and paramiko: meter commands as the caller's roles allow,
//! the interactive shell with a pty, console pass-through with pinned host
//! keys and meter-side accounts, passwd and profile, access keys, support
//! access, and credentials whose removal ends their sessions.

#[path = "common/daemon.rs"]
mod daemon;
#[path = "common/site.rs"]
mod site;
#[path = "common/ssh.rs"]
mod ssh;

use site::Site;
use ssh::*;

#[test]
fn meter_commands_follow_the_callers_roles() {
    let s = Site::start();
    // (who, command) -> (exit status, what stdout or stderr shows)
    let table: &[(&str, &str, i32, &str)] = &[
        ("crew", "read meter-1 3000 3", 0, "3000 "),
        ("crew", "read meter-1 3000 3", 0, "3002 "),
        (
            "crew",
            "master-reset meter-1",
            1,
            "DENY: Master Reset on meter-1",
        ),
        (
            "crew",
            "reset-peak-demand meter-1",
            0,
            "reset-peak-demand meter-1: done",
        ),
        ("crew", "sync-time meter-2", 0, "sync-time meter-2: done"),
        (
            "crew",
            "test-mode meter-1 on",
            1,
            "DENY: Test Mode Toggle on meter-1",
        ),
        ("crew", "read meter-3 3000", 1, "DENY: Data View on meter-3"),
        ("crew", "read meter-1 4000", 1, "DENY: "),
        (
            "crew",
            "read meter-1 3000 500",
            2,
            "usage: read METER REGISTER",
        ),
        ("crew", "meters", 0, "meter-2  site=north"),
        ("crew", "whoami", 0, "roles:      Operator"),
        ("crew", "whoami", 0, "meter-1: Data View, Peak Demand Reset"),
        ("crew", "user list", 1, "DENY: "),
        (
            "viewer",
            "reset-peak-demand meter-2",
            1,
            "DENY: Peak Demand Reset on meter-2",
        ),
        ("viewer", "read meter-3 3100", 0, "3100 "),
        (
            "admin",
            "test-mode meter-1 on",
            0,
            "test-mode meter-1 on: done",
        ),
        (
            "admin",
            "test-mode meter-1 maybe",
            2,
            "`test-mode` takes off|on",
        ),
        ("admin", "master-reset meter-3", 0, "done"),
        ("admin", "whoami", 0, "not enforceable here (physical"),
        ("admin", "read meter-1", 2, "usage: read"),
        ("admin", "launch meter-1", 2, "unknown command `launch`"),
    ];
    for (who, command, code, shows) in table {
        let r = s.ssh(who, command);
        assert_eq!(r.code, *code, "{who} `{command}`: {r:?}");
        assert!(
            r.stdout.contains(shows) || r.stderr.contains(shows),
            "{who} `{command}` should show {shows:?}: {r:?}"
        );
    }
    // crew reaches only the northern meters.
    let meters = s.ssh("crew", "meters").stdout;
    assert!(!meters.contains("meter-3"), "{meters}");
    // The denied write is in the log with the permission it lacked.
    let denied = s.events("write-registers.deny");
    assert!(
        denied.contains("user:crew") && denied.contains("values [1115]"),
        "{denied}"
    );
}

#[test]
fn the_interactive_shell_edits_lines_keeps_history_and_bridges_the_console() {
    let s = Site::start();
    let password = s.d.demo_password("crew");
    let r = shell(
        s.port,
        "crew",
        &password,
        &[
            "expect:user:crew@metergate> ",
            // A typo erased with Backspace, then Enter.
            "type:reax\\x7fd meter-1 3000\\r",
            "expect:3000 ",
            // Up arrow brings the line back.
            "type:\\x1b[A\\r",
            "expect:3000 ",
            // Ctrl-C drops a half-typed line.
            "type:master-reset meter-1\\x03",
            "expect:^C",
            "send:connect meter-1",
            "expect:meter-1:operator> ",
            "send:whoami",
            "expect:operator",
            "send:size",
            "expect:80x24",
            "resize:132:43",
            "send:size",
            "expect:132x43",
            "send:exit",
            "expect:user:crew@metergate> ",
            "send:exit",
        ],
    );
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["status"], 0, "{r}");
    let out = r["output"].as_str().unwrap();
    assert!(!out.contains("DENY"), "the dropped line never ran: {out}");
    // The console's start and end, the meter account and byte counts.
    s.wait_event("console.start", &["user:crew", "meter-1", "operator"]);
    let end = s.wait_event("console.end", &["user:crew", "bytes to the meter"]);
    assert!(!end.contains(" 0 bytes from it"), "{end}");
}

#[test]
fn console_refuses_a_changed_host_key_and_callers_without_a_meter_account() {
    let s = Site::start();
    // meter-1 now pins a key its console does not have; meter-2 maps only
    // Engineers to a meter account.
    let other = keygen(s.keys.path(), "not-the-console");
    let other = public_line(&other);
    s.d.reload_with(|text| {
        let mut out = String::new();
        let mut meter = "";
        for line in text.lines() {
            if let Some(id) = line.strip_prefix("id = ") {
                meter = if id.contains("meter-1") {
                    "meter-1"
                } else if id.contains("meter-2") {
                    "meter-2"
                } else {
                    ""
                };
            }
            if line.starts_with("console = ") && meter == "meter-1" {
                let (head, _) = line.split_once("host_key").unwrap();
                out += &format!("{head}host_key = \"{other}\" }}\n");
                continue;
            }
            out += line;
            out.push('\n');
            if line.starts_with("console = ") && meter == "meter-2" {
                out += "accounts = [{ role = \"Engineer\", account = \"engineer\" }]\n";
            }
        }
        out
    });
    let changed = s.ssh("crew", "connect meter-1");
    assert_eq!(changed.code, 1, "{changed:?}");
    assert!(changed.stderr.contains("not the pinned one"), "{changed:?}");
    let unmapped = s.ssh("crew", "connect meter-2");
    assert_eq!(unmapped.code, 1, "{unmapped:?}");
    assert!(
        unmapped
            .stderr
            .contains("DENY: no meter-side account of meter-2"),
        "{unmapped:?}"
    );
    let refused = s.events("console.refused");
    assert!(refused.contains("not the pinned one"), "{refused}");
    assert!(refused.contains("no meter-side account"), "{refused}");
    // Terminal Access itself is still decided first.
    let viewer = s.ssh("viewer", "connect meter-3");
    assert_eq!(viewer.code, 1, "{viewer:?}");
    assert!(
        viewer.stderr.contains("DENY: Terminal Access on meter-3"),
        "{viewer:?}"
    );
}

#[test]
fn passwd_and_profile_change_ones_own_password_and_names() {
    let s = Site::start();
    // crew (Operator) lacks Password Self-Management; admin holds it.
    let r = s.ssh("crew", "passwd");
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("DENY: Password Self-Management"), "{r:?}");
    let old = s.d.demo_password("admin");
    let new = "horse-battery-staple-42";
    let steps = |current: &str, first: &str, second: &str, outcome: &str| {
        shell(
            s.port,
            "admin",
            &old,
            &[
                "expect:> ",
                "send:passwd",
                "expect:Current password: ",
                &format!("send:{current}"),
                "expect:New password: ",
                &format!("send:{first}"),
                "expect:Repeat new password: ",
                &format!("send:{second}"),
                &format!("expect:{outcome}"),
                "send:exit",
            ],
        )
    };
    // Policy violations are refused with the reason, nothing changes.
    for (first, second, reason) in [
        ("short", "short", "too short"),
        ("admin-is-my-name-1", "admin-is-my-name-1", "user name"),
        (&old, &old, "must not be the current password"),
        (new, "something-else-entirely", "differ"),
    ] {
        let r = steps(&old, first, second, reason);
        assert_eq!(r["ok"], true, "{first}: {r}");
    }
    let r = steps(&old, new, new, "password changed");
    assert_eq!(r["ok"], true, "{r}");
    // The new password works on the password method, the old one no more.
    let ok = paramiko(s.port, &["password", "admin", new, "whoami"]);
    assert!(
        ok["stdout"]
            .as_str()
            .unwrap_or("")
            .starts_with("principal:  user:admin\n"),
        "{ok}"
    );
    let stale = paramiko(s.port, &["password", "admin", &old, "whoami"]);
    assert_eq!(stale["ok"], false, "{stale}");
    assert!(s.events("password.changed").contains("changed with passwd"));
    // One's own names; someone else's need User Management.
    let r = s.ssh("crew", "profile --first Casey --last Rowe");
    assert_eq!(r.code, 0, "{r:?}");
    let show = s.d.mg(&["user", "show", "crew"]).ok().stdout.clone();
    assert!(show.contains("Casey") && show.contains("Rowe"), "{show}");
    let r = s.ssh("crew", "user edit viewer --first Mallory");
    assert_eq!(r.code, 1, "{r:?}");
}

#[test]
fn a_service_user_logs_in_with_an_access_key_until_the_key_is_deleted() {
    let s = Site::start();
    let created =
        s.d.mg(&["service-user", "key", "create", "scada-operator"])
            .ok()
            .stdout
            .clone();
    let field = |name: &str| {
        created
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("{name} in {created}"))
            .trim()
            .to_string()
    };
    let (id, secret) = (field("key id: "), field("secret: "));
    let r = paramiko(s.port, &["password", &id, &secret, "whoami"]);
    assert!(
        r["stdout"]
            .as_str()
            .unwrap_or("")
            .starts_with("principal:  svc:scada-operator\n"),
        "{r}"
    );
    let wrong = paramiko(s.port, &["password", &id, "not-the-secret", "whoami"]);
    assert_eq!(wrong["ok"], false, "{wrong}");
    let unknown = paramiko(
        s.port,
        &["password", "MGKNOSUCHKEY0000000", &secret, "whoami"],
    );
    assert_eq!(unknown["ok"], false, "{unknown}");
    s.wait_event("login.failure", &["no access key `MGKNOSUCHKEY0000000`"]);
    let logins =
        s.d.mg(&["audit", "query", "--code", "login.success", "--json"])
            .ok()
            .stdout
            .clone();
    assert!(
        logins.contains("svc:scada-operator") && logins.contains("access-key"),
        "{logins}"
    );
    // A live session on the key ends when the key is deleted.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/ssh_shell.py");
    let mut held = std::process::Command::new("python3")
        .args([script, &s.port.to_string(), &id, &secret, "expect:> "])
        .arg("expect:never printed")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    s.wait_listed("svc:scada-operator");
    s.d.mg(&["service-user", "key", "delete", "scada-operator", &id])
        .ok();
    wait_gone(&mut held);
    s.wait_event("session.end", &["svc:scada-operator", "access key deleted"]);
    let after = paramiko(s.port, &["password", &id, &secret, "whoami"]);
    assert_eq!(after["ok"], false, "{after}");
}

#[test]
fn removing_a_users_key_ends_the_sessions_it_opened() {
    let s = Site::start();
    let mut held = hold(s.port, &s.key("crew"), "crew");
    s.wait_listed("user:crew");
    let line = public_line(&s.key("crew"));
    let r =
        s.d.mg(&["user", "remove-key", "crew", &line])
            .ok()
            .stdout
            .clone();
    assert!(r.contains("1 live sessions ended"), "{r}");
    wait_gone(&mut held);
    let again = s.ssh("crew", "whoami");
    assert_eq!(again.code, 255, "{again:?}");
}

#[test]
fn support_logs_in_with_the_configured_keys_only_while_granted() {
    let s = Site::start();
    let vendor = keygen(s.keys.path(), "vendor");
    let line = public_line(&vendor);
    s.d.reload_with(|text| format!("{text}\n[support]\nkeys = [\"{line}\"]\n"));
    // Not granted yet.
    let r = ssh(s.port, &vendor, "support", &[], "whoami");
    assert_eq!(r.code, 255, "{r:?}");
    let tomorrow = (time::OffsetDateTime::now_utc() + time::Duration::days(2)).date();
    s.d.mg(&["support", "grant", "--until", &tomorrow.to_string()])
        .ok();
    let r = ssh(s.port, &vendor, "support", &[], "whoami");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.starts_with("principal:  support\n"), "{r:?}");
    // A user's key is not a support key.
    let r = ssh(s.port, &s.key("crew"), "support", &[], "whoami");
    assert_eq!(r.code, 255, "{r:?}");
    // Revoking ends the live session and further logins.
    let mut held = hold(s.port, &vendor, "support");
    s.wait_listed("support");
    s.d.mg(&["support", "revoke"]).ok();
    wait_gone(&mut held);
    let r = ssh(s.port, &vendor, "support", &[], "whoami");
    assert_eq!(r.code, 255, "{r:?}");
    s.wait_event("session.end", &["support", "revoked"]);
}

#[test]
fn failing_sources_are_refused_for_passwords_while_keys_still_work() {
    let s = Site::start();
    // Many wrong passwords from one address, spread over made-up names so
    // no single principal locks: the source is throttled, then refused.
    let script = r#"
import socket, sys, paramiko
port = int(sys.argv[1])
for i in range(22):
    t = paramiko.Transport(socket.create_connection(("127.0.0.1", port), timeout=30))
    t.start_client(timeout=30)
    try:
        t.auth_password(f"guess{i % 4}", "wrong-password", fallback=False)
    except paramiko.AuthenticationException:
        pass
    t.close()
print("done")
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, &s.port.to_string()])
        .output()
        .expect("python3 runs");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("done"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The right password from the same source is now refused...
    let right = s.d.demo_password("crew");
    let r = paramiko(s.port, &["password", "crew", &right, "whoami"]);
    assert_eq!(r["ok"], false, "{r}");
    s.wait_event(
        "login.failure",
        &["too many password failures from this source"],
    );
    // ...while crew's public key still gets in (no lockout DoS).
    let k = s.ssh("crew", "whoami");
    assert_eq!(k.code, 0, "{k:?}");
    assert!(k.stdout.starts_with("principal:  user:crew\n"), "{k:?}");
}

#[test]
fn the_shell_confers_only_what_its_caller_holds() {
    let s = Site::start();
    // A security administrator: User Management (SecAdmin), nothing else.
    s.d.mg(&["user", "add", "sec", "--email", "sec@example.net"])
        .ok();
    s.d.mg(&["user", "grant-role", "sec", "SecAdmin"]).ok();
    s.d.mg(&["group", "add", "auditors"]).ok();
    s.d.mg(&["group", "add", "readers"]).ok();
    s.d.mg(&["group", "attach", "readers", "ReadOnly"]).ok();
    let key = keygen(s.keys.path(), "sec");
    s.d.mg(&["user", "add-key", "sec", &public_line(&key)]).ok();
    let sec = |command: &str| ssh(s.port, &key, "sec", &[], command);
    // (who, command) -> (exit status, what stderr or stdout shows)
    let table: &[(&str, &str, i32, &str)] = &[
        (
            "sec",
            "user attach sec Administrator",
            1,
            "DENY: conferring the managed Administrator policy needs the Administrator policy",
        ),
        (
            "sec",
            "user attach crew Administrator",
            1,
            "DENY: conferring the managed Administrator policy",
        ),
        (
            "sec",
            "group add-member readers sec",
            1,
            "DENY: the change would confer Data View on meter-",
        ),
        (
            "sec",
            "role edit SecAdmin --add master-reset",
            1,
            "DENY: the change would confer Master Reset on meter-",
        ),
        (
            "sec",
            "user grant-role crew Installer",
            1,
            "DENY: the change would confer Data View on meter-",
        ),
        (
            "sec",
            "group add-member auditors crew",
            0,
            "user crew added to group auditors",
        ),
        (
            "admin",
            "group add-member readers sec",
            0,
            "user sec added to group readers",
        ),
        (
            "admin",
            "role edit SecAdmin --add master-reset",
            0,
            "role SecAdmin updated",
        ),
    ];
    for (who, command, code, shows) in table {
        let r = if *who == "sec" {
            sec(command)
        } else {
            s.ssh(who, command)
        };
        assert_eq!(r.code, *code, "{who} `{command}`: {r:?}");
        assert!(
            r.stdout.contains(shows) || r.stderr.contains(shows),
            "{who} `{command}` should show {shows:?}: {r:?}"
        );
    }
    // sec is still no Administrator and reads no log.
    let r = sec("audit tail -n 1");
    assert_eq!(r.code, 1, "{r:?}");
    let who = sec("whoami").stdout;
    assert!(!who.contains("Security Logs Access"), "{who}");
}
