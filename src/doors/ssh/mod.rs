//! The SSH door: field crews log in with an unmodified OpenSSH client and run
//! the gateway shell's commands (`ssh -p 2222 alice@host meters`). russh stays
//! behind this module; every request becomes an action for the guard, and
//! whatever the shell does not offer (forwarding, agents, X11, subsystems) is
//! refused and logged.

mod auth;
pub mod console;
mod record;
pub mod sftp;
pub mod shell;
mod terminal;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;

use russh::keys::PublicKey;
use russh::server::{Auth, ChannelOpenHandle, Msg, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, MethodKind, MethodSet};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use crate::commands::{Caller, Gateway, SessionFactor};
use crate::guard::{Credential, Proof, Verdict};
use crate::listen::{Floods, Gate, Shutdown};
use crate::model::PrincipalId;
use crate::store::{Category, EventDraft, Outcome};

const DOOR: &str = "ssh";
/// Longest exec command line accepted.
const MAX_COMMAND: usize = 8 * 1024;
/// How long a connection dropped at the login deadline has to take its
/// disconnect message before its socket is let go.
const DISCONNECT_GRACE: Duration = Duration::from_secs(5);

/// Channels one connection may hold open (OpenSSH's MaxSessions).
const MAX_CHANNELS: usize = 10;

/// Bytes of typed input a channel may have queued before the client waits.
const INPUT_QUEUE: usize = 64;

/// The door's shared state.
pub struct SshDoor {
    gw: Arc<Gateway>,
    config: Arc<russh::server::Config>,
    /// The vendor's keys from `[support]` (replaced on reload).
    support_keys: ArcSwap<Vec<PublicKey>>,
    max_session: Duration,
    max_sessions: usize,
    /// SFTP limits (bytes).
    max_upload: u64,
    quota: u64,
    /// Banner, key exchange and login within this of accept.
    login_grace: Duration,
    startups: Arc<crate::listen::startups::Startups>,
    /// Connections dropped before login, aggregated.
    floods: Arc<Floods>,
    /// Files SFTP holds open, every connection and channel together.
    sftp_files: Arc<tokio::sync::Semaphore>,
}

/// The methods offered, in the order scripted clients try them.
fn methods() -> MethodSet {
    MethodSet::from(
        &[
            MethodKind::PublicKey,
            MethodKind::Password,
            MethodKind::KeyboardInteractive,
        ][..],
    )
}

impl SshDoor {
    pub fn new(
        gw: Arc<Gateway>,
        key: russh::keys::PrivateKey,
        config: &crate::config::Config,
        ssh: &crate::config::SshConfig,
        sftp_files: usize,
    ) -> SshDoor {
        let russh_config = russh::server::Config {
            // OpenSSH probes with `none` first: no delay for that probe
            // (DESIGN §4). Real rejections take a constant second, paced
            // by the handler (`paced`) so a partial success is not held.
            auth_rejection_time: Duration::ZERO,
            auth_rejection_time_initial: Some(Duration::ZERO),
            methods: methods(),
            keys: vec![key],
            preferred: russh::Preferred {
                // No SHA-1 `ssh-rsa` signatures, from users or anyone.
                key: std::borrow::Cow::Owned(
                    russh::Preferred::DEFAULT
                        .key
                        .iter()
                        .filter(|a| **a != russh::keys::Algorithm::Rsa { hash: None })
                        .cloned()
                        .collect(),
                ),
                ..russh::Preferred::DEFAULT
            },
            // The idle timeout: a session that sends nothing is closed.
            inactivity_timeout: Some(ssh.idle_timeout),
            max_auth_attempts: 6,
            nodelay: true,
            ..Default::default()
        };
        let door = SshDoor {
            config: Arc::new(russh_config),
            support_keys: ArcSwap::from_pointee(Vec::new()),
            max_session: ssh.max_session,
            max_sessions: ssh.max_sessions_per_principal,
            max_upload: ssh.max_upload_bytes,
            quota: ssh.store_quota_bytes,
            login_grace: ssh.login_grace,
            startups: crate::listen::startups::Startups::new(
                ssh.max_startups,
                ("ssh.max_startups", "ssh.per_source_max_startups"),
            ),
            floods: Arc::new(Floods::new(gw.guard.clone(), DOOR)),
            sftp_files: Arc::new(tokio::sync::Semaphore::new(sftp_files)),
            gw,
        };
        door.set_support_keys(&config.support.keys);
        door
    }

