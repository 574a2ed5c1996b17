//! The second factor: TOTP (RFC 6238) codes and single-use recovery codes,
//! checked here for logins, step-ups and confirmations. A code counts once
//! (the step it matched is kept), wrong codes count toward the password
//! lockout, and neither secrets nor codes reach an event.

use std::net::IpAddr;

use time::OffsetDateTime;
use totp_rs::{Algorithm, Totp};

use super::Guard;
use crate::model::{PrincipalId, SecondFactor, User, micros};
use crate::store::secrets::{self, Secret, SecretError};
use crate::store::{Category, Entity, EventDraft, Expect, Op, Outcome};

/// SHA-1, 6 digits and 30 s: what every authenticator app takes.
const DIGITS: u8 = 6;
const STEP: u64 = 30;
/// One step either side is accepted for clock skew (RFC 6238 §5.2).
const SKEW: u16 = 1;
/// Recovery codes shown at confirmation.
pub const RECOVERY_CODES: usize = 10;

/// The TOTP of a base32 secret.
fn totp(secret_b32: &str) -> Option<Totp> {
    let secret = totp_rs::Secret::try_from_base32(secret_b32).ok()?;
    totp_rs::Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(DIGITS)
        .with_skew(SKEW)
        .with_step_duration(STEP)
        .with_secret(secret)
        .build()
        .ok()
}

/// A new factor's secret: 160 random bits (RFC 4226's recommendation), base32.
pub fn new_secret() -> Result<String, SecretError> {
    let bytes = secrets::random_bytes::<20>()?;
    Ok(totp_rs::Secret::from(bytes).to_base32())
}

/// The `otpauth://` URI (Google's Key URI format) an app scans.
pub fn otpauth_uri(issuer: &str, account: &str, secret_b32: &str) -> String {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
    format!(
        "otpauth://totp/{}:{}?secret={secret_b32}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP}",
        enc(issuer),
        enc(account),
        enc(issuer)
    )
}

/// The step `code` matches for `secret_b32` at `unix` seconds (±1 step).
pub fn matching_step(secret_b32: &str, code: &str, unix: u64) -> Option<u64> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    totp(secret_b32)?.check(&code, unix)
}

/// The current code (tests and the benchmark's own checks).
pub fn code_at(secret_b32: &str, unix: u64) -> Option<String> {
    totp(secret_b32).map(|t| t.generate(unix).to_string())
}

/// Ten new recovery codes and their stored forms.
pub fn new_recovery_codes() -> Result<(Vec<Secret>, Vec<String>), SecretError> {
    let mut shown = Vec::with_capacity(RECOVERY_CODES);
    let mut kept = Vec::with_capacity(RECOVERY_CODES);
    for _ in 0..RECOVERY_CODES {
        let c = secrets::generate_recovery_code()?;
        kept.push(secrets::hash_key_secret(&c)?);
        shown.push(c);
    }
    Ok((shown, kept))
}

/// A recovery code as typed: lower case, dashes and spaces dropped, then
/// grouped again.
fn normal_recovery(code: &str) -> Option<Secret> {
    let t: String = code
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (t.len() == 16 && t.is_ascii()).then(|| {
        Secret::new(format!(
            "{}-{}-{}-{}",
            &t[0..4],
            &t[4..8],
            &t[8..12],
            &t[12..16]
        ))
    })
}

/// What a second factor's check came to.
#[derive(Debug, PartialEq, Eq)]
pub enum FactorCheck {
    /// A right TOTP code, or a recovery code (now used up).
    Right { recovery: bool },
    /// Wrong, replayed, or no active factor: counted toward lockout.
    Wrong,
    /// Password login is locked, or the source refused: nothing checked.
    Locked,
    /// The directory could not take the used recovery code (try again).
    Failed,
}

/// Why the code is asked (named in events).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FactorUse {
    Login,
    StepUp,
}

impl FactorUse {
    fn word(self) -> &'static str {
        match self {
            FactorUse::Login => "login",
            FactorUse::StepUp => "step-up",
        }
    }
}

impl Guard {
    /// The user behind `who`, if a person with a confirmed factor.
    fn factor_of(&self, who: &PrincipalId) -> Option<(User, SecondFactor)> {
        let PrincipalId::User(name) = who else {
            return None;
        };
        let u = self.store.directory().users.get(name)?.clone();
        let f = u.active_factor()?.clone();
        Some((u, f))
    }

    /// Whether a login of `who` must give a code before it is let in.
    pub fn asks_code(&self, who: &PrincipalId) -> bool {
        self.factor_of(who).is_some()
    }

