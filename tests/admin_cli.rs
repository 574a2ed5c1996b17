//! The admin surface through the real binary: `metergate serve` on a
//! temporary directory, every command through the control socket with the
//! words and exit codes of DESIGN §3, bad input refused with nothing written,
//! a SIGKILL mid-burst, and dates checked under libfaketime.

#[path = "common/daemon.rs"]
mod daemon;

use daemon::{BIN, Daemon};
use std::process::Command;

fn temp_password(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("temporary password: "))
        .expect("a `temporary password:` line")
        .to_string()
}

#[test]
fn users_through_the_socket() {
    let d = Daemon::start();
    let add = d.mg(&[
        "user",
        "add",
        "alice",
        "--email",
        "alice@example.net",
        "--first",
        "Alice",
        "--last",
        "Liddell",
    ]);
    add.ok();
    let pw = temp_password(&add.stdout);
    assert_eq!(pw.len(), 20);
    assert_eq!(
        add.stdout.matches(&pw).count(),
        1,
        "the temporary password is printed once"
    );

    let list = d.mg(&["user", "list"]);
    list.ok();
    let header = list.stdout.lines().next().unwrap();
    for col in ["NAME", "EMAIL", "STATUS", "ACCESS END DATE"] {
        assert!(header.contains(col), "{header}");
    }
    assert!(
        list.stdout.lines().any(|l| l.starts_with("alice")
            && l.contains("alice@example.net")
            && l.contains("ACTIVE")),
        "{}",
        list.stdout
    );

    let show = d.mg(&["user", "show", "alice"]);
    show.ok();
    for words in [
        "unique id:",
        "email:            alice@example.net",
        "first name:       Alice",
        "last name:        Liddell",
        "status:           ACTIVE",
        "created:",
        "by local:",
        "last modified:",
        "last login:       never",
        "password:         temporary",
    ] {
        assert!(
            show.stdout.contains(words),
            "missing {words:?} in\n{}",
            show.stdout
        );
    }

    d.mg(&["user", "edit", "alice", "--first", "Alicia"]).ok();
    assert!(
        d.mg(&["user", "show", "alice"])
            .stdout
            .contains("first name:       Alicia")
    );
    d.mg(&["user", "deactivate", "alice"]).ok();
    assert!(
        d.mg(&["user", "list"])
            .stdout
            .lines()
            .any(|l| l.starts_with("alice") && l.contains("INACTIVE"))
    );
    let check = d.mg(&[
        "check",
        "--principal",
        "alice",
        "--permission",
        "Data View",
        "--meter",
        "meter-1",
    ]);
    assert!(
        check.ok().stdout.starts_with("DENY") && check.stdout.contains("inactive"),
        "{check:?}"
    );
    d.mg(&["user", "activate", "alice"]).ok();

    let tomorrow = (time::OffsetDateTime::now_utc() + time::Duration::days(1))
        .date()
        .to_string();
    d.mg(&["user", "set-end-date", "alice", &tomorrow]).ok();
    assert!(d.mg(&["user", "list"]).stdout.contains(&tomorrow));
    d.mg(&["user", "set-end-date", "alice", "none"]).ok();

    let resend = d.mg(&["user", "resend-password", "alice"]);
    let pw2 = temp_password(&resend.ok().stdout);
    assert_ne!(pw, pw2);

    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGv0Xbq5s7m0p0tS7fV8r1l5yqQy3b4m7b0v4Yk2b4wX alice@laptop";
    d.mg(&["user", "add-key", "alice", key]).ok();
    let keyfile = d.dir.path().join("alice.pub");
    std::fs::write(
        &keyfile,
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB second\n",
    )
    .unwrap();
    d.mg(&[
        "user",
        "add-key",
        "alice",
        &format!("@{}", keyfile.display()),
    ])
    .ok();
    assert!(
        d.mg(&["user", "show", "alice"])
            .stdout
            .contains("ssh keys:         2")
    );
    d.mg(&["user", "remove-key", "alice", "second"]).ok();
    assert!(
        d.mg(&["user", "show", "alice"])
            .stdout
            .contains("ssh keys:         1")
    );

    d.mg(&[
        "user",
        "grant-role",
        "alice",
        "Operator",
        "--meters",
        "site=north",
    ])
    .ok();
    let check = d.mg(&[
        "check",
        "--principal",
        "user:alice",
        "--permission",
        "peak-demand-reset",
        "--meter",
        "meter-1",
    ]);
    assert!(check.ok().stdout.starts_with("ALLOW Peak Demand Reset: allowed by policy `inline policy of user:alice` statement 1 via role Operator"), "{check:?}");
    let check = d.mg(&[
        "check",
        "--principal",
        "alice",
        "--permission",
        "Peak Demand Reset",
        "--meter",
        "meter-3",
    ]);
    assert!(check.ok().stdout.starts_with("DENY"), "{check:?}");
    d.mg(&["user", "attach", "alice", "ReadOnly"]).ok();
    assert!(
        d.mg(&[
            "check",
            "--principal",
            "alice",
            "--permission",
            "Data View",
            "--meter",
            "meter-3"
        ])
        .stdout
        .starts_with("ALLOW")
    );
    d.mg(&["user", "detach", "alice", "ReadOnly"]).ok();
    let unlock = d.mg(&["user", "unlock", "alice"]);
    assert!(unlock.ok().stdout.contains("was not locked"));
    let json = d.mg(&["--json", "user", "list"]);
    let v: serde_json::Value = serde_json::from_str(&json.ok().stdout).unwrap();
    assert_eq!(v[0]["name"], "alice");

    d.mg(&["user", "delete", "alice"]).ok();
    assert!(!d.mg(&["user", "list"]).stdout.contains("alice"));
    // Deleting removes the account, never its events.
    let tail = d.mg(&["audit", "tail", "-n", "200"]);
    assert!(
        tail.ok().stdout.contains("created user alice"),
        "{}",
        tail.stdout
    );
    assert!(tail.stdout.contains("deleted user alice"));
    assert!(
        !tail.stdout.contains(&pw) && !tail.stdout.contains(&pw2),
        "a password reached the log"
    );
}

