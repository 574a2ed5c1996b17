//! `check` and `review`: what the guard would decide, and who can do what
//! where.

use super::*;
use crate::guard::WriteValues;

/// What `check` is asked: a permission, or a concrete request.
enum Question {
    Permission(Permission),
    Request(Action),
}

fn file_op(word: &str) -> Result<FileOp, CommandError> {
    Ok(match word {
        "list" => FileOp::List,
        "stat" => FileOp::Stat,
        "read" => FileOp::Read,
        "write" => FileOp::Write,
        "create" => FileOp::Create,
        "rename" => FileOp::Rename,
        "remove" => FileOp::Remove,
        "mkdir" => FileOp::Mkdir,
        "rmdir" => FileOp::Rmdir,
        "setstat" => FileOp::SetStat,
        other => {
            return refused(format!(
                "--op `{other}`: give list, stat, read, write, create, rename, remove, mkdir, rmdir or setstat"
            ));
        }
    })
}

/// The question `check`'s flags ask; exactly one of them.
fn question(c: &CheckArgs) -> Result<Question, CommandError> {
    let asked = [
        c.permission.is_some(),
        c.function.is_some(),
        c.path.is_some(),
        c.console,
    ];
    if asked.iter().filter(|a| **a).count() != 1 {
        return refused(
            "give one of --permission P, --function F --register R, --path P --op OP or --console",
        );
    }
    let meter = || {
        c.meter
            .clone()
            .ok_or_else(|| CommandError::Refused("give --meter METER".into()))
    };
    if let Some(p) = &c.permission {
        let permission = Permission::parse(p).map_err(|e| CommandError::Refused(e.to_string()))?;
        if !permission.is_global() && c.meter.is_none() {
            return refused(format!(
                "\"{permission}\" is about meters: give --meter METER"
            ));
        }
        return Ok(Question::Permission(permission));
    }
    if c.console {
        return Ok(Question::Request(Action::Terminal { meter: meter()? }));
    }
    if let Some(path) = &c.path {
        let op = file_op(c.op.as_deref().ok_or_else(|| {
            CommandError::Refused("--path needs --op (read, write, list…)".into())
        })?)?;
        // As SFTP resolves it: the first component is the meter.
        let mut parts = path.split('/').filter(|p| !p.is_empty());
        let Some(meter) = parts.next().map(str::to_string) else {
            return refused("--path names no meter: give it as SFTP shows it, /METER/…");
        };
        if let Some(m) = c.meter.as_ref().filter(|m| **m != meter) {
            return refused(format!(
                "--path {path} is on meter {meter}, not --meter {m}"
            ));
        }
        let rest: Vec<&str> = parts.collect();
        if rest.iter().any(|p| *p == "." || *p == "..") {
            return refused(format!("--path `{path}`: no . or .. components"));
        }
        return Ok(Question::Request(Action::File {
            meter,
            op,
            path: rest.join("/"),
        }));
    }
    let function = c.function.unwrap_or_default();
    let start = c
        .register
        .ok_or_else(|| CommandError::Refused("--function needs --register R".into()))?;
    let meter = meter()?;
    let values = |n: Option<usize>| -> Result<WriteValues, CommandError> {
        match n {
            Some(n) if c.values.len() != n => refused(format!(
                "FC {function} writes {n} value: give --value V once"
            )),
            _ if c.values.is_empty() => refused(format!(
                "FC {function} writes: give --value V (once per register)"
            )),
            _ => Ok(WriteValues::Known(c.values.clone())),
        }
    };
    // The proxy's own limits on one request (Modbus application protocol).
    let limit = |n: usize, most: usize, what: &str| -> Result<(), CommandError> {
        if n == 0 || n > most {
            return refused(format!(
                "FC {function} {what} 1 to {most} registers in one request, not {n}"
            ));
        }
        Ok(())
    };
    Ok(Question::Request(match function {
        3 | 4 => {
            if !c.values.is_empty() {
                return refused(format!("FC {function} reads: --value is for writes"));
            }
            limit(usize::from(c.count.unwrap_or(1)), 125, "reads")?;
            Action::ReadRegisters {
                meter,
                function,
                start,
                count: c.count.unwrap_or(1),
            }
        }
        6 => Action::WriteRegisters {
            meter,
            function,
            start,
            values: values(Some(1))?,
            read: None,
        },
        16 => {
            limit(c.values.len().max(1), 123, "writes")?;
            Action::WriteRegisters {
                meter,
                function,
                start,
                values: values(None)?,
                read: None,
            }
        }
        8 => Action::Diagnostics {
            meter,
            sub_function: start,
        },
        other => {
            return refused(format!(
                "--function {other}: check knows FC 3, 4 (reads), 6, 16 (writes) and 8 (diagnostics)"
            ));
        }
    }))
}

