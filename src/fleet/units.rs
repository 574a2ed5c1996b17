//! The meters' connection pools, by the gateway unit id each listener
//! answers for: built from the config, reused across reloads, shared by
//! every door that reaches a meter (Modbus, mbaps, the gateway shell).

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::Config;
use crate::fleet::pool::{LinkSettings, MeterLink};

/// The meters one listener reaches, by gateway unit id.
pub type UnitMap = HashMap<u8, (String, Arc<MeterLink>)>;

/// One unit map per plain listener (at least one: meters without a
/// `listener` are in the first). The TLS listeners share them, so plain and
/// TLS clients funnel into the same few meter connections.
pub fn unit_maps(config: &Config) -> Vec<Arc<UnitMap>> {
    unit_maps_reusing(config, &[]).0
}

/// The unit maps for `config`, keeping the pool (and its open connections)
/// of every meter whose connection settings did not change; also says how
/// many meters were added and removed.
pub fn unit_maps_reusing(
    config: &Config,
    old: &[Arc<UnitMap>],
) -> (Vec<Arc<UnitMap>>, usize, usize) {
    let maps: Vec<Arc<UnitMap>> = (0..config.modbus_listen.len().max(1))
        .map(|l| {
            let units = config
                .meters
                .iter()
                .filter(|m| m.listener == l)
                .filter_map(|m| {
                    let unit = m.gateway_unit?;
                    let address = m.address.as_deref()?;
                    let settings = LinkSettings {
                        address: address.to_string(),
                        unit_id: m.unit_id,
                        max_connections: m.max_connections,
                        pipeline: m.pipeline,
                        timeout: m.timeout,
                        max_queue: config.modbus_max_queue,
                    };
                    let reused = old
                        .iter()
                        .flat_map(|o| o.values())
                        .find(|(id, link)| *id == m.id && link.settings() == settings);
                    let link = match reused {
                        Some((_, link)) => link.clone(),
                        None => Arc::new(MeterLink::new(
                            address,
                            m.unit_id,
                            m.max_connections,
                            m.pipeline,
                            m.timeout,
                            config.modbus_max_queue,
                        )),
                    };
                    Some((unit, (m.id.clone(), link)))
                })
                .collect();
            Arc::new(units)
        })
        .collect();
    let old_ids: std::collections::HashSet<&String> = old
        .iter()
        .flat_map(|o| o.values().map(|(id, _)| id))
        .collect();
    let new_ids: std::collections::HashSet<&String> = maps
        .iter()
        .flat_map(|o| o.values().map(|(id, _)| id))
        .collect();
    let added = new_ids.difference(&old_ids).count();
    let removed = old_ids.difference(&new_ids).count();
    (maps, added, removed)
}

/// The link to `meter` in any of `maps`.
pub fn link(maps: &[Arc<UnitMap>], meter: &str) -> Option<Arc<MeterLink>> {
    maps.iter()
        .flat_map(|m| m.values())
        .find(|(id, _)| id == meter)
        .map(|(_, l)| l.clone())
}
