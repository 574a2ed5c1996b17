//! Connections that have not authenticated yet (SSH logins, TLS
//! handshakes), held as OpenSSH's MaxStartups and PerSourceMaxStartups hold
//! them, with one fairness rule added: an address with nothing waiting is
//! not dropped at random.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::config::MaxStartups;

/// The waiting connections, in total and per address.
pub struct Startups {
    limits: MaxStartups,
    /// The settings' names, for messages: (the whole, per source).
    names: (&'static str, &'static str),
    waiting: Mutex<Waiting>,
    random: ring::rand::SystemRandom,
}

#[derive(Default)]
struct Waiting {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
}

/// Why a connection that has not logged in was dropped.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Dropped {
    #[error("{0} connections are waiting to authenticate ({1} full)")]
    Full(usize, &'static str),
    #[error("this address has {0} connections waiting to authenticate ({1})")]
    Source(usize, &'static str),
    #[error(
        "{0} connections are waiting to authenticate and this address has one too: dropped early ({1})"
    )]
    Early(usize, &'static str),
}

/// A waiting connection's place, given back at login or when it ends.
pub struct Waiter {
    startups: Arc<Startups>,
    source: IpAddr,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if let Ok(mut w) = self.startups.waiting.lock() {
            w.total -= 1;
            if let Some(n) = w.by_source.get_mut(&self.source) {
                *n -= 1;
                if *n == 0 {
                    w.by_source.remove(&self.source);
                }
            }
        }
    }
}

impl Startups {
    /// `names`: how the settings are called, for messages (the whole, per
    /// source).
    pub fn new(limits: MaxStartups, names: (&'static str, &'static str)) -> Arc<Startups> {
        Arc::new(Startups {
            limits,
            names,
            waiting: Mutex::new(Waiting::default()),
            random: ring::rand::SystemRandom::new(),
        })
    }

    /// A place for a new connection from `source`, or why it is dropped.
    pub fn admit(self: &Arc<Self>, source: IpAddr) -> Result<Waiter, Dropped> {
        let roll = self.roll();
        self.admit_with(source, roll)
    }

    /// A number in 0..100, uniformly.
    fn roll(&self) -> u32 {
        let mut b = [0u8; 4];
        // An unavailable random source drops nothing early (the caps hold).
        match ring::rand::SecureRandom::fill(&self.random, &mut b) {
            Ok(()) => u32::from_le_bytes(b) % 100,
            Err(_) => 100,
        }
    }

    fn admit_with(self: &Arc<Self>, source: IpAddr, roll: u32) -> Result<Waiter, Dropped> {
        let l = self.limits;
        let (all, each) = self.names;
        let Ok(mut w) = self.waiting.lock() else {
            return Err(Dropped::Full(0, all));
        };
        let mine = w.by_source.get(&source).copied().unwrap_or(0);
        if w.total >= l.full {
            return Err(Dropped::Full(w.total, all));
        }
        if mine >= l.per_source {
            return Err(Dropped::Source(mine, each));
        }
        if w.total >= l.start && mine > 0 {
            // rate% at start, rising linearly to 100% at full.
            let span = (l.full - l.start).max(1) as u64;
            let over = (w.total - l.start) as u64;
            let chance = u64::from(l.rate) + (100 - u64::from(l.rate)) * over / span;
            if u64::from(roll) < chance {
                return Err(Dropped::Early(w.total, all));
            }
        }
        w.total += 1;
        *w.by_source.entry(source).or_insert(0) += 1;
        Ok(Waiter {
            startups: self.clone(),
            source,
        })
    }

    /// Connections waiting to log in.
    pub fn waiting(&self) -> usize {
        self.waiting.lock().map(|w| w.total).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    fn startups(start: usize, rate: u32, full: usize, per_source: usize) -> Arc<Startups> {
        Startups::new(
            MaxStartups {
                start,
                rate,
                full,
                per_source,
            },
            ("all", "each"),
        )
    }

    #[test]
    fn one_address_holds_at_most_its_share_of_waiting_logins() {
        let s = startups(100, 30, 200, 3);
        let held: Vec<_> = (0..3).map(|_| s.admit_with(ip(2), 99).unwrap()).collect();
        assert_eq!(
            s.admit_with(ip(2), 99).err(),
            Some(Dropped::Source(3, "each"))
        );
        assert!(s.admit_with(ip(1), 99).is_ok());
        drop(held);
        assert_eq!(s.waiting(), 0);
        assert!(s.admit_with(ip(2), 99).is_ok());
    }

    #[test]
    fn beyond_start_a_busy_address_is_dropped_with_rising_chance_a_quiet_one_is_not() {
        let s = startups(2, 30, 10, 10);
        let _held: Vec<_> = (0..2).map(|_| s.admit_with(ip(2), 0).unwrap()).collect();
        // At start: rate% (30): a roll of 29 is dropped, 30 is not.
        assert_eq!(
            s.admit_with(ip(2), 29).err(),
            Some(Dropped::Early(2, "all"))
        );
        let _third = s.admit_with(ip(2), 30).unwrap();
        // A quiet address is admitted whatever the roll.
        let _quiet = s.admit_with(ip(1), 0).unwrap();
        // Four waiting of 2..10: 30 + 70 * 2/8 = 47.
        assert_eq!(
            s.admit_with(ip(2), 46).err(),
            Some(Dropped::Early(4, "all"))
        );
        assert!(s.admit_with(ip(2), 47).is_ok());
    }

    #[test]
    fn at_full_everyone_is_dropped() {
        let s = startups(1, 0, 3, 1);
        let _held: Vec<_> = (1..=3).map(|i| s.admit_with(ip(i), 99).unwrap()).collect();
        assert_eq!(s.admit_with(ip(9), 99).err(), Some(Dropped::Full(3, "all")));
    }
}
