//! Session recordings: every interactive SSH channel (shell, console
//! pass-through, exec) kept as asciicast v2 under `state_dir/recordings/`,
//! 0600, in chunks whose chained SHA-256 lands in the audit log. Capacity,
//! failure (`audit.on_failure`), retention, live watchers and verification.

pub mod cast;
pub mod verify;
mod writer;

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::{broadcast, mpsc};

use crate::config::{Config, OnFailure, RecordingConfig};
use crate::guard::Guard;
use crate::model::micros;
use crate::sessions::Sessions;
use crate::store::index::Query;
use crate::store::{Category, EventDraft, Outcome};

pub use verify::{Claim, Verdict};
pub use writer::{Feed, Recorder};

/// Where recordings live under the state directory.
pub const DIR: &str = "recordings";
/// Live output a watcher may fall behind by before it skips ahead.
const WATCH_BUFFER: usize = 1024;
/// The highest session id ever recorded, kept in the catalogue's tree
/// (ids stay unique when retention removed every recording).
const HIGHEST: &[u8] = b"\xffhighest-session";
/// How long the end of a session waits for its recordings' last chunks.
const FINISH_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("{path}: {error}")]
    Io { path: String, error: String },
    #[error("the recordings index: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// Where a recording stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    Live,
    /// Its session ended; the last chunk is being written.
    Ending,
    Ended,
    /// It could not be written to the end (`problem` says why).
    Failed,
    /// The gateway stopped during the session.
    Interrupted,
}

/// What a recording is: kept in the store's `recordings` tree. The file and
/// the log's chunk events are the evidence; this is the catalogue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Meta {
    pub id: String,
    pub session: u64,
    pub principal: String,
    pub source: String,
    /// `shell` or `exec`.
    pub kind: String,
    /// The meters whose consoles it reached.
    pub meters: Vec<String>,
    /// UTC µs.
    pub started: i64,
    pub ended: Option<i64>,
    pub bytes: u64,
    pub chunks: u64,
    /// The chain hash after the last chunk written.
    pub hash: String,
    #[schema(value_type = String)]
    pub state: State,
    pub problem: Option<String>,
    /// The seq of its last chunk's event (retention waits for forwarding).
    pub last_event: u64,
}

/// A recording being written.
pub struct Live {
    pub id: String,
    meta: Mutex<Meta>,
    output: broadcast::Sender<Arc<Vec<u8>>>,
    /// The door's notice channel to the recorded terminal, and the writer
    /// (weakly: it ends when the door's recorder goes).
    notices: Mutex<Option<(mpsc::Sender<String>, mpsc::WeakSender<writer::Op>)>>,
    finished: tokio::sync::watch::Sender<bool>,
    /// When it started: event times count from here.
    clock: std::time::Instant,
}

