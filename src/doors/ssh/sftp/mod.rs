//! The SFTP door: the `sftp` subsystem of an SSH session. `/` lists the
//! meters the caller can reach; `/METER/…` is that meter's file store. Each
//! request becomes a file action for the guard (the profile's path rules say
//! which permission it needs) and runs in the sandboxed store
//! (`fleet::files`). Writes go to a temporary file (a copy of the file when
//! it is not truncated) renamed over it on close, with its SHA-256 in the
//! event. russh-sftp provides the wire types; the dispatch loop is ours, so
//! the channel is ended properly.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use russh_sftp::protocol::{
    Attrs, File as SftpFile, FileAttributes, Handle, Name, Packet, Status, StatusCode, Version,
};
use time::OffsetDateTime;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

mod handles;
mod path;
mod serve;
mod store;

use crate::commands::{Caller, Gateway};
use crate::fleet::files::{FileError, LocalStore, RelPath, Usage};
use crate::guard::Action;
use crate::model::{FileOp, Permission};
use crate::store::{Category, EventDraft, Outcome};
use path::display;
pub use path::{Target, resolve};
pub use serve::serve;
use store::{Handle as Opened, Store, Upstream};

const DOOR: &str = "sftp";
/// Largest request packet accepted (a 256 KiB write and its header).
const MAX_PACKET: u32 = 300 * 1024;
/// Largest read answered at once.
const MAX_READ: u32 = 256 * 1024;
/// Handles one session may hold open.
const MAX_HANDLES: usize = 64;

/// What an open handle is.
enum Open {
    Dir {
        entries: Vec<SftpFile>,
        sent: bool,
    },
    Read {
        meter: String,
        rel: RelPath,
        file: Opened,
        bytes: Arc<AtomicU64>,
    },
    Write(Upload),
}

/// A file open for writing: its temporary file, renamed over it on close.
struct Upload {
    meter: String,
    rel: RelPath,
    temp: RelPath,
    store: Store,
    file: Opened,
    /// The temporary file's size: the bytes kept from the file, grown by
    /// every write and size change. A local store's usage counts it.
    size: u64,
    /// The bytes it started with (kept from the file it replaces).
    kept: u64,
    /// The local store's usage (None on a meter's own server).
    usage: Option<Arc<Usage>>,
    /// Writes go at the end, whatever offset they carry (SSH_FXF_APPEND).
    append: bool,
    /// Opened with READ: reads are answered from the temporary file.
    readable: bool,
    /// Opened with EXCL: the close does not replace a file that appeared.
    exclusive: bool,
    /// Why a write was refused or failed: the upload is then discarded on
    /// close. Shared with writes in flight.
    failed: Arc<Mutex<Option<String>>>,
}

/// One SFTP channel.
pub struct SftpSession {
    ctx: Arc<Gateway>,
    caller: Caller,
    handles: HashMap<String, Open>,
    next: u64,
    max_upload: u64,
    quota: u64,
    /// Sessions to meters' own SFTP servers, by (meter, meter-side account).
    upstream: HashMap<(String, String), Arc<Upstream>>,
    /// This channel's own entry in the session registry.
    registration: u64,
    /// What each open handle relies on.
    relied: HashMap<String, Vec<(Permission, String)>>,
    /// The gateway's descriptors for SFTP files, shared by every channel.
    files: Arc<Semaphore>,
    /// Each open file's place among them.
    permits: HashMap<String, OwnedSemaphorePermit>,
}

type Reply = Result<Packet, (StatusCode, String)>;

fn denied(why: impl Into<String>) -> (StatusCode, String) {
    (StatusCode::PermissionDenied, why.into())
}

fn from_file_error(e: FileError) -> (StatusCode, String) {
    let code = match e {
        FileError::NotFound => StatusCode::NoSuchFile,
        FileError::Escape | FileError::BadPath(_) => StatusCode::PermissionDenied,
        _ => StatusCode::Failure,
    };
    (code, e.to_string())
}

