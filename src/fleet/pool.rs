//! Connections to one meter: few (meters accept about 8 in all), shared by
//! every client, one request at a time each. The pool owns the transaction
//! ids on them; after a timeout a connection is dropped, never reused, so a
//! late reply can never reach another client. Writes are never retried.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::doors::modbus::frame::{self, Header};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("meter unreachable: {0}")]
    Unreachable(String),
    #[error("meter did not answer in time")]
    Timeout,
    #[error("too many requests are waiting for this meter")]
    Busy,
}

/// The gateway's link to one meter.
pub struct MeterLink {
    address: String,
    unit: u8,
    timeout: Duration,
    permits: Semaphore,
    waiting: AtomicUsize,
    max_waiting: usize,
    idle: Mutex<Vec<TcpStream>>,
    next_transaction: AtomicU16,
}

impl MeterLink {
    pub fn new(
        address: &str,
        unit: u8,
        max_connections: usize,
        timeout: Duration,
        max_waiting: usize,
    ) -> MeterLink {
        MeterLink {
            address: address.to_string(),
            unit,
            timeout,
            permits: Semaphore::new(max_connections.max(1)),
            waiting: AtomicUsize::new(0),
            max_waiting,
            idle: Mutex::new(Vec::new()),
            next_transaction: AtomicU16::new(1),
        }
    }

    /// Requests waiting for a connection (a metric; the queue is bounded).
    pub fn queue_depth(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    async fn connect(&self) -> Result<TcpStream, UpstreamError> {
        let stream = tokio::time::timeout(self.timeout, TcpStream::connect(&self.address))
            .await
            .map_err(|_| {
                UpstreamError::Unreachable(format!("{}: connect timed out", self.address))
            })?
            .map_err(|e| UpstreamError::Unreachable(format!("{}: {e}", self.address)))?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// Sends one request PDU and returns the meter's response PDU. A read may
    /// be sent again once on a fresh connection if a pooled one turned out
    /// dead before anything came back; a write never is.
    pub async fn call(&self, pdu: &[u8]) -> Result<Vec<u8>, UpstreamError> {
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(UpstreamError::Busy);
        }
        let permit = self.permits.acquire().await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        let _permit = permit.map_err(|_| UpstreamError::Unreachable("pool closed".into()))?;
        let is_read = matches!(pdu.first(), Some(1..=4) | Some(43));
        let pooled = self.idle.lock().ok().and_then(|mut v| v.pop());
        let (mut conn, was_pooled) = match pooled {
            Some(c) => (c, true),
            None => (self.connect().await?, false),
        };
        match self.exchange(&mut conn, pdu).await {
            Ok(answer) => {
                if let Ok(mut idle) = self.idle.lock() {
                    idle.push(conn);
                }
                Ok(answer)
            }
            Err(Exchange::Dead) if was_pooled && is_read => {
                let mut fresh = self.connect().await?;
                let answer = self
                    .exchange(&mut fresh, pdu)
                    .await
                    .map_err(Exchange::into_error)?;
                if let Ok(mut idle) = self.idle.lock() {
                    idle.push(fresh);
                }
                Ok(answer)
            }
            // The connection is dropped here: a late reply dies with it.
            Err(e) => Err(e.into_error()),
        }
    }

    async fn exchange(&self, conn: &mut TcpStream, pdu: &[u8]) -> Result<Vec<u8>, Exchange> {
        let transaction = self.next_transaction.fetch_add(1, Ordering::Relaxed);
        let request = frame::adu(
            Header {
                transaction,
                unit: self.unit,
            },
            pdu,
        );
        conn.write_all(&request).await.map_err(|_| Exchange::Dead)?;
        let mut buf = Vec::with_capacity(260);
        let mut chunk = [0u8; 300];
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let n = match tokio::time::timeout_at(deadline, conn.read(&mut chunk)).await {
                Err(_) => return Err(Exchange::Timeout),
                Ok(Err(_)) | Ok(Ok(0)) if buf.is_empty() => return Err(Exchange::Dead),
                Ok(Err(_)) | Ok(Ok(0)) => return Err(Exchange::Broken),
                Ok(Ok(n)) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            // Responses may carry exception function codes: check by hand.
            if buf.len() >= frame::MBAP_LEN {
                let length = u16::from_be_bytes([buf[4], buf[5]]) as usize;
                if !(2..=254).contains(&length) || buf[2..4] != [0, 0] {
                    return Err(Exchange::Broken);
                }
                if buf.len() >= 6 + length {
                    let got = u16::from_be_bytes([buf[0], buf[1]]);
                    if got != transaction || buf.len() > 6 + length {
                        return Err(Exchange::Broken);
                    }
                    return Ok(buf[frame::MBAP_LEN..6 + length].to_vec());
                }
            }
        }
    }
}

enum Exchange {
    /// Closed before anything came back (a stale pooled connection).
    Dead,
    Broken,
    Timeout,
}

impl Exchange {
    fn into_error(self) -> UpstreamError {
        match self {
            Exchange::Timeout => UpstreamError::Timeout,
            Exchange::Dead | Exchange::Broken => UpstreamError::Unreachable(
                "the meter closed the connection or answered out of turn".into(),
            ),
        }
    }
}
