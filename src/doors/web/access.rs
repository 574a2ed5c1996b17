//! Settings › Access beyond Users: User Groups, Service Users (with access
//! keys), Roles and Support Access. As on the Users page, each form is one
//! command of the core as this session, and what the guard would refuse is
//! not offered.

use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::Value;

use super::pages::{
    ConfirmPage, SecretPage, apply, apply_input, denied, json_of, list_of, names, text, urlencode,
    words,
};
use super::session::WebSession;
use super::{Frame, Web, may, posted, signed_in, to_login};
use crate::guard::AdminOp;
use crate::model::Permission;

/// The names in a list command's answer (`policy list`, `group list`).
async fn listed(web: &Web, s: &WebSession, what: &str) -> Vec<String> {
    match json_of(web, s, words(&[what, "list"])).await {
        Ok(Value::Array(a)) => a.iter().map(|x| text(x, "name")).collect(),
        _ => Vec::new(),
    }
}

/// Rows a list page shows at most.
const PAGE: usize = 50;

/// A list's search (`q`, in the name) and page (`after`: the last name of
/// the page before), as on the Users page.
#[derive(Deserialize, Default)]
pub struct ListQuery {
    #[serde(default)]
    pub q: String,
    #[serde(default)]
    pub after: String,
}

/// One page of a list: the rows, how many match, the next page's cursor.
pub struct Paged<T> {
    pub rows: Vec<T>,
    pub total: usize,
    pub next: Option<String>,
    pub q: String,
}

/// Sorts `rows` by name, filters them by the search and cuts one page.
pub fn paged<T>(mut rows: Vec<T>, name: impl Fn(&T) -> &str, query: &ListQuery) -> Paged<T> {
    rows.sort_by(|a, b| name(a).cmp(name(b)));
    let q = query.q.trim().to_lowercase();
    let matching: Vec<T> = rows
        .into_iter()
        .filter(|r| q.is_empty() || name(r).to_lowercase().contains(&q))
        .collect();
    let total = matching.len();
    let mut rows: Vec<T> = matching
        .into_iter()
        .filter(|r| query.after.is_empty() || name(r) > query.after.as_str())
        .take(PAGE + 1)
        .collect();
    let next = (rows.len() > PAGE).then(|| name(&rows[PAGE - 1]).to_string());
    rows.truncate(PAGE);
    Paged {
        rows,
        total,
        next,
        q: query.q.clone(),
    }
}

/// A form's fields; each may be left out.
#[derive(Deserialize, Default)]
pub struct Fields {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    new_name: String,
    #[serde(default)]
    policy: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    key: String,
}

// ---- user groups ----

pub struct GroupRow {
    pub name: String,
    pub members: usize,
    pub policies: String,
}

#[derive(Template)]
#[template(path = "groups.html")]
struct GroupsPage {
    frame: Frame,
    list: Paged<GroupRow>,
    can_change: bool,
}

pub async fn groups(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    axum::extract::Query(query): axum::extract::Query<ListQuery>,
) -> Response {
    let Some(s) = signed_in(&web, &headers) else {
        return to_login();
    };
    let list = match list_of(&web, &s, words(&["group", "list"])).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let groups = list
        .iter()
        .map(|g| GroupRow {
            name: text(g, "name"),
            members: g["members"].as_array().map_or(0, Vec::len),
            policies: names(g, "policies").join(", "),
        })
        .collect();
    super::page(GroupsPage {
        frame: Frame::of(&web, &s),
        list: paged(groups, |g: &GroupRow| &g.name, &query),
        can_change: may(&web, &s, AdminOp::Change),
    })
}

pub async fn add_group(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Form(f): Form<Fields>,
) -> Response {
    let s = match posted(&web, &headers, &f.csrf) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let name = f.name.trim();
    let back = format!("/groups/{}", urlencode(name));
    apply(&web, &s, words(&["group", "add", "--", name]), &back).await
}

#[derive(Template)]
#[template(path = "group.html")]
struct GroupPage {
    frame: Frame,
    name: String,
    created: String,
    modified: String,
    modified_by: String,
    members: Vec<String>,
    policies: Vec<String>,
    all_policies: Vec<String>,
    can_change: bool,
}

