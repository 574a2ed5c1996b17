//! Config errors name the file, the line and the key; the example config is
//! accepted; plain-client lookup follows DESIGN §2.

use std::path::Path;
use std::process::Command;

use metergate::config::{Config, ModbusClient};

const BASE: &str = r#"state_dir = "/tmp/x"
[profiles.p]
[[profiles.p.read]]
functions = [3]
start = 0
count = 10
"#;

fn error_of(extra: &str) -> metergate::config::ConfigError {
    let text = format!("{BASE}{extra}");
    Config::parse(Path::new("/etc/metergate/site.toml"), &text)
        .expect_err("config should be refused")
}

#[test]
fn each_error_names_file_line_and_key() {
    #[rustfmt::skip]
    let table: Vec<(&str, &str, usize, &str, &str)> = vec![
        ("unknown key", "colour = \"red\"\n", 7, "profiles.p.read[0].colour", "unknown field `colour`"),
        ("unknown nested key", "[[meters]]\nid = \"m1\"\nprofile = \"p\"\nport = 1\n", 10, "meters[0].port", "unknown field `port`"),
        ("wrong type", "[lockout]\nfailures = \"many\"\n", 8, "lockout.failures", "invalid type"),
        ("bad duration", "[limits]\npeak_demand_reset_interval = \"soon\"\n", 8, "limits.peak_demand_reset_interval", "not a duration"),
        ("bad CIDR", "[[modbus.clients]]\ncidr = \"10.0.0.0/33\"\nservice_user = \"s\"\n", 8, "modbus.clients[0].cidr", "not a CIDR"),
        ("bad selector", "[support]\nmeters = [\"site=\"]\n", 8, "support.meters[0]", "not a meter selector"),
        ("bad permission", "[[separation_of_duties]]\npermissions = [\"User Management\", \"Sudo\"]\n", 8, "separation_of_duties[0].permissions[1]", "unknown permission `Sudo`"),
        ("duplicate meter id", "[[meters]]\nid = \"m1\"\nprofile = \"p\"\n[[meters]]\nid = \"m1\"\nprofile = \"p\"\n", 11, "meters[1].id", "duplicate meter id `m1` (first at line 8)"),
        ("duplicate CIDR prefix", "[[modbus.clients]]\ncidr = \"10.1.2.3/16\"\nservice_user = \"a\"\n[[modbus.clients]]\ncidr = \"::ffff:10.1.0.0/112\"\nservice_user = \"b\"\n", 11, "modbus.clients[1].cidr", "listed twice (first at line 8)"),
        ("unknown profile", "[[meters]]\nid = \"m1\"\nprofile = \"nope\"\n", 9, "meters[0].profile", "unknown profile `nope`"),
        ("bad meter id", "[[meters]]\nid = \"m 1\"\nprofile = \"p\"\n", 8, "meters[0].id", "not a valid name"),
        ("write FC not a write", "[[profiles.p.write]]\npermission = \"Master Reset\"\nfunctions = [3]\nstart = 1\ncount = 1\n", 2, "profiles.p.write[0]", "function code 3"),
        ("action writing two ways", "[[profiles.p.actions]]\nname = \"x\"\nfunction = 6\naddress = 1\nvalues = [1]\nclock = true\n", 2, "profiles.p.actions[0] (x)", "exactly one of `values`, `choices` or `clock = true`"),
        ("action FC 6 of two registers", "[[profiles.p.actions]]\nname = \"x\"\nfunction = 6\naddress = 1\nvalues = [1, 2]\n", 2, "profiles.p.actions[0] (x)", "exactly one register"),
        ("account by role and permission", "[[profiles.p.accounts]]\nrole = \"Viewer\"\npermission = \"Data View\"\naccount = \"v\"\n", 2, "profiles.p.accounts", "a role or a permission, exactly one"),
        ("console key not pinnable", "[[meters]]\nid = \"m1\"\nprofile = \"p\"\nconsole = { address = \"127.0.0.1:22\", host_key = \"nope\" }\n", 10, "meters[0].console.host_key", "not an OpenSSH public key"),
        ("store both local and upstream", "[[meters]]\nid = \"m1\"\nprofile = \"p\"\nfiles = \"/srv/m1\"\nsftp = { address = \"127.0.0.1:22\", host_key = \"nope\" }\n", 11, "meters[0].sftp", "either local (`files`) or upstream (`sftp`)"),
        ("support key", "[support]\nkeys = [\"ssh-ed25519 AAAA-broken\"]\n", 8, "support.keys[0]", "not an OpenSSH public key"),
        ("syntax", "[[meters]\n", 7, "-", "unclosed array table"),
    ];
    for (what, extra, line, key, message) in table {
        let e = error_of(extra);
        assert_eq!(e.file, "/etc/metergate/site.toml", "{what}");
        assert_eq!((e.line, e.key.as_str()), (line, key), "{what}: {e}");
        assert!(e.message.contains(message), "{what}: {e}");
        assert!(
            e.to_string()
                .starts_with(&format!("/etc/metergate/site.toml:{line}: {key}: ")),
            "{what}: {e}"
        );
    }
}

#[test]
fn check_config_accepts_the_example_and_warns_about_plain_writers() {
    let out = Command::new(env!("CARGO_BIN_EXE_metergate"))
        .args([
            "check-config",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/metergate.toml"),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok: "));
    assert!(
        stderr.contains("warning:")
            && stderr.contains("allow_writes")
            && stderr.contains("spoofable"),
        "{stderr}"
    );
}

#[test]
fn check_config_exits_2_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        format!("{BASE}[[meters]]\nid = \"m1\"\nprofile = \"nope\"\n"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_metergate"))
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "error: {}:9: meters[0].profile: unknown profile",
            path.display()
        )),
        "{stderr}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_metergate"))
        .args(["check-config", "--config", "/nonexistent.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.toml"));
}

#[test]
fn plain_clients_longest_prefix_wins_and_mapped_addresses_match_as_ipv4() {
    let text = format!(
        "{BASE}[[modbus.clients]]\ncidr = \"10.0.0.0/8\"\nservice_user = \"wide\"\n[[modbus.clients]]\ncidr = \"10.1.0.0/16\"\nservice_user = \"narrow\"\nallow_writes = true\n[[modbus.clients]]\ncidr = \"2001:db8::/32\"\nservice_user = \"v6\"\n"
    );
    let (c, warnings) = Config::parse(Path::new("x.toml"), &text).unwrap();
    assert_eq!(warnings.len(), 1);
    let who = |a: &str| {
        ModbusClient::lookup(&c.modbus_clients, a.parse().unwrap())
            .map(|c| (c.service_user.clone(), c.allow_writes))
    };
    assert_eq!(who("10.9.9.9"), Some(("wide".into(), false)));
    assert_eq!(who("10.1.2.3"), Some(("narrow".into(), true)));
    assert_eq!(who("::ffff:10.1.2.3"), Some(("narrow".into(), true)));
    assert_eq!(who("2001:db8::1"), Some(("v6".into(), false)));
    assert_eq!(who("192.168.1.1"), None);
}