    /// The vendor's public keys (`[support] keys`); unreadable lines were
    /// refused when the config was checked.
    pub fn set_support_keys(&self, lines: &[String]) {
        let keys = lines
            .iter()
            .filter_map(|l| PublicKey::from_openssh(l).ok())
            .collect();
        self.support_keys.store(Arc::new(keys));
    }

    /// Ends the sessions that logged in with `credential`.
    pub fn end_sessions_on(&self, credential: &str, reason: &str) -> usize {
        self.gw.sessions.kill_credential(credential, reason)
    }

    /// Accepts connections through `gate` until `shutdown`; each runs in a
    /// task `tracker` drains, and is registered as a session once it has
    /// logged in.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        gate: Arc<Gate>,
        shutdown: Shutdown,
        tracker: TaskTracker,
    ) {
        let door = self.clone();
        crate::listen::serve(
            listener,
            gate,
            self.floods.clone(),
            shutdown,
            tracker,
            move |socket, peer, shutdown| door.clone().connection(socket, peer, shutdown),
        )
        .await;
    }

    /// Connections waiting to log in now.
    pub fn waiting_logins(&self) -> usize {
        self.startups.waiting()
    }

    async fn connection(
        self: Arc<Self>,
        socket: tokio::net::TcpStream,
        peer: SocketAddr,
        mut shutdown: Shutdown,
    ) {
        // An IPv4 client on a dual-stack socket is its IPv4 address, in
        // events and in the password throttle alike.
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        // Everything before the login, banner included, runs against one
        // deadline from accept (OpenSSH's LoginGraceTime).
        let deadline = tokio::time::Instant::now() + self.login_grace;
        let source = crate::listen::source_key(peer.ip());
        let waiter = match self.startups.admit(source) {
            Ok(w) => w,
            Err(dropped) => {
                self.floods
                    .count(Some(source), "ssh.startup-dropped", &dropped.to_string());
                return;
            }
        };
        let grace = format!(
            "no login within ssh.login_grace ({} s) of connecting",
            self.login_grace.as_secs()
        );
        let (logged_in_tx, logged_in) = tokio::sync::oneshot::channel();
        // run_stream does not apply the config's nodelay: without it, Nagle
        // and delayed ACKs add 40 ms steps to every login.
        let _ = socket.set_nodelay(true);
        // russh runs the session in a task of its own that outlives ours:
        // when this function returns, by whatever path, the socket it holds
        // fails, so no connection stays open past its slot (a client that
        // stalls the key exchange would otherwise keep it until russh's
        // idle timeout).
        let cancel = tokio_util::sync::CancellationToken::new();
        let _close_on_return = cancel.clone().drop_guard();
        let socket = crate::listen::Cancellable::new(socket, &cancel);
        let session_id = Arc::new(AtomicU64::new(0));
        let handler = Connection {
            door: self.clone(),
            gw: self.gw.clone(),
            peer,
            principal: None,
            logged_in: Some(logged_in_tx),
            interactive: None,
            pending: None,
            factor: SessionFactor::default(),
            session_id: session_id.clone(),
            channels: HashMap::new(),
        };
        let started = tokio::select! {
            r = tokio::time::timeout_at(deadline, russh::server::run_stream(self.config.clone(), socket, handler)) => r,
            _ = shutdown.signalled() => return,
        };
        let session = match started {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "ssh handshake failed");
                return;
            }
            Err(_) => {
                self.floods.count(Some(source), "ssh.login-grace", &grace);
                return;
            }
        };
        let handle = session.handle();
        tokio::pin!(session);
        let disconnect = |reason: russh::Disconnect, text: String| {
            let handle = handle.clone();
            async move {
                // Bounded: a session task that no longer reads cannot
                // hold this one.
                let _ = tokio::time::timeout(
                    DISCONNECT_GRACE,
                    handle.disconnect(reason, text, "en".into()),
                )
                .await;
            }
        };
        // Until the login, the connection is bounded in time.
        let (who, credential, factor) = tokio::select! {
            r = logged_in => match r {
                Ok(Ok(x)) => x,
                // Busy is not wrong: the client is told to come back.
                Ok(Err(Busy)) => {
                    disconnect(russh::Disconnect::ServiceNotAvailable, "the gateway is busy checking passwords: nothing was counted against you; try again".into()).await;
                    let _ = tokio::time::timeout(DISCONNECT_GRACE, &mut session).await;
                    return;
                }
                Err(_) => { let _ = (&mut session).await; return; }
            },
            _ = &mut session => return,
            _ = tokio::time::sleep_until(deadline) => {
                self.floods.count(Some(source), "ssh.login-grace", &grace);
                disconnect(russh::Disconnect::ByApplication, "login timed out".into()).await;
                let _ = tokio::time::timeout(DISCONNECT_GRACE, &mut session).await;
                return;
            }
            _ = shutdown.signalled() => {
                disconnect(russh::Disconnect::ByApplication, "the gateway is stopping".into()).await;
                let _ = tokio::time::timeout(DISCONNECT_GRACE, &mut session).await;
                return;
            }
        };
        drop(waiter);
        let sessions = self.gw.sessions.clone();
        let started = crate::model::micros(OffsetDateTime::now_utc());
        // The guard checked the cap at login; counting and registering
        // under one lock holds it against parallel logins too.
        let mut registered = match sessions.register_within(
            &who,
            &peer.ip().to_string(),
            DOOR,
            Some(credential),
            started,
            self.max_sessions,
        ) {
            Ok(r) => r,
            Err(live) => {
                let why = format!(
                    "{live} live sessions on {DOOR}: the maximum per principal is {}",
                    self.max_sessions
                );
                self.gw
                    .guard
                    .record(
                        EventDraft::new("session.refused", Category::Session, Outcome::Deny)
                            .principal(&who)
                            .source(peer.ip())
                            .door(DOOR)
                            .reason(why.clone()),
                    )
                    .await;
                disconnect(russh::Disconnect::TooManyConnections, why).await;
                let _ = tokio::time::timeout(DISCONNECT_GRACE, &mut session).await;
                return;
            }
        };
        let id = registered.id;
        sessions.set_factor(id, factor);
        session_id.store(id, Ordering::Release);
        self.gw
            .guard
            .record(
                EventDraft::new("session.start", Category::Session, Outcome::Success)
                    .principal(&who)
                    .source(peer.ip())
                    .door(DOOR)
                    .detail("session", id),
            )
            .await;
        let (why, ours) = tokio::select! {
            _ = &mut session => ("the client disconnected".to_string(), false),
            _ = tokio::time::sleep(self.max_session) => {
                let why = format!("the maximum session length ({}s) was reached", self.max_session.as_secs());
                disconnect(russh::Disconnect::ByApplication, why.clone()).await;
                (why, true)
            }
            r = registered.ended.changed() => {
                let why = if r.is_ok() { registered.ended.borrow().clone().unwrap_or_default() } else { String::new() };
                disconnect(russh::Disconnect::ByApplication, why.clone()).await;
                (why, true)
            }
        };
        if ours {
            // The client reads why before the socket goes.
            let _ = tokio::time::timeout(DISCONNECT_GRACE, &mut session).await;
        }
        drop(registered);
        // The end names its recordings as the log vouches for them: their
        // last chunks are written first.
        let recordings = self.gw.recordings.finish_session(id).await;
        let mut ev = EventDraft::new("session.end", Category::Session, Outcome::Success)
            .principal(&who)
            .source(peer.ip())
            .door(DOOR)
            .reason(why)
            .detail("session", id);
        if !recordings.is_empty() {
            let join = |f: &dyn Fn(&crate::recording::Meta) -> String| {
                recordings.iter().map(f).collect::<Vec<_>>().join(" ")
            };
            ev = ev
                .detail("recording", join(&|m| m.id.clone()))
                .detail("recording_hash", join(&|m| m.hash.clone()))
                .detail("recording_bytes", join(&|m| m.bytes.to_string()))
                .detail(
                    "recording_duration_ms",
                    join(&|m| {
                        (m.ended.unwrap_or(m.started).saturating_sub(m.started) / 1000).to_string()
                    }),
                );
        }
        self.gw.guard.record(ev).await;
    }
}

