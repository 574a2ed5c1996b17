//! The console's pages: Users (list, search, details, policies, groups,
//! activation, temporary passwords), Sessions and Profile. Each form becomes
//! one command of the core as this session; what the guard would refuse is
//! not offered, and a forged request for it is refused with its reason.

use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::Value;

use super::session::WebSession;
use super::{Frame, Web, may, outcome_error, page, posted, run, signed_in, to_login};
use crate::guard::AdminOp;

/// Users a page shows at most.
const PAGE: usize = 50;

pub(super) fn words(ws: &[&str]) -> Vec<String> {
    ws.iter().map(|w| w.to_string()).collect()
}

/// A list command's rows, or the page saying why not.
pub(super) async fn list_of(
    web: &Web,
    s: &WebSession,
    argv: Vec<String>,
) -> Result<Vec<Value>, Response> {
    match json_of(web, s, argv).await {
        Ok(Value::Array(a)) => Ok(a),
        Ok(_) => Ok(Vec::new()),
        Err(e) => Err(denied(web, s, e)),
    }
}

/// A command's JSON answer, or the error words.
pub(super) async fn json_of(web: &Web, s: &WebSession, argv: Vec<String>) -> Result<Value, String> {
    let text = outcome_error(run(web, s, argv).await)?;
    serde_json::from_str(&text).map_err(|e| format!("unexpected answer: {e}"))
}

pub(super) fn text(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

#[derive(Template)]
#[template(path = "denied.html")]
struct Denied {
    frame: Frame,
    reason: String,
    /// Only a second factor is missing: the page prompts for a code.
    needs_factor: bool,
}

/// A page that could not be shown: the reason (a denial is the guard's).
pub(super) fn denied(web: &Web, s: &WebSession, reason: String) -> Response {
    let mut r = page(Denied {
        frame: Frame::of(web, s),
        needs_factor: reason.contains("needs a second factor") && !s.factor.proven(),
        reason,
    });
    *r.status_mut() = StatusCode::FORBIDDEN;
    r
}

pub async fn home(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    match signed_in(&web, &headers) {
        None => to_login(),
        Some(s) if may(&web, &s, AdminOp::View) => Redirect::to("/users").into_response(),
        Some(_) => Redirect::to("/profile").into_response(),
    }
}

pub struct UserRow {
    pub name: String,
    pub email: String,
    pub status: String,
    pub end_date: String,
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    frame: Frame,
    users: Vec<UserRow>,
    q: String,
    shown: usize,
    total: usize,
    next: Option<String>,
    can_change: bool,
}

#[derive(Deserialize)]
pub struct UsersQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    after: String,
}

pub async fn users(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Query(query): Query<UsersQuery>,
) -> Response {
    let Some(s) = signed_in(&web, &headers) else {
        return to_login();
    };
    let list = match list_of(&web, &s, words(&["user", "list"])).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let q = query.q.trim().to_lowercase();
    let matching: Vec<&Value> = list
        .iter()
        .filter(|u| {
            q.is_empty()
                || text(u, "name").to_lowercase().contains(&q)
                || text(u, "email").to_lowercase().contains(&q)
        })
        .collect();
    let total = matching.len();
    let rows: Vec<UserRow> = matching
        .into_iter()
        .filter(|u| query.after.is_empty() || text(u, "name") > query.after)
        .take(PAGE + 1)
        .map(|u| UserRow {
            name: text(u, "name"),
            email: text(u, "email"),
            status: text(u, "status"),
            end_date: text(u, "access_end_date"),
        })
        .collect();
    let next = (rows.len() > PAGE).then(|| rows[PAGE - 1].name.clone());
    let users: Vec<UserRow> = rows.into_iter().take(PAGE).collect();
    page(UsersPage {
        frame: Frame::of(&web, &s),
        shown: users.len(),
        users,
        q: query.q,
        total,
        next,
        can_change: may(&web, &s, AdminOp::Change),
    })
}

#[derive(Deserialize)]
pub struct NewUser {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    first: String,
    #[serde(default)]
    last: String,
}

/// A secret shown once (a temporary password, an access key's secret).
#[derive(Template)]
#[template(path = "secret.html")]
pub(super) struct SecretPage {
    pub frame: Frame,
    pub title: String,
    pub text: String,
    pub secret: String,
    pub back: String,
}

