//! Open handles: opening a file to read or to write, the reads and writes
//! that run in flight, size changes, and closing (a written file made
//! durable under its name with its SHA-256, or discarded whole).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use russh_sftp::protocol::{Data, FileAttributes, Handle, OpenFlags, Packet, Status, StatusCode};

use super::*;
use crate::fleet::files::Opening;

impl SftpSession {
    /// A read or a write on an open handle, as a task that can run while
    /// the next requests are read (clients pipeline them: OpenSSH keeps 64
    /// in flight). None when the handle is not open for it; the caller
    /// then answers through [`SftpSession::request`].
    pub fn io(&mut self, packet: &Packet) -> Option<impl Future<Output = Packet> + Send + 'static> {
        enum Job {
            Read(Opened, Arc<AtomicU64>, u32, u64, usize),
            Write(Opened, Arc<Mutex<Option<String>>>, u32, u64, Vec<u8>),
            Refuse(u32, String),
        }
        let job = match packet {
            Packet::Read(r) => match self.handles.get(&r.handle) {
                Some(Open::Read { file, bytes, .. }) => Job::Read(
                    file.clone(),
                    bytes.clone(),
                    r.id,
                    r.offset,
                    r.len.min(MAX_READ) as usize,
                ),
                _ => return None,
            },
            Packet::Write(w) => {
                let (max, quota) = (self.max_upload, self.quota);
                let Some(Open::Write(u)) = self.handles.get_mut(&w.handle) else {
                    return None;
                };
                // With APPEND each write goes at the end as it then is, in
                // the order the writes arrive, whatever offset it carries
                // (OpenSSH's server opens such files O_APPEND).
                let offset = if u.append { u.size } else { w.offset };
                let end = offset.saturating_add(w.data.len() as u64);
                let earlier = u.failed.lock().ok().and_then(|f| f.clone());
                let refused = match earlier {
                    Some(why) => Some(why),
                    None => u.grow(end, max, quota).err().map(|e| e.to_string()),
                };
                match refused {
                    Some(why) => {
                        if let Ok(mut f) = u.failed.lock() {
                            *f = Some(why.clone());
                        }
                        Job::Refuse(w.id, why)
                    }
                    None => Job::Write(
                        u.file.clone(),
                        u.failed.clone(),
                        w.id,
                        offset,
                        w.data.clone(),
                    ),
                }
            }
            _ => return None,
        };
        Some(async move {
            let failure = |id, message: String| {
                Packet::Status(Status {
                    id,
                    status_code: StatusCode::Failure,
                    error_message: message,
                    language_tag: "en-US".into(),
                })
            };
            match job {
                Job::Refuse(id, why) => failure(id, why),
                Job::Read(file, bytes, id, offset, len) => match file.read_at(offset, len).await {
                    Ok(data) if data.is_empty() => Packet::Status(Status {
                        id,
                        status_code: StatusCode::Eof,
                        error_message: "end of file".into(),
                        language_tag: "en-US".into(),
                    }),
                    Ok(data) => {
                        bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                        Packet::Data(Data { id, data })
                    }
                    Err(e) => failure(id, format!("the read failed: {e}")),
                },
                Job::Write(file, failed, id, offset, data) => {
                    match file.write_at(data, offset).await {
                        Ok(()) => ok(id),
                        Err(e) => {
                            // A full disk among them: the upload is discarded.
                            let why = format!("the write failed: {e}");
                            if let Ok(mut f) = failed.lock() {
                                *f = Some(why.clone());
                            }
                            failure(id, why)
                        }
                    }
                }
            }
        })
    }

    pub(super) async fn open(&mut self, id: u32, path: &str, flags: OpenFlags) -> Reply {
        let (meter, rel) = self.in_meter(path).await?;
        let writing = flags.intersects(
            OpenFlags::WRITE | OpenFlags::APPEND | OpenFlags::CREATE | OpenFlags::TRUNCATE,
        );
        if !writing {
            let (store, used) = self.reach_for(&meter, FileOp::Read, &rel).await?;
            let permit = self.file_permit()?;
            let file = self.checked(path, store.open_read(&rel).await).await?;
            let handle = self.handle(
                Some(permit),
                Open::Read {
                    meter: meter.clone(),
                    rel,
                    file,
                    bytes: Arc::new(AtomicU64::new(0)),
                },
            )?;
            self.rely(&handle, used, &meter);
            return Ok(Packet::Handle(Handle { id, handle }));
        }
        // Writing keeps open(2)'s meaning: without TRUNCATE the file's
        // bytes stay (the temporary file starts as their copy), CREATE
        // makes a missing file, EXCLUDE refuses an existing one.
        let (store, permission) = self.reach_for(&meter, FileOp::Write, &rel).await?;
        // A read-write open serves the file's bytes back: it needs the
        // right to read them too (a drop box grants writing alone).
        let reading = if flags.contains(OpenFlags::READ) {
            Some(self.reach_for(&meter, FileOp::Read, &rel).await?.1)
        } else {
            None
        };
        let permit = self.file_permit()?;
        let how = Opening {
            create: flags.contains(OpenFlags::CREATE),
            truncate: flags.contains(OpenFlags::TRUNCATE),
            exclusive: flags.contains(OpenFlags::EXCLUDE),
        };
        let begun = match store
            .begin_upload(&rel, how, self.max_upload, self.quota)
            .await
        {
            Err(e @ (FileError::TooLarge(_) | FileError::OverQuota(_))) => {
                let ev = self
                    .event("sftp.upload", Outcome::Failure, &meter, &rel)
                    .reason(format!("the upload was refused: {e}"));
                self.log(ev).await;
                return Err((StatusCode::Failure, e.to_string()));
            }
            other => self.checked(path, other).await?,
        };
        let handle = self.handle(
            Some(permit),
            Open::Write(Upload {
                meter: meter.clone(),
                rel,
                temp: begun.temp,
                store,
                file: begun.file,
                size: begun.size,
                kept: begun.size,
                usage: begun.usage,
                append: flags.contains(OpenFlags::APPEND),
                readable: flags.contains(OpenFlags::READ),
                exclusive: how.exclusive,
                failed: Arc::new(Mutex::new(None)),
            }),
        )?;
        self.rely(&handle, permission, &meter);
        if let Some(read) = reading {
            self.rely(&handle, read, &meter);
        }
        Ok(Packet::Handle(Handle { id, handle }))
    }

    /// A read of a file open for writing and reading (answered after
    /// every write before it, from the temporary file).
    pub(super) async fn read_upload(
        &mut self,
        id: u32,
        handle: &str,
        offset: u64,
        len: u32,
    ) -> Reply {
        let file = match self.handles.get(handle) {
            Some(Open::Write(u)) if u.readable => u.file.clone(),
            _ => {
                return Err((
                    StatusCode::Failure,
                    "no such file handle open for reading".into(),
                ));
            }
        };
        match file.read_at(offset, len.min(MAX_READ) as usize).await {
            Ok(data) if data.is_empty() => Err((StatusCode::Eof, "end of file".into())),
            Ok(data) => Ok(Packet::Data(Data { id, data })),
            Err(e) => Err((StatusCode::Failure, format!("the read failed: {e}"))),
        }
    }

    /// SETSTAT. A size change is a write: it needs the permission a write
    /// needs, counts against the upload limit and the quota, and is logged.
    pub(super) async fn setstat(&mut self, id: u32, path: &str, attrs: &FileAttributes) -> Reply {
        let (meter, rel) = self.in_meter(path).await?;
        let op = match attrs.size {
            Some(_) => FileOp::Write,
            None => FileOp::SetStat,
        };
        let store = self.reach(&meter, op, &rel).await?;
        if let Some(size) = attrs.size {
            let changed = store
                .set_size(&rel, size, self.max_upload, self.quota)
                .await;
            self.log_resize(&meter, &rel, size, &changed, "the file")
                .await;
            self.checked(path, changed).await?;
        }
        if let Some(mode) = attrs.permissions {
            self.checked(path, store.set_mode(&rel, mode).await).await?;
        }
        Ok(ok(id))
    }

    /// FSETSTAT. On a file open for writing, a size change is made to the
    /// temporary file like a write; a file open only for reading cannot
    /// change size.
    pub(super) async fn fsetstat(
        &mut self,
        id: u32,
        handle: &str,
        attrs: &FileAttributes,
    ) -> Reply {
        let file = match self.handles.get(handle) {
            Some(Open::Write(u)) => u.file.clone(),
            Some(_) if attrs.size.is_some() => {
                return Err((
                    StatusCode::PermissionDenied,
                    "the handle is not open for writing".into(),
                ));
            }
            // Permissions and times of a file open for reading: kept.
            Some(_) => return Ok(ok(id)),
            None => return Err((StatusCode::Failure, "no such handle".into())),
        };
        if let Some(size) = attrs.size {
            self.resize_upload(handle, size).await?;
        }
        if let Some(mode) = attrs.permissions {
            file.set_mode(mode).await.map_err(from_file_error)?;
        }
        Ok(ok(id))
    }

    async fn resize_upload(&mut self, handle: &str, size: u64) -> Result<(), (StatusCode, String)> {
        let (max, quota) = (self.max_upload, self.quota);
        let Some(Open::Write(u)) = self.handles.get_mut(handle) else {
            return Err((StatusCode::Failure, "no such handle".into()));
        };
        if let Some(why) = u.failed.lock().ok().and_then(|f| f.clone()) {
            return Err((StatusCode::Failure, why));
        }
        let was = u.size;
        let grown = u.grow(size, max, quota);
        let (file, usage) = (u.file.clone(), u.usage.clone());
        let (meter, rel) = (u.meter.clone(), u.rel.clone());
        let result = match grown {
            Ok(()) => match file.set_len(size).await {
                Ok(()) => Ok(was),
                Err(e) => {
                    // Not grown after all.
                    if let Some(usage) = &usage {
                        usage.release(size.saturating_sub(was));
                    }
                    Err(e)
                }
            },
            Err(e) => Err(e),
        };
        if let Some(Open::Write(u)) = self.handles.get_mut(handle) {
            u.size = if result.is_ok() { size } else { was };
        }
        if let (Ok(_), Some(usage)) = (&result, &usage) {
            usage.release(was.saturating_sub(size));
        }
        self.log_resize(&meter, &rel, size, &result, "the file being written")
            .await;
        result.map(|_| ()).map_err(from_file_error)
    }

    /// The `sftp.truncate` event of a size change (an escape is logged as
    /// the refusal it is).
    async fn log_resize(
        &self,
        meter: &str,
        rel: &RelPath,
        size: u64,
        result: &Result<u64, FileError>,
        what: &str,
    ) {
        let ev = match result {
            Ok(was) => self
                .event("sftp.truncate", Outcome::Success, meter, rel)
                .reason(format!(
                    "set the size of {what} to {size} bytes (was {was})"
                ))
                .detail("bytes", size)
                .detail("was", *was),
            Err(FileError::Escape) => return,
            Err(e) => self
                .event("sftp.truncate", Outcome::Failure, meter, rel)
                .reason(format!(
                    "the size of {what} was not set to {size} bytes: {e}"
                ))
                .detail("bytes", size),
        };
        self.log(ev).await;
    }

    pub(super) async fn close(&mut self, id: u32, handle: &str) -> Reply {
        for (p, meter) in self.relied.remove(handle).unwrap_or_default() {
            self.ctx
                .sessions
                .release(self.registration, p, Some(&meter));
        }
        self.permits.remove(handle);
        match self.handles.remove(handle) {
            None => Err((StatusCode::Failure, "no such handle".into())),
            Some(Open::Dir { .. }) => Ok(ok(id)),
            Some(Open::Read {
                meter,
                rel,
                bytes,
                file,
            }) => {
                file.close().await;
                let bytes = bytes.load(Ordering::Relaxed);
                let ev = self
                    .event("sftp.read", Outcome::Success, &meter, &rel)
                    .reason(format!("read {bytes} bytes"))
                    .detail("bytes", bytes);
                self.log(ev).await;
                Ok(ok(id))
            }
            Some(Open::Write(u)) => {
                let (meter, rel, kept) = (u.meter.clone(), u.rel.clone(), u.kept);
                let failed = u.failed.lock().ok().and_then(|f| f.clone());
                if let Some(why) = failed {
                    discard(u).await;
                    let ev = self
                        .event("sftp.upload", Outcome::Failure, &meter, &rel)
                        .reason(format!("the upload was discarded: {why}"));
                    self.log(ev).await;
                    return Err((StatusCode::Failure, why));
                }
                match finish_upload(u).await {
                    Ok((sha256, bytes)) => {
                        let from = match kept {
                            0 => String::new(),
                            n => format!(" (it began as the {n} bytes of the file it replaced)"),
                        };
                        let ev = self
                            .event("sftp.upload", Outcome::Success, &meter, &rel)
                            .reason(format!("stored {bytes} bytes, SHA-256 {sha256}{from}"))
                            .detail("bytes", bytes)
                            .detail("sha256", &sha256)
                            .detail("kept", kept);
                        self.log(ev).await;
                        Ok(ok(id))
                    }
                    Err(e) => {
                        let ev = self
                            .event("sftp.upload", Outcome::Failure, &meter, &rel)
                            .reason(format!("the upload was not stored: {}", e.1));
                        self.log(ev).await;
                        Err(e)
                    }
                }
            }
        }
    }
}

