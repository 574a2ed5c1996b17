//! One accept loop for every listener (Modbus, mbaps, SSH, the control
//! socket, metrics): connection caps per listener and per source address, a
//! shared descriptor budget, accept errors backed off, and every connection
//! task tracked and handed the one shutdown signal.

pub mod cancellable;
pub mod descriptors;
pub mod floods;
pub mod startups;

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_util::task::TaskTracker;

pub use cancellable::Cancellable;
pub use floods::Floods;

/// The address an HTTPS request came from, put in its extensions by the
/// listener (the API and the web console read it).
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub std::net::SocketAddr);

/// Aggregated refusal events are written once per interval per source.
pub const FLOOD_INTERVAL: Duration = Duration::from_secs(60);

/// Connections the kernel may queue before the accept loop takes them. A
/// burst beyond tokio's 1,024 would be half-opened by the kernel and never
/// reach the loop (nor its caps or deadlines); the kernel caps this at
/// net.core.somaxconn.
const BACKLOG: u32 = 4096;

/// Binds a TCP listener with the larger backlog.
pub async fn bind_tcp(address: &str) -> std::io::Result<tokio::net::TcpListener> {
    let Ok(addr) = address.parse::<SocketAddr>() else {
        // A host name: resolved and bound as tokio does.
        return tokio::net::TcpListener::bind(address).await;
    };
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As tokio's own bind: a restarted daemon rebinds at once.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// The one stop signal, handed to every task that must end with the daemon.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl From<watch::Receiver<bool>> for Shutdown {
    fn from(rx: watch::Receiver<bool>) -> Shutdown {
        Shutdown(rx)
    }
}

impl Shutdown {
    /// Resolves once the daemon is stopping (or the sender is gone).
    pub async fn signalled(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }

    pub fn is_signalled(&self) -> bool {
        *self.0.borrow()
    }
}

/// The address a per-source limit counts: an IPv4 client on a dual-stack
/// socket as its IPv4 address, an IPv6 client as its /64 (one site's
/// network: rotating addresses inside it gains nothing, as OpenSSH's
/// PerSourceNetBlockSize).
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(std::net::Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

/// Something that accepts connections: a TCP or a Unix listener.
pub trait Listener: Send + 'static {
    type Stream: Send + 'static;
    type Peer: Send + 'static;
    fn accept(&self) -> impl Future<Output = std::io::Result<(Self::Stream, Self::Peer)>> + Send;
    /// The source address the per-source cap counts (None: a local caller).
    fn source(peer: &Self::Peer) -> Option<IpAddr>;
}

impl Listener for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;
    type Peer = SocketAddr;
    async fn accept(&self) -> std::io::Result<(Self::Stream, SocketAddr)> {
        tokio::net::TcpListener::accept(self).await
    }
    fn source(peer: &SocketAddr) -> Option<IpAddr> {
        Some(source_key(peer.ip()))
    }
}

impl Listener for tokio::net::UnixListener {
    type Stream = tokio::net::UnixStream;
    type Peer = ();
    async fn accept(&self) -> std::io::Result<(Self::Stream, ())> {
        tokio::net::UnixListener::accept(self)
            .await
            .map(|(s, _)| (s, ()))
    }
    fn source(_: &()) -> Option<IpAddr> {
        None
    }
}

/// Live connections per source address, shared by the network listeners so
/// that one address cannot take every door's share at once.
pub struct Sources {
    per_source: usize,
    live: Mutex<HashMap<IpAddr, usize>>,
}

impl Sources {
    pub fn new(per_source: usize) -> Arc<Sources> {
        Arc::new(Sources {
            per_source,
            live: Mutex::new(HashMap::new()),
        })
    }

