//! Running as a real service: dropping root after binding, start-up checks,
//! the systemd notification protocol on a test NOTIFY_SOCKET, the graceful
//! stop that drains sessions, JSON logs, and the unit file checked with
//! systemd-analyze.

#[path = "common/daemon.rs"]
mod daemon;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use daemon::{BIN, Daemon, free_port};

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// A minimal config in DIR: state, a private control socket, one plain
/// Modbus listener, and the `[daemon]` section given.
fn write_config(dir: &Path, daemon_section: &str, modbus_port: u16) -> std::path::PathBuf {
    let config = dir.join("metergate.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"state\"\n[daemon]\n{daemon_section}\n[control]\nsocket = {:?}\ngroup = \"\"\nmode = \"0600\"\n[modbus]\nlisten = [\"127.0.0.1:{modbus_port}\"]\n[[modbus.clients]]\ncidr = \"127.0.0.1/32\"\nservice_user = \"poller\"\n",
            s(&dir.join("control.sock"))
        ),
    )
    .unwrap();
    config
}

fn serve_output(config: &Path) -> (i32, String) {
    let out = Command::new(BIN)
        .args(["serve", "--config", s(config)])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn status_field(pid: u32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn started_as_root_it_binds_then_runs_as_the_service_account() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "this test starts the daemon as root: run the tests as root (CI does)"
    );
    let port = free_port();
    let d = Daemon::start_text(|socket| {
        let dir = socket.parent().unwrap();
        // nobody must reach its state directory: the test directory is
        // traversable, the state directory is nobody's alone.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).unwrap();
        let state = dir.join("state");
        std::fs::create_dir(&state).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
        nix::unistd::chown(&state, Some(65534.into()), Some(65534.into())).unwrap();
        std::fs::read_to_string(write_config(
            dir,
            "user = \"nobody\"\ngroup = \"nogroup\"",
            port,
        ))
        .unwrap()
    });
    let pid = d.pid().unwrap();
    // The control socket accepts (its backlog) from the moment it is bound,
    // before root is dropped: wait (bounded) for the drop itself.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while status_field(pid, "Uid") == "0 0 0 0" && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    assert_eq!(status_field(pid, "Uid"), "65534 65534 65534 65534");
    assert_eq!(status_field(pid, "Gid"), "65534 65534 65534 65534");
    for caps in ["CapEff", "CapPrm", "CapAmb"] {
        assert_eq!(status_field(pid, caps), "0000000000000000", "{caps}");
    }
    // It serves: the listener bound before the drop accepts, the store
    // written after it belongs to nobody, the socket answers root.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    let tail = d.mg(&["audit", "tail", "-n", "5"]);
    assert!(tail.ok().stdout.contains("system.start"));
    use std::os::unix::fs::MetadataExt;
    let key = d.dir.path().join("state/audit-signing.key");
    assert_eq!(std::fs::metadata(&key).unwrap().uid(), 65534);
}

#[test]
fn unsafe_starts_are_refused_with_the_path_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    // Root without an account and without allow_root.
    let config = write_config(dir.path(), "", free_port());
    let (code, err) = serve_output(&config);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("running as root: set daemon.user"), "{err}");
    // A state directory others can read.
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = write_config(dir.path(), "allow_root = true", free_port());
    let (code, err) = serve_output(&config);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("mode 0755 lets others in")
            && err.contains(&format!("chmod 0700 {}", s(&state))),
        "{err}"
    );
    // A signing key others can read.
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let key = state.join("audit-signing.key");
    std::fs::write(&key, b"not a key").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, err) = serve_output(&config);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("chmod 0600 {}", s(&key))), "{err}");
    // An unknown account.
    let config = write_config(dir.path(), "user = \"no-such-user-here\"", free_port());
    let (code, err) = serve_output(&config);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("daemon.user `no-such-user-here`: no such user"),
        "{err}"
    );
}

