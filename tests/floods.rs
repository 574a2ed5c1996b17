//! Floods of silent connections against every door, from several loopback
//! sources, with the daemon under a 1,024-descriptor limit: throughout, the
//! control socket answers, pymodbus reads, an OpenSSH key login runs
//! `whoami`, and the server closes every silent connection by its deadline.

#[path = "common/daemon.rs"]
mod daemon;
#[path = "common/ssh.rs"]
mod ssh;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use daemon::{BIN, Daemon, Simulator, free_port, gateway_config, pymodbus};
use serde_json::{Value, json};

/// The open-file limit the daemon runs under: small, so the budget is what
/// keeps it answering.
const NOFILE: u64 = 1024;
/// Flood sources (the legitimate clients use 127.0.0.1).
const SOURCES: &str = "127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5";
/// Silent connections per source and door: 2,400 a door.
const PER_SOURCE: usize = 600;

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

struct Site {
    d: Daemon,
    _sim: Simulator,
    modbus: u16,
    mbaps: u16,
    ssh: u16,
    key: PathBuf,
}

fn cert_ok(args: &[&str]) {
    let out = Command::new(BIN).arg("cert").args(args).output().unwrap();
    assert!(out.status.success(), "cert {args:?}: {out:?}");
}

/// A gateway with every door, short pre-login deadlines (3 s) and every
/// loopback address a Modbus client, under `prlimit --nofile=1024`.
fn site() -> Site {
    let sim = Simulator::start(1, &[]);
    let (modbus, mbaps, ssh_port) = (free_port(), free_port(), free_port());
    let d = Daemon::start_text_limited(Some((NOFILE, NOFILE)), |socket| {
        let dir = socket.parent().expect("socket in the test directory");
        let ca = dir.join("ca");
        cert_ok(&["init-ca", "--ca", s(&ca)]);
        cert_ok(&["server", "--ca", s(&ca), "--out", s(&dir.join("tls"))]);
        gateway_config(
            socket,
            &format!(
                "[[meters]]\nid = \"meter-1\"\nprofile = \"ion-sim\"\naddress = \"127.0.0.1:{sim}\"\ngateway_unit = 1\ntimeout = \"2s\"\n\n\
                 [limits]\nfirst_request_timeout = \"3s\"\n\n\
                 [modbus]\nlisten = [\"127.0.0.1:{modbus}\"]\n\n\
                 [[modbus.clients]]\ncidr = \"127.0.0.0/8\"\nservice_user = \"scada\"\n\n\
                 [mbaps]\nlisten = [\"127.0.0.1:{mbaps}\"]\ncertificate = \"tls/server.crt\"\nkey = \"tls/server.key\"\ncrl = \"ca/crl.pem\"\nhandshake_timeout = \"3s\"\n\n\
                 [ssh]\nlisten = [\"127.0.0.1:{ssh_port}\"]\nlogin_grace = \"3s\"\n",
                sim = sim.base_port,
            ),
        )
    });
    d.mg(&["service-user", "add", "scada"]).ok();
    d.mg(&["service-user", "attach", "scada", "ReadOnly"]).ok();
    let key = ssh::keygen(d.dir.path(), "crew");
    d.mg(&["user", "add", "crew", "--email", "crew@example.org"])
        .ok();
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    d.mg(&["user", "add-key", "crew", public.trim()]).ok();
    Site {
        d,
        _sim: sim,
        modbus,
        mbaps,
        ssh: ssh_port,
        key,
    }
}

/// tests/peers/flood.py against `port`, killed if dropped early.
struct Flood {
    child: Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl Flood {
    /// Opens the silent connections; returns once they are all open.
    fn start(port: u16) -> (Flood, Value) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/flood.py");
        let mut child = Command::new("python3")
            .args([script, "127.0.0.1", &port.to_string(), SOURCES])
            .arg(PER_SOURCE.to_string())
            // Generous: the deadline is 3 s; this only bounds the test.
            .arg("60")
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs (apt-get install python3)");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let opened: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        (Flood { child, lines }, opened)
    }