/// The password pool was too busy to check a login.
struct Busy;

/// How long a refused login method takes, counted from its request: a
/// constant, so a refusal tells nothing by its timing. A partial success
/// (a first credential right, the code still to come) is answered at once:
/// russh would hold it as long as a refusal (its `auth_rejection_time`,
/// set to zero for that reason).
const REJECTION_TIME: Duration = Duration::from_secs(1);

/// Answers `auth` no sooner than [`REJECTION_TIME`] after `t0` when it is a
/// refusal.
async fn paced(t0: tokio::time::Instant, auth: Auth) -> Auth {
    if let Auth::Reject {
        partial_success: false,
        ..
    } = auth
    {
        tokio::time::sleep_until(t0 + REJECTION_TIME).await;
    }
    auth
}

/// Who logged in, the credential the session runs on, and whether it gave
/// a second factor.
type LoggedIn = (PrincipalId, String, SessionFactor);

/// A channel's pty and, once its shell or command runs, where its input goes.
#[derive(Default)]
struct ChannelSlot {
    pty: Option<terminal::Pty>,
    input: Option<tokio::sync::mpsc::Sender<terminal::Input>>,
    /// The channel itself until it is known what runs on it: the SFTP
    /// subsystem reads it as a stream; a shell or command drops it (russh
    /// queues every message for a live channel object).
    channel: Option<Channel<Msg>>,
}

