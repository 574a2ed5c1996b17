//! The config file: its schema, and validation whose every error names the
//! file, the line and the key, so an operator can fix it without guessing.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::pki::NameFrom;
use ipnet::IpNet;
use serde::{Deserialize, Deserializer};
use toml::Spanned;

use crate::model::{MeterSelector, Permission, Profile, check_name, line_col};

/// A config that cannot be used, with where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {key}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub key: String,
    pub message: String,
}

/// Something legal but worth a second look (`check-config` prints these).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    pub line: usize,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.line, self.key, self.message)
    }
}

/// What to do when an event cannot be made durable (DESIGN §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnFailure {
    /// Writes, logins and admin changes that cannot be logged are refused;
    /// reads and running sessions go on (IEC 62443 CR 2.10).
    #[default]
    FailClosed,
    /// Everything goes on; an alarm is raised in metrics and status.
    FailOpen,
}

/// What to do when the log reaches its capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum WhenFull {
    #[default]
    DropOldest,
    Refuse,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    pub on_failure: OnFailure,
    pub when_full: WhenFull,
    /// Capacity of the log, counted in events (not bytes: sled reclaims
    /// space lazily, so its size on disk says little).
    pub capacity_events: u64,
    /// A warning event and metric when the log is this full.
    pub warn_at_percent: u8,
    /// Reads are counted in metrics; set this to also log every read.
    pub read_events: bool,
    /// Events from unauthenticated traffic (aggregated garbage, refused
    /// sources, failed handshakes) logged per hour; beyond, only counted
    /// (and the count logged), so such traffic cannot fill the log.
    pub unauthenticated_events_per_hour: u64,
    /// Forwarding to a syslog collector (none by default).
    pub forward: Option<ForwardConfig>,
}

/// `[audit.forward]`: a syslog collector that receives every event, at
/// least once, in RFC 5424 with RFC 5425 octet-counted framing.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardConfig {
    /// `tcp://HOST:PORT` or `tls://HOST:PORT`.
    pub target: String,
    /// tls: the CA (PEM) the collector's certificate must chain to.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// tls: the name the collector's certificate must carry (default: HOST).
    #[serde(default)]
    pub server_name: Option<String>,
    /// tls: a client certificate and key for collectors that ask for one.
    #[serde(default)]
    pub certificate: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// Syslog facility (default 13, "log audit").
    #[serde(default = "default_facility")]
    pub facility: u8,
}

fn default_facility() -> u8 {
    13
}

/// How forwarded events travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Tls,
}

impl ForwardConfig {
    /// The target, checked: (transport, host, port).
    pub fn endpoint(&self) -> Result<(Transport, String, u16), String> {
        let bad = || {
            format!(
                "`{}` is not a collector address: use tcp://HOST:PORT or tls://HOST:PORT",
                self.target
            )
        };
        let (transport, rest) = if let Some(r) = self.target.strip_prefix("tcp://") {
            (Transport::Tcp, r)
        } else if let Some(r) = self.target.strip_prefix("tls://") {
            (Transport::Tls, r)
        } else {
            return Err(bad());
        };
        let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || port == 0 {
            return Err(bad());
        }
        Ok((transport, host.to_string(), port))
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            on_failure: OnFailure::FailClosed,
            when_full: WhenFull::DropOldest,
            capacity_events: 10_000_000,
            warn_at_percent: 90,
            read_events: false,
            unauthenticated_events_per_hour: 3600,
            forward: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Minimum time between two peak demand resets of one meter.
    pub peak_demand_reset_interval: Interval,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            peak_demand_reset_interval: Interval(Duration::from_secs(15 * 60)),
        }
    }
}

/// Password lockout (IEC 62443 CR 1.11): consecutive failures within a
/// window lock password login for a while; keys and Modbus never lock.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Lockout {
    pub failures: u32,
    pub window: Interval,
    pub duration: Interval,
}

impl Default for Lockout {
    fn default() -> Self {
        let fifteen = Interval(Duration::from_secs(15 * 60));
        Lockout {
            failures: 5,
            window: fifteen,
            duration: fifteen,
        }
    }
}

/// The bounded pool that hashes passwords and access-key secrets.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Passwords {
    /// Threads that run argon2: few, so a password flood cannot starve the
    /// Modbus path of CPU.
    pub hash_threads: usize,
    /// Hash jobs that may wait; beyond that logins are refused as busy.
    pub hash_queue: usize,
    /// A new password is at least this long (and never contains the user
    /// name nor repeats the temporary password).
    pub min_length: usize,
}

impl Default for Passwords {
    fn default() -> Self {
        Passwords {
            hash_threads: 1,
            hash_queue: 64,
            min_length: 12,
        }
    }
}

