//! One recording being written: the door's [`Recorder`] hands output,
//! input and resizes to a task that owns the file. The task writes chunks
//! (at `recording.checkpoint` or 4 MiB), makes each durable, chains its
//! hash and logs it; the log vouches only for what is on disk.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, watch};

use super::cast::{self, Utf8Carry};
use super::verify::{GENESIS, chain};
use super::{Live, Recordings, State};
use crate::store::{Category, EventDraft, Outcome};

/// A chunk is written once this much waits, whatever the time.
const CHUNK_MAX: usize = 4 * 1024 * 1024;
/// What may queue between the terminal and the writer; beyond, the
/// session waits for the disk (nothing is dropped).
const QUEUE: usize = 256;

pub(super) enum Op {
    Output(f64, Vec<u8>),
    Input(f64, Vec<u8>),
    Resize(f64, u32, u32),
    Notice(f64, String),
}

/// The door's end of a recording. Dropping it ends the recording (its last
/// chunk is written and logged).
pub struct Recorder {
    pub id: String,
    tx: mpsc::Sender<Op>,
    live: Arc<Live>,
    input: bool,
    failed: watch::Receiver<Option<String>>,
    /// Notices for the recorded person's terminal ("you are watched"),
    /// taken once by the door.
    notices: Option<mpsc::Receiver<String>>,
    /// Input taken from the client while the writer's queue was full: it
    /// goes before the next output, in order (input is recorded without
    /// waiting, so a read that is cancelled never loses a keystroke).
    backlog: std::sync::Mutex<Vec<Op>>,
}

impl Recorder {
    fn at(&self) -> f64 {
        self.live.clock.elapsed().as_secs_f64()
    }

    /// Sends what input waits in the backlog, then `op`.
    async fn send(&self, op: Op) {
        let waiting = self
            .backlog
            .lock()
            .map(|mut b| std::mem::take(&mut *b))
            .unwrap_or_default();
        for w in waiting {
            let _ = self.tx.send(w).await;
        }
        let _ = self.tx.send(op).await;
    }

    /// What the gateway shows the client.
    pub async fn output(&self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.live.output.receiver_count() > 0 {
            let _ = self.live.output.send(Arc::new(bytes.to_vec()));
        }
        self.send(Op::Output(self.at(), bytes.to_vec())).await;
    }

    /// Output kept out of the recording (a secret shown once, a watched
    /// session relayed): a note in its place says so.
    pub async fn withheld(&self, why: &str) {
        let text = format!("\r\n[metergate: {why}: not recorded]\r\n");
        self.send(Op::Notice(self.at(), text)).await;
    }

    /// What the client typed (kept only with `recording.input = true`),
    /// without waiting: a full queue keeps it in the backlog.
    pub fn input(&self, bytes: &[u8]) {
        if !self.input || bytes.is_empty() {
            return;
        }
        let op = Op::Input(self.at(), bytes.to_vec());
        if let Ok(mut b) = self.backlog.lock() {
            if b.is_empty() {
                if let Err(mpsc::error::TrySendError::Full(op)) = self.tx.try_send(op) {
                    b.push(op);
                }
            } else {
                b.push(op);
            }
        }
    }

    pub async fn resize(&self, cols: u32, rows: u32) {
        self.send(Op::Resize(self.at(), cols, rows)).await;
    }

    /// The session reached a meter's console: listed with the recording.
    pub fn meter(&self, meter: &str) {
        if let Ok(mut m) = self.live.meta.lock()
            && !m.meters.iter().any(|x| x == meter)
        {
            m.meters.push(meter.to_string());
        }
    }

    /// Resolves with the reason once the recording can no longer be
    /// written (a session that needs it must then end).
    pub fn failed(&self) -> watch::Receiver<Option<String>> {
        self.failed.clone()
    }

    /// Whether it is still being written.
    pub fn healthy(&self) -> bool {
        self.failed.borrow().is_none()
    }

    /// Notices for the recorded terminal (taken once).
    pub fn take_notices(&mut self) -> Option<mpsc::Receiver<String>> {
        self.notices.take()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        // The writer task ends when the last sender goes; live viewers
        // see the end at once.
        if let Ok(mut m) = self.live.meta.lock()
            && m.state == State::Live
        {
            m.state = State::Ending;
        }
    }
}

