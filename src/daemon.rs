//! The daemon: opens the store, starts the guard and every listener, runs
//! until SIGTERM or Ctrl-C, then stops accepting and leaves the log flushed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::task::TaskTracker;

use arc_swap::ArcSwap;

use time::OffsetDateTime;

use crate::commands::{Gateway, ReviewSettings, review_due};
use crate::config::Config;
use crate::doors::admin::server::{self, Access, ControlError};
use crate::doors::modbus::mbaps::{MbapsDoor, MbapsError, Tls};
use crate::doors::modbus::{ModbusDoor, UnitMap, unit_maps, unit_maps_reusing};
use crate::guard::{Guard, GuardSettings};
use crate::metrics::{self, MeterSample, Sample};
use crate::model::micros;
use crate::service::{self, Notifier, ServiceError};
use crate::sessions::Sessions;
use crate::store::{Category, EventDraft, Outcome, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("signal handling: {0}")]
    Signals(std::io::Error),
    #[error("Modbus/TCP Security: {0}")]
    Mbaps(#[from] MbapsError),
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error(transparent)]
    Forward(#[from] crate::store::forward::ForwardError),
    #[error("SSH host key {0}")]
    Ssh(#[from] crate::sshkeys::SshError),
    #[error(transparent)]
    Descriptors(#[from] crate::listen::descriptors::DescriptorError),
    #[error("the HTTPS API: {0}")]
    Api(#[from] crate::doors::api::ApiError),
    #[error("session recordings: {0}")]
    Recordings(#[from] crate::recording::RecordingError),
    #[error("mail: {0}")]
    Mail(#[from] crate::mail::MailError),
    #[error("listener {address}: {error}")]
    Listen {
        address: String,
        error: std::io::Error,
    },
}

/// What a started daemon tells whoever started it.
pub struct Running {
    pub socket: PathBuf,
    pub guard: Arc<Guard>,
}

/// How often the daemon checks whether a review is due.
const REVIEW_CHECK: Duration = Duration::from_secs(3600);

/// Runs the daemon until SIGTERM or SIGINT; `ready` is called once every
/// listener is bound and the store is open.
pub async fn run(config: Config, ready: impl FnOnce(&Running)) -> Result<(), DaemonError> {
    let notifier = Notifier::from_env();
    // Who the daemon runs as, and whether its files are that account's alone.
    let d = &config.daemon;
    let account = service::target_account(d.user.as_deref(), d.group.as_deref(), d.allow_root)?;
    let run_uid = account
        .as_ref()
        .map(|a| a.uid)
        .unwrap_or(nix::unistd::Uid::effective().as_raw());
    service::check_private(&config.state_dir, run_uid, true)?;
    service::check_private(&config.state_dir.join("audit-signing.key"), run_uid, false)?;
    if let Some(m) = &config.mbaps {
        service::check_private(&m.key, run_uid, false)?;
    }
    if let Some(a) = &config.api {
        service::check_private(&a.key, run_uid, false)?;
    }
    // Certificates first: a bad file is a config error, found before
    // anything else starts.
    let tls = match &config.mbaps {
        Some(m) => Some(Arc::new(Tls::load(m, OffsetDateTime::now_utc())?)),
        None => None,
    };

    // The open-file limit is raised and budgeted before anything opens:
    // the meter pools, the control socket and metrics keep a reserve, the
    // network listeners share the rest.
    let meter_connections: u64 = config.meters.iter().map(|m| m.max_connections as u64).sum();
    let local = (server::MAX_CONNECTIONS + metrics::MAX_CONNECTIONS) as u64;
    let budget = crate::listen::descriptors::raise_and_budget(meter_connections, local)?;
    tracing::info!(
        limit = budget.limit,
        raised_from = ?budget.raised_from,
        connections = budget.connections,
        sftp_files = budget.sftp_files,
        "open-file limit budgeted"
    );

    // Every socket is bound before root is dropped (ports below 1024).
    let socket = config.control.socket_path();
    let (control_listener, gid) = server::bind(
        &socket,
        config.control.mode_bits(),
        config.control.group_name().as_deref(),
    )?;
    let bind = |address: &String| {
        let address = address.clone();
        async move {
            crate::listen::bind_tcp(&address)
                .await
                .map_err(|error| DaemonError::Listen { address, error })
        }
    };
    let mut plain_listeners = Vec::new();
    for address in &config.modbus_listen {
        plain_listeners.push(bind(address).await?);
    }
    let mut tls_listeners = Vec::new();
    if let Some(m) = &config.mbaps {
        for address in &m.listen {
            tls_listeners.push(bind(address).await?);
        }
    }
    let mut ssh_listeners = Vec::new();
    if let Some(ssh) = &config.ssh {
        for address in &ssh.listen {
            ssh_listeners.push(bind(&address.to_string()).await?);
        }
    }
    let api_listener = match &config.api {
        Some(a) => Some(bind(&a.listen.to_string()).await?),
        None => None,
    };
    let metrics_listener = match config.metrics_listen {
        Some(a) => Some(bind(&a.to_string()).await?),
        None => None,
    };
    if let Some(a) = &account {
        service::drop_to(a, gid.map(|g| g.as_raw()))?;
        tracing::info!(user = %a.user, group = %a.group, "running as the service account; root is dropped");
    } else if nix::unistd::Uid::effective().is_root() {
        tracing::warn!("running as root (daemon.allow_root = true)");
    }
    let access = Access {
        group: gid,
        own_uid: nix::unistd::Uid::effective(),
    };

    // The collector's CA and client certificate are read before anything
    // runs: a broken forwarding setup is a config error, not a silent gap.
    let forwarder = match &config.audit.forward {
        Some(f) => Some(crate::store::forward::Forwarder::new(f)?),
        None => None,
    };
    let store = Arc::new(Store::open_configured(
        &config.state_dir,
        config.audit.capacity(forwarder.is_some()),
        &config.directory,
    )?);
    if forwarder.is_some() {
        store.forward_state().set_delivered(store.forward_cursor()?);
    }
    let guard = Arc::new(Guard::new(store.clone(), &config));
    let review = ReviewSettings {
        interval: config.review.interval.0,
        unused_after: config.review.unused_after.0,
    };
    let sessions = guard.sessions().clone();
    let maps = unit_maps(&config);
    let shared_maps = Arc::new(ArcSwap::from_pointee(maps.clone()));
    let recordings = crate::recording::Recordings::open(
        guard.clone(),
        sessions.clone(),
        &config.state_dir,
        config.recording.clone(),
        config.audit.forward.is_some(),
    )?;
    let mail = match &config.mail {
        Some(m) => Some(Arc::new(crate::mail::Mailer::new(m)?)),
        None => None,
    };
    let ctx = Arc::new(Gateway {
        mail,
        guard: guard.clone(),
        sessions: sessions.clone(),
        hashes: guard.hashes().clone(),
        review: review.clone(),
        crl_changed: tls.as_ref().map(|t| t.crl_changed.clone()),
        fleet: shared_maps.clone(),
        passwords: Arc::new(config.passwords.clone()),
        consoles: crate::fleet::meter_ssh::Consoles {
            credentials: config
                .ssh
                .as_ref()
                .and_then(|s| s.meter_credentials.clone()),
        },
        mfa_issuer: config.mfa.issuer.clone(),
        recordings: recordings.clone(),
    });

    let started = EventDraft::new("system.start", Category::System, Outcome::Success)
        .reason(format!("metergate {} started", env!("CARGO_PKG_VERSION")))
        .detail("config", config.path.display());
    if let Err(e) = store.log().append(started).await {
        tracing::error!(error = %e, "the start could not be logged");
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let shutdown = crate::listen::Shutdown::from(stop_rx.clone());
    // The doors' connections, drained at stop; the control socket's and
    // the scrapes are not waited for (a follower of the log would hold the
    // stop forever).
    let connections = TaskTracker::new();
    let local_connections = TaskTracker::new();
    let sources = crate::listen::Sources::new(config.limits.connections_per_source);
    let shared_budget = (
        Arc::new(tokio::sync::Semaphore::new(budget.connections)),
        budget.connections,
    );
    let gate = |door: &'static str| {
        crate::listen::Gate::new(
            door,
            config.limits.connections_per_listener,
            Some(sources.clone()),
            Some(shared_budget.clone()),
        )
    };
    let control = tokio::spawn(server::serve(
        control_listener,
        ctx.clone(),
        access,
        shutdown.clone(),
        local_connections.clone(),
    ));
    let mut doors = Vec::new();
    let mut live = Live {
        config: config.clone(),
        shared_maps: shared_maps.clone(),
        maps: maps.clone(),
        plain: Vec::new(),
        tls: Vec::new(),
        ssh: None,
        recordings: recordings.clone(),
    };
    for (door, listener) in ModbusDoor::from_config(&config, guard.clone(), sessions.clone(), &maps)
        .into_iter()
        .zip(plain_listeners)
    {
        let door = Arc::new(door);
        live.plain.push(door.clone());
        doors.push(tokio::spawn(door.serve(
            listener,
            gate("modbus"),
            shutdown.clone(),
            connections.clone(),
        )));
    }
    if let Some(tls) = &tls {
        for (i, listener) in tls_listeners.into_iter().enumerate() {
            let door = Arc::new(MbapsDoor::new(
                guard.clone(),
                sessions.clone(),
                maps[i].clone(),
                tls.clone(),
                config.limits.first_request_timeout.0,
            ));
            live.tls.push((i, door.clone()));
            doors.push(tokio::spawn(door.serve(
                listener,
                gate("mbaps"),
                shutdown.clone(),
                connections.clone(),
            )));
        }
        tokio::spawn(
            tls.clone()
                .watch_crl(guard.clone(), sessions.clone(), stop_rx.clone()),
        );
    }
    if let Some(ssh) = &config.ssh {
        // After the store: the key lives in the state directory, created
        // by the service account.
        let key = crate::sshkeys::host_key(&ssh.host_key)?;
        let door = Arc::new(crate::doors::ssh::SshDoor::new(
            ctx.clone(),
            key,
            &config,
            ssh,
            budget.sftp_files,
        ));
        live.ssh = Some(door.clone());
        for listener in ssh_listeners {
            doors.push(tokio::spawn(door.clone().serve(
                listener,
                gate("ssh"),
                shutdown.clone(),
                connections.clone(),
            )));
        }
    }
    if let (Some(api), Some(listener)) = (&config.api, api_listener) {
        // Browser sessions keep the SSH door's lengths and cap (15 min
        // idle, 12 h, 4 per principal, its defaults without `[ssh]`).
        let (idle, max, cap) = config.ssh.as_ref().map_or(
            (
                Duration::from_secs(15 * 60),
                Duration::from_secs(12 * 3600),
                4,
            ),
            |s| (s.idle_timeout, s.max_session, s.max_sessions_per_principal),
        );
        let console = crate::doors::web::router(ctx.clone(), idle, max, cap);
        let door = Arc::new(crate::doors::api::ApiDoor::new(
            ctx.clone(),
            api,
            Some(console),
        )?);
        doors.push(tokio::spawn(door.serve(
            listener,
            gate("api"),
            shutdown.clone(),
            connections.clone(),
        )));
    }
    tokio::spawn(check_chain(guard.clone()));
    // Recordings the last run left unfinished, then retention, hourly.
    tokio::spawn(keep_recordings(recordings.clone(), stop_rx.clone()));
    // Access that ends, ends everywhere: end dates, expiries, changes.
    tokio::spawn(crate::commands::access::watch(ctx.clone(), stop_rx.clone()));
    if let Some(f) = forwarder {
        tokio::spawn(f.run(store.clone(), stop_rx.clone()));
    }
    if let Some(listener) = metrics_listener {
        let sample = sampler(
            guard.clone(),
            ctx.recordings.clone(),
            sessions.clone(),
            shared_maps,
            review.clone(),
        );
        let floods = Arc::new(crate::listen::Floods::new(guard.clone(), "metrics"));
        tokio::spawn(metrics::serve(
            listener,
            sample,
            floods,
            shutdown.clone(),
            local_connections.clone(),
        ));
    }
    tokio::spawn(review_reminder(guard.clone(), review, stop_rx.clone()));
    tokio::spawn(guard.clone().follow_directory(stop_rx.clone()));
    if let Some(every) = notifier.watchdog_every() {
        let mut stop = stop_rx.clone();
        let n = Notifier::from_env();
        tokio::spawn(async move {
            loop {
                n.send("WATCHDOG=1");
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop.changed() => return,
                }
            }
        });
    }

    ready(&Running {
        socket: socket.clone(),
        guard: guard.clone(),
    });
    notifier.send("READY=1\nSTATUS=metergate is serving");

    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    let mut hup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;
    let which = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = hup.recv() => {
                notifier.send("RELOADING=1");
                live.reload(&guard).await;
                notifier.send("READY=1");
            }
        }
    };
    notifier.send("STOPPING=1\nSTATUS=draining sessions");
    // Stop accepting, let live sessions finish up to the deadline, then end
    // the rest (a request in flight is answered first).
    let _ = stop_tx.send(true);
    let _ = control.await;
    for d in doors {
        let _ = d.await;
    }
    // Connections not logged in end at the signal; sessions finish what
    // they do until the drain deadline, then are ended; each connection's
    // task ending is what the drain waits for.
    connections.close();
    let drained = tokio::time::timeout(config.daemon.drain_timeout.0, connections.wait()).await;
    let ended = if drained.is_ok() {
        0
    } else {
        sessions.end_all("the daemon is stopping")
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), connections.wait()).await;
    if let Err(e) = std::fs::remove_file(&socket) {
        tracing::debug!(error = %e, "the control socket was not removed");
    }
    let stopped = EventDraft::new("system.stop", Category::System, Outcome::Success)
        .reason(format!(
            "stopped on {which}; {ended} session(s) still open at the drain deadline were ended"
        ))
        .detail("ended_sessions", ended);
    if let Err(e) = store.log().append(stopped).await {
        tracing::error!(error = %e, "the stop could not be logged");
    }
    store.flush()?;
    Ok(())
}

/// What a reload may change while the daemon runs.
struct Live {
    config: Config,
    /// The maps the metrics read.
    shared_maps: Arc<ArcSwap<Vec<Arc<UnitMap>>>>,
    maps: Vec<Arc<UnitMap>>,
    plain: Vec<Arc<ModbusDoor>>,
    /// (unit map index, door)
    tls: Vec<(usize, Arc<MbapsDoor>)>,
    ssh: Option<Arc<crate::doors::ssh::SshDoor>>,
    recordings: Arc<crate::recording::Recordings>,
}

impl Live {
    /// SIGHUP: reads the config again and applies it all at once, or
    /// nothing (a bad config is rejected and the running one stays).
    /// Meters, profiles, client entries and the guard's rules change;
    /// sessions that are not affected go on.
    async fn reload(&mut self, guard: &Guard) {
        let path = self.config.path.clone();
        let failed = |why: String| {
            tracing::error!("reload rejected, the running config stays: {why}");
            EventDraft::new("system.reload-failed", Category::System, Outcome::Failure)
                .reason(format!(
                    "the new config was rejected, the running one stays: {why}"
                ))
                .detail("config", path.display())
        };
        let new = match Config::load(&self.config.path) {
            Ok((c, _)) => c,
            Err(e) => {
                log_event(guard, failed(e.to_string())).await;
                return;
            }
        };
        if new.modbus_listen.len() != self.config.modbus_listen.len() {
            // Unit maps follow the listeners that exist.
            log_event(
                guard,
                failed("it has another number of Modbus listeners; restart to apply it".into()),
            )
            .await;
            return;
        }
        // What only a restart applies: the daemon bound its sockets and
        // dropped root at start, so it binds nothing new (ports below 1024
        // least of all); state and identity stay as started.
        let old = &self.config;
        let restart: Vec<&str> = [
            ("modbus.listen", new.modbus_listen != old.modbus_listen),
            ("mbaps", new.mbaps != old.mbaps),
            ("api", new.api != old.api),
            ("state_dir", new.state_dir != old.state_dir),
            ("control", new.control != old.control),
            ("daemon", new.daemon != old.daemon),
            ("passwords", new.passwords != old.passwords),
            ("mail", new.mail != old.mail),
            ("audit.forward", new.audit.forward != old.audit.forward),
            ("ssh", new.ssh != old.ssh),
            (
                "limits (connections)",
                (
                    new.limits.connections_per_listener,
                    new.limits.connections_per_source,
                    new.limits.first_request_timeout,
                ) != (
                    old.limits.connections_per_listener,
                    old.limits.connections_per_source,
                    old.limits.first_request_timeout,
                ),
            ),
        ]
        .into_iter()
        .filter_map(|(k, changed)| changed.then_some(k))
        .collect();
        let (maps, added, removed) = unit_maps_reusing(&new, &self.maps);
        guard
            .store()
            .log()
            .set_capacity(new.audit.capacity(old.audit.forward.is_some()));
        self.recordings.set_config(&new);
        guard.reload(
            GuardSettings::from_config(&new),
            new.meters.clone(),
            new.profiles.clone(),
        );
        let mut ended = 0;
        for (i, door) in self.plain.iter().enumerate() {
            door.proxy.units.store(maps[i].clone());
            ended += door.set_clients(new.modbus_clients.clone());
        }
        for (i, door) in &self.tls {
            door.proxy.units.store(maps[*i].clone());
        }
        if let Some(ssh) = &self.ssh {
            ssh.set_support_keys(&new.support.keys);
            // Keys no longer listed let nobody in; sessions on them end.
            let gone: Vec<&String> = self
                .config
                .support
                .keys
                .iter()
                .filter(|k| !new.support.keys.contains(k))
                .collect();
            for line in gone {
                if let Some(k) = crate::sshkeys::line_credential(line) {
                    ended += ssh.end_sessions_on(&k, "support key removed from the config");
                }
            }
        }
        let reason = format!(
            "config reloaded: {} meters ({added} added, {removed} removed), {} profiles, {} Modbus client entries; {ended} session(s) of changed client entries ended{}",
            new.meters.len(),
            new.profiles.len(),
            new.modbus_clients.len(),
            if restart.is_empty() {
                String::new()
            } else {
                format!("; not applied until a restart: {}", restart.join(", "))
            }
        );
        tracing::info!("{reason}");
        if !restart.is_empty() {
            tracing::warn!(
                "the daemon binds its sockets only at start (after dropping root it could not bind ports below 1024): restart it to apply {}",
                restart.join(", ")
            );
        }
        log_event(
            guard,
            EventDraft::new("system.reload", Category::System, Outcome::Success)
                .reason(reason)
                .detail("config", self.config.path.display())
                .detail("meters_added", added)
                .detail("meters_removed", removed),
        )
        .await;
        self.shared_maps.store(Arc::new(maps.clone()));
        self.maps = maps;
        // What was not applied stays as it runs, so that the next reload
        // compares against what is really in force.
        let mut kept = new;
        kept.modbus_listen = self.config.modbus_listen.clone();
        kept.mbaps = self.config.mbaps.clone();
        kept.api = self.config.api.clone();
        kept.state_dir = self.config.state_dir.clone();
        kept.control = self.config.control.clone();
        kept.daemon = self.config.daemon.clone();
        kept.passwords = self.config.passwords.clone();
        kept.ssh = self.config.ssh.clone();
        kept.audit.forward = self.config.audit.forward.clone();
        kept.limits.connections_per_listener = self.config.limits.connections_per_listener;
        kept.limits.connections_per_source = self.config.limits.connections_per_source;
        kept.limits.first_request_timeout = self.config.limits.first_request_timeout;
        self.config = kept;
    }
}

async fn log_event(guard: &Guard, ev: EventDraft) {
    if let Err(e) = guard.store().log().append(ev).await {
        tracing::error!(error = %e, "an event could not be logged");
    }
}

/// What a metrics scrape reads: counters, sessions, the meters' pools, the
/// log, whether a review is due.
/// Marks what the last run left unfinished, then removes recordings older
/// than `recording.keep`, at start and every hour.
async fn keep_recordings(
    recordings: Arc<crate::recording::Recordings>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    recordings.recover().await;
    loop {
        recordings.sweep(OffsetDateTime::now_utc()).await;
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
            _ = stop.changed() => return,
        }
    }
}

