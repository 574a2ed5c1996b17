//! The directory as resources, mirroring the product's Settings › Access
//! pages: users, service users and their access keys, user groups, roles,
//! permission policies and support access. Each handler only translates:
//! path, query and body become the words of one admin command, which the
//! core runs as the CLI and the shell run it. Versioned resources answer
//! with an `ETag` and take `If-Match` on every change.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Api;
use super::render::{Key, PageQuery, argv, body, if_match, opt, outcome, page, query, run};
use crate::commands::{Caller, Resource};

/// A list: one page of what `WORDS --json` prints, ordered by `key`.
macro_rules! list {
    ($(#[$m:meta])* $h:ident, $key:expr, [$($w:literal),+]) => {
        $(#[$m])*
        pub async fn $h(
            State(api): State<Arc<Api>>,
            Extension(c): Extension<Caller>,
            RawQuery(raw): RawQuery,
        ) -> Response {
            let q: PageQuery = match query(raw.as_deref()) {
                Ok(q) => q,
                Err(p) => return p.into_response(),
            };
            page(outcome(&api, &c, argv(&[$($w),+], &[]), None).await, &q, $key)
        }
    };
}

/// `WORDS -- NAME` for the `{name}` of the path; `If-Match` on that NAME.
macro_rules! one {
    ($(#[$m:meta])* $h:ident, $res:expr, $created:expr, [$($w:literal),+]) => {
        $(#[$m])*
        pub async fn $h(
            State(api): State<Arc<Api>>,
            Extension(c): Extension<Caller>,
            headers: HeaderMap,
            Path(name): Path<String>,
        ) -> Response {
            let pre = or_problem!(if_match(&headers, $res, &name));
            run(&api, &c, argv(&[$($w),+], &[&name]), pre, $created).await
        }
    };
}

/// `WORDS -- NAME OTHER` for the two names of the path; `If-Match` on NAME.
macro_rules! two {
    ($(#[$m:meta])* $h:ident, $res:expr, [$($w:literal),+]) => {
        $(#[$m])*
        pub async fn $h(
            State(api): State<Arc<Api>>,
            Extension(c): Extension<Caller>,
            headers: HeaderMap,
            Path((name, other)): Path<(String, String)>,
        ) -> Response {
            let pre = or_problem!(if_match(&headers, $res, &name));
            run(&api, &c, argv(&[$($w),+], &[&name, &other]), pre, false).await
        }
    };
}

/// The value, or the handler answers with its problem.
macro_rules! or_problem {
    ($result:expr) => {
        match $result {
            Ok(v) => v,
            Err(p) => return p.into_response(),
        }
    };
}

// ---- users ----

list!(
    #[utoipa::path(get, path = "/api/v1/users", tag = "users", summary = "Users: name, email, status, access end date",
        params(PageQuery), responses((status = 200, body = super::openapi::Page)))]
    users,
    Key::Name("name"),
    ["user", "list"]
);
one!(
    #[utoipa::path(get, path = "/api/v1/users/{name}", tag = "users", summary = "One user, with policies, groups and version (ETag)",
        params(("name" = String, Path)), responses((status = 200, body = super::openapi::Object)))]
    user_show,
    Resource::User,
    false,
    ["user", "show"]
);
one!(
    #[utoipa::path(delete, path = "/api/v1/users/{name}", tag = "users", summary = "Delete a user",
        params(("name" = String, Path)), responses((status = 200, body = super::openapi::Message)))]
    user_delete,
    Resource::User,
    false,
    ["user", "delete"]
);
one!(
    #[utoipa::path(post, path = "/api/v1/users/{name}/deactivate", tag = "users", summary = "Deactivate: ends the user's live sessions",
        params(("name" = String, Path)), responses((status = 200, body = super::openapi::Message)))]
    user_deactivate,
    Resource::User,
    false,
    ["user", "deactivate"]
);
one!(
    #[utoipa::path(post, path = "/api/v1/users/{name}/activate", tag = "users", summary = "Activate",
        params(("name" = String, Path)), responses((status = 200, body = super::openapi::Message)))]
    user_activate,
    Resource::User,
    false,
    ["user", "activate"]
);
one!(
    #[utoipa::path(post, path = "/api/v1/users/{name}/resend-temporary-password", tag = "users",
        summary = "A new temporary password, shown once",
        params(("name" = String, Path)), responses((status = 200, body = super::openapi::TemporaryPassword)))]
    user_resend,
    Resource::User,
    false,
    ["user", "resend-password"]
);
one!(
    #[utoipa::path(post, path = "/api/v1/users/{name}/unlock", tag = "users", summary = "Lift a password lockout",
        params(("name" = String, Path)), responses((status = 200, body = super::openapi::Message)))]
    user_unlock,
    Resource::User,
    false,
    ["user", "unlock"]
);
two!(
    #[utoipa::path(put, path = "/api/v1/users/{name}/policies/{policy}", tag = "users", summary = "Attach a permission policy",
        params(("name" = String, Path), ("policy" = String, Path)), responses((status = 200, body = super::openapi::Message)))]
    user_attach,
    Resource::User,
    ["user", "attach"]
);
two!(
    #[utoipa::path(delete, path = "/api/v1/users/{name}/policies/{policy}", tag = "users", summary = "Detach a permission policy",
        params(("name" = String, Path), ("policy" = String, Path)), responses((status = 200, body = super::openapi::Message)))]
    user_detach,
    Resource::User,
    ["user", "detach"]
);

