//! A read-only view of a backend, for offline checks (`sitelog verify`) that must never modify
//! what they inspect: files open read-only (`O_RDONLY` where the backend has real files), and
//! every operation that would write (a write, `set_len`, fsync, create, remove, rename, a
//! directory fsync, an exclusive lock) fails with `PermissionDenied` instead of happening.

use super::{File, FileRef, Io, IoRef, LockGuard};
use bytes::Bytes;
use std::io;
use std::path::Path;
use std::sync::Arc;

/// Wraps a backend so that nothing can be written through it.
#[derive(Debug, Clone)]
#[cfg_attr(not(any(feature = "cli", feature = "testing")), allow(dead_code))]
pub struct ReadOnlyIo {
    inner: IoRef,
}

impl ReadOnlyIo {
    /// A shared read-only handle over `inner`.
    #[cfg_attr(not(any(feature = "cli", feature = "testing")), allow(dead_code))]
    pub fn new_ref(inner: IoRef) -> IoRef {
        Arc::new(ReadOnlyIo { inner })
    }
}

#[cfg_attr(not(any(feature = "cli", feature = "testing")), allow(dead_code))]
fn refused(what: &str, path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("read-only check: refusing to {what} {}", path.display()),
    )
}

impl Io for ReadOnlyIo {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        Err(refused("create", dir))
    }

    /// Opens read-only; never creates (a missing file is `NotFound`).
    fn open(&self, path: &Path, _create: bool) -> io::Result<FileRef> {
        self.open_read_only(path)
    }

    fn open_read_only(&self, path: &Path) -> io::Result<FileRef> {
        Ok(Arc::new(ReadOnlyFile {
            inner: self.inner.open_read_only(path)?,
        }))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list(dir)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        Err(refused("remove", path))
    }

    fn rename(&self, from: &Path, _to: &Path) -> io::Result<()> {
        Err(refused("rename", from))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        Err(refused("fsync", dir))
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>> {
        Err(refused("lock (exclusively)", path))
    }

    fn lock_shared(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>> {
        self.inner.lock_shared(path)
    }

    fn name(&self) -> &'static str {
        self.inner.name()
    }
}

/// A file through which nothing can be written.
#[derive(Debug)]
#[cfg_attr(not(any(feature = "cli", feature = "testing")), allow(dead_code))]
struct ReadOnlyFile {
    inner: FileRef,
}

impl File for ReadOnlyFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.inner.read_at(buf, offset)
    }

    fn write_at(&self, _buf: &[u8], _offset: u64) -> io::Result<()> {
        Err(io::Error::new(io::ErrorKind::PermissionDenied, "read-only"))
    }

    fn sync_data(&self) -> io::Result<()> {
        Err(io::Error::new(io::ErrorKind::PermissionDenied, "read-only"))
    }

    fn set_len(&self, _len_bytes: u64) -> io::Result<()> {
        Err(io::Error::new(io::ErrorKind::PermissionDenied, "read-only"))
    }

    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn map(&self) -> io::Result<Bytes> {
        self.inner.map()
    }
}