/// One client connection: russh's callbacks, translated.
struct Connection {
    door: Arc<SshDoor>,
    gw: Arc<Gateway>,
    peer: SocketAddr,
    principal: Option<PrincipalId>,
    /// Who logged in, and with what credential (a key fingerprint or an
    /// access key id), so removing that credential ends the session.
    logged_in: Option<tokio::sync::oneshot::Sender<Result<LoggedIn, Busy>>>,
    interactive: Option<auth::Interactive>,
    /// A first credential was right; the second factor is awaited.
    pending: Option<auth::Pending>,
    /// Whether this connection's session proved a second factor.
    factor: SessionFactor,
    session_id: Arc<AtomicU64>,
    channels: HashMap<ChannelId, ChannelSlot>,
}

impl Connection {
    /// Who `key` lets in as `user`: one of the user's keys (`user add-key`),
    /// or for `support`, one of the vendor's keys in the config.
    fn key_owner(&self, user: &str, key: &PublicKey) -> Option<PrincipalId> {
        let who = PrincipalId::parse(user).ok()?;
        if who == PrincipalId::Support {
            return self
                .door
                .support_keys
                .load()
                .iter()
                .any(|k| k.key_data() == key.key_data())
                .then_some(who);
        }
        let PrincipalId::User(name) = &who else {
            return None;
        };
        let dir = self.gw.guard.directory();
        let u = dir.users.get(name)?;
        u.ssh_keys
            .iter()
            .any(|line| crate::sshkeys::line_is(line, key))
            .then_some(who)
    }

    /// The guard let the principal in: the connection task registers the
    /// session.
    fn logged_in(&mut self, who: PrincipalId, credential: String) -> Auth {
        self.principal = Some(who.clone());
        if let Some(tx) = self.logged_in.take() {
            let _ = tx.send(Ok((who, credential, self.factor.clone())));
        }
        Auth::Accept
    }

    /// The hash pool was full: the connection task tells the client so.
    fn busy(&mut self) -> Auth {
        if let Some(tx) = self.logged_in.take() {
            let _ = tx.send(Err(Busy));
        }
        Auth::reject()
    }

