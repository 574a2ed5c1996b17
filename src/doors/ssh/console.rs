//! Console pass-through (`connect METER`, Terminal Access): the gateway logs
//! in to the meter's SSH console as the meter-side account DESIGN §2's rule
//! picks (the crew never sees its credential), checks the pinned host key
//! (no trust on first use) and bridges the crew's pty to it, window changes
//! included. Start, end and byte counts are events.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use russh::ChannelMsg;
use russh::keys::PublicKey;
use time::OffsetDateTime;

use super::DOOR;
use super::log;
use super::shell::{Caller, ShellContext};
use super::terminal::{Input, Io};
use crate::guard::Action;
use crate::model::{AccountRule, Permission};
use crate::store::{Category, EventDraft, Outcome};

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

/// Among `entries` (least privileged first), the first that names one of
/// `roles` or `permission`.
fn choose_account<'a>(
    entries: &'a [AccountRule],
    roles: &[String],
    permission: Permission,
) -> Option<&'a AccountRule> {
    entries.iter().find(|e| {
        e.role.as_ref().is_some_and(|r| roles.contains(r)) || e.permission == Some(permission)
    })
}

/// DESIGN §2: the meter-side account `who` uses on `meter` (its own
/// `accounts`, else its profile's) for `permission`, or why there is none.
pub(crate) fn meter_account(
    guard: &crate::guard::Guard,
    who: &crate::model::PrincipalId,
    meter: &crate::config::MeterConfig,
    permission: Permission,
) -> Result<String, String> {
    let fleet = guard.fleet();
    let entries = match &meter.accounts {
        Some(a) => a.as_slice(),
        None => fleet
            .1
            .get(&meter.profile)
            .map(|p| p.accounts.as_slice())
            .unwrap_or(&[]),
    };
    let roles = guard.roles_on(who, &meter.id);
    match choose_account(entries, &roles, permission) {
        Some(a) => Ok(a.account.clone()),
        None => Err(format!(
            "no meter-side account of {} maps to your roles ({}) or to {permission}",
            meter.id,
            if roles.is_empty() {
                "none".to_string()
            } else {
                roles.join(", ")
            }
        )),
    }
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
pub(crate) struct Pinned {
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

fn event(code: &str, outcome: Outcome, caller: &Caller, meter: &str) -> EventDraft {
    EventDraft::new(code, Category::Session, outcome)
        .principal(&caller.who)
        .source(caller.peer.ip())
        .door(DOOR)
        .meter(meter)
        .detail("session", caller.session)
}

/// `connect METER`: returns the exit status for the shell.
pub async fn connect(ctx: &ShellContext, caller: &Caller, meter: &str, io: &mut Io) -> u32 {
    let now = OffsetDateTime::now_utc();
    let guard = &ctx.admin.guard;
    let d = guard
        .authorize(
            &crate::guard::Request {
                principal: caller.who.clone(),
                source: Some(caller.peer.ip().to_string()),
                door: DOOR,
                action: Action::Terminal {
                    meter: meter.to_string(),
                },
                read_only: false,
                certificate: None,
            },
            now,
        )
        .await;
    if !d.allowed {
        io.err(&format!("DENY: Terminal Access on {meter}: {}\n", d.reason))
            .await;
        return 1;
    }
    let fleet = guard.fleet();
    let Some(m) = fleet.0.iter().find(|m| m.id == meter) else {
        io.err(&format!("error: no meter `{meter}`\n")).await;
        return 2;
    };
    let Some(console) = &m.console else {
        io.err(&format!("error: meter {meter} has no console configured\n"))
            .await;
        return 1;
    };
    let account = match meter_account(guard, &caller.who, m, Permission::TerminalAccess) {
        Ok(a) => a,
        Err(why) => {
            log(
                &ctx.admin,
                event("console.refused", Outcome::Deny, caller, meter).reason(&why),
            )
            .await;
            io.err(&format!("DENY: {why}\n")).await;
            return 1;
        }
    };
    let link = match open(ctx, console, meter, &account, io).await {
        Ok(link) => link,
        Err(e) => {
            log(
                &ctx.admin,
                event("console.refused", Outcome::Failure, caller, meter)
                    .reason(e.to_string())
                    .detail("account", &account),
            )
            .await;
            // The crew is told what failed, never the credential.
            io.err(&format!("error: console of {meter}: {e}\n")).await;
            return 1;
        }
    };
    log(
        &ctx.admin,
        event("console.start", Outcome::Success, caller, meter)
            .reason(format!("console of {meter} as meter account `{account}`"))
            .detail("account", &account),
    )
    .await;
    let (sent, received, status) = bridge(link, io).await;
    log(
        &ctx.admin,
        event("console.end", Outcome::Success, caller, meter)
            .reason(format!(
                "console of {meter} ended: {sent} bytes to the meter, {received} from it"
            ))
            .detail("account", &account)
            .detail("bytes_to_meter", sent)
            .detail("bytes_from_meter", received),
    )
    .await;
    status
}

struct Link {
    _session: russh::client::Handle<Pinned>,
    channel: russh::Channel<russh::client::Msg>,
}

/// An SSH session to a meter (its console or its SFTP server) as a
/// meter-side account: the secret from the credentials file, the host key
/// checked against the pinned one.
pub(crate) async fn login(
    consoles: &Consoles,
    console: &crate::config::ConsoleConfig,
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

async fn open(
    ctx: &ShellContext,
    console: &crate::config::ConsoleConfig,
    meter: &str,
    account: &str,
    io: &Io,
) -> Result<Link, ConsoleError> {
    let session = login(&ctx.consoles, console, meter, account).await?;
    let up = |e: String| ConsoleError::Upstream(format!("{}: {e}", console.address));
    let channel = session
        .channel_open_session()
        .await
        .map_err(|e| up(e.to_string()))?;
    if let Some(pty) = &io.pty {
        channel
            .request_pty(false, &pty.term, pty.cols, pty.rows, 0, 0, &[])
            .await
            .map_err(|e| up(e.to_string()))?;
    }
    channel
        .request_shell(false)
        .await
        .map_err(|e| up(e.to_string()))?;
    Ok(Link {
        _session: session,
        channel,
    })
}

/// Relays both ways until either side ends; returns the bytes sent to the
/// meter, the bytes received from it and the console's exit status.
async fn bridge(mut link: Link, io: &mut Io) -> (u64, u64, u32) {
    let (mut sent, mut received, mut status) = (0u64, 0u64, 0u32);
    // After the crew's EOF the meter may still have output to send.
    let mut crew_done = false;
    loop {
        tokio::select! {
            input = io.next(), if !crew_done => match input {
                Some(Input::Data(d)) => {
                    sent += d.len() as u64;
                    if link.channel.data_bytes(d).await.is_err() {
                        break;
                    }
                }
                Some(Input::Resize { cols, rows }) => {
                    let _ = link.channel.window_change(cols, rows, 0, 0).await;
                }
                Some(Input::Eof) | None => {
                    let _ = link.channel.eof().await;
                    crew_done = true;
                }
            },
            msg = link.channel.wait() => match msg {
                Some(ChannelMsg::Data { data }) => {
                    received += data.len() as u64;
                    if !io.raw(data.to_vec()).await {
                        break;
                    }
                }
                Some(ChannelMsg::ExtendedData { data, .. }) => {
                    received += data.len() as u64;
                    if !io.raw(data.to_vec()).await {
                        break;
                    }
                }
                Some(ChannelMsg::ExitStatus { exit_status }) => status = exit_status,
                Some(ChannelMsg::Eof | ChannelMsg::Close) | None => break,
                Some(_) => {}
            },
        }
    }
    let _ = link.channel.close().await;
    (sent, received, status)
}
