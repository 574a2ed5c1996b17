//! Runs one admin command for one principal: parse, ask the guard (which logs
//! the decision), apply the change atomically, log what changed, and answer
//! with the contract's words and exit codes (DESIGN §3).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;

use super::protocol::{Request, Response};
use super::stream::{Stream, event_lines, json_lines};
use super::*;
use crate::guard::{Action, AdminOp, Guard, Request as GuardRequest};
use crate::model::*;
use crate::sessions::Sessions;
use crate::store::export::Format;
use crate::store::secrets::{self, HashPool, Secret};
use crate::store::{
    Category, Entity, EventDraft, Expect, Kind, Op, Outcome, StoreError, sod_conflicts,
};

/// Longest argument accepted; names are further limited to 64 characters.
const MAX_ARG: usize = 4096;

/// What the executor needs from the daemon.
pub struct AdminContext {
    pub guard: Arc<Guard>,
    pub sessions: Arc<Sessions>,
    pub hashes: Arc<HashPool>,
    pub review: ReviewSettings,
    /// Wakes the Modbus/TCP Security CRL watcher (a reported revocation).
    pub crl_changed: Option<Arc<tokio::sync::Notify>>,
}

/// When a review is due, and when an account counts as unused.
#[derive(Clone, Debug)]
pub struct ReviewSettings {
    pub interval: Duration,
    pub unused_after: Duration,
}

/// Why a command did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The request itself is wrong or refused (exit 2).
    #[error("{0}")]
    Refused(String),
    /// Something failed while carrying it out (exit 1).
    #[error("{0}")]
    Failed(String),
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Io { .. }
            | StoreError::Sled(_)
            | StoreError::Corrupt { .. }
            | StoreError::Locked(_) => AdminError::Failed(e.to_string()),
            other => AdminError::Refused(other.to_string()),
        }
    }
}

impl From<NameError> for AdminError {
    fn from(e: NameError) -> Self {
        AdminError::Refused(e.to_string())
    }
}

fn refused<T>(msg: impl Into<String>) -> Result<T, AdminError> {
    Err(AdminError::Refused(msg.into()))
}

/// What a successful command prints, and the change to log (if any).
struct Done {
    stdout: String,
    change: Option<String>,
    /// More to send after `stdout` (export, tail -f).
    stream: Option<Stream>,
}

impl Done {
    fn show(stdout: impl Into<String>) -> Done {
        Done {
            stdout: stdout.into(),
            change: None,
            stream: None,
        }
    }
    fn changed(stdout: impl Into<String>, what: impl Into<String>) -> Done {
        Done {
            stdout: stdout.into(),
            change: Some(what.into()),
            stream: None,
        }
    }
    fn streaming(stdout: impl Into<String>, stream: Stream) -> Done {
        Done {
            stdout: stdout.into(),
            change: None,
            stream: Some(stream),
        }
    }
}

/// Runs one request for `who` (from `source`, through `door`); a streamed
/// answer (`audit export`, `audit tail -f`) is cut to its first frame.
pub async fn execute(
    ctx: &AdminContext,
    who: &PrincipalId,
    source: &str,
    door: &'static str,
    req: &Request,
    now: OffsetDateTime,
) -> Response {
    let (mut response, _) = execute_streaming(ctx, who, source, door, req, now).await;
    response.more = false;
    response
}

