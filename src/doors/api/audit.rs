//! The security log as resources: events (the filters of `audit query`,
//! paged back in time), the export streamed as JSON lines, CEF or RFC 5424
//! with chunked transfer, verify, checkpoint, public key and status.
//! Streams relay the core's producer and stop it when the client leaves.

use std::collections::BTreeMap;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use utoipa::ToSchema;

use super::Api;
use super::calls::CallReason;
use super::problem::Problem;
use super::render::{
    self, DEFAULT_PAGE, MAX_PAGE, argv, body, cursor, json, opt, outcome, query, run,
};
use crate::commands::stream::{Stream, produce};
use crate::commands::{Caller, CliAnswer, Input, Outcome, execute};
use crate::guard::tokens::Token;

/// `audit query`'s filters, and a page back in time.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    /// RFC 3339 or back from now (90s, 15m, 2h, 7d).
    since: Option<String>,
    until: Option<String>,
    /// A typed principal id (user:alice, svc:scada-1) or a user name.
    principal: Option<String>,
    meter: Option<String>,
    /// An event code (login.deny, admin.change, …).
    code: Option<String>,
    outcome: Option<EventOutcome>,
    door: Option<String>,
    /// At most this many (1-1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// The `next` of the previous page (older events).
    next: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/audit/events", tag = "audit", summary = "Events matching every filter, newest first; `next` goes back in time",
    params(EventQuery), responses((status = 200, body = super::openapi::Page)))]
pub async fn events(
    State(api): State<Arc<Api>>,
    Extension(c): Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> Response {
    let q: EventQuery = match query(raw.as_deref()) {
        Ok(q) => q,
        Err(p) => return p.into_response(),
    };
    let size = match q.limit {
        None => DEFAULT_PAGE,
        Some(n) if (1..=MAX_PAGE).contains(&n) => n,
        Some(_) => {
            return Problem::new(
                StatusCode::BAD_REQUEST,
                format!("limit must be between 1 and {MAX_PAGE}"),
            )
            .into_response();
        }
    };
    let cursor_of = render::PageQuery {
        limit: None,
        next: q.next.clone(),
    };
    let before = match cursor_of.after() {
        Ok(None) => None,
        Ok(Some(seq)) => match seq.parse::<u64>() {
            Ok(s) => Some(s),
            Err(_) => {
                return Problem::new(StatusCode::BAD_REQUEST, "next is not an events cursor")
                    .into_response();
            }
        },
        Err(p) => return p.into_response(),
    };
    let mut words = argv(&["audit", "query"], &[]);
    let outcome_word = q.outcome.map(|o| {
        match o {
            EventOutcome::Allow => "allow",
            EventOutcome::Deny => "deny",
            EventOutcome::Success => "success",
            EventOutcome::Failure => "failure",
        }
        .to_string()
    });
    for (name, value) in [
        ("since", &q.since),
        ("until", &q.until),
        ("principal", &q.principal),
        ("meter", &q.meter),
        ("code", &q.code),
        ("outcome", &outcome_word),
        ("door", &q.door),
    ] {
        if let Some(v) = value {
            words.push(opt(name, v));
        }
    }
    // One more than the page: whether there is a next one.
    words.push(opt("limit", &(size + 1).to_string()));
    if let Some(b) = before {
        words.push(opt("before", &b.to_string()));
    }
    match outcome(&api, &c, words, None).await {
        // `audit query --json` prints one event per line, oldest first.
        Outcome::Done { stdout, .. } => {
            let mut events: Vec<serde_json::Value> = stdout
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|v| v.get("seq").is_some())
                .collect();
            events.reverse();
            let more = events.len() > size;
            events.truncate(size);
            let next = match (more, events.last()) {
                (true, Some(e)) => e
                    .get("seq")
                    .and_then(|s| s.as_u64())
                    .map(|s| cursor(&s.to_string())),
                _ => None,
            };
            let mut r = json(
                StatusCode::OK,
                &serde_json::json!({ "data": events, "next": next }),
            );
            r.extensions_mut().insert(CallReason("done".into()));
            r
        }
        other => render::render(other, false),
    }
}

/// The export's formats: JSON lines, ArcSight CEF, syslog RFC 5424.
#[derive(Clone, Copy, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    Jsonl,
    Cef,
    Rfc5424,
}