fn dir_attrs() -> FileAttributes {
    FileAttributes {
        permissions: Some(0o40750),
        ..FileAttributes::empty()
    }
}

fn ok(id: u32) -> Packet {
    Packet::Status(Status {
        id,
        status_code: StatusCode::Ok,
        error_message: "Ok".into(),
        language_tag: "en-US".into(),
    })
}

/// The first path component that is a literal directory name of a profile
/// path rule (`firmware/**` → `firmware`): such directories cannot be
/// renamed or removed.
fn protected(profile: &crate::model::Profile, rel: &RelPath) -> bool {
    rel.names().len() == 1
        && profile
            .paths
            .iter()
            .any(|r| r.pattern.trim_matches('/').split('/').next() == Some(rel.names()[0].as_str()))
}

impl SftpSession {
    pub fn new(
        ctx: Arc<Gateway>,
        caller: Caller,
        registration: u64,
        max_upload: u64,
        quota: u64,
        files: Arc<Semaphore>,
    ) -> Self {
        SftpSession {
            registration,
            files,
            permits: HashMap::new(),
            relied: HashMap::new(),
            ctx,
            caller,
            handles: HashMap::new(),
            next: 0,
            max_upload,
            quota,
            upstream: HashMap::new(),
        }
    }

    async fn log(&self, ev: EventDraft) {
        self.ctx.guard.record(ev.principal(&self.caller.who)).await;
    }

    fn event(&self, code: &str, outcome: Outcome, meter: &str, path: &RelPath) -> EventDraft {
        EventDraft::new(code, Category::File, outcome)
            .source(self.caller.source.as_str())
            .door(DOOR)
            .meter(meter)
            .detail("path", path.text())
            .detail("session", self.caller.session)
    }

    /// A request refused before the guard (an escape, a link, a protected
    /// directory, a cross-meter rename): logged, permission denied.
    async fn log_refusal(&self, path: &str, why: &str) {
        let ev = EventDraft::new("sftp.refused", Category::File, Outcome::Deny)
            .source(self.caller.source.as_str())
            .door(DOOR)
            .reason(why)
            .detail("path", path.chars().take(256).collect::<String>())
            .detail("session", self.caller.session);
        self.log(ev).await;
    }

    async fn refuse(&self, path: &str, why: &str) -> (StatusCode, String) {
        self.log_refusal(path, why).await;
        denied(why)
    }

    /// Resolves a path; one that leaves `/` is refused and logged. A meter
    /// the caller may not reach is answered exactly as a name that is no
    /// meter at all (only the event tells them apart), so no operation
    /// (REALPATH, STAT, OPENDIR...) reveals which meters exist.
    async fn target(&self, path: &str) -> Result<Target, (StatusCode, String)> {
        match resolve(path) {
            Ok(Target::Meter { meter, .. }) if !self.visible(&meter) => {
                let shown = meter.chars().take(64).collect::<String>();
                let why = if self.ctx.guard.fleet().0.iter().any(|m| m.id == meter) {
                    format!("`{shown}` is a meter the caller may not reach: answered as no meter")
                } else {
                    format!("`{shown}` is not a meter")
                };
                self.log_refusal(path, &why).await;
                Err((StatusCode::NoSuchFile, "no such file or directory".into()))
            }
            Ok(t) => Ok(t),
            Err(e) => Err(self.refuse(path, &e.to_string()).await),
        }
    }

    /// Whether `/` shows `meter` to the caller: a configured meter with a
    /// file store on which the caller holds some file permission.
    fn visible(&self, meter: &str) -> bool {
        let guard = &self.ctx.guard;
        let now = OffsetDateTime::now_utc();
        let fleet = guard.fleet();
        let Some(m) = fleet.0.iter().find(|m| m.id == meter) else {
            return false;
        };
        (m.files.is_some() || m.sftp.is_some())
            && [
                Permission::FileSystemReadOnlyAccess,
                Permission::FileSystemReadAndWriteAccess,
                Permission::FirmwareManagement,
                Permission::CertificateManagement,
            ]
            .into_iter()
            .any(|p| {
                guard
                    .decide_permission(&self.caller.who, p, Some(meter), true, now)
                    .allowed
            })
    }

