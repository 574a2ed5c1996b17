//! `metergate demo`: the embedded default. Sets up (or resumes) a demo in a
//! directory — config, state, users with saved credentials, service users,
//! the example roles — and runs the daemon on it in the foreground.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::config::{Config, ConfigError};
use crate::model::*;
use crate::store::secrets::{self, Secret};
use crate::store::{Entity, Expect, Op, Store, StoreError};

const EXAMPLE: &str = include_str!("../config/metergate.toml");

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{path}: {error}")]
    Io { path: String, error: String },
    #[error(
        "{0} is not empty and holds no demo (no metergate.toml): give an empty or new directory"
    )]
    NotADemo(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Secret(String),
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> DemoError + '_ {
    move |e| DemoError::Io {
        path: path.display().to_string(),
        error: e.to_string(),
    }
}

/// `DIR/credentials.toml`: the demo users' passwords, 0600.
#[derive(Serialize, Deserialize, Default)]
pub struct Credentials {
    pub users: BTreeMap<String, String>,
    /// Service users' access keys for the HTTPS API (`provisioner`).
    #[serde(default)]
    pub access_keys: BTreeMap<String, KeyCredentials>,
}

/// An access key's id and secret.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct KeyCredentials {
    pub id: String,
    pub secret: String,
}

/// A demo ready to run.
pub struct Demo {
    pub dir: PathBuf,
    pub config: Config,
    pub credentials: Credentials,
    pub fresh: bool,
}

/// The demo's config: the example's profile, three meters, the two plain
/// Modbus clients, a private control socket and state inside DIR.
fn config_text(dir: &Path, base_port: u16, console_keys: &[String]) -> String {
    let key = |i: usize| console_keys.get(i).cloned().unwrap_or_default();
    let profile = EXAMPLE
        .split_once("# --- profile ion-sim")
        .and_then(|(_, rest)| rest.split_once("# --- end profile ---"))
        .map(|(p, _)| format!("# --- profile ion-sim{p}"))
        .unwrap_or_default();
    format!(
        r#"# metergate demo configuration (written by `metergate demo`).
state_dir = "state"

[daemon]
# The demo runs as whoever starts it, root included (a demo, not a service).
allow_root = true

[control]
# The demo's socket belongs to whoever runs the demo, and only to them.
socket = {socket:?}
mode = "0600"
group = ""

[limits]
peak_demand_reset_interval = "15m"

[lockout]
failures = 5
window = "15m"
duration = "15m"

[[separation_of_duties]]
permissions = ["User Management", "Security Logs Access"]

{profile}
[[meters]]
id = "meter-1"
tags = {{ site = "north" }}
profile = "ion-sim"
address = "127.0.0.1:{p1}"
gateway_unit = 1
console = {{ address = "127.0.0.1:{c1}", host_key = "{k1}" }}
files = "meters/meter-1"

[[meters]]
id = "meter-2"
tags = {{ site = "north" }}
profile = "ion-sim"
address = "127.0.0.1:{p2}"
gateway_unit = 2
console = {{ address = "127.0.0.1:{c2}", host_key = "{k2}" }}
files = "meters/meter-2"

[[meters]]
id = "meter-3"
tags = {{ site = "south" }}
profile = "ion-sim"
address = "127.0.0.1:{p3}"
gateway_unit = 3
console = {{ address = "127.0.0.1:{c3}", host_key = "{k3}" }}
files = "meters/meter-3"

[modbus]
listen = ["127.0.0.1:{proxy}"]

[[modbus.clients]]
cidr = "127.0.0.1/32"
service_user = "scada-operator"
allow_writes = true

[[modbus.clients]]
cidr = "127.0.0.2/32"
service_user = "scada-viewer"

# Modbus/TCP Security: client certificates from the demo's own CA (its key
# is in ca/ for the demo only; a real gateway never holds the CA key).
[mbaps]
listen = ["127.0.0.1:{tls}"]
certificate = "certs/server.crt"
key = "certs/server.key"
client_ca = "certs/ca.crt"
crl = "ca/crl.pem"

# The SSH door (the gateway shell): demo users log in with the passwords in
# credentials.toml.
[ssh]
listen = ["127.0.0.1:{ssh}"]
# The simulated meters' console accounts (`connect METER`), 0600.
meter_credentials = "meter-credentials.toml"

# The HTTPS admin API: `provisioner`'s access key (credentials.toml) gets a
# bearer token at /oauth/token.
[api]
listen = "127.0.0.1:{api}"
certificate = "certs/server.crt"
key = "certs/server.key"

# Mail: with no SMTP relay, each message that carries a temporary password
# (user add, user resend-password) is written to mail/ as a .eml file, so a
# newcomer sees what a user would get.
[mail]
directory = "mail"
from = "metergate demo <gateway@demo.invalid>"
login_url = "https://127.0.0.1:{api}/"
# The demo prints the password as well: its walkthrough needs no mailbox.
print_temporary_password = true
"#,
        api = base_port as u32 + DEMO_API_ABOVE as u32,
        c1 = base_port as u32 + DEMO_CONSOLE_ABOVE as u32,
        c2 = base_port as u32 + DEMO_CONSOLE_ABOVE as u32 + 1,
        c3 = base_port as u32 + DEMO_CONSOLE_ABOVE as u32 + 2,
        k1 = key(0),
        k2 = key(1),
        k3 = key(2),
        tls = base_port as u32 + DEMO_TLS_OFFSET as u32,
        ssh = u32::from(base_port).saturating_sub(u32::from(DEMO_SSH_BELOW)),
        socket = dir.join("control.sock").display().to_string(),
        proxy = base_port,
        p1 = base_port as u32 + 15_519,
        p2 = base_port as u32 + 15_520,
        p3 = base_port as u32 + 15_521,
    )
}

