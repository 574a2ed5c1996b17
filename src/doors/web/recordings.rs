//! The console's session recordings: the list and a player page (the
//! vendored asciinema-player, the console's only script, on that page
//! alone). Reading needs Security Logs Access; the core logs each read.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::{Frame, Web, outcome_error, page, run, signed_in, to_login};

/// The player page's policy: the console's, with the gateway's own scripts
/// and WebAssembly (the player's terminal) allowed; still nothing from
/// elsewhere, no inline script, no framing.
const PLAYER_CSP: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
                          object-src 'none'; base-uri 'none'; form-action 'self'; \
                          frame-ancestors 'none'; img-src 'self' data:";

struct Row {
    id: String,
    session: String,
    principal: String,
    kind: String,
    meters: String,
    started: String,
    seconds: String,
    bytes: String,
    state: String,
}

#[derive(Template)]
#[template(path = "recordings.html")]
struct RecordingsPage {
    frame: Frame,
    recordings: Vec<Row>,
}

#[derive(Template)]
#[template(path = "player.html")]
struct PlayerPage {
    frame: Frame,
    id: String,
    session: String,
    principal: String,
    meters: String,
    state: String,
}

fn field(v: &Value, k: &str) -> String {
    match &v[k] {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn row(v: &Value) -> Row {
    let started = v["started"].as_i64().unwrap_or(0);
    Row {
        id: field(v, "id"),
        session: field(v, "session"),
        principal: field(v, "principal"),
        kind: field(v, "kind"),
        meters: meters(v),
        started: crate::model::rfc3339(started),
        seconds: v["ended"]
            .as_i64()
            .map(|e| ((e - started).max(0) / 1_000_000).to_string())
            .unwrap_or_else(|| "-".into()),
        bytes: field(v, "bytes"),
        state: field(v, "state"),
    }
}

fn meters(v: &Value) -> String {
    v["meters"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

async fn listed(web: &Web, s: &super::WebSession) -> Result<Vec<Value>, String> {
    let text = outcome_error(run(web, s, vec!["session".into(), "recordings".into()]).await)?;
    match serde_json::from_str(&text) {
        Ok(Value::Array(a)) => Ok(a),
        Ok(_) => Ok(Vec::new()),
        Err(e) => Err(format!("unexpected answer: {e}")),
    }
}

pub async fn list(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    let Some(s) = signed_in(&web, &headers) else {
        return to_login();
    };
    match listed(&web, &s).await {
        Ok(all) => page(RecordingsPage {
            frame: Frame::of(&web, &s),
            recordings: all.iter().rev().map(row).collect(),
        }),
        Err(e) => super::pages::denied(&web, &s, e),
    }
}

pub async fn player(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let Some(s) = signed_in(&web, &headers) else {
        return to_login();
    };
    let all = match listed(&web, &s).await {
        Ok(all) => all,
        Err(e) => return super::pages::denied(&web, &s, e),
    };
    let Some(v) = all.iter().find(|v| v["id"] == id.as_str()) else {
        return super::not_found().await;
    };
    let mut r = page(PlayerPage {
        frame: Frame::of(&web, &s),
        id: field(v, "id"),
        session: field(v, "session"),
        principal: field(v, "principal"),
        meters: meters(v),
        state: field(v, "state"),
    });
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PLAYER_CSP),
    );
    r
}

/// The recording as asciicast v2 (`session export`: the read is logged).
pub async fn cast(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let Some(s) = signed_in(&web, &headers) else {
        return to_login();
    };
    let outcome = run(&web, &s, vec!["session".into(), "export".into(), id]).await;
    super::audit::streamed(&web, &s, outcome, "application/x-asciicast")
}

pub async fn player_script() -> Response {
    script(include_str!(
        "../../../assets/vendor/asciinema-player/asciinema-player.min.js"
    ))
}

pub async fn player_init() -> Response {
    script(include_str!("../../../assets/player.js"))
}

pub async fn player_css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../../../assets/vendor/asciinema-player/asciinema-player.css"),
    )
        .into_response()
}

fn script(text: &'static str) -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        text,
    )
        .into_response()
}
