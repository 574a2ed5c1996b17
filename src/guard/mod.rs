//! The guard: the single authorizer. Every door turns what it received into
//! an [`Action`] and asks here; the guard answers Allow or Deny with the
//! reason, keeps the little state decisions need, and writes the event.

pub mod action;
pub mod api;
mod compiled;
mod confer;
pub mod decision;
mod effective;
mod login;
pub mod mfa;
mod state;
pub mod tokens;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use time::OffsetDateTime;

use crate::config::{Config, Lockout, MeterConfig, MfaRequired, OnFailure};
use crate::model::{
    Directory, MeterSelector, Permission, PermissionSet, PrincipalId, Profile, micros,
};
use crate::sessions::Sessions;
use crate::store::secrets::HashPool;
use crate::store::{Category, EventDraft, Op, Outcome, Store, StoreError};

pub use action::{Action, AdminOp, CertificateClaim, Request, WriteValues};
use compiled::{CompiledPrincipal, MeterRef, Snapshot};
pub use confer::Conferral;
pub use decision::{Decision, Label, Reason};
pub use effective::{Draft, Effective, Grant, Holder, MeterGroup};
pub use login::{Attempt, Credential, PasswordCheck, PasswordGate, Proof, Verdict, shown_key_id};
pub use state::SourceGate;

/// The rules from the config that decisions depend on.
#[derive(Clone, Debug)]
pub struct GuardSettings {
    pub peak_demand_reset_interval: Duration,
    pub lockout: Lockout,
    pub on_failure: OnFailure,
    pub read_events: bool,
    pub separation_of_duties: Vec<(Permission, Permission)>,
    pub support_meters: Option<Vec<MeterSelector>>,
    /// Which permissions need a second factor whatever the statements say.
    pub mfa: MfaRequired,
}

impl GuardSettings {
    pub fn from_config(c: &Config) -> GuardSettings {
        GuardSettings {
            peak_demand_reset_interval: c.limits.peak_demand_reset_interval.0,
            lockout: c.lockout.clone(),
            on_failure: c.audit.on_failure,
            read_events: c.audit.read_events,
            separation_of_duties: c.separation_of_duties.clone(),
            support_meters: c.support.meters.clone(),
            mfa: c.mfa.required,
        }
    }
}

/// Counters that metrics read.
#[derive(Default)]
pub struct Counters {
    pub reads_allowed: AtomicU64,
    pub reads_denied: AtomicU64,
    /// Set when an event could not be made durable and the config said
    /// fail-open: the alarm of DESIGN §4.
    pub audit_alarm: AtomicBool,
    /// The first bad seq the chain check at start found (0: none).
    pub chain_broken_at: AtomicU64,
    /// Every decision by door and outcome (metrics).
    pub decisions: crate::metrics::Decisions,
    /// Modbus request latency per door (metrics).
    pub latency: crate::metrics::Latency,
}

/// The single authorizer.
pub struct Guard {
    store: Arc<Store>,
    state: state::GuardState,
    snapshot: ArcSwap<Snapshot>,
    settings: ArcSwap<GuardSettings>,
    meters: ArcSwap<(
        Vec<MeterConfig>,
        std::collections::BTreeMap<String, Profile>,
    )>,
    pub counters: Counters,
    /// The bounded password-hashing pool (logins, new passwords).
    hashes: Arc<HashPool>,
    /// Live sessions on every door (the session cap; ending access).
    sessions: Arc<Sessions>,
    /// Woken after every change to the directory or the rules, so that
    /// access a change withdrew ends at once.
    changed: tokio::sync::Notify,
    /// Admin changes run one at a time, so a change is checked (what it
    /// confers) against the directory it is applied to.
    changing: tokio::sync::Mutex<()>,
    /// The directory version the snapshot was compiled from (read before
    /// the directory, so never newer than what the snapshot holds).
    snapshot_version: AtomicU64,
    /// One recompilation at a time (the last one reads the newest
    /// directory), holding the directory the snapshot was compiled from.
    recompiling: std::sync::Mutex<Option<Arc<Directory>>>,
    /// The HTTPS API's bearer tokens (digests only).
    tokens: tokens::Tokens,
}

tokio::task_local! {
    /// The version of the snapshot the running admin command was decided
    /// on (see [`Guard::checked_change`]); changes it makes carry it.
    static CHECKED_ON: u64;
}

/// The change turn, and the snapshot version the change is decided on.
pub struct CheckedChange<'a> {
    _turn: tokio::sync::MutexGuard<'a, ()>,
    version: u64,
}

impl CheckedChange<'_> {
    /// Runs `work` (the command) so that every change it makes is applied
    /// only on the directory its checks were made on.
    pub async fn run<F: std::future::Future>(&self, work: F) -> F::Output {
        CHECKED_ON.scope(self.version, work).await
    }
}