impl Live {
    fn meta(&self) -> Meta {
        self.meta
            .lock()
            .map(|m| m.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    fn update(&self, f: impl FnOnce(&mut Meta)) {
        if let Ok(mut m) = self.meta.lock() {
            f(&mut m);
        }
    }

    /// Shows `text` on the recorded terminal and keeps it in the recording.
    fn notify(&self, text: &str) {
        if let Ok(n) = self.notices.lock()
            && let Some((door, writer)) = n.as_ref()
        {
            let _ = door.try_send(text.to_string());
            if let Some(w) = writer.upgrade() {
                let t = self.clock.elapsed().as_secs_f64();
                let _ = w.try_send(writer::Op::Notice(t, text.to_string()));
            }
        }
    }
}

/// What a door asks to record.
pub struct Subject<'a> {
    pub principal: &'a str,
    pub source: &'a str,
    pub session: u64,
    /// `shell` or `exec`.
    pub kind: &'static str,
    /// The pty: terminal type, columns, rows (None: 80x24).
    pub term: Option<(&'a str, u32, u32)>,
}

/// What starting a recording came to.
pub enum Started {
    Recording(Recorder),
    /// `recording.enabled = false`.
    Off,
    /// It cannot be recorded, and `audit.on_failure = fail-open` lets the
    /// session go on unrecorded (an alarm was raised).
    Unrecorded(String),
    /// It cannot be recorded and `fail-closed` refuses the session.
    Refused(String),
}

/// Every recording of this gateway.
pub struct Recordings {
    dir: PathBuf,
    guard: Arc<Guard>,
    sessions: Arc<Sessions>,
    settings: ArcSwap<RecordingConfig>,
    forwarding: AtomicBool,
    /// Bytes on disk, all recordings together.
    used: AtomicU64,
    /// Bytes on disk per principal (`recording.max_principal_bytes`).
    by_principal: Mutex<HashMap<String, u64>>,
    warned: AtomicBool,
    /// A recording could not be written (until the next one is).
    alarm: AtomicBool,
    failures: AtomicU64,
    tree: sled::Tree,
    live: Mutex<HashMap<String, Arc<Live>>>,
    /// Channels recorded per session (the second is `ID-2`).
    channels: Mutex<HashMap<u64, u32>>,
    /// Recordings past `recording.keep` already said to wait for
    /// forwarding (said once per run).
    held: Mutex<std::collections::HashSet<String>>,
    /// What the last run left unfinished (found at open, before any new
    /// recording started).
    stale: Mutex<Vec<Meta>>,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> RecordingError + '_ {
    move |e| RecordingError::Io {
        path: path.display().to_string(),
        error: e.to_string(),
    }
}

impl Recordings {
    /// Opens the recordings of `config.state_dir`: counts what they take,
    /// numbers new sessions after every recorded one, and marks those the
    /// last run left unfinished as interrupted.
    pub fn open(
        guard: Arc<Guard>,
        sessions: Arc<Sessions>,
        state_dir: &Path,
        settings: RecordingConfig,
        forwarding: bool,
    ) -> Result<Arc<Recordings>, RecordingError> {
        let dir = state_dir.join(DIR);
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        // What people typed on meters' consoles: only the gateway reads it.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err(&dir))?;
        let tree = guard.store().recordings_tree()?;
        let used = dir_size(&dir);
        let mut highest = 0u64;
        for entry in std::fs::read_dir(&dir).map_err(io_err(&dir))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            highest = highest.max(session_of(name.trim_end_matches(".cast")));
        }
        let mut stale = Vec::new();
        let mut by_principal: HashMap<String, u64> = HashMap::new();
        for item in tree.iter().flatten() {
            if let Ok(m) = serde_json::from_slice::<Meta>(&item.1) {
                highest = highest.max(m.session);
                let size = std::fs::metadata(dir.join(format!("{}.cast", m.id)))
                    .map(|x| x.len())
                    .unwrap_or(0);
                *by_principal.entry(m.principal.clone()).or_default() += size;
                if matches!(m.state, State::Live | State::Ending) {
                    stale.push(m);
                }
            }
        }
        if let Some(v) = tree.get(HIGHEST).map_err(crate::store::StoreError::from)? {
            highest = highest.max(v.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(0));
        }
        sessions.number_after(highest);
        let r = Arc::new(Recordings {
            dir,
            guard,
            sessions,
            settings: ArcSwap::from_pointee(settings),
            forwarding: AtomicBool::new(forwarding),
            used: AtomicU64::new(used),
            by_principal: Mutex::new(by_principal),
            warned: AtomicBool::new(false),
            alarm: AtomicBool::new(false),
            failures: AtomicU64::new(0),
            tree,
            live: Mutex::new(HashMap::new()),
            channels: Mutex::new(HashMap::new()),
            held: Mutex::new(Default::default()),
            stale: Mutex::new(stale),
        });
        Ok(r)
    }

    /// Marks the recordings the last run left unfinished as interrupted,
    /// each with an event saying how far the log vouches for it.
    pub async fn recover(&self) {
        let unfinished: Vec<Meta> = self
            .stale
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default();
        for mut m in unfinished {
            let verdict = self.verify(&m).await;
            m.state = State::Interrupted;
            m.problem = Some(format!(
                "the gateway stopped during the session: {}",
                verdict.summary()
            ));
            if let Verdict::Intact { chunks, bytes, .. } = verdict {
                m.chunks = chunks;
                m.bytes = bytes;
            }
            self.save(&m);
            let ev = EventDraft::new("recording.interrupted", Category::Session, Outcome::Failure)
                .principal(&m.principal)
                .source(&m.source)
                .reason(format!(
                    "recording {}: {}",
                    m.id,
                    m.problem.clone().unwrap_or_default()
                ))
                .detail("recording", &m.id)
                .detail("session", m.session);
            self.guard.record(ev).await;
        }
    }

    /// The `[recording]` and `audit.forward` settings (reload): what the
    /// recordings take is counted again, so a capacity applies to what is
    /// on disk now.
    pub fn set_config(&self, config: &Config) {
        self.settings.store(Arc::new(config.recording.clone()));
        self.forwarding
            .store(config.audit.forward.is_some(), Ordering::Relaxed);
        // Live recordings' gathered chunks are not on disk yet: they are
        // counted when written.
        self.used.store(dir_size(&self.dir), Ordering::Relaxed);
        self.warned.store(false, Ordering::Relaxed);
        let mut by: HashMap<String, u64> = HashMap::new();
        for m in self.list() {
            let size = std::fs::metadata(self.path(&m.id))
                .map(|x| x.len())
                .unwrap_or(0);
            *by.entry(m.principal).or_default() += size;
        }
        if let Ok(mut b) = self.by_principal.lock() {
            *b = by;
        }
    }

    pub fn settings(&self) -> Arc<RecordingConfig> {
        self.settings.load_full()
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.cast"))
    }

    fn save(&self, m: &Meta) {
        if let Ok(v) = serde_json::to_vec(m) {
            let _ = self.tree.insert(m.id.as_bytes(), v);
        }
    }

    /// Starts recording a channel of a session.
    pub async fn start(self: &Arc<Self>, s: Subject<'_>) -> Started {
        let settings = self.settings();
        if !settings.enabled {
            return Started::Off;
        }
        self.check_threshold().await;
        let now = OffsetDateTime::now_utc();
        let (term, width, height) = s.term.unwrap_or(("", 80, 24));
        let opened = self.create(&s, now, term, width, height);
        let (id, path, header) = match opened {
            Ok(x) => x,
            Err(why) => return self.cannot_start(&s, why).await,
        };
        let meta = Meta {
            id: id.clone(),
            session: s.session,
            principal: s.principal.to_string(),
            source: s.source.to_string(),
            kind: s.kind.to_string(),
            meters: Vec::new(),
            started: micros(now),
            ended: None,
            bytes: 0,
            chunks: 0,
            hash: verify::GENESIS.to_string(),
            state: State::Live,
            problem: None,
            last_event: 0,
        };
        self.save(&meta);
        let _ = self.tree.fetch_and_update(HIGHEST, |old| {
            let was = old
                .and_then(|v| v.try_into().ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            Some(was.max(s.session).to_be_bytes().to_vec())
        });
        let (output, _) = broadcast::channel(WATCH_BUFFER);
        let live = Arc::new(Live {
            id: id.clone(),
            meta: Mutex::new(meta),
            output,
            notices: Mutex::new(None),
            finished: tokio::sync::watch::channel(false).0,
            clock: std::time::Instant::now(),
        });
        if let Ok(mut l) = self.live.lock() {
            l.insert(id, live.clone());
        }
        Started::Recording(writer::spawn(
            self.clone(),
            live,
            path,
            header,
            settings.input,
            s.term.is_none(),
        ))
    }

    /// Creates the file (0600) with its header: the id, path and header.
    fn create(
        &self,
        s: &Subject<'_>,
        now: OffsetDateTime,
        term: &str,
        width: u32,
        height: u32,
    ) -> Result<(String, PathBuf, Vec<u8>), String> {
        let settings = self.settings();
        if self.used.load(Ordering::Relaxed) >= settings.capacity_bytes {
            return Err(format!(
                "recordings reached recording.capacity_bytes ({} bytes)",
                settings.capacity_bytes
            ));
        }
        let mine = self.principal_bytes(s.principal);
        if mine >= settings.max_principal_bytes {
            return Err(format!(
                "{}'s recordings reached recording.max_principal_bytes ({} bytes)",
                s.principal, settings.max_principal_bytes
            ));
        }
        let n = {
            let mut c = self.channels.lock().map_err(|_| "poisoned".to_string())?;
            let n = c.entry(s.session).or_insert(0);
            *n += 1;
            *n
        };
        for attempt in 0..100u32 {
            let k = n + attempt;
            let id = if k == 1 {
                s.session.to_string()
            } else {
                format!("{}-{k}", s.session)
            };
            let path = self.path(&id);
            let title = format!("{} on metergate, session {}", s.principal, s.session);
            let header = cast::header(width, height, now.unix_timestamp(), term, &title);
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path);
            match file {
                Ok(mut f) => {
                    f.write_all(&header)
                        .map_err(|e| format!("writing {}: {e}", path.display()))?;
                    // The header counts like any chunk (it may pass the
                    // capacity by its own few hundred bytes).
                    self.count(s.principal, header.len() as u64, true);
                    if let Ok(mut c) = self.channels.lock() {
                        c.insert(s.session, k);
                    }
                    return Ok((id, path, header));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(format!("creating {}: {e}", path.display())),
            }
        }
        Err("no free recording name for this session".into())
    }

    /// A session that cannot be recorded: an alarm, then `audit.on_failure`.
    async fn cannot_start(&self, s: &Subject<'_>, why: String) -> Started {
        self.alarm.store(true, Ordering::Relaxed);
        self.failures.fetch_add(1, Ordering::Relaxed);
        let closed = self.guard.settings().on_failure == OnFailure::FailClosed;
        let reason = if closed {
            format!(
                "the session cannot be recorded ({why}): audit.on_failure = fail-closed refuses it"
            )
        } else {
            format!(
                "the session cannot be recorded ({why}): audit.on_failure = fail-open lets it go on unrecorded"
            )
        };
        let ev = EventDraft::new("recording.failure", Category::System, Outcome::Failure)
            .principal(s.principal)
            .source(s.source)
            .door("ssh")
            .reason(&reason)
            .detail("session", s.session);
        self.guard.record(ev).await;
        if closed {
            Started::Refused(reason)
        } else {
            Started::Unrecorded(reason)
        }
    }

    fn principal_bytes(&self, principal: &str) -> u64 {
        self.by_principal
            .lock()
            .ok()
            .and_then(|b| b.get(principal).copied())
            .unwrap_or(0)
    }

    /// Adds (or takes back) `n` bytes of `principal`'s.
    fn count(&self, principal: &str, n: u64, add: bool) {
        if add {
            self.used.fetch_add(n, Ordering::Relaxed);
        } else {
            let _ = self
                .used
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                    Some(u.saturating_sub(n))
                });
        }
        if let Ok(mut b) = self.by_principal.lock() {
            let e = b.entry(principal.to_string()).or_default();
            *e = if add { *e + n } else { e.saturating_sub(n) };
        }
    }