fn write_private(path: &Path, text: &str) -> Result<(), DemoError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(io(path))
}

/// The demo's Modbus proxy port; its meters answer on 15021-15023.
pub const DEMO_MODBUS_PORT: u16 = 5502;
/// The Modbus/TCP Security port (8802) is this far above the proxy's.
pub const DEMO_TLS_OFFSET: u16 = 3300;
/// The HTTPS API (8443) is this far above the proxy's port.
pub const DEMO_API_ABOVE: u16 = 2941;
/// The SSH port (2222) is this far below the proxy's.
pub const DEMO_SSH_BELOW: u16 = 3280;
/// The meters' consoles answer this far above the proxy's port and on
/// (21024-21026 by default).
pub const DEMO_CONSOLE_ABOVE: u16 = 15_522;
/// The demo's meters.
const DEMO_METERS: [&str; 3] = ["meter-1", "meter-2", "meter-3"];
/// The meter-side accounts every simulated console has.
pub const CONSOLE_ACCOUNTS: [&str; 4] = ["viewer", "operator", "engineer", "admin"];

fn console_key_path(dir: &Path, meter: &str) -> PathBuf {
    dir.join("consoles").join(format!("{meter}.key"))
}

/// Each simulated console's host key (DIR/consoles, 0600) and accounts
/// (DIR/meter-credentials.toml, 0600); returns the public keys to pin.
fn consoles(dir: &Path) -> Result<Vec<String>, DemoError> {
    let keys_dir = dir.join("consoles");
    std::fs::create_dir_all(&keys_dir).map_err(io(&keys_dir))?;
    std::fs::set_permissions(&keys_dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io(&keys_dir))?;
    let mut public = Vec::new();
    let mut table = toml::Table::new();
    for m in DEMO_METERS {
        let path = console_key_path(dir, m);
        let key = crate::sshkeys::host_key(&path).map_err(|e| DemoError::Secret(e.to_string()))?;
        public.push(
            key.public_key()
                .to_openssh()
                .map_err(|e| DemoError::Secret(e.to_string()))?,
        );
        let mut accounts = toml::Table::new();
        for a in CONSOLE_ACCOUNTS {
            let p = secrets::generate_password().map_err(|e| DemoError::Secret(e.to_string()))?;
            accounts.insert(a.into(), toml::Value::String(p.expose().to_string()));
        }
        table.insert(m.into(), toml::Value::Table(accounts));
    }
    let path = dir.join("meter-credentials.toml");
    write_private(
        &path,
        &format!(
            "# The simulated meters' console accounts; the gateway logs in with them and never shows them.\n{table}"
        ),
    )?;
    Ok(public)
}