pub(super) fn check(
    ctx: &Gateway,
    c: &CheckArgs,
    req: &Input,
    now: OffsetDateTime,
) -> Result<Done, CommandError> {
    let who = PrincipalId::parse(&c.principal)?;
    let asked = question(c)?;
    let at = super::effective::as_of(c.as_of.as_deref(), now)?;
    let draft = match &c.with_policy {
        None => None,
        Some(path) => {
            let path = path.display().to_string();
            let doc = PolicyDocument::parse(&path, file(req, &path)?)
                .map_err(|e| CommandError::Refused(e.to_string()))?;
            if is_managed(&doc.name) {
                return refused(format!(
                    "`{}` is a managed policy: attach it, it needs no draft",
                    doc.name
                ));
            }
            let name = doc.name.clone();
            let draft = ctx
                .guard
                .draft(&who, Policy::from_document(doc, Stamp::default()))
                .map_err(|e| CommandError::Refused(format!("--with-policy {path}: {e}")))?;
            Some((name, draft))
        }
    };
    let d_ = draft.as_ref().map(|(_, d)| d);
    // As a session without a second factor sees it; and when that is the
    // only thing missing, what one with a factor gets.
    let decide = |second_factor: bool| match &asked {
        Question::Permission(p) => {
            ctx.guard
                .decide_permission_with(d_, &who, *p, c.meter.as_deref(), second_factor, at)
        }
        Question::Request(action) => ctx.guard.decide_with(
            d_,
            &GuardRequest {
                principal: who.clone(),
                source: None,
                door: "check",
                action: action.clone(),
                read_only: false,
                certificate: None,
                second_factor,
                // As `check` on a permission: a recorded session.
                recorded: true,
            },
            at,
        ),
    };
    let d = decide(false);
    let with_factor =
        matches!(d.reason, crate::guard::Reason::NeedsSecondFactor { .. }).then(|| decide(true));
    if req.json {
        let mut answer = json!({"allowed": d.allowed, "permission": d.permission.map(|p| p.name()), "principal": who.to_string(), "meter": c.meter, "reason": d.reason.to_string()});
        if let Some(w) = &with_factor {
            answer["allowed_with_second_factor"] = json!(w.allowed);
        }
        if let Question::Request(a) = &asked {
            answer["request"] = json!(a.to_string());
            answer["meter"] = json!(a.meter());
        }
        if let Some((name, _)) = &draft {
            answer["with_policy"] = json!(name);
        }
        if at != now {
            answer["as_of"] = json!(rfc3339(micros(at)));
        }
        return Ok(Done::show(to_json(&answer)));
    }
    let mut line = d.to_string();
    if let Some(w) = with_factor {
        line += &format!("; with a second factor: {w}");
    }
    if let Some(p) = d.permission
        && !p.enforceable_at_gateway()
    {
        line += " (this permission is physical: not enforceable at the gateway)";
    }
    if let Some((name, _)) = &draft {
        let _ = write!(line, " (as if policy `{name}` were attached; it is not)");
    }
    if at != now {
        let _ = write!(line, " (as of {})", rfc3339(micros(at)));
    }
    Ok(Done::show(line + "\n"))
}

