//! The little state decisions need, kept in the store so it survives
//! restarts: Peak Demand Reset slots per meter and password-failure counters
//! per principal; plus the per-address throttle and the failures of names
//! that are nobody, which are kept in memory only. With a shared directory
//! the slots, the failure runs and the TOTP steps are shared by every
//! gateway (PostgreSQL), the failure runs falling back to local counting
//! while it cannot be reached and reconciled when it can.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::PrincipalId;
use crate::store::StoreError;
use crate::store::postgres::Postgres;

/// Persistent guard state over one sled tree.
pub(crate) struct GuardState {
    tree: sled::Tree,
    /// The shared directory, whose guard state every gateway shares.
    shared: Option<Arc<Postgres>>,
    sources: Mutex<HashMap<IpAddr, SourceFailures>>,
    /// Failure runs of names that are nobody. They lock like a real
    /// principal's (the lockout tells an attacker nothing about which
    /// names exist) but live in memory only, the least recently used
    /// forgotten first: invented names cost no disk and bounded memory.
    nobody: Mutex<lru::LruCache<String, LoginFailures>>,
}

/// Invented names whose failures are remembered at once.
const NOBODY_REMEMBERED: usize = 10_000;

#[derive(Default, Serialize, Deserialize)]
struct LoginFailures {
    /// Times (µs) of consecutive failures still inside the window.
    failures: Vec<i64>,
    locked_until: Option<i64>,
}

#[derive(Clone, Default)]
struct SourceFailures {
    count: u32,
    last: i64,
    /// Each principal's share of `count` (its id; "" for attempts that
    /// named nobody): a principal's own success takes back only its share.
    by: HashMap<String, u32>,
}

/// What to do with a password attempt from an address that keeps failing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceGate {
    Open,
    /// Answer only after this delay.
    Delay(Duration),
    /// Refuse password and keyboard-interactive attempts outright.
    Refuse,
}

/// Failures from one address before its attempts are delayed; after
/// [`SOURCE_REFUSE_AFTER`] they are refused. Public-key logins are never
/// throttled, so an attacker guessing passwords cannot lock out a crew.
const SOURCE_DELAY_AFTER: u32 = 3;
const SOURCE_REFUSE_AFTER: u32 = 20;

impl GuardState {
    #[cfg(test)]
    pub fn new(tree: sled::Tree) -> GuardState {
        GuardState::build(tree, None)
    }

    pub fn with_shared(tree: sled::Tree, shared: Option<Arc<Postgres>>) -> GuardState {
        let state = GuardState::build(tree, shared);
        state.share_local_slots();
        state
    }