impl Guard {
    pub fn new(store: Arc<Store>, config: &Config) -> Guard {
        let mut guard = Guard::with_fleet(
            store,
            GuardSettings::from_config(config),
            config.meters.clone(),
            config.profiles.clone(),
        );
        guard.hashes = Arc::new(HashPool::new(
            config.passwords.hash_threads,
            config.passwords.hash_queue,
        ));
        guard
    }

    pub fn with_fleet(
        store: Arc<Store>,
        settings: GuardSettings,
        meters: Vec<MeterConfig>,
        profiles: std::collections::BTreeMap<String, Profile>,
    ) -> Guard {
        let version = store.directory_version();
        let compiled_from = store.directory();
        let snapshot = Snapshot::compile(&compiled_from, &meters, &profiles);
        Guard {
            state: state::GuardState::with_shared(
                store.guard_tree().clone(),
                store.shared_handle(),
            ),
            store,
            snapshot: ArcSwap::from_pointee(snapshot),
            settings: ArcSwap::from_pointee(settings),
            meters: ArcSwap::from_pointee((meters, profiles)),
            counters: Counters::default(),
            hashes: Arc::new(HashPool::new(1, 64)),
            sessions: Arc::new(Sessions::default()),
            changed: tokio::sync::Notify::new(),
            tokens: tokens::Tokens::default(),
            changing: tokio::sync::Mutex::new(()),
            snapshot_version: AtomicU64::new(version),
            recompiling: std::sync::Mutex::new(Some(compiled_from)),
        }
    }

    /// The store, for the daemon's own housekeeping and the core's reads of
    /// the log; doors never reach it.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The directory as it is now (a snapshot).
    pub fn directory(&self) -> Arc<Directory> {
        self.store.directory()
    }

    pub fn hashes(&self) -> &Arc<HashPool> {
        &self.hashes
    }

    pub fn sessions(&self) -> &Arc<Sessions> {
        &self.sessions
    }

    /// Writes an event that is not a decision (a session's start and end, a
    /// change applied, what the CA did). One that cannot be made durable
    /// raises the alarm of DESIGN §4; its seq when it was.
    pub async fn record(&self, ev: EventDraft) -> Option<u64> {
        match self.store.log().append(ev).await {
            Ok(seq) => Some(seq),
            Err(e) => {
                tracing::error!(error = %e, "an event could not be logged");
                self.counters.audit_alarm.store(true, Ordering::Relaxed);
                None
            }
        }
    }

    /// Writes an event caused by unauthenticated traffic (aggregated
    /// garbage, refused handshakes), within the quota of `audit`.
    pub async fn record_unauthenticated(&self, ev: EventDraft) {
        let _ = self.store.log().append_unauthenticated(ev).await;
    }

    /// Says in one event how many unauthenticated-traffic events the quota
    /// counted instead of logging.
    pub async fn report_suppressed(&self) {
        let _ = self.store.log().report_suppressed().await;
    }

    pub fn settings(&self) -> Arc<GuardSettings> {
        self.settings.load_full()
    }

    /// Decides on the directory as it is now: only the principals and
    /// groups a change reaches are compiled again.
    fn recompile(&self) {
        self.recompile_with(false);
    }

    fn recompile_with(&self, whole: bool) {
        // A change here and one followed from another gateway may both
        // recompile: one at a time, so an older snapshot never replaces a
        // newer one.
        let mut from = match self.recompiling.lock() {
            Ok(from) => from,
            // A recompile that panicked left nothing to build on.
            Err(poisoned) => {
                let mut from = poisoned.into_inner();
                *from = None;
                self.recompiling.clear_poison();
                from
            }
        };
        let version = self.store.directory_version();
        let dir = self.store.directory();
        let snapshot = match from.as_ref() {
            Some(before) if !whole => {
                let changed = crate::model::changed_entries(before, &dir);
                let reach = crate::model::reach(before, &dir, &changed);
                self.snapshot.load().update(&dir, &reach)
            }
            _ => {
                let fleet = self.meters.load();
                Snapshot::compile(&dir, &fleet.0, &fleet.1)
            }
        };
        let old = self.snapshot.swap(Arc::new(snapshot));
        let before = from.replace(dir);
        self.snapshot_version.store(version, Ordering::SeqCst);
        drop(from);
        // What only the old ones held is freed after the new snapshot is
        // in force, off the lock (100k users take a while to free).
        drop((old, before));
    }

