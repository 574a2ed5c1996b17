//! SSH's password and keyboard-interactive methods, translated: each answer
//! becomes one login attempt for the guard (which gates, checks the hash or
//! the code, applies the temporary-password rules and logs).
//!
//! Keyboard-interactive asks `Password: `; a first login's temporary
//! password then asks for a new one (repeated with the reason while the
//! policy refuses it), set through the core's one password path. A person
//! with a second factor is then asked `Code: `. After a public key or the
//! password method, the guard's "needs a code" is a partial success
//! (RFC 4252 §5.1) that continues with keyboard-interactive for the code.

use std::borrow::Cow;
use std::net::IpAddr;

use russh::server::Auth;
use russh::{MethodKind, MethodSet};

use super::DOOR;
use crate::commands::Gateway;
use crate::commands::password::{self, PasswordError, Replacing};
use crate::guard::{Attempt, Credential, Proof, Verdict};
use crate::model::PrincipalId;
use crate::store::secrets::Secret;

/// Wrong codes one connection may give before its login starts over.
const CODE_TRIES: u8 = 3;

/// A first credential was right; the code is awaited.
#[derive(Clone)]
pub struct Pending {
    pub who: PrincipalId,
    pub credential: Credential,
    pub id: Option<String>,
    pub tries: u8,
    /// A first login: the temporary password was right; the code comes
    /// before the new password is set, so a temporary password alone never
    /// sets one.
    pub first_login: Option<Secret>,
}

/// Where a keyboard-interactive login stands.
pub enum Interactive {
    /// The password prompt was sent.
    Password(PrincipalId),
    /// The temporary password was right (and the code, if the person has
    /// a factor); the new-password prompts were sent.
    NewPassword {
        who: PrincipalId,
        temporary: Secret,
        second_factor: bool,
    },
    /// The code prompt was sent.
    Code(Pending),
}

pub const PASSWORD_PROMPT: &str = "Password: ";
pub const NEW_PROMPT: &str = "New password: ";
pub const REPEAT_PROMPT: &str = "Repeat new password: ";
pub const CODE_PROMPT: &str = "Code: ";

fn round(instructions: impl Into<Cow<'static, str>>, prompts: &[&'static str]) -> Auth {
    Auth::Partial {
        name: Cow::Borrowed("metergate"),
        instructions: instructions.into(),
        prompts: Cow::Owned(prompts.iter().map(|p| (Cow::Borrowed(*p), false)).collect()),
    }
}

pub fn password_round() -> Auth {
    round("", &[PASSWORD_PROMPT])
}

pub fn new_password_round(instructions: String) -> Auth {
    round(instructions, &[NEW_PROMPT, REPEAT_PROMPT])
}

pub fn code_round(instructions: &'static str) -> Auth {
    round(instructions, &[CODE_PROMPT])
}

const CODE_INSTRUCTIONS: &str =
    "Second factor: give the code from your authenticator app (or a recovery code).";

/// The first credential is right and a code is needed: a partial success
/// that continues with keyboard-interactive only.
pub fn needs_code() -> Auth {
    Auth::Reject {
        proceed_with_methods: Some(MethodSet::from(&[MethodKind::KeyboardInteractive][..])),
        partial_success: true,
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
    /// Right, and the person has a second factor: ask for the code.
    Code(Pending),
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
        Verdict::Accepted {
            who, credential, ..
        } => PasswordLogin::In {
            who,
            credential: credential.unwrap_or_else(|| "password".into()),
        },
        Verdict::NeedsCode {
            who,
            credential,
            id,
        } => PasswordLogin::Code(Pending {
            who,
            credential,
            id,
            tries: 0,
            first_login: None,
        }),
        Verdict::Busy => PasswordLogin::Busy,
        Verdict::MustChangePassword(_) | Verdict::Rejected => PasswordLogin::Out,
    }
}

/// Keyboard-interactive begins: the code round when a first credential
/// was right in this connection, else the password round.
pub fn interactive_start(user: &str, pending: Option<Pending>) -> Option<(Interactive, Auth)> {
    if let Some(p) = pending {
        return Some((Interactive::Code(p), code_round(CODE_INSTRUCTIONS)));
    }
    match PrincipalId::parse(user).ok()? {
        who @ PrincipalId::User(_) => Some((Interactive::Password(who), password_round())),
        _ => None,
    }
}

/// A login that is complete: who, the credential the session runs on, and
/// whether a second factor was given.
pub struct LoggedIn {
    pub who: PrincipalId,
    pub credential: String,
    pub second_factor: bool,
}

