//! The daemon: opens the store, starts the guard and every listener, runs
//! until SIGTERM or Ctrl-C, then stops accepting and leaves the log flushed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use crate::config::Config;
use crate::doors::admin::exec::{AdminContext, ReviewSettings, review_due};
use crate::doors::admin::server::{self, Access, ControlError};
use crate::doors::mbaps::{MbapsDoor, MbapsError, Tls};
use crate::doors::modbus::{ModbusDoor, unit_maps};
use crate::guard::Guard;
use crate::model::micros;
use crate::service::{self, Notifier, ServiceError};
use crate::sessions::Sessions;
use crate::store::secrets::HashPool;
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
    // Certificates first: a bad file is a config error, found before
    // anything else starts.
    let tls = match &config.mbaps {
        Some(m) => Some(Arc::new(Tls::load(m, OffsetDateTime::now_utc())?)),
        None => None,
    };

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
            tokio::net::TcpListener::bind(&address)
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

    let store = Arc::new(Store::open(&config.state_dir)?);
    let guard = Arc::new(Guard::new(store.clone(), &config));
    let review = ReviewSettings {
        interval: config.review.interval.0,
        unused_after: config.review.unused_after.0,
    };
    let sessions = Arc::new(Sessions::default());
    let ctx = Arc::new(AdminContext {
        guard: guard.clone(),
        sessions: sessions.clone(),
        hashes: Arc::new(HashPool::new(
            config.passwords.hash_threads,
            config.passwords.hash_queue,
        )),
        review: review.clone(),
        crl_changed: tls.as_ref().map(|t| t.crl_changed.clone()),
    });

    let started = EventDraft::new("system.start", Category::System, Outcome::Success)
        .reason(format!("metergate {} started", env!("CARGO_PKG_VERSION")))
        .detail("config", config.path.display());
    if let Err(e) = store.log().append(started).await {
        tracing::error!(error = %e, "the start could not be logged");
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let control = tokio::spawn(server::serve(
        control_listener,
        ctx.clone(),
        access,
        stop_rx.clone(),
    ));
    let maps = unit_maps(&config);
    let mut doors = Vec::new();
    for (door, listener) in ModbusDoor::from_config(&config, guard.clone(), sessions.clone(), &maps)
        .into_iter()
        .zip(plain_listeners)
    {
        doors.push(tokio::spawn(
            Arc::new(door).serve(listener, stop_rx.clone()),
        ));
    }
    if let Some(tls) = &tls {
        for (i, listener) in tls_listeners.into_iter().enumerate() {
            let door = MbapsDoor::new(
                guard.clone(),
                sessions.clone(),
                maps[i].clone(),
                tls.clone(),
            );
            doors.push(tokio::spawn(
                Arc::new(door).serve(listener, stop_rx.clone()),
            ));
        }
        tokio::spawn(
            tls.clone()
                .watch_crl(guard.clone(), sessions.clone(), stop_rx.clone()),
        );
    }
    tokio::spawn(check_chain(guard.clone()));
    tokio::spawn(review_reminder(guard.clone(), review, stop_rx.clone()));
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
    let which = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    notifier.send("STOPPING=1\nSTATUS=draining sessions");
    // Stop accepting, let live sessions finish up to the deadline, then end
    // the rest (a request in flight is answered first).
    let _ = stop_tx.send(true);
    let _ = control.await;
    for d in doors {
        let _ = d.await;
    }
    let deadline = tokio::time::Instant::now() + config.daemon.drain_timeout.0;
    while !sessions.list().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ended = sessions.end_all("the daemon is stopping");
    let grace = tokio::time::Instant::now() + Duration::from_secs(2);
    while !sessions.list().is_empty() && tokio::time::Instant::now() < grace {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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

/// A broken chain does not stop the daemon (that would blind the control
/// room); it is logged as critical, naming the first bad seq.
async fn check_chain(guard: Arc<Guard>) {
    let g = guard.clone();
    let Ok(report) = tokio::task::spawn_blocking(move || g.store().log().verify()).await else {
        return;
    };
    if let Some((seq, why)) = report.problem {
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
