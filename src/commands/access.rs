//! Access that ends, ends everywhere, now (DESIGN §7): one watcher wakes at
//! the next end (an end date's 00:00 UTC, support's end, a certificate's
//! expiry) and after every directory change, asks the guard about each live
//! session (is its principal still let in, does it still hold what the
//! session relies on) and ends those it no longer allows, naming the cause.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use super::Gateway;
use crate::guard::{Action, Request};
use crate::model::{PrincipalId, micros};
use crate::sessions::LiveSession;
use crate::store::{Category, EventDraft, Outcome};

/// The longest the watcher sleeps without looking (a wall clock that jumps
/// is noticed within this).
const MAX_SLEEP: Duration = Duration::from_secs(3600);
/// How long after a change the watcher looks (well within "seconds").
const SETTLE: Duration = Duration::from_millis(250);

/// Runs until `stop`.
pub async fn watch(ctx: Arc<Gateway>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut look = true;
    loop {
        let now = OffsetDateTime::now_utc();
        if look {
            end_lapsed(&ctx, now).await;
            // Tokens whose access lapsed or was withdrawn end too, so none
            // comes back to life when the access does.
            ctx.guard.sweep_tokens(now);
        }
        let wait = next_end(&ctx, now)
            .map(|t| {
                let us = (t - micros(now)).max(0) as u64;
                // A little past the instant, so the guard sees it passed.
                Duration::from_micros(us) + Duration::from_millis(50)
            })
            .unwrap_or(MAX_SLEEP)
            .min(MAX_SLEEP);
        look = tokio::select! {
            _ = ctx.guard.changed() => {
                // A command that ends sessions itself (deactivate, revoke,
                // key removal) does so right after its change: let it, so
                // the sessions report its precise cause.
                tokio::time::sleep(SETTLE).await;
                true
            }
            // A new session may end sooner than any other: only the next
            // end is computed again (a session is let in by the guard, so
            // there is nothing to end yet).
            _ = ctx.sessions.arrived() => false,
            // A session that came to rely on a permission: a change may have
            // come between the guard's allow and the registration, so that
            // session is looked at again.
            _ = ctx.sessions.relying() => {
                let ids = ctx.sessions.take_relied();
                end_lapsed_among(&ctx, OffsetDateTime::now_utc(), &ids).await;
                false
            }
            _ = tokio::time::sleep(wait) => true,
            _ = stop.changed() => return,
        };
    }
}

/// Why the guard no longer allows `s`, if it does not.
fn lapsed(ctx: &Gateway, s: &LiveSession, now: OffsetDateTime) -> Option<String> {
    if let Some(at) = s.expires
        && at <= micros(now)
    {
        return Some(format!(
            "its certificate expired at {}",
            crate::model::rfc3339(at)
        ));
    }
    let login = Request {
        principal: s.principal.clone(),
        source: None,
        door: "access",
        action: Action::Login,
        read_only: false,
        certificate: None,
        second_factor: s.second_factor,
        recorded: false,
    };
    let d = ctx.guard.decide(&login, now);
    if !d.allowed {
        return Some(format!(
            "{} may no longer log in: {}",
            s.principal, d.reason
        ));
    }
    for r in &s.relies_on {
        let d = ctx.guard.decide_permission(
            &s.principal,
            r.permission,
            r.meter.as_deref(),
            s.second_factor,
            now,
        );
        if !d.allowed {
            let on = r
                .meter
                .as_ref()
                .map(|m| format!(" on {m}"))
                .unwrap_or_default();
            return Some(format!("{}{on} was withdrawn: {}", r.permission, d.reason));
        }
    }
    None
}

/// Ends every live session the guard no longer allows; returns how many.
/// All are ended first, then logged: ending an SSH session closes the
/// console and SFTP channels inside it, and each must still be ended (and
/// logged) for its own cause.
pub async fn end_lapsed(ctx: &Gateway, now: OffsetDateTime) -> usize {
    end_lapsed_where(ctx, now, |_| true).await
}

/// The same, for the sessions `ids` only.
async fn end_lapsed_among(ctx: &Gateway, now: OffsetDateTime, ids: &[u64]) -> usize {
    end_lapsed_where(ctx, now, |s| ids.contains(&s.id)).await
}

async fn end_lapsed_where(
    ctx: &Gateway,
    now: OffsetDateTime,
    which: impl Fn(&LiveSession) -> bool,
) -> usize {
    let ended: Vec<(LiveSession, String)> = ctx
        .sessions
        .live()
        .into_iter()
        .filter(|s| which(s))
        .filter_map(|s| lapsed(ctx, &s, now).map(|cause| (s, cause)))
        .filter(|(s, cause)| {
            ctx.sessions
                .end_if_live(s.id, &format!("access ended: {cause}"))
        })
        .collect();
    for (s, cause) in &ended {
        let ev = EventDraft::new("access.ended", Category::Session, Outcome::Deny)
            .principal(&s.principal)
            .door(&s.door)
            .reason(format!("session {} on {} ended: {cause}", s.id, s.door))
            .detail("session", s.id);
        ctx.guard.record(ev).await;
    }
    ended.len()
}

/// The next instant (UTC µs) after `now` at which a live session's access
/// ends by itself: its principal's end date, support's end, its
/// certificate's expiry.
fn next_end(ctx: &Gateway, now: OffsetDateTime) -> Option<i64> {
    let dir = ctx.guard.directory();
    let now_us = micros(now);
    ctx.sessions
        .live()
        .iter()
        .flat_map(|s| {
            let end_date = match &s.principal {
                PrincipalId::User(n) => dir.users.get(n).and_then(|u| u.end_date),
                PrincipalId::Service(n) => dir.service_users.get(n).and_then(|u| u.end_date),
                PrincipalId::Support => dir.support.as_ref().map(|a| a.end_date),
                PrincipalId::Local(_) => None,
            };
            [end_date.map(|d| micros(d.start())), s.expires]
        })
        .flatten()
        .filter(|t| *t > now_us)
        .min()
}
