//! Metrics in the Prometheus text format on a loopback address: decisions by
//! door, request latency, sessions, meter pools, the security log, review.
//! The endpoint answers `GET /metrics` and nothing else.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The doors decisions are counted for; anything else counts as `other`.
pub const DOORS: [&str; 6] = ["modbus", "mbaps", "control-socket", "ssh", "sftp", "other"];

fn door_index(door: &str) -> usize {
    DOORS
        .iter()
        .position(|d| *d == door)
        .unwrap_or(DOORS.len() - 1)
}

/// Allowed and denied decisions per door.
#[derive(Default)]
pub struct Decisions {
    allow: [AtomicU64; 6],
    deny: [AtomicU64; 6],
}

impl Decisions {
    pub fn count(&self, door: &str, allowed: bool) {
        let i = door_index(door);
        let c = if allowed {
            &self.allow[i]
        } else {
            &self.deny[i]
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String) {
        out.push_str("# HELP metergate_decisions_total Guard decisions by door and outcome.\n");
        out.push_str("# TYPE metergate_decisions_total counter\n");
        for (i, door) in DOORS.iter().enumerate() {
            for (decision, c) in [("allow", &self.allow[i]), ("deny", &self.deny[i])] {
                let _ = writeln!(
                    out,
                    "metergate_decisions_total{{door=\"{door}\",decision=\"{decision}\"}} {}",
                    c.load(Ordering::Relaxed)
                );
            }
        }
    }
}

/// Upper bounds of the latency buckets, in µs.
const BUCKETS_US: [u64; 14] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000,
];

