//! Access that ends, ends everywhere (DESIGN §7), on the demo with OpenSSH
//! keys and paramiko: at a user's end date (00:00 UTC, under libfaketime) an
//! open console and an open SFTP handle are ended within seconds, and
//! removing Terminal Access from a live console's principal ends the console
//! while the rest of the session goes on.

#[path = "common/daemon.rs"]
mod daemon;
#[path = "common/site.rs"]
mod site;
#[path = "common/ssh.rs"]
mod ssh;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use site::Site;
use ssh::*;

/// Starts tests/peers/sftp_hold.py and waits until its file is open.
fn hold_file(s: &Site, user: &str, path: &str, seconds: u32) -> std::process::Child {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/sftp_hold.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(s.port.to_string())
        .arg(user)
        .arg(s.key(user))
        .arg(path)
        .arg(seconds.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let out = child.stdout.as_mut().expect("stdout");
    let mut first = String::new();
    BufReader::new(out).read_line(&mut first).expect("a line");
    assert_eq!(
        first.trim(),
        "open",
        "the SFTP holder did not open the file"
    );
    child
}

fn finished(child: std::process::Child) -> serde_json::Value {
    let out = child.wait_with_output().expect("the holder ends");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Waits (bounded) until `session list` shows no session of `principal`.
fn wait_unlisted(s: &Site, principal: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = s.d.mg(&["session", "list"]).ok().stdout.clone();
        if !list.contains(principal) {
            return list;
        }
        assert!(Instant::now() < deadline, "still listed: {list}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn an_end_date_ends_open_consoles_and_sftp_handles_at_midnight() {
    // The gateway's clock: a little before midnight UTC.
    let s = Site::start_at(Some("2026-12-01 23:59:25"));
    s.d.mg(&["user", "set-end-date", "crew", "2026-12-02"]).ok();
    let holder = hold_file(&s, "crew", "/meter-1/logs/energy.csv", 120);
    let password = s.d.demo_password("crew");
    let r = shell(
        s.port,
        "crew",
        &password,
        &[
            "expect:user:crew@metergate> ",
            "send:connect meter-1",
            "expect:meter-1:operator> ",
            "send:whoami",
            "expect:operator",
            // Open until midnight comes, then cut within seconds.
            "closed:100",
        ],
    );
    let held = finished(holder);
    assert!(r["output"].as_str().unwrap().contains("operator"), "{r}");
    assert_eq!(
        held["ended"], true,
        "the SFTP handle outlived the access: {held}"
    );
    assert!(held["reads"].as_u64().unwrap() > 0, "{held}");
    // The events name the cause, and nothing of crew's is listed.
    let ended = s.wait_event(
        "access.ended",
        &["user:crew", "access ended at 2026-12-02 00:00 UTC"],
    );
    for door in ["on console", "on sftp", "on ssh"] {
        assert!(ended.contains(door), "no session {door} ended: {ended}");
    }
    wait_unlisted(&s, "user:crew");
    // And crew cannot come back.
    let again = s.ssh("crew", "whoami");
    assert_ne!(again.code, 0, "{again:?}");
}

/// crew's console on meter-1 goes live; then `withdraw` runs (its stdout
/// returned). The console ends saying why, the SSH session goes on, and
/// the next `connect` is denied.
fn console_withdrawn(s: &Site, withdraw: impl Fn() -> String + Sync) -> String {
    let password = s.d.demo_password("crew");
    let said = std::thread::scope(|scope| {
        let editor = scope.spawn(|| {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let list = s.d.mg(&["session", "list"]).ok().stdout.clone();
                if list
                    .lines()
                    .any(|l| l.contains("user:crew") && l.contains("console"))
                {
                    break;
                }
                assert!(Instant::now() < deadline, "no console session: {list}");
                std::thread::sleep(Duration::from_millis(100));
            }
            withdraw()
        });
        let r = shell(
            s.port,
            "crew",
            &password,
            &[
                "expect:user:crew@metergate> ",
                "send:connect meter-1",
                "expect:meter-1:operator> ",
                "expect:Terminal Access on meter-1 was withdrawn",
                // Back at the gateway's prompt: the SSH session goes on.
                "expect:user:crew@metergate> ",
                "send:read meter-1 3000",
                "expect:3000 ",
                "send:connect meter-1",
                "expect:DENY: Terminal Access on meter-1",
                "send:exit",
            ],
        );
        assert_eq!(r["ok"], true, "{r}");
        editor.join().expect("the editor thread")
    });
    let ended = s.wait_event("access.ended", &["user:crew", "console"]);
    assert!(
        ended.contains("Terminal Access on meter-1 was withdrawn"),
        "{ended}"
    );
    s.wait_event("console.end", &["Terminal Access on meter-1 was withdrawn"]);
    said
}

#[test]
fn removing_terminal_access_ends_a_live_console_but_not_the_session() {
    let s = Site::start();
    // An administrator takes Terminal Access away from the Operator role.
    let said = console_withdrawn(&s, || {
        s.d.mg(&["role", "edit", "Operator", "--remove", "terminal-access"])
            .ok()
            .stdout
            .clone()
    });
    assert!(said.contains("role Operator updated"), "{said}");
}

#[test]
fn a_deny_added_by_policy_edit_decides_next_and_ends_a_live_console() {
    let s = Site::start();
    let dir = s.d.dir.path();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let v1 = write(
        "v1.toml",
        "name = \"crew-extra\"\n[[statement]]\neffect = \"allow\"\npermissions = [\"Data View\"]\nmeters = [\"meter-1\"]\n",
    );
    let v2 = write(
        "v2.toml",
        "name = \"crew-extra\"\n[[statement]]\neffect = \"allow\"\npermissions = [\"Data View\"]\nmeters = [\"meter-1\"]\n\
         [[statement]]\neffect = \"deny\"\npermissions = [\"Terminal Access\"]\nmeters = [\"meter-1\"]\n",
    );
    s.d.mg(&["policy", "create", "--file", &v1]).ok();
    s.d.mg(&["user", "attach", "crew", "crew-extra"]).ok();
    let said = console_withdrawn(&s, || {
        s.d.mg(&[
            "policy",
            "edit",
            "crew-extra",
            "--file",
            &v2,
            "--if-version",
            "1",
        ])
        .ok()
        .stdout
        .clone()
    });
    assert!(said.contains("version 2"), "{said}");
    let next = s.d.mg(&[
        "check",
        "--principal",
        "crew",
        "--console",
        "--meter",
        "meter-1",
    ]);
    assert!(
        next.ok()
            .stdout
            .starts_with("DENY Terminal Access: denied by policy `crew-extra` statement 2"),
        "{next:?}"
    );
}
