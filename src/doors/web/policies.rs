//! Settings › Access › Permission Policies: managed and custom policies
//! listed, managed ones read-only, custom ones created and edited with a
//! statement editor (effect, roles and permissions from the lists, meter
//! selectors) that works without JavaScript. The editor writes the policy
//! file the core reads, so its checks and errors are `policy create`'s.

use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Serialize;
use serde_json::Value;

use super::access::{ListQuery, Paged, paged};
use super::pages::{ConfirmPage, apply, denied, json_of, list_of, names, text, urlencode, words};
use super::session::WebSession;
use super::{Frame, Web, may, outcome_error, posted, run_input, signed_in, to_login};
use crate::commands::{Input, Precondition, Resource};
use crate::guard::AdminOp;
use crate::model::Permission;

pub struct PolicyRow {
    pub name: String,
    pub kind: String,
    pub statements: String,
    pub attached_to: String,
}

#[derive(Template)]
#[template(path = "policies.html")]
struct PoliciesPage {
    frame: Frame,
    list: Paged<PolicyRow>,
    can_change: bool,
}

pub async fn list(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    axum::extract::Query(query): axum::extract::Query<ListQuery>,
) -> Response {
    let Some(s) = signed_in(&web, &headers) else {
        return to_login();
    };
    let list = match list_of(&web, &s, words(&["policy", "list"])).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let policies = list
        .iter()
        .map(|p| PolicyRow {
            name: text(p, "name"),
            kind: text(p, "type"),
            statements: text(p, "statements"),
            attached_to: text(p, "attached_to"),
        })
        .collect();
    super::page(PoliciesPage {
        frame: Frame::of(&web, &s),
        list: paged(policies, |p: &PolicyRow| &p.name, &query),
        can_change: may(&web, &s, AdminOp::Change),
    })
}

/// One statement as the page shows it, read-only.
pub struct StatementView {
    pub effect: String,
    pub roles: String,
    pub permissions: String,
    pub meters: String,
    pub conditions: String,
}

#[derive(Template)]
#[template(path = "policy.html")]
struct PolicyPage {
    frame: Frame,
    name: String,
    description: String,
    managed: bool,
    version: String,
    attached_to: Vec<String>,
    statements: Vec<StatementView>,
    can_change: bool,
}

pub async fn show(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let Some(s) = signed_in(&web, &headers) else {
        return to_login();
    };
    let v = match json_of(&web, &s, words(&["policy", "show", "--", &name])).await {
        Ok(v) => v,
        Err(e) => return denied(&web, &s, e),
    };
    let statements = v["statements"]
        .as_array()
        .map(|a| a.iter().map(view).collect())
        .unwrap_or_default();
    super::page(PolicyPage {
        frame: Frame::of(&web, &s),
        description: text(&v, "description"),
        managed: text(&v, "type") == "managed",
        version: text(&v, "version"),
        attached_to: names(&v, "attached_to"),
        statements,
        can_change: may(&web, &s, AdminOp::Change),
        name,
    })
}

fn view(st: &Value) -> StatementView {
    let mut conditions = Vec::new();
    if st["require_mfa"].as_bool() == Some(true) {
        conditions.push("needs a second factor");
    }
    if st["require_recording"].as_bool() == Some(true) {
        conditions.push("needs a recorded session");
    }
    let meters = names(st, "meters");
    StatementView {
        effect: text(st, "effect").to_uppercase(),
        roles: names(st, "roles").join(", "),
        permissions: names(st, "permissions").join(", "),
        meters: if meters.is_empty() {
            "every meter".into()
        } else {
            meters.join(" ")
        },
        conditions: conditions.join(", "),
    }
}

/// One statement in the editor: what is picked.
#[derive(Default)]
pub struct StatementForm {
    /// "allow", "deny", or "" (left out).
    pub effect: String,
    pub roles: Vec<String>,
    pub permissions: Vec<String>,
    pub meters: String,
    pub require_mfa: bool,
    pub require_recording: bool,
}

#[derive(Template)]
#[template(path = "policy_edit.html")]
struct EditorPage {
    frame: Frame,
    /// Where the form posts: `/policies` (new) or `/policies/NAME/edit`.
    action: String,
    creating: bool,
    name: String,
    description: String,
    /// The policy as the editor loaded it (`policy show`'s entity tag): a
    /// save applies only to that one, not to a change made meanwhile.
    etag: String,
    statements: Vec<StatementForm>,
    all_roles: Vec<String>,
    all_permissions: Vec<String>,
}

