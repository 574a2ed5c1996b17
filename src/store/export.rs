//! Security events in the formats other tools read: JSON lines, ArcSight CEF
//! and syslog RFC 5424 with structured data (what `audit export` writes and
//! the forwarder sends).

use std::fmt::Write;

use super::log::{Category, Outcome, SecurityEvent};

/// Our private enterprise number's SD-ID suffix (the one the mbaps role OID
/// uses, 1.3.6.1.4.1.50316).
const PEN: &str = "50316";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Jsonl,
    Cef,
    Rfc5424,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "jsonl" => Ok(Format::Jsonl),
            "cef" => Ok(Format::Cef),
            "rfc5424" => Ok(Format::Rfc5424),
            other => Err(format!("`{other}`: formats are jsonl, cef, rfc5424")),
        }
    }
}

/// Where the events come from, for the formats that name it.
#[derive(Clone, Debug)]
pub struct Origin {
    /// The host name (RFC 5424 HOSTNAME: printable US-ASCII, no spaces).
    pub host: String,
    pub pid: u32,
    /// Syslog facility (13: log audit).
    pub facility: u8,
}

impl Origin {
    pub fn here(facility: u8) -> Origin {
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .filter(|h| {
                !h.is_empty() && h.len() <= 255 && h.bytes().all(|b| (33..=126).contains(&b))
            })
            .unwrap_or_else(|| "-".into());
        Origin {
            host,
            pid: std::process::id(),
            facility,
        }
    }
}

/// One event in `format`, without a line end.
pub fn format(format: Format, ev: &SecurityEvent, origin: &Origin) -> String {
    match format {
        Format::Jsonl => serde_json::to_string(ev).unwrap_or_default(),
        Format::Cef => cef(ev),
        Format::Rfc5424 => rfc5424(ev, origin),
    }
}

/// Syslog severity: critical for a broken chain, warning for denials and
/// failures, notice for admin changes and cuts, informational otherwise.
pub fn severity(ev: &SecurityEvent) -> u8 {
    if ev.code == "audit.chain-broken" {
        return 2;
    }
    match (ev.outcome, ev.category) {
        (Outcome::Deny | Outcome::Failure, _) => 4,
        (_, Category::Admin | Category::Audit) => 5,
        _ => 6,
    }
}

/// RFC 3339 with microseconds, UTC (RFC 5424 TIMESTAMP).
fn timestamp(us: i64) -> String {
    let t = crate::model::from_micros(us);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// The words the JSON encoding uses (serde's `lowercase`).
fn category_word(c: Category) -> &'static str {
    match c {
        Category::Authentication => "authentication",
        Category::Authorization => "authorization",
        Category::Session => "session",
        Category::Modbus => "modbus",
        Category::File => "file",
        Category::Admin => "admin",
        Category::Audit => "audit",
        Category::System => "system",
    }
}

fn outcome_word(o: Outcome) -> &'static str {
    match o {
        Outcome::Success => "success",
        Outcome::Failure => "failure",
        Outcome::Allow => "allow",
        Outcome::Deny => "deny",
    }
}

/// RFC 5424 PARAM-VALUE: `"`, `\` and `]` escaped.
fn sd_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// RFC 5424 PARAM-NAME: 1–32 printable US-ASCII without `=`, space, `]`, `"`.
fn sd_name(k: &str) -> String {
    let name: String = k
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && !matches!(c, '=' | ']' | '"') {
                c
            } else {
                '_'
            }
        })
        .take(32)
        .collect();
    if name.is_empty() { "_".into() } else { name }
}

/// Control characters in free text shown as `\n`-style escapes so that one
/// event stays one line.
fn one_line(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// `<PRI>1 TIMESTAMP HOST metergate PID CODE [metergate@…][chain@…][detail@…] MSG`.
pub fn rfc5424(ev: &SecurityEvent, origin: &Origin) -> String {
    let pri = u16::from(origin.facility.min(23)) * 8 + u16::from(severity(ev));
    // MSGID: 1–32 printable US-ASCII (codes are).
    let msgid: String = sd_name(&ev.code);
    let mut s = format!(
        "<{pri}>1 {} {} metergate {} {} [metergate@{PEN} v=\"{}\" seq=\"{}\" category=\"{}\" outcome=\"{}\"",
        timestamp(ev.time),
        origin.host,
        origin.pid,
        msgid,
        ev.v,
        ev.seq,
        category_word(ev.category),
        outcome_word(ev.outcome),
    );
    for (k, v) in [
        ("principal", &ev.principal),
        ("source", &ev.source),
        ("door", &ev.door),
        ("meter", &ev.meter),
        ("action", &ev.action),
        ("permission", &ev.permission),
    ] {
        if let Some(v) = v {
            let _ = write!(s, " {k}=\"{}\"", sd_value(v));
        }
    }
    let _ = write!(
        s,
        "][chain@{PEN} prev_hash=\"{}\" hash=\"{}\"]",
        sd_value(&ev.prev_hash),
        sd_value(&ev.hash)
    );
    if !ev.detail.is_empty() {
        let _ = write!(s, "[detail@{PEN}");
        for (k, v) in &ev.detail {
            let _ = write!(s, " {}=\"{}\"", sd_name(k), sd_value(v));
        }
        s.push(']');
    }
    s.push(' ');
    s.push_str(&one_line(&message(ev)));
    s
}

/// A line for people: code, outcome, who, what, where, why.
fn message(ev: &SecurityEvent) -> String {
    let mut m = format!("{} {}", ev.code, outcome_word(ev.outcome));
    if let Some(p) = &ev.principal {
        let _ = write!(m, " principal={p}");
    }
    if let Some(a) = &ev.action {
        let _ = write!(m, " action={a}");
    }
    if let Some(x) = &ev.meter {
        let _ = write!(m, " meter={x}");
    }
    if let Some(r) = &ev.reason {
        let _ = write!(m, ": {r}");
    }
    m
}

/// CEF header field: `\` and `|` escaped.
fn cef_header(v: &str) -> String {
    one_line(v).replace('\\', "\\\\").replace('|', "\\|")
}

/// CEF extension value: `\`, `=` and line ends escaped.
fn cef_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('=', "\\=")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
}

