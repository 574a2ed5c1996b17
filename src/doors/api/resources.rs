//! The REST resources under `/api/v1`: each one is a command of the
//! application core, run exactly as the CLI and the shell run it (the same
//! words, JSON output), then rendered: JSON for done, problem+json for a
//! refusal or the guard's denial (with its reason).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;

use super::Api;
use super::calls::{self, CallReason};
use super::problem::Problem;
use crate::commands::{Caller, Input, Outcome, execute};

/// The routes, each behind the bearer check.
pub fn routes(api: Arc<Api>) -> Router<Arc<Api>> {
    Router::new()
        .route("/api/v1/users", get(users).post(user_add))
        .route("/api/v1/users/{name}", get(user_show).delete(user_delete))
        .route("/api/v1/users/{name}/deactivate", post(user_deactivate))
        .route("/api/v1/users/{name}/activate", post(user_activate))
        .route(
            "/api/v1/users/{name}/resend-temporary-password",
            post(user_resend),
        )
        .route(
            "/api/v1/users/{name}/policies/{policy}",
            put(user_attach).delete(user_detach),
        )
        .route(
            "/api/v1/service-users",
            get(service_users).post(service_user_add),
        )
        .route(
            "/api/v1/service-users/{name}",
            get(service_user_show).delete(service_user_delete),
        )
        .route(
            "/api/v1/service-users/{name}/access-keys",
            get(access_keys).post(access_key_create),
        )
        .route("/api/v1/user-groups", get(groups).post(group_add))
        .route(
            "/api/v1/user-groups/{name}",
            get(group_show).delete(group_delete),
        )
        .route(
            "/api/v1/user-groups/{name}/members/{user}",
            put(group_add_member).delete(group_remove_member),
        )
        .route(
            "/api/v1/user-groups/{name}/policies/{policy}",
            put(group_attach).delete(group_detach),
        )
        .route(
            "/api/v1/support-access",
            get(support_show).put(support_grant).delete(support_revoke),
        )
        .route("/api/v1/roles", get(roles))
        .route("/api/v1/permission-policies", get(policies))
        .route("/api/v1/permission-policies/{name}", get(policy_show))
        .route("/api/v1/sessions", get(sessions))
        .route("/api/v1/sessions/{id}", axum::routing::delete(session_kill))
        .route("/api/v1/audit/events", get(audit_events))
        .route("/api/v1/check", get(check))
        .route_layer(axum::middleware::from_fn_with_state(api, calls::bearer))
}

/// A JSON body, or a problem saying what is wrong with it.
fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, Problem> {
    serde_json::from_slice(bytes).map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            format!("the body is not the JSON this resource takes: {e}"),
        )
    })
}

/// `--name=value`: a value that begins with `-` stays a value.
fn opt(name: &str, value: &str) -> String {
    format!("--{name}={value}")
}

/// Runs one command of the core as `caller` and renders its outcome.
async fn run(api: &Api, caller: &Caller, argv: Vec<String>, created: bool) -> Response {
    let input = Input {
        argv,
        json: true,
        files: BTreeMap::new(),
    };
    render(
        execute(&api.gw, caller, &input, OffsetDateTime::now_utc()).await,
        created,
    )
}

