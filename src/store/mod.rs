//! The store in sled: identities, roles, policies and support access (each
//! change atomic and versioned), the guard's small state, and the
//! hash-chained security log. sled locks its directory: one process at a time.
//! Over 800 lines: a change's one path (compute, then commit to sled or to
//! PostgreSQL, and this gateway's copy) reads best in one place.

pub mod checkpoint;
mod copy;
pub mod cut;
pub mod export;
pub mod forward;
pub mod index;
pub mod log;
pub mod postgres;
pub mod secrets;
pub mod signing;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use time::OffsetDateTime;

use crate::model::{
    Directory, DirectoryError, Group, Permission, Policy, Role, ServiceUser, Stamp, SupportAccess,
    User, example_roles, micros,
};
pub use crate::model::{
    administrators, administrators_among, granted_without_administrator, sod_conflicts,
    sod_conflicts_among,
};
pub use log::{
    AuditError, AuditLog, Category, EventDraft, Outcome, SecurityEvent, VerifyReport, verify_after,
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {error}")]
    Io { path: String, error: String },
    #[error(
        "the store at {0} is in use by another process (is the daemon running? then ask it instead)"
    )]
    Locked(String),
    #[error("the store failed: {0}")]
    Sled(String),
    #[error("stored record `{key}` cannot be read: {error}")]
    Corrupt { key: String, error: String },
    #[error("{kind} `{name}` already exists")]
    Exists { kind: &'static str, name: String },
    #[error("{kind} `{name}` does not exist")]
    NotFound { kind: &'static str, name: String },
    #[error(
        "{kind} `{name}` was changed by someone else (version {actual}, you had {expected}); read it again and retry"
    )]
    StaleVersion {
        kind: &'static str,
        name: String,
        expected: u64,
        actual: u64,
    },
    #[error(transparent)]
    Invalid(#[from] DirectoryError),
    #[error(
        "refused: {principal} would hold both \"{first}\" and \"{second}\", which separation of duties keeps apart"
    )]
    SeparationOfDuties {
        principal: String,
        first: Permission,
        second: Permission,
    },
    #[error(
        "refused: no active user or service user would hold the Administrator policy any more (never lock everyone out)"
    )]
    LastAdministrator,
    #[error(
        "the directory cannot be reached ({0}): admin changes are refused until it is back; decisions go on from this gateway's last copy"
    )]
    Unreachable(String),
    #[error("the directory kept changing under this change (other gateways); try again")]
    Contended,
    /// The shared directory moved on between a change's checks (what the
    /// caller may do, what it confers) and its write: nothing is applied,
    /// because the checks were made on a directory that is no longer.
    #[error(
        "another gateway changed the directory while this change was being checked: nothing was applied; run it again"
    )]
    ChangedWhileChecked,
    #[error("refused: failure injected after {0} writes (test)")]
    Injected(usize),
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Sled(e.to_string())
    }
}

/// Something the directory keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entity {
    User(User),
    ServiceUser(ServiceUser),
    Group(Group),
    Role(Role),
    Policy(Policy),
    Support(SupportAccess),
}

/// The kind of an entity, for deletes and messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    User,
    ServiceUser,
    Group,
    Role,
    Policy,
    Support,
}

impl Kind {
    pub fn word(self) -> &'static str {
        match self {
            Kind::User => "user",
            Kind::ServiceUser => "service user",
            Kind::Group => "group",
            Kind::Role => "role",
            Kind::Policy => "policy",
            Kind::Support => "support access",
        }
    }
    fn prefix(self) -> &'static str {
        match self {
            Kind::User => "user/",
            Kind::ServiceUser => "svc/",
            Kind::Group => "group/",
            Kind::Role => "role/",
            Kind::Policy => "policy/",
            Kind::Support => "support/",
        }
    }
}

impl Entity {
    pub fn kind(&self) -> Kind {
        match self {
            Entity::User(_) => Kind::User,
            Entity::ServiceUser(_) => Kind::ServiceUser,
            Entity::Group(_) => Kind::Group,
            Entity::Role(_) => Kind::Role,
            Entity::Policy(_) => Kind::Policy,
            Entity::Support(_) => Kind::Support,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Entity::User(x) => &x.name,
            Entity::ServiceUser(x) => &x.name,
            Entity::Group(x) => &x.name,
            Entity::Role(x) => &x.name,
            Entity::Policy(x) => &x.name,
            Entity::Support(_) => "support",
        }
    }

    fn stamps(&mut self) -> (&mut u64, &mut Stamp, &mut Stamp) {
        match self {
            Entity::User(x) => (&mut x.version, &mut x.created, &mut x.modified),
            Entity::ServiceUser(x) => (&mut x.version, &mut x.created, &mut x.modified),
            Entity::Group(x) => (&mut x.version, &mut x.created, &mut x.modified),
            Entity::Role(x) => (&mut x.version, &mut x.created, &mut x.modified),
            Entity::Policy(x) => (&mut x.version, &mut x.created, &mut x.modified),
            Entity::Support(x) => (&mut x.version, &mut x.created, &mut x.modified),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let r = match self {
            Entity::User(x) => serde_json::to_vec(x),
            Entity::ServiceUser(x) => serde_json::to_vec(x),
            Entity::Group(x) => serde_json::to_vec(x),
            Entity::Role(x) => serde_json::to_vec(x),
            Entity::Policy(x) => serde_json::to_vec(x),
            Entity::Support(x) => serde_json::to_vec(x),
        };
        r.unwrap_or_default()
    }
}

/// How an operation expects the entity to be when it applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// It must not exist yet.
    New,
    /// It must exist at this version (optimistic concurrency).
    Version(u64),
}

