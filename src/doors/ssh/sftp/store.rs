//! Where a meter's files are: a local directory (sandboxed, `fleet::files`)
//! or the meter's own SFTP server, reached as the meter-side account DESIGN
//! §2's rule picks for the permission in use, its host key pinned. The SFTP
//! door sees one interface for both.

use std::sync::Arc;

use russh_sftp::client::RawSftpSession;
use russh_sftp::client::error::Error as ClientError;
use russh_sftp::protocol::{File as SftpFile, FileAttributes, FileType, OpenFlags, StatusCode};

use crate::fleet::files::{
    FileError, LocalStore, Opening, RelPath, Usage, is_dir, is_file, upload_target,
};
use crate::fleet::meter_ssh::{ConsoleError, Consoles, Pinned, login};

/// A meter's store.
#[derive(Clone)]
pub enum Store {
    Local(Arc<LocalStore>),
    Upstream(Arc<Upstream>),
}

/// An SFTP session to the meter's own server.
pub struct Upstream {
    _ssh: russh::client::Handle<Pinned>,
    sftp: RawSftpSession,
}

/// What a stat says, in the terms the door needs.
pub struct Stat {
    pub attrs: FileAttributes,
    pub dir: bool,
    pub file: bool,
}

/// A file open for reading or writing.
#[derive(Clone)]
pub enum Handle {
    Local(Arc<std::fs::File>),
    Upstream(Arc<Upstream>, String),
}

/// The most read from or written to a meter's server at once: russh-sftp
/// (and many servers) refuse packets over 256 KiB, and a refused packet
/// ends the session.
const UPSTREAM_IO: usize = 64 * 1024;

fn upstream_error(e: ClientError) -> FileError {
    match e {
        ClientError::Status(s) if s.status_code == StatusCode::NoSuchFile => FileError::NotFound,
        ClientError::Status(s) => FileError::Io(format!("the meter said: {}", s.error_message)),
        other => FileError::Io(format!("the meter's SFTP server: {other}")),
    }
}

fn remote(rel: &RelPath) -> String {
    format!("/{}", rel.text())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, FileError> + Send + 'static,
) -> Result<T, FileError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| FileError::Io(e.to_string()))?
}

impl Upstream {
    /// Logs in to the meter's SFTP server (`address`, pinned `host_key`) as
    /// `account`.
    pub async fn connect(
        consoles: &Consoles,
        server: &crate::config::ConsoleConfig,
        meter: &str,
        account: &str,
    ) -> Result<Upstream, ConsoleError> {
        let ssh = login(consoles, server, meter, account).await?;
        let up = |e: String| ConsoleError::Upstream(format!("{}: {e}", server.address));
        let channel = ssh
            .channel_open_session()
            .await
            .map_err(|e| up(e.to_string()))?;
        channel
            .request_subsystem(true, "sftp")
            .await
            .map_err(|e| up(e.to_string()))?;
        let sftp = RawSftpSession::new(channel.into_stream());
        sftp.set_timeout(30);
        sftp.init().await.map_err(|e| up(e.to_string()))?;
        Ok(Upstream { _ssh: ssh, sftp })
    }
}

impl Upstream {
    /// `from` renamed over `to` on the meter's server, never losing both:
    /// posix-rename@openssh.com when the server has it (atomic); otherwise
    /// the old file is moved aside first and put back if the rename fails
    /// (SFTP v3's rename refuses an existing target).
    async fn replace(&self, from: &RelPath, to: &RelPath) -> Result<(), FileError> {
        let mut both = Vec::new();
        for path in [remote(from), remote(to)] {
            both.extend_from_slice(&(path.len() as u32).to_be_bytes());
            both.extend_from_slice(path.as_bytes());
        }
        if let Ok(russh_sftp::protocol::Packet::Status(s)) =
            self.sftp.extended("posix-rename@openssh.com", both).await
            && s.status_code == StatusCode::Ok
        {
            return Ok(());
        }
        let aside = crate::fleet::files::upload_name(to)?;
        let moved = self.sftp.rename(remote(to), remote(&aside)).await.is_ok();
        match self.sftp.rename(remote(from), remote(to)).await {
            Ok(_) => {
                if moved {
                    let _ = self.sftp.remove(remote(&aside)).await;
                }
                Ok(())
            }
            Err(e) => {
                if moved {
                    let _ = self.sftp.rename(remote(&aside), remote(to)).await;
                }
                Err(upstream_error(e))
            }
        }
    }
}

