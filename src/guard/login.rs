//! Logins, decided in one call whatever the door: the lockout gate before
//! any hash, the hash checked in the bounded pool (busy is never wrong), the
//! temporary-password rules, deactivated keys, the session cap, the
//! principal's own state, and the events. Secrets never leave this module.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use time::OffsetDateTime;

use super::mfa::{FactorCheck, FactorUse};
use super::{Action, Decision, Guard, Reason, Request};
use crate::config::OnFailure;
use crate::model::{PasswordRecord, PrincipalId, Status, micros};
use crate::store::secrets::{self, Secret, SecretError};
use crate::store::{Category, EventDraft, Outcome};

/// The longest a throttled source waits per attempt.
pub(super) const MAX_DELAY: Duration = Duration::from_secs(5);

/// How a principal proved who it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Credential {
    Password,
    KeyboardInteractive,
    PublicKey,
    AccessKey,
    Certificate,
}

impl Credential {
    /// Only these count toward lockout and source throttling (CR 1.11
    /// without its denial-of-service trap: keys and certificates never lock).
    pub fn is_password(self) -> bool {
        matches!(self, Credential::Password | Credential::KeyboardInteractive)
    }
    pub fn word(self) -> &'static str {
        match self {
            Credential::Password => "password",
            Credential::KeyboardInteractive => "keyboard-interactive",
            Credential::PublicKey => "publickey",
            Credential::AccessKey => "access-key",
            Credential::Certificate => "certificate",
        }
    }
}

/// Why a password attempt is refused before it is even checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PasswordGate {
    Open,
    Delay(Duration),
    SourceRefused,
    Locked { until: i64 },
}

/// What a login offers.
pub enum Proof {
    /// A password on the password method (a temporary one is refused here).
    Password(Secret),
    /// A password on keyboard-interactive: the password, or a first
    /// login's temporary password (then the door asks for a new one).
    InteractivePassword(Secret),
    /// A service user's access key: the claimed name is the key id.
    AccessKey(Secret),
    /// A proof the door checked itself in this same login: a public key
    /// whose signature verified and which the directory lists for the
    /// principal, or a first login whose new password was just stored.
    Checked {
        credential: Credential,
        /// What the session runs on (a key fingerprint), so removing it
        /// ends the session.
        id: Option<String>,
        /// The door had the guard check a second factor in this same
        /// login ([`Guard::check_factor`]), before a first login's new
        /// password was set.
        second_factor: bool,
    },
    /// The second factor, after `first` was proved in this same login
    /// (the guard answered [`Verdict::NeedsCode`]).
    Code {
        first: Credential,
        id: Option<String>,
        code: Secret,
    },
}

/// One login attempt.
pub struct Attempt<'a> {
    /// The name the client gave (a user, `support`, a typed id, a key id).
    pub claimed: &'a str,
    pub source: IpAddr,
    pub door: &'static str,
    pub proof: Proof,
    /// The most live sessions a principal may hold on this door.
    pub max_sessions: Option<usize>,
}

/// What the login came to. Every outcome is logged by the guard.
pub enum Verdict {
    /// Let in; the credential the session runs on.
    Accepted {
        who: PrincipalId,
        credential: Option<String>,
        /// A second factor was given in this login.
        second_factor: bool,
    },
    /// The first credential is right and the person has a second factor:
    /// the door asks for a code, then tries [`Proof::Code`].
    NeedsCode {
        who: PrincipalId,
        credential: Credential,
        id: Option<String>,
    },
    /// The temporary password is right: the door asks for a new one.
    MustChangePassword(PrincipalId),
    Rejected,
    /// A bounded resource (the hash pool) is full: try again. Never counts
    /// toward lockout and is never logged as a wrong credential.
    Busy,
}

/// Checking a password the principal already logged in with (`passwd`).
#[derive(Debug, PartialEq, Eq)]
pub enum PasswordCheck {
    Right,
    Wrong,
    Locked,
    Busy,
}

impl Guard {
    /// Before checking a password: is the principal locked, or the source
    /// throttled? Public keys and certificates never ask this.
    pub fn password_gate(
        &self,
        who: &PrincipalId,
        source: Option<IpAddr>,
        now: OffsetDateTime,
    ) -> PasswordGate {
        let now_us = micros(now);
        if let Ok(Some(until)) = self.state.locked_until(who, now_us, self.knows(who)) {
            return PasswordGate::Locked { until };
        }
        let window = self.settings.load().lockout.window.0;
        source.map_or(PasswordGate::Open, |a| {
            self.state.source_gate(a, now_us, window).into()
        })
    }