    /// Applies a change to identities and rules (atomic, versioned,
    /// separation of duties enforced) and makes the guard decide on it.
    pub fn change(
        &self,
        ops: Vec<Op>,
        by: &PrincipalId,
        now: OffsetDateTime,
    ) -> Result<Arc<Directory>, StoreError> {
        let settings = self.settings.load();
        // Made by an admin command that took its turn: applied only on the
        // directory it was decided on.
        let checked = CHECKED_ON.try_with(|v| *v).ok();
        let dir = self.store.apply_checked(
            ops,
            &by.to_string(),
            now,
            &settings.separation_of_duties,
            checked,
        )?;
        self.recompile();
        // Before the change returns: a token whose access this change
        // withdrew is gone, even if the next change gives the access back.
        self.sweep_tokens(now);
        self.changed.notify_one();
        // `review` says when users and roles changed since the last review.
        if let Err(e) = self.state.set_meta("directory_changed", &micros(now)) {
            tracing::warn!(error = %e, "could not record the time of the change");
        }
        Ok(dir)
    }

    /// Follows the shared directory until `stop`: a change made on another
    /// gateway is decided on at once (live sessions it withdrew end, as for
    /// a change made here), and the server going away or coming back is an
    /// event (`directory.unreachable`, `directory.reachable`).
    pub async fn follow_directory(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let Some(shared) = self.store.shared_directory() else {
            return;
        };
        let server = shared.server().to_string();
        let mut changes = self.store.directory_changes();
        let mut reachable = true;
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
        loop {
            tokio::select! {
                r = changes.changed() => {
                    if r.is_err() {
                        return;
                    }
                    let now = OffsetDateTime::now_utc();
                    self.recompile();
                    self.sweep_tokens(now);
                    self.changed.notify_one();
                }
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            let Some(health) = self.store.shared_directory().map(|s| s.health()) else {
                return;
            };
            if health.reachable {
                self.reconcile_failures();
            }
            if health.since == 0 || health.reachable == reachable {
                continue;
            }
            reachable = health.reachable;
            let ev = if reachable {
                EventDraft::new("directory.reachable", Category::System, Outcome::Success)
                    .reason(format!("{server} can be reached again; changes flow"))
            } else {
                EventDraft::new("directory.unreachable", Category::System, Outcome::Failure)
                    .reason(format!(
                        "{}; decisions go on from this gateway's last copy, admin changes are refused",
                        health.error.as_deref().unwrap_or(&server)
                    ))
            };
            self.record(ev.detail("gateway", shared.gateway())).await;
        }
    }

    /// Beyond `directory.max_stale` without the shared directory, a
    /// person's new login is refused: this gateway's copy may still hold
    /// someone removed elsewhere. Modbus (whoever the certificate names),
    /// service users and the local console go on, so the control room is
    /// never blinded by a network outage, and sessions already open are
    /// not ended.
    fn stale_directory(&self, req: &Request, now: OffsetDateTime) -> Option<i64> {
        // "access": the re-check of a session already open.
        if !matches!(req.principal, PrincipalId::User(_) | PrincipalId::Support)
            || req.door == "mbaps"
            || req.door == "access"
        {
            return None;
        }
        self.store.shared_directory()?.stale_since(micros(now))
    }

    /// Shares the failure runs counted here while the directory was away
    /// (cheap when there are none: one empty prefix scan).
    fn reconcile_failures(&self) {
        let l = self.settings.load().lockout.clone();
        let now = micros(OffsetDateTime::now_utc());
        match self
            .state
            .reconcile(now, l.failures, l.window.0, l.duration.0)
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                runs = n,
                "failure runs counted here while the directory was away are now shared"
            ),
            Err(e) => tracing::warn!(error = %e, "failure runs not reconciled yet"),
        }
    }

    /// Replaces the directory with an export's records (`directory
    /// import`) and decides on it at once.
    pub fn import_directory(
        &self,
        records: Vec<crate::store::Write>,
        replace: bool,
        now: OffsetDateTime,
    ) -> Result<Arc<Directory>, StoreError> {
        let dir = self.store.import_records(records, replace)?;
        self.recompile();
        self.sweep_tokens(now);
        self.changed.notify_one();
        Ok(dir)
    }

    /// Replaces the fleet (meters and profiles) and the settings (reload).
    pub fn reload(
        &self,
        settings: GuardSettings,
        meters: Vec<MeterConfig>,
        profiles: std::collections::BTreeMap<String, Profile>,
    ) {
        self.settings.store(Arc::new(settings));
        self.meters.store(Arc::new((meters, profiles)));
        self.recompile_with(true);
        self.sweep_tokens(OffsetDateTime::now_utc());
        self.changed.notify_one();
    }

    /// Held by an admin change from its checks to its apply: two changes
    /// that each confer half of a grant cannot pass their checks together.
    pub async fn one_change_at_a_time(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.changing.lock().await
    }

    /// The turn, for a change whose checks (may the caller do it, what it
    /// confers) come after this: with a shared directory, the change is
    /// applied only if no gateway changed the directory since, so checks
    /// made here never pass on a grant another gateway just withdrew.
    pub async fn checked_change(&self) -> CheckedChange<'_> {
        let turn = self.changing.lock().await;
        // A change followed from another gateway and not compiled yet:
        // decide on it rather than refuse the change for it later.
        if self.snapshot_version.load(Ordering::SeqCst) != self.store.directory_version() {
            self.recompile();
        }
        CheckedChange {
            _turn: turn,
            version: self.snapshot_version.load(Ordering::SeqCst),
        }
    }

    /// Resolves after the next change to the directory or the rules.
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// What the guard would decide, with the reason; no state changes, no
    /// event. Doors call [`Guard::authorize`]; `check` and benchmarks call this.
    pub fn decide(&self, req: &Request, now: OffsetDateTime) -> Decision {
        self.decide_in(&self.snapshot.load(), req, now)
    }

    /// As [`Guard::decide`], as if a draft policy were attached (`check
    /// --with-policy`); the live snapshot without one.
    pub fn decide_with(
        &self,
        draft: Option<&Draft>,
        req: &Request,
        now: OffsetDateTime,
    ) -> Decision {
        match draft {
            Some(d) => self.decide_in(&d.snapshot, req, now),
            None => self.decide(req, now),
        }
    }

    fn decide_in(&self, snap: &Snapshot, req: &Request, now: OffsetDateTime) -> Decision {
        let principal = match lookup(snap, &req.principal) {
            Ok(p) => p,
            Err(reason) => return Decision::deny(None, reason),
        };
        if let Err(reason) = principal.gate.check(now) {
            return Decision::deny(None, reason);
        }
        // A certificate's role bounds what its owner's policies allow.
        let limit = match req.certificate.as_deref() {
            None => None,
            Some(CertificateClaim { role: Some(r), .. }) => match snap.roles.get(r.as_str()) {
                Some(set) => Some((*set, Label::new(r))),
                None => {
                    return Decision::deny(
                        None,
                        Reason::UnknownCertificateRole {
                            role: Label::new(r),
                        },
                    );
                }
            },
            Some(CertificateClaim { role: None, .. }) if req.action != Action::Login => {
                return Decision::deny(None, Reason::NoCertificateRole);
            }
            Some(_) => None,
        };
        let ctx = Ctx {
            guard: self,
            snap,
            who: &req.principal,
            principal,
            limit,
            factor_missing: needs_factor(&req.principal) && !req.second_factor,
            mfa: MfaRequired::Never,
            unrecorded: !req.recorded,
        }
        .with_mfa_setting();
        match &req.action {
            Action::WriteRegisters { .. } | Action::Diagnostics { .. } if req.read_only => {
                Decision::deny(None, Reason::ReadOnlyClient)
            }
            Action::Login => match self.stale_directory(req, now) {
                Some(last_contact) => Decision::deny(None, Reason::DirectoryStale { last_contact }),
                None => Decision::allow(None, Reason::PrincipalActive),
            },
            Action::ReadRegisters {
                meter,
                function,
                start,
                count,
            } => {
                let Some(m) = snap.meter(meter) else {
                    return Decision::deny(None, Reason::UnknownMeter);
                };
                ctx.read(m, *function, *start, *count)
            }
            Action::WriteRegisters {
                meter,
                function,
                start,
                values,
                read,
            } => {
                let Some(m) = snap.meter(meter) else {
                    return Decision::deny(None, Reason::UnknownMeter);
                };
                if let Some((rs, rc)) = read {
                    // FC 23's read part reads holding registers, as FC 3 does.
                    let d = ctx.read(m, 3, *rs, *rc);
                    if !d.allowed {
                        return d;
                    }
                }
                ctx.write(m, *function, *start, values)
            }
            Action::Diagnostics { .. } => {
                Decision::deny(None, Reason::Privileged("FC 8 diagnostics"))
            }
            Action::File { meter, op, path } => {
                let Some(m) = snap.meter(meter) else {
                    return Decision::deny(None, Reason::UnknownMeter);
                };
                let needed = snap.profiles[m.meter.profile as usize].file_permissions(*op, path);
                ctx.any_of(&needed, Some(m))
            }
            Action::Terminal { meter } => {
                let Some(m) = snap.meter(meter) else {
                    return Decision::deny(None, Reason::UnknownMeter);
                };
                ctx.evaluate(Permission::TerminalAccess, Some(m))
            }
            Action::Admin { op, .. } => {
                if matches!(req.principal, PrincipalId::Service(_)) && !principal.administrator {
                    return Decision::deny(
                        None,
                        Reason::AdministratorRequired(
                            "an API call (admin command) by a service user",
                        ),
                    );
                }
                match op {
                    AdminOp::Change => ctx.evaluate(Permission::UserManagement, None),
                    AdminOp::View => ctx.any_of(
                        &[Permission::UserManagement, Permission::SecurityLogsAccess],
                        None,
                    ),
                    AdminOp::ResendPassword if !principal.administrator => Decision::deny(
                        None,
                        Reason::AdministratorRequired("re-issuing a temporary password"),
                    ),
                    AdminOp::ResendPassword => ctx.evaluate(Permission::UserManagement, None),
                    AdminOp::MailAddress if !principal.administrator => Decision::deny(
                        None,
                        Reason::AdministratorRequired(
                            "changing another person's email (where their temporary passwords are mailed)",
                        ),
                    ),
                    AdminOp::MailAddress => ctx.evaluate(Permission::UserManagement, None),
                    AdminOp::DirectoryTransfer if !principal.administrator => Decision::deny(
                        None,
                        Reason::AdministratorRequired(
                            "moving the directory out or in (it holds every hash and all access)",
                        ),
                    ),
                    AdminOp::DirectoryTransfer => ctx.evaluate(Permission::UserManagement, None),
                    AdminOp::OwnPassword => ctx.evaluate(Permission::PasswordSelfManagement, None),
                    AdminOp::OwnProfile => Decision::allow(None, Reason::PrincipalActive),
                }
            }
            Action::ReadAudit { .. } => ctx.evaluate(Permission::SecurityLogsAccess, None),
        }
    }

    /// The configured meters and profiles (the shell's `meters`, actions
    /// and meter-side accounts).
    pub fn fleet(
        &self,
    ) -> Arc<(
        Vec<MeterConfig>,
        std::collections::BTreeMap<String, Profile>,
    )> {
        self.meters.load_full()
    }

    /// The roles `who` holds on `meter` through allow statements (by name),
    /// for choosing a meter-side account.
    pub fn roles_on(&self, who: &PrincipalId, meter: &str) -> Vec<String> {
        let snap = self.snapshot.load();
        let (Ok(p), Some(m)) = (lookup(&snap, who), snap.meter(meter)) else {
            return Vec::new();
        };
        p.roles_on(m).iter().map(|r| r.to_string()).collect()
    }

    /// DESIGN §2: the meter-side account `who` uses on `meter` (its own
    /// `accounts`, else its profile's) for `permission`: the first entry,
    /// least privileged first, that names one of the roles `who` holds there
    /// or `permission` itself; or why there is none.
    pub fn meter_account(
        &self,
        who: &PrincipalId,
        meter: &str,
        permission: Permission,
    ) -> Result<String, String> {
        let fleet = self.fleet();
        let Some(m) = fleet.0.iter().find(|m| m.id == meter) else {
            return Err(format!("no meter `{meter}`"));
        };
        let entries = match &m.accounts {
            Some(a) => a.as_slice(),
            None => fleet
                .1
                .get(&m.profile)
                .map(|p| p.accounts.as_slice())
                .unwrap_or(&[]),
        };
        let roles = self.roles_on(who, meter);
        let chosen = entries.iter().find(|e| {
            e.role.as_ref().is_some_and(|r| roles.contains(r)) || e.permission == Some(permission)
        });
        match chosen {
            Some(a) => Ok(a.account.clone()),
            None => Err(format!(
                "no meter-side account of {meter} maps to your roles ({}) or to {permission}",
                if roles.is_empty() {
                    "none".to_string()
                } else {
                    roles.join(", ")
                }
            )),
        }
    }

    /// `check`: may `who` use `permission` on `meter` (or globally), in a
    /// session with a second factor or without one?
    pub fn decide_permission(
        &self,
        who: &PrincipalId,
        permission: Permission,
        meter: Option<&str>,
        second_factor: bool,
        now: OffsetDateTime,
    ) -> Decision {
        self.decide_permission_with(None, who, permission, meter, second_factor, now)
    }

    /// As [`Guard::decide_permission`], as if a draft policy were attached.
    pub fn decide_permission_with(
        &self,
        draft: Option<&Draft>,
        who: &PrincipalId,
        permission: Permission,
        meter: Option<&str>,
        second_factor: bool,
        now: OffsetDateTime,
    ) -> Decision {
        let live;
        let snap: &Snapshot = match draft {
            Some(d) => &d.snapshot,
            None => {
                live = self.snapshot.load();
                &live
            }
        };
        let principal = match lookup(snap, who) {
            Ok(p) => p,
            Err(reason) => return Decision::deny(Some(permission), reason),
        };
        if let Err(reason) = principal.gate.check(now) {
            return Decision::deny(Some(permission), reason);
        }
        let ctx = Ctx {
            guard: self,
            snap,
            who,
            principal,
            limit: None,
            factor_missing: needs_factor(who) && !second_factor,
            mfa: MfaRequired::Never,
            // `check` answers for a recorded session; its reason names
            // statements that need one.
            unrecorded: false,
        }
        .with_mfa_setting();
        match meter {
            Some(id) => match snap.meter(id) {
                Some(m) => ctx.evaluate(permission, Some(m)),
                None => Decision::deny(Some(permission), Reason::UnknownMeter),
            },
            None => ctx.evaluate(permission, None),
        }
    }

    /// Decides, keeps the state the decision needs (the Peak Demand Reset
    /// slot), and writes the event. An allowed action other than a read is
    /// returned only once its event is durable; if it cannot be made durable
    /// the config's `audit.on_failure` applies.
    pub async fn authorize(&self, req: &Request, now: OffsetDateTime) -> Decision {
        let mut d = self.decide(req, now);
        if d.allowed
            && let Action::WriteRegisters { meter, .. } = &req.action
        {
            d = self.peak_demand_slot(meter, d, now);
        }
        self.counters.decisions.count(req.door, d.allowed);
        let settings = self.settings.load();
        if req.action.is_read() {
            let counter = if d.allowed {
                &self.counters.reads_allowed
            } else {
                &self.counters.reads_denied
            };
            counter.fetch_add(1, Ordering::Relaxed);
            if d.allowed && !settings.read_events {
                return d;
            }
        }
        match self.store.log().append(decision_event(req, &d)).await {
            Ok(seq) => d.event = Some(seq),
            Err(e) => {
                tracing::error!(error = %e, action = %req.action, "decision could not be logged");
                // Reading the log is a read too: it goes on when the log
                // cannot take its event (DESIGN §4: reads go on).
                let read = req.action.is_read() || matches!(req.action, Action::ReadAudit { .. });
                if d.allowed && !read {
                    match settings.on_failure {
                        OnFailure::FailClosed => {
                            d = Decision::deny(d.permission, Reason::AuditUnavailable)
                        }
                        OnFailure::FailOpen => {
                            self.counters.audit_alarm.store(true, Ordering::Relaxed)
                        }
                    }
                }
            }
        }
        d
    }

    fn peak_demand_slot(&self, meter: &str, d: Decision, now: OffsetDateTime) -> Decision {
        let interval = self.settings.load().peak_demand_reset_interval;
        let now_us = micros(now);
        if d.used.contains(Permission::PeakDemandReset) {
            match self.state.reserve_peak_reset(meter, now_us, interval) {
                Ok(Ok(())) => {}
                Ok(Err(next_allowed)) => {
                    return Decision::deny(
                        Some(Permission::PeakDemandReset),
                        Reason::PeakDemandLockout { next_allowed },
                    );
                }
                // The slot cannot be kept: refuse rather than allow resets
                // the lockout cannot count (two gateways in front of one
                // meter would each allow one while the directory is away).
                Err(StoreError::Unreachable(_)) => {
                    return Decision::deny(
                        Some(Permission::PeakDemandReset),
                        Reason::SharedSlotUnavailable,
                    );
                }
                Err(_) => {
                    return Decision::deny(
                        Some(Permission::PeakDemandReset),
                        Reason::AuditUnavailable,
                    );
                }
            }
        }
        if d.used.contains(Permission::MasterReset) {
            match self.state.restart_peak_interval(meter, now_us) {
                Ok(()) => {}
                Err(StoreError::Unreachable(_)) => {
                    return Decision::deny(
                        Some(Permission::MasterReset),
                        Reason::SharedSlotUnavailable,
                    );
                }
                Err(_) => {
                    return Decision::deny(Some(Permission::MasterReset), Reason::AuditUnavailable);
                }
            }
        }
        d
    }

    /// A configured meter's tags (for the support boundary, a cold path).
    fn meter_tags(&self, id: &str) -> std::collections::BTreeMap<String, String> {
        self.meters
            .load()
            .0
            .iter()
            .find(|m| m.id == id)
            .map(|m| m.tags.clone())
            .unwrap_or_default()
    }

    /// When `who` last logged in (UTC µs).
    pub fn last_login(&self, who: &PrincipalId) -> Option<i64> {
        self.state.last_login(who).ok().flatten()
    }

    /// Until when password login is locked for `who`, if it is.
    pub fn locked_until(&self, who: &PrincipalId, now: OffsetDateTime) -> Option<i64> {
        self.state
            .locked_until(who, micros(now), true)
            .ok()
            .flatten()
    }

    /// Small persistent records of the guard's (last review, last change).
    pub fn set_meta<T: serde::Serialize>(&self, key: &str, value: &T) -> Result<(), StoreError> {
        self.state.set_meta(key, value)
    }

    pub fn meta<T: for<'de> serde::Deserialize<'de>>(&self, key: &str) -> Option<T> {
        self.state.meta(key).ok().flatten()
    }

    /// `user unlock`: ends a password lock.
    pub fn unlock(&self, who: &PrincipalId) -> Result<bool, StoreError> {
        self.state.unlock(who)
    }
}

