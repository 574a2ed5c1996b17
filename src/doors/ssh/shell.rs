//! The gateway shell: what a field crew can type after `ssh -p 2222 HOST`,
//! interactively or as one exec command. Every command becomes an action for
//! the guard; output and exit statuses follow DESIGN §3 (`DENY: reason` on
//! stderr and exit 1 for a denial, exit 2 for a malformed command).

use std::sync::Arc;

use time::OffsetDateTime;

use super::DOOR;
use super::terminal::{Io, Line};
use crate::commands::meter;
use crate::commands::password::{self, PasswordError, Replacing};
use crate::commands::{Caller, Gateway, Input, Outcome, execute};
use crate::guard::{Action, AdminOp, PasswordCheck};
use crate::model::PrincipalId;
use crate::store::secrets::Secret;

const HELP: &str = "metergate gateway shell. Commands:
  meters                          the meters you can reach, with tags and health
  read METER REGISTER [COUNT]     read holding registers (one ADDRESS VALUE line each)
  ACTION METER [ARGUMENT]         a named meter action of the meter's profile
                                  (reset-peak-demand, master-reset, sync-time, test-mode on|off, ...)
  connect METER                   the meter's console (Terminal Access)
  whoami                          who you are: roles and effective permissions
  passwd                          change your password
  mfa [CODE]                      prove your second factor in this session (asks for the code)
  mfa enroll                      enrol a TOTP factor for yourself (QR code, then one code)
  profile --first F --last L      change your own names
  user|service-user|group|role|policy|support|session|check|review ...
                                  the admin commands, as your policies allow
  audit ...                       the security log (Security Logs Access)
  help                            this text
  exit                            leave the interactive shell
";

/// Prints a command's outcome the shell's way (DESIGN §3): `DENY: …` on
/// stderr and exit 1 for a denial, exit 2 for a malformed or refused
/// command, 1 for a failure.
async fn show(io: &mut Io, outcome: Outcome) -> u32 {
    match outcome {
        Outcome::Done { stdout, .. } => {
            io.out(&stdout).await;
            0
        }
        Outcome::Usage(text) => {
            io.err(&text).await;
            2
        }
        Outcome::Denied { message, .. } => {
            io.err(&format!("DENY: {message}\n")).await;
            1
        }
        Outcome::Refused(m) | Outcome::NotFound(m) | Outcome::Stale(m) | Outcome::Protected(m) => {
            io.err(&format!("error: {m}\n")).await;
            2
        }
        Outcome::Failed(m) => {
            io.err(&format!("error: {m}\n")).await;
            1
        }
    }
}

