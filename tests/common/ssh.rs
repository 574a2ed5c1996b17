//! SSH clients nobody here wrote, for the tests: OpenSSH's `ssh` and
//! `ssh-keygen`, and paramiko through tests/peers (scripted password flows
//! and interactive shells with a pty).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::daemon::Run;

/// Non-interactive OpenSSH: no config file, no host-key prompt or memory,
/// only the key given.
pub const SSH_OPTIONS: [&str; 14] = [
    "-F",
    "/dev/null",
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "BatchMode=yes",
    "-o",
    "IdentitiesOnly=yes",
    "-o",
    "LogLevel=ERROR",
    "-o",
    "ConnectTimeout=20",
];

/// A fresh ed25519 key pair from OpenSSH's ssh-keygen.
pub fn keygen(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&path)
        .output()
        .expect("ssh-keygen runs (apt-get install openssh-client)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

/// The public half of a key from [`keygen`], as an OpenSSH line.
pub fn public_line(key: &Path) -> String {
    std::fs::read_to_string(key.with_extension("pub"))
        .expect("the public key")
        .trim()
        .to_string()
}

/// One OpenSSH exec command with `key` as `user`.
pub fn ssh(port: u16, key: &Path, user: &str, extra: &[&str], command: &str) -> Run {
    let out = Command::new("ssh")
        .args(SSH_OPTIONS)
        .arg("-i")
        .arg(key)
        .args(["-p", &port.to_string()])
        .args(extra)
        .arg(format!("{user}@127.0.0.1"))
        .arg(command)
        .output()
        .expect("ssh runs (apt-get install openssh-client)");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

/// `ssh -N`: a session that holds its connection open and runs nothing.
pub fn hold(port: u16, key: &Path, user: &str) -> std::process::Child {
    Command::new("ssh")
        .args(SSH_OPTIONS)
        .args(["-N", "-i"])
        .arg(key)
        .args(["-p", &port.to_string(), &format!("{user}@127.0.0.1")])
        .spawn()
        .expect("ssh runs")
}

/// Waits (bounded) for a held session's client to exit.
pub fn wait_gone(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the ssh session was not ended");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn json_of(out: std::process::Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "{e}: {text}{}",
            String::from_utf8_lossy(&out.stderr) // names the pip install when paramiko is missing
        )
    })
}

/// Runs tests/peers/ssh.py (paramiko) against the gateway.
pub fn paramiko(port: u16, args: &[&str]) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/ssh.py");
    json_of(
        Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .args(args)
            .output()
            .expect("python3 runs"),
    )
}

/// Runs tests/peers/ssh_shell.py: a pty and an interactive shell, driven by
/// `steps` (send:, type:, expect:, resize:).
pub fn shell(port: u16, user: &str, password: &str, steps: &[&str]) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/ssh_shell.py");
    json_of(
        Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .args([user, password])
            .args(steps)
            .output()
            .expect("python3 runs"),
    )
}

/// The temporary password `user add` or `user resend-password` printed.
pub fn temporary_password(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("temporary password: "))
        .expect("the command prints the temporary password")
        .trim()
        .to_string()
}
