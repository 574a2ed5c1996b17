//! Secrets: a wrapper whose Debug prints nothing, generation of temporary
//! passwords and access keys, private password files, and the small bounded pool that runs argon2 so
//! a password flood cannot starve the rest of the daemon of CPU.

use std::sync::mpsc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use ring::rand::{SecureRandom, SystemRandom};

/// A secret in clear (a password, an access-key secret). Never logged:
/// `Debug` and `Display` print a placeholder.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// The clear text, for the one place that must show or hash it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("too many password checks are waiting; try again shortly")]
    Busy,
    #[error("the password hashing pool has stopped")]
    Stopped,
    #[error("the system random source failed")]
    Random,
    #[error("hashing failed: {0}")]
    Hash(String),
}

/// Letters and digits without look-alikes (0/O, 1/l/I): 32 symbols, so a
/// random byte masked to 5 bits picks one without bias.
const ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";

fn random_text(len: usize) -> Result<String, SecretError> {
    let mut bytes = vec![0u8; len];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| SecretError::Random)?;
    Ok(bytes
        .iter()
        .map(|b| ALPHABET[(b & 31) as usize] as char)
        .collect())
}

/// A temporary password: 20 symbols, 100 bits.
pub fn generate_password() -> Result<Secret, SecretError> {
    random_text(20).map(Secret)
}

/// A recovery code for a second factor: 16 symbols (80 bits) in groups of
/// four, kept like an access-key secret (keyed hash).
pub fn generate_recovery_code() -> Result<Secret, SecretError> {
    let t = random_text(16)?;
    Ok(Secret(format!(
        "{}-{}-{}-{}",
        &t[0..4],
        &t[4..8],
        &t[8..12],
        &t[12..16]
    )))
}

/// Random bytes (a TOTP secret).
pub fn random_bytes<const N: usize>() -> Result<[u8; N], SecretError> {
    let mut bytes = [0u8; N];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| SecretError::Random)?;
    Ok(bytes)
}

/// An access key id (not secret; it names the key in events).
/// Every access key id starts so (the SSH door tells them from user names).
pub const KEY_ID_PREFIX: &str = "MGK";

pub fn generate_key_id() -> Result<String, SecretError> {
    Ok(format!(
        "{KEY_ID_PREFIX}{}",
        random_text(16)?.to_uppercase()
    ))
}

/// An access-key secret: 40 symbols, 200 bits.
pub fn generate_key_secret() -> Result<Secret, SecretError> {
    random_text(40).map(Secret)
}

/// A unique id for an entity (hex of 16 random bytes).
pub fn generate_id() -> Result<String, SecretError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| SecretError::Random)?;
    Ok(hex::encode(bytes))
}

/// How an access-key secret is kept: HMAC-SHA-256 keyed by a random salt of
/// its own. Key secrets are 200 random bits made here, never chosen by a
/// person, so nothing can be guessed faster for want of a slow hash; and a
/// check costs microseconds on the calling task, so a flood of wrong
/// secrets never waits in (or fills) the argon2 pool ahead of a right one.
const KEYED: &str = "hmac-sha256$";

/// A new access-key secret's stored form (`hmac-sha256$SALT$TAG`, hex).
pub fn hash_key_secret(secret: &Secret) -> Result<String, SecretError> {
    let mut salt = [0u8; 32];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| SecretError::Random)?;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &salt);
    let tag = ring::hmac::sign(&key, secret.expose().as_bytes());
    Ok(format!(
        "{KEYED}{}${}",
        hex::encode(salt),
        hex::encode(tag.as_ref())
    ))
}

/// Checks an access-key secret kept by [`hash_key_secret`], in constant
/// time; `None` when `stored` is of another kind (an argon2 hash of a key
/// made before, checked in the pool).
pub fn verify_key_secret(secret: &Secret, stored: &str) -> Option<bool> {
    let rest = stored.strip_prefix(KEYED)?;
    let (salt, tag) = rest.split_once('$')?;
    let (Ok(salt), Ok(tag)) = (hex::decode(salt), hex::decode(tag)) else {
        return Some(false);
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &salt);
    Some(ring::hmac::verify(&key, secret.expose().as_bytes(), &tag).is_ok())
}

/// argon2id with OWASP's minimum (19 MiB, 2 passes, 1 lane).
fn hasher() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a secret into a PHC string (salt and parameters included).
pub fn hash_now(secret: &Secret) -> Result<String, SecretError> {
    let mut salt = [0u8; 16];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| SecretError::Random)?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| SecretError::Hash(e.to_string()))?;
    hasher()
        .hash_password(secret.expose().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| SecretError::Hash(e.to_string()))
}

