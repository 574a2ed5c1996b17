//! Signed cut markers: when the full log drops its oldest events, a marker
//! signed with the audit-signing key names the first kept seq and its
//! previous hash, so `audit verify` still passes and the cut shows.

use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

/// One cut, kept in the `audit_cuts` tree under its first kept seq.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CutMarker {
    pub v: u32,
    /// The oldest event still in the log after the cut.
    pub first_kept_seq: u64,
    /// `prev_hash` of that event: where the verified chain starts.
    pub prev_hash: String,
    /// The oldest event the cut removed.
    pub dropped_from: u64,
    /// UTC µs when the cut was made.
    pub time: i64,
    /// The audit-signing key's public half, hex.
    pub public_key: String,
    /// ed25519 over [`message`], hex.
    pub signature: String,
}

fn message(first_kept: u64, prev_hash: &str, dropped_from: u64, time: i64) -> Vec<u8> {
    format!("metergate-cut-v1\n{first_kept}\n{prev_hash}\n{dropped_from}\n{time}\n").into_bytes()
}

pub fn sign(
    key: &Ed25519KeyPair,
    first_kept_seq: u64,
    prev_hash: &str,
    dropped_from: u64,
    time: i64,
) -> CutMarker {
    let sig = key.sign(&message(first_kept_seq, prev_hash, dropped_from, time));
    CutMarker {
        v: 1,
        first_kept_seq,
        prev_hash: prev_hash.to_string(),
        dropped_from,
        time,
        public_key: hex::encode(key.public_key().as_ref()),
        signature: hex::encode(sig.as_ref()),
    }
}

impl CutMarker {
    /// Checks the signature, against `trusted_key` (hex) when given.
    pub fn check(&self, trusted_key: Option<&str>) -> Result<(), String> {
        if self.v != 1 {
            return Err(format!("unknown cut marker version {}", self.v));
        }
        if let Some(k) = trusted_key
            && !k.eq_ignore_ascii_case(&self.public_key)
        {
            return Err("the cut marker was signed by another key than the store's".into());
        }
        let (Ok(public), Ok(signature)) =
            (hex::decode(&self.public_key), hex::decode(&self.signature))
        else {
            return Err("the cut marker's key and signature must be hex".into());
        };
        UnparsedPublicKey::new(&ED25519, public)
            .verify(
                &message(
                    self.first_kept_seq,
                    &self.prev_hash,
                    self.dropped_from,
                    self.time,
                ),
                &signature,
            )
            .map_err(|_| "the cut marker's signature does not match (edited marker?)".into())
    }
}

/// The marker for a log whose oldest event is `first_kept_seq`.
pub fn at(cuts: &sled::Tree, first_kept_seq: u64) -> Option<CutMarker> {
    cuts.get(first_kept_seq.to_be_bytes())
        .ok()
        .flatten()
        .and_then(|v| serde_json::from_slice(&v).ok())
}

/// The newest marker.
pub fn latest(cuts: &sled::Tree) -> Option<CutMarker> {
    cuts.last()
        .ok()
        .flatten()
        .and_then(|(_, v)| serde_json::from_slice(&v).ok())
}
