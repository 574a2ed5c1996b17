//! SFTP clients nobody here wrote, for the SFTP tests: OpenSSH's `sftp -b`
//! and paramiko through tests/peers; and a gateway with one meter whose
//! store is a local directory.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::daemon::{Daemon, free_port, gateway_config};
use super::ssh::{SSH_OPTIONS, keygen, public_line};

/// Runs one `sftp -b` batch as `user`; true when every command succeeded.
pub fn sftp(port: u16, key: &Path, user: &str, batch: &str) -> (bool, String) {
    let mut child = Command::new("sftp")
        .args(SSH_OPTIONS)
        .arg("-i")
        .arg(key)
        .args(["-P", &port.to_string(), "-b", "-"])
        .arg(format!("{user}@127.0.0.1"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sftp runs (apt-get install openssh-client)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(batch.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Runs tests/peers/sftp_steps.py (paramiko) as `user`: one outcome per
/// step ("ok", what was read, a size, or "error: …").
pub fn steps(
    port: u16,
    user: &str,
    key: &Path,
    steps: serde_json::Value,
) -> Vec<serde_json::Value> {
    peer("sftp_steps.py", port, user, key, &[&steps.to_string()])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Runs a paramiko peer script from tests/peers as `user`; it prints one
/// JSON value.
pub fn peer(script: &str, port: u16, user: &str, key: &Path, args: &[&str]) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers")
        .join(script);
    let out = Command::new("python3")
        .arg(path)
        .arg(port.to_string())
        .arg(user)
        .arg(key)
        .args(args)
        .output()
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("{e}: {text}{}", String::from_utf8_lossy(&out.stderr)))
}

/// A gateway with one meter `m1` whose store is `files/m1` (created),
/// `[ssh]` with `ssh_extra`, and `ada` (Administrator) with a key.
pub fn one_meter(ssh_extra: &str) -> (Daemon, u16, PathBuf, PathBuf) {
    let port = free_port();
    let d = Daemon::start_text(|sock| {
        gateway_config(
            sock,
            &format!(
                "[[meters]]\nid = \"m1\"\nprofile = \"ion-sim\"\nfiles = \"files/m1\"\n\
                 [ssh]\nlisten = [\"127.0.0.1:{port}\"]\n{ssh_extra}"
            ),
        )
    });
    let files = d.dir.path().join("files/m1");
    std::fs::create_dir_all(&files).unwrap();
    let key = keygen(d.dir.path(), "ada");
    d.mg(&["user", "add", "ada", "--email", "ada@example.org"])
        .ok();
    d.mg(&["user", "attach", "ada", "Administrator"]).ok();
    d.mg(&["user", "add-key", "ada", &public_line(&key)]).ok();
    (d, port, files, key)
}

/// The names in a directory, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The SHA-256 of `bytes`, as sha256sum (a tool nobody here wrote) prints
/// it.
pub fn sha256(bytes: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum runs");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}
