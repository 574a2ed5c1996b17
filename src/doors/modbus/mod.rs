//! The plain Modbus/TCP door: SCADA clients, known by source address, reach
//! meters through the guard. Every ADU is parsed and authorized on its own;
//! outcomes follow DESIGN §4's table.

pub mod mbaps;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

use time::OffsetDateTime;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::config::{Config, ModbusClient};
use crate::fleet::pool::UpstreamError;
pub use crate::fleet::units::{UnitMap, unit_maps, unit_maps_reusing};
use crate::guard::{Action, CertificateClaim, Guard, Request, WriteValues};
use crate::mbap::{self as frame, FrameError, Header, Pdu, exception};
use crate::model::{PrincipalId, micros};
use crate::sessions::Sessions;
use crate::store::{Category, EventDraft, Outcome};

/// A connection with nothing to say for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// A frame begun must be finished this fast (slowloris).
const PARTIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Events from unauthenticated or malformed traffic: one per source and
/// kind for each interval, with a count, so garbage cannot flood the log.
const FLOOD_INTERVAL: Duration = Duration::from_secs(60);

/// Who is on a connection, as the door established it.
pub struct Caller {
    pub principal: PrincipalId,
    /// A plain client entry without `allow_writes`.
    pub read_only: bool,
    /// The verified client certificate (Modbus/TCP Security).
    pub certificate: Option<Arc<CertificateClaim>>,
}

/// The part both Modbus doors share: one ADU at a time through the guard to
/// the meter pool.
pub struct Proxy {
    pub door: &'static str,
    pub guard: Arc<Guard>,
    /// Swapped whole on reload; a request uses the map it started with.
    pub units: ArcSwap<UnitMap>,
    pub floods: Arc<Floods>,
}

impl Proxy {
    pub fn new(door: &'static str, guard: Arc<Guard>, units: Arc<UnitMap>) -> Proxy {
        Proxy {
            door,
            floods: Arc::new(Floods::new(guard.clone(), door)),
            guard,
            units: ArcSwap::new(units),
        }
    }

    /// The accept loop of a Modbus door: each connection in its own task,
    /// aggregated events flushed every interval and at the end.
    pub async fn accept_until<F, Fut>(
        &self,
        listener: TcpListener,
        mut stop: watch::Receiver<bool>,
        connection: F,
    ) where
        F: Fn(TcpStream, SocketAddr) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let flusher = tokio::spawn(self.floods.clone().flush_every(FLOOD_INTERVAL));
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        tokio::spawn(connection(stream, peer));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, door = self.door, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }
        flusher.abort();
        self.floods.flush().await;
    }

    /// Serves ADUs on an established connection until the client leaves, a
    /// timeout or a malformed frame closes it, or the session is ended.
    pub async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut stream: S,
        peer: SocketAddr,
        caller: &Caller,
        mut ended: watch::Receiver<Option<String>>,
    ) {
        let mut buf: Vec<u8> = Vec::with_capacity(1024);
        let mut chunk = [0u8; 2048];
        loop {
            let wait = if buf.is_empty() {
                IDLE_TIMEOUT
            } else {
                PARTIAL_TIMEOUT
            };
            let n = tokio::select! {
                _ = ended.changed() => {
                    let _ = stream.shutdown().await;
                    return;
                }
                r = tokio::time::timeout(wait, stream.read(&mut chunk)) => match r {
                    Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
                    Ok(Ok(n)) => n,
                },
            };
            buf.extend_from_slice(&chunk[..n]);
            let mut out = Vec::new();
            let mut consumed = 0;
            loop {
                match frame::split(&buf[consumed..]) {
                    Ok(None) => break,
                    Err(e) => {
                        self.floods
                            .count(peer.ip(), "modbus.bad-frame", &close_reason(e));
                        let _ = stream.write_all(&out).await;
                        let _ = stream.shutdown().await;
                        return;
                    }
                    Ok(Some((h, pdu, used))) => {
                        let pdu = pdu.to_vec();
                        consumed += used;
                        let started = std::time::Instant::now();
                        if let Some(answer) = self.request(caller, peer, h, &pdu).await {
                            out.extend_from_slice(&frame::adu(h, &answer));
                        }
                        self.guard
                            .counters
                            .latency
                            .of(self.door)
                            .observe(started.elapsed());
                    }
                }
            }
            buf.drain(..consumed);
            if !out.is_empty()
                && (stream.write_all(&out).await.is_err() || stream.flush().await.is_err())
            {
                return;
            }
        }
    }

    /// One ADU: its answer PDU, or None when nothing may be answered.
    async fn request(
        &self,
        caller: &Caller,
        peer: SocketAddr,
        h: Header,
        raw: &[u8],
    ) -> Option<Vec<u8>> {
        let f = raw[0];
        let fail = |code: u8| Some(frame::exception_pdu(f, code).to_vec());
        if h.unit == 0 {
            // Broadcast: no reply is possible, so it is never forwarded.
            self.floods.count(
                peer.ip(),
                "modbus.broadcast",
                "unit 0 (broadcast) is never forwarded",
            );
            return None;
        }
        let units = self.units.load();
        let Some((meter, link)) = units.get(&h.unit) else {
            return fail(exception::GATEWAY_PATH_UNAVAILABLE);
        };
        let pdu = match Pdu::decode(raw) {
            Ok(p) => p,
            Err(code) => return fail(code),
        };
        let Some(action) = action_of(meter, &pdu) else {
            return fail(exception::ILLEGAL_FUNCTION);
        };
        let req = Request {
            principal: caller.principal.clone(),
            source: Some(peer.ip().to_string()),
            door: self.door,
            action,
            read_only: caller.read_only,
            certificate: caller.certificate.clone(),
        };
        let decision = self.guard.authorize(&req, OffsetDateTime::now_utc()).await;
        if !decision.allowed {
            return fail(exception::ILLEGAL_FUNCTION);
        }
        match link.call(raw).await {
            Ok(answer) => Some(answer),
            Err(UpstreamError::Busy) => {
                self.floods.count(
                    peer.ip(),
                    "modbus.busy",
                    "the meter's request queue is full (modbus.max_queue)",
                );
                fail(exception::SERVER_DEVICE_BUSY)
            }
            Err(UpstreamError::Timeout) => fail(exception::GATEWAY_TARGET_FAILED),
            Err(UpstreamError::Unreachable(_)) => fail(exception::GATEWAY_PATH_UNAVAILABLE),
        }
    }
}

