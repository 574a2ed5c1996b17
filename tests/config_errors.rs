//! Config errors name the file, the line of the key at fault and the key;
//! the example config is accepted; plain-client lookup follows DESIGN §2.

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

/// A valid OpenSSH public key line.
const SSH_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

/// Where an error must point.
enum At {
    /// The line that writes the key the error names (its last part).
    Key,
    /// The last line containing this text: a syntax error, or a key the
    /// file leaves out (then the table that lacks it), or an array entry.
    Text(&'static str),
}

/// The last line (1-based) of `text` that writes the last part of `key`
/// (`name = …` or `"name" = …`, also inside an inline table). Every case
/// below writes it once or, when two entries clash, faults the later one;
/// a table header never matches, so an error at the header fails.
fn line_of_key(text: &str, key: &str) -> usize {
    let mut name = key.split(" (").next().unwrap();
    while let Some(rest) = name.strip_suffix(']') {
        name = &rest[..rest.rfind('[').unwrap()];
    }
    let name = name.rsplit('.').next().unwrap();
    let writes = |line: &str| {
        [format!("{name} ="), format!("\"{name}\" =")]
            .iter()
            .any(|pat| {
                line.match_indices(pat.as_str())
                    .any(|(i, _)| i == 0 || matches!(line.as_bytes()[i - 1], b' ' | b'{' | b','))
            })
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| writes(l))
        .map(|(i, _)| i + 1)
        .last()
        .unwrap_or_else(|| panic!("no line writes `{name}` (from {key}) in:\n{text}"))
}

/// The last line (1-based) of `text` that contains `needle`.
fn line_containing(text: &str, needle: &str) -> usize {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .map(|(i, _)| i + 1)
        .last()
        .unwrap_or_else(|| panic!("no line contains `{needle}` in:\n{text}"))
}

#[test]
fn each_error_names_file_line_and_key() {
    use At::{Key, Text};
    let m = "[[meters]]\nid = \"m1\"\nprofile = \"p\"\n";
    let with_meter = |rest: &str| format!("{m}{rest}");
    #[rustfmt::skip]
    let table: Vec<(&str, String, &str, &str, At)> = vec![
        // Refused while reading (serde, with toml's spans).
        ("unknown key", "colour = \"red\"\n".into(), "profiles.p.read[0].colour", "unknown field `colour`", Key),
        ("unknown nested key", with_meter("port = 1\n"), "meters[0].port", "unknown field `port`", Key),
        ("wrong type", "[lockout]\nwindow = \"1m\"\nfailures = \"many\"\n".into(), "lockout.failures", "invalid type", Key),
        ("bad duration", "[limits]\npeak_demand_reset_interval = \"soon\"\n".into(), "limits.peak_demand_reset_interval", "not a duration", Key),
        ("bad selector", "[support]\nkeys = []\nmeters = [\"site=\"]\n".into(), "support.meters[0]", "not a meter selector", Key),
        ("bad permission", "[[separation_of_duties]]\npermissions = [\"User Management\", \"Sudo\"]\n".into(), "separation_of_duties[0].permissions[1]", "unknown permission `Sudo`", Key),
        ("syntax", "[[meters]\n".into(), "-", "unclosed array table", Text("[[meters]")),
        // Refused by validation.
        ("not a pair", "[[separation_of_duties]]\npermissions = [\"User Management\"]\n".into(), "separation_of_duties[0].permissions", "exactly two different permissions", Key),
        ("bad CIDR", "[[modbus.clients]]\nservice_user = \"s\"\ncidr = \"10.0.0.0/33\"\n".into(), "modbus.clients[0].cidr", "not a CIDR", Key),
        ("bad service user", "[[modbus.clients]]\ncidr = \"10.0.0.0/8\"\nservice_user = \"s s\"\n".into(), "modbus.clients[0].service_user", "not a valid name", Key),
        ("duplicate CIDR prefix", "[[modbus.clients]]\ncidr = \"10.1.2.3/16\"\nservice_user = \"a\"\n[[modbus.clients]]\nservice_user = \"b\"\ncidr = \"::ffff:10.1.0.0/112\"\n".into(), "modbus.clients[1].cidr", "listed twice (first at line 8)", Key),
        ("bad plain listener", "[modbus]\nmax_queue = 8\nlisten = [\"nope\"]\n".into(), "modbus.listen[0]", "not an address", Key),
        ("duplicate meter id", format!("{m}[[meters]]\nprofile = \"p\"\nid = \"m1\"\n"), "meters[1].id", "duplicate meter id `m1` (first at line 8)", Key),
        ("unknown profile", "[[meters]]\nid = \"m1\"\nprofile = \"nope\"\n".into(), "meters[0].profile", "unknown profile `nope`", Key),
        ("bad meter id", "[[meters]]\nprofile = \"p\"\nid = \"m 1\"\n".into(), "meters[0].id", "not a valid name", Key),
        ("bad tag", with_meter("[meters.tags]\nsite = \"north\"\nzone = \"a b\"\n"), "meters[0].tags.zone", "must be a name and a value", Key),
        ("unit id 0", with_meter("unit_id = 0\n"), "meters[0].unit_id", "outside 1-247", Key),
        ("unknown listener", with_meter("listener = \"127.0.0.1:9\"\n"), "meters[0].listener", "is not one of modbus.listen", Key),
        ("gateway unit 0", with_meter("address = \"127.0.0.1:1\"\ngateway_unit = 0\n"), "meters[0].gateway_unit", "0 is broadcast", Key),
        ("gateway unit twice", format!("{m}address = \"127.0.0.1:1\"\ngateway_unit = 3\n[[meters]]\nid = \"m2\"\nprofile = \"p\"\naddress = \"127.0.0.1:2\"\ngateway_unit = 3\n"), "meters[1].gateway_unit", "already meter `m1`'s", Key),
        ("gateway unit without address", with_meter("gateway_unit = 3\n"), "meters[0].gateway_unit", "needs an `address`", Key),
        ("no connections", with_meter("max_connections = 0\n"), "meters[0].max_connections", "at least 1", Key),
        ("store both local and upstream", with_meter("files = \"/srv/m1\"\nsftp = { address = \"127.0.0.1:22\", host_key = \"nope\" }\n"), "meters[0].sftp", "either local (`files`) or upstream (`sftp`)", Key),
        ("console key not pinnable", with_meter("[meters.console]\naddress = \"127.0.0.1:22\"\nhost_key = \"nope\"\n"), "meters[0].console.host_key", "not an OpenSSH public key", Key),
        ("console not host:port", with_meter(&format!("console = {{ address = \"127.0.0.1\", host_key = \"{SSH_KEY}\" }}\n")), "meters[0].console.address", "not host:port", Key),
        ("meter account name", with_meter("[[meters.accounts]]\nrole = \"Viewer\"\naccount = \"a b\"\n"), "meters[0].accounts[0].account", "not a valid name", Key),
        ("read FC not a read", "[[profiles.p.read]]\nstart = 0\ncount = 1\nfunctions = [6]\n".into(), "profiles.p.read[1].functions", "function code 6", Key),
        ("read range past 65535", "[[profiles.p.read]]\nfunctions = [3]\nstart = 65535\ncount = 2\n".into(), "profiles.p.read[1].count", "runs past register 65535", Key),
        ("write FC not a write", "[[profiles.p.write]]\npermission = \"Master Reset\"\nfunctions = [3]\nstart = 1\ncount = 1\n".into(), "profiles.p.write[0].functions", "function code 3", Key),
        ("write allowing no value", "[[profiles.p.write]]\npermission = \"Master Reset\"\nfunctions = [6]\nstart = 1\ncount = 1\nvalues = []\n".into(), "profiles.p.write[0].values", "an empty value list allows nothing", Key),
        ("action writing two ways", "[[profiles.p.actions]]\nname = \"x\"\nfunction = 6\naddress = 1\nvalues = [1]\nclock = true\n".into(), "profiles.p.actions[0].clock (x)", "exactly one of `values`, `choices` or `clock = true`", Key),
        ("action not a write", "[[profiles.p.actions]]\nname = \"x\"\nfunction = 5\naddress = 1\nvalues = [1]\n".into(), "profiles.p.actions[0].function (x)", "not a register write", Key),
        ("action FC 6 of two registers", "[[profiles.p.actions]]\nname = \"x\"\nfunction = 6\naddress = 1\nvalues = [1, 2]\n".into(), "profiles.p.actions[0].values (x)", "exactly one register", Key),
        ("action with an empty choice", "[[profiles.p.actions]]\nname = \"x\"\nfunction = 16\naddress = 1\n[profiles.p.actions.choices]\non = [1]\noff = []\n".into(), "profiles.p.actions[0].choices.off (x)", "a choice writes at least one value", Key),
        ("action past 65535", "[[profiles.p.actions]]\nname = \"x\"\nfunction = 16\naddress = 65535\nvalues = [1, 2]\n".into(), "profiles.p.actions[0].address (x)", "runs past register 65535", Key),
        ("action defined twice", "[[profiles.p.actions]]\nname = \"x\"\nfunction = 6\naddress = 1\nvalues = [1]\n[[profiles.p.actions]]\nfunction = 6\naddress = 2\nvalues = [1]\nname = \"x\"\n".into(), "profiles.p.actions[1].name", "defined twice", Key),
        ("account by role and permission", "[[profiles.p.accounts]]\nrole = \"Viewer\"\npermission = \"Data View\"\naccount = \"v\"\n".into(), "profiles.p.accounts[0].permission", "a role or a permission, exactly one", Key),
        ("account by permission and role", "[[profiles.p.accounts]]\npermission = \"Data View\"\nrole = \"Viewer\"\naccount = \"v\"\n".into(), "profiles.p.accounts[0].role", "a role or a permission, exactly one", Key),
        ("account name", "[[profiles.p.accounts]]\nrole = \"Viewer\"\naccount = \"a b\"\n".into(), "profiles.p.accounts[0].account", "not a valid name", Key),
        ("path outside the meter", "[[profiles.p.paths]]\nread = []\nwrite = []\npattern = \"../x\"\n".into(), "profiles.p.paths[0].pattern", "not a path pattern", Key),
        ("bad TLS listener", "[mbaps]\ncertificate = \"c\"\nlisten = [\"x\"]\n".into(), "mbaps.listen[0]", "not an address", Key),
        ("more TLS listeners than unit maps", "[mbaps]\ncertificate = \"c\"\nlisten = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\n".into(), "mbaps.listen", "2 TLS listeners but 1 unit maps", Key),
        ("handshake timeout 0", "[mbaps]\nlisten = [\"127.0.0.1:1\"]\ncertificate = \"c\"\nkey = \"k\"\nhandshake_timeout = \"0s\"\n".into(), "mbaps.handshake_timeout", "at least 1s", Key),
        ("CRL missing at start", "[mbaps]\nlisten = [\"127.0.0.1:1\"]\ncertificate = \"c\"\nkey = \"k\"\ncrl = \"/nonexistent/crl.pem\"\n".into(), "mbaps.crl", "/nonexistent/crl.pem does not exist: without it a revoked certificate would be accepted", Key),
        ("no connections per source", "[limits]\nconnections_per_source = 0\n".into(), "limits.connections_per_source", "at least 1", Key),
        ("no first request time", "[limits]\nfirst_request_timeout = \"0s\"\n".into(), "limits.first_request_timeout", "longer than zero", Key),
        ("bad max_startups", "[ssh]\nlisten = [\"127.0.0.1:1\"]\nmax_startups = \"10:130:100\"\n".into(), "ssh.max_startups", "not start:rate:full", Key),
        ("no login grace", "[ssh]\nlisten = [\"127.0.0.1:1\"]\nlogin_grace = \"0s\"\n".into(), "ssh.login_grace", "longer than zero", Key),
        ("bad SSH listener", "[ssh]\nidle_timeout = \"1m\"\nlisten = [\"x\"]\n".into(), "ssh.listen[0]", "not an address", Key),
        ("no SSH sessions", "[ssh]\nlisten = [\"127.0.0.1:1\"]\nmax_sessions_per_principal = 0\n".into(), "ssh.max_sessions_per_principal", "at least 1", Key),
        ("bad metrics address", "[metrics]\nlisten = \"x\"\n".into(), "metrics.listen", "not an address", Key),
        ("metrics not on loopback", "[metrics]\nlisten = \"10.0.0.1:9802\"\n".into(), "metrics.listen", "not a loopback address", Key),
        ("bad log level", "[daemon]\nuser = \"u\"\nlog_level = \"loud\"\n".into(), "daemon.log_level", "not one of error", Key),
        ("group without user", "[daemon]\ndrain_timeout = \"5s\"\ngroup = \"g\"\n".into(), "daemon.group", "give the user too", Key),
        ("bad socket mode", "[control]\nsocket = \"/x\"\nmode = \"999\"\n".into(), "control.mode", "not an octal file mode", Key),
        ("lockout never", "[lockout]\nwindow = \"1m\"\nfailures = 0\n".into(), "lockout.failures", "at least 1", Key),
        ("no hash queue", "[passwords]\nmin_length = 14\nhash_queue = 0\n".into(), "passwords.hash_queue", "at least 1", Key),
        ("warning at 100%", "[audit]\ncapacity_events = 5000\nwarn_at_percent = 100\n".into(), "audit.warn_at_percent", "between 1 and 99", Key),
        ("tiny log", "[audit]\nread_events = true\ncapacity_events = 5\n".into(), "audit.capacity_events", "at least 1000 events", Key),
        ("bad collector", "[audit.forward]\nfacility = 13\ntarget = \"udp://x:1\"\n".into(), "audit.forward.target", "not a collector address", Key),
        ("bad facility", "[audit.forward]\ntarget = \"tcp://x:1\"\nfacility = 24\n".into(), "audit.forward.facility", "0 to 23", Key),
        ("key without certificate", "[audit.forward]\ntarget = \"tls://x:1\"\nca = \"ca\"\nkey = \"k\"\n".into(), "audit.forward.key", "give both certificate and key", Key),
        ("CA on plain TCP", "[audit.forward]\nca = \"ca\"\ntarget = \"tcp://x:1\"\n".into(), "audit.forward.target", "apply to tls:// only", Key),
        // An array entry: its own line, not its key's.
        ("support key", format!("[support]\nkeys = [\n  \"{SSH_KEY}\",\n  \"ssh-ed25519 AAAA-broken\",\n]\n"), "support.keys[1]", "not an OpenSSH public key", Text("AAAA-broken")),
        // Keys the file leaves out: the table that lacks them.
        ("profile name", "[profiles.\"a b\"]\ndescription = \"x\"\n".into(), "profiles.a b", "not a valid name", Text("[profiles.\"a b\"]")),
        ("action writing nothing", "[[profiles.p.actions]]\nname = \"x\"\nfunction = 6\naddress = 1\n".into(), "profiles.p.actions[0] (x)", "exactly one of `values`, `choices` or `clock = true`", Text("[[profiles.p.actions]]")),
        ("account by nothing", with_meter("[[meters.accounts]]\naccount = \"v\"\n"), "meters[0].accounts[0]", "a role or a permission, exactly one", Text("[[meters.accounts]]")),
        ("no certificate", "[mbaps]\nlisten = [\"127.0.0.1:1\"]\nkey = \"k\"\n".into(), "mbaps.certificate", "missing: the gateway's certificate", Text("[mbaps]")),
        ("TLS without CA", "[audit.forward]\ntarget = \"tls://x:1\"\n".into(), "audit.forward.ca", "needs the CA", Text("[audit.forward]")),
    ];
    for (what, extra, key, message, at) in table {
        let text = format!("{BASE}{extra}");
        let line = match at {
            Key => line_of_key(&text, key),
            Text(needle) => line_containing(&text, needle),
        };
        let e = Config::parse(Path::new("/etc/metergate/site.toml"), &text)
            .expect_err(&format!("{what}: config should be refused"));
        assert_eq!(e.file, "/etc/metergate/site.toml", "{what}");
        assert_eq!((e.line, e.key.as_str()), (line, key), "{what}: {e}\n{text}");
        assert!(e.message.contains(message), "{what}: {e}");
        assert!(
            e.to_string()
                .starts_with(&format!("/etc/metergate/site.toml:{line}: {key}: ")),
            "{what}: {e}"
        );
    }
}

#[test]
fn warnings_name_the_line_of_their_key() {
    let text = format!(
        "{BASE}[[modbus.clients]]\ncidr = \"10.1.0.0/16\"\nservice_user = \"w\"\nallow_writes = true\n[daemon]\ndrain_timeout = \"5s\"\nallow_root = true\n"
    );
    let (_, warnings) = Config::parse(Path::new("x.toml"), &text).unwrap();
    let mut keys: Vec<&str> = warnings.iter().map(|w| w.key.as_str()).collect();
    keys.sort();
    assert_eq!(
        keys,
        ["daemon.allow_root", "modbus.clients[0].allow_writes"]
    );
    for w in &warnings {
        assert_eq!(w.line, line_of_key(&text, &w.key), "{w}");
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