impl Passwords {
    /// Why `new` may not be `user`'s password (None: it may).
    /// `old` is the password being replaced (temporary or current), named
    /// as `old_name` in the reason.
    pub fn violation(&self, user: &str, new: &str, old: &str, old_name: &str) -> Option<String> {
        if new.chars().count() < self.min_length {
            return Some(format!(
                "The new password is too short: use at least {} characters.",
                self.min_length
            ));
        }
        if new.to_lowercase().contains(&user.to_lowercase()) {
            return Some("The new password must not contain your user name.".into());
        }
        if new == old {
            return Some(format!(
                "The new password must not be the {old_name} password."
            ));
        }
        None
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SupportConfig {
    /// The vendor's SSH public keys (OpenSSH lines).
    pub keys: Vec<String>,
    /// The meters support may ever reach, whatever its policies say (the
    /// site owner's boundary on the vendor). Default: every meter.
    pub meters: Option<Vec<MeterSelector>>,
}

/// The control socket of DESIGN §3.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// Default /run/metergate/control.sock.
    pub socket: Option<PathBuf>,
    /// Group whose members may use the socket; default `metergate-admin`;
    /// "" for none (then only root and the daemon's own user).
    pub group: Option<String>,
    /// Octal file mode of the socket; default "0660".
    pub mode: Option<String>,
}

impl ControlConfig {
    pub fn socket_path(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(|| PathBuf::from("/run/metergate/control.sock"))
    }

    pub fn group_name(&self) -> Option<String> {
        match self.group.as_deref() {
            None => Some("metergate-admin".into()),
            Some("") => None,
            Some(g) => Some(g.into()),
        }
    }

    /// The socket's mode (validated at load).
    pub fn mode_bits(&self) -> u32 {
        self.mode
            .as_deref()
            .and_then(|m| u32::from_str_radix(m, 8).ok())
            .unwrap_or(0o660)
    }
}

/// How the daemon runs (DESIGN §3; the systemd unit sets the same account).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// Started as root: bind the listeners, then run as this user.
    pub user: Option<String>,
    /// Its group (default: the user's primary group).
    pub group: Option<String>,
    /// Keep running as root when started as root without `user` (the demo
    /// does); refused otherwise, because every parser would run as root.
    pub allow_root: bool,
    /// How long a graceful stop waits for live sessions to finish.
    pub drain_timeout: Interval,
    /// The log level when RUST_LOG is not set (error, warn, info, debug, trace).
    pub log_level: Option<String>,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            user: None,
            group: None,
            allow_root: false,
            drain_timeout: Interval(Duration::from_secs(10)),
            log_level: None,
        }
    }
}

/// When `review` says a review is due, and when an account counts as unused
/// ("audit users and roles on a schedule and after staff changes").
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReviewConfig {
    pub interval: Interval,
    pub unused_after: Interval,
}

impl Default for ReviewConfig {
    fn default() -> Self {
        let ninety = Interval(Duration::from_secs(90 * 86_400));
        ReviewConfig {
            interval: ninety,
            unused_after: ninety,
        }
    }
}

/// A meter as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeterConfig {
    pub id: String,
    pub tags: BTreeMap<String, String>,
    /// Where the meter answers Modbus/TCP (`host:port`).
    pub address: Option<String>,
    pub unit_id: u8,
    pub profile: String,
    /// The unit id SCADA uses to reach this meter through the proxy.
    pub gateway_unit: Option<u8>,
    /// Which listener's unit map it is in (index into `modbus.listen`).
    pub listener: usize,
    /// Connections the gateway opens to the meter at most (meters accept
    /// about 8 in all).
    pub max_connections: usize,
    /// How long the meter has to answer one request.
    pub timeout: Duration,
    /// Requests the gateway may have in flight on one connection to the
    /// meter (1: one at a time, safe for meters that cannot queue them).
    pub pipeline: usize,
    /// The meter's SFTP file store on the gateway's disk (a directory).
    pub files: Option<PathBuf>,
    /// Or the meter's own SFTP server, reached as a meter-side account.
    pub sftp: Option<ConsoleConfig>,
    /// The meter's SSH console, if it has one.
    pub console: Option<ConsoleConfig>,
    /// Meter-side accounts replacing the profile's list.
    pub accounts: Option<Vec<crate::model::AccountRule>>,
}

/// A plain Modbus/TCP client known only by its source address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModbusClient {
    pub cidr: IpNet,
    pub service_user: String,
    /// Plain Modbus identity is spoofable and collapsed by NAT, so a plain
    /// client is read-only unless this says otherwise.
    pub allow_writes: bool,
}

impl ModbusClient {
    /// The entry for `addr`: longest prefix wins; IPv4-mapped IPv6 addresses
    /// are matched as IPv4.
    pub fn lookup(clients: &[ModbusClient], addr: IpAddr) -> Option<&ModbusClient> {
        let addr = unmap(addr);
        clients
            .iter()
            .filter(|c| c.cidr.contains(&addr))
            .max_by_key(|c| c.cidr.prefix_len())
    }
}

fn unmap(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(addr),
        v4 => v4,
    }
}

/// IPv4-mapped IPv6 networks (`::ffff:a.b.c.d/n`, n ≥ 96) become IPv4 ones.
fn normalize_net(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net
        && let Some(v4) = v6.addr().to_ipv4_mapped()
        && v6.prefix_len() >= 96
        && let Ok(n) = ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
    {
        return IpNet::V4(n.trunc());
    }
    net.trunc()
}

