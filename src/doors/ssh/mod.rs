//! The SSH door: field crews log in with an unmodified OpenSSH client and run
//! the gateway shell's commands (`ssh -p 2222 alice@host meters`). russh stays
//! behind this module; every request becomes an action for the guard, and
//! whatever the shell does not offer (forwarding, agents, X11, subsystems) is
//! refused and logged.

mod auth;
mod host_key;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use russh::keys::PublicKey;
use russh::server::{Auth, ChannelOpenHandle, Msg, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, MethodKind, MethodSet};
use time::OffsetDateTime;
use tokio::net::TcpListener;

pub use host_key::load_or_create as host_key;

use crate::doors::admin::exec::{AdminContext, execute_streaming};
use crate::doors::admin::protocol::Request as AdminRequest;
use crate::guard::Credential;
use crate::model::PrincipalId;
use crate::store::{Category, EventDraft, Outcome};

const DOOR: &str = "ssh";
/// Longest exec command line accepted.
const MAX_COMMAND: usize = 8 * 1024;
/// A connection that has not authenticated by then is closed.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("{path}: {error}")]
    HostKey { path: String, error: String },
}

/// The door's shared state.
pub struct SshDoor {
    admin: Arc<AdminContext>,
    config: Arc<russh::server::Config>,
    passwords: Arc<crate::config::Passwords>,
    max_session: Duration,
    max_sessions: usize,
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
        admin: Arc<AdminContext>,
        key: russh::keys::PrivateKey,
        passwords: crate::config::Passwords,
        ssh: &crate::config::SshConfig,
    ) -> SshDoor {
        let config = russh::server::Config {
            // OpenSSH probes with `none` first: no delay for that probe
            // (DESIGN §4), a constant second for real rejections.
            auth_rejection_time: Duration::from_secs(1),
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
        SshDoor {
            admin,
            config: Arc::new(config),
            passwords: Arc::new(passwords),
            max_session: ssh.max_session,
            max_sessions: ssh.max_sessions_per_principal,
        }
    }

    /// Accepts connections until `stop`; each runs in its own task and is
    /// registered as a session once it has logged in.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            let (socket, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "ssh accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = stop.changed() => return,
            };
            let door = self.clone();
            tokio::spawn(async move { door.connection(socket, peer).await });
        }
    }

    async fn connection(self: Arc<Self>, socket: tokio::net::TcpStream, peer: SocketAddr) {
        let (logged_in_tx, logged_in) = tokio::sync::oneshot::channel();
        let handler = Connection {
            admin: self.admin.clone(),
            passwords: self.passwords.clone(),
            peer,
            principal: None,
            logged_in: Some(logged_in_tx),
            interactive: None,
            max_sessions: self.max_sessions,
        };
        let session = match russh::server::run_stream(self.config.clone(), socket, handler).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "ssh handshake failed");
                return;
            }
        };
        let handle = session.handle();
        tokio::pin!(session);
        // Until the login, the connection is bounded in time.
        let who: PrincipalId = tokio::select! {
            r = logged_in => match r {
                Ok(who) => who,
                Err(_) => { let _ = (&mut session).await; return; }
            },
            _ = &mut session => return,
            _ = tokio::time::sleep(LOGIN_TIMEOUT) => {
                let _ = handle.disconnect(russh::Disconnect::ByApplication, "login timed out".into(), "en".into()).await;
                return;
            }
        };
        let sessions = self.admin.sessions.clone();
        let started = crate::model::micros(OffsetDateTime::now_utc());
        let mut registered = sessions.register(&who, &peer.ip().to_string(), DOOR, None, started);
        let id = registered.id;
        log(
            &self.admin,
            EventDraft::new("session.start", Category::Session, Outcome::Success)
                .principal(&who)
                .source(peer.ip())
                .door(DOOR)
                .detail("session", id),
        )
        .await;
        let why = tokio::select! {
            _ = &mut session => "the client disconnected".to_string(),
            _ = tokio::time::sleep(self.max_session) => {
                let why = format!("the maximum session length ({}s) was reached", self.max_session.as_secs());
                let _ = handle.disconnect(russh::Disconnect::ByApplication, why.clone(), "en".into()).await;
                why
            }
            r = registered.ended.changed() => {
                let why = if r.is_ok() { registered.ended.borrow().clone().unwrap_or_default() } else { String::new() };
                let _ = handle.disconnect(russh::Disconnect::ByApplication, why.clone(), "en".into()).await;
                why
            }
        };
        drop(registered);
        log(
            &self.admin,
            EventDraft::new("session.end", Category::Session, Outcome::Success)
                .principal(&who)
                .source(peer.ip())
                .door(DOOR)
                .reason(why)
                .detail("session", id),
        )
        .await;
    }
}

