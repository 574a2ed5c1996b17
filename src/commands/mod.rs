//! The application core: every command of the contract, once, whatever door
//! it came through. A command parses from argv, asks the guard (which decides
//! and logs), applies the change and answers with an [`Outcome`] that the
//! control socket, the SSH shell and the HTTPS API each render their own way.

pub mod access;
mod audit;
mod certificates;
mod directory;
mod effective;
mod groups;
mod helpers;
pub mod meter;
mod mfa;
pub mod password;
mod policies;
mod recordings;
mod review;
mod roles;
mod service_users;
mod sessions;
pub mod shape;
pub mod stream;
mod support;
mod users;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use clap::Parser;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;

use crate::config::Passwords;
use crate::fleet::meter_ssh::Consoles;
use crate::fleet::units::UnitMap;
use crate::guard::{Action, AdminOp, Conferral, Decision, Guard, Request as GuardRequest};
use crate::model::*;
use crate::sessions::Sessions;
use crate::store::export::Format;
use crate::store::secrets::{self, HashPool, Secret};
use crate::store::{
    Category, Entity, EventDraft, Expect, Kind, Op, Outcome as EventOutcome, StoreError,
    sod_conflicts,
};
use audit::*;
use certificates::*;
use groups::*;
use helpers::*;
use mfa::*;
use policies::*;
use recordings::*;
use review::*;
use roles::*;
use service_users::*;
use sessions::*;
pub use shape::*;
use stream::{Stream, event_lines, json_lines};
use support::*;
use users::*;

pub use review::{ReviewRecord, review_due};

/// Longest argument accepted; names are further limited to 64 characters.
const MAX_ARG: usize = 4096;

/// What the commands need from the daemon: one bundle handed to every door.
pub struct Gateway {
    pub guard: Arc<Guard>,
    pub sessions: Arc<Sessions>,
    pub hashes: Arc<HashPool>,
    pub review: ReviewSettings,
    /// Wakes the Modbus/TCP Security CRL watcher (a reported revocation).
    pub crl_changed: Option<Arc<tokio::sync::Notify>>,
    /// The meters' connection pools, swapped whole on reload.
    pub fleet: Arc<ArcSwap<Vec<Arc<UnitMap>>>>,
    /// The password policy (first login, `passwd`).
    pub passwords: Arc<Passwords>,
    /// Where the meter-side accounts' secrets are.
    pub consoles: Consoles,
    /// The name authenticator apps show for the gateway (`[mfa] issuer`).
    pub mfa_issuer: String,
    /// Session recordings (interactive SSH).
    pub recordings: Arc<crate::recording::Recordings>,
    /// Where temporary passwords are sent (`[mail]`); None: printed.
    pub mail: Option<Arc<crate::mail::Mailer>>,
}

/// When a review is due, and when an account counts as unused.
#[derive(Clone, Debug)]
pub struct ReviewSettings {
    pub interval: Duration,
    pub unused_after: Duration,
}

/// Who runs a command, from where, through which door.
#[derive(Clone, Debug)]
pub struct Caller {
    pub who: PrincipalId,
    /// Where the request came from, as events show it.
    pub source: String,
    /// The network address, when the caller came over the network
    /// (throttling, and events of the doors that have one).
    pub addr: Option<IpAddr>,
    pub door: &'static str,
    /// The live session the command runs in (0: none).
    pub session: u64,
    /// Whether that session proved a second factor.
    pub factor: SessionFactor,
    /// Whether what the caller does is being recorded (an interactive SSH
    /// channel whose recording is written).
    pub recorded: bool,
}

pub use crate::sessions::SessionFactor;

impl Caller {
    /// A guard request for `action` by this caller.
    pub fn request(&self, action: Action) -> GuardRequest {
        GuardRequest {
            principal: self.who.clone(),
            source: Some(self.source.clone()),
            door: self.door,
            action,
            read_only: false,
            certificate: None,
            second_factor: self.factor.proven(),
            recorded: self.recorded,
        }
    }
}

