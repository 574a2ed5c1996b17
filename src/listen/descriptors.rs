//! The daemon's open-file budget: the soft limit raised to the hard one at
//! start, a reserve kept for the store, the meter pools, the control socket
//! and metrics; of the rest, a quarter for files SFTP holds open and three
//! quarters shared by the network listeners' connections.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Descriptors one admitted network connection may need: its socket and
/// one to the meter behind it (a console or the meter's SFTP server).
pub const PER_CONNECTION: u64 = 2;
/// Descriptors kept for the daemon's own files: sled's files, the log, the
/// signing key, the forwarder's connection, spawned blocking reads.
pub const OWN_FILES: u64 = 96;
/// The smallest budget the daemon starts with: below it, the limit is a
/// misconfiguration, not a choice.
pub const SMALLEST_BUDGET: u64 = 16;

#[derive(Debug, thiserror::Error)]
pub enum DescriptorError {
    #[error("cannot read the open-file limit (RLIMIT_NOFILE): {0}")]
    Read(nix::Error),
    #[error(
        "the open-file limit ({limit}) leaves {left} descriptors for connections after the reserve of {reserve} (the store, {meters} meter connections, the control socket and metrics); raise it (LimitNOFILE= in the unit, ulimit -n) to at least {needed}"
    )]
    TooLow {
        limit: u64,
        reserve: u64,
        meters: u64,
        left: u64,
        needed: u64,
    },
}

/// The open-file limit in force, and how many connections the network
/// listeners may hold together.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// The soft limit after raising it.
    pub limit: u64,
    /// What it was before, when raising changed it.
    pub raised_from: Option<u64>,
    /// Connections the public listeners share.
    pub connections: usize,
    /// Files SFTP may hold open at once, every channel together.
    pub sftp_files: usize,
}

/// Raises the soft limit to the hard one (raising is allowed without
/// privilege), then budgets it: `meter_connections` (the pools' most) and
/// `local` (control socket and metrics caps) come off the top.
pub fn raise_and_budget(meter_connections: u64, local: u64) -> Result<Budget, DescriptorError> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(DescriptorError::Read)?;
    let mut raised_from = None;
    let mut limit = soft;
    if hard > soft {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => {
                raised_from = Some(soft);
                limit = hard;
            }
            Err(e) => {
                tracing::warn!(error = %e, soft, hard, "the open-file limit could not be raised")
            }
        }
    }
    budget(limit, meter_connections, local).map(|(connections, sftp_files)| Budget {
        limit,
        raised_from,
        connections,
        sftp_files,
    })
}

/// Connections the public listeners may share under `limit`, and files
/// SFTP may hold open.
pub fn budget(
    limit: u64,
    meter_connections: u64,
    local: u64,
) -> Result<(usize, usize), DescriptorError> {
    let reserve = OWN_FILES + meter_connections + local;
    let left = limit.saturating_sub(reserve);
    let files = left / 4;
    let connections = (left - files) / PER_CONNECTION;
    if connections < SMALLEST_BUDGET {
        return Err(DescriptorError::TooLow {
            limit,
            reserve,
            meters: meter_connections,
            left,
            needed: reserve + SMALLEST_BUDGET * PER_CONNECTION,
        });
    }
    let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    Ok((size(connections), size(files)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_1024_descriptor_system_keeps_a_reserve_and_shares_the_rest() {
        let (connections, files) = budget(1024, 40, 48).unwrap();
        let left = 1024 - OWN_FILES - 40 - 48;
        assert_eq!(files as u64, left / 4);
        assert_eq!(connections as u64, (left - left / 4) / PER_CONNECTION);
        // Everything fits under the limit with the reserve kept.
        assert!(OWN_FILES + 40 + 48 + connections as u64 * PER_CONNECTION + files as u64 <= 1024);
        assert!(connections >= 300 && files >= 200);
    }

    #[test]
    fn a_limit_below_the_reserve_is_an_error_that_says_what_to_raise() {
        let e = budget(200, 150, 48).unwrap_err().to_string();
        assert!(e.contains("open-file limit (200)"), "{e}");
        assert!(e.contains("LimitNOFILE"), "{e}");
    }
}