fn sampler(
    guard: Arc<Guard>,
    recordings: Arc<crate::recording::Recordings>,
    sessions: Arc<Sessions>,
    maps: Arc<ArcSwap<Vec<Arc<UnitMap>>>>,
    review: ReviewSettings,
) -> Arc<dyn Fn() -> Sample + Send + Sync> {
    Arc::new(move || {
        let mut by_door: std::collections::BTreeMap<String, usize> = ["modbus", "mbaps"]
            .into_iter()
            .map(|d| (d.to_string(), 0))
            .collect();
        for s in sessions.list() {
            *by_door.entry(s.door).or_default() += 1;
        }
        let meters = maps
            .load()
            .iter()
            .flat_map(|u| u.values())
            .map(|(id, link)| MeterSample {
                id: id.clone(),
                connected: link.connected(),
                lanes: link.lanes(),
                waiting: link.waiting(),
                busy_refusals: link.busy_refusals(),
            })
            .collect();
        let c = &guard.counters;
        Sample {
            decisions: metrics::render_decisions(&c.decisions),
            latency: metrics::render_latency(&c.latency),
            sessions: by_door.into_iter().collect(),
            meters,
            audit_events: guard.store().log().last_seq(),
            audit_pending: guard.store().log().pending(),
            audit_alarm: c.audit_alarm.load(std::sync::atomic::Ordering::Relaxed)
                || guard.store().log().is_failing(),
            audit: audit_sample(&guard),
            reads_allowed: c.reads_allowed.load(std::sync::atomic::Ordering::Relaxed),
            reads_denied: c.reads_denied.load(std::sync::atomic::Ordering::Relaxed),
            review_overdue: review_due(&guard, &review, OffsetDateTime::now_utc()).is_some(),
            more: recordings.render_metrics() + &directory_metrics(&guard),
        }
    })
}