/// Starts the writer task of a recording whose header is already in its
/// file (`header_len` bytes, not yet vouched for).
pub(super) fn spawn(
    recordings: Arc<Recordings>,
    live: Arc<Live>,
    path: PathBuf,
    header: Vec<u8>,
    input: bool,
    onlcr: bool,
) -> Recorder {
    let (tx, rx) = mpsc::channel(QUEUE);
    let (fail_tx, failed) = watch::channel(None);
    let (notice_tx, notices) = mpsc::channel(8);
    if let Ok(mut n) = live.notices.lock() {
        *n = Some((notice_tx, tx.downgrade()));
    }
    let id = live.id.clone();
    tokio::spawn(run(
        recordings,
        live.clone(),
        path,
        header,
        rx,
        fail_tx,
        onlcr,
    ));
    Recorder {
        id,
        tx,
        live,
        input,
        failed,
        notices: Some(notices),
        backlog: std::sync::Mutex::new(Vec::new()),
    }
}

/// Gathers a chunk's lines from the recorder's ops.
struct Gatherer {
    /// The chunk being gathered; `written` of its bytes are in the file
    /// already (the header of chunk 0).
    chunk: Vec<u8>,
    written: usize,
    text: Utf8Carry,
    /// No pty: the client's own terminal turned each `\n` into a new line
    /// (onlcr), so the recording does too, as the person saw it.
    onlcr: bool,
    /// Buffers of written chunks, back from the flusher: a busy recording
    /// reuses two buffers instead of growing a new one per chunk.
    spare: mpsc::Receiver<Vec<u8>>,
}

impl Gatherer {
    fn push(&mut self, op: Op) {
        let c = &mut self.chunk;
        match op {
            Op::Output(t, bytes) => {
                let mut text = self.text.take(bytes);
                if self.onlcr && text.contains('\n') {
                    text = text.replace("\r\n", "\n").replace('\n', "\r\n");
                }
                if !text.is_empty() {
                    cast::event_into(c, t, "o", &text);
                }
            }
            Op::Notice(t, text) => cast::event_into(c, t, "o", &text),
            Op::Input(t, bytes) => cast::event_into(c, t, "i", &String::from_utf8_lossy(&bytes)),
            Op::Resize(t, cols, rows) => cast::event_into(c, t, "r", &format!("{cols}x{rows}")),
        }
    }

    /// The chunk so far, for the flusher.
    fn take(&mut self, last: bool) -> Chunk {
        let next = self.spare.try_recv().unwrap_or_default();
        let chunk = Chunk {
            bytes: std::mem::replace(&mut self.chunk, next),
            written: self.written,
            last,
        };
        self.written = 0;
        chunk
    }
}

/// A chunk handed to the flusher.
struct Chunk {
    bytes: Vec<u8>,
    written: usize,
    last: bool,
}

/// Writes chunks one after the other: each is made durable, chained and
/// logged before the next; the gatherer goes on meanwhile.
struct Flusher {
    recordings: Arc<Recordings>,
    live: Arc<Live>,
    path: PathBuf,
    index: u64,
    offset: u64,
    hash: String,
    spare: mpsc::Sender<Vec<u8>>,
}

