//! The Modbus/TCP Security door (mbaps): TLS 1.2/1.3 with a required client
//! certificate that names a service user and carries its role; the role
//! bounds what the service user's own policies allow. Requests then go
//! through the same proxy as plain Modbus.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use time::OffsetDateTime;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{
    self, CertificateError, HandshakeKind, RootCertStore, ServerConfig,
    server::{ServerSessionMemoryCache, StoresServerSessions, WebPkiClientVerifier},
};

use super::{Caller, Proxy, UnitMap};
use crate::config::MbapsConfig;
use crate::guard::{Action, CertificateClaim, Guard, Request};
use crate::model::{PrincipalId, micros};
use crate::pki::{self, PkiError, client_identity};
use crate::sessions::Sessions;
use crate::store::{Category, EventDraft, Outcome};

/// How often the CRL file is looked at for changes (a `cert revoke`
/// reported to the daemon reloads it at once).
const CRL_POLL: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum MbapsError {
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("{}: {message}", path.display())]
    Tls { path: PathBuf, message: String },
}

/// The TLS side shared by every mbaps listener: the acceptor (rebuilt when
/// the CRL changes) and the serials the current CRL revokes.
pub struct Tls {
    config: MbapsConfig,
    acceptor: ArcSwap<TlsAcceptor>,
    revoked: ArcSwap<HashSet<String>>,
    crl_seen: Mutex<Option<FileStamp>>,
    resumable: Arc<dyn StoresServerSessions>,
    /// Wakes the CRL watcher (a revocation reported to the daemon).
    pub crl_changed: Arc<Notify>,
}

/// What identifies a version of a file without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &std::path::Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        modified: m.modified().ok(),
        len: m.len(),
        inode: m.ino(),
    })
}

/// A built acceptor and what the CRL it was built with revokes.
struct Built {
    acceptor: TlsAcceptor,
    revoked: HashSet<String>,
}

/// Sessions kept for resumption, shared by every acceptor a reload builds:
/// clients resume across CRL updates, which is why the CRL is checked again
/// after every handshake.
const SESSION_CACHE: usize = 4096;

fn build(
    config: &MbapsConfig,
    sessions: &Arc<dyn StoresServerSessions>,
    now: OffsetDateTime,
) -> Result<Built, MbapsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = pki::read_certificates(&config.certificate)?;
    pki::check_validity(&config.certificate, &certs[0], now)?;
    let key = pki::read_private_key(&config.key)?;
    let mut roots = RootCertStore::empty();
    for ca in pki::read_certificates(&config.client_ca)? {
        roots.add(ca).map_err(|e| MbapsError::Tls {
            path: config.client_ca.clone(),
            message: format!("not usable as a trust anchor: {e}"),
        })?;
    }
    let crls = pki::read_crls(&config.crl)?;
    let revoked = pki::revoked_serials(&config.crl, &crls)?;
    let mut verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    if !crls.is_empty() {
        // A certificate whose status the CRL cannot tell is refused (the
        // CRL must be the client CA's): unknown is not good.
        verifier = verifier.with_crls(crls).only_check_end_entity_revocation();
    }
    let verifier = verifier.build().map_err(|e| MbapsError::Tls {
        path: config.crl.clone(),
        message: format!("cannot build the client certificate verifier: {e}"),
    })?;
    // TLS 1.2 and 1.3 only, as Modbus/TCP Security requires (rustls has
    // nothing older).
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| MbapsError::Tls {
            path: config.certificate.clone(),
            message: e.to_string(),
        })?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => MbapsError::Pki(PkiError::KeyMismatch {
                key: config.key.clone(),
                cert: config.certificate.clone(),
            }),
            other => MbapsError::Tls {
                path: config.key.clone(),
                message: format!("unusable certificate or key: {other}"),
            },
        })?;
    server.session_storage = sessions.clone();
    Ok(Built {
        acceptor: TlsAcceptor::from(Arc::new(server)),
        revoked,
    })
}

impl Tls {
    /// Reads the certificate, key, client CA and CRL; every problem names
    /// its file.
    pub fn load(config: &MbapsConfig, now: OffsetDateTime) -> Result<Tls, MbapsError> {
        let seen = stamp(&config.crl);
        let resumable: Arc<dyn StoresServerSessions> = ServerSessionMemoryCache::new(SESSION_CACHE);
        let built = build(config, &resumable, now)?;
        Ok(Tls {
            resumable,
            config: config.clone(),
            acceptor: ArcSwap::from_pointee(built.acceptor),
            revoked: ArcSwap::from_pointee(built.revoked),
            crl_seen: Mutex::new(seen),
            crl_changed: Arc::new(Notify::new()),
        })
    }