    /// A store operation's result; a symlink or an escape the kernel
    /// refused is logged like any refusal.
    async fn checked<T>(
        &self,
        path: &str,
        r: Result<T, FileError>,
    ) -> Result<T, (StatusCode, String)> {
        match r {
            Ok(v) => Ok(v),
            Err(e @ FileError::Escape) => Err(self.refuse(path, &e.to_string()).await),
            Err(e) => Err(from_file_error(e)),
        }
    }

    /// The guard's decision on a file action (logged by the guard).
    async fn allow(
        &self,
        meter: &str,
        op: FileOp,
        rel: &RelPath,
    ) -> Result<Option<Permission>, (StatusCode, String)> {
        let mut req = self.caller.request(Action::File {
            meter: meter.to_string(),
            op,
            path: rel.text(),
        });
        req.door = DOOR;
        let d = self
            .ctx
            .guard
            .authorize(&req, OffsetDateTime::now_utc())
            .await;
        if d.allowed {
            Ok(d.permission)
        } else {
            Err(denied(format!("{}", d.reason)))
        }
    }

    /// The guard's decision, then the meter's store as the permission it
    /// used reaches it (for an upstream store: the meter-side account).
    async fn reach(
        &mut self,
        meter: &str,
        op: FileOp,
        rel: &RelPath,
    ) -> Result<Store, (StatusCode, String)> {
        Ok(self.reach_for(meter, op, rel).await?.0)
    }

    /// The store, and the permission the guard's decision used.
    async fn reach_for(
        &mut self,
        meter: &str,
        op: FileOp,
        rel: &RelPath,
    ) -> Result<(Store, Option<Permission>), (StatusCode, String)> {
        let permission = self.allow(meter, op, rel).await?;
        Ok((self.store(meter, permission).await?, permission))
    }

    /// An open handle relies on the permission that opened it: when a
    /// change withdraws it, the channel ends (the access watcher).
    fn rely(&mut self, handle: &str, permission: Option<Permission>, meter: &str) {
        if let Some(p) = permission {
            self.ctx.sessions.rely_on(self.registration, p, Some(meter));
            self.relied
                .entry(handle.to_string())
                .or_default()
                .push((p, meter.to_string()));
        }
    }

    fn profile(&self, meter: &str) -> crate::model::Profile {
        let fleet = self.ctx.guard.fleet();
        fleet
            .0
            .iter()
            .find(|m| m.id == meter)
            .and_then(|m| fleet.1.get(&m.profile).cloned())
            .unwrap_or_default()
    }

    async fn store(
        &mut self,
        meter: &str,
        permission: Option<Permission>,
    ) -> Result<Store, (StatusCode, String)> {
        let fleet = self.ctx.guard.fleet();
        let m = fleet
            .0
            .iter()
            .find(|m| m.id == meter)
            .ok_or_else(|| (StatusCode::NoSuchFile, format!("no meter `{meter}`")))?;
        if let Some(dir) = &m.files {
            let store = LocalStore::open(dir).map_err(from_file_error)?;
            return Ok(Store::Local(Arc::new(store)));
        }
        let Some(server) = &m.sftp else {
            return Err((
                StatusCode::NoSuchFile,
                format!("meter {meter} has no file store"),
            ));
        };
        // Upstream: as the meter-side account for the permission in use.
        let chosen = match permission {
            Some(p) => self.ctx.guard.meter_account(&self.caller.who, meter, p),
            None => Err(format!(
                "no permission names a meter-side account of {meter}"
            )),
        };
        let account = match chosen {
            Ok(a) => a,
            Err(why) => return Err(self.refuse(&format!("/{meter}"), &why).await),
        };
        let key = (meter.to_string(), account.clone());
        if let Some(u) = self.upstream.get(&key) {
            return Ok(Store::Upstream(u.clone()));
        }
        match Upstream::connect(&self.ctx.consoles, server, meter, &account).await {
            Ok(u) => {
                let u = Arc::new(u);
                self.upstream.insert(key, u.clone());
                Ok(Store::Upstream(u))
            }
            Err(e) => {
                let ev = EventDraft::new("sftp.upstream-failed", Category::File, Outcome::Failure)
                    .source(self.caller.source.as_str())
                    .door(DOOR)
                    .meter(meter)
                    .reason(e.to_string())
                    .detail("account", &account)
                    .detail("session", self.caller.session);
                self.log(ev).await;
                Err((StatusCode::Failure, format!("the meter's file server: {e}")))
            }
        }
    }