impl Store {
    pub async fn stat(&self, rel: &RelPath) -> Result<Stat, FileError> {
        match self {
            Store::Local(s) => {
                let (s, rel) = (s.clone(), rel.clone());
                let st = blocking(move || s.stat(&rel)).await?;
                Ok(Stat {
                    attrs: crate::fleet::meter_sftp::attributes(&st),
                    dir: is_dir(&st),
                    file: is_file(&st),
                })
            }
            Store::Upstream(u) => {
                let a = u.sftp.lstat(remote(rel)).await.map_err(upstream_error)?;
                // The type bits compared whole: russh-sftp's is_regular()
                // also says yes for a symlink, is_dir() for a socket.
                let kind = a.attrs.file_type();
                Ok(Stat {
                    dir: kind.is_dir(),
                    file: kind.is_file(),
                    attrs: a.attrs,
                })
            }
        }
    }

    pub async fn list(&self, rel: &RelPath) -> Result<Vec<SftpFile>, FileError> {
        match self {
            Store::Local(s) => {
                let (s, rel) = (s.clone(), rel.clone());
                let list = blocking(move || s.list(&rel)).await?;
                Ok(list
                    .into_iter()
                    .map(|e| SftpFile::new(e.name, crate::fleet::meter_sftp::attributes(&e.stat)))
                    .collect())
            }
            Store::Upstream(u) => {
                let h = u.sftp.opendir(remote(rel)).await.map_err(upstream_error)?;
                let mut out = Vec::new();
                loop {
                    match u.sftp.readdir(h.handle.as_str()).await {
                        Ok(name) => out.extend(name.files.into_iter().filter(|f| {
                            f.filename != "."
                                && f.filename != ".."
                                && !f.filename.starts_with(crate::fleet::files::UPLOAD_PREFIX)
                        })),
                        Err(ClientError::Status(s)) if s.status_code == StatusCode::Eof => break,
                        Err(e) => return Err(upstream_error(e)),
                    }
                    if out.len() > 100_000 {
                        break;
                    }
                }
                let _ = u.sftp.close(h.handle).await;
                Ok(out)
            }
        }
    }

    pub async fn open_read(&self, rel: &RelPath) -> Result<Handle, FileError> {
        match self {
            Store::Local(s) => {
                let (s, rel) = (s.clone(), rel.clone());
                let f = blocking(move || s.open_read(&rel)).await?;
                Ok(Handle::Local(Arc::new(f)))
            }
            Store::Upstream(u) => {
                // Path rules judge the name asked for: a symlink on the
                // meter would let them judge one thing and serve another.
                let a = u.sftp.lstat(remote(rel)).await.map_err(upstream_error)?;
                if a.attrs.file_type() == FileType::Symlink {
                    return Err(FileError::Escape);
                }
                let h = u
                    .sftp
                    .open(remote(rel), OpenFlags::READ, FileAttributes::empty())
                    .await
                    .map_err(upstream_error)?;
                Ok(Handle::Upstream(u.clone(), h.handle))
            }
        }
    }

