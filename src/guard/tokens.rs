//! Bearer tokens of the HTTPS API (OAuth 2.0 client credentials): issued
//! to a service user that proved one of its access keys. A token is an
//! opaque 256-bit random value; only its SHA-256 is kept, in memory, so a
//! restart ends every token (clients ask again) and a token from another
//! gateway is unknown here.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::model::PrincipalId;

/// Live tokens one access key may hold: asking again drops its oldest, so
/// a client that never caches cannot fill memory.
pub const PER_KEY: usize = 16;

/// What a token stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub principal: PrincipalId,
    /// The access key it was issued on: deleting or deactivating the key
    /// ends the token.
    pub key_id: String,
    /// When it was issued and when it ends (µs since the epoch).
    pub issued: i64,
    pub expires: i64,
}

type Digest = [u8; 32];

fn digest(token: &str) -> Digest {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

#[derive(Debug, thiserror::Error)]
#[error("no randomness for a token")]
pub struct NoRandomness;

/// The live tokens, by their digest.
#[derive(Default)]
pub struct Tokens {
    live: Mutex<HashMap<Digest, Token>>,
}

impl Tokens {
    /// A new token for `principal` on `key_id`, valid until `expires`; the
    /// value is returned once and never kept.
    pub fn issue(
        &self,
        principal: PrincipalId,
        key_id: &str,
        issued: i64,
        expires: i64,
    ) -> Result<String, NoRandomness> {
        let mut raw = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
            .map_err(|_| NoRandomness)?;
        let value = format!("mgt_{}", hex::encode(raw));
        let Ok(mut live) = self.live.lock() else {
            return Err(NoRandomness);
        };
        live.retain(|_, t| t.expires > issued);
        let mut mine: Vec<(Digest, i64)> = live
            .iter()
            .filter(|(_, t)| t.key_id == key_id)
            .map(|(d, t)| (*d, t.issued))
            .collect();
        if mine.len() >= PER_KEY {
            mine.sort_by_key(|(_, at)| *at);
            for (d, _) in mine.iter().take(mine.len() + 1 - PER_KEY) {
                live.remove(d);
            }
        }
        live.insert(
            digest(&value),
            Token {
                principal,
                key_id: key_id.to_string(),
                issued,
                expires,
            },
        );
        Ok(value)
    }

    /// What a presented token stands for, if it is live at `now`.
    pub fn check(&self, presented: &str, now: i64) -> Option<Token> {
        let d = digest(presented);
        let mut live = self.live.lock().ok()?;
        match live.get(&d) {
            Some(t) if t.expires > now => Some(t.clone()),
            Some(_) => {
                live.remove(&d);
                None
            }
            None => None,
        }
    }

    /// Ends a token (it stood for access that is gone).
    pub fn revoke(&self, presented: &str) {
        if let Ok(mut live) = self.live.lock() {
            live.remove(&digest(presented));
        }
    }

    /// Keeps the tokens `keep` says yes to (and only live ones); returns
    /// how many were ended.
    pub fn retain(&self, now: i64, mut keep: impl FnMut(&Token) -> bool) -> usize {
        let Ok(mut live) = self.live.lock() else {
            return 0;
        };
        let before = live.len();
        live.retain(|_, t| t.expires > now && keep(t));
        before - live.len()
    }

    /// Live tokens (for metrics and tests).
    pub fn len(&self) -> usize {
        self.live.lock().map(|l| l.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc() -> PrincipalId {
        PrincipalId::Service("provisioner".into())
    }

    #[test]
    fn a_token_is_known_by_its_value_until_it_expires_and_never_kept_in_clear() {
        let t = Tokens::default();
        let value = t.issue(svc(), "AK1", 100, 200).unwrap();
        assert!(value.starts_with("mgt_") && value.len() == 4 + 64);
        assert_eq!(t.check(&value, 150).unwrap().principal, svc());
        assert!(t.check("mgt_00", 150).is_none());
        assert!(t.check(&value, 200).is_none());
        // The store holds digests, never the value.
        let live = t.live.lock().unwrap();
        assert!(live.keys().all(|d| hex::encode(d) != value[4..]));
    }

    #[test]
    fn one_key_holds_at_most_its_share_and_the_oldest_goes_first() {
        let t = Tokens::default();
        let first = t.issue(svc(), "AK1", 1, 1_000).unwrap();
        for i in 0..PER_KEY as i64 {
            t.issue(svc(), "AK1", 2 + i, 1_000).unwrap();
        }
        let other = t.issue(svc(), "AK2", 50, 1_000).unwrap();
        assert!(t.check(&first, 60).is_none());
        assert!(t.check(&other, 60).is_some());
        assert_eq!(t.len(), PER_KEY + 1);
    }
}