    /// The meters whose stores the caller may at least list.
    fn meters(&self) -> Vec<SftpFile> {
        self.ctx
            .guard
            .fleet()
            .0
            .iter()
            .filter(|m| self.visible(&m.id))
            .map(|m| SftpFile::new(m.id.clone(), dir_attrs()))
            .collect()
    }

    /// A place for one more open file: within the channel's handles and
    /// the gateway's descriptors for SFTP files (shared by every channel).
    fn file_permit(&self) -> Result<OwnedSemaphorePermit, (StatusCode, String)> {
        if self.handles.len() >= MAX_HANDLES {
            return Err(handles::too_many_handles());
        }
        self.files
            .clone()
            .try_acquire_owned()
            .map_err(|_| handles::too_many_files())
    }

    fn handle(
        &mut self,
        permit: Option<OwnedSemaphorePermit>,
        open: Open,
    ) -> Result<String, (StatusCode, String)> {
        if self.handles.len() >= MAX_HANDLES {
            return Err(handles::too_many_handles());
        }
        self.next += 1;
        let h = self.next.to_string();
        self.handles.insert(h.clone(), open);
        if let Some(p) = permit {
            self.permits.insert(h.clone(), p);
        }
        Ok(h)
    }

    pub async fn request(&mut self, packet: Packet) -> Reply {
        match packet {
            Packet::Init(_) => {
                let mut v = Version::new();
                v.extensions
                    .insert("posix-rename@openssh.com".into(), "1".into());
                // Offered so that clients ask, and the refusal is logged.
                v.extensions
                    .insert("hardlink@openssh.com".into(), "1".into());
                v.extensions
                    .insert("statvfs@openssh.com".into(), "2".into());
                Ok(Packet::Version(v))
            }
            Packet::RealPath(r) => {
                let t = self.target(&r.path).await?;
                Ok(Packet::Name(Name {
                    id: r.id,
                    files: vec![SftpFile::dummy(display(&t))],
                }))
            }
            Packet::Stat(s) => self.stat(s.id, &s.path, true).await,
            Packet::Lstat(s) => self.stat(s.id, &s.path, false).await,
            Packet::Fstat(s) => {
                let file = match self.handles.get(&s.handle) {
                    Some(Open::Read { file, .. }) => file.clone(),
                    Some(Open::Write(u)) => u.file.clone(),
                    Some(Open::Dir { .. }) => {
                        return Ok(Packet::Attrs(Attrs {
                            id: s.id,
                            attrs: dir_attrs(),
                        }));
                    }
                    None => return Err((StatusCode::Failure, "no such handle".into())),
                };
                let attrs = file.attrs().await.map_err(from_file_error)?;
                Ok(Packet::Attrs(Attrs { id: s.id, attrs }))
            }
            Packet::OpenDir(o) => {
                let entries = match self.target(&o.path).await? {
                    Target::Root => self.meters(),
                    Target::Meter { meter, rel } => {
                        let store = self.reach(&meter, FileOp::List, &rel).await?;
                        self.checked(&o.path, store.list(&rel).await).await?
                    }
                };
                let handle = self.handle(
                    None,
                    Open::Dir {
                        entries,
                        sent: false,
                    },
                )?;
                Ok(Packet::Handle(Handle { id: o.id, handle }))
            }
            Packet::ReadDir(r) => match self.handles.get_mut(&r.handle) {
                Some(Open::Dir { entries, sent }) if !*sent => {
                    *sent = true;
                    Ok(Packet::Name(Name {
                        id: r.id,
                        files: std::mem::take(entries),
                    }))
                }
                Some(Open::Dir { .. }) => Err((StatusCode::Eof, "end of directory".into())),
                _ => Err((StatusCode::Failure, "no such directory handle".into())),
            },
            Packet::Open(o) => self.open(o.id, &o.filename, o.pflags).await,
            // Reads and writes run in flight (see `io`); these answer
            // reads of a file open for writing (after every write before
            // them) and requests on handles not open for them.
            Packet::Read(r) => self.read_upload(r.id, &r.handle, r.offset, r.len).await,
            Packet::Write(_) => Err((
                StatusCode::Failure,
                "no such file handle open for writing".into(),
            )),
            Packet::Close(c) => self.close(c.id, &c.handle).await,
            Packet::MkDir(m) => {
                let (meter, rel) = self.in_meter(&m.path).await?;
                let store = self.reach(&meter, FileOp::Mkdir, &rel).await?;
                self.checked(&m.path, store.mkdir(&rel).await).await?;
                self.log(self.event("sftp.mkdir", Outcome::Success, &meter, &rel))
                    .await;
                Ok(ok(m.id))
            }
            Packet::RmDir(m) => {
                let (meter, rel) = self.in_meter(&m.path).await?;
                if protected(&self.profile(&meter), &rel) {
                    return Err(self
                        .refuse(&m.path, "a protected directory cannot be removed")
                        .await);
                }
                let store = self.reach(&meter, FileOp::Rmdir, &rel).await?;
                self.checked(&m.path, store.rmdir(&rel).await).await?;
                self.log(self.event("sftp.rmdir", Outcome::Success, &meter, &rel))
                    .await;
                Ok(ok(m.id))
            }
            Packet::Remove(r) => {
                let (meter, rel) = self.in_meter(&r.filename).await?;
                let store = self.reach(&meter, FileOp::Remove, &rel).await?;
                self.checked(&r.filename, store.remove(&rel).await).await?;
                self.log(self.event("sftp.remove", Outcome::Success, &meter, &rel))
                    .await;
                Ok(ok(r.id))
            }
            Packet::Rename(r) => self.rename(r.id, &r.oldpath, &r.newpath, false).await,
            Packet::SetStat(s) => self.setstat(s.id, &s.path, &s.attrs).await,
            Packet::FSetStat(s) => self.fsetstat(s.id, &s.handle, &s.attrs).await,
            Packet::Symlink(s) => Err(self
                .refuse(&s.linkpath, "symbolic links cannot be created")
                .await),
            Packet::ReadLink(r) => Err(self
                .refuse(&r.path, "symbolic links are never followed or read")
                .await),
            Packet::Extended(e) => self.extended(e).await,
            _ => Err((StatusCode::OpUnsupported, "not a request".into())),
        }
    }

