//! The HTTPS admin API: TLS (rustls with ring) on the one accept loop,
//! HTTP/1.1 by hyper, routes by axum. `POST /oauth/token` exchanges an
//! access key for a bearer token; `/api/v1/…` runs the admin commands of
//! the application core, each call decided by the guard. There is no
//! plain-HTTP listener.

mod audit;
mod calls;
mod directory;
mod openapi;
mod operations;
mod problem;
mod render;
mod token;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tokio_util::task::TaskTracker;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::commands::Gateway;
use crate::config::ApiConfig;
use crate::listen::{Floods, Gate, Shutdown};
use crate::pki::{self, PkiError};

const DOOR: &str = "api";
/// A request's headers must arrive within this (slowloris).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Bodies larger than this are refused (413): no admin request needs more.
const MAX_BODY: usize = 1 << 20;
/// A request is answered within this or gets 503.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// No connection lasts longer (then it is closed after its request in
/// flight): a client that pipelines requests and never reads the answers
/// holds nothing for long.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("{path}: {message}")]
    Tls {
        path: std::path::PathBuf,
        message: String,
    },
}

pub use crate::listen::Peer;

/// What every handler shares.
pub struct Api {
    gw: Arc<Gateway>,
    config: ApiConfig,
    limiter: calls::RateLimiter,
    /// Tokens issued per access key per second (the same rate): a key that
    /// knows its secret still cannot write events faster than it may call.
    issuance: calls::RateLimiter,
    /// Refusals before authentication, aggregated.
    floods: Arc<Floods>,
}

/// The API's listener.
pub struct ApiDoor {
    api: Arc<Api>,
    acceptor: TlsAcceptor,
    router: Router,
    /// The web console, served at `/` on the same listener.
    console: Option<Router>,
    floods: Arc<Floods>,
}