/// A new user; the temporary password comes back once.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    name: String,
    email: String,
    first_name: Option<String>,
    last_name: Option<String>,
    /// YYYY-MM-DD, tomorrow or later.
    access_end_date: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/users", tag = "users", summary = "Create a user (the temporary password is shown once)",
    request_body = NewUser, responses((status = 201, body = super::openapi::TemporaryPassword)))]
pub async fn user_add(
    State(api): State<Arc<Api>>,
    Extension(c): Extension<Caller>,
    bytes: Bytes,
) -> Response {
    let u = or_problem!(body::<NewUser>(&bytes));
    let mut words = argv(&["user", "add"], &[]);
    words.push(opt("email", &u.email));
    if let Some(f) = &u.first_name {
        words.push(opt("first", f));
    }
    if let Some(l) = &u.last_name {
        words.push(opt("last", l));
    }
    if let Some(d) = &u.access_end_date {
        words.push(opt("end-date", d));
    }
    words.extend(["--".to_string(), u.name]);
    run(&api, &c, words, None, true).await
}

/// What may change about a user (fields left out stay as they are).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserChange {
    email: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
}

#[utoipa::path(patch, path = "/api/v1/users/{name}", tag = "users", summary = "Change email or names",
    params(("name" = String, Path)), request_body = UserChange, responses((status = 200, body = super::openapi::Message)))]
pub async fn user_edit(
    State(api): State<Arc<Api>>,
    Extension(c): Extension<Caller>,
    headers: HeaderMap,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Response {
    let pre = or_problem!(if_match(&headers, Resource::User, &name));
    let u = or_problem!(body::<UserChange>(&bytes));
    let mut words = argv(&["user", "edit"], &[]);
    for (flag, v) in [
        ("email", &u.email),
        ("first", &u.first_name),
        ("last", &u.last_name),
    ] {
        if let Some(v) = v {
            words.push(opt(flag, v));
        }
    }
    words.extend(["--".to_string(), name]);
    run(&api, &c, words, pre, false).await
}

/// The day access ends (00:00 UTC), or null for none.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndDate {
    access_end_date: Option<String>,
}

#[utoipa::path(put, path = "/api/v1/users/{name}/access-end-date", tag = "users", summary = "Set or clear the access end date",
    params(("name" = String, Path)), request_body = EndDate, responses((status = 200, body = super::openapi::Message)))]
