//! The directory in PostgreSQL, shared by many gateways: the same records as
//! the local store (key → JSON), one global version bumped by every change,
//! and a follower that keeps this gateway's copy current (LISTEN/NOTIFY).
//!
//! PostgreSQL is driven from a thread of its own with its own runtime, so the
//! store stays synchronous (as with sled) and no caller's runtime is blocked.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio_postgres::config::SslMode;
use tokio_postgres::{AsyncMessage, IsolationLevel};
use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_rustls::rustls;

use super::StoreError;
use crate::config::PostgresDirectory;
use crate::model::micros;

mod state;

mod embedded {
    refinery::embed_migrations!("migrations/postgres");
}

/// A directory record: its key and its JSON (None: deleted).
pub type Record = (Vec<u8>, Option<Vec<u8>>);

/// The channel every change is announced on.
const CHANNEL: &str = "metergate_directory";
/// Held while migrations run: two gateways starting together migrate once.
const MIGRATION_LOCK: i64 = 0x6d65_7465_7267;
/// One round trip (a change, a catch-up) that takes longer than this is a
/// server that cannot be reached.
const ROUND_TRIP: Duration = Duration::from_secs(5);
/// How often the follower says it is alive and checks the version, even
/// when no notification came (one may be lost with a connection).
const TICK: Duration = Duration::from_millis(500);
/// Records written by one statement of a change.
const WRITES_PER_STATEMENT: usize = 1000;
/// Reading the whole directory (a start, a gateway far behind) may take
/// longer than one round trip.
pub const WHOLE_READ: Duration = Duration::from_secs(120);
/// Reconnection backoff.
const BACKOFF_FIRST: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What keeps this gateway's copy: told of changes made elsewhere.
pub trait Follower: Send + Sync + 'static {
    /// The directory version this gateway's copy is at.
    fn version(&self) -> u64;
    /// Applies what changed after `version()`, up to `to`; `whole` when
    /// the records are the whole directory (the copy is replaced).
    fn catch_up(&self, records: Vec<Record>, to: u64, whole: bool);
    /// The server answered at `at` (µs).
    fn reached(&self, _at: i64) {}
    /// Which shared directory the copy is of ("": not known).
    fn directory_id(&self) -> String {
        String::new()
    }
}

/// Another gateway that shares the directory, as last seen.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct GatewaySeen {
    pub name: String,
    /// When it last said it was alive (µs).
    pub seen: i64,
    /// The directory version it had then.
    pub version: u64,
}

/// How the server looks from here.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Health {
    pub reachable: bool,
    /// Since when it is reachable or not (µs).
    pub since: i64,
    /// The last contact that worked (µs; 0: never).
    pub last_contact: i64,
    /// Why it cannot be reached (never carries the password).
    pub error: Option<String>,
    /// The directory's version on the server at the last contact.
    pub remote_version: u64,
    pub gateways: Vec<GatewaySeen>,
}

/// Why a change did not land.
#[derive(Debug)]
pub enum CommitError {
    /// Another gateway changed the directory first: catch up and retry.
    Behind,
    Store(StoreError),
}

/// The PostgreSQL directory of one gateway.
pub struct Postgres {
    handle: tokio::runtime::Handle,
    pool: Pool,
    pg: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    gateway: String,
    server: String,
    /// How long people may still log in on the last copy (`max_stale`).
    max_stale: Duration,
    health: Arc<Mutex<Health>>,
    /// Whether this gateway's schema migrations ran (they run again on the
    /// follower's connections until they have, after a start without the
    /// server).
    migrated: Arc<std::sync::atomic::AtomicBool>,
    stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    stop_follower: tokio::sync::watch::Sender<bool>,
}

fn unreachable(server: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unreachable(format!("{server}: {e}"))
}

/// A statement that failed: the server refused it (its message), or it
/// could not be reached.
fn failed(server: &str, e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => StoreError::Sled(format!("{server} refused the change: {}", db.message())),
        None => unreachable(server, e),
    }
}