    /// Passes what the client sent to the shell or command running on
    /// `channel` (nothing runs yet: dropped).
    async fn forward(&self, channel: ChannelId, input: terminal::Input) {
        if let Some(tx) = self.channels.get(&channel).and_then(|s| s.input.as_ref()) {
            let _ = tx.send(input).await;
        }
    }

    /// Starts a shell or command on `channel`: its input is routed to the
    /// returned terminal. None before login or if the channel already runs.
    fn start_channel(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Option<(Caller, terminal::Io)> {
        let who = self.principal.clone()?;
        let slot = self.channels.entry(channel).or_default();
        if slot.input.is_some() {
            return None;
        }
        slot.channel = None;
        let (tx, rx) = tokio::sync::mpsc::channel(INPUT_QUEUE);
        slot.input = Some(tx);
        let io = terminal::Io::new(session.handle(), channel, rx, slot.pty.clone());
        Some((self.caller(who), io))
    }

    /// Waits (5 s at most) until the connection task registered the
    /// session: a channel opened right after the login must run in it, or
    /// what it comes to rely on would not be watched.
    async fn registered(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.session_id.load(Ordering::Acquire) == 0 && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn caller(&self, who: PrincipalId) -> Caller {
        Caller {
            who,
            source: self.peer.ip().to_string(),
            addr: Some(self.peer.ip()),
            door: DOOR,
            session: self.session_id.load(Ordering::Acquire),
            factor: self.factor.clone(),
            recorded: false,
        }
    }

    /// A login attempt that names nobody the directory knows for this key.
    async fn refuse_login(&self, credential: &str, why: String) {
        let ev = EventDraft::new("login.failure", Category::Authentication, Outcome::Failure)
            .source(self.peer.ip())
            .door(DOOR)
            .action("login")
            .reason(why)
            .detail("credential", credential);
        self.gw.guard.record(ev).await;
    }

    async fn refuse(&self, code: &str, reason: &str) {
        let mut ev = EventDraft::new(code, Category::Session, Outcome::Deny)
            .source(self.peer.ip())
            .door(DOOR)
            .reason(reason);
        if let Some(p) = &self.principal {
            ev = ev.principal(p);
        }
        self.gw.guard.record(ev).await;
    }
}

/// The login methods, translated; the handler paces what they answer.
impl Connection {
    /// A key merely offered is a probe, never a failure: it is accepted for
    /// a signature only when it is one of the user's keys.
    async fn publickey_offered(
        &mut self,
        user: &str,
        offer: russh::server::PublicKeyOffer<'_>,
    ) -> Result<Auth, russh::Error> {
        Ok(match self.key_owner(user, offer.public_key) {
            Some(_) => Auth::Accept,
            None => Auth::reject(),
        })
    }

    async fn publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, russh::Error> {
        if *key.algorithm == (russh::keys::Algorithm::Rsa { hash: None }) {
            self.refuse(
                "login.failure",
                "ssh-rsa (SHA-1) signatures are refused; use rsa-sha2-256/512 or ed25519",
            )
            .await;
            return Ok(Auth::reject());
        }
        let Some(who) = self.key_owner(user, key.public_key) else {
            // Signed with a key that is not this principal's: an attempt,
            // logged, never counted toward lockout (keys do not lock).
            let why = format!(
                "a key that is not `{}`'s ({})",
                user.chars().take(64).collect::<String>(),
                key.public_key.fingerprint(russh::keys::HashAlg::Sha256)
            );
            self.refuse_login("publickey", why).await;
            return Ok(Auth::reject());
        };
        let proof = Proof::Checked {
            credential: Credential::PublicKey,
            id: Some(crate::sshkeys::key_credential(key.public_key)),
            second_factor: false,
        };
        let verdict = auth::attempt(
            &self.gw,
            &who.to_string(),
            self.peer.ip(),
            proof,
            self.door.max_sessions,
        )
        .await;
        Ok(match verdict {
            Verdict::Accepted {
                who,
                credential: Some(c),
                ..
            } => self.logged_in(who, c),
            Verdict::NeedsCode {
                who,
                credential,
                id,
            } => {
                self.pending = Some(auth::Pending {
                    who,
                    credential,
                    id,
                    tries: 0,
                    first_login: None,
                });
                auth::needs_code()
            }
            // The event says why; the client is told only that it was denied.
            _ => Auth::reject(),
        })
    }

    async fn password_login(&mut self, user: &str, password: &str) -> Result<Auth, russh::Error> {
        let secret = crate::store::secrets::Secret::new(password);
        Ok(
            match auth::password(
                &self.gw,
                self.peer.ip(),
                user,
                secret,
                self.door.max_sessions,
            )
            .await
            {
                auth::PasswordLogin::In { who, credential } => self.logged_in(who, credential),
                auth::PasswordLogin::Code(p) => {
                    self.pending = Some(p);
                    auth::needs_code()
                }
                auth::PasswordLogin::Busy => self.busy(),
                auth::PasswordLogin::Out => Auth::reject(),
            },
        )
    }

    async fn keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<russh::server::Response<'a>>,
    ) -> Result<Auth, russh::Error> {
        let Some(response) = response else {
            // A code awaited is for the principal that proved the first
            // credential, whatever name this request gives.
            let pending = self
                .pending
                .take()
                .filter(|p| PrincipalId::parse(user).is_ok_and(|u| u == p.who));
            return Ok(match auth::interactive_start(user, pending) {
                Some((state, round)) => {
                    self.interactive = Some(state);
                    round
                }
                None => {
                    self.interactive = None;
                    Auth::reject()
                }
            });
        };
        let Some(state) = self.interactive.take() else {
            return Ok(Auth::reject());
        };
        let answers = response
            .map(|b| crate::store::secrets::Secret::new(String::from_utf8_lossy(&b).into_owned()))
            .collect();
        match auth::interactive_step(
            &self.gw,
            self.peer.ip(),
            state,
            answers,
            self.door.max_sessions,
        )
        .await
        {
            Ok(done) => {
                if done.second_factor {
                    self.factor.raise();
                }
                Ok(self.logged_in(done.who, done.credential))
            }
            Err((next, reply)) => {
                self.interactive = next;
                Ok(reply)
            }
        }
    }
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        Ok(Auth::Reject {
            proceed_with_methods: Some(methods()),
            partial_success: false,
        })
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: russh::server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        let t0 = tokio::time::Instant::now();
        let auth = self.publickey_offered(user, offer).await?;
        Ok(paced(t0, auth).await)
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let t0 = tokio::time::Instant::now();
        let auth = self.publickey(user, key).await?;
        Ok(paced(t0, auth).await)
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        let t0 = tokio::time::Instant::now();
        let auth = self.password_login(user, password).await?;
        Ok(paced(t0, auth).await)
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<russh::server::Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        let t0 = tokio::time::Instant::now();
        let auth = self
            .keyboard_interactive(user, _submethods, response)
            .await?;
        Ok(paced(t0, auth).await)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // OpenSSH's MaxSessions: each channel may hold a console, SFTP
        // files and a meter connection; a connection holds at most ten.
        if self.channels.len() >= MAX_CHANNELS {
            reply
                .reject(russh::ChannelOpenFailure::ResourceShortage)
                .await;
            return Ok(());
        }
        let id = channel.id();
        self.channels.entry(id).or_default().channel = Some(channel);
        reply.accept().await;
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        term: &str,
        col_width: u32,
        row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.entry(channel).or_default().pty = Some(terminal::Pty {
            term: term.chars().take(64).collect(),
            cols: col_width.clamp(1, 1000),
            rows: row_height.clamp(1, 1000),
        });
        session.channel_success(channel)?;
        Ok(())
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        col_width: u32,
        row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let (cols, rows) = (col_width.clamp(1, 1000), row_height.clamp(1, 1000));
        if let Some(p) = self
            .channels
            .get_mut(&channel)
            .and_then(|slot| slot.pty.as_mut())
        {
            p.cols = cols;
            p.rows = rows;
        }
        self.forward(channel, terminal::Input::Resize { cols, rows })
            .await;
        Ok(())
    }