/// The whole configuration, validated.
#[derive(Clone, Debug)]
pub struct Config {
    pub path: PathBuf,
    pub state_dir: PathBuf,
    pub control: ControlConfig,
    pub audit: AuditConfig,
    pub limits: Limits,
    pub lockout: Lockout,
    pub passwords: Passwords,
    pub separation_of_duties: Vec<(Permission, Permission)>,
    pub support: SupportConfig,
    pub meters: Vec<MeterConfig>,
    pub profiles: BTreeMap<String, Profile>,
    pub modbus_clients: Vec<ModbusClient>,
    /// Addresses of the plain Modbus/TCP listeners; each has its own unit map.
    pub modbus_listen: Vec<String>,
    /// Requests that may wait for one meter's connections; beyond: 0x06.
    pub modbus_max_queue: usize,
    pub mbaps: Option<MbapsConfig>,
    pub daemon: DaemonConfig,
    /// Where Prometheus metrics are served (loopback only).
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// None when `[ssh]` has no listener.
    pub ssh: Option<SshConfig>,
    pub review: ReviewConfig,
}

/// Modbus/TCP Security listeners (TLS, mutual authentication).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MbapsConfig {
    /// Addresses; the i-th serves the same meters as `modbus.listen[i]`.
    pub listen: Vec<String>,
    /// The gateway's certificate chain (PEM).
    pub certificate: PathBuf,
    pub key: PathBuf,
    /// The CAs client certificates must chain to (default: `ca.crt` beside
    /// the gateway's certificate, i.e. the gateway's own CA).
    pub client_ca: PathBuf,
    /// The CRL, re-read when it changes (default: `crl.pem` beside the
    /// client CA); a missing file means nothing is revoked yet.
    pub crl: PathBuf,
    /// Where a client certificate names its service user.
    pub name_from: NameFrom,
    pub handshake_timeout: Duration,
}

/// A duration written as a number with a unit: `900s`, `15m`, `2h`, `30d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interval(pub Duration);

impl Interval {
    pub fn parse(text: &str) -> Result<Interval, String> {
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("`{text}` is not a duration: use e.g. 90s, 15m, 2h, 30d"))?;
        let secs = match unit {
            "s" => Some(n),
            "m" => n.checked_mul(60),
            "h" => n.checked_mul(3600),
            "d" => n.checked_mul(86_400),
            _ => None,
        };
        secs.map(|s| Interval(Duration::from_secs(s)))
            .ok_or_else(|| format!("`{text}` is not a duration: use e.g. 90s, 15m, 2h, 30d"))
    }
}

