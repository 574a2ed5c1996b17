//! Live sessions across doors (SSH, SFTP, Modbus connections): who, from
//! where, since when, and a way to end them — `session kill`, deactivation,
//! revocation (IEC 62443 CR 2.6 remote session termination).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use tokio::sync::watch;

use crate::model::{Permission, PrincipalId};

/// What a live session relies on besides its principal being let in: a
/// permission on a meter (Terminal Access for a console, a file permission
/// for an open SFTP handle) or everywhere (Security Logs Access for a
/// followed log). When a change withdraws it, the session ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reliance {
    pub permission: Permission,
    pub meter: Option<String>,
}

/// Whether a session proved a second factor, at login or by stepping up
/// with `mfa`; shared by every channel of one SSH connection, so a step-up
/// in the shell holds for the session's other channels too.
#[derive(Clone, Debug, Default)]
pub struct SessionFactor(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl SessionFactor {
    pub fn new(proven: bool) -> SessionFactor {
        SessionFactor(std::sync::Arc::new(std::sync::atomic::AtomicBool::new(
            proven,
        )))
    }
    pub fn proven(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }
    /// A right code was given in this session.
    pub fn raise(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Release)
    }
}

/// A live session as the access watcher sees it.
#[derive(Clone, Debug)]
pub struct LiveSession {
    pub id: u64,
    pub principal: PrincipalId,
    pub door: String,
    pub relies_on: Vec<Reliance>,
    /// When the credential stops being valid (a certificate's end; UTC µs).
    pub expires: Option<i64>,
    /// The session proved a second factor (what needs one stays allowed).
    pub second_factor: bool,
}

/// One live session as listed.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SessionInfo {
    pub id: u64,
    pub principal: String,
    pub source: String,
    pub door: String,
    /// UTC µs.
    pub started: i64,
}

struct Entry {
    info: SessionInfo,
    principal: PrincipalId,
    /// What credential the session used (an access key id), so deleting
    /// that key ends it.
    credential: Option<String>,
    relies_on: Vec<Reliance>,
    expires: Option<i64>,
    factor: SessionFactor,
    end: watch::Sender<Option<String>>,
}

/// The registry; doors register a session and watch for its end.
#[derive(Default)]
pub struct Sessions {
    next: AtomicU64,
    live: Mutex<BTreeMap<u64, Entry>>,
    /// Woken when a session starts or learns when it expires, so the
    /// access watcher schedules its end.
    arrived: tokio::sync::Notify,
    /// Sessions that came to rely on a permission, for the watcher to look
    /// at again, and its wake-up.
    relied: Mutex<Vec<u64>>,
    relying: tokio::sync::Notify,
}

/// Held by a door for as long as its session lives; dropping it removes the
/// session from the registry.
pub struct SessionGuard<'a> {
    registry: &'a Sessions,
    pub id: u64,
    /// Resolves with the reason when the session must end.
    pub ended: watch::Receiver<Option<String>>,
}

impl Entry {
    /// A new entry with the registry's next id, and the receiver its
    /// session watches for its end.
    fn new(
        principal: &PrincipalId,
        source: &str,
        door: &str,
        credential: Option<String>,
        started: i64,
        registry: &Sessions,
    ) -> (Entry, watch::Receiver<Option<String>>) {
        let id = registry.next.fetch_add(1, Ordering::Relaxed) + 1;
        let (end, ended) = watch::channel(None);
        let entry = Entry {
            info: SessionInfo {
                id,
                principal: principal.to_string(),
                source: source.into(),
                door: door.into(),
                started,
            },
            principal: principal.clone(),
            credential,
            relies_on: Vec::new(),
            expires: None,
            factor: SessionFactor::default(),
            end,
        };
        (entry, ended)
    }
}

impl Drop for SessionGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut live) = self.registry.live.lock() {
            live.remove(&self.id);
        }
    }
}

impl Sessions {
    /// Numbers new sessions above `id`: ids stay unique across restarts
    /// where something kept outlives the process (recordings are named by
    /// session).
    pub fn number_after(&self, id: u64) {
        self.next.fetch_max(id, Ordering::Relaxed);
    }

