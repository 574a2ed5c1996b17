//! The web console in tests: a demo gateway, and Debian's headless Chromium
//! driven by tests/peers/console.py through a list of steps.
#![allow(dead_code)]

use std::process::Command;

use crate::daemon::Daemon;
use serde_json::{Value, json};

/// Runs tests/peers/console.py with these steps.
pub fn browse(port: u16, ca: &std::path::Path, steps: Value) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/console.py");
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let out = Command::new("python3")
        .arg(script)
        .arg(format!("https://127.0.0.1:{port}"))
        .arg(ca)
        .arg(&shots)
        .arg(steps.to_string())
        .output()
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "{e}: {text}{}",
            String::from_utf8_lossy(&out.stderr) // names what to install
        )
    })
}

pub fn ok(r: &Value) {
    assert_eq!(
        r["ok"],
        true,
        "{}",
        serde_json::to_string_pretty(r).unwrap()
    );
}

pub struct Demo {
    pub d: Daemon,
    pub port: u16,
    pub ssh: u16,
    pub modbus: u16,
    pub ca: std::path::PathBuf,
}

pub fn demo() -> Demo {
    let (d, ports) = Daemon::start_demo();
    let ca = d.config.with_file_name("certs").join("ca.crt");
    Demo {
        port: ports.api,
        ssh: ports.ssh,
        modbus: ports.modbus,
        ca,
        d,
    }
}

pub fn login(user: &str, password: &str) -> Vec<Value> {
    vec![
        json!({"go": "/login"}),
        json!({"fill": {"user": user, "password": password}}),
        json!({"click": "Log in"}),
        json!({"away": "/login"}),
    ]
}

/// A new user through the control socket, and the temporary password a
/// resend gives them.
pub fn with_temporary(d: &Daemon, name: &str) -> String {
    d.mg(&[
        "user",
        "add",
        name,
        "--email",
        &format!("{name}@example.org"),
    ])
    .ok();
    let sent = d.mg(&["user", "resend-password", name]).ok().stdout.clone();
    sent.lines()
        .find_map(|l| l.strip_prefix("temporary password: "))
        .expect("the temporary password")
        .trim()
        .to_string()
}

pub fn steps(parts: Vec<Vec<Value>>) -> Value {
    Value::Array(parts.into_iter().flatten().collect())
}