fn render(outcome: Outcome, created: bool) -> Response {
    let (mut response, reason) = match outcome {
        Outcome::Done { stdout, .. } => {
            let body = match serde_json::from_str::<serde_json::Value>(&stdout) {
                Ok(v) => v,
                Err(_) => serde_json::json!({ "output": stdout }),
            };
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            let mut r = (status, body.to_string()).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            // Answers may hold a secret shown once (a new access key).
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            (r, "done".to_string())
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
        Outcome::Refused(m) => (
            Problem::new(StatusCode::CONFLICT, m.clone()).into_response(),
            m,
        ),
        Outcome::NotFound(m) => (
            Problem::new(StatusCode::NOT_FOUND, m.clone()).into_response(),
            m,
        ),
        Outcome::Failed(m) => (
            Problem::new(StatusCode::INTERNAL_SERVER_ERROR, m.clone()).into_response(),
            m,
        ),
    };
    response.extensions_mut().insert(CallReason(reason));
    response
}

fn words(w: &[&str]) -> Vec<String> {
    w.iter().map(|s| s.to_string()).collect()
}

/// A handler running `WORDS… -- NAME` for the `{name}` in the path.
macro_rules! named {
    ($handler:ident, $created:expr, $($word:literal),+) => {
        async fn $handler(
            State(api): State<Arc<Api>>,
            Extension(c): Extension<Caller>,
            Path(name): Path<String>,
        ) -> Response {
            let mut argv: Vec<String> = vec![$($word.to_string()),+];
            argv.push("--".into());
            argv.push(name);
            run(&api, &c, argv, $created).await
        }
    };
}

/// A handler running `WORDS… -- NAME OTHER` for the two names in the path.
macro_rules! named_pair {
    ($handler:ident, $($word:literal),+) => {
        async fn $handler(
            State(api): State<Arc<Api>>,
            Extension(c): Extension<Caller>,
            Path((name, other)): Path<(String, String)>,
        ) -> Response {
            let mut argv: Vec<String> = vec![$($word.to_string()),+];
            argv.push("--".into());
            argv.push(name);
            argv.push(other);
            run(&api, &c, argv, false).await
        }
    };
}

/// A handler running `WORDS…` with nothing from the path.
macro_rules! listing {
    ($handler:ident, $($word:literal),+) => {
        async fn $handler(State(api): State<Arc<Api>>, Extension(c): Extension<Caller>) -> Response {
            run(&api, &c, words(&[$($word),+]), false).await
        }
    };
}

listing!(users, "user", "list");
listing!(service_users, "service-user", "list");
listing!(roles, "role", "list");
listing!(policies, "policy", "list");
listing!(sessions, "session", "list");
named!(user_show, false, "user", "show");
named!(user_delete, false, "user", "delete");
named!(user_deactivate, false, "user", "deactivate");
named!(user_activate, false, "user", "activate");
named!(user_resend, false, "user", "resend-password");
named!(service_user_show, false, "service-user", "show");
named!(service_user_delete, false, "service-user", "delete");
named!(access_keys, false, "service-user", "key", "list");
named!(policy_show, false, "policy", "show");
named!(access_key_create, true, "service-user", "key", "create");

listing!(groups, "group", "list");
listing!(support_show, "support", "show");
listing!(support_revoke, "support", "revoke");
named!(group_show, false, "group", "show");
named!(group_delete, false, "group", "delete");
named_pair!(group_add_member, "group", "add-member");
named_pair!(group_remove_member, "group", "remove-member");
named_pair!(group_attach, "group", "attach");
named_pair!(group_detach, "group", "detach");

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewGroup {
    name: String,
}

async fn group_add(
    State(api): State<Arc<Api>>,
    Extension(c): Extension<Caller>,
    bytes: Bytes,
) -> Response {
    let g: NewGroup = match body(&bytes) {
        Ok(g) => g,
        Err(p) => return p.into_response(),
    };
    let argv = vec!["group".into(), "add".into(), "--".into(), g.name];
    run(&api, &c, argv, true).await
}

/// Support access: until when, and the policies it holds.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SupportGrant {
    until: String,
    #[serde(default)]
    policies: Vec<String>,
}

async fn support_grant(
    State(api): State<Arc<Api>>,
    Extension(c): Extension<Caller>,
    bytes: Bytes,
) -> Response {
    let g: SupportGrant = match body(&bytes) {
        Ok(g) => g,
        Err(p) => return p.into_response(),
    };
    let mut argv = words(&["support", "grant"]);
    argv.push(opt("until", &g.until));
    for p in &g.policies {
        argv.push(opt("policy", p));
    }
    run(&api, &c, argv, false).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    name: String,
    email: String,
    first_name: Option<String>,
    last_name: Option<String>,
    access_end_date: Option<String>,
}

