//! `support …`: the vendor's time-bound support access.

use super::*;

pub(super) async fn support(
    ctx: &Gateway,
    caller: &Caller,
    cmd: &SupportCommand,
    json_out: bool,
    now: OffsetDateTime,
) -> Result<Done, CommandError> {
    let who = &caller.who;
    let dir = ctx.guard.directory();
    let current = || {
        dir.support
            .clone()
            .ok_or_else(|| CommandError::Refused("support access is not granted".into()))
    };
    let put = |s: SupportAccess| {
        let v = s.version;
        Op::Put(Entity::Support(s), Expect::Version(v))
    };
    match cmd {
        SupportCommand::Permissions { meter, as_of } => effective::permissions(
            ctx,
            crate::guard::Holder::Principal(&PrincipalId::Support),
            "support",
            meter.as_deref(),
            as_of.as_deref(),
            json_out,
            now,
        ),
        SupportCommand::Show => {
            let view = match &dir.support {
                None => json!({"granted": false}),
                Some(s) => json!({
                    "granted": !s.end_date.has_passed(now),
                    "version": s.version,
                    "etag": entity_tag(s.version, s.created.at),
                    "end_date": s.end_date.to_string(),
                    "access_ends": rfc3339(micros(s.end_date.start())),
                    "policies": s.policies,
                    "last_modified": rfc3339(s.modified.at), "last_modified_by": s.modified.by,
                }),
            };
            if json_out {
                return Ok(Done::show(to_json(&view)));
            }
            Ok(Done::show(match &dir.support {
                None => "support access: not granted\n".to_string(),
                Some(s) => format!(
                    "support access: {} until {} (access ends {})\npolicies: {}\nlast modified: {} by {}\n",
                    if s.end_date.has_passed(now) {
                        "ENDED"
                    } else {
                        "granted"
                    },
                    s.end_date,
                    rfc3339(micros(s.end_date.start())),
                    s.policies.join(", "),
                    rfc3339(s.modified.at),
                    s.modified.by
                ),
            }))
        }
        SupportCommand::Grant { until, policies } => {
            let day = end_date(until, now)?;
            if dir
                .support
                .as_ref()
                .is_some_and(|s| !s.end_date.has_passed(now))
            {
                return refused(
                    "support access is already granted; use `support update --until DATE` or `support revoke`",
                );
            }
            let policies: Vec<String> = if policies.is_empty() {
                vec![ADMINISTRATOR.to_string()]
            } else {
                policies.clone()
            };
            for p in &policies {
                policy_exists(&dir, p)?;
            }
            for p in &policies {
                confer(ctx, caller, Conferral::Policy(p), now).await?;
            }
            let mut s = SupportAccess::new(day, &[]);
            s.policies = policies.clone();
            let op = match &dir.support {
                Some(old) => Op::Put(
                    Entity::Support(SupportAccess {
                        version: old.version,
                        ..s
                    }),
                    Expect::Version(old.version),
                ),
                None => Op::Put(Entity::Support(s), Expect::New),
            };
            apply(ctx, who, now, vec![op])?;
            Ok(Done::changed(
                format!(
                    "support access granted until {day} (ends {}) with {}\n",
                    rfc3339(micros(day.start())),
                    policies.join(", ")
                ),
                format!(
                    "granted support access until {day} with {}{}",
                    policies.join(", "),
                    match &dir.support {
                        Some(old) => format!(
                            " (was: ended {}, policies {})",
                            old.end_date,
                            listed(&old.policies)
                        ),
                        None => String::new(),
                    }
                ),
            ))
        }
        SupportCommand::Update { until } => {
            let mut s = current()?;
            let day = end_date(until, now)?;
            // Extended (or an ended grant revived), support acts with all
            // its policies for longer.
            if day > s.end_date || s.end_date.has_passed(now) {
                confer(
                    ctx,
                    caller,
                    Conferral::CredentialsOf(&PrincipalId::Support),
                    now,
                )
                .await?;
            }
            let was = std::mem::replace(&mut s.end_date, day);
            apply(ctx, who, now, vec![put(s)])?;
            Ok(Done::changed(
                format!("support access now ends {}\n", rfc3339(micros(day.start()))),
                format!("support access end date {was} → {day}"),
            ))
        }
        SupportCommand::Attach { policy: p } | SupportCommand::Detach { policy: p } => {
            let attach = matches!(cmd, SupportCommand::Attach { .. });
            let mut s = current()?;
            let were = listed(&s.policies);
            let verb = toggle_policy(&dir, &mut s.policies, p, attach, "support access")?;
            confer_toggle(ctx, caller, &dir, p, attach, now).await?;
            let are = listed(&s.policies);
            apply(ctx, who, now, vec![put(s)])?;
            Ok(Done::changed(
                format!("policy {p} {verb} support access\n"),
                format!("policy {p} {verb} support access: policies {were} → {are}"),
            ))
        }
        SupportCommand::Revoke => {
            let s = current()?;
            apply(
                ctx,
                who,
                now,
                vec![Op::Delete(Kind::Support, "support".into(), s.version)],
            )?;
            let ended = ctx
                .sessions
                .kill_principal(&PrincipalId::Support, "support access revoked");
            Ok(Done::changed(
                format!("support access revoked ({ended} live sessions ended)\n"),
                format!(
                    "revoked support access (was: until {}, policies {}), ended {ended} sessions",
                    s.end_date,
                    listed(&s.policies)
                ),
            ))
        }
    }
}
