//! The second factor (TOTP) on the demo, with codes from pyotp and clients
//! nobody here wrote (paramiko, OpenSSH through pexpect): key then code,
//! password then code, keyboard-interactive Password then Code, replay and
//! clock skew, recovery codes, `require_mfa` with step-up in the shell, and
//! wrong codes that lock password login but not key-and-code login.

#[path = "common/daemon.rs"]
mod daemon;
#[path = "common/site.rs"]
mod site;
#[path = "common/ssh.rs"]
mod ssh;

use std::process::Command;

use serde_json::Value;
use site::Site;
use ssh::{keygen, public_line};

/// Runs tests/peers/ssh_mfa.py (paramiko and pyotp).
fn login(port: u16, args: &[&str]) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/ssh_mfa.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(port.to_string())
        .args(args)
        .output()
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "{e}: {text}{}",
            String::from_utf8_lossy(&out.stderr) // names the pip install
        )
    })
}

/// pyotp's code for `secret` at now + `offset` seconds.
fn pyotp(secret: &str, offset: i64) -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import pyotp, sys, time; print(pyotp.TOTP(sys.argv[1]).at(time.time() + int(sys.argv[2])))",
            secret,
            &offset.to_string(),
        ])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "pyotp is missing: pip install 'pyotp==2.9.0' (.ci/run does): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Enrols and confirms `user`'s factor through the control socket; the
/// secret and the recovery codes.
fn enrol(s: &Site, user: &str) -> (String, Vec<String>) {
    let r = s.d.mg(&["--json", "user", "mfa", "enroll", user]);
    r.ok();
    let v: Value = serde_json::from_str(&r.stdout).expect("JSON");
    let secret = v["secret"].as_str().expect("the secret").to_string();
    let uri = v["otpauth_uri"].as_str().expect("the URI");
    // pyotp reads the URI as an authenticator app would.
    let parsed = Command::new("python3")
        .args([
            "-c",
            "import pyotp, sys; t = pyotp.parse_uri(sys.argv[1]); print(t.secret, t.issuer, t.name, t.digits, t.interval)",
            uri,
        ])
        .output()
        .expect("python3 runs");
    assert_eq!(
        String::from_utf8_lossy(&parsed.stdout).trim(),
        format!("{secret} metergate {user} 6 30"),
        "{uri}: {}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    // Not active before a code confirms it: a wrong code is refused.
    let wrong = s.d.mg(&["user", "mfa", "confirm", user, "000000"]);
    assert_eq!(wrong.code, 2, "{wrong:?}");
    assert!(wrong.stderr.contains("does not match"), "{wrong:?}");
    let r =
        s.d.mg(&["--json", "user", "mfa", "confirm", user, &pyotp(&secret, 0)]);
    r.ok();
    let v: Value = serde_json::from_str(&r.stdout).expect("JSON");
    let codes: Vec<String> = v["recovery_codes"]
        .as_array()
        .expect("recovery codes")
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert_eq!(codes.len(), 10, "{v}");
    (secret, codes)
}

/// Waits (31 s at most) for a TOTP step to begin, so the steps a test
/// names relative to now stay the same for the next half minute.
fn fresh_step() {
    loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        if now.as_secs() % 30 < 2 {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

fn prompts(r: &Value) -> Vec<Vec<String>> {
    r["rounds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            x["prompts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap().to_string())
                .collect()
        })
        .collect()
}

/// Runs tests/peers/openssh_mfa.py: OpenSSH's `ssh` through pexpect.
fn openssh(port: u16, user: &str, key: &str, password: &str, code: &str) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/openssh_mfa.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(port.to_string())
        .args([user, key, password, code, "whoami"])
        .output()
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "{e}: {text}{}",
            String::from_utf8_lossy(&out.stderr) // names the pip install
        )
    })
}

