//! The simulated meter's SSH console (Terminal Access target): password
//! accounts like a real meter's (`viewer`, `operator`, `engineer`, `admin`),
//! a pty-aware prompt and a few commands (`whoami`, `status`, `size`,
//! `exit`), so tests can prove who the gateway logged in as and that window
//! changes pass through.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use russh::server::{Auth, ChannelOpenHandle, Msg, Session};
use russh::{Channel, ChannelId, MethodKind, MethodSet};
use tokio::net::TcpListener;

use super::simulator::MeterState;

/// A running simulated console.
pub struct SimulatedConsole {
    pub address: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SimulatedConsole {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Shared {
    meter: String,
    accounts: BTreeMap<String, String>,
    state: Arc<Mutex<MeterState>>,
    /// The meter's file tree, served over SFTP.
    files: Option<std::path::PathBuf>,
}

impl SimulatedConsole {
    /// Serves the console of `meter` on `bind` with `host_key` and the given
    /// account → password table.
    pub async fn start(
        bind: SocketAddr,
        meter: &str,
        host_key: russh::keys::PrivateKey,
        accounts: BTreeMap<String, String>,
        state: Arc<Mutex<MeterState>>,
        files: Option<std::path::PathBuf>,
    ) -> std::io::Result<SimulatedConsole> {
        let listener = TcpListener::bind(bind).await?;
        let address = listener.local_addr()?;
        let config = Arc::new(russh::server::Config {
            keys: vec![host_key],
            methods: MethodSet::from(&[MethodKind::Password][..]),
            auth_rejection_time: std::time::Duration::from_millis(100),
            auth_rejection_time_initial: Some(std::time::Duration::ZERO),
            ..Default::default()
        });
        let shared = Arc::new(Shared {
            meter: meter.to_string(),
            accounts,
            state,
            files,
        });
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let handler = ConsoleSession {
                    shared: shared.clone(),
                    account: None,
                    size: (80, 24),
                    pty: false,
                    line: Vec::new(),
                    channels: std::collections::HashMap::new(),
                    sftp: std::collections::HashSet::new(),
                };
                let config = config.clone();
                let _ = socket.set_nodelay(true);
                tokio::spawn(async move {
                    if let Ok(s) = russh::server::run_stream(config, socket, handler).await {
                        let _ = s.await;
                    }
                });
            }
        });
        Ok(SimulatedConsole { address, task })
    }
}

struct ConsoleSession {
    shared: Arc<Shared>,
    account: Option<String>,
    size: (u32, u32),
    pty: bool,
    line: Vec<u8>,
    /// Channels not yet running anything (an SFTP subsystem takes its own).
    channels: std::collections::HashMap<ChannelId, Channel<Msg>>,
    /// Channels running SFTP: their bytes are the subsystem's, never
    /// console input.
    sftp: std::collections::HashSet<ChannelId>,
}

/// The most `cat` prints.
const MAX_CAT: usize = 256 * 1024 * 1024;

/// `n` bytes of numbered 64-byte lines, as a meter's event log dump looks.
fn dump(n: usize) -> String {
    let mut out = String::with_capacity(n + 64);
    let mut i = 0u64;
    while out.len() + 64 <= n {
        let line = format!("{i:08} 2026-12-02T12:00:00Z event ok voltage 230.1 V load 12.4 A");
        out.push_str(&line[..63]);
        out.push('\n');
        i += 1;
    }
    out.push_str(&"-".repeat(n.saturating_sub(out.len()).saturating_sub(1)));
    if out.len() < n {
        out.push('\n');
    }
    out
}

impl ConsoleSession {
    fn prompt(&self) -> String {
        format!(
            "{}:{}> ",
            self.shared.meter,
            self.account.as_deref().unwrap_or("?")
        )
    }