    async fn data(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.forward(channel, terminal::Input::Data(data.to_vec()))
            .await;
        Ok(())
    }

    async fn channel_eof(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.forward(channel, terminal::Input::Eof).await;
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Dropping the sender ends the channel's task.
        self.channels.remove(&channel);
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.registered().await;
        let Some((caller, io)) = self.start_channel(channel, session) else {
            session.channel_failure(channel)?;
            return Ok(());
        };
        session.channel_success(channel)?;
        let shell = self.gw.clone();
        match std::str::from_utf8(data) {
            Ok(line) if line.len() <= MAX_COMMAND => {
                let line = line.to_string();
                tokio::spawn(async move {
                    let (mut caller, mut io) = (caller, io);
                    if !record::begin(&shell, &mut caller, &mut io, "exec").await {
                        io.finish(1).await;
                        return;
                    }
                    shell::exec(shell, caller, line, io).await
                });
            }
            _ => {
                tokio::spawn(async move {
                    io.err("error: the command is not valid UTF-8 or too long\n")
                        .await;
                    io.finish(2).await;
                });
            }
        }
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.registered().await;
        let Some((caller, io)) = self.start_channel(channel, session) else {
            session.channel_failure(channel)?;
            return Ok(());
        };
        session.channel_success(channel)?;
        let gw = self.gw.clone();
        tokio::spawn(async move {
            let (mut caller, mut io) = (caller, io);
            if !record::begin(&gw, &mut caller, &mut io, "shell").await {
                io.finish(1).await;
                return;
            }
            shell::interactive(gw, caller, io).await
        });
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.registered().await;
        let taken = self.channels.get_mut(&channel).and_then(|s| {
            if s.input.is_some() {
                None
            } else {
                s.channel.take()
            }
        });
        if name == "sftp"
            && let (Some(ch), Some(who)) = (taken, self.principal.clone())
        {
            session.channel_success(channel)?;
            let caller = self.caller(who);
            let gw = self.gw.clone();
            let (max_upload, quota) = (self.door.max_upload, self.door.quota);
            let files = self.door.sftp_files.clone();
            let handle = session.handle();
            tokio::spawn(async move {
                // The SFTP channel is a session of its own: listed,
                // killable, ended when what its handles rely on is withdrawn.
                let sessions = gw.sessions.clone();
                let registered = sessions.register(
                    &caller.who,
                    &caller.source,
                    "sftp",
                    None,
                    crate::model::micros(OffsetDateTime::now_utc()),
                );
                let ended = registered.ended.clone();
                let sftp =
                    sftp::SftpSession::new(gw, caller, registered.id, max_upload, quota, files);
                sftp::serve(ch.into_stream(), sftp, ended).await;
                drop(registered);
                // russh-sftp's own loop never ends the channel; clients on
                // other SSH stacks wait for this.
                let _ = handle.exit_status_request(channel, 0).await;
                let _ = handle.eof(channel).await;
                let _ = handle.close(channel).await;
            });
            return Ok(());
        }
        self.refuse(
            "ssh.subsystem.deny",
            &format!(
                "subsystem `{}` is not offered",
                name.chars().take(64).collect::<String>()
            ),
        )
        .await;
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.refuse(
            "ssh.forward.deny",
            &format!(
                "remote port forwarding ({}:{port}) is refused",
                address.chars().take(64).collect::<String>()
            ),
        )
        .await;
        Ok(false)
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        _channel: Channel<Msg>,
        host: &str,
        port: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse(
            "ssh.forward.deny",
            &format!(
                "local port forwarding (to {}:{port}) is refused",
                host.chars().take(64).collect::<String>()
            ),
        )
        .await;
        drop(reply);
        Ok(())
    }

    async fn agent_request(
        &mut self,
        _channel: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.refuse("ssh.agent.deny", "agent forwarding is refused")
            .await;
        Ok(false)
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse("ssh.x11.deny", "X11 forwarding is refused")
            .await;
        session.channel_failure(channel)?;
        Ok(())
    }
}
