//! A deterministic simulated disk with a page-cache model, for crash and fault tests.
//!
//! Fault model (after FoundationDB's `AsyncFileNonDurable` and TigerBeetle's test storage):
//! - Every file has a *durable* image and a list of writes and length changes made since its
//!   last `sync_data`; reads see the current (cached) state.
//! - Every directory has a durable and a current set of entries; creates, renames and removes
//!   change only the current set until `sync_dir`.
//! - [`SimDisk::crash`] models power loss: each directory falls back to its durable entries
//!   (unreferenced files vanish), and each file's unsynced operations are replayed onto its
//!   durable image one by one, each either lost, kept whole, or torn at 512-byte sectors (each
//!   sector of the write kept or lost independently). Locks are released and every handle
//!   opened before the crash fails from then on.
//! - On demand ([`SimFaults`]): ENOSPC beyond a capacity (the write stores the prefix that
//!   fits, then fails), EIO on the next writes or fsyncs (a failed fsync also drops the file's
//!   unsynced data, as Linux may), a misdirected write (lands on another sector, the target
//!   keeps its old bytes), and media damage on the durable image ([`SimDisk::poke`]).
//!
//! All randomness comes from the seed, and all maps are ordered, so a seed replays exactly.
//! Directories themselves are always durable.

use super::{File, FileRef, Io, LockGuard};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// Sector size used for tearing writes and for misdirection.
pub const SECTOR_SIZE_BYTES: u64 = 512;

/// Faults to inject; set with [`SimDisk::set_faults`]. Counters count down as they fire.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimFaults {
    /// Total bytes all files may hold; writes beyond fail with ENOSPC.
    pub capacity_bytes: Option<u64>,
    /// The next N `write_at` calls fail with EIO (after writing nothing).
    pub fail_writes: u32,
    /// The next N `sync_data` calls fail with EIO and drop the file's unsynced data.
    pub fail_syncs: u32,
    /// `Some(n)`: after n more successful `sync_data` calls, the next one fails as with
    /// `fail_syncs` (a crash point inside a sequence of syncs); then back to `None`.
    pub fail_sync_after: Option<u32>,
    /// The next N writes land one or more sectors away from where they were aimed.
    pub misdirect_writes: u32,
    /// Every `sync_data` sleeps this long before it takes effect (a slow disk); the disk is
    /// not locked while it sleeps, so writes and other syncs proceed meanwhile.
    pub sync_delay_ms: u64,
    /// `open_direct` fails with EINVAL, as on a file system without `O_DIRECT` (tmpfs).
    pub refuse_direct: bool,
    /// The next N `open` / `open_direct` calls fail with EMFILE, as in a process out of file
    /// descriptors.
    pub fail_opens: u32,
    /// The next N `rename` calls fail with ENOSPC (renaming nothing), as on a full file
    /// system that cannot grow the directory.
    pub fail_renames_nospace: u32,
}

#[derive(Debug, Clone)]
enum Pending {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Default)]
struct Inode {
    current: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<Pending>,
}

#[derive(Debug, Default)]
struct Dir {
    current: BTreeMap<String, u64>,
    durable: BTreeMap<String, u64>,
}

#[derive(Debug)]
struct State {
    rng: fastrand::Rng,
    epoch: u64,
    next_ino: u64,
    inodes: BTreeMap<u64, Inode>,
    dirs: BTreeMap<PathBuf, Dir>,
    locks: BTreeSet<PathBuf>,
    faults: SimFaults,
    syncs: u64,
}

/// The simulated disk. Cloning shares the same disk.
#[derive(Debug, Clone)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct SimFile {
    disk: SimDisk,
    ino: u64,
    epoch: u64,
    /// Opened with `open_direct`: writes must meet the `O_DIRECT` alignment (EINVAL
    /// otherwise), so that a misaligned direct write fails in tests as it would on a disk.
    direct: bool,
}

#[derive(Debug)]
struct SimLock {
    disk: SimDisk,
    path: PathBuf,
    epoch: u64,
}

impl LockGuard for SimLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut st = self.disk.lock_state();
        if st.epoch == self.epoch {
            st.locks.remove(&self.path);
        }
    }
}

