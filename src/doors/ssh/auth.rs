//! Password and keyboard-interactive logins: the lockout gate first, the
//! hash checked in the bounded pool, the guard's login decision last. A
//! first login with a temporary password runs as keyboard-interactive: one
//! round for the temporary password, one for the new one (repeated with the
//! reason while the policy refuses it).

use std::borrow::Cow;
use std::net::IpAddr;
use std::time::Duration;

use russh::server::Auth;
use time::OffsetDateTime;

use super::DOOR;
use crate::config::Passwords;
use crate::doors::admin::exec::AdminContext;
use crate::guard::{Credential, PasswordGate};
use crate::model::{PasswordRecord, PrincipalId, micros};
use crate::store::secrets::Secret;
use crate::store::{Category, Entity, EventDraft, Expect, Op, Outcome};

/// The longest a throttled source waits per attempt.
const MAX_DELAY: Duration = Duration::from_secs(5);

/// Where a keyboard-interactive login stands.
pub enum Interactive {
    /// The temporary-password prompt was sent.
    AwaitTemporary(PrincipalId),
    /// The temporary password was right; the new-password prompts were sent.
    AwaitNew { who: PrincipalId, temporary: Secret },
}

pub const TEMPORARY_PROMPT: &str = "Temporary password: ";
pub const NEW_PROMPT: &str = "New password: ";
pub const REPEAT_PROMPT: &str = "Repeat new password: ";

pub fn temporary_round() -> Auth {
    Auth::Partial {
        name: Cow::Borrowed("metergate"),
        instructions: Cow::Borrowed("First login: give the temporary password you were sent."),
        prompts: Cow::Owned(vec![(Cow::Borrowed(TEMPORARY_PROMPT), false)]),
    }
}

pub fn new_password_round(instructions: String) -> Auth {
    Auth::Partial {
        name: Cow::Borrowed("metergate"),
        instructions: Cow::Owned(instructions),
        prompts: Cow::Owned(vec![
            (Cow::Borrowed(NEW_PROMPT), false),
            (Cow::Borrowed(REPEAT_PROMPT), false),
        ]),
    }
}

async fn log(admin: &AdminContext, ev: EventDraft) {
    if let Err(e) = admin.guard.store().log().append(ev).await {
        tracing::error!(error = %e, "ssh login event could not be logged");
    }
}

/// A failed login attempt whose principal is not known (an unknown key id,
/// a key that is nobody's).
pub(super) fn attempt(source: IpAddr, credential: &str, reason: String) -> EventDraft {
    EventDraft::new("login.failure", Category::Authentication, Outcome::Failure)
        .source(source)
        .door(DOOR)
        .action("login")
        .reason(reason)
        .detail("credential", credential)
}

fn failure(who: &PrincipalId, source: IpAddr, credential: &str, reason: String) -> EventDraft {
    attempt(source, credential, reason).principal(who)
}

/// Logs why a keyboard-interactive login failed.
async fn interactive_failure(admin: &AdminContext, who: &PrincipalId, source: IpAddr, why: String) {
    log(admin, failure(who, source, "keyboard-interactive", why)).await;
}

/// The lockout gate (DESIGN §2): a locked principal or a refused source is
/// turned away before any hash is checked; a throttled source waits.
async fn gate(admin: &AdminContext, who: &PrincipalId, source: IpAddr, credential: &str) -> bool {
    match admin
        .guard
        .password_gate(who, Some(source), OffsetDateTime::now_utc())
    {
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
            log(admin, failure(who, source, credential, why)).await;
            false
        }
        PasswordGate::SourceRefused => {
            let why = "too many password failures from this source: refused for the lockout window"
                .into();
            log(admin, failure(who, source, credential, why)).await;
            false
        }
    }
}

/// The guard's login decision for a keyboard-interactive attempt (logged,
/// counted toward lockout when not `verified`).
async fn interactive_login(
    admin: &AdminContext,
    who: &PrincipalId,
    source: IpAddr,
    verified: bool,
    now: OffsetDateTime,
) -> bool {
    admin
        .guard
        .login(
            who,
            Some(source),
            DOOR,
            Credential::KeyboardInteractive,
            verified,
            now,
        )
        .await
        .allowed
}