/// Runs one request; the answer's first frame and, for a streamed answer,
/// what remains to be sent (see [`super::stream::produce`]).
pub async fn execute_streaming(
    ctx: &AdminContext,
    who: &PrincipalId,
    source: &str,
    door: &'static str,
    req: &Request,
    now: OffsetDateTime,
) -> (Response, Option<Stream>) {
    if let Some((i, _)) = req.argv.iter().enumerate().find(|(_, a)| a.len() > MAX_ARG) {
        return (
            Response {
                code: 2,
                stdout: String::new(),
                stderr: format!("error: argument {} is longer than {MAX_ARG} bytes\n", i + 1),
                more: false,
            },
            None,
        );
    }
    let line = match AdminLine::try_parse_from(
        std::iter::once("metergate".to_string()).chain(req.argv.iter().cloned()),
    ) {
        Ok(line) => line,
        Err(e) => {
            use clap::error::ErrorKind;
            let text = e.render().to_string();
            let response = match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => Response {
                    code: 0,
                    stdout: text,
                    stderr: String::new(),
                    more: false,
                },
                _ => Response {
                    code: 2,
                    stdout: String::new(),
                    stderr: text,
                    more: false,
                },
            };
            return (response, None);
        }
    };
    // The command's own words for events; long ones (key lines) shortened.
    let words = req
        .argv
        .iter()
        .map(|a| {
            if a.chars().count() > 48 {
                format!("{}…", a.chars().take(40).collect::<String>())
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    let action = action_of(&line.command, who, &words);
    let decision = ctx
        .guard
        .authorize(
            &GuardRequest {
                read_only: false,
                certificate: None,
                principal: who.clone(),
                source: Some(source.to_string()),
                door,
                action,
            },
            now,
        )
        .await;
    if !decision.allowed {
        return (
            Response {
                code: 2,
                stdout: String::new(),
                stderr: format!("error: DENY: {}\n", decision.reason),
                more: false,
            },
            None,
        );
    }
    let result = run(ctx, who, &line.command, req, now).await;
    let event = |outcome: Outcome, code: &str, reason: String| {
        EventDraft::new(code, Category::Admin, outcome)
            .principal(who)
            .source(source)
            .door(door)
            .action(&words)
            .reason(reason)
    };
    match result {
        Ok(done) => {
            if let Some(what) = done.change
                && let Err(e) = ctx
                    .guard
                    .store()
                    .log()
                    .append(event(Outcome::Success, "admin.change", what))
                    .await
            {
                tracing::error!(error = %e, command = %words, "admin change applied but its event could not be logged");
                ctx.guard
                    .counters
                    .audit_alarm
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
            let stdout = if req.json && !done.stdout.trim_start().starts_with(['{', '[']) {
                format!(
                    "{}\n",
                    json!({ "ok": true, "message": done.stdout.trim_end() })
                )
            } else {
                done.stdout
            };
            let more = done.stream.is_some();
            (
                Response {
                    code: 0,
                    stdout,
                    stderr: String::new(),
                    more,
                },
                done.stream,
            )
        }
        Err(e) => {
            let code = if matches!(e, AdminError::Failed(_)) {
                1
            } else {
                2
            };
            let _ = ctx
                .guard
                .store()
                .log()
                .append(event(Outcome::Failure, "admin.refused", e.to_string()))
                .await;
            (
                Response {
                    code,
                    stdout: String::new(),
                    stderr: format!("error: {e}\n"),
                    more: false,
                },
                None,
            )
        }
    }
}

/// The guard action a command needs (DESIGN §3's permission table).
fn action_of(cmd: &AdminCommand, who: &PrincipalId, words: &str) -> Action {
    use AdminCommand as A;
    let op = match cmd {
        A::User {
            command: UserCommand::List | UserCommand::Show { .. },
        }
        | A::ServiceUser {
            command: ServiceUserCommand::List | ServiceUserCommand::Show { .. },
        }
        | A::ServiceUser {
            command:
                ServiceUserCommand::Key {
                    command: KeyCommand::List { .. },
                },
        }
        | A::Group {
            command: GroupCommand::List | GroupCommand::Show { .. },
        }
        | A::Role {
            command: RoleCommand::List | RoleCommand::Show { .. },
        }
        | A::Policy {
            command: PolicyCommand::List | PolicyCommand::Show { .. },
        }
        | A::Support {
            command: SupportCommand::Show,
        }
        | A::Session {
            command: SessionCommand::List,
        }
        | A::Check(_)
        | A::Review { .. } => AdminOp::View,
        A::User {
            command: UserCommand::ResendPassword { .. },
        } => AdminOp::ResendPassword,
        // One's own first and last name need nothing beyond being let in.
        A::User {
            command: UserCommand::Edit {
                name, email: None, ..
            },
        } if *who == PrincipalId::User(name.clone()) => AdminOp::OwnProfile,
        A::Audit { command } => {
            let what = match command {
                AuditCommand::Tail { count, follow } => {
                    format!("tail -n {count}{}", if *follow { " -f" } else { "" })
                }
                AuditCommand::Query(_) | AuditCommand::Export { .. } => {
                    words.trim_start_matches("audit ").to_string()
                }
                AuditCommand::Status => "status".into(),
                AuditCommand::Verify { from: Some(f), .. } => format!("verify --from {f}"),
                AuditCommand::Verify { .. } => "verify".into(),
                AuditCommand::Checkpoint => "checkpoint".into(),
                AuditCommand::PublicKey => "public-key".into(),
            };
            return Action::ReadAudit { what };
        }
        _ => AdminOp::Change,
    };
    Action::Admin {
        op,
        target: words.to_string(),
    }
}

async fn run(
    ctx: &AdminContext,
    who: &PrincipalId,
    cmd: &AdminCommand,
    req: &Request,
    now: OffsetDateTime,
) -> Result<Done, AdminError> {
    match cmd {
        AdminCommand::User { command } => user(ctx, who, command, req, now).await,
        AdminCommand::ServiceUser { command } => {
            service_user(ctx, who, command, req.json, now).await
        }
        AdminCommand::Group { command } => group(ctx, who, command, req.json, now),
        AdminCommand::Role { command } => role(ctx, who, command, req.json, now),
        AdminCommand::Policy { command } => policy(ctx, who, command, req, now),
        AdminCommand::Support { command } => support(ctx, who, command, req.json, now),
        AdminCommand::Session { command } => session(ctx, who, command, req.json),
        AdminCommand::Audit { command } => audit(ctx, command, req),
        AdminCommand::Check(c) => check(ctx, c, req.json, now),
        AdminCommand::Review { ack } => review(ctx, who, *ack, req.json, now),
        AdminCommand::CertificateReport(r) => certificate_report(ctx, who, r).await,
    }
}

/// Records what the certificate authority did; a revocation also ends the
/// certificate's live connections and reloads the CRL at once.
async fn certificate_report(
    ctx: &AdminContext,
    who: &PrincipalId,
    r: &super::CertificateReport,
) -> Result<Done, AdminError> {
    let serial = crate::pki::normalize_serial(&r.serial)
        .ok_or_else(|| AdminError::Refused(format!("`{}` is not a serial number", r.serial)))?;
    let roles = if r.role.is_empty() {
        "no role".to_string()
    } else {
        format!("role {}", r.role.join(", "))
    };
    let (code, reason) = if r.what == "revoked" {
        let ended = ctx
            .sessions
            .kill_credential(&format!("cert:{serial}"), "certificate revoked");
        if let Some(n) = &ctx.crl_changed {
            n.notify_one();
        }
        (
            "cert.revoked",
            format!(
                "{} certificate {serial} of {} revoked; {ended} live connection(s) ended",
                r.kind, r.name
            ),
        )
    } else {
        (
            "cert.issued",
            format!(
                "{} certificate {serial} issued for {} ({roles}), valid until {}",
                r.kind, r.name, r.not_after
            ),
        )
    };
    let ev = EventDraft::new(code, Category::Admin, Outcome::Success)
        .principal(who)
        .door("control-socket")
        .reason(&reason)
        .detail("certificate_serial", &serial)
        .detail("certificate_kind", &r.kind)
        .detail("certificate_name", &r.name)
        .detail("certificate_role", r.role.join(","));
    ctx.guard
        .store()
        .log()
        .append(ev)
        .await
        .map_err(|e| AdminError::Failed(format!("the event could not be logged: {e}")))?;
    Ok(Done::show(format!("recorded: {reason}\n")))
}

// ---- helpers ---------------------------------------------------------------

fn apply(
    ctx: &AdminContext,
    who: &PrincipalId,
    now: OffsetDateTime,
    ops: Vec<Op>,
) -> Result<Arc<Directory>, AdminError> {
    Ok(ctx.guard.change(ops, who, now)?)
}

fn name(text: &str) -> Result<String, AdminError> {
    check_name(text)?;
    Ok(text.to_string())
}

/// Free text (names of people, descriptions): bounded, no control characters.
fn text(field: &str, value: &str, max: usize) -> Result<String, AdminError> {
    if value.chars().count() > max {
        return refused(format!("{field} is longer than {max} characters"));
    }
    if value.chars().any(|c| c.is_control()) {
        return refused(format!("{field} contains control characters"));
    }
    Ok(value.to_string())
}

fn email(value: &str) -> Result<String, AdminError> {
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
fn end_date(value: &str, now: OffsetDateTime) -> Result<Day, AdminError> {
    let day = Day::parse(value)?;
    let tomorrow = Day::tomorrow(now);
    if day < tomorrow {
        return refused(format!(
            "end date {day} is before tomorrow ({tomorrow}); access ends at 00:00 UTC at the start of the end date, so the earliest is tomorrow, which ends access at the end of today"
        ));
    }
    Ok(day)
}

fn get_user(dir: &Directory, n: &str) -> Result<User, AdminError> {
    dir.users
        .get(n)
        .cloned()
        .ok_or_else(|| AdminError::Refused(format!("no user `{n}`")))
}

fn get_service(dir: &Directory, n: &str) -> Result<ServiceUser, AdminError> {
    dir.service_users
        .get(n)
        .cloned()
        .ok_or_else(|| AdminError::Refused(format!("no service user `{n}`")))
}

fn get_group(dir: &Directory, n: &str) -> Result<Group, AdminError> {
    dir.groups
        .get(n)
        .cloned()
        .ok_or_else(|| AdminError::Refused(format!("no group `{n}`")))
}

fn get_role(dir: &Directory, n: &str) -> Result<Role, AdminError> {
    dir.roles
        .get(n)
        .cloned()
        .ok_or_else(|| AdminError::Refused(format!("no role `{n}`")))
}

fn policy_exists(dir: &Directory, p: &str) -> Result<(), AdminError> {
    if is_managed(p) || dir.policies.contains_key(p) {
        Ok(())
    } else {
        refused(format!("no policy `{p}`"))
    }
}

/// Attaches (or detaches) policy `p` in `list`, refusing a no-op; returns
/// the verb for the message.
fn toggle_policy(
    dir: &Directory,
    list: &mut Vec<String>,
    p: &str,
    attach: bool,
    owner: &str,
) -> Result<&'static str, AdminError> {
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

fn status(active: bool) -> Status {
    if active {
        Status::Active
    } else {
        Status::Inactive
    }
}

/// After a status change: a deactivation ends the principal's live sessions
/// (IEC 62443 CR 2.6); the words say what happened.
fn status_changed(
    ctx: &AdminContext,
    target: &PrincipalId,
    kind: &str,
    n: &str,
    active: bool,
) -> Done {
    if active {
        return Done::changed(
            format!("{kind} {n} is ACTIVE\n"),
            format!("activated {kind} {n}"),
        );
    }
    let ended = ctx
        .sessions
        .kill_principal(target, &format!("{kind} deactivated"));
    Done::changed(
        format!("{kind} {n} is INACTIVE ({ended} live sessions ended)\n"),
        format!("deactivated {kind} {n}, ended {ended} sessions"),
    )
}

fn put_user(u: User) -> Op {
    let v = u.version;
    Op::Put(Entity::User(u), Expect::Version(v))
}

fn put_service(s: ServiceUser) -> Op {
    let v = s.version;
    Op::Put(Entity::ServiceUser(s), Expect::Version(v))
}

fn put_group(g: Group) -> Op {
    let v = g.version;
    Op::Put(Entity::Group(g), Expect::Version(v))
}

fn when(us: Option<i64>) -> String {
    us.map(rfc3339).unwrap_or_else(|| "never".into())
}

/// A fixed-width table: a header row and rows of cells.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
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

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| "null".into()) + "\n"
}

/// The roles a principal is granted, as "Role on selectors (source)".
fn roles_of(dir: &Directory, who: &PrincipalId) -> Vec<String> {
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
fn ssh_key(line: &str) -> Result<String, AdminError> {
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
fn file<'a>(req: &'a Request, path: &str) -> Result<&'a str, AdminError> {
    req.files
        .get(path)
        .map(|s| s.as_str())
        .ok_or_else(|| AdminError::Refused(format!("{path}: the file's contents did not come with the request (run the command with the metergate CLI)")))
}

// ---- users -------------------------------------------------------------------

async fn temporary_password(
    ctx: &AdminContext,
    now: OffsetDateTime,
) -> Result<(Secret, PasswordRecord), AdminError> {
    let secret = secrets::generate_password().map_err(|e| AdminError::Failed(e.to_string()))?;
    let hash = ctx
        .hashes
        .hash(secret.clone())
        .await
        .map_err(|e| AdminError::Failed(e.to_string()))?;
    Ok((
        secret,
        PasswordRecord {
            hash,
            temporary: true,
            issued_at: micros(now),
        },
    ))
}

fn temporary_words(secret: &Secret, record: &PasswordRecord) -> String {
    format!(
        "temporary password: {}\nit expires at {} and must be changed at first login\n",
        secret.expose(),
        when(record.expires_at())
    )
}

async fn user(
    ctx: &AdminContext,
    who: &PrincipalId,
    cmd: &UserCommand,
    req: &Request,
    now: OffsetDateTime,
) -> Result<Done, AdminError> {
    let dir = ctx.guard.store().directory();
    match cmd {
        UserCommand::Add {
            name: n,
            email: e,
            first,
            last,
            end_date: end,
        } => {
            let mut u = User::new(&name(n)?, &email(e)?);
            u.id = secrets::generate_id().map_err(|e| AdminError::Failed(e.to_string()))?;
            u.first_name = text("first name", first.as_deref().unwrap_or(""), 64)?;
            u.last_name = text("last name", last.as_deref().unwrap_or(""), 64)?;
            u.end_date = end.as_deref().map(|d| end_date(d, now)).transpose()?;
            if dir.users.contains_key(n) {
                return refused(format!("user `{n}` already exists"));
            }
            let (secret, record) = temporary_password(ctx, now).await?;
            u.password = Some(record.clone());
            apply(ctx, who, now, vec![Op::Put(Entity::User(u), Expect::New)])?;
            Ok(Done::changed(
                format!("user {n} created\n{}", temporary_words(&secret, &record)),
                format!("created user {n} ({e})"),
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
                "name": u.name, "unique_id": u.id, "email": u.email,
                "first_name": u.first_name, "last_name": u.last_name,
                "status": u.status.to_string(),
                "access_end_date": u.end_date.map(|d| d.to_string()),
                "policies": u.policies, "roles": roles_of(&dir, &id), "groups": groups,
                "created": rfc3339(u.created.at), "created_by": u.created.by,
                "last_modified": rfc3339(u.modified.at), "last_modified_by": u.modified.by,
                "last_login": when(ctx.guard.last_login(&id)),
                "ssh_keys": u.ssh_keys.len(), "password": password,
                "password_login_locked_until": locked.map(rfc3339),
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
                u.email = email(e)?;
                what.push("email");
            }
            if let Some(f) = first {
                u.first_name = text("first name", f, 64)?;
                what.push("first name");
            }
            if let Some(l) = last {
                u.last_name = text("last name", l, 64)?;
                what.push("last name");
            }
            if what.is_empty() {
                return refused("nothing to change: give --email, --first or --last");
            }
            apply(ctx, who, now, vec![put_user(u)])?;
            Ok(Done::changed(
                format!("user {n} updated\n"),
                format!("user {n}: changed {}", what.join(", ")),
            ))
        }
        UserCommand::Delete { name: n } => {
            let u = get_user(&dir, n)?;
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
                format!("deleted user {n}, ended {ended} sessions"),
            ))
        }
        UserCommand::Deactivate { name: n } | UserCommand::Activate { name: n } => {
            let active = matches!(cmd, UserCommand::Activate { .. });
            let mut u = get_user(&dir, n)?;
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
            u.password = Some(record.clone());
            apply(ctx, who, now, vec![put_user(u)])?;
            Ok(Done::changed(
                format!(
                    "new temporary password for {n}\n{}",
                    temporary_words(&secret, &record)
                ),
                format!("re-issued temporary password of {n}"),
            ))
        }
        UserCommand::SetEndDate { name: n, date } => {
            let mut u = get_user(&dir, n)?;
            u.end_date = if date == "none" {
                None
            } else {
                Some(end_date(date, now)?)
            };
            let shown = u
                .end_date
                .map(|d| d.to_string())
                .unwrap_or_else(|| "none".into());
            apply(ctx, who, now, vec![put_user(u)])?;
            Ok(Done::changed(
                format!("user {n}: access end date {shown}\n"),
                format!("user {n}: access end date {shown}"),
            ))
        }
        UserCommand::AddKey { name: n, key } => {
            let line = match key.strip_prefix('@') {
                Some(path) => file(req, path)?.to_string(),
                None => key.clone(),
            };
            let line = ssh_key(&line)?;
            let mut u = get_user(&dir, n)?;
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
                    ctx.sessions.kill_credential(
                        &k,
                        &format!("the key was removed from user {n}"),
                    )
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
                .map(|s| MeterSelector::parse(s).map_err(|e| AdminError::Refused(e.to_string())))
                .collect::<Result<Vec<_>, _>>()?;
            let st = Statement::allow_role(r, selectors);
            if u.inline.contains(&st) {
                return refused(format!("user {n} already has {st}"));
            }
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
        UserCommand::Attach { name: n, policy: p } | UserCommand::Detach { name: n, policy: p } => {
            let attach = matches!(cmd, UserCommand::Attach { .. });
            let mut u = get_user(&dir, n)?;
            let verb = toggle_policy(&dir, &mut u.policies, p, attach, &format!("user {n}"))?;
            apply(ctx, who, now, vec![put_user(u)])?;
            Ok(Done::changed(
                format!("policy {p} {verb} user {n}\n"),
                format!("policy {p} {verb} user {n}"),
            ))
        }
    }
}

// ---- service users ---------------------------------------------------------------

async fn service_user(
    ctx: &AdminContext,
    who: &PrincipalId,
    cmd: &ServiceUserCommand,
    json_out: bool,
    now: OffsetDateTime,
) -> Result<Done, AdminError> {
    let dir = ctx.guard.store().directory();
    match cmd {
        ServiceUserCommand::Add {
            name: n,
            description,
        } => {
            let mut s = ServiceUser::new(&name(n)?);
            s.id = secrets::generate_id().map_err(|e| AdminError::Failed(e.to_string()))?;
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
                "name": s.name, "unique_id": s.id, "description": s.description, "status": s.status.to_string(),
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
            s.description = text("description", description, 256)?;
            apply(ctx, who, now, vec![put_service(s)])?;
            Ok(Done::changed(
                format!("service user {n} updated\n"),
                format!("service user {n}: changed description"),
            ))
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
                format!("deleted service user {n}, ended {ended} sessions"),
            ))
        }
        ServiceUserCommand::Deactivate { name: n } | ServiceUserCommand::Activate { name: n } => {
            let active = matches!(cmd, ServiceUserCommand::Activate { .. });
            let mut s = get_service(&dir, n)?;
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
        ServiceUserCommand::Key { command } => key(ctx, who, command, json_out, now).await,
        ServiceUserCommand::Attach { name: n, policy: p }
        | ServiceUserCommand::Detach { name: n, policy: p } => {
            let attach = matches!(cmd, ServiceUserCommand::Attach { .. });
            let mut s = get_service(&dir, n)?;
            let verb = toggle_policy(
                &dir,
                &mut s.policies,
                p,
                attach,
                &format!("service user {n}"),
            )?;
            apply(ctx, who, now, vec![put_service(s)])?;
            Ok(Done::changed(
                format!("policy {p} {verb} service user {n}\n"),
                format!("policy {p} {verb} service user {n}"),
            ))
        }
    }
}

async fn key(
    ctx: &AdminContext,
    who: &PrincipalId,
    cmd: &KeyCommand,
    json_out: bool,
    now: OffsetDateTime,
) -> Result<Done, AdminError> {
    let dir = ctx.guard.store().directory();
    match cmd {
        KeyCommand::Create { name: n } => {
            let mut s = get_service(&dir, n)?;
            let id = secrets::generate_key_id().map_err(|e| AdminError::Failed(e.to_string()))?;
            let secret =
                secrets::generate_key_secret().map_err(|e| AdminError::Failed(e.to_string()))?;
            let secret_hash = ctx
                .hashes
                .hash(secret.clone())
                .await
                .map_err(|e| AdminError::Failed(e.to_string()))?;
            s.keys.push(AccessKey {
                id: id.clone(),
                secret_hash,
                status: Status::Active,
                created: micros(now),
                last_used: None,
            });
            apply(ctx, who, now, vec![put_service(s)])?;
            Ok(Done::changed(
                format!(
                    "key id: {id}\nsecret: {}\nthe secret is shown only now; store it safely\n",
                    secret.expose()
                ),
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

// ---- groups ------------------------------------------------------------------------

fn group(
    ctx: &AdminContext,
    who: &PrincipalId,
    cmd: &GroupCommand,
    json_out: bool,
    now: OffsetDateTime,
) -> Result<Done, AdminError> {
    let dir = ctx.guard.store().directory();
    match cmd {
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
            let view = json!({"name": g.name, "members": g.members, "policies": g.policies, "created": rfc3339(g.created.at), "last_modified": rfc3339(g.modified.at), "last_modified_by": g.modified.by});
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
                format!("deleted group {n}{lost}"),
            ))
        }
        GroupCommand::AddMember { name: n, user: u }
        | GroupCommand::RemoveMember { name: n, user: u } => {
            let add = matches!(cmd, GroupCommand::AddMember { .. });
            let mut g = get_group(&dir, n)?;
            get_user(&dir, u)?;
            let has = g.members.contains(u);
            match (add, has) {
                (true, true) => return refused(format!("user {u} is already in group {n}")),
                (false, false) => return refused(format!("user {u} is not in group {n}")),
                (true, false) => g.members.push(u.clone()),
                (false, true) => g.members.retain(|m| m != u),
            }
            apply(ctx, who, now, vec![put_group(g)])?;
            let verb = if add { "added to" } else { "removed from" };
            Ok(Done::changed(
                format!("user {u} {verb} group {n}\n"),
                format!("user {u} {verb} group {n}"),
            ))
        }
        GroupCommand::Attach { name: n, policy: p }
        | GroupCommand::Detach { name: n, policy: p } => {
            let attach = matches!(cmd, GroupCommand::Attach { .. });
            let mut g = get_group(&dir, n)?;
            let verb = toggle_policy(&dir, &mut g.policies, p, attach, &format!("group {n}"))?;
            apply(ctx, who, now, vec![put_group(g)])?;
            Ok(Done::changed(
                format!("policy {p} {verb} group {n}\n"),
                format!("policy {p} {verb} group {n}"),
            ))
        }
    }
}

// ---- roles and policies ---------------------------------------------------------------

fn permissions(words: &[String]) -> Result<PermissionSet, AdminError> {
    words
        .iter()
        .flat_map(|w| w.split(','))
        .filter(|w| !w.trim().is_empty())
        .map(|w| Permission::parse(w).map_err(|e| AdminError::Refused(e.to_string())))
        .collect()
}

fn role(
    ctx: &AdminContext,
    who: &PrincipalId,
    cmd: &RoleCommand,
    json_out: bool,
    now: OffsetDateTime,
) -> Result<Done, AdminError> {
    let dir = ctx.guard.store().directory();
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
                let list: Vec<_> = dir.roles.values().map(|r| json!({"name": r.name, "permissions": r.permissions, "description": r.description})).collect();
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
                    &json!({"name": r.name, "description": r.description, "permissions": perms}),
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
            apply(
                ctx,
                who,
                now,
                vec![Op::Put(Entity::Role(r), Expect::Version(v))],
            )?;
            Ok(Done::changed(
                format!("role {n} updated\n"),
                format!("role {n}: added {add:?}, removed {remove:?}"),
            ))
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
                format!("deleted role {n}"),
            ))
        }
    }
}