    fn build(tree: sled::Tree, shared: Option<Arc<Postgres>>) -> GuardState {
        GuardState {
            tree,
            shared,
            sources: Mutex::new(HashMap::new()),
            nobody: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(NOBODY_REMEMBERED)
                    .unwrap_or(std::num::NonZeroUsize::MIN),
            )),
        }
    }

    /// Reserves the meter's peak-demand-reset slot at `now` unless the last
    /// reset is younger than `interval`: compare-and-swap, so two doors
    /// racing get one success. Returns the time the next reset is allowed
    /// when refused.
    pub fn reserve_peak_reset(
        &self,
        meter: &str,
        now: i64,
        interval: Duration,
    ) -> Result<Result<(), i64>, StoreError> {
        let key = format!("pdr/{meter}");
        let span = interval.as_micros() as i64;
        let reserve = move |current: Option<&[u8]>, now: i64| match current.and_then(decode_i64) {
            Some(last) if now < last.saturating_add(span) => {
                (current.map(<[u8]>::to_vec), Err(last.saturating_add(span)))
            }
            _ => (Some(now.to_be_bytes().to_vec()), Ok(())),
        };
        // Shared: reserved in one transaction for every gateway, in the
        // server's clock, or refused by the caller when it cannot be (never
        // counted twice).
        if let Some(pg) = &self.shared {
            return pg.state_update_timed(&key, reserve);
        }
        loop {
            let current = self.tree.get(&key)?;
            let (new, answer) = reserve(current.as_deref(), now);
            if answer.is_err() {
                return Ok(answer);
            }
            match self.tree.compare_and_swap(&key, current, new)? {
                Ok(()) => return Ok(answer),
                Err(_) => continue,
            }
        }
    }

    /// Peak Demand slots kept here before the directory was shared (or
    /// while it was away) join the shared ones, the later reset winning, so
    /// moving a gateway to PostgreSQL gives no meter an early reset. A slot
    /// that cannot be shared yet stays here until the next start.
    fn share_local_slots(&self) {
        let Some(pg) = &self.shared else { return };
        for item in self.tree.scan_prefix("pdr/") {
            let Ok((key, value)) = item else { continue };
            let Some(local) = decode_i64(&value) else {
                continue;
            };
            let name = String::from_utf8_lossy(&key).into_owned();
            let join = move |current: Option<&[u8]>| {
                let at = current.and_then(decode_i64).map_or(local, |c| c.max(local));
                (Some(at.to_be_bytes().to_vec()), ())
            };
            match pg.state_update(&name, join) {
                Ok(()) => {
                    let _ = self.tree.remove(&key);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "peak demand slots not shared yet");
                    return;
                }
            }
        }
    }

    /// A master reset clears peaks too, so it (re)starts the interval.
    pub fn restart_peak_interval(&self, meter: &str, now: i64) -> Result<(), StoreError> {
        let key = format!("pdr/{meter}");
        // Never back in time; shared, in the server's clock.
        let restart = move |current: Option<&[u8]>, now: i64| {
            let at = current
                .and_then(decode_i64)
                .map_or(now, |last| last.max(now));
            (Some(at.to_be_bytes().to_vec()), ())
        };
        if let Some(pg) = &self.shared {
            return pg.state_update_timed(&key, restart);
        }
        self.tree.update_and_fetch(key, |old| restart(old, now).0)?;
        Ok(())
    }

    fn login_key(who: &PrincipalId) -> String {
        format!("login/{who}")
    }

    fn read_login(&self, who: &PrincipalId) -> Result<LoginFailures, StoreError> {
        self.read_failures(&Self::login_key(who))
    }

    /// A failure run: the local one (counted while the shared directory
    /// could not be reached) and the shared one, the later lock winning.
    fn read_failures(&self, key: &str) -> Result<LoginFailures, StoreError> {
        let mut st: LoginFailures = self
            .tree
            .get(key)?
            .and_then(|v| serde_json::from_slice(&v).ok())
            .unwrap_or_default();
        if let Some(pg) = &self.shared {
            // A lock read from the shared run is kept here too, so a server
            // that answers slowly or not at all never opens it early.
            let seen = format!("{SHARED_LOCK}{key}");
            match pg.state_get(key) {
                Ok(v) => {
                    let shared: LoginFailures = v
                        .and_then(|v| serde_json::from_slice(&v).ok())
                        .unwrap_or_default();
                    match shared.locked_until {
                        Some(u) => self.tree.insert(&seen, &u.to_be_bytes()).map(|_| ())?,
                        None => self.tree.remove(&seen).map(|_| ())?,
                    }
                    st.failures.extend(shared.failures);
                    st.locked_until = st.locked_until.max(shared.locked_until);
                }
                Err(_) => {
                    let kept = self.tree.get(&seen)?.as_deref().and_then(decode_i64);
                    st.locked_until = st.locked_until.max(kept);
                }
            }
        }
        Ok(st)
    }

    /// Until when password login is locked for `who`, if it is.
    /// `known`: whether `who` is a principal; a name that is nobody is
    /// looked up in memory, so a lock set on an invented name never
    /// outlives the name becoming a user's.
    pub fn locked_until(
        &self,
        who: &PrincipalId,
        now: i64,
        known: bool,
    ) -> Result<Option<i64>, StoreError> {
        if known {
            return Ok(self.read_login(who)?.locked_until.filter(|u| *u > now));
        }
        Ok(self.nobody.lock().ok().and_then(|mut n| {
            n.get(&Self::login_key(who))
                .and_then(|f| f.locked_until)
                .filter(|u| *u > now)
        }))
    }

    /// Counts a password failure of a name that is nobody, in memory.
    pub fn nobody_failed(
        &self,
        who: &PrincipalId,
        now: i64,
        limit: u32,
        window: Duration,
        duration: Duration,
    ) -> Option<i64> {
        let mut nobody = self.nobody.lock().ok()?;
        let st = nobody.get_or_insert_mut(Self::login_key(who), LoginFailures::default);
        count_failure(st, now, limit, window, duration)
    }

    /// Names that are nobody with a failure run remembered.
    #[cfg(test)]
    pub fn nobody_remembered(&self) -> usize {
        self.nobody.lock().map(|n| n.len()).unwrap_or(0)
    }

    /// Counts a password failure; locks when `limit` failures fall inside
    /// `window`. Returns the lock's end if this failure set it.
    pub fn password_failed(
        &self,
        who: &PrincipalId,
        now: i64,
        limit: u32,
        window: Duration,
        duration: Duration,
    ) -> Result<Option<i64>, StoreError> {
        self.failed(&Self::login_key(who), now, limit, window, duration)
    }

    /// Counts a failure under `key`; the lock's end if this one set it.
    /// Shared: counted for every gateway in one transaction; while the
    /// shared directory cannot be reached, counted here and marked for
    /// [`GuardState::reconcile`].
    fn failed(
        &self,
        key: &str,
        now: i64,
        limit: u32,
        window: Duration,
        duration: Duration,
    ) -> Result<Option<i64>, StoreError> {
        if let Some(pg) = &self.shared {
            let count = move |old: Option<&[u8]>| {
                let mut st: LoginFailures = old
                    .and_then(|v| serde_json::from_slice(v).ok())
                    .unwrap_or_default();
                let locked = count_failure(&mut st, now, limit, window, duration);
                (serde_json::to_vec(&st).ok(), locked)
            };
            match pg.state_update(key, count) {
                Ok(locked) => {
                    if let Some(u) = locked {
                        self.tree
                            .insert(format!("{SHARED_LOCK}{key}"), &u.to_be_bytes())?;
                    }
                    return Ok(locked);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "failure counted on this gateway only until the directory is back");
                    self.tree.insert(format!("{PENDING}{key}"), &[])?;
                }
            }
        }
        let mut locked = None;
        self.tree.update_and_fetch(key, |old| {
            let mut st: LoginFailures = old
                .and_then(|v| serde_json::from_slice(v).ok())
                .unwrap_or_default();
            locked = count_failure(&mut st, now, limit, window, duration);
            serde_json::to_vec(&st).ok()
        })?;
        Ok(locked)
    }

    /// Forgets a failure run here and, when shared, for every gateway.
    /// `strict`: an error if the shared run could not be forgotten.
    /// `user unlock`: forgets a failure run and its lock, here and for
    /// every gateway.
    fn forget(&self, key: &str) -> Result<bool, StoreError> {
        let _ = self.tree.remove(format!("{PENDING}{key}"))?;
        let _ = self.tree.remove(format!("{SHARED_LOCK}{key}"))?;
        let mut had = self.tree.remove(key)?.is_some();
        if let Some(pg) = &self.shared {
            had |= pg.state_remove(key)?;
        }
        Ok(had)
    }

    /// A success ends the run of consecutive failures, here and for every
    /// gateway, but never a lock: one set elsewhere after this login passed
    /// its check stands. While the directory is away the shared run stands
    /// too (stricter, never looser).
    fn succeeded(&self, key: &str) -> Result<(), StoreError> {
        let now = crate::model::micros(time::OffsetDateTime::now_utc());
        let keep_lock = move |st: LoginFailures| {
            let locked_until = st.locked_until.filter(|u| *u > now);
            locked_until.and_then(|u| {
                serde_json::to_vec(&LoginFailures {
                    failures: Vec::new(),
                    locked_until: Some(u),
                })
                .ok()
            })
        };
        let local: LoginFailures = self
            .tree
            .get(key)?
            .and_then(|v| serde_json::from_slice(&v).ok())
            .unwrap_or_default();
        match keep_lock(local) {
            Some(v) => self.tree.insert(key, v).map(|_| ())?,
            None => self.tree.remove(key).map(|_| ())?,
        }
        if let Some(pg) = &self.shared {
            let _ = pg.state_update(key, move |old| {
                let st: LoginFailures = old
                    .and_then(|v| serde_json::from_slice(v).ok())
                    .unwrap_or_default();
                (keep_lock(st), ())
            });
        }
        Ok(())
    }

    /// A successful password login ends the run of consecutive failures.
    pub fn password_succeeded(&self, who: &PrincipalId) -> Result<(), StoreError> {
        self.succeeded(&Self::login_key(who))
    }

    /// Moves the failure runs counted here while the shared directory was
    /// away into the shared ones: the failures of both in one run, counted
    /// again against `limit` (a guesser who spread tries over gateways
    /// during an outage is locked once they meet), the later lock kept.
    /// How many runs were moved.
    pub fn reconcile(
        &self,
        now: i64,
        limit: u32,
        window: Duration,
        duration: Duration,
    ) -> Result<usize, StoreError> {
        let Some(pg) = &self.shared else {
            return Ok(0);
        };
        let mut moved = 0;
        for marker in self.tree.scan_prefix(PENDING.as_bytes()).keys() {
            let marker = marker?;
            let key = String::from_utf8_lossy(&marker[PENDING.len()..]).into_owned();
            // The marker goes first: a failure counted here meanwhile sets
            // it again, and is moved next time.
            self.tree.remove(&marker)?;
            let read = self.tree.get(&key)?;
            let local: LoginFailures = read
                .as_deref()
                .and_then(|v| serde_json::from_slice(v).ok())
                .unwrap_or_default();
            let kept_lock = local.locked_until;
            let merge = move |old: Option<&[u8]>| {
                let mut st: LoginFailures = old
                    .and_then(|v| serde_json::from_slice(v).ok())
                    .unwrap_or_default();
                let span = window.as_micros() as i64;
                st.failures.extend(local.failures);
                st.failures.retain(|t| now - *t < span);
                st.failures.sort_unstable();
                st.failures.dedup();
                st.locked_until = st.locked_until.max(local.locked_until);
                if st.failures.len() as u32 >= limit {
                    let until = now.saturating_add(duration.as_micros() as i64);
                    st.locked_until = st.locked_until.max(Some(until));
                    st.failures.clear();
                }
                (serde_json::to_vec(&st).ok(), ())
            };
            if let Err(e) = pg.state_update(&key, merge) {
                self.tree.insert(&marker, &[])?;
                return Err(e);
            }
            // The failures are shared now; a lock set here stays here too
            // until it ends. Unless a failure was counted meanwhile (then
            // it is moved next time, with these again: counted once, as
            // runs are merged by time).
            let rest = kept_lock.filter(|u| *u > now).and_then(|u| {
                serde_json::to_vec(&LoginFailures {
                    failures: Vec::new(),
                    locked_until: Some(u),
                })
                .ok()
            });
            let _ = self.tree.compare_and_swap(&key, read, rest)?;
            moved += 1;
        }
        Ok(moved)
    }

    /// `user unlock`: ends a lock and forgets the failures, of passwords
    /// and of second-factor codes.
    pub fn unlock(&self, who: &PrincipalId) -> Result<bool, StoreError> {
        let codes = self.forget(&Self::code_key(who))?;
        Ok(self.forget(&Self::login_key(who))? || codes)
    }

    fn code_key(who: &PrincipalId) -> String {
        format!("codefail/{who}")
    }

    /// A wrong second-factor code: its own run of failures, which only a
    /// holder of the person's first credential can add to (so no stranger
    /// can lock a key-and-code login).
    pub fn code_failed(
        &self,
        who: &PrincipalId,
        now: i64,
        limit: u32,
        window: Duration,
        duration: Duration,
    ) -> Result<Option<i64>, StoreError> {
        self.failed(&Self::code_key(who), now, limit, window, duration)
    }

    /// Until when codes of `who` are refused, if they are.
    pub fn code_locked_until(
        &self,
        who: &PrincipalId,
        now: i64,
    ) -> Result<Option<i64>, StoreError> {
        let st = self.read_failures(&Self::code_key(who))?;
        Ok(st.locked_until.filter(|u| *u > now))
    }

    /// A right code ends the run of wrong ones.
    pub fn code_succeeded(&self, who: &PrincipalId) -> Result<(), StoreError> {
        self.succeeded(&Self::code_key(who))
    }

    /// Takes TOTP step `step` for `who` unless it was taken: a code counts
    /// once (RFC 6238 §5.2), even for two logins at the same instant. The
    /// steps used in the last few are kept (a code is good for three steps
    /// at most, with one step of skew either side).
    pub fn take_totp_step(&self, who: &PrincipalId, step: u64) -> Result<bool, StoreError> {
        let key = format!("totp/{who}");
        // Shared: a code used on one gateway is used on all of them. While
        // the directory is away, this gateway's own record still holds.
        if let Some(pg) = &self.shared {
            match pg.state_update(&key, move |current| take_step(current, step)) {
                Ok(true) => {}
                Ok(false) => return Ok(false),
                Err(e) => tracing::warn!(error = %e, "TOTP step checked on this gateway only"),
            }
        }
        loop {
            let current = self.tree.get(&key)?;
            let (new, taken) = take_step(current.as_deref(), step);
            if !taken {
                return Ok(false);
            }
            if self.tree.compare_and_swap(&key, current, new)?.is_ok() {
                return Ok(true);
            }
        }
    }

    /// A factor reset: the steps of the old secret mean nothing now.
    pub fn forget_totp(&self, who: &PrincipalId) -> Result<(), StoreError> {
        let key = format!("totp/{who}");
        if let Some(pg) = &self.shared {
            pg.state_remove(&key)?;
        }
        self.tree.remove(key)?;
        Ok(())
    }

    /// Records a successful login (`user show`, `review`'s unused accounts).
    pub fn set_last_login(&self, who: &PrincipalId, at: i64) -> Result<(), StoreError> {
        self.tree
            .insert(format!("lastlogin/{who}"), &at.to_be_bytes())?;
        Ok(())
    }

    pub fn last_login(&self, who: &PrincipalId) -> Result<Option<i64>, StoreError> {
        Ok(self
            .tree
            .get(format!("lastlogin/{who}"))?
            .as_deref()
            .and_then(decode_i64))
    }

    /// Small named records (last review, last directory change), as JSON.
    pub fn set_meta<T: Serialize>(&self, key: &str, value: &T) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Sled(e.to_string()))?;
        self.tree.insert(format!("meta/{key}"), bytes)?;
        Ok(())
    }

    pub fn meta<T: for<'de> Deserialize<'de>>(&self, key: &str) -> Result<Option<T>, StoreError> {
        Ok(self
            .tree
            .get(format!("meta/{key}"))?
            .and_then(|v| serde_json::from_slice(&v).ok()))
    }

    /// How to treat the next password attempt from `addr`.
    pub fn source_gate(&self, addr: IpAddr, now: i64, window: Duration) -> SourceGate {
        let Ok(map) = self.sources.lock() else {
            return SourceGate::Open;
        };
        match map.get(&addr) {
            Some(f) if now - f.last < window.as_micros() as i64 => {
                if f.count >= SOURCE_REFUSE_AFTER {
                    SourceGate::Refuse
                } else if f.count >= SOURCE_DELAY_AFTER {
                    SourceGate::Delay(Duration::from_millis(
                        250 * (f.count - SOURCE_DELAY_AFTER + 1) as u64,
                    ))
                } else {
                    SourceGate::Open
                }
            }
            _ => SourceGate::Open,
        }
    }

    /// Counts a failure from `addr`, as `who`'s share ("" for nobody's).
    pub fn source_failed(&self, addr: IpAddr, who: &str, now: i64, window: Duration) {
        if let Ok(mut map) = self.sources.lock() {
            // Bound the table: forget quiet addresses when it grows large.
            if map.len() > 100_000 {
                map.retain(|_, f| now - f.last < window.as_micros() as i64);
            }
            let e = map.entry(addr).or_insert_with(|| SourceFailures {
                last: now,
                ..Default::default()
            });
            if now - e.last >= window.as_micros() as i64 {
                e.count = 0;
                e.by.clear();
            }
            e.count += 1;
            e.last = now;
            // A bounded share table: past it, failures count for the
            // address only (and so are never taken back).
            if e.by.len() < 1024 || e.by.contains_key(who) {
                *e.by.entry(who.to_string()).or_default() += 1;
            }
        }
    }

    /// A password success by `who` from `addr` takes back `who`'s own
    /// failures from that address, never anyone else's: one principal's
    /// login must not open the address for another's guessing.
    pub fn source_succeeded(&self, addr: IpAddr, who: &str) {
        if let Ok(mut map) = self.sources.lock()
            && let Some(e) = map.get_mut(&addr)
            && let Some(own) = e.by.remove(who)
        {
            e.count = e.count.saturating_sub(own);
        }
    }
}

