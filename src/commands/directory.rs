//! `directory status|export|import`: where identities and policies live, and
//! moving them between a gateway's own store and the shared PostgreSQL one.

use super::*;

/// What `directory export` writes: every record as stored.
#[derive(Serialize, Deserialize)]
struct Export {
    format: String,
    version: u32,
    /// Second factors left out (their secrets are never exported).
    #[serde(default)]
    second_factors_left_out: Vec<String>,
    records: Vec<ExportRecord>,
}

#[derive(Serialize, Deserialize)]
struct ExportRecord {
    key: String,
    value: serde_json::Value,
}

const FORMAT: &str = "metergate-directory";
/// An export larger than this is refused at import (a directory of 100k
/// users is about 60 MB).
const MAX_IMPORT: usize = 256 * 1024 * 1024;

pub(super) async fn run(
    ctx: &Gateway,
    caller: &Caller,
    cmd: &DirectoryCommand,
    req: &Input,
    now: OffsetDateTime,
) -> Result<Done, CommandError> {
    match cmd {
        DirectoryCommand::Status => Ok(Done::show(status(ctx, req.json, now))),
        DirectoryCommand::Export => export(ctx).await,
        DirectoryCommand::Import { file, replace } => {
            let text = req.files.get(file).ok_or_else(|| {
                CommandError::Refused(format!("{file}: the file did not come with the command"))
            })?;
            import(ctx, caller, text, *replace, now).await
        }
    }
}

fn status(ctx: &Gateway, json: bool, now: OffsetDateTime) -> String {
    let store = ctx.guard.store();
    let dir = store.directory();
    let counts = json!({
        "users": dir.users.len(),
        "service_users": dir.service_users.len(),
        "groups": dir.groups.len(),
        "roles": dir.roles.len(),
        "policies": dir.policies.len(),
    });
    let Some(pg) = store.shared_directory() else {
        if json {
            return format!(
                "{}\n",
                json!({ "backend": "local", "path": store.state_dir().join("store").display().to_string(), "holds": counts })
            );
        }
        return format!(
            "backend: local (sled in {})\nholds: {} users, {} service users, {} groups, {} roles, {} policies\n",
            store.state_dir().join("store").display(),
            dir.users.len(),
            dir.service_users.len(),
            dir.groups.len(),
            dir.roles.len(),
            dir.policies.len()
        );
    };
    let h = pg.health();
    let version = store.directory_version();
    let now_us = micros(now);
    let ago = |at: i64| -> String {
        if at == 0 {
            "never".into()
        } else {
            format!("{:.1}s ago", (now_us - at).max(0) as f64 / 1e6)
        }
    };
    if json {
        return format!(
            "{}\n",
            json!({
                "backend": "postgres",
                "server": pg.server(),
                "gateway": pg.gateway(),
                "reachable": h.reachable,
                "since": when(Some(h.since)),
                "last_contact": when(Some(h.last_contact)),
                "error": h.error,
                "snapshot_version": version,
                "server_version": h.remote_version,
                "lag_versions": h.remote_version.saturating_sub(version),
                "gateways": h.gateways.iter().map(|g| json!({
                    "name": g.name, "seen": when(Some(g.seen)), "version": g.version,
                })).collect::<Vec<_>>(),
                "holds": counts,
            })
        );
    }
    let mut out = String::new();
    let _ = writeln!(out, "backend: postgres ({})", pg.server());
    let _ = writeln!(out, "gateway: {}", pg.gateway());
    if h.reachable {
        let _ = writeln!(
            out,
            "server: reachable (last contact {})",
            ago(h.last_contact)
        );
    } else {
        let _ = writeln!(
            out,
            "server: UNREACHABLE since {} ({}); deciding on the last snapshot, admin changes refused",
            ago(h.since),
            h.error.as_deref().unwrap_or("no contact yet")
        );
    }
    let _ = writeln!(
        out,
        "snapshot version: {version} (server at {}, lag {} changes)",
        h.remote_version,
        h.remote_version.saturating_sub(version)
    );
    let _ = writeln!(
        out,
        "holds: {} users, {} service users, {} groups, {} roles, {} policies",
        dir.users.len(),
        dir.service_users.len(),
        dir.groups.len(),
        dir.roles.len(),
        dir.policies.len()
    );
    let _ = writeln!(out, "gateways seen:");
    for g in &h.gateways {
        let _ = writeln!(
            out,
            "  {:<24} version {:<8} seen {}",
            g.name,
            g.version,
            ago(g.seen)
        );
    }
    out
}