/// The event for a decision.
fn decision_event(req: &Request, d: &Decision) -> EventDraft {
    let category = match &req.action {
        Action::Login => Category::Authentication,
        Action::ReadRegisters { .. }
        | Action::WriteRegisters { .. }
        | Action::Diagnostics { .. } => Category::Modbus,
        Action::File { .. } => Category::File,
        Action::Terminal { .. } => Category::Session,
        Action::Admin { .. } => Category::Admin,
        Action::ReadAudit { .. } => Category::Audit,
    };
    let (suffix, outcome) = if d.allowed {
        ("allow", Outcome::Allow)
    } else {
        ("deny", Outcome::Deny)
    };
    let mut ev = EventDraft::new(
        &format!("{}.{suffix}", req.action.word()),
        category,
        outcome,
    )
    .principal(&req.principal)
    .door(req.door)
    .action(&req.action)
    .reason(&d.reason);
    if let Some(s) = &req.source {
        ev = ev.source(s);
    }
    if let Some(m) = req.action.meter() {
        ev = ev.meter(m);
    }
    if let Some(p) = d.permission {
        ev = ev.permission(p);
    }
    if let Some(c) = &req.certificate {
        ev = ev
            .detail("certificate_serial", &c.serial)
            .detail("certificate_subject", &c.subject)
            .detail("certificate_role", c.role.as_deref().unwrap_or("(none)"));
    }
    if d.used.iter().count() > 1 {
        ev = ev.detail(
            "permissions",
            d.used
                .iter()
                .map(|p| p.name())
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    ev
}

/// The compiled principal for an id; `local:` callers hold Administrator.
// The Reason is built only on the deny path; boxing it would allocate there.
#[allow(clippy::result_large_err)]
fn lookup<'a>(snap: &'a Snapshot, who: &PrincipalId) -> Result<&'a CompiledPrincipal, Reason> {
    match snap.principals.get(who) {
        Some(p) => Ok(p),
        None if matches!(who, PrincipalId::Local(_)) => Ok(&snap.local),
        None if *who == PrincipalId::Support => Err(Reason::SupportNotGranted),
        None => Err(Reason::UnknownPrincipal),
    }
}