impl Postgres {
    /// Starts the directory's thread, connects, runs the schema migrations.
    pub fn connect(config: &PostgresDirectory) -> Result<Postgres, StoreError> {
        let setup = |e: String| StoreError::Io {
            path: "directory".into(),
            error: e,
        };
        let mut pg: tokio_postgres::Config = config
            .url
            .parse()
            .map_err(|e| setup(format!("directory.url: {e}")))?;
        if let Some(path) = &config.password_file {
            pg.password(read_password(path)?);
        }
        // Every byte to the server is encrypted: it holds the hashes.
        pg.ssl_mode(SslMode::Require);
        pg.connect_timeout(ROUND_TRIP);
        pg.application_name(format!("metergate {}", config.gateway));
        let server = describe(&pg);
        let tls = MakeRustlsConnect::new(client_tls(&config.ca)?);

        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("directory".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = handle_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = handle_tx.send(Ok(rt.handle().clone()));
                rt.block_on(async move {
                    let _ = stop_rx.await;
                });
            })
            .map_err(|e| setup(format!("cannot start the directory thread: {e}")))?;
        let handle = handle_rx
            .recv()
            .map_err(|e| setup(e.to_string()))?
            .map_err(setup)?;
        let pool = {
            let _enter = handle.enter();
            let manager = Manager::from_config(
                pg.clone(),
                tls.clone(),
                ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                },
            );
            Pool::builder(manager)
                .max_size(config.pool_size)
                .runtime(Runtime::Tokio1)
                .create_timeout(Some(ROUND_TRIP))
                .wait_timeout(Some(ROUND_TRIP))
                .recycle_timeout(Some(ROUND_TRIP))
                .build()
                .map_err(|e| setup(e.to_string()))?
        };
        let (stop_follower, _) = tokio::sync::watch::channel(false);
        let db = Postgres {
            handle,
            pool,
            pg,
            tls,
            gateway: config.gateway.clone(),
            server,
            max_stale: config.max_stale,
            health: Arc::new(Mutex::new(Health::default())),
            migrated: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            stop: Mutex::new(Some(stop_tx)),
            thread: Mutex::new(Some(thread)),
            stop_follower,
        };
        match db.migrate() {
            Ok(()) => set_health(&db.health, |h| {
                h.reachable = true;
                h.since = now();
                h.last_contact = h.since;
            }),
            // Started without the server: the caller decides whether this
            // gateway's last copy lets it start; the follower migrates once
            // the server is back.
            Err(StoreError::Unreachable(why)) => mark_down(&db.health, why),
            Err(e) => return Err(e),
        }
        Ok(db)
    }

    /// Where the server is, for messages (`HOST:PORT/DATABASE`, no secret).
    pub fn server(&self) -> &str {
        &self.server
    }

    pub fn gateway(&self) -> &str {
        &self.gateway
    }

    /// A start on this gateway's last copy: the server was last reached at
    /// `last_contact` (µs), so `max_stale` counts from then.
    pub fn started_on_copy(&self, last_contact: i64) {
        set_health(&self.health, |h| h.last_contact = last_contact);
    }

    /// The last contact, when it is longer ago than `max_stale` (µs).
    pub fn stale_since(&self, now_us: i64) -> Option<i64> {
        let last = self.health.lock().map(|h| h.last_contact).unwrap_or(0);
        let limit = self.max_stale.as_micros() as i64;
        (now_us.saturating_sub(last) > limit).then_some(last)
    }

    pub fn max_stale(&self) -> Duration {
        self.max_stale
    }

    pub fn health(&self) -> Health {
        self.health.lock().map(|h| h.clone()).unwrap_or_default()
    }

    /// Runs `work` on the directory's thread and waits for it, boundedly.
    fn run<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.run_within(ROUND_TRIP * 2, work)
    }

    /// As [`Postgres::run`], giving up after `limit`.
    fn run_within<T: Send + 'static>(
        &self,
        limit: Duration,
        work: impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let server = self.server.clone();
        self.handle.spawn(async move {
            let out = match tokio::time::timeout(limit, work).await {
                Ok(r) => r,
                Err(_) => Err(unreachable(&server, "no answer in time")),
            };
            let _ = tx.send(out);
        });
        let wait = || {
            rx.recv_timeout(limit + ROUND_TRIP)
                .map_err(|_| unreachable(&self.server, "no answer in time"))
        };
        // Called from a door's task (a login, a reset, a change): the
        // runtime hands this worker's other tasks to another thread while
        // it waits, so a slow server never stalls Modbus forwarding.
        let answer = match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        };
        answer?
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let pg = self.pg.clone();
        let tls = self.tls.clone();
        let server = self.server.clone();
        let migrated = self.migrated.clone();
        self.run(async move {
            let down = |e: tokio_postgres::Error| unreachable(&server, e);
            let (mut client, connection) = pg.connect(tls).await.map_err(down)?;
            let conn = tokio::spawn(connection);
            let report = migrate_with(&mut client, &migrated).await;
            drop(client);
            let _ = conn.await;
            report.map_err(|e| match e {
                MigrateError::Server(e) => down(e),
                MigrateError::Schema(e) => StoreError::Sled(e),
            })
        })
    }

    /// What tells this shared directory from any other.
    pub fn directory_id(&self) -> Result<String, StoreError> {
        let pool = self.pool.clone();
        let server = self.server.clone();
        self.run(async move {
            let down = |e: &dyn std::fmt::Display| unreachable(&server, e);
            let client = pool.get().await.map_err(|e| down(&e))?;
            let row = client
                .query_one(
                    "SELECT directory_id FROM metergate_version WHERE id = 1",
                    &[],
                )
                .await
                .map_err(|e| down(&e))?;
            Ok(row.get::<_, String>(0))
        })
    }

    /// Every record changed after `version`, and the version they bring the
    /// directory to (read in one snapshot of the server).
    pub fn changes_since(&self, version: u64) -> Result<(Vec<Record>, u64), StoreError> {
        let limit = if version == 0 {
            WHOLE_READ
        } else {
            ROUND_TRIP * 2
        };
        self.changes_since_within(version, limit)
    }

    /// As [`Postgres::changes_since`], giving up after `limit`.
    pub fn changes_since_within(
        &self,
        version: u64,
        limit: Duration,
    ) -> Result<(Vec<Record>, u64), StoreError> {
        let pool = self.pool.clone();
        let server = self.server.clone();
        self.run_within(limit, async move {
            let down = |e: &dyn std::fmt::Display| unreachable(&server, e);
            let mut client = pool.get().await.map_err(|e| down(&e))?;
            read_since(&mut client, version).await.map_err(|e| down(&e))
        })
    }

    /// Records whose key starts with `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<Record>, StoreError> {
        let pool = self.pool.clone();
        let server = self.server.clone();
        let prefix = prefix.to_vec();
        self.run(async move {
            let down = |e: &dyn std::fmt::Display| unreachable(&server, e);
            let client = pool.get().await.map_err(|e| down(&e))?;
            // bytea compares bytewise: the prefix's range is [prefix, prefix+0xFF…).
            let mut upper = prefix.clone();
            upper.push(0xff);
            let rows = client
                .query(
                    "SELECT key, value FROM metergate_directory \
                     WHERE key >= $1 AND key < $2 AND value IS NOT NULL ORDER BY key",
                    &[&prefix, &upper],
                )
                .await
                .map_err(|e| down(&e))?;
            Ok(rows
                .iter()
                .map(|r| (r.get::<_, Vec<u8>>(0), r.get::<_, Option<Vec<u8>>>(1)))
                .collect())
        })
    }

    /// Writes one change in one transaction, if the directory is still at
    /// `base`; the version it is at afterwards. Every gateway is told.
    pub fn commit(&self, base: u64, writes: Vec<Record>) -> Result<u64, CommitError> {
        let pool = self.pool.clone();
        let server = self.server.clone();
        // A round trip for each statement: a big import gets the time it needs.
        let statements = writes.len().div_ceil(WRITES_PER_STATEMENT) as u32;
        let limit = ROUND_TRIP * (2 + statements);
        let result = self.run_within(limit, async move {
            let down = |e: &dyn std::fmt::Display| unreachable(&server, e);
            let mut client = pool.get().await.map_err(|e| down(&e))?;
            let tx = client.transaction().await.map_err(|e| down(&e))?;
            // The version row is the one lock every change takes: changes
            // from all gateways apply one after the other, each checked
            // against the directory it lands on.
            let row = tx
                .query_one(
                    "SELECT version FROM metergate_version WHERE id = 1 FOR UPDATE",
                    &[],
                )
                .await
                .map_err(|e| down(&e))?;
            let current = row.get::<_, i64>(0) as u64;
            if current != base {
                return Ok(None);
            }
            let next = (current + 1) as i64;
            // Many records a round trip: an import of a whole directory is
            // a few hundred statements, not one per record.
            let put = tx
                .prepare(
                    "INSERT INTO metergate_directory (key, value, changed) \
                     SELECT k, v, $3 FROM unnest($1::bytea[], $2::bytea[]) AS t(k, v) \
                     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, changed = EXCLUDED.changed",
                )
                .await
                .map_err(|e| down(&e))?;
            // One row a key, the last write winning (as written one after
            // the other): a statement may not change a row twice.
            let last: std::collections::BTreeMap<&[u8], Option<&[u8]>> = writes
                .iter()
                .map(|(k, v)| (k.as_slice(), v.as_deref()))
                .collect();
            let last: Vec<_> = last.into_iter().collect();
            for chunk in last.chunks(WRITES_PER_STATEMENT) {
                let keys: Vec<&[u8]> = chunk.iter().map(|(k, _)| *k).collect();
                let values: Vec<Option<&[u8]>> = chunk.iter().map(|(_, v)| *v).collect();
                tx.execute(&put, &[&keys, &values, &next])
                    .await
                    .map_err(|e| failed(&server, e))?;
            }
            tx.execute(
                "UPDATE metergate_version SET version = $1 WHERE id = 1",
                &[&next],
            )
            .await
            .map_err(|e| down(&e))?;
            tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &next.to_string()])
                .await
                .map_err(|e| down(&e))?;
            tx.commit().await.map_err(|e| {
                StoreError::Unreachable(format!(
                    "{server}: the connection broke while the change was committed ({e}); \
                     it may or may not have been applied: look again once the directory is back"
                ))
            })?;
            Ok(Some(next as u64))
        });
        match result {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err(CommitError::Behind),
            Err(e) => Err(CommitError::Store(e)),
        }
    }

    /// Starts following changes made elsewhere (and saying this gateway
    /// is alive) until the store is dropped.
    pub fn follow(&self, follower: Arc<dyn Follower>) {
        let pg = self.pg.clone();
        let tls = self.tls.clone();
        let health = self.health.clone();
        let gateway = self.gateway.clone();
        let server = self.server.clone();
        let stop = self.stop_follower.subscribe();
        let migrated = self.migrated.clone();
        self.handle.spawn(async move {
            let to = Target {
                pg,
                tls,
                gateway,
                server,
                migrated,
            };
            follow(to, follower, health, stop).await;
        });
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.stop_follower.send(true);
        if let Ok(mut s) = self.stop.lock()
            && let Some(s) = s.take()
        {
            let _ = s.send(());
        }
        if let Ok(mut t) = self.thread.lock()
            && let Some(t) = t.take()
        {
            let _ = t.join();
        }
    }
}

