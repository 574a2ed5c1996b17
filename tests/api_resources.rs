//! The API's resources with curl: versions as ETags and If-Match (two
//! writers race, one gets 412), pages that walk 10k users without gaps or
//! repeats, policies managed through it (managed ones refuse with 403),
//! the audit log exported in chunks and verified, and the committed
//! OpenAPI document being the one the code generates.

#[path = "common/daemon.rs"]
mod daemon;
#[path = "common/api.rs"]
mod harness;

use std::collections::BTreeSet;

use harness::{Api, api, json, key_of};

fn token(a: &Api) -> String {
    let (id, secret) = key_of(&a.d, "provisioner");
    let (status, body) = a.token(&id, &secret);
    assert_eq!(status, 200, "{body}");
    json(&body)["access_token"].as_str().unwrap().to_string()
}

/// curl with headers; returns (status, headers, body).
fn call_with(
    a: &Api,
    token: &str,
    method: &str,
    path: &str,
    headers: &[&str],
    body: Option<&str>,
) -> (u16, String, String) {
    let auth = format!("Authorization: Bearer {token}");
    let mut args = vec!["-i", "-X", method, "-H", &auth];
    for h in headers {
        args.extend(["-H", h]);
    }
    if let Some(b) = body {
        args.extend(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    let url = a.url(path);
    args.push(&url);
    let (status, text) = a.curl(&args);
    let text = text.replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    (status, head.to_lowercase(), body.to_string())
}

fn etag(head: &str) -> String {
    head.lines()
        .find_map(|l| l.strip_prefix("etag: "))
        .unwrap_or_else(|| panic!("no ETag in {head}"))
        .trim()
        .to_string()
}

#[test]
fn the_committed_openapi_document_is_the_one_the_code_generates() {
    let generated = metergate::doors::api::openapi_json();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
    if std::env::var_os("METERGATE_WRITE_OPENAPI").is_some() {
        std::fs::write(path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json differs from the code's document: run `METERGATE_WRITE_OPENAPI=1 cargo test --test api_resources the_committed` and commit it"
    );
    let doc: serde_json::Value = serde_json::from_str(&generated).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    // Every operation says how it is authenticated and what a problem is.
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 30, "{}", paths.len());
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            assert!(responses.contains_key("401"), "{method} {path}");
            assert!(op.get("security").is_some(), "{method} {path}");
        }
    }
    // The live daemon serves the same document.
    let a = api();
    let (status, body) = a.curl(&[&a.url("/api/v1/openapi.json")]);
    assert_eq!(status, 200);
    assert_eq!(json(&body), doc);
}

