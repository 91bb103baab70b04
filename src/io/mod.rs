//! The I/O layer: one trait over every file operation sitelog performs.
//!
//! Storage never touches `std::fs` directly; it goes through [`Io`] and [`File`] so that the
//! same engine runs on
//! - [`PosixIo`]: pread/pwrite/fdatasync, fsync of directories, `flock` lock files and memmap2
//!   for sealed segments (the fallback and reference backend);
//! - [`SimDisk`]: a deterministic in-memory disk with a page-cache model that loses unsynced
//!   writes and directory entries on a simulated crash, tears sectors and injects faults;
//! - [`UringIo`]: the same trait on a dedicated io_uring thread per log.
//!
//! [`Io::open_direct`] opens a second, page-cache-bypassing (`O_DIRECT`) handle for the
//! group commit's aligned writes (`LogOptions::direct_io`).
//!
//! The trait is deliberately synchronous and positional: every call names its file offset and
//! owns no cursor, so a completion-based backend can submit it as one SQE (or a linked
//! write+fdatasync pair through [`File::write_at_sync`]) and block only the calling thread.

mod posix;
mod read_only;
// The simulated disk: a test hook (unit tests, and the `testing` feature for tests/).
#[cfg(any(test, feature = "testing"))]
mod sim;
mod uring;

pub use posix::PosixIo;
pub use read_only::ReadOnlyIo;
#[cfg(any(test, feature = "testing"))]
pub use sim::{SimDisk, SimFaults};
pub use uring::{UringIo, MAX_IOVECS};

use bytes::Bytes;
use std::fmt::Debug;
use std::io;
use std::path::Path;
use std::sync::Arc;

/// A shared handle to an I/O backend.
pub type IoRef = Arc<dyn Io>;
/// A shared handle to an open file.
pub type FileRef = Arc<dyn File>;

/// Called once an asynchronous submission has completed (from the backend's I/O thread, or
/// inline for synchronous backends).
pub type Completion = Box<dyn FnOnce(io::Result<()>) + Send>;

/// A held directory lock; dropping it releases the lock.
pub trait LockGuard: Send + Sync + Debug {}

/// File-system operations on paths.
pub trait Io: Send + Sync + Debug + 'static {
    /// Creates `dir` and its parents. Directories are assumed durable once created (sitelog
    /// creates its directory once, before anything is written into it, and fsyncs its parent).
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Opens `path` for reading and writing; creates it when `create` is set and it is missing.
    /// A created file's directory entry is durable only after [`Io::sync_dir`] of its parent.
    fn open(&self, path: &Path, create: bool) -> io::Result<FileRef>;
    /// Names of the regular files directly inside `dir`, unsorted.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Removes a file. Durable only after [`Io::sync_dir`] of its parent.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Atomically renames `from` to `to`, replacing `to`. Durable after [`Io::sync_dir`].
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creates, renames, removes) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes an exclusive lock on `path` (created if missing). Fails with
    /// `ErrorKind::WouldBlock` when any other holder, in this process or another, has it.
    fn lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>>;
    /// Opens an existing file for reading only (`O_RDONLY` where the backend has real files:
    /// works on read-only files and mounts). Writes through the handle fail. The default opens
    /// it as [`Io::open`] does (a backend without permissions, like the simulated disk).
    fn open_read_only(&self, path: &Path) -> io::Result<FileRef> {
        self.open(path, false)
    }
    /// Checks, without creating or modifying anything, that no exclusive holder has the lock
    /// file `path`: `Ok(None)` when the file does not exist (nobody ever held it, or it was
    /// removed), `Ok(Some(guard))` holding a shared lock (an exclusive [`Io::lock`] fails
    /// while it lives), `ErrorKind::WouldBlock` when an exclusive holder has it.
    /// The default says `Unsupported`.
    #[cfg_attr(not(any(feature = "cli", feature = "testing")), allow(dead_code))]
    fn lock_shared(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>> {
        let _ = path;
        Err(io::ErrorKind::Unsupported.into())
    }
    /// A short name for logs and benchmark tables.
    fn name(&self) -> &'static str;
    /// Opens an existing file a second time for writes that bypass the page cache
    /// (`O_DIRECT`): every write through the handle must start at a multiple of
    /// [`DIRECT_ALIGN_BYTES`] and be one [`AlignedBuf`] of a multiple of it. Only writes go
    /// through it; reads, `set_len` and fdatasync of the file's ordinary handle see its bytes
    /// (the kernel keeps the page cache coherent with direct writes). Fails with
    /// `Unsupported` on a backend without direct I/O, and with the file system's error
    /// (`EINVAL` on tmpfs) where it refuses.
    fn open_direct(&self, path: &Path) -> io::Result<FileRef> {
        let _ = path;
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// Alignment of direct (`O_DIRECT`) writes: buffer address, file offset and length. 4 KiB is
/// the page size and the physical sector of every disk sitelog targets, and a multiple of every
/// logical block size (512 B or 4 KiB), so no per-device query is needed.
pub const DIRECT_ALIGN_BYTES: usize = 4096;

/// A zero-filled buffer aligned to [`DIRECT_ALIGN_BYTES`], for direct writes; wrap it in
/// [`Bytes::from_owner`] to hand it to [`File::submit_write`].
pub struct AlignedBuf {
    /// A private anonymous mapping of `len_bytes` (page-aligned, hence block-aligned).
    ptr: std::ptr::NonNull<u8>,
    len_bytes: usize,
}

// SAFETY: AlignedBuf owns its mapping exclusively (like a Vec<u8>); shared references only
// read it.
unsafe impl Send for AlignedBuf {}
// SAFETY: as above: &AlignedBuf gives read-only access.
unsafe impl Sync for AlignedBuf {}

const _: () = assert!(DIRECT_ALIGN_BYTES == 4096, "mappings are aligned to 4 KiB pages");

impl AlignedBuf {
    /// A zeroed buffer of `len_bytes`, which must be a positive multiple of
    /// [`DIRECT_ALIGN_BYTES`] (checked: a caller bug, not an input).
    pub fn zeroed(len_bytes: usize) -> io::Result<AlignedBuf> {
        if len_bytes == 0 || len_bytes % DIRECT_ALIGN_BYTES != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "direct buffer of {len_bytes} bytes is not a multiple of {DIRECT_ALIGN_BYTES}"
                ),
            ));
        }
        // A fresh anonymous mapping, not the allocator: its pages read as zeros and are
        // zeroed by the kernel only when first touched, so a group touches only the pages it
        // fills. The allocator's `alloc_zeroed` memsets a buffer this aligned, and even
        // calloc memsets one it serves from memory freed earlier: the group commit's 8 MiB
        // direct buffer then cost the first durable append after `Log::open` 2-25 ms
        // (measured: the stall issue 16 names, and again after calloc, in a process that had
        // freed such a buffer before).
        // SAFETY: a new private anonymous mapping; no existing memory is touched.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = std::ptr::NonNull::new(raw.cast::<u8>())
            .ok_or_else(|| io::Error::new(io::ErrorKind::OutOfMemory, "direct buffer"))?;
        assert!(
            (ptr.as_ptr() as usize) % DIRECT_ALIGN_BYTES == 0,
            "mmap returns page-aligned memory"
        );
        Ok(AlignedBuf { ptr, len_bytes })
    }

    /// The buffer, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: ptr is a live mapping of len_bytes owned by self; &mut self is unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len_bytes) }
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: ptr is a live, initialised (zero-filled by the kernel) mapping of
        // len_bytes owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len_bytes) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: mapped by mmap with this length, unmapped once. A failure would leave the
        // mapping in place (a leak, nothing unsafe); munmap of a valid mapping cannot fail.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len_bytes) };
    }
}