pub async fn user_end_date(
    State(api): State<Arc<Api>>,
    Extension(c): Extension<Caller>,
    headers: HeaderMap,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Response {
    let pre = or_problem!(if_match(&headers, Resource::User, &name));
    let d = or_problem!(body::<EndDate>(&bytes));
    let date = d.access_end_date.unwrap_or_else(|| "none".into());
    let words = argv(&["user", "set-end-date"], &[&name, &date]);
    run(&api, &c, words, pre, false).await
}

// ---- service users and access keys ----

list!(
    #[utoipa::path(get, path = "/api/v1/service-users", tag = "service-users", summary = "Service users",
        params(PageQuery), responses((status = 200, body = super::openapi::Page)))]
    service_users,
    Key::Name("name"),
    ["service-user", "list"]
);
one!(
    #[utoipa::path(get, path = "/api/v1/service-users/{name}", tag = "service-users", summary = "One service user (ETag)",
        params(("name" = String, Path)), responses((status = 200, body = super::openapi::Object)))]
    service_user_show,
    Resource::ServiceUser,
    false,
    ["service-user", "show"]
);
one!(
    #[utoipa::path(delete, path = "/api/v1/service-users/{name}", tag = "service-users", summary = "Delete a service user",
        params(("name" = String, Path)), responses((status = 200, body = super::openapi::Message)))]
    service_user_delete,
    Resource::ServiceUser,
    false,
    ["service-user", "delete"]
);
one!(
    #[utoipa::path(post, path = "/api/v1/service-users/{name}/deactivate", tag = "service-users", summary = "Deactivate (its tokens die at once)",
        params(("name" = String, Path)), responses((status = 200, body = super::openapi::Message)))]
    service_user_deactivate,
    Resource::ServiceUser,
    false,
    ["service-user", "deactivate"]
);
one!(
    #[utoipa::path(post, path = "/api/v1/service-users/{name}/activate", tag = "service-users", summary = "Activate",
        params(("name" = String, Path)), responses((status = 200, body = super::openapi::Message)))]
    service_user_activate,
    Resource::ServiceUser,
    false,
    ["service-user", "activate"]
);
two!(
    #[utoipa::path(put, path = "/api/v1/service-users/{name}/policies/{policy}", tag = "service-users", summary = "Attach a permission policy",
        params(("name" = String, Path), ("policy" = String, Path)), responses((status = 200, body = super::openapi::Message)))]
    service_user_attach,
    Resource::ServiceUser,
    ["service-user", "attach"]
);
two!(
    #[utoipa::path(delete, path = "/api/v1/service-users/{name}/policies/{policy}", tag = "service-users", summary = "Detach a permission policy",
        params(("name" = String, Path), ("policy" = String, Path)), responses((status = 200, body = super::openapi::Message)))]
    service_user_detach,
    Resource::ServiceUser,
    ["service-user", "detach"]
);

#[utoipa::path(get, path = "/api/v1/service-users/{name}/access-keys", tag = "service-users", summary = "A service user's access keys (never their secrets)",
    params(("name" = String, Path), PageQuery), responses((status = 200, body = super::openapi::Page)))]
pub async fn access_keys(
    State(api): State<Arc<Api>>,
    Extension(c): Extension<Caller>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let q: PageQuery = match query(raw.as_deref()) {
        Ok(q) => q,
        Err(p) => return p.into_response(),
    };
    let words = argv(&["service-user", "key", "list"], &[&name]);
    page(outcome(&api, &c, words, None).await, &q, Key::Name("id"))
}