/// The shared directory's health (nothing for the local backend).
fn directory_metrics(guard: &Guard) -> String {
    let Some(shared) = guard.store().shared_directory() else {
        return String::new();
    };
    let h = shared.health();
    let now = crate::model::micros(OffsetDateTime::now_utc());
    let stale = if h.last_contact == 0 {
        0.0
    } else {
        (now - h.last_contact).max(0) as f64 / 1e6
    };
    format!(
        "# HELP metergate_directory_reachable 1 while the shared directory (PostgreSQL) can be reached.\n\
         # TYPE metergate_directory_reachable gauge\nmetergate_directory_reachable {}\n\
         # HELP metergate_directory_version The directory version this gateway decides on.\n\
         # TYPE metergate_directory_version gauge\nmetergate_directory_version {}\n\
         # HELP metergate_directory_lag_versions Changes on the server this gateway has not applied yet.\n\
         # TYPE metergate_directory_lag_versions gauge\nmetergate_directory_lag_versions {}\n\
         # HELP metergate_directory_stale_seconds Since the last contact with the server.\n\
         # TYPE metergate_directory_stale_seconds gauge\nmetergate_directory_stale_seconds {stale:.3}\n",
        u8::from(h.reachable),
        guard.store().directory_version(),
        h.remote_version
            .saturating_sub(guard.store().directory_version()),
    )
}

