//! Connections to one meter: few (meters accept about 8 in all), shared by
//! every client. Each connection may carry up to `pipeline` requests at once;
//! the pool owns the transaction ids on it and a reader task hands every
//! answer to the request with that id. After a timeout the connection takes
//! no new request and is closed once its other requests are answered: a late
//! reply matches no waiting id and is dropped, so it can never reach another
//! client. Writes are never retried.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Semaphore, oneshot};

use crate::mbap::{self as frame, Header};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("meter unreachable: {0}")]
    Unreachable(String),
    #[error("meter did not answer in time")]
    Timeout,
    #[error("too many requests are waiting for this meter")]
    Busy,
}

/// One TCP connection to the meter.
struct Conn {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    pending: Mutex<HashMap<u16, oneshot::Sender<Vec<u8>>>>,
    next_transaction: AtomicU16,
    /// False once it timed out or broke: no new request goes on it.
    usable: AtomicBool,
    in_flight: AtomicUsize,
}

/// The gateway's link to one meter.
/// What a meter's pool was built from; a reload keeps a pool whose
/// settings did not change (and so its open connections).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkSettings {
    pub address: String,
    pub unit_id: u8,
    pub max_connections: usize,
    pub pipeline: usize,
    pub timeout: Duration,
    pub max_queue: usize,
}

pub struct MeterLink {
    settings: LinkSettings,
    address: String,
    unit: u8,
    timeout: Duration,
    permits: Semaphore,
    waiting: AtomicUsize,
    max_waiting: usize,
    /// Requests refused with 0x06 since start (a metric).
    busy: std::sync::atomic::AtomicU64,
    lanes: Vec<Mutex<Option<Arc<Conn>>>>,
    /// Held while a lane connects, so two callers never open the same lane.
    connecting: tokio::sync::Mutex<()>,
    /// How the last request went (the shell's `meters`).
    last: Mutex<Option<Result<(), UpstreamError>>>,
}

/// A meter's health as the gateway last saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// No request went to the meter yet.
    Unknown,
    /// The last request was answered.
    Up,
    /// The last request failed, and why.
    Down(String),
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Health::Unknown => f.write_str("not polled yet"),
            Health::Up => f.write_str("up"),
            Health::Down(why) => write!(f, "down ({why})"),
        }
    }
}

impl MeterLink {
    /// `max_connections` connections, each with up to `pipeline` requests in
    /// flight (1: one at a time, for meters that cannot queue requests).
    pub fn new(
        address: &str,
        unit: u8,
        max_connections: usize,
        pipeline: usize,
        timeout: Duration,
        max_waiting: usize,
    ) -> MeterLink {
        let lanes = max_connections.max(1);
        MeterLink {
            settings: LinkSettings {
                address: address.to_string(),
                unit_id: unit,
                max_connections,
                pipeline,
                timeout,
                max_queue: max_waiting,
            },
            address: address.to_string(),
            unit,
            timeout,
            permits: Semaphore::new(lanes * pipeline.max(1)),
            waiting: AtomicUsize::new(0),
            max_waiting,
            busy: std::sync::atomic::AtomicU64::new(0),
            lanes: (0..lanes).map(|_| Mutex::new(None)).collect(),
            connecting: tokio::sync::Mutex::new(()),
            last: Mutex::new(None),
        }
    }

    /// Open connections to the meter, of `lanes()`.
    pub fn connected(&self) -> usize {
        self.lanes
            .iter()
            .filter(|l| l.lock().map(|c| c.is_some()).unwrap_or(false))
            .count()
    }

    pub fn lanes(&self) -> usize {
        self.lanes.len()
    }

    /// Requests waiting for a connection (the pool's queue depth).
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    pub fn settings(&self) -> LinkSettings {
        self.settings.clone()
    }

    /// Requests refused because the queue was full (a metric).
    pub fn busy_refusals(&self) -> u64 {
        self.busy.load(Ordering::Relaxed)
    }