pub async fn group(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let Some(s) = signed_in(&web, &headers) else {
        return to_login();
    };
    let v = match json_of(&web, &s, words(&["group", "show", "--", &name])).await {
        Ok(v) => v,
        Err(e) => return denied(&web, &s, e),
    };
    let can_change = may(&web, &s, AdminOp::Change);
    let all_policies = if can_change {
        listed(&web, &s, "policy").await
    } else {
        Vec::new()
    };
    super::page(GroupPage {
        frame: Frame::of(&web, &s),
        created: text(&v, "created"),
        modified: text(&v, "last_modified"),
        modified_by: text(&v, "last_modified_by"),
        members: names(&v, "members"),
        policies: names(&v, "policies"),
        all_policies,
        can_change,
        name,
    })
}

/// Deleting a group, or a policy or member from it, asks first.
pub async fn group_confirm(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Path((name, action)): Path<(String, String)>,
    axum::extract::Query(f): axum::extract::Query<Fields>,
) -> Response {
    let Some(s) = signed_in(&web, &headers) else {
        return to_login();
    };
    let (fields, question, button) = match action.as_str() {
        "delete" => (
            vec![],
            format!("Delete the user group {name}? Its members stay users and lose its policies."),
            "Delete",
        ),
        "detach" => (
            vec![("policy".to_string(), f.policy.clone())],
            format!(
                "Delete the permission policy {} from user group {name}?",
                f.policy
            ),
            "Delete",
        ),
        "remove-member" => (
            vec![("user".to_string(), f.user.clone())],
            format!("Remove {} from user group {name}?", f.user),
            "Remove",
        ),
        _ => return super::not_found().await,
    };
    let back = format!("/groups/{}", urlencode(&name));
    super::page(ConfirmPage {
        frame: Frame::of(&web, &s),
        action: format!("{back}/{action}"),
        fields,
        question,
        button: button.into(),
        back,
    })
}

pub async fn group_action(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Path((name, action)): Path<(String, String)>,
    Form(f): Form<Fields>,
) -> Response {
    let s = match posted(&web, &headers, &f.csrf) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut back = format!("/groups/{}", urlencode(&name));
    let argv = match action.as_str() {
        "rename" => {
            back = format!("/groups/{}", urlencode(f.new_name.trim()));
            words(&["group", "rename", "--", &name, f.new_name.trim()])
        }
        "delete" => {
            back = "/groups".into();
            words(&["group", "delete", "--", &name])
        }
        "add-member" => words(&["group", "add-member", "--", &name, f.user.trim()]),
        "remove-member" => words(&["group", "remove-member", "--", &name, &f.user]),
        "attach" => words(&["group", "attach", "--", &name, &f.policy]),
        "detach" => words(&["group", "detach", "--", &name, &f.policy]),
        _ => return super::not_found().await,
    };
    apply(&web, &s, argv, &back).await
}

// ---- service users ----

pub struct ServiceUserRow {
    pub name: String,
    pub status: String,
    pub keys: String,
    pub policies: String,
}

#[derive(Template)]
#[template(path = "service_users.html")]
struct ServiceUsersPage {
    frame: Frame,
    list: Paged<ServiceUserRow>,
    can_change: bool,
}

pub async fn service_users(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    axum::extract::Query(query): axum::extract::Query<ListQuery>,
) -> Response {
    let Some(s) = signed_in(&web, &headers) else {
        return to_login();
    };
    let list = match list_of(&web, &s, words(&["service-user", "list"])).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let service_users = list
        .iter()
        .map(|x| ServiceUserRow {
            name: text(x, "name"),
            status: text(x, "status"),
            keys: text(x, "keys"),
            policies: names(x, "policies").join(", "),
        })
        .collect();
    super::page(ServiceUsersPage {
        frame: Frame::of(&web, &s),
        list: paged(service_users, |u: &ServiceUserRow| &u.name, &query),
        can_change: may(&web, &s, AdminOp::Change),
    })
}

