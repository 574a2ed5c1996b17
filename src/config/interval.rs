//! Durations as people write them in the config: `900s`, `15m`, `2h`, `30d`.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

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