fn bytes(v: Vec<u8>) -> russh::keys::ssh_encoding::bytes::Bytes {
    russh::keys::ssh_encoding::bytes::Bytes::from(v)
}

async fn log(admin: &AdminContext, ev: EventDraft) {
    if let Err(e) = admin.guard.store().log().append(ev).await {
        tracing::error!(error = %e, "ssh event could not be logged");
    }
}

/// One client connection: russh's callbacks, translated.
struct Connection {
    admin: Arc<AdminContext>,
    passwords: Arc<crate::config::Passwords>,
    peer: SocketAddr,
    principal: Option<PrincipalId>,
    logged_in: Option<tokio::sync::oneshot::Sender<PrincipalId>>,
    interactive: Option<auth::Interactive>,
    max_sessions: usize,
}

impl Connection {
    /// Whether `key` is one of the user's keys (OpenSSH lines from
    /// `user add-key`).
    fn user_has_key(&self, user: &str, key: &PublicKey) -> Option<PrincipalId> {
        let who = PrincipalId::parse(user).ok()?;
        let PrincipalId::User(name) = &who else {
            return None;
        };
        let dir = self.admin.guard.store().directory();
        let u = dir.users.get(name)?;
        u.ssh_keys
            .iter()
            .filter_map(|line| PublicKey::from_openssh(line).ok())
            .any(|k| k.key_data() == key.key_data())
            .then_some(who)
    }

    /// The credential is good: let the principal in, unless it already
    /// holds its maximum of live SSH sessions (IEC 62443 CR 2.7).
    async fn logged_in(&mut self, who: PrincipalId) -> Auth {
        let name = who.to_string();
        let live = self
            .admin
            .sessions
            .list()
            .iter()
            .filter(|s| s.door == DOOR && s.principal == name)
            .count();
        if live >= self.max_sessions {
            let ev = EventDraft::new("session.refused", Category::Session, Outcome::Deny)
                .principal(&who)
                .source(self.peer.ip())
                .door(DOOR)
                .reason(format!(
                    "{live} live SSH sessions: the maximum per principal is {}",
                    self.max_sessions
                ));
            log(&self.admin, ev).await;
            return Auth::reject();
        }
        self.principal = Some(who.clone());
        if let Some(tx) = self.logged_in.take() {
            let _ = tx.send(who);
        }
        Auth::Accept
    }

    async fn refuse(&self, code: &str, reason: &str) {
        let mut ev = EventDraft::new(code, Category::Session, Outcome::Deny)
            .source(self.peer.ip())
            .door(DOOR)
            .reason(reason);
        if let Some(p) = &self.principal {
            ev = ev.principal(p);
        }
        log(&self.admin, ev).await;
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

    /// A key merely offered is a probe, never a failure: it is accepted for
    /// a signature only when it is one of the user's keys.
    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: russh::server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(match self.user_has_key(user, offer.public_key) {
            Some(_) => Auth::Accept,
            None => Auth::reject(),
        })
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if *key.algorithm == (russh::keys::Algorithm::Rsa { hash: None }) {
            self.refuse(
                "login.failure",
                "ssh-rsa (SHA-1) signatures are refused; use rsa-sha2-256/512 or ed25519",
            )
            .await;
            return Ok(Auth::reject());
        }
        let Some(who) = self.user_has_key(user, key.public_key) else {
            return Ok(Auth::reject());
        };
        let d = self
            .admin
            .guard
            .login(
                &who,
                Some(self.peer.ip()),
                DOOR,
                Credential::PublicKey,
                true,
                OffsetDateTime::now_utc(),
            )
            .await;
        if !d.allowed {
            // The event says why; the client is told only that it was denied.
            return Ok(Auth::reject());
        }
        Ok(self.logged_in(who).await)
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        let secret = crate::store::secrets::Secret::new(password);
        Ok(
            match auth::password(&self.admin, self.peer.ip(), user, secret).await {
                Some(who) => self.logged_in(who).await,
                None => Auth::reject(),
            },
        )
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<russh::server::Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        let Some(response) = response else {
            self.interactive = auth::interactive_start(user);
            return Ok(match self.interactive {
                Some(_) => auth::temporary_round(),
                None => Auth::reject(),
            });
        };
        let Some(state) = self.interactive.take() else {
            return Ok(Auth::reject());
        };
        let answers = response
            .map(|b| crate::store::secrets::Secret::new(String::from_utf8_lossy(&b).into_owned()))
            .collect();
        match auth::interactive_step(&self.admin, &self.passwords, self.peer.ip(), state, answers)
            .await
        {
            Ok(who) => Ok(self.logged_in(who).await),
            Err((next, reply)) => {
                self.interactive = next;
                Ok(reply)
            }
        }
    }

