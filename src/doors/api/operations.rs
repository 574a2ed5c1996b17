//! Live sessions, the guard's answers (`check`, `review`), and any admin
//! command as the command line words it (`POST /api/v1/commands`, what
//! `metergate --api` sends): the same core, the same output as through
//! the control socket.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::ToSchema;

use super::Api;
use super::audit::{Chunks, Mode};
use super::calls::CallReason;
use super::problem::Problem;
use super::render::{Key, PageQuery, argv, body, opt, outcome, page, query, run};
use crate::commands::stream::Stream;
use crate::commands::{Caller, CliAnswer, Input, Outcome, execute};

#[utoipa::path(get, path = "/api/v1/sessions", tag = "sessions", summary = "Live sessions on every door",
    params(PageQuery), responses((status = 200, body = super::openapi::Page)))]
pub async fn sessions(
    State(api): State<Arc<Api>>,
    Extension(c): Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> Response {
    let q: PageQuery = match query(raw.as_deref()) {
        Ok(q) => q,
        Err(p) => return p.into_response(),
    };
    page(
        outcome(&api, &c, argv(&["session", "list"], &[]), None).await,
        &q,
        Key::Number("id"),
    )
}

#[utoipa::path(delete, path = "/api/v1/sessions/{id}", tag = "sessions", summary = "End a live session",
    params(("id" = u64, Path)), responses((status = 200, body = super::openapi::Message)))]
pub async fn session_kill(
    State(api): State<Arc<Api>>,
    Extension(c): Extension<Caller>,
    Path(id): Path<u64>,
) -> Response {
    let words = argv(&["session", "kill"], &[&id.to_string()]);
    run(&api, &c, words, None, false).await
}

/// `check`'s question: may PRINCIPAL use PERMISSION (on METER), or make
/// this concrete request (a Modbus function on a register, a file
/// operation, a console)?
#[derive(Deserialize, ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CheckQuestion {
    /// A typed principal id (user:alice, svc:scada-1) or a user name.
    principal: String,
    /// A permission name, e.g. "Master Reset".
    permission: Option<String>,
    meter: Option<String>,
    /// A Modbus function code: 3, 4, 6, 8 or 16.
    function: Option<u8>,
    register: Option<u16>,
    /// The values written, comma-separated (FC 6: one).
    value: Option<String>,
    /// Registers read (FC 3 and 4).
    count: Option<u16>,
    /// A file path as SFTP shows it (/METER/…).
    path: Option<String>,
    /// list, stat, read, write, create, rename, remove, mkdir, rmdir or setstat.
    op: Option<String>,
    /// A console session on the meter.
    #[serde(default)]
    console: bool,
    /// Decide at another time: a date or RFC 3339.
    as_of: Option<String>,
    /// POST only: decide as if this draft policy were attached.
    #[param(ignore)]
    with_policy: Option<super::directory::NewPolicy>,
}

async fn ask(api: &Api, c: &Caller, q: CheckQuestion) -> Response {
    let mut words = argv(&["check"], &[]);
    words.push(opt("principal", &q.principal));
    let mut text = |name: &str, v: &Option<String>| {
        if let Some(v) = v {
            words.push(opt(name, v));
        }
    };
    text("permission", &q.permission);
    text("meter", &q.meter);
    text("function", &q.function.map(|f| f.to_string()));
    text("register", &q.register.map(|r| r.to_string()));
    text("count", &q.count.map(|n| n.to_string()));
    text("path", &q.path);
    text("op", &q.op);
    text("as-of", &q.as_of);
    for v in q.value.iter().flat_map(|v| v.split(',')) {
        words.push(opt("value", v.trim()));
    }
    if q.console {
        words.push("--console".into());
    }
    match &q.with_policy {
        Some(p) => {
            super::directory::policy_file(api, c, p, words, None, false, "with-policy").await
        }
        None => run(api, c, words, None, false).await,
    }
}

#[utoipa::path(get, path = "/api/v1/check", tag = "decisions", summary = "What the guard would decide, with the reason",
    params(CheckQuestion), responses((status = 200, body = super::openapi::Decision)))]
