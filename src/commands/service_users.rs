//! `service-user …`: automated principals and their access keys.

use super::*;

pub(super) async fn service_user(
    ctx: &Gateway,
    caller: &Caller,
    cmd: &ServiceUserCommand,
    json_out: bool,
    now: OffsetDateTime,
) -> Result<Done, CommandError> {
    let who = &caller.who;
    let dir = ctx.guard.directory();
    match cmd {
        ServiceUserCommand::Permissions {
            name: n,
            meter,
            as_of,
        } => {
            let id = PrincipalId::Service(n.clone());
            effective::permissions(
                ctx,
                crate::guard::Holder::Principal(&id),
                &format!("svc:{n}"),
                meter.as_deref(),
                as_of.as_deref(),
                json_out,
                now,
            )
        }
        ServiceUserCommand::Add {
            name: n,
            description,
        } => {
            let mut s = ServiceUser::new(&name(n)?);
            s.id = secrets::generate_id().map_err(|e| CommandError::Failed(e.to_string()))?;
            s.description = text("description", description, 256)?;
            apply(
                ctx,
                who,
                now,
                vec![Op::Put(Entity::ServiceUser(s), Expect::New)],
            )?;
            Ok(Done::changed(
                format!("service user {n} created\n"),
                format!("created service user {n}"),
            ))
        }
        ServiceUserCommand::List => {
            if json_out {
                let list: Vec<_> = dir
                    .service_users
                    .values()
                    .map(|s| json!({"name": s.name, "status": s.status.to_string(), "keys": s.keys.len(), "policies": s.policies}))
                    .collect();
                return Ok(Done::show(to_json(&list)));
            }
            let rows: Vec<Vec<String>> = dir
                .service_users
                .values()
                .map(|s| {
                    vec![
                        s.name.clone(),
                        s.status.to_string(),
                        s.keys.len().to_string(),
                        s.policies.join(","),
                    ]
                })
                .collect();
            Ok(Done::show(table(
                &["NAME", "STATUS", "KEYS", "POLICIES"],
                &rows,
            )))
        }
        ServiceUserCommand::Show { name: n } => {
            let s = get_service(&dir, n)?;
            let id = PrincipalId::Service(n.clone());
            let view = json!({
                "name": s.name, "unique_id": s.id, "version": s.version, "etag": entity_tag(s.version, s.created.at), "description": s.description, "status": s.status.to_string(),
                "policies": s.policies, "roles": roles_of(&dir, &id),
                "keys": s.keys.iter().map(|k| json!({"id": k.id, "status": k.status.to_string()})).collect::<Vec<_>>(),
                "created": rfc3339(s.created.at), "created_by": s.created.by,
                "last_modified": rfc3339(s.modified.at), "last_modified_by": s.modified.by,
                "last_login": when(ctx.guard.last_login(&id)),
            });
            if json_out {
                return Ok(Done::show(to_json(&view)));
            }
            let mut out = String::new();
            let _ = writeln!(
                out,
                "name:           {}\nunique id:      {}\ndescription:    {}\nstatus:         {}",
                s.name, s.id, s.description, s.status
            );
            let _ = writeln!(
                out,
                "policies:       {}",
                if s.policies.is_empty() {
                    "-".into()
                } else {
                    s.policies.join(", ")
                }
            );
            let _ = writeln!(out, "roles:          {}", roles_of(&dir, &id).join(", "));
            for k in &s.keys {
                let _ = writeln!(out, "access key:     {} {}", k.id, k.status);
            }
            let _ = writeln!(
                out,
                "created:        {} by {}",
                rfc3339(s.created.at),
                s.created.by
            );
            let _ = writeln!(
                out,
                "last modified:  {} by {}",
                rfc3339(s.modified.at),
                s.modified.by
            );
            let _ = writeln!(out, "last login:     {}", when(ctx.guard.last_login(&id)));
            Ok(Done::show(out))
        }
        ServiceUserCommand::Edit {
            name: n,
            description,
        } => {
            let mut s = get_service(&dir, n)?;
            let was = std::mem::replace(&mut s.description, text("description", description, 256)?);
            let what = format!(
                "service user {n}: description {was:?} → {:?}",
                s.description
            );
            apply(ctx, who, now, vec![put_service(s)])?;
            Ok(Done::changed(format!("service user {n} updated\n"), what))
        }
        ServiceUserCommand::Delete { name: n } => {
            let s = get_service(&dir, n)?;
            apply(
                ctx,
                who,
                now,
                vec![Op::Delete(Kind::ServiceUser, n.clone(), s.version)],
            )?;
            let ended = ctx
                .sessions
                .kill_principal(&PrincipalId::Service(n.clone()), "service user deleted");
            Ok(Done::changed(
                format!("service user {n} deleted ({ended} live sessions ended)\n"),
                format!(
                    "deleted service user {n} (was: status {}, policies {}, {} access keys), ended {ended} sessions",
                    s.status,
                    listed(&s.policies),
                    s.keys.len()
                ),
            ))
        }
        ServiceUserCommand::Deactivate { name: n } | ServiceUserCommand::Activate { name: n } => {
            let active = matches!(cmd, ServiceUserCommand::Activate { .. });
            let mut s = get_service(&dir, n)?;
            if active {
                // Access brought back is access given.
                let target = PrincipalId::Service(n.clone());
                confer(ctx, caller, Conferral::CredentialsOf(&target), now).await?;
            }
            s.status = status(active);
            apply(ctx, who, now, vec![put_service(s)])?;
            Ok(status_changed(
                ctx,
                &PrincipalId::Service(n.clone()),
                "service user",
                n,
                active,
            ))
        }
        ServiceUserCommand::Key { command } => key(ctx, caller, command, json_out, now).await,
        ServiceUserCommand::Attach { name: n, policy: p }
        | ServiceUserCommand::Detach { name: n, policy: p } => {
            let attach = matches!(cmd, ServiceUserCommand::Attach { .. });
            let mut s = get_service(&dir, n)?;
            let were = listed(&s.policies);
            let verb = toggle_policy(
                &dir,
                &mut s.policies,
                p,
                attach,
                &format!("service user {n}"),
            )?;
            confer_toggle(ctx, caller, &dir, p, attach, now).await?;
            let are = listed(&s.policies);
            apply(ctx, who, now, vec![put_service(s)])?;
            Ok(Done::changed(
                format!("policy {p} {verb} service user {n}\n"),
                format!("policy {p} {verb} service user {n}: policies {were} → {are}"),
            ))
        }
    }
}

