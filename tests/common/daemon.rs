//! A real `metergate serve` on a temporary directory, driven through the
//! real CLI; stopped (SIGTERM, then SIGKILL) when dropped.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_metergate");

/// Where a test's demo listens.
pub struct DemoPorts {
    pub ssh: u16,
    pub modbus: u16,
    /// The HTTPS API and the web console.
    pub api: u16,
}

pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub socket: PathBuf,
    child: Option<Child>,
    /// The open-file limits (soft, hard) the daemon starts under.
    nofile: Option<(u64, u64)>,
}

/// What a CLI run printed and how it exited.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> &Self {
        assert_eq!(self.code, 0, "expected success: {self:?}");
        self
    }
}

impl Daemon {
    /// A config with the example's meters and profile, the socket and state
    /// in a fresh temporary directory.
    pub fn start() -> Daemon {
        Daemon::start_with(None)
    }

    /// Starts with a config of the caller's; `text` gets the socket path.
    pub fn start_text(text: impl FnOnce(&Path) -> String) -> Daemon {
        Daemon::start_text_limited(None, text)
    }

    /// As `start_text`, under open-file limits (soft, hard) set with
    /// `prlimit --nofile`.
    pub fn start_text_limited(
        nofile: Option<(u64, u64)>,
        text: impl FnOnce(&Path) -> String,
    ) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("metergate.toml");
        let socket = dir.path().join("control.sock");
        std::fs::write(&config, text(&socket)).unwrap();
        let mut d = Daemon {
            dir,
            config,
            socket,
            child: None,
            nofile,
        };
        d.spawn(None);
        d
    }

    /// Starts under libfaketime at `fake_time` ("YYYY-MM-DD hh:mm:ss").
    pub fn start_with(fake_time: Option<&str>) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("metergate.toml");
        let socket = dir.path().join("control.sock");
        let example = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/metergate.toml"
        ))
        .unwrap();
        let text = example
            .replace(
                "state_dir = \"/var/lib/metergate\"",
                "state_dir = \"state\"",
            )
            .replace(
                "socket = \"/run/metergate/control.sock\"",
                &format!("socket = {:?}", socket.display().to_string()),
            )
            .replace(
                "group = \"metergate-admin\"",
                "group = \"\"\nmode = \"0660\"",
            )
            // Tests pick free ports.
            .replace(
                "listen = \"127.0.0.1:9802\"",
                &format!("listen = \"127.0.0.1:{}\"", free_port()),
            )
            .replace(
                "listen = [\"0.0.0.0:2222\"]",
                &format!("listen = [\"127.0.0.1:{}\"]", free_port()),
            )
            // Tests run as whoever runs them (root in CI).
            .replace(
                "user = \"metergate\"\ngroup = \"metergate\"",
                "allow_root = true",
            );
        assert!(
            !text.contains(":2222") && !text.contains(":9802"),
            "the example's fixed ports are for people; tests pick free ones"
        );
        std::fs::write(&config, text).unwrap();
        let mut d = Daemon {
            dir,
            config,
            socket,
            child: None,
            nofile: None,
        };
        d.spawn(fake_time);
        d
    }

    fn spawn(&mut self, fake_time: Option<&str>) {
        // libfaketime is preloaded into the daemon itself (the `faketime`
        // wrapper forks, and a signal to it would not reach the daemon).
        let mut cmd = match self.nofile {
            // prlimit execs the daemon: the pid stays the daemon's.
            Some((soft, hard)) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={soft}:{hard}")).arg("--").arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        if let Some(t) = fake_time {
            cmd.env("LD_PRELOAD", libfaketime())
                .env("FAKETIME", format!("@{t}"))
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
        let child = cmd
            .args(["serve", "--config"])
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("metergate serve starts");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                let mut err = String::new();
                if let Some(mut e) = self.child.as_mut().and_then(|c| c.stderr.take()) {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                panic!("metergate serve exited with {status}: {err}");
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!(
            "metergate serve did not open {} within 30 s",
            self.socket.display()
        );
    }

    /// `metergate demo` in a fresh directory on free ports; returns once it
    /// printed `metergate demo ready`. `mg` reaches its control socket.
    pub fn start_demo() -> (Daemon, DemoPorts) {
        Daemon::start_demo_at(None)
    }

    /// The demo, under libfaketime from `fake_time` when given.
    pub fn start_demo_at(fake_time: Option<&str>) -> (Daemon, DemoPorts) {
        use std::io::{BufRead, BufReader};
        let dir = tempfile::tempdir().expect("temp dir");
        let demo = dir.path().join("demo");
        let base = free_port_block();
        let mut cmd = Command::new(BIN);
        if let Some(t) = fake_time {
            cmd.env("LD_PRELOAD", libfaketime())
                .env("FAKETIME", format!("@{t}"))
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
        let mut child = cmd
            .args(["demo", "--base-port", &base.to_string(), "--dir"])
            .arg(&demo)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("metergate demo starts");
        let out = child.stdout.take().expect("stdout");
        let ready = BufReader::new(out)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.contains("metergate demo ready"));
        assert!(ready, "the demo did not get ready");
        let d = Daemon {
            config: demo.join("metergate.toml"),
            socket: demo.join("control.sock"),
            dir,
            child: Some(child),
            nofile: None,
        };
        (
            d,
            DemoPorts {
                ssh: base - 3280,
                modbus: base,
                api: base + 2941,
            },
        )
    }

    /// A demo user's password from credentials.toml.
    pub fn demo_password(&self, user: &str) -> String {
        let path = self.config.with_file_name("credentials.toml");
        let text = std::fs::read_to_string(&path).expect("credentials.toml");
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{user} = ")))
            .unwrap_or_else(|| panic!("no {user} in {}", path.display()))
            .trim_matches('"')
            .to_string()
    }

    /// Edits the config and applies it with SIGHUP; waits (bounded) for the
    /// reload event.
    pub fn reload_with(&self, edit: impl FnOnce(String) -> String) {
        let text = std::fs::read_to_string(&self.config).expect("config");
        std::fs::write(&self.config, edit(text)).expect("config written");
        let before = self.count_events("system.reload");
        let pid = self.pid().expect("running");
        nix_kill(pid, "HUP").expect("kill runs");
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.count_events("system.reload") == before {
            assert!(
                Instant::now() < deadline,
                "no system.reload event: {}",
                self.mg(&["audit", "query", "--code", "system.reload-failed"])
                    .stdout
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn count_events(&self, code: &str) -> usize {
        self.mg(&["audit", "query", "--code", code, "--limit", "1000"])
            .stdout
            .lines()
            .filter(|l| l.contains(code))
            .count()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Runs `metergate --socket S ARGS…`.
    pub fn mg(&self, args: &[&str]) -> Run {
        self.mg_as(None, args)
    }

    pub fn mg_as(&self, uid: Option<u32>, args: &[&str]) -> Run {
        let mut cmd = Command::new(BIN);
        cmd.arg("--socket").arg(&self.socket).args(args);
        if let Some(uid) = uid {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(uid);
        }
        let out = cmd.output().expect("metergate runs");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into(),
            stderr: String::from_utf8_lossy(&out.stderr).into(),
        }
    }

    /// SIGTERM and wait (graceful stop).
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = nix_kill(child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = child.kill();
        child.wait().ok()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL, no goodbye.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self, fake_time: Option<&str>) {
        self.stop();
        self.spawn(fake_time);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

fn nix_kill(pid: u32, sig: &str) -> std::io::Result<std::process::ExitStatus> {
    Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
}

/// libfaketime (Debian package `faketime`); the test fails saying how to
/// install it.
pub fn libfaketime() -> &'static str {
    const PATHS: [&str; 3] = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
    ];
    PATHS
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or_else(|| {
            panic!(
                "libfaketime is missing: install it with `apt-get install faketime` (.ci/run does)"
            )
        })
}

/// A port P such that P and P+15519..=P+15521 are free now (the demo's
/// proxy and meters when started with `--base-port P`).
pub fn free_port_block() -> u16 {
    for _ in 0..200 {
        let Ok(l) = std::net::TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(addr) = l.local_addr() else { continue };
        let p = addr.port();
        if p as u32 + 15_524 > 65_535 {
            continue;
        }
        // The meters (15519-15521 above), their consoles (15522-15524
        // above), Modbus/TCP Security (3300 above), the HTTPS API (2941
        // above) and SSH (3280 below).
        let others: Vec<_> = [15_519, 15_520, 15_521, 15_522, 15_523, 15_524, 3_300, 2_941]
            .into_iter()
            .map(|d| p + d)
            .chain(p.checked_sub(3_280))
            .filter_map(|port| std::net::TcpListener::bind(("127.0.0.1", port)).ok())
            .collect();
        if others.len() == 9 {
            return p;
        }
    }
    panic!("no free block of ports for the demo");
}

/// A free TCP port on 127.0.0.1 (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `metergate simulate` as its own process; killed when dropped.
pub struct Simulator {
    child: Child,
    pub base_port: u16,
}

impl Simulator {
    pub fn start(meters: u16, extra: &[&str]) -> Simulator {
        for _ in 0..50 {
            let base = free_port();
            if (1..meters).any(|k| std::net::TcpListener::bind(("127.0.0.1", base + k)).is_err()) {
                continue;
            }
            let mut child = Command::new(BIN)
                .args([
                    "simulate",
                    "--meters",
                    &meters.to_string(),
                    "--base-port",
                    &base.to_string(),
                ])
                .args(extra)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("metergate simulate starts");
            use std::io::BufRead;
            let out = child.stdout.take().unwrap();
            let ready = std::io::BufReader::new(out)
                .lines()
                .map_while(Result::ok)
                .any(|l| l.contains("metergate simulate ready"));
            if ready {
                return Simulator {
                    child,
                    base_port: base,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("metergate simulate did not start");
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A gateway config: state and a private control socket in the test's
/// directory, the example's ion-sim profile, then the test's own `rest`
/// (meters, listeners, clients).
pub fn gateway_config(socket: &Path, rest: &str) -> String {
    let example = include_str!("../../config/metergate.toml");
    let profile = example
        .split_once("# --- profile ion-sim")
        .expect("the example has the ion-sim profile")
        .1
        .split_once("# --- end profile ---")
        .expect("the profile ends")
        .0;
    format!(
        "state_dir = \"state\"\n[daemon]\nallow_root = true\n[control]\nsocket = {:?}\ngroup = \"\"\nmode = \"0600\"\n\n# --- profile ion-sim{profile}\n{rest}",
        socket.display().to_string()
    )
}

/// Runs pymodbus operations through tests/peers/mb.py (a client nobody here
/// wrote); the helper fails with the install hint if pymodbus is missing.
pub fn pymodbus(port: u16, ops: serde_json::Value) -> Vec<serde_json::Value> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/mb.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(port.to_string())
        .arg(ops.to_string())
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "pymodbus helper failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from the helper")
}