    /// Counts `n` more bytes of `principal`'s on disk. Err: the limit
    /// (all recordings, or this principal's) it would pass.
    fn reserve(&self, principal: &str, n: u64) -> Result<(), String> {
        let s = self.settings();
        // Counted first, checked after: parallel writers never pass it together.
        self.count(principal, n, true);
        let used = self.used.load(Ordering::Relaxed);
        let why = if used > s.capacity_bytes {
            format!(
                "recordings reached recording.capacity_bytes ({} bytes)",
                s.capacity_bytes
            )
        } else if self.principal_bytes(principal) > s.max_principal_bytes {
            format!(
                "{principal}'s recordings reached recording.max_principal_bytes ({} bytes)",
                s.max_principal_bytes
            )
        } else {
            return Ok(());
        };
        self.count(principal, n, false);
        Err(why)
    }

    fn release(&self, principal: &str, n: u64) {
        self.count(principal, n, false);
    }

    /// Logs the capacity warning once when recordings pass the threshold.
    async fn check_threshold(&self) {
        let s = self.settings();
        let used = self.used.load(Ordering::Relaxed);
        let over = used.saturating_mul(100)
            >= s.capacity_bytes
                .saturating_mul(u64::from(s.warn_at_percent));
        if over && !self.warned.swap(true, Ordering::Relaxed) {
            let ev = EventDraft::new(
                "recording.capacity-warning",
                Category::System,
                Outcome::Failure,
            )
            .reason(format!(
                "recordings take {used} of recording.capacity_bytes ({} bytes, warning at {}%)",
                s.capacity_bytes, s.warn_at_percent
            ))
            .detail("used_bytes", used);
            self.guard.record(ev).await;
        } else if !over {
            self.warned.store(false, Ordering::Relaxed);
        }
    }