enum MigrateError {
    Server(tokio_postgres::Error),
    Schema(String),
}

/// Runs the schema migrations on `client`, once per process: the advisory
/// lock makes two gateways starting together migrate one after the other.
async fn migrate_with(
    client: &mut tokio_postgres::Client,
    migrated: &std::sync::atomic::AtomicBool,
) -> Result<(), MigrateError> {
    use std::sync::atomic::Ordering;
    if migrated.load(Ordering::SeqCst) {
        return Ok(());
    }
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(MigrateError::Server)?;
    let report = embedded::migrations::runner()
        .run_async(client)
        .await
        .map_err(|e| MigrateError::Schema(format!("directory schema migration: {e}")));
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    report?;
    migrated.store(true, Ordering::SeqCst);
    Ok(())
}

async fn read_since(
    client: &mut tokio_postgres::Client,
    version: u64,
) -> Result<(Vec<Record>, u64), tokio_postgres::Error> {
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let to = tx
        .query_one("SELECT version FROM metergate_version WHERE id = 1", &[])
        .await?
        .get::<_, i64>(0) as u64;
    let mut records = Vec::new();
    if to != version {
        // Behind (or the server's directory is an older one: read it whole).
        let from = if to < version { 0 } else { version as i64 };
        for r in tx
            .query(
                "SELECT key, value FROM metergate_directory WHERE changed > $1 ORDER BY changed, key",
                &[&from],
            )
            .await?
        {
            records.push((r.get::<_, Vec<u8>>(0), r.get::<_, Option<Vec<u8>>>(1)));
        }
    }
    tx.commit().await?;
    Ok((records, to))
}

