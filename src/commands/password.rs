//! One path for a person to set a new password, whichever door asks: the
//! SSH first login (replacing the temporary password), `passwd`, and later
//! the web. The policy is checked, the hash made in the bounded pool, the
//! change stored and the event written.

use std::net::IpAddr;

use time::OffsetDateTime;

use super::Gateway;
use crate::model::{PasswordRecord, PrincipalId, micros};
use crate::store::secrets::{Secret, SecretError};
use crate::store::{Category, Entity, EventDraft, Expect, Op, Outcome};

/// Why a new password was not set.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The policy refused it; the person may try another (logged).
    #[error("{0}")]
    Policy(String),
    /// The hashing pool is full: nothing changed, try again.
    #[error("the password hashing pool is busy; try again")]
    Busy,
    #[error("{0}")]
    Failed(String),
}

/// What is being replaced, for the policy's "must differ from" rule and
/// the event.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Replacing {
    /// The temporary password of a first login.
    Temporary,
    /// The current password (`passwd`).
    Current,
}

/// Sets `new` as `who`'s password once it passes the policy (and equals
/// `repeat`). The old secret was already checked by the guard.
#[allow(clippy::too_many_arguments)]
pub async fn change(
    ctx: &Gateway,
    who: &PrincipalId,
    source: IpAddr,
    door: &'static str,
    old: &Secret,
    replacing: Replacing,
    new: Secret,
    repeat: Secret,
) -> Result<(), PasswordError> {
    let PrincipalId::User(name) = who else {
        return Err(PasswordError::Failed("only users have passwords".into()));
    };
    let word = match replacing {
        Replacing::Temporary => "temporary",
        Replacing::Current => "current",
    };
    let violation = if new.expose() != repeat.expose() {
        Some("The two new passwords differ.".to_string())
    } else {
        ctx.passwords
            .violation(name, new.expose(), old.expose(), word)
    };
    if let Some(why) = violation {
        let ev = EventDraft::new(
            "password.rejected",
            Category::Authentication,
            Outcome::Failure,
        )
        .principal(who)
        .source(source)
        .door(door)
        .reason(why.clone());
        ctx.guard.record(ev).await;
        return Err(PasswordError::Policy(why));
    }
    let hash = match ctx.hashes.hash(new).await {
        Ok(h) => h,
        Err(SecretError::Busy) => return Err(PasswordError::Busy),
        Err(e) => return Err(PasswordError::Failed(e.to_string())),
    };
    let now = OffsetDateTime::now_utc();
    let dir = ctx.guard.directory();
    let Some(mut user) = dir.users.get(name).cloned() else {
        return Err(PasswordError::Failed(format!("no user `{name}`")));
    };
    // A first login sets a password only while the temporary one it gave is
    // still the one stored (not replaced meanwhile on another door, nor
    // resent) and the account is active: a step left open in one login
    // cannot overwrite a later password.
    if replacing == Replacing::Temporary {
        let still = match &user.password {
            Some(r) if r.temporary && user.status == crate::model::Status::Active => {
                match ctx.hashes.verify(old.clone(), r.hash.clone()).await {
                    Ok(v) => v,
                    Err(SecretError::Busy) => return Err(PasswordError::Busy),
                    Err(_) => false,
                }
            }
            _ => false,
        };
        if !still {
            return Err(PasswordError::Failed(
                "the temporary password is no longer the one to replace: log in again".into(),
            ));
        }
    }
    user.password = Some(PasswordRecord {
        hash,
        temporary: false,
        issued_at: micros(now),
    });
    let version = user.version;
    ctx.guard
        .change(
            vec![Op::Put(Entity::User(user), Expect::Version(version))],
            who,
            now,
        )
        .map_err(|e| PasswordError::Failed(format!("the new password could not be stored: {e}")))?;
    let reason = match replacing {
        Replacing::Temporary => "the temporary password was replaced at first login",
        Replacing::Current => "changed with passwd",
    };
    let ev = EventDraft::new(
        "password.changed",
        Category::Authentication,
        Outcome::Success,
    )
    .principal(who)
    .source(source)
    .door(door)
    .reason(reason);
    ctx.guard.record(ev).await;
    Ok(())
}