#[test]
fn a_key_then_a_code_with_replay_refused_and_one_step_of_skew() {
    let s = Site::start();
    fresh_step();
    let (secret, _) = enrol(&s, "crew");
    let key = s.key("crew");
    let key = key.to_str().unwrap();
    let totp = |offset: i64| format!("totp:{secret}:{offset}");
    // (code offset in seconds) -> let in? One step either side is accepted
    // (RFC 6238 §5.2) and each code counts once: the confirmation used
    // this step's.
    let mut used = String::new();
    for (offset, allowed) in [(-30, true), (0, false), (30, true)] {
        let r = openssh(s.port, "crew", key, "-", &totp(offset));
        used = r["codes"][0].as_str().unwrap_or_default().to_string();
        assert_eq!(r["status"] == 0, allowed, "offset {offset}: {r}");
        assert_eq!(r["prompts"][0], "Code: ", "{r}");
        if allowed {
            assert!(
                r["output"]
                    .as_str()
                    .unwrap()
                    .contains("principal:  user:crew"),
                "{r}"
            );
        }
    }
    assert!(s.events("mfa.code-refused").contains("already used"));
    // Two steps away: refused.
    for offset in [-75, 75] {
        let r = openssh(s.port, "crew", key, "-", &totp(offset));
        assert_ne!(r["status"], 0, "offset {offset}: {r}");
    }
    // OpenSSH in batch mode cannot answer the code: a key alone is no
    // longer enough for a person with a factor.
    let r = s.ssh("crew", "whoami");
    assert_ne!(r.code, 0, "{r:?}");
    // The last code used, replayed word for word: refused.
    let replay = openssh(s.port, "crew", key, "-", &format!("text:{used}"));
    assert_ne!(replay["status"], 0, "{replay}");
    // Neither the secret nor a code reaches the log; the logins say a
    // second factor was given.
    let all = s.d.mg(&["audit", "export"]).ok().stdout.clone();
    assert!(
        all.lines().any(|l| l.contains("login.success")
            && l.contains("user:crew")
            && l.contains("\"second_factor\":\"totp\"")),
        "{all}"
    );
    assert!(!all.contains(&secret), "the secret is in the log");
    assert!(
        !all.contains(&format!("\"{used}\"")),
        "a code is in the log"
    );
}

#[test]
fn a_password_then_a_code_and_recovery_codes_that_work_once() {
    let s = Site::start();
    fresh_step();
    let (secret, recovery) = enrol(&s, "viewer");
    let password = s.d.demo_password("viewer");
    // OpenSSH: the password method, then keyboard-interactive for the code
    // (RFC 4252 partial success).
    let r = openssh(
        s.port,
        "viewer",
        "-",
        &password,
        &format!("totp:{secret}:-30"),
    );
    assert_eq!(r["status"], 0, "{r}");
    assert_eq!(
        r["prompts"],
        serde_json::json!(["password: ", "Code: "]),
        "{r}"
    );
    // paramiko, keyboard-interactive alone: `Password: `, then `Code: `.
    let r = login(
        s.port,
        &[
            "interactive",
            "viewer",
            &password,
            &format!("totp:{secret}:30"),
        ],
    );
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(prompts(&r), [vec!["Password: "], vec!["Code: "]], "{r}");
    // A recovery code, typed in upper case without dashes: once.
    let typed = recovery[3].replace('-', "").to_uppercase();
    let r = login(
        s.port,
        &["interactive", "viewer", &password, &format!("text:{typed}")],
    );
    assert_eq!(r["ok"], true, "{r}");
    let r = login(
        s.port,
        &[
            "interactive",
            "viewer",
            &password,
            &format!("text:{}", recovery[3]),
        ],
    );
    assert_eq!(r["ok"], false, "{r}");
    assert!(s.events("mfa.recovery-used").contains("9 left"));
    let shown = s.d.mg(&["user", "show", "viewer"]).ok().stdout.clone();
    assert!(shown.contains("second factor:    active since"), "{shown}");
    assert!(shown.contains("(9 recovery codes left)"), "{shown}");
    // A wrong password never reaches the code.
    let r = login(
        s.port,
        &[
            "interactive",
            "viewer",
            "not the password",
            &format!("totp:{secret}"),
        ],
    );
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(prompts(&r), [vec!["Password: "]], "{r}");
    // Reset by User Management: the password alone works again.
    s.d.mg(&["user", "mfa", "reset", "viewer"]).ok();
    let r = login(s.port, &["interactive", "viewer", &password, "none"]);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(prompts(&r), [vec!["Password: "]], "{r}");
    for code in ["mfa.enroll", "mfa.confirm", "mfa.reset"] {
        assert!(s.events(code).contains("viewer"), "{code}");
    }
    let all = s.d.mg(&["audit", "export"]).ok().stdout.clone();
    for r in &recovery {
        assert!(!all.contains(r.as_str()), "a recovery code is in the log");
    }
}