one!(
    #[utoipa::path(post, path = "/api/v1/service-users/{name}/access-keys", tag = "service-users", summary = "A new access key: the secret is shown only in this answer",
        params(("name" = String, Path)), responses((status = 201, body = super::openapi::NewAccessKey)))]
    access_key_create,
    Resource::ServiceUser,
    true,
    ["service-user", "key", "create"]
);
two!(
    #[utoipa::path(post, path = "/api/v1/service-users/{name}/access-keys/{key_id}/deactivate", tag = "service-users", summary = "Deactivate an access key (its tokens die at once)",
        params(("name" = String, Path), ("key_id" = String, Path)), responses((status = 200, body = super::openapi::Message)))]
    access_key_deactivate,
    Resource::ServiceUser,
    ["service-user", "key", "deactivate"]
);
two!(
    #[utoipa::path(delete, path = "/api/v1/service-users/{name}/access-keys/{key_id}", tag = "service-users", summary = "Delete an access key (its tokens die at once)",
        params(("name" = String, Path), ("key_id" = String, Path)), responses((status = 200, body = super::openapi::Message)))]
    access_key_delete,
    Resource::ServiceUser,
    ["service-user", "key", "delete"]
);

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewServiceUser {
    name: String,
    #[serde(default)]
    description: String,
}

#[utoipa::path(post, path = "/api/v1/service-users", tag = "service-users", summary = "Create a service user",
    request_body = NewServiceUser, responses((status = 201, body = super::openapi::Message)))]
pub async fn service_user_add(
    State(api): State<Arc<Api>>,
    Extension(c): Extension<Caller>,
    bytes: Bytes,
) -> Response {
    let s = or_problem!(body::<NewServiceUser>(&bytes));
    let mut words = argv(&["service-user", "add"], &[]);
    words.push(opt("description", &s.description));
    words.extend(["--".to_string(), s.name]);
    run(&api, &c, words, None, true).await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceUserChange {
    description: String,
}

#[utoipa::path(patch, path = "/api/v1/service-users/{name}", tag = "service-users", summary = "Change the description",
    params(("name" = String, Path)), request_body = ServiceUserChange, responses((status = 200, body = super::openapi::Message)))]
pub async fn service_user_edit(
    State(api): State<Arc<Api>>,
    Extension(c): Extension<Caller>,
    headers: HeaderMap,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Response {
    let pre = or_problem!(if_match(&headers, Resource::ServiceUser, &name));
    let s = or_problem!(body::<ServiceUserChange>(&bytes));
    let mut words = argv(&["service-user", "edit"], &[]);
    words.push(opt("description", &s.description));
    words.extend(["--".to_string(), name]);
    run(&api, &c, words, pre, false).await
}

// ---- user groups ----

list!(
    #[utoipa::path(get, path = "/api/v1/user-groups", tag = "user-groups", summary = "User groups",
        params(PageQuery), responses((status = 200, body = super::openapi::Page)))]
    groups,
    Key::Name("name"),
    ["group", "list"]
);
one!(
    #[utoipa::path(get, path = "/api/v1/user-groups/{name}", tag = "user-groups", summary = "One group, members and policies (ETag)",
        params(("name" = String, Path)), responses((status = 200, body = super::openapi::Object)))]
    group_show,
    Resource::Group,
    false,
    ["group", "show"]
);
one!(
    #[utoipa::path(delete, path = "/api/v1/user-groups/{name}", tag = "user-groups", summary = "Delete a group",
        params(("name" = String, Path)), responses((status = 200, body = super::openapi::Message)))]
    group_delete,
    Resource::Group,
    false,
    ["group", "delete"]
);
two!(
    #[utoipa::path(put, path = "/api/v1/user-groups/{name}/members/{user}", tag = "user-groups", summary = "Add a member",
        params(("name" = String, Path), ("user" = String, Path)), responses((status = 200, body = super::openapi::Message)))]
    group_add_member,
    Resource::Group,
    ["group", "add-member"]
);
two!(
    #[utoipa::path(delete, path = "/api/v1/user-groups/{name}/members/{user}", tag = "user-groups", summary = "Remove a member",
        params(("name" = String, Path), ("user" = String, Path)), responses((status = 200, body = super::openapi::Message)))]
    group_remove_member,
    Resource::Group,
    ["group", "remove-member"]
);
two!(
    #[utoipa::path(put, path = "/api/v1/user-groups/{name}/policies/{policy}", tag = "user-groups", summary = "Attach a permission policy",
        params(("name" = String, Path), ("policy" = String, Path)), responses((status = 200, body = super::openapi::Message)))]
    group_attach,
    Resource::Group,
    ["group", "attach"]
);
two!(
    #[utoipa::path(delete, path = "/api/v1/user-groups/{name}/policies/{policy}", tag = "user-groups", summary = "Detach a permission policy",
        params(("name" = String, Path), ("policy" = String, Path)), responses((status = 200, body = super::openapi::Message)))]
    group_detach,
    Resource::Group,
    ["group", "detach"]
);

