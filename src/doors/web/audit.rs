//! The Audit, Check and Review pages: the security log with the filters of
//! `audit query` (paged back by seq), its export as a download in each
//! format, the chain's verification; `check`'s answer as it prints it; and
//! the review with its acknowledgement. Each is the core's command as this
//! session (Security Logs Access or User Management, as the guard decides).

use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::Value;

use super::session::WebSession;
use super::{Frame, Web, outcome_error, page, posted, run, signed_in, to_login};
use crate::commands::{Input, Outcome, execute};
use crate::model::{Permission, rfc3339};

/// Events a page shows.
const PAGE: usize = 100;

#[derive(Deserialize, Default)]
pub struct Filters {
    #[serde(default)]
    principal: String,
    #[serde(default)]
    meter: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    outcome: String,
    #[serde(default)]
    door: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    before: Option<u64>,
    /// `whole`: walk the whole chain (and the recordings it vouches for)
    /// now, not only what was logged since the last whole walk.
    #[serde(default)]
    verify: String,
}

pub struct Row {
    pub seq: u64,
    pub time: String,
    pub code: String,
    pub outcome: String,
    pub principal: String,
    pub door: String,
    pub meter: String,
    pub reason: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    frame: Frame,
    f: Filters,
    rows: Vec<Row>,
    older: Option<String>,
    verified: String,
    verified_ok: bool,
    outcomes: Vec<&'static str>,
}

fn field(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap_or("-").to_string()
}

/// The filters as `audit query` options (`--opt=value`: a value is never
/// read as an option).
fn options(f: &Filters) -> Vec<String> {
    let mut argv = Vec::new();
    for (name, v) in [
        ("principal", &f.principal),
        ("meter", &f.meter),
        ("code", &f.code),
        ("outcome", &f.outcome),
        ("door", &f.door),
        ("since", &f.since),
        ("until", &f.until),
    ] {
        if !v.trim().is_empty() {
            argv.push(format!("--{name}={}", v.trim()));
        }
    }
    argv
}

fn query_string(f: &Filters, before: u64) -> String {
    let mut q: Vec<String> = [
        ("principal", &f.principal),
        ("meter", &f.meter),
        ("code", &f.code),
        ("outcome", &f.outcome),
        ("door", &f.door),
        ("since", &f.since),
        ("until", &f.until),
    ]
    .iter()
    .filter(|(_, v)| !v.is_empty())
    .map(|(k, v)| format!("{k}={}", super::pages::urlencode(v)))
    .collect();
    q.push(format!("before={before}"));
    q.join("&")
}

pub async fn audit(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Query(f): Query<Filters>,
) -> Response {
    let Some(s) = signed_in(&web, &headers) else {
        return to_login();
    };
    let mut argv = vec![
        "audit".to_string(),
        "query".into(),
        format!("--limit={PAGE}"),
    ];
    argv.extend(options(&f));
    if let Some(b) = f.before {
        argv.push(format!("--before={b}"));
    }
    let text = match outcome_error(run(&web, &s, argv).await) {
        Ok(t) => t,
        Err(e) => return super::pages::denied(&web, &s, e),
    };
    let mut rows: Vec<Row> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| Row {
            seq: v["seq"].as_u64().unwrap_or(0),
            time: v["time"].as_i64().map(rfc3339).unwrap_or_default(),
            code: field(&v, "code"),
            outcome: field(&v, "outcome"),
            principal: field(&v, "principal"),
            door: field(&v, "door"),
            meter: field(&v, "meter"),
            reason: field(&v, "reason"),
        })
        .collect();
    // Newest first on the page.
    rows.reverse();
    let older = (rows.len() == PAGE)
        .then(|| rows.last().map(|r| query_string(&f, r.seq)))
        .flatten();
    // Every load checks what was logged since the last whole walk; the
    // whole walk (seconds with a million events) is one click away.
    let how = if f.verify == "whole" {
        vec!["audit".into(), "verify".into()]
    } else {
        vec!["audit".into(), "verify".into(), "--incremental".into()]
    };
    let (verified_ok, verified) = match outcome_error(run(&web, &s, how).await)
        .and_then(|t| serde_json::from_str::<Value>(&t).map_err(|e| e.to_string()))
    {
        Ok(v) => (v["ok"] == true, field(&v, "message")),
        Err(e) => (false, e),
    };
    page(AuditPage {
        frame: Frame::of(&web, &s),
        f,
        rows,
        older,
        verified,
        verified_ok,
        outcomes: vec!["", "allow", "deny", "success", "failure"],
    })
}

#[derive(Deserialize)]
pub struct ExportQuery {
    #[serde(default)]
    format: String,
    #[serde(default)]
    since: String,
}