    /// Re-reads the CRL when its file changed (or `force`): new handshakes
    /// use it, and live connections of newly revoked certificates end.
    pub async fn reload_crl(&self, guard: &Guard, sessions: &Sessions, force: bool) {
        let now_stamp = stamp(&self.config.crl);
        {
            let Ok(mut seen) = self.crl_seen.lock() else {
                return;
            };
            if *seen == now_stamp && !force {
                return;
            }
            *seen = now_stamp;
        }
        // A CRL that has gone (a deploy, or tampering) lifts nothing: the
        // list in force stays, as for a broken file. (Missing at start is
        // only allowed before the CA's first CRL exists.)
        let missing = !self.config.crl.exists();
        let built = if missing {
            Err(MbapsError::Tls {
                path: self.config.crl.clone(),
                message: "the CRL file is missing".into(),
            })
        } else {
            build(&self.config, &self.resumable, OffsetDateTime::now_utc())
        };
        match built {
            Ok(built) => {
                let count = built.revoked.len();
                let mut ended = 0;
                for serial in &built.revoked {
                    ended += sessions.kill_credential(&credential(serial), "certificate revoked");
                }
                self.revoked.store(Arc::new(built.revoked));
                self.acceptor.store(Arc::new(built.acceptor));
                let ev = EventDraft::new("mbaps.crl-loaded", Category::Authentication, Outcome::Success)
                    .door("mbaps")
                    .reason(format!(
                        "CRL {} loaded: {count} revoked certificate(s); {ended} live connection(s) ended",
                        self.config.crl.display()
                    ))
                    .detail("revoked", count)
                    .detail("ended", ended);
                guard.record(ev).await;
            }
            Err(e) => {
                // The last good CRL stays in force; a broken file must not
                // lift revocations.
                tracing::error!(error = %e, "the new CRL was not loaded");
                let ev = EventDraft::new(
                    "mbaps.crl-invalid",
                    Category::Authentication,
                    Outcome::Failure,
                )
                .door("mbaps")
                .reason(format!(
                    "the CRL was not reloaded, the previous one stays in force: {e}"
                ));
                guard.record(ev).await;
            }
        }
    }

    /// Watches the CRL until `stop`.
    pub async fn watch_crl(
        self: Arc<Self>,
        guard: Arc<Guard>,
        sessions: Arc<Sessions>,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            let force = tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(CRL_POLL) => false,
                _ = self.crl_changed.notified() => true,
            };
            self.reload_crl(&guard, &sessions, force).await;
        }
    }
}

/// How a session records the certificate it came with.
fn credential(serial: &str) -> String {
    format!("cert:{serial}")
}

/// One mbaps listener.
pub struct MbapsDoor {
    pub proxy: Proxy,
    /// TLS handshakes in progress.
    handshakes: Arc<crate::listen::startups::Startups>,
    sessions: Arc<Sessions>,
    tls: Arc<Tls>,
}

impl MbapsDoor {
    pub fn new(
        guard: Arc<Guard>,
        sessions: Arc<Sessions>,
        units: Arc<UnitMap>,
        tls: Arc<Tls>,
        first_request: std::time::Duration,
    ) -> MbapsDoor {
        MbapsDoor {
            proxy: Proxy::new("mbaps", guard, units, first_request),
            handshakes: crate::listen::startups::Startups::new(
                crate::config::MaxStartups::default(),
                (
                    "TLS handshakes in progress: 10:30:100",
                    "at most 10 TLS handshakes per address",
                ),
            ),
            sessions,
            tls,
        }
    }

