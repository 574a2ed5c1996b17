//! Typed principal ids (`user:NAME`, `svc:NAME`, `support`, `local:USERNAME`),
//! entity names, and the calendar day used for access end dates.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::{
    Date, OffsetDateTime, Time, format_description::BorrowedFormatItem, macros::format_description,
};

/// Who is acting: appears in every decision and every event.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PrincipalId {
    /// A person with an account on the gateway.
    User(String),
    /// An automated process (SCADA poller, integration).
    Service(String),
    /// The vendor's support staff, while support access is granted.
    Support,
    /// A person at the gateway's own console, from the control socket's peer
    /// credentials; holds Administrator as the break-glass path.
    Local(String),
}

/// Text that is not a principal id, or a name that is not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error(
        "`{0}` is not a valid name: use 1-64 characters of letters, digits, `.`, `_`, `-`, starting with a letter or digit"
    )]
    Invalid(String),
    #[error(
        "`{0}` is not a principal id: use user:NAME, svc:NAME, support, local:NAME or a bare user name"
    )]
    BadPrincipal(String),
    #[error("`{0}` is not a date: use YYYY-MM-DD")]
    BadDate(String),
}

/// Checks an entity name (user, group, role, policy, meter, key id...).
pub fn check_name(name: &str) -> Result<(), NameError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(NameError::Invalid(name.to_string()))
    }
}

impl PrincipalId {
    /// Parses a typed id; a bare name means a user.
    pub fn parse(text: &str) -> Result<PrincipalId, NameError> {
        let bad = || NameError::BadPrincipal(text.to_string());
        let named = |name: &str, make: fn(String) -> PrincipalId| {
            check_name(name).map_err(|_| bad())?;
            Ok(make(name.to_string()))
        };
        match text.split_once(':') {
            None if text == "support" => Ok(PrincipalId::Support),
            None => named(text, PrincipalId::User),
            Some(("user", n)) => named(n, PrincipalId::User),
            Some(("svc", n)) => named(n, PrincipalId::Service),
            Some(("local", n)) => named(n, PrincipalId::Local),
            Some(_) => Err(bad()),
        }
    }

    /// The kind word used in messages ("user", "service user", ...).
    pub fn kind(&self) -> &'static str {
        match self {
            PrincipalId::User(_) => "user",
            PrincipalId::Service(_) => "service user",
            PrincipalId::Support => "support",
            PrincipalId::Local(_) => "local console user",
        }
    }
}

impl fmt::Display for PrincipalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrincipalId::User(n) => write!(f, "user:{n}"),
            PrincipalId::Service(n) => write!(f, "svc:{n}"),
            PrincipalId::Support => f.write_str("support"),
            PrincipalId::Local(n) => write!(f, "local:{n}"),
        }
    }
}

impl FromStr for PrincipalId {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PrincipalId::parse(s)
    }
}

impl Serialize for PrincipalId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PrincipalId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        PrincipalId::parse(&text).map_err(serde::de::Error::custom)
    }
}

const DAY_FORMAT: &[BorrowedFormatItem<'static>] = format_description!("[year]-[month]-[day]");

/// A calendar day in UTC (`YYYY-MM-DD`). Access that ends on a day ends at
/// 00:00 UTC at its start, so "tomorrow" ends access at the end of today.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(pub Date);

impl Day {
    pub fn parse(text: &str) -> Result<Day, NameError> {
        Date::parse(text.trim(), DAY_FORMAT)
            .map(Day)
            .map_err(|_| NameError::BadDate(text.to_string()))
    }

    /// The instant access ends: 00:00 UTC at the start of this day.
    pub fn start(self) -> OffsetDateTime {
        self.0.with_time(Time::MIDNIGHT).assume_utc()
    }

    /// Whether access that ends on this day has ended at `now`.
    pub fn has_passed(self, now: OffsetDateTime) -> bool {
        now >= self.start()
    }

    /// The day after `now`'s UTC date: the earliest end date allowed.
    pub fn tomorrow(now: OffsetDateTime) -> Day {
        let today = now.to_offset(time::UtcOffset::UTC).date();
        Day(today.next_day().unwrap_or(today))
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.format(DAY_FORMAT) {
            Ok(s) => f.write_str(&s),
            Err(_) => write!(f, "{:?}", self.0),
        }
    }
}

impl Serialize for Day {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Day {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Day::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Microseconds since the Unix epoch, UTC: how the store and the log keep time.
pub fn micros(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1000) as i64
}

/// The inverse of [`micros`].
pub fn from_micros(us: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(us as i128 * 1000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// RFC 3339 text for a time in microseconds, for people and exports.
pub fn rfc3339(us: i64) -> String {
    from_micros(us)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| us.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn typed_ids_round_trip_and_bare_names_are_users() {
        for (text, id) in [
            ("user:alice", PrincipalId::User("alice".into())),
            ("alice", PrincipalId::User("alice".into())),
            ("svc:scada-1", PrincipalId::Service("scada-1".into())),
            ("support", PrincipalId::Support),
            ("local:root", PrincipalId::Local("root".into())),
        ] {
            assert_eq!(PrincipalId::parse(text), Ok(id.clone()), "{text}");
            assert_eq!(PrincipalId::parse(&id.to_string()), Ok(id));
        }
        for bad in ["", "user:", "svc:a b", "robot:x", "user:../x", "-x"] {
            assert!(PrincipalId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn end_date_is_midnight_utc_at_its_start() {
        let day = Day::parse("2026-11-24").unwrap();
        assert!(!day.has_passed(datetime!(2026-11-23 23:59:59.999999 UTC)));
        assert!(day.has_passed(datetime!(2026-11-24 00:00 UTC)));
        assert_eq!(Day::tomorrow(datetime!(2026-11-23 08:00 UTC)), day);
        assert!(Day::parse("24.11.2026").is_err());
    }
}