impl ExportFormat {
    fn word(self) -> &'static str {
        match self {
            ExportFormat::Jsonl => "jsonl",
            ExportFormat::Cef => "cef",
            ExportFormat::Rfc5424 => "rfc5424",
        }
    }
}

/// An event's outcome.
#[derive(Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EventOutcome {
    Allow,
    Deny,
    Success,
    Failure,
}

/// What to export, from where.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// jsonl (default), cef or rfc5424.
    format: Option<ExportFormat>,
    /// From this time: RFC 3339 or back from now.
    since: Option<String>,
    /// From this seq.
    #[param(minimum = 0)]
    from: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/audit/export", tag = "audit", summary = "The log (or since a time or seq) streamed as JSON lines, CEF or RFC 5424",
    params(ExportQuery),
    responses((status = 200, description = "one event per line, chunked", content(
        (String = "application/x-ndjson"), (String = "text/plain")))))]
pub async fn export(
    State(api): State<Arc<Api>>,
    Extension(c): Extension<Caller>,
    token: Option<Extension<Token>>,
    RawQuery(raw): RawQuery,
) -> Response {
    let q: ExportQuery = match query(raw.as_deref()) {
        Ok(q) => q,
        Err(p) => return p.into_response(),
    };
    let format = q.format.unwrap_or(ExportFormat::Jsonl);
    let mut words = argv(&["audit", "export"], &[]);
    words.push(opt("format", format.word()));
    if let Some(s) = &q.since {
        words.push(opt("since", s));
    }
    match seq(q.from) {
        Ok(Some(f)) => words.push(opt("from", &f.to_string())),
        Ok(None) => {}
        Err(p) => return p.into_response(),
    }
    // The format is the export's own: no JSON wrapping of the first part.
    let input = Input {
        argv: words,
        ..Input::default()
    };
    match execute(&api.gw, &c, &input, time::OffsetDateTime::now_utc()).await {
        Outcome::Done { stdout, stream } => {
            let kind = if format == ExportFormat::Jsonl {
                "application/x-ndjson"
            } else {
                "text/plain; charset=utf-8"
            };
            let still = standing(&api, token.map(|t| t.0));
            let body = Chunks::start(&api, stdout, stream, Mode::Raw, still);
            let mut r = (StatusCode::OK, Body::new(body)).into_response();
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r.extensions_mut().insert(CallReason("done".into()));
            r
        }
        other => render::render(other, false),
    }
}

#[utoipa::path(get, path = "/api/v1/sessions/{id}/recording", tag = "sessions",
    summary = "A session recording as an asciicast v2 file (Security Logs Access; the read is an event)",
    params(("id" = String, Path, description = "a recording id: SESSION or SESSION-N")),
    responses((status = 200, description = "asciicast v2, chunked", content((String = "application/x-asciicast")))))]
pub async fn recording(
    State(api): State<Arc<Api>>,
    Extension(c): Extension<Caller>,
    token: Option<Extension<Token>>,
    Path(id): Path<String>,
) -> Response {
    let input = Input {
        argv: argv(&["session", "export"], &[&id]),
        ..Input::default()
    };
    match execute(&api.gw, &c, &input, time::OffsetDateTime::now_utc()).await {
        Outcome::Done { stdout, stream } => {
            let still = standing(&api, token.map(|t| t.0));
            let body = Chunks::start(&api, stdout, stream, Mode::Raw, still);
            let mut r = (StatusCode::OK, Body::new(body)).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-asciicast"),
            );
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r.extensions_mut().insert(CallReason("done".into()));
            r
        }
        other => render::render(other, false),
    }
}

#[utoipa::path(get, path = "/api/v1/recordings", tag = "sessions",
    summary = "Session recordings, oldest first (Security Logs Access)",
    responses((status = 200, body = Vec<crate::recording::Meta>)))]
pub async fn recordings(State(api): State<Arc<Api>>, Extension(c): Extension<Caller>) -> Response {
    run(&api, &c, argv(&["session", "recordings"], &[]), None, false).await
}

/// The result of a verification: a broken chain is an answer, not a
/// server error.
fn verdict(outcome: Outcome) -> Response {
    match outcome {
        Outcome::Done { stdout, .. } => json(
            StatusCode::OK,
            &serde_json::json!({"ok": true, "message": stdout.trim_end()}),
        ),
        Outcome::Failed(m) if m.starts_with("FAILED") => {
            let mut r = json(
                StatusCode::OK,
                &serde_json::json!({"ok": false, "message": m}),
            );
            r.extensions_mut().insert(CallReason(m));
            r
        }
        other => render::render(other, false),
    }
}

