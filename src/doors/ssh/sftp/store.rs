//! Where a meter's files are: a local directory (sandboxed, `fleet::files`)
//! or the meter's own SFTP server, reached as the meter-side account DESIGN
//! §2's rule picks for the permission in use, its host key pinned. The SFTP
//! door sees one interface for both.

use std::sync::Arc;

use russh_sftp::client::RawSftpSession;
use russh_sftp::client::error::Error as ClientError;
use russh_sftp::protocol::{File as SftpFile, FileAttributes, OpenFlags, StatusCode};

use crate::fleet::files::{FileError, LocalStore, RelPath, is_dir, is_file};
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
                Ok(Stat {
                    dir: a.attrs.is_dir(),
                    file: a.attrs.is_regular(),
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
                        Ok(name) => out.extend(
                            name.files
                                .into_iter()
                                .filter(|f| f.filename != "." && f.filename != ".."),
                        ),
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
                let h = u
                    .sftp
                    .open(remote(rel), OpenFlags::READ, FileAttributes::empty())
                    .await
                    .map_err(upstream_error)?;
                Ok(Handle::Upstream(u.clone(), h.handle))
            }
        }
    }

    /// The temporary file an upload to `rel` is written to.
    pub async fn create_upload(&self, rel: &RelPath) -> Result<(Handle, RelPath), FileError> {
        match self {
            Store::Local(s) => {
                let (s, rel) = (s.clone(), rel.clone());
                let (f, temp) = blocking(move || s.create_upload(&rel)).await?;
                Ok((Handle::Local(Arc::new(f)), temp))
            }
            Store::Upstream(u) => {
                let temp = crate::fleet::files::upload_name(rel)?;
                let h = u
                    .sftp
                    .open(
                        remote(&temp),
                        OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::EXCLUDE,
                        FileAttributes::empty(),
                    )
                    .await
                    .map_err(upstream_error)?;
                Ok((Handle::Upstream(u.clone(), h.handle), temp))
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
    /// (on a meter's server: removes it first, as SFTP v3 has no atomic
    /// replace without an extension).
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
            Store::Upstream(u) => {
                if replace {
                    let _ = u.sftp.remove(remote(to)).await;
                }
                u.sftp
                    .rename(remote(from), remote(to))
                    .await
                    .map(|_| ())
                    .map_err(upstream_error)
            }
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

    /// Bytes the store holds (the quota applies to local stores; a meter
    /// keeps its own disk).
    pub async fn usage(&self) -> Result<u64, FileError> {
        match self {
            Store::Local(s) => {
                let s = s.clone();
                blocking(move || s.usage()).await
            }
            Store::Upstream(_) => Ok(0),
        }
    }

    /// Applies size and permissions to `rel` (setstat).
    pub async fn set_attrs(&self, rel: &RelPath, attrs: &FileAttributes) -> Result<(), FileError> {
        match self {
            Store::Local(s) => {
                let (s, rel, attrs) = (s.clone(), rel.clone(), attrs.clone());
                blocking(move || {
                    if is_file(&s.stat(&rel)?) {
                        let f = s.open_write(&rel)?;
                        apply_local(&f, &attrs)?;
                    }
                    Ok(())
                })
                .await
            }
            Store::Upstream(u) => {
                let mut a = FileAttributes::empty();
                a.size = attrs.size;
                a.permissions = attrs.permissions.map(|m| m & 0o777);
                u.sftp
                    .setstat(remote(rel), a)
                    .await
                    .map(|_| ())
                    .map_err(upstream_error)
            }
        }
    }
}

/// Size and permission bits (no set-id or sticky bits from a client).
pub fn apply_local(f: &std::fs::File, a: &FileAttributes) -> Result<(), FileError> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(size) = a.size {
        f.set_len(size)?;
    }
    if let Some(mode) = a.permissions {
        f.set_permissions(std::fs::Permissions::from_mode(mode & 0o777))?;
    }
    Ok(())
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

    pub async fn set_attrs(&self, attrs: &FileAttributes) -> Result<(), FileError> {
        match self {
            Handle::Local(f) => apply_local(f, attrs),
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
    /// what the store holds, read back from it.
    pub async fn sync_and_hash(&self) -> Result<String, FileError> {
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
        Ok(hex::encode(ctx.finish()))
    }
}
