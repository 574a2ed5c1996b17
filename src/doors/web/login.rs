//! Logging in through a browser: one guard login per step, as on SSH (the
//! lockout, throttling and busy answers are the guard's). A temporary
//! password leads to the new-password step with the same policy; a person
//! with a second factor gives a code (before a first login may set a
//! password). Between steps a short-lived ticket cookie holds the login.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use axum::Form;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tokio::time::Instant;

use super::session::{self, COOKIE};
use super::{DOOR, Frame, Web, cookie, page, set_cookie, signed_in};
use crate::commands::password::{self, PasswordError, Replacing};
use crate::guard::mfa::{FactorCheck, FactorUse};
use crate::guard::{Attempt, Credential, Proof, Verdict};
use crate::listen::Peer;
use crate::model::PrincipalId;
use crate::store::secrets::Secret;

// `__Host-`: only this origin over HTTPS may set them (no cookie planted
// from a sibling host or over plain HTTP).
const TICKET: &str = "__Host-mg_login";
const LOGIN_CSRF: &str = "__Host-mg_login_csrf";
const TICKET_LIFE: Duration = Duration::from_secs(300);
/// How long a refused login step takes, from its request: a constant, so
/// the time tells nothing (a name nobody has is answered without a hash).
const REJECTION_TIME: Duration = Duration::from_secs(1);

/// Answers a refused step no sooner than [`REJECTION_TIME`] after `t0`.
async fn paced(t0: Instant, r: Response) -> Response {
    if r.status().is_client_error() {
        tokio::time::sleep_until(t0 + REJECTION_TIME).await;
    }
    r
}

/// Wrong codes one login may give before it starts over.
const CODE_TRIES: u8 = 3;

/// Where a login stands between its steps.
pub enum Stage {
    /// The first credential was right; the code is awaited. `first_login`:
    /// the temporary password, when the new one is still to be set.
    Code {
        credential: Credential,
        first_login: Option<Secret>,
    },
    /// A first login: the new password is awaited.
    NewPassword {
        temporary: Secret,
        second_factor: bool,
    },
}

pub struct Ticket {
    who: PrincipalId,
    stage: Stage,
    csrf: String,
    expires: Instant,
    tries: u8,
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    frame: Frame,
    csrf: String,
}

#[derive(Template)]
#[template(path = "code.html")]
struct CodePage {
    frame: Frame,
    csrf: String,
}

#[derive(Template)]
#[template(path = "new_password.html")]
struct NewPasswordPage {
    frame: Frame,
    csrf: String,
    min_length: usize,
}

fn with_error(error: Option<String>) -> Frame {
    let mut f = Frame::anonymous();
    f.error = error;
    f
}

/// The login form, with a fresh double-submit CSRF token.
fn login_page(status: StatusCode, error: Option<String>) -> Response {
    let Some(csrf) = session::token() else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let mut r = page(LoginPage {
        frame: with_error(error),
        csrf: csrf.clone(),
    });
    *r.status_mut() = status;
    r.headers_mut()
        .append(header::SET_COOKIE, set_cookie(LOGIN_CSRF, &csrf, "/", None));
    r
}

pub async fn form(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    if signed_in(&web, &headers).is_some() {
        return Redirect::to("/").into_response();
    }
    login_page(StatusCode::OK, None)
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
}

pub async fn submit(
    web: State<Arc<Web>>,
    peer: Extension<Peer>,
    headers: HeaderMap,
    f: Form<LoginForm>,
) -> Response {
    let t0 = Instant::now();
    paced(t0, submit_step(web, peer, headers, f).await).await
}