    /// Decides one login, whatever the door.
    pub async fn attempt(&self, a: Attempt<'_>) -> Verdict {
        let now = OffsetDateTime::now_utc();
        match a.proof {
            Proof::Password(ref secret) | Proof::InteractivePassword(ref secret) => {
                let interactive = matches!(a.proof, Proof::InteractivePassword(_));
                let credential = if interactive {
                    Credential::KeyboardInteractive
                } else {
                    Credential::Password
                };
                let Ok(who) = PrincipalId::parse(a.claimed) else {
                    return Verdict::Rejected;
                };
                if !self.gate(&who, a.source, a.door, credential).await {
                    return Verdict::Rejected;
                }
                let record = self.password_record(&who);
                let verified = match self.check_hash(secret, record.as_ref()).await {
                    Ok(v) => v,
                    Err(()) => {
                        self.busy(Some(&who), a.source, a.door, credential).await;
                        return Verdict::Busy;
                    }
                };
                if !verified {
                    self.login(&who, Some(a.source), a.door, credential, false, now)
                        .await;
                    return Verdict::Rejected;
                }
                let Some(r) = record else {
                    return Verdict::Rejected;
                };
                let temporary_round = interactive && r.temporary;
                let refuse = if temporary_round && r.expires_at().is_some_and(|t| t <= micros(now))
                {
                    Some("the temporary password has expired: ask an administrator to resend one")
                } else if !interactive && r.temporary {
                    Some(
                        "a temporary password is refused on the password method: log in with keyboard-interactive to replace it",
                    )
                } else {
                    None
                };
                if let Some(why) = refuse {
                    self.login_failure(Some(&who), a.source, a.door, credential.word(), why.into())
                        .await;
                    return Verdict::Rejected;
                }
                if temporary_round {
                    // The principal must be let in at all before its
                    // password changes.
                    let d = self.decide(&login_request(&who, a.source, a.door), now);
                    if !d.allowed {
                        self.login(&who, Some(a.source), a.door, credential, true, now)
                            .await;
                        return Verdict::Rejected;
                    }
                    return Verdict::MustChangePassword(who);
                }
                self.finish(
                    &who,
                    a.source,
                    a.door,
                    credential,
                    None,
                    a.max_sessions,
                    false,
                    now,
                )
                .await
            }
            Proof::AccessKey(ref secret) => {
                let dir = self.store.directory();
                let found = dir.service_users.values().find_map(|s| {
                    s.keys
                        .iter()
                        .find(|k| k.id == a.claimed)
                        .map(|k| (s.name.clone(), k.secret_hash.clone(), k.status))
                });
                let Some((service, hash, status)) = found else {
                    // Every attempt is an event, an unknown key id too, but
                    // as unauthenticated traffic (its hourly quota): no hash
                    // is computed, so nothing else bounds how fast these
                    // come. The source is throttled like any failing one.
                    let why = format!("no access key {}", shown_key_id(a.claimed));
                    let ev = EventDraft::new(
                        "login.failure",
                        Category::Authentication,
                        Outcome::Failure,
                    )
                    .source(a.source)
                    .door(a.door)
                    .action("login")
                    .reason(why)
                    .detail("credential", "access-key");
                    self.record_unauthenticated(ev).await;
                    // A throttled source waits here as for a known key.
                    let window = self.settings.load().lockout.window.0;
                    if let PasswordGate::Delay(d) =
                        self.state.source_gate(a.source, micros(now), window).into()
                    {
                        tokio::time::sleep(d.min(MAX_DELAY)).await;
                    }
                    self.source_failed(a.source, "", now);
                    return Verdict::Rejected;
                };
                let who = PrincipalId::Service(service);
                // The address's own gate: a locked service user must not
                // turn it off (access keys never lock; sources still do).
                let window = self.settings.load().lockout.window.0;
                match self.state.source_gate(a.source, micros(now), window).into() {
                    PasswordGate::SourceRefused => {
                        // Under the unauthenticated quota: a refused source
                        // gets no hash, so nothing else slows it down.
                        let ev = EventDraft::new(
                            "login.failure",
                            Category::Authentication,
                            Outcome::Failure,
                        )
                        .principal(&who)
                        .source(a.source)
                        .door(a.door)
                        .action("login")
                        .reason(
                            "too many failures from this source: refused for the lockout window",
                        )
                        .detail("credential", "access-key");
                        self.record_unauthenticated(ev).await;
                        return Verdict::Rejected;
                    }
                    PasswordGate::Delay(d) => tokio::time::sleep(d.min(MAX_DELAY)).await,
                    // Access keys never lock their service user (no lockout DoS).
                    PasswordGate::Locked { .. } | PasswordGate::Open => {}
                }
                let verified = match secrets::verify_key_secret(secret, &hash) {
                    Some(v) => v,
                    // A key kept with argon2 (made before keyed secrets).
                    None => match self.hashes.verify(secret.clone(), hash).await {
                        Ok(v) => v,
                        Err(_) => {
                            self.busy(Some(&who), a.source, a.door, Credential::AccessKey)
                                .await;
                            return Verdict::Busy;
                        }
                    },
                };
                if !verified {
                    self.login(
                        &who,
                        Some(a.source),
                        a.door,
                        Credential::AccessKey,
                        false,
                        now,
                    )
                    .await;
                    // Not a password: no lockout, but the source is throttled.
                    self.source_failed(a.source, &who.to_string(), now);
                    return Verdict::Rejected;
                }
                if status != Status::Active {
                    let why = format!("access key {} is deactivated", a.claimed);
                    self.login_failure(Some(&who), a.source, a.door, "access-key", why)
                        .await;
                    return Verdict::Rejected;
                }
                self.finish(
                    &who,
                    a.source,
                    a.door,
                    Credential::AccessKey,
                    Some(a.claimed.to_string()),
                    a.max_sessions,
                    false,
                    now,
                )
                .await
            }
            Proof::Checked {
                credential,
                id,
                second_factor,
            } => {
                let Ok(who) = PrincipalId::parse(a.claimed) else {
                    return Verdict::Rejected;
                };
                self.finish(
                    &who,
                    a.source,
                    a.door,
                    credential,
                    id,
                    a.max_sessions,
                    second_factor,
                    now,
                )
                .await
            }
            Proof::Code {
                first,
                id,
                ref code,
            } => {
                let Ok(who) = PrincipalId::parse(a.claimed) else {
                    return Verdict::Rejected;
                };
                match self
                    .check_factor(&who, Some(a.source), a.door, code, FactorUse::Login)
                    .await
                {
                    FactorCheck::Right { .. } => {
                        self.finish(&who, a.source, a.door, first, id, a.max_sessions, true, now)
                            .await
                    }
                    FactorCheck::Failed => Verdict::Busy,
                    FactorCheck::Wrong | FactorCheck::Locked => Verdict::Rejected,
                }
            }
        }
    }

