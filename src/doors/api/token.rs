//! `POST /oauth/token`: RFC 6749 §4.4, client credentials. The client is an
//! access key: its id and secret in HTTP Basic (each form-urlencoded, as
//! §2.3.1 says) or as `client_id`/`client_secret` in the form body. The
//! guard checks the secret in its bounded hash pool: busy answers 503 with
//! Retry-After, never "invalid".

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::json;

use super::problem::oauth_error;
use super::{Api, Peer};
use crate::guard::api::Grant;
use crate::store::secrets::Secret;

/// The client's id and secret, from wherever it put them.
struct Client {
    id: String,
    secret: Secret,
}

/// HTTP Basic credentials: `Basic base64(urlencode(id) ":" urlencode(secret))`.
fn basic(headers: &HeaderMap) -> Result<Option<Client>, &'static str> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| "the Authorization header is not text")?;
    let Some(encoded) = text
        .strip_prefix("Basic ")
        .or_else(|| text.strip_prefix("basic "))
    else {
        return Err("the token endpoint takes HTTP Basic client authentication");
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| "the Basic credentials are not base64")?;
    let decoded = String::from_utf8(decoded).map_err(|_| "the Basic credentials are not UTF-8")?;
    let (id, secret) = decoded
        .split_once(':')
        .ok_or("the Basic credentials have no `:`")?;
    let unescape = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| "the Basic credentials are not UTF-8 once decoded")
    };
    Ok(Some(Client {
        id: unescape(id)?,
        secret: Secret::new(unescape(secret)?),
    }))
}

pub async fn token(
    State(api): State<Arc<Api>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Refusals before the key is even looked at are counted, not logged
    // one by one (nothing bounds how fast they come).
    let refuse = |status: StatusCode, error: &'static str, d: &str| {
        api.floods.count(
            Some(peer.0.ip()),
            "api.token-refused",
            &format!("{error}: {d}"),
        );
        oauth_error(status, error, d)
    };
    let bad = |d: &str| refuse(StatusCode::BAD_REQUEST, "invalid_request", d);
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    if !form_type {
        return bad("the body must be application/x-www-form-urlencoded");
    }
    let Ok(fields) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body) else {
        return bad("the body is not a form");
    };
    let field = |name: &str| -> Result<Option<&str>, String> {
        let mut found = fields.iter().filter(|(k, _)| k == name);
        let first = found.next().map(|(_, v)| v.as_str());
        // §3.2: parameters must not be included more than once.
        if found.next().is_some() {
            return Err(format!("`{name}` is given more than once"));
        }
        Ok(first)
    };
    let grant_type = match field("grant_type") {
        Ok(g) => g,
        Err(why) => return bad(&why),
    };
    let from_body = match (field("client_id"), field("client_secret")) {
        (Ok(Some(id)), Ok(Some(secret))) => Some(Client {
            id: id.to_string(),
            secret: Secret::new(secret.to_string()),
        }),
        (Ok(None), Ok(None)) => None,
        (Err(why), _) | (_, Err(why)) => return bad(&why),
        _ => return bad("client_id and client_secret go together"),
    };
    let from_header = match basic(&headers) {
        Ok(c) => c,
        Err(why) => {
            return refuse(StatusCode::UNAUTHORIZED, "invalid_client", why);
        }
    };
    let client = match (from_header, from_body) {
        (Some(_), Some(_)) => {
            // §2.3: a client must not use more than one method.
            return bad("authenticate with HTTP Basic or the form, not both");
        }
        (Some(c), None) | (None, Some(c)) => c,
        (None, None) => {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "no client authentication: give the access key id and secret",
            );
        }
    };
    match grant_type {
        Some("client_credentials") => {}
        Some(_) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only client_credentials is supported",
            );
        }
        None => return bad("grant_type is missing"),
    }
    if client.id.is_empty() || client.id.len() > 128 {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "the access key id or secret is wrong",
        );
    }
    // Only issued tokens count (a wrong secret cannot use up the right
    // one's rate); over it, refused before the secret is checked.
    let now = || time::OffsetDateTime::now_utc().unix_timestamp();
    if api.issuance.full(&client.id, now()) {
        api.floods.count(
            Some(peer.0.ip()),
            "api.rate-limited",
            &format!(
                "access key {} asked for tokens faster than api.requests_per_second",
                crate::guard::shown_key_id(&client.id)
            ),
        );
        return oauth_error(
            StatusCode::TOO_MANY_REQUESTS,
            "temporarily_unavailable",
            "more tokens a second for this access key than api.requests_per_second: use the one you have",
        );
    }
    let grant = api
        .gw
        .guard
        .grant_token(
            &client.id,
            client.secret,
            peer.0.ip(),
            api.config.token_lifetime,
            || api.issuance.admit(&client.id, now()),
        )
        .await;
    match grant {
        Grant::Issued { token, expires_in } => {
            let body = json!({
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": expires_in.as_secs(),
            });
            let mut response = (StatusCode::OK, body.to_string()).into_response();
            let h = response.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            // §5.1: the token must not be cached.
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
            response
        }
        Grant::Rejected => oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "the access key id or secret is wrong, or its service user may not log in",
        ),
        // RFC 6749 §5.2: the client authenticated, but may not use this grant.
        Grant::NotAdministrator => oauth_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "API calls need the Administrator policy, which this access key's service user does not hold",
        ),
        Grant::TooMany => oauth_error(
            StatusCode::TOO_MANY_REQUESTS,
            "temporarily_unavailable",
            "more tokens a second for this access key than api.requests_per_second: use the one you have",
        ),
        Grant::Busy => oauth_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the gateway is busy checking secrets: nothing was counted against you; try again",
        ),
    }
}
