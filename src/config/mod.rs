//! The config file, one file per section: this one reads it, checks every
//! section and puts them together; each error names file, line and key.

mod access;
mod api;
mod audit;
mod daemon;
mod directory;
mod errors;
mod interval;
mod lockout;
mod mail;
mod mbaps;
mod meters;
mod mfa;
mod modbus;
mod passwords;
mod recording;
mod ssh;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::model::{Permission, Profile};
use serde::Deserialize;

pub use access::{ReviewConfig, SupportConfig};
pub use api::ApiConfig;
pub use audit::{AuditConfig, ForwardConfig, OnFailure, Transport, WhenFull};
pub use daemon::{ControlConfig, DaemonConfig};
pub use directory::{DirectoryConfig, PostgresDirectory};
pub use errors::{ConfigError, ConfigWarning};
pub use interval::Interval;
pub use lockout::{Limits, Lockout};
pub use mail::{MailConfig, MailTls, MailTransport};
pub use mbaps::MbapsConfig;
pub use meters::{ConsoleConfig, MeterConfig};
pub use mfa::{MfaConfig, MfaRequired};
pub use modbus::ModbusClient;
pub use passwords::Passwords;
pub use recording::RecordingConfig;
pub use ssh::{MaxStartups, SshConfig};

use errors::Source;

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
    pub mfa: MfaConfig,
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
    /// None when `[api]` has no listener.
    pub api: Option<ApiConfig>,
    pub recording: RecordingConfig,
    /// How temporary passwords reach users; None: printed to the administrator.
    pub mail: Option<MailConfig>,
    /// Where identities and policies live.
    pub directory: DirectoryConfig,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    state_dir: PathBuf,
    #[serde(default)]
    control: ControlConfig,
    #[serde(default)]
    review: ReviewConfig,
    #[serde(default)]
    audit: AuditConfig,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    lockout: Lockout,
    #[serde(default)]
    passwords: Passwords,
    #[serde(default)]
    mfa: MfaConfig,
    #[serde(default)]
    separation_of_duties: Vec<access::RawSod>,
    #[serde(default)]
    support: SupportConfig,
    #[serde(default)]
    meters: Vec<meters::RawMeter>,
    #[serde(default)]
    profiles: BTreeMap<String, Profile>,
    #[serde(default)]
    modbus: modbus::RawModbus,
    #[serde(default)]
    mbaps: Option<mbaps::RawMbaps>,
    #[serde(default)]
    daemon: DaemonConfig,
    #[serde(default)]
    metrics: Option<daemon::RawMetrics>,
    #[serde(default)]
    ssh: Option<ssh::RawSsh>,
    #[serde(default)]
    api: Option<api::RawApi>,
    #[serde(default)]
    recording: RecordingConfig,
    #[serde(default)]
    mail: Option<mail::RawMail>,
    #[serde(default)]
    directory: Option<directory::RawDirectory>,
}

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
        let src = Source::new(path.display().to_string(), text);
        let de = toml::Deserializer::parse(text).map_err(|e| {
            src.err_at(
                e.span().map(|s| s.start).unwrap_or(0),
                "-",
                e.message().trim().to_string(),
            )
        })?;
        let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let offset = inner.span().map(|s| s.start).unwrap_or(0);
            let key = if key == "." { "-".to_string() } else { key };
            src.err_at(offset, &key, inner.message().trim().to_string())
        })?;
        let mut warnings = Vec::new();

        let base = path.parent().unwrap_or(Path::new("."));
        let state_dir = if raw.state_dir.is_relative() {
            base.join(&raw.state_dir)
        } else {
            raw.state_dir.clone()
        };

        let pairs = access::separation_of_duties(&raw.separation_of_duties, &src)?;
        let profiles = meters::profiles(&raw.profiles, &src)?;
        let meters = meters::meters(&raw.meters, &profiles, &raw.modbus.listen, base, &src)?;
        let clients = modbus::clients(&raw.modbus.clients, &src, &mut warnings)?;
        modbus::check_listen(&raw.modbus.listen, &src)?;
        let mbaps = mbaps::mbaps(raw.mbaps, base, raw.modbus.listen.len(), &src)?;
        access::check_support(&raw.support, &src)?;
        let ssh = ssh::ssh(&raw.ssh, base, &state_dir, &src)?;
        let api = api::api(raw.api, base, &src)?;
        let metrics_listen = daemon::metrics_listen(&raw.metrics, &src)?;
        daemon::check_daemon(&raw.daemon, &src, &mut warnings)?;
        daemon::check_control(&raw.control, &src)?;
        lockout::check(&raw.lockout, &raw.limits, &src)?;
        passwords::check(&raw.passwords, &src)?;
        mfa::check(&raw.mfa, &src)?;
        recording::check(&raw.recording, &src)?;
        let mail = mail::mail(&raw.mail, base, &src)?;
        let directory = directory::directory(&raw.directory, base, &src)?;
        let mut audit = raw.audit;
        audit::check(&mut audit, base, &src)?;

        Ok((
            Config {
                path: path.to_path_buf(),
                state_dir,
                control: raw.control,
                review: raw.review,
                audit,
                limits: raw.limits,
                lockout: raw.lockout,
                passwords: raw.passwords,
                mfa: raw.mfa,
                separation_of_duties: pairs,
                support: raw.support,
                meters,
                profiles,
                modbus_clients: clients,
                modbus_listen: raw.modbus.listen.clone(),
                modbus_max_queue: raw.modbus.max_queue,
                mbaps,
                daemon: raw.daemon,
                metrics_listen,
                ssh,
                api,
                recording: raw.recording,
                mail,
                directory,
            },
            warnings,
        ))
    }
}