    /// `passwd`: is `secret` the password `who` has now? A wrong one counts
    /// toward lockout like a failed login; a busy pool counts for nothing.
    pub async fn check_password(
        &self,
        who: &PrincipalId,
        source: IpAddr,
        door: &'static str,
        secret: &Secret,
    ) -> PasswordCheck {
        let now = OffsetDateTime::now_utc();
        match self.password_gate(who, Some(source), now) {
            PasswordGate::Locked { .. } | PasswordGate::SourceRefused => {
                return PasswordCheck::Locked;
            }
            PasswordGate::Delay(d) => tokio::time::sleep(d.min(MAX_DELAY)).await,
            PasswordGate::Open => {}
        }
        match self
            .check_hash(secret, self.password_record(who).as_ref())
            .await
        {
            Ok(true) => PasswordCheck::Right,
            Ok(false) => {
                self.login(who, Some(source), door, Credential::Password, false, now)
                    .await;
                PasswordCheck::Wrong
            }
            Err(()) => {
                self.busy(Some(who), source, door, Credential::Password)
                    .await;
                PasswordCheck::Busy
            }
        }
    }

    /// The lockout gate (DESIGN §2): a locked principal or a refused source
    /// is turned away before any hash is checked; a throttled source waits.
    async fn gate(
        &self,
        who: &PrincipalId,
        source: IpAddr,
        door: &'static str,
        credential: Credential,
    ) -> bool {
        match self.password_gate(who, Some(source), OffsetDateTime::now_utc()) {
            PasswordGate::Open => true,
            PasswordGate::Delay(d) => {
                tokio::time::sleep(d.min(MAX_DELAY)).await;
                true
            }
            PasswordGate::Locked { until } => {
                let why = format!(
                    "password login is locked until {} (public keys still work; `user unlock` ends it)",
                    crate::model::rfc3339(until)
                );
                self.login_failure(Some(who), source, door, credential.word(), why)
                    .await;
                false
            }
            PasswordGate::SourceRefused => {
                let why =
                    "too many password failures from this source: refused for the lockout window";
                self.login_failure(Some(who), source, door, credential.word(), why.into())
                    .await;
                false
            }
        }
    }

    /// The user's password record, if `who` is a user that has one.
    fn password_record(&self, who: &PrincipalId) -> Option<PasswordRecord> {
        let PrincipalId::User(name) = who else {
            return None;
        };
        self.store
            .directory()
            .users
            .get(name)
            .and_then(|u| u.password.clone())
    }