pub(super) async fn key(
    ctx: &Gateway,
    caller: &Caller,
    cmd: &KeyCommand,
    json_out: bool,
    now: OffsetDateTime,
) -> Result<Done, CommandError> {
    let who = &caller.who;
    let dir = ctx.guard.directory();
    match cmd {
        KeyCommand::Create { name: n } => {
            let mut s = get_service(&dir, n)?;
            // Whoever holds the key acts as the service user.
            let target = PrincipalId::Service(n.clone());
            confer(ctx, caller, Conferral::CredentialsOf(&target), now).await?;
            let id = secrets::generate_key_id().map_err(|e| CommandError::Failed(e.to_string()))?;
            let secret =
                secrets::generate_key_secret().map_err(|e| CommandError::Failed(e.to_string()))?;
            let secret_hash = secrets::hash_key_secret(&secret)
                .map_err(|e| CommandError::Failed(e.to_string()))?;
            s.keys.push(AccessKey {
                id: id.clone(),
                secret_hash,
                status: Status::Active,
                created: micros(now),
                last_used: None,
            });
            apply(ctx, who, now, vec![put_service(s)])?;
            let text = if json_out {
                to_json(&json!({"service_user": n, "id": id, "secret": secret.expose()}))
            } else {
                format!(
                    "key id: {id}\nsecret: {}\nthe secret is shown only now; store it safely\n",
                    secret.expose()
                )
            };
            Ok(Done::changed(
                text,
                format!("service user {n}: created access key {id}"),
            ))
        }
        KeyCommand::List { name: n } => {
            let s = get_service(&dir, n)?;
            if json_out {
                let list: Vec<_> = s.keys.iter().map(|k| json!({"id": k.id, "status": k.status.to_string(), "created": rfc3339(k.created)})).collect();
                return Ok(Done::show(to_json(&list)));
            }
            let rows: Vec<Vec<String>> = s
                .keys
                .iter()
                .map(|k| vec![k.id.clone(), k.status.to_string(), rfc3339(k.created)])
                .collect();
            Ok(Done::show(table(&["KEY ID", "STATUS", "CREATED"], &rows)))
        }
        KeyCommand::Deactivate { name: n, key_id } | KeyCommand::Delete { name: n, key_id } => {
            let delete = matches!(cmd, KeyCommand::Delete { .. });
            let mut s = get_service(&dir, n)?;
            let Some(pos) = s.keys.iter().position(|k| k.id == *key_id) else {
                return refused(format!("service user {n} has no access key {key_id}"));
            };
            if delete {
                s.keys.remove(pos);
            } else {
                s.keys[pos].status = Status::Inactive;
            }
            apply(ctx, who, now, vec![put_service(s)])?;
            let verb = if delete { "deleted" } else { "deactivated" };
            let ended = ctx
                .sessions
                .kill_credential(key_id, &format!("access key {verb}"));
            Ok(Done::changed(
                format!("access key {key_id} {verb} ({ended} live sessions ended)\n"),
                format!("service user {n}: access key {key_id} {verb}, ended {ended} sessions"),
            ))
        }
    }
}