#[test]
fn service_users_groups_roles_policies_support_sessions_review_audit() {
    let d = Daemon::start();
    d.mg(&[
        "service-user",
        "add",
        "scada-1",
        "--description",
        "north poller",
    ])
    .ok();
    let key = d.mg(&["service-user", "key", "create", "scada-1"]);
    let out = &key.ok().stdout;
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("key id: "))
        .expect("key id line")
        .to_string();
    let secret = out
        .lines()
        .find_map(|l| l.strip_prefix("secret: "))
        .expect("secret line")
        .to_string();
    assert!(secret.len() >= 32);
    let list = d.mg(&["service-user", "key", "list", "scada-1"]);
    assert!(list.ok().stdout.contains(&id) && !list.stdout.contains(&secret));
    d.mg(&["service-user", "attach", "scada-1", "ReadOnly"])
        .ok();
    assert!(
        d.mg(&["service-user", "show", "scada-1"])
            .stdout
            .contains("ReadOnly")
    );
    d.mg(&["service-user", "key", "deactivate", "scada-1", &id])
        .ok();
    assert!(
        d.mg(&["service-user", "key", "list", "scada-1"])
            .stdout
            .contains("INACTIVE")
    );
    d.mg(&["service-user", "key", "delete", "scada-1", &id])
        .ok();
    d.mg(&[
        "service-user",
        "edit",
        "scada-1",
        "--description",
        "south poller",
    ])
    .ok();
    d.mg(&["service-user", "detach", "scada-1", "ReadOnly"])
        .ok();
    assert!(
        d.mg(&["service-user", "list"])
            .ok()
            .stdout
            .contains("scada-1")
    );

    // Roles: a new role has no permission; front panel is marked.
    d.mg(&["role", "create", "Reader"]).ok();
    assert!(d.mg(&["role", "show", "Reader"]).stdout.contains("(none)"));
    d.mg(&[
        "role",
        "edit",
        "Reader",
        "--add",
        "Data View",
        "--add",
        "front-panel-restart",
    ])
    .ok();
    let show = d.mg(&["role", "show", "Reader"]);
    assert!(
        show.ok()
            .stdout
            .contains("Front Panel Restart (not enforceable at the gateway"),
        "{}",
        show.stdout
    );
    assert!(d.mg(&["role", "list"]).stdout.contains("Installer"));

    // A custom policy with a deny, a group, a member.
    let policy = d.dir.path().join("north.toml");
    std::fs::write(
        &policy,
        "name = \"north-operators\"\ndescription = \"Operators on the northern site, never master reset\"\n[[statement]]\neffect = \"allow\"\nroles = [\"Operator\"]\nmeters = [\"site=north\"]\n[[statement]]\neffect = \"deny\"\npermissions = [\"Master Reset\"]\nmeters = [\"*\"]\n",
    )
    .unwrap();
    d.mg(&["policy", "create", "--file", policy.to_str().unwrap()])
        .ok();
    assert!(
        d.mg(&["policy", "show", "north-operators"])
            .stdout
            .contains("2. deny \"Master Reset\" on meters *")
    );
    d.mg(&["user", "add", "nora", "--email", "nora@example.net"])
        .ok();
    d.mg(&["group", "add", "crews"]).ok();
    d.mg(&["group", "attach", "crews", "north-operators"]).ok();
    d.mg(&["group", "add-member", "crews", "nora"]).ok();
    let check = d.mg(&[
        "check",
        "--principal",
        "nora",
        "--permission",
        "Peak Demand Reset",
        "--meter",
        "meter-1",
    ]);
    assert!(check.ok().stdout.starts_with("ALLOW Peak Demand Reset: allowed by policy `north-operators` statement 1 via role Operator"), "{check:?}");
    // Even a role that includes Master Reset does not beat the group's deny.
    d.mg(&["user", "grant-role", "nora", "Installer"]).ok();
    let check = d.mg(&[
        "check",
        "--principal",
        "nora",
        "--permission",
        "Master Reset",
        "--meter",
        "meter-1",
    ]);
    assert!(
        check
            .ok()
            .stdout
            .starts_with("DENY Master Reset: denied by policy `north-operators` statement 2"),
        "{check:?}"
    );
    assert!(d.mg(&["policy", "list"]).stdout.contains("group:crews"));
    let del = d.mg(&["policy", "delete", "north-operators"]);
    assert_eq!(del.code, 2, "{del:?}");
    assert!(del.stderr.contains("attached to group:crews"));
    d.mg(&["group", "rename", "crews", "north-crews"]).ok();
    assert!(
        d.mg(&["group", "show", "north-crews"])
            .stdout
            .contains("nora")
    );
    d.mg(&["group", "remove-member", "north-crews", "nora"])
        .ok();
    d.mg(&["group", "add-member", "north-crews", "nora"]).ok();
    let del = d.mg(&["group", "delete", "north-crews"]);
    assert!(
        del.ok()
            .stdout
            .contains("no longer get its policies (north-operators)"),
        "{del:?}"
    );
    d.mg(&["policy", "delete", "north-operators"]).ok();
    for managed in ["Administrator", "ReadOnly"] {
        let r = d.mg(&["policy", "delete", managed]);
        assert_eq!(r.code, 2);
        assert!(r.stderr.contains("managed policy"), "{r:?}");
    }

    // Support access.
    assert!(d.mg(&["support", "show"]).stdout.contains("not granted"));
    let tomorrow = (time::OffsetDateTime::now_utc() + time::Duration::days(1))
        .date()
        .to_string();
    let later = (time::OffsetDateTime::now_utc() + time::Duration::days(7))
        .date()
        .to_string();
    d.mg(&["support", "grant", "--until", &tomorrow]).ok();
    assert!(
        d.mg(&[
            "check",
            "--principal",
            "support",
            "--permission",
            "Master Reset",
            "--meter",
            "meter-3"
        ])
        .stdout
        .starts_with("ALLOW")
    );
    d.mg(&["support", "update", "--until", &later]).ok();
    d.mg(&["support", "attach", "ReadOnly"]).ok();
    d.mg(&["support", "detach", "Administrator"]).ok();
    assert!(
        d.mg(&[
            "check",
            "--principal",
            "support",
            "--permission",
            "Master Reset",
            "--meter",
            "meter-3"
        ])
        .stdout
        .starts_with("DENY")
    );
    assert!(
        d.mg(&["support", "show"])
            .stdout
            .contains(&format!("granted until {later}"))
    );
    d.mg(&["support", "revoke"]).ok();
    assert!(
        d.mg(&[
            "check",
            "--principal",
            "support",
            "--permission",
            "Data View",
            "--meter",
            "meter-3"
        ])
        .stdout
        .contains("not granted")
    );

    // Sessions (none yet on this daemon), review, audit.
    assert!(d.mg(&["session", "list"]).ok().stdout.starts_with("ID"));
    let kill = d.mg(&["session", "kill", "42"]);
    assert_eq!(kill.code, 2);
    assert!(kill.stderr.contains("no live session 42"));
    let review = d.mg(&["review"]);
    assert!(
        review.ok().stdout.contains("WHO CAN DO WHAT WHERE")
            && review
                .stdout
                .contains("review: no review has been recorded yet"),
        "{}",
        review.stdout
    );
    d.mg(&["review", "--ack"]).ok();
    assert!(d.mg(&["review"]).stdout.contains("review: up to date"));
    d.mg(&["user", "add", "late", "--email", "late@example.net"])
        .ok();
    assert!(
        d.mg(&["review"])
            .stdout
            .contains("users or roles changed since the last review")
    );
    let verify = d.mg(&["audit", "verify"]);
    assert!(verify.ok().stdout.starts_with("ok: "), "{verify:?}");
    let tail = d.mg(&["--json", "audit", "tail", "-n", "5"]);
    for line in tail.ok().stdout.lines() {
        let ev: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(ev["seq"].as_u64().is_some() && ev["hash"].as_str().is_some());
    }
    let tail = d.mg(&["audit", "tail", "-n", "500"]);
    assert!(
        tail.stdout.contains("review.due")
            && tail.stdout.contains("a review of users and roles is due"),
        "the reminder is in the log"
    );
    assert!(
        tail.stdout.contains("review acknowledged"),
        "the acknowledgement is in the log"
    );
    assert!(
        !tail.stdout.contains(&secret),
        "an access key secret reached the log"
    );
}