/// A command as a door received it: the words, whether JSON is wanted, and
/// the contents of the files it names (`--file F`, `@FILE`), read by the
/// client with the client's rights.
#[derive(Clone, Debug, Default)]
pub struct Input {
    pub argv: Vec<String>,
    pub json: bool,
    pub files: BTreeMap<String, String>,
    /// A change only if the thing changed is still at this version (the
    /// API's `If-Match`); checked while changes wait their turn, so no
    /// other change slips in between.
    pub precondition: Option<Precondition>,
}

/// What a versioned resource is: the directory's kinds of entity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    User,
    ServiceUser,
    Group,
    Role,
    Policy,
    Support,
}

/// "Only if NAME of this kind is still the one with this tag" (any one
/// when `tag` is None: it must exist).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Precondition {
    pub resource: Resource,
    pub name: String,
    pub tag: Option<String>,
}

/// A resource's entity tag: its version and when it was created, so that
/// one deleted and made again under the same name (at version 1 again)
/// never matches a tag of the one before.
pub fn entity_tag(version: u64, created_at: i64) -> String {
    format!("{version}-{created_at:x}")
}

impl Precondition {
    /// The tag now, or None when it does not exist (managed policies never
    /// change: "0-0").
    fn current(&self, dir: &Directory) -> Option<String> {
        let n = &self.name;
        let (version, created) = match self.resource {
            Resource::User => dir.users.get(n).map(|u| (u.version, u.created.at)),
            Resource::ServiceUser => dir.service_users.get(n).map(|s| (s.version, s.created.at)),
            Resource::Group => dir.groups.get(n).map(|g| (g.version, g.created.at)),
            Resource::Role => dir.roles.get(n).map(|r| (r.version, r.created.at)),
            Resource::Policy if is_managed(n) => Some((0, 0)),
            Resource::Policy => dir.policies.get(n).map(|p| (p.version, p.created.at)),
            Resource::Support => dir.support.as_ref().map(|s| (s.version, s.created.at)),
        }?;
        Some(entity_tag(version, created))
    }

    /// Holds now, or why not.
    fn check(&self, dir: &Directory) -> Result<(), CommandError> {
        match (self.current(dir), &self.tag) {
            (None, _) => Err(CommandError::Stale(format!(
                "`{}` does not exist, and the request expected it to",
                self.name
            ))),
            (Some(_), None) => Ok(()),
            (Some(now), Some(want)) if now == *want => Ok(()),
            (Some(now), Some(want)) => Err(CommandError::Stale(format!(
                "`{}` is at {now}, not {want} as the request expected: read it again",
                self.name
            ))),
        }
    }
}

/// How the command line shows an outcome (DESIGN §3): the exit code (0
/// done, 1 failed, 2 refused or denied) and what goes to stdout and
/// stderr. The control socket sends it as frames; the API to `metergate
/// --api` as JSON; both print the same words.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CliAnswer {
    pub code: u8,
    pub stdout: String,
    pub stderr: String,
}

/// What a command came to. Doors render it: the control socket as an exit
/// code and text, the shell as `DENY: …` and exit 1, the API as problem+json.
#[derive(Debug)]
pub enum Outcome {
    /// Done: what to print, and for a streamed answer what follows.
    Done {
        stdout: String,
        stream: Option<Stream>,
    },
    /// The command line itself is malformed: usage text (exit 2).
    Usage(String),
    /// The guard said no: the decision (its reason, its event) and the
    /// words to show (the permission and meter when it was about one).
    Denied {
        decision: Box<Decision>,
        message: String,
    },
    /// The request is wrong or refused (exit 2).
    Refused(String),
    /// It names something that does not exist (exit 2, as a refusal; the
    /// API answers 404).
    NotFound(String),
    /// Something failed while carrying it out (exit 1).
    Failed(String),
    /// The thing to change is no longer at the version the caller named
    /// (exit 2; the API answers 412).
    Stale(String),
    /// It may never be changed, by anyone: a managed policy (exit 2; the
    /// API answers 403).
    Protected(String),
}

