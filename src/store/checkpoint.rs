//! Signed checkpoints of the security log: (seq, hash, time) signed with the
//! audit-signing key. Kept off the machine, a checkpoint exposes what the
//! chain alone cannot: a chain rewritten from some record on (every later
//! hash recomputed) and a log cut short.

use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

use super::log::{SecurityEvent, VerifyReport, verify_chain};

/// A checkpoint as `audit checkpoint` prints it (one JSON object).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Encoding version of the signed message.
    pub v: u32,
    pub seq: u64,
    /// The hash of event `seq` (the chain's head when taken).
    pub hash: String,
    /// UTC µs of event `seq`.
    pub time: i64,
    /// The audit-signing key's public half, hex.
    pub public_key: String,
    /// ed25519 over [`message`], hex.
    pub signature: String,
}

/// What is signed: a fixed prefix and the three values, one per line.
fn message(seq: u64, hash: &str, time: i64) -> Vec<u8> {
    format!("metergate-checkpoint-v1\n{seq}\n{hash}\n{time}\n").into_bytes()
}

/// Signs the given head of the log.
pub fn sign(key: &Ed25519KeyPair, head: &SecurityEvent) -> Checkpoint {
    let sig = key.sign(&message(head.seq, &head.hash, head.time));
    Checkpoint {
        v: 1,
        seq: head.seq,
        hash: head.hash.clone(),
        time: head.time,
        public_key: hex::encode(key.public_key().as_ref()),
        signature: hex::encode(sig.as_ref()),
    }
}

/// The result of checking a log against a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    /// The checkpoint's event is there with its hash, and the chain verifies.
    Consistent,
    /// The checkpoint itself is not valid (or not signed by the key given).
    BadCheckpoint(String),
    /// The log ends before the checkpoint's seq.
    Truncated { last_seq: u64 },
    /// The event at the checkpoint's seq is not the one that was signed.
    Rewritten { seq: u64 },
    /// The chain itself is broken (first bad seq).
    ChainBroken { seq: u64, why: String },
    /// The checkpoint's event was removed by drop-oldest; the log from the
    /// signed cut marker on verifies.
    BeforeCut { first_kept_seq: u64 },
}

impl Finding {
    /// Whether the log passes the check.
    pub fn passes(&self) -> bool {
        matches!(self, Finding::Consistent | Finding::BeforeCut { .. })
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finding::Consistent => f.write_str("the log is consistent with the checkpoint"),
            Finding::BadCheckpoint(why) => write!(f, "the checkpoint is not valid: {why}"),
            Finding::Truncated { last_seq } => write!(
                f,
                "the log was cut short: it ends at seq {last_seq}, before the checkpoint's seq"
            ),
            Finding::Rewritten { seq } => write!(
                f,
                "event {seq} is not the one the checkpoint signed: the chain was rewritten at or before seq {seq}"
            ),
            Finding::ChainBroken { seq, why } => write!(f, "first bad seq {seq}: {why}"),
            Finding::BeforeCut { first_kept_seq } => write!(
                f,
                "the checkpoint's event was dropped when the full log was cut (drop-oldest); the log verifies from the signed cut marker at seq {first_kept_seq}"
            ),
        }
    }
}

/// Checks a checkpoint's signature (and that it is `trusted_key`'s, when
/// given), then the log against it.
pub fn check(
    cp: &Checkpoint,
    trusted_key: Option<&str>,
    tree: &sled::Tree,
    cuts: Option<&sled::Tree>,
) -> Finding {
    if cp.v != 1 {
        return Finding::BadCheckpoint(format!("unknown version {}", cp.v));
    }
    if let Some(k) = trusted_key
        && !k.eq_ignore_ascii_case(&cp.public_key)
    {
        return Finding::BadCheckpoint("it was signed by another key than the one given".into());
    }
    let (Ok(public), Ok(signature)) = (hex::decode(&cp.public_key), hex::decode(&cp.signature))
    else {
        return Finding::BadCheckpoint("public_key and signature must be hex".into());
    };
    if UnparsedPublicKey::new(&ED25519, public)
        .verify(&message(cp.seq, &cp.hash, cp.time), &signature)
        .is_err()
    {
        return Finding::BadCheckpoint("the signature does not match (edited checkpoint?)".into());
    }
    // Cut markers are signed with the checkpoint's key.
    let report: VerifyReport = verify_chain(tree, cuts, Some(&cp.public_key), None);
    let last_seq = report.last_seq.unwrap_or(0);
    if last_seq < cp.seq {
        return Finding::Truncated { last_seq };
    }
    if let Some(c) = &report.cut
        && cp.seq < c.first_kept_seq
        && report.problem.is_none()
    {
        return Finding::BeforeCut {
            first_kept_seq: c.first_kept_seq,
        };
    }
    let at = tree
        .get(cp.seq.to_be_bytes())
        .ok()
        .flatten()
        .and_then(|v| serde_json::from_slice::<SecurityEvent>(&v).ok());
    match at {
        Some(e) if e.hash == cp.hash && e.time == cp.time => {}
        _ => return Finding::Rewritten { seq: cp.seq },
    }
    match report.problem {
        Some((seq, why)) => Finding::ChainBroken { seq, why },
        None => Finding::Consistent,
    }
}