#[test]
fn systemd_hears_ready_watchdog_and_stopping_and_a_stop_drains_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(
        dir.path(),
        "allow_root = true\ndrain_timeout = \"2s\"",
        port,
    );
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut child = Command::new(BIN)
        .args(["--log-format", "json", "serve", "--config", s(&config)])
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "400000")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut heard = Vec::new();
    let wait_for = |what: &str, heard: &mut Vec<String>| {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut buf = [0u8; 512];
        while Instant::now() < deadline {
            let n = notify.recv(&mut buf).expect("a notification in time");
            let m = String::from_utf8_lossy(&buf[..n]).to_string();
            heard.push(m.clone());
            if m.lines().any(|l| l == what) {
                return;
            }
        }
        panic!("no {what}: {heard:?}");
    };
    wait_for("READY=1", &mut heard);
    wait_for("WATCHDOG=1", &mut heard);
    // A live Modbus session; SIGTERM drains it for up to 2 s, then ends it.
    let mut session = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let stopped_at = Instant::now();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    wait_for("STOPPING=1", &mut heard);
    session
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert!(
        matches!(session.read(&mut buf), Ok(0) | Err(_)),
        "the session was ended"
    );
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(
        stopped_at.elapsed() >= Duration::from_millis(1500),
        "it waited for the session"
    );
    // The log lines were JSON.
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let first = err.lines().next().expect("log lines");
    let v: serde_json::Value = serde_json::from_str(first).expect("a JSON log line");
    assert!(
        v["level"].is_string() && v["timestamp"].is_string(),
        "{first}"
    );
    // The stop event says one session was ended at the deadline: start
    // again on the same state and read it.
    let mut again = Command::new(BIN)
        .args(["serve", "--config", s(&config)])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let socket = dir.path().join("control.sock");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(25));
    }
    let tail = Command::new(BIN)
        .args(["--socket", s(&socket), "audit", "tail", "-n", "10"])
        .output()
        .unwrap();
    let tail = String::from_utf8_lossy(&tail.stdout).to_string();
    Command::new("kill")
        .args(["-TERM", &again.id().to_string()])
        .status()
        .unwrap();
    assert!(again.wait().unwrap().success());
    assert!(
        tail.contains(
            "stopped on SIGTERM; 1 session(s) still open at the drain deadline were ended"
        ),
        "{tail}"
    );
}

#[test]
fn the_unit_file_passes_systemd_analyze_with_exposure_at_most_2() {
    let analyze = Command::new("systemd-analyze").arg("--version").output();
    assert!(
        analyze.is_ok_and(|o| o.status.success()),
        "systemd-analyze is missing: apt-get install systemd"
    );
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/metergate.service"
    ))
    .unwrap()
    .replace("/usr/local/bin/metergate", BIN);
    let path = dir.path().join("metergate.service");
    std::fs::write(&path, unit).unwrap();
    // The man page the unit points at, generated from the CLI.
    let man1 = dir.path().join("man/man1");
    std::fs::create_dir_all(&man1).unwrap();
    let man = Command::new(BIN).arg("man").output().unwrap();
    assert!(man.status.success());
    assert!(
        String::from_utf8_lossy(&man.stdout).starts_with(".ie"),
        "roff"
    );
    std::fs::write(man1.join("metergate.1"), &man.stdout).unwrap();
    let verify = Command::new("systemd-analyze")
        .args(["verify", s(&path)])
        .env("MANPATH", dir.path().join("man"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&verify.stderr).to_string();
    assert!(verify.status.success() && text.trim().is_empty(), "{text}");
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=true", s(&path)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&security.stdout).to_string();
    let level: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for metergate.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {text}"));
    assert!(level <= 2.0, "exposure {level}: {text}");
}

#[test]
fn completions_and_the_man_page_come_from_the_command_line() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("metergate") && text.contains("check-config"),
            "{shell}"
        );
    }
    let out = Command::new(BIN)
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let man =
        String::from_utf8_lossy(&Command::new(BIN).arg("man").output().unwrap().stdout).to_string();
    assert!(
        man.contains(".TH metergate") && man.contains("serve"),
        "{man}"
    );
}