async fn submit_step(
    State(web): State<Arc<Web>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let expected = cookie(&headers, LOGIN_CSRF).unwrap_or_default();
    if expected.is_empty() || !session::same(&expected, &f.csrf) {
        return login_page(
            StatusCode::FORBIDDEN,
            Some("The login form was stale: give your user name and password again.".into()),
        );
    }
    let source = peer.0.ip();
    let secret = Secret::new(f.password);
    let verdict = web
        .gw
        .guard
        .attempt(Attempt {
            claimed: f.user.trim(),
            source,
            door: DOOR,
            proof: Proof::InteractivePassword(secret.clone()),
            max_sessions: None,
        })
        .await;
    match verdict {
        Verdict::Accepted {
            who, second_factor, ..
        } => signed(&web, &headers, who, source, second_factor).await,
        Verdict::NeedsCode {
            who, credential, ..
        } => ticket(
            &web,
            who,
            Stage::Code {
                credential,
                first_login: None,
            },
            "/login/code",
        ),
        // A first login: the code first (if the person has a factor),
        // then the new password.
        Verdict::MustChangePassword(who) if web.gw.guard.asks_code(&who) => ticket(
            &web,
            who,
            Stage::Code {
                credential: Credential::KeyboardInteractive,
                first_login: Some(secret),
            },
            "/login/code",
        ),
        Verdict::MustChangePassword(who) => ticket(
            &web,
            who,
            Stage::NewPassword {
                temporary: secret,
                second_factor: false,
            },
            "/login/new-password",
        ),
        Verdict::Busy => login_page(
            StatusCode::SERVICE_UNAVAILABLE,
            Some("The gateway is busy checking passwords: nothing was counted against you. Try again.".into()),
        ),
        Verdict::Rejected => login_page(
            StatusCode::UNAUTHORIZED,
            Some("The user name or password is wrong, or the account may not log in now.".into()),
        ),
    }
}

/// A session for `who`: the cookie is new at every login.
async fn signed(
    web: &Web,
    headers: &HeaderMap,
    who: PrincipalId,
    source: IpAddr,
    factor: bool,
) -> Response {
    // A session this browser held before ends: one browser, one session.
    if let Some(old) = signed_in(web, headers) {
        old.end();
    }
    match web.sessions.start(who, source, factor).await {
        Ok((value, _)) => {
            let mut r = Redirect::to("/").into_response();
            let h = r.headers_mut();
            h.append(header::SET_COOKIE, set_cookie(COOKIE, &value, "/", None));
            h.append(
                header::SET_COOKIE,
                set_cookie(TICKET, "", "/", Some(Duration::ZERO)),
            );
            h.append(
                header::SET_COOKIE,
                set_cookie(LOGIN_CSRF, "", "/", Some(Duration::ZERO)),
            );
            r
        }
        Err(session::NotStarted::Cap(live)) => login_page(
            StatusCode::TOO_MANY_REQUESTS,
            Some(format!(
                "You hold {live} live sessions on the web console, the most allowed: log out of one, or wait for it to end."
            )),
        ),
        Err(session::NotStarted::Failed) => login_page(
            StatusCode::SERVICE_UNAVAILABLE,
            Some("The session could not be started: try again.".into()),
        ),
    }
}

/// Keeps the login's next step under a ticket cookie.
fn ticket(web: &Web, who: PrincipalId, stage: Stage, next: &str) -> Response {
    let (Some(value), Some(csrf)) = (session::token(), session::token()) else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    if let Ok(mut t) = web.tickets.lock() {
        let now = Instant::now();
        t.retain(|_, x| x.expires > now);
        // Bounded: logins half done are few; beyond this the oldest goes
        // (only someone with a right first credential makes one).
        if t.len() >= 10_000
            && let Some(oldest) = t
                .iter()
                .min_by_key(|(_, x)| x.expires)
                .map(|(k, _)| k.clone())
        {
            t.remove(&oldest);
        }
        t.insert(
            super::session_digest(&value),
            Ticket {
                who,
                stage,
                csrf,
                expires: now + TICKET_LIFE,
                tries: 0,
            },
        );
    }
    let mut r = Redirect::to(next).into_response();
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(TICKET, &value, "/", Some(TICKET_LIFE)),
    );
    r
}

