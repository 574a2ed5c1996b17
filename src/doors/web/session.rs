//! Browser sessions: a random cookie (only its SHA-256 is kept) names a
//! session that is registered like any other (`session list` shows door
//! `web`), ends on `session kill`, deactivation, an end date, logout, the
//! SSH door's idle and maximum lengths, and carries its CSRF token and
//! second-factor state.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use crate::commands::{Caller, SessionFactor};
use crate::model::PrincipalId;
use crate::sessions::Sessions;
use crate::store::secrets;
use crate::store::{Category, EventDraft, Outcome};

use super::DOOR;

/// The session cookie's name.
pub const COOKIE: &str = "__Host-mg_session";

/// A random token for a cookie or a form (256 bits, base64url).
pub fn token() -> Option<String> {
    let bytes = secrets::random_bytes::<32>().ok()?;
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// What a cookie is kept as: its SHA-256, so the table never holds a
/// cookie that would let anyone in.
fn digest(cookie: &str) -> String {
    hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        cookie.as_bytes(),
    ))
}

/// Whether a token sent is the one expected, compared by their SHA-256
/// (what an attacker times is a digest of what they sent, which says
/// nothing of the token).
pub fn same(expected: &str, sent: &str) -> bool {
    !expected.is_empty() && digest(expected) == digest(sent)
}

/// One signed-in browser.
pub struct WebSession {
    pub who: PrincipalId,
    pub source: IpAddr,
    /// The registry's id (`session list`, `session kill ID`).
    pub id: u64,
    /// Sent in every form that changes something, compared on every POST.
    pub csrf: String,
    pub factor: SessionFactor,
    last_seen: Mutex<Instant>,
    started: Instant,
    /// Woken by logout or an idle or expired visit: the session's task ends it.
    end: Notify,
    /// One message for the next page (what a change did).
    flash: Mutex<Option<String>>,
    /// Set once the session has ended, for what it started that is still
    /// running (a live tail).
    closed: std::sync::atomic::AtomicBool,
}

impl WebSession {
    /// The caller the core sees: this person, door `web`, this session.
    pub fn caller(&self) -> Caller {
        Caller {
            who: self.who.clone(),
            source: self.source.to_string(),
            addr: Some(self.source),
            door: DOOR,
            session: self.id,
            factor: self.factor.clone(),
            recorded: false,
        }
    }

    pub fn set_flash(&self, text: impl Into<String>) {
        if let Ok(mut f) = self.flash.lock() {
            *f = Some(text.into());
        }
    }

    pub fn take_flash(&self) -> Option<String> {
        self.flash.lock().ok().and_then(|mut f| f.take())
    }

    /// Ends the session (logout).
    pub fn end(&self) {
        self.end.notify_one();
    }

    /// Whether the session has ended (then nothing it started may go on).
    pub fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// Every live browser session, by cookie digest.
pub struct WebSessions {
    live: Mutex<HashMap<String, Arc<WebSession>>>,
    registry: Arc<Sessions>,
    guard: Arc<crate::guard::Guard>,
    pub idle: Duration,
    pub max: Duration,
    /// Live sessions one principal may hold on this door (the SSH door's
    /// `max_sessions_per_principal`, IEC 62443 CR 2.7).
    pub per_principal: usize,
}

/// Why a session could not start.
pub enum NotStarted {
    /// The principal holds this many already: the cap.
    Cap(usize),
    /// The random source or the registry failed.
    Failed,
}

impl WebSessions {
    pub fn new(
        registry: Arc<Sessions>,
        guard: Arc<crate::guard::Guard>,
        idle: Duration,
        max: Duration,
        per_principal: usize,
    ) -> Arc<WebSessions> {
        Arc::new(WebSessions {
            live: Mutex::new(HashMap::new()),
            registry,
            guard,
            idle,
            max,
            per_principal,
        })
    }

    /// The live session a cookie names, touched; None when there is none,
    /// or it was idle or too long (then it ends).
    pub fn visit(&self, cookie: &str) -> Option<Arc<WebSession>> {
        let s = self.live.lock().ok()?.get(&digest(cookie)).cloned()?;
        let now = Instant::now();
        let mut last = s.last_seen.lock().ok()?;
        if now.duration_since(*last) > self.idle || now.duration_since(s.started) > self.max {
            drop(last);
            s.end();
            return None;
        }
        *last = now;
        Some(s.clone())
    }