/// A group's name.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupName {
    name: String,
}

#[utoipa::path(post, path = "/api/v1/user-groups", tag = "user-groups", summary = "Create a group",
    request_body = GroupName, responses((status = 201, body = super::openapi::Message)))]
pub async fn group_add(
    State(api): State<Arc<Api>>,
    Extension(c): Extension<Caller>,
    bytes: Bytes,
) -> Response {
    let g = or_problem!(body::<GroupName>(&bytes));
    run(&api, &c, argv(&["group", "add"], &[&g.name]), None, true).await
}

#[utoipa::path(patch, path = "/api/v1/user-groups/{name}", tag = "user-groups", summary = "Rename a group",
    params(("name" = String, Path)), request_body = GroupName, responses((status = 200, body = super::openapi::Message)))]
pub async fn group_rename(
    State(api): State<Arc<Api>>,
    Extension(c): Extension<Caller>,
    headers: HeaderMap,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Response {
    let pre = or_problem!(if_match(&headers, Resource::Group, &name));
    let g = or_problem!(body::<GroupName>(&bytes));
    let words = argv(&["group", "rename"], &[&name, &g.name]);
    run(&api, &c, words, pre, false).await
}

// ---- roles ----

list!(
    #[utoipa::path(get, path = "/api/v1/roles", tag = "roles", summary = "Roles and their permissions",
        params(PageQuery), responses((status = 200, body = super::openapi::Page)))]
    roles,
    Key::Name("name"),
    ["role", "list"]
);
one!(
    #[utoipa::path(get, path = "/api/v1/roles/{name}", tag = "roles", summary = "One role (ETag)",
        params(("name" = String, Path)), responses((status = 200, body = super::openapi::Object)))]
    role_show,
    Resource::Role,
    false,
    ["role", "show"]
);
one!(
    #[utoipa::path(delete, path = "/api/v1/roles/{name}", tag = "roles", summary = "Delete a role",
        params(("name" = String, Path)), responses((status = 200, body = super::openapi::Message)))]
    role_delete,
    Resource::Role,
    false,
    ["role", "delete"]
);

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRole {
    name: String,
    /// Permission names (DESIGN §3), e.g. "Data View".
    #[serde(default)]
    permissions: Vec<String>,
    #[serde(default)]
    description: String,
}

#[utoipa::path(post, path = "/api/v1/roles", tag = "roles", summary = "Create a role",
    request_body = NewRole, responses((status = 201, body = super::openapi::Message)))]
pub async fn role_create(
    State(api): State<Arc<Api>>,
    Extension(c): Extension<Caller>,
    bytes: Bytes,
) -> Response {
    let r = or_problem!(body::<NewRole>(&bytes));
    let mut words = argv(&["role", "create"], &[]);
    for p in &r.permissions {
        words.push(opt("permission", p));
    }
    words.push(opt("description", &r.description));
    words.extend(["--".to_string(), r.name]);
    run(&api, &c, words, None, true).await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleChange {
    #[serde(default)]
    add: Vec<String>,
    #[serde(default)]
    remove: Vec<String>,
    description: Option<String>,
}

#[utoipa::path(patch, path = "/api/v1/roles/{name}", tag = "roles", summary = "Add or remove permissions, change the description",
    params(("name" = String, Path)), request_body = RoleChange, responses((status = 200, body = super::openapi::Message)))]