pub async fn add_user(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Form(f): Form<NewUser>,
) -> Response {
    let s = match posted(&web, &headers, &f.csrf) {
        Ok(s) => s,
        Err(r) => return r,
    };
    // Values as `--opt=value` and names after `--`: a form value is never
    // read as an option.
    let mut argv = vec![
        "user".to_string(),
        "add".into(),
        format!("--email={}", f.email.trim()),
    ];
    for (opt, v) in [("first", &f.first), ("last", &f.last)] {
        if !v.trim().is_empty() {
            argv.push(format!("--{opt}={}", v.trim()));
        }
    }
    argv.extend(["--".to_string(), f.name.trim().to_string()]);
    match json_of(&web, &s, argv).await {
        Ok(v) if v.get("temporary_password").is_none() => {
            let back = format!("/users/{}", urlencode(f.name.trim()));
            mailed_flash(&s, &v, &format!("User {} created", f.name.trim()));
            Redirect::to(&back).into_response()
        }
        Ok(v) => page(SecretPage {
            frame: Frame::of(&web, &s),
            title: format!("User {} created", f.name.trim()),
            text: format!(
                "The temporary password (it expires at {} and must be changed at first login):",
                text(&v, "expires_at")
            ),
            secret: text(&v, "temporary_password"),
            back: format!("/users/{}", urlencode(f.name.trim())),
        }),
        Err(e) => {
            s.set_flash(format!("error: {e}"));
            Redirect::to("/users").into_response()
        }
    }
}

/// The password went by mail: the page says where, never what.
fn mailed_flash(s: &WebSession, v: &Value, what: &str) {
    s.set_flash(format!(
        "{what}: the temporary password was sent by mail to {} (it expires at {} and must be changed at first login)",
        text(v, "mailed_to"),
        text(v, "expires_at")
    ));
}

pub(super) fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[derive(Template)]
#[template(path = "user.html")]
struct UserPage {
    frame: Frame,
    name: String,
    unique_id: String,
    email: String,
    first_name: String,
    last_name: String,
    status: String,
    end_date: String,
    created: String,
    created_by: String,
    modified: String,
    modified_by: String,
    last_login: String,
    second_factor: String,
    policies: Vec<String>,
    groups: Vec<String>,
    all_policies: Vec<String>,
    all_groups: Vec<String>,
    can_change: bool,
    can_resend: bool,
}

pub(super) fn names(v: &Value, key: &str) -> Vec<String> {
    v[key]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

pub async fn user(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let Some(s) = signed_in(&web, &headers) else {
        return to_login();
    };
    let v = match json_of(&web, &s, words(&["user", "show", "--", &name])).await {
        Ok(v) => v,
        Err(e) => return denied(&web, &s, e),
    };
    let can_change = may(&web, &s, AdminOp::Change);
    let (mut all_policies, mut all_groups) = (Vec::new(), Vec::new());
    if can_change {
        if let Ok(Value::Array(a)) = json_of(&web, &s, words(&["policy", "list"])).await {
            all_policies = a.iter().map(|p| text(p, "name")).collect();
        }
        if let Ok(Value::Array(a)) = json_of(&web, &s, words(&["group", "list"])).await {
            all_groups = a.iter().map(|g| text(g, "name")).collect();
        }
    }
    let mut r = page(UserPage {
        frame: Frame::of(&web, &s),
        unique_id: text(&v, "unique_id"),
        email: text(&v, "email"),
        first_name: text(&v, "first_name"),
        last_name: text(&v, "last_name"),
        status: text(&v, "status"),
        end_date: text(&v, "access_end_date"),
        created: text(&v, "created"),
        created_by: text(&v, "created_by"),
        modified: text(&v, "last_modified"),
        modified_by: text(&v, "last_modified_by"),
        last_login: text(&v, "last_login"),
        second_factor: text(&v, "second_factor"),
        policies: names(&v, "policies"),
        groups: names(&v, "groups"),
        all_policies,
        all_groups,
        can_change,
        can_resend: can_change && may(&web, &s, AdminOp::ResendPassword),
        name,
    });
    // The copy button's script (ours, from the gateway).
    r.headers_mut().insert(
        axum::http::header::CONTENT_SECURITY_POLICY,
        axum::http::HeaderValue::from_static(super::OWN_SCRIPT_CSP),
    );
    r
}

pub async fn copy_script() -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/javascript; charset=utf-8",
        )],
        include_str!("../../../assets/copy.js"),
    )
        .into_response()
}

/// "Are you sure?" before a delete: the form posts to `action`.
#[derive(Template)]
#[template(path = "confirm.html")]
pub(super) struct ConfirmPage {
    pub frame: Frame,
    pub action: String,
    pub fields: Vec<(String, String)>,
    pub question: String,
    pub button: String,
    pub back: String,
}

#[derive(Deserialize)]
pub struct PolicyQuery {
    #[serde(default)]
    policy: String,
}

/// Deleting a policy from a user asks first.
pub async fn detach_confirm(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<PolicyQuery>,
) -> Response {
    let Some(s) = signed_in(&web, &headers) else {
        return to_login();
    };
    page(ConfirmPage {
        frame: Frame::of(&web, &s),
        action: format!("/users/{}/detach", urlencode(&name)),
        fields: vec![("policy".into(), q.policy.clone())],
        question: format!(
            "Delete the permission policy {} from user {name}?",
            q.policy
        ),
        button: "Delete".into(),
        back: format!("/users/{}", urlencode(&name)),
    })
}

