//! The Audit page's live tail: `audit tail -f` of the core as this session,
//! relayed as server-sent events to a small script of ours that adds each
//! event to a table as text. The tail ends with the session (logout, kill,
//! idle, deactivation) or with the permission to read the log, checked
//! before every event sent and every two seconds: access never outlives
//! what granted it.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;

use super::pages::{denied, words};
use super::session::WebSession;
use super::{Frame, Web, may_read_log, outcome_error, page, run, signed_in, to_login};
use crate::commands::Outcome;

/// Events shown before the tail starts.
const BACKLOG: &str = "20";

/// How often a quiet tail checks that its session and permission hold.
const RECHECK: Duration = Duration::from_secs(2);

#[derive(Template)]
#[template(path = "audit_live.html")]
struct LivePage {
    frame: Frame,
}

pub async fn live(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    let Some(s) = signed_in(&web, &headers) else {
        return to_login();
    };
    if !may_read_log(&web, &s) {
        return denied(&web, &s, "the live tail needs Security Logs Access".into());
    }
    let mut r = page(LivePage {
        frame: Frame::of(&web, &s),
    });
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(super::OWN_SCRIPT_CSP),
    );
    r
}

pub async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../../../assets/tail.js"),
    )
        .into_response()
}

/// Why a tail must stop now, if it must.
fn must_stop(web: &Web, s: &WebSession) -> Option<&'static str> {
    if s.is_closed() {
        Some("your session ended: reload the page to log in again")
    } else if !may_read_log(web, s) {
        Some("Security Logs Access was withdrawn")
    } else {
        None
    }
}

/// The events, as server-sent events: `events` (JSON lines, one event a
/// line) and a last `end` saying why the tail stopped.
pub async fn stream(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    let Some(s) = signed_in(&web, &headers) else {
        return to_login();
    };
    let argv = words(&["audit", "tail", "-n", BACKLOG, "--follow"]);
    let (first, follow) = match run(&web, &s, argv).await {
        Outcome::Done { stdout, stream } => (stdout, stream),
        other => {
            let e = outcome_error(other).err().unwrap_or_default();
            return denied(&web, &s, e);
        }
    };
    let (tx, mut chunks) = mpsc::channel::<String>(4);
    if let Some(follow) = follow {
        tokio::spawn(crate::commands::stream::produce(
            web.gw.guard.clone(),
            follow,
            tx,
        ));
    }
    let (out, events) = mpsc::channel::<Event>(4);
    tokio::spawn(async move {
        let mut next = Some(first);
        let mut tick = tokio::time::interval(RECHECK);
        let why = loop {
            if let Some(why) = must_stop(&web, &s) {
                break why;
            }
            let chunk = match next.take() {
                Some(c) => Some(c),
                None => tokio::select! {
                    c = chunks.recv() => match c {
                        Some(c) => Some(c),
                        None => break "the log's stream ended",
                    },
                    _ = tick.tick() => None,
                    _ = out.closed() => return,
                },
            };
            let Some(chunk) = chunk else { continue };
            let lines = chunk.trim_end();
            // Checked again right before sending: an event never goes out
            // after the access that let it.
            if lines.is_empty() || must_stop(&web, &s).is_some() {
                continue;
            }
            if out
                .send(Event::default().event("events").data(lines))
                .await
                .is_err()
            {
                return;
            }
        };
        let _ = out.send(Event::default().event("end").data(why)).await;
        // Dropping `chunks` stops the producer.
    });
    Sse::new(Events(events))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// The relay's events as the stream axum's SSE body reads.
struct Events(mpsc::Receiver<Event>);

impl futures_core::Stream for Events {
    type Item = Result<Event, Infallible>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|e| e.map(Ok))
    }
}
