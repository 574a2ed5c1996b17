//! Schemathesis (PyPI), a tester nobody here wrote, against a live gateway
//! from the committed OpenAPI document: every operation, positive and
//! negative data, a bounded number of examples each. Must hold: no 5xx,
//! answers that conform to the document (status, content type, headers,
//! schema), invalid data refused, and undocumented methods answered 405.
//! Then what schemathesis does not send: malformed JSON and a huge body,
//! each answered by a 4xx problem.

#[path = "common/daemon.rs"]
mod daemon;
#[path = "common/api.rs"]
mod harness;

use std::process::Command;

use harness::{api_with, json, key_of, s};

const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,negative_data_rejection,unsupported_method,missing_required_header";

#[test]
fn schemathesis_finds_no_server_error_and_no_answer_off_the_document() {
    // A rate above what schemathesis sends: 429s would hide the rest.
    let a = api_with("requests_per_second = 2000\n");
    let (id, secret) = key_of(&a.d, "provisioner");
    let (status, body) = a.token(&id, &secret);
    assert_eq!(status, 200, "{body}");
    let token = json(&body)["access_token"].as_str().unwrap().to_string();
    let doc = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
    let work = tempfile::tempdir().unwrap();
    for mode in ["positive", "negative"] {
        let out = Command::new("schemathesis")
            .current_dir(work.path())
            .args(["run", doc, "--url", &a.url(""), "--tls-verify", s(&a.ca)])
            .args(["--header", &format!("Authorization: Bearer {token}")])
            .args(["--mode", mode, "--max-examples", "8", "--checks", CHECKS])
            // One worker: with two, schemathesis 4.32.5 on CPython 3.11
            // now and then fails in its own schema walk ("AST constructor
            // recursion depth mismatch"), a fault of the tester, not of us.
            .args(["--phases", "examples,coverage,fuzzing", "--workers", "1"])
            .args(["--generation-database", "none", "--no-color"])
            // A kept-alive connection the gateway closes after 10 s idle
            // (its header timeout) can race a request sent on it, as with
            // any server's keep-alive timeout; a client sends it again.
            .args(["--request-retries", "1"])
            // The token endpoint takes the key, not the bearer token.
            .args(["--exclude-path", "/oauth/token"])
            .output()
            .expect("schemathesis runs (pip install 'schemathesis==4.32.5'; .ci/run does)");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "schemathesis ({mode}) found failures:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Every operation but the token endpoint was tried.
        let every = metergate::doors::api::openapi_json()
            .matches("\"operationId\"")
            .count();
        assert!(text.contains(&format!("Tested: {every}")), "{mode}: {text}");
    }
    // The token is the one schemathesis used all along: nothing it sent
    // took the gateway's access away from provisioner.
    let (status, _) = a.call(&token, "GET", "/api/v1/users", None);
    assert_eq!(status, 200);
    // (what, body) → status; each a problem.
    let huge = format!("{{\"name\": \"{}\"}}", "x".repeat(2 << 20));
    let table: [(&str, &str, u16); 4] = [
        ("malformed JSON", "{\"name\": ", 400),
        ("a wrong type", "{\"name\": 7}", 400),
        (
            "an unknown field",
            "{\"name\": \"g\", \"owner\": \"x\"}",
            400,
        ),
        ("a body over 1 MiB", &huge, 413),
    ];
    for (what, body, want) in table {
        let path = a.d.dir.path().join("body.json");
        std::fs::write(&path, body).unwrap();
        let (status, text) = a.curl(&[
            "-X",
            "POST",
            "-H",
            &format!("Authorization: Bearer {token}"),
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &format!("@{}", s(&path)),
            "-D",
            "-",
            &a.url("/api/v1/user-groups"),
        ]);
        assert_eq!(status, want, "{what}: {text}");
        assert!(
            text.to_lowercase()
                .contains("content-type: application/problem+json"),
            "{what}: {text}"
        );
    }
}
