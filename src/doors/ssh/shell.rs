//! The gateway shell: what a field crew can type after `ssh -p 2222 HOST`,
//! interactively or as one exec command. Every command becomes an action for
//! the guard; output and exit statuses follow DESIGN §3 (`DENY: reason` on
//! stderr and exit 1 for a denial, exit 2 for a malformed command).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use time::OffsetDateTime;

use super::terminal::{Io, Line};
use super::{DOOR, log};
use crate::config::Passwords;
use crate::doors::admin::exec::{AdminContext, execute_streaming};
use crate::doors::admin::protocol::Request as AdminRequest;
use crate::doors::modbus::UnitMap;
use crate::fleet::pool::MeterLink;
use crate::guard::{Action, AdminOp, Credential, Decision, PasswordGate, Request, WriteValues};
use crate::model::{PasswordRecord, Permission, PrincipalId, micros};
use crate::store::secrets::Secret;
use crate::store::{Category, Entity, EventDraft, Expect, Op, Outcome};

/// Most registers one `read` asks for (the FC 3 limit).
const MAX_READ: u16 = 125;

const HELP: &str = "metergate gateway shell. Commands:
  meters                          the meters you can reach, with tags and health
  read METER REGISTER [COUNT]     read holding registers (one ADDRESS VALUE line each)
  ACTION METER [ARGUMENT]         a named meter action of the meter's profile
                                  (reset-peak-demand, master-reset, sync-time, test-mode on|off, ...)
  connect METER                   the meter's console (Terminal Access)
  whoami                          who you are: roles and effective permissions
  passwd                          change your password
  profile --first F --last L      change your own names
  user|service-user|group|role|policy|support|session|check|review ...
                                  the admin commands, as your policies allow
  audit ...                       the security log (Security Logs Access)
  help                            this text
  exit                            leave the interactive shell
";

/// What the shell needs from the rest of the gateway.
pub struct ShellContext {
    pub admin: Arc<AdminContext>,
    /// The meters' connection pools, swapped whole on reload.
    pub fleet: Arc<ArcSwap<Vec<Arc<UnitMap>>>>,
    pub passwords: Arc<Passwords>,
    pub consoles: super::console::Consoles,
}

/// Who runs the command, from where.
#[derive(Clone)]
pub struct Caller {
    pub who: PrincipalId,
    pub peer: SocketAddr,
    /// The session id (events of a console link to it).
    pub session: u64,
}

impl ShellContext {
    fn link(&self, meter: &str) -> Option<Arc<MeterLink>> {
        self.fleet
            .load()
            .iter()
            .flat_map(|m| m.values())
            .find(|(id, _)| id == meter)
            .map(|(_, l)| l.clone())
    }

    fn request(&self, caller: &Caller, action: Action) -> Request {
        Request {
            principal: caller.who.clone(),
            source: Some(caller.peer.ip().to_string()),
            door: DOOR,
            action,
            read_only: false,
            certificate: None,
        }
    }
}

/// DESIGN §3: `DENY: reason` on stderr, exit 1; the reason names the
/// permission and the meter when the decision was about one.
fn deny(d: &Decision, meter: Option<&str>) -> (String, u32) {
    let about = match (d.permission, meter) {
        (Some(p), Some(m)) => format!("{p} on {m}: "),
        (Some(p), None) => format!("{p}: "),
        _ => String::new(),
    };
    (format!("DENY: {about}{}\n", d.reason), 1)
}

/// The interactive shell: a prompt, line editing and history with a pty,
/// plain lines without one; ends on `exit`, Ctrl-D or EOF.
pub async fn interactive(ctx: Arc<ShellContext>, caller: Caller, mut io: Io) {
    let prompt = format!("{}@metergate> ", caller.who);
    io.out(&format!(
        "metergate gateway shell: logged in as {}. `help` lists the commands, `exit` leaves.\n",
        caller.who
    ))
    .await;
    let mut last = 0;
    loop {
        match io.read_line(&prompt, false).await {
            Line::Text(line) => {
                let word = line.trim();
                if matches!(word, "exit" | "logout" | "quit") {
                    break;
                }
                if word.is_empty() {
                    continue;
                }
                last = run(&ctx, &caller, word, &mut io).await;
            }
            Line::Interrupted => {}
            Line::End => break,
        }
    }
    io.finish(last).await;
}