    /// Checks `secret` against `record` in the pool; `Err` when the pool is
    /// full (busy, not wrong).
    async fn check_hash(
        &self,
        secret: &Secret,
        record: Option<&PasswordRecord>,
    ) -> Result<bool, ()> {
        let Some(r) = record else { return Ok(false) };
        match self.hashes.verify(secret.clone(), r.hash.clone()).await {
            Ok(v) => Ok(v),
            Err(SecretError::Busy) => Err(()),
            // A stopped pool cannot say yes.
            Err(_) => Ok(false),
        }
    }

    /// Logs a login the pool was too busy to check.
    async fn busy(
        &self,
        who: Option<&PrincipalId>,
        source: IpAddr,
        door: &'static str,
        credential: Credential,
    ) {
        let mut ev = EventDraft::new("login.busy", Category::Authentication, Outcome::Failure)
            .source(source)
            .door(door)
            .action("login")
            .reason("the password hashing pool is busy: the attempt was not checked (try again)")
            .detail("credential", credential.word());
        if let Some(w) = who {
            ev = ev.principal(w);
        }
        self.record(ev).await;
    }

    /// A login refused before the guard's decision (locked, a temporary
    /// password on the wrong method, an unknown key id...).
    async fn login_failure(
        &self,
        who: Option<&PrincipalId>,
        source: IpAddr,
        door: &'static str,
        credential: &str,
        why: String,
    ) {
        let mut ev = EventDraft::new("login.failure", Category::Authentication, Outcome::Failure)
            .source(source)
            .door(door)
            .action("login")
            .reason(why)
            .detail("credential", credential);
        if let Some(w) = who {
            ev = ev.principal(w);
        }
        self.record(ev).await;
    }

