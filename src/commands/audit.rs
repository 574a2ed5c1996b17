//! `audit …`: the security log (tail, query, export, verify, status,
//! checkpoints).

use super::*;

/// Reads of the log walk up to millions of events: they run on a blocking
/// thread, so a long `verify` never holds a worker the doors need.
pub(super) async fn audit(
    ctx: &Gateway,
    cmd: &AuditCommand,
    req: &Input,
) -> Result<Done, CommandError> {
    let whole = matches!(
        cmd,
        AuditCommand::Verify {
            state_dir: None,
            checkpoint: None,
            from: None,
            incremental: false,
            ..
        }
    );
    let (guard, cmd, req) = (ctx.guard.clone(), cmd.clone(), req.clone());
    let chain = tokio::task::spawn_blocking(move || audit_now(&guard, &cmd, &req))
        .await
        .map_err(|e| CommandError::Failed(format!("reading the log: {e}")))??;
    if !whole {
        return Ok(chain);
    }
    // The whole log verifies: so do the recordings it vouches for.
    let found = ctx.recordings.verify_all().await;
    let mut text = chain.stdout;
    let broken: Vec<String> = found
        .iter()
        .filter(|(_, v)| !v.ok())
        .map(|(id, v)| format!("recording {id}: {}", v.summary()))
        .collect();
    for (id, v) in found.iter().filter(|(_, v)| {
        matches!(
            v,
            crate::recording::Verdict::Intact {
                complete: false,
                ..
            } | crate::recording::Verdict::Intact { unvouched: 1.., .. }
                | crate::recording::Verdict::Intact {
                    from_chunk: 1..,
                    ..
                }
        )
    }) {
        text += &format!("note: recording {id}: {}\n", v.summary());
    }
    if let Some(first) = broken.first() {
        return Err(CommandError::Failed(format!(
            "{}FAILED: {} of {} recordings do not verify; the first: {first}{}",
            text,
            broken.len(),
            found.len(),
            broken
                .iter()
                .skip(1)
                .map(|b| format!("\n{b}"))
                .collect::<String>()
        )));
    }
    text += &format!(
        "ok: {} session recordings verify against the log\n",
        found.len()
    );
    Ok(Done::show(text))
}