impl Flusher {
    /// Writes and logs one chunk. Err: why the recording can no longer be
    /// written.
    async fn flush(&mut self, c: Chunk) -> Result<(), String> {
        let settings = self.recordings.settings();
        let new = (c.bytes.len() - c.written) as u64;
        let size = self.offset + c.bytes.len() as u64;
        if size > settings.max_session_bytes {
            return Err(format!(
                "the recording reached recording.max_session_bytes ({} bytes)",
                settings.max_session_bytes
            ));
        }
        let principal = self.live.meta().principal;
        self.recordings.reserve(&principal, new)?;
        let path = self.path.clone();
        // The chain hash is taken on the blocking thread too, over exactly
        // the bytes made durable.
        let prev = self.hash.clone();
        let written = c.written;
        let bytes = c.bytes;
        let wrote =
            tokio::task::spawn_blocking(move || -> std::io::Result<(String, u64, Vec<u8>)> {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new().append(true).open(&path)?;
                f.write_all(&bytes[written..])?;
                f.sync_data()?;
                // Durable now, and seldom read again: its pages leave the page
                // cache at once (they would push out the log's, and a full
                // page cache makes every later write slower).
                let _ = nix::fcntl::posix_fadvise(
                    &f,
                    0,
                    0,
                    nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
                );
                Ok((chain(&prev, &bytes), bytes.len() as u64, bytes))
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        let (hash, length) = match wrote {
            Ok((hash, length, mut buffer)) => {
                buffer.clear();
                let _ = self.spare.try_send(buffer);
                (hash, length)
            }
            Err(e) => {
                self.recordings.release(&principal, new);
                return Err(format!("writing {}: {e}", self.path.display()));
            }
        };
        self.recordings.check_threshold().await;
        let (who, source, session) = {
            let m = self.live.meta();
            (m.principal.clone(), m.source.clone(), m.session)
        };
        let ev = EventDraft::new("session.recording", Category::Session, Outcome::Success)
            .principal(&who)
            .source(&source)
            .door("ssh")
            .detail("recording", &self.live.id)
            .detail("session", session)
            .detail("chunk", self.index)
            .detail("offset", self.offset)
            .detail("length", length)
            .detail("hash", &hash)
            .detail("prev", &self.hash)
            .detail("last", c.last);
        // Not vouched for by the log: the recording cannot be trusted on.
        let Some(seq) = self.recordings.guard.record(ev).await else {
            return Err("its chunk could not be logged in the audit log".into());
        };
        self.hash = hash;
        self.offset += length;
        self.index += 1;
        self.live.update(|m| {
            m.bytes = self.offset;
            m.chunks = self.index;
            m.hash = self.hash.clone();
            m.last_event = seq;
        });
        Ok(())
    }
}

/// The flusher's loop: chunks until the gatherer is done, or the first
/// failure (then the rest is dropped). True if every chunk was written.
async fn flushing(
    mut f: Flusher,
    mut chunks: mpsc::Receiver<Chunk>,
    failed: watch::Sender<Option<String>>,
) -> bool {
    while let Some(c) = chunks.recv().await {
        if let Err(why) = f.flush(c).await {
            let _ = failed.send(Some(why.clone()));
            f.recordings.failed(&f.live, &why).await;
            // What follows is not written; the gatherer sees the failure.
            while chunks.recv().await.is_some() {}
            return false;
        }
    }
    true
}

async fn run(
    recordings: Arc<Recordings>,
    live: Arc<Live>,
    path: PathBuf,
    header: Vec<u8>,
    mut rx: mpsc::Receiver<Op>,
    failed: watch::Sender<Option<String>>,
    onlcr: bool,
) {
    let every = recordings
        .settings()
        .checkpoint
        .0
        .max(Duration::from_secs(1));
    let broken = failed.subscribe();
    let (spare, spares) = mpsc::channel(2);
    let mut g = Gatherer {
        written: header.len(),
        chunk: header,
        text: Utf8Carry::default(),
        onlcr,
        spare: spares,
    };
    // One chunk is written while the next is gathered.
    let (to_flusher, chunks) = mpsc::channel(1);
    let flusher = Flusher {
        recordings: recordings.clone(),
        live: live.clone(),
        path,
        index: 0,
        offset: 0,
        hash: GENESIS.to_string(),
        spare,
    };
    let flushed = tokio::spawn(flushing(flusher, chunks, failed));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let due = tokio::select! {
            op = rx.recv() => match op {
                Some(op) => {
                    if broken.borrow().is_some() {
                        continue;
                    }
                    g.push(op);
                    g.chunk.len() >= CHUNK_MAX
                }
                None => break,
            },
            _ = tick.tick() => !g.chunk.is_empty(),
        };
        if due && broken.borrow().is_none() {
            let _ = to_flusher.send(g.take(false)).await;
        }
    }
    if broken.borrow().is_none() {
        let _ = to_flusher.send(g.take(true)).await;
    }
    drop(to_flusher);
    let ok = flushed.await.unwrap_or(false);
    recordings.finished(&live, ok && broken.borrow().is_none());
}

/// A live recording's output, for one watcher.
pub type Feed = broadcast::Receiver<Arc<Vec<u8>>>;