/// One step of a change; a change is a list of them, applied all or none.
// Ops live only for the length of one admin change: boxing buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put(Entity, Expect),
    Delete(Kind, String, u64),
}

fn current_version(dir: &Directory, kind: Kind, name: &str) -> Option<u64> {
    match kind {
        Kind::User => dir.users.get(name).map(|x| x.version),
        Kind::ServiceUser => dir.service_users.get(name).map(|x| x.version),
        Kind::Group => dir.groups.get(name).map(|x| x.version),
        Kind::Role => dir.roles.get(name).map(|x| x.version),
        Kind::Policy => dir.policies.get(name).map(|x| x.version),
        Kind::Support => dir.support.as_ref().map(|x| x.version),
    }
}

fn created_of(dir: &Directory, kind: Kind, name: &str) -> Option<Stamp> {
    match kind {
        Kind::User => dir.users.get(name).map(|x| x.created.clone()),
        Kind::ServiceUser => dir.service_users.get(name).map(|x| x.created.clone()),
        Kind::Group => dir.groups.get(name).map(|x| x.created.clone()),
        Kind::Role => dir.roles.get(name).map(|x| x.created.clone()),
        Kind::Policy => dir.policies.get(name).map(|x| x.created.clone()),
        Kind::Support => dir.support.as_ref().map(|x| x.created.clone()),
    }
}

/// An earlier version of a policy: as it was (its `modified` says who made
/// it and when), and who replaced or deleted it, when.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PolicyVersion {
    pub policy: Policy,
    pub replaced: Stamp,
    pub deleted: bool,
}

fn policy_of(dir: &Directory, kind: Kind, name: &str) -> Option<Policy> {
    match kind {
        Kind::Policy => dir.policies.get(name).cloned(),
        _ => None,
    }
}

fn history_prefix(name: &str) -> String {
    format!("history/policy/{name}\0")
}

fn history_record(policy: Policy, replaced: &Stamp, deleted: bool) -> (Vec<u8>, Option<Vec<u8>>) {
    let key = format!(
        "{}{:020}\0{:010}",
        history_prefix(&policy.name),
        replaced.at.max(0),
        policy.version
    );
    let record = PolicyVersion {
        policy,
        replaced: replaced.clone(),
        deleted,
    };
    (
        key.into_bytes(),
        Some(serde_json::to_vec(&record).unwrap_or_default()),
    )
}

fn put(dir: &mut Directory, e: Entity) {
    match e {
        Entity::User(x) => {
            dir.users.insert(x.name.clone(), x);
        }
        Entity::ServiceUser(x) => {
            dir.service_users.insert(x.name.clone(), x);
        }
        Entity::Group(x) => {
            dir.groups.insert(x.name.clone(), x);
        }
        Entity::Role(x) => {
            dir.roles.insert(x.name.clone(), x);
        }
        Entity::Policy(x) => {
            dir.policies.insert(x.name.clone(), x);
        }
        Entity::Support(x) => dir.support = Some(x),
    }
}

fn remove(dir: &mut Directory, kind: Kind, name: &str) {
    match kind {
        Kind::User => {
            dir.users.remove(name);
        }
        Kind::ServiceUser => {
            dir.service_users.remove(name);
        }
        Kind::Group => {
            dir.groups.remove(name);
        }
        Kind::Role => {
            dir.roles.remove(name);
        }
        Kind::Policy => {
            dir.policies.remove(name);
        }
        Kind::Support => dir.support = None,
    }
}

/// The store. One per state directory and process.
pub struct Store {
    path: PathBuf,
    db: sled::Db,
    directory_tree: sled::Tree,
    guard_tree: sled::Tree,
    log: AuditLog,
    /// The forwarder's state; the log holds it too.
    forward: Arc<forward::ForwardState>,
    /// Signs checkpoints of the log.
    signing: Arc<ring::signature::Ed25519KeyPair>,
    /// This gateway's copy of the directory (the whole of it for the local
    /// backend), and the lock changes take.
    mirror: Arc<Mirror>,
    /// The shared directory, when `[directory] backend = "postgres"`.
    shared: Option<Arc<postgres::Postgres>>,
    fail_after: AtomicUsize,
    /// Where this daemon's last whole verification of the log ended, for
    /// [`Store::verify_incremental`].
    verified: Mutex<Option<Verified>>,
}

/// A head of the log that a verification reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub seq: u64,
    pub hash: String,
    /// When the last whole walk was (µs); what was logged after it has
    /// been walked since, as it came.
    pub whole_at: i64,
}

const SLED_DIR: &str = "store";
/// The security log's indexes (rebuilt from the log when missing).
const INDEX_DIR: &str = "audit-index";
/// Signed cut markers of the log (drop-oldest).
const CUTS_TREE: &str = "audit_cuts";