/// One exec command (`ssh HOST meters`).
pub async fn exec(ctx: Arc<ShellContext>, caller: Caller, line: String, mut io: Io) {
    let code = run(&ctx, &caller, &line, &mut io).await;
    io.finish(code).await;
}

/// Runs one command line and returns its exit status.
pub async fn run(ctx: &ShellContext, caller: &Caller, line: &str, io: &mut Io) -> u32 {
    let Some(words) = shlex::split(line) else {
        io.err("error: unbalanced quotes\n").await;
        return 2;
    };
    let (stdout, stderr, code) = match words.first().map(String::as_str) {
        None | Some("help" | "--help" | "-h") => (HELP.to_string(), String::new(), 0),
        Some("whoami") => (whoami(ctx, &caller.who), String::new(), 0),
        Some("meters") => (meters(ctx, &caller.who), String::new(), 0),
        Some("read") => read(ctx, caller, &words[1..]).await,
        Some("passwd") => return passwd(ctx, caller, io).await,
        Some("connect") => {
            return match &words[1..] {
                [meter] => super::console::connect(ctx, caller, meter, io).await,
                _ => {
                    io.err("usage: connect METER\n").await;
                    2
                }
            };
        }
        Some("profile") => {
            let PrincipalId::User(name) = &caller.who else {
                io.err("error: only users have names to edit\n").await;
                return 2;
            };
            let mut argv = vec!["user".to_string(), "edit".to_string(), name.clone()];
            argv.extend(words[1..].iter().cloned());
            return admin(ctx, caller, argv, io).await;
        }
        Some(
            "user" | "service-user" | "group" | "role" | "policy" | "support" | "session" | "audit"
            | "check" | "review",
        ) => return admin(ctx, caller, words, io).await,
        Some(other) if is_action(ctx, other) => action(ctx, caller, &words).await,
        Some(other) => (
            HELP.to_string(),
            format!(
                "unknown command `{}`\n",
                other.chars().take(64).collect::<String>()
            ),
            2,
        ),
    };
    io.out(&stdout).await;
    io.err(&stderr).await;
    code
}

/// An admin command of the CLI, checked by the guard like any action;
/// streamed answers (`audit export`, `audit tail -f`) are relayed until
/// they end, the client leaves or presses Ctrl-C.
async fn admin(ctx: &ShellContext, caller: &Caller, argv: Vec<String>, io: &mut Io) -> u32 {
    let req = AdminRequest {
        argv,
        json: false,
        files: Default::default(),
    };
    let (r, stream) = execute_streaming(
        &ctx.admin,
        &caller.who,
        &caller.peer.to_string(),
        DOOR,
        &req,
        OffsetDateTime::now_utc(),
    )
    .await;
    // DESIGN §3: a denial prints `DENY: reason` and exits 1.
    let (stderr, code) = match r.stderr.strip_prefix("error: DENY: ") {
        Some(reason) => (format!("DENY: {reason}"), 1),
        None => (r.stderr, u32::from(r.code)),
    };
    io.out(&r.stdout).await;
    io.err(&stderr).await;
    let Some(stream) = stream else { return code };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(4);
    let producer = tokio::spawn(crate::doors::admin::stream::produce(
        ctx.admin.guard.store().clone(),
        stream,
        tx,
    ));
    loop {
        tokio::select! {
            chunk = rx.recv() => match chunk {
                Some(c) => if !io.out(&c).await { break },
                None => break,
            },
            _ = io.until_interrupt() => break,
        }
    }
    drop(rx);
    match producer.await {
        Ok(Ok(())) => 0,
        _ => 1,
    }
}

fn enforceable_meter_permissions() -> impl Iterator<Item = Permission> {
    Permission::ALL
        .into_iter()
        .filter(|p| !p.is_global() && p.enforceable_at_gateway())
}