/// A plain Modbus/TCP listener: clients are known by source address only.
pub struct ModbusDoor {
    pub proxy: Proxy,
    sessions: Arc<Sessions>,
    /// Swapped whole on reload.
    clients: ArcSwap<Vec<ModbusClient>>,
}

impl ModbusDoor {
    /// The doors for every configured plain listener (index = `modbus.listen`).
    pub fn from_config(
        config: &Config,
        guard: Arc<Guard>,
        sessions: Arc<Sessions>,
        maps: &[Arc<UnitMap>],
    ) -> Vec<ModbusDoor> {
        (0..config.modbus_listen.len())
            .map(|l| ModbusDoor {
                proxy: Proxy::new("modbus", guard.clone(), maps[l].clone()),
                sessions: sessions.clone(),
                clients: ArcSwap::from_pointee(config.modbus_clients.clone()),
            })
            .collect()
    }

    /// Takes the reloaded client entries; sessions whose source no longer
    /// maps to the same service user are ended, the others go on.
    pub fn set_clients(&self, clients: Vec<ModbusClient>) -> usize {
        let mut ended = 0;
        for s in self.sessions.list().iter().filter(|s| s.door == "modbus") {
            let Ok(peer) = s.source.parse::<SocketAddr>() else {
                continue;
            };
            let still = ModbusClient::lookup(&clients, peer.ip()).is_some_and(|c| {
                PrincipalId::Service(c.service_user.clone()).to_string() == s.principal
            });
            if !still
                && self
                    .sessions
                    .kill(s.id, "its modbus.clients entry was removed or changed")
            {
                ended += 1;
            }
        }
        self.clients.store(Arc::new(clients));
        ended
    }

    /// Accepts until `stop` fires.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, stop: watch::Receiver<bool>) {
        let door = self.clone();
        self.proxy
            .accept_until(listener, stop, move |stream, peer| {
                let door = door.clone();
                async move { door.connection(stream, peer).await }
            })
            .await;
    }

    async fn connection(&self, stream: TcpStream, peer: SocketAddr) {
        let clients = self.clients.load();
        let Some(client) = ModbusClient::lookup(&clients, peer.ip()) else {
            self.proxy.floods.count(
                peer.ip(),
                "modbus.refused-source",
                "source matches no modbus.clients entry",
            );
            return;
        };
        let _ = stream.set_nodelay(true);
        let caller = Caller {
            principal: PrincipalId::Service(client.service_user.clone()),
            read_only: !client.allow_writes,
            certificate: None,
        };
        let session = self.sessions.register(
            &caller.principal,
            &peer.to_string(),
            "modbus",
            None,
            micros(OffsetDateTime::now_utc()),
        );
        self.proxy
            .serve_connection(stream, peer, &caller, session.ended.clone())
            .await;
    }
}

