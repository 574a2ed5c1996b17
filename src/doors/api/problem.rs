//! Errors of the API as RFC 9457 problem details (`application/problem+json`),
//! and the RFC 6749 §5.2 error bodies of the token endpoint. No secret ever
//! reaches one.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// A problem: its status, a short title, the detail for a person, and the
/// guard's reason when a decision refused the call.
pub struct Problem {
    pub status: StatusCode,
    pub detail: String,
    pub reason: Option<String>,
    /// Extra headers (WWW-Authenticate, Retry-After).
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Problem {
        Problem {
            status,
            detail: detail.into(),
            reason: None,
            headers: Vec::new(),
        }
    }

    pub fn reason(mut self, reason: impl Into<String>) -> Problem {
        self.reason = Some(reason.into());
        self
    }

    pub fn header(mut self, name: header::HeaderName, value: &'static str) -> Problem {
        self.headers.push((name, HeaderValue::from_static(value)));
        self
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut body = json!({
            "type": "about:blank",
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if let Some(r) = self.reason {
            body["reason"] = json!(r);
        }
        let mut response = (self.status, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        response
    }
}

/// An RFC 6749 §5.2 error of the token endpoint.
pub fn oauth_error(status: StatusCode, error: &'static str, description: &str) -> Response {
    let body = json!({"error": error, "error_description": description});
    let mut response = (status, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    if status == StatusCode::UNAUTHORIZED {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"metergate\""),
        );
    }
    if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}