/// Where the walk starts.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct VerifyQuery {
    /// Start at this seq (a partial check of recent events).
    #[param(minimum = 0)]
    from: Option<i64>,
}

/// A seq from a query: at least 0.
fn seq(from: Option<i64>) -> Result<Option<u64>, Problem> {
    match from {
        None => Ok(None),
        Some(f) => u64::try_from(f)
            .map(Some)
            .map_err(|_| Problem::new(StatusCode::BAD_REQUEST, "from must be 0 or more")),
    }
}

#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit", summary = "Walk the hash chain; names the first bad event",
    params(VerifyQuery), responses((status = 200, body = super::openapi::Verdict)))]
pub async fn verify(
    State(api): State<Arc<Api>>,
    Extension(c): Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> Response {
    let q: VerifyQuery = match query(raw.as_deref()) {
        Ok(q) => q,
        Err(p) => return p.into_response(),
    };
    let mut words = argv(&["audit", "verify"], &[]);
    match seq(q.from) {
        Ok(Some(f)) => words.push(opt("from", &f.to_string())),
        Ok(None) => {}
        Err(p) => return p.into_response(),
    }
    verdict(outcome(&api, &c, words, None).await)
}

/// A checkpoint kept elsewhere, and the public key it must be signed with.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckpointCheck {
    /// As `GET /api/v1/audit/checkpoint` gave it.
    #[schema(value_type = Object)]
    checkpoint: serde_json::Value,
    /// Hex, from `GET /api/v1/audit/public-key`, recorded elsewhere.
    public_key: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/audit/verify", tag = "audit", summary = "Check the log against a checkpoint kept elsewhere",
    request_body = CheckpointCheck, responses((status = 200, body = super::openapi::Verdict)))]
pub async fn verify_checkpoint(
    State(api): State<Arc<Api>>,
    Extension(c): Extension<Caller>,
    bytes: Bytes,
) -> Response {
    let check: CheckpointCheck = match body(&bytes) {
        Ok(b) => b,
        Err(p) => return p.into_response(),
    };
    let file = "checkpoint.json";
    let mut words = argv(&["audit", "verify"], &[]);
    words.push(opt("checkpoint", file));
    if let Some(k) = &check.public_key {
        words.push(opt("public-key", k));
    }
    let input = Input {
        argv: words,
        json: true,
        files: BTreeMap::from([(file.to_string(), check.checkpoint.to_string())]),
        precondition: None,
    };
    verdict(execute(&api.gw, &c, &input, time::OffsetDateTime::now_utc()).await)
}

#[utoipa::path(get, path = "/api/v1/audit/checkpoint", tag = "audit", summary = "A signed checkpoint of the log's head: keep it off this machine",
    responses((status = 200, body = super::openapi::Object)))]
pub async fn checkpoint(State(api): State<Arc<Api>>, Extension(c): Extension<Caller>) -> Response {
    run(&api, &c, argv(&["audit", "checkpoint"], &[]), None, false).await
}

#[utoipa::path(get, path = "/api/v1/audit/public-key", tag = "audit", summary = "The audit-signing public key (hex)",
    responses((status = 200, body = super::openapi::PublicKey)))]
pub async fn public_key(State(api): State<Arc<Api>>, Extension(c): Extension<Caller>) -> Response {
    let input = Input {
        argv: argv(&["audit", "public-key"], &[]),
        ..Input::default()
    };
    match execute(&api.gw, &c, &input, time::OffsetDateTime::now_utc()).await {
        Outcome::Done { stdout, .. } => {
            let mut r = json(
                StatusCode::OK,
                &serde_json::json!({"public_key": stdout.trim()}),
            );
            r.extensions_mut().insert(CallReason("done".into()));
            r
        }
        other => render::render(other, false),
    }
}

#[utoipa::path(get, path = "/api/v1/audit/status", tag = "audit", summary = "Capacity, forwarding, the chain check at start, failures",
    responses((status = 200, body = super::openapi::Object)))]
pub async fn status(State(api): State<Arc<Api>>, Extension(c): Extension<Caller>) -> Response {
    run(&api, &c, argv(&["audit", "status"], &[]), None, false).await
}

/// How a stream is sent: the export's own lines, or the command line's
/// answers as JSON lines (`metergate --api`).
#[derive(Clone, Copy)]
pub enum Mode {
    Raw,
    Frames,
}

