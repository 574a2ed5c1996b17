//! The SSH door driven by OpenSSH's own `ssh` (a client nobody here wrote):
//! key login and exec, a wrong key refused, forwarding refused, admin
//! commands as the caller's policies allow, everything in the log.

#[path = "common/daemon.rs"]
mod daemon;
#[path = "common/ssh.rs"]
mod ssh;

use std::path::{Path, PathBuf};

use daemon::*;
use ssh::{hold, keygen, paramiko, wait_gone};

struct Gateway {
    d: Daemon,
    port: u16,
}

fn gateway() -> Gateway {
    gateway_with("")
}

/// A gateway whose `[ssh]` section also holds `extra`.
fn gateway_with(extra: &str) -> Gateway {
    let port = free_port();
    let d = Daemon::start_text(|s| {
        gateway_config(
            s,
            &format!("[ssh]\nlisten = [\"127.0.0.1:{port}\"]\n{extra}"),
        )
    });
    Gateway { d, port }
}

impl Gateway {
    fn ssh(&self, key: &Path, user: &str, extra: &[&str], command: &str) -> Run {
        ssh::ssh(self.port, key, user, extra, command)
    }

    fn user_with_key(&self, name: &str) -> PathBuf {
        let key = keygen(self.d.dir.path(), name);
        self.d
            .mg(&[
                "user",
                "add",
                name,
                "--email",
                &format!("{name}@example.org"),
            ])
            .ok();
        let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        self.d.mg(&["user", "add-key", name, public.trim()]).ok();
        key
    }

    fn events(&self, code: &str) -> String {
        self.d
            .mg(&["audit", "query", "--code", code, "--limit", "100"])
            .ok()
            .stdout
            .clone()
    }
}

#[test]
fn key_login_runs_commands_and_each_session_is_logged() {
    let g = gateway();
    let key = g.user_with_key("alice");
    let r = g.ssh(&key, "alice", &[], "whoami");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.starts_with("principal:  user:alice\n"), "{r:?}");
    let help = g.ssh(&key, "alice", &[], "frobnicate now");
    assert_eq!(help.code, 2, "{help:?}");
    assert!(
        help.stderr.contains("unknown command `frobnicate`"),
        "{help:?}"
    );
    assert!(help.stdout.contains("whoami"), "help on stdout: {help:?}");
    let logins = g.events("login.success");
    assert!(logins.contains("user:alice"), "{logins}");
    // The session's start and end, with the source.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let ends = g.events("session.end");
        if ends.matches("user:alice").count() >= 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no session.end: {ends}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(g.events("session.start").contains("user:alice"));
    // The host key was made at first start, readable by the daemon alone.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(g.d.state_dir().join("ssh_host_ed25519_key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn a_key_that_is_not_the_users_is_refused() {
    let g = gateway();
    g.user_with_key("alice");
    let stranger = keygen(g.d.dir.path(), "stranger");
    for (key, user) in [(&stranger, "alice"), (&stranger, "nobody")] {
        let r = g.ssh(key, user, &[], "whoami");
        assert_eq!(r.code, 255, "{r:?}");
        assert!(r.stderr.contains("Permission denied"), "{r:?}");
        assert!(r.stdout.is_empty());
    }
}

#[test]
fn an_inactive_user_cannot_log_in_and_the_event_says_why() {
    let g = gateway();
    let key = g.user_with_key("ivan");
    g.d.mg(&["user", "deactivate", "ivan"]).ok();
    let r = g.ssh(&key, "ivan", &[], "whoami");
    assert_eq!(r.code, 255, "{r:?}");
    let denied = g.events("login.failure");
    assert!(denied.contains("user:ivan"), "{denied}");
}

