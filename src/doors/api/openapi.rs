//! The OpenAPI 3.1 document, generated from the handlers' own annotations
//! (utoipa) as the router is built from them, so the two cannot drift.
//! What every operation shares is added here once: the bearer scheme, and
//! the problem answers (RFC 9457) a call may get. `docs/openapi.json` is
//! this document, committed so reviewers can diff it; a test keeps it so.

use std::borrow::Cow;

use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, RefOr, ResponseBuilder, Schema};
use utoipa::{PartialSchema, ToSchema};

/// Any JSON object: a resource as `show --json` prints it.
pub struct Object;

impl PartialSchema for Object {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some("a resource as `metergate … show --json` prints it"))
            .into()
    }
}

impl ToSchema for Object {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Object")
    }
}

/// A page of a list.
#[derive(ToSchema)]
#[allow(dead_code)] // The schema's shape; answers are built as JSON.
pub struct Page {
    #[schema(value_type = Vec<Object>)]
    data: Vec<()>,
    /// The cursor of the next page; null on the last.
    next: Option<String>,
}

/// What a change says when it is done.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Message {
    ok: bool,
    message: String,
}

/// A temporary password, shown only in this answer; with `[mail]` it is
/// sent to the user instead (`mailed_to`), and shown only when
/// `mail.print_temporary_password` is on.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TemporaryPassword {
    name: String,
    temporary_password: Option<String>,
    mailed_to: Option<String>,
    /// RFC 3339.
    expires_at: String,
    must_change_at_first_login: bool,
}

/// A new access key: the secret is shown only in this answer.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct NewAccessKey {
    service_user: String,
    id: String,
    secret: String,
}

/// The result of a chain or checkpoint check.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Verdict {
    ok: bool,
    message: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct PublicKey {
    /// Ed25519, hex.
    public_key: String,
}

/// What the guard would decide.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Decision {
    allowed: bool,
    permission: String,
    principal: String,
    meter: Option<String>,
    /// For a session without a second factor.
    reason: String,
    /// Present when a second factor is all that is missing: what a
    /// session with one gets.
    allowed_with_second_factor: Option<bool>,
}

/// An RFC 9457 problem; `reason` is the guard's when it denied the call.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Problem {
    r#type: String,
    title: String,
    status: u16,
    detail: String,
    reason: Option<String>,
}

/// The answer of `POST /oauth/token` (RFC 6749 §5.1).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TokenAnswer {
    access_token: String,
    /// Always "Bearer".
    token_type: String,
    /// Seconds.
    expires_in: u64,
}

/// An error of `POST /oauth/token` (RFC 6749 §5.2).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct OAuthError {
    error: String,
    error_description: Option<String>,
}

/// The token request's form (RFC 6749 §4.4.2); the client may instead
/// authenticate with HTTP Basic.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TokenRequest {
    /// "client_credentials".
    grant_type: String,
    /// The access key id (or in HTTP Basic).
    client_id: Option<String>,
    client_secret: Option<String>,
}

/// The answers every operation under /api/v1 may also give.
const PROBLEMS: &[(&str, &str)] = &[
    (
        "400",
        "the request is malformed (query, body or command words)",
    ),
    (
        "401",
        "no bearer token, or one that is unknown, expired or revoked",
    ),
    (
        "403",
        "the guard denied the call (reason in the body), or a managed policy",
    ),
    ("404", "it names something that does not exist"),
    ("405", "the resource does not take this method"),
    ("409", "refused: the request conflicts with the directory"),
    (
        "412",
        "If-Match names a version the resource is no longer at",
    ),
    ("413", "the body is larger than 1 MiB"),
    ("429", "over the token's request rate (Retry-After)"),
    ("503", "busy, or the request took too long (Retry-After)"),
];

fn problem_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/problem+json",
            ContentBuilder::new()
                .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                    "Problem",
                ))))
                .build(),
        )
        .into()
}

fn shared(op: &mut Operation) {
    for (status, description) in PROBLEMS {
        op.responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| problem_response(description));
    }
    op.security = Some(vec![SecurityRequirement::new(
        "bearer",
        Vec::<String>::new(),
    )]);
}

/// The token endpoint, written here: its body is a form and its errors
/// are RFC 6749's, not problems.
fn token_operation() -> utoipa::openapi::PathItem {
    use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItem};
    use utoipa::openapi::request_body::RequestBodyBuilder;
    let oauth = |d: &str| -> RefOr<utoipa::openapi::Response> {
        ResponseBuilder::new()
            .description(d)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                        "OAuthError",
                    ))))
                    .build(),
            )
            .into()
    };
    let op = OperationBuilder::new()
        .tag("oauth")
        .summary(Some(
            "An access key for a bearer token (RFC 6749 §4.4, client credentials)",
        ))
        .request_body(Some(
            RequestBodyBuilder::new()
                .content(
                    "application/x-www-form-urlencoded",
                    ContentBuilder::new()
                        .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                            "TokenRequest",
                        ))))
                        .build(),
                )
                .required(Some(utoipa::openapi::Required::True))
                .build(),
        ))
        .response(
            "200",
            ResponseBuilder::new()
                .description("a bearer token")
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                            "TokenAnswer",
                        ))))
                        .build(),
                ),
        )
        .response(
            "400",
            oauth("invalid_request, unsupported_grant_type, or unauthorized_client (the service user does not hold Administrator)"),
        )
        .response(
            "429",
            oauth("more tokens a second for this access key than api.requests_per_second (Retry-After)"),
        )
        .response("401", oauth("invalid_client (WWW-Authenticate: Basic)"))
        .response("413", problem_response("the body is larger than 1 MiB"))
        .response(
            "503",
            oauth("the secret check is busy: try again (Retry-After)"),
        )
        .security(SecurityRequirement::default())
        .build();
    PathItem::new(HttpMethod::Post, op)
}

/// Completes the document the handlers made.
pub fn complete(mut doc: OpenApi) -> OpenApi {
    doc.info.title = "metergate admin API".into();
    doc.info.version = env!("CARGO_PKG_VERSION").into();
    doc.info.description = Some(
        "Every admin command of metergate as a resource. A service user's access key gets a bearer token at /oauth/token; every call is decided by the guard (Administrator, then the command's own permission) and logged.".into(),
    );
    doc.info.license = None;
    doc.info.contact = None;
    for item in doc.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            shared(op);
        }
    }
    doc.paths
        .paths
        .insert("/oauth/token".into(), token_operation());
    let components = doc.components.get_or_insert_with(Default::default);
    components.security_schemes.insert(
        "bearer".into(),
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("a token from POST /oauth/token"))
                .build(),
        )
        .into(),
    );
    for (name, schema) in [
        ("Object", Object::schema()),
        ("Page", Page::schema()),
        ("Message", Message::schema()),
        ("TemporaryPassword", TemporaryPassword::schema()),
        ("NewAccessKey", NewAccessKey::schema()),
        ("Verdict", Verdict::schema()),
        ("PublicKey", PublicKey::schema()),
        ("Decision", Decision::schema()),
        ("Problem", Problem::schema()),
        ("TokenAnswer", TokenAnswer::schema()),
        ("OAuthError", OAuthError::schema()),
        ("TokenRequest", TokenRequest::schema()),
    ] {
        components.schemas.insert(name.into(), schema);
    }
    doc
}
