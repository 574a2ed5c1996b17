//! Running as a system service: the systemd notification protocol, dropping
//! root after the listeners are bound, and the start-up checks on the state
//! directory and private keys.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::unistd::{Gid, Group, Uid, User};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(
        "running as root: set daemon.user and daemon.group (the daemon binds its ports, then drops to them), or daemon.allow_root = true"
    )]
    RootRefused,
    #[error("daemon.user `{0}`: no such user")]
    NoUser(String),
    #[error("daemon.group `{0}`: no such group")]
    NoGroup(String),
    #[error("dropping privileges to {user}:{group} failed at {step}: {error}")]
    Drop {
        user: String,
        group: String,
        step: &'static str,
        error: nix::Error,
    },
    #[error("{}: {problem}; fix: {fix}", path.display())]
    Unsafe {
        path: PathBuf,
        problem: String,
        fix: String,
    },
}

/// The account the daemon runs as once it has started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub uid: u32,
    pub gid: u32,
    pub user: String,
    pub group: String,
}

/// Who the daemon will run as: the configured user and group when started
/// as root; itself otherwise. Root without a user is refused unless allowed.
pub fn target_account(
    user: Option<&str>,
    group: Option<&str>,
    allow_root: bool,
) -> Result<Option<Account>, ServiceError> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    let Some(user) = user else {
        return if allow_root {
            Ok(None)
        } else {
            Err(ServiceError::RootRefused)
        };
    };
    let u = User::from_name(user)
        .ok()
        .flatten()
        .ok_or_else(|| ServiceError::NoUser(user.into()))?;
    let g = match group {
        Some(name) => Group::from_name(name)
            .ok()
            .flatten()
            .ok_or_else(|| ServiceError::NoGroup(name.into()))?,
        None => Group::from_gid(u.gid)
            .ok()
            .flatten()
            .ok_or_else(|| ServiceError::NoGroup(u.gid.to_string()))?,
    };
    Ok(Some(Account {
        uid: u.uid.as_raw(),
        gid: g.gid.as_raw(),
        user: u.name,
        group: g.name,
    }))
}

/// Drops root for good: supplementary groups (the account's group and the
/// control socket's), then the group, then the user. Setting the user last
/// clears every capability; glibc applies each call to every thread.
pub fn drop_to(account: &Account, extra_group: Option<u32>) -> Result<(), ServiceError> {
    let fail = |step, error| ServiceError::Drop {
        user: account.user.clone(),
        group: account.group.clone(),
        step,
        error,
    };
    let mut groups = vec![Gid::from_raw(account.gid)];
    if let Some(g) = extra_group {
        groups.push(Gid::from_raw(g));
    }
    nix::unistd::setgroups(&groups).map_err(|e| fail("setgroups", e))?;
    nix::unistd::setgid(Gid::from_raw(account.gid)).map_err(|e| fail("setgid", e))?;
    nix::unistd::setuid(Uid::from_raw(account.uid)).map_err(|e| fail("setuid", e))?;
    // Root must be gone for good.
    if nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
        return Err(fail("verification", nix::Error::EPERM));
    }
    Ok(())
}

/// The state directory must be the service account's alone (0700), and a
/// private key must be 0600 (or stricter) and the account's.
pub fn check_private(path: &Path, uid: u32, is_dir: bool) -> Result<(), ServiceError> {
    let Ok(meta) = std::fs::metadata(path) else {
        // Not there yet: created with the right mode by whoever creates it.
        return Ok(());
    };
    let mode = meta.mode() & 0o777;
    let wanted = if is_dir { 0o700 } else { 0o600 };
    let account = User::from_uid(Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string());
    if meta.uid() != uid {
        return Err(ServiceError::Unsafe {
            path: path.into(),
            problem: format!(
                "owned by uid {}, not by the service account {account}",
                meta.uid()
            ),
            fix: format!(
                "chown {}{account} {}",
                if is_dir { "-R " } else { "" },
                path.display()
            ),
        });
    }
    if mode & 0o077 != 0 {
        return Err(ServiceError::Unsafe {
            path: path.into(),
            problem: format!("mode {mode:04o} lets others in (must be {wanted:04o})"),
            fix: format!("chmod {wanted:04o} {}", path.display()),
        });
    }
    Ok(())
}

/// systemd's notification socket, when the service manager gave one.
pub struct Notifier {
    socket: Option<std::os::unix::net::UnixDatagram>,
    target: Option<std::os::unix::net::SocketAddr>,
}

impl Notifier {
    /// From `NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace).
    pub fn from_env() -> Notifier {
        let none = Notifier {
            socket: None,
            target: None,
        };
        let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
            return none;
        };
        let bytes = path.as_encoded_bytes();
        let addr = if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name)
        } else {
            std::os::unix::net::SocketAddr::from_pathname(Path::new(&path))
        };
        match (std::os::unix::net::UnixDatagram::unbound(), addr) {
            (Ok(s), Ok(a)) => Notifier {
                socket: Some(s),
                target: Some(a),
            },
            _ => none,
        }
    }

    /// Sends one notification (`READY=1`, `STOPPING=1`, `WATCHDOG=1`,
    /// `STATUS=…`); nothing when not run by systemd.
    pub fn send(&self, state: &str) {
        if let (Some(s), Some(a)) = (&self.socket, &self.target)
            && let Err(e) = s.send_to_addr(state.as_bytes(), a)
        {
            tracing::warn!(error = %e, "systemd notification failed");
        }
    }

    /// How often to ping the watchdog: half of `WATCHDOG_USEC`, when it is
    /// meant for this process.
    pub fn watchdog_every(&self) -> Option<Duration> {
        self.socket.as_ref()?;
        if let Some(pid) = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            && pid != std::process::id()
        {
            return None;
        }
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
        (usec > 0).then(|| Duration::from_micros(usec / 2))
    }
}