/// `CEF:0|metergate|metergate|VERSION|CODE|NAME|SEVERITY|EXTENSION`.
pub fn cef(ev: &SecurityEvent) -> String {
    let severity = match severity(ev) {
        2 => 10,
        4 => 7,
        5 => 5,
        _ => 3,
    };
    let name = format!(
        "{} {}",
        category_word(ev.category),
        outcome_word(ev.outcome)
    );
    let mut s = format!(
        "CEF:0|metergate|metergate|{}|{}|{}|{severity}|rt={} cat={} outcome={} cn1Label=seq cn1={}",
        env!("CARGO_PKG_VERSION"),
        cef_header(&ev.code),
        cef_header(&name),
        ev.time / 1000,
        cef_value(category_word(ev.category)),
        cef_value(outcome_word(ev.outcome)),
        ev.seq
    );
    for (k, v) in [("suser", &ev.principal), ("act", &ev.action)] {
        if let Some(v) = v {
            let _ = write!(s, " {k}={}", cef_value(v));
        }
    }
    for (i, (label, v)) in [
        ("source", &ev.source),
        ("door", &ev.door),
        ("meter", &ev.meter),
        ("permission", &ev.permission),
    ]
    .into_iter()
    .enumerate()
    {
        if let Some(v) = v {
            let n = i + 1;
            let _ = write!(s, " cs{n}Label={label} cs{n}={}", cef_value(v));
        }
    }
    let _ = write!(
        s,
        " cs5Label=prev_hash cs5={} cs6Label=hash cs6={}",
        ev.prev_hash, ev.hash
    );
    let mut msg = ev.reason.clone().unwrap_or_default();
    if !ev.detail.is_empty() {
        let d = ev
            .detail
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ");
        msg = if msg.is_empty() {
            d
        } else {
            format!("{msg} ({d})")
        };
    }
    if !msg.is_empty() {
        let _ = write!(s, " msg={}", cef_value(&msg));
    }
    s
}

/// RFC 5425 / RFC 6587 octet counting: `LEN SP MSG`.
pub fn octet_counted(msg: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(msg.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(msg.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn event() -> SecurityEvent {
        let mut detail = BTreeMap::new();
        detail.insert("count".to_string(), "3".to_string());
        detail.insert("we ird=key".to_string(), "a]b\"c\\".to_string());
        SecurityEvent {
            v: 1,
            seq: 42,
            time: 1_795_000_000_123_456,
            code: "write-registers.deny".into(),
            category: Category::Modbus,
            outcome: Outcome::Deny,
            principal: Some("user:al|ice=x".into()),
            source: Some("127.0.0.1:5000".into()),
            door: Some("modbus".into()),
            meter: Some("m1".into()),
            action: Some("write 40001".into()),
            permission: Some("Register Write".into()),
            reason: Some("no role\nnext line".into()),
            detail,
            prev_hash: "aa".into(),
            hash: "bb".into(),
        }
    }

    #[test]
    fn rfc5424_has_header_escaped_structured_data_and_one_line() {
        let o = Origin {
            host: "gw".into(),
            pid: 7,
            facility: 13,
        };
        let line = rfc5424(&event(), &o);
        // facility 13 * 8 + warning (4)
        assert!(
            line.starts_with("<108>1 2026-11-18T11:06:40.123456Z ")
                && line.contains(
                    " gw metergate 7 write-registers.deny [metergate@50316 v=\"1\" seq=\"42\""
                ),
            "{line}"
        );
        assert!(
            line.contains(r#"[detail@50316 count="3" we_ird_key="a\]b\"c\\"]"#),
            "{line}"
        );
        assert!(
            line.contains(r#"[chain@50316 prev_hash="aa" hash="bb"]"#),
            "{line}"
        );
        assert!(
            !line.contains('\n') && line.ends_with("no role\\nnext line"),
            "{line}"
        );
    }

    #[test]
    fn cef_escapes_header_and_extension() {
        let line = cef(&event());
        assert!(line.starts_with("CEF:0|metergate|metergate|"), "{line}");
        assert!(
            line.contains("|write-registers.deny|modbus deny|7|"),
            "{line}"
        );
        assert!(line.contains(r"suser=user:al|ice\=x"), "{line}");
        assert!(line.contains("cn1Label=seq cn1=42"), "{line}");
        assert!(line.contains(r"msg=no role\nnext line (count\=3"), "{line}");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn words_match_the_json_encoding() {
        for c in [
            Category::Authentication,
            Category::Authorization,
            Category::Session,
            Category::Modbus,
            Category::File,
            Category::Admin,
            Category::Audit,
            Category::System,
        ] {
            assert_eq!(serde_json::to_value(c).unwrap(), category_word(c));
        }
        for o in [
            Outcome::Success,
            Outcome::Failure,
            Outcome::Allow,
            Outcome::Deny,
        ] {
            assert_eq!(serde_json::to_value(o).unwrap(), outcome_word(o));
        }
    }

    #[test]
    fn octet_counting_counts_bytes_not_chars() {
        let mut out = Vec::new();
        octet_counted("é", &mut out);
        assert_eq!(out, b"2 \xc3\xa9");
    }
}
