//! The web console: pages rendered on the server (askama) on the API's HTTPS
//! listener, for people. It translates forms into the core's commands, run
//! as `user:NAME` on door `web`; the guard decides and logs every one.
//! Nothing is loaded from outside the gateway; the one script is the
//! vendored recording player, on its page alone.

mod access;
mod audit;
mod live;
mod login;
mod pages;
mod policies;
mod profile;
mod recordings;
pub mod session;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use askama::Template;
use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::commands::{Gateway, Input, Outcome, execute};
use crate::guard::{Action, AdminOp};
use session::{COOKIE, WebSession, WebSessions};

pub const DOOR: &str = "web";

/// The strictest policy the pages work with: everything from the gateway
/// itself, no script at all, no framing, forms only back to it.
const CSP: &str = "default-src 'self'; script-src 'none'; object-src 'none'; base-uri 'none'; \
                   form-action 'self'; frame-ancestors 'none'; img-src 'self' data:";

/// A page that runs a script of ours (the live tail, the copy button):
/// `script-src 'self'` and it connects back; still nothing from
/// elsewhere, no inline script.
const OWN_SCRIPT_CSP: &str = "default-src 'self'; script-src 'self'; object-src 'none'; \
                              base-uri 'none'; form-action 'self'; frame-ancestors 'none'; \
                              img-src 'self' data:";

/// What every handler shares.
pub struct Web {
    gw: Arc<Gateway>,
    sessions: Arc<WebSessions>,
    /// Logins between their first credential and the code or new password,
    /// by ticket digest; a ticket lives five minutes.
    tickets: Mutex<HashMap<String, login::Ticket>>,
}

/// The console's routes, for the HTTPS listener to serve at `/`. `idle`,
/// `max` and `per_principal`: the SSH door's session lengths and cap,
/// which browser sessions keep.
pub fn router(gw: Arc<Gateway>, idle: Duration, max: Duration, per_principal: usize) -> Router {
    let web = Arc::new(Web {
        sessions: WebSessions::new(
            gw.sessions.clone(),
            gw.guard.clone(),
            idle,
            max,
            per_principal,
        ),
        gw,
        tickets: Mutex::new(HashMap::new()),
    });
    Router::new()
        .route("/", get(pages::home))
        .route("/assets/console.css", get(stylesheet))
        .route("/login", get(login::form).post(login::submit))
        .route("/login/code", get(login::code_form).post(login::code))
        .route(
            "/login/new-password",
            get(login::new_password_form).post(login::new_password),
        )
        .route("/logout", post(login::logout))
        .route("/users", get(pages::users).post(pages::add_user))
        .route("/users/{name}", get(pages::user))
        .route(
            "/users/{name}/detach",
            get(pages::detach_confirm).post(pages::detach),
        )
        .route("/users/{name}/{action}", post(pages::user_action))
        .route("/groups", get(access::groups).post(access::add_group))
        .route("/groups/{name}", get(access::group))
        .route(
            "/groups/{name}/{action}",
            get(access::group_confirm).post(access::group_action),
        )
        .route(
            "/service-users",
            get(access::service_users).post(access::add_service_user),
        )
        .route("/service-users/{name}", get(access::service_user))
        .route(
            "/service-users/{name}/{action}",
            get(access::service_user_confirm).post(access::service_user_action),
        )
        .route("/roles", get(access::roles).post(access::add_role))
        .route("/roles/{name}", post(access::edit_role))
        .route("/support", get(access::support))
        .route(
            "/support/{action}",
            get(access::support_confirm).post(access::support_action),
        )
        .route("/policies", get(policies::list).post(policies::create))
        .route("/new-policy", get(policies::new))
        .route("/policies/{name}", get(policies::show))
        .route(
            "/policies/{name}/edit",
            get(policies::edit_form).post(policies::edit),
        )
        .route(
            "/policies/{name}/delete",
            get(policies::delete_confirm).post(policies::delete),
        )
        .route("/audit", get(audit::audit))
        .route("/audit/live", get(live::live))
        .route("/audit/stream", get(live::stream))
        .route("/assets/tail.js", get(live::script))
        .route("/assets/copy.js", get(pages::copy_script))
        .route("/audit/export", get(audit::export))
        .route("/check", get(audit::check))
        .route("/review", get(audit::review))
        .route("/review/ack", post(audit::acknowledge))
        .route("/sessions", get(pages::sessions))
        .route("/sessions/{id}/kill", post(pages::kill))
        .route("/recordings", get(recordings::list))
        .route("/recordings/{id}", get(recordings::player))
        .route("/recordings/{id}/cast", get(recordings::cast))
        .route(
            "/assets/vendor/asciinema-player.min.js",
            get(recordings::player_script),
        )
        .route(
            "/assets/vendor/asciinema-player.css",
            get(recordings::player_css),
        )
        .route("/assets/player.js", get(recordings::player_init))
        .route("/profile", get(profile::profile).post(profile::save_names))
        .route("/profile/password", post(profile::change_password))
        .route("/profile/mfa/enroll", post(profile::enrol))
        .route("/profile/mfa/confirm", post(profile::confirm))
        .route("/profile/mfa/step-up", post(profile::step_up))
        .fallback(not_found)
        // Forms are small: 64 KiB at most (413 beyond), and no request may
        // hold a connection's worker for long (408 after 30 s).
        .layer(tower_http::limit::RequestBodyLimitLayer::new(64 * 1024))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(30),
        ))
        .layer(axum::middleware::from_fn(headers))
        .with_state(web)
}