/// One more failure in a run; the lock's end when it reaches `limit`
/// inside `window`.
fn count_failure(
    st: &mut LoginFailures,
    now: i64,
    limit: u32,
    window: Duration,
    duration: Duration,
) -> Option<i64> {
    let window = window.as_micros() as i64;
    st.failures.retain(|t| now - *t < window);
    st.failures.push(now);
    if st.failures.len() as u32 >= limit {
        let until = now.saturating_add(duration.as_micros() as i64);
        st.locked_until = Some(until);
        st.failures.clear();
        Some(until)
    } else {
        None
    }
}

/// Takes TOTP `step` in the record of used steps `current`: the new record
/// and whether it was free. The steps of the last few are kept (a code is
/// good for three steps at most, with one step of skew either side).
fn take_step(current: Option<&[u8]>, step: u64) -> (Option<Vec<u8>>, bool) {
    let mut used: Vec<u64> = current
        .unwrap_or_default()
        .chunks_exact(8)
        .filter_map(|c| <[u8; 8]>::try_from(c).ok())
        .map(u64::from_be_bytes)
        .collect();
    if used.contains(&step) {
        return (current.map(<[u8]>::to_vec), false);
    }
    used.push(step);
    let newest = used.iter().copied().max().unwrap_or(step);
    used.retain(|s| s + 3 >= newest);
    (
        Some(used.iter().flat_map(|s| s.to_be_bytes()).collect()),
        true,
    )
}