    /// Requests waiting for room on this meter's connections (a metric).
    pub fn queue_depth(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    async fn connect(&self) -> Result<Arc<Conn>, UpstreamError> {
        let stream = tokio::time::timeout(self.timeout, TcpStream::connect(&self.address))
            .await
            .map_err(|_| {
                UpstreamError::Unreachable(format!("{}: connect timed out", self.address))
            })?
            .map_err(|e| UpstreamError::Unreachable(format!("{}: {e}", self.address)))?;
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let conn = Arc::new(Conn {
            writer: tokio::sync::Mutex::new(write),
            pending: Mutex::new(HashMap::new()),
            next_transaction: AtomicU16::new(1),
            usable: AtomicBool::new(true),
            in_flight: AtomicUsize::new(0),
        });
        tokio::spawn(reader(read, conn.clone(), self.timeout));
        Ok(conn)
    }

    /// The least busy usable connection, connecting a lane if needed.
    async fn conn(&self) -> Result<Arc<Conn>, UpstreamError> {
        let mut best: Option<(usize, Option<Arc<Conn>>)> = None;
        for (i, lane) in self.lanes.iter().enumerate() {
            let current = lane
                .lock()
                .ok()
                .and_then(|l| l.clone())
                .filter(|c| c.usable.load(Ordering::Acquire));
            let load = current
                .as_ref()
                .map_or(0, |c| c.in_flight.load(Ordering::Relaxed));
            if best.as_ref().is_none_or(|(_, b)| {
                b.as_ref()
                    .map_or(0, |c| c.in_flight.load(Ordering::Relaxed))
                    > load
            }) {
                best = Some((i, current));
            }
        }
        match best {
            Some((_, Some(c))) => Ok(c),
            Some((i, None)) => {
                let _one_at_a_time = self.connecting.lock().await;
                let current = self.lanes[i].lock().ok().and_then(|l| l.clone());
                if let Some(c) = current.filter(|c| c.usable.load(Ordering::Acquire)) {
                    return Ok(c);
                }
                let c = self.connect().await?;
                if let Ok(mut lane) = self.lanes[i].lock() {
                    *lane = Some(c.clone());
                }
                Ok(c)
            }
            None => Err(UpstreamError::Unreachable("no connection lanes".into())),
        }
    }

    /// How the last request to the meter went.
    pub fn health(&self) -> Health {
        match self.last.lock().ok().and_then(|l| l.clone()) {
            None => Health::Unknown,
            Some(Ok(())) => Health::Up,
            Some(Err(e)) => Health::Down(e.to_string()),
        }
    }

    /// Sends one request PDU and returns the meter's response PDU.
    pub async fn call(&self, pdu: &[u8]) -> Result<Vec<u8>, UpstreamError> {
        let r = self.call_once(pdu).await;
        if !matches!(r, Err(UpstreamError::Busy))
            && let Ok(mut last) = self.last.lock()
        {
            *last = Some(r.as_ref().map(|_| ()).map_err(Clone::clone));
        }
        r
    }

    async fn call_once(&self, pdu: &[u8]) -> Result<Vec<u8>, UpstreamError> {
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            self.busy.fetch_add(1, Ordering::Relaxed);
            return Err(UpstreamError::Busy);
        }
        let permit = self.permits.acquire().await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        let _permit = permit.map_err(|_| UpstreamError::Unreachable("pool closed".into()))?;
        let is_read = matches!(pdu.first(), Some(1..=4) | Some(43));
        let conn = self.conn().await?;
        match self.exchange(&conn, pdu).await {
            // A read whose connection was found dead before it was sent may
            // go once more on a fresh one; a write never does.
            Err(Sent::Unsent) if is_read => {
                let fresh = self.conn().await?;
                self.exchange(&fresh, pdu).await.map_err(Sent::into_error)
            }
            other => other.map_err(Sent::into_error),
        }
    }