pub async fn check(
    State(api): State<Arc<Api>>,
    Extension(c): Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> Response {
    match query::<CheckQuestion>(raw.as_deref()) {
        Ok(q) => ask(&api, &c, q).await,
        Err(p) => p.into_response(),
    }
}

#[utoipa::path(post, path = "/api/v1/check", tag = "decisions", summary = "The same question as a JSON body",
    request_body = CheckQuestion, responses((status = 200, body = super::openapi::Decision)))]
pub async fn check_post(
    State(api): State<Arc<Api>>,
    Extension(c): Extension<Caller>,
    bytes: Bytes,
) -> Response {
    match body::<CheckQuestion>(&bytes) {
        Ok(q) => ask(&api, &c, q).await,
        Err(p) => p.into_response(),
    }
}

#[utoipa::path(get, path = "/api/v1/review", tag = "decisions", summary = "Who can do what where, and what needs attention",
    responses((status = 200, body = super::openapi::Object)))]
pub async fn review(State(api): State<Arc<Api>>, Extension(c): Extension<Caller>) -> Response {
    run(&api, &c, argv(&["review"], &[]), None, false).await
}

#[utoipa::path(post, path = "/api/v1/review", tag = "decisions", summary = "Record that a review was done (who, when)",
    responses((status = 200, body = super::openapi::Object)))]
pub async fn review_ack(State(api): State<Arc<Api>>, Extension(c): Extension<Caller>) -> Response {
    run(&api, &c, vec!["review".into(), "--ack".into()], None, false).await
}

/// An admin command as the command line words it, with the files it
/// names (read by the client).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandLine {
    /// The words after `metergate`, e.g. ["user", "show", "alice"].
    argv: Vec<String>,
    #[serde(default)]
    json: bool,
    /// Path → contents, for `--file F`, `--checkpoint F` and `@F`.
    #[serde(default)]
    files: std::collections::BTreeMap<String, String>,
}

#[utoipa::path(post, path = "/api/v1/commands", tag = "cli", summary = "Run an admin command as `metergate --api` does: the exit code and output of the control socket",
    request_body = CommandLine,
    responses((status = 200, description = "the command line's answer; a streamed one (`audit export`) is one CliAnswer per line with `more`",
        content((CliAnswer = "application/json"), (String = "application/x-ndjson")))))]
pub async fn command(
    State(api): State<Arc<Api>>,
    Extension(c): Extension<Caller>,
    token: Option<Extension<crate::guard::tokens::Token>>,
    bytes: Bytes,
) -> Response {
    let line: CommandLine = match body(&bytes) {
        Ok(l) => l,
        Err(p) => return p.into_response(),
    };
    let input = Input {
        argv: line.argv,
        json: line.json,
        files: line.files,
        precondition: None,
    };
    // Watching tells the watched person and logs it: refused before it
    // starts, not after.
    if input
        .argv
        .iter()
        .map(String::as_str)
        .take(2)
        .eq(["session", "watch"])
    {
        return Problem::new(
            StatusCode::BAD_REQUEST,
            "`session watch` follows a live session on the control socket or the SSH shell; through the API read GET /api/v1/sessions/{id}/recording",
        )
        .into_response();
    }
    let done = execute(&api.gw, &c, &input, time::OffsetDateTime::now_utc()).await;
    let reason = match &done {
        Outcome::Done { .. } => "done".to_string(),
        Outcome::Denied { decision, .. } => decision.reason.to_string(),
        Outcome::Usage(_) => "malformed command".to_string(),
        Outcome::Refused(m)
        | Outcome::NotFound(m)
        | Outcome::Stale(m)
        | Outcome::Protected(m)
        | Outcome::Failed(m) => m.clone(),
    };
    let denied = matches!(done, Outcome::Denied { .. });
    let (answer, stream) = done.cli();
    let mut r = match stream {
        // Following the log is for the socket and the shell, where the
        // session ends when Security Logs Access goes; the API exports.
        Some(Stream::Follow { .. }) => {
            return Problem::new(
                StatusCode::BAD_REQUEST,
                "`audit tail -f` follows the log on the control socket or the SSH shell; through the API use `audit export`",
            )
            .into_response();
        }
        Some(Stream::Watch(_)) => {
            return Problem::new(
                StatusCode::BAD_REQUEST,
                "`session watch` follows a live session on the control socket or the SSH shell; through the API read GET /api/v1/sessions/{id}/recording",
            )
            .into_response();
        }
        Some(s) => {
            let still = super::audit::standing(&api, token.map(|t| t.0));
            let chunks = Chunks::start(&api, answer.stdout, Some(s), Mode::Frames, still);
            let mut r = (StatusCode::OK, Body::new(chunks)).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-ndjson"),
            );
            r
        }
        None => {
            let mut r = (
                StatusCode::OK,
                serde_json::to_string(&answer).unwrap_or_default(),
            )
                .into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
    };
    // Answers may hold a secret shown once.
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.extensions_mut().insert(CallReason(reason));
    if denied {
        r.extensions_mut().insert(super::calls::Denied);
    }
    r
}