/// One answer of a keyboard-interactive login: the next state and what to
/// tell the client, or the login complete.
// One answer per login round: its size does not matter.
#[allow(clippy::result_large_err)]
pub async fn interactive_step(
    ctx: &Gateway,
    source: IpAddr,
    state: Interactive,
    answers: Vec<Secret>,
    max_sessions: usize,
) -> Result<LoggedIn, (Option<Interactive>, Auth)> {
    match state {
        Interactive::Password(who) => {
            let Some(secret) = answers.into_iter().next() else {
                return Err((None, Auth::reject()));
            };
            let proof = Proof::InteractivePassword(secret.clone());
            let verdict = attempt(ctx, &who.to_string(), source, proof, max_sessions).await;
            match verdict {
                Verdict::MustChangePassword(who) if ctx.guard.asks_code(&who) => Err((
                    Some(Interactive::Code(Pending {
                        who,
                        credential: Credential::KeyboardInteractive,
                        id: None,
                        tries: 0,
                        first_login: Some(secret),
                    })),
                    code_round(CODE_INSTRUCTIONS),
                )),
                Verdict::MustChangePassword(who) => Err((
                    Some(Interactive::NewPassword {
                        who,
                        temporary: secret,
                        second_factor: false,
                    }),
                    first_login_round(ctx),
                )),
                Verdict::Busy => Err((Some(Interactive::Password(who)), busy_then_again())),
                other => verdict_step(other),
            }
        }
        Interactive::NewPassword {
            who,
            temporary,
            second_factor,
        } => {
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
                        Some(Interactive::NewPassword {
                            who,
                            temporary,
                            second_factor,
                        }),
                        new_password_round(why),
                    ));
                }
                Err(PasswordError::Busy) => {
                    return Err((
                        Some(Interactive::NewPassword {
                            who,
                            temporary,
                            second_factor,
                        }),
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
                second_factor,
            };
            verdict_step(attempt(ctx, &who.to_string(), source, proof, max_sessions).await)
        }
        Interactive::Code(mut pending) => {
            let Some(code) = answers.into_iter().next() else {
                return Err((None, Auth::reject()));
            };
            if let Some(temporary) = pending.first_login.take() {
                return first_login_code(ctx, source, pending, temporary, code).await;
            }
            let proof = Proof::Code {
                first: pending.credential,
                id: pending.id.clone(),
                code,
            };
            let verdict = attempt(ctx, &pending.who.to_string(), source, proof, max_sessions).await;
            match verdict {
                Verdict::Busy => Err((
                    Some(Interactive::Code(pending)),
                    code_round(
                        "The gateway could not check the code just now: nothing was counted. Give it again.",
                    ),
                )),
                Verdict::Rejected => {
                    pending.tries += 1;
                    if pending.tries >= CODE_TRIES {
                        return Err((None, Auth::reject()));
                    }
                    Err((
                        Some(Interactive::Code(pending)),
                        code_round(
                            "That code was refused. Give the current code (each code counts once).",
                        ),
                    ))
                }
                other => verdict_step(other),
            }
        }
    }
}

fn first_login_round(ctx: &Gateway) -> Auth {
    new_password_round(format!(
        "First login: choose your new password: at least {} characters, not containing your user name.",
        ctx.passwords.min_length
    ))
}

/// A first login's code, checked before the new password is asked for.
// One answer per login round: its size does not matter.
#[allow(clippy::result_large_err)]
async fn first_login_code(
    ctx: &Gateway,
    source: IpAddr,
    mut pending: Pending,
    temporary: Secret,
    code: Secret,
) -> Result<LoggedIn, (Option<Interactive>, Auth)> {
    use crate::guard::mfa::{FactorCheck, FactorUse};
    match ctx
        .guard
        .check_factor(&pending.who, Some(source), DOOR, &code, FactorUse::Login)
        .await
    {
        FactorCheck::Right { .. } => Err((
            Some(Interactive::NewPassword {
                who: pending.who,
                temporary,
                second_factor: true,
            }),
            first_login_round(ctx),
        )),
        FactorCheck::Wrong if pending.tries + 1 < CODE_TRIES => {
            pending.tries += 1;
            pending.first_login = Some(temporary);
            Err((
                Some(Interactive::Code(pending)),
                code_round("That code was refused. Give the current code (each code counts once)."),
            ))
        }
        FactorCheck::Failed => {
            pending.first_login = Some(temporary);
            Err((
                Some(Interactive::Code(pending)),
                code_round(
                    "The gateway could not check the code just now: nothing was counted. Give it again.",
                ),
            ))
        }
        FactorCheck::Wrong | FactorCheck::Locked => Err((None, Auth::reject())),
    }
}

/// A verdict that ends a round: in, on to the code, or out.
// One answer per login round: its size does not matter.
#[allow(clippy::result_large_err)]
fn verdict_step(verdict: Verdict) -> Result<LoggedIn, (Option<Interactive>, Auth)> {
    match verdict {
        Verdict::Accepted {
            who,
            credential,
            second_factor,
        } => Ok(LoggedIn {
            who,
            credential: credential.unwrap_or_else(|| "password".into()),
            second_factor,
        }),
        Verdict::NeedsCode {
            who,
            credential,
            id,
        } => Err((
            Some(Interactive::Code(Pending {
                who,
                credential,
                id,
                tries: 0,
                first_login: None,
            })),
            code_round(CODE_INSTRUCTIONS),
        )),
        _ => Err((None, Auth::reject())),
    }
}

/// The password round again, after a busy answer: nothing was counted
/// against the person, who is told to try again.
fn busy_then_again() -> Auth {
    round(
        "The gateway is busy checking passwords: nothing was counted against you. Give the password again.",
        &[PASSWORD_PROMPT],
    )
}