/// Sets up a fresh demo in `dir` (new or empty) or resumes the one there.
/// `base_port` moves the proxy (and the meters, 15519 above it) for tests.
pub fn prepare(dir: Option<PathBuf>, base_port: u16) -> Result<Demo, DemoError> {
    let dir = match dir {
        Some(d) => d,
        None => {
            let suffix = secrets::generate_id().map_err(|e| DemoError::Secret(e.to_string()))?;
            std::env::temp_dir().join(format!("metergate-demo-{}", &suffix[..8]))
        }
    };
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let dir = dir.canonicalize().map_err(io(&dir))?;
    let config_path = dir.join("metergate.toml");
    let creds_path = dir.join("credentials.toml");
    if config_path.exists() {
        let (config, _) = Config::load(&config_path)?;
        let text = std::fs::read_to_string(&creds_path).map_err(io(&creds_path))?;
        let credentials: Credentials = toml::from_str(&text).map_err(|e| DemoError::Io {
            path: creds_path.display().to_string(),
            error: e.to_string(),
        })?;
        return Ok(Demo {
            dir,
            config,
            credentials,
            fresh: false,
        });
    }
    if std::fs::read_dir(&dir).map_err(io(&dir))?.next().is_some() {
        return Err(DemoError::NotADemo(dir.display().to_string()));
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(io(&dir))?;
    certificates(&dir)?;
    let console_keys = consoles(&dir)?;
    write_private(&config_path, &config_text(&dir, base_port, &console_keys))?;
    let (config, _) = Config::load(&config_path)?;
    let credentials = populate(&config)?;
    let text = toml::to_string(&credentials).map_err(|e| DemoError::Secret(e.to_string()))?;
    write_private(
        &creds_path,
        &format!("# Demo passwords (not temporary). Keep this file private.\n{text}"),
    )?;
    Ok(Demo {
        dir,
        config,
        credentials,
        fresh: true,
    })
}

/// The demo's CA (DIR/ca), the gateway's certificate and scada-operator's
/// client certificate (role Operator) in DIR/certs.
fn certificates(dir: &Path) -> Result<(), DemoError> {
    use crate::pki::ca::{Ca, ClientRequest};
    let now = OffsetDateTime::now_utc();
    let pki = |e: crate::pki::PkiError| DemoError::Secret(e.to_string());
    let (ca, _) = Ca::init(&dir.join("ca"), now).map_err(pki)?;
    let certs = dir.join("certs");
    let names = ["127.0.0.1", "::1", "localhost"].map(String::from);
    ca.server(&certs, &names, 730, now).map_err(pki)?;
    ca.issue(
        &ClientRequest {
            service_user: "scada-operator".into(),
            roles: vec!["Operator".into()],
            not_before: None,
            not_after: now + time::Duration::days(365),
            client_auth: true,
        },
        &certs,
        now,
    )
    .map_err(pki)?;
    Ok(())
}

/// The demo's principals: admin (Administrator), crew (Operator on
/// site=north), viewer (ReadOnly); scada-operator (Operator) and scada-viewer
/// (Viewer) for the Modbus clients.
fn populate(config: &Config) -> Result<Credentials, DemoError> {
    let store = Store::open(&config.state_dir)?;
    let now = OffsetDateTime::now_utc();
    let mut credentials = Credentials::default();
    let mut ops = Vec::new();
    let secret_err = |e: secrets::SecretError| DemoError::Secret(e.to_string());
    for (name, policies, role) in [
        ("admin", vec![ADMINISTRATOR], None),
        ("crew", vec![], Some(("Operator", "site=north"))),
        ("viewer", vec![READ_ONLY], None),
    ] {
        let password: Secret = secrets::generate_password().map_err(secret_err)?;
        let mut u = User::new(name, &format!("{name}@demo.invalid"));
        u.id = secrets::generate_id().map_err(secret_err)?;
        u.policies = policies.iter().map(|p| p.to_string()).collect();
        if let Some((r, sel)) = role {
            u.inline = vec![Statement::allow_role(
                r,
                vec![MeterSelector::parse(sel).map_err(|e| DemoError::Secret(e.to_string()))?],
            )];
        }
        u.password = Some(PasswordRecord {
            hash: secrets::hash_now(&password).map_err(secret_err)?,
            temporary: false,
            issued_at: micros(now),
        });
        credentials
            .users
            .insert(name.to_string(), password.expose().to_string());
        ops.push(Op::Put(Entity::User(u), Expect::New));
    }
    for (name, role) in [("scada-operator", "Operator"), ("scada-viewer", "Viewer")] {
        let mut s = ServiceUser::new(name);
        s.id = secrets::generate_id().map_err(secret_err)?;
        s.description = format!("demo SCADA client, role {role}");
        s.inline = vec![Statement::allow_role(role, vec![MeterSelector::All])];
        ops.push(Op::Put(Entity::ServiceUser(s), Expect::New));
    }
    // The API's client: Administrator, one access key.
    let mut p = ServiceUser::new("provisioner");
    p.id = secrets::generate_id().map_err(secret_err)?;
    p.description = "demo HTTPS API client (OAuth client credentials)".into();
    p.policies = vec![ADMINISTRATOR.to_string()];
    let key_id = secrets::generate_key_id().map_err(secret_err)?;
    let key_secret = secrets::generate_key_secret().map_err(secret_err)?;
    p.keys.push(crate::model::AccessKey {
        id: key_id.clone(),
        secret_hash: secrets::hash_key_secret(&key_secret).map_err(secret_err)?,
        status: crate::model::Status::Active,
        created: micros(now),
        last_used: None,
    });
    credentials.access_keys.insert(
        "provisioner".into(),
        KeyCredentials {
            id: key_id,
            secret: key_secret.expose().to_string(),
        },
    );
    ops.push(Op::Put(Entity::ServiceUser(p), Expect::New));
    store.apply(ops, "system:demo", now, &config.separation_of_duties)?;
    Ok(credentials)
}

/// How to reach the HTTPS API, when the demo's config has one (a demo
/// directory from before the API has none). The key's secret goes through
/// a file curl reads, not the command line (`ps` shows that).
fn api_lines(demo: &Demo) -> String {
    let Some(api) = &demo.config.api else {
        return String::new();
    };
    let dir = demo.dir.display();
    let port = api.listen.port();
    format!(
        "\nThe web console on https://127.0.0.1:{port}/ (trust {dir}/certs/ca.crt; the users log in with the passwords in {dir}/credentials.toml).\n\
         The HTTPS API on https://127.0.0.1:{port} as provisioner ([access_keys.provisioner] in {dir}/credentials.toml; put `user = \"ID:SECRET\"` in a 0600 file, here key.curl):\n\
         \x20 TOKEN=$(curl -s --cacert {dir}/certs/ca.crt -K key.curl -d grant_type=client_credentials https://127.0.0.1:{port}/oauth/token | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])')\n\
         \x20 curl -s --cacert {dir}/certs/ca.crt -H \"Authorization: Bearer $TOKEN\" https://127.0.0.1:{port}/api/v1/users\n"
    )
}

/// What the demo prints once everything is up.
pub fn instructions(demo: &Demo) -> String {
    let sock = demo.config.control.socket_path();
    let mg = format!("metergate --socket {}", sock.display());
    let mut out = format!(
        "metergate demo in {dir} ({state})\n\
         users (passwords in {dir}/credentials.toml):\n",
        dir = demo.dir.display(),
        state = if demo.fresh { "fresh" } else { "resumed" },
    );
    for (u, p) in &demo.credentials.users {
        out += &format!("  {u:<8} {p}\n");
    }
    out += &format!(
        "\ntry (you act as local:{who}, the break-glass Administrator):\n\
         \x20 {mg} user list\n\
         \x20 {mg} role show Operator\n\
         \x20 {mg} check --principal crew --permission \"Peak Demand Reset\" --meter meter-1\n\
         \x20 {mg} check --principal crew --permission \"Master Reset\" --meter meter-1\n\
         \x20 {mg} review\n\
         \x20 {mg} audit tail\n\
         \x20 {mg} user add ada --email ada@example.org   # the welcome mail lands in {dir}/mail/\n\
         \x20 mbpoll -m tcp -p {port} -a 1 -0 -r 3000 -c 10 -1 127.0.0.1     # Data View, as scada-operator\n\
         \x20 mbpoll -m tcp -p {port} -a 1 -0 -r 5000 -1 127.0.0.1 21212     # Peak Demand Reset (once per 15 min)\n\
         \x20 mbpoll -m tcp -p {port} -a 1 -0 -r 5000 -1 127.0.0.1 1115      # Master Reset: refused (exception 01)\n\
         \nModbus/TCP Security on 127.0.0.1:{tls} as scada-operator (role Operator), with pymodbus:\n\
         \x20 python3 - <<'PY'\n\
         \x20 import ssl; from pymodbus.client import ModbusTlsClient\n\
         \x20 x = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); x.check_hostname = False  # the CA still verifies the gateway\n\
         \x20 x.load_verify_locations('{dir}/certs/ca.crt')\n\
         \x20 x.load_cert_chain('{dir}/certs/scada-operator.crt', '{dir}/certs/scada-operator.key')\n\
         \x20 c = ModbusTlsClient('127.0.0.1', port={tls}, sslctx=x); c.connect()\n\
         \x20 print(c.read_holding_registers(3000, count=10, device_id=1).registers)\n\
         \x20 PY\n\
         \x20 metergate cert list --ca {dir}/ca    # the demo's certificate authority\n\
         \nSSH on 127.0.0.1:{ssh} (the passwords are in {dir}/credentials.toml):\n\
         \x20 ssh -p {ssh} crew@127.0.0.1 whoami\n\
         \x20 ssh -p {ssh} crew@127.0.0.1 read meter-1 3000 3\n\
         \x20 ssh -p {ssh} crew@127.0.0.1 master-reset meter-1    # DENY: an Operator may not\n\
         \x20 ssh -p {ssh} -t crew@127.0.0.1 connect meter-1      # the meter's console as `operator`\n\
         \x20 sftp -P {ssh} crew@127.0.0.1                        # the meters' files (crew: read-only)\n\
         \x20 ssh -p {ssh} admin@127.0.0.1 user list\n\
         {api_lines}stop with Ctrl-C; run `metergate demo --dir {dir}` again to resume.\n",
        ssh = demo
            .config
            .ssh
            .as_ref()
            .and_then(|c| c.listen.first())
            .map(|a| a.port())
            .unwrap_or(2222),
        who = whoami(),
        dir = demo.dir.display(),
        api_lines = api_lines(demo),
        tls = demo
            .config
            .mbaps
            .as_ref()
            .and_then(|m| m.listen.first())
            .and_then(|a| a.rsplit(':').next())
            .unwrap_or("8802"),
        port = demo
            .config
            .modbus_listen
            .first()
            .and_then(|a| a.rsplit(':').next())
            .unwrap_or("5502"),
    );
    out
}

fn whoami() -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::effective())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| "you".into())
}