pub async fn role_edit(
    State(api): State<Arc<Api>>,
    Extension(c): Extension<Caller>,
    headers: HeaderMap,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Response {
    let pre = or_problem!(if_match(&headers, Resource::Role, &name));
    let r = or_problem!(body::<RoleChange>(&bytes));
    let mut words = argv(&["role", "edit"], &[]);
    for p in &r.add {
        words.push(opt("add", p));
    }
    for p in &r.remove {
        words.push(opt("remove", p));
    }
    if let Some(d) = &r.description {
        words.push(opt("description", d));
    }
    words.extend(["--".to_string(), name]);
    run(&api, &c, words, pre, false).await
}

// ---- permission policies ----

list!(
    #[utoipa::path(get, path = "/api/v1/permission-policies", tag = "permission-policies", summary = "Managed and custom policies",
        params(PageQuery), responses((status = 200, body = super::openapi::Page)))]
    policies,
    Key::Name("name"),
    ["policy", "list"]
);
one!(
    #[utoipa::path(get, path = "/api/v1/permission-policies/{name}", tag = "permission-policies", summary = "One policy and where it is attached (ETag)",
        params(("name" = String, Path)), responses((status = 200, body = super::openapi::Object)))]
    policy_show,
    Resource::Policy,
    false,
    ["policy", "show"]
);
/// `?detach=true`: detach an attached policy from every holder first.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeletePolicy {
    /// Detach it from every holder in the same change (the answer names
    /// them); without it an attached policy is refused (409).
    #[serde(default)]
    detach: bool,
}

#[utoipa::path(delete, path = "/api/v1/permission-policies/{name}", tag = "permission-policies", summary = "Delete a custom policy (a managed one: 403; an attached one: 409 unless ?detach=true)",
    params(("name" = String, Path), DeletePolicy), responses((status = 200, body = super::openapi::Message)))]
pub async fn policy_delete(
    State(api): State<Arc<Api>>,
    Extension(c): Extension<Caller>,
    headers: HeaderMap,
    Path(name): Path<String>,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> Response {
    let q: DeletePolicy = or_problem!(super::render::query(raw.as_deref()));
    let pre = or_problem!(if_match(&headers, Resource::Policy, &name));
    let mut words = argv(&["policy", "delete"], &[]);
    if q.detach {
        words.push("--detach".into());
    }
    words.push("--".into());
    words.push(name);
    run(&api, &c, words, pre, false).await
}

/// A statement of a policy, as in a policy file (DESIGN §3).
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyStatement {
    /// "allow" or "deny".
    effect: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    permissions: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    roles: Vec<String>,
    /// Meter selectors; left out: every meter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    meters: Option<Vec<String>>,
    /// What this allow statement gives may be used only by a session that
    /// proved a second factor.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    require_mfa: bool,
    /// What this allow statement gives may be used only in a session that
    /// is being recorded.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    require_recording: bool,
}

/// A custom policy: the policy file's fields as JSON.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPolicy {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    statement: Vec<PolicyStatement>,
}

#[utoipa::path(post, path = "/api/v1/permission-policies", tag = "permission-policies", summary = "Create a custom policy (a managed name: 403)",
    request_body = NewPolicy, responses((status = 201, body = super::openapi::Message)))]
pub async fn policy_create(
    State(api): State<Arc<Api>>,
    Extension(c): Extension<Caller>,
    bytes: Bytes,
) -> Response {
    let p = or_problem!(body::<NewPolicy>(&bytes));
    let words = vec!["policy".into(), "create".into()];
    policy_file(&api, &c, &p, words, None, true, "file").await
}