pub(super) fn too_many_handles() -> (StatusCode, String) {
    (
        StatusCode::Failure,
        format!("at most {MAX_HANDLES} open handles"),
    )
}

/// Busy, not wrong: the gateway's share of descriptors for SFTP files is
/// in use.
pub(super) fn too_many_files() -> (StatusCode, String) {
    (
        StatusCode::Failure,
        "the gateway has as many SFTP files open as its open-file budget allows: close some, or try again shortly".into(),
    )
}

impl Upload {
    /// Makes room for the file to reach `end` bytes: never beyond `max`,
    /// and growth is counted against the store's quota first.
    fn grow(&mut self, end: u64, max: u64, quota: u64) -> Result<(), FileError> {
        if end <= self.size {
            return Ok(());
        }
        if end > max {
            return Err(FileError::TooLarge(max));
        }
        if let Some(usage) = &self.usage {
            usage.reserve(end - self.size, quota)?;
        }
        self.size = end;
        Ok(())
    }
}

/// Drops an upload: its temporary file removed, its bytes given back.
pub(super) async fn discard(u: Upload) {
    u.file.close().await;
    u.store.discard_upload(&u.temp, u.size).await;
}

/// Makes an upload durable under its final name: synced, its SHA-256 and
/// size read back from the store, renamed over the target. On failure it
/// is discarded, so nothing half-written is left.
async fn finish_upload(u: Upload) -> Result<(String, u64), (StatusCode, String)> {
    let hashed = match &u.store {
        Store::Local(_) => u.file.sync_and_hash().await,
        Store::Upstream(_) => {
            // Read back through a fresh handle: what the meter stored.
            u.file.close().await;
            match u.store.open_read(&u.temp).await {
                Ok(r) => {
                    let h = r.sync_and_hash().await;
                    r.close().await;
                    h
                }
                Err(e) => Err(e),
            }
        }
    };
    let result = match hashed {
        Ok(done) => u
            .store
            .commit_upload(&u.temp, &u.rel, u.exclusive, u.size)
            .await
            .map(|_| done),
        Err(e) => Err(e),
    };
    if let Store::Local(_) = &u.store {
        u.file.close().await;
    }
    match result {
        Ok(done) => Ok(done),
        Err(e) => {
            u.store.discard_upload(&u.temp, u.size).await;
            Err((
                StatusCode::Failure,
                format!("the upload could not be stored: {e}"),
            ))
        }
    }
}