#[test]
fn a_change_with_a_stale_if_match_is_refused_and_of_two_racing_writers_one_wins() {
    let a = api();
    let t = token(&a);
    let (status, _) = a.call(
        &t,
        "POST",
        "/api/v1/users",
        Some(r#"{"name": "ines", "email": "ines@example.net"}"#),
    );
    assert_eq!(status, 201);
    let (status, head, _) = call_with(&a, &t, "GET", "/api/v1/users/ines", &[], None);
    assert_eq!(status, 200);
    let tag = etag(&head);
    // Two writers read the same version and race.
    let writers: Vec<_> = ["Ines", "Inés"]
        .into_iter()
        .map(|first| {
            let (t, tag, url_port, ca) = (t.clone(), tag.clone(), a.port, a.ca.clone());
            std::thread::spawn(move || {
                let out = std::process::Command::new("curl")
                    .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
                    .arg(&ca)
                    .args(["-X", "PATCH", "-H", &format!("Authorization: Bearer {t}")])
                    .args(["-H", &format!("If-Match: {tag}")])
                    .args(["-H", "Content-Type: application/json"])
                    .args(["--data-binary", &format!(r#"{{"first_name": "{first}"}}"#)])
                    .arg(format!("https://127.0.0.1:{url_port}/api/v1/users/ines"))
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout).to_string()
            })
        })
        .collect();
    let mut got: Vec<String> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    got.sort();
    assert_eq!(got, ["200", "412"]);
    // The version moved on: the old tag is stale, the new one works.
    let (status, head, body) = call_with(&a, &t, "GET", "/api/v1/users/ines", &[], None);
    assert_eq!(status, 200);
    let now = etag(&head);
    assert_ne!(now, tag);
    assert_eq!(json(&body)["etag"], now.trim_matches('"'));
    // (If-Match, what) → status
    let table = [
        (tag.as_str(), "the version before", 412),
        ("W/\"2\"", "a weak tag never matches", 412),
        ("\"x\"", "not a version", 412),
        (now.as_str(), "the version now", 200),
        ("*", "any version", 200),
    ];
    for (header, what, want) in table {
        let (status, _, body) = call_with(
            &a,
            &t,
            "PUT",
            "/api/v1/users/ines/access-end-date",
            &[&format!("If-Match: {header}")],
            Some(r#"{"access_end_date": null}"#),
        );
        assert_eq!(status, want, "{what}: {body}");
        if want == 412 {
            assert!(body.contains("\"status\":412"), "{what}: {body}");
        }
    }
    // A new temporary password waits its turn like any change.
    let (status, _, body) = call_with(
        &a,
        &t,
        "POST",
        "/api/v1/users/ines/resend-temporary-password",
        &[&format!("If-Match: {tag}")],
        None,
    );
    assert_eq!(status, 412, "{body}");
    // Deleted and made again under the same name, at version 1 again: a
    // tag of the one before never matches the new one.
    let (_, head, _) = call_with(&a, &t, "GET", "/api/v1/users/ines", &[], None);
    let before = etag(&head);
    for (method, path, body) in [
        ("DELETE", "/api/v1/users/ines", None),
        (
            "POST",
            "/api/v1/users",
            Some(r#"{"name": "ines", "email": "ines@example.net"}"#),
        ),
    ] {
        let (status, text) = a.call(&t, method, path, body);
        assert!(status < 300, "{method} {path}: {text}");
    }
    let (status, _, body) = call_with(
        &a,
        &t,
        "DELETE",
        "/api/v1/users/ines",
        &[&format!("If-Match: {before}")],
        None,
    );
    assert_eq!(status, 412, "{body}");
    // `*` asks that it exists: no support access granted, none to change.
    let (status, _, body) = call_with(
        &a,
        &t,
        "DELETE",
        "/api/v1/support-access",
        &["If-Match: *"],
        None,
    );
    assert_eq!(status, 412, "{body}");
    // The refused change changed nothing, and said so in the log.
    let events =
        a.d.mg(&["--json", "audit", "query", "--code", "admin.refused"])
            .ok()
            .stdout
            .clone();
    assert!(events.contains("read it again"), "{events}");
}

#[test]
fn pages_walk_ten_thousand_users_without_gaps_or_repeats() {
    let mut a = api();
    // 10k users straight into the store of the stopped daemon (10k
    // temporary passwords through argon2 would take minutes).
    a.d.stop();
    let names: BTreeSet<String> = (0..10_000).map(|i| format!("u{i:05}")).collect();
    {
        let store = metergate::store::Store::open(&a.d.state_dir()).unwrap();
        let ops = names
            .iter()
            .map(|n| {
                metergate::store::Op::Put(
                    metergate::store::Entity::User(metergate::model::User::new(
                        n,
                        &format!("{n}@example.net"),
                    )),
                    metergate::store::Expect::New,
                )
            })
            .collect();
        store
            .apply(ops, "local:root", time::OffsetDateTime::now_utc(), &[])
            .unwrap();
    }
    a.d.restart(None);
    let t = token(&a);
    let mut seen: Vec<String> = Vec::new();
    let mut next: Option<String> = None;
    for page in 0..20 {
        let path = match &next {
            None => "/api/v1/users?limit=1000".to_string(),
            Some(c) => format!("/api/v1/users?limit=1000&next={c}"),
        };
        let (status, body) = a.call(&t, "GET", &path, None);
        assert_eq!(status, 200, "{body}");
        let v = json(&body);
        seen.extend(
            v["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u["name"].as_str().unwrap().to_string()),
        );
        // Users come and go during the walk: one added behind the
        // cursor, one ahead of it; the rest are met once each.
        if page == 3 {
            a.d.mg(&["user", "add", "a-new-one", "--email", "n@example.net"])
                .ok();
        }
        next = v["next"].as_str().map(str::to_string);
        if next.is_none() {
            break;
        }
    }
    assert!(next.is_none(), "the walk did not end");
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "a user was met twice");
    for n in &names {
        assert!(unique.contains(n), "{n} was never met");
    }
    // A cursor that is not ours, and a page too large, are 400.
    for path in ["/api/v1/users?next=bm9wZQ", "/api/v1/users?limit=1001"] {
        let (status, body) = a.call(&t, "GET", path, None);
        assert_eq!(status, 400, "{path}: {body}");
    }
}

#[test]
fn custom_policies_and_roles_are_managed_through_the_api_and_managed_policies_refuse() {
    let a = api();
    let t = token(&a);
    let policy = r#"{"name": "north", "description": "north site",
        "statement": [{"effect": "allow", "permissions": ["Data View"], "meters": ["site=north"]},
                      {"effect": "deny", "permissions": ["Master Reset"]}]}"#;
    let (status, body) = a.call(&t, "POST", "/api/v1/permission-policies", Some(policy));
    assert_eq!(status, 201, "{body}");
    let (status, head, body) = call_with(
        &a,
        &t,
        "GET",
        "/api/v1/permission-policies/north",
        &[],
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert!(head.contains("etag: \"1-"), "{head}");
    assert_eq!(json(&body)["statements"].as_array().unwrap().len(), 2);
    // Replaced in place under its tag; the old tag is then stale.
    let tag = etag(&head);
    let edited =
        r#"{"name": "north", "statement": [{"effect": "allow", "permissions": ["Data View"]}]}"#;
    for (want, what) in [(200, "the current tag"), (412, "the tag before the edit")] {
        let (status, _, body) = call_with(
            &a,
            &t,
            "PUT",
            "/api/v1/permission-policies/north",
            &[&format!("If-Match: {tag}")],
            Some(edited),
        );
        assert_eq!(status, want, "{what}: {body}");
    }
    let (_, body) = a.call(&t, "GET", "/api/v1/permission-policies/north", None);
    assert_eq!(json(&body)["version"], 2, "{body}");
    // (method, path, body) → status: managed ones are never changed.
    let table: Vec<(&str, &str, Option<&str>, u16)> = vec![
        (
            "DELETE",
            "/api/v1/permission-policies/Administrator",
            None,
            403,
        ),
        ("DELETE", "/api/v1/permission-policies/ReadOnly", None, 403),
        (
            "POST",
            "/api/v1/permission-policies",
            Some(r#"{"name": "Administrator", "statement": []}"#),
            403,
        ),
        (
            "POST",
            "/api/v1/permission-policies",
            Some(r#"{"name": "bad", "statement": [{"effect": "maybe"}]}"#),
            409,
        ),
        ("DELETE", "/api/v1/permission-policies/nothing", None, 404),
        // Attached to kim: refused unless detached in the same change.
        ("DELETE", "/api/v1/permission-policies/north", None, 409),
        (
            "DELETE",
            "/api/v1/permission-policies/north?detach=maybe",
            None,
            400,
        ),
        (
            "DELETE",
            "/api/v1/permission-policies/north?detach=true",
            None,
            200,
        ),
    ];
    a.d.mg(&["user", "add", "kim", "--email", "kim@example.net"])
        .ok();
    a.d.mg(&["user", "attach", "kim", "north"]).ok();
    for (method, path, body, want) in table {
        let (status, text) = a.call(&t, method, path, body);
        assert_eq!(status, want, "{method} {path}: {text}");
        if want == 409 && method == "DELETE" {
            assert!(
                text.contains("user:kim") && text.contains("detach"),
                "{text}"
            );
        }
    }
    let kim = a.d.mg(&["user", "show", "kim"]);
    assert!(!kim.ok().stdout.contains("north"), "{kim:?}");
    // Roles: create, change, show with its version, delete.
    let (status, body) = a.call(
        &t,
        "POST",
        "/api/v1/roles",
        Some(r#"{"name": "Reader", "permissions": ["Data View"]}"#),
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = a.call(
        &t,
        "PATCH",
        "/api/v1/roles/Reader",
        Some(r#"{"add": ["File System Read-Only Access"]}"#),
    );
    assert_eq!(status, 200, "{body}");
    let (status, head, body) = call_with(&a, &t, "GET", "/api/v1/roles/Reader", &[], None);
    assert_eq!(status, 200);
    assert!(head.contains("etag: \"2-"), "{head}");
    assert!(body.contains("File System Read-Only Access"), "{body}");
    let (status, _) = a.call(&t, "DELETE", "/api/v1/roles/Reader", None);
    assert_eq!(status, 200);
}

#[test]
fn the_audit_log_is_exported_in_chunks_verified_and_checkpointed() {
    let a = api();
    let t = token(&a);
    for i in 0..30 {
        a.d.mg(&["group", "add", &format!("g{i}")]).ok();
    }
    // (format, what every line starts with)
    for (format, start) in [("jsonl", "{"), ("cef", "CEF:0|"), ("rfc5424", "<")] {
        let (status, head, body) = call_with(
            &a,
            &t,
            "GET",
            &format!("/api/v1/audit/export?format={format}"),
            &[],
            None,
        );
        assert_eq!(status, 200, "{format}: {body}");
        assert!(head.contains("transfer-encoding: chunked"), "{head}");
        let lines: Vec<&str> = body.lines().collect();
        assert!(lines.len() >= 30, "{format}: {} lines", lines.len());
        assert!(lines.iter().all(|l| l.starts_with(start)), "{format}");
    }
    // JSON lines run seq 1, 2, 3… without a gap.
    let (_, body) = a.call(&t, "GET", "/api/v1/audit/export", None);
    let seqs: Vec<u64> = body
        .lines()
        .map(|l| json(l)["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    // A page of events goes back in time from the newest.
    let (status, body) = a.call(&t, "GET", "/api/v1/audit/events?limit=5", None);
    assert_eq!(status, 200);
    let page = json(&body);
    let first: Vec<u64> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert!(first.windows(2).all(|w| w[0] > w[1]), "{first:?}");
    let next = page["next"].as_str().unwrap();
    let (_, body) = a.call(
        &t,
        "GET",
        &format!("/api/v1/audit/events?limit=5&next={next}"),
        None,
    );
    let older = json(&body)["data"][0]["seq"].as_u64().unwrap();
    assert!(older < *first.last().unwrap());
    // Verify, checkpoint, public key, and the checkpoint checked back.
    let (status, body) = a.call(&t, "GET", "/api/v1/audit/verify", None);
    assert_eq!(status, 200);
    assert_eq!(json(&body)["ok"], true, "{body}");
    let (status, checkpoint) = a.call(&t, "GET", "/api/v1/audit/checkpoint", None);
    assert_eq!(status, 200, "{checkpoint}");
    let (status, key) = a.call(&t, "GET", "/api/v1/audit/public-key", None);
    assert_eq!(status, 200);
    let key = json(&key)["public_key"].as_str().unwrap().to_string();
    let check = serde_json::json!({"checkpoint": json(&checkpoint), "public_key": key});
    let (status, body) = a.call(&t, "POST", "/api/v1/audit/verify", Some(&check.to_string()));
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["ok"], true, "{body}");
    // Another key did not sign it.
    let wrong = serde_json::json!({"checkpoint": json(&checkpoint), "public_key": "00".repeat(32)});
    let (status, body) = a.call(&t, "POST", "/api/v1/audit/verify", Some(&wrong.to_string()));
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["ok"], false, "{body}");
}

#[test]
fn effective_access_who_can_and_concrete_checks_through_the_api() {
    let mut meters = String::new();
    for (id, site) in [
        ("meter-1", "north"),
        ("meter-2", "north"),
        ("meter-3", "south"),
    ] {
        meters += &format!(
            "\n[[meters]]\nid = \"{id}\"\nprofile = \"ion-sim\"\ntags = {{ site = \"{site}\" }}\n"
        );
    }
    let a = harness::api_with(&meters);
    let t = token(&a);
    let policy = r#"{"name": "north-reads", "statement": [{"effect": "allow", "permissions": ["Data View"], "meters": ["site=north"]}]}"#;
    let (status, body) = a.call(&t, "POST", "/api/v1/permission-policies", Some(policy));
    assert_eq!(status, 201, "{body}");
    a.d.mg(&["user", "add", "kim", "--email", "kim@example.net"])
        .ok();
    a.d.mg(&["user", "attach", "kim", "north-reads"]).ok();
    let get = |path: &str| {
        let (status, body) = a.call(&t, "GET", path, None);
        (status, json(&body))
    };
    // (path) → status, and what the answer holds
    let (status, v) = get("/api/v1/users/kim/permissions");
    assert_eq!(status, 200, "{v}");
    let groups = v["meter_groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{v}");
    assert_eq!(
        groups[0]["meters"],
        serde_json::json!(["meter-1", "meter-2"])
    );
    assert_eq!(groups[0]["permissions"][0]["permission"], "Data View");
    let (status, v) = get("/api/v1/users/kim/permissions?meter=meter-3");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["meter_groups"], serde_json::json!([]), "{v}");
    let (status, v) = get("/api/v1/who-can?permission=Data%20View&meter=meter-1");
    assert_eq!(status, 200, "{v}");
    let who: Vec<&str> = v["allowed"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["principal"].as_str())
        .collect();
    assert!(who.contains(&"user:kim"), "{v}");
    let (status, v) = get("/api/v1/users/nobody/permissions");
    assert_eq!(status, 404, "{v}");
    let (status, v) = get("/api/v1/service-users/provisioner/permissions?as_of=2027-01-01");
    assert_eq!(status, 200, "{v}");
    assert!(
        v["as_of"]
            .as_str()
            .unwrap()
            .starts_with("2027-01-01T00:00:00"),
        "{v}"
    );
    // A concrete Modbus read, allowed on meter-1 and refused on meter-3.
    for (meter, allowed) in [("meter-1", true), ("meter-3", false)] {
        let (status, v) = get(&format!(
            "/api/v1/check?principal=kim&meter={meter}&function=3&register=3000&count=10"
        ));
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["allowed"], allowed, "{meter}: {v}");
        assert_eq!(v["permission"], "Data View", "{v}");
    }
    // A draft policy: answered as if attached, and not created.
    let draft = r#"{"principal": "kim", "permission": "Data View", "meter": "meter-1",
        "with_policy": {"name": "no-reads-1", "statement": [{"effect": "deny", "permissions": ["Data View"], "meters": ["meter-1"]}]}}"#;
    let (status, body) = a.call(&t, "POST", "/api/v1/check", Some(draft));
    assert_eq!(status, 200, "{body}");
    let v = json(&body);
    assert_eq!(v["allowed"], false, "{v}");
    assert_eq!(v["with_policy"], "no-reads-1", "{v}");
    let (status, _) = get("/api/v1/permission-policies/no-reads-1");
    assert_eq!(status, 404);
}