async fn user_add(
    State(api): State<Arc<Api>>,
    Extension(c): Extension<Caller>,
    bytes: Bytes,
) -> Response {
    let u: NewUser = match body(&bytes) {
        Ok(u) => u,
        Err(p) => return p.into_response(),
    };
    let mut argv = words(&["user", "add"]);
    argv.push(opt("email", &u.email));
    if let Some(f) = &u.first_name {
        argv.push(opt("first", f));
    }
    if let Some(l) = &u.last_name {
        argv.push(opt("last", l));
    }
    if let Some(d) = &u.access_end_date {
        argv.push(opt("end-date", d));
    }
    argv.push("--".into());
    argv.push(u.name);
    run(&api, &c, argv, true).await
}

async fn user_attach(
    State(api): State<Arc<Api>>,
    Extension(c): Extension<Caller>,
    Path((name, policy)): Path<(String, String)>,
) -> Response {
    let argv = vec!["user".into(), "attach".into(), "--".into(), name, policy];
    run(&api, &c, argv, false).await
}

async fn user_detach(
    State(api): State<Arc<Api>>,
    Extension(c): Extension<Caller>,
    Path((name, policy)): Path<(String, String)>,
) -> Response {
    let argv = vec!["user".into(), "detach".into(), "--".into(), name, policy];
    run(&api, &c, argv, false).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewServiceUser {
    name: String,
    #[serde(default)]
    description: String,
}

async fn service_user_add(
    State(api): State<Arc<Api>>,
    Extension(c): Extension<Caller>,
    bytes: Bytes,
) -> Response {
    let s: NewServiceUser = match body(&bytes) {
        Ok(s) => s,
        Err(p) => return p.into_response(),
    };
    let argv = vec![
        "service-user".into(),
        "add".into(),
        opt("description", &s.description),
        "--".into(),
        s.name,
    ];
    run(&api, &c, argv, true).await
}

async fn session_kill(
    State(api): State<Arc<Api>>,
    Extension(c): Extension<Caller>,
    Path(id): Path<u64>,
) -> Response {
    let argv = vec!["session".into(), "kill".into(), id.to_string()];
    run(&api, &c, argv, false).await
}

/// `audit query`'s filters.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventQuery {
    since: Option<String>,
    until: Option<String>,
    principal: Option<String>,
    meter: Option<String>,
    code: Option<String>,
    outcome: Option<String>,
    door: Option<String>,
    limit: Option<usize>,
}

async fn audit_events(
    State(api): State<Arc<Api>>,
    Extension(c): Extension<Caller>,
    Query(q): Query<EventQuery>,
) -> Response {
    let mut argv = words(&["audit", "query"]);
    for (name, value) in [
        ("since", &q.since),
        ("until", &q.until),
        ("principal", &q.principal),
        ("meter", &q.meter),
        ("code", &q.code),
        ("outcome", &q.outcome),
        ("door", &q.door),
    ] {
        if let Some(v) = value {
            argv.push(opt(name, v));
        }
    }
    if let Some(l) = q.limit {
        argv.push(opt("limit", &l.to_string()));
    }
    let input = Input {
        argv,
        json: true,
        files: BTreeMap::new(),
    };
    // `audit query --json` prints one event per line: an array here.
    match execute(&api.gw, &c, &input, OffsetDateTime::now_utc()).await {
        Outcome::Done { stdout, stream } => {
            let events: Vec<serde_json::Value> = stdout
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|v| v.get("seq").is_some())
                .collect();
            render(
                Outcome::Done {
                    stdout: serde_json::Value::Array(events).to_string(),
                    stream,
                },
                false,
            )
        }
        other => render(other, false),
    }
}

/// `check`'s question: may PRINCIPAL use PERMISSION (on METER)?
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckQuery {
    principal: String,
    permission: String,
    meter: Option<String>,
}

async fn check(
    State(api): State<Arc<Api>>,
    Extension(c): Extension<Caller>,
    Query(q): Query<CheckQuery>,
) -> Response {
    let mut argv = words(&["check"]);
    argv.push(opt("principal", &q.principal));
    argv.push(opt("permission", &q.permission));
    if let Some(m) = &q.meter {
        argv.push(opt("meter", m));
    }
    run(&api, &c, argv, false).await
}