impl<'de> Deserialize<'de> for Interval {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Interval::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    state_dir: PathBuf,
    #[serde(default)]
    control: Option<Spanned<ControlConfig>>,
    #[serde(default)]
    review: ReviewConfig,
    #[serde(default)]
    audit: Option<Spanned<AuditConfig>>,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    lockout: Option<Spanned<Lockout>>,
    #[serde(default)]
    passwords: Option<Spanned<Passwords>>,
    #[serde(default)]
    separation_of_duties: Vec<RawSod>,
    #[serde(default)]
    support: SupportConfig,
    #[serde(default)]
    meters: Vec<RawMeter>,
    #[serde(default)]
    profiles: BTreeMap<String, Spanned<Profile>>,
    #[serde(default)]
    modbus: RawModbus,
    #[serde(default)]
    mbaps: Option<Spanned<RawMbaps>>,
    #[serde(default)]
    daemon: Option<Spanned<DaemonConfig>>,
    #[serde(default)]
    metrics: Option<Spanned<RawMetrics>>,
    #[serde(default)]
    ssh: Option<Spanned<RawSsh>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSsh {
    #[serde(default)]
    listen: Vec<String>,
    #[serde(default)]
    host_key: Option<PathBuf>,
    #[serde(default)]
    idle_timeout: Option<Interval>,
    #[serde(default)]
    max_session: Option<Interval>,
    #[serde(default)]
    max_sessions_per_principal: Option<usize>,
    #[serde(default)]
    meter_credentials: Option<PathBuf>,
    #[serde(default)]
    max_upload_bytes: Option<u64>,
    #[serde(default)]
    store_quota_bytes: Option<u64>,
}

/// `[ssh]`: the SSH door (the gateway shell; SFTP later).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SshConfig {
    pub listen: Vec<std::net::SocketAddr>,
    /// The ed25519 host key (OpenSSH format), generated 0600 at first start.
    pub host_key: PathBuf,
    /// A session that sends nothing for this long is closed (default 15m).
    pub idle_timeout: Duration,
    /// No session lasts longer (default 12h).
    pub max_session: Duration,
    /// Live SSH sessions one principal may hold (IEC 62443 CR 2.7; default 4).
    pub max_sessions_per_principal: usize,
    /// The meter-side accounts' credentials (TOML `[METER] account =
    /// "secret"`, 0600, read at each console login, never shown).
    pub meter_credentials: Option<PathBuf>,
    /// SFTP: the largest file one upload may write (default 1 GiB).
    pub max_upload_bytes: u64,
    /// SFTP: the most a meter's store may hold (default 10 GiB).
    pub store_quota_bytes: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMbaps {
    #[serde(default)]
    listen: Vec<String>,
    #[serde(default)]
    certificate: Option<PathBuf>,
    #[serde(default)]
    key: Option<PathBuf>,
    #[serde(default)]
    client_ca: Option<PathBuf>,
    #[serde(default)]
    crl: Option<PathBuf>,
    #[serde(default)]
    identity: NameFrom,
    #[serde(default)]
    handshake_timeout: Option<Interval>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSod {
    permissions: Spanned<Vec<Permission>>,
}

/// Each meter-side account entry names a role or a permission, not both.
fn check_accounts(accounts: &[crate::model::AccountRule]) -> Result<(), String> {
    for (i, a) in accounts.iter().enumerate() {
        if a.role.is_some() == a.permission.is_some() {
            return Err(format!(
                "entry {} (account `{}`) names a role or a permission, exactly one",
                i + 1,
                a.account
            ));
        }
        check_name(&a.account).map_err(|e| format!("entry {}: {e}", i + 1))?;
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMeter {
    id: Spanned<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    address: Option<String>,
    #[serde(default = "one")]
    unit_id: u8,
    profile: Spanned<String>,
    #[serde(default)]
    gateway_unit: Option<Spanned<u8>>,
    #[serde(default)]
    listener: Option<String>,
    #[serde(default = "two")]
    max_connections: usize,
    #[serde(default)]
    timeout: Option<Interval>,
    #[serde(default = "one_usize")]
    pipeline: usize,
    #[serde(default)]
    files: Option<PathBuf>,
    #[serde(default)]
    sftp: Option<Spanned<ConsoleConfig>>,
    #[serde(default)]
    console: Option<Spanned<ConsoleConfig>>,
    #[serde(default)]
    accounts: Option<Spanned<Vec<crate::model::AccountRule>>>,
}

/// A meter's SSH console (Terminal Access): where it answers and its pinned
/// host key (OpenSSH public key line; no trust on first use).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    pub address: String,
    pub host_key: String,
}

fn one_usize() -> usize {
    1
}

fn two() -> usize {
    2
}

fn sixty_four() -> usize {
    64
}

fn one() -> u8 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModbus {
    #[serde(default)]
    clients: Vec<RawClient>,
    #[serde(default)]
    listen: Vec<String>,
    #[serde(default = "sixty_four")]
    max_queue: usize,
}

// Not derived: a config without `[modbus]` gets the same defaults as one
// with an empty section.
impl Default for RawModbus {
    fn default() -> Self {
        RawModbus {
            clients: Vec::new(),
            listen: Vec::new(),
            max_queue: sixty_four(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
    cidr: Spanned<String>,
    service_user: Spanned<String>,
    #[serde(default)]
    allow_writes: Option<Spanned<bool>>,
}

const WRITE_FUNCTIONS: [u8; 7] = [5, 6, 15, 16, 21, 22, 23];
const READ_FUNCTIONS: [u8; 5] = [1, 2, 3, 4, 23];

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<(Config, Vec<ConfigWarning>), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            line: 0,
            key: "-".into(),
            message: format!("cannot read the file: {e}"),
        })?;
        Config::parse(path, &text)
    }

    /// Validates config text; `path` is used in messages and to resolve
    /// relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<(Config, Vec<ConfigWarning>), ConfigError> {
        let file = path.display().to_string();
        let err_at = |offset: usize, key: &str, message: String| ConfigError {
            file: file.clone(),
            line: line_col(text, offset).0,
            key: key.to_string(),
            message,
        };
        let de = toml::Deserializer::parse(text).map_err(|e| {
            err_at(
                e.span().map(|s| s.start).unwrap_or(0),
                "-",
                e.message().trim().to_string(),
            )
        })?;
        let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let offset = inner.span().map(|s| s.start).unwrap_or(0);
            // Spanned sections add a private path segment; people never wrote it.
            let key = key.replace(".$__serde_spanned_private_value", "");
            let key = if key == "." { "-".to_string() } else { key };
            err_at(offset, &key, inner.message().trim().to_string())
        })?;
        let mut warnings = Vec::new();

        let base = path.parent().unwrap_or(Path::new("."));
        let state_dir = if raw.state_dir.is_relative() {
            base.join(&raw.state_dir)
        } else {
            raw.state_dir.clone()
        };

        let mut pairs = Vec::new();
        for (i, sod) in raw.separation_of_duties.iter().enumerate() {
            let p = sod.permissions.get_ref();
            if p.len() != 2 || p[0] == p[1] {
                return Err(err_at(
                    sod.permissions.span().start,
                    &format!("separation_of_duties[{i}].permissions"),
                    "a separation-of-duties entry names exactly two different permissions".into(),
                ));
            }
            pairs.push((p[0], p[1]));
        }