pub async fn add_service_user(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Form(f): Form<Fields>,
) -> Response {
    let s = match posted(&web, &headers, &f.csrf) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let name = f.name.trim();
    let argv = vec![
        "service-user".to_string(),
        "add".into(),
        format!("--description={}", f.description.trim()),
        "--".into(),
        name.to_string(),
    ];
    apply(
        &web,
        &s,
        argv,
        &format!("/service-users/{}", urlencode(name)),
    )
    .await
}

pub struct KeyRow {
    pub id: String,
    pub status: String,
    pub created: String,
}

#[derive(Template)]
#[template(path = "service_user.html")]
struct ServiceUserPage {
    frame: Frame,
    name: String,
    unique_id: String,
    description: String,
    status: String,
    created: String,
    created_by: String,
    modified: String,
    modified_by: String,
    last_login: String,
    policies: Vec<String>,
    keys: Vec<KeyRow>,
    all_policies: Vec<String>,
    can_change: bool,
}

pub async fn service_user(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let Some(s) = signed_in(&web, &headers) else {
        return to_login();
    };
    let v = match json_of(&web, &s, words(&["service-user", "show", "--", &name])).await {
        Ok(v) => v,
        Err(e) => return denied(&web, &s, e),
    };
    let keys = match json_of(
        &web,
        &s,
        words(&["service-user", "key", "list", "--", &name]),
    )
    .await
    {
        Ok(Value::Array(a)) => a
            .iter()
            .map(|k| KeyRow {
                id: text(k, "id"),
                status: text(k, "status"),
                created: text(k, "created"),
            })
            .collect(),
        _ => Vec::new(),
    };
    let can_change = may(&web, &s, AdminOp::Change);
    let all_policies = if can_change {
        listed(&web, &s, "policy").await
    } else {
        Vec::new()
    };
    super::page(ServiceUserPage {
        frame: Frame::of(&web, &s),
        unique_id: text(&v, "unique_id"),
        description: text(&v, "description"),
        status: text(&v, "status"),
        created: text(&v, "created"),
        created_by: text(&v, "created_by"),
        modified: text(&v, "last_modified"),
        modified_by: text(&v, "last_modified_by"),
        last_login: text(&v, "last_login"),
        policies: names(&v, "policies"),
        keys,
        all_policies,
        can_change,
        name,
    })
}

/// Deleting a service user, a policy from it or one of its keys asks first.
pub async fn service_user_confirm(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Path((name, action)): Path<(String, String)>,
    axum::extract::Query(f): axum::extract::Query<Fields>,
) -> Response {
    let Some(s) = signed_in(&web, &headers) else {
        return to_login();
    };
    let (fields, question) = match action.as_str() {
        "delete" => (
            vec![],
            format!("Delete the service user {name}? Its access keys stop working at once."),
        ),
        "detach" => (
            vec![("policy".to_string(), f.policy.clone())],
            format!(
                "Delete the permission policy {} from service user {name}?",
                f.policy
            ),
        ),
        "key-delete" => (
            vec![("key".to_string(), f.key.clone())],
            format!("Delete the access key {} of service user {name}?", f.key),
        ),
        _ => return super::not_found().await,
    };
    let back = format!("/service-users/{}", urlencode(&name));
    super::page(ConfirmPage {
        frame: Frame::of(&web, &s),
        action: format!("{back}/{action}"),
        fields,
        question,
        button: "Delete".into(),
        back,
    })
}