    /// A path that must be inside a meter's store (not `/` or a meter's
    /// own root).
    async fn in_meter(&self, path: &str) -> Result<(String, RelPath), (StatusCode, String)> {
        match self.target(path).await? {
            Target::Meter { rel, .. }
                if rel
                    .names()
                    .iter()
                    .any(|n| n.starts_with(crate::fleet::files::UPLOAD_PREFIX)) =>
            {
                Err(self
                    .refuse(
                        path,
                        "names starting with .metergate-upload- are the gateway's",
                    )
                    .await)
            }
            Target::Meter { meter, rel } if !rel.is_root() => Ok((meter, rel)),
            _ => Err(self
                .refuse(
                    path,
                    "the root and a meter's own directory cannot be changed",
                )
                .await),
        }
    }

    /// STAT follows a symlink, LSTAT does not: the store never follows
    /// one, so STAT on a symlink is refused and LSTAT describes the link.
    async fn stat(&mut self, id: u32, path: &str, follow: bool) -> Reply {
        let attrs = match self.target(path).await? {
            Target::Root => dir_attrs(),
            Target::Meter { meter, rel } => {
                let store = self.reach(&meter, FileOp::Stat, &rel).await?;
                let st = self.checked(path, store.stat(&rel).await).await?;
                if follow && !st.file && !st.dir {
                    return Err(self
                        .checked::<()>(path, Err(FileError::Escape))
                        .await
                        .unwrap_err());
                }
                st.attrs
            }
        };
        Ok(Packet::Attrs(Attrs { id, attrs }))
    }

