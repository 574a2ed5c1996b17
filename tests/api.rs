//! The HTTPS admin API with clients nobody here wrote: curl for the token
//! flow (RFC 6749 §4.4) and calls, Python requests with requests-oauthlib's
//! BackendApplicationClient as any OAuth client library would; and a
//! decision table of who may call.

#[path = "common/daemon.rs"]
mod daemon;
#[path = "common/api.rs"]
mod harness;

use std::process::Command;

use daemon::Daemon;
use harness::{Api, api, api_with, json, key_of, s};
use serde_json::Value;

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
    // No token for a service user without Administrator (RFC 6749 §5.2).
    let (status, body) = a.token(&siem_id, &siem_secret);
    assert_eq!(status, 400, "{body}");
    assert_eq!(json(&body)["error"], "unauthorized_client", "{body}");
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

/// The endpoints a decision row is tried on: (method, path, body).
const ENDPOINTS: [(&str, &str, Option<&str>); 4] = [
    ("GET", "/api/v1/users", None),
    (
        "POST",
        "/api/v1/user-groups",
        Some(r#"{"name": "row-group"}"#),
    ),
    ("GET", "/api/v1/audit/events?limit=1", None),
    (
        "POST",
        "/api/v1/commands",
        Some(r#"{"argv": ["group", "list"]}"#),
    ),
];

/// A row: the caller, the service user to issue its token now (or the
/// token it kept), the status per endpoint, the problem's words.
type Row<'a> = (&'a str, Option<&'a str>, &'a str, [u16; 4], &'a str);

/// (caller, what happened to it) × endpoints → status, and the reason in
/// the problem body.
#[test]
fn a_decision_table_of_callers_and_endpoints() {
    let a = api();
    let other = api();
    let token_of = |a: &Api, who: &str| {
        let (id, secret) = key_of(&a.d, who);
        let (status, body) = a.token(&id, &secret);
        assert_eq!(status, 200, "{body}");
        (
            json(&body)["access_token"].as_str().unwrap().to_string(),
            id,
        )
    };
    // A person holds Administrator too, so no change leaves none.
    a.d.mg(&["user", "add", "root-admin", "--email", "r@example.net"])
        .ok();
    a.d.mg(&["user", "attach", "root-admin", "Administrator"])
        .ok();
    a.d.mg(&["service-user", "add", "siem"]).ok();
    a.d.mg(&["service-user", "attach", "siem", "ReadOnly"]).ok();
    // Without Administrator there is no token at all.
    let (siem_id, siem_secret) = key_of(&a.d, "siem");
    let (status, body) = a.token(&siem_id, &siem_secret);
    assert_eq!(status, 400, "{body}");
    assert_eq!(json(&body)["error"], "unauthorized_client", "{body}");
    // Administrator when its token was issued, detached since.
    a.d.mg(&["service-user", "add", "demoted"]).ok();
    a.d.mg(&["service-user", "attach", "demoted", "Administrator"])
        .ok();
    let (demoted, _) = token_of(&a, "demoted");
    a.d.mg(&["service-user", "detach", "demoted", "Administrator"])
        .ok();
    // Administrator, but a custom policy denies User Management.
    let deny = a.d.dir.path().join("no-users.toml");
    std::fs::write(
        &deny,
        "name = \"no-users\"\n[[statement]]\neffect = \"deny\"\npermissions = [\"User Management\"]\n",
    )
    .unwrap();
    a.d.mg(&["policy", "create", "--file", s(&deny)]).ok();
    a.d.mg(&["service-user", "add", "auditor"]).ok();
    a.d.mg(&["service-user", "attach", "auditor", "Administrator"])
        .ok();
    a.d.mg(&["service-user", "attach", "auditor", "no-users"])
        .ok();
    a.d.mg(&["service-user", "add", "leaver"]).ok();
    a.d.mg(&["service-user", "attach", "leaver", "Administrator"])
        .ok();
    let (leaver, _) = token_of(&a, "leaver");
    a.d.mg(&["service-user", "deactivate", "leaver"]).ok();
    a.d.mg(&["service-user", "add", "rotated"]).ok();
    a.d.mg(&["service-user", "attach", "rotated", "Administrator"])
        .ok();
    let (rotated, rotated_key) = token_of(&a, "rotated");
    a.d.mg(&["service-user", "key", "delete", "rotated", &rotated_key])
        .ok();
    let (elsewhere, _) = token_of(&other, "provisioner");
    // (caller, its token: issued now for the live ones, since every change
    // ends tokens whose holder may no longer call; status per endpoint;
    // words the problem must carry)
    let unknown = "unknown or has expired";
    let fresh = String::new();
    let rows: Vec<Row> = vec![
        (
            "Administrator",
            Some("provisioner"),
            &fresh,
            [200, 201, 200, 200],
            "",
        ),
        (
            "Administrator detached after the token",
            None,
            &demoted,
            [401, 401, 401, 401],
            unknown,
        ),
        (
            "Administrator, User Management denied",
            Some("auditor"),
            &fresh,
            // Viewing the directory is not a change: only the change is denied.
            [200, 403, 200, 200],
            "denied by policy `no-users`",
        ),
        ("deactivated", None, &leaver, [401, 401, 401, 401], unknown),
        ("key deleted", None, &rotated, [401, 401, 401, 401], unknown),
        (
            "a token of another gateway",
            None,
            &elsewhere,
            [401, 401, 401, 401],
            unknown,
        ),
    ];
    for (who, issue, token, want, words) in rows {
        let token = match issue {
            Some(service_user) => token_of(&a, service_user).0,
            None => token.to_string(),
        };
        for ((method, path, body), want) in ENDPOINTS.iter().zip(want) {
            let (status, text) = a.call(&token, method, path, *body);
            assert_eq!(status, want, "{who}: {method} {path}: {text}");
            if want >= 400 {
                assert!(text.contains(words), "{who}: {method} {path}: {text}");
                assert!(text.contains(&format!("\"status\":{want}")), "{text}");
            }
        }
        if who == "Administrator" {
            // The row's group, made by the Administrator row, goes again.
            a.d.mg(&["group", "delete", "row-group"]).ok();
        }
    }
    let (auditor, _) = token_of(&a, "auditor");
    // The denial through /commands is the command line's own answer.
    let (status, body) = a.call(
        &auditor,
        "POST",
        "/api/v1/commands",
        Some(r#"{"argv": ["group", "add", "auditors"]}"#),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["code"], 2, "{body}");
    assert!(body.contains("DENY"), "{body}");
}

/// A token lives its lifetime and no longer: the daemon under libfaketime
/// at ten times the speed, tokens of 30 s.
#[test]
fn a_token_expires_after_its_lifetime_under_faketime() {
    let mut a = api_with("token_lifetime = \"30s\"\n");
    let now = time::OffsetDateTime::now_utc();
    let at = format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} x10",
        now.year(),
        now.month() as u8,
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    a.d.restart(Some(&at));
    let (id, secret) = key_of(&a.d, "provisioner");
    let (status, body) = a.token(&id, &secret);
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["expires_in"], 30);
    let token = json(&body)["access_token"].as_str().unwrap().to_string();
    let (status, _) = a.call(&token, "GET", "/api/v1/users", None);
    assert_eq!(status, 200);
    // 30 s of the daemon's time is 3 s of ours; wait up to 60 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let body = loop {
        let (status, body) = a.call(&token, "GET", "/api/v1/users", None);
        if status == 401 {
            break body;
        }
        assert_eq!(status, 200, "{body}");
        assert!(
            std::time::Instant::now() < deadline,
            "the token never expired"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    };
    assert!(body.contains("expired"), "{body}");
}

/// `metergate --api` runs the README's worked example against the demo and
/// prints what the control socket prints.
#[test]
fn the_cli_through_the_api_prints_what_the_socket_prints() {
    let (d, ports) = Daemon::start_demo();
    let demo = d.config.parent().unwrap().to_path_buf();
    let creds: toml::Value =
        toml::from_str(&std::fs::read_to_string(demo.join("credentials.toml")).unwrap()).unwrap();
    let key = &creds["access_keys"]["provisioner"];
    let url = format!("https://127.0.0.1:{}", ports.modbus + 2941);
    let cache = tempfile::tempdir().unwrap();
    let remote = |args: &[&str]| {
        let out = Command::new(daemon::BIN)
            .args(["--api", &url, "--cacert"])
            .arg(demo.join("certs/ca.crt"))
            .args(args)
            .env("METERGATE_KEY_ID", key["id"].as_str().unwrap())
            .env("METERGATE_KEY_SECRET", key["secret"].as_str().unwrap())
            .env("XDG_RUNTIME_DIR", cache.path())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let local = |args: &[&str]| {
        let r = d.mg(args);
        (r.code, r.stdout.clone(), r.stderr.clone())
    };
    let north = demo.join("north.toml");
    std::fs::write(
        &north,
        "name = \"north-operators\"\ndescription = \"Operators on the northern site, never master reset\"\n[[statement]]\neffect = \"allow\"\nroles = [\"Operator\"]\nmeters = [\"site=north\"]\n[[statement]]\neffect = \"deny\"\npermissions = [\"Master Reset\"]\nmeters = [\"*\"]\n",
    )
    .unwrap();
    // The changes of the worked example, through the API.
    let changes: Vec<Vec<&str>> = vec![
        vec![
            "role",
            "create",
            "Reader",
            "--permission",
            "Data View",
            "--description",
            "reads measurements",
        ],
        vec!["policy", "create", "--file", s(&north)],
        vec!["group", "add", "north-crews"],
        vec!["group", "attach", "north-crews", "north-operators"],
        vec![
            "user",
            "add",
            "alice",
            "--email",
            "alice@example.net",
            "--first",
            "Alice",
        ],
        vec!["group", "add-member", "north-crews", "alice"],
    ];
    for words in &changes {
        let (code, out, err) = remote(words);
        assert_eq!(code, 0, "{words:?}: {out}{err}");
    }
    let (_, added, _) = remote(&["user", "resend-password", "alice"]);
    assert!(added.contains("temporary password: "), "{added}");
    // Then every question and listing, both ways: the same bytes.
    let same: Vec<Vec<&str>> = vec![
        vec![
            "check",
            "--principal",
            "alice",
            "--permission",
            "Peak Demand Reset",
            "--meter",
            "meter-1",
        ],
        vec![
            "check",
            "--principal",
            "alice",
            "--permission",
            "Master Reset",
            "--meter",
            "meter-1",
        ],
        vec![
            "check",
            "--principal",
            "alice",
            "--permission",
            "Peak Demand Reset",
            "--meter",
            "meter-3",
        ],
        vec!["role", "show", "Reader"],
        vec!["policy", "show", "north-operators"],
        vec!["group", "show", "north-crews"],
        vec!["user", "list"],
        vec!["--json", "user", "list"],
        vec!["group", "add", "north-crews"],
        vec!["user", "show", "nobody"],
        vec!["user", "frobnicate"],
        vec!["review"],
    ];
    for words in &same {
        let through_api = remote(words);
        let through_socket = local(words);
        assert_eq!(through_api, through_socket, "{words:?}");
    }
    let (_, out, _) = remote(&[
        "check",
        "--principal",
        "alice",
        "--permission",
        "Master Reset",
        "--meter",
        "meter-1",
    ]);
    assert!(out.contains("DENY Master Reset"), "{out}");
    // Streamed: the export comes whole, as through the socket.
    let (code, out, _) = remote(&["audit", "export"]);
    assert_eq!(code, 0);
    assert!(out.lines().count() > 20, "{out}");
    // The token was cached 0600 and reused; a wrong secret is refused
    // with the token endpoint's words and exit 1.
    let cached: Vec<_> = std::fs::read_dir(cache.path().join("metergate"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&cached[0]).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let issued = local(&["--json", "audit", "query", "--code", "token.issued"]).1;
    assert_eq!(
        issued.lines().count(),
        1,
        "one token for every call: {issued}"
    );
    let out = Command::new(daemon::BIN)
        .args(["--api", &url, "--cacert"])
        .arg(demo.join("certs/ca.crt"))
        .args(["user", "list"])
        .env("METERGATE_KEY_ID", key["id"].as_str().unwrap())
        .env("METERGATE_KEY_SECRET", "wrong")
        .env("XDG_RUNTIME_DIR", tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("got no token"));
}

/// A key's tokens share one rate, a key gets no more tokens a second than
/// that rate, and certificate reports are the local CA's alone.
#[test]
fn a_key_gets_one_rate_whatever_its_tokens_and_no_certificate_reports() {
    let a = api_with("requests_per_second = 3\n");
    let (id, secret) = key_of(&a.d, "provisioner");
    // Tokens: at most 3 a second for the key, then 429 with Retry-After.
    // Twenty asks: no 429 would need them spread over 7 seconds.
    let mut statuses = Vec::new();
    let mut tokens = Vec::new();
    for _ in 0..20 {
        let (status, body) = a.token(&id, &secret);
        if status == 200 {
            tokens.push(json(&body)["access_token"].as_str().unwrap().to_string());
        } else {
            assert_eq!(status, 429, "{body}");
            assert_eq!(json(&body)["error"], "temporarily_unavailable");
        }
        statuses.push(status);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(tokens.len() >= 2, "{statuses:?}");
    // Two tokens of one key: 3 calls a second between them, not 6.
    let mut calls = Vec::new();
    for i in 0..20 {
        // The newest two: a key keeps 16 live tokens, the oldest go first.
        let token = &tokens[tokens.len() - 1 - i % 2];
        let (status, _) = a.call(token, "GET", "/api/v1/roles", None);
        calls.push(status);
    }
    assert!(
        calls.iter().filter(|s| **s == 429).count() >= 2,
        "{calls:?}"
    );
    // A forged certificate report is refused, and nothing is reported.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (status, body) = a.call(
        &tokens[tokens.len() - 1],
        "POST",
        "/api/v1/commands",
        Some(
            r#"{"argv": ["certificate-report", "revoked", "--serial", "0A", "--kind", "client", "--name", "scada-1", "--not-after", "2030-01-01"]}"#,
        ),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["code"], 2, "{body}");
    assert!(body.contains("control socket"), "{body}");
    let revoked =
        a.d.mg(&["--json", "audit", "query", "--code", "cert.revoked"]);
    assert_eq!(revoked.stdout.trim(), "", "{revoked:?}");
    // The attempt itself is in the log.
    let refused = a.d.mg(&["audit", "query", "--code", "admin.refused"]);
    assert!(refused.stdout.contains("certificate-report"), "{refused:?}");
}