/// `whoami`: the principal, its roles, and what it may do where.
fn whoami(ctx: &ShellContext, who: &PrincipalId) -> String {
    let guard = &ctx.admin.guard;
    let now = OffsetDateTime::now_utc();
    let fleet = guard.fleet();
    let mut out = format!("principal:  {who}\n");
    let mut roles: Vec<String> = Vec::new();
    for m in &fleet.0 {
        for r in guard.roles_on(who, &m.id) {
            if !roles.contains(&r) {
                roles.push(r);
            }
        }
    }
    let _ = writeln!(
        out,
        "roles:      {}",
        if roles.is_empty() {
            "none".to_string()
        } else {
            roles.join(", ")
        }
    );
    let global: Vec<&str> = Permission::ALL
        .into_iter()
        .filter(|p| p.is_global())
        .filter(|p| guard.decide_permission(who, *p, None, now).allowed)
        .map(|p| p.name())
        .collect();
    let _ = writeln!(
        out,
        "everywhere: {}",
        if global.is_empty() {
            "nothing".to_string()
        } else {
            global.join(", ")
        }
    );
    let _ = writeln!(out, "on meters:");
    let mut front_panel: Vec<String> = Vec::new();
    for m in &fleet.0 {
        let allowed: Vec<&str> = enforceable_meter_permissions()
            .filter(|p| guard.decide_permission(who, *p, Some(&m.id), now).allowed)
            .map(|p| p.name())
            .collect();
        if !allowed.is_empty() {
            let _ = writeln!(out, "  {}: {}", m.id, allowed.join(", "));
        }
        for p in [Permission::FrontPanelConfig, Permission::FrontPanelRestart] {
            if guard.decide_permission(who, p, Some(&m.id), now).allowed {
                front_panel.push(format!("{p} on {}", m.id));
            }
        }
    }
    if !front_panel.is_empty() {
        let _ = writeln!(
            out,
            "not enforceable here (physical, at the meter's front panel): {}",
            front_panel.join(", ")
        );
    }
    out
}

/// `meters`: every meter the caller holds any permission on.
fn meters(ctx: &ShellContext, who: &PrincipalId) -> String {
    let guard = &ctx.admin.guard;
    let now = OffsetDateTime::now_utc();
    let fleet = guard.fleet();
    let mut rows = Vec::new();
    for m in &fleet.0 {
        if !enforceable_meter_permissions()
            .any(|p| guard.decide_permission(who, p, Some(&m.id), now).allowed)
        {
            continue;
        }
        let tags = m
            .tags
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let health = match ctx.link(&m.id) {
            Some(l) => format!(
                "{} ({}/{} connections)",
                l.health(),
                l.connected(),
                l.lanes()
            ),
            None => "not reached through the proxy".to_string(),
        };
        rows.push([m.id.clone(), tags, m.profile.clone(), health]);
    }
    if rows.is_empty() {
        return "no meters: your policies allow nothing on any meter\n".into();
    }
    let head = ["METER", "TAGS", "PROFILE", "HEALTH"];
    let widths: Vec<usize> = (0..4)
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .max()
                .unwrap_or(0)
                .max(head[i].len())
        })
        .collect();
    let mut out = String::new();
    for r in std::iter::once(head.map(str::to_string)).chain(rows) {
        let _ = writeln!(
            out,
            "{:w0$}  {:w1$}  {:w2$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
    }
    out
}

fn exception_words(code: u8) -> &'static str {
    match code {
        1 => "illegal function",
        2 => "illegal data address",
        3 => "illegal data value",
        4 => "server device failure",
        6 => "server device busy",
        _ => "exception",
    }
}

