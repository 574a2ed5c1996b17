//! The control socket: a Unix socket whose every caller is identified by its
//! peer credentials and acts as `local:USERNAME` (Administrator, the
//! break-glass path, attributed per person). Callers who are not root, the
//! daemon's own user or members of the socket's group are refused and logged.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::unistd::{Gid, Uid};
use time::OffsetDateTime;
use tokio::net::{UnixListener, UnixStream};
use tokio_util::task::TaskTracker;

use super::protocol::{Request, Response, read_frame, write_frame};
use crate::commands::stream::{Stream, produce};
use crate::commands::{Caller, Gateway, Input, Outcome as CommandOutcome, SessionFactor, execute};
use crate::listen::{Floods, Gate, Shutdown};
use crate::model::{PrincipalId, check_name};
use crate::store::{Category, EventDraft, Outcome};

const DOOR: &str = "control-socket";

/// A request must arrive this fast; a silent client is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket {path}: {error}")]
    Io { path: String, error: String },
    #[error(
        "control socket group `{0}` does not exist (create it: groupadd {0}) or set control.group"
    )]
    NoSuchGroup(String),
}

/// Who may connect besides root and the daemon's own user.
#[derive(Clone, Copy, Debug)]
pub struct Access {
    pub group: Option<Gid>,
    pub own_uid: Uid,
}

impl Access {
    fn allows(&self, uid: u32, gid: u32) -> bool {
        if uid == 0 || uid == self.own_uid.as_raw() {
            return true;
        }
        let Some(group) = self.group else {
            return false;
        };
        if gid == group.as_raw() {
            return true;
        }
        // Supplementary groups of the caller's account.
        nix::unistd::User::from_uid(Uid::from_raw(uid))
            .ok()
            .flatten()
            .and_then(|u| {
                let name = std::ffi::CString::new(u.name).ok()?;
                nix::unistd::getgrouplist(&name, u.gid).ok()
            })
            .is_some_and(|groups| groups.contains(&group))
    }
}

/// Binds the socket: removes a stale one, sets its mode and group.
pub fn bind(
    path: &Path,
    mode: u32,
    group: Option<&str>,
) -> Result<(UnixListener, Option<Gid>), ControlError> {
    let io = |e: &dyn std::fmt::Display| ControlError::Io {
        path: path.display().to_string(),
        error: e.to_string(),
    };
    let gid = match group {
        None => None,
        Some(g) => Some(
            nix::unistd::Group::from_name(g)
                .map_err(|e| io(&e))?
                .ok_or_else(|| ControlError::NoSuchGroup(g.into()))?
                .gid,
        ),
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io(&e))?;
    }
    use std::os::unix::fs::FileTypeExt;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        std::fs::remove_file(path).map_err(|e| io(&e))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| io(&e))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| io(&e))?;
    if let Some(gid) = gid {
        nix::unistd::chown(path, None, Some(gid)).map_err(|e| io(&e))?;
    }
    Ok((listener, gid))
}

/// Live connections the control socket holds at most. It draws on its own
/// reserve of descriptors, so a flood on the network doors never takes it.
pub const MAX_CONNECTIONS: usize = 64;

/// Live connections one account other than root and the daemon's own may
/// hold: a member of the socket's group cannot take every place (and so
/// lock root out) by holding streams open.
pub const PER_ACCOUNT: usize = 8;
/// An answer the caller does not read within this is abandoned.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Live connections per account.
#[derive(Default)]
struct Accounts(std::sync::Mutex<std::collections::HashMap<u32, usize>>);

/// One account's place, given back when its connection ends.
struct AccountSlot<'a>(&'a Accounts, u32);