impl Store {
    /// Opens (or creates) the store under `state_dir`, which is made 0700.
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        Store::open_with(state_dir, log::Capacity::default())
    }

    /// Opens the store with the log's capacity rule from the config.
    pub fn open_with(state_dir: &Path, capacity: log::Capacity) -> Result<Store, StoreError> {
        Store::open_configured(state_dir, capacity, &crate::config::DirectoryConfig::Local)
    }

    /// Opens the store with the directory backend of the config: the log
    /// and the guard's small state stay local either way.
    pub fn open_configured(
        state_dir: &Path,
        capacity: log::Capacity,
        backend: &crate::config::DirectoryConfig,
    ) -> Result<Store, StoreError> {
        let io = |e: std::io::Error| StoreError::Io {
            path: state_dir.display().to_string(),
            error: e.to_string(),
        };
        std::fs::create_dir_all(state_dir).map_err(io)?;
        // Identities, hashes and the log live here: nobody else reads it.
        std::fs::set_permissions(state_dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        // The audit-signing key exists from the first start on, so every
        // checkpoint the log ever signs uses the same key.
        let signing = Arc::new(signing::load_or_create(state_dir)?);
        let db = open_sled(&state_dir.join(SLED_DIR))?;
        let directory_tree = db.open_tree("directory")?;
        let guard_tree = db.open_tree("guard")?;
        // The log's indexes live in a store of their own: the log's flushes
        // (one per group commit) never wait for index pages, and an index
        // that lags or is lost is rebuilt from the log.
        // No background flushes either: its fsyncs would compete with the
        // log's, and a lost index is rebuilt.
        let index_path = state_dir.join(INDEX_DIR);
        let index_db = open_sled_with(
            sled::Config::new().path(&index_path).flush_every_ms(None),
            &index_path,
        )?;
        let forward = Arc::new(forward::ForwardState::default());
        let log = AuditLog::open(
            &db,
            db.open_tree("audit")?,
            index_db.open_tree("audit_index")?,
            db.open_tree(CUTS_TREE)?,
            signing.clone(),
            capacity,
            forward.clone(),
        )?;
        if let crate::config::DirectoryConfig::Postgres(config) = backend {
            log.name_gateway(&config.gateway);
        }
        let (shared, directory, version, copy, directory_id) = match backend {
            crate::config::DirectoryConfig::Local => (
                None,
                load_directory(&directory_tree)?,
                0,
                None,
                String::new(),
            ),
            crate::config::DirectoryConfig::Postgres(config) => {
                let pg = postgres::Postgres::connect(config)?;
                // Start from this gateway's copy and read only what changed
                // since (the whole directory when there is no copy, or when
                // the server's directory is behind it: another one).
                let copy = copy::SharedCopy::open(&db)?;
                let mut kept = copy.load()?;
                let now_us = micros(OffsetDateTime::now_utc());
                let mut dir = Directory::default();
                let mut directory_id = kept
                    .as_ref()
                    .map(|c| c.directory_id.clone())
                    .unwrap_or_default();
                let reading = pg.directory_id().and_then(|id| {
                    // A copy of another directory is no copy of this one.
                    if kept.as_ref().is_some_and(|c| c.directory_id != id) {
                        tracing::warn!(
                            "this gateway's copy is of another directory: reading this one whole"
                        );
                        kept = None;
                    }
                    directory_id = id;
                    let from = kept.as_ref().map_or(0, |c| c.version);
                    pg.changes_since_within(from, postgres::WHOLE_READ)
                        .map(|r| (r, from))
                });
                let version = match reading {
                    Ok(((records, to), from)) => {
                        let whole = from == 0 || to < from;
                        if let Some(c) = kept.as_ref().filter(|_| !whole) {
                            for (key, value) in &c.records {
                                apply_record(&mut dir, key, value.as_deref())?;
                            }
                        }
                        for (key, value) in &records {
                            apply_record(&mut dir, key, value.as_deref())?;
                        }
                        if whole {
                            copy.replace(&records, to, &directory_id, now_us)?;
                        } else if to != from {
                            copy.apply(&records, from, to)?;
                        }
                        copy.reached(now_us);
                        to
                    }
                    // Without the server, this gateway's last copy lets it
                    // decide (fail-static, up to max_stale for people); a
                    // gateway that never had one cannot.
                    Err(StoreError::Unreachable(why)) => match kept {
                        Some(c) => {
                            tracing::warn!(
                                version = c.version,
                                error = %why,
                                "started on this gateway's last copy of the directory"
                            );
                            pg.started_on_copy(c.last_contact);
                            for (key, value) in &c.records {
                                apply_record(&mut dir, key, value.as_deref())?;
                            }
                            c.version
                        }
                        None => {
                            return Err(StoreError::Unreachable(format!(
                                "{why}; this gateway has no copy of the directory yet, so it must reach the server once before it can start without it"
                            )));
                        }
                    },
                    Err(e) => return Err(e),
                };
                (Some(Arc::new(pg)), dir, version, Some(copy), directory_id)
            }
        };
        let store = Store {
            signing,
            path: state_dir.to_path_buf(),
            mirror: Arc::new(Mirror::new(directory, version, copy, directory_id)),
            shared,
            db,
            directory_tree,
            guard_tree,
            log,
            forward,
            fail_after: AtomicUsize::new(usize::MAX),
            verified: Mutex::new(None),
        };
        match &store.shared {
            None if store.directory_tree.is_empty() => store.seed()?,
            None => {}
            Some(pg) => {
                if store.mirror.version() == 0 && pg.health().reachable {
                    // Two gateways starting on an empty directory: one seeds.
                    match store.seed() {
                        Ok(()) | Err(StoreError::Exists { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                pg.follow(store.mirror.clone());
            }
        }
        Ok(store)
    }

    fn seed(&self) -> Result<(), StoreError> {
        let stamp = Stamp {
            at: micros(OffsetDateTime::now_utc()),
            by: "system".into(),
        };
        let ops = example_roles()
            .into_iter()
            .map(|(name, description, permissions)| {
                Op::Put(
                    Entity::Role(Role {
                        name: name.into(),
                        description: description.into(),
                        permissions,
                        created: stamp.clone(),
                        modified: stamp.clone(),
                        version: 0,
                    }),
                    Expect::New,
                )
            })
            .collect();
        self.apply(ops, "system", OffsetDateTime::now_utc(), &[])
            .map(|_| ())
    }

    pub fn state_dir(&self) -> &Path {
        &self.path
    }

    /// The session recordings' index (what each recording is; the files
    /// and the log's chunk events are the evidence).
    pub fn recordings_tree(&self) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree("recordings")?)
    }

    /// The directory as of now (cheap: shared, immutable).
    pub fn directory(&self) -> Arc<Directory> {
        self.mirror.current()
    }

    /// Resolves with the directory's version each time a change made on
    /// another gateway reached this one's copy (never for the local backend).
    pub fn directory_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.mirror.changed.subscribe()
    }

    /// The shared directory, when there is one (status, health).
    pub fn shared_directory(&self) -> Option<&postgres::Postgres> {
        self.shared.as_deref()
    }

    /// The shared directory as a handle the guard's state keeps.
    pub(crate) fn shared_handle(&self) -> Option<Arc<postgres::Postgres>> {
        self.shared.clone()
    }

    /// The directory version this gateway's copy is at (0: local backend).
    pub fn directory_version(&self) -> u64 {
        self.mirror.version()
    }

    /// A signed checkpoint of the log's head (None while the log is empty).
    pub fn checkpoint(&self) -> Result<Option<checkpoint::Checkpoint>, StoreError> {
        let head = self.log.tail(1)?;
        Ok(head.first().map(|e| checkpoint::sign(&self.signing, e)))
    }

    /// Checks the live log against a checkpoint.
    pub fn check_checkpoint(
        &self,
        cp: &checkpoint::Checkpoint,
        trusted_key: Option<&str>,
    ) -> checkpoint::Finding {
        checkpoint::check(cp, trusted_key, self.log.tree(), Some(self.log.cuts()))
    }

    /// Walks the live log's chain (cut markers checked against this
    /// store's audit-signing key).
    pub fn verify(&self, from: Option<u64>) -> VerifyReport {
        let report = self.log.verify(Some(&self.signing_public_key()), from);
        if from.is_none()
            && report.ok()
            && let Some(seq) = report.last_seq
            && let Ok(mut v) = self.verified.lock()
        {
            *v = Some(Verified {
                seq,
                hash: report.head_hash.clone(),
                whole_at: crate::model::micros(OffsetDateTime::now_utc()),
            });
        }
        report
    }

    /// Verifies only what was logged since this daemon's last whole
    /// verification (which must still hold at its end), or the whole log
    /// when there was none or drop-oldest removed its end: quick enough for
    /// every page load. Also returns the head it continued from (None: it
    /// walked the whole log).
    pub fn verify_incremental(&self) -> (VerifyReport, Option<Verified>) {
        let last = self.verified.lock().ok().and_then(|v| v.clone());
        let Some(last) = last.filter(|l| l.seq >= self.log.first_seq()) else {
            return (self.verify(None), None);
        };
        let report = log::verify_after(self.log.tree(), last.seq, &last.hash);
        if report.ok()
            && report.events > 0
            && let (Some(seq), Ok(mut v)) = (report.last_seq, self.verified.lock())
        {
            // The next check continues from here; the whole walk's time
            // stays the one it was.
            *v = Some(Verified {
                seq,
                hash: report.head_hash.clone(),
                whole_at: last.whole_at,
            });
        }
        (report, Some(last))
    }

    /// The audit-signing key's public half, hex.
    pub fn signing_public_key(&self) -> String {
        signing::public_hex(&self.signing)
    }

    pub fn log(&self) -> &AuditLog {
        &self.log
    }

    pub(crate) fn guard_tree(&self) -> &sled::Tree {
        &self.guard_tree
    }

    /// Every earlier version of policy `name`, oldest first (a policy
    /// deleted and made again under the name keeps the older history).
    pub fn policy_history(&self, name: &str) -> Result<Vec<PolicyVersion>, StoreError> {
        let records = match &self.shared {
            Some(pg) => pg.scan_prefix(history_prefix(name).as_bytes())?,
            None => self
                .directory_tree
                .scan_prefix(history_prefix(name))
                .map(|item| item.map(|(k, v)| (k.to_vec(), Some(v.to_vec()))))
                .collect::<Result<Vec<_>, _>>()?,
        };
        let mut out = Vec::new();
        for (k, v) in records {
            let Some(v) = v else { continue };
            out.push(serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                key: String::from_utf8_lossy(&k).to_string(),
                error: e.to_string(),
            })?);
        }
        Ok(out)
    }

    /// Every record of the directory as stored (entities and the earlier
    /// versions of policies), for `directory export`.
    pub fn export_records(&self) -> Result<Vec<Write>, StoreError> {
        let dir = self.directory();
        let mut out = Vec::new();
        let mut push = |e: Entity| {
            out.push((
                format!("{}{}", e.kind().prefix(), e.name()).into_bytes(),
                Some(e.encode()),
            ))
        };
        dir.users
            .values()
            .for_each(|x| push(Entity::User(x.clone())));
        dir.service_users
            .values()
            .for_each(|x| push(Entity::ServiceUser(x.clone())));
        dir.groups
            .values()
            .for_each(|x| push(Entity::Group(x.clone())));
        dir.roles
            .values()
            .for_each(|x| push(Entity::Role(x.clone())));
        dir.policies
            .values()
            .for_each(|x| push(Entity::Policy(x.clone())));
        if let Some(x) = &dir.support {
            push(Entity::Support(x.clone()));
        }
        out.extend(self.history_records()?);
        Ok(out)
    }

    fn history_records(&self) -> Result<Vec<Write>, StoreError> {
        Ok(match &self.shared {
            Some(pg) => pg.scan_prefix(b"history/")?,
            None => self
                .directory_tree
                .scan_prefix("history/")
                .map(|item| item.map(|(k, v)| (k.to_vec(), Some(v.to_vec()))))
                .collect::<Result<Vec<_>, _>>()?,
        })
    }

    /// Replaces the directory with exported records, as they were (versions,
    /// stamps and hashes kept), in one change. Refused when the directory
    /// holds more than the example roles, unless `replace`; and when the
    /// records do not make a valid directory with an administrator.
    pub fn import_records(
        &self,
        records: Vec<Write>,
        replace: bool,
    ) -> Result<Arc<Directory>, StoreError> {
        let _serial = self
            .mirror
            .changes
            .lock()
            .map_err(|_| StoreError::Sled("change lock poisoned".into()))?;
        let before = self.directory();
        let roles_only = before.users.is_empty()
            && before.service_users.is_empty()
            && before.groups.is_empty()
            && before.policies.is_empty()
            && before.support.is_none();
        if !roles_only && !replace {
            return Err(StoreError::Exists {
                kind: "directory",
                name: format!(
                    "with {} users, {} service users, {} groups and {} policies (give --replace to replace it)",
                    before.users.len(),
                    before.service_users.len(),
                    before.groups.len(),
                    before.policies.len()
                ),
            });
        }
        let mut next = Directory::default();
        for (key, value) in &records {
            apply_record(&mut next, key, value.as_deref())?;
        }
        next.validate()?;
        if administrators(&next) == 0 {
            return Err(StoreError::LastAdministrator);
        }
        // What the import does not hold is removed: the current entities
        // and the history are replaced whole.
        let mut writes: Vec<Write> = self
            .export_records()?
            .into_iter()
            .map(|(k, _)| (k, None))
            .collect();
        writes.extend(records.into_iter().filter(|(_, v)| v.is_some()));
        let next = Arc::new(next);
        match &self.shared {
            None => {
                self.commit_local((*next).clone(), writes)?;
            }
            Some(pg) => {
                let base = self.mirror.version();
                match pg.commit(base, writes.clone()) {
                    Ok(version) => {
                        self.mirror.keep(&writes, base, version, false);
                        self.mirror.set(next.clone(), version)
                    }
                    Err(postgres::CommitError::Behind) => return Err(StoreError::Contended),
                    Err(postgres::CommitError::Store(e)) => return Err(e),
                }
            }
        }
        Ok(next)
    }

    /// Makes everything written so far durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// Makes the next change fail after `n` of its writes (tests prove that
    /// nothing half-written remains). Cleared after it fires.
    pub fn inject_failure_after(&self, n: usize) {
        self.fail_after.store(n, Ordering::SeqCst);
    }

    /// Applies a change: every op or none, versions checked, references
    /// validated, separation of duties enforced, durable before it returns.
    /// `by` is recorded as who made it.
    pub fn apply(
        &self,
        ops: Vec<Op>,
        by: &str,
        now: OffsetDateTime,
        sod_pairs: &[(Permission, Permission)],
    ) -> Result<Arc<Directory>, StoreError> {
        self.apply_checked(ops, by, now, sod_pairs, None)
    }

    /// As [`Store::apply`], for a change whose caller was checked on the
    /// directory at version `checked`: with a shared directory that moved
    /// on since, it is refused ([`StoreError::ChangedWhileChecked`]) rather
    /// than applied on checks another gateway's change made stale.
    pub fn apply_checked(
        &self,
        ops: Vec<Op>,
        by: &str,
        now: OffsetDateTime,
        sod_pairs: &[(Permission, Permission)],
        checked: Option<u64>,
    ) -> Result<Arc<Directory>, StoreError> {
        let _serial = self
            .mirror
            .changes
            .lock()
            .map_err(|_| StoreError::Sled("change lock poisoned".into()))?;
        let Some(pg) = &self.shared else {
            let (next, writes) = compute(&self.directory(), ops, by, now, sod_pairs)?;
            return self.commit_local(next, writes);
        };
        let health = pg.health();
        if !health.reachable && health.since != 0 {
            return Err(StoreError::Unreachable(
                health.error.unwrap_or_else(|| pg.server().to_string()),
            ));
        }
        // Another gateway's change may land first: catch up, check the
        // change again on what the directory is now, and retry (unless the
        // caller's own checks were made on the older directory).
        for _ in 0..8 {
            let base = self.mirror.version();
            if checked.is_some_and(|v| v != base) {
                return Err(StoreError::ChangedWhileChecked);
            }
            let (next, writes) = compute(&self.directory(), ops.clone(), by, now, sod_pairs)?;
            if self.fail_after.swap(usize::MAX, Ordering::SeqCst) != usize::MAX {
                return Err(StoreError::Injected(0));
            }
            match pg.commit(base, writes.clone()) {
                Ok(version) => {
                    let next = Arc::new(next);
                    self.mirror.keep(&writes, base, version, false);
                    self.mirror.set(next.clone(), version);
                    return Ok(next);
                }
                Err(postgres::CommitError::Behind) => {
                    let (records, to) = pg.changes_since(base)?;
                    self.mirror.catch_up_locked(records, to, to < base)?;
                }
                Err(postgres::CommitError::Store(e)) => return Err(e),
            }
        }
        Err(StoreError::Contended)
    }

    /// Writes a computed change to sled: all or nothing, durable.
    fn commit_local(
        &self,
        next: Directory,
        writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<Arc<Directory>, StoreError> {
        let fail_after = self.fail_after.swap(usize::MAX, Ordering::SeqCst);
        let result: Result<(), TransactionError<StoreError>> =
            self.directory_tree.transaction(|tx| {
                for (i, (key, value)) in writes.iter().enumerate() {
                    if i == fail_after {
                        return Err(ConflictableTransactionError::Abort(StoreError::Injected(i)));
                    }
                    match value {
                        Some(v) => tx.insert(key.as_slice(), v.as_slice())?,
                        None => tx.remove(key.as_slice())?,
                    };
                }
                Ok(())
            });
        match result {
            Ok(()) => {}
            Err(TransactionError::Abort(e)) => return Err(e),
            Err(TransactionError::Storage(e)) => return Err(e.into()),
        }
        self.db.flush()?;
        let next = Arc::new(next);
        self.mirror.set(next.clone(), 0);
        Ok(next)
    }
}