    /// Begins an upload to `rel` (see [`Begun`]). On a meter's own server
    /// the temporary file is filled by copying through that server (a meter
    /// keeps its own disk: no quota there).
    pub async fn begin_upload(
        &self,
        rel: &RelPath,
        how: Opening,
        max: u64,
        quota: u64,
    ) -> Result<Begun, FileError> {
        match self {
            Store::Local(s) => {
                let (s, rel) = (s.clone(), rel.clone());
                let b = blocking(move || s.begin_upload(&rel, how, max, quota)).await?;
                Ok(Begun {
                    file: Handle::Local(Arc::new(b.file)),
                    temp: b.temp,
                    size: b.size,
                    usage: Some(b.usage),
                })
            }
            Store::Upstream(u) => {
                let existing = match u.sftp.lstat(remote(rel)).await {
                    Ok(a) => Some(a.attrs),
                    Err(e) => match upstream_error(e) {
                        FileError::NotFound => None,
                        other => return Err(other),
                    },
                };
                let kept = match (upload_target_attrs(existing.as_ref(), how)?, how.truncate) {
                    (Some(size), false) if size > max => return Err(FileError::TooLarge(max)),
                    (Some(size), false) => Some(size),
                    _ => None,
                };
                let temp = crate::fleet::files::upload_name(rel)?;
                let h = u
                    .sftp
                    .open(
                        remote(&temp),
                        OpenFlags::READ | OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::EXCLUDE,
                        FileAttributes::empty(),
                    )
                    .await
                    .map_err(upstream_error)?;
                let file = Handle::Upstream(u.clone(), h.handle);
                let size = match kept {
                    Some(_) => match copy_upstream(u, rel, &file, max).await {
                        Ok(n) => n,
                        Err(e) => {
                            file.close().await;
                            let _ = u.sftp.remove(remote(&temp)).await;
                            return Err(e);
                        }
                    },
                    None => 0,
                };
                Ok(Begun {
                    file,
                    temp,
                    size,
                    usage: None,
                })
            }
        }
    }

    /// Renames a complete upload over `rel` (an exclusive one never
    /// replaces a file), its bytes counted as `LocalStore::commit_upload`
    /// says.
    pub async fn commit_upload(
        &self,
        temp: &RelPath,
        rel: &RelPath,
        exclusive: bool,
        reserved: u64,
    ) -> Result<(), FileError> {
        match self {
            Store::Local(s) => {
                let (s, temp, rel) = (s.clone(), temp.clone(), rel.clone());
                blocking(move || s.commit_upload(&temp, &rel, exclusive, reserved))
                    .await
                    .map(|_| ())
            }
            Store::Upstream(_) => self.rename(temp, rel, !exclusive).await,
        }
    }

    /// Removes an upload's temporary file and gives back what it held.
    pub async fn discard_upload(&self, temp: &RelPath, reserved: u64) {
        match self {
            Store::Local(s) => {
                let (s, temp) = (s.clone(), temp.clone());
                let _ = blocking(move || {
                    s.discard_upload(&temp, reserved);
                    Ok(())
                })
                .await;
            }
            Store::Upstream(_) => {
                let _ = self.remove(temp).await;
            }
        }
    }

    pub async fn mkdir(&self, rel: &RelPath) -> Result<(), FileError> {
        match self {
            Store::Local(s) => {
                let (s, rel) = (s.clone(), rel.clone());
                blocking(move || s.mkdir(&rel)).await
            }
            Store::Upstream(u) => u
                .sftp
                .mkdir(remote(rel), FileAttributes::empty())
                .await
                .map(|_| ())
                .map_err(upstream_error),
        }
    }

    pub async fn rmdir(&self, rel: &RelPath) -> Result<(), FileError> {
        match self {
            Store::Local(s) => {
                let (s, rel) = (s.clone(), rel.clone());
                blocking(move || s.rmdir(&rel)).await
            }
            Store::Upstream(u) => u
                .sftp
                .rmdir(remote(rel))
                .await
                .map(|_| ())
                .map_err(upstream_error),
        }
    }

    pub async fn remove(&self, rel: &RelPath) -> Result<(), FileError> {
        match self {
            Store::Local(s) => {
                let (s, rel) = (s.clone(), rel.clone());
                blocking(move || s.remove(&rel)).await
            }
            Store::Upstream(u) => u
                .sftp
                .remove(remote(rel))
                .await
                .map(|_| ())
                .map_err(upstream_error),
        }
    }

    /// Renames within the store; `replace` overwrites an existing target
    /// (on a meter's server: see [`Upstream::replace`]).
    pub async fn rename(
        &self,
        from: &RelPath,
        to: &RelPath,
        replace: bool,
    ) -> Result<(), FileError> {
        match self {
            Store::Local(s) => {
                let (s, from, to) = (s.clone(), from.clone(), to.clone());
                blocking(move || s.rename(&from, &to, replace)).await
            }
            Store::Upstream(u) if replace => u.replace(from, to).await,
            Store::Upstream(u) => u
                .sftp
                .rename(remote(from), remote(to))
                .await
                .map(|_| ())
                .map_err(upstream_error),
        }
    }

