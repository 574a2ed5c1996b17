//! Forwards the security log to a syslog collector: RFC 5424 messages with
//! RFC 5425 octet counting over TCP or TLS, at least once. The cursor (the
//! last seq delivered) is persisted in sled and advances only when a write
//! has been followed by a grace period on a connection still up; after a
//! reconnect the events since the cursor are sent again (duplicates only at
//! the reconnect boundary, nothing missing).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

use super::export::{Origin, octet_counted, rfc5424};
use super::log::SecurityEvent;
use super::{Store, StoreError};
use crate::config::{ForwardConfig, Transport};

/// A write counts as delivered once the connection has stayed up this long
/// after it: TCP accepts bytes a dying collector never reads, so a cursor
/// that advanced on write alone could skip events.
const GRACE: Duration = Duration::from_secs(2);
/// Events per write.
const BATCH: usize = 1000;
/// Reconnect backoff: doubles from the first to the last.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A connect or a write that takes longer is a failure.
const IO_TIMEOUT: Duration = Duration::from_secs(15);
/// How often an idle forwarder looks for new events.
const IDLE_POLL: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("{path}: {error}")]
    Pem { path: String, error: String },
    #[error("audit.forward: {0}")]
    Tls(String),
}

/// Where the forwarder keeps its cursor.
const FORWARD_TREE: &str = "audit_forward";

/// The forwarder's state: what status and metrics show of it, and how far
/// it has delivered (the log reads that through its handle: drop-oldest
/// never drops an event not yet delivered).
#[derive(Default)]
pub struct ForwardState {
    pub target: Mutex<Option<String>>,
    pub connected: AtomicBool,
    /// Events written since start (duplicates after reconnects included).
    pub sent: AtomicU64,
    pub reconnects: AtomicU64,
    pub last_error: Mutex<Option<String>>,
    /// Highest seq the forwarder has delivered.
    delivered: AtomicU64,
}

impl ForwardState {
    /// The forwarder has delivered everything up to `seq` (drop-oldest may
    /// now drop it).
    pub fn set_delivered(&self, seq: u64) {
        self.delivered.store(seq, Ordering::Release);
    }

    /// Highest seq the forwarder has delivered (0 before anything was).
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Acquire)
    }
}

impl Store {
    /// The forwarder's state (shared with the log).
    pub fn forward_state(&self) -> &ForwardState {
        &self.forward
    }

    /// The forwarder's persisted cursor: the last seq delivered.
    pub fn forward_cursor(&self) -> Result<u64, StoreError> {
        let t = self.db.open_tree(FORWARD_TREE)?;
        Ok(t.get(b"cursor")?
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0))
    }

    /// Persists the forwarder's cursor (made durable by the next flush:
    /// a cursor lost in a crash only repeats events, at least once).
    pub fn set_forward_cursor(&self, seq: u64) -> Result<(), StoreError> {
        let t = self.db.open_tree(FORWARD_TREE)?;
        t.insert(b"cursor", &seq.to_be_bytes())?;
        self.forward.set_delivered(seq);
        Ok(())
    }
}

/// The connection settings, checked once at start.
pub struct Forwarder {
    transport: Transport,
    host: String,
    port: u16,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    origin: Origin,
}

