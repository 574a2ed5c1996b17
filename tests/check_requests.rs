//! `check` with a concrete request (a Modbus function on a register, a file
//! path and operation, a console) and with a draft policy: its answer must
//! be what the same request then gets through pymodbus and OpenSSH's sftp.

#[path = "common/daemon.rs"]
mod daemon;
#[path = "common/sftp.rs"]
mod sftp_client;
#[path = "common/site.rs"]
mod site;
#[path = "common/ssh.rs"]
mod ssh;

use serde_json::json;
use site::Site;
use std::process::Command;

/// One Modbus operation with pymodbus on the demo's meter-1 (unit 1), from
/// `source` (127.0.0.1 is svc:scada-operator, 127.0.0.2 svc:scada-viewer).
fn modbus(port: u16, op: serde_json::Value) -> bool {
    let out = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/mb.py"))
        .arg(port.to_string())
        .arg(json!([op]).to_string())
        .output()
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().next().unwrap_or_else(|| {
        panic!(
            "mb.py printed nothing: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let all: serde_json::Value = serde_json::from_str(line).unwrap();
    let v = &all[0];
    assert!(v.get("error").is_none(), "pymodbus failed: {v}");
    v["ok"] == true
}

/// `check …` → true for ALLOW, false for DENY; the whole line for messages.
fn check(s: &Site, words: &[&str]) -> (bool, String) {
    let mut argv = vec!["check"];
    argv.extend_from_slice(words);
    let r = s.d.mg(&argv);
    r.ok();
    let line = r.stdout.trim().to_string();
    assert!(
        line.starts_with("ALLOW") || line.starts_with("DENY"),
        "{line}"
    );
    (line.starts_with("ALLOW"), line)
}

fn sftp(s: &Site, user: &str, batch: &str) -> bool {
    sftp_client::sftp(s.port, &s.key(user), user, &format!("{batch}\n")).0
}

#[test]
fn check_answers_what_pymodbus_and_sftp_then_get() {
    let s = Site::start();
    let local = tempfile::tempdir().unwrap();
    let upload = local.path().join("x.bin");
    std::fs::write(&upload, b"firmware image\n").unwrap();
    let up = upload.display().to_string();

    // (principal, check's flags, expected answer, the same request by pymodbus)
    #[rustfmt::skip]
    let modbus_table: Vec<(&str, Vec<&str>, bool, serde_json::Value)> = vec![
        ("svc:scada-operator", vec!["--function", "3", "--register", "3000", "--count", "10"], true,
            json!({"source": "127.0.0.1", "unit": 1, "op": "read", "address": 3000, "count": 10})),
        ("svc:scada-operator", vec!["--function", "6", "--register", "5000", "--value", "1115"], false,
            json!({"source": "127.0.0.1", "unit": 1, "op": "write1", "address": 5000, "value": 1115})),
        ("svc:scada-operator", vec!["--function", "6", "--register", "5000", "--value", "21212"], true,
            json!({"source": "127.0.0.1", "unit": 1, "op": "write1", "address": 5000, "value": 21212})),
        ("svc:scada-viewer", vec!["--function", "6", "--register", "5020", "--value", "1"], false,
            json!({"source": "127.0.0.2", "unit": 1, "op": "write1", "address": 5020, "value": 1})),
        ("svc:scada-operator", vec!["--function", "16", "--register", "5040", "--value", "1", "--value", "2"], false,
            json!({"source": "127.0.0.1", "unit": 1, "op": "write", "address": 5040, "values": [1, 2]})),
        ("svc:scada-operator", vec!["--function", "3", "--register", "9000", "--count", "2"], false,
            json!({"source": "127.0.0.1", "unit": 1, "op": "read", "address": 9000, "count": 2})),
    ];
    for (who, flags, expected, op) in &modbus_table {
        let mut words = vec!["--principal", who, "--meter", "meter-1"];
        words.extend(flags.iter().copied());
        let (allowed, line) = check(&s, &words);
        assert_eq!(allowed, *expected, "{who} {flags:?}: {line}");
        assert_eq!(
            modbus(s.modbus, op.clone()),
            allowed,
            "{who} {flags:?}: check said {line}"
        );
    }

    // (user, check's path and op, expected answer, the same request by sftp)
    #[rustfmt::skip]
    let file_table: Vec<(&str, &str, &str, bool, String)> = vec![
        ("crew", "/meter-1/firmware/x.bin", "write", false, format!("put {up} /meter-1/firmware/x.bin")),
        ("admin", "/meter-1/firmware/x.bin", "write", true, format!("put {up} /meter-1/firmware/x.bin")),
        ("crew", "/meter-1/logs", "list", true, "ls /meter-1/logs".into()),
        ("crew", "/meter-3/logs", "list", false, "ls /meter-3/logs".into()),
        ("viewer", "/meter-1/logs/events.log", "remove", false, "rm /meter-1/logs/events.log".into()),
    ];
    for (who, path, op, expected, batch) in &file_table {
        let (allowed, line) = check(&s, &["--principal", who, "--path", path, "--op", op]);
        assert_eq!(allowed, *expected, "{who} {op} {path}: {line}");
        assert_eq!(
            sftp(&s, who, batch),
            allowed,
            "{who} `{batch}`: check said {line}"
        );
    }

    // A console: crew on site=north only.
    let (north, _) = check(
        &s,
        &["--principal", "crew", "--console", "--meter", "meter-1"],
    );
    let (south, line) = check(
        &s,
        &["--principal", "crew", "--console", "--meter", "meter-3"],
    );
    assert!(north && !south, "{line}");

    // A draft policy: check answers as if attached, nothing changes until
    // it is; then the peers get what check said.
    let draft = local.path().join("no-north-logs.toml");
    std::fs::write(
        &draft,
        "name = \"no-north-logs\"\n[[statement]]\neffect = \"deny\"\npermissions = [\"File System Read-Only Access\", \"Data View\"]\nmeters = [\"meter-1\"]\n",
    )
    .unwrap();
    let with = draft.to_str().unwrap();
    let read =
        json!({"source": "127.0.0.1", "unit": 1, "op": "read", "address": 3000, "count": 10});
    let (files, line) = check(
        &s,
        &[
            "--principal",
            "crew",
            "--path",
            "/meter-1/logs",
            "--op",
            "list",
            "--with-policy",
            with,
        ],
    );
    assert!(!files, "{line}");
    assert!(
        line.contains("denied by policy `no-north-logs` statement 1"),
        "{line}"
    );
    assert!(
        line.contains("(as if policy `no-north-logs` were attached; it is not)"),
        "{line}"
    );
    let (reads, line) = check(
        &s,
        &[
            "--principal",
            "svc:scada-operator",
            "--meter",
            "meter-1",
            "--function",
            "3",
            "--register",
            "3000",
            "--count",
            "10",
            "--with-policy",
            with,
        ],
    );
    assert!(!reads, "{line}");
    // Not created: both still work.
    assert!(sftp(&s, "crew", "ls /meter-1/logs"));
    assert!(modbus(s.modbus, read.clone()));
    assert_eq!(s.d.mg(&["policy", "show", "no-north-logs"]).code, 2);
    s.d.mg(&["policy", "create", "--file", with]).ok();
    s.d.mg(&["user", "attach", "crew", "no-north-logs"]).ok();
    s.d.mg(&["service-user", "attach", "scada-operator", "no-north-logs"])
        .ok();
    assert_eq!(sftp(&s, "crew", "ls /meter-1/logs"), files);
    assert_eq!(modbus(s.modbus, read), reads);

    // A draft that names a role nobody has defined is refused as such.
    let bad = local.path().join("bad.toml");
    std::fs::write(
        &bad,
        "name = \"bad\"\n[[statement]]\neffect = \"allow\"\nroles = [\"Wizard\"]\n",
    )
    .unwrap();
    let r = s.d.mg(&[
        "check",
        "--principal",
        "crew",
        "--permission",
        "Data View",
        "--meter",
        "meter-1",
        "--with-policy",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("Wizard"), "{r:?}");

    // (flags) → the error's words
    let errors: [(Vec<&str>, &str); 7] = [
        (
            vec![
                "--principal",
                "crew",
                "--meter",
                "meter-3",
                "--path",
                "/meter-1/logs",
                "--op",
                "list",
            ],
            "is on meter meter-1, not --meter meter-3",
        ),
        (
            vec![
                "--principal",
                "crew",
                "--meter",
                "meter-1",
                "--function",
                "3",
                "--register",
                "3000",
                "--count",
                "126",
            ],
            "1 to 125 registers",
        ),
        (
            vec!["--principal", "crew", "--meter", "meter-1"],
            "give one of --permission P",
        ),
        (
            vec![
                "--principal",
                "crew",
                "--meter",
                "meter-1",
                "--function",
                "6",
                "--register",
                "5000",
            ],
            "give --value V",
        ),
        (
            vec![
                "--principal",
                "crew",
                "--meter",
                "meter-1",
                "--function",
                "43",
                "--register",
                "0",
            ],
            "--function 43",
        ),
        (
            vec!["--principal", "crew", "--path", "/meter-1/logs"],
            "--path needs --op",
        ),
        (
            vec![
                "--principal",
                "crew",
                "--path",
                "/meter-1/logs",
                "--op",
                "chmod",
            ],
            "--op `chmod`",
        ),
    ];
    for (flags, says) in errors {
        let mut argv = vec!["check"];
        argv.extend(flags.iter().copied());
        let r = s.d.mg(&argv);
        assert_eq!(r.code, 2, "{flags:?}: {r:?}");
        assert!(r.stderr.contains(says), "{flags:?}: {r:?}");
    }

    // --as-of: after crew's end date, every answer is DENY, and why.
    s.d.mg(&["user", "set-end-date", "crew", "2027-01-01"]).ok();
    let (now, _) = check(
        &s,
        &["--principal", "crew", "--console", "--meter", "meter-1"],
    );
    let (later, line) = check(
        &s,
        &[
            "--principal",
            "crew",
            "--console",
            "--meter",
            "meter-1",
            "--as-of",
            "2027-01-01",
        ],
    );
    assert!(now && !later, "{line}");
    assert!(line.contains("access ended at 2027-01-01"), "{line}");
}