/// A latency histogram (cumulative buckets are computed when rendered).
#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; 15],
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        let i = BUCKETS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(BUCKETS_US.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    fn render(&self, name: &str, labels: &str, out: &mut String) {
        let mut cumulative = 0;
        for (i, b) in BUCKETS_US.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels},le=\"{}\"}} {cumulative}",
                *b as f64 / 1e6
            );
        }
        cumulative += self.buckets[BUCKETS_US.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(
            out,
            "{name}_sum{{{labels}}} {}",
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

/// Request latency (receipt to answer) of the Modbus doors.
#[derive(Default)]
pub struct Latency {
    pub modbus: Histogram,
    pub mbaps: Histogram,
}

impl Latency {
    pub fn of(&self, door: &str) -> &Histogram {
        if door == "mbaps" {
            &self.mbaps
        } else {
            &self.modbus
        }
    }

    fn render(&self, out: &mut String) {
        out.push_str(
            "# HELP metergate_request_seconds Modbus request latency through the gateway.\n",
        );
        out.push_str("# TYPE metergate_request_seconds histogram\n");
        self.modbus
            .render("metergate_request_seconds", "door=\"modbus\"", out);
        self.mbaps
            .render("metergate_request_seconds", "door=\"mbaps\"", out);
    }
}

/// One meter's pool as the metrics see it.
pub struct MeterSample {
    pub id: String,
    pub connected: usize,
    pub lanes: usize,
    pub waiting: usize,
    pub busy_refusals: u64,
}

/// The log's capacity, failures and forwarding.
#[derive(Default)]
pub struct AuditSample {
    pub stored: u64,
    pub capacity: u64,
    pub warning: bool,
    pub refused_full: u64,
    pub dropped: u64,
    pub suppressed: u64,
    /// First bad seq found at start (0: none).
    pub chain_broken_at: u64,
    /// (connected, backlog, reconnects) when forwarding is configured.
    pub forward: Option<(bool, u64, u64)>,
}

/// Everything a scrape reads, gathered by the daemon.
pub struct Sample {
    pub decisions: String,
    pub latency: String,
    pub sessions: Vec<(String, usize)>,
    pub meters: Vec<MeterSample>,
    pub audit_events: u64,
    pub audit_pending: u64,
    pub audit_alarm: bool,
    pub audit: AuditSample,
    pub reads_allowed: u64,
    pub reads_denied: u64,
    pub review_overdue: bool,
    /// Ready-made lines of other parts (session recordings).
    pub more: String,
}

pub fn render_decisions(d: &Decisions) -> String {
    let mut s = String::new();
    d.render(&mut s);
    s
}

pub fn render_latency(l: &Latency) -> String {
    let mut s = String::new();
    l.render(&mut s);
    s
}

/// Label values are ids from the config; quotes and backslashes escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Sample {
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str(&self.decisions);
        out.push_str(&self.latency);
        out.push_str(&self.more);
        out.push_str("# HELP metergate_reads_total Reads decided (counted, not logged unless audit.read_events).\n");
        out.push_str("# TYPE metergate_reads_total counter\n");
        let _ = writeln!(
            out,
            "metergate_reads_total{{decision=\"allow\"}} {}\nmetergate_reads_total{{decision=\"deny\"}} {}",
            self.reads_allowed, self.reads_denied
        );
        out.push_str("# HELP metergate_sessions Live sessions by door.\n");
        out.push_str("# TYPE metergate_sessions gauge\n");
        for (door, n) in &self.sessions {
            let _ = writeln!(out, "metergate_sessions{{door=\"{}\"}} {n}", label(door));
        }
        out.push_str("# HELP metergate_meter_up 1 if the gateway holds at least one open connection to the meter.\n");
        out.push_str("# TYPE metergate_meter_up gauge\n");
        for m in &self.meters {
            let _ = writeln!(
                out,
                "metergate_meter_up{{meter=\"{}\"}} {}",
                label(&m.id),
                u8::from(m.connected > 0)
            );
        }
        out.push_str("# HELP metergate_meter_connections Open connections to the meter (of its max_connections).\n");
        out.push_str("# TYPE metergate_meter_connections gauge\n");
        for m in &self.meters {
            let _ = writeln!(
                out,
                "metergate_meter_connections{{meter=\"{}\",max=\"{}\"}} {}",
                label(&m.id),
                m.lanes,
                m.connected
            );
        }
        out.push_str(
            "# HELP metergate_pool_queue_depth Requests waiting for the meter's connections.\n",
        );
        out.push_str("# TYPE metergate_pool_queue_depth gauge\n");
        for m in &self.meters {
            let _ = writeln!(
                out,
                "metergate_pool_queue_depth{{meter=\"{}\"}} {}",
                label(&m.id),
                m.waiting
            );
        }
        out.push_str(
            "# HELP metergate_pool_busy_total Requests refused with exception 06 (queue full).\n",
        );
        out.push_str("# TYPE metergate_pool_busy_total counter\n");
        for m in &self.meters {
            let _ = writeln!(
                out,
                "metergate_pool_busy_total{{meter=\"{}\"}} {}",
                label(&m.id),
                m.busy_refusals
            );
        }
        let _ = write!(
            out,
            "# HELP metergate_audit_events Events in the security log (its last seq).\n\
             # TYPE metergate_audit_events gauge\nmetergate_audit_events {}\n\
             # HELP metergate_audit_pending Events waiting to be made durable (the log writer's backlog).\n\
             # TYPE metergate_audit_pending gauge\nmetergate_audit_pending {}\n\
             # HELP metergate_audit_alarm 1 after an event could not be made durable (fail-open).\n\
             # TYPE metergate_audit_alarm gauge\nmetergate_audit_alarm {}\n\
             # HELP metergate_review_overdue 1 when a review of users and roles is due.\n\
             # TYPE metergate_review_overdue gauge\nmetergate_review_overdue {}\n",
            self.audit_events,
            self.audit_pending,
            u8::from(self.audit_alarm),
            u8::from(self.review_overdue)
        );
        let a = &self.audit;
        let _ = write!(
            out,
            "# HELP metergate_audit_stored_events Events stored now (capacity is counted in events).\n\
             # TYPE metergate_audit_stored_events gauge\nmetergate_audit_stored_events {}\n\
             # HELP metergate_audit_capacity_events The log's capacity (audit.capacity_events).\n\
             # TYPE metergate_audit_capacity_events gauge\nmetergate_audit_capacity_events {}\n\
             # HELP metergate_audit_capacity_warning 1 from the warning threshold (audit.warn_at_percent) on.\n\
             # TYPE metergate_audit_capacity_warning gauge\nmetergate_audit_capacity_warning {}\n\
             # HELP metergate_audit_refused_full_total Events refused because the log was full.\n\
             # TYPE metergate_audit_refused_full_total counter\nmetergate_audit_refused_full_total {}\n\
             # HELP metergate_audit_dropped_total Events removed by drop-oldest (behind signed cut markers).\n\
             # TYPE metergate_audit_dropped_total counter\nmetergate_audit_dropped_total {}\n\
             # HELP metergate_audit_unauthenticated_suppressed_total Events from unauthenticated traffic over the quota: counted, not logged.\n\
             # TYPE metergate_audit_unauthenticated_suppressed_total counter\nmetergate_audit_unauthenticated_suppressed_total {}\n\
             # HELP metergate_audit_chain_broken_seq First bad seq the chain check at start found (0: the chain verified).\n\
             # TYPE metergate_audit_chain_broken_seq gauge\nmetergate_audit_chain_broken_seq {}\n",
            a.stored,
            a.capacity,
            u8::from(a.warning),
            a.refused_full,
            a.dropped,
            a.suppressed,
            a.chain_broken_at
        );
        if let Some((connected, backlog, reconnects)) = a.forward {
            let _ = write!(
                out,
                "# HELP metergate_audit_forward_connected 1 while connected to the syslog collector.\n\
                 # TYPE metergate_audit_forward_connected gauge\nmetergate_audit_forward_connected {}\n\
                 # HELP metergate_audit_forward_backlog Events not yet delivered to the syslog collector.\n\
                 # TYPE metergate_audit_forward_backlog gauge\nmetergate_audit_forward_backlog {}\n\
                 # HELP metergate_audit_forward_reconnects_total Failed or lost collector connections.\n\
                 # TYPE metergate_audit_forward_reconnects_total counter\nmetergate_audit_forward_reconnects_total {}\n",
                u8::from(connected),
                backlog,
                reconnects
            );
        }
        out
    }
}

