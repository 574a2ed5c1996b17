//! From a command of the core to HTTP: the words run as the caller, then
//! JSON for done (the store version as a strong `ETag`), problem+json for
//! a refusal or the guard's denial (with its reason), lists in pages with
//! an opaque `next` cursor, and `If-Match` handed to the core as a
//! precondition it checks while changes wait their turn.

use std::collections::BTreeMap;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;

use super::Api;
use super::calls::CallReason;
use super::problem::Problem;
use crate::commands::{Caller, Input, Outcome, Precondition, Resource, execute};

/// Longest page; the default is [`DEFAULT_PAGE`].
pub const MAX_PAGE: usize = 1000;
pub const DEFAULT_PAGE: usize = 100;

/// Runs `argv` as `caller` through the core, with JSON output.
pub async fn outcome(
    api: &Api,
    caller: &Caller,
    argv: Vec<String>,
    precondition: Option<Precondition>,
) -> Outcome {
    let input = Input {
        argv,
        json: true,
        files: BTreeMap::new(),
        precondition,
    };
    execute(&api.gw, caller, &input, OffsetDateTime::now_utc()).await
}

/// Runs and renders: 200 (or 201 when `created`) with the JSON answer.
pub async fn run(
    api: &Api,
    caller: &Caller,
    argv: Vec<String>,
    precondition: Option<Precondition>,
    created: bool,
) -> Response {
    render(outcome(api, caller, argv, precondition).await, created)
}

/// The words of a command: `words… -- names…` (a name beginning with `-`
/// stays a name).
pub fn argv(words: &[&str], names: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = words.iter().map(|w| w.to_string()).collect();
    if !names.is_empty() {
        v.push("--".into());
        v.extend(names.iter().map(|n| n.to_string()));
    }
    v
}

/// `--name=value`: a value that begins with `-` stays a value.
pub fn opt(name: &str, value: &str) -> String {
    format!("--{name}={value}")
}

/// A JSON body, or a problem saying what is wrong with it.
pub fn body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    serde_json::from_slice(bytes).map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            format!("the body is not the JSON this resource takes: {e}"),
        )
    })
}

/// A query string, or a problem naming the parameter that is wrong.
pub fn query<T: DeserializeOwned>(raw: Option<&str>) -> Result<T, Problem> {
    serde_urlencoded::from_str(raw.unwrap_or("")).map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            format!("the query is not what this resource takes: {e}"),
        )
    })
}

/// `If-Match` as the core's precondition on `resource` NAME. `*` asks only
/// that it exists; a weak or malformed tag can never match (RFC 9110
/// §13.1.1: strong comparison), so 412.
pub fn if_match(
    headers: &HeaderMap,
    resource: Resource,
    name: &str,
) -> Result<Option<Precondition>, Problem> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let stale = || {
        Problem::new(
            StatusCode::PRECONDITION_FAILED,
            "If-Match names no version this resource has (send the ETag of a GET)",
        )
    };
    let text = value.to_str().map_err(|_| stale())?.trim();
    let tag = match text {
        "*" => None,
        quoted => Some(
            quoted
                .strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .filter(|t| !t.contains('"'))
                .ok_or_else(stale)?
                .to_string(),
        ),
    };
    Ok(Some(Precondition {
        resource,
        name: name.to_string(),
        tag,
    }))
}

/// An outcome as HTTP.
pub fn render(outcome: Outcome, created: bool) -> Response {
    let (mut response, reason) = match outcome {
        Outcome::Done { stdout, .. } => {
            let body = match serde_json::from_str::<serde_json::Value>(&stdout) {
                Ok(v) => v,
                Err(_) => serde_json::json!({ "ok": true, "message": stdout.trim_end() }),
            };
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (json(status, &body), "done".to_string())
        }
        Outcome::Usage(text) => (
            Problem::new(StatusCode::BAD_REQUEST, text.trim().to_string()).into_response(),
            "malformed command".to_string(),
        ),
        Outcome::Denied { decision, message } => {
            let reason = decision.reason.to_string();
            (
                Problem::new(StatusCode::FORBIDDEN, message)
                    .reason(reason.clone())
                    .into_response(),
                reason,
            )
        }
        Outcome::Refused(m) => (problem(StatusCode::CONFLICT, &m), m),
        Outcome::NotFound(m) => (problem(StatusCode::NOT_FOUND, &m), m),
        Outcome::Stale(m) => (problem(StatusCode::PRECONDITION_FAILED, &m), m),
        Outcome::Protected(m) => (problem(StatusCode::FORBIDDEN, &m), m),
        Outcome::Failed(m) => (problem(StatusCode::INTERNAL_SERVER_ERROR, &m), m),
    };
    response.extensions_mut().insert(CallReason(reason));
    response
}