/// Effective access, on every meter or one, now or at another time.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AccessQuestion {
    meter: Option<String>,
    /// A date (its 00:00 UTC) or RFC 3339; not for groups.
    as_of: Option<String>,
}

async fn permissions(
    api: &Api,
    c: &Caller,
    words: &[&str],
    name: Option<&str>,
    raw: Option<&str>,
) -> Response {
    let q: AccessQuestion = match query(raw) {
        Ok(q) => q,
        Err(p) => return p.into_response(),
    };
    let mut line = argv(words, &[]);
    if let Some(m) = &q.meter {
        line.push(opt("meter", m));
    }
    if let Some(t) = &q.as_of {
        line.push(opt("as-of", t));
    }
    if let Some(n) = name {
        line.push("--".into());
        line.push(n.into());
    }
    run(api, c, line, None, false).await
}

#[utoipa::path(get, path = "/api/v1/users/{name}/permissions", tag = "decisions", summary = "Effective access of a user: every permission allowed or explicitly denied, per group of meters, and why",
    params(("name" = String, Path), AccessQuestion), responses((status = 200, body = super::openapi::Object)))]
pub async fn user_permissions(
    State(api): State<Arc<Api>>,
    Extension(c): Extension<Caller>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    permissions(
        &api,
        &c,
        &["user", "permissions"],
        Some(&name),
        raw.as_deref(),
    )
    .await
}

#[utoipa::path(get, path = "/api/v1/service-users/{name}/permissions", tag = "decisions", summary = "Effective access of a service user",
    params(("name" = String, Path), AccessQuestion), responses((status = 200, body = super::openapi::Object)))]
pub async fn service_user_permissions(
    State(api): State<Arc<Api>>,
    Extension(c): Extension<Caller>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let words = ["service-user", "permissions"];
    permissions(&api, &c, &words, Some(&name), raw.as_deref()).await
}

#[utoipa::path(get, path = "/api/v1/user-groups/{name}/permissions", tag = "decisions", summary = "What a user group's policies give its members",
    params(("name" = String, Path), AccessQuestion), responses((status = 200, body = super::openapi::Object)))]
pub async fn group_permissions(
    State(api): State<Arc<Api>>,
    Extension(c): Extension<Caller>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    permissions(
        &api,
        &c,
        &["group", "permissions"],
        Some(&name),
        raw.as_deref(),
    )
    .await
}

#[utoipa::path(get, path = "/api/v1/support-access/permissions", tag = "decisions", summary = "Effective access of support staff",
    params(AccessQuestion), responses((status = 200, body = super::openapi::Object)))]
pub async fn support_permissions(
    State(api): State<Arc<Api>>,
    Extension(c): Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> Response {
    permissions(&api, &c, &["support", "permissions"], None, raw.as_deref()).await
}

/// `who-can`'s question.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct WhoCanQuestion {
    /// A permission name, e.g. "Peak Demand Reset".
    permission: String,
    meter: Option<String>,
    /// A date (its 00:00 UTC) or RFC 3339.
    as_of: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/who-can", tag = "decisions", summary = "Every principal allowed a permission (on a meter), and through what",
    params(WhoCanQuestion), responses((status = 200, body = super::openapi::Object)))]
pub async fn who_can(
    State(api): State<Arc<Api>>,
    Extension(c): Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> Response {
    let q: WhoCanQuestion = match query(raw.as_deref()) {
        Ok(q) => q,
        Err(p) => return p.into_response(),
    };
    let mut words = argv(&["who-can"], &[]);
    words.push(opt("permission", &q.permission));
    if let Some(m) = &q.meter {
        words.push(opt("meter", m));
    }
    if let Some(t) = &q.as_of {
        words.push(opt("as-of", t));
    }
    run(&api, &c, words, None, false).await
}
