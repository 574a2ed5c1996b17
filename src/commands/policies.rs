//! `policy …`: permission policies (the managed ones are immutable).

use super::*;

pub(super) fn attached_to(dir: &Directory, p: &str) -> Vec<String> {
    let mut out: Vec<String> = dir
        .users
        .values()
        .filter(|u| u.policies.iter().any(|x| x == p))
        .map(|u| format!("user:{}", u.name))
        .collect();
    out.extend(
        dir.service_users
            .values()
            .filter(|s| s.policies.iter().any(|x| x == p))
            .map(|s| format!("svc:{}", s.name)),
    );
    out.extend(
        dir.groups
            .values()
            .filter(|g| g.policies.iter().any(|x| x == p))
            .map(|g| format!("group:{}", g.name)),
    );
    if dir
        .support
        .as_ref()
        .is_some_and(|s| s.policies.iter().any(|x| x == p))
    {
        out.push("support".into());
    }
    out
}

/// Statements in one line, for events.
fn statements_text(sts: &[Statement]) -> String {
    sts.iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// `policy history NAME`: earlier versions, oldest first, then the current one.
fn history(ctx: &Gateway, dir: &Directory, n: &str, json_out: bool) -> Result<Done, CommandError> {
    if is_managed(n) {
        return refused(format!(
            "`{n}` is a managed policy: it has one version, never changed"
        ));
    }
    let earlier = ctx.guard.store().policy_history(n)?;
    let current = dir.policies.get(n);
    if earlier.is_empty() && current.is_none() {
        return Err(CommandError::NotFound(format!(
            "no policy `{n}`, and none ever was"
        )));
    }
    if json_out {
        let mut versions: Vec<serde_json::Value> = earlier
            .iter()
            .map(|v| {
                json!({
                    "version": v.policy.version,
                    "made_at": rfc3339(v.policy.modified.at), "made_by": v.policy.modified.by,
                    "replaced_at": rfc3339(v.replaced.at), "replaced_by": v.replaced.by,
                    "deleted": v.deleted,
                    "description": v.policy.description,
                    "statements": v.policy.statements,
                })
            })
            .collect();
        if let Some(p) = current {
            versions.push(json!({
                "version": p.version, "current": true,
                "made_at": rfc3339(p.modified.at), "made_by": p.modified.by,
                "description": p.description, "statements": p.statements,
            }));
        }
        return Ok(Done::show(to_json(
            &json!({"name": n, "versions": versions}),
        )));
    }
    let mut out = String::new();
    let listed = |out: &mut String, p: &Policy| {
        for (i, st) in p.statements.iter().enumerate() {
            let _ = writeln!(out, "    {}. {st}", i + 1);
        }
    };
    for v in &earlier {
        let _ = writeln!(
            out,
            "version {}: made {} by {}; {} {} by {}",
            v.policy.version,
            rfc3339(v.policy.modified.at),
            v.policy.modified.by,
            if v.deleted { "deleted" } else { "replaced" },
            rfc3339(v.replaced.at),
            v.replaced.by
        );
        listed(&mut out, &v.policy);
    }
    match current {
        Some(p) => {
            let _ = writeln!(
                out,
                "version {} (current): made {} by {}; attached to {}",
                p.version,
                rfc3339(p.modified.at),
                p.modified.by,
                match attached_to(dir, n) {
                    a if a.is_empty() => "nothing".to_string(),
                    a => a.join(", "),
                }
            );
            listed(&mut out, p);
        }
        None => out += "(deleted: no current version)\n",
    }
    Ok(Done::show(out))
}

pub(super) async fn policy(
    ctx: &Gateway,
    caller: &Caller,
    cmd: &PolicyCommand,
    req: &Input,
    now: OffsetDateTime,
) -> Result<Done, CommandError> {
    let who = &caller.who;
    let dir = ctx.guard.store().directory();
    match cmd {
        PolicyCommand::List => {
            let mut rows = vec![
                vec![
                    ADMINISTRATOR.to_string(),
                    "managed".into(),
                    "1".into(),
                    attached_to(&dir, ADMINISTRATOR).join(","),
                ],
                vec![
                    READ_ONLY.to_string(),
                    "managed".into(),
                    "1".into(),
                    attached_to(&dir, READ_ONLY).join(","),
                ],
            ];
            rows.extend(dir.policies.values().map(|p| {
                vec![
                    p.name.clone(),
                    "custom".into(),
                    p.statements.len().to_string(),
                    attached_to(&dir, &p.name).join(","),
                ]
            }));
            if req.json {
                let list: Vec<_> = rows.iter().map(|r| json!({"name": r[0], "type": r[1], "statements": r[2], "attached_to": r[3]})).collect();
                return Ok(Done::show(to_json(&list)));
            }
            Ok(Done::show(table(
                &["NAME", "TYPE", "STATEMENTS", "ATTACHED TO"],
                &rows,
            )))
        }
        PolicyCommand::Show { name: n } => {
            let (description, statements, kind, version, created) = match managed_statements(n) {
                Some(sts) => {
                    let d = if n == ADMINISTRATOR {
                        "every permission on every meter; may make API calls"
                    } else {
                        "Data View and File System Read-Only Access on every meter; no API calls, no security logs"
                    };
                    (d.to_string(), sts, "managed", 0, 0)
                }
                None => {
                    let p = dir
                        .policies
                        .get(n)
                        .ok_or_else(|| CommandError::NotFound(format!("no policy `{n}`")))?;
                    (
                        p.description.clone(),
                        p.statements.clone(),
                        "custom",
                        p.version,
                        p.created.at,
                    )
                }
            };
            if req.json {
                return Ok(Done::show(to_json(
                    &json!({"name": n, "type": kind, "version": version, "etag": entity_tag(version, created), "description": description, "statements": statements, "attached_to": attached_to(&dir, n)}),
                )));
            }
            let mut out = format!(
                "name:         {n} ({kind})\ndescription:  {description}\nattached to:  {}\n",
                attached_to(&dir, n).join(", ")
            );
            for (i, st) in statements.iter().enumerate() {
                let _ = writeln!(out, "  {}. {st}", i + 1);
            }
            Ok(Done::show(out))
        }
        PolicyCommand::Create { file: path } => {
            let path = path.display().to_string();
            // A managed name is refused as such before the file's checks.
            if let Ok(t) = toml::from_str::<toml::Table>(file(req, &path)?)
                && let Some(n) = t.get("name").and_then(|n| n.as_str())
                && is_managed(n)
            {
                return Err(CommandError::Protected(format!(
                    "`{n}` is a managed policy: it cannot be created, changed or deleted"
                )));
            }
            let doc = PolicyDocument::parse(&path, file(req, &path)?)
                .map_err(|e| CommandError::Refused(e.to_string()))?;
            let n = doc.name.clone();
            let count = doc.statements.len();
            let are = statements_text(&doc.statements);
            let p = Policy::from_document(doc, Stamp::default());
            apply(ctx, who, now, vec![Op::Put(Entity::Policy(p), Expect::New)])?;
            Ok(Done::changed(
                format!("policy {n} created with {count} statements\n"),
                format!("created policy {n} ({count} statements: [{are}])"),
            ))
        }
        PolicyCommand::Edit {
            name: n,
            file: path,
            if_version,
        } => {
            if is_managed(n) {
                return Err(CommandError::Protected(format!(
                    "`{n}` is a managed policy: it cannot be created, changed or deleted"
                )));
            }
            let old = dir
                .policies
                .get(n)
                .ok_or_else(|| CommandError::NotFound(format!("no policy `{n}`")))?;
            if let Some(v) = if_version
                && *v != old.version
            {
                return Err(CommandError::Stale(format!(
                    "policy {n} is at version {}, not {v}: read it again (`policy show {n}`)",
                    old.version
                )));
            }
            let path = path.display().to_string();
            let doc = PolicyDocument::parse(&path, file(req, &path)?)
                .map_err(|e| CommandError::Refused(e.to_string()))?;
            if doc.name != *n {
                return refused(format!("{path} names policy `{}`, not `{n}`", doc.name));
            }
            // Everyone holding the policy gets its new allows, and loses
            // its old denies: the caller must hold all of that (no one
            // grants what they do not hold).
            confer(ctx, caller, Conferral::Statements(&doc.statements), now).await?;
            confer(ctx, caller, Conferral::Lifting(old.statements.clone()), now).await?;
            let before = statements_text(&old.statements);
            let after = statements_text(&doc.statements);
            let mut new = old.clone();
            new.description = doc.description;
            new.statements = doc.statements;
            let version = old.version;
            apply(
                ctx,
                who,
                now,
                vec![Op::Put(Entity::Policy(new), Expect::Version(version))],
            )?;
            Ok(Done::changed(
                format!("policy {n} is now at version {}\n", version + 1),
                format!("edited policy {n}: statements were [{before}], are [{after}]"),
            ))
        }
        PolicyCommand::History { name: n } => history(ctx, &dir, n, req.json),
        PolicyCommand::Delete { name: n, detach } => {
            if is_managed(n) {
                return Err(CommandError::Protected(format!(
                    "`{n}` is a managed policy: it cannot be changed or deleted"
                )));
            }
            let p = dir
                .policies
                .get(n)
                .ok_or_else(|| CommandError::NotFound(format!("no policy `{n}`")))?;
            let holders = attached_to(&dir, n);
            if !holders.is_empty() && !detach {
                return refused(format!(
                    "policy {n} is attached to {}; detach it first, or delete with --detach",
                    holders.join(", ")
                ));
            }
            // Its holders lose its denies too: the caller must hold what
            // those withheld.
            if !holders.is_empty() {
                confer(ctx, caller, Conferral::Lifting(p.statements.clone()), now).await?;
            }
            let without = |list: &[String]| -> Vec<String> {
                list.iter().filter(|x| *x != n).cloned().collect()
            };
            let mut ops = Vec::new();
            for u in dir.users.values().filter(|u| u.policies.contains(n)) {
                let mut u = u.clone();
                u.policies = without(&u.policies);
                ops.push(put_user(u));
            }
            for s in dir
                .service_users
                .values()
                .filter(|s| s.policies.contains(n))
            {
                let mut s = s.clone();
                s.policies = without(&s.policies);
                ops.push(put_service(s));
            }
            for g in dir.groups.values().filter(|g| g.policies.contains(n)) {
                let mut g = g.clone();
                g.policies = without(&g.policies);
                ops.push(put_group(g));
            }
            if let Some(s) = dir.support.as_ref().filter(|s| s.policies.contains(n)) {
                let mut s = s.clone();
                s.policies = without(&s.policies);
                let v = s.version;
                ops.push(Op::Put(Entity::Support(s), Expect::Version(v)));
            }
            ops.push(Op::Delete(Kind::Policy, n.clone(), p.version));
            apply(ctx, who, now, ops)?;
            let were = statements_text(&p.statements);
            if holders.is_empty() {
                return Ok(Done::changed(
                    format!("policy {n} deleted\n"),
                    format!(
                        "deleted policy {n} (version {}; statements were [{were}])",
                        p.version
                    ),
                ));
            }
            let lost = holders.join(", ");
            Ok(Done::changed(
                format!("policy {n} deleted; detached from {lost}\n"),
                format!(
                    "deleted policy {n} (version {}; statements were [{were}]), detached from {lost}",
                    p.version
                ),
            ))
        }
    }
}