impl Drop for AccountSlot<'_> {
    fn drop(&mut self) {
        if let Ok(mut m) = self.0.0.lock()
            && let Some(n) = m.get_mut(&self.1)
        {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

impl Accounts {
    fn admit(&self, uid: u32, exempt: bool) -> Option<AccountSlot<'_>> {
        let mut m = self.0.lock().ok()?;
        let n = m.entry(uid).or_insert(0);
        if *n >= PER_ACCOUNT && !exempt {
            return None;
        }
        *n += 1;
        Some(AccountSlot(self, uid))
    }
}

/// One frame to the caller, abandoned if it does not read.
async fn send(stream: &mut UnixStream, response: &Response) -> Result<(), ()> {
    match tokio::time::timeout(WRITE_TIMEOUT, write_frame(stream, response)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// Accepts connections until `shutdown`; each runs in a task `tracker`
/// drains.
pub async fn serve(
    listener: UnixListener,
    ctx: Arc<Gateway>,
    access: Access,
    shutdown: Shutdown,
    tracker: TaskTracker,
) {
    let gate = Gate::new(DOOR, MAX_CONNECTIONS, None, None);
    let floods = Arc::new(Floods::new(ctx.guard.clone(), DOOR));
    let accounts = Arc::new(Accounts::default());
    crate::listen::serve(
        listener,
        gate,
        floods,
        shutdown,
        tracker,
        move |stream, (), _| {
            let ctx = ctx.clone();
            let accounts = accounts.clone();
            async move { connection(stream, &ctx, access, &accounts).await }
        },
    )
    .await;
}

/// The principal for a local account: `local:NAME`, or `local:uidN` when the
/// account has no name that is a valid principal name.
fn local_principal(uid: u32) -> PrincipalId {
    let name = nix::unistd::User::from_uid(Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name);
    match name.filter(|n| check_name(n).is_ok()) {
        Some(n) => PrincipalId::Local(n),
        None => PrincipalId::Local(format!("uid{uid}")),
    }
}

async fn connection(mut stream: UnixStream, ctx: &Gateway, access: Access, accounts: &Accounts) {
    let cred = match stream.peer_cred() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "control socket peer without credentials");
            return;
        }
    };
    let (uid, gid) = (cred.uid(), cred.gid());
    let who = local_principal(uid);
    let source = format!("uid={uid} pid={}", cred.pid().unwrap_or(0));
    if !access.allows(uid, gid) {
        let ev = EventDraft::new("admin.socket-refused", Category::Admin, Outcome::Deny)
            .principal(&who)
            .source(&source)
            .door(DOOR)
            .reason(
                "caller is not root, the daemon's user or a member of the control socket's group",
            );
        ctx.guard.record(ev).await;
        let refusal = Response {
            code: 2,
            stdout: String::new(),
            stderr: "error: you may not use this control socket (not in its group)\n".into(),
            more: false,
        };
        // Read the caller's request first (bounded by the frame limit and
        // the timeout) so that closing does not reset the connection before
        // the refusal is read.
        let _ = tokio::time::timeout(REQUEST_TIMEOUT, read_frame::<_, Request>(&mut stream)).await;
        let _ = send(&mut stream, &refusal).await;
        return;
    }
    let exempt = uid == 0 || uid == access.own_uid.as_raw();
    let Some(_place) = accounts.admit(uid, exempt) else {
        let busy = Response {
            code: 1,
            stdout: String::new(),
            stderr: format!(
                "error: your account holds {PER_ACCOUNT} control socket connections already (the rest are kept for others and root): end one and try again\n"
            ),
            more: false,
        };
        let _ = tokio::time::timeout(REQUEST_TIMEOUT, read_frame::<_, Request>(&mut stream)).await;
        let _ = send(&mut stream, &busy).await;
        return;
    };
    let request: Request =
        match tokio::time::timeout(REQUEST_TIMEOUT, read_frame(&mut stream)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                let bad = Response {
                    code: 2,
                    stdout: String::new(),
                    stderr: format!("error: bad request: {e}\n"),
                    more: false,
                };
                let _ = send(&mut stream, &bad).await;
                return;
            }
            Err(_) => return,
        };
    let caller = Caller {
        who,
        source,
        addr: None,
        door: DOOR,
        session: 0,
        factor: SessionFactor::default(),
        recorded: false,
    };
    let input = Input {
        argv: request.argv,
        json: request.json,
        files: request.files,
        precondition: None,
    };
    let (response, more) = render(execute(ctx, &caller, &input, OffsetDateTime::now_utc()).await);
    if send(&mut stream, &response).await.is_err() {
        tracing::debug!("control socket client left (or stopped reading) before the answer");
        return;
    }
    if let Some(more) = more {
        relay(stream, ctx, more).await;
    }
}

/// The CLI's exit codes and words, as the core puts them (DESIGN §3).
fn render(outcome: CommandOutcome) -> (Response, Option<Stream>) {
    let (answer, stream) = outcome.cli();
    (
        Response {
            code: answer.code,
            stdout: answer.stdout,
            stderr: answer.stderr,
            more: stream.is_some(),
        },
        stream,
    )
}

/// Sends a streamed answer as frames until it ends or the client leaves
/// (the client never writes after its request: readable means gone).
async fn relay(mut stream: UnixStream, ctx: &Gateway, more: Stream) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(4);
    let producer = tokio::spawn(produce(ctx.guard.clone(), more, tx));
    let mut probe = [0u8; 1];
    loop {
        tokio::select! {
            chunk = rx.recv() => match chunk {
                Some(text) => {
                    let frame = Response { code: 0, stdout: text, stderr: String::new(), more: true };
                    if send(&mut stream, &frame).await.is_err() {
                        break;
                    }
                }
                None => {
                    let end = match producer.await {
                        Ok(Ok(())) => Response::default(),
                        Ok(Err(e)) => Response { code: 1, stdout: String::new(), stderr: format!("error: {e}\n"), more: false },
                        Err(e) => Response { code: 1, stdout: String::new(), stderr: format!("error: {e}\n"), more: false },
                    };
                    let _ = send(&mut stream, &end).await;
                    return;
                }
            },
            r = tokio::io::AsyncReadExt::read(&mut stream, &mut probe) => {
                if matches!(r, Ok(0) | Err(_)) {
                    break;
                }
            }
        }
    }
    drop(rx);
    producer.abort();
}

/// Sends one request to a daemon and returns its answer (the CLI side);
/// a streamed answer is gathered into one.
pub async fn call(socket: &Path, request: &Request) -> Result<Response, String> {
    let mut gathered = String::new();
    let mut last = call_streaming(socket, request, |chunk| gathered.push_str(chunk)).await?;
    gathered.push_str(&last.stdout);
    last.stdout = gathered;
    Ok(last)
}

/// Sends one request; every frame of a streamed answer but the last goes
/// to `each` as it arrives; returns the last.
pub async fn call_streaming(
    socket: &Path,
    request: &Request,
    mut each: impl FnMut(&str),
) -> Result<Response, String> {
    let mut stream = UnixStream::connect(socket)
        .await
        .map_err(|e| format!("cannot reach the daemon at {}: {e}", socket.display()))?;
    let sent = write_frame(&mut stream, request).await;
    // The daemon may answer (a refusal) and close before reading all of the
    // request; its answer is still the best thing to show.
    loop {
        match read_frame::<_, Response>(&mut stream).await {
            Ok(response) if response.more => each(&response.stdout),
            Ok(response) => return Ok(response),
            Err(e) => {
                return match sent {
                    Err(w) => Err(format!("{}: {w}", socket.display())),
                    Ok(()) => Err(format!("{}: no answer: {e}", socket.display())),
                };
            }
        }
    }
}

/// Where the admin commands look for the daemon by default.
pub fn default_socket() -> PathBuf {
    PathBuf::from("/run/metergate/control.sock")
}
