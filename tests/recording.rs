//! Session recordings on the demo, driven by OpenSSH with a pty (`ssh -tt`)
//! and read back by Debian's asciinema: what a crew did on a meter's
//! console is kept, exported, played, watched live and verified against
//! the audit log; tampering, a `kill -9`, a full disk and `require_recording`
//! behave as the security team expects.

#[path = "common/daemon.rs"]
mod daemon;
#[path = "common/site.rs"]
mod site;
#[path = "common/ssh.rs"]
mod ssh;

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use site::Site;
use ssh::SSH_OPTIONS;

/// An OpenSSH client with a pty (`ssh -tt`) whose keystrokes we type and
/// whose screen we read as it comes.
struct Terminal {
    child: Child,
    screen: Arc<Mutex<String>>,
}

impl Terminal {
    fn open(s: &Site, user: &str, command: &[&str]) -> Terminal {
        let mut child = Command::new("ssh")
            .args(SSH_OPTIONS)
            .arg("-tt")
            .arg("-i")
            .arg(s.key(user))
            .args(["-p", &s.port.to_string(), &format!("{user}@127.0.0.1")])
            .args(command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ssh runs (apt-get install openssh-client)");
        let screen = Arc::new(Mutex::new(String::new()));
        for out in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let screen = screen.clone();
            std::thread::spawn(move || {
                let mut out = out;
                let mut buf = [0u8; 4096];
                while let Ok(n) = out.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    screen
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        Terminal { child, screen }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(format!("{line}\r").as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    fn screen(&self) -> String {
        self.screen.lock().unwrap().clone()
    }

    /// Waits (20 s at most) until the screen shows `text` `times` times.
    fn expect_n(&self, text: &str, times: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let screen = self.screen();
            if screen.matches(text).count() >= times {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "the terminal never showed {text:?} {times} times: {screen:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn expect(&self, text: &str) -> String {
        self.expect_n(text, 1)
    }

    /// Waits (bounded) for the client to exit; its status.
    fn wait(mut self) -> (i32, String) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                return (status.code().unwrap_or(-1), self.screen());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("ssh did not exit: {}", self.screen());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The recordings as `session recordings --json` lists them.
fn recordings(s: &Site) -> Vec<serde_json::Value> {
    let r = s.d.mg(&["--json", "session", "recordings"]);
    assert_eq!(r.code, 0, "{r:?}");
    serde_json::from_str(r.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {r:?}"))
}

/// Waits (bounded) until a recording of `principal` has ended.
fn ended_recording(s: &Site, principal: &str, meter: Option<&str>) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let all = recordings(s);
        if let Some(r) = all.iter().find(|r| {
            r["principal"] == principal
                && r["state"] == "ended"
                && meter.is_none_or(|m| r["meters"].as_array().unwrap().iter().any(|x| x == m))
        }) {
            return r.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no ended recording of {principal}: {all:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The live recording of `principal`'s session.
fn live_recording(s: &Site, principal: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let all = recordings(s);
        if let Some(r) = all
            .iter()
            .find(|r| r["principal"] == principal && r["state"] == "live")
        {
            return r.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no live recording of {principal}: {all:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The events with `code`, as JSON.
fn json_events(s: &Site, code: &str) -> Vec<serde_json::Value> {
    let r = s.d.mg(&["--json", "audit", "query", "--code", code, "--limit", "1000"]);
    assert_eq!(r.code, 0, "{r:?}");
    r.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Where the demo keeps recording `id`.
fn recording_file(s: &Site, id: &str) -> std::path::PathBuf {
    s.d.config
        .parent()
        .unwrap()
        .join("state/recordings")
        .join(format!("{id}.cast"))
}

/// Debian's asciinema, in a pty of util-linux's `script` (it reads its
/// keys from /dev/tty).
fn asciinema(args: &[&str]) -> daemon::Run {
    assert!(
        Command::new("asciinema").arg("--version").output().is_ok(),
        "asciinema is missing: apt-get install asciinema (.ci/run does)"
    );
    let line = std::iter::once("asciinema".to_string())
        .chain(args.iter().map(|a| format!("'{a}'")))
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new("script")
        .args(["-q", "-e", "-c", &line, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("script runs (util-linux)");
    daemon::Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

#[test]
fn a_console_session_is_recorded_exported_played_and_verified() {
    let s = Site::start();
    let mut t = Terminal::open(&s, "crew", &["connect", "meter-1"]);
    t.expect("meter-1:operator> ");
    t.send("whoami");
    t.expect_n("operator", 2);
    t.send("status");
    t.expect("meter-1:operator> status");
    t.send("exit");
    let (code, screen) = t.wait();
    assert_eq!(code, 0, "{screen}");
    let rec = ended_recording(&s, "user:crew", Some("meter-1"));
    let id = rec["id"].as_str().unwrap().to_string();
    assert_eq!(rec["kind"], "exec", "{rec}");
    // The file is the gateway's alone.
    use std::os::unix::fs::PermissionsExt;
    let file = recording_file(&s, &id);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", file.display());

    // Exported, Debian's asciinema prints what the meter showed.
    let export = s.d.mg(&["session", "export", &id]);
    assert_eq!(export.code, 0, "{export:?}");
    assert!(export.stdout.starts_with("{\"version\":2,"), "{export:?}");
    let cast = s.d.dir.path().join("session.cast");
    std::fs::write(&cast, &export.stdout).unwrap();
    let cat = asciinema(&["cat", cast.to_str().unwrap()]);
    assert_eq!(cat.code, 0, "{cat:?}");
    for shown in ["meter-1:operator> whoami", "operator", "meter-1:operator> status"] {
        assert!(cat.stdout.contains(shown), "asciinema cat lacks {shown:?}: {cat:?}");
    }
    // Played back (fast), the same output.
    let play = s.d.mg(&["session", "play", &id, "--speed", "50", "--idle-limit", "0.1"]);
    assert_eq!(play.code, 0, "{play:?}");
    assert!(play.stdout.contains("meter-1:operator> whoami"), "{play:?}");
    let asciinema_play = asciinema(&["play", "-s", "50", "-i", "0.1", cast.to_str().unwrap()]);
    assert_eq!(asciinema_play.code, 0, "{asciinema_play:?}");
    assert!(asciinema_play.stdout.contains("operator"), "{asciinema_play:?}");

    // The log vouches for it: its chunks, and the session's end with the
    // final hash, size and duration.
    let verify = s.d.mg(&["session", "verify", &id]);
    assert_eq!(verify.code, 0, "{verify:?}");
    assert!(verify.stdout.starts_with(&format!("ok: recording {id}: ")), "{verify:?}");
    let end = json_events(&s, "session.end")
        .into_iter()
        .find(|e| e["detail"]["recording"] == id)
        .unwrap_or_else(|| panic!("no session.end names recording {id}"));
    assert_eq!(end["detail"]["recording_hash"], rec["hash"], "{end}\n{rec}");
    assert_eq!(end["detail"]["recording_bytes"], rec["bytes"].to_string(), "{end}\n{rec}");
    assert!(end["detail"]["recording_duration_ms"].as_str().is_some(), "{end}");
    let audit = s.d.mg(&["audit", "verify"]);
    assert_eq!(audit.code, 0, "{audit:?}");
    assert!(audit.stdout.contains("session recordings verify against the log"), "{audit:?}");
    // Each read is an event.
    let reads = s.wait_event("recording.read", &["user:crew", "(export)", "(play)"]);
    assert!(reads.contains("local:"), "{reads}");
    // Listed by meter and principal; another meter's list does not have it.
    let by_meter = s.d.mg(&["session", "recordings", "--meter", "meter-1", "--principal", "crew"]);
    assert!(by_meter.stdout.contains(&id), "{by_meter:?}");
    let other = s.d.mg(&["session", "recordings", "--meter", "meter-3"]);
    assert!(!other.stdout.lines().any(|l| l.starts_with(&format!("{id} "))), "{other:?}");
}
