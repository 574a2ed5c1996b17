//! `user …`: people, their passwords, keys, end dates, roles and policies.

use super::*;
use crate::mail::{Occasion, Recipient};

pub(super) async fn temporary_password(
    ctx: &Gateway,
    now: OffsetDateTime,
) -> Result<(Secret, PasswordRecord), CommandError> {
    let secret = secrets::generate_password().map_err(|e| CommandError::Failed(e.to_string()))?;
    let hash = ctx
        .hashes
        .hash(secret.clone())
        .await
        .map_err(|e| CommandError::Failed(e.to_string()))?;
    Ok((
        secret,
        PasswordRecord {
            hash,
            temporary: true,
            issued_at: micros(now),
        },
    ))
}

pub(super) fn temporary_words(secret: &Secret, record: &PasswordRecord) -> String {
    format!(
        "temporary password: {}\nit expires at {} and must be changed at first login\n",
        secret.expose(),
        when(record.expires_at())
    )
}

/// The same, for `--json` (and the API): the password shown once.
pub(super) fn temporary_json(name: &str, secret: &Secret, record: &PasswordRecord) -> String {
    to_json(&json!({
        "name": name,
        "temporary_password": secret.expose(),
        "expires_at": when(record.expires_at()),
        "must_change_at_first_login": true,
    }))
}

fn recipient(u: &User) -> Recipient<'_> {
    Recipient {
        user: &u.name,
        email: &u.email,
        first_name: &u.first_name,
        last_name: &u.last_name,
    }
}

/// `mail.sent` or `mail.failed`: to whom, never what.
async fn mail_event(guard: &Guard, caller: &Caller, code: &str, user: &str, to: &str, why: &str) {
    let outcome = if code == "mail.sent" {
        EventOutcome::Success
    } else {
        EventOutcome::Failure
    };
    let ev = EventDraft::new(code, Category::Admin, outcome)
        .principal(&caller.who)
        .source(&caller.source)
        .door(caller.door)
        .reason(why)
        .detail("user", user)
        .detail("to", to);
    guard.record(ev).await;
}

/// What takes a password back when its mail cannot be sent.
struct Undo {
    ops: Vec<Op>,
    /// What the answer says once it is undone, or if that failed.
    done: String,
    failed: String,
}

/// Sends the password message; when it cannot be sent, `undo` takes the
/// password back. It runs as a task of its own: a caller that goes away
/// mid-send (a cut connection, a deadline) cannot leave behind a password
/// nobody received.
#[allow(clippy::too_many_arguments)]
async fn deliver(
    ctx: &Gateway,
    caller: &Caller,
    mailer: &Arc<crate::mail::Mailer>,
    occasion: Occasion,
    u: &User,
    secret: &Secret,
    record: &PasswordRecord,
    undo: Undo,
    now: OffsetDateTime,
) -> Result<(), CommandError> {
    let (guard, mailer, u, secret, caller) = (
        ctx.guard.clone(),
        mailer.clone(),
        u.clone(),
        secret.clone(),
        caller.clone(),
    );
    let expires = when(record.expires_at());
    let task = tokio::spawn(async move {
        let what = match occasion {
            Occasion::Welcome => "the welcome mail",
            Occasion::Resend => "the mail with a new temporary password",
        };
        match mailer
            .send_password(occasion, &recipient(&u), &secret, &expires)
            .await
        {
            Ok(()) => {
                let why = format!("{what} went to {} through {}", u.email, mailer.destination);
                mail_event(&guard, &caller, "mail.sent", &u.name, &u.email, &why).await;
                Ok(())
            }
            Err(why) => {
                let outcome = match guard.change(undo.ops, &caller.who, now) {
                    Ok(_) => undo.done,
                    Err(e) => format!("{} ({e})", undo.failed),
                };
                let message = format!("{what} to {} could not be sent ({why}): {outcome}", u.email);
                mail_event(&guard, &caller, "mail.failed", &u.name, &u.email, &message).await;
                Err(message)
            }
        }
    });
    match task.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(message)) => Err(CommandError::Failed(message)),
        Err(e) => Err(CommandError::Failed(format!(
            "sending the mail failed: {e}"
        ))),
    }
}