/// Who reviewed last, and when.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct ReviewRecord {
    pub by: String,
    pub at: i64,
}

/// Why a review is due, if it is.
pub fn review_due(guard: &Guard, settings: &ReviewSettings, now: OffsetDateTime) -> Option<String> {
    let last: Option<ReviewRecord> = guard.meta("last_review");
    let changed: Option<i64> = guard.meta("directory_changed");
    match last {
        None => Some("no review has been recorded yet".into()),
        Some(r) if micros(now) - r.at > settings.interval.as_micros() as i64 => Some(format!(
            "the last review ({} by {}) is older than the configured interval",
            rfc3339(r.at),
            r.by
        )),
        Some(r) if changed.is_some_and(|c| c > r.at) => Some(format!(
            "users or roles changed since the last review ({} by {})",
            rfc3339(r.at),
            r.by
        )),
        Some(_) => None,
    }
}

/// Whether an allow statement gives something only a session with a second
/// factor may use (its own `require_mfa`, or `[mfa] required`).
fn wants_factor(dir: &Directory, st: &Statement, mode: crate::config::MfaRequired) -> bool {
    if st.effect != Effect::Allow {
        return false;
    }
    if st.require_mfa {
        return true;
    }
    let mut perms = st.permission_set();
    for r in &st.roles {
        if let Some(role) = dir.roles.get(r) {
            perms = perms.union(role.permissions);
        }
    }
    perms.iter().any(|p| mode.requires(p))
}

/// End dates this close count as soon-passing in `review`.
const ENDS_SOON: i64 = 14 * 86_400 * 1_000_000;

/// One thing `review` flags: its kind (stable, for tooling), whom, why.
struct Flag {
    kind: &'static str,
    principal: String,
    detail: String,
}