#[test]
fn require_mfa_denies_a_key_only_session_until_it_steps_up() {
    let s = Site::start();
    let dir = s.d.dir.path();
    let policy = dir.join("resetters.toml");
    std::fs::write(
        &policy,
        "name = \"resetters\"\n\
         [[statement]]\neffect = \"allow\"\npermissions = [\"Data View\"]\nmeters = [\"meter-3\"]\n\
         [[statement]]\neffect = \"allow\"\npermissions = [\"Master Reset\"]\nmeters = [\"meter-3\"]\nrequire_mfa = true\n",
    )
    .unwrap();
    s.d.mg(&["policy", "create", "--file", policy.to_str().unwrap()])
        .ok();
    s.d.mg(&["user", "add", "opal", "--email", "opal@example.org"])
        .ok();
    s.d.mg(&["user", "attach", "opal", "resetters"]).ok();
    let key = keygen(dir, "opal");
    s.d.mg(&["user", "add-key", "opal", &public_line(&key)])
        .ok();
    // `check` says what is missing, and what a factor would change.
    let c = s.d.mg(&[
        "check",
        "--principal",
        "opal",
        "--permission",
        "master-reset",
        "--meter",
        "meter-3",
    ]);
    assert!(
        c.stdout
            .contains("needs a second factor: policy `resetters` statement 2"),
        "{c:?}"
    );
    assert!(c.stdout.contains("with a second factor: ALLOW"), "{c:?}");
    let review = s.d.mg(&["review"]).ok().stdout.clone();
    assert!(
        review.contains("user:opal") && review.contains("no second factor"),
        "{review}"
    );
    // A key-only session: denied with the reason; it enrols in the shell
    // (confirming is not stepping up), steps up with a code, then resets.
    let r = login(
        s.port,
        &[
            "key",
            "opal",
            key.to_str().unwrap(),
            "none",
            "send:master-reset meter-3",
            "expect:DENY: Master Reset on meter-3: needs a second factor",
            "send:mfa enroll",
            "secret",
            "expect:Code from the app: ",
            "code:",
            "expect:recovery codes",
            "send:master-reset meter-3",
            "expect:needs a second factor",
            "send:mfa",
            "expect:Code: ",
            "code::30",
            "expect:second factor accepted",
            "send:master-reset meter-3",
            "expect:master-reset meter-3: done",
        ],
    );
    assert_eq!(r["ok"], true, "{r}");
    assert!(s.events("mfa.step-up").contains("user:opal"));
    // Through the control socket a step-up means nothing.
    let r = s.d.mg(&["mfa", "123456"]);
    assert_eq!(r.code, 2, "{r:?}");
}

#[test]
fn wrong_codes_lock_password_login_but_not_a_key_and_a_code() {
    let s = Site::start();
    let (secret, _) = enrol(&s, "crew");
    let password = s.d.demo_password("crew");
    // Three wrong codes per connection, then the login starts over.
    for _ in 0..2 {
        let r = login(s.port, &["interactive", "crew", &password, "text:000000"]);
        assert_eq!(r["ok"], false, "{r}");
        assert_eq!(prompts(&r).len(), 4, "{r}");
    }
    assert!(s.events("login.lockout").contains("user:crew"));
    // Password and the right code: locked.
    let r = login(
        s.port,
        &["interactive", "crew", &password, &format!("totp:{secret}")],
    );
    assert_eq!(r["ok"], false, "{r}");
    assert!(
        s.events("login.failure")
            .contains("password login is locked until")
    );
    // Key and code: codes have their own lock, which only wrong codes set
    // (so only a holder of a first credential): refused until unlocked.
    let key = s.key("crew");
    let key = key.to_str().unwrap();
    let r = openssh(s.port, "crew", key, "-", &format!("totp:{secret}:30"));
    assert_ne!(r["status"], 0, "{r}");
    assert!(
        s.events("mfa.code-refused")
            .contains("too many wrong codes")
    );
    // A person without a factor keeps key-only access from the same
    // address: wrong codes do not throttle an address.
    let r = s.ssh("viewer", "whoami");
    assert_eq!(r.code, 0, "{r:?}");
    s.d.mg(&["user", "unlock", "crew"]).ok();
    let r = openssh(s.port, "crew", key, "-", &format!("totp:{secret}:30"));
    assert_eq!(r["status"], 0, "{r}");
}