    async fn channel_open_session(
        &mut self,
        _channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(who) = self.principal.clone() else {
            session.channel_failure(channel)?;
            return Ok(());
        };
        session.channel_success(channel)?;
        let out = match std::str::from_utf8(data) {
            Ok(line) if line.len() <= MAX_COMMAND => {
                shell::run(&self.admin, &who, self.peer, line).await
            }
            _ => shell::Output::error("error: the command is not valid UTF-8 or too long\n", 2),
        };
        if !out.stdout.is_empty() {
            session.data(channel, bytes(out.stdout.into_bytes()))?;
        }
        if !out.stderr.is_empty() {
            session.extended_data(channel, 1, bytes(out.stderr.into_bytes()))?;
        }
        if let Some(stream) = out.stream {
            // `audit export`, `audit tail -f`: relayed from a task so this
            // connection's callbacks go on; it stops when the client leaves.
            let handle = session.handle();
            let store = self.admin.guard.store().clone();
            tokio::spawn(async move {
                let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(4);
                let producer =
                    tokio::spawn(crate::doors::admin::stream::produce(store, stream, tx));
                while let Some(chunk) = rx.recv().await {
                    if handle
                        .data(channel, bytes(chunk.into_bytes()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                drop(rx);
                let code = match producer.await {
                    Ok(Ok(())) => 0,
                    _ => 1,
                };
                let _ = handle.exit_status_request(channel, code).await;
                let _ = handle.eof(channel).await;
                let _ = handle.close(channel).await;
            });
            return Ok(());
        }
        session.exit_status_request(channel, out.code)?;
        session.eof(channel)?;
        session.close(channel)?;
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)?;
        session.data(
            channel,
            bytes(
                b"The interactive gateway shell is not available yet: run one command at a time (ssh HOST help).\r\n"
                    .to_vec(),
            ),
        )?;
        session.exit_status_request(channel, 1)?;
        session.eof(channel)?;
        session.close(channel)?;
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
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

/// The gateway shell's commands (exec form for now).
mod shell {
    use super::*;

    const HELP: &str = "metergate gateway shell. Commands:\n  \
        whoami                 who you are logged in as\n  \
        help                   this text\n  \
        user|service-user|group|role|policy|support|session|audit|check|review …\n                         \
        the admin commands, as your policies allow\n";

    /// What a command printed, its exit status, and what remains to stream.
    pub struct Output {
        pub stdout: String,
        pub stderr: String,
        pub code: u32,
        pub stream: Option<crate::doors::admin::stream::Stream>,
    }

    impl Output {
        fn text(stdout: String, stderr: String, code: u32) -> Output {
            Output {
                stdout,
                stderr,
                code,
                stream: None,
            }
        }
        pub fn error(stderr: &str, code: u32) -> Output {
            Output::text(String::new(), stderr.to_string(), code)
        }
    }

    /// Runs one command line.
    pub async fn run(
        admin: &AdminContext,
        who: &PrincipalId,
        peer: SocketAddr,
        line: &str,
    ) -> Output {
        let words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        match words.first().map(String::as_str) {
            None | Some("help") | Some("--help") => {
                Output::text(HELP.to_string(), String::new(), 0)
            }
            Some("whoami") => Output::text(format!("{who}\n"), String::new(), 0),
            Some(
                "user" | "service-user" | "group" | "role" | "policy" | "support" | "session"
                | "audit" | "check" | "review",
            ) => {
                let req = AdminRequest {
                    argv: words,
                    json: false,
                    files: Default::default(),
                };
                let (r, stream) = execute_streaming(
                    admin,
                    who,
                    &peer.to_string(),
                    DOOR,
                    &req,
                    OffsetDateTime::now_utc(),
                )
                .await;
                // DESIGN §3: a denial prints `DENY: reason` and exits 1.
                let (stderr, code) = match r.stderr.strip_prefix("error: DENY: ") {
                    Some(reason) => (format!("DENY: {reason}"), 1),
                    None => (r.stderr, u32::from(r.code)),
                };
                Output {
                    stdout: r.stdout,
                    stderr,
                    code,
                    stream,
                }
            }
            Some(other) => Output::text(
                HELP.to_string(),
                format!(
                    "unknown command `{}`\n",
                    other.chars().take(64).collect::<String>()
                ),
                2,
            ),
        }
    }
}
