//! The HTTPS API in tests: a gateway with `[api]` on a free port, its
//! certificate from the gateway's own CA, `provisioner` (Administrator),
//! and curl to call it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use super::daemon::{BIN, Daemon, free_port, gateway_config};
use serde_json::Value;

pub fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

pub struct Api {
    pub d: Daemon,
    pub port: u16,
    pub ca: PathBuf,
}

/// An access key of a service user: (id, secret).
pub fn key_of(d: &Daemon, service_user: &str) -> (String, String) {
    let out = d
        .mg(&["service-user", "key", "create", service_user])
        .ok()
        .stdout
        .clone();
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no `{name}` in {out}"))
            .trim()
            .to_string()
    };
    (field("key id:"), field("secret:"))
}

/// A gateway with the API on a free port, its certificate from the
/// gateway's own CA, and `provisioner` (Administrator).
pub fn api() -> Api {
    api_with("")
}

/// The same with more lines in `[api]`.
pub fn api_with(more: &str) -> Api {
    let port = free_port();
    let d = Daemon::start_text(|socket| {
        let dir = socket.parent().expect("socket in the test directory");
        let ca = dir.join("ca");
        for args in [
            vec!["init-ca", "--ca", s(&ca)],
            vec!["server", "--ca", s(&ca), "--out", s(&dir.join("tls"))],
        ] {
            let out = Command::new(BIN).arg("cert").args(&args).output().unwrap();
            assert!(out.status.success(), "{out:?}");
        }
        gateway_config(
            socket,
            &format!(
                "[api]\nlisten = \"127.0.0.1:{port}\"\ncertificate = \"tls/server.crt\"\nkey = \"tls/server.key\"\n{more}"
            ),
        )
    });
    d.mg(&["service-user", "add", "provisioner"]).ok();
    d.mg(&["service-user", "attach", "provisioner", "Administrator"])
        .ok();
    let ca = d.dir.path().join("ca/ca.crt");
    Api { d, port, ca }
}

impl Api {
    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// curl; returns (status, body).
    pub fn curl(&self, args: &[&str]) -> (u16, String) {
        let out = Command::new("curl")
            .args(["-sS", "--cacert", s(&self.ca), "-w", "\n%{http_code}"])
            .args(args)
            .output()
            .expect("curl runs (apt-get install curl)");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    pub fn token(&self, id: &str, secret: &str) -> (u16, String) {
        self.curl(&[
            "-u",
            &format!("{id}:{secret}"),
            "-d",
            "grant_type=client_credentials",
            &self.url("/oauth/token"),
        ])
    }

    pub fn call(&self, token: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let auth = format!("Authorization: Bearer {token}");
        let mut args = vec!["-X", method, "-H", &auth];
        if let Some(b) = body {
            args.extend(["-H", "Content-Type: application/json", "--data-binary", b]);
        }
        let url = self.url(path);
        args.push(&url);
        self.curl(&args)
    }
}

pub fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}