        let mut profiles = BTreeMap::new();
        for (name, spanned) in &raw.profiles {
            let at = spanned.span().start;
            let key = format!("profiles.{name}");
            check_name(name).map_err(|e| err_at(at, &key, e.to_string()))?;
            let profile = spanned.get_ref();
            for (i, r) in profile.read.iter().enumerate() {
                check_range(&r.functions, &READ_FUNCTIONS, r.start, r.count)
                    .map_err(|m| err_at(at, &format!("{key}.read[{i}]"), m))?;
            }
            for (i, w) in profile.write.iter().enumerate() {
                check_range(&w.functions, &WRITE_FUNCTIONS, w.start, w.count)
                    .map_err(|m| err_at(at, &format!("{key}.write[{i}]"), m))?;
                if w.values.as_ref().is_some_and(|v| v.is_empty()) {
                    return Err(err_at(
                        at,
                        &format!("{key}.write[{i}].values"),
                        "an empty value list allows nothing; leave `values` out to allow any value"
                            .into(),
                    ));
                }
            }
            for (j, a) in profile.actions.iter().enumerate() {
                if let Some(problem) = a.problem() {
                    return Err(err_at(
                        at,
                        &format!("{key}.actions[{j}] ({})", a.name),
                        problem,
                    ));
                }
                if profile.actions[..j].iter().any(|b| b.name == a.name) {
                    return Err(err_at(
                        at,
                        &format!("{key}.actions[{j}]"),
                        format!("action `{}` is defined twice", a.name),
                    ));
                }
            }
            check_accounts(&profile.accounts)
                .map_err(|e| err_at(at, &format!("{key}.accounts"), e))?;
            for (i, p) in profile.paths.iter().enumerate() {
                if p.pattern.trim_matches('/').is_empty() || p.pattern.contains("..") {
                    return Err(err_at(
                        at,
                        &format!("{key}.paths[{i}].pattern"),
                        format!(
                            "`{}` is not a path pattern under the meter's root",
                            p.pattern
                        ),
                    ));
                }
            }
            profiles.insert(name.clone(), profile.clone());
        }

