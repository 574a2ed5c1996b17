//! The audit trail as security teams use it, through the real CLI and a
//! real daemon: export in three formats, tail -f, status, a broken chain
//! found at start, and forwarding to rsyslog (a collector nobody here wrote)
//! over TCP and TLS, with the collector stopped and started mid-stream.

#[path = "common/daemon.rs"]
mod daemon;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use daemon::*;

fn config_with(socket: &Path, rest: &str) -> String {
    gateway_config(socket, rest)
}

/// Seqs of the JSON lines `audit export` printed.
fn seqs_of_jsonl(text: &str) -> Vec<u64> {
    text.lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            assert!(v["hash"].as_str().is_some_and(|h| h.len() == 64), "{l}");
            v["seq"].as_u64().unwrap()
        })
        .collect()
}

#[test]
fn export_writes_every_event_in_each_format_and_is_itself_logged() {
    let d = Daemon::start_text(|s| config_with(s, ""));
    for _ in 0..5 {
        d.mg(&["audit", "status"]).ok();
    }
    let jsonl = d.mg(&["audit", "export"]).ok().stdout.clone();
    let seqs = seqs_of_jsonl(&jsonl);
    let n = seqs.len() as u64;
    assert!(n >= 6, "{jsonl}");
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>(), "every event, in order");

    // Each export logs itself first, so each sees one more event.
    let cef = d
        .mg(&["audit", "export", "--format", "cef"])
        .ok()
        .stdout
        .clone();
    assert_eq!(cef.lines().count() as u64, n + 1, "{cef}");
    assert!(
        cef.lines()
            .all(|l| l.starts_with("CEF:0|metergate|metergate|")),
        "{cef}"
    );
    assert!(cef.contains("cn1Label=seq cn1=1 "), "{cef}");

    let syslog = d
        .mg(&["audit", "export", "--format", "rfc5424"])
        .ok()
        .stdout
        .clone();
    assert_eq!(syslog.lines().count() as u64, n + 2, "{syslog}");
    for (i, line) in syslog.lines().enumerate() {
        let (head, _) = line
            .split_once(" [metergate@50316 ")
            .unwrap_or_else(|| panic!("{line}"));
        let fields: Vec<&str> = head.split(' ').collect();
        assert_eq!(fields.len(), 6, "{line}");
        assert!(
            fields[0].starts_with('<') && fields[0].ends_with(">1"),
            "{line}"
        );
        assert_eq!(fields[3], "metergate", "{line}");
        assert!(line.contains(&format!(" seq=\"{}\" ", i + 1)), "{line}");
    }

    // --from and --since pick where to start.
    let from = d
        .mg(&["audit", "export", "--from", "3"])
        .ok()
        .stdout
        .clone();
    assert_eq!(seqs_of_jsonl(&from).first(), Some(&3));
    let future = d
        .mg(&["audit", "export", "--since", "2099-01-01T00:00:00Z"])
        .ok()
        .stdout
        .clone();
    assert_eq!(future, "", "nothing is that new");
    let hour = d
        .mg(&["audit", "export", "--since", "1h"])
        .ok()
        .stdout
        .clone();
    assert_eq!(seqs_of_jsonl(&hour).first(), Some(&1));
    let bad = d.mg(&["audit", "export", "--since", "yesterday"]);
    assert_eq!(bad.code, 2, "{bad:?}");
    assert!(bad.stderr.contains("--since `yesterday`"), "{bad:?}");

    // Reading the log is itself in the log.
    let q = d
        .mg(&[
            "--json",
            "audit",
            "query",
            "--code",
            "read-audit.allow",
            "--limit",
            "1000",
        ])
        .ok()
        .stdout
        .clone();
    assert!(q.contains("audit export --format cef"), "{q}");
    assert!(q.contains("audit export --format rfc5424"), "{q}");
}