/// `audit export` as a download, streamed page by page.
pub async fn export(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Query(q): Query<ExportQuery>,
) -> Response {
    let Some(s) = signed_in(&web, &headers) else {
        return to_login();
    };
    let format = match q.format.as_str() {
        "cef" => "cef",
        "rfc5424" => "rfc5424",
        _ => "jsonl",
    };
    let mut argv = vec![
        "audit".to_string(),
        "export".into(),
        format!("--format={format}"),
    ];
    if !q.since.trim().is_empty() {
        argv.push(format!("--since={}", q.since.trim()));
    }
    let input = Input {
        argv,
        ..Default::default()
    };
    let outcome = execute(
        &web.gw,
        &s.caller(),
        &input,
        time::OffsetDateTime::now_utc(),
    )
    .await;
    let mut r = streamed(&web, &s, outcome, "text/plain; charset=utf-8");
    if !r.status().is_success() {
        return r;
    }
    let h = r.headers_mut();
    let ext = if format == "jsonl" { "jsonl" } else { format };
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"metergate-audit.{ext}\""))
    {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    r
}

/// A streamed answer of the core (an export) as the response body, of
/// `content_type`; an outcome that is not done, as the denied page.
pub(super) fn streamed(
    web: &Web,
    s: &WebSession,
    outcome: Outcome,
    content_type: &'static str,
) -> Response {
    let (first, stream) = match outcome {
        Outcome::Done { stdout, stream } => (stdout, stream),
        other => {
            let e = outcome_error(other).err().unwrap_or_default();
            return super::pages::denied(web, s, e);
        }
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<String>(4);
    if let Some(stream) = stream {
        tokio::spawn(crate::commands::stream::produce(
            web.gw.guard.clone(),
            stream,
            tx,
        ));
    }
    let mut r = Response::new(Body::from_stream(futures_stream(first, rx)));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// The first text, then every chunk the producer sends, as a body stream.
fn futures_stream(
    first: String,
    rx: tokio::sync::mpsc::Receiver<String>,
) -> impl futures_core::Stream<Item = Result<String, std::io::Error>> {
    struct Chunks {
        first: Option<String>,
        rx: tokio::sync::mpsc::Receiver<String>,
    }
    impl futures_core::Stream for Chunks {
        type Item = Result<String, std::io::Error>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            if let Some(f) = self.first.take().filter(|f| !f.is_empty()) {
                return std::task::Poll::Ready(Some(Ok(f)));
            }
            self.rx.poll_recv(cx).map(|c| c.map(Ok))
        }
    }
    Chunks {
        first: Some(first),
        rx,
    }
}

#[derive(Template)]
#[template(path = "check.html")]
struct CheckPage {
    frame: Frame,
    principal: String,
    permission: String,
    meter: String,
    permissions: Vec<&'static str>,
    answer: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct CheckQuery {
    #[serde(default)]
    principal: String,
    #[serde(default)]
    permission: String,
    #[serde(default)]
    meter: String,
}

/// The stage-and-test form: the guard's answer as `check` prints it.
pub async fn check(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Query(q): Query<CheckQuery>,
) -> Response {
    let Some(s) = signed_in(&web, &headers) else {
        return to_login();
    };
    let answer = if q.principal.trim().is_empty() || q.permission.trim().is_empty() {
        None
    } else {
        let mut argv = vec![
            "check".to_string(),
            format!("--principal={}", q.principal.trim()),
            format!("--permission={}", q.permission.trim()),
        ];
        if !q.meter.trim().is_empty() {
            argv.push(format!("--meter={}", q.meter.trim()));
        }
        Some(match text_of(&web, &s, argv).await {
            Ok(t) | Err(t) => t.trim().to_string(),
        })
    };
    page(CheckPage {
        frame: Frame::of(&web, &s),
        principal: q.principal,
        permission: q.permission,
        meter: q.meter,
        permissions: Permission::ALL.iter().map(|p| p.name()).collect(),
        answer,
    })
}

/// A command's words as the CLI prints them (not JSON).
async fn text_of(web: &Web, s: &WebSession, argv: Vec<String>) -> Result<String, String> {
    let input = Input {
        argv,
        ..Default::default()
    };
    outcome_error(
        execute(
            &web.gw,
            &s.caller(),
            &input,
            time::OffsetDateTime::now_utc(),
        )
        .await,
    )
}

#[derive(Template)]
#[template(path = "review.html")]
struct ReviewPage {
    frame: Frame,
    text: String,
    can_ack: bool,
}

pub async fn review(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    let Some(s) = signed_in(&web, &headers) else {
        return to_login();
    };
    match text_of(&web, &s, vec!["review".into()]).await {
        Ok(text) => page(ReviewPage {
            frame: Frame::of(&web, &s),
            text,
            can_ack: super::may(&web, &s, crate::guard::AdminOp::Change),
        }),
        Err(e) => super::pages::denied(&web, &s, e),
    }
}

#[derive(Deserialize)]
pub struct AckForm {
    #[serde(default)]
    csrf: String,
}

pub async fn acknowledge(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Form(f): Form<AckForm>,
) -> Response {
    let s = match posted(&web, &headers, &f.csrf) {
        Ok(s) => s,
        Err(r) => return r,
    };
    match text_of(&web, &s, vec!["review".into(), "--ack".into()]).await {
        Ok(t) => s.set_flash(t.trim().to_string()),
        Err(e) if e.starts_with("DENY") => return super::pages::denied(&web, &s, e),
        Err(e) => s.set_flash(format!("error: {e}")),
    }
    let mut r = Redirect::to("/review").into_response();
    *r.status_mut() = StatusCode::SEE_OTHER;
    r
}
