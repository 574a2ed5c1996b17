//! `session recordings|play|export|watch|verify`: session recordings, read
//! with Security Logs Access. Every read of one is itself an event, and so
//! is watching a live session.

use std::sync::Arc;

use super::*;
use crate::recording::cast::Pace;
use crate::recording::{Meta, is_id};

pub(super) async fn recording(
    ctx: &Gateway,
    caller: &Caller,
    cmd: &SessionCommand,
    json_out: bool,
    now: OffsetDateTime,
) -> Result<Done, CommandError> {
    let recs = &ctx.recordings;
    match cmd {
        SessionCommand::Recordings {
            principal,
            meter,
            since,
            until,
        } => {
            let principal = match principal {
                Some(p) => Some(PrincipalId::parse(p)?.to_string()),
                None => None,
            };
            let since = audit::parse_time("--since", since, now)?;
            let until = audit::parse_time("--until", until, now)?;
            let list: Vec<Meta> = recs
                .list()
                .into_iter()
                .filter(|m| principal.as_ref().is_none_or(|p| *p == m.principal))
                .filter(|m| meter.as_ref().is_none_or(|x| m.meters.contains(x)))
                .filter(|m| since.is_none_or(|t| m.started >= t))
                .filter(|m| until.is_none_or(|t| m.started <= t))
                .collect();
            if json_out {
                return Ok(Done::show(to_json(&list)));
            }
            let rows: Vec<Vec<String>> = list.iter().map(row).collect();
            Ok(Done::show(table(
                &[
                    "ID",
                    "SESSION",
                    "PRINCIPAL",
                    "KIND",
                    "METERS",
                    "STARTED",
                    "SECONDS",
                    "BYTES",
                    "STATE",
                ],
                &rows,
            )))
        }
        SessionCommand::Play {
            id,
            speed,
            idle_limit,
        } => {
            if !(speed.is_finite() && *speed > 0.0) {
                return refused("--speed must be a number above 0 (2 = twice as fast)");
            }
            if idle_limit.is_some_and(|l| !(l.is_finite() && l >= 0.0)) {
                return refused("--idle-limit must be a number of seconds, 0 or more");
            }
            let m = read(ctx, caller, id, "play").await?;
            let path = file_of(ctx, &m)?;
            Ok(Done::streaming(
                String::new(),
                Stream::Recording {
                    path,
                    pace: Some(Pace {
                        speed: *speed,
                        idle_limit: *idle_limit,
                    }),
                },
            ))
        }
        SessionCommand::Export { id } => {
            let m = read(ctx, caller, id, "export").await?;
            let path = file_of(ctx, &m)?;
            Ok(Done::streaming(
                String::new(),
                Stream::Recording { path, pace: None },
            ))
        }
        SessionCommand::Watch { id } => {
            let found = find(ctx, id)?;
            let id = found.id;
            if caller.session != 0 && found.session == caller.session {
                return refused("a session cannot watch itself (its output would echo forever)");
            }
            let watcher = caller.who.to_string();
            let watch = recs.watch(&id, &watcher).map_err(CommandError::NotFound)?;
            let m = watch.watched();
            let ev = EventDraft::new("session.watch", Category::Session, EventOutcome::Success)
                .principal(&caller.who)
                .source(&caller.source)
                .door(caller.door)
                .reason(format!(
                    "{watcher} watches session {} of {} (recording {id}), read-only",
                    m.session, m.principal
                ))
                .detail("recording", &id)
                .detail("session", m.session)
                .detail("watched", &m.principal);
            ctx.guard.record(ev).await;
            Ok(Done::streaming(
                format!(
                    "watching session {} of {} read-only; Ctrl-C stops\n",
                    m.session, m.principal
                ),
                Stream::Watch(Arc::new(watch)),
            ))
        }
        SessionCommand::Verify { id } => {
            let m = find(ctx, id)?;
            let verdict = recs.verify(&m).await;
            if verdict.ok() {
                Ok(Done::show(format!(
                    "ok: recording {}: {}\n",
                    m.id,
                    verdict.summary()
                )))
            } else {
                Err(CommandError::Failed(format!(
                    "FAILED: recording {}: {}",
                    m.id,
                    verdict.summary()
                )))
            }
        }
        SessionCommand::List | SessionCommand::Kill { .. } => refused("not a recordings command"),
    }
}

fn row(m: &Meta) -> Vec<String> {
    let secs = m
        .ended
        .map(|e| ((e - m.started).max(0) / 1_000_000).to_string())
        .unwrap_or_else(|| "-".into());
    vec![
        m.id.clone(),
        m.session.to_string(),
        m.principal.clone(),
        m.kind.clone(),
        if m.meters.is_empty() {
            "-".into()
        } else {
            m.meters.join(",")
        },
        rfc3339(m.started),
        secs,
        m.bytes.to_string(),
        serde_json::to_value(m.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
    ]
}

/// The recording `id` names.
fn find(ctx: &Gateway, id: &str) -> Result<Meta, CommandError> {
    if !is_id(id) {
        return refused(format!(
            "`{}` is not a recording id (SESSION or SESSION-N, as `session recordings` lists them)",
            id.chars().take(64).collect::<String>()
        ));
    }
    ctx.recordings.get(id).ok_or_else(|| {
        CommandError::NotFound(format!(
            "no recording {id}: `session recordings` lists them"
        ))
    })
}

fn file_of(ctx: &Gateway, m: &Meta) -> Result<std::path::PathBuf, CommandError> {
    ctx.recordings.file(&m.id).ok_or_else(|| {
        CommandError::NotFound(format!(
            "recording {}'s file is gone (removed by retention, or deleted)",
            m.id
        ))
    })
}

/// Finds a recording for reading and logs the read.
async fn read(ctx: &Gateway, caller: &Caller, id: &str, how: &str) -> Result<Meta, CommandError> {
    let m = find(ctx, id)?;
    let ev = EventDraft::new("recording.read", Category::Audit, EventOutcome::Success)
        .principal(&caller.who)
        .source(&caller.source)
        .door(caller.door)
        .reason(format!(
            "{} reads recording {} of {} ({how})",
            caller.who, m.id, m.principal
        ))
        .detail("recording", &m.id)
        .detail("session", m.session)
        .detail("recorded", &m.principal);
    ctx.guard.record(ev).await;
    Ok(m)
}