pub async fn service_user_action(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Path((name, action)): Path<(String, String)>,
    Form(f): Form<Fields>,
) -> Response {
    let s = match posted(&web, &headers, &f.csrf) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut back = format!("/service-users/{}", urlencode(&name));
    let argv = match action.as_str() {
        "edit" => vec![
            "service-user".to_string(),
            "edit".into(),
            format!("--description={}", f.description.trim()),
            "--".into(),
            name.clone(),
        ],
        "delete" => {
            back = "/service-users".into();
            words(&["service-user", "delete", "--", &name])
        }
        "activate" | "deactivate" => words(&["service-user", &action, "--", &name]),
        "attach" => words(&["service-user", "attach", "--", &name, &f.policy]),
        "detach" => words(&["service-user", "detach", "--", &name, &f.policy]),
        "key-deactivate" => words(&["service-user", "key", "deactivate", "--", &name, &f.key]),
        "key-delete" => words(&["service-user", "key", "delete", "--", &name, &f.key]),
        "key-create" => {
            let argv = words(&["service-user", "key", "create", "--", &name]);
            return match json_of(&web, &s, argv).await {
                Ok(v) => super::page(SecretPage {
                    frame: Frame::of(&web, &s),
                    title: format!("New access key {} for {name}", text(&v, "id")),
                    text: "The secret, shown this once (the gateway keeps only its hash):".into(),
                    secret: text(&v, "secret"),
                    back,
                }),
                Err(e) if e.starts_with("DENY") => denied(&web, &s, e),
                Err(e) => {
                    s.set_flash(format!("error: {e}"));
                    Redirect::to(&back).into_response()
                }
            };
        }
        _ => return super::not_found().await,
    };
    apply(&web, &s, argv, &back).await
}

// ---- roles ----

pub struct RoleRow {
    pub name: String,
    pub description: String,
    /// The role as the page showed it: a save applies to that one only.
    pub etag: String,
    /// The 18 permissions in order: (name, held, field name).
    pub permissions: Vec<(String, bool, String)>,
}

#[derive(Template)]
#[template(path = "roles.html")]
struct RolesPage {
    frame: Frame,
    roles: Vec<RoleRow>,
    all: Vec<(String, bool, String)>,
    can_change: bool,
}

/// A permission's form field: its name with spaces as `_` (no escaping to
/// get wrong; [`Permission::ALL`] maps it back).
fn field(p: Permission) -> String {
    p.name().replace(' ', "_")
}

pub async fn roles(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    let Some(s) = signed_in(&web, &headers) else {
        return to_login();
    };
    let list = match list_of(&web, &s, words(&["role", "list"])).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let roles = list
        .iter()
        .map(|r| {
            let held = names(r, "permissions");
            RoleRow {
                name: text(r, "name"),
                description: text(r, "description"),
                etag: text(r, "etag"),
                permissions: Permission::ALL
                    .iter()
                    .map(|p| {
                        (
                            p.name().to_string(),
                            held.iter().any(|h| h == p.name()),
                            field(*p),
                        )
                    })
                    .collect(),
            }
        })
        .collect();
    super::page(RolesPage {
        frame: Frame::of(&web, &s),
        roles,
        all: Permission::ALL
            .iter()
            .map(|p| (p.name().to_string(), false, field(*p)))
            .collect(),
        can_change: may(&web, &s, AdminOp::Change),
    })
}

/// The permissions ticked in a form (fields named by [`field`]).
fn ticked(form: &[(String, String)]) -> Vec<Permission> {
    Permission::ALL
        .into_iter()
        .filter(|p| form.iter().any(|(k, _)| *k == field(*p)))
        .collect()
}

fn value<'a>(form: &'a [(String, String)], key: &str) -> &'a str {
    form.iter()
        .find(|(k, _)| k == key)
        .map_or("", |(_, v)| v.as_str())
}

/// Creates a role with the ticked permissions.
pub async fn add_role(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let s = match posted(&web, &headers, value(&form, "csrf")) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut argv = vec![
        "role".to_string(),
        "create".into(),
        format!("--description={}", value(&form, "description").trim()),
    ];
    for p in ticked(&form) {
        argv.push(format!("--permission={}", p.name()));
    }
    argv.extend(["--".into(), value(&form, "name").trim().to_string()]);
    apply(&web, &s, argv, "/roles").await
}

