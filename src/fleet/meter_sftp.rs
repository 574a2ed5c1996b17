//! The simulated meter's own SFTP server (on its SSH console), serving its
//! file tree as `/`: what the gateway reaches as a meter-side account when a
//! meter's store is upstream. It has no notion of gateway permissions; its
//! accounts are the meter's (any logged-in account may read and write, as a
//! simple meter would), and it is sandboxed like the gateway's local stores.

use std::collections::HashMap;
use std::sync::Arc;

use russh_sftp::protocol::{
    Attrs, Data, File as SftpFile, FileAttributes, Handle, Name, OpenFlags, Status, StatusCode,
    Version,
};

use nix::fcntl::OFlag;

use super::files::{FileError, LocalStore, RelPath};

enum Open {
    Dir(Option<Vec<SftpFile>>),
    File(Arc<std::fs::File>),
}

pub struct MeterSftp {
    store: LocalStore,
    handles: HashMap<String, Open>,
    next: u64,
}

impl MeterSftp {
    pub fn new(store: LocalStore) -> MeterSftp {
        MeterSftp {
            store,
            handles: HashMap::new(),
            next: 0,
        }
    }

    fn handle(&mut self, open: Open) -> String {
        self.next += 1;
        let h = self.next.to_string();
        self.handles.insert(h.clone(), open);
        h
    }
}

/// `/a/b` as a path in the tree (`..` refused).
fn rel(path: &str) -> Result<RelPath, StatusCode> {
    let names: Vec<String> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .map(String::from)
        .collect();
    RelPath::new(names).map_err(|_| StatusCode::PermissionDenied)
}

fn code(e: FileError) -> StatusCode {
    match e {
        FileError::NotFound => StatusCode::NoSuchFile,
        FileError::Escape | FileError::BadPath(_) => StatusCode::PermissionDenied,
        _ => StatusCode::Failure,
    }
}

/// A stat as SFTP attributes (the gateway's local stores answer with these
/// too).
pub fn attributes(st: &nix::sys::stat::FileStat) -> FileAttributes {
    FileAttributes {
        size: Some(st.st_size.max(0) as u64),
        uid: Some(st.st_uid),
        user: None,
        gid: Some(st.st_gid),
        group: None,
        permissions: Some(st.st_mode),
        atime: Some(st.st_atime.max(0) as u32),
        mtime: Some(st.st_mtime.max(0) as u32),
    }
}

/// SFTP's open flags as open(2)'s, as OpenSSH's server maps them (with
/// O_APPEND a write goes at the end whatever its offset).
fn oflags(f: OpenFlags) -> OFlag {
    let mut o = match (f.contains(OpenFlags::READ), f.contains(OpenFlags::WRITE)) {
        (true, true) => OFlag::O_RDWR,
        (false, true) => OFlag::O_WRONLY,
        _ if f.contains(OpenFlags::APPEND) => OFlag::O_WRONLY,
        _ => OFlag::O_RDONLY,
    };
    for (sftp, posix) in [
        (OpenFlags::APPEND, OFlag::O_APPEND),
        (OpenFlags::CREATE, OFlag::O_CREAT),
        (OpenFlags::TRUNCATE, OFlag::O_TRUNC),
        (OpenFlags::EXCLUDE, OFlag::O_EXCL),
    ] {
        if f.contains(sftp) {
            o |= posix;
        }
    }
    o
}

fn ok(id: u32) -> Status {
    Status {
        id,
        status_code: StatusCode::Ok,
        error_message: "Ok".into(),
        language_tag: "en-US".into(),
    }
}

impl russh_sftp::server::Handler for MeterSftp {
    type Error = StatusCode;

    fn unimplemented(&self) -> Self::Error {
        StatusCode::OpUnsupported
    }

    async fn init(
        &mut self,
        _version: u32,
        _extensions: HashMap<String, String>,
    ) -> Result<Version, Self::Error> {
        Ok(Version::new())
    }

    async fn realpath(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        let r = rel(&path)?;
        Ok(Name {
            id,
            files: vec![SftpFile::dummy(format!("/{}", r.text()))],
        })
    }