/// The user's password record, if `who` is a user that has one.
fn record(admin: &AdminContext, who: &PrincipalId) -> Option<PasswordRecord> {
    let PrincipalId::User(name) = who else {
        return None;
    };
    admin
        .guard
        .store()
        .directory()
        .users
        .get(name)
        .and_then(|u| u.password.clone())
}

/// Checks `secret` against `record` in the hashing pool (false when busy).
async fn matches(admin: &AdminContext, secret: &Secret, record: Option<&PasswordRecord>) -> bool {
    let Some(r) = record else { return false };
    admin
        .hashes
        .verify(secret.clone(), r.hash.clone())
        .await
        .unwrap_or(false)
}

/// The plain `password` method. A temporary password is refused here (the
/// event says why; keyboard-interactive replaces it).
pub async fn password(
    admin: &AdminContext,
    source: IpAddr,
    user: &str,
    secret: Secret,
) -> Option<PrincipalId> {
    let who = PrincipalId::parse(user).ok()?;
    if !gate(admin, &who, source, "password").await {
        return None;
    }
    let rec = record(admin, &who);
    let verified = matches(admin, &secret, rec.as_ref()).await;
    if verified && rec.as_ref().is_some_and(|r| r.temporary) {
        let why = "a temporary password is refused on the password method: log in with keyboard-interactive to replace it".into();
        log(admin, failure(&who, source, "password", why)).await;
        return None;
    }
    let d = admin
        .guard
        .login(
            &who,
            Some(source),
            DOOR,
            Credential::Password,
            verified,
            OffsetDateTime::now_utc(),
        )
        .await;
    d.allowed.then_some(who)
}

/// Keyboard-interactive: starts with the temporary-password round.
pub fn interactive_start(user: &str) -> Option<Interactive> {
    match PrincipalId::parse(user).ok()? {
        who @ PrincipalId::User(_) => Some(Interactive::AwaitTemporary(who)),
        _ => None,
    }
}

/// One answer of a keyboard-interactive login: the next state and what to
/// tell the client; `Ok(who)` when the login is complete.
pub async fn interactive_step(
    admin: &AdminContext,
    policy: &Passwords,
    source: IpAddr,
    state: Interactive,
    answers: Vec<Secret>,
) -> Result<PrincipalId, (Option<Interactive>, Auth)> {
    match state {
        Interactive::AwaitTemporary(who) => {
            let Some(temporary) = answers.into_iter().next() else {
                return Err((None, Auth::reject()));
            };
            if !gate(admin, &who, source, "keyboard-interactive").await {
                return Err((None, Auth::reject()));
            }
            let rec = record(admin, &who);
            let verified = matches(admin, &temporary, rec.as_ref()).await;
            let now = OffsetDateTime::now_utc();
            match rec {
                Some(r) if verified && !r.temporary => {
                    let why = "keyboard-interactive is for a first login with a temporary password; use the password method".into();
                    interactive_failure(admin, &who, source, why).await;
                    Err((None, Auth::reject()))
                }
                Some(r) if verified && r.expires_at().is_some_and(|t| t <= micros(now)) => {
                    let why =
                        "the temporary password has expired: ask an administrator to resend one"
                            .into();
                    interactive_failure(admin, &who, source, why).await;
                    Err((None, Auth::reject()))
                }
                _ if verified => Err((
                    Some(Interactive::AwaitNew { who, temporary }),
                    new_password_round(format!(
                        "Choose your new password: at least {} characters, not containing your user name.",
                        policy.min_length
                    )),
                )),
                _ => {
                    interactive_login(admin, &who, source, false, now).await;
                    Err((None, Auth::reject()))
                }
            }
        }
        Interactive::AwaitNew { who, temporary } => {
            let mut it = answers.into_iter();
            let (Some(new), Some(repeat)) = (it.next(), it.next()) else {
                return Err((None, Auth::reject()));
            };
            let name = match &who {
                PrincipalId::User(n) => n.clone(),
                _ => return Err((None, Auth::reject())),
            };
            let violation = if new.expose() != repeat.expose() {
                Some("The two new passwords differ.".to_string())
            } else {
                policy.violation(&name, new.expose(), temporary.expose(), "temporary")
            };
            if let Some(why) = violation {
                let ev = EventDraft::new(
                    "password.rejected",
                    Category::Authentication,
                    Outcome::Failure,
                )
                .principal(&who)
                .source(source)
                .door(DOOR)
                .reason(why.clone());
                log(admin, ev).await;
                return Err((
                    Some(Interactive::AwaitNew { who, temporary }),
                    new_password_round(why),
                ));
            }
            let now = OffsetDateTime::now_utc();
            // The principal must be let in at all before its password changes.
            let d = admin.guard.decide(
                &crate::guard::Request {
                    principal: who.clone(),
                    source: Some(source.to_string()),
                    door: DOOR,
                    action: crate::guard::Action::Login,
                    read_only: false,
                    certificate: None,
                },
                now,
            );
            if !d.allowed {
                interactive_login(admin, &who, source, true, now).await;
                return Err((None, Auth::reject()));
            }
            let Ok(hash) = admin.hashes.hash(new).await else {
                interactive_failure(
                    admin,
                    &who,
                    source,
                    "the password hashing pool is busy".into(),
                )
                .await;
                return Err((None, Auth::reject()));
            };
            let dir = admin.guard.store().directory();
            let Some(mut user) = dir.users.get(&name).cloned() else {
                return Err((None, Auth::reject()));
            };
            user.password = Some(PasswordRecord {
                hash,
                temporary: false,
                issued_at: micros(now),
            });
            let version = user.version;
            if let Err(e) = admin.guard.change(
                vec![Op::Put(Entity::User(user), Expect::Version(version))],
                &who,
                now,
            ) {
                interactive_failure(
                    admin,
                    &who,
                    source,
                    format!("the new password could not be stored: {e}"),
                )
                .await;
                return Err((None, Auth::reject()));
            }
            let ev = EventDraft::new(
                "password.changed",
                Category::Authentication,
                Outcome::Success,
            )
            .principal(&who)
            .source(source)
            .door(DOOR)
            .reason("the temporary password was replaced at first login");
            log(admin, ev).await;
            if interactive_login(admin, &who, source, true, now).await {
                Ok(who)
            } else {
                Err((None, Auth::reject()))
            }
        }
    }
}

