//! A security event and its encoding: the draft a caller hands in, the stored
//! event, and the canonical bytes its hash covers (sealed by the writer,
//! re-derived by verify).

use std::collections::BTreeMap;

use ring::digest::SHA256;
use serde::{Deserialize, Serialize};

/// The encoding version of [`SecurityEvent`]; the hash covers the encoding,
/// so a field is never added without a new version.
pub const EVENT_VERSION: u32 = 1;

/// `prev_hash` of the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    Authentication,
    Authorization,
    Session,
    Modbus,
    File,
    Admin,
    Audit,
    System,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Failure,
    Allow,
    Deny,
}

/// One security event exactly as DESIGN §4 fixes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityEvent {
    pub v: u32,
    pub seq: u64,
    /// UTC, microseconds since the epoch.
    pub time: i64,
    pub code: String,
    pub category: Category,
    pub outcome: Outcome,
    pub principal: Option<String>,
    pub source: Option<String>,
    pub door: Option<String>,
    pub meter: Option<String>,
    pub action: Option<String>,
    pub permission: Option<String>,
    pub reason: Option<String>,
    pub detail: BTreeMap<String, String>,
    pub prev_hash: String,
    pub hash: String,
}

/// The canonical encoding the hash covers: every field but `hash`, in this
/// order, as compact JSON. The writer produces the same bytes by splicing
/// (see [`seal`]); verify re-derives them through this struct.
#[derive(Serialize)]
struct Canonical<'a> {
    v: u32,
    seq: u64,
    time: i64,
    #[serde(flatten)]
    fields: DraftFields<'a>,
    prev_hash: &'a str,
}

impl SecurityEvent {
    /// SHA-256 over (previous event's hash, canonical encoding), hex. Derived
    /// here from the fields through [`Canonical`], independently of the
    /// writer's splicing, so verify checks both agree.
    pub fn compute_hash(&self) -> String {
        let fields = DraftFields {
            code: &self.code,
            category: self.category,
            outcome: self.outcome,
            principal: &self.principal,
            source: &self.source,
            door: &self.door,
            meter: &self.meter,
            action: &self.action,
            permission: &self.permission,
            reason: &self.reason,
            detail: &self.detail,
        };
        let body = Canonical {
            v: self.v,
            seq: self.seq,
            time: self.time,
            fields,
            prev_hash: &self.prev_hash,
        };
        let json = serde_json::to_vec(&body).unwrap_or_default();
        let mut ctx = ring::digest::Context::new(&SHA256);
        match hex::decode(&self.prev_hash) {
            Ok(raw) => ctx.update(&raw),
            Err(_) => ctx.update(self.prev_hash.as_bytes()),
        }
        ctx.update(&json);
        hex::encode(ctx.finish().as_ref())
    }
}

/// What a door or the guard wants logged; the log adds seq, time and hashes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventDraft {
    pub code: String,
    pub category: Category,
    pub outcome: Outcome,
    pub principal: Option<String>,
    pub source: Option<String>,
    pub door: Option<String>,
    pub meter: Option<String>,
    pub action: Option<String>,
    pub permission: Option<String>,
    pub reason: Option<String>,
    pub detail: BTreeMap<String, String>,
}

impl EventDraft {
    pub fn new(code: &str, category: Category, outcome: Outcome) -> EventDraft {
        EventDraft {
            code: code.to_string(),
            category,
            outcome,
            principal: None,
            source: None,
            door: None,
            meter: None,
            action: None,
            permission: None,
            reason: None,
            detail: BTreeMap::new(),
        }
    }

    pub fn principal(mut self, p: impl ToString) -> Self {
        self.principal = Some(p.to_string());
        self
    }
    pub fn source(mut self, s: impl ToString) -> Self {
        self.source = Some(s.to_string());
        self
    }
    pub fn door(mut self, d: impl ToString) -> Self {
        self.door = Some(d.to_string());
        self
    }
    pub fn meter(mut self, m: impl ToString) -> Self {
        self.meter = Some(m.to_string());
        self
    }
    pub fn action(mut self, a: impl ToString) -> Self {
        self.action = Some(a.to_string());
        self
    }
    pub fn permission(mut self, p: impl ToString) -> Self {
        self.permission = Some(p.to_string());
        self
    }
    pub fn reason(mut self, r: impl ToString) -> Self {
        self.reason = Some(r.to_string());
        self
    }
    pub fn detail(mut self, k: &str, v: impl ToString) -> Self {
        self.detail.insert(k.to_string(), v.to_string());
        self
    }
}

/// The fields of the canonical encoding that come from the draft, in order.
#[derive(Serialize)]
pub(super) struct DraftFields<'a> {
    code: &'a str,
    category: Category,
    outcome: Outcome,
    principal: &'a Option<String>,
    source: &'a Option<String>,
    door: &'a Option<String>,
    meter: &'a Option<String>,
    action: &'a Option<String>,
    permission: &'a Option<String>,
    reason: &'a Option<String>,
    detail: &'a BTreeMap<String, String>,
}

/// `"code":…,"detail":{…}`: the draft's part of the canonical encoding.
pub(super) fn draft_fields(d: &EventDraft) -> Vec<u8> {
    let f = DraftFields {
        code: &d.code,
        category: d.category,
        outcome: d.outcome,
        principal: &d.principal,
        source: &d.source,
        door: &d.door,
        meter: &d.meter,
        action: &d.action,
        permission: &d.permission,
        reason: &d.reason,
        detail: &d.detail,
    };
    // Serializing plain strings, enums and a BTreeMap cannot fail.
    let mut bytes = serde_json::to_vec(&f).unwrap_or_else(|_| b"{}".to_vec());
    bytes.pop();
    bytes.remove(0);
    bytes
}

/// Seals an event: builds its canonical encoding from the draft's fields,
/// hashes (previous hash, encoding) and returns the stored record (the
/// encoding with `"hash"` appended) and the hash. The bytes equal what
/// `serde_json` makes of [`Canonical`], which `compute_hash` re-derives.
pub(super) fn seal(
    v: u32,
    seq: u64,
    time: i64,
    fields: &[u8],
    prev_hash: &str,
) -> (Vec<u8>, String) {
    let mut bytes = Vec::with_capacity(fields.len() + 200);
    bytes.extend_from_slice(format!("{{\"v\":{v},\"seq\":{seq},\"time\":{time},").as_bytes());
    bytes.extend_from_slice(fields);
    bytes.extend_from_slice(b",\"prev_hash\":\"");
    bytes.extend_from_slice(prev_hash.as_bytes());
    bytes.extend_from_slice(b"\"}");
    let mut ctx = ring::digest::Context::new(&SHA256);
    match hex::decode(prev_hash) {
        Ok(raw) => ctx.update(&raw),
        Err(_) => ctx.update(prev_hash.as_bytes()),
    }
    ctx.update(&bytes);
    let hash = hex::encode(ctx.finish().as_ref());
    bytes.pop();
    bytes.extend_from_slice(b",\"hash\":\"");
    bytes.extend_from_slice(hash.as_bytes());
    bytes.extend_from_slice(b"\"}");
    (bytes, hash)
}
