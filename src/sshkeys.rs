//! SSH keys in the product's words, shared by the SSH door, the core and the
//! demo: the gateway's ed25519 host key (generated at first start, 0600) and
//! the credential id a public-key session runs on. russh stays behind this.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use russh::keys::PrivateKey;
use russh::keys::ssh_key::LineEnding;
use russh::keys::ssh_key::private::Ed25519Keypair;

pub use russh::keys::{PrivateKey as HostKey, PublicKey};

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("{path}: {error}")]
    HostKey { path: String, error: String },
}

/// The credential a public-key session runs on (`user remove-key` ends it).
pub fn key_credential(key: &PublicKey) -> String {
    format!("key:{}", key.fingerprint(russh::keys::HashAlg::Sha256))
}

/// The credential of an OpenSSH public key line, if the line is one.
pub fn line_credential(line: &str) -> Option<String> {
    PublicKey::from_openssh(line)
        .ok()
        .map(|k| key_credential(&k))
}

/// Whether an OpenSSH public key line holds `key`.
pub fn line_is(line: &str, key: &PublicKey) -> bool {
    PublicKey::from_openssh(line).is_ok_and(|k| k.key_data() == key.key_data())
}

/// Loads the host key, creating it (0600) if it does not exist.
pub fn host_key(path: &Path) -> Result<PrivateKey, SshError> {
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