        let mut meters = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, m) in raw.meters.iter().enumerate() {
            let id = m.id.get_ref();
            let at = m.id.span().start;
            check_name(id).map_err(|e| err_at(at, &format!("meters[{i}].id"), e.to_string()))?;
            if let Some(first) = seen.insert(id.clone(), at) {
                return Err(err_at(
                    at,
                    &format!("meters[{i}].id"),
                    format!(
                        "duplicate meter id `{id}` (first at line {})",
                        line_col(text, first).0
                    ),
                ));
            }
            let profile = m.profile.get_ref();
            if !profiles.contains_key(profile) {
                return Err(err_at(
                    m.profile.span().start,
                    &format!("meters[{i}].profile"),
                    if profiles.is_empty() {
                        format!("unknown profile `{profile}` (no [profiles.NAME] is defined)")
                    } else {
                        format!(
                            "unknown profile `{profile}` (defined: {})",
                            profiles.keys().cloned().collect::<Vec<_>>().join(", ")
                        )
                    },
                ));
            }
            for (k, v) in &m.tags {
                if check_name(k).is_err() || MeterSelector::parse(&format!("{k}={v}")).is_err() {
                    return Err(err_at(
                        at,
                        &format!("meters[{i}].tags.{k}"),
                        format!(
                            "tag `{k} = \"{v}\"` must be a name and a value of letters, digits, `.`, `_`, `-`"
                        ),
                    ));
                }
            }
            if m.unit_id == 0 || m.unit_id > 247 {
                return Err(err_at(
                    at,
                    &format!("meters[{i}].unit_id"),
                    format!("unit id {} is outside 1-247", m.unit_id),
                ));
            }
            let listener = match &m.listener {
                None => 0,
                Some(l) => raw
                    .modbus
                    .listen
                    .iter()
                    .position(|x| x == l)
                    .ok_or_else(|| {
                        err_at(
                            at,
                            &format!("meters[{i}].listener"),
                            format!(
                                "`{l}` is not one of modbus.listen ({})",
                                raw.modbus.listen.join(", ")
                            ),
                        )
                    })?,
            };
            let gateway_unit = match &m.gateway_unit {
                None => None,
                Some(u) => {
                    let unit = *u.get_ref();
                    let key = format!("meters[{i}].gateway_unit");
                    if !(1..=247).contains(&unit) {
                        return Err(err_at(
                            u.span().start,
                            &key,
                            format!(
                                "unit {unit} is outside 1-247 (0 is broadcast, 248-255 are reserved)"
                            ),
                        ));
                    }
                    if let Some(other) = meters.iter().find(|o: &&MeterConfig| {
                        o.listener == listener && o.gateway_unit == Some(unit)
                    }) {
                        return Err(err_at(
                            u.span().start,
                            &key,
                            format!(
                                "gateway unit {unit} is already meter `{}`'s on this listener",
                                other.id
                            ),
                        ));
                    }
                    if m.address.is_none() {
                        return Err(err_at(
                            u.span().start,
                            &key,
                            "a meter reached through the proxy needs an `address` (host:port)"
                                .into(),
                        ));
                    }
                    Some(unit)
                }
            };
            if let (Some(_), Some(s)) = (&m.files, &m.sftp) {
                return Err(err_at(
                    s.span().start,
                    &format!("meters[{i}].sftp"),
                    "a meter's store is either local (`files`) or upstream (`sftp`), not both"
                        .into(),
                ));
            }
            for (what, spanned) in [("console", &m.console), ("sftp", &m.sftp)]
                .into_iter()
                .filter_map(|(w, c)| c.as_ref().map(|c| (w, c)))
            {
                let (c, at) = (spanned.get_ref(), spanned.span().start);
                if russh::keys::PublicKey::from_openssh(&c.host_key).is_err() {
                    return Err(err_at(
                        at,
                        &format!("meters[{i}].{what}.host_key"),
                        "not an OpenSSH public key line (`ssh-ed25519 AAAA…`): the meter's host key is pinned, never learned".into(),
                    ));
                }
                if c.address
                    .rsplit_once(':')
                    .is_none_or(|(_, p)| p.parse::<u16>().is_err())
                {
                    return Err(err_at(
                        at,
                        &format!("meters[{i}].{what}.address"),
                        format!("`{}` is not host:port", c.address),
                    ));
                }
            }
            if let Some(accounts) = &m.accounts {
                check_accounts(accounts.get_ref()).map_err(|e| {
                    err_at(accounts.span().start, &format!("meters[{i}].accounts"), e)
                })?;
            }
            if m.max_connections == 0 {
                return Err(err_at(
                    at,
                    &format!("meters[{i}].max_connections"),
                    "must be at least 1".into(),
                ));
            }
            meters.push(MeterConfig {
                id: id.clone(),
                tags: m.tags.clone(),
                address: m.address.clone(),
                unit_id: m.unit_id,
                profile: profile.clone(),
                gateway_unit,
                listener,
                max_connections: m.max_connections,
                timeout: m.timeout.map(|t| t.0).unwrap_or(Duration::from_secs(1)),
                pipeline: m.pipeline.clamp(1, 64),
                files: m.files.as_ref().map(|f| base.join(f)),
                sftp: m.sftp.as_ref().map(|c| c.get_ref().clone()),
                console: m.console.as_ref().map(|c| c.get_ref().clone()),
                accounts: m.accounts.as_ref().map(|a| a.get_ref().clone()),
            });
        }

        let mut clients = Vec::new();
        let mut prefixes: HashMap<IpNet, usize> = HashMap::new();
        for (i, c) in raw.modbus.clients.iter().enumerate() {
            let at = c.cidr.span().start;
            let key = format!("modbus.clients[{i}].cidr");
            let net: IpNet = c
                .cidr
                .get_ref()
                .parse()
                .or_else(|_| c.cidr.get_ref().parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    err_at(
                        at,
                        &key,
                        format!(
                            "`{}` is not a CIDR such as 10.0.0.0/8 or 2001:db8::/32",
                            c.cidr.get_ref()
                        ),
                    )
                })?;
            let net = normalize_net(net);
            if let Some(first) = prefixes.insert(net, at) {
                return Err(err_at(
                    at,
                    &key,
                    format!(
                        "prefix {net} is listed twice (first at line {}): which service user it means would be ambiguous",
                        line_col(text, first).0
                    ),
                ));
            }
            let su = c.service_user.get_ref();
            check_name(su).map_err(|e| {
                err_at(
                    c.service_user.span().start,
                    &format!("modbus.clients[{i}].service_user"),
                    e.to_string(),
                )
            })?;
            let allow_writes = c.allow_writes.as_ref().is_some_and(|w| *w.get_ref());
            if let Some(w) = c.allow_writes.as_ref().filter(|w| *w.get_ref()) {
                warnings.push(ConfigWarning {
                    line: line_col(text, w.span().start).0,
                    key: format!("modbus.clients[{i}].allow_writes"),
                    message: format!("plain Modbus clients from {net} may write: their identity is only a source address, which is spoofable on a flat network and collapsed by NAT; prefer Modbus/TCP Security"),
                });
            }
            clients.push(ModbusClient {
                cidr: net,
                service_user: su.clone(),
                allow_writes,
            });
        }
        for (i, l) in raw.modbus.listen.iter().enumerate() {
            if l.parse::<std::net::SocketAddr>().is_err() {
                return Err(err_at(
                    0,
                    &format!("modbus.listen[{i}]"),
                    format!("`{l}` is not an address such as 0.0.0.0:502 or [::1]:5502"),
                ));
            }
        }

        let mbaps = match raw.mbaps {
            None => None,
            Some(m) => {
                let at = m.span().start;
                let m = m.into_inner();
                let from = warnings.len();
                let m = mbaps_config(m, base, raw.modbus.listen.len(), &mut warnings)
                    .map_err(|(key, message)| err_at(at, &key, message))?;
                for w in &mut warnings[from..] {
                    w.line = line_col(text, at).0;
                }
                m
            }
        };

        for (i, k) in raw.support.keys.iter().enumerate() {
            if russh::keys::PublicKey::from_openssh(k).is_err() {
                return Err(err_at(
                    text.find(k.as_str()).unwrap_or(0),
                    &format!("support.keys[{i}]"),
                    "not an OpenSSH public key line (`ssh-ed25519 AAAA… comment`)".into(),
                ));
            }
        }
        let ssh = match &raw.ssh {
            None => None,
            Some(sp) => {
                let at = sp.span().start;
                let raw_ssh = sp.get_ref();
                let mut listen = Vec::new();
                for (i, l) in raw_ssh.listen.iter().enumerate() {
                    listen.push(l.parse().map_err(|_| {
                        err_at(
                            at,
                            &format!("ssh.listen[{i}]"),
                            format!("`{l}` is not an address such as 0.0.0.0:22 or 127.0.0.1:2222"),
                        )
                    })?);
                }
                let max_sessions = raw_ssh.max_sessions_per_principal.unwrap_or(4);
                if max_sessions == 0 {
                    return Err(err_at(
                        at,
                        "ssh.max_sessions_per_principal",
                        "must be at least 1".into(),
                    ));
                }
                (!listen.is_empty()).then(|| SshConfig {
                    listen,
                    host_key: match &raw_ssh.host_key {
                        Some(p) => base.join(p),
                        None => state_dir.join("ssh_host_ed25519_key"),
                    },
                    idle_timeout: raw_ssh
                        .idle_timeout
                        .map_or(Duration::from_secs(15 * 60), |i| i.0),
                    max_session: raw_ssh
                        .max_session
                        .map_or(Duration::from_secs(12 * 3600), |i| i.0),
                    max_sessions_per_principal: max_sessions,
                    meter_credentials: raw_ssh.meter_credentials.as_ref().map(|p| base.join(p)),
                    max_upload_bytes: raw_ssh.max_upload_bytes.unwrap_or(1 << 30),
                    store_quota_bytes: raw_ssh.store_quota_bytes.unwrap_or(10 << 30),
                })
            }
        };
        let metrics_listen = match &raw.metrics {
            None => None,
            Some(m) => {
                let at = m.span().start;
                let text = &m.get_ref().listen;
                let addr: std::net::SocketAddr = text.parse().map_err(|_| {
                    err_at(
                        at,
                        "metrics.listen",
                        format!("`{text}` is not an address such as 127.0.0.1:9802"),
                    )
                })?;
                // Metrics say which meters are down and who is connected:
                // loopback only; a remote scraper comes through a local agent.
                if !addr.ip().is_loopback() {
                    return Err(err_at(
                        at,
                        "metrics.listen",
                        format!("`{text}` is not a loopback address (127.0.0.1 or [::1])"),
                    ));
                }
                Some(addr)
            }
        };
        let daemon_at = section_at(&raw.daemon);
        let daemon = raw.daemon.map(Spanned::into_inner).unwrap_or_default();
        if let Some(l) = &daemon.log_level
            && !["error", "warn", "info", "debug", "trace"].contains(&l.as_str())
        {
            return Err(err_at(
                daemon_at,
                "daemon.log_level",
                format!("`{l}` is not one of error, warn, info, debug, trace"),
            ));
        }
        if daemon.group.is_some() && daemon.user.is_none() {
            return Err(err_at(
                daemon_at,
                "daemon.group",
                "a group without daemon.user: give the user too".into(),
            ));
        }
        if daemon.allow_root && daemon.user.is_none() {
            warnings.push(ConfigWarning {
                line: line_col(text, daemon_at).0,
                key: "daemon.allow_root".into(),
                message: "started as root, the daemon keeps running as root (every parser too); prefer daemon.user".into(),
            });
        }

        let (audit_at, lockout_at, passwords_at) = (
            section_at(&raw.audit),
            section_at(&raw.lockout),
            section_at(&raw.passwords),
        );
        let mut audit = raw.audit.map(Spanned::into_inner).unwrap_or_default();
        let lockout = raw.lockout.map(Spanned::into_inner).unwrap_or_default();
        let passwords = raw.passwords.map(Spanned::into_inner).unwrap_or_default();
        let control_at = section_at(&raw.control);
        let control = raw.control.map(Spanned::into_inner).unwrap_or_default();
        if let Some(m) = &control.mode
            && u32::from_str_radix(m, 8).map_or(true, |b| b > 0o777)
        {
            return Err(err_at(
                control_at,
                "control.mode",
                format!("`{m}` is not an octal file mode such as \"0660\""),
            ));
        }
        if lockout.failures == 0 {
            return Err(err_at(
                lockout_at,
                "lockout.failures",
                "must be at least 1".into(),
            ));
        }
        if passwords.hash_threads == 0 || passwords.hash_queue == 0 {
            return Err(err_at(
                passwords_at,
                "passwords",
                "hash_threads and hash_queue must be at least 1".into(),
            ));
        }
        if !(1..=99).contains(&audit.warn_at_percent) {
            return Err(err_at(
                audit_at,
                "audit.warn_at_percent",
                "must be between 1 and 99".into(),
            ));
        }
        if audit.capacity_events < 1000 {
            return Err(err_at(
                audit_at,
                "audit.capacity_events",
                "must be at least 1000 events".into(),
            ));
        }
        if let Some(f) = &mut audit.forward {
            let (transport, _, _) = f
                .endpoint()
                .map_err(|e| err_at(audit_at, "audit.forward.target", e))?;
            if f.facility > 23 {
                return Err(err_at(
                    audit_at,
                    "audit.forward.facility",
                    "must be a syslog facility number, 0 to 23".into(),
                ));
            }
            if f.certificate.is_some() != f.key.is_some() {
                return Err(err_at(
                    audit_at,
                    "audit.forward",
                    "give both certificate and key, or neither".into(),
                ));
            }
            match transport {
                Transport::Tls if f.ca.is_none() => {
                    return Err(err_at(
                        audit_at,
                        "audit.forward.ca",
                        "tls:// needs the CA (PEM) that signed the collector's certificate".into(),
                    ));
                }
                Transport::Tcp if f.ca.is_some() || f.certificate.is_some() => {
                    return Err(err_at(
                        audit_at,
                        "audit.forward.target",
                        "ca, certificate and key apply to tls:// only".into(),
                    ));
                }
                _ => {}
            }
            for p in [&mut f.ca, &mut f.certificate, &mut f.key]
                .into_iter()
                .flatten()
            {
                *p = base.join(&*p);
            }
        }

        Ok((
            Config {
                path: path.to_path_buf(),
                state_dir,
                control,
                review: raw.review,
                audit,
                limits: raw.limits,
                lockout,
                passwords,
                separation_of_duties: pairs,
                support: raw.support,
                meters,
                profiles,
                modbus_clients: clients,
                modbus_listen: raw.modbus.listen.clone(),
                modbus_max_queue: raw.modbus.max_queue,
                mbaps,
                daemon,
                metrics_listen,
                ssh,
            },
            warnings,
        ))
    }
}

