//! `role …`: named, reusable sets of permissions.

use super::*;

pub(super) fn permissions(words: &[String]) -> Result<PermissionSet, CommandError> {
    words
        .iter()
        .flat_map(|w| w.split(','))
        .filter(|w| !w.trim().is_empty())
        .map(|w| Permission::parse(w).map_err(|e| CommandError::Refused(e.to_string())))
        .collect()
}

pub(super) async fn role(
    ctx: &Gateway,
    caller: &Caller,
    cmd: &RoleCommand,
    json_out: bool,
    now: OffsetDateTime,
) -> Result<Done, CommandError> {
    let who = &caller.who;
    let dir = ctx.guard.directory();
    let describe = |p: Permission| {
        if p.enforceable_at_gateway() {
            p.name().to_string()
        } else {
            format!("{} (not enforceable at the gateway: physical)", p.name())
        }
    };
    match cmd {
        RoleCommand::List => {
            if json_out {
                let list: Vec<_> = dir.roles.values().map(|r| json!({"name": r.name, "permissions": r.permissions, "description": r.description, "etag": entity_tag(r.version, r.created.at)})).collect();
                return Ok(Done::show(to_json(&list)));
            }
            let rows: Vec<Vec<String>> = dir
                .roles
                .values()
                .map(|r| {
                    vec![
                        r.name.clone(),
                        r.permissions.iter().count().to_string(),
                        r.description.clone(),
                    ]
                })
                .collect();
            Ok(Done::show(table(
                &["NAME", "PERMISSIONS", "DESCRIPTION"],
                &rows,
            )))
        }
        RoleCommand::Show { name: n } => {
            let r = get_role(&dir, n)?;
            if json_out {
                let perms: Vec<_> = r.permissions.iter().map(|p| json!({"permission": p.name(), "enforceable_at_gateway": p.enforceable_at_gateway()})).collect();
                return Ok(Done::show(to_json(
                    &json!({"name": r.name, "version": r.version, "etag": entity_tag(r.version, r.created.at), "description": r.description, "permissions": perms}),
                )));
            }
            let mut out = format!(
                "name:         {}\ndescription:  {}\npermissions:\n",
                r.name, r.description
            );
            if r.permissions.is_empty() {
                out += "  (none)\n";
            }
            for p in r.permissions.iter() {
                let _ = writeln!(out, "  {}", describe(p));
            }
            Ok(Done::show(out))
        }
        RoleCommand::Create {
            name: n,
            permissions: ps,
            description,
        } => {
            let mut r = Role::new(&name(n)?, permissions(ps)?);
            r.description = text("description", description, 256)?;
            let listed: Vec<String> = r.permissions.iter().map(|p| p.name().to_string()).collect();
            apply(ctx, who, now, vec![Op::Put(Entity::Role(r), Expect::New)])?;
            Ok(Done::changed(
                format!("role {n} created with {} permissions\n", listed.len()),
                format!(
                    "created role {n}: {}",
                    if listed.is_empty() {
                        "no permissions".into()
                    } else {
                        listed.join(", ")
                    }
                ),
            ))
        }
        RoleCommand::Edit {
            name: n,
            add,
            remove,
            description,
        } => {
            let mut r = get_role(&dir, n)?;
            let (add, remove) = (permissions(add)?, permissions(remove)?);
            // A deny that names the role stops withholding what it loses.
            confer(
                ctx,
                caller,
                Conferral::RoleNarrowed {
                    role: n,
                    removed: remove,
                },
                now,
            )
            .await?;
            // Whoever holds the role gets what is added to it.
            confer(
                ctx,
                caller,
                Conferral::RolePermissions {
                    role: n,
                    added: add,
                },
                now,
            )
            .await?;
            let were = permissions_listed(r.permissions);
            let described = r.description.clone();
            for p in add.iter() {
                r.permissions.insert(p);
            }
            for p in remove.iter() {
                r.permissions.remove(p);
            }
            if let Some(d) = description {
                r.description = text("description", d, 256)?;
            }
            let v = r.version;
            let mut what = format!(
                "role {n}: permissions {were} → {}",
                permissions_listed(r.permissions)
            );
            if r.description != described {
                let _ = write!(what, "; description {described:?} → {:?}", r.description);
            }
            apply(
                ctx,
                who,
                now,
                vec![Op::Put(Entity::Role(r), Expect::Version(v))],
            )?;
            Ok(Done::changed(format!("role {n} updated\n"), what))
        }
        RoleCommand::Delete { name: n } => {
            let r = get_role(&dir, n)?;
            apply(
                ctx,
                who,
                now,
                vec![Op::Delete(Kind::Role, n.clone(), r.version)],
            )?;
            Ok(Done::changed(
                format!("role {n} deleted\n"),
                format!(
                    "deleted role {n} (was: permissions {})",
                    permissions_listed(r.permissions)
                ),
            ))
        }
    }
}