fn attached_to(dir: &Directory, p: &str) -> Vec<String> {
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

fn policy(
    ctx: &AdminContext,
    who: &PrincipalId,
    cmd: &PolicyCommand,
    req: &Request,
    now: OffsetDateTime,
) -> Result<Done, AdminError> {
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
            let (description, statements, kind) = match managed_statements(n) {
                Some(sts) => {
                    let d = if n == ADMINISTRATOR {
                        "every permission on every meter; may make API calls"
                    } else {
                        "Data View and File System Read-Only Access on every meter; no API calls, no security logs"
                    };
                    (d.to_string(), sts, "managed")
                }
                None => {
                    let p = dir
                        .policies
                        .get(n)
                        .ok_or_else(|| AdminError::Refused(format!("no policy `{n}`")))?;
                    (p.description.clone(), p.statements.clone(), "custom")
                }
            };
            if req.json {
                return Ok(Done::show(to_json(
                    &json!({"name": n, "type": kind, "description": description, "statements": statements, "attached_to": attached_to(&dir, n)}),
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
            let doc = PolicyDocument::parse(&path, file(req, &path)?)
                .map_err(|e| AdminError::Refused(e.to_string()))?;
            let n = doc.name.clone();
            let count = doc.statements.len();
            let p = Policy::from_document(doc, Stamp::default());
            apply(ctx, who, now, vec![Op::Put(Entity::Policy(p), Expect::New)])?;
            Ok(Done::changed(
                format!("policy {n} created with {count} statements\n"),
                format!("created policy {n} ({count} statements)"),
            ))
        }
        PolicyCommand::Delete { name: n } => {
            if is_managed(n) {
                return refused(format!(
                    "`{n}` is a managed policy: it cannot be changed or deleted"
                ));
            }
            let p = dir
                .policies
                .get(n)
                .ok_or_else(|| AdminError::Refused(format!("no policy `{n}`")))?;
            let users = attached_to(&dir, n);
            if !users.is_empty() {
                return refused(format!(
                    "policy {n} is attached to {}; detach it first",
                    users.join(", ")
                ));
            }
            apply(
                ctx,
                who,
                now,
                vec![Op::Delete(Kind::Policy, n.clone(), p.version)],
            )?;
            Ok(Done::changed(
                format!("policy {n} deleted\n"),
                format!("deleted policy {n}"),
            ))
        }
    }
}

// ---- support -----------------------------------------------------------------------------

fn support(
    ctx: &AdminContext,
    who: &PrincipalId,
    cmd: &SupportCommand,
    json_out: bool,
    now: OffsetDateTime,
) -> Result<Done, AdminError> {
    let dir = ctx.guard.store().directory();
    let current = || {
        dir.support
            .clone()
            .ok_or_else(|| AdminError::Refused("support access is not granted".into()))
    };
    let put = |s: SupportAccess| {
        let v = s.version;
        Op::Put(Entity::Support(s), Expect::Version(v))
    };
    match cmd {
        SupportCommand::Show => {
            let view = match &dir.support {
                None => json!({"granted": false}),
                Some(s) => json!({
                    "granted": !s.end_date.has_passed(now),
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
                    "granted support access until {day} with {}",
                    policies.join(", ")
                ),
            ))
        }
        SupportCommand::Update { until } => {
            let mut s = current()?;
            let day = end_date(until, now)?;
            s.end_date = day;
            apply(ctx, who, now, vec![put(s)])?;
            Ok(Done::changed(
                format!("support access now ends {}\n", rfc3339(micros(day.start()))),
                format!("support access until {day}"),
            ))
        }
        SupportCommand::Attach { policy: p } | SupportCommand::Detach { policy: p } => {
            let attach = matches!(cmd, SupportCommand::Attach { .. });
            let mut s = current()?;
            let verb = toggle_policy(&dir, &mut s.policies, p, attach, "support access")?;
            apply(ctx, who, now, vec![put(s)])?;
            Ok(Done::changed(
                format!("policy {p} {verb} support access\n"),
                format!("policy {p} {verb} support access"),
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
                format!("revoked support access, ended {ended} sessions"),
            ))
        }
    }
}

// ---- sessions, audit, check, review ------------------------------------------------------------

fn session(
    ctx: &AdminContext,
    who: &PrincipalId,
    cmd: &SessionCommand,
    json_out: bool,
) -> Result<Done, AdminError> {
    match cmd {
        SessionCommand::List => {
            let list = ctx.sessions.list();
            if json_out {
                return Ok(Done::show(to_json(&list)));
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|s| {
                    vec![
                        s.id.to_string(),
                        s.principal.clone(),
                        s.door.clone(),
                        s.source.clone(),
                        rfc3339(s.started),
                    ]
                })
                .collect();
            Ok(Done::show(table(
                &["ID", "PRINCIPAL", "DOOR", "SOURCE", "STARTED"],
                &rows,
            )))
        }
        SessionCommand::Kill { id } => {
            if !ctx.sessions.kill(*id, &format!("ended by {who}")) {
                return refused(format!("no live session {id}"));
            }
            Ok(Done::changed(
                format!("session {id} ended\n"),
                format!("ended session {id}"),
            ))
        }
    }
}

fn audit(ctx: &AdminContext, cmd: &AuditCommand, req: &Request) -> Result<Done, AdminError> {
    let json_out = req.json;
    let log = ctx.guard.store().log();
    match cmd {
        AuditCommand::Tail { count, follow } => {
            let events = log
                .tail((*count).min(10_000))
                .map_err(|e| AdminError::Failed(e.to_string()))?;
            let text = if json_out {
                json_lines(&events)
            } else {
                event_lines(&events)
            };
            if *follow {
                let after = events.last().map(|e| e.seq).unwrap_or(log.last_seq());
                return Ok(Done::streaming(
                    text,
                    Stream::Follow {
                        after,
                        json: json_out,
                    },
                ));
            }
            Ok(Done::show(text))
        }
        AuditCommand::Export {
            format,
            since,
            from,
        } => {
            let format: Format = format.parse().map_err(AdminError::Refused)?;
            let first = log.first_seq().max(1);
            let start = match (since, from) {
                (_, Some(f)) => (*f).max(first),
                (Some(_), None) => {
                    let t = parse_time("--since", since, OffsetDateTime::now_utc())?.unwrap_or(0);
                    log.seq_at(t)
                        .map_err(|e| AdminError::Failed(e.to_string()))?
                }
                (None, None) => first,
            };
            Ok(Done::streaming(
                String::new(),
                Stream::Export {
                    format,
                    from: start,
                    to: log.last_seq(),
                },
            ))
        }
        AuditCommand::Status => Ok(Done::show(status_text(ctx, json_out))),
        AuditCommand::Query(q) => {
            let query = parse_query(q, OffsetDateTime::now_utc())?;
            let events = log
                .query(&query)
                .map_err(|e| AdminError::Failed(e.to_string()))?;
            if json_out {
                return Ok(Done::show(json_lines(&events)));
            }
            Ok(Done::show(event_lines(&events)))
        }
        AuditCommand::Verify {
            state_dir: Some(_), ..
        } => refused(
            "--state-dir verifies a stopped daemon's store and runs in the CLI, not through the daemon",
        ),
        AuditCommand::Verify {
            state_dir: None,
            checkpoint: None,
            from,
            ..
        } => verify_text(ctx.guard.store(), *from),
        AuditCommand::Verify {
            state_dir: None,
            checkpoint: Some(path),
            public_key,
            ..
        } => {
            let text = file(req, &path.display().to_string())?;
            let cp: crate::store::checkpoint::Checkpoint = serde_json::from_str(text.trim())
                .map_err(|e| {
                    AdminError::Refused(format!("{}: not a checkpoint: {e}", path.display()))
                })?;
            match ctx
                .guard
                .store()
                .check_checkpoint(&cp, public_key.as_deref())
            {
                crate::store::checkpoint::Finding::Consistent => Ok(Done::show(format!(
                    "ok: the log is consistent with the checkpoint at seq {} and its chain verifies\n",
                    cp.seq
                ))),
                found if found.passes() => Ok(Done::show(format!("ok: {found}\n"))),
                other => Err(AdminError::Failed(format!("FAILED: {other}"))),
            }
        }
        AuditCommand::Checkpoint => {
            let store = ctx.guard.store();
            let cp = store
                .checkpoint()
                .map_err(|e| AdminError::Failed(e.to_string()))?
                .ok_or_else(|| AdminError::Refused("the log is empty".into()))?;
            Ok(Done::show(format!(
                "{}\n",
                serde_json::to_string(&cp).unwrap_or_default()
            )))
        }
        AuditCommand::PublicKey => Ok(Done::show(format!(
            "{}\n",
            ctx.guard.store().signing_public_key()
        ))),
    }
}

/// `audit query`'s filters, checked.
/// A `--since`/`--until` value: RFC 3339 or a time back from `now` (UTC µs).
fn parse_time(
    flag: &str,
    text: &Option<String>,
    now: OffsetDateTime,
) -> Result<Option<i64>, AdminError> {
    let Some(t) = text else { return Ok(None) };
    if let Ok(at) = OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339) {
        return Ok(Some(micros(at)));
    }
    match crate::config::Interval::parse(t) {
        Ok(back) => Ok(Some(
            micros(now) - back.0.as_micros().min(i64::MAX as u128) as i64,
        )),
        Err(_) => Err(AdminError::Refused(format!(
            "{flag} `{t}`: give RFC 3339 (2026-11-23T08:00:00Z) or a time back from now (90s, 15m, 2h, 7d)"
        ))),
    }
}

fn parse_query(
    q: &super::QueryArgs,
    now: OffsetDateTime,
) -> Result<crate::store::index::Query, AdminError> {
    let time = |flag: &str, text: &Option<String>| parse_time(flag, text, now);
    let principal = match &q.principal {
        Some(p) => Some(PrincipalId::parse(p)?.to_string()),
        None => None,
    };
    let outcome = q.outcome.as_deref().map(|o| match o {
        "allow" => Outcome::Allow,
        "deny" => Outcome::Deny,
        "success" => Outcome::Success,
        _ => Outcome::Failure,
    });
    if q.limit == 0 || q.limit > 10_000 {
        return refused("--limit must be between 1 and 10000");
    }
    Ok(crate::store::index::Query {
        since: time("--since", &q.since)?,
        until: time("--until", &q.until)?,
        principal,
        meter: q.meter.clone(),
        code: q.code.clone(),
        door: q.door.clone(),
        outcome,
        limit: q.limit,
    })
}

fn verify_text(store: &crate::store::Store, from: Option<u64>) -> Result<Done, AdminError> {
    let r = store.verify(from);
    match &r.problem {
        None => Ok(Done::show(format!("ok: {}\n", r.summary()))),
        Some((seq, why)) => Err(AdminError::Failed(format!(
            "FAILED: first bad seq {seq}: {why}"
        ))),
    }
}

/// `audit status`: capacity, failures, forwarding, the chain check at start.
fn status_text(ctx: &AdminContext, json_out: bool) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let log = ctx.guard.store().log();
    let st = log.status();
    let fw = log.forward_state();
    let target = fw.target.lock().ok().and_then(|t| t.clone());
    let last_error = fw.last_error.lock().ok().and_then(|t| t.clone());
    let backlog = target
        .as_ref()
        .map(|_| st.last_seq.saturating_sub(st.forwarded));
    let chain_broken = match ctx.guard.counters.chain_broken_at.load(Relaxed) {
        0 => None,
        n => Some(n),
    };
    let alarm = ctx.guard.counters.audit_alarm.load(Relaxed) || st.failing;
    let when_full = match st.capacity.when_full {
        crate::config::WhenFull::DropOldest => "drop-oldest",
        crate::config::WhenFull::Refuse => "refuse",
    };
    let full = st.stored + 2 >= st.capacity.events;
    if json_out {
        return format!(
            "{}\n",
            json!({
                "first_seq": st.first_seq, "last_seq": st.last_seq, "stored": st.stored,
                "capacity": st.capacity.events, "warn_at": st.capacity.warn_at,
                "warning": st.stored >= st.capacity.warn_at, "full": full,
                "when_full": when_full, "refused_full": st.refused_full, "dropped": st.dropped,
                "last_cut_seq": st.last_cut.as_ref().map(|c| c.first_kept_seq),
                "pending": st.pending, "alarm": alarm, "chain_broken_at": chain_broken,
                "unauthenticated_suppressed": st.suppressed,
                "unauthenticated_quota_per_hour": st.capacity.unauthenticated_per_hour,
                "forward": target.as_ref().map(|t| json!({
                    "target": t, "connected": fw.connected.load(Relaxed),
                    "delivered_seq": st.forwarded, "backlog": backlog,
                    "sent": fw.sent.load(Relaxed), "reconnects": fw.reconnects.load(Relaxed),
                    "last_error": last_error,
                })),
            })
        );
    }
    let pct = |n: u64| n as f64 * 100.0 / st.capacity.events.max(1) as f64;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "events:       {} stored (seq {}..{}) of a capacity of {} ({:.1}%)",
        st.stored,
        st.first_seq,
        st.last_seq,
        st.capacity.events,
        pct(st.stored)
    );
    let _ = writeln!(
        out,
        "warning at:   {} events ({:.0}%){}",
        st.capacity.warn_at,
        pct(st.capacity.warn_at),
        if st.stored >= st.capacity.warn_at {
            " -- WARNING: reached"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "when full:    {when_full}; refused since start: {}; dropped since start: {}",
        st.refused_full, st.dropped
    );
    if let Some(c) = &st.last_cut {
        let _ = writeln!(
            out,
            "last cut:     events before seq {} removed at {} (signed marker)",
            c.first_kept_seq,
            crate::model::rfc3339(c.time)
        );
    }
    let _ = writeln!(
        out,
        "writer:       {} waiting; {}",
        st.pending,
        if alarm {
            "ALARM: an event could not be made durable"
        } else {
            "healthy"
        }
    );
    let _ = writeln!(
        out,
        "chain:        {}",
        match chain_broken {
            Some(seq) => format!("BROKEN at start: first bad seq {seq} (audit verify names it)"),
            None => "verified at start".into(),
        }
    );
    let _ = writeln!(
        out,
        "unauthenticated traffic: quota {} events per hour; {} counted, not logged, since start",
        st.capacity.unauthenticated_per_hour, st.suppressed
    );
    match target {
        None => {
            let _ = writeln!(out, "forwarding:   not configured");
        }
        Some(t) => {
            let _ = writeln!(
                out,
                "forwarding:   {t}, {}; delivered up to seq {}, backlog {} events; {} sent, {} reconnects{}",
                if fw.connected.load(Relaxed) {
                    "connected"
                } else {
                    "NOT connected"
                },
                st.forwarded,
                backlog.unwrap_or(0),
                fw.sent.load(Relaxed),
                fw.reconnects.load(Relaxed),
                last_error
                    .map(|e| format!("; last error: {e}"))
                    .unwrap_or_default()
            );
        }
    }
    out
}

fn check(
    ctx: &AdminContext,
    c: &CheckArgs,
    json_out: bool,
    now: OffsetDateTime,
) -> Result<Done, AdminError> {
    let who = PrincipalId::parse(&c.principal)?;
    let permission =
        Permission::parse(&c.permission).map_err(|e| AdminError::Refused(e.to_string()))?;
    if !permission.is_global() && c.meter.is_none() {
        return refused(format!(
            "\"{permission}\" is about meters: give --meter METER"
        ));
    }
    let d = ctx
        .guard
        .decide_permission(&who, permission, c.meter.as_deref(), now);
    if json_out {
        return Ok(Done::show(to_json(
            &json!({"allowed": d.allowed, "permission": permission.name(), "principal": who.to_string(), "meter": c.meter, "reason": d.reason.to_string()}),
        )));
    }
    let mut line = d.to_string();
    if !permission.enforceable_at_gateway() {
        line += " (this permission is physical: not enforceable at the gateway)";
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

fn review(
    ctx: &AdminContext,
    who: &PrincipalId,
    ack: bool,
    json_out: bool,
    now: OffsetDateTime,
) -> Result<Done, AdminError> {
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
    let mut flags: Vec<String> = Vec::new();
    let mut access: Vec<serde_json::Value> = Vec::new();
    let pairs = &ctx.guard.settings().separation_of_duties;
    for id in dir.principals() {
        let (names, inline) = dir.policy_sources(&id);
        let mut grants: Vec<String> = inline.iter().map(|s| format!("{s} (inline)")).collect();
        for n in &names {
            let sts = managed_statements(n)
                .or_else(|| dir.policies.get(n).map(|p| p.statements.clone()))
                .unwrap_or_default();
            grants.extend(sts.iter().map(|s| format!("{s} (policy {n})")));
        }
        if names.iter().any(|n| n == ADMINISTRATOR) {
            flags.push(format!("{id} holds Administrator"));
            for (a, b) in pairs {
                flags.push(format!("{id} holds both \"{a}\" and \"{b}\" (through Administrator, exempt from enforcement)"));
            }
        }
        let (status, end, created, keys_of_inactive) = match &id {
            PrincipalId::User(n) => {
                let u = &dir.users[n];
                (
                    u.status,
                    u.end_date,
                    u.created.at,
                    u.status == Status::Inactive && !u.ssh_keys.is_empty(),
                )
            }
            PrincipalId::Service(n) => {
                let s = &dir.service_users[n];
                (
                    s.status,
                    s.end_date,
                    s.created.at,
                    s.status == Status::Inactive
                        && s.keys.iter().any(|k| k.status == Status::Active),
                )
            }
            _ => {
                let s = dir.support.as_ref();
                (
                    Status::Active,
                    s.map(|s| s.end_date),
                    s.map(|s| s.created.at).unwrap_or(0),
                    false,
                )
            }
        };
        if let Some(d) = end.filter(|d| d.has_passed(now)) {
            flags.push(format!("{id}: access end date {d} has passed"));
        }
        if keys_of_inactive {
            flags.push(format!("{id} is INACTIVE but still has keys"));
        }
        let last = ctx.guard.last_login(&id);
        if status == Status::Active && micros(now) - last.unwrap_or(created) > unused_after {
            flags.push(format!("{id} is unused (last login {})", when(last)));
        }
        access.push(json!({"principal": id.to_string(), "status": status.to_string(), "last_login": when(last), "grants": grants}));
    }
    for (id, a, b) in sod_conflicts(&dir, pairs) {
        flags.push(format!(
            "{id} holds both \"{a}\" and \"{b}\" (separation of duties)"
        ));
    }
    let due = review_due(&ctx.guard, &ctx.review, now);
    if json_out {
        return Ok(Done::show(to_json(
            &json!({"access": access, "attention": flags, "review_due": due}),
        )));
    }
    let mut out = String::from("WHO CAN DO WHAT WHERE\n");
    for a in &access {
        let _ = writeln!(
            out,
            "{} ({}; last login {})",
            a["principal"].as_str().unwrap_or(""),
            a["status"].as_str().unwrap_or(""),
            a["last_login"].as_str().unwrap_or("")
        );
        for g in a["grants"].as_array().into_iter().flatten() {
            let _ = writeln!(out, "  {}", g.as_str().unwrap_or(""));
        }
    }
    out += "\nNEEDS ATTENTION\n";
    if flags.is_empty() {
        out += "  nothing\n";
    }
    for f in &flags {
        let _ = writeln!(out, "  {f}");
    }
    let _ = writeln!(
        out,
        "\nreview: {}",
        due.unwrap_or_else(|| "up to date".into())
    );
    Ok(Done::show(out))
}