fn split(path: &Path) -> io::Result<(PathBuf, String)> {
    let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "bad path"))?;
    Ok((parent, name.to_owned()))
}

fn not_found() -> io::Error {
    io::Error::from(io::ErrorKind::NotFound)
}

fn os_err(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

fn apply_write(data: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    let end = offset as usize + bytes.len();
    if data.len() < end {
        data.resize(end, 0);
    }
    data[offset as usize..end].copy_from_slice(bytes);
}

impl State {
    fn used_bytes(&self) -> u64 {
        self.inodes.values().map(|i| i.current.len() as u64).sum()
    }

    /// Replays one unsynced operation onto `image` as a crash would leave it.
    fn replay_on_crash(rng: &mut fastrand::Rng, image: &mut Vec<u8>, op: &Pending) {
        match op {
            Pending::SetLen(len) => {
                if rng.bool() {
                    image.resize(*len as usize, 0);
                }
            }
            Pending::Write { offset, data } => match rng.u8(0..3) {
                0 => {}
                1 => apply_write(image, *offset, data),
                _ => {
                    // Torn: keep each absolute 512-byte sector of the write independently.
                    let end = offset + data.len() as u64;
                    let mut pos = *offset;
                    while pos < end {
                        let sector_end = ((pos / SECTOR_SIZE_BYTES) + 1) * SECTOR_SIZE_BYTES;
                        let piece_end = sector_end.min(end);
                        if rng.bool() {
                            let from = (pos - offset) as usize;
                            let to = (piece_end - offset) as usize;
                            apply_write(image, pos, &data[from..to]);
                        }
                        pos = piece_end;
                    }
                }
            },
        }
    }
}

impl SimDisk {
    /// A new empty disk whose random choices all derive from `seed`.
    pub fn new(seed: u64) -> Self {
        SimDisk {
            state: Arc::new(Mutex::new(State {
                rng: fastrand::Rng::with_seed(seed),
                epoch: 0,
                next_ino: 1,
                inodes: BTreeMap::new(),
                dirs: BTreeMap::new(),
                locks: BTreeSet::new(),
                faults: SimFaults::default(),
                syncs: 0,
            })),
        }
    }

    /// This disk as a shared [`Io`] backend.
    pub fn io(&self) -> super::IoRef {
        Arc::new(self.clone())
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock can only come from a test assertion; the state is
        // still consistent (every mutation completes before any call that could panic).
        match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Replaces the injected faults.
    pub fn set_faults(&self, faults: SimFaults) {
        self.lock_state().faults = faults;
    }

    /// The faults still armed.
    pub fn faults(&self) -> SimFaults {
        self.lock_state().faults.clone()
    }

    /// Bytes held by all files (what `capacity_bytes` is compared against).
    pub fn used_bytes(&self) -> u64 {
        self.lock_state().used_bytes()
    }

    /// Number of successful `sync_data` calls so far.
    pub fn sync_count(&self) -> u64 {
        self.lock_state().syncs
    }

    /// Simulates power loss; see the module docs for what survives.
    pub fn crash(&self) {
        let mut st = self.lock_state();
        st.epoch += 1;
        st.locks.clear();
        for dir in st.dirs.values_mut() {
            dir.current = dir.durable.clone();
        }
        let live: BTreeSet<u64> = st
            .dirs
            .values()
            .flat_map(|d| d.durable.values().copied())
            .collect();
        st.inodes.retain(|ino, _| live.contains(ino));
        let State { rng, inodes, .. } = &mut *st;
        for inode in inodes.values_mut() {
            let mut image = inode.durable.clone();
            for op in &inode.pending {
                State::replay_on_crash(rng, &mut image, op);
            }
            inode.durable = image.clone();
            inode.current = image;
            inode.pending.clear();
        }
    }

    /// The current contents of the file at `path` (as a reader would see them).
    pub fn peek(&self, path: &Path) -> io::Result<Vec<u8>> {
        let st = self.lock_state();
        let ino = Self::lookup(&st, path)?;
        Ok(st.inodes[&ino].current.clone())
    }

    /// The durable contents of the file at `path`: what a crash now would leave, before the
    /// crash's random choices about unsynced writes.
    pub fn peek_durable(&self, path: &Path) -> io::Result<Vec<u8>> {
        let st = self.lock_state();
        let ino = Self::lookup(&st, path)?;
        Ok(st.inodes[&ino].durable.clone())
    }

    /// Media damage: overwrites bytes at `offset` in both the durable and the cached image
    /// (extending the file if needed), as a bad sector or a bit flip on the platter would.
    pub fn poke(&self, path: &Path, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let mut st = self.lock_state();
        let ino = Self::lookup(&st, path)?;
        let inode = st.inodes.get_mut(&ino).ok_or_else(not_found)?;
        apply_write(&mut inode.durable, offset, bytes);
        apply_write(&mut inode.current, offset, bytes);
        Ok(())
    }

    /// Media damage: truncates the file in both images.
    pub fn chop(&self, path: &Path, len_bytes: u64) -> io::Result<()> {
        let mut st = self.lock_state();
        let ino = Self::lookup(&st, path)?;
        let inode = st.inodes.get_mut(&ino).ok_or_else(not_found)?;
        inode.durable.truncate(len_bytes as usize);
        inode.current.truncate(len_bytes as usize);
        Ok(())
    }

    fn lookup(st: &State, path: &Path) -> io::Result<u64> {
        let (parent, name) = split(path)?;
        st.dirs
            .get(&parent)
            .and_then(|d| d.current.get(&name))
            .copied()
            .ok_or_else(not_found)
    }

    fn with_inode<T>(
        &self,
        ino: u64,
        epoch: u64,
        f: impl FnOnce(&mut State, u64) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut st = self.lock_state();
        if st.epoch != epoch || !st.inodes.contains_key(&ino) {
            // The handle predates a crash (its process is dead) or the inode is gone.
            return Err(io::Error::other("stale simulated file handle"));
        }
        f(&mut st, ino)
    }
}

impl SimDisk {
    /// Opens (or creates) `path`; `direct` checks the `O_DIRECT` alignment of its writes.
    fn open_file(&self, path: &Path, create: bool, direct: bool) -> io::Result<FileRef> {
        let mut st = self.lock_state();
        if st.faults.fail_opens > 0 {
            st.faults.fail_opens -= 1;
            return Err(io::Error::from_raw_os_error(libc::EMFILE));
        }
        let (parent, name) = split(path)?;
        let epoch = st.epoch;
        let existing = st
            .dirs
            .get(&parent)
            .ok_or_else(not_found)?
            .current
            .get(&name)
            .copied();
        let ino = match existing {
            Some(ino) => ino,
            None if create => {
                let ino = st.next_ino;
                st.next_ino += 1;
                st.inodes.insert(ino, Inode::default());
                st.dirs
                    .get_mut(&parent)
                    .ok_or_else(not_found)?
                    .current
                    .insert(name, ino);
                ino
            }
            None => return Err(not_found()),
        };
        Ok(Arc::new(SimFile {
            disk: self.clone(),
            ino,
            epoch,
            direct,
        }))
    }
}

impl Io for SimDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.lock_state();
        let mut acc = PathBuf::new();
        for part in dir.components() {
            acc.push(part);
            st.dirs.entry(acc.clone()).or_default();
        }
        Ok(())
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<FileRef> {
        self.open_file(path, create, false)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = self.lock_state();
        Ok(st
            .dirs
            .get(dir)
            .ok_or_else(not_found)?
            .current
            .keys()
            .cloned()
            .collect())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock_state();
        let (parent, name) = split(path)?;
        let dir = st.dirs.get_mut(&parent).ok_or_else(not_found)?;
        dir.current.remove(&name).ok_or_else(not_found)?;
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.lock_state();
        if st.faults.fail_renames_nospace > 0 {
            st.faults.fail_renames_nospace -= 1;
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        let (from_dir, from_name) = split(from)?;
        let (to_dir, to_name) = split(to)?;
        if !st.dirs.contains_key(&to_dir) {
            return Err(not_found());
        }
        let ino = st
            .dirs
            .get_mut(&from_dir)
            .ok_or_else(not_found)?
            .current
            .remove(&from_name);
        let ino = ino.ok_or_else(not_found)?;
        st.dirs
            .get_mut(&to_dir)
            .ok_or_else(not_found)?
            .current
            .insert(to_name, ino);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.lock_state();
        let d = st.dirs.get_mut(dir).ok_or_else(not_found)?;
        d.durable = d.current.clone();
        Ok(())
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>> {
        let mut st = self.lock_state();
        if !st.locks.insert(path.to_path_buf()) {
            return Err(io::Error::new(io::ErrorKind::WouldBlock, "locked"));
        }
        let epoch = st.epoch;
        Ok(Box::new(SimLock {
            disk: self.clone(),
            path: path.to_path_buf(),
            epoch,
        }))
    }

    fn lock_shared(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>> {
        // The simulated disk has no lock files: only an exclusive holder is checked for.
        if self.lock_state().locks.contains(path) {
            return Err(io::Error::new(io::ErrorKind::WouldBlock, "locked"));
        }
        Ok(None)
    }

    fn name(&self) -> &'static str {
        "sim"
    }

    fn open_direct(&self, path: &Path) -> io::Result<FileRef> {
        if self.lock_state().faults.refuse_direct {
            return Err(os_err(libc::EINVAL));
        }
        self.open_file(path, false, true)
    }
}

impl File for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.disk.with_inode(self.ino, self.epoch, |st, ino| {
            let data = &st.inodes[&ino].current;
            if offset as usize >= data.len() {
                return Ok(0);
            }
            let n = buf.len().min(data.len() - offset as usize);
            buf[..n].copy_from_slice(&data[offset as usize..offset as usize + n]);
            Ok(n)
        })
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if self.direct && !super::is_direct_aligned(buf, offset) {
            return Err(os_err(libc::EINVAL));
        }
        self.disk.with_inode(self.ino, self.epoch, |st, ino| {
            if st.faults.fail_writes > 0 {
                st.faults.fail_writes -= 1;
                return Err(os_err(libc::EIO));
            }
            let mut target = offset;
            if st.faults.misdirect_writes > 0 {
                st.faults.misdirect_writes -= 1;
                let shift = st.rng.u64(1..=8) * SECTOR_SIZE_BYTES;
                target = if offset >= shift && st.rng.bool() {
                    offset - shift
                } else {
                    offset + shift
                };
            }
            let mut data: &[u8] = buf;
            let mut full = false;
            if let Some(cap) = st.faults.capacity_bytes {
                let cur_len = st.inodes[&ino].current.len() as u64;
                let growth = (target + data.len() as u64).saturating_sub(cur_len);
                let free = cap.saturating_sub(st.used_bytes());
                if growth > free {
                    let fits = (cur_len + free).saturating_sub(target) as usize;
                    data = &data[..fits.min(data.len())];
                    full = true;
                }
            }
            let inode = st.inodes.get_mut(&ino).ok_or_else(not_found)?;
            if !data.is_empty() {
                apply_write(&mut inode.current, target, data);
                inode.pending.push(Pending::Write {
                    offset: target,
                    data: data.to_vec(),
                });
            }
            if full {
                return Err(os_err(libc::ENOSPC));
            }
            Ok(())
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        let delay_ms = self.disk.lock_state().faults.sync_delay_ms;
        if delay_ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        }
        self.disk.with_inode(self.ino, self.epoch, |st, ino| {
            let fail = match st.faults.fail_sync_after {
                Some(0) => {
                    st.faults.fail_sync_after = None;
                    st.faults.fail_syncs += 1;
                    true
                }
                Some(n) => {
                    st.faults.fail_sync_after = Some(n - 1);
                    st.faults.fail_syncs > 0
                }
                None => st.faults.fail_syncs > 0,
            };
            if fail {
                st.faults.fail_syncs -= 1;
            } else {
                st.syncs += 1;
            }
            let inode = st.inodes.get_mut(&ino).ok_or_else(not_found)?;
            if fail {
                // fsyncgate: the kernel may mark the dirty pages clean and drop them.
                inode.current = inode.durable.clone();
                inode.pending.clear();
                return Err(os_err(libc::EIO));
            }
            inode.durable = inode.current.clone();
            inode.pending.clear();
            Ok(())
        })
    }

    fn set_len(&self, len_bytes: u64) -> io::Result<()> {
        self.disk.with_inode(self.ino, self.epoch, |st, ino| {
            let inode = st.inodes.get_mut(&ino).ok_or_else(not_found)?;
            inode.current.resize(len_bytes as usize, 0);
            inode.pending.push(Pending::SetLen(len_bytes));
            Ok(())
        })
    }

    fn len(&self) -> io::Result<u64> {
        self.disk.with_inode(self.ino, self.epoch, |st, ino| {
            Ok(st.inodes[&ino].current.len() as u64)
        })
    }

    fn map(&self) -> io::Result<Bytes> {
        self.disk.with_inode(self.ino, self.epoch, |st, ino| {
            Ok(Bytes::from(st.inodes[&ino].current.clone()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_file(disk: &SimDisk, path: &Path, data: &[u8]) -> FileRef {
        let f = disk.open(path, true).unwrap();
        f.write_at(data, 0).unwrap();
        f
    }

    #[test]
    fn unsynced_dir_entry_vanishes_on_crash() {
        let disk = SimDisk::new(1);
        disk.create_dir_all(Path::new("/d")).unwrap();
        let f = write_file(&disk, Path::new("/d/a"), b"hello");
        f.sync_data().unwrap();
        disk.crash();
        assert!(disk.open(Path::new("/d/a"), false).is_err());
    }

    #[test]
    fn synced_file_and_dir_survive_crash() {
        let disk = SimDisk::new(2);
        disk.create_dir_all(Path::new("/d")).unwrap();
        let f = write_file(&disk, Path::new("/d/a"), b"hello");
        f.sync_data().unwrap();
        disk.sync_dir(Path::new("/d")).unwrap();
        f.write_at(b"world", 5).unwrap();
        disk.crash();
        let data = disk.peek(Path::new("/d/a")).unwrap();
        assert!(data.starts_with(b"hello"));
        assert!(data.len() == 5 || data.len() == 10);
        assert!(f.write_at(b"x", 0).is_err(), "pre-crash handles are dead");
    }

    #[test]
    fn crash_outcomes_cover_lost_kept_and_torn() {
        let (mut lost, mut kept, mut torn) = (0, 0, 0);
        for seed in 0..200 {
            let disk = SimDisk::new(seed);
            disk.create_dir_all(Path::new("/d")).unwrap();
            let f = disk.open(Path::new("/d/a"), true).unwrap();
            f.write_at(&vec![0u8; 2048], 0).unwrap();
            f.sync_data().unwrap();
            disk.sync_dir(Path::new("/d")).unwrap();
            f.write_at(&vec![1u8; 2048], 0).unwrap();
            disk.crash();
            let data = disk.peek(Path::new("/d/a")).unwrap();
            let ones = data.iter().filter(|&&b| b == 1).count();
            match ones {
                0 => lost += 1,
                2048 => kept += 1,
                n => {
                    assert_eq!(n % 512, 0, "tears happen at sector granularity");
                    torn += 1
                }
            }
        }
        assert!(lost > 0 && kept > 0 && torn > 0, "{lost} {kept} {torn}");
    }

    #[test]
    fn enospc_and_failed_fsync_drop_data() {
        let disk = SimDisk::new(3);
        disk.create_dir_all(Path::new("/d")).unwrap();
        let f = disk.open(Path::new("/d/a"), true).unwrap();
        disk.set_faults(SimFaults {
            capacity_bytes: Some(100),
            ..Default::default()
        });
        let err = f.write_at(&[7u8; 150], 0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(f.len().unwrap(), 100, "the prefix that fits was written");
        disk.set_faults(SimFaults {
            fail_syncs: 1,
            ..Default::default()
        });
        assert_eq!(f.sync_data().unwrap_err().raw_os_error(), Some(libc::EIO));
        assert_eq!(
            f.len().unwrap(),
            0,
            "unsynced data dropped by the failed fsync"
        );
    }

    #[test]
    fn second_lock_is_refused_until_released_or_crash() {
        let disk = SimDisk::new(4);
        disk.create_dir_all(Path::new("/d")).unwrap();
        let g = disk.lock(Path::new("/d/LOCK")).unwrap();
        assert_eq!(
            disk.lock(Path::new("/d/LOCK")).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        drop(g);
        let _g = disk.lock(Path::new("/d/LOCK")).unwrap();
        disk.crash();
        assert!(disk.lock(Path::new("/d/LOCK")).is_ok());
    }
}
