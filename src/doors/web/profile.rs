//! One's own page: names, password (Password Self-Management, as `passwd`
//! in the shell: the current one checked by the guard, counted toward
//! lockout) and second factor (enrol with a QR code, confirm, step up).

use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::extract::{Extension, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use serde::Deserialize;
use serde_json::Value;

use super::session::WebSession;
use super::{DOOR, Frame, Web, outcome_error, page, posted, run, signed_in, to_login};
use crate::commands::password::{self, PasswordError, Replacing};
use crate::guard::{Action, AdminOp, PasswordCheck};
use crate::listen::Peer;
use crate::model::PrincipalId;
use crate::store::secrets::Secret;

#[derive(Template)]
#[template(path = "profile.html")]
struct ProfilePage {
    frame: Frame,
    who: String,
    is_user: bool,
    first: String,
    last: String,
    /// "active", "enrolled" or "none".
    factor: String,
    /// This session proved a second factor.
    stepped_up: bool,
    /// Password Self-Management: the form is offered only to its holders.
    can_change_password: bool,
}

fn own_name(s: &WebSession) -> Option<String> {
    match &s.who {
        PrincipalId::User(n) => Some(n.clone()),
        _ => None,
    }
}

pub async fn profile(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    let Some(s) = signed_in(&web, &headers) else {
        return to_login();
    };
    let dir = web.gw.guard.directory();
    let me = own_name(&s).and_then(|n| dir.users.get(&n).cloned());
    let factor = match me.as_ref().and_then(|u| u.mfa.as_ref()) {
        Some(f) if f.confirmed => "active",
        Some(_) => "enrolled",
        None => "none",
    };
    page(ProfilePage {
        frame: Frame::of(&web, &s),
        who: s.who.to_string(),
        is_user: me.is_some(),
        first: me
            .as_ref()
            .map(|u| u.first_name.clone())
            .unwrap_or_default(),
        last: me.as_ref().map(|u| u.last_name.clone()).unwrap_or_default(),
        factor: factor.into(),
        stepped_up: s.factor.proven(),
        can_change_password: super::may(&web, &s, AdminOp::OwnPassword),
    })
}

#[derive(Deserialize)]
pub struct NamesForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    first: String,
    #[serde(default)]
    last: String,
}

pub async fn save_names(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Form(f): Form<NamesForm>,
) -> Response {
    let s = match posted(&web, &headers, &f.csrf) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let Some(name) = own_name(&s) else {
        return Redirect::to("/profile").into_response();
    };
    let argv = vec![
        "user".to_string(),
        "edit".into(),
        format!("--first={}", f.first),
        format!("--last={}", f.last),
        "--".into(),
        name,
    ];
    match outcome_error(run(&web, &s, argv).await) {
        Ok(_) => s.set_flash("your names were saved"),
        Err(e) => s.set_flash(format!("error: {e}")),
    }
    Redirect::to("/profile").into_response()
}

#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    current: String,
    #[serde(default)]
    new: String,
    #[serde(default)]
    repeat: String,
}

/// One's own password, as `passwd` in the shell.
pub async fn change_password(
    State(web): State<Arc<Web>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Form(f): Form<PasswordForm>,
) -> Response {
    let s = match posted(&web, &headers, &f.csrf) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let now = time::OffsetDateTime::now_utc();
    let d = web
        .gw
        .guard
        .authorize(
            &s.caller().request(Action::Admin {
                op: AdminOp::OwnPassword,
                target: "passwd".into(),
            }),
            now,
        )
        .await;
    let said = if !d.allowed {
        format!("error: DENY: {}", d.reason)
    } else {
        let current = Secret::new(f.current);
        let source = peer.0.ip();
        match web
            .gw
            .guard
            .check_password(&s.who, source, DOOR, &current)
            .await
        {
            PasswordCheck::Right => match password::change(
                &web.gw,
                &s.who,
                source,
                DOOR,
                &current,
                Replacing::Current,
                Secret::new(f.new),
                Secret::new(f.repeat),
            )
            .await
            {
                Ok(()) => "password changed".to_string(),
                Err(
                    e @ (PasswordError::Policy(_) | PasswordError::Busy | PasswordError::Failed(_)),
                ) => {
                    format!("error: {e}")
                }
            },
            PasswordCheck::Wrong => "error: that is not your current password".into(),
            PasswordCheck::Locked => {
                "error: password changes are locked for now; try again later".into()
            }
            PasswordCheck::Busy => "error: the password hashing pool is busy; try again".into(),
        }
    };
    s.set_flash(said);
    Redirect::to("/profile").into_response()
}