/// The demo's running simulated meters and their consoles.
pub struct DemoMeters {
    pub meters: Vec<crate::fleet::simulator::SimulatedMeter>,
    pub consoles: Vec<crate::fleet::console::SimulatedConsole>,
}

/// Starts the demo's simulated meters (the addresses its config names) and
/// their consoles (host keys in DIR/consoles, accounts in
/// DIR/meter-credentials.toml).
pub async fn start_meters(config: &Config, dir: &Path) -> Result<DemoMeters, DemoError> {
    let creds_path = dir.join("meter-credentials.toml");
    let creds: toml::Table = std::fs::read_to_string(&creds_path)
        .map_err(io(&creds_path))?
        .parse()
        .map_err(|e: toml::de::Error| DemoError::Io {
            path: creds_path.display().to_string(),
            error: e.message().to_string(),
        })?;
    let mut out = DemoMeters {
        meters: Vec::new(),
        consoles: Vec::new(),
    };
    for m in &config.meters {
        let files = dir.join("meters").join(&m.id);
        crate::fleet::simulator::create_file_tree(&files, &m.id).map_err(io(&files))?;
        let Some(addr) = m.address.as_deref().and_then(|a| a.parse().ok()) else {
            continue;
        };
        let meter = crate::fleet::simulator::SimulatedMeter::start(addr, Default::default())
            .await
            .map_err(|e| DemoError::Io {
                path: format!("{} (meter {})", addr, m.id),
                error: e.to_string(),
            })?;
        if let Some(c) = &m.console
            && let Ok(bind) = c.address.parse()
        {
            let key = crate::sshkeys::host_key(&console_key_path(dir, &m.id))
                .map_err(|e| DemoError::Secret(e.to_string()))?;
            let accounts = creds
                .get(&m.id)
                .and_then(|t| t.as_table())
                .map(|t| {
                    t.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect()
                })
                .unwrap_or_default();
            out.consoles.push(
                crate::fleet::console::SimulatedConsole::start(
                    bind,
                    &m.id,
                    key,
                    accounts,
                    meter.state.clone(),
                    Some(files.clone()),
                )
                .await
                .map_err(|e| DemoError::Io {
                    path: format!("{bind} (console of {})", m.id),
                    error: e.to_string(),
                })?,
            );
        }
        out.meters.push(meter);
    }
    Ok(out)
}
