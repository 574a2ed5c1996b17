//! Temporary passwords by mail through a real SMTP relay (aiosmtpd, with
//! STARTTLS and AUTH required): the message arrives with the password and
//! the new user logs in with it over SSH; a resend's mail replaces the
//! first password; with the relay down, nothing usable is left behind; the
//! demo writes its mail as files.

#[path = "common/daemon.rs"]
mod daemon;
#[path = "common/api.rs"]
mod harness;
#[path = "common/ssh.rs"]
mod ssh;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use daemon::{BIN, Daemon, free_port, gateway_config};

/// aiosmtpd through tests/peers/smtp.py; stops when dropped.
struct Relay {
    child: Child,
    dir: PathBuf,
}

impl Relay {
    fn start(port: u16, dir: &Path, tls: &Path) -> Relay {
        std::fs::create_dir_all(dir).unwrap();
        let mut child = Command::new("python3")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/smtp.py"))
            .arg(port.to_string())
            .arg(dir)
            .arg(tls.join("server.crt"))
            .arg(tls.join("server.key"))
            .args(["gw", "relay-secret-1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        if line.trim() != "ready" {
            let out = child.wait_with_output().unwrap();
            panic!(
                "the SMTP relay did not start: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Relay {
            child,
            dir: dir.to_path_buf(),
        }
    }

    /// The `n`th message (1-based), waiting for it (bounded).
    fn message(&self, n: usize) -> serde_json::Value {
        let path = self.dir.join(format!("{n}.json"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while !path.exists() {
            assert!(
                Instant::now() < deadline,
                "no message {n} in {:?}",
                self.dir
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn stop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The password line of a message's text part.
fn password_in(message: &serde_json::Value) -> String {
    let text = message["text"].as_str().unwrap();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Temporary password:"))
        .unwrap_or_else(|| panic!("no password in {text}"))
        .trim()
        .to_string()
}

fn login(port: u16, user: &str, temporary: &str, new: &str) -> serde_json::Value {
    ssh::paramiko(port, &["interactive", user, "whoami", temporary, new, new])
}

#[test]
fn temporary_passwords_go_by_mail_and_a_failed_send_leaves_nothing_usable() {
    let (smtp, ssh_port) = (free_port(), free_port());
    let d = Daemon::start_text(|socket| {
        let dir = socket.parent().unwrap();
        for args in [
            vec!["init-ca", "--ca", "ca"],
            vec!["server", "--ca", "ca", "--out", "tls"],
        ] {
            let out = Command::new(BIN)
                .arg("cert")
                .args(&args)
                .current_dir(dir)
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
        }
        let secret = dir.join("smtp-password");
        std::fs::write(&secret, "relay-secret-1\n").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        gateway_config(
            socket,
            &format!(
                "[ssh]\nlisten = [\"127.0.0.1:{ssh_port}\"]\n\
                 [mail]\nhost = \"127.0.0.1\"\nport = {smtp}\ntls = \"starttls\"\nca = \"ca/ca.crt\"\n\
                 username = \"gw\"\npassword_file = \"smtp-password\"\n\
                 from = \"metergate <gw@example.org>\"\nlogin_url = \"https://gw.example.org/\"\n"
            ),
        )
    });
    let mut relay = Relay::start(smtp, &d.dir.path().join("inbox"), &d.dir.path().join("tls"));

    let added = d.mg(&[
        "user",
        "add",
        "newbie",
        "--email",
        "newbie@example.org",
        "--first",
        "Nia",
        "--last",
        "Ewbie",
    ]);
    added.ok();
    assert!(
        added.stdout.contains("sent by mail to newbie@example.org"),
        "{added:?}"
    );
    assert!(!added.stdout.contains("temporary password:"), "{added:?}");
    let first = relay.message(1);
    // (field) → what the relay saw
    for (field, want) in [
        ("rcpt_tos", serde_json::json!(["newbie@example.org"])),
        ("login", serde_json::json!("gw")),
        ("tls", serde_json::json!(true)),
        ("content_type", serde_json::json!("multipart/alternative")),
        ("from", serde_json::json!("metergate <gw@example.org>")),
        (
            "subject",
            serde_json::json!("Your metergate account newbie"),
        ),
    ] {
        assert_eq!(first[field], want, "{field}: {first}");
    }
    let text = first["text"].as_str().unwrap();
    for words in [
        "Hello Nia Ewbie,",
        "User name:           newbie",
        "It expires at",
        "(30 days)",
        "Log in at:           https://gw.example.org/",
        "You must change this password at your first login",
    ] {
        assert!(text.contains(words), "{words}: {text}");
    }
    let pw1 = password_in(&first);
    assert!(
        first["html"]
            .as_str()
            .unwrap()
            .contains(&format!("<code>{pw1}</code>")),
        "{first}"
    );

    // Resend: a second mail, and the first password no longer works.
    let resent = d.mg(&["user", "resend-password", "newbie"]);
    assert!(resent.ok().stdout.contains("sent by mail"), "{resent:?}");
    let second = relay.message(2);
    assert_eq!(second["subject"], "A new temporary password for newbie");
    let pw2 = password_in(&second);
    assert_ne!(pw1, pw2);
    let r = login(ssh_port, "newbie", &pw1, "Harbour crane 4 quietly");
    assert_eq!(r["ok"], false, "the first password still works: {r}");
    let r = login(ssh_port, "newbie", &pw2, "Harbour crane 4 quietly");
    assert_eq!(r["ok"], true, "{r}");
    assert!(r["stdout"].as_str().unwrap().contains("user:newbie"), "{r}");

    // Events say who was mailed; no password reaches the log.
    let sent = d.mg(&["audit", "query", "--code", "mail.sent", "--limit", "10"]);
    assert_eq!(
        sent.ok().stdout.matches("newbie@example.org").count(),
        2,
        "{sent:?}"
    );
    let log = d.mg(&["audit", "tail", "-n", "200"]).ok().stdout.clone();
    assert!(
        !log.contains(&pw1) && !log.contains(&pw2),
        "a password reached the log"
    );

    // The relay is down: no account whose password nobody got, and why.
    relay.stop();
    let ghost = d.mg(&["user", "add", "ghost", "--email", "ghost@example.org"]);
    assert_eq!(ghost.code, 1, "{ghost:?}");
    assert!(
        ghost
            .stderr
            .contains("the welcome mail to ghost@example.org could not be sent"),
        "{ghost:?}"
    );
    assert!(
        ghost.stderr.contains("user ghost was not created"),
        "{ghost:?}"
    );
    assert_eq!(d.mg(&["user", "show", "ghost"]).code, 2);
    // A resend that cannot be mailed revokes the new password: the one
    // newbie set still works.
    let again = d.mg(&["user", "resend-password", "newbie"]);
    assert_eq!(again.code, 1, "{again:?}");
    assert!(
        again
            .stderr
            .contains("the new temporary password was revoked"),
        "{again:?}"
    );
    let r = ssh::paramiko(
        ssh_port,
        &["password", "newbie", "Harbour crane 4 quietly", "whoami"],
    );
    assert_eq!(r["ok"], true, "{r}");
    let failed = d.mg(&["audit", "query", "--code", "mail.failed", "--limit", "10"]);
    let failed = &failed.ok().stdout;
    assert!(
        failed.contains("ghost@example.org") && failed.contains("newbie@example.org"),
        "{failed}"
    );
}

#[test]
fn a_relay_password_file_others_can_read_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let config = dir.path().join("metergate.toml");
    std::fs::write(
        &config,
        gateway_config(
            &socket,
            "[mail]\nhost = \"127.0.0.1\"\nusername = \"gw\"\npassword_file = \"smtp-password\"\nfrom = \"gw@example.org\"\n",
        ),
    )
    .unwrap();
    let secret = dir.path().join("smtp-password");
    std::fs::write(&secret, "relay-secret-1\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let check = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "the config itself is valid: {check:?}"
    );
    // Bounded: a daemon that started anyway is stopped after 30 s.
    let serve = Command::new("timeout")
        .args(["30", BIN, "serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&serve.stderr);
    assert!(!serve.status.success(), "{err}");
    assert!(
        err.contains("mail.password_file") && err.contains("chmod 600"),
        "{err}"
    );
    assert!(!err.contains("relay-secret-1"), "{err}");
}

#[test]
fn the_demo_writes_its_mail_as_files() {
    let (d, _ports) = Daemon::start_demo_at(None);
    let added = d.mg(&["user", "add", "ada", "--email", "ada@example.org"]);
    // The demo prints the password too (print_temporary_password).
    let printed = added
        .ok()
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("temporary password: "))
        .unwrap_or_else(|| panic!("{added:?}"))
        .to_string();
    let mail = d.config.with_file_name("mail");
    let deadline = Instant::now() + Duration::from_secs(20);
    let eml = loop {
        let found = std::fs::read_dir(&mail)
            .ok()
            .and_then(|mut r| r.find_map(|e| e.ok().map(|e| e.path())))
            .filter(|p| p.extension().is_some_and(|x| x == "eml"));
        if let Some(p) = found {
            break p;
        }
        assert!(Instant::now() < deadline, "no .eml in {mail:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&eml).unwrap();
    let mode = std::fs::metadata(&mail).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the outbox holds passwords: {mode:o}");
    assert!(text.contains("To: ada@example.org"), "{text}");
    assert!(text.contains("multipart/alternative"), "{text}");
    assert!(text.contains(&printed), "{text}");
}

#[test]
fn through_the_api_the_answer_says_where_the_password_went_not_what_it_is() {
    let a = harness::api_with(
        "\n[mail]\ndirectory = \"outbox\"\nfrom = \"metergate <gw@example.org>\"\n",
    );
    let (id, secret) = harness::key_of(&a.d, "provisioner");
    let (status, body) = a.token(&id, &secret);
    assert_eq!(status, 200, "{body}");
    let token = harness::json(&body)["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let outbox = a.d.config.with_file_name("outbox");
    let count = || std::fs::read_dir(&outbox).map(|r| r.count()).unwrap_or(0);
    // (call) → status, and one more message in the outbox
    for (method, path, body, want) in [
        (
            "POST",
            "/api/v1/users",
            Some(r#"{"name": "vic", "email": "vic@example.org"}"#),
            201,
        ),
        (
            "POST",
            "/api/v1/users/vic/resend-temporary-password",
            None,
            200,
        ),
    ] {
        let before = count();
        let (status, text) = a.call(&token, method, path, body);
        assert_eq!(status, want, "{method} {path}: {text}");
        let v = harness::json(&text);
        assert_eq!(v["mailed_to"], "vic@example.org", "{v}");
        assert!(v.get("temporary_password").is_none(), "{v}");
        assert_eq!(
            count(),
            before + 1,
            "{method} {path}: no message in {outbox:?}"
        );
    }
}

#[test]
fn an_own_template_is_filled_in_and_one_without_the_password_is_refused() {
    let d = Daemon::start_text(|socket| {
        let dir = socket.parent().unwrap();
        std::fs::write(
            dir.join("welcome.txt"),
            "Hi {{ greeting }} ({{ occasion }}): log in as {{ user }} with {{ password }} before {{ expires }} at {{ login_url }}.\n",
        )
        .unwrap();
        gateway_config(
            socket,
            "[mail]\ndirectory = \"outbox\"\nfrom = \"gw@example.org\"\nlogin_url = \"https://gw/\"\ntemplate = \"welcome.txt\"\nprint_temporary_password = true\n",
        )
    });
    let added = d.mg(&["user", "add", "tom", "--email", "tom@example.org"]);
    let password = added
        .ok()
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("temporary password: "))
        .unwrap_or_else(|| panic!("{added:?}"))
        .to_string();
    let outbox = d.config.with_file_name("outbox");
    let eml = std::fs::read_dir(&outbox)
        .unwrap()
        .find_map(|e| e.ok().map(|e| e.path()))
        .unwrap();
    let text = std::fs::read_to_string(eml).unwrap();
    assert!(
        text.contains(&format!(
            "Hi tom (welcome): log in as tom with {password} before "
        )),
        "{text}"
    );
    assert!(text.contains("at https://gw/."), "{text}");
    assert!(text.contains("<pre"), "the HTML alternative: {text}");
    // A template that would never give the password is refused, naming it.
    std::fs::write(d.config.with_file_name("welcome.txt"), "Hi {{ user }}\n").unwrap();
    let check = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&d.config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(2), "{err}");
    assert!(
        err.contains("mail.template") && err.contains("has no {{ password }}"),
        "{err}"
    );
}