/// One FC 3 read of 2 registers at 3000 on `unit`; the answer's PDU.
fn read_unit(s: &mut std::net::TcpStream, unit: u8) -> Vec<u8> {
    use std::io::Write;
    s.write_all(&[0, 7, 0, 0, 0, 6, unit, 3, 0x0b, 0xb8, 0, 2])
        .unwrap();
    let mut head = [0u8; 7];
    s.read_exact(&mut head).unwrap();
    let mut pdu = vec![0u8; u16::from_be_bytes([head[4], head[5]]) as usize - 1];
    s.read_exact(&mut pdu).unwrap();
    pdu
}

#[test]
fn sighup_reloads_meters_and_clients_and_keeps_the_running_config_on_a_bad_one() {
    let sim = daemon::Simulator::start(3, &[]);
    let port = free_port();
    let config_for = |meters: &[u16], clients: &str| {
        let mut rest = String::new();
        for &n in meters {
            rest += &format!(
                "[[meters]]\nid = \"meter-{n}\"\nprofile = \"ion-sim\"\naddress = \"127.0.0.1:{}\"\ngateway_unit = {n}\n\n",
                sim.base_port + n - 1
            );
        }
        rest += &format!("[modbus]\nlisten = [\"127.0.0.1:{port}\"]\n{clients}");
        rest
    };
    let both = "[[modbus.clients]]\ncidr = \"127.0.0.1/32\"\nservice_user = \"tester\"\n[[modbus.clients]]\ncidr = \"127.0.0.2/32\"\nservice_user = \"tester\"\n";
    let only_one = "[[modbus.clients]]\ncidr = \"127.0.0.1/32\"\nservice_user = \"tester\"\n";
    let d = Daemon::start_text(|socket| daemon::gateway_config(socket, &config_for(&[1, 2], both)));
    d.mg(&["service-user", "add", "tester"]).ok();
    d.mg(&["service-user", "attach", "tester", "ReadOnly"]).ok();
    let socket = d.socket.clone();
    let hup = || {
        Command::new("kill")
            .args(["-HUP", &d.pid().unwrap().to_string()])
            .status()
            .unwrap();
    };
    let wait_event = |code: &str, n: usize| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let tail = d.mg(&["audit", "tail", "-n", "50"]).ok().stdout.clone();
            let found: Vec<String> = tail
                .lines()
                .filter(|l| l.contains(&format!(" {code} ")))
                .map(str::to_string)
                .collect();
            if found.len() >= n {
                return found[n - 1].clone();
            }
            assert!(Instant::now() < deadline, "no {code} #{n}: {tail}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };

    // A session from 127.0.0.1 (kept) and one from 127.0.0.2 (its entry goes).
    let mut kept = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    kept.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(read_unit(&mut kept, 1)[0], 3);
    assert_eq!(read_unit(&mut kept, 2)[0], 3);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/mb.py");
    let mut dropped = Command::new("python3")
        .arg(script)
        .arg(port.to_string())
        .arg(r#"[{"op": "hold", "source": "127.0.0.2", "unit": 1, "address": 3000, "count": 2}]"#)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(dropped.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut lines, &mut first).unwrap();
    assert!(first.contains("\"ok\": true"), "{first}");

    // Meter 2 removed, meter 3 added, 127.0.0.2's entry removed.
    std::fs::write(
        &d.config,
        daemon::gateway_config(&socket, &config_for(&[1, 3], only_one)),
    )
    .unwrap();
    hup();
    let reloaded = wait_event("system.reload", 1);
    assert!(
        reloaded.contains("1 added, 1 removed")
            && reloaded.contains("1 session(s) of changed client entries ended"),
        "{reloaded}"
    );
    // The unrelated session goes on, and sees the new unit map.
    assert_eq!(read_unit(&mut kept, 1)[0], 3);
    assert_eq!(read_unit(&mut kept, 3)[0], 3);
    assert_eq!(read_unit(&mut kept, 2), vec![0x83, 0x0a]);
    // The session whose entry was removed was ended.
    use std::io::Write;
    dropped.stdin.as_mut().unwrap().write_all(b"\n").unwrap();
    let mut second = String::new();
    std::io::BufRead::read_line(&mut lines, &mut second).unwrap();
    assert!(second.contains("\"ok\": false"), "{second}");
    let _ = dropped.wait();

    // A bad config changes nothing and is logged with where it is wrong.
    std::fs::write(&d.config, "state_dir = \"state\"\n[meters\n").unwrap();
    hup();
    let failed = wait_event("system.reload-failed", 1);
    assert!(
        failed.contains("the running one stays") && failed.contains(":2:"),
        "{failed}"
    );
    assert_eq!(read_unit(&mut kept, 3)[0], 3);
    assert_eq!(read_unit(&mut kept, 2), vec![0x83, 0x0a]);
    drop(sim);
}

#[test]
fn metrics_are_scraped_and_parsed_as_prometheus_would() {
    let sim = daemon::Simulator::start(1, &[]);
    let (port, metrics) = (free_port(), free_port());
    let d = Daemon::start_text(|socket| {
        daemon::gateway_config(
            socket,
            &format!(
                "[[meters]]\nid = \"meter-1\"\nprofile = \"ion-sim\"\naddress = \"127.0.0.1:{}\"\ngateway_unit = 1\n\n\
                 [modbus]\nlisten = [\"127.0.0.1:{port}\"]\n[[modbus.clients]]\ncidr = \"127.0.0.1/32\"\nservice_user = \"tester\"\n\
                 [metrics]\nlisten = \"127.0.0.1:{metrics}\"\n",
                sim.base_port
            ),
        )
    });
    d.mg(&["service-user", "add", "tester"]).ok();
    d.mg(&["service-user", "attach", "tester", "ReadOnly"]).ok();
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(read_unit(&mut conn, 1)[0], 3);
    assert_eq!(read_unit(&mut conn, 9), vec![0x83, 0x0a]);
    let scrape = || -> serde_json::Value {
        let out = Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/peers/scrape.py"
            ))
            .arg(format!("http://127.0.0.1:{metrics}/metrics"))
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let m = scrape();
    let v = |k: &str| m[k].as_f64().unwrap_or_else(|| panic!("no {k} in {m}"));
    assert!(v("metergate_reads_total{decision=allow}") >= 1.0);
    assert!(v("metergate_decisions_total{decision=allow,door=modbus}") >= 1.0);
    assert!(v("metergate_decisions_total{decision=allow,door=control-socket}") >= 2.0);
    assert_eq!(v("metergate_request_seconds_count{door=modbus}"), 2.0);
    assert_eq!(v("metergate_sessions{door=modbus}"), 1.0);
    assert_eq!(v("metergate_meter_up{meter=meter-1}"), 1.0);
    assert_eq!(v("metergate_pool_queue_depth{meter=meter-1}"), 0.0);
    assert!(v("metergate_audit_events") >= 3.0);
    assert_eq!(
        v("metergate_audit_pending"),
        0.0,
        "every acknowledged event is durable"
    );
    assert_eq!(v("metergate_review_overdue"), 1.0, "no review recorded yet");
    d.mg(&["review", "--ack"]).ok();
    assert_eq!(scrape()["metergate_review_overdue"], 0.0);

    // Anything but GET /metrics gets a clear status; garbage is closed.
    let http = |req: &[u8]| {
        use std::io::Write;
        let mut c = std::net::TcpStream::connect(("127.0.0.1", metrics)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = c.write_all(req);
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        out
    };
    assert!(http(b"GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
    assert!(http(b"POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
    assert_eq!(http(&[b'x'; 20_000]), "");
    assert!(http(b"GET /metrics HTTP/1.0\r\n\r\n").contains("metergate_meter_up"));

    // Metrics are served on loopback only.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("m.toml");
    std::fs::write(
        &config,
        "state_dir = \"s\"\n[metrics]\nlisten = \"0.0.0.0:9802\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config", s(&config)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("metrics.listen: `0.0.0.0:9802` is not a loopback address")
    );
}
