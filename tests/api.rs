//! The HTTPS admin API with clients nobody here wrote: curl for the token
//! flow (RFC 6749 §4.4) and calls, Python requests with requests-oauthlib's
//! BackendApplicationClient as any OAuth client library would; and a
//! decision table of who may call.

#[path = "common/daemon.rs"]
mod daemon;

use std::path::{Path, PathBuf};
use std::process::Command;

use daemon::{BIN, Daemon, free_port, gateway_config};
use serde_json::Value;

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

struct Api {
    d: Daemon,
    port: u16,
    ca: PathBuf,
}

/// An access key of a service user: (id, secret).
fn key_of(d: &Daemon, service_user: &str) -> (String, String) {
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
fn api() -> Api {
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
                "[api]\nlisten = \"127.0.0.1:{port}\"\ncertificate = \"tls/server.crt\"\nkey = \"tls/server.key\"\n"
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
    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// curl; returns (status, body).
    fn curl(&self, args: &[&str]) -> (u16, String) {
        let out = Command::new("curl")
            .args(["-sS", "--cacert", s(&self.ca), "-w", "\n%{http_code}"])
            .args(args)
            .output()
            .expect("curl runs (apt-get install curl)");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    fn token(&self, id: &str, secret: &str) -> (u16, String) {
        self.curl(&[
            "-u",
            &format!("{id}:{secret}"),
            "-d",
            "grant_type=client_credentials",
            &self.url("/oauth/token"),
        ])
    }

    fn call(&self, token: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
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

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn curl_gets_a_token_with_client_credentials_and_calls_the_api() {
    let a = api();
    let (id, secret) = key_of(&a.d, "provisioner");
    let (status, body) = a.token(&id, &secret);
    assert_eq!(status, 200, "{body}");
    let t = json(&body);
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["expires_in"], 3600);
    let token = t["access_token"].as_str().unwrap().to_string();
    // The form body works as well as HTTP Basic.
    let (status, _) = a.curl(&[
        "-d",
        &format!("grant_type=client_credentials&client_id={id}&client_secret={secret}"),
        &a.url("/oauth/token"),
    ]);
    assert_eq!(status, 200);
    // A user created, shown, listed, deleted through the core.
    let (status, body) = a.call(
        &token,
        "POST",
        "/api/v1/users",
        Some(r#"{"name": "nora", "email": "nora@example.net"}"#),
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = a.call(&token, "GET", "/api/v1/users/nora", None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["email"], "nora@example.net", "{body}");
    let (status, body) = a.call(&token, "GET", "/api/v1/users", None);
    assert_eq!(status, 200);
    assert!(body.contains("nora"), "{body}");
    // The same change through the socket is seen through the API.
    let listed = a.d.mg(&["user", "list"]).ok().stdout.clone();
    assert!(listed.contains("nora"), "{listed}");
    // A group with nora in it and a policy attached, then gone.
    let (status, body) = a.call(
        &token,
        "POST",
        "/api/v1/user-groups",
        Some(r#"{"name": "crews"}"#),
    );
    assert_eq!(status, 201, "{body}");
    for path in [
        "/api/v1/user-groups/crews/members/nora",
        "/api/v1/user-groups/crews/policies/ReadOnly",
    ] {
        let (status, body) = a.call(&token, "PUT", path, None);
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (status, body) = a.call(&token, "GET", "/api/v1/user-groups/crews", None);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("nora") && body.contains("ReadOnly"), "{body}");
    let (status, body) = a.call(
        &token,
        "DELETE",
        "/api/v1/user-groups/crews/members/nora",
        None,
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = a.call(&token, "DELETE", "/api/v1/user-groups/crews", None);
    assert_eq!(status, 200, "{body}");
    let (status, _) = a.call(&token, "GET", "/api/v1/user-groups/crews", None);
    assert_eq!(status, 404);
    let (status, body) = a.call(&token, "GET", "/api/v1/support-access", None);
    assert_eq!(status, 200, "{body}");
    let (status, _) = a.call(&token, "DELETE", "/api/v1/users/nora", None);
    assert_eq!(status, 200);
    // Every call is an event naming the route template and the key.
    let events =
        a.d.mg(&[
            "--json", "audit", "query", "--code", "api.call", "--limit", "50",
        ])
        .ok()
        .stdout
        .clone();
    assert!(events.contains("POST /api/v1/users"), "{events}");
    assert!(events.contains("GET /api/v1/users/{name}"), "{events}");
    assert!(events.contains(&id), "{events}");
    assert!(!events.contains(&secret) && !events.contains(&token));
}

#[test]
fn token_endpoint_errors_are_rfc_6749_and_no_plain_http_answers() {
    let a = api();
    let (id, secret) = key_of(&a.d, "provisioner");
    // (what, curl arguments) → (status, error)
    let table: Vec<(&str, Vec<String>, u16, &str)> = vec![
        (
            "wrong secret",
            vec![
                "-u".into(),
                format!("{id}:wrong"),
                "-d".into(),
                "grant_type=client_credentials".into(),
            ],
            401,
            "invalid_client",
        ),
        (
            "unknown key",
            vec![
                "-u".into(),
                "AKnothing:x".into(),
                "-d".into(),
                "grant_type=client_credentials".into(),
            ],
            401,
            "invalid_client",
        ),
        (
            "no client authentication",
            vec!["-d".into(), "grant_type=client_credentials".into()],
            401,
            "invalid_client",
        ),
        (
            "another grant type",
            vec![
                "-u".into(),
                format!("{id}:{secret}"),
                "-d".into(),
                "grant_type=password".into(),
            ],
            400,
            "unsupported_grant_type",
        ),
        (
            "no grant type",
            vec![
                "-u".into(),
                format!("{id}:{secret}"),
                "-d".into(),
                "scope=x".into(),
            ],
            400,
            "invalid_request",
        ),
    ];
    for (what, args, status, error) in table {
        let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
        let url = a.url("/oauth/token");
        all.push(&url);
        let (got, body) = a.curl(&all);
        assert_eq!(got, status, "{what}: {body}");
        assert_eq!(json(&body)["error"], error, "{what}: {body}");
        assert!(!body.contains(&secret), "{what}: the secret came back");
    }
    // A client that swapped id and secret: refused, and the secret (in the
    // id's place) never reaches the log.
    let (status, _) = a.token(&secret, &id);
    assert_eq!(status, 401);
    let failures =
        a.d.mg(&[
            "--json",
            "audit",
            "query",
            "--code",
            "login.failure",
            "--limit",
            "50",
        ])
        .ok()
        .stdout
        .clone();
    assert!(failures.contains("no key id"), "{failures}");
    assert!(!failures.contains(&secret), "the secret reached the log");
    // Plain HTTP on the same port gets no answer from an HTTP server.
    let out = Command::new("curl")
        .args([
            "-sS",
            "-m",
            "5",
            &format!("http://127.0.0.1:{}/oauth/token", a.port),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "plain HTTP was answered");
}

/// Who may call: (caller, what happened to it) → status and the reason.
#[test]
fn only_a_live_token_of_an_administrator_with_its_key_makes_calls() {
    let a = api();
    let (admin_id, admin_secret) = key_of(&a.d, "provisioner");
    a.d.mg(&["service-user", "add", "siem"]).ok();
    a.d.mg(&["service-user", "attach", "siem", "ReadOnly"]).ok();
    let (siem_id, siem_secret) = key_of(&a.d, "siem");
    let token = |id: &str, secret: &str| {
        let (status, body) = a.token(id, secret);
        assert_eq!(status, 200, "{body}");
        json(&body)["access_token"].as_str().unwrap().to_string()
    };
    let admin = token(&admin_id, &admin_secret);
    let siem = token(&siem_id, &siem_secret);
    let (status, body) = a.call(&siem, "GET", "/api/v1/users", None);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("Administrator"), "{body}");
    let (status, body) = a.call("mgt_0000", "GET", "/api/v1/users", None);
    assert_eq!(status, 401, "{body}");
    let (status, _) = a.call(&admin, "GET", "/api/v1/users", None);
    assert_eq!(status, 200);
    // The key deactivated: the token dies at once.
    a.d.mg(&[
        "service-user",
        "key",
        "deactivate",
        "provisioner",
        &admin_id,
    ])
    .ok();
    let (status, body) = a.call(&admin, "GET", "/api/v1/users", None);
    assert_eq!(status, 401, "{body}");
    // The change itself ended the token.
    assert!(body.contains("the token is unknown"), "{body}");
    // A new key, a new token; the service user deactivated: dead too (a
    // person holds Administrator, so the gateway is not locked out).
    a.d.mg(&["user", "add", "root-admin", "--email", "r@example.net"])
        .ok();
    a.d.mg(&["user", "attach", "root-admin", "Administrator"])
        .ok();
    let (id2, secret2) = key_of(&a.d, "provisioner");
    // A token not used while its service user was deactivated does not
    // come back to life when the user is activated again.
    let unused = token(&id2, &secret2);
    a.d.mg(&["service-user", "deactivate", "provisioner"]).ok();
    a.d.mg(&["service-user", "activate", "provisioner"]).ok();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (status, body) = a.call(&unused, "GET", "/api/v1/users", None);
        if status == 401 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a token came back to life: {status} {body}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let admin2 = token(&id2, &secret2);
    a.d.mg(&["service-user", "deactivate", "provisioner"]).ok();
    let (status, body) = a.call(&admin2, "GET", "/api/v1/users", None);
    assert_eq!(status, 401, "{body}");
    let (status, _) = a.token(&id2, &secret2);
    assert_eq!(status, 401);
    // Problem bodies are RFC 9457.
    assert!(body.contains("\"status\":401"), "{body}");
}

/// requests-oauthlib's BackendApplicationClient, as an integration would.
#[test]
fn an_oauth_client_library_provisions_a_user_end_to_end() {
    let a = api();
    let (id, secret) = key_of(&a.d, "provisioner");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/oauth_client.py");
    let out = Command::new("python3")
        .args([script, &a.url(""), s(&a.ca), &id, &secret, "hana"])
        .output()
        .expect("python3 runs");
    let r: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(r["token_type"], "Bearer", "{r}");
    assert_eq!(r["create"], 201, "{r}");
    assert_eq!(r["attach"], 200, "{r}");
    assert_eq!(r["show"], 200, "{r}");
    assert!(r["policies"].to_string().contains("ReadOnly"), "{r}");
    assert_eq!(r["events"], 200, "{r}");
    assert_eq!(r["events_name_user"], true, "{r}");
    assert_eq!(r["delete"], 200, "{r}");
    assert_eq!(r["gone"], 404, "{r}");
    assert_eq!(r["gone_type"], "application/problem+json", "{r}");
}

/// The demo serves the API with its CA's certificate, and `provisioner`'s
/// key from credentials.toml gets a token (DESIGN §7's contract).
#[test]
fn the_demo_serves_the_api_to_provisioner() {
    let (d, ports) = Daemon::start_demo();
    let demo = d
        .config
        .parent()
        .expect("the demo's directory")
        .to_path_buf();
    let creds: toml::Value =
        toml::from_str(&std::fs::read_to_string(demo.join("credentials.toml")).unwrap()).unwrap();
    let key = &creds["access_keys"]["provisioner"];
    let (id, secret) = (
        key["id"].as_str().unwrap().to_string(),
        key["secret"].as_str().unwrap().to_string(),
    );
    let a = Api {
        port: ports.modbus + 2941,
        ca: demo.join("certs/ca.crt"),
        d,
    };
    let (status, body) = a.token(&id, &secret);
    assert_eq!(status, 200, "{body}");
    let token = json(&body)["access_token"].as_str().unwrap().to_string();
    let (status, body) = a.call(&token, "GET", "/api/v1/users", None);
    assert_eq!(status, 200, "{body}");
    for user in ["admin", "crew", "viewer"] {
        assert!(body.contains(user), "{body}");
    }
}