    /// A recording could no longer be written: an alarm, then
    /// `audit.on_failure` (fail-closed ends its session).
    async fn failed(&self, live: &Live, why: &str) {
        self.alarm.store(true, Ordering::Relaxed);
        self.failures.fetch_add(1, Ordering::Relaxed);
        live.update(|m| {
            m.state = State::Failed;
            m.problem = Some(why.to_string());
        });
        let m = live.meta();
        self.save(&m);
        let closed = self.guard.settings().on_failure == OnFailure::FailClosed;
        let reason = if closed {
            format!(
                "recording {} cannot be written ({why}): audit.on_failure = fail-closed ends the session",
                m.id
            )
        } else {
            format!(
                "recording {} cannot be written ({why}): audit.on_failure = fail-open lets the session go on unrecorded",
                m.id
            )
        };
        let ev = EventDraft::new("recording.failure", Category::System, Outcome::Failure)
            .principal(&m.principal)
            .source(&m.source)
            .door("ssh")
            .reason(&reason)
            .detail("recording", &m.id)
            .detail("session", m.session);
        self.guard.record(ev).await;
        if closed {
            live.notify(&format!("\r\n[metergate: {reason}]\r\n"));
            self.sessions.kill(m.session, &reason);
        }
    }

    /// The writer is done: the catalogue says so, the session's end may go.
    fn finished(&self, live: &Live, ok: bool) {
        live.update(|m| {
            m.ended = Some(micros(OffsetDateTime::now_utc()));
            if ok {
                m.state = State::Ended;
                self.alarm.store(false, Ordering::Relaxed);
            }
        });
        self.save(&live.meta());
        if let Ok(mut l) = self.live.lock() {
            l.remove(&live.id);
        }
        let _ = live.finished.send(true);
    }

