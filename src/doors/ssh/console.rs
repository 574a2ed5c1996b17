//! Console pass-through (`connect METER`, Terminal Access): the guard
//! decides, and picks the meter-side account DESIGN §2's rule gives (the
//! crew never sees its credential); the fleet's SSH client logs in with the
//! host key pinned; this door bridges the crew's pty to it, window changes
//! included. Start, end and byte counts are events.

use time::OffsetDateTime;

use super::DOOR;
use super::terminal::{Input, Io};
use crate::commands::{Caller, Gateway};
use crate::fleet::meter_ssh::{ConsoleLink, ConsoleOutput, PtyRequest};
use crate::guard::Action;
use crate::model::Permission;
use crate::store::{Category, EventDraft, Outcome};

fn event(code: &str, outcome: Outcome, caller: &Caller, meter: &str) -> EventDraft {
    EventDraft::new(code, Category::Session, outcome)
        .principal(&caller.who)
        .source(&caller.source)
        .door(DOOR)
        .meter(meter)
        .detail("session", caller.session)
}

/// `connect METER`: returns the exit status for the shell.
pub async fn connect(ctx: &Gateway, caller: &Caller, meter: &str, io: &mut Io) -> u32 {
    let now = OffsetDateTime::now_utc();
    let guard = &ctx.guard;
    let d = guard
        .authorize(
            &caller.request(Action::Terminal {
                meter: meter.to_string(),
            }),
            now,
        )
        .await;
    if !d.allowed {
        io.err(&format!("DENY: Terminal Access on {meter}: {}\n", d.reason))
            .await;
        return 1;
    }
    let fleet = guard.fleet();
    let Some(m) = fleet.0.iter().find(|m| m.id == meter) else {
        io.err(&format!("error: no meter `{meter}`\n")).await;
        return 2;
    };
    let Some(console) = &m.console else {
        io.err(&format!("error: meter {meter} has no console configured\n"))
            .await;
        return 1;
    };
    // The console is a session of its own, from before it is opened (the
    // open may take seconds): listed, killable, and ended when Terminal
    // Access on this meter is withdrawn, even while it is still opening.
    let mut registered = ctx.sessions.register(
        &caller.who,
        &caller.source,
        "console",
        None,
        crate::model::micros(OffsetDateTime::now_utc()),
    );
    ctx.sessions
        .rely_on(registered.id, Permission::TerminalAccess, Some(meter));
    let account = match guard.meter_account(&caller.who, meter, Permission::TerminalAccess) {
        Ok(a) => a,
        Err(why) => {
            guard
                .record(event("console.refused", Outcome::Deny, caller, meter).reason(&why))
                .await;
            io.err(&format!("DENY: {why}\n")).await;
            return 1;
        }
    };
    let pty = io.pty.as_ref().map(|p| PtyRequest {
        term: &p.term,
        cols: p.cols,
        rows: p.rows,
    });
    let link = match ConsoleLink::open(&ctx.consoles, console, meter, &account, pty).await {
        Ok(link) => link,
        Err(e) => {
            guard
                .record(
                    event("console.refused", Outcome::Failure, caller, meter)
                        .reason(e.to_string())
                        .detail("account", &account),
                )
                .await;
            // The crew is told what failed, never the credential.
            io.err(&format!("error: console of {meter}: {e}\n")).await;
            return 1;
        }
    };
    let mut start = event("console.start", Outcome::Success, caller, meter)
        .reason(format!("console of {meter} as meter account `{account}`"))
        .detail("account", &account);
    if let Some(r) = io.recorder() {
        r.meter(meter);
        start = start.detail("recording", &r.id);
    }
    guard.record(start).await;
    let (sent, received, status, cut) = bridge(link, io, &mut registered.ended, || async {
        // The recording stopped (fail-open goes on): a console that a
        // statement allows only while recorded must end.
        let mut unrecorded = caller.clone();
        unrecorded.recorded = false;
        let again = unrecorded.request(Action::Terminal {
            meter: meter.to_string(),
        });
        let d = guard.authorize(&again, OffsetDateTime::now_utc()).await;
        (!d.allowed).then(|| format!("the session is no longer recorded: {}", d.reason))
    })
    .await;
    drop(registered);
    let why = match &cut {
        Some(why) => {
            io.err(&format!("\r\nconsole of {meter} ended: {why}\r\n"))
                .await;
            format!("; {why}")
        }
        None => String::new(),
    };
    guard
        .record(
            event("console.end", Outcome::Success, caller, meter)
                .reason(format!(
                    "console of {meter} ended: {sent} bytes to the meter, {received} from it{why}"
                ))
                .detail("account", &account)
                .detail("bytes_to_meter", sent)
                .detail("bytes_from_meter", received),
        )
        .await;
    status
}

/// Whether the recording's failure watch says nothing failed (yet).
fn f_is_none(failed: &Option<tokio::sync::watch::Receiver<Option<String>>>) -> bool {
    failed.as_ref().is_some_and(|f| f.borrow().is_none())
}

/// Relays both ways until either side ends or the session is ended;
/// returns the bytes sent to the meter, the bytes received from it, the
/// console's exit status and why the gateway cut it (if it did).
async fn bridge<F: std::future::Future<Output = Option<String>>>(
    mut link: ConsoleLink,
    io: &mut Io,
    ended: &mut tokio::sync::watch::Receiver<Option<String>>,
    unrecorded: impl FnOnce() -> F,
) -> (u64, u64, u32, Option<String>) {
    let (mut sent, mut received, mut status) = (0u64, 0u64, 0u32);
    let mut cut = None;
    let mut failed = io.recorder().map(|r| r.failed());
    let mut unrecorded = Some(unrecorded);
    // After the crew's EOF the meter may still have output to send.
    let mut crew_done = false;
    loop {
        tokio::select! {
            input = io.next(), if !crew_done => match input {
                Some(Input::Data(d)) => {
                    sent += d.len() as u64;
                    if !link.send(&d).await {
                        break;
                    }
                }
                Some(Input::Resize { cols, rows }) => link.resize(cols, rows).await,
                Some(Input::Eof) | None => {
                    link.eof().await;
                    crew_done = true;
                }
            },
            out = link.next() => match out {
                ConsoleOutput::Data(data) => {
                    received += data.len() as u64;
                    if !io.raw(data).await {
                        break;
                    }
                }
                ConsoleOutput::Exit(s) => status = s,
                ConsoleOutput::Closed => break,
                ConsoleOutput::Other => {}
            },
            r = ended.changed() => {
                cut = Some(if r.is_ok() {
                    ended.borrow().clone().unwrap_or_default()
                } else {
                    "the session ended".to_string()
                });
                status = 1;
                break;
            }
            Some(r) = async { match failed.as_mut() { Some(f) => Some(f.changed().await), None => None } } => {
                // A spurious wake-up; a writer that went away (its sender
                // dropped) failed as surely as one that said so.
                if r.is_ok() && f_is_none(&failed) {
                    continue;
                }
                failed = None;
                if let Some(check) = unrecorded.take()
                    && let Some(why) = check().await
                {
                    cut = Some(why);
                    status = 1;
                    break;
                }
            }
        }
    }
    link.close().await;
    (sent, received, status, cut)
}
