//! `user mfa enroll|confirm|reset` and `mfa` (step up): a person's TOTP
//! factor. The secret and the recovery codes are shown once, to the caller,
//! and never reach an event.

use super::*;
use crate::guard::mfa::{self as totp, FactorCheck, FactorUse};

/// "active", "enrolled (not confirmed)" or "none", for `user show`.
pub(super) fn factor_state(u: &User) -> &'static str {
    match &u.mfa {
        Some(f) if f.confirmed => "active",
        Some(_) => "enrolled",
        None => "none",
    }
}

pub(super) fn factor_words(u: &User) -> String {
    match &u.mfa {
        Some(f) if f.confirmed => format!(
            "active since {} ({} recovery codes left)",
            rfc3339(f.enrolled.at),
            f.recovery.len()
        ),
        Some(_) => "enrolled, waiting for `user mfa confirm` with one code".into(),
        None => "none".into(),
    }
}

/// The URI as a QR code for a terminal: two rows of modules per line, dark
/// on light as phone cameras expect.
fn qr_text(uri: &str) -> String {
    use qrcode::render::unicode::Dense1x2;
    match qrcode::QrCode::new(uri.as_bytes()) {
        Ok(code) => code
            .render::<Dense1x2>()
            .dark_color(Dense1x2::Light)
            .light_color(Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
        Err(_) => "(the URI is too long for a QR code; type the secret instead)".into(),
    }
}

async fn factor_event(ctx: &Gateway, caller: &Caller, code: &str, name: &str, why: String) {
    let ev = EventDraft::new(code, Category::Admin, EventOutcome::Success)
        .principal(&caller.who)
        .source(&caller.source)
        .door(caller.door)
        .action(format!("user mfa {name}"))
        .reason(why)
        .detail("user", name);
    ctx.guard.record(ev).await;
}

pub(super) async fn mfa(
    ctx: &Gateway,
    caller: &Caller,
    cmd: &MfaCommand,
    json_out: bool,
    now: OffsetDateTime,
) -> Result<Done, CommandError> {
    let dir = ctx.guard.directory();
    match cmd {
        MfaCommand::Enroll { name: n } => {
            let mut u = get_user(&dir, n)?;
            if u.active_factor().is_some() {
                // A stolen first credential must not replace the factor.
                return refused(format!(
                    "user `{n}` already has an active second factor: User Management resets it first (`user mfa reset {n}`)"
                ));
            }
            let secret = totp::new_secret().map_err(|e| CommandError::Failed(e.to_string()))?;
            let issuer = ctx.mfa_issuer.as_str();
            let uri = totp::otpauth_uri(issuer, n, &secret);
            u.mfa = Some(SecondFactor {
                secret: secret.clone(),
                confirmed: false,
                enrolled: Stamp {
                    at: micros(now),
                    by: caller.who.to_string(),
                },
                recovery: Vec::new(),
            });
            apply(ctx, &caller.who, now, vec![put_user(u)])?;
            factor_event(
                ctx,
                caller,
                "mfa.enroll",
                n,
                format!("second factor enrolled for user {n}; not active until confirmed"),
            )
            .await;
            let text = if json_out {
                to_json(
                    &json!({"name": n, "otpauth_uri": uri, "secret": secret, "confirmed": false}),
                )
            } else {
                format!(
                    "second factor enrolled for {n} (not active yet)\n\
                     scan this with an authenticator app, or type the secret:\n\
                     {}\n{uri}\nsecret: {secret}\n\
                     then confirm with one code: user mfa confirm {n} CODE\n",
                    qr_text(&uri)
                )
            };
            Ok(Done::show(text))
        }
        MfaCommand::Confirm { name: n, code } => {
            let mut u = get_user(&dir, n)?;
            let factor = match &u.mfa {
                Some(f) if !f.confirmed => f.clone(),
                Some(_) => return refused(format!("user `{n}`'s second factor is already active")),
                None => {
                    return refused(format!(
                        "user `{n}` has no second factor enrolled: `user mfa enroll {n}` first"
                    ));
                }
            };
            let unix = now.unix_timestamp().max(0) as u64;
            let id = PrincipalId::User(n.clone());
            let Some(step) = totp::matching_step(&factor.secret, code, unix) else {
                return refused(
                    "that code does not match the enrolled secret: give the current 6-digit code (check the phone's clock)",
                );
            };
            // The confirming code cannot be used again for a login.
            ctx.guard.forget_factor(&id);
            ctx.guard.take_step(&id, step);
            let (shown, kept) =
                totp::new_recovery_codes().map_err(|e| CommandError::Failed(e.to_string()))?;
            if let Some(f) = u.mfa.as_mut() {
                f.confirmed = true;
                f.recovery = kept;
                f.enrolled.at = micros(now);
            }
            apply(ctx, &caller.who, now, vec![put_user(u)])?;
            factor_event(
                ctx,
                caller,
                "mfa.confirm",
                n,
                format!(
                    "second factor of user {n} is active; {} recovery codes issued",
                    shown.len()
                ),
            )
            .await;
            let codes: Vec<&str> = shown.iter().map(|c| c.expose()).collect();
            let text = if json_out {
                to_json(&json!({"name": n, "active": true, "recovery_codes": codes}))
            } else {
                format!(
                    "second factor of {n} is active: every login now asks for a code\n\
                     recovery codes (each works once; shown only now, keep them offline):\n  {}\n",
                    codes.join("\n  ")
                )
            };
            Ok(Done::show(text))
        }
        MfaCommand::Reset { name: n } => {
            let mut u = get_user(&dir, n)?;
            if u.mfa.take().is_none() {
                return refused(format!("user `{n}` has no second factor"));
            }
            apply(ctx, &caller.who, now, vec![put_user(u)])?;
            ctx.guard.forget_factor(&PrincipalId::User(n.clone()));
            factor_event(
                ctx,
                caller,
                "mfa.reset",
                n,
                format!("second factor of user {n} removed"),
            )
            .await;
            Ok(Done::show(format!(
                "second factor of {n} removed: logins ask for none until one is enrolled again\n"
            )))
        }
    }
}

/// `mfa CODE`: proves the second factor in this session, which may then use
/// what statements with `require_mfa` (or `[mfa] required`) allow.
pub(super) async fn step_up(
    ctx: &Gateway,
    caller: &Caller,
    code: &str,
) -> Result<Done, CommandError> {
    if !matches!(caller.who, PrincipalId::User(_)) || caller.session == 0 {
        return refused(
            "a second factor is for people in a session (SSH, web console); this caller needs none",
        );
    }
    if caller.factor.proven() {
        return Ok(Done::show("this session already has a second factor\n"));
    }
    let secret = Secret::new(code);
    match ctx
        .guard
        .check_factor(
            &caller.who,
            caller.addr,
            caller.door,
            &secret,
            FactorUse::StepUp,
        )
        .await
    {
        FactorCheck::Right { recovery } => {
            caller.factor.raise();
            let ev = EventDraft::new(
                "mfa.step-up",
                Category::Authentication,
                EventOutcome::Success,
            )
            .principal(&caller.who)
            .source(&caller.source)
            .door(caller.door)
            .action("mfa")
            .reason(if recovery {
                "the session proved a second factor with a recovery code"
            } else {
                "the session proved a second factor"
            })
            .detail("session", caller.session);
            ctx.guard.record(ev).await;
            Ok(Done::show(
                "second factor accepted: this session may now use what needs one\n",
            ))
        }
        FactorCheck::Wrong => {
            refused("the code was refused (wrong, already used, or no active factor)")
        }
        FactorCheck::Locked => {
            refused("too many failures from your address: wait for the lockout window")
        }
        FactorCheck::Failed => Err(CommandError::Failed(
            "the code could not be recorded as used: try again".into(),
        )),
    }
}