    /// Accepts through `gate` until `shutdown`; each handshake runs in
    /// its own task.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        gate: Arc<crate::listen::Gate>,
        shutdown: crate::listen::Shutdown,
        tracker: tokio_util::task::TaskTracker,
    ) {
        let door = self.clone();
        crate::listen::serve(
            listener,
            gate,
            self.proxy.floods.clone(),
            shutdown,
            tracker,
            move |stream, peer, _| {
                let door = door.clone();
                async move { door.connection(stream, peer).await }
            },
        )
        .await;
    }

    async fn connection(&self, stream: TcpStream, peer: SocketAddr) {
        let first_request = self.proxy.first_request_deadline();
        // An IPv4 client on a dual-stack socket is its IPv4 address.
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        let _ = stream.set_nodelay(true);
        let floods = &self.proxy.floods;
        // Handshakes in progress are capped as SSH logins are (MaxStartups
        // 10:30:100, 10 per address), so a flood of them leaves room for
        // the certificates that come to work.
        let source = crate::listen::source_key(peer.ip());
        let waiter = match self.handshakes.admit(source) {
            Ok(w) => w,
            Err(dropped) => {
                floods.count(
                    Some(peer.ip()),
                    "mbaps.handshake-dropped",
                    &dropped.to_string(),
                );
                return;
            }
        };
        let acceptor = self.tls.acceptor.load_full();
        // The handshake ends by its own timeout and by the first request's.
        let until = first_request.min(Instant::now() + self.tls.config.handshake_timeout);
        let tls = match tokio::time::timeout_at(until, acceptor.accept(stream)).await {
            Err(_) => {
                floods.count(
                        Some(peer.ip()),
                        "mbaps.handshake-timeout",
                        "the TLS handshake did not finish in time (mbaps.handshake_timeout, or limits.first_request_timeout if shorter)",
                    );
                return;
            }
            Ok(Err(e)) => {
                let (kind, reason) = classify(&e);
                floods.count(Some(peer.ip()), kind, &reason);
                return;
            }
            Ok(Ok(s)) => s,
        };
        drop(waiter);
        let (_, conn) = tls.get_ref();
        let resumed = conn.handshake_kind() == Some(HandshakeKind::Resumed);
        let Some(der) = conn.peer_certificates().and_then(|c| c.first()) else {
            floods.count(
                Some(peer.ip()),
                "mbaps.no-certificate",
                "no client certificate: Modbus/TCP Security requires one",
            );
            return;
        };
        let id = match client_identity(der, self.tls.config.name_from) {
            Ok(id) => id,
            Err(refusal) => {
                let (serial, subject) = pki::serial_and_subject(der);
                self.refuse(
                    peer,
                    "mbaps.certificate-refused",
                    &refusal.to_string(),
                    &serial,
                    &subject,
                )
                .await;
                return;
            }
        };
        // Resumed sessions skip rustls' verifier: the CRL and the validity
        // period are checked here after every handshake.
        let now = OffsetDateTime::now_utc();
        if self.tls.revoked.load().contains(&id.serial) {
            let why = if resumed {
                "the certificate is revoked (resumed session)"
            } else {
                "the certificate is revoked"
            };
            self.refuse(
                peer,
                "mbaps.certificate-revoked",
                why,
                &id.serial,
                &id.subject,
            )
            .await;
            return;
        }
        let t = now.unix_timestamp();
        if t > id.not_after || t < id.not_before {
            self.refuse(
                peer,
                "mbaps.certificate-expired",
                "the certificate is outside its validity period",
                &id.serial,
                &id.subject,
            )
            .await;
            return;
        }
        let caller = Caller {
            principal: PrincipalId::Service(id.service_user.clone()),
            read_only: false,
            certificate: Some(Arc::new(CertificateClaim {
                serial: id.serial.clone(),
                subject: id.subject.clone(),
                role: id.role.clone(),
            })),
        };
        let login = Request {
            principal: caller.principal.clone(),
            source: Some(peer.ip().to_string()),
            door: "mbaps",
            action: Action::Login,
            read_only: false,
            certificate: caller.certificate.clone(),
            second_factor: false,
            recorded: false,
        };
        if !self.proxy.guard.authorize(&login, now).await.allowed {
            return;
        }
        let session = self.sessions.register(
            &caller.principal,
            &peer.to_string(),
            "mbaps",
            Some(credential(&id.serial)),
            micros(now),
        );
        // The connection ends when the certificate does (the access watcher).
        self.sessions
            .expires_at(session.id, id.not_after.saturating_mul(1_000_000));
        // A CRL loaded between the check above and the registration did
        // not see this session: look again.
        if self.tls.revoked.load().contains(&id.serial) {
            return;
        }
        self.proxy
            .serve_connection(tls, peer, &caller, session.ended.clone(), first_request)
            .await;
    }

    /// A chain-verified certificate refused by our own checks: one event
    /// each, with the certificate's serial and subject.
    async fn refuse(
        &self,
        peer: SocketAddr,
        code: &str,
        reason: &str,
        serial: &str,
        subject: &str,
    ) {
        let ev = EventDraft::new(code, Category::Authentication, Outcome::Deny)
            .source(peer.ip())
            .door("mbaps")
            .reason(reason)
            .detail("certificate_serial", serial)
            .detail("certificate_subject", subject);
        self.proxy.guard.record(ev).await;
    }
}

/// The event kind and reason for a failed handshake.
fn classify(e: &std::io::Error) -> (&'static str, String) {
    let inner = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
    match inner {
        Some(rustls::Error::NoCertificatesPresented) => (
            "mbaps.no-certificate",
            "no client certificate: Modbus/TCP Security requires one".into(),
        ),
        Some(rustls::Error::InvalidCertificate(c)) => {
            let kind = match c {
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    "mbaps.certificate-expired"
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    "mbaps.certificate-not-yet-valid"
                }
                CertificateError::Revoked => "mbaps.certificate-revoked",
                CertificateError::UnknownIssuer => "mbaps.certificate-unknown-issuer",
                _ => "mbaps.certificate-invalid",
            };
            (kind, format!("client certificate refused: {c}"))
        }
        // TLS 1.1 and older arrive here (as a hello without what TLS 1.2
        // needs).
        Some(rustls::Error::PeerIncompatible(p)) => (
            "mbaps.handshake-failed",
            format!("the client offers no TLS 1.2/1.3 handshake this gateway accepts ({p:?})"),
        ),
        Some(other) => (
            "mbaps.handshake-failed",
            format!("TLS handshake failed: {other}"),
        ),
        None => (
            "mbaps.handshake-failed",
            format!("TLS handshake failed: {e}"),
        ),
    }
}