/// Marks a failure run counted here while the shared directory was away.
const PENDING: &str = "pending/";
/// The last lock seen on a shared failure run (µs), kept here.
const SHARED_LOCK: &str = "sharedlock/";

fn decode_i64(b: &[u8]) -> Option<i64> {
    b.try_into().ok().map(i64::from_be_bytes)
}

impl From<SourceGate> for super::PasswordGate {
    fn from(g: SourceGate) -> Self {
        match g {
            SourceGate::Open => super::PasswordGate::Open,
            SourceGate::Delay(d) => super::PasswordGate::Delay(d),
            SourceGate::Refuse => super::PasswordGate::SourceRefused,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> GuardState {
        let db = sled::Config::new().temporary(true).open().unwrap();
        GuardState::new(db.open_tree("guard").unwrap())
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn a_name_that_is_nobody_locks_like_a_user_and_writes_nothing_to_disk() {
        let st = state();
        let ghost = PrincipalId::User("nobody-at-all".into());
        assert_eq!(st.nobody_failed(&ghost, 1, 3, MINUTE, MINUTE), None);
        assert_eq!(st.nobody_failed(&ghost, 2, 3, MINUTE, MINUTE), None);
        let until = st.nobody_failed(&ghost, 3, 3, MINUTE, MINUTE);
        assert_eq!(until, Some(3 + 60_000_000));
        assert_eq!(st.locked_until(&ghost, 4, false).unwrap(), until);
        // Once the name is a user's, the lock set on it as nobody is gone.
        assert_eq!(st.locked_until(&ghost, 4, true).unwrap(), None);
        assert!(st.tree.is_empty());
    }

    #[test]
    fn invented_names_are_remembered_up_to_a_bound_the_oldest_forgotten_first() {
        let st = state();
        let first = PrincipalId::User("guess0".into());
        for i in 0..NOBODY_REMEMBERED + 500 {
            let who = PrincipalId::User(format!("guess{i}"));
            st.nobody_failed(&who, i as i64, 1, MINUTE, MINUTE);
        }
        assert_eq!(st.nobody_remembered(), NOBODY_REMEMBERED);
        assert_eq!(st.locked_until(&first, 10, false).unwrap(), None);
        let last = PrincipalId::User(format!("guess{}", NOBODY_REMEMBERED + 499));
        assert!(st.locked_until(&last, 10, false).unwrap().is_some());
        assert!(st.tree.is_empty());
    }
}