    async fn stat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        let st = self.store.stat(&rel(&path)?).map_err(code)?;
        Ok(Attrs {
            id,
            attrs: attributes(&st),
        })
    }

    async fn lstat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        self.stat(id, path).await
    }

    async fn opendir(&mut self, id: u32, path: String) -> Result<Handle, Self::Error> {
        let list = self.store.list(&rel(&path)?).map_err(code)?;
        let files = list
            .into_iter()
            .map(|e| SftpFile::new(e.name, attributes(&e.stat)))
            .collect();
        Ok(Handle {
            id,
            handle: self.handle(Open::Dir(Some(files))),
        })
    }

    async fn readdir(&mut self, id: u32, handle: String) -> Result<Name, Self::Error> {
        match self.handles.get_mut(&handle) {
            Some(Open::Dir(files)) => match files.take() {
                Some(files) => Ok(Name { id, files }),
                None => Err(StatusCode::Eof),
            },
            _ => Err(StatusCode::Failure),
        }
    }

    async fn open(
        &mut self,
        id: u32,
        filename: String,
        pflags: OpenFlags,
        _attrs: FileAttributes,
    ) -> Result<Handle, Self::Error> {
        let r = rel(&filename)?;
        let file = self.store.open_with(&r, oflags(pflags)).map_err(code)?;
        Ok(Handle {
            id,
            handle: self.handle(Open::File(Arc::new(file))),
        })
    }

    async fn read(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        len: u32,
    ) -> Result<Data, Self::Error> {
        use std::os::unix::fs::FileExt;
        let Some(Open::File(f)) = self.handles.get(&handle) else {
            return Err(StatusCode::Failure);
        };
        let mut buf = vec![0u8; len.min(256 * 1024) as usize];
        let n = f
            .read_at(&mut buf, offset)
            .map_err(|_| StatusCode::Failure)?;
        if n == 0 {
            return Err(StatusCode::Eof);
        }
        buf.truncate(n);
        Ok(Data { id, data: buf })
    }

    async fn write(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<Status, Self::Error> {
        use std::os::unix::fs::FileExt;
        let Some(Open::File(f)) = self.handles.get(&handle) else {
            return Err(StatusCode::Failure);
        };
        f.write_all_at(&data, offset)
            .map_err(|_| StatusCode::Failure)?;
        Ok(ok(id))
    }

    async fn setstat(
        &mut self,
        id: u32,
        path: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        let r = rel(&path)?;
        if let Some(size) = attrs.size {
            let f = self.store.open_with(&r, OFlag::O_WRONLY).map_err(code)?;
            f.set_len(size).map_err(|_| StatusCode::Failure)?;
        }
        Ok(ok(id))
    }

    async fn fsetstat(
        &mut self,
        id: u32,
        handle: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        let Some(Open::File(f)) = self.handles.get(&handle) else {
            return Err(StatusCode::Failure);
        };
        if let Some(size) = attrs.size {
            f.set_len(size).map_err(|_| StatusCode::Failure)?;
        }
        Ok(ok(id))
    }

    async fn close(&mut self, id: u32, handle: String) -> Result<Status, Self::Error> {
        match self.handles.remove(&handle) {
            Some(_) => Ok(ok(id)),
            None => Err(StatusCode::Failure),
        }
    }

    async fn remove(&mut self, id: u32, filename: String) -> Result<Status, Self::Error> {
        self.store.remove(&rel(&filename)?).map_err(code)?;
        Ok(ok(id))
    }

    async fn mkdir(
        &mut self,
        id: u32,
        path: String,
        _attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        self.store.mkdir(&rel(&path)?).map_err(code)?;
        Ok(ok(id))
    }

    async fn rmdir(&mut self, id: u32, path: String) -> Result<Status, Self::Error> {
        self.store.rmdir(&rel(&path)?).map_err(code)?;
        Ok(ok(id))
    }

    async fn rename(
        &mut self,
        id: u32,
        oldpath: String,
        newpath: String,
    ) -> Result<Status, Self::Error> {
        // SFTP v3: renaming onto an existing name is an error.
        self.store
            .rename(&rel(&oldpath)?, &rel(&newpath)?, false)
            .map_err(code)?;
        Ok(ok(id))
    }
}