#[test]
fn failing_passwords_from_anywhere_never_lock_a_key_and_a_code() {
    let s = Site::start();
    let (secret, _) = enrol(&s, "crew");
    // A stranger fails crew's password until it locks (and the address is
    // throttled): the person's key and code still let them in.
    for _ in 0..6 {
        let r = login(s.port, &["interactive", "crew", "guessed wrong", "none"]);
        assert_eq!(r["ok"], false, "{r}");
    }
    assert!(s.events("login.lockout").contains("user:crew"));
    let key = s.key("crew");
    let r = openssh(
        s.port,
        "crew",
        key.to_str().unwrap(),
        "-",
        &format!("totp:{secret}:30"),
    );
    assert_eq!(r["status"], 0, "{r}");
}

#[test]
fn a_first_login_gives_the_code_before_it_may_set_a_password() {
    let s = Site::start();
    s.d.mg(&["user", "add", "fern", "--email", "fern@example.org"])
        .ok();
    let (secret, _) = enrol(&s, "fern");
    let sent =
        s.d.mg(&["user", "resend-password", "fern"])
            .ok()
            .stdout
            .clone();
    let temp = sent
        .lines()
        .find_map(|l| l.strip_prefix("temporary password: "))
        .expect("the temporary password")
        .trim()
        .to_string();
    // The temporary password alone never reaches the new-password prompt.
    let r = login(s.port, &["interactive", "fern", &temp, "text:000000"]);
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(
        prompts(&r),
        [
            vec!["Password: "],
            vec!["Code: "],
            vec!["Code: "],
            vec!["Code: "]
        ],
        "{r}"
    );
    assert!(!s.events("password.changed").contains("user:fern"));
    // With the code: then the new password, then in.
    let good = "Silver kettle 9 harbour";
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/ssh.py");
    let code = pyotp(&secret, 30);
    let out = Command::new("python3")
        .arg(script)
        .arg(s.port.to_string())
        .args(["interactive", "fern", "whoami", &temp, &code, good, good])
        .output()
        .expect("python3 runs");
    let r: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(
        prompts(&r),
        [
            vec!["Password: "],
            vec!["Code: "],
            vec!["New password: ", "Repeat new password: "]
        ],
        "{r}"
    );
    assert!(s.events("password.changed").contains("user:fern"));
}

#[test]
fn a_session_without_a_factor_ends_when_the_gateway_comes_to_require_one() {
    let s = Site::start();
    // The administrator follows the log in a key-only session (no factor).
    let mut follow = Command::new("ssh")
        .args(ssh::SSH_OPTIONS)
        .arg("-i")
        .arg(s.key("admin"))
        .args([
            "-p",
            &s.port.to_string(),
            "admin@127.0.0.1",
            "audit",
            "tail",
            "-f",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("ssh runs");
    s.wait_listed("user:admin");
    // The tail runs (the guard let it): then the gateway comes to require
    // a factor.
    s.wait_event("read-audit.allow", &["user:admin", "-f"]);
    s.d.reload_with(|text| format!("{text}\n[mfa]\nrequired = \"always\"\n"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while follow.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = follow.kill();
            panic!(
                "the session was not ended: {}{}",
                s.d.mg(&["session", "list"]).stdout,
                s.d.mg(&["audit", "tail", "-n", "30"]).stdout
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    s.wait_event("session.end", &["user:admin", "needs a second factor"]);
}
