//! Modbus/TCP Security with clients nobody here wrote (pymodbus' TLS client,
//! `openssl s_client`), certificates from `metergate cert`, the simulator as
//! the meter and `metergate serve` as the gateway, all on free ports.

#[path = "common/daemon.rs"]
mod daemon;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use daemon::{BIN, Daemon, Simulator, free_port, gateway_config, pymodbus};
use serde_json::{Value, json};

/// Runs `metergate cert ARGS…` and returns (exit code, stdout, stderr).
fn cert(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("cert")
        .args(args)
        .output()
        .expect("metergate runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn cert_ok(args: &[&str]) -> String {
    let (code, out, err) = cert(args);
    assert_eq!(code, 0, "cert {args:?}: {out}{err}");
    out
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

struct Gateway {
    d: Daemon,
    _sim: Simulator,
    port: u16,
    dir: PathBuf,
}

/// A client's files for pymodbus.
#[derive(Clone)]
struct Client {
    ca: PathBuf,
    cert: Option<(PathBuf, PathBuf)>,
}

impl Client {
    fn tls(&self) -> Value {
        match &self.cert {
            Some((c, k)) => json!({"ca": self.ca, "cert": c, "key": k}),
            None => json!({"ca": self.ca}),
        }
    }
}

impl Gateway {
    /// The gateway's own CA in DIR/ca, its certificate in DIR/tls, three
    /// simulated meters at units 1-3, service users with their policies.
    fn start() -> Gateway {
        let sim = Simulator::start(3, &[]);
        let port = free_port();
        let base = sim.base_port;
        let d = Daemon::start_text(|socket| {
            let dir = socket.parent().expect("socket in the test directory");
            let ca = dir.join("ca");
            cert_ok(&["init-ca", "--ca", s(&ca)]);
            cert_ok(&["server", "--ca", s(&ca), "--out", s(&dir.join("tls"))]);
            let mut rest = String::new();
            for k in 0..3u16 {
                rest += &format!(
                    "[[meters]]\nid = \"meter-{n}\"\nprofile = \"ion-sim\"\naddress = \"127.0.0.1:{p}\"\ngateway_unit = {n}\ntimeout = \"2s\"\n\n",
                    n = k + 1,
                    p = base + k
                );
            }
            rest += &format!(
                "[mbaps]\nlisten = [\"127.0.0.1:{port}\"]\ncertificate = \"tls/server.crt\"\nkey = \"tls/server.key\"\ncrl = \"ca/crl.pem\"\nhandshake_timeout = \"5s\"\n"
            );
            gateway_config(socket, &rest)
        });
        let dir = d.dir.path().to_path_buf();
        for role in ["Operator", "Viewer"] {
            let file = dir.join(format!("{role}.toml"));
            std::fs::write(
                &file,
                format!("name = \"as-{role}\"\n[[statement]]\neffect = \"allow\"\nroles = [\"{role}\"]\nmeters = [\"*\"]\n"),
            )
            .unwrap();
            d.mg(&["policy", "create", "--file", s(&file)]).ok();
        }
        for (user, policy) in [
            ("scada-op", "as-Operator"),
            ("scada-view", "as-Viewer"),
            // Policies allow Operator only; its certificate says Engineer.
            ("scada-limited", "as-Operator"),
            // Policies allow everything; its certificate says Viewer.
            ("scada-admin", "Administrator"),
        ] {
            d.mg(&["service-user", "add", user]).ok();
            d.mg(&["service-user", "attach", user, policy]).ok();
        }
        Gateway {
            d,
            _sim: sim,
            port,
            dir,
        }
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("ca")
    }

    /// `cert issue` into DIR/clients/LABEL; returns the files and serial.
    fn issue(&self, label: &str, user: &str, extra: &[&str]) -> (Client, String) {
        let out = self.dir.join("clients").join(label);
        let ca = self.ca();
        let mut args = vec![
            "issue",
            "--ca",
            s(&ca),
            "--service-user",
            user,
            "--out",
            s(&out),
        ];
        args.extend_from_slice(extra);
        let printed = cert_ok(&args);
        let serial = printed
            .split_whitespace()
            .nth(3)
            .expect("issued … certificate SERIAL")
            .to_string();
        (
            Client {
                ca: self.dir.join("tls/ca.crt"),
                cert: Some((
                    out.join(format!("{user}.crt")),
                    out.join(format!("{user}.key")),
                )),
            },
            serial,
        )
    }

    fn ops(&self, client: &Client, ops: Value) -> Vec<Value> {
        let ops: Vec<Value> = ops
            .as_array()
            .expect("a list of ops")
            .iter()
            .map(|op| {
                let mut op = op.clone();
                op["tls"] = client.tls();
                op
            })
            .collect();
        pymodbus(self.port, Value::Array(ops))
    }

    fn events(&self) -> Vec<Value> {
        self.d
            .mg(&["--json", "audit", "tail", "-n", "500"])
            .ok()
            .stdout
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON event"))
            .collect()
    }

    /// Waits (bounded) for an event with this code and returns it.
    fn wait_event(&self, code: &str, pred: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..100 {
            if let Some(e) = self
                .events()
                .into_iter()
                .find(|e| e["code"] == code && pred(e))
            {
                return e;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("no {code} event: {:#?}", self.events());
    }
}

fn read() -> Value {
    json!({"op": "read", "unit": 1, "address": 3000, "count": 4})
}
fn time_sync() -> Value {
    json!({"op": "write", "unit": 1, "address": 5010, "values": [2026, 11, 23, 12, 0, 0]})
}
fn test_mode() -> Value {
    json!({"op": "write1", "unit": 1, "address": 5020, "value": 1})
}
fn master_reset() -> Value {
    json!({"op": "write1", "unit": 2, "address": 5000, "value": 1115})
}

fn outcome(r: &Value) -> String {
    if r["ok"] == true {
        "ok".into()
    } else if let Some(x) = r["exception"].as_u64() {
        format!("exception {x}")
    } else {
        "refused".into()
    }
}

#[test]
fn a_certificates_role_bounds_what_its_service_user_may_do() {
    let g = Gateway::start();
    let (op, _) = g.issue("op", "scada-op", &["--role", "Operator"]);
    let (view, _) = g.issue("view", "scada-view", &["--role", "Viewer"]);
    let (limited, _) = g.issue("limited", "scada-limited", &["--role", "Engineer"]);
    let (admin_as_viewer, viewer_serial) =
        g.issue("admin-viewer", "scada-admin", &["--role", "Viewer"]);
    let (no_role, _) = g.issue("norole", "scada-op", &["--no-role"]);
    let table: Vec<(&str, &Client, Value, &str)> = vec![
        // who (certificate)            what            expected
        ("Operator", &op, read(), "ok"),
        ("Operator", &op, time_sync(), "ok"),
        ("Operator", &op, test_mode(), "exception 1"),
        ("Operator", &op, master_reset(), "exception 1"),
        ("Viewer", &view, read(), "ok"),
        ("Viewer", &view, time_sync(), "exception 1"),
        // Engineer's certificate, Operator's policies: Operator's writes only.
        ("Engineer/Operator", &limited, time_sync(), "ok"),
        ("Engineer/Operator", &limited, test_mode(), "exception 1"),
        // Administrator's policies, Viewer's certificate: Viewer's rights only.
        ("Viewer/Administrator", &admin_as_viewer, read(), "ok"),
        (
            "Viewer/Administrator",
            &admin_as_viewer,
            time_sync(),
            "exception 1",
        ),
        (
            "Viewer/Administrator",
            &admin_as_viewer,
            master_reset(),
            "exception 1",
        ),
        // No role extension: connects, every request denied.
        ("no role", &no_role, read(), "exception 1"),
    ];
    let mut failures = Vec::new();
    for (who, client, what, expected) in &table {
        let got = outcome(&g.ops(client, json!([what]))[0]);
        if got != *expected {
            failures.push(format!("{who} {what}: expected {expected}, got {got}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");

    // A denial names the certificate: serial, subject and role.
    let denied = g.wait_event("write-registers.deny", |e| {
        e["detail"]["certificate_serial"] == viewer_serial.as_str()
    });
    assert!(
        denied["detail"]["certificate_subject"]
            .as_str()
            .unwrap()
            .contains("CN=scada-admin"),
        "{denied}"
    );
    assert_eq!(denied["detail"]["certificate_role"], "Viewer");
    assert!(
        denied["reason"]
            .as_str()
            .unwrap()
            .contains("role `Viewer` does not include"),
        "{denied}"
    );
    let login = g.wait_event("login.allow", |e| e["door"] == "mbaps");
    assert_eq!(login["category"], "authentication");
}

#[test]
fn refused_certificates_each_leave_their_event() {
    let g = Gateway::start();
    let ca = g.ca();
    let other_ca = g.dir.join("other-ca");
    cert_ok(&["init-ca", "--ca", s(&other_ca)]);
    let foreign_out = g.dir.join("clients/foreign");
    cert_ok(&[
        "issue",
        "--ca",
        s(&other_ca),
        "--service-user",
        "scada-op",
        "--role",
        "Operator",
        "--out",
        s(&foreign_out),
    ]);
    let foreign = Client {
        ca: g.dir.join("tls/ca.crt"),
        cert: Some((
            foreign_out.join("scada-op.crt"),
            foreign_out.join("scada-op.key"),
        )),
    };
    let (expired, _) = g.issue(
        "expired",
        "scada-op",
        &[
            "--role",
            "Operator",
            "--not-before",
            "2020-01-01",
            "--not-after",
            "2020-06-01",
        ],
    );
    let (future, _) = g.issue(
        "future",
        "scada-op",
        &[
            "--role",
            "Operator",
            "--not-before",
            "2099-01-01",
            "--days",
            "30",
        ],
    );
    let (no_client_auth, nca_serial) = g.issue(
        "nca",
        "scada-op",
        &["--role", "Operator", "--no-client-auth"],
    );
    let (two_roles, two_serial) = g.issue(
        "two",
        "scada-op",
        &["--role", "Operator", "--role", "Viewer"],
    );
    let (unknown_role, _) = g.issue("unknown", "scada-op", &["--role", "Nonexistent"]);
    let (revoked, revoked_serial) = g.issue("revoked", "scada-op", &["--role", "Operator"]);
    let (code, out, err) = cert(&[
        "--socket",
        s(&g.d.socket),
        "revoke",
        "--ca",
        s(&ca),
        &revoked_serial,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("reported to the daemon"), "{err}");
    let no_cert = Client {
        ca: g.dir.join("tls/ca.crt"),
        cert: None,
    };

    let table: Vec<(&str, &Client, &str)> = vec![
        ("no client certificate", &no_cert, "mbaps.no-certificate"),
        ("expired", &expired, "mbaps.certificate-expired"),
        ("not yet valid", &future, "mbaps.certificate-not-yet-valid"),
        ("another CA", &foreign, "mbaps.certificate-unknown-issuer"),
        (
            "no clientAuth",
            &no_client_auth,
            "mbaps.certificate-refused",
        ),
        ("two roles", &two_roles, "mbaps.certificate-refused"),
        ("revoked", &revoked, "mbaps.certificate-revoked"),
        ("unknown role", &unknown_role, "login.deny"),
    ];
    for (what, client, code) in &table {
        let r = g.ops(client, json!([read()])).remove(0);
        assert_eq!(outcome(&r), "refused", "{what}: {r}");
        g.wait_event(code, |e| e["door"] == "mbaps");
    }
    // Our own checks name the certificate.
    let nca = g.wait_event("mbaps.certificate-refused", |e| {
        e["detail"]["certificate_serial"] == nca_serial.as_str()
    });
    assert!(
        nca["reason"].as_str().unwrap().contains("clientAuth"),
        "{nca}"
    );
    let two = g.wait_event("mbaps.certificate-refused", |e| {
        e["detail"]["certificate_serial"] == two_serial.as_str()
    });
    assert!(
        two["reason"]
            .as_str()
            .unwrap()
            .contains("2 role extensions"),
        "{two}"
    );
    let unknown = g.wait_event("login.deny", |e| e["door"] == "mbaps");
    assert!(
        unknown["reason"]
            .as_str()
            .unwrap()
            .contains("`Nonexistent` is not in the role table")
    );
    // The revocation itself is in the log, reported by the CLI.
    g.wait_event("cert.revoked", |e| {
        e["detail"]["certificate_serial"] == revoked_serial.as_str()
    });
    // `cert list` shows it.
    let list = cert_ok(&["list", "--ca", s(&ca)]);
    assert!(
        list.lines()
            .any(|l| l.starts_with(revoked_serial.as_str()) && l.ends_with("revoked")),
        "{list}"
    );
}

/// A pymodbus TLS client that reads, waits, and reads again on the same
/// connection.
struct Held {
    child: std::process::Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Held {
    fn open(port: u16, client: &Client) -> (Held, Value) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/mb.py");
        let mut op = read();
        op["op"] = "hold".into();
        op["tls"] = client.tls();
        let mut child = Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .arg(json!([op]).to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        (
            Held { child, out },
            serde_json::from_str(&line).expect("JSON"),
        )
    }

    fn again(mut self) -> Value {
        self.child.stdin.as_mut().unwrap().write_all(b"\n").unwrap();
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        let _ = self.child.wait();
        serde_json::from_str(&line).expect("JSON")
    }
}

#[test]
fn revocation_and_deactivation_end_live_connections() {
    let g = Gateway::start();
    let (op, serial) = g.issue("op", "scada-op", &["--role", "Operator"]);
    let (view, _) = g.issue("view", "scada-view", &["--role", "Viewer"]);

    // Revoked while connected: the connection ends.
    let (held, first) = Held::open(g.port, &op);
    assert_eq!(outcome(&first), "ok", "{first}");
    let (held_other, _) = Held::open(g.port, &view);
    let (code, out, err) = cert(&[
        "--socket",
        s(&g.d.socket),
        "revoke",
        "--ca",
        s(&g.ca()),
        &serial,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let second = held.again();
    assert_eq!(outcome(&second), "refused", "{second}");
    // Another certificate's connection goes on.
    assert_eq!(outcome(&held_other.again()), "ok");
    // The CRL is reloaded and new connections are refused.
    g.wait_event("mbaps.crl-loaded", |e| e["detail"]["revoked"] == "1");
    assert_eq!(outcome(&g.ops(&op, json!([read()]))[0]), "refused");

    // A CRL changed behind the daemon's back (copied in) is picked up too.
    let (op2, serial2) = g.issue("op2", "scada-op", &["--role", "Operator"]);
    let (held, first) = Held::open(g.port, &op2);
    assert_eq!(outcome(&first), "ok", "{first}");
    cert_ok(&["revoke", "--ca", s(&g.ca()), &serial2]); // no --socket: not reported
    g.wait_event("mbaps.crl-loaded", |e| e["detail"]["revoked"] == "2");
    assert_eq!(outcome(&held.again()), "refused");

    // Deactivating the service user ends its connection.
    let (held, first) = Held::open(g.port, &view);
    assert_eq!(outcome(&first), "ok", "{first}");
    g.d.mg(&["service-user", "deactivate", "scada-view"]).ok();
    assert_eq!(outcome(&held.again()), "refused");
}

#[test]
fn openssl_s_client_sees_tls_1_2_and_1_3_and_no_tls_1_1() {
    let g = Gateway::start();
    let (op, _) = g.issue("op", "scada-op", &["--role", "Operator"]);
    let (c, k) = op.cert.clone().unwrap();
    // openssl s_client with the operator's certificate, and its output.
    let openssl = |extra: &[&str]| {
        let mut cmd = Command::new("openssl");
        cmd.args(["s_client", "-connect", &format!("127.0.0.1:{}", g.port)])
            .args(["-CAfile", s(&op.ca), "-cert", s(&c), "-key", s(&k)])
            .args(extra);
        cmd
    };
    let output_text = |out: std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let s_client = |extra: &[&str]| {
        let out = openssl(&[&["-brief"], extra].concat())
            .stdin(Stdio::null())
            .output()
            .expect("openssl is installed (apt-get install openssl)");
        (out.status.success(), output_text(out))
    };
    let (ok, text) = s_client(&[]);
    assert!(ok && text.contains("Protocol version: TLSv1.3"), "{text}");
    assert!(text.contains("Verification: OK"), "{text}");
    let (ok, text) = s_client(&["-tls1_2"]);
    assert!(ok && text.contains("Protocol version: TLSv1.2"), "{text}");
    // The mandatory suite of the spec's ECC path is offered.
    let (ok, text) = s_client(&["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"]);
    assert!(
        ok && text.contains("Ciphersuite: ECDHE-ECDSA-AES128-GCM-SHA256"),
        "{text}"
    );
    // TLS 1.1 offered (the client allowed to, at security level 0): the
    // gateway answers with an alert and logs the refusal.
    let (ok, text) = s_client(&["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]);
    assert!(!ok, "{text}");
    assert!(text.contains("alert handshake failure"), "{text}");
    let refused = g.wait_event("mbaps.handshake-failed", |_| true);
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("no TLS 1.2/1.3 handshake"),
        "{refused}"
    );

    // A session saved before the certificate is revoked resumes at the TLS
    // level (rustls' verifier does not run again), and the gateway's own
    // check after the handshake refuses it.
    let session = g.dir.join("session.pem");
    let with_session = |flag: &str| {
        let mut child = openssl(&[flag, s(&session)])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("openssl runs");
        // Stay a moment so the TLS 1.3 session ticket arrives.
        std::thread::sleep(std::time::Duration::from_secs(1));
        drop(child.stdin.take());
        output_text(child.wait_with_output().unwrap())
    };
    let first = with_session("-sess_out");
    assert!(first.contains("New, TLSv1.3"), "{first}");
    let serial = cert_ok(&["list", "--ca", s(&g.ca())])
        .lines()
        .find(|l| l.contains(" client "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    let (code, out, err) = cert(&[
        "--socket",
        s(&g.d.socket),
        "revoke",
        "--ca",
        s(&g.ca()),
        &serial,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    g.wait_event("mbaps.crl-loaded", |_| true);
    let resumed = with_session("-sess_in");
    assert!(resumed.contains("Reused, TLSv1.3"), "{resumed}");
    let refused = g.wait_event("mbaps.certificate-revoked", |e| {
        e["reason"]
            .as_str()
            .unwrap_or("")
            .contains("resumed session")
    });
    assert_eq!(refused["detail"]["certificate_serial"], serial.as_str());
}

#[test]
fn certificate_files_that_cannot_be_used_are_config_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let tls = dir.path().join("tls");
    cert_ok(&["init-ca", "--ca", s(&ca)]);
    cert_ok(&["server", "--ca", s(&ca), "--out", s(&tls)]);
    // Another server key, to mismatch.
    cert_ok(&[
        "server",
        "--ca",
        s(&ca),
        "--out",
        s(&dir.path().join("other")),
    ]);
    let check = |mbaps: &str| {
        let config = dir.path().join("metergate.toml");
        std::fs::write(
            &config,
            format!(
                "state_dir = \"state\"\n[mbaps]\nlisten = [\"127.0.0.1:{}\"]\n{mbaps}",
                free_port()
            ),
        )
        .unwrap();
        let out = Command::new(BIN)
            .args(["check-config", "--config", s(&config)])
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    // `cert server` copied the CRL beside the CA certificate. Without it:
    // an error naming the file, since a missing list would lift every
    // revocation.
    std::fs::remove_file(tls.join("crl.pem")).unwrap();
    let (code, err) = check("certificate = \"tls/server.crt\"\nkey = \"tls/server.key\"\n");
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("mbaps.crl") && err.contains("tls/crl.pem does not exist"),
        "{err}"
    );
    std::fs::copy(ca.join("crl.pem"), tls.join("crl.pem")).unwrap();
    let table = [
        ("certificate = \"tls/server.crt\"\n", "mbaps.key"),
        (
            "certificate = \"tls/missing.crt\"\nkey = \"tls/server.key\"\n",
            "tls/missing.crt: cannot read it",
        ),
        (
            "certificate = \"tls/server.key\"\nkey = \"tls/server.key\"\n",
            "holds no CERTIFICATE PEM block (found: PRIVATE KEY)",
        ),
        (
            "certificate = \"tls/server.crt\"\nkey = \"tls/server.crt\"\n",
            "holds no PRIVATE KEY PEM block (found: CERTIFICATE)",
        ),
        (
            "certificate = \"tls/server.crt\"\nkey = \"other/server.key\"\n",
            "does not match the certificate",
        ),
        (
            "certificate = \"tls/server.crt\"\nkey = \"tls/server.key\"\nidentity = \"email\"\n",
            "identity",
        ),
    ];
    for (mbaps, expected) in table {
        let (code, err) = check(mbaps);
        assert_eq!(code, 2, "{mbaps}: {err}");
        assert!(
            err.contains(expected),
            "{mbaps}: expected `{expected}` in {err}"
        );
    }
    let (code, err) = check("certificate = \"tls/server.crt\"\nkey = \"tls/server.key\"\n");
    assert_eq!(code, 0, "{err}");

    // An expired server certificate is refused at start, naming the file.
    let expired = Command::new(BIN)
        .args([
            "cert",
            "server",
            "--ca",
            s(&ca),
            "--out",
            s(&dir.path().join("old")),
            "--days",
            "1",
        ])
        .env("LD_PRELOAD", daemon::libfaketime())
        .env("FAKETIME", "@2020-01-01 00:00:00")
        .output()
        .unwrap();
    assert!(expired.status.success());
    let (code, err) =
        check("certificate = \"old/server.crt\"\nkey = \"old/server.key\"\ncrl = \"ca/crl.pem\"\n");
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("old/server.crt: the certificate expired"),
        "{err}"
    );

    // CLI errors: not a CA, unknown serial, bad dates.
    let (code, _, err) = cert(&["list", "--ca", s(&tls)]);
    assert_eq!(code, 2);
    assert!(err.contains("is not a CA folder"), "{err}");
    let (code, _, err) = cert(&["revoke", "--ca", s(&ca), "abcdef"]);
    assert_eq!(code, 2);
    assert!(err.contains("no certificate with serial abcdef"), "{err}");
    let (code, _, err) = cert(&[
        "issue",
        "--ca",
        s(&ca),
        "--service-user",
        "x",
        "--role",
        "Viewer",
        "--not-after",
        "soon",
        "--out",
        s(&tls),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("--not-after `soon` is not a date"), "{err}");
    let (code, _, err) = cert(&["init-ca", "--ca", s(&ca)]);
    assert_eq!(code, 2);
    assert!(err.contains("already holds a CA"), "{err}");
    // Keys are 0600.
    use std::os::unix::fs::PermissionsExt;
    for key in [ca.join("ca.key"), tls.join("server.key")] {
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", key.display());
    }
}

#[test]
fn garbage_and_silent_connections_are_closed_and_the_listener_goes_on() {
    use std::io::Read;
    let g = Gateway::start();
    let (op, _) = g.issue("op", "scada-op", &["--role", "Operator"]);
    let closed = |s: &mut std::net::TcpStream| {
        s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        let mut buf = [0u8; 512];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return true,
                Ok(_) => continue, // an alert, then the close
            }
        }
    };
    // Plain Modbus sent to the TLS port, and random bytes.
    for garbage in [
        &[0u8, 1, 0, 0, 0, 6, 1, 3, 0x0b, 0xb8, 0, 10][..],
        &[0x16, 3, 1, 0xff, 0xff, 1, 2, 3][..],
    ] {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", g.port)).unwrap();
        s.write_all(garbage).unwrap();
        assert!(closed(&mut s));
    }
    g.wait_event("mbaps.handshake-failed", |_| true);
    // A connection that never says anything is closed after the handshake
    // timeout (5 s in this config) and counted.
    let mut silent = std::net::TcpStream::connect(("127.0.0.1", g.port)).unwrap();
    let started = std::time::Instant::now();
    assert!(closed(&mut silent));
    assert!(started.elapsed() >= std::time::Duration::from_secs(4));
    g.wait_event("mbaps.handshake-timeout", |_| true);
    // Many half-open connections at once from another address do not stop
    // a real client (handshakes in progress are capped per address, so
    // they are the flood's own problem).
    let mut flood = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/flood.py"))
        .args(["127.0.0.1", &g.port.to_string(), "127.0.0.2", "50", "30"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut opened = String::new();
    BufReader::new(flood.stdout.take().unwrap())
        .read_line(&mut opened)
        .unwrap();
    assert!(opened.contains("\"opened\": 50"), "{opened}");
    assert_eq!(outcome(&g.ops(&op, json!([read()]))[0]), "ok");
    let _ = flood.kill();
    let _ = flood.wait();
    g.wait_event("mbaps.handshake-dropped", |e| e["source"] == "127.0.0.2");
}

/// A CRL file that disappears for a while (a deploy, tampering) lifts no
/// revocation: the list in force stays, the gap is logged, and the file's
/// return is picked up.
#[test]
fn a_missing_crl_keeps_revoked_certificates_refused() {
    let g = Gateway::start();
    let (op, serial) = g.issue("op", "scada-op", &["--role", "Operator"]);
    cert_ok(&[
        "--socket",
        s(&g.d.socket),
        "revoke",
        "--ca",
        s(&g.ca()),
        &serial,
    ]);
    g.wait_event("mbaps.crl-loaded", |e| e["detail"]["revoked"] == "1");
    assert_eq!(outcome(&g.ops(&op, json!([read()]))[0]), "refused");
    // The CRL is moved away for a few seconds (the watcher looks every 2 s).
    let crl = g.ca().join("crl.pem");
    let aside = g.dir.join("crl.pem.aside");
    std::fs::rename(&crl, &aside).unwrap();
    g.wait_event("mbaps.crl-invalid", |e| {
        e["reason"]
            .as_str()
            .is_some_and(|r| r.contains("missing") && r.contains("previous one stays in force"))
    });
    for _ in 0..3 {
        assert_eq!(outcome(&g.ops(&op, json!([read()]))[0]), "refused");
        std::thread::sleep(std::time::Duration::from_millis(700));
    }
    let loaded = |g: &Gateway| {
        g.events()
            .iter()
            .filter(|e| e["code"] == "mbaps.crl-loaded")
            .count()
    };
    let before = loaded(&g);
    std::fs::rename(&aside, &crl).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while loaded(&g) == before {
        assert!(
            std::time::Instant::now() < deadline,
            "the CRL's return was not picked up"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(outcome(&g.ops(&op, json!([read()]))[0]), "refused");
}
