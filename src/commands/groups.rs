//! `group …`: named sets of users whose policies apply to every member.

use super::*;

pub(super) async fn group(
    ctx: &Gateway,
    caller: &Caller,
    cmd: &GroupCommand,
    json_out: bool,
    now: OffsetDateTime,
) -> Result<Done, CommandError> {
    let who = &caller.who;
    let dir = ctx.guard.directory();
    match cmd {
        GroupCommand::Permissions { name: n, meter } => effective::permissions(
            ctx,
            crate::guard::Holder::Group(n),
            &format!("group {n}"),
            meter.as_deref(),
            None,
            json_out,
            now,
        ),
        GroupCommand::Add { name: n } => {
            apply(
                ctx,
                who,
                now,
                vec![Op::Put(
                    Entity::Group(Group::new(&name(n)?, &[], &[])),
                    Expect::New,
                )],
            )?;
            Ok(Done::changed(
                format!("group {n} created\n"),
                format!("created group {n}"),
            ))
        }
        GroupCommand::List => {
            if json_out {
                let list: Vec<_> = dir
                    .groups
                    .values()
                    .map(|g| json!({"name": g.name, "members": g.members, "policies": g.policies}))
                    .collect();
                return Ok(Done::show(to_json(&list)));
            }
            let rows: Vec<Vec<String>> = dir
                .groups
                .values()
                .map(|g| {
                    vec![
                        g.name.clone(),
                        g.members.len().to_string(),
                        g.policies.join(","),
                    ]
                })
                .collect();
            Ok(Done::show(table(&["NAME", "MEMBERS", "POLICIES"], &rows)))
        }
        GroupCommand::Show { name: n } => {
            let g = get_group(&dir, n)?;
            let view = json!({"name": g.name, "version": g.version, "etag": entity_tag(g.version, g.created.at), "members": g.members, "policies": g.policies, "created": rfc3339(g.created.at), "last_modified": rfc3339(g.modified.at), "last_modified_by": g.modified.by});
            if json_out {
                return Ok(Done::show(to_json(&view)));
            }
            let list = |v: &[String]| {
                if v.is_empty() {
                    "-".to_string()
                } else {
                    v.join(", ")
                }
            };
            Ok(Done::show(format!(
                "name:           {}\nmembers:        {}\npolicies:       {}\nlast modified:  {} by {}\n",
                g.name,
                list(&g.members),
                list(&g.policies),
                rfc3339(g.modified.at),
                g.modified.by
            )))
        }
        GroupCommand::Rename { name: n, new_name } => {
            let g = get_group(&dir, n)?;
            let mut renamed = g.clone();
            renamed.name = name(new_name)?;
            apply(
                ctx,
                who,
                now,
                vec![
                    Op::Delete(Kind::Group, n.clone(), g.version),
                    Op::Put(Entity::Group(renamed), Expect::New),
                ],
            )?;
            Ok(Done::changed(
                format!("group {n} renamed to {new_name}\n"),
                format!("renamed group {n} to {new_name}"),
            ))
        }
        GroupCommand::Delete { name: n } => {
            let g = get_group(&dir, n)?;
            // Its members lose its policies: their denies too.
            if !g.members.is_empty() {
                let taken = statements_of(&dir, &g.policies);
                confer(ctx, caller, Conferral::Lifting(taken), now).await?;
            }
            apply(
                ctx,
                who,
                now,
                vec![Op::Delete(Kind::Group, n.clone(), g.version)],
            )?;
            let lost = if g.members.is_empty() || g.policies.is_empty() {
                String::new()
            } else {
                format!(
                    "; its {} members ({}) no longer get its policies ({})",
                    g.members.len(),
                    g.members.join(", "),
                    g.policies.join(", ")
                )
            };
            Ok(Done::changed(
                format!("group {n} deleted{lost}; the users themselves are kept\n"),
                format!(
                    "deleted group {n} (was: members {}, policies {}){lost}",
                    listed(&g.members),
                    listed(&g.policies)
                ),
            ))
        }
        GroupCommand::AddMember { name: n, user: u }
        | GroupCommand::RemoveMember { name: n, user: u } => {
            let add = matches!(cmd, GroupCommand::AddMember { .. });
            let mut g = get_group(&dir, n)?;
            get_user(&dir, u)?;
            let has = g.members.contains(u);
            let were = listed(&g.members);
            match (add, has) {
                (true, true) => return refused(format!("user {u} is already in group {n}")),
                (false, false) => return refused(format!("user {u} is not in group {n}")),
                (true, false) => {
                    // A new member gets every policy of the group.
                    for p in &g.policies {
                        confer(ctx, caller, Conferral::Policy(p), now).await?;
                    }
                    g.members.push(u.clone())
                }
                (false, true) => {
                    // The member loses the group's policies: their denies too.
                    let taken = statements_of(&dir, &g.policies);
                    confer(ctx, caller, Conferral::Lifting(taken), now).await?;
                    g.members.retain(|m| m != u)
                }
            }
            let are = listed(&g.members);
            apply(ctx, who, now, vec![put_group(g)])?;
            let verb = if add { "added to" } else { "removed from" };
            Ok(Done::changed(
                format!("user {u} {verb} group {n}\n"),
                format!("user {u} {verb} group {n}: members {were} → {are}"),
            ))
        }
        GroupCommand::Attach { name: n, policy: p }
        | GroupCommand::Detach { name: n, policy: p } => {
            let attach = matches!(cmd, GroupCommand::Attach { .. });
            let mut g = get_group(&dir, n)?;
            let were = listed(&g.policies);
            let verb = toggle_policy(&dir, &mut g.policies, p, attach, &format!("group {n}"))?;
            confer_toggle(ctx, caller, &dir, p, attach, now).await?;
            let are = listed(&g.policies);
            apply(ctx, who, now, vec![put_group(g)])?;
            Ok(Done::changed(
                format!("policy {p} {verb} group {n}\n"),
                format!("policy {p} {verb} group {n}: policies {were} → {are}"),
            ))
        }
    }
}
