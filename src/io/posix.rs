//! The plain POSIX backend: pread/pwrite/fdatasync through `std`, directory fsync, `flock`
//! lock files and memmap2 views of sealed files.

use super::{File, FileRef, Io, LockGuard};
use bytes::Bytes;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::Arc;

/// The std/POSIX backend. Stateless; clone freely.
#[derive(Debug, Default, Clone, Copy)]
pub struct PosixIo;

impl PosixIo {
    /// A shared handle to the backend.
    pub fn new_ref() -> super::IoRef {
        Arc::new(PosixIo)
    }
}

#[derive(Debug)]
struct PosixFile {
    file: fs::File,
}

#[derive(Debug)]
struct FlockGuard {
    // Held only so the descriptor (and with it the flock) lives as long as the guard.
    _file: fs::File,
}

impl LockGuard for FlockGuard {}

impl Io for PosixIo {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<FileRef> {
        Ok(Arc::new(PosixFile {
            file: open_rw(path, create)?,
        }))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                if let Some(name) = entry.file_name().to_str() {
                    names.push(name.to_owned());
                }
            }
        }
        Ok(names)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        fs::File::open(dir)?.sync_all()
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        // SAFETY: flock on a descriptor we own; no memory is passed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(io::Error::new(io::ErrorKind::WouldBlock, "locked"));
            }
            return Err(err);
        }
        Ok(Box::new(FlockGuard { _file: file }))
    }

    fn open_read_only(&self, path: &Path) -> io::Result<FileRef> {
        Ok(Arc::new(PosixFile {
            file: fs::File::open(path)?,
        }))
    }

    fn lock_shared(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>> {
        let file = match fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        // SAFETY: flock on a descriptor we own; no memory is passed. flock needs no write
        // access: a read-only descriptor can hold a shared lock.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(io::Error::new(io::ErrorKind::WouldBlock, "locked"));
            }
            return Err(err);
        }
        Ok(Some(Box::new(FlockGuard { _file: file })))
    }

    fn name(&self) -> &'static str {
        "posix"
    }

    fn open_direct(&self, path: &Path) -> io::Result<FileRef> {
        Ok(Arc::new(PosixFile {
            file: open_direct(path)?,
        }))
    }
}

impl File for PosixFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        loop {
            match self.file.read_at(buf, offset) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn set_len(&self, len_bytes: u64) -> io::Result<()> {
        self.file.set_len(len_bytes)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn map(&self) -> io::Result<Bytes> {
        map_file(&self.file)
    }
}

/// A read-only memmap2 view of a whole file, zero-copy (shared by the POSIX and io_uring
/// backends).
pub(crate) fn map_file(file: &fs::File) -> io::Result<Bytes> {
    if file.metadata()?.len() == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: sitelog maps only sealed segments, which are never modified or truncated in
    // place (truncating into a sealed segment writes a new file and renames it over the old
    // one, leaving this mapping's inode intact). External modification of the file while it
    // is mapped is outside the contract, as for any mmap-based reader.
    let map = unsafe { memmap2::Mmap::map(file)? };
    Ok(Bytes::from_owner(map))
}

/// Opens `path` for reading and writing, creating it if asked, never truncating (shared by the
/// POSIX and io_uring backends).
pub(crate) fn open_rw(path: &Path, create: bool) -> io::Result<fs::File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(path)
}

/// Opens an existing file for `O_DIRECT` writes (shared by the POSIX and io_uring backends).
pub(crate) fn open_direct(path: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
}