#[derive(Template)]
#[template(path = "enrol.html")]
struct EnrolPage {
    frame: Frame,
    qr: String,
    uri: String,
    secret: String,
}

#[derive(Deserialize)]
pub struct CodeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    code: String,
}

/// The QR code of `uri` as an SVG data URI (the CSP allows `data:` images
/// and no script).
fn qr_image(uri: &str) -> String {
    let svg = qrcode::QrCode::new(uri.as_bytes())
        .map(|c| {
            c.render::<qrcode::render::svg::Color>()
                .min_dimensions(220, 220)
                .build()
        })
        .unwrap_or_default();
    format!(
        "data:image/svg+xml;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(svg)
    )
}

/// Enrolling one's own factor: the core's `user mfa enroll SELF`, shown
/// with a QR code; the code that confirms it comes next.
pub async fn enrol(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Form(f): Form<CodeForm>,
) -> Response {
    let s = match posted(&web, &headers, &f.csrf) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let Some(name) = own_name(&s) else {
        return Redirect::to("/profile").into_response();
    };
    let argv = ["user", "mfa", "enroll", "--", &name]
        .map(String::from)
        .to_vec();
    let v: Value = match outcome_error(run(&web, &s, argv).await)
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
    {
        Ok(v) => v,
        Err(e) => {
            s.set_flash(format!("error: {e}"));
            return Redirect::to("/profile").into_response();
        }
    };
    let uri = v["otpauth_uri"].as_str().unwrap_or_default().to_string();
    page(EnrolPage {
        frame: Frame::of(&web, &s),
        qr: qr_image(&uri),
        secret: v["secret"].as_str().unwrap_or_default().to_string(),
        uri,
    })
}

#[derive(Template)]
#[template(path = "recovery.html")]
struct RecoveryPage {
    frame: Frame,
    codes: Vec<String>,
}

pub async fn confirm(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Form(f): Form<CodeForm>,
) -> Response {
    let s = match posted(&web, &headers, &f.csrf) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let Some(name) = own_name(&s) else {
        return Redirect::to("/profile").into_response();
    };
    let argv = ["user", "mfa", "confirm", "--", &name, f.code.trim()]
        .map(String::from)
        .to_vec();
    match outcome_error(run(&web, &s, argv).await)
        .and_then(|t| serde_json::from_str::<Value>(&t).map_err(|e| e.to_string()))
    {
        Ok(v) => page(RecoveryPage {
            frame: Frame::of(&web, &s),
            codes: v["recovery_codes"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|c| c.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
        }),
        Err(e) => {
            s.set_flash(format!("error: {e}"));
            Redirect::to("/profile").into_response()
        }
    }
}

/// Step up: this session proves the factor (the core's `mfa CODE`).
pub async fn step_up(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Form(f): Form<CodeForm>,
) -> Response {
    let s = match posted(&web, &headers, &f.csrf) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let argv = vec!["mfa".to_string(), "--".into(), f.code.trim().to_string()];
    match outcome_error(run(&web, &s, argv).await) {
        Ok(_) => s.set_flash("second factor accepted: this session may now use what needs one"),
        Err(e) => s.set_flash(format!("error: {e}")),
    }
    Redirect::to("/profile").into_response()
}