impl Outcome {
    /// The command line's answer, and what follows for a streamed one.
    pub fn cli(self) -> (CliAnswer, Option<Stream>) {
        let fail = |code: u8, stderr: String| CliAnswer {
            code,
            stdout: String::new(),
            stderr,
        };
        match self {
            Outcome::Done { stdout, stream } => (
                CliAnswer {
                    code: 0,
                    stdout,
                    stderr: String::new(),
                },
                stream,
            ),
            Outcome::Usage(text) => (fail(2, text), None),
            Outcome::Denied { message, .. } => (fail(2, format!("error: DENY: {message}\n")), None),
            Outcome::Refused(m)
            | Outcome::NotFound(m)
            | Outcome::Stale(m)
            | Outcome::Protected(m) => (fail(2, format!("error: {m}\n")), None),
            Outcome::Failed(m) => (fail(1, format!("error: {m}\n")), None),
        }
    }

    /// Done with text only.
    pub fn text(stdout: impl Into<String>) -> Outcome {
        Outcome::Done {
            stdout: stdout.into(),
            stream: None,
        }
    }
}

/// Why a command did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The request itself is wrong or refused (exit 2).
    #[error("{0}")]
    Refused(String),
    /// It names a user, group, role, policy… that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Something failed while carrying it out (exit 1).
    #[error("{0}")]
    Failed(String),
    /// The guard refused a part of it (a grant the caller does not hold).
    #[error("DENY: {}", .0.reason)]
    Denied(Box<Decision>),
    /// Changed since the version the caller named.
    #[error("{0}")]
    Stale(String),
    /// Never changeable (a managed policy).
    #[error("{0}")]
    Protected(String),
}

impl From<StoreError> for CommandError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Io { .. }
            | StoreError::Sled(_)
            | StoreError::Corrupt { .. }
            | StoreError::Locked(_)
            | StoreError::Unreachable(_)
            | StoreError::Contended
            | StoreError::ChangedWhileChecked => CommandError::Failed(e.to_string()),
            StoreError::NotFound { .. } => CommandError::NotFound(e.to_string()),
            StoreError::StaleVersion { .. } => CommandError::Stale(e.to_string()),
            other => CommandError::Refused(other.to_string()),
        }
    }
}

impl From<NameError> for CommandError {
    fn from(e: NameError) -> Self {
        CommandError::Refused(e.to_string())
    }
}

