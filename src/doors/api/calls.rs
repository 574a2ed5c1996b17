//! What every request passes: a request id echoed in `X-Request-Id`, HSTS,
//! a deadline; and for `/api/v1` the bearer token the guard checks, a rate
//! per token, and one event per call (principal, method, route, status,
//! reason, request id).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use time::OffsetDateTime;

use super::problem::Problem;
use super::{Api, DOOR, Peer, REQUEST_TIMEOUT};
use crate::commands::{Caller, SessionFactor};
use crate::guard::api::BearerRefusal;
use crate::store::{Category, EventDraft, Outcome};

/// The request's id, made here (a client's own is not trusted into logs).
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// Why a call ended as it did, for its event (set by the handler).
#[derive(Clone, Debug)]
pub struct CallReason(pub String);

/// The guard denied the command of a call that still answered 200 (the
/// command line's answer carries the denial).
#[derive(Clone, Copy, Debug)]
pub struct Denied;

/// No route: a problem like every other error.
pub async fn no_route() -> Response {
    Problem::new(StatusCode::NOT_FOUND, "no such resource in this API").into_response()
}

/// An error answer made outside our handlers (a body over the limit, a
/// path that does not parse, a method the route does not take) becomes a
/// problem too, keeping its words.
async fn as_problem(response: Response) -> Response {
    let status = response.status();
    let typed = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| {
            t.starts_with("application/problem+json") || t.starts_with("application/json")
        });
    if !(status.is_client_error() || status.is_server_error()) || typed {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .ok()
        .and_then(|b| String::from_utf8(b.to_vec()).ok())
        .filter(|t| !t.trim().is_empty())
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
    let mut fixed = Problem::new(status, text.trim().to_string()).into_response();
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            fixed.headers_mut().insert(name.clone(), value.clone());
        }
    }
    *fixed.extensions_mut() = parts.extensions;
    fixed
}

fn request_id() -> String {
    let mut raw = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw);
    hex::encode(raw)
}

/// Every request: an id, a deadline, HSTS on every answer.
pub async fn hardening(mut req: Request, next: Next) -> Response {
    let id = request_id();
    req.extensions_mut().insert(RequestId(id.clone()));
    let response = match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the request took too long and was abandoned",
        )
        .header(header::RETRY_AFTER, "1")
        .into_response(),
    };
    let mut response = as_problem(response).await;
    let h = response.headers_mut();
    // HTTPS only, and browsers must remember it (a year).
    h.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000"),
    );
    if let Ok(v) = HeaderValue::from_str(&id) {
        h.insert("x-request-id", v);
    }
    response
}

/// Requests per token per second, in fixed one-second windows.
pub struct RateLimiter {
    per_second: u32,
    windows: Mutex<HashMap<String, (i64, u32)>>,
}

impl RateLimiter {
    pub fn new(per_second: u32) -> RateLimiter {
        RateLimiter {
            per_second,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `who` has used its whole rate in the second `now`.
    pub fn full(&self, who: &str, now: i64) -> bool {
        let Ok(w) = self.windows.lock() else {
            return true;
        };
        w.get(who)
            .is_some_and(|(second, n)| *second == now && *n >= self.per_second)
    }

    /// Whether one more request of `who` fits in the second `now`.
    pub fn admit(&self, who: &str, now: i64) -> bool {
        let Ok(mut w) = self.windows.lock() else {
            return false;
        };
        // Bounded: windows of past seconds are forgotten.
        if w.len() > 10_000 {
            w.retain(|_, (second, _)| *second == now);
        }
        let entry = w.entry(who.to_string()).or_insert((now, 0));
        if entry.0 != now {
            *entry = (now, 0);
        }
        if entry.1 >= self.per_second {
            return false;
        }
        entry.1 += 1;
        true
    }
}

/// `/api/v1`: the bearer token, checked by the guard at every call.
pub async fn bearer(State(api): State<Arc<Api>>, mut req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<Peer>()
        .map(|p| p.0.ip())
        .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "(no route)".into());
    let method = req.method().to_string();
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_string());
    let now = OffsetDateTime::now_utc();
    let token = match &presented {
        None => Err(BearerRefusal::Unknown),
        Some(t) => api.gw.guard.bearer(t, peer, now),
    };
    let token = match token {
        Ok(t) => t,
        Err(refusal) => {
            let (status, problem) = match refusal {
                BearerRefusal::NotAdministrator => (
                    StatusCode::FORBIDDEN,
                    Problem::new(StatusCode::FORBIDDEN, refusal.to_string()),
                ),
                _ => (
                    StatusCode::UNAUTHORIZED,
                    Problem::new(StatusCode::UNAUTHORIZED, refusal.to_string())
                        .header(header::WWW_AUTHENTICATE, "Bearer error=\"invalid_token\""),
                ),
            };
            let ev = EventDraft::new("api.call", Category::Authorization, Outcome::Deny)
                .source(peer)
                .door(DOOR)
                .action(format!("{method} {route}"))
                .reason(refusal.to_string())
                .detail("status", status.as_u16())
                .detail("request_id", &request_id);
            api.gw.guard.record_unauthenticated(ev).await;
            return problem.into_response();
        }
    };
    let second = now.unix_timestamp();
    // Per access key, not per token: a key's 16 tokens share one rate.
    if !api.limiter.admit(&token.key_id, second) {
        // Counted, not logged one by one: a client over its rate would
        // otherwise write as fast as it is refused.
        api.floods.count(
            Some(peer),
            "api.rate-limited",
            &format!(
                "{} was over api.requests_per_second ({}) with access key {}",
                token.principal, api.config.requests_per_second, token.key_id
            ),
        );
        return Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "more than {} requests a second with this access key (api.requests_per_second)",
                api.config.requests_per_second
            ),
        )
        .header(header::RETRY_AFTER, "1")
        .into_response();
    }
    let caller = Caller {
        who: token.principal.clone(),
        source: peer.to_string(),
        addr: Some(peer),
        door: DOOR,
        session: 0,
        // Service users are machines: no second factor applies.
        factor: SessionFactor::default(),
        recorded: false,
    };
    req.extensions_mut().insert(caller);
    // What the token stands for (not its value): a stream asks again
    // whether that access still stands.
    req.extensions_mut().insert(token.clone());
    let response = next.run(req).await;
    let status = response.status();
    let reason = response
        .extensions()
        .get::<CallReason>()
        .map(|r| r.0.clone())
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("").to_string());
    let denied = response.extensions().get::<Denied>().is_some();
    let outcome = if denied {
        Outcome::Deny
    } else if status.is_success() {
        Outcome::Success
    } else if status == StatusCode::FORBIDDEN {
        Outcome::Deny
    } else {
        Outcome::Failure
    };
    let ev = EventDraft::new("api.call", Category::Admin, outcome)
        .principal(&token.principal)
        .source(peer)
        .door(DOOR)
        .action(format!("{method} {route}"))
        .reason(reason)
        .detail("status", status.as_u16())
        .detail("request_id", &request_id)
        .detail("key_id", &token.key_id);
    api.gw.guard.record(ev).await;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_gets_its_rate_a_second_and_the_next_second_starts_again() {
        let l = RateLimiter::new(3);
        let took: Vec<bool> = (0..5).map(|_| l.admit("k/1", 100)).collect();
        assert_eq!(took, [true, true, true, false, false]);
        // Another token has its own.
        assert!(l.admit("k/2", 100));
        assert!(l.admit("k/1", 101));
    }
}