/// Checks a secret against a PHC string; a malformed hash never matches.
pub fn verify_now(secret: &Secret, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => hasher()
            .verify_password(secret.expose().as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

enum Job {
    Hash(
        Secret,
        tokio::sync::oneshot::Sender<Result<String, SecretError>>,
    ),
    Verify(Secret, String, tokio::sync::oneshot::Sender<bool>),
}

/// A fixed number of threads with a bounded queue: when the queue is full
/// new work is refused (Busy) instead of piling up.
pub struct HashPool {
    tx: mpsc::SyncSender<Job>,
}

impl HashPool {
    pub fn new(threads: usize, queue: usize) -> HashPool {
        let (tx, rx) = mpsc::sync_channel::<Job>(queue);
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("hash-{i}"))
                .spawn(move || {
                    loop {
                        let job = match rx.lock() {
                            Ok(guard) => guard.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(Job::Hash(s, ack)) => {
                                let _ = ack.send(hash_now(&s));
                            }
                            Ok(Job::Verify(s, phc, ack)) => {
                                let _ = ack.send(verify_now(&s, &phc));
                            }
                            Err(_) => return,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password hashing thread");
            }
        }
        HashPool { tx }
    }

    fn submit(&self, job: Job) -> Result<(), SecretError> {
        self.tx.try_send(job).map_err(|e| match e {
            mpsc::TrySendError::Full(_) => SecretError::Busy,
            mpsc::TrySendError::Disconnected(_) => SecretError::Stopped,
        })
    }

    pub async fn hash(&self, secret: Secret) -> Result<String, SecretError> {
        let (ack, rx) = tokio::sync::oneshot::channel();
        self.submit(Job::Hash(secret, ack))?;
        rx.await.map_err(|_| SecretError::Stopped)?
    }

    pub async fn verify(&self, secret: Secret, phc: String) -> Result<bool, SecretError> {
        let (ack, rx) = tokio::sync::oneshot::channel();
        self.submit(Job::Verify(secret, phc, ack))?;
        rx.await.map_err(|_| SecretError::Stopped)
    }
}

/// A password kept in a file (a relay's, the directory server's): its first
/// line. The file must be private (it opens something as the gateway);
/// the error says what is wrong, never what the file holds.
pub fn read_password_file(path: &std::path::Path) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err("is readable by group or others: chmod 600 it".into());
    }
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let line = text.lines().next().unwrap_or("").to_string();
    if line.is_empty() {
        return Err("is empty".into());
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keyed_secret_verifies_only_itself_and_an_argon2_hash_is_not_keyed() {
        let right = Secret::new("rightrightrightrightrightrightrightright");
        let stored = hash_key_secret(&right).unwrap();
        assert!(stored.starts_with("hmac-sha256$"));
        assert!(!stored.contains(right.expose()));
        assert_eq!(verify_key_secret(&right, &stored), Some(true));
        assert_eq!(
            verify_key_secret(&Secret::new("wrong"), &stored),
            Some(false)
        );
        // Two keys with one secret are kept differently (their own salt).
        assert_ne!(hash_key_secret(&right).unwrap(), stored);
        assert_eq!(verify_key_secret(&right, "hmac-sha256$zz$zz"), Some(false));
        assert_eq!(verify_key_secret(&right, &hash_now(&right).unwrap()), None);
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2-hunter2");
        assert!(!format!("{s:?} {s}").contains("hunter2"));
    }

    #[test]
    fn generated_passwords_hash_and_verify() {
        let p = generate_password().unwrap();
        assert_eq!(p.expose().len(), 20);
        let h = hash_now(&p).unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(!h.contains(p.expose()));
        assert!(verify_now(&p, &h));
        assert!(!verify_now(&Secret::new("wrong"), &h));
        assert!(!verify_now(&p, "not a hash"));
    }

    #[tokio::test]
    async fn a_full_pool_refuses_instead_of_queueing() {
        let pool = HashPool::new(1, 1);
        let s = Secret::new("x".repeat(16));
        let jobs: Vec<_> = (0..8).map(|_| pool.hash(s.clone())).collect();
        let results = futures_join(jobs).await;
        assert!(results.iter().any(|r| r.is_ok()));
        assert!(results.contains(&Err(SecretError::Busy)));
    }

    async fn futures_join<F: std::future::Future>(fs: Vec<F>) -> Vec<F::Output> {
        let mut out = Vec::new();
        let pinned: Vec<_> = fs.into_iter().map(Box::pin).collect();
        // Submit all first (each future submits on first poll), then await.
        let mut started = Vec::new();
        for mut f in pinned {
            let waker = std::task::Waker::noop();
            let mut cx = std::task::Context::from_waker(waker);
            match f.as_mut().poll(&mut cx) {
                std::task::Poll::Ready(v) => out.push(v),
                std::task::Poll::Pending => started.push(f),
            }
        }
        for f in started {
            out.push(f.await);
        }
        out
    }
}