fn refused<T>(msg: impl Into<String>) -> Result<T, CommandError> {
    Err(CommandError::Refused(msg.into()))
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

/// Runs one admin command for `caller`: parse, ask the guard (which logs the
/// decision), apply, log what changed.
pub async fn execute(ctx: &Gateway, caller: &Caller, req: &Input, now: OffsetDateTime) -> Outcome {
    if let Some((i, _)) = req.argv.iter().enumerate().find(|(_, a)| a.len() > MAX_ARG) {
        return Outcome::Refused(format!("argument {} is longer than {MAX_ARG} bytes", i + 1));
    }
    let line = match AdminLine::try_parse_from(
        std::iter::once("metergate".to_string()).chain(req.argv.iter().cloned()),
    ) {
        Ok(line) => line,
        Err(e) => {
            use clap::error::ErrorKind;
            let text = e.render().to_string();
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => Outcome::text(text),
                _ => Outcome::Usage(text),
            };
        }
    };
    let who = &caller.who;
    // The command's own words for events; long ones (key lines) shortened,
    // second-factor codes left out (a recovery code is a secret).
    let secret_from = match &line.command {
        AdminCommand::Mfa { .. } => 1,
        AdminCommand::User {
            command:
                UserCommand::Mfa {
                    command: MfaCommand::Confirm { .. },
                },
        } => 4 + usize::from(req.argv.get(3).is_some_and(|a| a == "--")),
        _ => usize::MAX,
    };
    let words = req
        .argv
        .iter()
        .enumerate()
        .map(|(i, a)| {
            if i >= secret_from && a != "--" {
                "(code)".to_string()
            } else if a.chars().count() > 48 {
                format!("{}…", a.chars().take(40).collect::<String>())
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    // Certificate reports say what the CA did on this machine: only the
    // local `metergate cert`, through the control socket, makes them.
    if matches!(line.command, AdminCommand::CertificateReport(_)) && caller.door != "control-socket"
    {
        let why = "certificate reports come from `metergate cert` on the gateway, through its control socket";
        let ev = EventDraft::new("admin.refused", Category::Admin, EventOutcome::Failure)
            .principal(who)
            .source(&caller.source)
            .door(caller.door)
            .action("certificate-report")
            .reason(why);
        ctx.guard.record(ev).await;
        return Outcome::Refused(why.into());
    }
    let action = action_of(&line.command, who, &words);
    // A new temporary password changes the user too: it waits its turn.
    let changes = matches!(
        action,
        Action::Admin {
            op: AdminOp::Change | AdminOp::ResendPassword | AdminOp::MailAddress,
            ..
        }
    );
    // A change takes its turn before it is decided on: the decision, the
    // precondition and what it confers are checked on the directory it is
    // applied to (with a shared directory, one no gateway changed since).
    // One the caller may not make at all is refused without waiting for
    // the turn, so it cannot hold up anyone else's.
    let request = caller.request(action);
    let turn = match changes && ctx.guard.decide(&request, now).allowed {
        true => Some(ctx.guard.checked_change().await),
        false => None,
    };
    let decision = ctx.guard.authorize(&request, now).await;
    if !decision.allowed {
        return Outcome::Denied {
            message: decision.reason.to_string(),
            decision: Box::new(decision),
        };
    }
    let result = match req
        .precondition
        .as_ref()
        .map(|p| p.check(&ctx.guard.directory()))
    {
        Some(Err(stale)) => Err(stale),
        _ => match &turn {
            Some(t) => t.run(run(ctx, caller, &line.command, req, now)).await,
            None => run(ctx, caller, &line.command, req, now).await,
        },
    };
    drop(turn);
    let event = |outcome: EventOutcome, code: &str, reason: String| {
        EventDraft::new(code, Category::Admin, outcome)
            .principal(who)
            .source(&caller.source)
            .door(caller.door)
            .action(&words)
            .reason(reason)
    };
    match result {
        Ok(done) => {
            if let Some(what) = done.change {
                ctx.guard
                    .record(event(EventOutcome::Success, "admin.change", what))
                    .await;
            }
            let stdout = if req.json
                && !done.stdout.trim().is_empty()
                && !done.stdout.trim_start().starts_with(['{', '['])
            {
                format!(
                    "{}\n",
                    json!({ "ok": true, "message": done.stdout.trim_end() })
                )
            } else {
                done.stdout
            };
            Outcome::Done {
                stdout,
                stream: done.stream,
            }
        }
        Err(CommandError::Denied(d)) => Outcome::Denied {
            message: d.reason.to_string(),
            decision: d,
        },
        Err(e) => {
            ctx.guard
                .record(event(EventOutcome::Failure, "admin.refused", e.to_string()))
                .await;
            match e {
                CommandError::Failed(m) => Outcome::Failed(m),
                CommandError::NotFound(m) => Outcome::NotFound(m),
                CommandError::Stale(m) => Outcome::Stale(m),
                CommandError::Protected(m) => Outcome::Protected(m),
                other => Outcome::Refused(other.to_string()),
            }
        }
    }
}

/// The guard action a command needs (DESIGN §3's permission table).
fn action_of(cmd: &AdminCommand, who: &PrincipalId, words: &str) -> Action {
    use AdminCommand as A;
    let op = match cmd {
        A::User {
            command: UserCommand::List | UserCommand::Show { .. } | UserCommand::Permissions { .. },
        }
        | A::ServiceUser {
            command:
                ServiceUserCommand::List
                | ServiceUserCommand::Show { .. }
                | ServiceUserCommand::Permissions { .. },
        }
        | A::ServiceUser {
            command:
                ServiceUserCommand::Key {
                    command: KeyCommand::List { .. },
                },
        }
        | A::Group {
            command:
                GroupCommand::List | GroupCommand::Show { .. } | GroupCommand::Permissions { .. },
        }
        | A::Role {
            command: RoleCommand::List | RoleCommand::Show { .. },
        }
        | A::Policy {
            command:
                PolicyCommand::List | PolicyCommand::Show { .. } | PolicyCommand::History { .. },
        }
        | A::Support {
            command: SupportCommand::Show | SupportCommand::Permissions { .. },
        }
        | A::Session {
            command: SessionCommand::List,
        }
        | A::Check(_)
        | A::WhoCan(_)
        | A::Review { .. }
        | A::Directory {
            command: DirectoryCommand::Status,
        } => AdminOp::View,
        A::Directory { .. } => AdminOp::DirectoryTransfer,
        A::User {
            command: UserCommand::ResendPassword { .. },
        } => AdminOp::ResendPassword,
        // One's own factor (enrol, confirm) and stepping up need nothing
        // beyond being let in; a reset is User Management's, even one's own
        // (a stolen first credential must not swap the factor).
        A::User {
            command:
                UserCommand::Mfa {
                    command: MfaCommand::Enroll { name } | MfaCommand::Confirm { name, .. },
                },
        } if *who == PrincipalId::User(name.clone()) => AdminOp::OwnProfile,
        A::Mfa { .. } => AdminOp::OwnProfile,
        // One's own first and last name need nothing beyond being let in.
        A::User {
            command: UserCommand::Edit {
                name, email: None, ..
            },
        } if *who == PrincipalId::User(name.clone()) => AdminOp::OwnProfile,
        // Someone else's email: their next temporary password goes there.
        A::User {
            command:
                UserCommand::Edit {
                    name,
                    email: Some(_),
                    ..
                },
        } if *who != PrincipalId::User(name.clone()) => AdminOp::MailAddress,
        // Recordings are the security log's: Security Logs Access.
        A::Session {
            command:
                SessionCommand::Recordings { .. }
                | SessionCommand::Play { .. }
                | SessionCommand::Export { .. }
                | SessionCommand::Watch { .. }
                | SessionCommand::Verify { .. },
        } => {
            return Action::ReadAudit {
                what: format!("recordings: {words}"),
            };
        }
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
                AuditCommand::Verify {
                    incremental: true, ..
                } => "verify --incremental".into(),
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
    ctx: &Gateway,
    caller: &Caller,
    cmd: &AdminCommand,
    req: &Input,
    now: OffsetDateTime,
) -> Result<Done, CommandError> {
    let who = &caller.who;
    match cmd {
        AdminCommand::User { command } => user(ctx, caller, command, req, now).await,
        AdminCommand::ServiceUser { command } => {
            service_user(ctx, caller, command, req.json, now).await
        }
        AdminCommand::Group { command } => group(ctx, caller, command, req.json, now).await,
        AdminCommand::Role { command } => role(ctx, caller, command, req.json, now).await,
        AdminCommand::Policy { command } => policy(ctx, caller, command, req, now).await,
        AdminCommand::Support { command } => support(ctx, caller, command, req.json, now).await,
        AdminCommand::Session { command } => session(ctx, caller, command, req.json, now).await,
        AdminCommand::Audit { command } => audit(ctx, command, req).await,
        AdminCommand::Directory { command } => directory::run(ctx, caller, command, req, now).await,
        AdminCommand::Mfa { code } => step_up(ctx, caller, code).await,
        AdminCommand::Check(c) => check(ctx, c, req, now),
        AdminCommand::WhoCan(c) => effective::who_can(ctx, c, req.json, now),
        AdminCommand::Review { ack } => review(ctx, who, *ack, req.json, now),
        AdminCommand::CertificateReport(r) => certificate_report(ctx, caller, r).await,
    }
}