/// How long a scraper may take to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// A request (line and headers) larger than this is refused.
const MAX_REQUEST: usize = 8 * 1024;

/// Live scrapes the metrics endpoint holds at most (from its own reserve
/// of descriptors: a flood on the doors never blinds monitoring).
pub const MAX_CONNECTIONS: usize = 16;

/// Serves `GET /metrics` until `shutdown`; `sample` gathers a fresh sample.
pub async fn serve(
    listener: TcpListener,
    sample: Arc<dyn Fn() -> Sample + Send + Sync>,
    floods: Arc<crate::listen::Floods>,
    shutdown: crate::listen::Shutdown,
    tracker: tokio_util::task::TaskTracker,
) {
    let gate = crate::listen::Gate::new("metrics", MAX_CONNECTIONS, None, None);
    crate::listen::serve(
        listener,
        gate,
        floods,
        shutdown,
        tracker,
        move |stream, _, _| answer(stream, sample.clone()),
    )
    .await;
}

async fn answer(mut stream: TcpStream, sample: Arc<dyn Fn() -> Sample + Send + Sync>) {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let complete = tokio::time::timeout(REQUEST_TIMEOUT, async {
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.windows(2).any(|w| w == b"\n\n") {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if buf.len() > MAX_REQUEST {
                return false;
            }
        }
        true
    })
    .await
    .unwrap_or(false);
    if !complete {
        return;
    }
    let line = buf.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (status, body, kind) = match (parts.next(), parts.next()) {
        (Some("GET"), Some("/metrics")) => (
            "200 OK",
            sample().render(),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        (Some("GET"), Some(_)) => ("404 Not Found", "only /metrics\n".into(), "text/plain"),
        _ => (
            "405 Method Not Allowed",
            "GET /metrics\n".into(),
            "text/plain",
        ),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.shutdown().await;
}