#[test]
fn bad_input_gets_a_clear_error_exit_2_and_writes_nothing() {
    let d = Daemon::start();
    d.mg(&["user", "add", "bob", "--email", "bob@example.net"])
        .ok();
    let before = d.mg(&["--json", "user", "list"]).stdout;
    let policy = d.dir.path().join("bad.toml");
    std::fs::write(
        &policy,
        "name = \"p\"\n[[statement]]\neffect = \"allow\"\npermissions = [\"Sudo\"]\n",
    )
    .unwrap();
    let long = "x".repeat(5000);
    let yesterday = (time::OffsetDateTime::now_utc() - time::Duration::days(1))
        .date()
        .to_string();
    let today = time::OffsetDateTime::now_utc().date().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["user", "add", "bob", "--email", "b@example.net"],
            "already exists",
        ),
        (vec!["user", "show", "nobody"], "no user `nobody`"),
        (
            vec!["user", "add", "bad name", "--email", "x@example.net"],
            "not a valid name",
        ),
        (
            vec!["user", "add", "carol", "--email", "not-an-email"],
            "not an email address",
        ),
        (
            vec![
                "user",
                "add",
                "carol",
                "--email",
                "c@example.net",
                "--first",
                &long,
            ],
            "longer than 4096 bytes",
        ),
        (
            vec![
                "user",
                "add",
                "carol",
                "--email",
                "c@example.net",
                "--end-date",
                &yesterday,
            ],
            "before tomorrow",
        ),
        (
            vec!["user", "set-end-date", "bob", &today],
            "before tomorrow",
        ),
        (
            vec!["support", "grant", "--until", &today],
            "earliest is tomorrow",
        ),
        (vec!["user", "attach", "bob", "Nope"], "no policy `Nope`"),
        (
            vec!["user", "grant-role", "bob", "Wizard"],
            "no role `Wizard`",
        ),
        (
            vec!["user", "grant-role", "bob", "Operator", "--meters", "site="],
            "not a meter selector",
        ),
        (
            vec!["user", "add-key", "bob", "ssh-dss AAAAB3NzaC1kc3MAAACBAP"],
            "not accepted",
        ),
        (
            vec!["group", "add-member", "ghosts", "bob"],
            "no group `ghosts`",
        ),
        (
            vec!["role", "create", "R", "--permission", "Sudo"],
            "unknown permission `Sudo`",
        ),
        (
            vec!["policy", "create", "--file", policy.to_str().unwrap()],
            "bad.toml:4:",
        ),
        (
            vec![
                "check",
                "--principal",
                "robot:x",
                "--permission",
                "Data View",
                "--meter",
                "meter-1",
            ],
            "not a principal id",
        ),
        (
            vec!["check", "--principal", "bob", "--permission", "Data View"],
            "give --meter",
        ),
        (vec!["user", "frobnicate"], "unrecognized subcommand"),
    ];
    for (args, needle) in cases {
        let r = d.mg(&args);
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert!(
            r.stderr.starts_with("error: ") || r.stderr.contains("error:"),
            "{args:?}: {r:?}"
        );
        assert!(
            r.stderr.contains(needle),
            "{args:?}: expected {needle:?} in {}",
            r.stderr
        );
    }
    assert_eq!(
        d.mg(&["--json", "user", "list"]).stdout,
        before,
        "nothing was written"
    );

    // Never lock everyone out: the last Administrator holder stays one.
    d.mg(&["user", "add", "root-admin", "--email", "r@example.net"])
        .ok();
    d.mg(&["user", "attach", "root-admin", "Administrator"])
        .ok();
    for args in [
        vec!["user", "detach", "root-admin", "Administrator"],
        vec!["user", "deactivate", "root-admin"],
        vec!["user", "delete", "root-admin"],
    ] {
        let r = d.mg(&args);
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert!(r.stderr.contains("never lock everyone out"), "{r:?}");
    }
    // Separation of duties: User Management and Security Logs Access.
    d.mg(&["user", "grant-role", "bob", "SecAdmin"]).ok();
    let r = d.mg(&["user", "grant-role", "bob", "SecAuditor"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr
            .contains("user:bob would hold both \"User Management\" and \"Security Logs Access\""),
        "{r:?}"
    );

    // Non-UTF-8 arguments never leave the CLI.
    use std::os::unix::ffi::OsStrExt;
    let out = Command::new(BIN)
        .arg("--socket")
        .arg(&d.socket)
        .args(["user", "show"])
        .arg(std::ffi::OsStr::from_bytes(b"\xff\xfe"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("error:"));
}

#[test]
fn the_socket_refuses_callers_outside_its_group_and_logs_them() {
    let d = Daemon::start();
    // nobody (65534) is not root, not the daemon's user, and the config
    // names no group: refused by the daemon even with the file opened up.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&d.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let r = d.mg_as(Some(65534), &["user", "list"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("may not use this control socket"),
        "{r:?}"
    );
    let tail = d.mg(&["audit", "tail", "-n", "20"]);
    assert!(
        tail.stdout.contains("admin.socket-refused") && tail.stdout.contains("local:nobody"),
        "{}",
        tail.stdout
    );
    // With the socket at its configured 0660, the file system refuses first.
    std::fs::set_permissions(&d.socket, std::fs::Permissions::from_mode(0o660)).unwrap();
    let r = d.mg_as(Some(65534), &["user", "list"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("cannot reach the daemon at") && r.stderr.contains("control.sock"),
        "{r:?}"
    );
}

#[test]
fn an_unreachable_daemon_exits_1_naming_the_socket() {
    let out = Command::new(BIN)
        .args(["--socket", "/nonexistent/metergate.sock", "user", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("cannot reach the daemon at /nonexistent/metergate.sock")
    );
}

#[test]
fn acknowledged_changes_survive_sigkill_and_the_chain_verifies() {
    let mut d = Daemon::start();
    let socket = d.socket.clone();
    // A burst of changes from several CLI processes; kill -9 in the middle.
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                for i in 0..200 {
                    let name = format!("u{w}x{i}");
                    let out = Command::new(BIN)
                        .arg("--socket")
                        .arg(&socket)
                        .args(["group", "add", &name])
                        .output()
                        .unwrap();
                    if out.status.code() == Some(0) {
                        acked.push(name);
                    } else {
                        break;
                    }
                }
                acked
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    d.kill9();
    let acked: Vec<String> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    assert!(
        acked.len() > 5,
        "the burst was under way: {} acknowledged",
        acked.len()
    );
    let verify = Command::new(BIN)
        .args(["audit", "verify", "--state-dir"])
        .arg(d.state_dir())
        .output()
        .unwrap();
    assert_eq!(
        verify.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    d.restart(None);
    let groups = d.mg(&["group", "list"]);
    for name in &acked {
        assert!(
            groups
                .stdout
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name)),
            "acknowledged change `group add {name}` is lost"
        );
    }
    let tail = d.mg(&["audit", "tail", "-n", "2000"]);
    for name in &acked {
        assert!(
            tail.stdout.contains(&format!("created group {name}")),
            "the event of `group add {name}` is lost"
        );
    }
    assert!(d.mg(&["audit", "verify"]).ok().stdout.starts_with("ok: "));
}

#[test]
fn temporary_passwords_expire_after_30_days_and_support_at_midnight_utc() {
    // Created on 2026-11-01 at noon (daemon under faketime)...
    let mut d = Daemon::start_with(Some("2026-11-01 12:00:00"));
    d.mg(&["user", "add", "tina", "--email", "tina@example.net"])
        .ok();
    d.mg(&["user", "attach", "tina", "ReadOnly"]).ok();
    d.mg(&["support", "grant", "--until", "2026-11-02"]).ok();
    let refused = d.mg(&["support", "update", "--until", "2026-11-01"]);
    assert!(
        refused.stderr.contains("before tomorrow (2026-11-02)"),
        "{refused:?}"
    );
    let ask = |d: &Daemon, who: &str| {
        d.mg(&[
            "check",
            "--principal",
            who,
            "--permission",
            "Data View",
            "--meter",
            "meter-1",
        ])
        .stdout
    };
    assert!(ask(&d, "tina").starts_with("ALLOW"));
    assert!(ask(&d, "support").starts_with("ALLOW"));
    // ...support ends at 00:00 UTC at the start of its end date...
    d.restart(Some("2026-11-01 23:59:50"));
    assert!(ask(&d, "support").starts_with("ALLOW"));
    d.restart(Some("2026-11-02 00:00:01"));
    let s = ask(&d, "support");
    assert!(
        s.starts_with("DENY") && s.contains("support access ended at 2026-11-02"),
        "{s}"
    );
    // ...and the temporary password 30 days after issue.
    d.restart(Some("2026-12-01 11:59:00"));
    assert!(ask(&d, "tina").starts_with("ALLOW"));
    d.restart(Some("2026-12-01 12:00:30"));
    let t = ask(&d, "tina");
    assert!(
        t.starts_with("DENY") && t.contains("temporary password expired at 2026-12-01T12:00:00"),
        "{t}"
    );
    let show = d.mg(&["user", "show", "tina"]);
    assert!(
        show.stdout
            .contains("temporary, expires 2026-12-01T12:00:00"),
        "{}",
        show.stdout
    );
}

#[test]
fn the_demo_starts_prints_ready_and_resumes() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let demo_dir = dir.path().join("demo");
    let mut first_password = String::new();
    let base_port = daemon::free_port_block();
    for round in 0..2 {
        let mut child = Command::new(BIN)
            .args(["demo", "--base-port", &base_port.to_string(), "--dir"])
            .arg(&demo_dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        for line in lines.by_ref() {
            let line = line.unwrap();
            let ready = line.contains("metergate demo ready");
            seen.push(line);
            if ready || std::time::Instant::now() > deadline {
                break;
            }
        }
        assert!(
            seen.iter().any(|l| l.contains("metergate demo ready")),
            "round {round}: {seen:?}"
        );
        assert!(
            seen[0].contains(if round == 0 { "(fresh)" } else { "(resumed)" }),
            "{seen:?}"
        );
        let creds = std::fs::read_to_string(demo_dir.join("credentials.toml")).unwrap();
        let admin = creds
            .lines()
            .find_map(|l| l.strip_prefix("admin = "))
            .unwrap()
            .trim_matches('"')
            .to_string();
        if round == 0 {
            first_password = admin.clone();
        } else {
            assert_eq!(
                admin, first_password,
                "the demo resumed with its credentials"
            );
        }
        use std::os::unix::fs::PermissionsExt;
        for (path, mode) in [
            (demo_dir.join("credentials.toml"), 0o600),
            (demo_dir.join("control.sock"), 0o600),
            (demo_dir.join("ca/ca.key"), 0o600),
            (demo_dir.join("certs/server.key"), 0o600),
            (demo_dir.join("certs/scada-operator.key"), 0o600),
        ] {
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                mode,
                "{}",
                path.display()
            );
        }
        // SSH as crew, with the demo's password, through paramiko.
        let crew = creds
            .lines()
            .find_map(|l| l.strip_prefix("crew = "))
            .unwrap()
            .trim_matches('"')
            .to_string();
        let out = Command::new("python3")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/ssh.py"))
            .arg((base_port - 3280).to_string())
            .args(["password", "crew", &crew, "whoami"])
            .output()
            .expect("python3 runs");
        let ssh = String::from_utf8_lossy(&out.stdout);
        assert!(
            ssh.contains("\"stdout\": \"principal:  user:crew\\n"),
            "{ssh}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Modbus/TCP Security as scada-operator, with pymodbus and the
        // demo's certificate files.
        let certs = demo_dir.join("certs");
        let op = serde_json::json!([{
            "op": "read", "unit": 1, "address": 3000, "count": 2,
            "tls": {
                "ca": certs.join("ca.crt"),
                "cert": certs.join("scada-operator.crt"),
                "key": certs.join("scada-operator.key"),
            },
        }]);
        let out = Command::new("python3")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/mb.py"))
            .arg((base_port + 3300).to_string())
            .arg(op.to_string())
            .output()
            .expect("python3 runs");
        let answer = String::from_utf8_lossy(&out.stdout);
        assert!(answer.contains("\"ok\": true"), "round {round}: {answer}");
        let sock = demo_dir.join("control.sock");
        let mg = |args: &[&str]| {
            Command::new(BIN)
                .arg("--socket")
                .arg(&sock)
                .args(args)
                .output()
                .unwrap()
        };
        let users = String::from_utf8_lossy(&mg(&["user", "list"]).stdout).to_string();
        for u in ["admin", "crew", "viewer"] {
            assert!(users.contains(u), "{users}");
        }
        let check = String::from_utf8_lossy(
            &mg(&[
                "check",
                "--principal",
                "crew",
                "--permission",
                "Peak Demand Reset",
                "--meter",
                "meter-1",
            ])
            .stdout,
        )
        .to_string();
        assert!(check.starts_with("ALLOW"), "{check}");
        let check = String::from_utf8_lossy(
            &mg(&[
                "check",
                "--principal",
                "crew",
                "--permission",
                "Peak Demand Reset",
                "--meter",
                "meter-3",
            ])
            .stdout,
        )
        .to_string();
        assert!(check.starts_with("DENY"), "{check}");
        // The printed mbpoll command works: a Data View read through the proxy.
        let cmd = seen
            .iter()
            .find(|l| l.contains("mbpoll") && l.contains("-r 3000"))
            .expect("an mbpoll example");
        let words: Vec<&str> = cmd.split('#').next().unwrap().split_whitespace().collect();
        let out = Command::new("mbpoll")
            .args(&words[1..])
            .output()
            .expect("mbpoll is missing: apt-get install mbpoll (.ci/run does)");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("[3000]:") && text.contains("[3009]:"),
            "{cmd}: {text}"
        );
        assert!(
            demo_dir.join("meters/meter-1/logs/events.log").is_file(),
            "the simulated meters' files"
        );
        if round == 0 {
            assert_eq!(
                mg(&["group", "add", "made-in-round-0"]).status.code(),
                Some(0)
            );
        } else {
            assert!(
                String::from_utf8_lossy(&mg(&["group", "list"]).stdout).contains("made-in-round-0")
            );
        }
        Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .unwrap();
        let status = child.wait().unwrap();
        assert!(
            status.success(),
            "the demo stops cleanly on SIGTERM: {status}"
        );
    }
    // A directory that holds something else is not taken over.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "mine").unwrap();
    let out = Command::new(BIN)
        .args(["demo", "--dir"])
        .arg(&other)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds no demo"));
}