/// A service user's access key on the password method: the user name is
/// the key id, the password its secret. The secrets are long and random, so
/// they do not lock the service user; failing sources are still throttled.
/// Returns the principal and the key id the session runs on.
pub async fn access_key(
    admin: &AdminContext,
    source: IpAddr,
    key_id: &str,
    secret: Secret,
) -> Option<(PrincipalId, String)> {
    let dir = admin.guard.store().directory();
    let Some((service, key)) = dir
        .service_users
        .values()
        .find_map(|s| s.keys.iter().find(|k| k.id == key_id).map(|k| (s, k)))
    else {
        // Every attempt is an event, an unknown key id too; its source is
        // throttled like any failing one.
        let why = format!(
            "no access key `{}`",
            key_id.chars().take(40).collect::<String>()
        );
        log(admin, attempt(source, "access-key", why)).await;
        admin.guard.source_failed(source, OffsetDateTime::now_utc());
        return None;
    };
    let who = PrincipalId::Service(service.name.clone());
    let now = OffsetDateTime::now_utc();
    match admin.guard.password_gate(&who, Some(source), now) {
        PasswordGate::SourceRefused => {
            let why = "too many failures from this source: refused for the lockout window".into();
            log(admin, failure(&who, source, "access-key", why)).await;
            return None;
        }
        PasswordGate::Delay(d) => tokio::time::sleep(d.min(MAX_DELAY)).await,
        // Access keys never lock their service user (no lockout DoS).
        PasswordGate::Locked { .. } | PasswordGate::Open => {}
    }
    let verified = admin
        .hashes
        .verify(secret, key.secret_hash.clone())
        .await
        .unwrap_or(false);
    if verified && key.status != crate::model::Status::Active {
        let why = format!("access key {key_id} is deactivated");
        log(admin, failure(&who, source, "access-key", why)).await;
        return None;
    }
    let d = admin
        .guard
        .login(
            &who,
            Some(source),
            DOOR,
            Credential::AccessKey,
            verified,
            now,
        )
        .await;
    if !verified {
        // Not a password: no lockout, but the source is throttled.
        admin.guard.source_failed(source, now);
    }
    d.allowed.then(|| (who, key_id.to_string()))
}