    async fn exchange(&self, conn: &Arc<Conn>, pdu: &[u8]) -> Result<Vec<u8>, Sent> {
        let (tx, rx) = oneshot::channel();
        let transaction = {
            let Ok(mut pending) = conn.pending.lock() else {
                return Err(Sent::Unsent);
            };
            let mut t = conn.next_transaction.fetch_add(1, Ordering::Relaxed);
            while pending.contains_key(&t) {
                t = conn.next_transaction.fetch_add(1, Ordering::Relaxed);
            }
            pending.insert(t, tx);
            t
        };
        conn.in_flight.fetch_add(1, Ordering::Relaxed);
        let result = self.send_and_wait(conn, transaction, pdu, rx).await;
        conn.in_flight.fetch_sub(1, Ordering::Relaxed);
        if result.is_err() {
            // Its id is forgotten: a late answer is dropped by the reader.
            if let Ok(mut p) = conn.pending.lock() {
                p.remove(&transaction);
            }
            // A connection that timed out or broke takes no new request.
            conn.usable.store(false, Ordering::Release);
        }
        result
    }

    async fn send_and_wait(
        &self,
        conn: &Conn,
        transaction: u16,
        pdu: &[u8],
        rx: oneshot::Receiver<Vec<u8>>,
    ) -> Result<Vec<u8>, Sent> {
        let request = frame::adu(
            Header {
                transaction,
                unit: self.unit,
            },
            pdu,
        );
        if conn.writer.lock().await.write_all(&request).await.is_err() {
            return Err(Sent::Unsent);
        }
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(Sent::Broken),
            Err(_) => Err(Sent::Timeout),
        }
    }
}

/// Hands each answer to the request with its transaction id; answers with
/// no such request (late ones) are dropped. Ends when the meter closes, the
/// stream breaks, or a retired connection has nothing left to wait for.
async fn reader(mut read: OwnedReadHalf, conn: Arc<Conn>, timeout: Duration) {
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let retired = !conn.usable.load(Ordering::Acquire);
        if retired && conn.pending.lock().map(|p| p.is_empty()).unwrap_or(true) {
            break;
        }
        let n = match tokio::time::timeout(
            if retired {
                timeout
            } else {
                Duration::from_secs(3600)
            },
            read.read(&mut chunk),
        )
        .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Err(_) if retired => break,
            Err(_) => continue,
            Ok(Ok(n)) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut used = 0;
        // Answers may carry exception function codes: parsed by hand.
        while buf.len() - used >= frame::MBAP_LEN {
            let b = &buf[used..];
            let length = u16::from_be_bytes([b[4], b[5]]) as usize;
            if !(2..=254).contains(&length) || b[2..4] != [0, 0] {
                conn.usable.store(false, Ordering::Release);
                if let Ok(mut p) = conn.pending.lock() {
                    p.clear();
                }
                return;
            }
            if b.len() < 6 + length {
                break;
            }
            let transaction = u16::from_be_bytes([b[0], b[1]]);
            let answer = b[frame::MBAP_LEN..6 + length].to_vec();
            if let Some(tx) = conn
                .pending
                .lock()
                .ok()
                .and_then(|mut p| p.remove(&transaction))
            {
                let _ = tx.send(answer);
            }
            used += 6 + length;
        }
        buf.drain(..used);
    }
    conn.usable.store(false, Ordering::Release);
    // Whoever still waits learns the connection is gone.
    if let Ok(mut p) = conn.pending.lock() {
        p.clear();
    }
}

/// How an exchange failed.
enum Sent {
    /// The request never left (the connection was already dead).
    Unsent,
    Broken,
    Timeout,
}

impl Sent {
    fn into_error(self) -> UpstreamError {
        match self {
            Sent::Timeout => UpstreamError::Timeout,
            Sent::Unsent | Sent::Broken => {
                UpstreamError::Unreachable("the meter closed the connection".into())
            }
        }
    }
}
