//! Open handles: opening a file to read or to upload, the reads and writes
//! that run in flight, and closing (an upload made durable under its final
//! name with its SHA-256, or discarded whole).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use russh_sftp::protocol::{Data, Handle, OpenFlags, Packet, Status, StatusCode};

use super::*;

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
                let end = w.offset.saturating_add(w.data.len() as u64);
                let earlier = u.failed.lock().ok().and_then(|f| f.clone());
                let refused = if let Some(why) = earlier {
                    Some(why)
                } else if end > max {
                    Some(format!(
                        "the upload would exceed the maximum upload size ({max} bytes)"
                    ))
                } else if u.used.saturating_add(end.max(u.size)) > quota {
                    Some(format!(
                        "the meter's store quota ({quota} bytes) would be exceeded"
                    ))
                } else {
                    None
                };
                match refused {
                    Some(why) => {
                        if let Ok(mut f) = u.failed.lock() {
                            *f = Some(why.clone());
                        }
                        Job::Refuse(w.id, why)
                    }
                    None => {
                        u.size = u.size.max(end);
                        Job::Write(
                            u.file.clone(),
                            u.failed.clone(),
                            w.id,
                            w.offset,
                            w.data.clone(),
                        )
                    }
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
            let file = self.checked(path, store.open_read(&rel).await).await?;
            let handle = self.handle(Open::Read {
                meter: meter.clone(),
                rel,
                file,
                bytes: Arc::new(AtomicU64::new(0)),
            })?;
            self.rely(&handle, used, &meter);
            return Ok(Packet::Handle(Handle { id, handle }));
        }
        // An upload writes the whole file, new or replaced.
        let (store, permission) = self.reach_for(&meter, FileOp::Write, &rel).await?;
        if flags.contains(OpenFlags::EXCLUDE) && store.stat(&rel).await.is_ok() {
            return Err((StatusCode::Failure, "it already exists".into()));
        }
        let used = store.usage().await.map_err(from_file_error)?;
        let (file, temp) = self.checked(path, store.create_upload(&rel).await).await?;
        let handle = self.handle(Open::Write(Upload {
            meter: meter.clone(),
            rel,
            temp,
            store,
            file,
            size: 0,
            used,
            failed: Arc::new(Mutex::new(None)),
        }))?;
        self.rely(&handle, permission, &meter);
        Ok(Packet::Handle(Handle { id, handle }))
    }

    pub(super) async fn close(&mut self, id: u32, handle: &str) -> Reply {
        if let Some((p, meter)) = self.relied.remove(handle) {
            self.ctx
                .sessions
                .release(self.registration, p, Some(&meter));
        }
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
                let (meter, rel, size) = (u.meter.clone(), u.rel.clone(), u.size);
                let failed = u.failed.lock().ok().and_then(|f| f.clone());
                if let Some(why) = failed {
                    u.file.close().await;
                    let _ = u.store.remove(&u.temp).await;
                    let ev = self
                        .event("sftp.upload", Outcome::Failure, &meter, &rel)
                        .reason(format!("the upload was discarded: {why}"));
                    self.log(ev).await;
                    return Err((StatusCode::Failure, why));
                }
                match finish_upload(u).await {
                    Ok(sha256) => {
                        let ev = self
                            .event("sftp.upload", Outcome::Success, &meter, &rel)
                            .reason(format!("wrote {size} bytes, SHA-256 {sha256}"))
                            .detail("bytes", size)
                            .detail("sha256", &sha256);
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

/// Makes an upload durable under its final name: synced, its SHA-256 read
/// back from the store, renamed over the target. On failure the temporary
/// file is removed so nothing half-written is left.
async fn finish_upload(u: Upload) -> Result<String, (StatusCode, String)> {
    let hashed = match &u.store {
        Store::Local(_) => u.file.sync_and_hash().await,
        Store::Upstream(_) => {
            // The meter's handle was opened for writing only: read it back
            // through a fresh one.
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
        Ok(sha) => u.store.rename(&u.temp, &u.rel, true).await.map(|_| sha),
        Err(e) => Err(e),
    };
    if let Store::Local(_) = &u.store {
        u.file.close().await;
    }
    match result {
        Ok(sha) => Ok(sha),
        Err(e) => {
            let _ = u.store.remove(&u.temp).await;
            Err((
                StatusCode::Failure,
                format!("the upload could not be stored: {e}"),
            ))
        }
    }
}
