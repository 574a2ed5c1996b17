//! `[modbus]`: the plain Modbus/TCP listeners, the queue per meter, and the
//! clients known only by their source address (DESIGN §2).

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;

use crate::model::check_name;

use super::errors::{ConfigError, ConfigWarning, Key, Source};

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

fn sixty_four() -> usize {
    64
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawModbus {
    #[serde(default)]
    pub(super) clients: Vec<RawClient>,
    #[serde(default)]
    pub(super) listen: Vec<String>,
    #[serde(default = "sixty_four")]
    pub(super) max_queue: usize,
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
pub(super) struct RawClient {
    cidr: String,
    service_user: String,
    #[serde(default)]
    allow_writes: bool,
}

/// The plain clients, checked; a client allowed to write is a warning.
pub(super) fn clients(
    raw: &[RawClient],
    src: &Source,
    warnings: &mut Vec<ConfigWarning>,
) -> Result<Vec<ModbusClient>, ConfigError> {
    let mut clients = Vec::new();
    let mut prefixes: HashMap<IpNet, Key> = HashMap::new();
    for (i, c) in raw.iter().enumerate() {
        let entry = Key::new("modbus.clients").index(i);
        let key = entry.at("cidr");
        let net: IpNet = c
            .cidr
            .parse()
            .or_else(|_| c.cidr.parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| {
                src.err(
                    &key,
                    format!(
                        "`{}` is not a CIDR such as 10.0.0.0/8 or 2001:db8::/32",
                        c.cidr
                    ),
                )
            })?;
        let net = normalize_net(net);
        if let Some(first) = prefixes.insert(net, key.clone()) {
            return Err(src.err(
                &key,
                format!(
                    "prefix {net} is listed twice (first at line {}): which service user it means would be ambiguous",
                    src.line_of(&first)
                ),
            ));
        }
        check_name(&c.service_user)
            .map_err(|e| src.err(&entry.at("service_user"), e.to_string()))?;
        if c.allow_writes {
            warnings.push(src.warning(
                &entry.at("allow_writes"),
                format!("plain Modbus clients from {net} may write: their identity is only a source address, which is spoofable on a flat network and collapsed by NAT; prefer Modbus/TCP Security"),
            ));
        }
        clients.push(ModbusClient {
            cidr: net,
            service_user: c.service_user.clone(),
            allow_writes: c.allow_writes,
        });
    }
    Ok(clients)
}

/// Checks the plain listeners' addresses.
pub(super) fn check_listen(listen: &[String], src: &Source) -> Result<(), ConfigError> {
    for (i, l) in listen.iter().enumerate() {
        if l.parse::<std::net::SocketAddr>().is_err() {
            return Err(src.err(
                &Key::new("modbus.listen").index(i),
                format!("`{l}` is not an address such as 0.0.0.0:502 or [::1]:5502"),
            ));
        }
    }
    Ok(())
}