#[test]
fn tail_follow_prints_new_events_until_the_reader_leaves() {
    let d = Daemon::start_text(|s| config_with(s, ""));
    let mut child = Command::new(BIN)
        .arg("--socket")
        .arg(&d.socket)
        .args(["audit", "tail", "-f", "-n", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // The newest event first (the tail's own read, or something logged
    // just after it), then what happens afterwards.
    let first = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("tail prints");
    assert!(
        first
            .split(' ')
            .next()
            .is_some_and(|seq| seq.parse::<u64>().is_ok()),
        "{first}"
    );
    d.mg(&["user", "add", "tailtest", "--email", "t@example.org"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push(l);
            if seen.iter().any(|l| l.contains("user add tailtest")) {
                break;
            }
        }
    }
    assert!(
        seen.iter().any(|l| l.contains("user add tailtest")),
        "{seen:?}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    // The daemon goes on serving.
    d.mg(&["audit", "status"]).ok();
}

#[test]
fn status_shows_capacity_and_a_chain_found_broken_at_start_without_refusing_to_start() {
    let mut d = Daemon::start_text(|s| {
        config_with(s, "[audit]\ncapacity_events = 5000\nwarn_at_percent = 80\n")
    });
    let st = d.mg(&["audit", "status"]).ok().stdout.clone();
    assert!(st.contains("of a capacity of 5000"), "{st}");
    assert!(st.contains("warning at:   4000 events (80%)"), "{st}");
    assert!(st.contains("chain:        verified at start"), "{st}");
    assert!(st.contains("forwarding:   not configured"), "{st}");
    for _ in 0..3 {
        d.mg(&["audit", "status"]).ok();
    }
    d.stop();
    {
        let db = metergate::store::open_raw(&d.state_dir()).unwrap();
        let t = db.open_tree("audit").unwrap();
        let v = t.get(3u64.to_be_bytes()).unwrap().unwrap();
        let mut ev: serde_json::Value = serde_json::from_slice(&v).unwrap();
        ev["time"] = serde_json::json!(ev["time"].as_i64().unwrap() + 1);
        t.insert(3u64.to_be_bytes(), serde_json::to_vec(&ev).unwrap())
            .unwrap();
        db.flush().unwrap();
    }
    d.restart(None);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = d.mg(&["--json", "audit", "status"]).ok().stdout.clone();
        let v: serde_json::Value = serde_json::from_str(st.trim()).unwrap();
        if v["chain_broken_at"] == 3 {
            let text = d.mg(&["audit", "status"]).ok().stdout.clone();
            assert!(text.contains("BROKEN at start: first bad seq 3"), "{text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "status never showed the broken chain: {st}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let q = d
        .mg(&["audit", "query", "--code", "audit.chain-broken"])
        .ok()
        .stdout
        .clone();
    assert!(q.contains("first bad seq 3"), "{q}");
}

/// rsyslogd in the foreground with its own config: RFC 5425 framing in,
/// one line per message out (`protocol-version|msgid|structured-data`).
struct Rsyslog {
    dir: PathBuf,
    port: u16,
    tls: Option<PathBuf>,
    child: Option<Child>,
}

impl Rsyslog {
    fn start(dir: &Path, port: u16, tls: Option<PathBuf>) -> Rsyslog {
        let mut r = Rsyslog {
            dir: dir.to_path_buf(),
            port,
            tls,
            child: None,
        };
        r.spawn();
        r
    }

    fn out(&self) -> PathBuf {
        self.dir.join("received.log")
    }

    fn spawn(&mut self) {
        let work = self.dir.join("work");
        std::fs::create_dir_all(&work).unwrap();
        let (global, module) = match &self.tls {
            None => (String::new(), "module(load=\"imtcp\")".to_string()),
            Some(certs) => (
                format!(
                    "global(DefaultNetstreamDriver=\"gtls\" DefaultNetstreamDriverCAFile=\"{0}/ca.crt\" DefaultNetstreamDriverCertFile=\"{0}/server.crt\" DefaultNetstreamDriverKeyFile=\"{0}/server.key\")",
                    certs.display()
                ),
                "module(load=\"imtcp\" StreamDriver.Name=\"gtls\" StreamDriver.Mode=\"1\" StreamDriver.AuthMode=\"anon\")".to_string(),
            ),
        };
        let conf = format!(
            "global(workDirectory=\"{work}\")\n{global}\n{module}\ninput(type=\"imtcp\" port=\"{port}\" address=\"127.0.0.1\")\n\
             template(name=\"mg\" type=\"string\" string=\"%protocol-version%|%msgid%|%structured-data%\\n\")\n\
             action(type=\"omfile\" file=\"{out}\" template=\"mg\")\n",
            work = work.display(),
            port = self.port,
            out = self.out().display(),
        );
        let path = self.dir.join("rsyslog.conf");
        std::fs::write(&path, conf).unwrap();
        let child = Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(&path)
            .arg("-i")
            .arg(self.dir.join("rsyslog.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rsyslogd runs (apt-get install rsyslog rsyslog-gnutls)");
        self.child = Some(child);
        // Listening?
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "rsyslogd does not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM and wait: a collector going away mid-stream.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = c.wait();
        }
    }

    /// seq → how many times it arrived, checking each line is RFC 5424.
    fn received(&self) -> BTreeMap<u64, usize> {
        let text = std::fs::read_to_string(self.out()).unwrap_or_default();
        let mut got = BTreeMap::new();
        for line in text.lines() {
            let mut parts = line.splitn(3, '|');
            let (version, msgid, sd) = (
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
            );
            assert_eq!(version, "1", "rsyslog parsed it as RFC 5424: {line}");
            assert!(!msgid.is_empty() && msgid != "-", "{line}");
            let seq = sd
                .split_once("seq=\"")
                .and_then(|(_, r)| r.split_once('"'))
                .and_then(|(n, _)| n.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no seq in {line}"));
            *got.entry(seq).or_default() += 1;
        }
        got
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits until rsyslog has every seq from 1 to the daemon's last.
fn wait_all_received(d: &Daemon, r: &Rsyslog, last: u64) -> BTreeMap<u64, usize> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let got = r.received();
        if (1..=last).all(|s| got.contains_key(&s)) {
            return got;
        }
        if Instant::now() > deadline {
            let missing: Vec<u64> = (1..=last).filter(|s| !got.contains_key(s)).collect();
            let st = d.mg(&["audit", "status"]).stdout.clone();
            panic!("missing at the collector: {missing:?}\n{st}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn last_seq(d: &Daemon) -> u64 {
    let st = d.mg(&["--json", "audit", "status"]).ok().stdout.clone();
    let v: serde_json::Value = serde_json::from_str(st.trim()).unwrap();
    v["last_seq"].as_u64().unwrap()
}

/// Runs of consecutive seqs.
fn runs(seqs: &[u64]) -> usize {
    seqs.windows(2).filter(|w| w[1] != w[0] + 1).count() + usize::from(!seqs.is_empty())
}

#[test]
fn forwarding_to_rsyslog_over_tcp_survives_the_collector_stopping_mid_stream() {
    let rdir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut rsyslog = Rsyslog::start(rdir.path(), port, None);
    let d = Daemon::start_text(|s| {
        config_with(
            s,
            &format!("[audit.forward]\ntarget = \"tcp://127.0.0.1:{port}\"\n"),
        )
    });
    for _ in 0..40 {
        d.mg(&["audit", "status"]).ok();
    }
    // Long enough for the forwarder to have delivered and committed some.
    std::thread::sleep(Duration::from_secs(3));
    for _ in 0..10 {
        d.mg(&["audit", "status"]).ok();
    }
    // Mid-stream: the collector goes away while events keep coming.
    rsyslog.stop();
    for _ in 0..40 {
        d.mg(&["audit", "status"]).ok();
    }
    let st = d.mg(&["audit", "status"]).ok().stdout.clone();
    assert!(
        st.contains(&format!("forwarding:   tcp://127.0.0.1:{port}")),
        "{st}"
    );
    rsyslog.spawn();
    for _ in 0..40 {
        d.mg(&["audit", "status"]).ok();
    }
    let last = last_seq(&d);
    let got = wait_all_received(&d, &rsyslog, last);
    let dups: Vec<u64> = got
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(s, _)| *s)
        .collect();
    eprintln!("last {last}, duplicates {dups:?}");
    assert!(
        runs(&dups) <= 2,
        "duplicates only at the reconnect boundary: {dups:?}"
    );
    // The status shows the reconnect.
    let v: serde_json::Value =
        serde_json::from_str(d.mg(&["--json", "audit", "status"]).ok().stdout.trim()).unwrap();
    assert!(v["forward"]["reconnects"].as_u64().unwrap() >= 1, "{v}");
}

#[test]
fn forwarding_to_rsyslog_over_tls_verifies_the_collector() {
    let rdir = tempfile::tempdir().unwrap();
    let ca = rdir.path().join("ca");
    let certs = rdir.path().join("certs");
    let run = |args: &[&str]| {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["cert", "init-ca", "--ca", ca.to_str().unwrap()]);
    run(&[
        "cert",
        "server",
        "--ca",
        ca.to_str().unwrap(),
        "--out",
        certs.to_str().unwrap(),
    ]);
    let port = free_port();
    let rsyslog = Rsyslog::start(rdir.path(), port, Some(certs.clone()));
    let d = Daemon::start_text(|s| {
        config_with(
            s,
            &format!(
                "[audit.forward]\ntarget = \"tls://127.0.0.1:{port}\"\nca = {:?}\n",
                certs.join("ca.crt").display().to_string()
            ),
        )
    });
    for _ in 0..10 {
        d.mg(&["audit", "status"]).ok();
    }
    let last = last_seq(&d);
    wait_all_received(&d, &rsyslog, last);
    let v: serde_json::Value =
        serde_json::from_str(d.mg(&["--json", "audit", "status"]).ok().stdout.trim()).unwrap();
    assert_eq!(v["forward"]["connected"], true, "{v}");

    // A collector whose certificate does not carry the expected name is
    // refused: nothing is sent, the status says why.
    let wrong = Daemon::start_text(|s| {
        config_with(
            s,
            &format!(
                "[audit.forward]\ntarget = \"tls://127.0.0.1:{port}\"\nca = {:?}\nserver_name = \"collector.example.org\"\n",
                certs.join("ca.crt").display().to_string()
            ),
        )
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v: serde_json::Value =
            serde_json::from_str(wrong.mg(&["--json", "audit", "status"]).ok().stdout.trim())
                .unwrap();
        if let Some(e) = v["forward"]["last_error"].as_str() {
            assert!(
                e.contains("TLS handshake") && e.contains("certificate"),
                "{e}"
            );
            assert_eq!(v["forward"]["connected"], false);
            break;
        }
        assert!(Instant::now() < deadline, "no handshake error shown: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_forwarding_config_with_a_missing_ca_is_a_config_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let config = dir.path().join("metergate.toml");
    std::fs::write(
        &config,
        config_with(
            &socket,
            "[audit.forward]\ntarget = \"tls://127.0.0.1:6514\"\nca = \"nowhere/ca.crt\"\n",
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("nowhere/ca.crt"), "{err}");
    for (text, want) in [
        (
            "target = \"udp://h:514\"\n",
            "tcp://HOST:PORT or tls://HOST:PORT",
        ),
        ("target = \"tls://h:6514\"\n", "audit.forward.ca"),
        ("target = \"tcp://h:514\"\nfacility = 30\n", "0 to 23"),
    ] {
        std::fs::write(
            &config,
            config_with(&socket, &format!("[audit.forward]\n{text}")),
        )
        .unwrap();
        let out = Command::new(BIN)
            .args(["check-config", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let all = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(2), "{all}");
        assert!(all.contains(want), "{text}: {all}");
    }
}

/// After a reload that adds `[audit.forward]` (applied only at a restart),
/// the kept config is still the one in force: a second reload does not make
/// the log believe it forwards, so drop-oldest still drops.
#[test]
fn drop_oldest_still_drops_after_two_reloads_that_add_forwarding() {
    let d = Daemon::start_text(|s| {
        config_with(
            s,
            "[audit]\nwhen_full = \"drop-oldest\"\ncapacity_events = 1000\nwarn_at_percent = 90\n",
        )
    });
    let collector = free_port();
    let forward = format!("\n[audit.forward]\ntarget = \"tcp://127.0.0.1:{collector}\"\n");
    d.reload_with(|text| text + &forward);
    d.reload_with(|text| text);
    let reloads = d
        .mg(&["audit", "query", "--code", "system.reload", "--limit", "10"])
        .ok()
        .stdout
        .clone();
    assert!(
        reloads.contains("not applied until a restart: audit.forward"),
        "{reloads}"
    );
    // Each `session list` is one logged admin decision: past capacity.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let socket = d.dir.path().join("control.sock");
    rt.block_on(async {
        let request = metergate::doors::admin::protocol::Request {
            argv: vec!["session".into(), "list".into()],
            ..Default::default()
        };
        for _ in 0..1300 {
            let r = metergate::doors::admin::server::call(&socket, &request)
                .await
                .expect("the daemon answers");
            assert_eq!(r.code, 0, "{r:?}");
        }
    });
    let status = d.mg(&["audit", "status", "--json"]).ok().stdout.clone();
    let st: serde_json::Value = serde_json::from_str(status.trim()).expect("JSON status");
    assert!(
        st["dropped"].as_u64().unwrap_or(0) > 0,
        "nothing was dropped: {status}"
    );
    assert_eq!(st["refused_full"].as_u64(), Some(0), "{status}");
    assert!(st["stored"].as_u64().unwrap() <= 1000, "{status}");
}