fn set_health(health: &Mutex<Health>, f: impl FnOnce(&mut Health)) {
    if let Ok(mut h) = health.lock() {
        f(&mut h);
    }
}

fn now() -> i64 {
    micros(time::OffsetDateTime::now_utc())
}

fn mark_down(health: &Mutex<Health>, why: String) {
    set_health(health, |h| {
        if h.reachable || h.since == 0 {
            h.since = now();
        }
        h.reachable = false;
        h.error = Some(why);
    });
}

/// The follower: one connection that LISTENs, catches up on every
/// notification and every tick, says this gateway is alive, and reconnects
/// with backoff when the server goes away.
/// Where the follower connects, and as whom.
struct Target {
    pg: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    gateway: String,
    server: String,
    migrated: Arc<std::sync::atomic::AtomicBool>,
}

async fn follow(
    to: Target,
    follower: Arc<dyn Follower>,
    health: Arc<Mutex<Health>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let Target {
        pg,
        tls,
        gateway,
        server,
        migrated,
    } = to;
    let mut backoff = BACKOFF_FIRST;
    let mut expected = follower.directory_id();
    loop {
        if *stop.borrow() {
            return;
        }
        let connected = tokio::time::timeout(ROUND_TRIP, pg.connect(tls.clone())).await;
        let (mut client, mut connection) = match connected {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                mark_down(&health, format!("{server}: {e}"));
                if wait(&mut stop, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
            Err(_) => {
                mark_down(&health, format!("{server}: no answer in time"));
                if wait(&mut stop, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        let (notified_tx, mut notified) = tokio::sync::mpsc::unbounded_channel::<()>();
        let reader = tokio::spawn(async move {
            while let Some(Ok(m)) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                if let AsyncMessage::Notification(_) = m {
                    let _ = notified_tx.send(());
                }
            }
        });
        let listening = tokio::time::timeout(ROUND_TRIP, async {
            if let Err(e) = migrate_with(&mut client, &migrated).await {
                return Err(match e {
                    MigrateError::Server(e) => e.to_string(),
                    MigrateError::Schema(e) => e,
                });
            }
            client
                .batch_execute(&format!("LISTEN {CHANNEL}"))
                .await
                .map_err(|e| e.to_string())
        })
        .await;
        if !matches!(listening, Ok(Ok(()))) {
            let why = match listening {
                Ok(Err(e)) => e,
                _ => "no answer in time".into(),
            };
            mark_down(&health, format!("{server}: {why}"));
            reader.abort();
            if wait(&mut stop, backoff).await {
                return;
            }
            continue;
        }
        backoff = BACKOFF_FIRST;
        loop {
            // Each query of a round has ROUND_TRIP; reading many changes
            // (a big import elsewhere) gets the time a whole read gets.
            let round = tokio::time::timeout(
                WHOLE_READ,
                round(
                    &mut client,
                    &gateway,
                    follower.clone(),
                    &health,
                    &mut expected,
                ),
            )
            .await;
            match round {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    mark_down(&health, format!("{server}: {e}"));
                    break;
                }
                Err(_) => {
                    mark_down(&health, format!("{server}: no answer in time"));
                    break;
                }
            }
            tokio::select! {
                n = notified.recv() => {
                    if n.is_none() {
                        mark_down(&health, format!("{server}: the connection closed"));
                        break;
                    }
                    while notified.try_recv().is_ok() {}
                }
                _ = tokio::time::sleep(TICK) => {}
                _ = stop.changed() => return,
            }
            if reader.is_finished() {
                mark_down(&health, format!("{server}: the connection closed"));
                break;
            }
        }
        reader.abort();
        if wait(&mut stop, backoff).await {
            return;
        }
    }
}

/// Sleeps `d`; true when the store stopped meanwhile.
async fn wait(stop: &mut tokio::sync::watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

async fn round(
    client: &mut tokio_postgres::Client,
    gateway: &str,
    follower: Arc<dyn Follower>,
    health: &Mutex<Health>,
    expected: &mut String,
) -> Result<(), String> {
    async fn quick<T>(
        f: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, String> {
        match tokio::time::timeout(ROUND_TRIP, f).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err("no answer in time".into()),
        }
    }
    let row = quick(client.query_one(
        "SELECT version, directory_id FROM metergate_version WHERE id = 1",
        &[],
    ))
    .await?;
    let latest = row.get::<_, i64>(0) as u64;
    let id: String = row.get(1);
    // The server now holds another directory (the address moved to
    // another database): this one is read whole, never merged with it.
    let other = !expected.is_empty() && *expected != id;
    if other {
        tracing::warn!("the server holds another directory now: reading it whole");
    }
    *expected = id;
    let have = if other { 0 } else { follower.version() };
    let (records, to) = if latest == have {
        (Vec::new(), have)
    } else {
        read_since(client, have).await.map_err(|e| e.to_string())?
    };
    if to != have || other {
        let whole = other || to < have;
        let f = follower.clone();
        // The copy's lock may be held by a change waiting on this thread's
        // runtime: take it on a blocking thread, never here.
        let _ = tokio::task::spawn_blocking(move || f.catch_up(records, to, whole)).await;
    }
    let version = follower.version() as i64;
    quick(client.execute(
        "INSERT INTO metergate_gateways (name, seen, version) VALUES ($1, now(), $2) \
         ON CONFLICT (name) DO UPDATE SET seen = now(), version = EXCLUDED.version",
        &[&gateway, &version],
    ))
    .await?;
    let rows = quick(client.query(
        "SELECT name, (extract(epoch from seen) * 1000000)::bigint, version \
         FROM metergate_gateways ORDER BY name",
        &[],
    ))
    .await?;
    let gateways = rows
        .iter()
        .map(|r| GatewaySeen {
            name: r.get(0),
            seen: r.get(1),
            version: r.get::<_, i64>(2) as u64,
        })
        .collect();
    set_health(health, |h| {
        if !h.reachable {
            h.since = now();
        }
        h.reachable = true;
        h.error = None;
        h.last_contact = now();
        h.remote_version = to;
        h.gateways = gateways;
    });
    follower.reached(now());
    Ok(())
}

/// `HOST:PORT/DATABASE` of a connection config.
fn describe(pg: &tokio_postgres::Config) -> String {
    let host = pg
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(t) => t.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_default();
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    format!(
        "PostgreSQL at {host}:{port}/{}",
        pg.get_dbname().unwrap_or("")
    )
}

/// TLS to the server: TLS 1.2 or 1.3, ring, only the pinned CA trusted.
fn client_tls(ca: &std::path::Path) -> Result<rustls::ClientConfig, StoreError> {
    let bad = |e: String| StoreError::Io {
        path: format!("directory.ca {}", ca.display()),
        error: e,
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| bad(e.to_string()))? {
        let cert = cert.map_err(|e| bad(format!("not a PEM certificate: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| bad(format!("not usable as a trust anchor: {e}")))?;
    }
    if roots.is_empty() {
        return Err(bad("holds no certificate".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The database password: the file's first line; the file must be private
/// (it opens the whole directory).
fn read_password(path: &std::path::Path) -> Result<String, StoreError> {
    super::secrets::read_password_file(path).map_err(|e| StoreError::Io {
        path: format!("directory.password_file {}", path.display()),
        error: e,
    })
}