#[test]
fn remote_and_local_forwarding_are_refused_and_logged() {
    let g = gateway();
    let key = g.user_with_key("alice");
    let remote = g.ssh(
        &key,
        "alice",
        &[
            "-o",
            "ExitOnForwardFailure=yes",
            "-R",
            "127.0.0.1:0:127.0.0.1:22",
        ],
        "whoami",
    );
    assert_eq!(remote.code, 255, "{remote:?}");
    assert!(
        remote.stderr.to_lowercase().contains("forwarding failed"),
        "{remote:?}"
    );
    let refused = g.events("ssh.forward.deny");
    assert!(refused.contains("remote port forwarding"), "{refused}");
}

#[test]
fn admin_commands_run_as_the_callers_policies_allow() {
    let g = gateway();
    let alice = g.user_with_key("alice");
    let admin = g.user_with_key("ada");
    g.d.mg(&["user", "attach", "ada", "Administrator"]).ok();
    // (who, command) -> (exit status, what it prints)
    let table: [(&Path, &str, &str, i32, &str); 4] = [
        (&alice, "alice", "user list", 1, "DENY: "),
        (&admin, "ada", "user list", 0, "alice"),
        (
            &admin,
            "ada",
            "audit query --code login.success",
            0,
            "user:ada",
        ),
        // A streamed answer (export) comes through whole.
        (
            &admin,
            "ada",
            "audit export --from 1",
            0,
            "{\"v\":1,\"seq\":1,",
        ),
    ];
    for (key, user, command, code, shows) in table {
        let r = g.ssh(key, user, &[], command);
        assert_eq!(r.code, code, "{user} {command}: {r:?}");
        assert!(
            r.stdout.contains(shows) || r.stderr.contains(shows),
            "{user} {command}: {r:?}"
        );
    }
    let denied = g.events("admin.deny");
    assert!(denied.contains("user:alice"), "{denied}");
}

fn temporary_password(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("temporary password: "))
        .expect("user add prints the temporary password")
        .trim()
        .to_string()
}