#[test]
fn garbage_on_the_control_socket_never_stops_the_daemon() {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    let d = Daemon::start();
    let frames: Vec<Vec<u8>> = vec![
        vec![],                                   // connect and close
        vec![0xff, 0xff, 0xff, 0xff],             // a 4 GiB length
        vec![0, 0, 0, 5, b'{', b'{', 0xff, 0, 1], // not JSON
        vec![0, 0, 0, 2, b'[', b']'],             // JSON, not a request
        vec![0, 0, 0, 40, b'{'],                  // a frame that never ends
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),       // another protocol
    ];
    for frame in &frames {
        let mut s = UnixStream::connect(&d.socket).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(15)))
            .unwrap();
        let _ = s.write_all(frame);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
    }
    // A silent client does not hold anything up either.
    let _silent = UnixStream::connect(&d.socket).unwrap();
    let r = d.mg(&["user", "list"]);
    assert_eq!(r.code, 0, "the daemon still serves: {r:?}");
}

#[test]
fn audit_query_filters_by_principal_code_outcome_and_time() {
    let d = Daemon::start();
    for name in ["q1", "q2", "q3"] {
        d.mg(&[
            "user",
            "add",
            name,
            "--email",
            &format!("{name}@example.com"),
        ])
        .ok();
    }
    d.mg(&["user", "add", "q1", "--email", "again@example.com"]); // refused
    let me = d.mg(&["audit", "tail", "-n", "1"]).ok().stdout.clone();
    let local = me.split_whitespace().nth(4).unwrap().to_string();
    let r = d.mg(&[
        "audit",
        "query",
        "--code",
        "admin.change",
        "--principal",
        &local,
        "--limit",
        "2",
        "--since",
        "1h",
    ]);
    let lines: Vec<&str> = r.ok().stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines.iter().all(|l| l.contains(" admin.change ")),
        "{lines:?}"
    );
    assert!(
        lines[1].contains("q3"),
        "the newest, oldest first: {lines:?}"
    );
    let r = d.mg(&["--json", "audit", "query", "--code", "admin.refused"]);
    let refused: Vec<serde_json::Value> = r
        .ok()
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["outcome"], "failure");
    let r = d.mg(&[
        "audit",
        "query",
        "--outcome",
        "deny",
        "--until",
        "2000-01-01T00:00:00Z",
    ]);
    assert!(r.ok().stdout.is_empty());
    let r = d.mg(&["audit", "query", "--since", "yesterday"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--since `yesterday`"), "{}", r.stderr);
    // Reading the log is itself in the log.
    let r = d.mg(&[
        "audit",
        "query",
        "--code",
        "read-audit.allow",
        "--limit",
        "1",
    ]);
    assert!(r.ok().stdout.contains("audit query"), "{}", r.stdout);
}

#[test]
fn checkpoints_are_signed_by_the_daemon_and_checked_against_the_live_log() {
    let d = Daemon::start();
    d.mg(&["user", "add", "cp1", "--email", "cp1@example.com"])
        .ok();
    let key = d
        .mg(&["audit", "public-key"])
        .ok()
        .stdout
        .trim()
        .to_string();
    assert_eq!(key.len(), 64, "{key}");
    let cp = d.mg(&["audit", "checkpoint"]).ok().stdout.clone();
    let v: serde_json::Value = serde_json::from_str(cp.trim()).unwrap();
    assert_eq!(v["public_key"], key.as_str());
    let file = d.dir.path().join("cp.json");
    std::fs::write(&file, &cp).unwrap();
    d.mg(&["user", "add", "cp2", "--email", "cp2@example.com"])
        .ok();
    let r = d.mg(&[
        "audit",
        "verify",
        "--checkpoint",
        file.to_str().unwrap(),
        "--public-key",
        &key,
    ]);
    assert!(
        r.ok().stdout.starts_with("ok: the log is consistent"),
        "{}",
        r.stdout
    );
    let r = d.mg(&["audit", "verify", "--checkpoint", "/nonexistent/cp.json"]);
    assert_eq!(r.code, 2, "{r:?}");
}

/// A member of the socket's group holding streams open cannot take every
/// place: the ninth connection of one account is refused with a clear
/// error, and root still gets in.
#[test]
fn one_account_cannot_take_every_control_socket_connection() {
    let d = Daemon::start_text(|socket| {
        daemon::gateway_config(socket, "").replace(
            "group = \"\"\nmode = \"0600\"",
            "group = \"nogroup\"\nmode = \"0660\"",
        )
    });
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // nobody (65534, group nogroup) may use the socket.
    let ok = d.mg_as(Some(65534), &["user", "list"]);
    assert_eq!(ok.code, 0, "{ok:?}");
    let follow = |_: usize| {
        use std::os::unix::process::CommandExt;
        Command::new(BIN)
            .arg("--socket")
            .arg(&d.socket)
            .args(["audit", "tail", "--follow"])
            .uid(65534)
            .gid(65534)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut held: Vec<_> = (0..8).map(follow).collect();
    // Bounded wait until all eight are connected and the ninth is refused.
    // A follower that met the place of an earlier call not yet given back
    // was refused itself: it is started again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let refused = loop {
        for (i, c) in held.iter_mut().enumerate() {
            if c.try_wait().ok().flatten().is_some() {
                *c = follow(i);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        let r = d.mg_as(Some(65534), &["user", "list"]);
        if r.code != 0 {
            break r;
        }
        assert!(std::time::Instant::now() < deadline, "never refused: {r:?}");
    };
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("holds 8 control socket connections already"),
        "{refused:?}"
    );
    d.mg(&["user", "list"]).ok();
    for c in &mut held {
        let _ = c.kill();
        let _ = c.wait();
    }
    // Their places come back.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while d.mg_as(Some(65534), &["user", "list"]).code != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "places never came back"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Separation of duties (DESIGN §2) that would arise through a group
/// membership or a group's policy, through the CLI: refused, naming the
/// pair, and nothing changed (issue 19's untested promises).
#[test]
fn separation_of_duties_through_a_group_is_refused() {
    let d = Daemon::start();
    let dir = d.dir.path();
    for (name, permission) in [
        ("user-admins", "User Management"),
        ("log-readers", "Security Logs Access"),
    ] {
        let file = dir.join(format!("{name}.toml"));
        std::fs::write(
            &file,
            format!(
                "name = \"{name}\"\n[[statement]]\neffect = \"allow\"\npermissions = [\"{permission}\"]\n"
            ),
        )
        .unwrap();
        d.mg(&["policy", "create", "--file", file.to_str().unwrap()])
            .ok();
    }
    d.mg(&["user", "add", "sam", "--email", "sam@example.net"])
        .ok();
    d.mg(&["user", "attach", "sam", "user-admins"]).ok();
    d.mg(&["group", "add", "auditors"]).ok();
    d.mg(&["group", "attach", "auditors", "log-readers"]).ok();
    // (what, command) → refused with the pair named
    let table: [(&str, Vec<&str>); 2] = [
        (
            "a membership",
            vec!["group", "add-member", "auditors", "sam"],
        ),
        (
            "a group's policy",
            vec!["group", "attach", "crew", "log-readers"],
        ),
    ];
    d.mg(&["group", "add", "crew"]).ok();
    d.mg(&["group", "add-member", "crew", "sam"]).ok();
    for (what, words) in table {
        let r = d.mg(&words);
        assert_eq!(r.code, 2, "{what}: {r:?}");
        assert!(
            r.stderr.contains("User Management")
                && r.stderr.contains("Security Logs Access")
                && r.stderr.contains("user:sam"),
            "{what}: {r:?}"
        );
    }
    let shown = d.mg(&["group", "show", "auditors"]).ok().stdout.clone();
    assert!(!shown.contains("sam"), "{shown}");
    let shown = d.mg(&["group", "show", "crew"]).ok().stdout.clone();
    assert!(!shown.contains("log-readers"), "{shown}");
}

/// `policy edit` (issue 19): the version goes up, a stale `--if-version`
/// is refused, the change event carries the old and new statements, and
/// an edited deny decides the next request.
#[test]
fn a_policy_is_edited_in_place_and_a_stale_version_is_refused() {
    let d = Daemon::start();
    let dir = d.dir.path();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let allow = write(
        "v1.toml",
        "name = \"north\"\n[[statement]]\neffect = \"allow\"\npermissions = [\"Data View\"]\n",
    );
    let deny = write(
        "v2.toml",
        "name = \"north\"\ndescription = \"no reading\"\n[[statement]]\neffect = \"allow\"\npermissions = [\"Data View\"]\n[[statement]]\neffect = \"deny\"\npermissions = [\"Data View\"]\nmeters = [\"meter-1\"]\n",
    );
    let other = write(
        "other.toml",
        "name = \"south\"\n[[statement]]\neffect = \"allow\"\npermissions = [\"Data View\"]\n",
    );
    d.mg(&["policy", "create", "--file", &allow]).ok();
    d.mg(&["user", "add", "kim", "--email", "kim@example.net"])
        .ok();
    d.mg(&["user", "attach", "kim", "north"]).ok();
    let check = [
        "check",
        "--principal",
        "kim",
        "--permission",
        "Data View",
        "--meter",
        "meter-1",
    ];
    assert!(d.mg(&check).ok().stdout.starts_with("ALLOW"));
    // (what, words) → exit code and words of the answer
    let table: [(&str, Vec<&str>, i32, &str); 5] = [
        (
            "the edit",
            vec![
                "policy",
                "edit",
                "north",
                "--file",
                &deny,
                "--if-version",
                "1",
            ],
            0,
            "version 2",
        ),
        (
            "a stale version",
            vec![
                "policy",
                "edit",
                "north",
                "--file",
                &allow,
                "--if-version",
                "1",
            ],
            2,
            "at version 2, not 1",
        ),
        (
            "a file of another policy",
            vec!["policy", "edit", "north", "--file", &other],
            2,
            "names policy `south`",
        ),
        (
            "a managed policy",
            vec!["policy", "edit", "ReadOnly", "--file", &allow],
            2,
            "managed policy",
        ),
        (
            "no such policy",
            vec!["policy", "edit", "west", "--file", &allow],
            2,
            "no policy `west`",
        ),
    ];
    for (what, words, code, text) in table {
        let r = d.mg(&words);
        assert_eq!(r.code, code, "{what}: {r:?}");
        assert!(
            format!("{}{}", r.stdout, r.stderr).contains(text),
            "{what}: {r:?}"
        );
    }
    let shown = d
        .mg(&["--json", "policy", "show", "north"])
        .ok()
        .stdout
        .clone();
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["version"], 2, "{shown}");
    assert_eq!(shown["description"], "no reading", "{shown}");
    // The edited deny decides the next request.
    assert!(d.mg(&check).ok().stdout.starts_with("DENY"));
    let changes = d
        .mg(&["audit", "query", "--code", "admin.change"])
        .ok()
        .stdout
        .clone();
    assert!(
        changes.contains("edited policy north: statements were [") && changes.contains("deny"),
        "{changes}"
    );
    // Attached, it is not deleted, unless detached in the same change.
    d.mg(&["group", "add", "readers"]).ok();
    d.mg(&["group", "attach", "readers", "north"]).ok();
    let r = d.mg(&["policy", "delete", "north"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("user:kim")
            && r.stderr.contains("group:readers")
            && r.stderr.contains("--detach"),
        "{r:?}"
    );
    let r = d
        .mg(&["policy", "delete", "north", "--detach"])
        .ok()
        .stdout
        .clone();
    assert!(r.contains("detached from user:kim, group:readers"), "{r}");
    let kim = d.mg(&["user", "show", "kim"]).ok().stdout.clone();
    assert!(!kim.contains("north"), "{kim}");
    let group = d.mg(&["group", "show", "readers"]).ok().stdout.clone();
    assert!(!group.contains("north"), "{group}");
    assert!(d.mg(&check).ok().stdout.starts_with("DENY"));
}

#[test]
fn effective_access_and_who_can_through_the_socket() {
    let d = Daemon::start();
    let dir = d.dir.path();
    let policy = |name: &str, statements: &str| {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, format!("name = \"{name}\"\n{statements}")).unwrap();
        d.mg(&["policy", "create", "--file", path.to_str().unwrap()])
            .ok();
    };
    policy(
        "north-ops",
        "[[statement]]\neffect = \"allow\"\nroles = [\"Operator\"]\nmeters = [\"site=north\"]\n",
    );
    policy(
        "no-reset-2",
        "[[statement]]\neffect = \"deny\"\npermissions = [\"Peak Demand Reset\"]\nmeters = [\"meter-2\"]\n",
    );
    policy(
        "south-view",
        "[[statement]]\neffect = \"allow\"\npermissions = [\"Data View\"]\nmeters = [\"site=south\"]\nrequire_mfa = true\n",
    );
    d.mg(&["user", "add", "kim", "--email", "kim@example.net"])
        .ok();
    d.mg(&["user", "attach", "kim", "north-ops"]).ok();
    d.mg(&["user", "attach", "kim", "no-reset-2"]).ok();
    d.mg(&["group", "add", "crew"]).ok();
    d.mg(&["group", "attach", "crew", "south-view"]).ok();
    d.mg(&["group", "add-member", "crew", "kim"]).ok();

    let kim = d.mg(&["user", "permissions", "kim"]);
    kim.ok();
    let section = |name: &str| -> String {
        let start = kim
            .stdout
            .find(name)
            .unwrap_or_else(|| panic!("{name}: {}", kim.stdout));
        let rest = &kim.stdout[start + name.len()..];
        rest[..rest.find("\non ").unwrap_or(rest.len())].to_string()
    };
    // (meter, permission) → the line's words
    let table = [
        (
            "on meter meter-1:",
            "Peak Demand Reset",
            "ALLOW allowed by policy `north-ops` statement 1 via role Operator",
        ),
        (
            "on meter meter-2:",
            "Peak Demand Reset",
            "DENY  denied by policy `no-reset-2` statement 1",
        ),
        (
            "on meter meter-2:",
            "Peak Demand Reset",
            "takes away what is allowed by policy `north-ops` statement 1 via role Operator",
        ),
        (
            "on meter meter-2:",
            "Data View",
            "ALLOW allowed by policy `north-ops`",
        ),
        (
            "on meter meter-3:",
            "Data View",
            "ALLOW allowed by policy `south-view` statement 1; needs a second factor",
        ),
    ];
    for (meter, permission, words) in table {
        let s = section(meter);
        let line = s
            .lines()
            .find(|l| l.trim_start().starts_with(permission))
            .unwrap_or_else(|| panic!("{meter} {permission}: {}", kim.stdout));
        assert!(line.contains(words), "{meter} {permission}: {line}");
    }
    assert!(
        !section("on meter meter-3:").contains("Peak Demand Reset"),
        "{}",
        kim.stdout
    );

    let one = d.mg(&["user", "permissions", "kim", "--meter", "meter-3"]);
    assert!(one.ok().stdout.contains("on meter meter-3:"), "{one:?}");
    assert!(!one.stdout.contains("meter-1"), "{one:?}");

    let json = d.mg(&["--json", "user", "permissions", "kim", "--meter", "meter-2"]);
    let v: serde_json::Value = serde_json::from_str(&json.ok().stdout).unwrap();
    let reset = v["meter_groups"][0]["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["permission"] == "Peak Demand Reset")
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(reset["allowed"], false, "{v}");

    let group = d.mg(&["group", "permissions", "crew"]);
    assert!(group.ok().stdout.contains("on meter meter-3:"), "{group:?}");
    assert!(!group.stdout.contains("north-ops"), "{group:?}");

    // who-can answers as check does.
    let who = |meter: &str| {
        d.mg(&[
            "who-can",
            "--permission",
            "Peak Demand Reset",
            "--meter",
            meter,
        ])
    };
    assert!(who("meter-1").ok().stdout.contains("user:kim"));
    assert!(!who("meter-2").ok().stdout.contains("user:kim"));

    // A date ahead: after kim's end date, nothing.
    d.mg(&["user", "set-end-date", "kim", "2027-01-01"]).ok();
    let later = d.mg(&["user", "permissions", "kim", "--as-of", "2027-01-01"]);
    assert!(
        later
            .ok()
            .stdout
            .contains("nothing: every request is denied (access ended at 2027-01-01"),
        "{later:?}"
    );
    let later = d.mg(&[
        "who-can",
        "--permission",
        "Data View",
        "--meter",
        "meter-1",
        "--as-of",
        "2027-01-02",
    ]);
    assert!(!later.ok().stdout.contains("user:kim"), "{later:?}");

    // Bad input: a clear error, exit 2.
    // (words) → the error's words
    let bad: [(Vec<&str>, &str); 4] = [
        (vec!["user", "permissions", "nobody"], "no user:nobody"),
        (
            vec!["user", "permissions", "kim", "--meter", "meter-9"],
            "no meter `meter-9`",
        ),
        (
            vec!["who-can", "--permission", "Peak Demand Reset"],
            "give --meter METER",
        ),
        (
            vec!["user", "permissions", "kim", "--as-of", "soon"],
            "--as-of `soon`",
        ),
    ];
    for (words, says) in bad {
        let r = d.mg(&words);
        assert_eq!(r.code, 2, "{words:?}: {r:?}");
        assert!(r.stderr.contains(says), "{words:?}: {r:?}");
    }
}

#[test]
fn policy_history_keeps_every_version_with_who_and_when_across_a_restart() {
    let mut d = Daemon::start();
    let dir = d.dir.path().to_path_buf();
    let version = |n: u32, meters: &str| {
        let path = dir.join(format!("v{n}.toml"));
        std::fs::write(
            &path,
            format!("name = \"north\"\n[[statement]]\neffect = \"allow\"\npermissions = [\"Data View\"]\nmeters = [\"{meters}\"]\n"),
        )
        .unwrap();
        path.to_str().unwrap().to_string()
    };
    d.mg(&["policy", "create", "--file", &version(1, "meter-1")])
        .ok();
    d.mg(&["user", "add", "kim", "--email", "kim@example.net"])
        .ok();
    d.mg(&["user", "attach", "kim", "north"]).ok();
    d.mg(&["policy", "edit", "north", "--file", &version(2, "meter-2")])
        .ok();
    d.mg(&[
        "policy",
        "edit",
        "north",
        "--file",
        &version(3, "site=north"),
    ])
    .ok();
    d.restart(None);
    let h = d.mg(&["policy", "history", "north"]);
    let text = &h.ok().stdout;
    // (line that starts a version) → the statement shown under it
    for (head, statement) in [
        ("version 1: made ", "on meters meter-1"),
        ("version 2: made ", "on meters meter-2"),
        ("version 3 (current): made ", "on meters site=north"),
    ] {
        let at = text.find(head).unwrap_or_else(|| panic!("{head}: {text}"));
        let block: String = text[at..].lines().take(2).collect::<Vec<_>>().join("\n");
        assert!(block.contains(statement), "{head}: {block}");
        assert!(block.contains(" by local:"), "{head}: {block}");
    }
    assert!(text.contains("replaced "), "{text}");
    assert!(text.contains("attached to user:kim"), "{text}");
    let json = d.mg(&["--json", "policy", "history", "north"]);
    let v: serde_json::Value = serde_json::from_str(&json.ok().stdout).unwrap();
    let versions = v["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 3, "{v}");
    assert_eq!(versions[0]["version"], 1);
    assert_eq!(versions[2]["current"], true);

    // Deleted: the history stays, and the event says what was deleted.
    d.mg(&["policy", "delete", "north", "--detach"]).ok();
    let h = d.mg(&["policy", "history", "north"]);
    assert!(h.ok().stdout.contains("version 3: made "), "{h:?}");
    assert!(h.stdout.contains("; deleted "), "{h:?}");
    assert!(h.stdout.contains("(deleted: no current version)"), "{h:?}");
    let events = d.mg(&["audit", "query", "--code", "admin.change", "--limit", "50"]);
    assert!(
        events
            .ok()
            .stdout
            .contains("deleted policy north (version 3; statements were [allow \"Data View\" on meters site=north])"),
        "{events:?}"
    );
    let none = d.mg(&["policy", "history", "south"]);
    assert_eq!(none.code, 2, "{none:?}");
    assert!(none.stderr.contains("none ever was"), "{none:?}");
}

#[test]
fn every_admin_change_event_carries_the_old_and_new_values() {
    let d = Daemon::start();
    let policy = d.dir.path().join("north.toml");
    std::fs::write(
        &policy,
        "name = \"north\"\n[[statement]]\neffect = \"allow\"\npermissions = [\"Data View\"]\nmeters = [\"site=north\"]\n",
    )
    .unwrap();
    // (command) → words its admin.change event must carry
    #[rustfmt::skip]
    let table: Vec<(Vec<&str>, &str)> = vec![
        (vec!["user", "add", "kim", "--email", "kim@example.net", "--first", "Kim"], "created user kim: email kim@example.net, first name \"Kim\", last name \"\", end date none"),
        (vec!["user", "edit", "kim", "--email", "kim@example.org", "--last", "Lee"], "user kim: email kim@example.net → kim@example.org; last name \"\" → \"Lee\""),
        (vec!["user", "set-end-date", "kim", "2030-01-01"], "user kim: access end date none → 2030-01-01"),
        (vec!["user", "set-end-date", "kim", "2029-06-30"], "user kim: access end date 2030-01-01 → 2029-06-30"),
        (vec!["user", "deactivate", "kim"], "deactivated user kim: status ACTIVE → INACTIVE"),
        (vec!["user", "activate", "kim"], "activated user kim: status INACTIVE → ACTIVE"),
        (vec!["policy", "create", "--file", policy.to_str().unwrap()], "created policy north (1 statements: [allow \"Data View\" on meters site=north])"),
        (vec!["user", "attach", "kim", "north"], "policy north attached to user kim: policies [] → [north]"),
        (vec!["group", "add", "crew"], "created group crew"),
        (vec!["group", "add-member", "crew", "kim"], "user kim added to group crew: members [] → [kim]"),
        (vec!["group", "attach", "crew", "ReadOnly"], "policy ReadOnly attached to group crew: policies [] → [ReadOnly]"),
        (vec!["role", "create", "Reader", "--permission", "Data View"], "created role Reader"),
        (vec!["role", "edit", "Reader", "--add", "Terminal Access", "--remove", "Data View"], "role Reader: permissions [Data View] → [Terminal Access]"),
        (vec!["service-user", "add", "poller", "--description", "old"], "created service user poller"),
        (vec!["service-user", "edit", "poller", "--description", "SCADA poller"], "service user poller: description \"old\" → \"SCADA poller\""),
        (vec!["service-user", "attach", "poller", "ReadOnly"], "policy ReadOnly attached to service user poller: policies [] → [ReadOnly]"),
        (vec!["support", "grant", "--until", "2030-01-01", "--policy", "ReadOnly"], "granted support access until 2030-01-01 with ReadOnly"),
        (vec!["support", "update", "--until", "2030-02-01"], "support access end date 2030-01-01 → 2030-02-01"),
        (vec!["support", "revoke"], "revoked support access (was: until 2030-02-01, policies [ReadOnly])"),
        (vec!["group", "delete", "crew"], "deleted group crew (was: members [kim], policies [ReadOnly])"),
        (vec!["role", "delete", "Reader"], "deleted role Reader (was: permissions [Terminal Access])"),
        (vec!["user", "delete", "kim"], "deleted user kim (was: email kim@example.org, status ACTIVE, end date 2029-06-30, policies [north], groups [], 0 keys)"),
    ];
    for (words, says) in &table {
        d.mg(words).ok();
        let last = d.mg(&["audit", "query", "--code", "admin.change", "--limit", "1"]);
        assert!(
            last.ok().stdout.contains(says),
            "{words:?}: {}",
            last.stdout
        );
    }
}

/// The flags of `review --json` as (flag, principal) pairs.
fn review_flags(d: &Daemon) -> Vec<(String, String, String)> {
    let r = d.mg(&["--json", "review"]);
    let v: serde_json::Value = serde_json::from_str(&r.ok().stdout).unwrap();
    v["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["flag"].as_str().unwrap().to_string(),
                f["principal"].as_str().unwrap().to_string(),
                f["detail"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn review_flags_each_thing_that_needs_attention_as_time_passes() {
    let mut d = Daemon::start_with(Some("2027-01-01 12:00:00"));
    let pair =
        "[[separation_of_duties]]\npermissions = [\"User Management\", \"Security Logs Access\"]\n";
    // A conflict through a group, made while no pair was configured.
    d.reload_with(|t| t.replace(pair, ""));
    d.mg(&[
        "role",
        "create",
        "Auditor",
        "--permission",
        "Security Logs Access",
    ])
    .ok();
    d.mg(&[
        "role",
        "create",
        "Manager",
        "--permission",
        "User Management",
    ])
    .ok();
    for (name, email) in [
        ("adam", "adam@example.net"),
        ("tempy", "tempy@example.net"),
        ("leaver", "leaver@example.net"),
        ("sleeper", "sleeper@example.net"),
        ("dual", "dual@example.net"),
    ] {
        d.mg(&["user", "add", name, "--email", email]).ok();
    }
    d.mg(&["group", "add", "admins"]).ok();
    d.mg(&["group", "attach", "admins", "Administrator"]).ok();
    d.mg(&["group", "add-member", "admins", "adam"]).ok();
    d.mg(&["user", "set-end-date", "leaver", "2027-01-10"]).ok();
    let key =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx3b2FsbGF3bG9hbGxhd2xvYWxsYXdsb2FsbGF3bG9h sleeper";
    d.mg(&["user", "add-key", "sleeper", key]).ok();
    d.mg(&["user", "deactivate", "sleeper"]).ok();
    d.mg(&["service-user", "add", "robot"]).ok();
    d.mg(&["service-user", "key", "create", "robot"]).ok();
    d.mg(&["service-user", "deactivate", "robot"]).ok();
    d.mg(&["user", "grant-role", "dual", "Manager"]).ok();
    d.mg(&["group", "add", "auditors"]).ok();
    let p = d.dir.path().join("audit.toml");
    std::fs::write(
        &p,
        "name = \"audit\"\n[[statement]]\neffect = \"allow\"\nroles = [\"Auditor\"]\n",
    )
    .unwrap();
    d.mg(&["policy", "create", "--file", p.to_str().unwrap()])
        .ok();
    d.mg(&["group", "attach", "auditors", "audit"]).ok();
    d.mg(&["group", "add-member", "auditors", "dual"]).ok();
    d.mg(&[
        "support",
        "grant",
        "--until",
        "2027-02-01",
        "--policy",
        "ReadOnly",
    ])
    .ok();
    d.reload_with(|t| format!("{t}\n{pair}"));

    let has = |flags: &[(String, String, String)], kind: &str, who: &str, words: &str| {
        flags
            .iter()
            .any(|(k, p, detail)| k == kind && p == who && detail.contains(words))
    };
    // (flag, principal, words) → flagged on 2027-01-01, and on 2027-04-15
    #[rustfmt::skip]
    let table: [(&str, &str, &str, bool, bool); 12] = [
        ("administrator", "user:adam", "through group admins", true, true),
        ("temporary-password-unused", "user:tempy", "was never used", true, true),
        ("temporary-password-unused", "user:tempy", "it expired", false, true),
        ("end-date-soon", "user:leaver", "2027-01-10", true, false),
        ("end-date-passed", "user:leaver", "2027-01-10 has passed", false, true),
        ("keys-of-inactive", "user:sleeper", "1 SSH keys", true, true),
        ("keys-of-inactive", "svc:robot", "1 active access keys", true, true),
        ("separation-of-duties", "user:dual", "through group auditors", true, true),
        ("support-granted", "support", "until 2027-02-01 with [ReadOnly]", true, false),
        ("unused", "user:tempy", "last login never", false, true),
        ("unused", "user:sleeper", "", false, false),
        ("end-date-passed", "support", "2027-02-01 has passed", false, true),
    ];
    let now = review_flags(&d);
    // Who can do what where: from the guard's own view.
    let text = d.mg(&["review"]).ok().stdout.clone();
    assert!(text.contains("user:dual (ACTIVE"), "{text}");
    assert!(
        text.contains("anywhere: Security Logs Access, User Management"),
        "{text}"
    );
    assert!(text.contains("[separation-of-duties] user:dual"), "{text}");
    d.restart(Some("2027-04-15 12:00:00"));
    let later = review_flags(&d);
    for (kind, who, words, at_first, at_last) in table {
        assert_eq!(
            has(&now, kind, who, words),
            at_first,
            "{kind} {who} on 2027-01-01: {now:?}"
        );
        assert_eq!(
            has(&later, kind, who, words),
            at_last,
            "{kind} {who} on 2027-04-15: {later:?}"
        );
    }
    // After the temporary passwords expired, the view says so.
    let text = d.mg(&["review"]).ok().stdout.clone();
    assert!(
        text.contains("nothing now: temporary password expired"),
        "{text}"
    );
}