/// What a principal may do, in a few lines per group of meters.
fn access_lines(e: &crate::guard::Effective) -> Vec<String> {
    let names = |grants: &[crate::guard::Grant], allowed: bool| -> String {
        grants
            .iter()
            .filter(|g| g.decision.allowed == allowed)
            .map(|g| {
                let mut n = g.permission.to_string();
                if g.needs_second_factor {
                    n += " (second factor)";
                }
                if g.needs_recording {
                    n += " (recorded)";
                }
                n
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = Vec::new();
    if let Some(r) = &e.blocked {
        out.push(format!("nothing now: {r}"));
        return out;
    }
    let line = |place: String, grants: &[crate::guard::Grant]| {
        let (yes, no) = (names(grants, true), names(grants, false));
        let mut l = format!("{place}: {}", if yes.is_empty() { "-" } else { &yes });
        if !no.is_empty() {
            l += &format!("; denied: {no}");
        }
        l
    };
    if !e.global.is_empty() {
        out.push(line("anywhere".into(), &e.global));
    }
    for g in &e.meters {
        let place = if g.meters.len() == e.considered && e.considered > 1 {
            "on every meter".to_string()
        } else {
            let shown: Vec<&str> = g.meters.iter().take(6).map(|m| m.as_str()).collect();
            let more = g.meters.len().saturating_sub(6);
            let mut p = format!("on {}", shown.join(", "));
            if more > 0 {
                p += &format!(" and {more} more");
            }
            p
        };
        out.push(line(place, &g.grants));
    }
    if out.is_empty() {
        out.push("nothing: no statement allows anything".into());
    }
    out
}

pub(super) fn review(
    ctx: &Gateway,
    who: &PrincipalId,
    ack: bool,
    json_out: bool,
    now: OffsetDateTime,
) -> Result<Done, CommandError> {
    if ack {
        let record = ReviewRecord {
            by: who.to_string(),
            at: micros(now),
        };
        ctx.guard.set_meta("last_review", &record)?;
        return Ok(Done::changed(
            format!("review recorded: {} by {who}\n", rfc3339(record.at)),
            "review acknowledged",
        ));
    }
    let dir = ctx.guard.store().directory();
    let unused_after = ctx.review.unused_after.as_micros() as i64;
    let mut flags: Vec<Flag> = Vec::new();
    let mut flag = |kind: &'static str, id: &PrincipalId, detail: String| {
        flags.push(Flag {
            kind,
            principal: id.to_string(),
            detail,
        })
    };
    let mut access: Vec<serde_json::Value> = Vec::new();
    let mut text_access = String::new();
    let settings = ctx.guard.settings();
    let pairs = &settings.separation_of_duties;
    let mfa_mode = settings.mfa;
    let t = micros(now);
    let memberships = dir.memberships();
    for id in dir.principals() {
        let (names, inline) = dir.policy_sources_in(&id, Some(&memberships));
        let mut needs_factor = inline.iter().any(|st| wants_factor(&dir, st, mfa_mode));
        for n in &names {
            let sts = managed_statements(n)
                .or_else(|| dir.policies.get(n).map(|p| p.statements.clone()))
                .unwrap_or_default();
            needs_factor |= sts.iter().any(|st| wants_factor(&dir, st, mfa_mode));
        }
        if let PrincipalId::User(n) = &id
            && needs_factor
            && dir
                .users
                .get(n)
                .is_some_and(|u| u.active_factor().is_none())
        {
            flag(
                "second-factor-missing",
                &id,
                format!(
                    "holds permissions that need a second factor but has no second factor (`user mfa enroll {n}`)"
                ),
            );
        }
        if names.iter().any(|n| n == ADMINISTRATOR) {
            let through: Vec<String> = match &id {
                PrincipalId::User(n) => dir
                    .groups_of(n)
                    .filter(|g| g.policies.iter().any(|p| p == ADMINISTRATOR))
                    .map(|g| format!("group {}", g.name))
                    .collect(),
                _ => Vec::new(),
            };
            let via = if through.is_empty() {
                String::new()
            } else {
                format!(" (through {})", through.join(", "))
            };
            flag("administrator", &id, format!("holds Administrator{via}"));
            for (a, b) in pairs {
                flag(
                    "separation-of-duties",
                    &id,
                    format!(
                        "holds both \"{a}\" and \"{b}\" (through Administrator, exempt from enforcement)"
                    ),
                );
            }
        }
        let (status, end, created, keys_of_inactive) = match &id {
            PrincipalId::User(n) => {
                let u = &dir.users[n];
                if let Some(p) = u.password.as_ref().filter(|p| p.temporary) {
                    let expires = p.expires_at().unwrap_or(i64::MAX);
                    let state = if expires <= t { "expired" } else { "expires" };
                    flag(
                        "temporary-password-unused",
                        &id,
                        format!(
                            "the temporary password issued {} was never used; it {state} {}",
                            rfc3339(p.issued_at),
                            rfc3339(expires)
                        ),
                    );
                }
                (
                    u.status,
                    u.end_date,
                    u.created.at,
                    (u.status == Status::Inactive && !u.ssh_keys.is_empty())
                        .then(|| format!("{} SSH keys", u.ssh_keys.len())),
                )
            }
            PrincipalId::Service(n) => {
                let s = &dir.service_users[n];
                let live = s.keys.iter().filter(|k| k.status == Status::Active).count();
                (
                    s.status,
                    s.end_date,
                    s.created.at,
                    (s.status == Status::Inactive && live > 0)
                        .then(|| format!("{live} active access keys")),
                )
            }
            _ => {
                let s = dir.support.as_ref();
                if let Some(s) = s.filter(|s| !s.end_date.has_passed(now)) {
                    flag(
                        "support-granted",
                        &id,
                        format!(
                            "support access is granted until {} with {}",
                            s.end_date,
                            listed(&s.policies)
                        ),
                    );
                }
                (
                    Status::Active,
                    s.map(|s| s.end_date),
                    s.map(|s| s.created.at).unwrap_or(0),
                    None,
                )
            }
        };
        match end {
            Some(d) if d.has_passed(now) => flag(
                "end-date-passed",
                &id,
                format!("access end date {d} has passed"),
            ),
            Some(d) if micros(d.start()) - t <= ENDS_SOON => flag(
                "end-date-soon",
                &id,
                format!("access ends at {d} 00:00 UTC, within 14 days"),
            ),
            _ => {}
        }
        if let Some(keys) = keys_of_inactive {
            flag(
                "keys-of-inactive",
                &id,
                format!("is INACTIVE but still has {keys}"),
            );
        }
        let last = ctx.guard.last_login(&id);
        if status == Status::Active && t - last.unwrap_or(created) > unused_after {
            flag(
                "unused",
                &id,
                format!(
                    "no login for longer than review.unused_after (last login {})",
                    when(last)
                ),
            );
        }
        let e = ctx
            .guard
            .effective(crate::guard::Holder::Principal(&id), None, now)
            .ok();
        let _ = writeln!(text_access, "{id} ({status}; last login {})", when(last));
        if let Some(e) = &e {
            for l in access_lines(e) {
                let _ = writeln!(text_access, "  {l}");
            }
        }
        access.push(json!({
            "principal": id.to_string(), "status": status.to_string(), "last_login": when(last),
            "blocked": e.as_ref().and_then(|e| e.blocked.as_ref().map(|r| r.to_string())),
            "global": e.as_ref().map(|e| e.global.iter().map(super::effective::grant_json).collect::<Vec<_>>()),
            "meter_groups": e.as_ref().map(|e| e.meters.iter().map(|g| json!({"meters": g.meters, "permissions": g.grants.iter().map(super::effective::grant_json).collect::<Vec<_>>()})).collect::<Vec<_>>()),
        }));
    }
    for (id, a, b) in sod_conflicts(&dir, pairs) {
        let through: Vec<String> = match &id {
            PrincipalId::User(n) => dir
                .groups_of(n)
                .filter(|g| {
                    ctx.guard
                        .effective(crate::guard::Holder::Group(&g.name), None, now)
                        .is_ok_and(|e| {
                            e.global
                                .iter()
                                .chain(e.meters.iter().flat_map(|m| m.grants.iter()))
                                .any(|x| {
                                    x.decision.allowed && (x.permission == a || x.permission == b)
                                })
                        })
                })
                .map(|g| format!("group {}", g.name))
                .collect(),
            _ => Vec::new(),
        };
        let via = if through.is_empty() {
            String::new()
        } else {
            format!(", part of it through {}", through.join(", "))
        };
        flag(
            "separation-of-duties",
            &id,
            format!("holds both \"{a}\" and \"{b}\" (separation of duties{via})"),
        );
    }
    let due = review_due(&ctx.guard, &ctx.review, now);
    if json_out {
        let flags: Vec<_> = flags
            .iter()
            .map(|f| json!({"flag": f.kind, "principal": f.principal, "detail": f.detail}))
            .collect();
        return Ok(Done::show(to_json(
            &json!({"access": access, "flags": flags, "review_due": due}),
        )));
    }
    let mut out = String::from("WHO CAN DO WHAT WHERE\n");
    out += &text_access;
    out += "\nNEEDS ATTENTION\n";
    if flags.is_empty() {
        out += "  nothing\n";
    }
    for f in &flags {
        let _ = writeln!(out, "  [{}] {} {}", f.kind, f.principal, f.detail);
    }
    let _ = writeln!(
        out,
        "\nreview: {}",
        due.unwrap_or_else(|| "up to date".into())
    );
    Ok(Done::show(out))
}