/// The answer once the password went by mail: where, until when, and the
/// password itself only when `mail.print_temporary_password` says so.
fn mailed(
    n: &str,
    email: &str,
    secret: &Secret,
    record: &PasswordRecord,
    mailer: &crate::mail::Mailer,
    json_out: bool,
    done: &str,
) -> String {
    let expires = when(record.expires_at());
    if json_out {
        let mut v = json!({
            "name": n,
            "mailed_to": email,
            "expires_at": expires,
            "must_change_at_first_login": true,
        });
        if mailer.print_temporary_password {
            v["temporary_password"] = json!(secret.expose());
        }
        return to_json(&v);
    }
    let mut text = format!(
        "user {n}: temporary password {done} and sent by mail to {email}\nit expires at {expires} and must be changed at first login\n"
    );
    if mailer.print_temporary_password {
        let _ = writeln!(text, "temporary password: {}", secret.expose());
    }
    text
}

pub(super) async fn user(
    ctx: &Gateway,
    caller: &Caller,
    cmd: &UserCommand,
    req: &Input,
    now: OffsetDateTime,
) -> Result<Done, CommandError> {
    let who = &caller.who;
    let dir = ctx.guard.directory();
    match cmd {
        UserCommand::Permissions {
            name: n,
            meter,
            as_of,
        } => {
            let id = PrincipalId::User(n.clone());
            effective::permissions(
                ctx,
                crate::guard::Holder::Principal(&id),
                &format!("user:{n}"),
                meter.as_deref(),
                as_of.as_deref(),
                req.json,
                now,
            )
        }
        UserCommand::Add {
            name: n,
            email: e,
            first,
            last,
            end_date: end,
        } => {
            let mut u = User::new(&name(n)?, &email(e)?);
            u.id = secrets::generate_id().map_err(|e| CommandError::Failed(e.to_string()))?;
            u.first_name = text("first name", first.as_deref().unwrap_or(""), 64)?;
            u.last_name = text("last name", last.as_deref().unwrap_or(""), 64)?;
            u.end_date = end.as_deref().map(|d| end_date(d, now)).transpose()?;
            if dir.users.contains_key(n) {
                return refused(format!("user `{n}` already exists"));
            }
            let (secret, record) = temporary_password(ctx, now).await?;
            u.password = Some(record.clone());
            apply(
                ctx,
                who,
                now,
                vec![Op::Put(Entity::User(u.clone()), Expect::New)],
            )?;
            if let Some(mailer) = &ctx.mail {
                // No account whose password nobody was told.
                let undo = Undo {
                    ops: vec![Op::Delete(Kind::User, n.clone(), 1)],
                    done: format!("user {n} was not created"),
                    failed: format!(
                        "user {n} was created but could not be removed again; delete it"
                    ),
                };
                deliver(
                    ctx,
                    caller,
                    mailer,
                    Occasion::Welcome,
                    &u,
                    &secret,
                    &record,
                    undo,
                    now,
                )
                .await?;
                let text = mailed(n, &u.email, &secret, &record, mailer, req.json, "created");
                return Ok(Done::changed(
                    text,
                    format!("created user {n} ({e}), temporary password mailed"),
                ));
            }
            let text = if req.json {
                temporary_json(n, &secret, &record)
            } else {
                format!("user {n} created\n{}", temporary_words(&secret, &record))
            };
            Ok(Done::changed(
                text,
                format!(
                    "created user {n}: email {e}, first name {:?}, last name {:?}, end date {}",
                    u.first_name,
                    u.last_name,
                    or_none(u.end_date)
                ),
            ))
        }
        UserCommand::List => {
            let rows: Vec<Vec<String>> = dir
                .users
                .values()
                .map(|u| {
                    vec![
                        u.name.clone(),
                        u.email.clone(),
                        u.status.to_string(),
                        u.end_date
                            .map(|d| d.to_string())
                            .unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            if req.json {
                let list: Vec<_> = dir
                    .users
                    .values()
                    .map(|u| json!({"name": u.name, "email": u.email, "status": u.status.to_string(), "access_end_date": u.end_date.map(|d| d.to_string())}))
                    .collect();
                return Ok(Done::show(to_json(&list)));
            }
            Ok(Done::show(table(
                &["NAME", "EMAIL", "STATUS", "ACCESS END DATE"],
                &rows,
            )))
        }
        UserCommand::Show { name: n } => {
            let u = get_user(&dir, n)?;
            let id = PrincipalId::User(n.clone());
            let groups: Vec<String> = dir.groups_of(n).map(|g| g.name.clone()).collect();
            let password = match &u.password {
                None => "none".to_string(),
                Some(p) if p.temporary => format!("temporary, expires {}", when(p.expires_at())),
                Some(p) => format!("set {}", rfc3339(p.issued_at)),
            };
            let locked = ctx.guard.locked_until(&id, now);
            let view = json!({
                "name": u.name, "unique_id": u.id, "version": u.version, "etag": entity_tag(u.version, u.created.at), "email": u.email,
                "first_name": u.first_name, "last_name": u.last_name,
                "status": u.status.to_string(),
                "access_end_date": u.end_date.map(|d| d.to_string()),
                "policies": u.policies, "roles": roles_of(&dir, &id), "groups": groups,
                "created": rfc3339(u.created.at), "created_by": u.created.by,
                "last_modified": rfc3339(u.modified.at), "last_modified_by": u.modified.by,
                "last_login": when(ctx.guard.last_login(&id)),
                "ssh_keys": u.ssh_keys.len(), "password": password,
                "password_login_locked_until": locked.map(rfc3339),
                "second_factor": factor_state(&u),
                "recovery_codes_left": u.active_factor().map(|f| f.recovery.len()),
            });
            if req.json {
                return Ok(Done::show(to_json(&view)));
            }
            let mut out = String::new();
            let list = |v: &[String]| {
                if v.is_empty() {
                    "-".to_string()
                } else {
                    v.join(", ")
                }
            };
            let _ = writeln!(out, "name:             {}", u.name);
            let _ = writeln!(out, "unique id:        {}", u.id);
            let _ = writeln!(out, "email:            {}", u.email);
            let _ = writeln!(out, "first name:       {}", u.first_name);
            let _ = writeln!(out, "last name:        {}", u.last_name);
            let _ = writeln!(out, "status:           {}", u.status);
            let _ = writeln!(
                out,
                "access end date:  {}",
                u.end_date
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| "-".into())
            );
            let _ = writeln!(out, "policies:         {}", list(&u.policies));
            let _ = writeln!(out, "roles:            {}", list(&roles_of(&dir, &id)));
            let _ = writeln!(out, "groups:           {}", list(&groups));
            let _ = writeln!(
                out,
                "created:          {} by {}",
                rfc3339(u.created.at),
                u.created.by
            );
            let _ = writeln!(
                out,
                "last modified:    {} by {}",
                rfc3339(u.modified.at),
                u.modified.by
            );
            let _ = writeln!(out, "last login:       {}", when(ctx.guard.last_login(&id)));
            let _ = writeln!(out, "ssh keys:         {}", u.ssh_keys.len());
            let _ = writeln!(out, "password:         {password}");
            let _ = writeln!(out, "second factor:    {}", factor_words(&u));
            if let Some(l) = locked {
                let _ = writeln!(
                    out,
                    "password login locked until {} (user unlock {n})",
                    rfc3339(l)
                );
            }
            Ok(Done::show(out))
        }
        UserCommand::Edit {
            name: n,
            email: e,
            first,
            last,
        } => {
            let mut u = get_user(&dir, n)?;
            let mut what = Vec::new();
            if let Some(e) = e {
                let new = email(e)?;
                // Where temporary passwords go is a credential: changing
                // someone else's is taking over their next password.
                let target = PrincipalId::User(n.clone());
                if *who != target && new != u.email {
                    confer(ctx, caller, Conferral::CredentialsOf(&target), now).await?;
                }
                what.push(format!("email {} → {new}", u.email));
                u.email = new;
            }
            if let Some(f) = first {
                let new = text("first name", f, 64)?;
                what.push(format!("first name {:?} → {new:?}", u.first_name));
                u.first_name = new;
            }
            if let Some(l) = last {
                let new = text("last name", l, 64)?;
                what.push(format!("last name {:?} → {new:?}", u.last_name));
                u.last_name = new;
            }
            if what.is_empty() {
                return refused("nothing to change: give --email, --first or --last");
            }
            apply(ctx, who, now, vec![put_user(u)])?;
            Ok(Done::changed(
                format!("user {n} updated\n"),
                format!("user {n}: {}", what.join("; ")),
            ))
        }
        UserCommand::Delete { name: n } => {
            let u = get_user(&dir, n)?;
            let gone = format!(
                "email {}, status {}, end date {}, policies {}, groups {}, {} keys",
                u.email,
                u.status,
                or_none(u.end_date),
                listed(&u.policies),
                listed(&dir.groups_of(n).map(|g| g.name.clone()).collect::<Vec<_>>()),
                u.ssh_keys.len()
            );
            let mut ops = vec![Op::Delete(Kind::User, n.clone(), u.version)];
            for g in dir.groups_of(n) {
                let mut g = g.clone();
                g.members.retain(|m| m != n);
                ops.push(put_group(g));
            }
            apply(ctx, who, now, ops)?;
            let ended = ctx
                .sessions
                .kill_principal(&PrincipalId::User(n.clone()), "user deleted");
            Ok(Done::changed(
                format!("user {n} deleted ({ended} live sessions ended); their events are kept\n"),
                format!("deleted user {n} (was: {gone}), ended {ended} sessions"),
            ))
        }
        UserCommand::Deactivate { name: n } | UserCommand::Activate { name: n } => {
            let active = matches!(cmd, UserCommand::Activate { .. });
            let mut u = get_user(&dir, n)?;
            if active {
                // Access brought back is access given.
                let target = PrincipalId::User(n.clone());
                confer(ctx, caller, Conferral::CredentialsOf(&target), now).await?;
            }
            u.status = status(active);
            apply(ctx, who, now, vec![put_user(u)])?;
            Ok(status_changed(
                ctx,
                &PrincipalId::User(n.clone()),
                "user",
                n,
                active,
            ))
        }
        UserCommand::ResendPassword { name: n } => {
            let mut u = get_user(&dir, n)?;
            let (secret, record) = temporary_password(ctx, now).await?;
            let before = u.password.replace(record.clone());
            let next = apply(ctx, who, now, vec![put_user(u.clone())])?;
            if let Some(mailer) = &ctx.mail {
                // The new password is revoked: the one before stands.
                let ops = match next.users.get(n) {
                    Some(now_user) => {
                        let mut back = now_user.clone();
                        back.password = before;
                        vec![put_user(back)]
                    }
                    None => Vec::new(),
                };
                let undo = Undo {
                    ops,
                    done: "the new temporary password was revoked; the password before it stands"
                        .into(),
                    failed: "the new temporary password could not be revoked: resend again".into(),
                };
                deliver(
                    ctx,
                    caller,
                    mailer,
                    Occasion::Resend,
                    &u,
                    &secret,
                    &record,
                    undo,
                    now,
                )
                .await?;
                let text = mailed(n, &u.email, &secret, &record, mailer, req.json, "re-issued");
                return Ok(Done::changed(
                    text,
                    format!("re-issued temporary password of {n}, mailed"),
                ));
            }
            let text = if req.json {
                temporary_json(n, &secret, &record)
            } else {
                format!(
                    "new temporary password for {n}\n{}",
                    temporary_words(&secret, &record)
                )
            };
            Ok(Done::changed(
                text,
                format!("re-issued temporary password of {n}"),
            ))
        }
        UserCommand::SetEndDate { name: n, date } => {
            let mut u = get_user(&dir, n)?;
            let new = if date == "none" {
                None
            } else {
                Some(end_date(date, now)?)
            };
            // A later end date, or none, gives access for longer.
            let was = or_none(u.end_date);
            let longer = match (u.end_date, new) {
                (Some(_), None) => true,
                (Some(old), Some(new)) => new > old,
                (None, _) => false,
            };
            if longer {
                let target = PrincipalId::User(n.clone());
                confer(ctx, caller, Conferral::CredentialsOf(&target), now).await?;
            }
            u.end_date = new;
            let shown = u
                .end_date
                .map(|d| d.to_string())
                .unwrap_or_else(|| "none".into());
            apply(ctx, who, now, vec![put_user(u)])?;
            Ok(Done::changed(
                format!("user {n}: access end date {shown}\n"),
                format!("user {n}: access end date {was} → {shown}"),
            ))
        }
        UserCommand::AddKey { name: n, key } => {
            let line = match key.strip_prefix('@') {
                Some(path) => file(req, path)?.to_string(),
                None => key.clone(),
            };
            let line = ssh_key(&line)?;
            let mut u = get_user(&dir, n)?;
            // Whoever holds the key acts as the user.
            let target = PrincipalId::User(n.clone());
            confer(ctx, caller, Conferral::CredentialsOf(&target), now).await?;
            let body = line
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_string();
            if u.ssh_keys
                .iter()
                .any(|k| k.split_whitespace().nth(1) == Some(body.as_str()))
            {
                return refused(format!("user {n} already has this key"));
            }
            let kind = line
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            u.ssh_keys.push(line);
            apply(ctx, who, now, vec![put_user(u)])?;
            Ok(Done::changed(
                format!("key added to {n}\n"),
                format!("user {n}: added a {kind} key"),
            ))
        }
        UserCommand::RemoveKey { name: n, key } => {
            let mut u = get_user(&dir, n)?;
            let before = u.ssh_keys.len();
            let wanted = key.trim();
            u.ssh_keys.retain(|k| {
                let parts: Vec<&str> = k.split_whitespace().collect();
                !(k == wanted
                    || parts.get(1) == Some(&wanted)
                    || parts
                        .get(2..)
                        .is_some_and(|c| !c.is_empty() && c.join(" ") == wanted))
            });
            let removed = before - u.ssh_keys.len();
            if removed == 0 {
                return refused(format!("user {n} has no key matching `{wanted}`"));
            }
            let gone: Vec<String> = get_user(&dir, n)?
                .ssh_keys
                .into_iter()
                .filter(|k| !u.ssh_keys.contains(k))
                .collect();
            apply(ctx, who, now, vec![put_user(u)])?;
            // Sessions that logged in with a removed key end with it.
            let ended: usize = gone
                .iter()
                .filter_map(|line| crate::sshkeys::line_credential(line))
                .map(|k| {
                    ctx.sessions
                        .kill_credential(&k, &format!("the key was removed from user {n}"))
                })
                .sum();
            Ok(Done::changed(
                format!("{removed} key(s) removed from {n} ({ended} live sessions ended)\n"),
                format!("user {n}: removed {removed} key(s), ended {ended} sessions"),
            ))
        }
        UserCommand::GrantRole {
            name: n,
            role: r,
            meters,
        } => {
            let mut u = get_user(&dir, n)?;
            get_role(&dir, r)?;
            let selectors = meters
                .split(',')
                .map(|s| MeterSelector::parse(s).map_err(|e| CommandError::Refused(e.to_string())))
                .collect::<Result<Vec<_>, _>>()?;
            let st = Statement::allow_role(r, selectors);
            if u.inline.contains(&st) {
                return refused(format!("user {n} already has {st}"));
            }
            confer(
                ctx,
                caller,
                Conferral::Statements(std::slice::from_ref(&st)),
                now,
            )
            .await?;
            u.inline.push(st.clone());
            apply(ctx, who, now, vec![put_user(u)])?;
            Ok(Done::changed(
                format!("user {n}: {st}\n"),
                format!("user {n}: inline policy += {st}"),
            ))
        }
        UserCommand::Unlock { name: n } => {
            get_user(&dir, n)?;
            let was = ctx.guard.unlock(&PrincipalId::User(n.clone()))?;
            let words = if was {
                "password login unlocked"
            } else {
                "was not locked"
            };
            Ok(Done::changed(
                format!("user {n}: {words}\n"),
                format!("user {n}: {words}"),
            ))
        }
        UserCommand::Mfa { command } => mfa(ctx, caller, command, req.json, now).await,
        UserCommand::Attach { name: n, policy: p } | UserCommand::Detach { name: n, policy: p } => {
            let attach = matches!(cmd, UserCommand::Attach { .. });
            let mut u = get_user(&dir, n)?;
            let were = listed(&u.policies);
            let verb = toggle_policy(&dir, &mut u.policies, p, attach, &format!("user {n}"))?;
            confer_toggle(ctx, caller, &dir, p, attach, now).await?;
            let are = listed(&u.policies);
            apply(ctx, who, now, vec![put_user(u)])?;
            Ok(Done::changed(
                format!("policy {p} {verb} user {n}\n"),
                format!("policy {p} {verb} user {n}: policies {were} → {are}"),
            ))
        }
    }
}