/// Whether the access that began a stream still stands.
pub type Standing = Box<dyn Fn() -> bool + Send + Sync>;

/// The token's access, asked again before every chunk: a key deleted or
/// deactivated, a service user gone or Administrator withdrawn ends the
/// stream at the next chunk.
pub fn standing(api: &Arc<Api>, token: Option<Token>) -> Standing {
    let api = api.clone();
    Box::new(move || {
        token.as_ref().is_some_and(|t| {
            api.gw
                .guard
                .token_stands(t, time::OffsetDateTime::now_utc())
        })
    })
}

/// A body fed by the core's producer; dropped (the client left), it stops
/// the producer.
pub struct Chunks {
    first: Option<Bytes>,
    rx: mpsc::Receiver<String>,
    producer: Option<JoinHandle<Result<(), String>>>,
    mode: Mode,
    standing: Standing,
}

impl Chunks {
    /// `first`, then what `stream` produces while `standing` holds.
    pub fn start(
        api: &Api,
        first: String,
        stream: Option<Stream>,
        mode: Mode,
        standing: Standing,
    ) -> Chunks {
        let (tx, rx) = mpsc::channel::<String>(4);
        let more = stream.is_some();
        let producer = stream.map(|s| tokio::spawn(produce(api.gw.guard.clone(), s, tx)));
        let first = match mode {
            Mode::Raw => first,
            Mode::Frames => frame(
                &CliAnswer {
                    code: 0,
                    stdout: first,
                    stderr: String::new(),
                },
                more,
            ),
        };
        Chunks {
            first: Some(Bytes::from(first)),
            rx,
            producer,
            mode,
            standing,
        }
    }
}

/// One line of `metergate --api`'s stream: an answer, and whether more follow.
pub fn frame(answer: &CliAnswer, more: bool) -> String {
    let mut v = serde_json::to_value(answer).unwrap_or_default();
    v["more"] = serde_json::Value::Bool(more);
    format!("{v}\n")
}

impl Drop for Chunks {
    fn drop(&mut self) {
        if let Some(p) = &self.producer {
            p.abort();
        }
    }
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(http_body::Frame::data(first))));
        }
        if self.producer.is_none() {
            return Poll::Ready(None);
        }
        // The producer ends by closing the channel: drain it, then ask how.
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(_)) if !(self.standing)() => {
                if let Some(p) = self.producer.take() {
                    p.abort();
                }
                let gone =
                    "the access that began this stream is gone (token, key or Administrator)";
                match self.mode {
                    Mode::Raw => Poll::Ready(Some(Err(std::io::Error::other(gone)))),
                    Mode::Frames => {
                        let last = CliAnswer {
                            code: 1,
                            stdout: String::new(),
                            stderr: format!("error: {gone}\n"),
                        };
                        let data = Bytes::from(frame(&last, false));
                        Poll::Ready(Some(Ok(http_body::Frame::data(data))))
                    }
                }
            }
            Poll::Ready(Some(text)) => {
                let data = match self.mode {
                    Mode::Raw => text,
                    Mode::Frames => frame(
                        &CliAnswer {
                            code: 0,
                            stdout: text,
                            stderr: String::new(),
                        },
                        true,
                    ),
                };
                Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from(data)))))
            }
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                let mode = self.mode;
                let Some(producer) = self.producer.as_mut() else {
                    return Poll::Ready(None);
                };
                let ended = match Pin::new(producer).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(Ok(()))) => Ok(()),
                    Poll::Ready(Ok(Err(e))) => Err(e),
                    Poll::Ready(Err(e)) => Err(e.to_string()),
                };
                self.producer = None;
                match (mode, ended) {
                    (Mode::Raw, Ok(())) => Poll::Ready(None),
                    // A plain stream cannot say it broke but by breaking:
                    // the client sees the chunked body cut short.
                    (Mode::Raw, Err(e)) => Poll::Ready(Some(Err(std::io::Error::other(e)))),
                    (Mode::Frames, ended) => {
                        let last = match ended {
                            Ok(()) => CliAnswer::default(),
                            Err(e) => CliAnswer {
                                code: 1,
                                stdout: String::new(),
                                stderr: format!("error: {e}\n"),
                            },
                        };
                        let data = Bytes::from(frame(&last, false));
                        Poll::Ready(Some(Ok(http_body::Frame::data(data))))
                    }
                }
            }
        }
    }
}