fn audit_now(guard: &Guard, cmd: &AuditCommand, req: &Input) -> Result<Done, CommandError> {
    let json_out = req.json;
    let log = guard.store().log();
    match cmd {
        AuditCommand::Tail { count, follow } => {
            let events = log
                .tail((*count).min(10_000))
                .map_err(|e| CommandError::Failed(e.to_string()))?;
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
            let format: Format = format.parse().map_err(CommandError::Refused)?;
            let first = log.first_seq().max(1);
            let start = match (since, from) {
                (_, Some(f)) => (*f).max(first),
                (Some(_), None) => {
                    let t = parse_time("--since", since, OffsetDateTime::now_utc())?.unwrap_or(0);
                    log.seq_at(t)
                        .map_err(|e| CommandError::Failed(e.to_string()))?
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
        AuditCommand::Status => Ok(Done::show(status_text(guard, json_out))),
        AuditCommand::Query(q) => {
            let query = parse_query(q, OffsetDateTime::now_utc())?;
            let events = log
                .query(&query)
                .map_err(|e| CommandError::Failed(e.to_string()))?;
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
            incremental: true,
            ..
        } => incremental_text(guard.store()),
        AuditCommand::Verify {
            state_dir: None,
            checkpoint: None,
            from,
            ..
        } => verify_text(guard.store(), *from),
        AuditCommand::Verify {
            state_dir: None,
            checkpoint: Some(path),
            public_key,
            ..
        } => {
            let text = file(req, &path.display().to_string())?;
            let cp: crate::store::checkpoint::Checkpoint = serde_json::from_str(text.trim())
                .map_err(|e| {
                    CommandError::Refused(format!("{}: not a checkpoint: {e}", path.display()))
                })?;
            match guard.store().check_checkpoint(&cp, public_key.as_deref()) {
                crate::store::checkpoint::Finding::Consistent => Ok(Done::show(format!(
                    "ok: the log is consistent with the checkpoint at seq {} and its chain verifies\n",
                    cp.seq
                ))),
                found if found.passes() => Ok(Done::show(format!("ok: {found}\n"))),
                other => Err(CommandError::Failed(format!("FAILED: {other}"))),
            }
        }
        AuditCommand::Checkpoint => {
            let store = guard.store();
            let cp = store
                .checkpoint()
                .map_err(|e| CommandError::Failed(e.to_string()))?
                .ok_or_else(|| CommandError::Refused("the log is empty".into()))?;
            Ok(Done::show(format!(
                "{}\n",
                serde_json::to_string(&cp).unwrap_or_default()
            )))
        }
        AuditCommand::PublicKey => Ok(Done::show(format!(
            "{}\n",
            guard.store().signing_public_key()
        ))),
    }
}

/// `audit query`'s filters, checked.
/// A `--since`/`--until` value: RFC 3339 or a time back from `now` (UTC µs).
pub(super) fn parse_time(
    flag: &str,
    text: &Option<String>,
    now: OffsetDateTime,
) -> Result<Option<i64>, CommandError> {
    let Some(t) = text else { return Ok(None) };
    if let Ok(at) = OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339) {
        return Ok(Some(micros(at)));
    }
    match crate::config::Interval::parse(t) {
        Ok(back) => Ok(Some(
            micros(now) - back.0.as_micros().min(i64::MAX as u128) as i64,
        )),
        Err(_) => Err(CommandError::Refused(format!(
            "{flag} `{t}`: give RFC 3339 (2026-11-23T08:00:00Z) or a time back from now (90s, 15m, 2h, 7d)"
        ))),
    }
}

pub(super) fn parse_query(
    q: &QueryArgs,
    now: OffsetDateTime,
) -> Result<crate::store::index::Query, CommandError> {
    let time = |flag: &str, text: &Option<String>| parse_time(flag, text, now);
    let principal = match &q.principal {
        Some(p) => Some(PrincipalId::parse(p)?.to_string()),
        None => None,
    };
    let outcome = q.outcome.as_deref().map(|o| match o {
        "allow" => EventOutcome::Allow,
        "deny" => EventOutcome::Deny,
        "success" => EventOutcome::Success,
        _ => EventOutcome::Failure,
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
        before: q.before,
    })
}

pub(super) fn verify_text(
    store: &crate::store::Store,
    from: Option<u64>,
) -> Result<Done, CommandError> {
    let r = store.verify(from);
    match &r.problem {
        None => Ok(Done::show(format!("ok: {}\n", r.summary()))),
        Some((seq, why)) => Err(CommandError::Failed(format!(
            "FAILED: first bad seq {seq}: {why}"
        ))),
    }
}

/// `audit verify --incremental`: what was logged since the last whole walk.
fn incremental_text(store: &crate::store::Store) -> Result<Done, CommandError> {
    let (r, last) = store.verify_incremental();
    if let Some((seq, why)) = &r.problem {
        return Err(CommandError::Failed(format!(
            "FAILED: first bad seq {seq}: {why}"
        )));
    }
    let mut text = if r.events == 0 {
        format!("ok: nothing logged since, head hash {}", r.head_hash)
    } else {
        format!("ok: {}", r.summary())
    };
    if let Some(l) = last {
        text += &format!(
            "; continued from seq {} (walked whole at {}, and as logged since)",
            l.seq,
            crate::model::rfc3339(l.whole_at)
        );
    }
    text.push('\n');
    Ok(Done::show(text))
}

/// `audit status`: capacity, failures, forwarding, the chain check at start.
pub(super) fn status_text(guard: &Guard, json_out: bool) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let log = guard.store().log();
    let st = log.status();
    let fw = guard.store().forward_state();
    let target = fw.target.lock().ok().and_then(|t| t.clone());
    let last_error = fw.last_error.lock().ok().and_then(|t| t.clone());
    let backlog = target
        .as_ref()
        .map(|_| st.last_seq.saturating_sub(st.forwarded));
    let chain_broken = match guard.counters.chain_broken_at.load(Relaxed) {
        0 => None,
        n => Some(n),
    };
    let alarm = guard.counters.audit_alarm.load(Relaxed) || st.failing;
    let when_full = match st.capacity.when_full {
        crate::store::log::WhenFull::DropOldest => "drop-oldest",
        crate::store::log::WhenFull::Refuse => "refuse",
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