async fn editor(
    web: &Web,
    s: &WebSession,
    mut page: EditorPage,
    error: Option<String>,
) -> Response {
    page.all_roles = match json_of(web, s, words(&["role", "list"])).await {
        Ok(Value::Array(a)) => a.iter().map(|r| text(r, "name")).collect(),
        _ => Vec::new(),
    };
    page.all_permissions = Permission::ALL
        .iter()
        .map(|p| p.name().to_string())
        .collect();
    // Always one blank statement more, left out unless an effect is picked:
    // adding a statement needs no script.
    page.statements.push(StatementForm::default());
    page.frame = Frame::of(web, s);
    page.frame.error = error;
    super::page(page)
}

fn blank(action: String, creating: bool) -> EditorPage {
    EditorPage {
        frame: super::Frame::anonymous(),
        action,
        creating,
        name: String::new(),
        description: String::new(),
        etag: String::new(),
        statements: Vec::new(),
        all_roles: Vec::new(),
        all_permissions: Vec::new(),
    }
}

pub async fn new(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    let Some(s) = signed_in(&web, &headers) else {
        return to_login();
    };
    // Not offered to whom the guard would refuse it (the POST is decided
    // by the guard in any case).
    if !may(&web, &s, AdminOp::Change) {
        return Redirect::to("/policies").into_response();
    }
    editor(&web, &s, blank("/policies".into(), true), None).await
}

pub async fn edit_form(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let Some(s) = signed_in(&web, &headers) else {
        return to_login();
    };
    // Not offered to whom the guard would refuse the save.
    if !may(&web, &s, AdminOp::Change) {
        return Redirect::to(&format!("/policies/{}", urlencode(&name))).into_response();
    }
    let v = match json_of(&web, &s, words(&["policy", "show", "--", &name])).await {
        Ok(v) => v,
        Err(e) => return denied(&web, &s, e),
    };
    if text(&v, "type") == "managed" {
        s.set_flash(format!("{name} is a managed policy: it cannot be edited"));
        return Redirect::to(&format!("/policies/{}", urlencode(&name))).into_response();
    }
    let mut page = blank(format!("/policies/{}/edit", urlencode(&name)), false);
    page.description = text(&v, "description");
    page.etag = text(&v, "etag");
    page.statements = v["statements"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|st| StatementForm {
                    effect: text(st, "effect"),
                    roles: names(st, "roles"),
                    permissions: names(st, "permissions"),
                    meters: names(st, "meters").join(" "),
                    require_mfa: st["require_mfa"].as_bool() == Some(true),
                    require_recording: st["require_recording"].as_bool() == Some(true),
                })
                .collect()
        })
        .unwrap_or_default();
    page.name = name;
    editor(&web, &s, page, None).await
}

/// The policy file the editor's form describes (the core's format).
#[derive(Serialize)]
struct PolicyFile {
    name: String,
    description: String,
    statement: Vec<StatementFile>,
}

#[derive(Serialize)]
struct StatementFile {
    effect: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    roles: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    permissions: Vec<String>,
    meters: Vec<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    require_mfa: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    require_recording: bool,
}

fn value<'a>(form: &'a [(String, String)], key: &str) -> &'a str {
    form.iter()
        .find(|(k, _)| k == key)
        .map_or("", |(_, v)| v.as_str())
}

/// The statements of a posted editor form: fields `sN.effect`, `sN.role`
/// and `sN.permission` (repeated), `sN.meters`, `sN.mfa`, `sN.recording`.
fn statements(form: &[(String, String)]) -> Vec<StatementForm> {
    let mut out: Vec<StatementForm> = Vec::new();
    for (k, v) in form {
        let Some((n, what)) = k
            .strip_prefix('s')
            .and_then(|r| r.split_once('.'))
            .and_then(|(n, w)| Some((n.parse::<usize>().ok()?, w)))
        else {
            continue;
        };
        // At most as many statements as fields: a forged index cannot make
        // the page allocate more.
        if n >= 64 {
            continue;
        }
        while out.len() <= n {
            out.push(StatementForm::default());
        }
        let st = &mut out[n];
        match what {
            "effect" => st.effect = v.clone(),
            "role" => st.roles.push(v.clone()),
            "permission" => st.permissions.push(v.clone()),
            "meters" => st.meters = v.clone(),
            "mfa" => st.require_mfa = true,
            "recording" => st.require_recording = true,
            _ => {}
        }
    }
    out
}