    /// Live connections from `ip` (for tests and metrics).
    pub fn live(&self, ip: IpAddr) -> usize {
        self.live
            .lock()
            .map(|l| l.get(&ip).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

/// Why a connection was closed at accept.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("the listener's connection limit ({0}, limits.connections_per_listener) is reached")]
    ListenerFull(usize),
    #[error("this source's connection limit ({0}, limits.connections_per_source) is reached")]
    SourceFull(usize),
    #[error("the daemon's descriptor budget ({0} connections, from its open-file limit) is spent")]
    BudgetSpent(usize),
}

/// The admission rules of one listener.
pub struct Gate {
    /// The door's name, in logs.
    pub door: &'static str,
    max: usize,
    live: AtomicUsize,
    sources: Option<Arc<Sources>>,
    budget: Option<(Arc<Semaphore>, usize)>,
}

/// A connection's place: held by its task, given back when it ends.
pub struct Slot {
    gate: Arc<Gate>,
    source: Option<IpAddr>,
    _budget: Option<OwnedSemaphorePermit>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gate.live.fetch_sub(1, Ordering::AcqRel);
        if let (Some(sources), Some(ip)) = (&self.gate.sources, self.source) {
            release_source(sources, ip);
        }
    }
}

fn release_source(sources: &Sources, ip: IpAddr) {
    if let Ok(mut live) = sources.live.lock()
        && let Some(n) = live.get_mut(&ip)
    {
        *n -= 1;
        if *n == 0 {
            live.remove(&ip);
        }
    }
}

impl Gate {
    /// A listener with at most `max` live connections; `sources` caps each
    /// address (network listeners), `budget` is the shared descriptor
    /// budget the public listeners draw from (with its size, for messages).
    pub fn new(
        door: &'static str,
        max: usize,
        sources: Option<Arc<Sources>>,
        budget: Option<(Arc<Semaphore>, usize)>,
    ) -> Arc<Gate> {
        Arc::new(Gate {
            door,
            max,
            live: AtomicUsize::new(0),
            sources,
            budget,
        })
    }

    /// Live connections on this listener.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// A place for a connection from `source`, or why there is none.
    pub fn admit(self: &Arc<Self>, source: Option<IpAddr>) -> Result<Slot, Refusal> {
        if self.live.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.live.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::ListenerFull(self.max));
        }
        let counted_source = match (&self.sources, source) {
            (Some(sources), Some(ip)) => {
                let admitted = match sources.live.lock() {
                    Ok(mut live) => {
                        let n = live.entry(ip).or_insert(0);
                        if *n >= sources.per_source {
                            false
                        } else {
                            *n += 1;
                            true
                        }
                    }
                    Err(_) => false,
                };
                if !admitted {
                    self.live.fetch_sub(1, Ordering::AcqRel);
                    return Err(Refusal::SourceFull(sources.per_source));
                }
                Some(ip)
            }
            _ => None,
        };
        let permit = match &self.budget {
            Some((budget, size)) => match budget.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    self.live.fetch_sub(1, Ordering::AcqRel);
                    if let (Some(sources), Some(ip)) = (&self.sources, counted_source) {
                        release_source(sources, ip);
                    }
                    return Err(Refusal::BudgetSpent(*size));
                }
            },
            None => None,
        };
        Ok(Slot {
            gate: self.clone(),
            source: counted_source,
            _budget: permit,
        })
    }
}

/// Waits after failed accepts: from 5 ms, doubling, at most a second, so
/// that running out of descriptors (EMFILE, ENFILE) never spins a core.
struct Backoff {
    failures: u64,
    wait: Duration,
}

const FIRST_WAIT: Duration = Duration::from_millis(5);
const LONGEST_WAIT: Duration = Duration::from_secs(1);

impl Backoff {
    fn new() -> Backoff {
        Backoff {
            failures: 0,
            wait: FIRST_WAIT,
        }
    }

    fn failed(&mut self, door: &str, error: &std::io::Error) -> Duration {
        if self.failures == 0 {
            tracing::warn!(door, %error, "accept failed; backing off until it works again");
        }
        self.failures += 1;
        let wait = self.wait;
        self.wait = (self.wait * 2).min(LONGEST_WAIT);
        wait
    }

    fn succeeded(&mut self, door: &str) {
        if self.failures > 0 {
            tracing::info!(door, failures = self.failures, "accepting again");
            *self = Backoff::new();
        }
    }
}

