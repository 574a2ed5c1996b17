//! The demo as a site for the SSH and SFTP tests: its meters, consoles,
//! file stores and users, each user with an OpenSSH key.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use super::daemon::{Daemon, Run};
use super::ssh::{keygen, public_line, ssh};

/// The demo with an OpenSSH key added to each of its users.
pub struct Site {
    pub d: Daemon,
    pub port: u16,
    /// The demo's plain Modbus listener.
    pub modbus: u16,
    pub keys: tempfile::TempDir,
}

impl Site {
    pub fn start() -> Site {
        Site::start_at(None)
    }

    /// The site under libfaketime from `fake_time` when given.
    pub fn start_at(fake_time: Option<&str>) -> Site {
        let (d, ports) = Daemon::start_demo_at(fake_time);
        let keys = tempfile::tempdir().unwrap();
        for user in ["admin", "crew", "viewer"] {
            let key = keygen(keys.path(), user);
            d.mg(&["user", "add-key", user, &public_line(&key)]).ok();
        }
        Site {
            d,
            port: ports.ssh,
            modbus: ports.modbus,
            keys,
        }
    }

    pub fn key(&self, user: &str) -> std::path::PathBuf {
        self.keys.path().join(user)
    }

    pub fn ssh(&self, user: &str, command: &str) -> Run {
        ssh(self.port, &self.key(user), user, &[], command)
    }

    pub fn events(&self, code: &str) -> String {
        self.d
            .mg(&["audit", "query", "--code", code, "--limit", "200"])
            .ok()
            .stdout
            .clone()
    }

    /// Waits (bounded) until an event with `code` mentions every word.
    pub fn wait_event(&self, code: &str, words: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = self.events(code);
            if words.iter().all(|w| text.contains(w)) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "no {code} with {words:?}: {text}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until `session list` shows an SSH session of `principal`.
    pub fn wait_listed(&self, principal: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let list = self.d.mg(&["session", "list"]).ok().stdout.clone();
            if list
                .lines()
                .any(|l| l.contains(principal) && l.contains("ssh"))
            {
                return;
            }
            assert!(Instant::now() < deadline, "no live session: {list}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