/// The TLS server config: the gateway's certificate and key, TLS 1.2 and
/// 1.3 only, HTTP/1.1 by ALPN, client certificates when `client_ca` is set.
fn tls(config: &ApiConfig) -> Result<ServerConfig, ApiError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = pki::read_certificates(&config.certificate)?;
    pki::check_validity(
        &config.certificate,
        &certs[0],
        time::OffsetDateTime::now_utc(),
    )?;
    let key = pki::read_private_key(&config.key)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ApiError::Tls {
            path: config.certificate.clone(),
            message: e.to_string(),
        })?;
    let builder = match &config.client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in pki::read_certificates(ca)? {
                roots.add(c).map_err(|e| ApiError::Tls {
                    path: ca.clone(),
                    message: format!("not usable as a trust anchor: {e}"),
                })?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| ApiError::Tls {
                path: ca.clone(),
                message: e.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut server = builder
        .with_single_cert(certs, key)
        .map_err(|e| ApiError::Tls {
            path: config.key.clone(),
            message: format!("does not match the certificate: {e}"),
        })?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(server)
}

/// Every `/api/v1` route with its part of the OpenAPI document.
fn v1() -> (Router<Arc<Api>>, utoipa::openapi::OpenApi) {
    use directory as d;
    use operations as o;
    OpenApiRouter::<Arc<Api>>::new()
        .routes(routes!(d::users, d::user_add))
        .routes(routes!(d::user_show, d::user_edit, d::user_delete))
        .routes(routes!(d::user_deactivate))
        .routes(routes!(d::user_activate))
        .routes(routes!(d::user_resend))
        .routes(routes!(d::user_unlock))
        .routes(routes!(d::user_end_date))
        .routes(routes!(d::user_attach, d::user_detach))
        .routes(routes!(d::service_users, d::service_user_add))
        .routes(routes!(
            d::service_user_show,
            d::service_user_edit,
            d::service_user_delete
        ))
        .routes(routes!(d::service_user_deactivate))
        .routes(routes!(d::service_user_activate))
        .routes(routes!(d::service_user_attach, d::service_user_detach))
        .routes(routes!(d::access_keys, d::access_key_create))
        .routes(routes!(d::access_key_delete))
        .routes(routes!(d::access_key_deactivate))
        .routes(routes!(d::groups, d::group_add))
        .routes(routes!(d::group_show, d::group_rename, d::group_delete))
        .routes(routes!(d::group_add_member, d::group_remove_member))
        .routes(routes!(d::group_attach, d::group_detach))
        .routes(routes!(d::roles, d::role_create))
        .routes(routes!(d::role_show, d::role_edit, d::role_delete))
        .routes(routes!(d::policies, d::policy_create))
        .routes(routes!(d::policy_show, d::policy_edit, d::policy_delete))
        .routes(routes!(
            d::support_show,
            d::support_grant,
            d::support_revoke
        ))
        .routes(routes!(o::sessions))
        .routes(routes!(o::session_kill))
        .routes(routes!(audit::recording))
        .routes(routes!(audit::recordings))
        .routes(routes!(o::check, o::check_post))
        .routes(routes!(o::who_can))
        .routes(routes!(o::user_permissions))
        .routes(routes!(o::service_user_permissions))
        .routes(routes!(o::group_permissions))
        .routes(routes!(o::support_permissions))
        .routes(routes!(o::review, o::review_ack))
        .routes(routes!(o::command))
        .routes(routes!(audit::events))
        .routes(routes!(audit::export))
        .routes(routes!(audit::verify, audit::verify_checkpoint))
        .routes(routes!(audit::checkpoint))
        .routes(routes!(audit::public_key))
        .routes(routes!(audit::status))
        .split_for_parts()
}

/// The OpenAPI document as served at `/api/v1/openapi.json` (and kept in
/// `docs/openapi.json`).
pub fn openapi_json() -> String {
    let doc = openapi::complete(v1().1);
    serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
}

impl ApiDoor {
    /// Reads the certificate and key (every problem names its file).
    /// `console`: the web console's routes, answered for every path that
    /// is not the API's (`/api/…`, `/oauth/token`).
    pub fn new(
        gw: Arc<Gateway>,
        config: &ApiConfig,
        console: Option<Router>,
    ) -> Result<ApiDoor, ApiError> {
        let acceptor = TlsAcceptor::from(Arc::new(tls(config)?));
        let floods = Arc::new(Floods::new(gw.guard.clone(), DOOR));
        let api = Arc::new(Api {
            limiter: calls::RateLimiter::new(config.requests_per_second),
            issuance: calls::RateLimiter::new(config.requests_per_second),
            gw: gw.clone(),
            config: config.clone(),
            floods: floods.clone(),
        });
        let (v1, doc) = v1();
        let doc = Arc::new(openapi::complete(doc));
        let v1 = v1.route_layer(axum::middleware::from_fn_with_state(
            api.clone(),
            calls::bearer,
        ));
        let router = Router::new()
            .route("/oauth/token", post(token::token))
            .route(
                "/api/v1/openapi.json",
                get(move || {
                    let doc = doc.clone();
                    async move { axum::Json(doc.as_ref().clone()) }
                }),
            )
            .merge(v1)
            .fallback(calls::no_route)
            // The limit inside the hardening, so its 413 gets a request id,
            // HSTS and a problem body like every other answer.
            .layer(tower_http::limit::RequestBodyLimitLayer::new(MAX_BODY))
            .layer(axum::middleware::from_fn(calls::hardening))
            .with_state(api.clone());
        Ok(ApiDoor {
            floods,
            api,
            acceptor,
            router,
            console,
        })
    }

    /// Accepts through `gate` until `shutdown`.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        gate: Arc<Gate>,
        shutdown: Shutdown,
        tracker: TaskTracker,
    ) {
        let door = self.clone();
        crate::listen::serve(
            listener,
            gate,
            self.floods.clone(),
            shutdown,
            tracker,
            move |stream, peer, shutdown| door.clone().connection(stream, peer, shutdown),
        )
        .await;
    }

    async fn connection(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        mut shutdown: Shutdown,
    ) {
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        let _ = stream.set_nodelay(true);
        let handshake = tokio::time::timeout(
            self.api.config.handshake_timeout,
            self.acceptor.accept(stream),
        )
        .await;
        let tls = match handshake {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                self.floods.count(
                    Some(peer.ip()),
                    "api.handshake-failed",
                    &format!("the TLS handshake failed: {e}"),
                );
                return;
            }
            Err(_) => {
                self.floods.count(
                    Some(peer.ip()),
                    "api.handshake-timeout",
                    "the TLS handshake did not finish in time (api.handshake_timeout)",
                );
                return;
            }
        };
        let (api, console) = (self.router.clone(), self.console.clone());
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(Peer(peer));
                let path = req.uri().path();
                let for_api = path.starts_with("/api/") || path == "/oauth/token";
                let router = match (&console, for_api) {
                    (Some(c), false) => c.clone(),
                    _ => api.clone(),
                };
                async move {
                    use tower::ServiceExt;
                    router.oneshot(req.map(axum::body::Body::new)).await
                }
            });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .serve_connection(TokioIo::new(tls), service);
        tokio::pin!(connection);
        tokio::select! {
            _ = &mut connection => {}
            _ = shutdown.signalled() => {
                // Answer what is in flight, then close.
                connection.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(REQUEST_TIMEOUT, connection).await;
            }
            _ = tokio::time::sleep(CONNECTION_LIFETIME) => {
                connection.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(REQUEST_TIMEOUT, connection).await;
            }
        }
    }
}