#[derive(Deserialize)]
pub struct ActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    policy: String,
    #[serde(default)]
    group: String,
}

pub async fn detach(
    state: State<Arc<Web>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    form: Form<ActionForm>,
) -> Response {
    user_action(state, headers, Path((name, "detach".to_string())), form).await
}

/// A change to one user: each a command of the core, then back to the
/// user's page with what it did (or why not).
pub async fn user_action(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Path((name, action)): Path<(String, String)>,
    Form(f): Form<ActionForm>,
) -> Response {
    let s = match posted(&web, &headers, &f.csrf) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let argv = match action.as_str() {
        "deactivate" | "activate" => words(&["user", &action, "--", &name]),
        "attach" => words(&["user", "attach", "--", &name, &f.policy]),
        "detach" => words(&["user", "detach", "--", &name, &f.policy]),
        "add-to-group" => words(&["group", "add-member", "--", &f.group, &name]),
        "resend-password" => {
            return match json_of(&web, &s, words(&["user", "resend-password", "--", &name])).await {
                Ok(v) if v.get("temporary_password").is_none() => {
                    mailed_flash(&s, &v, &format!("New temporary password for {name}"));
                    Redirect::to(&format!("/users/{}", urlencode(&name))).into_response()
                }
                Ok(v) => page(SecretPage {
                    frame: Frame::of(&web, &s),
                    title: format!("New temporary password for {name}"),
                    text: format!(
                        "It expires at {} and must be changed at first login:",
                        text(&v, "expires_at")
                    ),
                    secret: text(&v, "temporary_password"),
                    back: format!("/users/{}", urlencode(&name)),
                }),
                Err(e) => denied(&web, &s, e),
            };
        }
        _ => return super::not_found().await,
    };
    apply(&web, &s, argv, &format!("/users/{}", urlencode(&name))).await
}

/// Runs one change as this session, then back to `back` with what it did
/// (or why not); a denial is the guard's page.
pub(super) async fn apply(web: &Web, s: &WebSession, argv: Vec<String>, back: &str) -> Response {
    let input = crate::commands::Input {
        argv,
        json: true,
        ..Default::default()
    };
    apply_input(web, s, &input, back).await
}

/// As [`apply`], with the command's precondition and files.
pub(super) async fn apply_input(
    web: &Web,
    s: &WebSession,
    input: &crate::commands::Input,
    back: &str,
) -> Response {
    match outcome_error(super::run_input(web, s, input).await) {
        Ok(out) => {
            let said = serde_json::from_str::<Value>(&out)
                .ok()
                .and_then(|v| v["message"].as_str().map(String::from))
                .unwrap_or_else(|| out.trim().to_string());
            s.set_flash(said);
            Redirect::to(back).into_response()
        }
        Err(e) if e.starts_with("DENY") => denied(web, s, e),
        Err(e) => {
            s.set_flash(format!("error: {e}"));
            Redirect::to(back).into_response()
        }
    }
}

pub struct SessionRow {
    pub id: String,
    pub principal: String,
    pub door: String,
    pub source: String,
    pub started: String,
}

#[derive(Template)]
#[template(path = "sessions.html")]
struct SessionsPage {
    frame: Frame,
    sessions: Vec<SessionRow>,
    can_kill: bool,
}

pub async fn sessions(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    let Some(s) = signed_in(&web, &headers) else {
        return to_login();
    };
    let list = match list_of(&web, &s, words(&["session", "list"])).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let sessions = list
        .iter()
        .map(|x| SessionRow {
            id: text(x, "id"),
            principal: text(x, "principal"),
            door: text(x, "door"),
            source: text(x, "source"),
            started: x["started"]
                .as_i64()
                .map(crate::model::rfc3339)
                .unwrap_or_default(),
        })
        .collect();
    page(SessionsPage {
        frame: Frame::of(&web, &s),
        sessions,
        can_kill: may(&web, &s, AdminOp::Change),
    })
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub async fn kill(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Path(id): Path<u64>,
    Form(f): Form<CsrfForm>,
) -> Response {
    let s = match posted(&web, &headers, &f.csrf) {
        Ok(s) => s,
        Err(r) => return r,
    };
    match outcome_error(run(&web, &s, words(&["session", "kill", &id.to_string()])).await) {
        Ok(_) => s.set_flash(format!("session {id} ended")),
        Err(e) if e.starts_with("DENY") => return denied(&web, &s, e),
        Err(e) => s.set_flash(format!("error: {e}")),
    }
    Redirect::to("/sessions").into_response()
}