/// The `[mbaps]` section: None when it has no listener.
fn mbaps_config(
    m: RawMbaps,
    base: &Path,
    plain_listeners: usize,
    warnings: &mut Vec<ConfigWarning>,
) -> Result<Option<MbapsConfig>, (String, String)> {
    if m.listen.is_empty() {
        return Ok(None);
    }
    for (i, l) in m.listen.iter().enumerate() {
        if l.parse::<std::net::SocketAddr>().is_err() {
            return Err((
                format!("mbaps.listen[{i}]"),
                format!("`{l}` is not an address such as 0.0.0.0:802 or [::1]:8802"),
            ));
        }
    }
    if m.listen.len() > plain_listeners.max(1) {
        return Err((
            "mbaps.listen".into(),
            format!(
                "{} TLS listeners but {} unit maps: the i-th TLS listener serves the meters of modbus.listen[i]",
                m.listen.len(),
                plain_listeners.max(1)
            ),
        ));
    }
    let abs = |p: PathBuf| if p.is_relative() { base.join(p) } else { p };
    let certificate = abs(m.certificate.ok_or_else(|| {
        (
            "mbaps.certificate".to_string(),
            "missing: the gateway's certificate (PEM), e.g. from `metergate cert server`"
                .to_string(),
        )
    })?);
    let key = abs(m.key.ok_or_else(|| {
        (
            "mbaps.key".to_string(),
            "missing: the gateway's private key (PEM)".to_string(),
        )
    })?);
    let client_ca = match m.client_ca {
        Some(p) => abs(p),
        None => certificate
            .parent()
            .unwrap_or(Path::new("."))
            .join("ca.crt"),
    };
    let crl = match m.crl {
        Some(p) => abs(p),
        None => client_ca.parent().unwrap_or(Path::new(".")).join("crl.pem"),
    };
    if !crl.exists() {
        warnings.push(ConfigWarning {
            line: 0,
            key: "mbaps.crl".into(),
            message: format!(
                "{} does not exist (yet): no certificate counts as revoked until it does",
                crl.display()
            ),
        });
    }
    let handshake_timeout = m
        .handshake_timeout
        .map(|i| i.0)
        .unwrap_or(Duration::from_secs(10));
    if handshake_timeout.is_zero() {
        return Err((
            "mbaps.handshake_timeout".into(),
            "must be at least 1s".into(),
        ));
    }
    Ok(Some(MbapsConfig {
        listen: m.listen,
        certificate,
        key,
        client_ca,
        crl,
        name_from: m.identity,
        handshake_timeout,
    }))
}

fn section_at<T>(s: &Option<Spanned<T>>) -> usize {
    s.as_ref().map(|x| x.span().start).unwrap_or(0)
}

fn check_range(functions: &[u8], allowed: &[u8], start: u16, count: u16) -> Result<(), String> {
    if functions.is_empty() {
        return Err("`functions` is empty".into());
    }
    if let Some(f) = functions.iter().find(|f| !allowed.contains(f)) {
        return Err(format!(
            "function code {f} is not allowed here (allowed: {allowed:?})"
        ));
    }
    if count == 0 || start as u32 + count as u32 > 65_536 {
        return Err(format!(
            "range start {start} count {count} is empty or runs past register 65535"
        ));
    }
    Ok(())
}