    /// Waits for the summary: how many the server closed.
    fn finish(mut self) -> Value {
        let done: Value = serde_json::from_str(&self.lines.next().unwrap().unwrap()).unwrap();
        let _ = self.child.wait();
        done
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a legitimate operator and SCADA do while a door is flooded.
fn legitimate_work_goes_on(site: &Site, door: &str) {
    let list = site.d.mg(&["session", "list"]);
    assert_eq!(list.code, 0, "{door} flood: session list: {list:?}");
    let read = pymodbus(
        site.modbus,
        json!([{"op": "read", "unit": 1, "address": 3000, "count": 2}]),
    );
    assert_eq!(read[0]["ok"], true, "{door} flood: pymodbus read: {read:?}");
    let who = ssh::ssh(site.ssh, &site.key, "crew", &[], "whoami");
    assert_eq!(who.code, 0, "{door} flood: ssh whoami: {who:?}");
    assert!(who.stdout.contains("user:crew"), "{who:?}");
}

fn daemon_descriptors(d: &Daemon) -> usize {
    let pid = d.pid().expect("the daemon runs");
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |r| r.count())
}

#[test]
fn every_door_survives_a_flood_of_silent_connections_under_1024_descriptors() {
    let site = site();
    for (door, port, event) in [
        ("ssh", site.ssh, "ssh.login-grace"),
        ("modbus", site.modbus, "modbus.first-request-timeout"),
        ("mbaps", site.mbaps, "mbaps.handshake-timeout"),
    ] {
        let (flood, opened) = Flood::start(port);
        assert_eq!(
            opened["opened"].as_u64().unwrap() as usize
                + opened["refused"].as_u64().unwrap() as usize,
            PER_SOURCE * 4,
            "{opened}"
        );
        legitimate_work_goes_on(&site, door);
        let fds = daemon_descriptors(&site.d);
        assert!(
            (fds as u64) < NOFILE,
            "{door} flood: the daemon holds {fds} descriptors"
        );
        let done = flood.finish();
        assert_eq!(
            done["still_open"], 0,
            "{door}: the server left silent connections open: {done}"
        );
        assert_eq!(done["closed_by_server"], opened["opened"], "{door}: {done}");
        // After the flood, the door serves as before.
        legitimate_work_goes_on(&site, door);
        // Refusals are aggregated events: the first of each kind is logged
        // at once, naming the source and the rule.
        let events = site
            .d
            .mg(&["--json", "audit", "query", "--code", event, "--limit", "50"])
            .ok()
            .stdout
            .clone();
        assert!(events.contains("127.0.0."), "{door}: no {event}: {events}");
    }
    let refused = site
        .d
        .mg(&[
            "audit",
            "query",
            "--code",
            "connection.refused",
            "--limit",
            "50",
        ])
        .ok()
        .stdout
        .clone();
    assert!(
        refused.contains("limits.connections_per_source"),
        "no per-source refusal: {refused}"
    );
    let dropped = site
        .d
        .mg(&[
            "audit",
            "query",
            "--code",
            "ssh.startup-dropped",
            "--limit",
            "50",
        ])
        .ok()
        .stdout
        .clone();
    assert!(
        dropped.contains("ssh.per_source_max_startups"),
        "no SSH startup drop: {dropped}"
    );
}

#[test]
fn the_daemon_raises_its_soft_descriptor_limit_to_the_hard_one() {
    let sim = Simulator::start(1, &[]);
    let modbus = free_port();
    // Soft 256, hard 4096: the daemon runs with 4096.
    let d = Daemon::start_text_limited(Some((256, 4096)), |socket| {
        gateway_config(
            socket,
            &format!(
                "[[meters]]\nid = \"meter-1\"\nprofile = \"ion-sim\"\naddress = \"127.0.0.1:{}\"\ngateway_unit = 1\n[modbus]\nlisten = [\"127.0.0.1:{modbus}\"]\n",
                sim.base_port
            ),
        )
    });
    let pid = d.pid().unwrap();
    let out = Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            "--nofile",
            "--raw",
            "--noheadings",
            "--output",
            "SOFT,HARD",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let numbers: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(numbers.len(), 2, "{text}");
    assert_eq!(numbers, ["4096", "4096"], "soft limit not raised: {text}");
}

/// A client that says its SSH version and then stalls the key exchange is
/// closed at the login grace too: russh runs the session in a task of its
/// own, and the socket it holds is cut when the door gives up on it.
#[test]
fn a_client_stalling_the_key_exchange_is_closed_at_the_login_grace() {
    let port = free_port();
    let d = Daemon::start_text(|socket| {
        gateway_config(
            socket,
            &format!("[ssh]\nlisten = [\"127.0.0.1:{port}\"]\nlogin_grace = \"2s\"\n"),
        )
    });
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/flood.py");
    let out = Command::new("python3")
        .args([
            script,
            "127.0.0.1",
            &port.to_string(),
            "127.0.0.2",
            "8",
            "60",
            "banner",
        ])
        .output()
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let done: Value = serde_json::from_str(text.lines().last().unwrap_or("{}")).unwrap();
    assert_eq!(done["opened"], 8, "{text}");
    assert_eq!(
        done["still_open"], 0,
        "stalled connections outlived the grace: {text}"
    );
    assert_eq!(done["closed_by_server"], 8, "{text}");
    let events = d
        .mg(&[
            "--json",
            "audit",
            "query",
            "--code",
            "ssh.login-grace",
            "--limit",
            "10",
        ])
        .ok()
        .stdout
        .clone();
    assert!(events.contains("127.0.0.2"), "{events}");
}

/// Files SFTP holds open come from their own share of the descriptor
/// budget: one principal opening file after file over many channels is
/// told the gateway is busy once the share is used (never EMFILE for the
/// daemon), and the places come back when the files close.
#[test]
fn sftp_files_stay_within_their_share_of_the_descriptor_budget() {
    let port = free_port();
    let d = Daemon::start_text_limited(Some((320, 320)), |socket| {
        gateway_config(
            socket,
            &format!(
                "[[meters]]\nid = \"m1\"\nprofile = \"ion-sim\"\nfiles = \"files/m1\"\n\
                 [ssh]\nlisten = [\"127.0.0.1:{port}\"]\n"
            ),
        )
    });
    let files = d.dir.path().join("files/m1/logs");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("a.log"), b"log").unwrap();
    let key = ssh::keygen(d.dir.path(), "ada");
    d.mg(&["user", "add", "ada", "--email", "ada@example.org"])
        .ok();
    d.mg(&["user", "attach", "ada", "Administrator"]).ok();
    d.mg(&["user", "add-key", "ada", &ssh::public_line(&key)])
        .ok();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/sftp_open_many.py");
    let out = Command::new("python3")
        .args([script, &port.to_string(), "ada"])
        .arg(&key)
        .args(["/m1/logs/a.log", "8", "64"])
        .output()
        .expect("python3 runs");
    let r: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    // 320 descriptors: a quarter of what the reserve leaves, far below the
    // 512 the eight channels would hold.
    let opened = r["opened"].as_u64().unwrap();
    assert!(opened > 0 && opened < 100, "{r}");
    assert!(
        r["refusal"]
            .as_str()
            .unwrap_or("")
            .contains("open-file budget"),
        "{r}"
    );
    assert_eq!(r["again"], true, "{r}");
    assert!(daemon_descriptors(&d) < 320);
    // The daemon still answers.
    d.mg(&["session", "list"]).ok();
}