    /// statvfs@openssh.com for `rel` (local stores only).
    pub async fn statvfs(&self, rel: &RelPath) -> Result<Option<[u64; 11]>, FileError> {
        match self {
            Store::Local(s) => {
                let (s, rel) = (s.clone(), rel.clone());
                blocking(move || s.statvfs(&rel)).await.map(Some)
            }
            Store::Upstream(_) => Ok(None),
        }
    }

    /// Sets the size of the file `rel` in place (setstat's size): growth
    /// counts against `max` and, locally, `quota`. Returns the size it had.
    pub async fn set_size(
        &self,
        rel: &RelPath,
        size: u64,
        max: u64,
        quota: u64,
    ) -> Result<u64, FileError> {
        match self {
            Store::Local(s) => {
                let (s, rel) = (s.clone(), rel.clone());
                blocking(move || s.set_size(&rel, size, max, quota)).await
            }
            Store::Upstream(u) => {
                let a = u.sftp.lstat(remote(rel)).await.map_err(upstream_error)?;
                let was = upload_target_attrs(Some(&a.attrs), Opening::default())?.unwrap_or(0);
                if size > was && size > max {
                    return Err(FileError::TooLarge(max));
                }
                let mut a = FileAttributes::empty();
                a.size = Some(size);
                u.sftp
                    .setstat(remote(rel), a)
                    .await
                    .map_err(upstream_error)?;
                Ok(was)
            }
        }
    }

    /// Sets the permission bits of `rel` (setstat's permissions; no set-id
    /// or sticky bits from a client).
    pub async fn set_mode(&self, rel: &RelPath, mode: u32) -> Result<(), FileError> {
        match self {
            Store::Local(s) => {
                let (s, rel) = (s.clone(), rel.clone());
                blocking(move || {
                    if is_file(&s.stat(&rel)?) {
                        local_mode(&s.open_read(&rel)?, mode)?;
                    }
                    Ok(())
                })
                .await
            }
            Store::Upstream(u) => {
                let mut a = FileAttributes::empty();
                a.permissions = Some(mode & 0o777);
                u.sftp
                    .setstat(remote(rel), a)
                    .await
                    .map(|_| ())
                    .map_err(upstream_error)
            }
        }
    }
}

/// An upload begun in a store: its temporary file (open to read and
/// write), the bytes it starts with, and the local store's usage, which
/// counts it as it grows.
pub struct Begun {
    pub file: Handle,
    pub temp: RelPath,
    pub size: u64,
    pub usage: Option<Arc<Usage>>,
}

/// [`upload_target`] for what a meter's server says.
fn upload_target_attrs(a: Option<&FileAttributes>, how: Opening) -> Result<Option<u64>, FileError> {
    let Some(a) = a else {
        return upload_target(None, how);
    };
    // (file_type compares the type bits whole, see `Store::stat`.)
    match a.file_type() {
        _ if how.exclusive => Err(FileError::Exists),
        FileType::Dir => Err(FileError::IsADirectory),
        FileType::Symlink => Err(FileError::Escape),
        FileType::Other => Err(FileError::NotAFile),
        FileType::File => Ok(Some(a.size.unwrap_or(0))),
    }
}

/// Copies `rel` on a meter's server into the upload `to`, through the
/// gateway (SFTP v3 has no server-side copy); at most `max` bytes.
async fn copy_upstream(
    u: &Arc<Upstream>,
    rel: &RelPath,
    to: &Handle,
    max: u64,
) -> Result<u64, FileError> {
    let from = Store::Upstream(u.clone()).open_read(rel).await?;
    let mut offset = 0u64;
    let copied = loop {
        let chunk = match from.read_at(offset, 64 * 1024).await {
            Ok(c) => c,
            Err(e) => break Err(e),
        };
        if chunk.is_empty() {
            break Ok(offset);
        }
        let n = chunk.len() as u64;
        if offset + n > max {
            break Err(FileError::TooLarge(max));
        }
        if let Err(e) = to.write_at(chunk, offset).await {
            break Err(e);
        }
        offset += n;
    };
    from.close().await;
    copied
}