async fn export(ctx: &Gateway) -> Result<Done, CommandError> {
    let guard = ctx.guard.clone();
    let records = tokio::task::spawn_blocking(move || guard.store().export_records())
        .await
        .map_err(|e| CommandError::Failed(format!("reading the directory: {e}")))??;
    let mut left_out = Vec::new();
    let mut out = Vec::with_capacity(records.len());
    for (key, value) in records {
        let Some(value) = value else { continue };
        let key = String::from_utf8(key)
            .map_err(|_| CommandError::Failed("a directory key is not UTF-8".into()))?;
        let mut value: serde_json::Value = serde_json::from_slice(&value)
            .map_err(|e| CommandError::Failed(format!("record {key}: {e}")))?;
        // A second factor's secret is a secret in clear: it never leaves.
        if key.starts_with("user/")
            && let Some(obj) = value.as_object_mut()
            && obj.get("mfa").is_some_and(|m| !m.is_null())
        {
            obj.insert("mfa".into(), serde_json::Value::Null);
            left_out.push(key.trim_start_matches("user/").to_string());
        }
        out.push(ExportRecord { key, value });
    }
    let export = Export {
        format: FORMAT.into(),
        version: 1,
        second_factors_left_out: left_out,
        records: out,
    };
    let text = serde_json::to_string_pretty(&export)
        .map_err(|e| CommandError::Failed(format!("writing the export: {e}")))?;
    Ok(Done::streaming(
        String::new(),
        Stream::Text(Arc::new(format!("{text}\n"))),
    ))
}

async fn import(
    ctx: &Gateway,
    caller: &Caller,
    text: &str,
    replace: bool,
    now: OffsetDateTime,
) -> Result<Done, CommandError> {
    if text.len() > MAX_IMPORT {
        return refused(format!(
            "the export is {} bytes, more than {MAX_IMPORT}",
            text.len()
        ));
    }
    let export: Export = serde_json::from_str(text)
        .map_err(|e| CommandError::Refused(format!("not a directory export: {e}")))?;
    if export.format != FORMAT || export.version != 1 {
        return refused(format!(
            "not a directory export this version reads (format `{}` version {})",
            export.format, export.version
        ));
    }
    let mut records = Vec::with_capacity(export.records.len());
    for r in &export.records {
        let value = serde_json::to_vec(&r.value)
            .map_err(|e| CommandError::Refused(format!("record {}: {e}", r.key)))?;
        records.push((r.key.clone().into_bytes(), Some(value)));
    }
    let _one = ctx.guard.one_change_at_a_time().await;
    let guard = ctx.guard.clone();
    let dir = tokio::task::spawn_blocking(move || guard.import_directory(records, replace, now))
        .await
        .map_err(|e| CommandError::Failed(format!("importing: {e}")))??;
    let mut msg = format!(
        "imported: {} users, {} service users, {} groups, {} roles, {} policies",
        dir.users.len(),
        dir.service_users.len(),
        dir.groups.len(),
        dir.roles.len(),
        dir.policies.len()
    );
    if !export.second_factors_left_out.is_empty() {
        let _ = write!(
            msg,
            "\nsecond factors to enrol again (their secrets are never exported): {}",
            export.second_factors_left_out.join(", ")
        );
    }
    let _ = caller;
    Ok(Done::changed(
        format!("{msg}\n"),
        format!(
            "directory imported{} ({} records)",
            if replace { " (replacing)" } else { "" },
            export.records.len()
        ),
    ))
}