    /// Starts a session for `who` (its login was let in by the guard);
    /// returns the cookie to set, and the session.
    pub async fn start(
        self: &Arc<Self>,
        who: PrincipalId,
        source: IpAddr,
        factor: bool,
    ) -> Result<(String, Arc<WebSession>), NotStarted> {
        let (Some(cookie), Some(csrf)) = (token(), token()) else {
            return Err(NotStarted::Failed);
        };
        let (id_tx, id_rx) = oneshot::channel();
        let (go_tx, go_rx) = oneshot::channel::<Arc<WebSession>>();
        let this = self.clone();
        let key = digest(&cookie);
        let principal = who.clone();
        tokio::spawn(async move {
            let started = crate::model::micros(time::OffsetDateTime::now_utc());
            let registry = this.registry.clone();
            let mut registered = match registry.register_within(
                &principal,
                &source.to_string(),
                DOOR,
                None,
                started,
                this.per_principal,
            ) {
                Ok(r) => r,
                Err(live) => {
                    let _ = id_tx.send(Err(live));
                    return;
                }
            };
            let _ = id_tx.send(Ok(registered.id));
            let Ok(session) = go_rx.await else {
                return;
            };
            this.guard
                .record(
                    EventDraft::new("session.start", Category::Session, Outcome::Success)
                        .principal(&principal)
                        .source(source)
                        .door(DOOR)
                        .detail("session", registered.id),
                )
                .await;
            let why = loop {
                let idle_at = session
                    .last_seen
                    .lock()
                    .map(|l| *l + this.idle)
                    .unwrap_or_else(|_| Instant::now());
                let deadline = idle_at.min(session.started + this.max);
                tokio::select! {
                    r = registered.ended.changed() => {
                        break if r.is_ok() { registered.ended.borrow().clone().unwrap_or_default() } else { String::new() };
                    }
                    _ = session.end.notified() => break "logged out (or idle, or at its maximum length)".to_string(),
                    _ = tokio::time::sleep_until(deadline) => {
                        let now = Instant::now();
                        if now.duration_since(session.started) >= this.max {
                            break format!("the maximum session length ({}s) was reached", this.max.as_secs());
                        }
                        let idle = session.last_seen.lock().map(|l| now.duration_since(*l) >= this.idle).unwrap_or(true);
                        if idle {
                            break format!("idle for {}s", this.idle.as_secs());
                        }
                    }
                }
            };
            session
                .closed
                .store(true, std::sync::atomic::Ordering::Release);
            if let Ok(mut live) = this.live.lock() {
                live.remove(&key);
            }
            let id = registered.id;
            drop(registered);
            this.guard
                .record(
                    EventDraft::new("session.end", Category::Session, Outcome::Success)
                        .principal(&principal)
                        .source(source)
                        .door(DOOR)
                        .reason(why)
                        .detail("session", id),
                )
                .await;
        });
        let id = match id_rx.await {
            Ok(Ok(id)) => id,
            Ok(Err(live)) => {
                self.guard
                    .record(
                        EventDraft::new("session.refused", Category::Session, Outcome::Deny)
                            .principal(&who)
                            .source(source)
                            .door(DOOR)
                            .reason(format!(
                                "{live} live sessions on {DOOR}: the maximum per principal is {}",
                                self.per_principal
                            )),
                    )
                    .await;
                return Err(NotStarted::Cap(live));
            }
            Err(_) => return Err(NotStarted::Failed),
        };
        let now = Instant::now();
        let session = Arc::new(WebSession {
            who,
            source,
            id,
            csrf,
            factor: SessionFactor::new(factor),
            last_seen: Mutex::new(now),
            started: now,
            end: Notify::new(),
            flash: Mutex::new(None),
            closed: std::sync::atomic::AtomicBool::new(false),
        });
        self.registry.set_factor(id, session.factor.clone());
        self.live
            .lock()
            .map_err(|_| NotStarted::Failed)?
            .insert(digest(&cookie), session.clone());
        go_tx
            .send(session.clone())
            .map_err(|_| NotStarted::Failed)?;
        Ok((cookie, session))
    }
}
