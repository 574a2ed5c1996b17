//! Small pieces every command family uses: applying a change, checking
//! names and free text, tables and JSON, loading one entity.

use super::*;

pub(super) fn apply(
    ctx: &Gateway,
    who: &PrincipalId,
    now: OffsetDateTime,
    ops: Vec<Op>,
) -> Result<Arc<Directory>, CommandError> {
    Ok(ctx.guard.change(ops, who, now)?)
}

pub(super) fn name(text: &str) -> Result<String, CommandError> {
    check_name(text)?;
    Ok(text.to_string())
}

/// Free text (names of people, descriptions): bounded, no control characters.
pub(super) fn text(field: &str, value: &str, max: usize) -> Result<String, CommandError> {
    if value.chars().count() > max {
        return refused(format!("{field} is longer than {max} characters"));
    }
    if value.chars().any(|c| c.is_control()) {
        return refused(format!("{field} contains control characters"));
    }
    Ok(value.to_string())
}

pub(super) fn email(value: &str) -> Result<String, CommandError> {
    let ok = value.len() <= 254
        && value
            .split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.starts_with('.'))
        && !value.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(value.to_string())
    } else {
        refused(format!("`{value}` is not an email address"))
    }
}

/// An end date must be tomorrow or later (access ends at its 00:00 UTC).
pub(super) fn end_date(value: &str, now: OffsetDateTime) -> Result<Day, CommandError> {
    let day = Day::parse(value)?;
    let tomorrow = Day::tomorrow(now);
    if day < tomorrow {
        return refused(format!(
            "end date {day} is before tomorrow ({tomorrow}); access ends at 00:00 UTC at the start of the end date, so the earliest is tomorrow, which ends access at the end of today"
        ));
    }
    Ok(day)
}

/// A list as events show old and new values: `[a, b]`.
pub(super) fn listed(items: &[String]) -> String {
    format!("[{}]", items.join(", "))
}

/// Permissions as events show them: `[Data View, Master Reset]`.
pub(super) fn permissions_listed(set: PermissionSet) -> String {
    listed(&set.iter().map(|p| p.name().to_string()).collect::<Vec<_>>())
}

/// An optional value as events show it.
pub(super) fn or_none(v: Option<impl std::fmt::Display>) -> String {
    v.map(|x| x.to_string()).unwrap_or_else(|| "none".into())
}

pub(super) fn get_user(dir: &Directory, n: &str) -> Result<User, CommandError> {
    dir.users
        .get(n)
        .cloned()
        .ok_or_else(|| CommandError::NotFound(format!("no user `{n}`")))
}

pub(super) fn get_service(dir: &Directory, n: &str) -> Result<ServiceUser, CommandError> {
    dir.service_users
        .get(n)
        .cloned()
        .ok_or_else(|| CommandError::NotFound(format!("no service user `{n}`")))
}

pub(super) fn get_group(dir: &Directory, n: &str) -> Result<Group, CommandError> {
    dir.groups
        .get(n)
        .cloned()
        .ok_or_else(|| CommandError::NotFound(format!("no group `{n}`")))
}

pub(super) fn get_role(dir: &Directory, n: &str) -> Result<Role, CommandError> {
    dir.roles
        .get(n)
        .cloned()
        .ok_or_else(|| CommandError::NotFound(format!("no role `{n}`")))
}

pub(super) fn policy_exists(dir: &Directory, p: &str) -> Result<(), CommandError> {
    if is_managed(p) || dir.policies.contains_key(p) {
        Ok(())
    } else {
        refused(format!("no policy `{p}`"))
    }
}

/// Attaches (or detaches) policy `p` in `list`, refusing a no-op; returns
/// the verb for the message.
pub(super) fn toggle_policy(
    dir: &Directory,
    list: &mut Vec<String>,
    p: &str,
    attach: bool,
    owner: &str,
) -> Result<&'static str, CommandError> {
    policy_exists(dir, p)?;
    match (attach, list.iter().any(|x| x == p)) {
        (true, true) => refused(format!("policy {p} is already attached to {owner}")),
        (false, false) => refused(format!("policy {p} is not attached to {owner}")),
        (true, false) => {
            list.push(p.to_string());
            Ok("attached to")
        }
        (false, true) => {
            list.retain(|x| x != p);
            Ok("detached from")
        }
    }
}

pub(super) fn status(active: bool) -> Status {
    if active {
        Status::Active
    } else {
        Status::Inactive
    }
}

/// After a status change: a deactivation ends the principal's live sessions
/// (IEC 62443 CR 2.6); the words say what happened.
pub(super) fn status_changed(
    ctx: &Gateway,
    target: &PrincipalId,
    kind: &str,
    n: &str,
    active: bool,
) -> Done {
    if active {
        return Done::changed(
            format!("{kind} {n} is ACTIVE\n"),
            format!("activated {kind} {n}: status INACTIVE → ACTIVE"),
        );
    }
    let ended = ctx
        .sessions
        .kill_principal(target, &format!("{kind} deactivated"));
    Done::changed(
        format!("{kind} {n} is INACTIVE ({ended} live sessions ended)\n"),
        format!("deactivated {kind} {n}: status ACTIVE → INACTIVE, ended {ended} sessions"),
    )
}