    /// Waits (bounded) until the recordings of `session` wrote their last
    /// chunks; returns them, for the session's end event.
    pub async fn finish_session(&self, session: u64) -> Vec<Meta> {
        let waiting: Vec<Arc<Live>> = self
            .live
            .lock()
            .map(|l| {
                l.values()
                    .filter(|x| x.meta().session == session)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let deadline = tokio::time::Instant::now() + FINISH_WAIT;
        for live in waiting {
            let mut done = live.finished.subscribe();
            let _ = tokio::time::timeout_at(deadline, done.wait_for(|d| *d)).await;
        }
        if let Ok(mut c) = self.channels.lock() {
            c.remove(&session);
        }
        self.check_threshold().await;
        let mut out: Vec<Meta> = self
            .tree
            .scan_prefix(session.to_string().as_bytes())
            .flatten()
            .filter_map(|(_, v)| serde_json::from_slice::<Meta>(&v).ok())
            .filter(|m| m.session == session && m.state != State::Interrupted)
            .map(|m| self.get(&m.id).unwrap_or(m))
            .collect();
        out.sort_by_key(|m| m.started);
        out
    }

    /// One recording's catalogue entry (live ones as they are now).
    pub fn get(&self, id: &str) -> Option<Meta> {
        if let Some(l) = self.live.lock().ok().and_then(|l| l.get(id).cloned()) {
            return Some(l.meta());
        }
        self.tree
            .get(id.as_bytes())
            .ok()
            .flatten()
            .and_then(|v| serde_json::from_slice(&v).ok())
    }

    /// Every recording, oldest first.
    pub fn list(&self) -> Vec<Meta> {
        let live: HashMap<String, Meta> = self
            .live
            .lock()
            .map(|l| l.iter().map(|(k, v)| (k.clone(), v.meta())).collect())
            .unwrap_or_default();
        let mut out: Vec<Meta> = self
            .tree
            .iter()
            .flatten()
            .filter_map(|(_, v)| serde_json::from_slice::<Meta>(&v).ok())
            .map(|m| live.get(&m.id).cloned().unwrap_or(m))
            .collect();
        out.sort_by(|a, b| (a.started, &a.id).cmp(&(b.started, &b.id)));
        out
    }

    /// The file of recording `id`, when it exists.
    pub fn file(&self, id: &str) -> Option<PathBuf> {
        let p = self.path(id);
        (is_id(id) && p.exists()).then_some(p)
    }

    /// Follows a live recording's output. The recorded person is told, and
    /// told again when the watcher leaves (dropping the [`Watch`]).
    pub fn watch(&self, id: &str, watcher: &str) -> Result<Watch, String> {
        let live = self
            .live
            .lock()
            .ok()
            .and_then(|l| l.get(id).cloned())
            .ok_or_else(|| {
                format!("recording {id} is not live: `session recordings` lists them, `session play {id}` replays an ended one")
            })?;
        let feed = live.output.subscribe();
        live.notify(&format!(
            "\r\n[metergate: {watcher} is watching this session, read-only]\r\n"
        ));
        Ok(Watch {
            live,
            watcher: watcher.to_string(),
            feed: Mutex::new(Some(feed)),
        })
    }

    /// Checks recording `m` against the chunk events the log holds for it.
    pub async fn verify(&self, m: &Meta) -> Verdict {
        // Every chunk event, not only those after the catalogue's start
        // time: the catalogue is not evidence.
        let claims = self.claims(None).await;
        let mine: Vec<Claim> = claims
            .into_iter()
            .filter(|(id, _)| *id == m.id)
            .map(|(_, c)| c)
            .collect();
        let path = self.path(&m.id);
        tokio::task::spawn_blocking(move || verify::check(&path, &mine))
            .await
            .unwrap_or_else(|e| Verdict::Broken {
                chunk: 0,
                why: format!("could not be checked: {e}"),
            })
    }

    /// Every recording the log knows of (and every file), checked: the
    /// ones removed by retention are left out.
    pub async fn verify_all(&self) -> Vec<(String, Verdict)> {
        let claims = self.claims(None).await;
        let removed = self.removed().await;
        let mut by_id: std::collections::BTreeMap<String, Vec<Claim>> = Default::default();
        for (id, c) in claims {
            if !removed.contains(&id) {
                by_id.entry(id).or_default().push(c);
            }
        }
        if let Ok(dir) = std::fs::read_dir(&self.dir) {
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(id) = name.strip_suffix(".cast")
                    && is_id(id)
                {
                    by_id.entry(id.to_string()).or_default();
                }
            }
        }
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            by_id
                .into_iter()
                .map(|(id, claims)| {
                    let v = verify::check(&dir.join(format!("{id}.cast")), &claims);
                    (id, v)
                })
                .collect()
        })
        .await
        .unwrap_or_else(|e| {
            vec![(
                "(all)".into(),
                Verdict::Broken {
                    chunk: 0,
                    why: format!("could not be checked: {e}"),
                },
            )]
        })
    }

    /// The chunk events in the log (since `since`, UTC µs).
    async fn claims(&self, since: Option<i64>) -> Vec<(String, Claim)> {
        let events = self.events("session.recording", since).await;
        events.iter().filter_map(Claim::of).collect()
    }

    async fn removed(&self) -> std::collections::HashSet<String> {
        self.events("recording.removed", None)
            .await
            .into_iter()
            .filter_map(|e| e.detail.get("recording").cloned())
            .collect()
    }

    /// Every event with `code` (since `since`), through the log's index.
    async fn events(
        &self,
        code: &str,
        since: Option<i64>,
    ) -> Vec<crate::store::log::SecurityEvent> {
        let store = self.guard.store().clone();
        let code = code.to_string();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let mut before = None;
            loop {
                let q = Query {
                    since,
                    code: Some(code.clone()),
                    limit: 5000,
                    before,
                    ..Default::default()
                };
                let page = match store.log().query(&q) {
                    Ok(p) => p,
                    Err(_) => break,
                };
                let Some(first) = page.first() else { break };
                before = Some(first.seq);
                out.extend(page);
            }
            out
        })
        .await
        .unwrap_or_default()
    }

    /// Removes the recordings older than `recording.keep` (each removal
    /// an event); with forwarding on, only once their events were
    /// delivered.
    pub async fn sweep(&self, now: OffsetDateTime) -> usize {
        let keep = self.settings().keep.0;
        let cutoff = micros(now) - i64::try_from(keep.as_micros()).unwrap_or(i64::MAX);
        let delivered = self.guard.store().forward_state().delivered();
        let forwarding = self.forwarding.load(Ordering::Relaxed);
        let old: Vec<Meta> = self
            .list()
            .into_iter()
            .filter(|m| !matches!(m.state, State::Live | State::Ending))
            .filter(|m| m.ended.unwrap_or(m.started) < cutoff)
            .collect();
        let mut removed = 0;
        for m in old {
            // The age the log vouches for, not the catalogue's (which is
            // not evidence): the time of the recording's last chunk event.
            if m.last_event > 0 {
                let logged = self.guard.store().log().get(m.last_event).ok().flatten();
                let vouched = logged.is_some_and(|e| {
                    e.code == "session.recording"
                        && e.detail.get("recording") == Some(&m.id)
                        && e.time < cutoff
                });
                if !vouched {
                    continue;
                }
            }
            if forwarding && m.last_event > delivered {
                let first = self
                    .held
                    .lock()
                    .map(|mut h| h.insert(m.id.clone()))
                    .unwrap_or(false);
                if first {
                    let ev = EventDraft::new("recording.retention-held", Category::System, Outcome::Success)
                        .principal(&m.principal)
                        .reason(format!(
                            "recording {} is older than recording.keep but stays until its events (up to seq {}) are forwarded (forwarded so far: {delivered})",
                            m.id, m.last_event
                        ))
                        .detail("recording", &m.id);
                    self.guard.record(ev).await;
                }
                continue;
            }
            let path = self.path(&m.id);
            let size = std::fs::metadata(&path).map(|x| x.len()).unwrap_or(0);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(recording = %m.id, error = %e, "an old recording could not be removed");
                    continue;
                }
            }
            self.release(&m.principal, size);
            let _ = self.tree.remove(m.id.as_bytes());
            removed += 1;
            let ev = EventDraft::new("recording.removed", Category::System, Outcome::Success)
                .principal(&m.principal)
                .reason(format!(
                    "recording {} of session {} ({size} bytes) was older than recording.keep ({} days)",
                    m.id,
                    m.session,
                    keep.as_secs() / 86_400
                ))
                .detail("recording", &m.id)
                .detail("bytes", size);
            self.guard.record(ev).await;
        }
        removed
    }

    /// Prometheus lines: bytes used, capacity, the alarm, failures.
    pub fn render_metrics(&self) -> String {
        let s = self.settings();
        let used = self.used.load(Ordering::Relaxed);
        format!(
            "# TYPE metergate_recording_bytes gauge\nmetergate_recording_bytes {used}\n\
             # TYPE metergate_recording_capacity_bytes gauge\nmetergate_recording_capacity_bytes {}\n\
             # TYPE metergate_recording_capacity_warning gauge\nmetergate_recording_capacity_warning {}\n\
             # TYPE metergate_recording_alarm gauge\nmetergate_recording_alarm {}\n\
             # TYPE metergate_recording_failures_total counter\nmetergate_recording_failures_total {}\n\
             # TYPE metergate_recordings_live gauge\nmetergate_recordings_live {}\n",
            s.capacity_bytes,
            u8::from(self.warned.load(Ordering::Relaxed)),
            u8::from(self.alarm.load(Ordering::Relaxed)),
            self.failures.load(Ordering::Relaxed),
            self.live.lock().map(|l| l.len()).unwrap_or(0),
        )
    }
}

/// A recording id as the gateway names them: `SESSION` or `SESSION-N`.
pub fn is_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 40
        && id.chars().all(|c| c.is_ascii_digit() || c == '-')
        && id.starts_with(|c: char| c.is_ascii_digit())
}

/// Bytes the files in `dir` take.
fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

fn session_of(id: &str) -> u64 {
    id.split('-')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// One watcher of a live recording.
pub struct Watch {
    live: Arc<Live>,
    watcher: String,
    feed: Mutex<Option<Feed>>,
}

impl Watch {
    pub fn id(&self) -> &str {
        &self.live.id
    }

    pub fn watched(&self) -> Meta {
        self.live.meta()
    }

    /// Resolves once the watched recording ended.
    pub fn ended(&self) -> tokio::sync::watch::Receiver<bool> {
        self.live.finished.subscribe()
    }

    /// The live output (taken once).
    pub fn take_feed(&self) -> Option<Feed> {
        self.feed.lock().ok().and_then(|mut f| f.take())
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.live.notify(&format!(
            "\r\n[metergate: {} stopped watching this session]\r\n",
            self.watcher
        ));
    }
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Watch({} by {})", self.live.id, self.watcher)
    }
}

impl PartialEq for Watch {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}