fn problem(status: StatusCode, detail: &str) -> Response {
    Problem::new(status, detail.to_string()).into_response()
}

/// A JSON answer; an object with an `etag` carries it as its ETag.
pub fn json(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut r = (status, body.to_string()).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // Answers may hold a secret shown once (a new access key, a
    // temporary password): no cache keeps them.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(v) = body.get("etag").and_then(|v| v.as_str())
        && let Ok(tag) = HeaderValue::from_str(&format!("\"{v}\""))
    {
        h.insert(header::ETAG, tag);
    }
    r
}

/// `limit` and `next` of a list.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// At most this many (1-1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// The `next` of the previous page.
    pub next: Option<String>,
}

impl PageQuery {
    pub fn size(&self) -> Result<usize, Problem> {
        match self.limit {
            None => Ok(DEFAULT_PAGE),
            Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
            Some(_) => Err(Problem::new(
                StatusCode::BAD_REQUEST,
                format!("limit must be between 1 and {MAX_PAGE}"),
            )),
        }
    }

    /// The key the previous page ended at.
    pub fn after(&self) -> Result<Option<String>, Problem> {
        let Some(cursor) = &self.next else {
            return Ok(None);
        };
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(cursor)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.strip_prefix("after:").map(str::to_string))
            .map(Some)
            .ok_or_else(|| {
                Problem::new(
                    StatusCode::BAD_REQUEST,
                    "next is not a cursor this API gave out",
                )
            })
    }
}

/// The opaque cursor for "after KEY".
pub fn cursor(key: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("after:{key}"))
}

/// What orders a list: a name (text order) or a number.
#[derive(Clone, Copy)]
pub enum Key {
    Name(&'static str),
    Number(&'static str),
}

impl Key {
    fn of(&self, item: &serde_json::Value) -> (u64, String) {
        match self {
            Key::Name(f) => (0, item.get(f).and_then(|v| v.as_str()).unwrap_or("").into()),
            Key::Number(f) => (item.get(f).and_then(|v| v.as_u64()).unwrap_or(0), "".into()),
        }
    }
    fn parse(&self, text: &str) -> (u64, String) {
        match self {
            Key::Name(_) => (0, text.to_string()),
            Key::Number(_) => (text.parse().unwrap_or(0), String::new()),
        }
    }
    fn show(&self, key: &(u64, String)) -> String {
        match self {
            Key::Name(_) => key.1.clone(),
            Key::Number(_) => key.0.to_string(),
        }
    }
}

/// A list the core printed whole, as one page after the cursor. Keys are
/// unique and ordered, so a walk meets every item once even while others
/// are added or removed (those may or may not show, as they fall).
pub fn page(outcome: Outcome, q: &PageQuery, key: Key) -> Response {
    let (size, after) = match (q.size(), q.after()) {
        (Ok(s), Ok(a)) => (s, a),
        (Err(p), _) | (_, Err(p)) => return p.into_response(),
    };
    let Outcome::Done { stdout, .. } = outcome else {
        return render(outcome, false);
    };
    let Ok(serde_json::Value::Array(mut items)) = serde_json::from_str(&stdout) else {
        return render(
            Outcome::Failed("the list was not a JSON array".into()),
            false,
        );
    };
    items.sort_by_key(|i| key.of(i));
    let after = after.map(|a| key.parse(&a));
    let mut rest = items
        .into_iter()
        .filter(|i| after.as_ref().is_none_or(|a| key.of(i) > *a))
        .peekable();
    let data: Vec<serde_json::Value> = rest.by_ref().take(size).collect();
    let next = match (rest.peek(), data.last()) {
        (Some(_), Some(last)) => Some(cursor(&key.show(&key.of(last)))),
        _ => None,
    };
    let mut r = json(
        StatusCode::OK,
        &serde_json::json!({ "data": data, "next": next }),
    );
    r.extensions_mut().insert(CallReason("done".into()));
    r
}
