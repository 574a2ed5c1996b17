//! The Audit page's live tail in a real browser (Debian's headless Chromium
//! through Selenium): a Modbus denial made meanwhile with pymodbus shows up
//! as it happens, and the tail stops the moment the person's access to the
//! log is withdrawn; what is logged after that never reaches the page.

#[path = "common/daemon.rs"]
mod daemon;

#[path = "common/console.rs"]
mod console;

use console::{browse, demo, login, ok, steps, with_temporary};
use serde_json::json;

/// A Master Reset write (FC 6, register 5000) from 127.0.0.1, which the demo
/// maps to `scada-operator` (Operator): denied.
fn master_reset(port: u16, value: u16) -> Vec<String> {
    vec![
        "python3".into(),
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/mb.py").into(),
        port.to_string(),
        json!([{"unit": 1, "op": "write1", "address": 5000, "value": value}]).to_string(),
    ]
}

#[test]
fn the_live_tail_shows_a_modbus_denial_and_stops_when_access_is_withdrawn() {
    let g = demo();
    let modbus = g.modbus;
    let temporary = with_temporary(&g.d, "audrey");
    g.d.mg(&[
        "role",
        "create",
        "LogReader",
        "--permission",
        "Security Logs Access",
    ])
    .ok();
    g.d.mg(&["user", "grant-role", "audrey", "LogReader"]).ok();
    let good = "Harbour lights 7 quietly";
    let withdraw = vec![
        daemon::BIN.to_string(),
        "--socket".into(),
        g.d.socket.display().to_string(),
        "role".into(),
        "edit".into(),
        "LogReader".into(),
        "--remove".into(),
        "Security Logs Access".into(),
    ];
    let r = browse(
        g.port,
        &g.ca,
        steps(vec![
            login("audrey", &temporary),
            vec![
                json!({"fill": {"new": good, "repeat": good}}),
                json!({"click": "Set password"}),
                // The new password is set before the next page is asked for.
                json!({"element": "form.logout"}),
                json!({"go": "/audit"}),
                json!({"click": "Live tail"}),
                json!({"wait_in": ["#tail-status", "live"]}),
                json!({"run": master_reset(modbus, 1115)}),
                json!({"see": "write-registers.deny"}),
                json!({"see": "svc:scada-operator"}),
                json!({"see": "values [1115]"}),
                json!({"shot": "live-tail"}),
                json!({"console_errors": true}),
                // Withdrawn: the tail stops and says why.
                json!({"run": withdraw}),
                json!({"wait_in": ["#tail-status", "stopped:"]}),
                json!({"keep": "status", "id": "tail-status"}),
                json!({"run": master_reset(modbus, 4242)}),
                json!({"wait": 3}),
                json!({"not_see": "values [4242]"}),
            ],
        ]),
    );
    ok(&r);
    let records = r["records"].as_array().unwrap();
    assert_eq!(records[0]["code"], 0, "{}", records[0]);
    assert!(
        records[0]["stdout"]
            .as_str()
            .unwrap()
            .contains("\"exception\": 1"),
        "{}",
        records[0]
    );
    // No script refused, nothing failed (Chromium's favicon probe aside).
    let errors: Vec<&serde_json::Value> = records[1]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| !e.as_str().unwrap_or("").contains("/favicon.ico"))
        .collect();
    assert!(errors.is_empty(), "the browser's console: {errors:?}");
    assert_eq!(records[2]["code"], 0, "{}", records[2]);
    let status = r["kept"]["status"].as_str().unwrap();
    assert!(
        status.contains("Security Logs Access was withdrawn") || status.contains("session ended"),
        "{status}"
    );
    // The second denial happened, and is in the log: only the page missed it.
    let denials =
        g.d.mg(&["audit", "query", "--code", "write-registers.deny"]);
    assert!(denials.ok().stdout.contains("values [4242]"));
    let reads = g.d.mg(&[
        "audit",
        "query",
        "--code",
        "read-audit.allow",
        "--principal",
        "audrey",
        "--door",
        "web",
    ]);
    assert!(reads.ok().stdout.contains("audit tail -n 20 -f"));
}

#[test]
fn without_security_logs_access_there_is_no_live_tail() {
    let g = demo();
    let crew = g.d.demo_password("crew");
    let r = browse(
        g.port,
        &g.ca,
        steps(vec![
            login("crew", &crew),
            vec![
                json!({"fetch": "/audit/live"}),
                json!({"fetch": "/audit/stream"}),
            ],
        ]),
    );
    ok(&r);
    for rec in r["records"].as_array().unwrap() {
        assert_eq!(rec["status"], 403, "{rec}");
        assert!(
            !rec["values"]["content-type"]
                .as_str()
                .unwrap_or("")
                .contains("event-stream"),
            "{rec}"
        );
    }
    let denied = g.d.mg(&[
        "audit",
        "query",
        "--code",
        "read-audit.deny",
        "--principal",
        "crew",
    ]);
    assert!(denied.ok().stdout.contains("audit tail"));
}