    /// The credential is good: the session cap, then the login decision.
    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &self,
        who: &PrincipalId,
        source: IpAddr,
        door: &'static str,
        credential: Credential,
        id: Option<String>,
        max_sessions: Option<usize>,
        second_factor: bool,
        now: OffsetDateTime,
    ) -> Verdict {
        if let Some(max) = max_sessions {
            let name = who.to_string();
            let live = self
                .sessions
                .list()
                .iter()
                .filter(|s| s.door == door && s.principal == name)
                .count();
            if live >= max {
                // IEC 62443 CR 2.7: the cap is a refusal, not a failure.
                let ev = EventDraft::new("session.refused", Category::Session, Outcome::Deny)
                    .principal(who)
                    .source(source)
                    .door(door)
                    .reason(format!(
                        "{live} live sessions on {door}: the maximum per principal is {max}"
                    ));
                self.record(ev).await;
                return Verdict::Rejected;
            }
        }
        // A person with a factor gives a code at every login, whatever the
        // first credential was (OpenSSH's `publickey,keyboard-interactive`).
        if !second_factor && self.asks_code(who) {
            return Verdict::NeedsCode {
                who: who.clone(),
                credential,
                id,
            };
        }
        let d = self
            .login_with(
                who,
                Some(source),
                door,
                credential,
                true,
                second_factor,
                now,
            )
            .await;
        if d.allowed {
            Verdict::Accepted {
                who: who.clone(),
                credential: id,
                second_factor,
            }
        } else {
            Verdict::Rejected
        }
    }

    /// Records a login attempt whose credential was checked (`verified`),
    /// applies lockout and the gate checks, and logs it. The secret itself
    /// never reaches this function.
    pub async fn login(
        &self,
        who: &PrincipalId,
        source: Option<IpAddr>,
        door: &'static str,
        credential: Credential,
        verified: bool,
        now: OffsetDateTime,
    ) -> Decision {
        self.login_with(who, source, door, credential, verified, false, now)
            .await
    }

    /// [`Guard::login`], saying whether a second factor was given too.
    #[allow(clippy::too_many_arguments)]
    async fn login_with(
        &self,
        who: &PrincipalId,
        source: Option<IpAddr>,
        door: &'static str,
        credential: Credential,
        verified: bool,
        second_factor: bool,
        now: OffsetDateTime,
    ) -> Decision {
        let now_us = micros(now);
        let settings = self.settings.load();
        let req = Request {
            principal: who.clone(),
            source: source.map(|s| s.to_string()),
            door,
            action: Action::Login,
            read_only: false,
            certificate: None,
            second_factor: false,
            recorded: false,
        };
        let mut locked = None;
        let d = if !verified {
            if credential.is_password() {
                locked = self.count_password_failure(who, source, now_us);
            }
            Decision::deny(None, Reason::NoStatementAllows)
        } else {
            let d = self.decide(&req, now);
            if d.allowed {
                if credential.is_password() {
                    let _ = self.state.password_succeeded(who);
                    // Only this principal's own failures from the address
                    // are taken back; a key login takes back nothing.
                    if let Some(a) = source {
                        self.state.source_succeeded(a, &who.to_string());
                    }
                }
                let _ = self.state.set_last_login(who, now_us);
            }
            d
        };
        let (code, outcome) = if d.allowed {
            ("login.success", Outcome::Success)
        } else {
            ("login.failure", Outcome::Failure)
        };
        let reason = if verified {
            d.reason.to_string()
        } else {
            format!("wrong {}", credential.word())
        };
        let mut ev = EventDraft::new(code, Category::Authentication, outcome)
            .principal(who)
            .door(door)
            .action("login")
            .reason(reason)
            .detail("credential", credential.word());
        if second_factor {
            ev = ev.detail("second_factor", "totp");
        }
        if let Some(s) = source {
            ev = ev.source(s);
        }
        let mut d = d;
        match self.store.log().append(ev.clone()).await {
            Ok(seq) => d.event = Some(seq),
            Err(_) if d.allowed && settings.on_failure == OnFailure::FailClosed => {
                d = Decision::deny(None, Reason::AuditUnavailable);
            }
            Err(_) => self.counters.audit_alarm.store(true, Ordering::Relaxed),
        }
        if let Some(until) = locked {
            self.lockout_event(who, door, until).await;
        }
        d
    }

    /// Counts a wrong password (or second-factor code) toward `who`'s
    /// lockout and its source's throttling; the end of a lock it starts.
    pub(super) fn count_password_failure(
        &self,
        who: &PrincipalId,
        source: Option<IpAddr>,
        now_us: i64,
    ) -> Option<i64> {
        let settings = self.settings.load();
        let l = &settings.lockout;
        // Only real principals keep a persistent failure record; names
        // that are nobody lock the same way, in memory.
        let locked = if self.knows(who) {
            self.state
                .password_failed(who, now_us, l.failures, l.window.0, l.duration.0)
                .ok()
                .flatten()
        } else if matches!(who, PrincipalId::User(_)) {
            self.state
                .nobody_failed(who, now_us, l.failures, l.window.0, l.duration.0)
        } else {
            None
        };
        if let Some(a) = source {
            self.state
                .source_failed(a, &who.to_string(), now_us, l.window.0);
        }
        locked
    }

    pub(super) async fn lockout_event(&self, who: &PrincipalId, door: &'static str, until: i64) {
        let failures = self.settings.load().lockout.failures;
        let lock = EventDraft::new("login.lockout", Category::Authentication, Outcome::Deny)
            .principal(who)
            .door(door)
            .reason(format!(
                "{failures} consecutive password or code failures; password login locked until {}",
                crate::model::rfc3339(until)
            ));
        self.record(lock).await;
    }

    /// Counts a failed secret from `source` toward its throttling without
    /// touching any principal's lockout (access keys).
    fn source_failed(&self, source: IpAddr, who: &str, now: OffsetDateTime) {
        let window = self.settings.load().lockout.window.0;
        self.state.source_failed(source, who, micros(now), window);
    }

    /// Whether `who` is a user the directory knows (failure records are
    /// kept only for those).
    fn knows(&self, who: &PrincipalId) -> bool {
        // Only users have passwords: a guessed `svc:…`, `support` or
        // `local:…` name never gets a stored record (nor a lock that would
        // lift its address's throttle).
        match who {
            PrincipalId::User(n) => self.store.directory().users.contains_key(n),
            _ => false,
        }
    }
}

/// A claimed access key id as events may show it: the id when it has an
/// id's shape, its length otherwise (a client that swapped id and secret
/// must not write the secret into the log).
pub fn shown_key_id(claimed: &str) -> String {
    let prefix = crate::store::secrets::KEY_ID_PREFIX;
    let shaped = claimed.len() == prefix.len() + 16
        && claimed.starts_with(prefix)
        && claimed[prefix.len()..]
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
    if shaped {
        format!("`{claimed}`")
    } else {
        format!(
            "(a name of {} characters that is no key id)",
            claimed.chars().count()
        )
    }
}

fn login_request(who: &PrincipalId, source: IpAddr, door: &'static str) -> Request {
    Request {
        principal: who.clone(),
        source: Some(source.to_string()),
        door,
        action: Action::Login,
        read_only: false,
        certificate: None,
        second_factor: false,
        recorded: false,
    }
}