#[utoipa::path(put, path = "/api/v1/permission-policies/{name}", tag = "permission-policies",
    summary = "Replace a custom policy's description and statements (its version goes up; a managed one: 403)",
    params(("name" = String, Path)), request_body = NewPolicy, responses((status = 200, body = super::openapi::Message)))]
pub async fn policy_edit(
    State(api): State<Arc<Api>>,
    Extension(c): Extension<Caller>,
    headers: HeaderMap,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Response {
    let pre = or_problem!(if_match(&headers, Resource::Policy, &name));
    let p = or_problem!(body::<NewPolicy>(&bytes));
    let words = vec!["policy".into(), "edit".into(), "--".into(), name];
    policy_file(&api, &c, &p, words, pre, false, "file").await
}

/// `WORDS --FLAG=F` with the policy written as the file F: the core reads
/// policies in the file format, so the checks and errors are those of
/// `policy create --file`.
pub(super) async fn policy_file(
    api: &Api,
    c: &Caller,
    p: &NewPolicy,
    mut words: Vec<String>,
    precondition: Option<crate::commands::Precondition>,
    created: bool,
    flag: &str,
) -> Response {
    let text = or_problem!(toml::to_string(p).map_err(|e| {
        super::problem::Problem::new(
            axum::http::StatusCode::BAD_REQUEST,
            format!("the policy cannot be written as a policy file: {e}"),
        )
    }));
    let file = "request-body.toml";
    // Options before `--`: the name (edit) stays last.
    let at = words.iter().position(|w| w == "--").unwrap_or(words.len());
    words.insert(at, opt(flag, file));
    let input = crate::commands::Input {
        argv: words,
        json: true,
        files: [(file.to_string(), text)].into_iter().collect(),
        precondition,
    };
    super::render::render(
        crate::commands::execute(&api.gw, c, &input, time::OffsetDateTime::now_utc()).await,
        created,
    )
}

// ---- support access ----

#[utoipa::path(get, path = "/api/v1/support-access", tag = "support-access", summary = "Whether support access is granted, until when (ETag)",
    responses((status = 200, body = super::openapi::Object)))]
pub async fn support_show(
    State(api): State<Arc<Api>>,
    Extension(c): Extension<Caller>,
) -> Response {
    run(&api, &c, argv(&["support", "show"], &[]), None, false).await
}

#[utoipa::path(delete, path = "/api/v1/support-access", tag = "support-access", summary = "Revoke support access (ends its sessions)",
    responses((status = 200, body = super::openapi::Message)))]
pub async fn support_revoke(
    State(api): State<Arc<Api>>,
    Extension(c): Extension<Caller>,
    headers: HeaderMap,
) -> Response {
    let pre = or_problem!(if_match(&headers, Resource::Support, "support"));
    run(&api, &c, argv(&["support", "revoke"], &[]), pre, false).await
}

/// Support access: until when, and the policies it holds (default
/// Administrator).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SupportGrant {
    /// YYYY-MM-DD, tomorrow or later.
    until: String,
    #[serde(default)]
    policies: Vec<String>,
}

#[utoipa::path(put, path = "/api/v1/support-access", tag = "support-access", summary = "Grant support access until a date",
    request_body = SupportGrant, responses((status = 200, body = super::openapi::Message)))]
pub async fn support_grant(
    State(api): State<Arc<Api>>,
    Extension(c): Extension<Caller>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let pre = or_problem!(if_match(&headers, Resource::Support, "support"));
    let g = or_problem!(body::<SupportGrant>(&bytes));
    let mut words = argv(&["support", "grant"], &[]);
    words.push(opt("until", &g.until));
    for p in &g.policies {
        words.push(opt("policy", p));
    }
    run(&api, &c, words, pre, false).await
}