/// Takes the ticket of this request out of the table.
fn take_ticket(web: &Web, headers: &HeaderMap) -> Option<(String, Ticket)> {
    let value = cookie(headers, TICKET)?;
    let key = super::session_digest(&value);
    let t = web.tickets.lock().ok()?.remove(&key)?;
    (t.expires > Instant::now()).then_some((key, t))
}

/// The ticket of this request, taken out of the table, if the form's CSRF
/// token is the ticket's; else where the browser goes.
// Once per login step: the size of the refusal does not matter.
#[allow(clippy::result_large_err)]
fn ticket_for(web: &Web, headers: &HeaderMap, csrf: &str) -> Result<(String, Ticket), Response> {
    let Some((key, t)) = take_ticket(web, headers) else {
        return Err(Redirect::to("/login").into_response());
    };
    if !session::same(&t.csrf, csrf) {
        return Err(super::refused_csrf());
    }
    Ok((key, t))
}

fn put_back(web: &Web, key: String, t: Ticket) {
    if let Ok(mut map) = web.tickets.lock() {
        map.insert(key, t);
    }
}

fn ticket_csrf(web: &Web, headers: &HeaderMap) -> Option<String> {
    let value = cookie(headers, TICKET)?;
    let map = web.tickets.lock().ok()?;
    let t = map.get(&super::session_digest(&value))?;
    (t.expires > Instant::now()).then(|| t.csrf.clone())
}

pub async fn code_form(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    match ticket_csrf(&web, &headers) {
        Some(csrf) => page(CodePage {
            frame: Frame::anonymous(),
            csrf,
        }),
        None => Redirect::to("/login").into_response(),
    }
}

#[derive(Deserialize)]
pub struct CodeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    code: String,
}

pub async fn code(
    web: State<Arc<Web>>,
    peer: Extension<Peer>,
    headers: HeaderMap,
    f: Form<CodeForm>,
) -> Response {
    let t0 = Instant::now();
    paced(t0, code_step(web, peer, headers, f).await).await
}