/// Accepts on `listener` until `shutdown`: each admitted connection runs
/// `connection` in a task `tracker` knows (the daemon drains it), holding
/// its slot; a refused one is closed at once and counted as
/// `connection.refused` in `floods`.
pub async fn serve<L, F, Fut>(
    listener: L,
    gate: Arc<Gate>,
    floods: Arc<Floods>,
    mut shutdown: Shutdown,
    tracker: TaskTracker,
    mut connection: F,
) where
    L: Listener,
    F: FnMut(L::Stream, L::Peer, Shutdown) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let flusher = tokio::spawn(floods.clone().flush_every(FLOOD_INTERVAL));
    let mut backoff = Backoff::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.signalled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff.succeeded(gate.door);
                let source = L::source(&peer);
                match gate.admit(source) {
                    Ok(slot) => {
                        let task = connection(stream, peer, shutdown.clone());
                        tracker.spawn(async move {
                            let _slot = slot;
                            task.await
                        });
                    }
                    Err(refusal) => {
                        drop(stream);
                        floods.count(source, "connection.refused", &refusal.to_string());
                    }
                }
            }
            Err(error) => {
                let wait = backoff.failed(gate.door, &error);
                tokio::select! {
                    _ = shutdown.signalled() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
    flusher.abort();
    floods.flush().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([127, 0, 0, last]))
    }

    #[test]
    fn ipv6_sources_count_by_their_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_key(a), source_key(b));
        assert_ne!(source_key(a), source_key(other));
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        assert_eq!(source_key(mapped), IpAddr::from([127, 0, 0, 2]));
    }

    #[test]
    fn a_listener_admits_up_to_its_cap_and_a_slot_given_back_makes_room() {
        let gate = Gate::new("t", 2, None, None);
        let a = gate.admit(ip(1)).unwrap();
        let _b = gate.admit(ip(1)).unwrap();
        assert!(matches!(gate.admit(ip(2)), Err(Refusal::ListenerFull(2))));
        drop(a);
        assert!(gate.admit(ip(2)).is_ok());
    }

    #[test]
    fn one_source_is_capped_across_listeners_and_others_still_get_in() {
        let sources = Sources::new(2);
        let modbus = Gate::new("modbus", 100, Some(sources.clone()), None);
        let ssh = Gate::new("ssh", 100, Some(sources.clone()), None);
        let _a = modbus.admit(ip(7)).unwrap();
        let b = ssh.admit(ip(7)).unwrap();
        assert!(matches!(modbus.admit(ip(7)), Err(Refusal::SourceFull(2))));
        assert!(matches!(ssh.admit(ip(7)), Err(Refusal::SourceFull(2))));
        assert!(ssh.admit(ip(8)).is_ok());
        drop(b);
        assert_eq!(sources.live(ip(7).unwrap()), 1);
        assert!(ssh.admit(ip(7)).is_ok());
        // A refused connection took nothing from the listener's count.
        assert_eq!(modbus.live(), 1);
    }

    #[test]
    fn the_shared_budget_refuses_when_spent_and_gives_back_the_source_place() {
        let budget = Arc::new(Semaphore::new(1));
        let sources = Sources::new(10);
        let a = Gate::new("a", 10, Some(sources.clone()), Some((budget.clone(), 1)));
        let b = Gate::new("b", 10, Some(sources.clone()), Some((budget.clone(), 1)));
        let first = a.admit(ip(1)).unwrap();
        assert!(matches!(b.admit(ip(2)), Err(Refusal::BudgetSpent(1))));
        assert_eq!(sources.live(ip(2).unwrap()), 0);
        assert_eq!(b.live(), 0);
        drop(first);
        assert!(b.admit(ip(2)).is_ok());
    }

    #[test]
    fn failed_accepts_back_off_up_to_a_second_and_reset_on_success() {
        let mut backoff = Backoff::new();
        let e = std::io::Error::from_raw_os_error(24);
        let waits: Vec<_> = (0..12).map(|_| backoff.failed("t", &e)).collect();
        assert_eq!(waits[0], FIRST_WAIT);
        assert!(waits.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(*waits.last().unwrap(), LONGEST_WAIT);
        backoff.succeeded("t");
        assert_eq!(backoff.failed("t", &e), FIRST_WAIT);
    }
}