    /// Checks a second factor `who` gives through `door`: a TOTP code (once
    /// per step) or a recovery code (once). Wrong ones count toward the
    /// password lockout and are logged as `mfa.code-refused`.
    pub async fn check_factor(
        &self,
        who: &PrincipalId,
        source: Option<IpAddr>,
        door: &'static str,
        code: &Secret,
        purpose: FactorUse,
    ) -> FactorCheck {
        let now = OffsetDateTime::now_utc();
        // Codes have a lock of their own, set only by wrong codes, which
        // only a holder of the person's first credential can give: neither
        // failing passwords from anywhere nor a shared address (NAT, a jump
        // host) can lock a person's key-and-code login (DESIGN §2). Wrong
        // codes also count toward the password lockout.
        if let Ok(Some(until)) = self.state.code_locked_until(who, micros(now)) {
            self.factor_event(
                who,
                source,
                door,
                "mfa.code-refused",
                Outcome::Failure,
                format!(
                    "{}: too many wrong codes: codes are refused until {} (`user unlock` ends it)",
                    purpose.word(),
                    crate::model::rfc3339(until)
                ),
            )
            .await;
            return FactorCheck::Locked;
        }
        let Some((user, factor)) = self.factor_of(who) else {
            self.code_refused(who, source, door, purpose, "no active second factor")
                .await;
            return FactorCheck::Wrong;
        };
        let unix = now.unix_timestamp().max(0) as u64;
        if let Some(step) = matching_step(&factor.secret, code.expose(), unix) {
            return match self.state.take_totp_step(who, step) {
                // A right code takes back no failures by itself: a password
                // login takes back its own (as without a factor), a key
                // login none, so a person logging in with key and code never
                // clears a guesser's count.
                Ok(true) => {
                    let _ = self.state.code_succeeded(who);
                    FactorCheck::Right { recovery: false }
                }
                Ok(false) => {
                    self.code_refused(
                        who,
                        source,
                        door,
                        purpose,
                        "a code already used (each code counts once)",
                    )
                    .await;
                    FactorCheck::Wrong
                }
                Err(_) => FactorCheck::Failed,
            };
        }
        if let Some(typed) = normal_recovery(code.expose())
            && let Some(i) = factor
                .recovery
                .iter()
                .position(|h| secrets::verify_key_secret(&typed, h) == Some(true))
        {
            return self.use_recovery(who, source, door, user, i, now).await;
        }
        self.code_refused(who, source, door, purpose, "wrong code")
            .await;
        FactorCheck::Wrong
    }

    /// Takes recovery code `i` out of `user`'s factor, then logs its use.
    async fn use_recovery(
        &self,
        who: &PrincipalId,
        source: Option<IpAddr>,
        door: &'static str,
        mut user: User,
        i: usize,
        now: OffsetDateTime,
    ) -> FactorCheck {
        // Waits for admin changes so the user record is the latest.
        let turn = self.one_change_at_a_time().await;
        let version = user.version;
        let left = match user.mfa.as_mut() {
            Some(f) if i < f.recovery.len() => {
                f.recovery.remove(i);
                f.recovery.len()
            }
            _ => return FactorCheck::Wrong,
        };
        let changed = self.change(
            vec![Op::Put(Entity::User(user), Expect::Version(version))],
            who,
            now,
        );
        drop(turn);
        if changed.is_err() {
            // Changed meanwhile (or not durable): the code is not used up,
            // and the person is told to try again.
            return FactorCheck::Failed;
        }
        let _ = self.state.code_succeeded(who);
        self.factor_event(
            who,
            source,
            door,
            "mfa.recovery-used",
            Outcome::Success,
            format!("a recovery code was used; {left} left"),
        )
        .await;
        FactorCheck::Right { recovery: true }
    }

    /// A wrong code: counts like a wrong password, and is logged.
    async fn code_refused(
        &self,
        who: &PrincipalId,
        source: Option<IpAddr>,
        door: &'static str,
        purpose: FactorUse,
        why: &str,
    ) {
        let now_us = micros(OffsetDateTime::now_utc());
        // The person's password lockout counts it; the address does not
        // (a person's own typing must not throttle a shared address).
        let locked = self.count_password_failure(who, None, now_us);
        let l = self.settings.load().lockout.clone();
        let codes_locked = self
            .state
            .code_failed(who, now_us, l.failures, l.window.0, l.duration.0)
            .ok()
            .flatten();
        self.factor_event(
            who,
            source,
            door,
            "mfa.code-refused",
            Outcome::Failure,
            format!("{}: {why}", purpose.word()),
        )
        .await;
        if let Some(until) = locked {
            self.lockout_event(who, door, until).await;
        }
        if let Some(until) = codes_locked {
            self.factor_event(
                who,
                source,
                door,
                "login.lockout",
                Outcome::Deny,
                format!(
                    "{} consecutive wrong codes; codes are refused until {}",
                    l.failures,
                    crate::model::rfc3339(until)
                ),
            )
            .await;
        }
    }

    async fn factor_event(
        &self,
        who: &PrincipalId,
        source: Option<IpAddr>,
        door: &'static str,
        code: &str,
        outcome: Outcome,
        why: String,
    ) {
        let mut ev = EventDraft::new(code, Category::Authentication, outcome)
            .principal(who)
            .door(door)
            .action("second factor")
            .reason(why);
        if let Some(s) = source {
            ev = ev.source(s);
        }
        self.record(ev).await;
    }

    /// A factor reset: the used steps are forgotten with it.
    pub fn forget_factor(&self, who: &PrincipalId) {
        let _ = self.state.forget_totp(who);
    }

    /// Records the step a confirmation code matched, so it cannot be used
    /// again for a login.
    pub fn take_step(&self, who: &PrincipalId, step: u64) -> bool {
        self.state.take_totp_step(who, step).unwrap_or(false)
    }
}