/// The headers every console answer carries.
async fn headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    // A page that needs its own policy (the player) set it already.
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
    }
    for (name, value) in [
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        // HTTPS only, and browsers must remember it (a year).
        (header::STRICT_TRANSPORT_SECURITY, "max-age=31536000"),
        // Pages carry people's data: never kept by a cache.
        (header::CACHE_CONTROL, "no-store"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    response
}

async fn stylesheet() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../../../assets/console.css"),
    )
        .into_response()
}

pub(super) async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Html(
            "<!doctype html><title>Not found</title><p>Not found. <a href=\"/\">metergate</a></p>",
        ),
    )
        .into_response()
}

/// A cookie's value from the request.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_string())
}

/// A cookie to set: Secure, HttpOnly, SameSite=Strict, on `path`.
fn set_cookie(name: &str, value: &str, path: &str, max_age: Option<Duration>) -> HeaderValue {
    let mut c = cookie::Cookie::build((name.to_string(), value.to_string()))
        .path(path.to_string())
        .secure(true)
        .http_only(true)
        .same_site(cookie::SameSite::Strict);
    if let Some(a) = max_age {
        c = c.max_age(cookie::time::Duration::seconds(a.as_secs() as i64));
    }
    HeaderValue::from_str(&c.build().to_string()).unwrap_or(HeaderValue::from_static(""))
}

/// The signed-in session of this request, or None.
fn signed_in(web: &Web, headers: &HeaderMap) -> Option<Arc<WebSession>> {
    web.sessions.visit(&cookie(headers, COOKIE)?)
}

/// The links a person is offered (what they may not do is not offered).
pub struct Nav {
    pub users: bool,
    pub sessions: bool,
    pub audit: bool,
}

/// What the page frame shows: who, the CSRF token, one message.
pub struct Frame {
    pub who: Option<String>,
    pub csrf: String,
    pub flash: Option<String>,
    pub error: Option<String>,
    pub nav: Nav,
}

impl Frame {
    fn anonymous() -> Frame {
        Frame {
            who: None,
            csrf: String::new(),
            flash: None,
            error: None,
            nav: Nav {
                users: false,
                sessions: false,
                audit: false,
            },
        }
    }

    fn of(web: &Web, s: &WebSession) -> Frame {
        Frame {
            who: Some(s.who.to_string()),
            csrf: s.csrf.clone(),
            flash: s.take_flash(),
            error: None,
            nav: {
                let view = may(web, s, AdminOp::View);
                Nav {
                    users: view,
                    sessions: view,
                    audit: may_read_log(web, s),
                }
            },
        }
    }
}

/// Whether the guard would allow `op` to this session now (buttons shown
/// or not; the guard decides again when the form comes back).
fn may(web: &Web, s: &WebSession, op: AdminOp) -> bool {
    let req = s.caller().request(Action::Admin {
        op,
        target: "web console".into(),
    });
    web.gw
        .guard
        .decide(&req, time::OffsetDateTime::now_utc())
        .allowed
}

/// Whether the guard would let this session read the security log.
fn may_read_log(web: &Web, s: &WebSession) -> bool {
    let req = s.caller().request(Action::ReadAudit {
        what: "web console".into(),
    });
    web.gw
        .guard
        .decide(&req, time::OffsetDateTime::now_utc())
        .allowed
}

/// Renders a template, or a plain 500 when it cannot.
fn page(t: impl Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a console page could not be rendered");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
            )
                .into_response()
        }
    }
}

/// To the login page (a session that ended lands here).
fn to_login() -> Response {
    Redirect::to("/login").into_response()
}

/// Runs one command of the core as this session.
async fn run(web: &Web, s: &WebSession, argv: Vec<String>) -> Outcome {
    let input = Input {
        argv,
        json: true,
        ..Default::default()
    };
    run_input(web, s, &input).await
}

/// Runs one command of the core as this session, with its files and
/// precondition.
async fn run_input(web: &Web, s: &WebSession, input: &Input) -> Outcome {
    execute(&web.gw, &s.caller(), input, time::OffsetDateTime::now_utc()).await
}

/// A POST's CSRF token is the session's, or the request is refused (and
/// nothing runs).
fn csrf_ok(s: &WebSession, token: &str) -> bool {
    session::same(&s.csrf, token)
}

/// The signed-in session of a form that changes something, if its CSRF
/// token is the session's; else where the browser goes (the login page, or
/// a refusal with nothing done).
// Once per request: the size of the refusal does not matter.
#[allow(clippy::result_large_err)]
fn posted(web: &Web, headers: &HeaderMap, token: &str) -> Result<Arc<WebSession>, Response> {
    let s = signed_in(web, headers).ok_or_else(to_login)?;
    if !csrf_ok(&s, token) {
        return Err(refused_csrf());
    }
    Ok(s)
}

fn refused_csrf() -> Response {
    (
        StatusCode::FORBIDDEN,
        Html("<!doctype html><title>Refused</title><p>The form is stale or forged (no or a wrong CSRF token): nothing was done. <a href=\"/\">Back</a></p>"),
    )
        .into_response()
}

/// The words of an outcome that is not a success, for the page.
fn outcome_error(o: Outcome) -> Result<String, String> {
    match o {
        Outcome::Done { stdout, .. } => Ok(stdout),
        Outcome::Denied { message, .. } => Err(format!("DENY: {message}")),
        Outcome::Usage(m)
        | Outcome::Refused(m)
        | Outcome::NotFound(m)
        | Outcome::Failed(m)
        | Outcome::Stale(m)
        | Outcome::Protected(m) => Err(m),
    }
}

/// What a cookie or ticket is kept as (its SHA-256).
fn session_digest(value: &str) -> String {
    hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        value.as_bytes(),
    ))
}