fn audit_sample(guard: &Guard) -> metrics::AuditSample {
    use std::sync::atomic::Ordering::Relaxed;
    let log = guard.store().log();
    let st = log.status();
    let fw = guard.store().forward_state();
    let forwarding = fw.target.lock().map(|t| t.is_some()).unwrap_or(false);
    metrics::AuditSample {
        stored: st.stored,
        capacity: st.capacity.events,
        warning: st.stored >= st.capacity.warn_at,
        refused_full: st.refused_full,
        dropped: st.dropped,
        suppressed: st.suppressed,
        chain_broken_at: guard.counters.chain_broken_at.load(Relaxed),
        forward: forwarding.then(|| {
            (
                fw.connected.load(Relaxed),
                st.last_seq.saturating_sub(st.forwarded),
                fw.reconnects.load(Relaxed),
            )
        }),
    }
}

/// A broken chain does not stop the daemon (that would blind the control
/// room); it is logged as critical, naming the first bad seq.
async fn check_chain(guard: Arc<Guard>) {
    let g = guard.clone();
    let Ok(report) = tokio::task::spawn_blocking(move || g.store().verify(None)).await else {
        return;
    };
    if let Some((seq, why)) = report.problem {
        guard
            .counters
            .chain_broken_at
            .store(seq.max(1), std::sync::atomic::Ordering::Relaxed);
        tracing::error!(seq, %why, "security log chain is broken");
        let ev = EventDraft::new("audit.chain-broken", Category::Audit, Outcome::Failure)
            .reason(format!("CRITICAL: first bad seq {seq}: {why}"))
            .detail("first_bad_seq", seq);
        let _ = guard.store().log().append(ev).await;
    }
}

/// Says, in an event, when no review was recorded for the configured
/// interval or users and roles changed since the last one (at most daily).
async fn review_reminder(
    guard: Arc<Guard>,
    review: ReviewSettings,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let now = OffsetDateTime::now_utc();
        if let Some(why) = review_due(&guard, &review, now) {
            let last: Option<i64> = guard.meta("review_reminded");
            if last.is_none_or(|t| micros(now) - t > 86_400_000_000) {
                let ev = EventDraft::new("review.due", Category::Admin, Outcome::Failure)
                    .reason(format!("a review of users and roles is due: {why}"));
                if guard.store().log().append(ev).await.is_ok() {
                    let _ = guard.set_meta("review_reminded", &micros(now));
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(REVIEW_CHECK) => {}
            _ = stop.changed() => return,
        }
    }
}