pub(super) fn put_user(u: User) -> Op {
    let v = u.version;
    Op::Put(Entity::User(u), Expect::Version(v))
}

pub(super) fn put_service(s: ServiceUser) -> Op {
    let v = s.version;
    Op::Put(Entity::ServiceUser(s), Expect::Version(v))
}

pub(super) fn put_group(g: Group) -> Op {
    let v = g.version;
    Op::Put(Entity::Group(g), Expect::Version(v))
}

pub(super) fn when(us: Option<i64>) -> String {
    us.map(rfc3339).unwrap_or_else(|| "never".into())
}

/// A fixed-width table: a header row and rows of cells.
pub(super) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ");
        s.truncate(s.trim_end().len());
        s + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out += &line(r.clone());
    }
    out
}

pub(super) fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| "null".into()) + "\n"
}

/// The roles a principal is granted, as "Role on selectors (source)".
pub(super) fn roles_of(dir: &Directory, who: &PrincipalId) -> Vec<String> {
    let (names, inline) = dir.policy_sources(who);
    let mut out = Vec::new();
    let mut add = |sts: &[Statement], from: &str| {
        for st in sts.iter().filter(|s| s.effect == Effect::Allow) {
            for r in &st.roles {
                let meters: Vec<String> = st.meters.iter().map(|m| m.to_string()).collect();
                out.push(format!("{r} on {} ({from})", meters.join(", ")));
            }
        }
    };
    add(&inline, "inline");
    for n in &names {
        if let Some(p) = dir.policies.get(n) {
            add(&p.statements, &format!("policy {n}"));
        }
    }
    out
}

/// An OpenSSH public key line, checked for shape (type, base64, comment).
pub(super) fn ssh_key(line: &str) -> Result<String, CommandError> {
    const TYPES: [&str; 7] = [
        "ssh-ed25519",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "ssh-rsa",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    ];
    let line = line.trim();
    let mut parts = line.split_whitespace();
    let (Some(kind), Some(body)) = (parts.next(), parts.next()) else {
        return refused("not an OpenSSH public key line (expected: TYPE BASE64 [COMMENT])");
    };
    if !TYPES.contains(&kind) {
        return refused(format!(
            "key type `{kind}` is not accepted (accepted: {})",
            TYPES.join(", ")
        ));
    }
    let b64 = body.len() >= 16
        && body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c));
    if !b64 || line.chars().any(|c| c.is_control()) {
        return refused("the key's base64 part is malformed");
    }
    Ok(line.to_string())
}

/// A file the CLI read for us (`--file F`, `@FILE`).
pub(super) fn file<'a>(req: &'a Input, path: &str) -> Result<&'a str, CommandError> {
    req.files
        .get(path)
        .map(|s| s.as_str())
        .ok_or_else(|| CommandError::Refused(format!("{path}: the file's contents did not come with the request (run the command with the metergate CLI)")))
}

/// No one grants what they do not hold: asks the guard whether the caller
/// may confer `what` (logged when it may not).
pub(super) async fn confer(
    ctx: &Gateway,
    caller: &Caller,
    what: Conferral<'_>,
    now: OffsetDateTime,
) -> Result<(), CommandError> {
    let req = caller.request(Action::Admin {
        op: AdminOp::Change,
        target: "confer".into(),
    });
    let d = ctx.guard.authorize_conferral(&req, what, now).await;
    if d.allowed {
        Ok(())
    } else {
        Err(CommandError::Denied(Box::new(d)))
    }
}

/// The statements of policies by name (managed or custom), for what taking
/// them away lifts.
pub(super) fn statements_of<'a>(
    dir: &Directory,
    names: impl IntoIterator<Item = &'a String>,
) -> Vec<Statement> {
    names
        .into_iter()
        .flat_map(|n| {
            managed_statements(n).unwrap_or_else(|| {
                dir.policies
                    .get(n)
                    .map(|p| p.statements.clone())
                    .unwrap_or_default()
            })
        })
        .collect()
}

/// Attaching confers the policy; detaching lifts its denies.
pub(super) async fn confer_toggle(
    ctx: &Gateway,
    caller: &Caller,
    dir: &Directory,
    policy: &str,
    attach: bool,
    now: OffsetDateTime,
) -> Result<(), CommandError> {
    let what = if attach {
        Conferral::Policy(policy)
    } else {
        Conferral::Lifting(statements_of(dir, [&policy.to_string()]))
    };
    confer(ctx, caller, what, now).await
}