fn close_reason(e: FrameError) -> String {
    format!("connection closed: {e}")
}

/// The guard action for a decoded request; None for codes the gateway never
/// forwards (43 other than 14, user-defined codes): exception 01.
pub fn action_of(meter: &str, pdu: &Pdu) -> Option<Action> {
    let meter = meter.to_string();
    let write = |function: u8, start: u16, values: WriteValues, read: Option<(u16, u16)>| {
        Action::WriteRegisters {
            meter: meter.clone(),
            function,
            start,
            values,
            read,
        }
    };
    Some(match pdu {
        Pdu::ReadBits {
            function,
            start,
            count,
        }
        | Pdu::ReadRegisters {
            function,
            start,
            count,
        } => Action::ReadRegisters {
            meter,
            function: *function,
            start: *start,
            count: *count,
        },
        Pdu::DeviceId { .. } => Action::ReadRegisters {
            meter,
            function: 43,
            start: 0,
            count: 0,
        },
        Pdu::WriteCoil { address, on } => {
            write(5, *address, WriteValues::Known(vec![*on as u16]), None)
        }
        Pdu::WriteRegister { address, value } => {
            write(6, *address, WriteValues::Known(vec![*value]), None)
        }
        Pdu::WriteCoils { start, values } => write(
            15,
            *start,
            WriteValues::Known(values.iter().map(|b| *b as u16).collect()),
            None,
        ),
        Pdu::WriteRegisters { start, values } => {
            write(16, *start, WriteValues::Known(values.clone()), None)
        }
        Pdu::MaskWrite { address, .. } => write(22, *address, WriteValues::Any { count: 1 }, None),
        Pdu::ReadWrite {
            read_start,
            read_count,
            write_start,
            values,
        } => write(
            23,
            *write_start,
            WriteValues::Known(values.clone()),
            Some((*read_start, *read_count)),
        ),
        Pdu::Diagnostics { sub_function } => Action::Diagnostics {
            meter,
            sub_function: *sub_function,
        },
        Pdu::Other { .. } => return None,
    })
}

/// A source address and the kind of refused traffic from it.
type FloodKey = (IpAddr, &'static str);

/// Refused and malformed traffic per (source, kind): the first in each
/// interval is logged at once (it is visible while someone is testing), the
/// rest are counted into one event at the interval's end, so garbage cannot
/// flood the log.
pub struct Floods {
    guard: Arc<Guard>,
    door: &'static str,
    counts: Mutex<HashMap<FloodKey, (u64, String)>>,
}

/// Distinct sources remembered per interval; beyond, they share one entry.
const FLOOD_SOURCES: usize = 10_000;

impl Floods {
    pub fn new(guard: Arc<Guard>, door: &'static str) -> Floods {
        Floods {
            guard,
            door,
            counts: Mutex::new(HashMap::new()),
        }
    }

    pub fn count(&self, source: IpAddr, kind: &'static str, reason: &str) {
        let first = {
            let Ok(mut c) = self.counts.lock() else {
                return;
            };
            let key = if c.len() >= FLOOD_SOURCES && !c.contains_key(&(source, kind)) {
                (IpAddr::from([0u8, 0, 0, 0]), kind)
            } else {
                (source, kind)
            };
            match c.get_mut(&key) {
                Some(entry) => {
                    entry.0 += 1;
                    false
                }
                None => {
                    c.insert(key, (0, reason.to_string()));
                    true
                }
            }
        };
        if first {
            let ev = self.event(source, kind, reason, 1);
            let guard = self.guard.clone();
            tokio::spawn(async move {
                guard.record_unauthenticated(ev).await;
            });
        }
    }

    fn event(&self, source: IpAddr, kind: &str, reason: &str, count: u64) -> EventDraft {
        // Refused TLS handshakes are failed authentications.
        let category = if kind.starts_with("mbaps.") {
            Category::Authentication
        } else {
            Category::Modbus
        };
        EventDraft::new(kind, category, Outcome::Deny)
            .source(source)
            .door(self.door)
            .reason(reason)
            .detail("count", count)
    }

    /// One event per (source, kind) with the count since its first.
    pub async fn flush(&self) {
        let drained: Vec<_> = match self.counts.lock() {
            Ok(mut c) => c.drain().collect(),
            Err(_) => return,
        };
        for ((source, kind), (count, reason)) in drained {
            if count > 0 {
                let ev = self.event(source, kind, &reason, count);
                self.guard.record_unauthenticated(ev).await;
            }
        }
        // What the quota held back is counted in one event.
        self.guard.report_suppressed().await;
    }

    pub async fn flush_every(self: Arc<Self>, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            self.flush().await;
        }
    }
}