/// `read METER REGISTER [COUNT]`: FC 3 through the guard (Data View).
async fn read(ctx: &ShellContext, caller: &Caller, args: &[String]) -> (String, String, u32) {
    let usage = || {
        (
            String::new(),
            format!("usage: read METER REGISTER [COUNT] (COUNT 1-{MAX_READ})\n"),
            2,
        )
    };
    let (meter, start, count) = match args {
        [m, r] => (m, r.parse::<u16>(), Ok(1)),
        [m, r, c] => (m, r.parse::<u16>(), c.parse::<u16>()),
        _ => return usage(),
    };
    let (Ok(start), Ok(count)) = (start, count) else {
        return usage();
    };
    if count == 0 || count > MAX_READ || start as u32 + count as u32 > 0x1_0000 {
        return usage();
    }
    let action = Action::ReadRegisters {
        meter: meter.clone(),
        function: 3,
        start,
        count,
    };
    let d = ctx
        .admin
        .guard
        .authorize(&ctx.request(caller, action), OffsetDateTime::now_utc())
        .await;
    if !d.allowed {
        let (e, c) = deny(&d, Some(meter));
        return (String::new(), e, c);
    }
    let Some(link) = ctx.link(meter) else {
        return (
            String::new(),
            format!("error: meter {meter} is not reached through the proxy\n"),
            1,
        );
    };
    let pdu = [
        3,
        (start >> 8) as u8,
        start as u8,
        (count >> 8) as u8,
        count as u8,
    ];
    match link.call(&pdu).await {
        Ok(r) if r.first() == Some(&3) && r.len() == 2 + 2 * count as usize => {
            let mut out = String::new();
            for (i, v) in r[2..].chunks_exact(2).enumerate() {
                let _ = writeln!(
                    out,
                    "{} {}",
                    start as usize + i,
                    u16::from_be_bytes([v[0], v[1]])
                );
            }
            (out, String::new(), 0)
        }
        Ok(r) if r.first() == Some(&0x83) => {
            let code = r.get(1).copied().unwrap_or(0);
            (
                String::new(),
                format!(
                    "error: meter {meter} answered exception {code:02} ({})\n",
                    exception_words(code)
                ),
                1,
            )
        }
        Ok(_) => (
            String::new(),
            format!("error: meter {meter} sent a malformed answer\n"),
            1,
        ),
        Err(e) => (String::new(), format!("error: {meter}: {e}\n"), 1),
    }
}

fn is_action(ctx: &ShellContext, word: &str) -> bool {
    ctx.admin
        .guard
        .fleet()
        .1
        .values()
        .any(|p| p.actions.iter().any(|a| a.name == word))
}

/// A named meter action: the profile says which register write it makes,
/// and the guard decides that write like any other (its permission comes
/// from the profile's write allowlist).
async fn action(ctx: &ShellContext, caller: &Caller, words: &[String]) -> (String, String, u32) {
    let name = &words[0];
    let fail = |m: String, code| (String::new(), m, code);
    let (meter, argument) = match &words[1..] {
        [m] => (m, None),
        [m, a] => (m, Some(a.as_str())),
        _ => return fail(format!("usage: {name} METER [ARGUMENT]\n"), 2),
    };
    let fleet = ctx.admin.guard.fleet();
    let Some(m) = fleet.0.iter().find(|m| m.id == *meter) else {
        return fail(format!("error: no meter `{meter}`\n"), 2);
    };
    let Some(act) = fleet
        .1
        .get(&m.profile)
        .and_then(|p| p.actions.iter().find(|a| a.name == *name))
    else {
        return fail(
            format!(
                "error: meter {meter} (profile {}) has no action `{name}`\n",
                m.profile
            ),
            2,
        );
    };
    let now = OffsetDateTime::now_utc();
    let values = match act.values_for(argument, now) {
        Ok(v) => v,
        Err(e) => return fail(format!("usage: {e}\n"), 2),
    };
    if argument.is_some() && act.choices.is_empty() {
        return fail(format!("usage: {name} METER (no argument)\n"), 2);
    }
    let action = Action::WriteRegisters {
        meter: meter.clone(),
        function: act.function,
        start: act.address,
        values: WriteValues::Known(values.clone()),
        read: None,
    };
    let d = ctx
        .admin
        .guard
        .authorize(&ctx.request(caller, action), now)
        .await;
    if !d.allowed {
        let (e, c) = deny(&d, Some(meter));
        return fail(e, c);
    }
    let Some(link) = ctx.link(meter) else {
        return fail(
            format!("error: meter {meter} is not reached through the proxy\n"),
            1,
        );
    };
    let mut pdu = vec![act.function, (act.address >> 8) as u8, act.address as u8];
    if act.function == 6 {
        pdu.extend_from_slice(&values[0].to_be_bytes());
    } else {
        pdu.extend_from_slice(&(values.len() as u16).to_be_bytes());
        pdu.push((values.len() * 2) as u8);
        for v in &values {
            pdu.extend_from_slice(&v.to_be_bytes());
        }
    }
    match link.call(&pdu).await {
        Ok(r) if r.first() == Some(&act.function) => (
            format!(
                "{name} {meter}{}: done\n",
                argument.map(|a| format!(" {a}")).unwrap_or_default()
            ),
            String::new(),
            0,
        ),
        Ok(r) if r.first() == Some(&(act.function | 0x80)) => {
            let code = r.get(1).copied().unwrap_or(0);
            fail(
                format!(
                    "error: meter {meter} answered exception {code:02} ({})\n",
                    exception_words(code)
                ),
                1,
            )
        }
        Ok(_) => fail(format!("error: meter {meter} sent a malformed answer\n"), 1),
        // A write is never retried: the operator decides whether to.
        Err(e) => fail(
            format!("error: {meter}: {e} (the write was not retried)\n"),
            1,
        ),
    }
}

