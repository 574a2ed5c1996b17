//! The plain Modbus/TCP door: SCADA clients, known by source address, reach
//! meters through the guard. Every ADU is parsed and authorized on its own;
//! outcomes follow DESIGN §4's table.

pub mod mbaps;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use time::OffsetDateTime;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::config::{Config, ModbusClient};
use crate::fleet::pool::UpstreamError;
pub use crate::fleet::units::{UnitMap, unit_maps, unit_maps_reusing};
use crate::guard::{Action, CertificateClaim, Guard, Request, WriteValues};
use crate::listen::{Floods, Gate, Shutdown};
use crate::mbap::{self as frame, FrameError, Header, Pdu, exception};
use crate::model::{PrincipalId, micros};
use crate::sessions::Sessions;

/// A connection with nothing to say for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// A frame begun must be finished this fast (slowloris).
const PARTIAL_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// Refused and malformed traffic, aggregated.
    pub floods: Arc<Floods>,
    /// The first complete request comes within this of accept.
    first_request: Duration,
}

impl Proxy {
    pub fn new(
        door: &'static str,
        guard: Arc<Guard>,
        units: Arc<UnitMap>,
        first_request: Duration,
    ) -> Proxy {
        Proxy {
            door,
            floods: Arc::new(Floods::new(guard.clone(), door)),
            guard,
            units: ArcSwap::new(units),
            first_request,
        }
    }

    /// When a connection accepted now must have sent its first request.
    pub fn first_request_deadline(&self) -> Instant {
        Instant::now() + self.first_request
    }

    /// Serves ADUs on an established connection until the client leaves, a
    /// timeout or a malformed frame closes it, or the session is ended.
    /// `first_request` is when the first complete request must have come.
    pub async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut stream: S,
        peer: SocketAddr,
        caller: &Caller,
        mut ended: watch::Receiver<Option<String>>,
        first_request: Instant,
    ) {
        let mut buf: Vec<u8> = Vec::with_capacity(1024);
        let mut chunk = [0u8; 2048];
        let mut answered = false;
        loop {
            let until = if !answered {
                first_request
            } else if buf.is_empty() {
                Instant::now() + IDLE_TIMEOUT
            } else {
                Instant::now() + PARTIAL_TIMEOUT
            };
            let n = tokio::select! {
                _ = ended.changed() => {
                    let _ = stream.shutdown().await;
                    return;
                }
                r = tokio::time::timeout_at(until, stream.read(&mut chunk)) => match r {
                    Ok(Ok(0)) | Ok(Err(_)) => return,
                    Err(_) => {
                        if !answered {
                            self.floods.count(
                                Some(peer.ip()),
                                "modbus.first-request-timeout",
                                &format!(
                                    "no complete request within limits.first_request_timeout ({} s) of connecting",
                                    self.first_request.as_secs()
                                ),
                            );
                        }
                        return;
                    }
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
                            .count(Some(peer.ip()), "modbus.bad-frame", &close_reason(e));
                        let _ = stream.write_all(&out).await;
                        let _ = stream.shutdown().await;
                        return;
                    }
                    Ok(Some((h, pdu, used))) => {
                        let pdu = pdu.to_vec();
                        consumed += used;
                        answered = true;
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
                Some(peer.ip()),
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
            second_factor: false,
            recorded: false,
        };
        let decision = self.guard.authorize(&req, OffsetDateTime::now_utc()).await;
        if !decision.allowed {
            return fail(exception::ILLEGAL_FUNCTION);
        }
        match link.call(raw).await {
            Ok(answer) => Some(answer),
            Err(UpstreamError::Busy) => {
                self.floods.count(
                    Some(peer.ip()),
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
                proxy: Proxy::new(
                    "modbus",
                    guard.clone(),
                    maps[l].clone(),
                    config.limits.first_request_timeout.0,
                ),
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
        let clients = self.clients.load();
        let Some(client) = ModbusClient::lookup(&clients, peer.ip()) else {
            self.proxy.floods.count(
                Some(peer.ip()),
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
            .serve_connection(stream, peer, &caller, session.ended.clone(), first_request)
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