/// A record of the directory: a change's writes, from sled or PostgreSQL.
pub type Write = (Vec<u8>, Option<Vec<u8>>);

/// A change worked out on `before`: the directory it makes and the
/// records to write. Versions checked, references validated, separation of
/// duties and the last administrator kept.
fn compute(
    before: &Arc<Directory>,
    ops: Vec<Op>,
    by: &str,
    now: OffsetDateTime,
    sod_pairs: &[(Permission, Permission)],
) -> Result<(Directory, Vec<Write>), StoreError> {
    {
        let before = before.clone();
        let mut next = (*before).clone();
        let stamp = Stamp {
            at: micros(now),
            by: by.to_string(),
        };
        let mut writes: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        let mut changed = Vec::new();
        for op in ops {
            match &op {
                Op::Put(entity, _) => changed.push(entry_of(entity.kind(), entity.name())),
                Op::Delete(kind, name, _) => changed.push(entry_of(*kind, name)),
            }
            match op {
                Op::Put(mut entity, expect) => {
                    let (kind, name) = (entity.kind(), entity.name().to_string());
                    let current = current_version(&next, kind, &name);
                    let version = match (expect, current) {
                        (Expect::New, None) => 1,
                        (Expect::New, Some(_)) => {
                            return Err(StoreError::Exists {
                                kind: kind.word(),
                                name,
                            });
                        }
                        (Expect::Version(_), None) => {
                            return Err(StoreError::NotFound {
                                kind: kind.word(),
                                name,
                            });
                        }
                        (Expect::Version(v), Some(actual)) if v != actual => {
                            return Err(StoreError::StaleVersion {
                                kind: kind.word(),
                                name,
                                expected: v,
                                actual,
                            });
                        }
                        (Expect::Version(v), Some(_)) => v + 1,
                    };
                    // An earlier version of a policy is kept (`policy history`).
                    if let Some(old) = policy_of(&next, kind, &name) {
                        writes.push(history_record(old, &stamp, false));
                    }
                    let created = created_of(&next, kind, &name).unwrap_or_else(|| stamp.clone());
                    let (v, c, m) = entity.stamps();
                    *v = version;
                    *c = created;
                    *m = stamp.clone();
                    writes.push((
                        format!("{}{}", kind.prefix(), name).into_bytes(),
                        Some(entity.encode()),
                    ));
                    put(&mut next, entity);
                }
                Op::Delete(kind, name, expected) => {
                    match current_version(&next, kind, &name) {
                        None => {
                            return Err(StoreError::NotFound {
                                kind: kind.word(),
                                name,
                            });
                        }
                        Some(actual) if actual != expected => {
                            return Err(StoreError::StaleVersion {
                                kind: kind.word(),
                                name,
                                expected,
                                actual,
                            });
                        }
                        Some(_) => {}
                    }
                    if let Some(old) = policy_of(&next, kind, &name) {
                        writes.push(history_record(old, &stamp, true));
                    }
                    writes.push((format!("{}{}", kind.prefix(), name).into_bytes(), None));
                    remove(&mut next, kind, &name);
                }
            }
        }
        next.validate_changed(&changed)?;
        // Only the principals the change reaches can gain a conflict.
        let reached = crate::model::reach(&before, &next, &changed).principals;
        let old = sod_conflicts_among(&before, sod_pairs, &reached);
        if let Some((who, a, b)) = sod_conflicts_among(&next, sod_pairs, &reached)
            .into_iter()
            .find(|c| !old.contains(c))
        {
            return Err(StoreError::SeparationOfDuties {
                principal: who.to_string(),
                first: a,
                second: b,
            });
        }
        // Only a principal the change reaches can stop being one.
        if administrators_among(&before, &reached) > 0 && administrators(&next) == 0 {
            return Err(StoreError::LastAdministrator);
        }
        Ok((next, writes))
    }
}