fn policy_file(name: &str, description: &str, statements: &[StatementForm]) -> PolicyFile {
    PolicyFile {
        name: name.to_string(),
        description: description.to_string(),
        statement: statements
            .iter()
            .filter(|st| st.effect == "allow" || st.effect == "deny")
            .map(|st| {
                let meters: Vec<String> = st
                    .meters
                    .split([',', ' ', '\n', '\t'])
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .map(String::from)
                    .collect();
                StatementFile {
                    effect: st.effect.clone(),
                    roles: st.roles.clone(),
                    permissions: st.permissions.clone(),
                    // Written even when blank: the core then refuses it
                    // ("use [\"*\"]"), so a box cleared by mistake never
                    // widens a statement to every meter.
                    meters,
                    require_mfa: st.require_mfa,
                    require_recording: st.require_recording,
                }
            })
            .collect(),
    }
}

/// Creates (`name` None) or edits a custom policy from the editor's form;
/// on an error the editor comes back with what was entered and the reason.
async fn save(
    web: &Web,
    headers: &HeaderMap,
    name: Option<String>,
    form: Vec<(String, String)>,
) -> Response {
    let s = match posted(web, headers, value(&form, "csrf")) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let creating = name.is_none();
    let name = name.unwrap_or_else(|| value(&form, "name").trim().to_string());
    let description = value(&form, "description").trim().to_string();
    let etag = value(&form, "etag").trim().to_string();
    let sts = statements(&form);
    let file = policy_file(&name, &description, &sts);
    let back = format!("/policies/{}", urlencode(&name));
    let error = match toml::to_string(&file) {
        Err(e) => format!("the policy cannot be written as a policy file: {e}"),
        Ok(text) => {
            let path = "policy-editor.toml";
            let mut argv = vec!["policy".to_string()];
            let mut precondition = None;
            if creating {
                argv.extend(["create".into(), format!("--file={path}")]);
            } else {
                argv.extend(["edit".into(), format!("--file={path}")]);
                argv.extend(["--".into(), name.clone()]);
                // Only the policy the editor loaded; a form without its
                // tag (forged) still needs the policy to exist.
                precondition = Some(Precondition {
                    resource: Resource::Policy,
                    name: name.clone(),
                    tag: (!etag.is_empty()).then(|| etag.clone()),
                });
            }
            let input = Input {
                argv,
                json: true,
                files: [(path.to_string(), text)].into_iter().collect(),
                precondition,
            };
            match outcome_error(run_input(web, &s, &input).await) {
                Ok(_) => {
                    s.set_flash(format!(
                        "policy {name} {}",
                        if creating { "created" } else { "saved" }
                    ));
                    return Redirect::to(&back).into_response();
                }
                Err(e) if e.starts_with("DENY") => return denied(web, &s, e),
                Err(e) => e,
            }
        }
    };
    let action = if creating {
        "/policies".to_string()
    } else {
        format!("{back}/edit")
    };
    let mut page = blank(action, creating);
    page.name = name;
    page.description = description;
    page.etag = etag;
    page.statements = sts.into_iter().filter(|st| !st.effect.is_empty()).collect();
    editor(web, &s, page, Some(format!("error: {error}"))).await
}

pub async fn create(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    save(&web, &headers, None, form).await
}

pub async fn edit(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    save(&web, &headers, Some(name), form).await
}

/// Deleting a custom policy asks first, and offers to detach it from its
/// holders in the same change.
pub async fn delete_confirm(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let Some(s) = signed_in(&web, &headers) else {
        return to_login();
    };
    let back = format!("/policies/{}", urlencode(&name));
    super::page(ConfirmPage {
        frame: Frame::of(&web, &s),
        action: format!("{back}/delete"),
        fields: vec![("detach".into(), "yes".into())],
        question: format!(
            "Delete the custom policy {name}? It is detached from every user, service user and group that holds it."
        ),
        button: "Delete".into(),
        back,
    })
}

pub async fn delete(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let s = match posted(&web, &headers, value(&form, "csrf")) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut argv = words(&["policy", "delete"]);
    if value(&form, "detach") == "yes" {
        argv.push("--detach".into());
    }
    argv.extend(["--".into(), name]);
    apply(&web, &s, argv, "/policies").await
}
