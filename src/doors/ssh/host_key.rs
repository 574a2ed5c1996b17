//! The gateway's ed25519 SSH host key: generated at first start from the
//! system random source, kept in OpenSSH format, readable only by the daemon.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use russh::keys::PrivateKey;
use russh::keys::ssh_key::LineEnding;
use russh::keys::ssh_key::private::Ed25519Keypair;

use super::SshError;

/// Loads the host key, creating it (0600) if it does not exist.
pub fn load_or_create(path: &Path) -> Result<PrivateKey, SshError> {
    let err = |e: String| SshError::HostKey {
        path: path.display().to_string(),
        error: e,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let key = PrivateKey::from_openssh(text.trim())
                .map_err(|e| err(format!("not an OpenSSH private key: {e}")))?;
            if key.algorithm() != russh::keys::Algorithm::Ed25519 {
                return Err(err("the host key must be ed25519".into()));
            }
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
                .map_err(|_| err("the system random source failed".into()))?;
            let key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
            let text = key
                .to_openssh(LineEnding::LF)
                .map_err(|e| err(e.to_string()))?;
            // 0600 from the first byte: whoever reads it can impersonate the gateway.
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| err(e.to_string()))?;
            f.write_all(text.as_bytes())
                .and_then(|_| f.sync_all())
                .map_err(|e| err(e.to_string()))?;
            tracing::info!(path = %path.display(), "generated the SSH host key");
            Ok(key)
        }
        Err(e) => Err(err(e.to_string())),
    }
}