/// The directory entry an op names (what the change reaches starts there).
fn entry_of(kind: Kind, name: &str) -> crate::model::Entry {
    use crate::model::Entry;
    match kind {
        Kind::User => Entry::User(name.to_string()),
        Kind::ServiceUser => Entry::Service(name.to_string()),
        Kind::Group => Entry::Group(name.to_string()),
        Kind::Role => Entry::Role(name.to_string()),
        Kind::Policy => Entry::Policy(name.to_string()),
        Kind::Support => Entry::Support,
    }
}

/// This gateway's copy of the directory and the lock every change takes.
pub(crate) struct Mirror {
    directory: RwLock<Arc<Directory>>,
    /// The shared directory's version the copy is at (0: local).
    version: AtomicU64,
    changes: Mutex<()>,
    /// Told when a change made elsewhere reached the copy.
    changed: tokio::sync::watch::Sender<u64>,
    /// The shared directory's copy on this gateway's disk.
    copy: Option<copy::SharedCopy>,
    /// Which shared directory this is ("" for the local one).
    directory_id: String,
}

impl Mirror {
    fn new(
        directory: Directory,
        version: u64,
        copy: Option<copy::SharedCopy>,
        directory_id: String,
    ) -> Mirror {
        Mirror {
            directory: RwLock::new(Arc::new(directory)),
            version: AtomicU64::new(version),
            changes: Mutex::new(()),
            changed: tokio::sync::watch::channel(version).0,
            copy,
            directory_id,
        }
    }