/// Permission bits of an open local file.
fn local_mode(f: &std::fs::File, mode: u32) -> Result<(), FileError> {
    use std::os::unix::fs::PermissionsExt;
    Ok(f.set_permissions(std::fs::Permissions::from_mode(mode & 0o777))?)
}

impl Handle {
    pub async fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>, FileError> {
        match self {
            Handle::Local(f) => {
                let f = f.clone();
                blocking(move || {
                    use std::os::unix::fs::FileExt;
                    let mut buf = vec![0u8; len];
                    let n = f.read_at(&mut buf, offset)?;
                    buf.truncate(n);
                    Ok(buf)
                })
                .await
            }
            Handle::Upstream(u, h) => match u
                .sftp
                .read(h.as_str(), offset, len.min(UPSTREAM_IO) as u32)
                .await
            {
                Ok(d) => Ok(d.data),
                Err(ClientError::Status(s)) if s.status_code == StatusCode::Eof => Ok(Vec::new()),
                Err(e) => Err(upstream_error(e)),
            },
        }
    }

    pub async fn write_at(&self, data: Vec<u8>, offset: u64) -> Result<(), FileError> {
        match self {
            Handle::Local(f) => {
                let f = f.clone();
                blocking(move || {
                    use std::os::unix::fs::FileExt;
                    Ok(f.write_all_at(&data, offset)?)
                })
                .await
            }
            Handle::Upstream(u, h) => {
                let mut at = offset;
                for piece in data.chunks(UPSTREAM_IO) {
                    u.sftp
                        .write(h.as_str(), at, piece.to_vec())
                        .await
                        .map_err(upstream_error)?;
                    at += piece.len() as u64;
                }
                Ok(())
            }
        }
    }

    /// Attributes of the open file (fstat).
    pub async fn attrs(&self) -> Result<FileAttributes, FileError> {
        match self {
            Handle::Local(f) => Ok(crate::fleet::meter_sftp::attributes(
                &nix::sys::stat::fstat(&**f)?,
            )),
            Handle::Upstream(u, h) => u
                .sftp
                .fstat(h.as_str())
                .await
                .map(|a| a.attrs)
                .map_err(upstream_error),
        }
    }

    /// Sets the size of the open file (an upload's temporary file).
    pub async fn set_len(&self, size: u64) -> Result<(), FileError> {
        match self {
            Handle::Local(f) => {
                let f = f.clone();
                blocking(move || Ok(f.set_len(size)?)).await
            }
            Handle::Upstream(u, h) => {
                let mut a = FileAttributes::empty();
                a.size = Some(size);
                u.sftp
                    .fsetstat(h.as_str(), a)
                    .await
                    .map(|_| ())
                    .map_err(upstream_error)
            }
        }
    }

    /// Sets the permission bits of the open file (an upload's temporary
    /// file, carried to its final name; a meter's server keeps its own).
    pub async fn set_mode(&self, mode: u32) -> Result<(), FileError> {
        match self {
            Handle::Local(f) => local_mode(f, mode),
            Handle::Upstream(..) => Ok(()),
        }
    }

    /// Releases the handle (an upstream one is closed on the meter).
    pub async fn close(&self) {
        if let Handle::Upstream(u, h) = self {
            let _ = u.sftp.close(h.as_str()).await;
        }
    }

    /// Makes an upload durable (fsync locally), then returns the SHA-256 of
    /// what the store holds, read back from it, and its size.
    pub async fn sync_and_hash(&self) -> Result<(String, u64), FileError> {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        if let Handle::Local(f) = self {
            let f = f.clone();
            blocking(move || Ok(f.sync_all()?)).await?;
        }
        let mut offset = 0u64;
        loop {
            let chunk = self.read_at(offset, 256 * 1024).await?;
            if chunk.is_empty() {
                break;
            }
            offset += chunk.len() as u64;
            ctx.update(&chunk);
        }
        Ok((hex::encode(ctx.finish()), offset))
    }
}
