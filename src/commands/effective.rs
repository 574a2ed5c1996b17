//! `user|service-user|group|support permissions` and `who-can`: effective
//! access as the guard's own compiled view decides it.

use super::*;
use crate::guard::{Effective, Grant, Holder};

/// `--as-of`: a date (its 00:00 UTC) or an RFC 3339 time; now without it.
pub(super) fn as_of(
    text: Option<&str>,
    now: OffsetDateTime,
) -> Result<OffsetDateTime, CommandError> {
    let Some(t) = text else { return Ok(now) };
    if let Ok(at) = OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339) {
        return Ok(at);
    }
    match Day::parse(t) {
        Ok(d) => Ok(d.start()),
        Err(_) => refused(format!(
            "--as-of `{t}`: give a date (2026-12-31, its 00:00 UTC) or RFC 3339 (2026-12-31T08:00:00Z)"
        )),
    }
}

pub(super) fn grant_json(g: &Grant) -> serde_json::Value {
    let mut v = json!({
        "permission": g.permission.name(),
        "allowed": g.decision.allowed,
        "reason": g.decision.reason.to_string(),
    });
    if let Some(r) = &g.removed_allow {
        v["removes"] = json!(r.to_string());
    }
    if g.decision.allowed {
        v["needs_second_factor"] = json!(g.needs_second_factor);
        v["needs_recording"] = json!(g.needs_recording);
    }
    v
}

fn grant_line(out: &mut String, g: &Grant) {
    let verdict = if g.decision.allowed { "ALLOW" } else { "DENY " };
    let mut line = format!(
        "  {:<32} {verdict} {}",
        g.permission.to_string(),
        g.decision.reason
    );
    if let Some(r) = &g.removed_allow {
        let _ = write!(line, "; it takes away what is {r}");
    }
    if g.needs_second_factor {
        line += "; needs a second factor";
    }
    if g.needs_recording {
        line += "; needs a recorded session";
    }
    let _ = writeln!(out, "{line}");
}

/// A list of meter ids for a person: the first few, then how many more.
fn some_meters(ids: &[String]) -> String {
    const SHOWN: usize = 8;
    let mut s = ids
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if ids.len() > SHOWN {
        let _ = write!(s, " and {} more", ids.len() - SHOWN);
    }
    s
}

pub(super) fn permissions(
    ctx: &Gateway,
    holder: Holder<'_>,
    label: &str,
    meter: Option<&str>,
    at: Option<&str>,
    json_out: bool,
    now: OffsetDateTime,
) -> Result<Done, CommandError> {
    let at = as_of(at, now)?;
    let e: Effective = ctx
        .guard
        .effective(holder, meter, at)
        .map_err(|r| match r {
            crate::guard::Reason::UnknownMeter => {
                CommandError::NotFound(format!("no meter `{}`", meter.unwrap_or("")))
            }
            crate::guard::Reason::SupportNotGranted => {
                CommandError::NotFound("support access is not granted".into())
            }
            _ => CommandError::NotFound(format!("no {label}")),
        })?;
    if json_out {
        let groups: Vec<_> = e
            .meters
            .iter()
            .map(|g| json!({"meters": g.meters, "permissions": g.grants.iter().map(grant_json).collect::<Vec<_>>()}))
            .collect();
        return Ok(Done::show(to_json(&json!({
            "holder": label,
            "as_of": rfc3339(micros(at)),
            "blocked": e.blocked.as_ref().map(|r| r.to_string()),
            "global": e.global.iter().map(grant_json).collect::<Vec<_>>(),
            "meter_groups": groups,
            "meters_considered": e.considered,
        }))));
    }
    let mut out = String::new();
    if at != now {
        let _ = writeln!(out, "{label}, as of {}", rfc3339(micros(at)));
    } else {
        let _ = writeln!(out, "{label}");
    }
    if let Some(r) = &e.blocked {
        let _ = writeln!(out, "  nothing: every request is denied ({r})");
        return Ok(Done::show(out));
    }
    if !e.global.is_empty() {
        out += "anywhere (global permissions):\n";
        for g in &e.global {
            grant_line(&mut out, g);
        }
    }
    let mut covered = 0;
    for group in &e.meters {
        covered += group.meters.len();
        let what = if group.meters.len() == e.considered && e.considered > 1 {
            format!("every meter ({})", group.meters.len())
        } else if group.meters.len() == 1 {
            format!("meter {}", group.meters[0])
        } else {
            format!(
                "{} meters: {}",
                group.meters.len(),
                some_meters(&group.meters)
            )
        };
        let _ = writeln!(out, "on {what}:");
        for g in &group.grants {
            grant_line(&mut out, g);
        }
    }
    if e.global.is_empty() && e.meters.is_empty() {
        out += "  nothing: no statement allows anything\n";
    } else if covered < e.considered {
        let _ = writeln!(
            out,
            "on the other {} meters: nothing (no statement allows or denies)",
            e.considered - covered
        );
    }
    Ok(Done::show(out))
}

pub(super) fn who_can(
    ctx: &Gateway,
    c: &WhoCanArgs,
    json_out: bool,
    now: OffsetDateTime,
) -> Result<Done, CommandError> {
    let permission =
        Permission::parse(&c.permission).map_err(|e| CommandError::Refused(e.to_string()))?;
    if !permission.is_global() && c.meter.is_none() {
        return refused(format!(
            "\"{permission}\" is about meters: give --meter METER"
        ));
    }
    let at = as_of(c.as_of.as_deref(), now)?;
    let list = ctx
        .guard
        .who_can(permission, c.meter.as_deref(), at)
        .map_err(|_| {
            CommandError::NotFound(format!("no meter `{}`", c.meter.as_deref().unwrap_or("")))
        })?;
    if json_out {
        let rows: Vec<_> = list
            .iter()
            .map(|(id, g)| {
                let mut v = grant_json(g);
                v["principal"] = json!(id.to_string());
                v
            })
            .collect();
        return Ok(Done::show(to_json(&json!({
            "permission": permission.name(),
            "meter": c.meter,
            "as_of": rfc3339(micros(at)),
            "allowed": rows,
        }))));
    }
    let mut out = match &c.meter {
        Some(m) => format!("who can use {permission} on {m}"),
        None => format!("who can use {permission}"),
    };
    if at != now {
        let _ = write!(out, ", as of {}", rfc3339(micros(at)));
    }
    out += ":\n";
    if list.is_empty() {
        out += "  no principal\n";
    }
    for (id, g) in &list {
        let mut line = format!("  {:<24} {}", id.to_string(), g.decision.reason);
        if g.needs_second_factor {
            line += "; needs a second factor";
        }
        if g.needs_recording {
            line += "; needs a recorded session";
        }
        let _ = writeln!(out, "{line}");
    }
    out += "(and `local:` callers on the gateway's host, who hold Administrator)\n";
    Ok(Done::show(out))
}