    /// Keeps a change that landed in the shared directory on disk too.
    /// A copy that could not keep it is dropped (the next start reads the
    /// whole directory), never left claiming a version it does not hold.
    fn keep(&self, records: &[Write], from: u64, to: u64, whole: bool) {
        let Some(copy) = &self.copy else { return };
        let kept = if whole {
            copy.replace(
                records,
                to,
                &self.directory_id,
                micros(OffsetDateTime::now_utc()),
            )
        } else {
            copy.apply(records, from, to)
        };
        if let Err(e) = kept {
            tracing::warn!(error = %e, "this gateway's copy of the directory is dropped");
            if let Err(e) = copy.forget() {
                tracing::error!(error = %e, "this gateway's copy of the directory could not be dropped");
            }
        }
    }

    fn current(&self) -> Arc<Directory> {
        self.directory.read().map(|d| d.clone()).unwrap_or_default()
    }

    fn set(&self, directory: Arc<Directory>, version: u64) {
        if let Ok(mut d) = self.directory.write() {
            *d = directory;
        }
        self.version.store(version, Ordering::SeqCst);
    }

    /// Applies records changed elsewhere; the change lock is held.
    fn catch_up_locked(&self, records: Vec<Write>, to: u64, whole: bool) -> Result<(), StoreError> {
        let mut next = if whole {
            Directory::default()
        } else {
            (*self.current()).clone()
        };
        for (key, value) in &records {
            apply_record(&mut next, key, value.as_deref())?;
        }
        self.keep(&records, self.version(), to, whole);
        self.set(Arc::new(next), to);
        self.changed.send_replace(to);
        Ok(())
    }
}

