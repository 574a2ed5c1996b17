//! The config file, one file per section: this one reads it, checks every
//! section and puts them together; each error names file, line and key.

mod access;
mod audit;
mod daemon;
mod errors;
mod interval;
mod lockout;
mod mbaps;
mod meters;
mod modbus;
mod passwords;
mod ssh;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::model::{Permission, Profile};

pub use access::{ReviewConfig, SupportConfig};
pub use audit::{AuditConfig, ForwardConfig, OnFailure, Transport, WhenFull};
pub use daemon::{ControlConfig, DaemonConfig};
pub use errors::{ConfigError, ConfigWarning};
pub use interval::Interval;
pub use lockout::{Limits, Lockout};
pub use mbaps::MbapsConfig;
pub use meters::{ConsoleConfig, MeterConfig};
pub use modbus::ModbusClient;
pub use passwords::Passwords;
pub use ssh::SshConfig;

use errors::{Source, section_at};

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
    separation_of_duties: Vec<access::RawSod>,
    #[serde(default)]
    support: SupportConfig,
    #[serde(default)]
    meters: Vec<meters::RawMeter>,
    #[serde(default)]
    profiles: BTreeMap<String, Spanned<Profile>>,
    #[serde(default)]
    modbus: modbus::RawModbus,
    #[serde(default)]
    mbaps: Option<Spanned<mbaps::RawMbaps>>,
    #[serde(default)]
    daemon: Option<Spanned<DaemonConfig>>,
    #[serde(default)]
    metrics: Option<Spanned<daemon::RawMetrics>>,
    #[serde(default)]
    ssh: Option<Spanned<ssh::RawSsh>>,
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
        let src = Source {
            file: path.display().to_string(),
            text,
        };
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
            // Spanned sections add a private path segment; people never wrote it.
            let key = key.replace(".$__serde_spanned_private_value", "");
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
        let mbaps = mbaps::mbaps(
            raw.mbaps,
            base,
            raw.modbus.listen.len(),
            &src,
            &mut warnings,
        )?;
        access::check_support(&raw.support, &src)?;
        let ssh = ssh::ssh(&raw.ssh, base, &state_dir, &src)?;
        let metrics_listen = daemon::metrics_listen(&raw.metrics, &src)?;
        let daemon_at = section_at(&raw.daemon);
        let daemon = raw.daemon.map(Spanned::into_inner).unwrap_or_default();
        daemon::check_daemon(&daemon, daemon_at, &src, &mut warnings)?;

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
        daemon::check_control(&control, control_at, &src)?;
        lockout::check(&lockout, lockout_at, &src)?;
        passwords::check(&passwords, passwords_at, &src)?;
        audit::check(&mut audit, audit_at, base, &src)?;

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