/// The interactive shell: a prompt, line editing and history with a pty,
/// plain lines without one; ends on `exit`, Ctrl-D or EOF.
pub async fn interactive(ctx: Arc<Gateway>, caller: Caller, mut io: Io) {
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
pub async fn exec(ctx: Arc<Gateway>, caller: Caller, line: String, mut io: Io) {
    let code = run(&ctx, &caller, &line, &mut io).await;
    io.finish(code).await;
}

/// Runs one command line and returns its exit status.
pub async fn run(ctx: &Gateway, caller: &Caller, line: &str, io: &mut Io) -> u32 {
    // Recorded is asked for each command: a recording that failed (and
    // fail-open went on) no longer stands for what follows.
    let now = Caller {
        recorded: io.recorded(),
        ..caller.clone()
    };
    let caller = &now;
    let Some(words) = shlex::split(line) else {
        io.err("error: unbalanced quotes\n").await;
        return 2;
    };
    let outcome = match words.first().map(String::as_str) {
        None | Some("help" | "--help" | "-h") => Outcome::text(HELP),
        Some("whoami") => Outcome::text(meter::whoami(ctx, &caller.who)),
        Some("meters") => Outcome::text(meter::meters(ctx, &caller.who)),
        Some("read") => meter::read(ctx, caller, &words[1..]).await,
        Some("passwd") => return passwd(ctx, caller, io).await,
        Some("mfa") => return mfa(ctx, caller, &words[1..], io).await,
        Some("connect") => {
            return match &words[1..] {
                [m] => super::console::connect(ctx, caller, m, io).await,
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
        Some(other) if meter::is_action(ctx, other) => meter::action(ctx, caller, &words).await,
        Some(other) => {
            io.out(HELP).await;
            io.err(&format!(
                "unknown command `{}`\n",
                other.chars().take(64).collect::<String>()
            ))
            .await;
            return 2;
        }
    };
    show(io, outcome).await
}

/// An admin command of the CLI, checked by the guard like any action;
/// streamed answers (`audit export`, `audit tail -f`) are relayed until
/// they end, the client leaves or presses Ctrl-C.
async fn admin(ctx: &Gateway, caller: &Caller, argv: Vec<String>, io: &mut Io) -> u32 {
    let secret = shows_a_secret(&argv);
    let input = Input {
        argv,
        ..Default::default()
    };
    let outcome = execute(ctx, caller, &input, OffsetDateTime::now_utc()).await;
    if secret && matches!(outcome, Outcome::Done { .. }) {
        // Shown once to the person, never kept in a recording.
        io.withhold("output with a secret shown once").await;
        let status = show(io, outcome).await;
        io.record_again();
        return status;
    }
    let stream = match outcome {
        Outcome::Done {
            stdout,
            stream: Some(stream),
        } => {
            io.out(&stdout).await;
            stream
        }
        other => return show(io, other).await,
    };
    // A watched session's output is in its own recording: relayed here
    // unrecorded (two sessions watching each other would echo forever).
    let relayed = matches!(stream, crate::commands::stream::Stream::Watch(_));
    if relayed {
        io.withhold("the watched session's output (it is in its own recording)")
            .await;
    }
    // A followed log relies on Security Logs Access for as long as it runs:
    // withdrawn, the session ends (the access watcher).
    let logs = crate::model::Permission::SecurityLogsAccess;
    ctx.sessions.rely_on(caller.session, logs, None);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(4);
    let producer = tokio::spawn(crate::commands::stream::produce(
        ctx.guard.clone(),
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
    if relayed {
        io.record_again();
    }
    ctx.sessions.release(caller.session, logs, None);
    match producer.await {
        Ok(Ok(())) => 0,
        _ => 1,
    }
}

/// Whether a command's answer holds a secret shown once: a temporary
/// password, a TOTP secret, recovery codes, an access key's secret.
fn shows_a_secret(argv: &[String]) -> bool {
    let w: Vec<&str> = argv.iter().map(String::as_str).collect();
    matches!(
        w.as_slice(),
        ["user", "add", ..]
            | ["user", "resend-password", ..]
            | ["user", "mfa", "enroll" | "confirm", ..]
            | ["service-user", "key", "create", ..]
    )
}

/// `mfa`: steps the session up with a code (asked for, not echoed, when
/// not given); `mfa enroll`: enrols one's own factor and confirms it with
/// one code asked for at once.
async fn mfa(ctx: &Gateway, caller: &Caller, args: &[String], io: &mut Io) -> u32 {
    let word = |s: &str| s.to_string();
    match args {
        [] => {
            let Line::Text(code) = io.read_line("Code: ", true).await else {
                return 1;
            };
            admin(ctx, caller, vec![word("mfa"), code.trim().to_string()], io).await
        }
        [e] if e == "enroll" => {
            let PrincipalId::User(name) = &caller.who else {
                io.err("error: only users have a second factor\n").await;
                return 2;
            };
            let argv = vec![word("user"), word("mfa"), word("enroll"), name.clone()];
            let status = admin(ctx, caller, argv, io).await;
            if status != 0 {
                return status;
            }
            let Line::Text(code) = io.read_line("Code from the app: ", true).await else {
                io.err(&format!(
                    "not confirmed: run `user mfa confirm {name} CODE` with a code from the app\n"
                ))
                .await;
                return 1;
            };
            let argv = vec![
                word("user"),
                word("mfa"),
                word("confirm"),
                name.clone(),
                code.trim().to_string(),
            ];
            admin(ctx, caller, argv, io).await
        }
        _ => {
            let mut argv = vec![word("mfa")];
            argv.extend(args.iter().cloned());
            admin(ctx, caller, argv, io).await
        }
    }
}

/// `passwd`: Password Self-Management. The current password is checked
/// (a wrong one counts toward lockout like a failed login), the new one
/// must pass the policy and differ from the current one.
async fn passwd(ctx: &Gateway, caller: &Caller, io: &mut Io) -> u32 {
    let now = OffsetDateTime::now_utc();
    let d = ctx
        .guard
        .authorize(
            &caller.request(Action::Admin {
                op: AdminOp::OwnPassword,
                target: "passwd".into(),
            }),
            now,
        )
        .await;
    if !d.allowed {
        return show(io, meter::denied(d, None)).await;
    }
    if !matches!(caller.who, PrincipalId::User(_)) {
        io.err("error: only users have passwords\n").await;
        return 2;
    }
    let Some(source) = caller.addr else {
        return 1;
    };
    let Line::Text(current) = io.read_line("Current password: ", true).await else {
        return 1;
    };
    let current = Secret::new(current);
    match ctx
        .guard
        .check_password(&caller.who, source, DOOR, &current)
        .await
    {
        PasswordCheck::Right => {}
        PasswordCheck::Wrong => {
            io.err("error: that is not your current password\n").await;
            return 1;
        }
        PasswordCheck::Locked => {
            io.err("error: password changes are locked for now; try again later\n")
                .await;
            return 1;
        }
        PasswordCheck::Busy => {
            io.err("error: the password hashing pool is busy; try again\n")
                .await;
            return 1;
        }
    }
    let Line::Text(new) = io.read_line("New password: ", true).await else {
        return 1;
    };
    let Line::Text(repeat) = io.read_line("Repeat new password: ", true).await else {
        return 1;
    };
    match password::change(
        ctx,
        &caller.who,
        source,
        DOOR,
        &current,
        Replacing::Current,
        Secret::new(new),
        Secret::new(repeat),
    )
    .await
    {
        Ok(()) => {
            io.out("password changed\n").await;
            0
        }
        Err(e @ (PasswordError::Policy(_) | PasswordError::Busy | PasswordError::Failed(_))) => {
            io.err(&format!("error: {e}\n")).await;
            1
        }
    }
}