impl postgres::Follower for Mirror {
    fn version(&self) -> u64 {
        self.version.load(Ordering::SeqCst)
    }

    fn directory_id(&self) -> String {
        self.directory_id.clone()
    }

    fn catch_up(&self, records: Vec<Write>, to: u64, whole: bool) {
        let Ok(_serial) = self.changes.lock() else {
            return;
        };
        // A change of this gateway's may have brought the copy there first.
        if !whole && to <= postgres::Follower::version(self) {
            return;
        }
        if let Err(e) = self.catch_up_locked(records, to, whole) {
            tracing::error!(error = %e, "a change from the shared directory could not be applied");
        }
    }

    fn reached(&self, at: i64) {
        if let Some(copy) = &self.copy {
            copy.reached(at);
        }
    }
}

impl Mirror {
    fn version(&self) -> u64 {
        postgres::Follower::version(self)
    }
}

impl Drop for Store {
    /// Writes everything out before the handles go: sled otherwise finishes
    /// pending writes on its shared I/O pool and holds the directory lock
    /// until it has, which a busy process can stretch to seconds.
    fn drop(&mut self) {
        if let Err(e) = self.db.flush() {
            tracing::error!(error = %e, "store flush at close failed");
        }
    }
}

fn open_sled(path: &Path) -> Result<sled::Db, StoreError> {
    open_sled_with(sled::Config::new().path(path), path)
}

