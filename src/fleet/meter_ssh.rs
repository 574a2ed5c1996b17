//! The gateway's SSH client to meters: it logs in to a meter's console or
//! SFTP server as a meter-side account, with the secret from the 0600
//! credentials file and the host key pinned (no trust on first use).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use russh::ChannelMsg;
use russh::keys::PublicKey;

use crate::config::ConsoleConfig;

/// How long the meter's console has to answer and let us in.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the meter-side accounts' secrets are kept.
#[derive(Clone, Default)]
pub struct Consoles {
    pub credentials: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("no meter-side credentials file is configured (ssh.meter_credentials)")]
    NoCredentials,
    #[error("{path}: {why}")]
    Credentials { path: String, why: String },
    #[error("{path} has no credential for account `{account}` of meter {meter}")]
    MissingSecret {
        path: String,
        meter: String,
        account: String,
    },
    #[error("{0}")]
    Upstream(String),
    #[error(
        "the console presented host key {presented}, not the pinned one: refused (no trust on first use)"
    )]
    HostKey { presented: String },
    #[error("the console refused account `{0}`")]
    Refused(String),
}

/// The account's secret from the credentials file (TOML, `[METER]
/// account = "secret"`), which must be readable by the daemon only.
fn secret(path: &PathBuf, meter: &str, account: &str) -> Result<String, ConsoleError> {
    use std::os::unix::fs::MetadataExt;
    let shown = path.display().to_string();
    let bad = |why: String| ConsoleError::Credentials {
        path: shown.clone(),
        why,
    };
    let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    // Meter credentials open meters: nobody but the daemon reads them.
    if meta.mode() & 0o077 != 0 {
        return Err(bad(format!(
            "mode {:04o} lets others read meter credentials; chmod 0600 it",
            meta.mode() & 0o7777
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| bad(format!("not TOML: {}", e.message())))?;
    table
        .get(meter)
        .and_then(|m| m.get(account))
        .and_then(|s| s.as_str())
        .map(str::to_string)
        .ok_or_else(|| ConsoleError::MissingSecret {
            path: shown.clone(),
            meter: meter.into(),
            account: account.into(),
        })
}

/// russh's client callbacks: only the pinned host key is accepted.
pub struct Pinned {
    pinned: PublicKey,
    presented: Arc<std::sync::Mutex<Option<String>>>,
}

impl russh::client::Handler for Pinned {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            return Ok(false);
        };
        let ok = key.key_data() == self.pinned.key_data();
        if !ok && let Ok(mut p) = self.presented.lock() {
            *p = Some(key.fingerprint(russh::keys::HashAlg::Sha256).to_string());
        }
        Ok(ok)
    }
}

/// An SSH session to a meter (its console or its SFTP server) as a
/// meter-side account: the secret from the credentials file, the host key
/// checked against the pinned one.
pub async fn login(
    consoles: &Consoles,
    console: &ConsoleConfig,
    meter: &str,
    account: &str,
) -> Result<russh::client::Handle<Pinned>, ConsoleError> {
    let path = consoles
        .credentials
        .as_ref()
        .ok_or(ConsoleError::NoCredentials)?;
    let secret = secret(path, meter, account)?;
    let pinned = PublicKey::from_openssh(&console.host_key)
        .map_err(|e| ConsoleError::Upstream(format!("the pinned host key is unreadable: {e}")))?;
    let presented = Arc::new(std::sync::Mutex::new(None));
    let config = Arc::new(russh::client::Config {
        inactivity_timeout: None,
        // Keystrokes go to the meter at once (no Nagle delay).
        nodelay: true,
        ..Default::default()
    });
    let handler = Pinned {
        pinned,
        presented: presented.clone(),
    };
    let up = |e: String| ConsoleError::Upstream(format!("{}: {e}", console.address));
    let connected = tokio::time::timeout(
        CONNECT_TIMEOUT,
        russh::client::connect(config, console.address.as_str(), handler),
    )
    .await
    .map_err(|_| up("no answer in time".into()))?;
    let mut session = match connected {
        Ok(s) => s,
        Err(e) => {
            if let Some(p) = presented.lock().ok().and_then(|p| p.clone()) {
                return Err(ConsoleError::HostKey { presented: p });
            }
            return Err(up(e.to_string()));
        }
    };
    let auth = tokio::time::timeout(
        CONNECT_TIMEOUT,
        session.authenticate_password(account, secret),
    )
    .await
    .map_err(|_| up("login timed out".into()))?
    .map_err(|e| up(e.to_string()))?;
    if !auth.success() {
        return Err(ConsoleError::Refused(account.into()));
    }
    Ok(session)
}

/// A console session on a meter: a shell channel, with a pty when the crew
/// has one.
pub struct ConsoleLink {
    _session: russh::client::Handle<Pinned>,
    channel: russh::Channel<russh::client::Msg>,
}

/// The crew's terminal, as the meter's console should see it.
pub struct PtyRequest<'a> {
    pub term: &'a str,
    pub cols: u32,
    pub rows: u32,
}

/// What the meter's console sent.
pub enum ConsoleOutput {
    Data(Vec<u8>),
    Exit(u32),
    Closed,
    Other,
}

impl ConsoleLink {
    /// Logs in as `account` and starts the console's shell.
    pub async fn open(
        consoles: &Consoles,
        console: &ConsoleConfig,
        meter: &str,
        account: &str,
        pty: Option<PtyRequest<'_>>,
    ) -> Result<ConsoleLink, ConsoleError> {
        let session = login(consoles, console, meter, account).await?;
        let up = |e: String| ConsoleError::Upstream(format!("{}: {e}", console.address));
        let channel = session
            .channel_open_session()
            .await
            .map_err(|e| up(e.to_string()))?;
        if let Some(pty) = pty {
            channel
                .request_pty(false, pty.term, pty.cols, pty.rows, 0, 0, &[])
                .await
                .map_err(|e| up(e.to_string()))?;
        }
        channel
            .request_shell(false)
            .await
            .map_err(|e| up(e.to_string()))?;
        Ok(ConsoleLink {
            _session: session,
            channel,
        })
    }

    /// Sends the crew's keystrokes; false once the console is gone.
    pub async fn send(&mut self, data: &[u8]) -> bool {
        self.channel.data_bytes(data.to_vec()).await.is_ok()
    }

    pub async fn resize(&mut self, cols: u32, rows: u32) {
        let _ = self.channel.window_change(cols, rows, 0, 0).await;
    }

    pub async fn eof(&mut self) {
        let _ = self.channel.eof().await;
    }

    pub async fn close(&mut self) {
        let _ = self.channel.close().await;
    }

    /// The console's next output.
    pub async fn next(&mut self) -> ConsoleOutput {
        match self.channel.wait().await {
            Some(ChannelMsg::Data { data }) | Some(ChannelMsg::ExtendedData { data, .. }) => {
                ConsoleOutput::Data(data.to_vec())
            }
            Some(ChannelMsg::ExitStatus { exit_status }) => ConsoleOutput::Exit(exit_status),
            Some(ChannelMsg::Eof | ChannelMsg::Close) | None => ConsoleOutput::Closed,
            Some(_) => ConsoleOutput::Other,
        }
    }
}