impl Forwarder {
    /// Reads the CA and client certificate; errors name the file.
    pub fn new(c: &ForwardConfig) -> Result<Forwarder, ForwardError> {
        let (transport, host, port) = c.endpoint().map_err(ForwardError::Tls)?;
        let pem = |path: &std::path::Path, e: crate::pki::PkiError| ForwardError::Pem {
            path: path.display().to_string(),
            error: e.to_string(),
        };
        let tls = match (transport, &c.ca) {
            (Transport::Tls, Some(ca)) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in crate::pki::read_certificates(ca).map_err(|e| pem(ca, e))? {
                    roots
                        .add(cert)
                        .map_err(|e| ForwardError::Tls(format!("{}: {e}", ca.display())))?;
                }
                let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .map_err(|e| ForwardError::Tls(e.to_string()))?
                .with_root_certificates(roots);
                let config = match (&c.certificate, &c.key) {
                    (Some(cert), Some(key)) => {
                        let chain =
                            crate::pki::read_certificates(cert).map_err(|e| pem(cert, e))?;
                        let key = crate::pki::read_private_key(key).map_err(|e| pem(key, e))?;
                        builder
                            .with_client_auth_cert(chain, key)
                            .map_err(|e| ForwardError::Tls(e.to_string()))?
                    }
                    _ => builder.with_no_client_auth(),
                };
                let name = c.server_name.clone().unwrap_or_else(|| host.clone());
                let name = rustls::pki_types::ServerName::try_from(name.clone())
                    .map_err(|_| ForwardError::Tls(format!("`{name}` is not a server name")))?;
                Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
            }
            _ => None,
        };
        Ok(Forwarder {
            transport,
            host,
            port,
            tls,
            origin: Origin::here(c.facility),
        })
    }

    fn target(&self) -> String {
        let scheme = match self.transport {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        };
        format!("{scheme}://{}:{}", self.host, self.port)
    }

    /// Forwards until `stop` turns true: connect, send, reconnect with
    /// backoff on any failure.
    pub async fn run(self, store: Arc<Store>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let state = store.forward_state();
        if let Ok(mut t) = state.target.lock() {
            *t = Some(self.target());
        }
        let mut backoff = BACKOFF_FIRST;
        loop {
            if *stop.borrow() {
                return;
            }
            let sent_before = state.sent.load(Ordering::Relaxed);
            // send() watches `stop` itself and returns Ok when it turns.
            let result = self.connect_and_send(&store, &mut stop).await;
            state.connected.store(false, Ordering::Relaxed);
            match result {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(target = %self.target(), error = %e, retry_in = ?backoff, "audit forwarding failed");
                    if let Ok(mut l) = state.last_error.lock() {
                        *l = Some(e);
                    }
                    state.reconnects.fetch_add(1, Ordering::Relaxed);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => return,
            }
            // A connection that delivered something starts the backoff over.
            backoff = if state.sent.load(Ordering::Relaxed) > sent_before {
                BACKOFF_FIRST
            } else {
                (backoff * 2).min(BACKOFF_MAX)
            };
        }
    }

    async fn connect_and_send(
        &self,
        store: &Arc<Store>,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), String> {
        let addr = (self.host.as_str(), self.port);
        let tcp = tokio::select! {
            r = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(addr)) => r,
            _ = stop.changed() => return Ok(()),
        };
        let tcp = tcp
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => self.send(tcp, store, stop).await,
            Some((connector, name)) => {
                let tls = tokio::time::timeout(IO_TIMEOUT, connector.connect(name.clone(), tcp))
                    .await
                    .map_err(|_| "TLS handshake timed out".to_string())?
                    .map_err(|e| format!("TLS handshake: {e}"))?;
                self.send(tls, store, stop).await
            }
        }
    }

    /// Sends from the persisted cursor on; advances the cursor past writes
    /// older than [`GRACE`] while the collector has not closed or failed.
    async fn send<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
        store: &Arc<Store>,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), String> {
        let state = store.forward_state();
        state.connected.store(true, Ordering::Relaxed);
        if let Ok(mut l) = state.last_error.lock() {
            *l = None;
        }
        let (mut rd, mut wr) = tokio::io::split(stream);
        let mut cursor = store.forward_cursor().map_err(|e| e.to_string())?;
        // Events a cut removed before forwarding was configured are gone.
        cursor = cursor.max(store.log().first_seq().saturating_sub(1));
        let mut sent = cursor;
        let mut marks: VecDeque<(u64, Instant)> = VecDeque::new();
        let mut scratch = [0u8; 1024];
        let mut out = Vec::with_capacity(1 << 20);
        loop {
            // The collector closing or failing means what was written
            // recently may be lost: leave the cursor where it is.
            tokio::select! {
                biased;
                r = rd.read(&mut scratch) => match r {
                    Ok(0) => return Err("the collector closed the connection".into()),
                    Ok(_) => {}
                    Err(e) => return Err(format!("connection: {e}")),
                },
                _ = std::future::ready(()) => {}
            }
            let mut advanced = false;
            while let Some(&(seq, at)) = marks.front() {
                if at.elapsed() < GRACE {
                    break;
                }
                cursor = seq;
                marks.pop_front();
                advanced = true;
            }
            if advanced {
                store
                    .set_forward_cursor(cursor)
                    .map_err(|e| format!("cursor: {e}"))?;
            }
            let log = store.clone();
            let from = sent + 1;
            let batch = tokio::task::spawn_blocking(move || log.log().raw_range(from, BATCH))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("reading the log: {e}"))?;
            if batch.is_empty() {
                tokio::select! {
                    r = rd.read(&mut scratch) => match r {
                        Ok(0) => return Err("the collector closed the connection".into()),
                        Ok(_) => {}
                        Err(e) => return Err(format!("connection: {e}")),
                    },
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                    _ = stop.changed() => return Ok(()),
                }
                continue;
            }
            out.clear();
            let mut last = sent;
            for (seq, raw) in &batch {
                last = *seq;
                // An undecodable record is still forwarded, as raw JSON, so
                // that the collector sees it (verify names it).
                let msg = match serde_json::from_slice::<SecurityEvent>(raw) {
                    Ok(ev) => rfc5424(&ev, &self.origin),
                    Err(_) => format!(
                        "<{}>1 - {} metergate {} audit.undecodable - {}",
                        u16::from(self.origin.facility) * 8 + 3,
                        self.origin.host,
                        self.origin.pid,
                        String::from_utf8_lossy(raw)
                    ),
                };
                octet_counted(&msg, &mut out);
            }
            tokio::time::timeout(IO_TIMEOUT, async {
                wr.write_all(&out).await?;
                wr.flush().await
            })
            .await
            .map_err(|_| "write timed out (the collector does not read)".to_string())?
            .map_err(|e| format!("write: {e}"))?;
            state.sent.fetch_add(batch.len() as u64, Ordering::Relaxed);
            sent = last;
            marks.push_back((sent, Instant::now()));
        }
    }
}