/// `passwd`: Password Self-Management. The current password is checked
/// (a wrong one counts toward lockout like a failed login), the new one
/// must pass the policy and differ from the current one.
async fn passwd(ctx: &ShellContext, caller: &Caller, io: &mut Io) -> u32 {
    let admin = &ctx.admin;
    let now = OffsetDateTime::now_utc();
    let d = admin
        .guard
        .authorize(
            &ctx.request(
                caller,
                Action::Admin {
                    op: AdminOp::OwnPassword,
                    target: "passwd".into(),
                },
            ),
            now,
        )
        .await;
    if !d.allowed {
        io.err(&deny(&d, None).0).await;
        return 1;
    }
    let PrincipalId::User(name) = &caller.who else {
        io.err("error: only users have passwords\n").await;
        return 2;
    };
    let source = caller.peer.ip();
    match admin.guard.password_gate(&caller.who, Some(source), now) {
        PasswordGate::Locked { .. } | PasswordGate::SourceRefused => {
            io.err("error: password changes are locked for now; try again later\n")
                .await;
            return 1;
        }
        _ => {}
    }
    let record = admin
        .guard
        .store()
        .directory()
        .users
        .get(name)
        .and_then(|u| u.password.clone());
    let Line::Text(current) = io.read_line("Current password: ", true).await else {
        return 1;
    };
    let current = Secret::new(current);
    let verified = match &record {
        Some(r) => admin
            .hashes
            .verify(current.clone(), r.hash.clone())
            .await
            .unwrap_or(false),
        None => false,
    };
    if !verified {
        admin
            .guard
            .login(
                &caller.who,
                Some(source),
                DOOR,
                Credential::Password,
                false,
                now,
            )
            .await;
        io.err("error: that is not your current password\n").await;
        return 1;
    }
    let Line::Text(new) = io.read_line("New password: ", true).await else {
        return 1;
    };
    let Line::Text(repeat) = io.read_line("Repeat new password: ", true).await else {
        return 1;
    };
    let (new, repeat) = (Secret::new(new), Secret::new(repeat));
    let violation = if new.expose() != repeat.expose() {
        Some("The two new passwords differ.".to_string())
    } else {
        ctx.passwords
            .violation(name, new.expose(), current.expose(), "current")
    };
    if let Some(why) = violation {
        let ev = EventDraft::new(
            "password.rejected",
            Category::Authentication,
            Outcome::Failure,
        )
        .principal(&caller.who)
        .source(source)
        .door(DOOR)
        .reason(why.clone());
        log(admin, ev).await;
        io.err(&format!("error: {why}\n")).await;
        return 1;
    }
    let Ok(hash) = admin.hashes.hash(new).await else {
        io.err("error: the password hashing pool is busy; try again\n")
            .await;
        return 1;
    };
    let dir = admin.guard.store().directory();
    let Some(mut user) = dir.users.get(name).cloned() else {
        return 1;
    };
    user.password = Some(PasswordRecord {
        hash,
        temporary: false,
        issued_at: micros(now),
    });
    let version = user.version;
    if let Err(e) = admin.guard.change(
        vec![Op::Put(Entity::User(user), Expect::Version(version))],
        &caller.who,
        now,
    ) {
        io.err(&format!(
            "error: the new password could not be stored: {e}\n"
        ))
        .await;
        return 1;
    }
    let ev = EventDraft::new(
        "password.changed",
        Category::Authentication,
        Outcome::Success,
    )
    .principal(&caller.who)
    .source(source)
    .door(DOOR)
    .reason("changed with passwd");
    log(admin, ev).await;
    io.out("password changed\n").await;
    0
}
