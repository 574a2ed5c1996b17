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
    let r = s.d.mg(&[
        "--json", "audit", "query", "--code", code, "--limit", "1000",
    ]);
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
    for shown in [
        "meter-1:operator> whoami",
        "operator",
        "meter-1:operator> status",
    ] {
        assert!(
            cat.stdout.contains(shown),
            "asciinema cat lacks {shown:?}: {cat:?}"
        );
    }
    // Played back (fast), the same output.
    let play = s.d.mg(&[
        "session",
        "play",
        &id,
        "--speed",
        "50",
        "--idle-limit",
        "0.1",
    ]);
    assert_eq!(play.code, 0, "{play:?}");
    assert!(play.stdout.contains("meter-1:operator> whoami"), "{play:?}");
    let asciinema_play = asciinema(&["play", "-s", "50", "-i", "0.1", cast.to_str().unwrap()]);
    assert_eq!(asciinema_play.code, 0, "{asciinema_play:?}");
    assert!(
        asciinema_play.stdout.contains("operator"),
        "{asciinema_play:?}"
    );

    // The log vouches for it: its chunks, and the session's end with the
    // final hash, size and duration.
    let verify = s.d.mg(&["session", "verify", &id]);
    assert_eq!(verify.code, 0, "{verify:?}");
    assert!(
        verify.stdout.starts_with(&format!("ok: recording {id}: ")),
        "{verify:?}"
    );
    let end = json_events(&s, "session.end")
        .into_iter()
        .find(|e| e["detail"]["recording"] == id)
        .unwrap_or_else(|| panic!("no session.end names recording {id}"));
    assert_eq!(end["detail"]["recording_hash"], rec["hash"], "{end}\n{rec}");
    assert_eq!(
        end["detail"]["recording_bytes"],
        rec["bytes"].to_string(),
        "{end}\n{rec}"
    );
    assert!(
        end["detail"]["recording_duration_ms"].as_str().is_some(),
        "{end}"
    );
    let audit = s.d.mg(&["audit", "verify"]);
    assert_eq!(audit.code, 0, "{audit:?}");
    assert!(
        audit
            .stdout
            .contains("session recordings verify against the log"),
        "{audit:?}"
    );
    // Each read is an event.
    let reads = s.wait_event("recording.read", &["user:crew", "(export)", "(play)"]);
    assert!(reads.contains("local:"), "{reads}");
    // Listed by meter and principal; another meter's list does not have it.
    let by_meter = s.d.mg(&[
        "session",
        "recordings",
        "--meter",
        "meter-1",
        "--principal",
        "crew",
    ]);
    assert!(by_meter.stdout.contains(&id), "{by_meter:?}");
    let other = s.d.mg(&["session", "recordings", "--meter", "meter-3"]);
    assert!(
        !other
            .stdout
            .lines()
            .any(|l| l.starts_with(&format!("{id} "))),
        "{other:?}"
    );
}