fn open_sled_with(config: sled::Config, path: &Path) -> Result<sled::Db, StoreError> {
    // sled's I/O pool can hold the directory lock a moment after the last
    // handle is dropped (seconds on a loaded machine): a reopen in the same
    // process (a restart in tests, a reload) waits for it, boundedly.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match config.open() {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(io))
                if io.kind() == std::io::ErrorKind::WouldBlock
                    || io.to_string().contains("lock") =>
            {
                if std::time::Instant::now() >= deadline {
                    return Err(StoreError::Locked(path.display().to_string()));
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(other) => return Err(StoreError::Sled(other.to_string())),
        }
    }
}

fn load_directory(tree: &sled::Tree) -> Result<Directory, StoreError> {
    let mut dir = Directory::default();
    for item in tree.iter() {
        let (k, v) = item?;
        apply_record(&mut dir, &k, Some(&v))?;
    }
    Ok(dir)
}

/// Puts a stored record into `dir`, or removes what it names when it is a
/// delete (`None`). Earlier versions of policies are skipped.
fn apply_record(dir: &mut Directory, k: &[u8], value: Option<&[u8]>) -> Result<(), StoreError> {
    let key = String::from_utf8_lossy(k).to_string();
    let Some(v) = value else {
        let kind = match key.split_once('/') {
            Some(("user", _)) => Kind::User,
            Some(("svc", _)) => Kind::ServiceUser,
            Some(("group", _)) => Kind::Group,
            Some(("role", _)) => Kind::Role,
            Some(("policy", _)) => Kind::Policy,
            Some(("support", _)) => Kind::Support,
            Some(("history", _)) => return Ok(()),
            _ => {
                return Err(StoreError::Corrupt {
                    key,
                    error: "unknown record kind".into(),
                });
            }
        };
        let name = key.split_once('/').map(|(_, n)| n).unwrap_or_default();
        remove(dir, kind, name);
        return Ok(());
    };
    {
        let corrupt = |e: serde_json::Error| StoreError::Corrupt {
            key: key.clone(),
            error: e.to_string(),
        };
        let entity = match key.split_once('/') {
            Some(("user", _)) => Entity::User(serde_json::from_slice(v).map_err(corrupt)?),
            Some(("svc", _)) => Entity::ServiceUser(serde_json::from_slice(v).map_err(corrupt)?),
            Some(("group", _)) => Entity::Group(serde_json::from_slice(v).map_err(corrupt)?),
            Some(("role", _)) => Entity::Role(serde_json::from_slice(v).map_err(corrupt)?),
            Some(("policy", _)) => Entity::Policy(serde_json::from_slice(v).map_err(corrupt)?),
            Some(("support", _)) => Entity::Support(serde_json::from_slice(v).map_err(corrupt)?),
            // Earlier versions of policies: read by `policy history` only.
            Some(("history", _)) => return Ok(()),
            _ => {
                return Err(StoreError::Corrupt {
                    key,
                    error: "unknown record kind".into(),
                });
            }
        };
        put(dir, entity);
    }
    Ok(())
}

/// Verifies the log of a stopped daemon's store (`audit verify --state-dir`).
/// Checks a stopped store's log against a checkpoint kept elsewhere.
pub fn check_stopped(
    state_dir: &Path,
    cp: &checkpoint::Checkpoint,
    trusted_key: Option<&str>,
) -> Result<checkpoint::Finding, StoreError> {
    let db = open_sled(&state_dir.join(SLED_DIR))?;
    let tree = db.open_tree("audit")?;
    let cuts = db.open_tree(CUTS_TREE)?;
    Ok(checkpoint::check(cp, trusted_key, &tree, Some(&cuts)))
}

/// Verifies the log of a stopped daemon's store (`audit verify --state-dir`),
/// cut markers checked against the store's audit-signing key.
pub fn verify_stopped(state_dir: &Path, from: Option<u64>) -> Result<VerifyReport, StoreError> {
    let key = signing::public_hex_of(state_dir)?;
    let db = open_sled(&state_dir.join(SLED_DIR))?;
    let tree = db.open_tree("audit")?;
    let cuts = db.open_tree(CUTS_TREE)?;
    Ok(log::verify_chain(&tree, Some(&cuts), key.as_deref(), from))
}

/// Opens the raw sled database of a stopped store (tamper tests and repair
/// tools need the records as they are on disk).
pub fn open_raw(state_dir: &Path) -> Result<sled::Db, StoreError> {
    open_sled(&state_dir.join(SLED_DIR))
}
