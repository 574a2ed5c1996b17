//! SSH's password and keyboard-interactive methods, translated: each answer
//! becomes one login attempt for the guard (which gates, checks the hash,
//! applies the temporary-password rules and logs). A first login with a
//! temporary password runs as keyboard-interactive: one round for the
//! temporary password, one for the new one (repeated with the reason while
//! the policy refuses it), set through the core's one password path.

use std::borrow::Cow;
use std::net::IpAddr;

use russh::server::Auth;

use super::DOOR;
use crate::commands::Gateway;
use crate::commands::password::{self, PasswordError, Replacing};
use crate::guard::{Attempt, Credential, Proof, Verdict};
use crate::model::PrincipalId;
use crate::store::secrets::Secret;

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

/// One login attempt on this door, decided by the guard.
pub async fn attempt(
    ctx: &Gateway,
    claimed: &str,
    source: IpAddr,
    proof: Proof,
    max_sessions: usize,
) -> Verdict {
    ctx.guard
        .attempt(Attempt {
            claimed,
            source,
            door: DOOR,
            proof,
            max_sessions: Some(max_sessions),
        })
        .await
}

/// What the guard's verdict means for the password method.
pub enum PasswordLogin {
    In {
        who: PrincipalId,
        credential: String,
    },
    Busy,
    Out,
}

/// The plain `password` method: a user's password, or a service user's
/// access key (user = key id, password = secret).
pub async fn password(
    ctx: &Gateway,
    source: IpAddr,
    user: &str,
    secret: Secret,
    max_sessions: usize,
) -> PasswordLogin {
    let proof = if user.starts_with(crate::store::secrets::KEY_ID_PREFIX) {
        Proof::AccessKey(secret)
    } else {
        Proof::Password(secret)
    };
    let verdict = attempt(ctx, user, source, proof, max_sessions).await;
    match verdict {
        Verdict::Accepted { who, credential } => PasswordLogin::In {
            who,
            credential: credential.unwrap_or_else(|| "password".into()),
        },
        Verdict::Busy => PasswordLogin::Busy,
        Verdict::MustChangePassword(_) | Verdict::Rejected => PasswordLogin::Out,
    }
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
    ctx: &Gateway,
    source: IpAddr,
    state: Interactive,
    answers: Vec<Secret>,
    max_sessions: usize,
) -> Result<PrincipalId, (Option<Interactive>, Auth)> {
    match state {
        Interactive::AwaitTemporary(who) => {
            let Some(temporary) = answers.into_iter().next() else {
                return Err((None, Auth::reject()));
            };
            let proof = Proof::TemporaryPassword(temporary.clone());
            let verdict = attempt(ctx, &who.to_string(), source, proof, max_sessions).await;
            match verdict {
                Verdict::MustChangePassword(who) => Err((
                    Some(Interactive::AwaitNew { who, temporary }),
                    new_password_round(format!(
                        "Choose your new password: at least {} characters, not containing your user name.",
                        ctx.passwords.min_length
                    )),
                )),
                Verdict::Busy => Err((Some(Interactive::AwaitTemporary(who)), busy_then_again())),
                _ => Err((None, Auth::reject())),
            }
        }
        Interactive::AwaitNew { who, temporary } => {
            let mut it = answers.into_iter();
            let (Some(new), Some(repeat)) = (it.next(), it.next()) else {
                return Err((None, Auth::reject()));
            };
            match password::change(
                ctx,
                &who,
                source,
                DOOR,
                &temporary,
                Replacing::Temporary,
                new,
                repeat,
            )
            .await
            {
                Ok(()) => {}
                Err(PasswordError::Policy(why)) => {
                    return Err((
                        Some(Interactive::AwaitNew { who, temporary }),
                        new_password_round(why),
                    ));
                }
                Err(PasswordError::Busy) => {
                    return Err((
                        Some(Interactive::AwaitNew { who, temporary }),
                        new_password_round(
                            "The gateway is busy: nothing was changed. Give your new password again."
                                .into(),
                        ),
                    ));
                }
                Err(PasswordError::Failed(_)) => return Err((None, Auth::reject())),
            }
            let proof = Proof::Checked {
                credential: Credential::KeyboardInteractive,
                id: None,
            };
            let verdict = attempt(ctx, &who.to_string(), source, proof, max_sessions).await;
            match verdict {
                Verdict::Accepted { who, .. } => Ok(who),
                _ => Err((None, Auth::reject())),
            }
        }
    }
}

/// The temporary-password round again, after a busy answer: nothing was
/// counted against the person, who is told to try again.
fn busy_then_again() -> Auth {
    Auth::Partial {
        name: Cow::Borrowed("metergate"),
        instructions: Cow::Borrowed(
            "The gateway is busy checking passwords: nothing was counted against you. Give the temporary password again.",
        ),
        prompts: Cow::Owned(vec![(Cow::Borrowed(TEMPORARY_PROMPT), false)]),
    }
}