/// Sets a role's permissions to those ticked: one `role edit` adding and
/// removing the difference.
pub async fn edit_role(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let s = match posted(&web, &headers, value(&form, "csrf")) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let held: Vec<String> = match json_of(&web, &s, words(&["role", "show", "--", &name])).await {
        Ok(v) => v["permissions"]
            .as_array()
            .map(|a| a.iter().map(|p| text(p, "permission")).collect())
            .unwrap_or_default(),
        Err(e) if e.starts_with("DENY") => return denied(&web, &s, e),
        Err(e) => {
            s.set_flash(format!("error: {e}"));
            return Redirect::to("/roles").into_response();
        }
    };
    let want = ticked(&form);
    let mut argv = vec!["role".to_string(), "edit".into()];
    for p in Permission::ALL {
        let has = held.iter().any(|h| h == p.name());
        match (has, want.contains(&p)) {
            (false, true) => argv.push(format!("--add={}", p.name())),
            (true, false) => argv.push(format!("--remove={}", p.name())),
            _ => {}
        }
    }
    if argv.len() == 2 {
        s.set_flash(format!("role {name}: nothing to change"));
        return Redirect::to("/roles").into_response();
    }
    argv.extend(["--".into(), name.clone()]);
    // Only the role the page showed: a change made meanwhile is not undone
    // by a stale page (a form without the tag still needs the role).
    let etag = value(&form, "etag").trim();
    let input = crate::commands::Input {
        argv,
        json: true,
        precondition: Some(crate::commands::Precondition {
            resource: crate::commands::Resource::Role,
            name,
            tag: (!etag.is_empty()).then(|| etag.to_string()),
        }),
        ..Default::default()
    };
    apply_input(&web, &s, &input, "/roles").await
}

// ---- support access ----

#[derive(Template)]
#[template(path = "support.html")]
struct SupportPage {
    frame: Frame,
    granted: bool,
    status: String,
    until: String,
    policies: Vec<String>,
    all_policies: Vec<String>,
    /// The earliest end date a grant takes (tomorrow, UTC).
    tomorrow: String,
    can_change: bool,
}

pub async fn support(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    let Some(s) = signed_in(&web, &headers) else {
        return to_login();
    };
    let v = match json_of(&web, &s, words(&["support", "show"])).await {
        Ok(v) => v,
        Err(e) => return denied(&web, &s, e),
    };
    let can_change = may(&web, &s, AdminOp::Change);
    let all_policies = if can_change {
        listed(&web, &s, "policy").await
    } else {
        Vec::new()
    };
    let now = time::OffsetDateTime::now_utc();
    let tomorrow = (now.date() + time::Duration::days(1)).to_string();
    let granted = v["granted"].as_bool().unwrap_or(false);
    // Granted and not yet at its end: ACTIVE (a grant past its end date
    // lets nobody in).
    let ends = v["access_ends"].as_str().and_then(|t| {
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
    });
    let active = granted && ends.is_some_and(|e| e > now);
    super::page(SupportPage {
        frame: Frame::of(&web, &s),
        granted,
        status: if active { "ACTIVE" } else { "INACTIVE" }.into(),
        until: text(&v, "end_date"),
        policies: names(&v, "policies"),
        all_policies,
        tomorrow,
        can_change,
    })
}

/// Revoking support access asks first.
pub async fn support_confirm(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Path(action): Path<String>,
) -> Response {
    let Some(s) = signed_in(&web, &headers) else {
        return to_login();
    };
    if action != "revoke" {
        return super::not_found().await;
    }
    super::page(ConfirmPage {
        frame: Frame::of(&web, &s),
        action: "/support/revoke".into(),
        fields: vec![],
        question: "Revoke support access now? Support's live sessions end.".into(),
        button: "Revoke".into(),
        back: "/support".into(),
    })
}

pub async fn support_action(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Path(action): Path<String>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let s = match posted(&web, &headers, value(&form, "csrf")) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let until = format!("--until={}", value(&form, "until").trim());
    let argv = match action.as_str() {
        "grant" => {
            let mut argv = vec!["support".to_string(), "grant".into(), until];
            for (k, v) in &form {
                if k == "policy" {
                    argv.push(format!("--policy={v}"));
                }
            }
            // With no policy the core would grant Administrator (its
            // default): someone who unpicked every policy meant less.
            if argv.len() == 3 {
                s.set_flash("error: pick at least one permission policy for support access");
                return Redirect::to("/support").into_response();
            }
            argv
        }
        "update" => vec!["support".to_string(), "update".into(), until],
        "attach" | "detach" => words(&["support", &action, "--", value(&form, "policy")]),
        "revoke" => words(&["support", "revoke"]),
        _ => return super::not_found().await,
    };
    apply(&web, &s, argv, "/support").await
}
