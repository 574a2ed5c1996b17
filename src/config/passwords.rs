//! `[passwords]`: the bounded hashing pool and the rules a new password
//! must follow.

use serde::Deserialize;

use super::errors::{ConfigError, Key, Source};

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

/// Checks `[passwords]`.
pub(super) fn check(passwords: &Passwords, src: &Source) -> Result<(), ConfigError> {
    for (name, value) in [
        ("hash_threads", passwords.hash_threads),
        ("hash_queue", passwords.hash_queue),
    ] {
        if value == 0 {
            return Err(src.err(&Key::new("passwords").at(name), "must be at least 1"));
        }
    }
    Ok(())
}