impl Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AlignedBuf({} bytes)", self.len_bytes)
    }
}

/// Whether `buf`, written at `offset`, meets the direct-write alignment (the simulated disk
/// checks it; the real ones let the kernel refuse).
#[cfg(any(test, feature = "testing"))]
pub fn is_direct_aligned(buf: &[u8], offset: u64) -> bool {
    let a = DIRECT_ALIGN_BYTES;
    (buf.as_ptr() as usize) % a == 0 && buf.len() % a == 0 && offset % a as u64 == 0
}

/// Positional operations on one open file.
pub trait File: Send + Sync + Debug {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read (0 at end of file).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `offset`. On error an unknown prefix may have been written.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes every completed write to this file, and its length, durable (fdatasync).
    fn sync_data(&self) -> io::Result<()>;
    /// Writes `buf` at `offset` and then makes the file durable, as one ordered operation.
    /// Backends with linked submissions (io_uring) override this.
    fn write_at_sync(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write_at(buf, offset)?;
        self.sync_data()
    }
    /// Submits a write of `bufs` (contiguous, in order, starting at `offset`) followed, when
    /// `sync` is set, by an fdatasync ordered after the write. `done` runs when all of it has
    /// completed. Backends that can overlap several submissions (io_uring) return at once and
    /// run `done` on their I/O thread; the default runs everything inline.
    fn submit_write(&self, bufs: Vec<Bytes>, offset: u64, sync: bool, done: Completion) {
        let result = (|| {
            let mut pos = offset;
            for buf in &bufs {
                self.write_at(buf, pos)?;
                pos += buf.len() as u64;
            }
            if sync {
                self.sync_data()?;
            }
            Ok(())
        })();
        done(result)
    }
    /// Truncates or extends the file (extension reads as zeros).
    fn set_len(&self, len_bytes: u64) -> io::Result<()>;
    /// The file's current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// True when the file is empty. (Unused without `testing`, where the trait is public and
    /// clippy's `len_without_is_empty` asks for it.)
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// A read-only view of the whole file as it is now. [`PosixIo`] maps it with memmap2
    /// (zero-copy); callers use this only for immutable (sealed) files, because the view of a
    /// file that is later truncated in place is undefined.
    fn map(&self) -> io::Result<Bytes>;
}

/// Reads up to `buf.len()` bytes at `offset`, stopping early only at the end of the file;
/// returns how many were read.
pub fn read_up_to(file: &dyn File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0usize;
    while done < buf.len() {
        let n = file.read_at(&mut buf[done..], offset + done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}

/// Reads exactly `buf.len()` bytes at `offset`, failing with `UnexpectedEof` on a short file.
pub fn read_exact_at(file: &dyn File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    if read_up_to(file, buf, offset)? < buf.len() {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short read"));
    }
    Ok(())
}