/// One decision's context: the snapshot and the principal's statements.
struct Ctx<'a> {
    guard: &'a Guard,
    snap: &'a Snapshot,
    who: &'a PrincipalId,
    principal: &'a CompiledPrincipal,
    /// The permissions of the client certificate's role, when there is one.
    limit: Option<(PermissionSet, Label)>,
    /// A person whose session has not proved a second factor: statements
    /// that require one do not allow, nor does `[mfa] required` for its
    /// permissions.
    factor_missing: bool,
    /// `[mfa] required`, read once per decision when a factor is missing.
    mfa: MfaRequired,
    /// What the request leads to is not being recorded: statements that
    /// require recording do not allow.
    unrecorded: bool,
}

/// Only people give a second factor. Service users, Modbus clients and
/// certificates are machines; `local:` callers already hold the host (the
/// break-glass path); support staff have no account to enrol one in, and
/// are bounded by their own end date and meter boundary.
fn needs_factor(who: &PrincipalId) -> bool {
    matches!(who, PrincipalId::User(_))
}

impl Ctx<'_> {
    fn with_mfa_setting(mut self) -> Self {
        if self.factor_missing {
            self.mfa = self.guard.settings.load().mfa;
        }
        self
    }

    /// Default deny; an explicit deny anywhere beats every allow.
    fn evaluate(&self, permission: Permission, meter: Option<MeterRef<'_>>) -> Decision {
        if let Some((set, role)) = &self.limit
            && !set.contains(permission)
        {
            return Decision::deny(
                Some(permission),
                Reason::OutsideCertificateRole { role: *role },
            );
        }
        if !permission.is_global() {
            let Some(m) = meter else {
                return Decision::deny(Some(permission), Reason::NoStatementAllows);
            };
            if *self.who == PrincipalId::Support
                && let Some(boundary) = &self.guard.settings.load().support_meters
                && !boundary
                    .iter()
                    .any(|s| s.matches(m.id, &self.guard.meter_tags(m.id)))
            {
                return Decision::deny(Some(permission), Reason::OutsideSupportBoundary);
            }
        }
        let mut allow = None;
        // An allow that needs the factor this session lacks (the first).
        let mut needs_factor: Option<usize> = None;
        // An allow usable only in a recorded session (the first).
        let mut needs_recording: Option<usize> = None;
        let setting = self.factor_missing && self.mfa.requires(permission);
        for (i, st) in self.principal.statements.iter().enumerate() {
            if !st.covers.contains(permission) {
                continue;
            }
            let applies = permission.is_global()
                || meter.is_some_and(|m| self.principal.selectors(st).iter().any(|s| s.matches(m)));
            if !applies {
                continue;
            }
            match st.effect {
                crate::model::Effect::Deny => {
                    let (policy, statement, role) = self.principal.origin(i, permission);
                    return Decision::deny(
                        Some(permission),
                        Reason::Denied {
                            policy,
                            statement,
                            role,
                        },
                    );
                }
                crate::model::Effect::Allow if self.factor_missing && st.require_mfa => {
                    needs_factor.get_or_insert(i);
                }
                crate::model::Effect::Allow if self.unrecorded && st.require_recording => {
                    needs_recording.get_or_insert(i);
                }
                crate::model::Effect::Allow => {
                    allow.get_or_insert(i);
                }
            }
        }
        if setting && (allow.is_some() || needs_factor.is_some()) {
            return Decision::deny(
                Some(permission),
                Reason::NeedsSecondFactor { statement: None },
            );
        }
        if let (None, None, Some(i)) = (allow, needs_factor, needs_recording) {
            let (policy, statement, _) = self.principal.origin(i, permission);
            return Decision::deny(
                Some(permission),
                Reason::NeedsRecording { policy, statement },
            );
        }
        if let (None, Some(i)) = (allow, needs_factor) {
            let (policy, statement, _) = self.principal.origin(i, permission);
            return Decision::deny(
                Some(permission),
                Reason::NeedsSecondFactor {
                    statement: Some((policy, statement)),
                },
            );
        }
        match allow {
            Some(i) => {
                let (policy, statement, role) = self.principal.origin(i, permission);
                Decision::allow(
                    Some(permission),
                    Reason::Allowed {
                        policy,
                        statement,
                        role,
                    },
                )
            }
            None => Decision::deny(Some(permission), Reason::NoStatementAllows),
        }
    }

    /// Allowed if any of `needed` is; otherwise the first one's denial.
    fn any_of(&self, needed: &[Permission], meter: Option<MeterRef<'_>>) -> Decision {
        let mut first = None;
        for &p in needed {
            let d = self.evaluate(p, meter);
            if d.allowed {
                return d;
            }
            first.get_or_insert(d);
        }
        first.unwrap_or_else(|| Decision::deny(None, Reason::NoStatementAllows))
    }

    fn read(&self, m: MeterRef<'_>, function: u8, start: u16, count: u16) -> Decision {
        let profile = &self.snap.profiles[m.meter.profile as usize];
        // 43/14 (device identification) reads no registers: Data View alone.
        if function != 43
            && !profile
                .read
                .iter()
                .any(|r| r.covers(function, start, count))
        {
            return Decision::deny(
                Some(Permission::DataView),
                Reason::NotReadable {
                    function,
                    start,
                    count,
                },
            );
        }
        self.evaluate(Permission::DataView, Some(m))
    }

    /// Every register written must be covered by an allowlist entry (value
    /// included) of a permission the principal holds on this meter.
    fn write(&self, m: MeterRef<'_>, function: u8, start: u16, values: &WriteValues) -> Decision {
        let profile = &self.snap.profiles[m.meter.profile as usize];
        let mut cache: Vec<(Permission, Decision)> = Vec::new();
        let mut used = PermissionSet::EMPTY;
        let mut first_allow: Option<Decision> = None;
        for i in 0..values.len() {
            let value = values.value(i);
            let Ok(address) = u16::try_from(start as u32 + i as u32) else {
                return Decision::deny(
                    None,
                    Reason::NotInAllowlist {
                        function,
                        address: u16::MAX,
                        value,
                    },
                );
            };
            let mut denial: Option<Decision> = None;
            let mut covered = false;
            for rule in profile.write.iter().filter(|r| r.covers(function, address)) {
                let value_ok = match (&rule.values, value) {
                    (None, _) => true,
                    (Some(allowed), Some(v)) => allowed.contains(&v),
                    (Some(_), None) => false,
                };
                if !value_ok {
                    continue;
                }
                let d = match cache.iter().find(|(p, _)| *p == rule.permission) {
                    Some((_, d)) => d.clone(),
                    None => {
                        let d = self.evaluate(rule.permission, Some(m));
                        cache.push((rule.permission, d.clone()));
                        d
                    }
                };
                if d.allowed {
                    used.insert(rule.permission);
                    first_allow.get_or_insert(d);
                    covered = true;
                    break;
                }
                denial.get_or_insert(d);
            }
            if !covered {
                return denial.unwrap_or_else(|| {
                    Decision::deny(
                        None,
                        Reason::NotInAllowlist {
                            function,
                            address,
                            value,
                        },
                    )
                });
            }
        }
        match first_allow {
            Some(mut d) => {
                d.used = used;
                d
            }
            None => Decision::deny(
                None,
                Reason::NotInAllowlist {
                    function,
                    address: start,
                    value: None,
                },
            ),
        }
    }
}