#[test]
fn a_first_login_replaces_the_temporary_password_then_the_password_works() {
    let g = gateway();
    let added =
        g.d.mg(&["user", "add", "bob", "--email", "bob@example.org"])
            .ok()
            .stdout
            .clone();
    let temp = temporary_password(&added);
    // The temporary password is refused on the plain password method.
    let r = paramiko(g.port, &["password", "bob", &temp, "whoami"]);
    assert_eq!(r["ok"], false, "{r}");
    let why = g.events("login.failure");
    assert!(
        why.contains("temporary password is refused on the password method"),
        "{why}"
    );
    // keyboard-interactive: the temporary password, then two refused new
    // ones (too short; containing the user name), then a good one.
    let r = paramiko(
        g.port,
        &[
            "interactive",
            "bob",
            "whoami",
            &temp,
            "short",
            "short",
            "bob-is-my-password",
            "bob-is-my-password",
            "Granite lantern 7 ferry",
            "Granite lantern 7 ferry",
        ],
    );
    assert_eq!(r["ok"], true, "{r}");
    assert!(first_line(&r["stdout"]) == "principal:  user:bob", "{r}");
    let rounds = r["rounds"].as_array().unwrap();
    let prompts: Vec<Vec<&str>> = rounds
        .iter()
        .map(|x| {
            x["prompts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(prompts[0], ["Temporary password: "], "{r}");
    for p in &prompts[1..] {
        assert_eq!(p, &["New password: ", "Repeat new password: "], "{r}");
    }
    assert_eq!(rounds.len(), 4, "{r}");
    assert!(
        rounds[2]["instructions"]
            .as_str()
            .unwrap()
            .contains("too short"),
        "{r}"
    );
    assert!(
        rounds[3]["instructions"]
            .as_str()
            .unwrap()
            .contains("user name"),
        "{r}"
    );
    // The new password now works on the password method; the old one not.
    let r = paramiko(
        g.port,
        &["password", "bob", "Granite lantern 7 ferry", "whoami"],
    );
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(first_line(&r["stdout"]), "principal:  user:bob", "{r}");
    let r = paramiko(g.port, &["password", "bob", &temp, "whoami"]);
    assert_eq!(r["ok"], false, "{r}");
    assert!(g.events("password.changed").contains("user:bob"));
    // A password never reaches the log.
    let all = g.d.mg(&["audit", "export"]).ok().stdout.clone();
    for secret in [
        temp.as_str(),
        "Granite lantern 7 ferry",
        "bob-is-my-password",
    ] {
        assert!(!all.contains(secret), "a password is in the log");
    }
}

#[test]
fn password_failures_lock_password_login_but_not_keys_until_unlocked() {
    let g = gateway();
    let key = g.user_with_key("carol");
    let temp = temporary_password(
        &g.d.mg(&["user", "resend-password", "carol"])
            .ok()
            .stdout
            .clone(),
    );
    let good = "Quiet harbor 42 lamps";
    let r = paramiko(
        g.port,
        &["interactive", "carol", "whoami", &temp, good, good],
    );
    assert_eq!(r["ok"], true, "{r}");
    for _ in 0..5 {
        let r = paramiko(g.port, &["password", "carol", "not the password", "whoami"]);
        assert_eq!(r["ok"], false, "{r}");
    }
    assert!(g.events("login.lockout").contains("user:carol"));
    // Locked: the right password is refused, the key is not.
    let r = paramiko(g.port, &["password", "carol", good, "whoami"]);
    assert_eq!(r["ok"], false, "{r}");
    assert!(
        g.events("login.failure")
            .contains("password login is locked until")
    );
    let r = g.ssh(&key, "carol", &[], "whoami");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.starts_with("principal:  user:carol\n"), "{r:?}");
    g.d.mg(&["user", "unlock", "carol"]).ok();
    let r = paramiko(g.port, &["password", "carol", good, "whoami"]);
    assert_eq!(first_line(&r["stdout"]), "principal:  user:carol", "{r}");
}

#[test]
fn a_live_session_ends_when_its_user_is_deactivated_or_it_is_killed() {
    let g = gateway();
    let key = g.user_with_key("dora");
    // Killed by an administrator.
    let mut child = hold(g.port, &key, "dora");
    let id = wait_listed(&g, "dora");
    g.d.mg(&["session", "kill", &id]).ok();
    wait_gone(&mut child);
    // Ended by deactivating the user.
    let mut child = hold(g.port, &key, "dora");
    wait_listed(&g, "dora");
    g.d.mg(&["user", "deactivate", "dora"]).ok();
    wait_gone(&mut child);
    let ends = g.events("session.end");
    assert!(ends.contains("ended by"), "{ends}");
    assert!(ends.contains("deactivated"), "{ends}");
}

/// Waits until `session list` shows an SSH session of `user`; its id.
fn wait_listed(g: &Gateway, user: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let list = g.d.mg(&["session", "list"]).ok().stdout.clone();
        if let Some(line) = list
            .lines()
            .find(|l| l.contains(&format!("user:{user}")) && l.contains("ssh"))
        {
            return line.split_whitespace().next().unwrap().to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no live ssh session: {list}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn sessions_per_principal_and_their_length_are_bounded() {
    let g = gateway_with("max_sessions_per_principal = 1\nmax_session = \"3s\"\n");
    let key = g.user_with_key("erin");
    let mut first = hold(g.port, &key, "erin");
    wait_listed(&g, "erin");
    // A second concurrent session is refused, and the event says why.
    let r = g.ssh(&key, "erin", &[], "whoami");
    assert_eq!(r.code, 255, "{r:?}");
    let refused = g.events("session.refused");
    assert!(
        refused.contains("the maximum per principal is 1"),
        "{refused}"
    );
    // The first ends by itself at the maximum session length.
    wait_gone(&mut first);
    let ends = g.events("session.end");
    assert!(ends.contains("maximum session length"), "{ends}");
}

/// The first line of a paramiko result's output (`whoami` names the
/// principal there).
fn first_line(v: &serde_json::Value) -> &str {
    v.as_str().unwrap_or("").lines().next().unwrap_or("")
}
