//! The dedicated ed25519 key that signs audit checkpoints, generated at first
//! start and kept next to the store, readable only by the daemon (0600).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};

use super::StoreError;

pub const SIGNING_KEY_FILE: &str = "audit-signing.key";

/// Loads the audit-signing key, creating it (0600) if it does not exist.
pub fn load_or_create(state_dir: &Path) -> Result<Ed25519KeyPair, StoreError> {
    let path = state_dir.join(SIGNING_KEY_FILE);
    let io = |e: std::io::Error| StoreError::Io {
        path: path.display().to_string(),
        error: e.to_string(),
    };
    let pkcs8 = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| {
                StoreError::Io {
                    path: path.display().to_string(),
                    error: "the system random source failed".into(),
                }
            })?;
            // 0600 from the first byte: the key signs what auditors trust.
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(io)?;
            f.write_all(doc.as_ref())
                .and_then(|_| f.sync_all())
                .map_err(io)?;
            doc.as_ref().to_vec()
        }
        Err(e) => return Err(io(e)),
    };
    Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|_| StoreError::Io {
        path: path.display().to_string(),
        error: "not an ed25519 PKCS#8 key".into(),
    })
}

/// The public half, hex, for auditors who check checkpoints elsewhere.
pub fn public_hex(key: &Ed25519KeyPair) -> String {
    hex::encode(key.public_key().as_ref())
}

/// The public half of a stopped store's key (None when it has none).
pub fn public_hex_of(state_dir: &Path) -> Result<Option<String>, StoreError> {
    let path = state_dir.join(SIGNING_KEY_FILE);
    match std::fs::read(&path) {
        Ok(pkcs8) => Ed25519KeyPair::from_pkcs8(&pkcs8)
            .map(|k| Some(public_hex(&k)))
            .map_err(|_| StoreError::Io {
                path: path.display().to_string(),
                error: "not an ed25519 PKCS#8 key".into(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::Io {
            path: path.display().to_string(),
            error: e.to_string(),
        }),
    }
}
