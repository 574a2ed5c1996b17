//! The meter commands a crew runs: `meters`, `read`, the named meter actions
//! of a profile, and `whoami`. Each is an action for the guard; the request
//! goes to the meter through the fleet's pool.

use std::fmt::Write as _;

use time::OffsetDateTime;

use super::{Caller, Gateway, Outcome};
use crate::guard::{Action, Decision, WriteValues};
use crate::mbap::request::{self, Answer, exception_words};
use crate::model::{Permission, PrincipalId};

/// Most registers one `read` asks for (the FC 3 limit).
pub const MAX_READ: u16 = 125;

/// A denial, with the permission and the meter it was about.
pub fn denied(d: Decision, meter: Option<&str>) -> Outcome {
    let about = match (d.permission, meter) {
        (Some(p), Some(m)) => format!("{p} on {m}: "),
        (Some(p), None) => format!("{p}: "),
        _ => String::new(),
    };
    Outcome::Denied {
        message: format!("{about}{}", d.reason),
        decision: Box::new(d),
    }
}

fn enforceable_meter_permissions() -> impl Iterator<Item = Permission> {
    Permission::ALL
        .into_iter()
        .filter(|p| !p.is_global() && p.enforceable_at_gateway())
}

/// `whoami`: the principal, its roles, and what it may do where.
pub fn whoami(ctx: &Gateway, who: &PrincipalId) -> String {
    let guard = &ctx.guard;
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
        .filter(|p| guard.decide_permission(who, *p, None, true, now).allowed)
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
            .filter(|p| {
                guard
                    .decide_permission(who, *p, Some(&m.id), true, now)
                    .allowed
            })
            .map(|p| p.name())
            .collect();
        if !allowed.is_empty() {
            let _ = writeln!(out, "  {}: {}", m.id, allowed.join(", "));
        }
        for p in [Permission::FrontPanelConfig, Permission::FrontPanelRestart] {
            if guard
                .decide_permission(who, p, Some(&m.id), true, now)
                .allowed
            {
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

/// Whether `who` may reach `meter` at all (holds any permission there that
/// the gateway enforces): `meters` and SFTP's `/` list only these.
pub fn reachable(ctx: &Gateway, who: &PrincipalId, meter: &str, now: OffsetDateTime) -> bool {
    enforceable_meter_permissions().any(|p| {
        ctx.guard
            .decide_permission(who, p, Some(meter), true, now)
            .allowed
    })
}

/// `meters`: every meter the caller holds any permission on.
pub fn meters(ctx: &Gateway, who: &PrincipalId) -> String {
    let now = OffsetDateTime::now_utc();
    let fleet = ctx.guard.fleet();
    let mut rows = Vec::new();
    for m in &fleet.0 {
        if !reachable(ctx, who, &m.id, now) {
            continue;
        }
        let tags = m
            .tags
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let health = match crate::fleet::units::link(&ctx.fleet.load(), &m.id) {
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

/// `read METER REGISTER [COUNT]`: FC 3 through the guard (Data View).
pub async fn read(ctx: &Gateway, caller: &Caller, args: &[String]) -> Outcome {
    let usage = || {
        Outcome::Usage(format!(
            "usage: read METER REGISTER [COUNT] (COUNT 1-{MAX_READ})\n"
        ))
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
        .guard
        .authorize(&caller.request(action), OffsetDateTime::now_utc())
        .await;
    if !d.allowed {
        return denied(d, Some(meter));
    }
    let Some(link) = crate::fleet::units::link(&ctx.fleet.load(), meter) else {
        return Outcome::Failed(format!("meter {meter} is not reached through the proxy"));
    };
    match link.call(&request::read_holding(start, count)).await {
        Ok(r) => match request::answer(3, Some(count), &r) {
            Answer::Ok(values) => {
                let mut out = String::new();
                for (i, v) in values.iter().enumerate() {
                    let _ = writeln!(out, "{} {v}", start as usize + i);
                }
                Outcome::text(out)
            }
            Answer::Exception(code) => Outcome::Failed(format!(
                "meter {meter} answered exception {code:02} ({})",
                exception_words(code)
            )),
            Answer::Malformed => Outcome::Failed(format!("meter {meter} sent a malformed answer")),
        },
        Err(e) => Outcome::Failed(format!("{meter}: {e}")),
    }
}

/// Whether `word` names a meter action of any profile.
pub fn is_action(ctx: &Gateway, word: &str) -> bool {
    ctx.guard
        .fleet()
        .1
        .values()
        .any(|p| p.actions.iter().any(|a| a.name == word))
}

/// A named meter action: the profile says which register write it makes,
/// and the guard decides that write like any other (its permission comes
/// from the profile's write allowlist).
pub async fn action(ctx: &Gateway, caller: &Caller, words: &[String]) -> Outcome {
    let Some(name) = words.first() else {
        return Outcome::Usage("usage: ACTION METER [ARGUMENT]\n".into());
    };
    let (meter, argument) = match &words[1..] {
        [m] => (m, None),
        [m, a] => (m, Some(a.as_str())),
        _ => return Outcome::Usage(format!("usage: {name} METER [ARGUMENT]\n")),
    };
    let fleet = ctx.guard.fleet();
    let Some(m) = fleet.0.iter().find(|m| m.id == *meter) else {
        return Outcome::Refused(format!("no meter `{meter}`"));
    };
    let Some(act) = fleet
        .1
        .get(&m.profile)
        .and_then(|p| p.actions.iter().find(|a| a.name == *name))
    else {
        return Outcome::Refused(format!(
            "meter {meter} (profile {}) has no action `{name}`",
            m.profile
        ));
    };
    let now = OffsetDateTime::now_utc();
    let values = match act.values_for(argument, now) {
        Ok(v) => v,
        Err(e) => return Outcome::Usage(format!("usage: {e}\n")),
    };
    if argument.is_some() && act.choices.is_empty() {
        return Outcome::Usage(format!("usage: {name} METER (no argument)\n"));
    }
    let action = Action::WriteRegisters {
        meter: meter.clone(),
        function: act.function,
        start: act.address,
        values: WriteValues::Known(values.clone()),
        read: None,
    };
    let d = ctx.guard.authorize(&caller.request(action), now).await;
    if !d.allowed {
        return denied(d, Some(meter));
    }
    let Some(link) = crate::fleet::units::link(&ctx.fleet.load(), meter) else {
        return Outcome::Failed(format!("meter {meter} is not reached through the proxy"));
    };
    let pdu = request::write_registers(act.function, act.address, &values);
    match link.call(&pdu).await {
        Ok(r) => match request::answer(act.function, None, &r) {
            Answer::Ok(_) => Outcome::text(format!(
                "{name} {meter}{}: done\n",
                argument.map(|a| format!(" {a}")).unwrap_or_default()
            )),
            Answer::Exception(code) => Outcome::Failed(format!(
                "meter {meter} answered exception {code:02} ({})",
                exception_words(code)
            )),
            Answer::Malformed => Outcome::Failed(format!("meter {meter} sent a malformed answer")),
        },
        // A write is never retried: the operator decides whether to.
        Err(e) => Outcome::Failed(format!("{meter}: {e} (the write was not retried)")),
    }
}