    /// Runs one console command: its output, and whether the session ends.
    fn command(&self, line: &str) -> (String, bool) {
        match line.trim() {
            "" => (String::new(), false),
            "whoami" => (
                format!("{}\n", self.account.as_deref().unwrap_or("?")),
                false,
            ),
            "size" => (format!("{}x{}\n", self.size.0, self.size.1), false),
            "status" => {
                let s = self
                    .shared
                    .state
                    .lock()
                    .map(|mut s| s.summary())
                    .unwrap_or_default();
                (format!("{s}\n"), false)
            }
            "help" => (
                "commands: whoami status size cat BYTES exit\n".into(),
                false,
            ),
            // A large output (a log dump), for the pass-through benchmark.
            l if l.starts_with("cat ") => match l[4..].trim().parse::<usize>() {
                Ok(n) if n <= MAX_CAT => (dump(n), false),
                _ => (format!("cat takes a byte count up to {MAX_CAT}\n"), false),
            },
            "exit" | "logout" => (String::new(), true),
            other => (
                format!(
                    "unknown command: {}\n",
                    other.chars().take(40).collect::<String>()
                ),
                false,
            ),
        }
    }

    fn text(&self, s: &str) -> Vec<u8> {
        if self.pty {
            s.replace('\n', "\r\n").into_bytes()
        } else {
            s.as_bytes().to_vec()
        }
    }
}

impl russh::server::Handler for ConsoleSession {
    type Error = russh::Error;

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        if self.shared.accounts.get(user).map(String::as_str) == Some(password) {
            self.account = Some(user.to_string());
            Ok(Auth::Accept)
        } else {
            Ok(Auth::reject())
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let store = self
            .shared
            .files
            .as_deref()
            .and_then(|f| super::files::LocalStore::open(f).ok());
        match (name, self.channels.remove(&channel), store) {
            ("sftp", Some(ch), Some(store)) => {
                self.sftp.insert(channel);
                session.channel_success(channel)?;
                russh_sftp::server::run(ch.into_stream(), super::meter_sftp::MeterSftp::new(store))
                    .await;
            }
            _ => session.channel_failure(channel)?,
        }
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        col_width: u32,
        row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.pty = true;
        self.size = (col_width, row_height);
        session.channel_success(channel)?;
        Ok(())
    }

    async fn window_change_request(
        &mut self,
        _channel: ChannelId,
        col_width: u32,
        row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.size = (col_width, row_height);
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.remove(&channel);
        session.channel_success(channel)?;
        let banner = format!(
            "{} console (simulated ION-class meter), account {}\n{}",
            self.shared.meter,
            self.account.as_deref().unwrap_or("?"),
            self.prompt()
        );
        session.data(channel, self.text(&banner))?;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.remove(&channel);
        session.channel_success(channel)?;
        let (out, _) = self.command(&String::from_utf8_lossy(data));
        session.data(channel, self.text(&out))?;
        session.exit_status_request(channel, 0)?;
        session.eof(channel)?;
        session.close(channel)?;
        Ok(())
    }

    async fn data(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.sftp.contains(&channel) {
            return Ok(());
        }
        for &b in data {
            match b {
                b'\r' | b'\n' => {
                    if self.pty {
                        session.data(channel, b"\r\n".to_vec())?;
                    }
                    let line = String::from_utf8_lossy(&self.line).into_owned();
                    self.line.clear();
                    let (out, end) = self.command(&line);
                    if end {
                        session.exit_status_request(channel, 0)?;
                        session.eof(channel)?;
                        session.close(channel)?;
                        return Ok(());
                    }
                    let out = format!("{out}{}", self.prompt());
                    session.data(channel, self.text(&out))?;
                }
                0x7f | 0x08 => {
                    let erased = self.line.pop().is_some();
                    if erased && self.pty {
                        session.data(channel, b"\x08 \x08".to_vec())?;
                    }
                }
                b if b >= 0x20 && self.line.len() < 512 => {
                    self.line.push(b);
                    if self.pty {
                        session.data(channel, vec![b])?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    async fn channel_eof(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.exit_status_request(channel, 0)?;
        session.eof(channel)?;
        session.close(channel)?;
        Ok(())
    }
}