    pub fn register(
        &self,
        principal: &PrincipalId,
        source: &str,
        door: &str,
        credential: Option<String>,
        started: i64,
    ) -> SessionGuard<'_> {
        let (entry, ended) = Entry::new(principal, source, door, credential, started, self);
        let id = entry.info.id;
        if let Ok(mut live) = self.live.lock() {
            live.insert(id, entry);
        }
        self.admitted(id, ended)
    }

    /// The guard a door holds for a session just inserted; the access
    /// watcher is told, so it schedules the session's end.
    fn admitted(&self, id: u64, ended: watch::Receiver<Option<String>>) -> SessionGuard<'_> {
        self.arrived.notify_one();
        SessionGuard {
            registry: self,
            id,
            ended,
        }
    }

    /// Registers a session unless `principal` already holds `max` live ones
    /// on `door` (then `Err` with how many): counted and registered under
    /// one lock, so parallel logins cannot pass the cap together.
    pub fn register_within(
        &self,
        principal: &PrincipalId,
        source: &str,
        door: &str,
        credential: Option<String>,
        started: i64,
        max: usize,
    ) -> Result<SessionGuard<'_>, usize> {
        let (entry, ended) = Entry::new(principal, source, door, credential, started, self);
        let id = entry.info.id;
        if let Ok(mut live) = self.live.lock() {
            let held = live
                .values()
                .filter(|e| e.principal == *principal && e.info.door == door)
                .count();
            if held >= max {
                return Err(held);
            }
            live.insert(id, entry);
        }
        Ok(self.admitted(id, ended))
    }

    pub fn list(&self) -> Vec<SessionInfo> {
        self.live
            .lock()
            .map(|l| l.values().map(|e| e.info.clone()).collect())
            .unwrap_or_default()
    }

    fn with(&self, id: u64, f: impl FnOnce(&mut Entry)) {
        if let Ok(mut live) = self.live.lock()
            && let Some(e) = live.get_mut(&id)
        {
            f(e);
        }
    }

    /// Session `id` relies on `permission` on `meter` from now on.
    pub fn rely_on(&self, id: u64, permission: Permission, meter: Option<&str>) {
        self.with(id, |e| {
            e.relies_on.push(Reliance {
                permission,
                meter: meter.map(str::to_string),
            })
        });
        // The access watcher looks at this session again: a change that
        // came between the guard's allow and this registration is not
        // missed.
        if let Ok(mut r) = self.relied.lock() {
            r.push(id);
        }
        self.relying.notify_one();
    }

    /// Resolves when a session came to rely on a permission.
    pub async fn relying(&self) {
        self.relying.notified().await
    }

    /// The sessions that came to rely on a permission since the last call.
    pub fn take_relied(&self) -> Vec<u64> {
        self.relied
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default()
    }

    /// Session `id` no longer relies on one use of `permission` on `meter`.
    pub fn release(&self, id: u64, permission: Permission, meter: Option<&str>) {
        self.with(id, |e| {
            if let Some(i) = e
                .relies_on
                .iter()
                .position(|r| r.permission == permission && r.meter.as_deref() == meter)
            {
                e.relies_on.remove(i);
            }
        });
    }

    /// Session `id`'s credential stops being valid at `at` (UTC µs).
    pub fn expires_at(&self, id: u64, at: i64) {
        self.with(id, |e| e.expires = Some(at));
        self.arrived.notify_one();
    }

    /// Resolves after a session starts or learns its expiry.
    pub async fn arrived(&self) {
        self.arrived.notified().await
    }

    /// Every live session with what it relies on (the access watcher).
    pub fn live(&self) -> Vec<LiveSession> {
        self.live
            .lock()
            .map(|l| {
                l.values()
                    .map(|e| LiveSession {
                        id: e.info.id,
                        principal: e.principal.clone(),
                        door: e.info.door.clone(),
                        relies_on: e.relies_on.clone(),
                        expires: e.expires,
                        second_factor: e.factor.proven(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The session's second-factor state, shared with its door (a step-up
    /// raises both).
    pub fn set_factor(&self, id: u64, factor: SessionFactor) {
        if let Ok(mut live) = self.live.lock()
            && let Some(e) = live.get_mut(&id)
        {
            e.factor = factor;
        }
    }

    /// Ends one session; false if there is no such session.
    pub fn kill(&self, id: u64, reason: &str) -> bool {
        self.live
            .lock()
            .ok()
            .and_then(|l| l.get(&id).map(|e| end(e, reason)))
            .is_some()
    }

    /// Ends session `id` unless it is already ending; true if this call
    /// ended it (so its cause is the one the session reports).
    pub fn end_if_live(&self, id: u64, reason: &str) -> bool {
        self.live
            .lock()
            .ok()
            .and_then(|l| l.get(&id).map(|e| end(e, reason)))
            .unwrap_or(false)
    }

    /// Ends every session of a principal (deactivation, deletion, revoke);
    /// returns how many.
    pub fn kill_principal(&self, who: &PrincipalId, reason: &str) -> usize {
        self.kill_where(|e| e.principal == *who, reason)
    }

    /// Ends every session that logged in with this credential (a key id).
    pub fn kill_credential(&self, credential: &str, reason: &str) -> usize {
        self.kill_where(|e| e.credential.as_deref() == Some(credential), reason)
    }

    /// Ends every session (a graceful stop past its drain deadline).
    pub fn end_all(&self, reason: &str) -> usize {
        self.kill_where(|_| true, reason)
    }

    fn kill_where(&self, pred: impl Fn(&Entry) -> bool, reason: &str) -> usize {
        let Ok(live) = self.live.lock() else { return 0 };
        let mut ended = 0;
        for e in live.values().filter(|e| pred(e)) {
            end(e, reason);
            ended += 1;
        }
        ended
    }
}

/// Sets the session's end reason; the first reason given is the one it
/// keeps (an explicit kill and the access watcher may race). True if this
/// call set it.
fn end(e: &Entry, reason: &str) -> bool {
    e.end.send_if_modified(|r| {
        if r.is_none() {
            *r = Some(reason.to_string());
            true
        } else {
            false
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_listed_ended_and_removed() {
        let s = Sessions::default();
        let alice = PrincipalId::User("alice".into());
        let a = s.register(&alice, "10.0.0.1", "ssh", None, 1);
        let b = s.register(
            &PrincipalId::Service("scada".into()),
            "10.0.0.2",
            "modbus",
            Some("MGK1".into()),
            2,
        );
        assert_eq!(s.list().len(), 2);
        assert!(s.kill(a.id, "killed by local:root"));
        assert_eq!(a.ended.borrow().as_deref(), Some("killed by local:root"));
        assert!(b.ended.borrow().is_none());
        assert_eq!(s.kill_credential("MGK1", "key deleted"), 1);
        assert_eq!(s.kill_principal(&alice, "deactivated"), 1);
        drop(a);
        assert_eq!(s.list().len(), 1);
        assert!(!s.kill(999, "x"));
    }
}