    async fn rename(&mut self, id: u32, from: &str, to: &str, replace: bool) -> Reply {
        let (meter, a) = self.in_meter(from).await?;
        let (other, b) = self.in_meter(to).await?;
        if meter != other {
            return Err(self
                .refuse(
                    &format!("{from} -> {to}"),
                    "a rename cannot move files between meters",
                )
                .await);
        }
        let profile = self.profile(&meter);
        if protected(&profile, &a) || protected(&profile, &b) {
            return Err(self
                .refuse(
                    &format!("{from} -> {to}"),
                    "a protected directory cannot be renamed",
                )
                .await);
        }
        self.allow(&meter, FileOp::Rename, &a).await?;
        let store = self.reach(&meter, FileOp::Rename, &b).await?;
        self.checked(
            &format!("{from} -> {to}"),
            store.rename(&a, &b, replace).await,
        )
        .await?;
        let ev = self
            .event("sftp.rename", Outcome::Success, &meter, &a)
            .reason(format!("renamed {} to {}", a.text(), b.text()))
            .detail("to", b.text());
        self.log(ev).await;
        Ok(ok(id))
    }

    async fn extended(&mut self, e: russh_sftp::protocol::Extended) -> Reply {
        match e.request.as_str() {
            "posix-rename@openssh.com" => {
                let mut data = Bytes::from(e.data);
                let (Some(from), Some(to)) = (ssh_string(&mut data), ssh_string(&mut data)) else {
                    return Err((
                        StatusCode::BadMessage,
                        "posix-rename takes two paths".into(),
                    ));
                };
                self.rename(e.id, &from, &to, true).await
            }
            "hardlink@openssh.com" => Err(self.refuse("", "hard links cannot be created").await),
            "statvfs@openssh.com" => {
                let mut data = Bytes::from(e.data);
                let Some(path) = ssh_string(&mut data) else {
                    return Err((StatusCode::BadMessage, "statvfs takes a path".into()));
                };
                let (meter, rel) = match self.target(&path).await? {
                    Target::Meter { meter, rel } => (meter, rel),
                    Target::Root => {
                        return Err((StatusCode::OpUnsupported, "`/` is not a file system".into()));
                    }
                };
                let store = self.reach(&meter, FileOp::Stat, &rel).await?;
                match self.checked(&path, store.statvfs(&rel).await).await? {
                    Some(figures) => {
                        Ok(Packet::ExtendedReply(russh_sftp::protocol::ExtendedReply {
                            id: e.id,
                            data: figures.iter().flat_map(|v| v.to_be_bytes()).collect(),
                        }))
                    }
                    None => Err((
                        StatusCode::OpUnsupported,
                        "the meter's own server does not say".into(),
                    )),
                }
            }
            other => Err((
                StatusCode::OpUnsupported,
                format!(
                    "extension `{}` is not offered",
                    other.chars().take(64).collect::<String>()
                ),
            )),
        }
    }
}

/// A length-prefixed SSH string.
fn ssh_string(b: &mut Bytes) -> Option<String> {
    if b.len() < 4 {
        return None;
    }
    let n = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    if b.len() < 4 + n {
        return None;
    }
    let s = String::from_utf8(b[4..4 + n].to_vec()).ok()?;
    *b = b.slice(4 + n..);
    Some(s)
}