async fn code_step(
    State(web): State<Arc<Web>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Form(f): Form<CodeForm>,
) -> Response {
    let (key, mut t) = match ticket_for(&web, &headers, &f.csrf) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Stage::Code {
        credential,
        first_login,
    } = &t.stage
    else {
        put_back(&web, key, t);
        return Redirect::to("/login/new-password").into_response();
    };
    let source = peer.0.ip();
    let code = Secret::new(f.code.trim());
    let again = |web: &Web, key: String, mut t: Ticket, why: &str, status: StatusCode| {
        t.tries += 1;
        if t.tries >= CODE_TRIES {
            return login_page(
                StatusCode::UNAUTHORIZED,
                Some("Too many wrong codes: log in again.".into()),
            );
        }
        let csrf = t.csrf.clone();
        put_back(web, key, t);
        let mut frame = Frame::anonymous();
        frame.error = Some(why.into());
        let mut r = page(CodePage { frame, csrf });
        *r.status_mut() = status;
        r
    };
    if let Some(temporary) = first_login {
        let temporary = temporary.clone();
        return match web
            .gw
            .guard
            .check_factor(&t.who, Some(source), DOOR, &code, FactorUse::Login)
            .await
        {
            FactorCheck::Right { .. } => {
                t.stage = Stage::NewPassword {
                    temporary,
                    second_factor: true,
                };
                put_back(&web, key, t);
                Redirect::to("/login/new-password").into_response()
            }
            FactorCheck::Failed => again(
                &web,
                key,
                t,
                "The code could not be checked just now: give it again.",
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            FactorCheck::Wrong | FactorCheck::Locked => again(
                &web,
                key,
                t,
                "That code was refused.",
                StatusCode::UNAUTHORIZED,
            ),
        };
    }
    let verdict = web
        .gw
        .guard
        .attempt(Attempt {
            claimed: &t.who.to_string(),
            source,
            door: DOOR,
            proof: Proof::Code {
                first: *credential,
                id: None,
                code,
            },
            max_sessions: None,
        })
        .await;
    match verdict {
        Verdict::Accepted {
            who, second_factor, ..
        } => signed(&web, &headers, who, source, second_factor).await,
        Verdict::Busy => again(
            &web,
            key,
            t,
            "The code could not be checked just now: give it again.",
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        _ => again(
            &web,
            key,
            t,
            "That code was refused (each code counts once).",
            StatusCode::UNAUTHORIZED,
        ),
    }
}

pub async fn new_password_form(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    match ticket_csrf(&web, &headers) {
        Some(csrf) => page(NewPasswordPage {
            frame: Frame::anonymous(),
            csrf,
            min_length: web.gw.passwords.min_length,
        }),
        None => Redirect::to("/login").into_response(),
    }
}

#[derive(Deserialize)]
pub struct NewPasswordForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    new: String,
    #[serde(default)]
    repeat: String,
}

pub async fn new_password(
    web: State<Arc<Web>>,
    peer: Extension<Peer>,
    headers: HeaderMap,
    f: Form<NewPasswordForm>,
) -> Response {
    let t0 = Instant::now();
    paced(t0, new_password_step(web, peer, headers, f).await).await
}

async fn new_password_step(
    State(web): State<Arc<Web>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Form(f): Form<NewPasswordForm>,
) -> Response {
    let (key, t) = match ticket_for(&web, &headers, &f.csrf) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Stage::NewPassword {
        temporary,
        second_factor,
    } = &t.stage
    else {
        put_back(&web, key, t);
        return Redirect::to("/login/code").into_response();
    };
    let (temporary, second_factor) = (temporary.clone(), *second_factor);
    let source = peer.0.ip();
    let retry = |web: &Web, key: String, t: Ticket, why: String| {
        let csrf = t.csrf.clone();
        put_back(web, key, t);
        let mut frame = Frame::anonymous();
        frame.error = Some(why);
        let mut r = page(NewPasswordPage {
            frame,
            csrf,
            min_length: web.gw.passwords.min_length,
        });
        *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
        r
    };
    match password::change(
        &web.gw,
        &t.who,
        source,
        DOOR,
        &temporary,
        Replacing::Temporary,
        Secret::new(f.new),
        Secret::new(f.repeat),
    )
    .await
    {
        Ok(()) => {}
        Err(PasswordError::Policy(why)) => return retry(&web, key, t, why),
        Err(PasswordError::Busy) => {
            return retry(
                &web,
                key,
                t,
                "The gateway is busy: nothing was changed. Give your new password again.".into(),
            );
        }
        Err(PasswordError::Failed(why)) => {
            return login_page(StatusCode::INTERNAL_SERVER_ERROR, Some(why));
        }
    }
    let verdict = web
        .gw
        .guard
        .attempt(Attempt {
            claimed: &t.who.to_string(),
            source,
            door: DOOR,
            proof: Proof::Checked {
                credential: Credential::KeyboardInteractive,
                id: None,
                second_factor,
            },
            max_sessions: None,
        })
        .await;
    match verdict {
        Verdict::Accepted {
            who, second_factor, ..
        } => signed(&web, &headers, who, source, second_factor).await,
        _ => login_page(
            StatusCode::UNAUTHORIZED,
            Some("Your password was changed, but the account may not log in now.".into()),
        ),
    }
}

#[derive(Deserialize)]
pub struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

pub async fn logout(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Form(f): Form<LogoutForm>,
) -> Response {
    let Some(s) = signed_in(&web, &headers) else {
        return Redirect::to("/login").into_response();
    };
    if !super::csrf_ok(&s, &f.csrf) {
        return super::refused_csrf();
    }
    s.end();
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(COOKIE, "", "/", Some(Duration::ZERO)),
    );
    r
}