/// The chunk events of recording `id`, in chunk order.
fn chunks(s: &Site, id: &str) -> Vec<serde_json::Value> {
    let mut c: Vec<serde_json::Value> = json_events(s, "session.recording")
        .into_iter()
        .filter(|e| e["detail"]["recording"] == id)
        .collect();
    c.sort_by_key(|e| {
        e["detail"]["chunk"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    });
    c
}

/// Waits (bounded) until recording `id` has at least `n` durable chunks.
fn wait_chunks(s: &Site, id: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while chunks(s, id).len() < n {
        assert!(
            Instant::now() < deadline,
            "fewer than {n} chunks of {id}: {:?} {:?}",
            chunks(s, id),
            recordings(s)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn detail_u64(e: &serde_json::Value, k: &str) -> usize {
    e["detail"][k].as_str().unwrap().parse().unwrap()
}

/// Chunks every second, so a short session has several.
fn every_second(s: &Site) {
    s.d.reload_with(|t| format!("{t}\n[recording]\ncheckpoint = \"1s\"\n"));
}

#[test]
fn tampering_with_a_recording_names_it_and_the_chunk() {
    let s = Site::start();
    every_second(&s);
    let mut t = Terminal::open(&s, "crew", &["connect", "meter-1"]);
    t.expect("meter-1:operator> ");
    let id = live_recording(&s, "user:crew")["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_chunks(&s, &id, 1);
    t.send("whoami");
    t.expect_n("operator", 2);
    wait_chunks(&s, &id, 2);
    t.send("status");
    t.expect("meter-1:operator> status");
    wait_chunks(&s, &id, 3);
    t.send("exit");
    assert_eq!(t.wait().0, 0);
    ended_recording(&s, "user:crew", Some("meter-1"));
    let c = chunks(&s, &id);
    assert!(c.len() >= 4, "{c:?}");
    assert_eq!(c.last().unwrap()["detail"]["last"], "true");
    let file = recording_file(&s, &id);
    let original = std::fs::read(&file).unwrap();
    let (c1, c2) = (&c[1], &c[2]);
    let (o1, l1) = (detail_u64(c1, "offset"), detail_u64(c1, "length"));
    let o2 = detail_u64(c2, "offset");
    // (how the file was changed) -> the chunk named
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "a byte flipped",
            {
                let mut b = original.clone();
                b[o1 + l1 / 2] ^= 0x20;
                b
            },
            "chunk 1 differs",
        ),
        (
            "truncated",
            original[..o2 + 3].to_vec(),
            "chunk 2 is missing",
        ),
        (
            "a chunk deleted",
            [&original[..o1], &original[o1 + l1..]].concat(),
            "chunk 1 ",
        ),
    ];
    for (how, bytes, named) in cases {
        std::fs::write(&file, &bytes).unwrap();
        let one = s.d.mg(&["session", "verify", &id]);
        assert_eq!(one.code, 1, "{how}: {one:?}");
        assert!(
            one.stderr.contains(&format!("recording {id}: {named}")),
            "{how}: {one:?}"
        );
        let all = s.d.mg(&["audit", "verify"]);
        assert_eq!(all.code, 1, "{how}: {all:?}");
        assert!(
            all.stderr.contains(&format!("recording {id}: {named}")),
            "{how}: {all:?}"
        );
        // The log itself is untouched.
        assert!(all.stderr.contains("ok: "), "{how}: {all:?}");
    }
    std::fs::write(&file, &original).unwrap();
    let back = s.d.mg(&["session", "verify", &id]);
    assert_eq!(back.code, 0, "{back:?}");
    assert_eq!(s.d.mg(&["audit", "verify"]).code, 0);
}

#[test]
fn a_kill_9_leaves_a_recording_that_verifies_up_to_its_last_durable_chunk() {
    let mut s = Site::start();
    every_second(&s);
    let mut t = Terminal::open(&s, "crew", &["connect", "meter-1"]);
    t.expect("meter-1:operator> ");
    let id = live_recording(&s, "user:crew")["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_chunks(&s, &id, 1);
    t.send("whoami");
    t.expect_n("operator", 2);
    wait_chunks(&s, &id, 2);
    s.d.kill9();
    drop(t);
    s.d.restart(None);
    let deadline = Instant::now() + Duration::from_secs(30);
    let rec = loop {
        let all = recordings(&s);
        if let Some(r) = all
            .iter()
            .find(|r| r["id"] == id && r["state"] == "interrupted")
        {
            break r.clone();
        }
        assert!(Instant::now() < deadline, "not marked interrupted: {all:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(rec["problem"].as_str().unwrap().contains("chunks"), "{rec}");
    // What the log vouches for verifies; that it never ended is said.
    let v = s.d.mg(&["session", "verify", &id]);
    assert_eq!(v.code, 0, "{v:?}");
    assert!(v.stdout.contains("no last chunk"), "{v:?}");
    let all = s.d.mg(&["audit", "verify"]);
    assert_eq!(all.code, 0, "{all:?}");
    assert!(
        all.stdout.contains(&format!("note: recording {id}: ")),
        "{all:?}"
    );
    let interrupted = json_events(&s, "recording.interrupted");
    assert!(
        interrupted.iter().any(|e| e["detail"]["recording"] == id),
        "{interrupted:?}"
    );
    // The output before the last durable chunk is there to read.
    let export = s.d.mg(&["session", "export", &id]);
    assert!(export.stdout.contains("meter-1:operator> "), "{export:?}");
    // New sessions are numbered after it: no recording is overwritten.
    let r = s.ssh("crew", "whoami");
    assert_eq!(r.code, 0, "{r:?}");
    let ids: Vec<String> = recordings(&s)
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.iter().filter(|x| **x == id).count(), 1, "{ids:?}");
}

/// A user whose only Terminal Access on meter-1 needs a recorded session.
fn recorded_only_user(s: &Site) {
    let key = ssh::keygen(s.keys.path(), "rec");
    s.d.mg(&["user", "add", "rec", "--email", "rec@example.org"])
        .ok();
    s.d.mg(&["user", "add-key", "rec", &ssh::public_line(&key)])
        .ok();
    let policy = s.d.dir.path().join("recorded.toml");
    std::fs::write(
        &policy,
        "name = \"recorded-consoles\"\n\
         [[statement]]\neffect = \"allow\"\nroles = [\"Operator\"]\nmeters = [\"meter-1\"]\nrequire_recording = true\n",
    )
    .unwrap();
    s.d.mg(&["policy", "create", "--file", policy.to_str().unwrap()])
        .ok();
    s.d.mg(&["user", "attach", "rec", "recorded-consoles"]).ok();
}

#[test]
fn when_recordings_are_full_fail_closed_refuses_fail_open_alarms_and_require_recording_refuses() {
    let s = Site::start();
    recorded_only_user(&s);
    // While recording works, the recorded-only user reaches the console.
    let ok = s.ssh("rec", "connect meter-1");
    assert_eq!(ok.code, 0, "{ok:?}");
    // The disk for recordings is full.
    let dir = recording_file(&s, "0").parent().unwrap().to_path_buf();
    std::fs::write(dir.join("filler"), vec![0u8; 2 * 1024 * 1024]).unwrap();
    s.d.reload_with(|t| {
        format!("{t}\n[recording]\ncapacity_bytes = 1048576\nmax_session_bytes = 65536\n")
    });
    // fail-closed (the default): no new interactive session, and why.
    let refused = s.ssh("crew", "connect meter-1");
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("cannot be recorded"), "{refused:?}");
    assert!(
        refused.stderr.contains("recording.capacity_bytes"),
        "{refused:?}"
    );
    assert!(refused.stderr.contains("fail-closed"), "{refused:?}");
    s.wait_event(
        "recording.failure",
        &["user:crew", "fail-closed refuses it"],
    );
    s.wait_event(
        "recording.capacity-warning",
        &["of recording.capacity_bytes (1048576 bytes"],
    );
    // fail-open: in, unrecorded, with an alarm.
    s.d.reload_with(|t| format!("{t}\n[audit]\non_failure = \"fail-open\"\n"));
    let open = s.ssh("crew", "whoami");
    assert_eq!(open.code, 0, "{open:?}");
    s.wait_event(
        "recording.failure",
        &["user:crew", "fail-open lets it go on unrecorded"],
    );
    // require_recording holds even in fail-open.
    let rec = s.ssh("rec", "connect meter-1");
    assert_eq!(rec.code, 1, "{rec:?}");
    assert!(
        rec.stderr
            .contains("DENY: Terminal Access on meter-1: needs a recorded session"),
        "{rec:?}"
    );
    assert!(rec.stderr.contains("recorded-consoles"), "{rec:?}");
}

#[test]
fn session_watch_shows_a_live_session_to_security_logs_access_only() {
    let s = Site::start();
    let mut crew = Terminal::open(&s, "crew", &[]);
    crew.expect("user:crew@metergate> ");
    let id = live_recording(&s, "user:crew")["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Without Security Logs Access: refused, nothing shown.
    let viewer = s.ssh("viewer", &format!("session watch {id}"));
    assert_eq!(viewer.code, 1, "{viewer:?}");
    assert!(viewer.stderr.contains("DENY: "), "{viewer:?}");
    s.wait_event("read-audit.deny", &["user:viewer", "session watch"]);
    let denied = json_events(&s, "read-audit.deny");
    assert!(
        denied
            .iter()
            .any(|e| e["principal"] == "user:viewer" && e["permission"] == "Security Logs Access"),
        "{denied:?}"
    );
    // A second OpenSSH client watches; the watched person is told.
    let admin = Terminal::open(&s, "admin", &["session", "watch", &id]);
    admin.expect("watching session");
    crew.expect("user:admin is watching this session, read-only");
    crew.send("whoami");
    crew.expect("principal:  user:crew");
    admin.expect("principal:  user:crew");
    crew.send("meters");
    admin.expect("meter-2  site=north");
    s.wait_event("session.watch", &["user:admin", "user:crew"]);
    drop(admin);
    crew.expect("user:admin stopped watching this session");
    crew.send("exit");
    assert_eq!(crew.wait().0, 0);
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) `days` from now, for libfaketime.
fn days_from_now(days: i64) -> String {
    let t = time::OffsetDateTime::now_utc() + time::Duration::days(days);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[test]
fn old_recordings_are_removed_by_age_never_before_their_events_were_forwarded() {
    let mut s = Site::start();
    let r = s.ssh("crew", "whoami");
    assert_eq!(r.code, 0, "{r:?}");
    let id = ended_recording(&s, "user:crew", None)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let file = recording_file(&s, &id);
    assert!(file.exists());
    // A collector that never answers: the recording's events are never
    // forwarded, so a year and more later it is still kept.
    let text = std::fs::read_to_string(&s.d.config).unwrap();
    let silent = daemon::free_port();
    std::fs::write(
        &s.d.config,
        format!("{text}\n[audit.forward]\ntarget = \"tcp://127.0.0.1:{silent}\"\n"),
    )
    .unwrap();
    let later = days_from_now(400);
    s.d.restart(Some(&later));
    s.wait_event("recording.retention-held", &[&format!("recording {id} ")]);
    assert!(file.exists(), "removed before it was forwarded");
    // Without forwarding, it goes, and the removal is an event.
    std::fs::write(&s.d.config, &text).unwrap();
    s.d.restart(Some(&later));
    s.wait_event("recording.removed", &[&format!("recording {id} ")]);
    assert!(!file.exists());
    assert!(!recordings(&s).iter().any(|r| r["id"] == id));
    // What retention removed is not a broken recording.
    let v = s.d.mg(&["audit", "verify"]);
    assert_eq!(v.code, 0, "{v:?}");
}

#[test]
fn a_recording_past_its_maximum_ends_its_session_with_a_message_in_fail_closed() {
    let s = Site::start();
    s.d.reload_with(|t| {
        format!("{t}\n[recording]\ncheckpoint = \"1s\"\nmax_session_bytes = 65536\n")
    });
    let mut t = Terminal::open(&s, "crew", &[]);
    t.expect("user:crew@metergate> ");
    // `help` shows about 1.5 KB; sixty of them pass 64 KiB of recording.
    for _ in 0..60 {
        t.send("help");
    }
    t.expect("fail-closed ends the session");
    let (code, screen) = t.wait();
    assert_ne!(code, 0, "{screen}");
    assert!(
        screen.contains("recording.max_session_bytes (65536 bytes)"),
        "{screen}"
    );
    s.wait_event("recording.failure", &["user:crew", "max_session_bytes"]);
    let rec = recordings(&s);
    assert!(
        rec.iter()
            .any(|r| r["principal"] == "user:crew" && r["state"] == "failed"),
        "{rec:?}"
    );
}

#[test]
fn one_principal_filling_its_share_never_stops_anothers_recorded_sessions() {
    let s = Site::start();
    s.d.reload_with(|t| {
        format!(
            "{t}\n[recording]\ncheckpoint = \"1s\"\nmax_session_bytes = 65536\nmax_principal_bytes = 98304\n"
        )
    });
    let help_times = |user: &str, n: usize| {
        let mut t = Terminal::open(&s, user, &[]);
        t.expect(&format!("user:{user}@metergate> "));
        for _ in 0..n {
            t.send("help");
        }
        t
    };
    // 40 × `help` is about 56 KB: within one session's maximum.
    let mut first = help_times("crew", 40);
    first.expect_n("user:crew@metergate> ", 41);
    first.send("exit");
    assert_eq!(first.wait().0, 0);
    let rec = ended_recording(&s, "user:crew", None);
    assert!(rec["bytes"].as_u64().unwrap() > 49152, "{rec}");
    // The second passes crew's share: that session ends, saying why.
    let second = help_times("crew", 40);
    second.expect("recording.max_principal_bytes (98304 bytes)");
    let (code, _) = second.wait();
    assert_ne!(code, 0);
    // Everybody else is still recorded.
    let mut admin = help_times("admin", 3);
    admin.expect_n("user:admin@metergate> ", 4);
    admin.send("exit");
    assert_eq!(admin.wait().0, 0);
    let rec = ended_recording(&s, "user:admin", None);
    let id = rec["id"].as_str().unwrap();
    assert_eq!(s.d.mg(&["session", "verify", id]).code, 0);
}

#[test]
fn secrets_shown_once_and_typed_secrets_never_reach_a_recording() {
    let s = Site::start();
    s.d.reload_with(|t| format!("{t}\n[recording]\ninput = true\n"));
    let mut t = Terminal::open(&s, "admin", &[]);
    t.expect("user:admin@metergate> ");
    t.send("user add bob --email bob@example.org");
    let screen = t.expect("temporary password: ");
    let password = screen
        .split("temporary password: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .to_string();
    t.send("passwd");
    t.expect("Current password: ");
    t.send("typed-secret-1");
    t.expect("that is not your current password");
    t.send("exit");
    // The shell's status is the last command's (the failed passwd).
    assert_eq!(t.wait().0, 1);
    let rec = ended_recording(&s, "user:admin", None);
    let cast =
        s.d.mg(&["session", "export", rec["id"].as_str().unwrap()])
            .stdout;
    assert!(
        !cast.contains(&password),
        "the temporary password was recorded: {cast}"
    );
    assert!(
        cast.contains("output with a secret shown once: not recorded"),
        "{cast}"
    );
    // Input is recorded (input = true), but not what is typed at a
    // password prompt.
    assert!(cast.contains("\"i\", \"passwd\\r\""), "{cast}");
    assert!(!cast.contains("typed-secret-1"), "{cast}");
}

/// The gateway's metrics, as prometheus-client's parser reads them.
fn scrape(port: u16) -> serde_json::Value {
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/peers/scrape.py"
        ))
        .arg(format!("http://127.0.0.1:{port}/metrics"))
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_recording_metrics_show_use_the_warning_and_the_alarm() {
    let (port, metrics) = (daemon::free_port(), daemon::free_port());
    let d = daemon::Daemon::start_text(|s| {
        daemon::gateway_config(
            s,
            &format!(
                "[ssh]\nlisten = [\"127.0.0.1:{port}\"]\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n\
                 [recording]\ncapacity_bytes = 1048576\nmax_session_bytes = 65536\nwarn_at_percent = 50\n"
            ),
        )
    });
    let key = ssh::keygen(d.dir.path(), "ada");
    d.mg(&["user", "add", "ada", "--email", "ada@example.org"])
        .ok();
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    d.mg(&["user", "add-key", "ada", public.trim()]).ok();
    let value =
        |m: &serde_json::Value, k: &str| m[k].as_f64().unwrap_or_else(|| panic!("no {k} in {m}"));
    let m = scrape(metrics);
    assert_eq!(value(&m, "metergate_recording_capacity_bytes"), 1048576.0);
    for k in [
        "metergate_recording_bytes",
        "metergate_recording_capacity_warning",
        "metergate_recording_alarm",
        "metergate_recording_failures_total",
        "metergate_recordings_live",
    ] {
        assert_eq!(value(&m, k), 0.0, "{k} before any session: {m}");
    }
    // One recorded session: its bytes are counted, far below the warning.
    let run = ssh::ssh(port, &key, "ada", &[], "whoami");
    assert_eq!(run.code, 0, "{run:?}");
    let m = scrape(metrics);
    let one = value(&m, "metergate_recording_bytes");
    assert!(one > 0.0 && one < 65536.0, "{m}");
    assert_eq!(
        value(&m, "metergate_recording_capacity_warning"),
        0.0,
        "{m}"
    );
    assert_eq!(value(&m, "metergate_recordings_live"), 0.0, "{m}");
    // Something else fills the disk past the warning (60%): the next
    // session still fits, and the warning is up.
    let dir = d.state_dir().join("recordings");
    std::fs::write(dir.join("filler-1"), vec![0u8; 600 * 1024]).unwrap();
    d.reload_with(|t| t);
    let run = ssh::ssh(port, &key, "ada", &[], "whoami");
    assert_eq!(run.code, 0, "{run:?}");
    let m = scrape(metrics);
    assert!(
        value(&m, "metergate_recording_bytes") > 600.0 * 1024.0,
        "{m}"
    );
    assert_eq!(
        value(&m, "metergate_recording_capacity_warning"),
        1.0,
        "{m}"
    );
    assert_eq!(value(&m, "metergate_recording_alarm"), 0.0, "{m}");
    // Full: fail-closed refuses the next session, and the alarm is up.
    std::fs::write(dir.join("filler-2"), vec![0u8; 500 * 1024]).unwrap();
    d.reload_with(|t| t);
    let run = ssh::ssh(port, &key, "ada", &[], "whoami");
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("cannot be recorded"), "{run:?}");
    let m = scrape(metrics);
    assert_eq!(value(&m, "metergate_recording_alarm"), 1.0, "{m}");
    assert_eq!(value(&m, "metergate_recording_failures_total"), 1.0, "{m}");
    assert_eq!(value(&m, "metergate_recordings_live"), 0.0, "{m}");
}
