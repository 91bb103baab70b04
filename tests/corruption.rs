//! Damage to sealed segments, the unsealed tail and the superblock, on the simulated disk and
//! on the real file system. Each case must end in the right outcome (a torn, never-acknowledged
//! tail is cut; anything else is `Error::Corruption` naming the place) and never in wrong bytes
//! being returned.

use sitelog::io::{IoRef, PosixIo, SimDisk, UringIo};
use sitelog::storage::segment::{self, HEADER_REGION_BYTES};
use sitelog::{Error, Log, LogOptions, SyncMode};
use std::path::{Path, PathBuf};

const RECORDS: u64 = 120;
const SECTOR_BYTES: u64 = 4096;

/// A log directory on one backend. Damage goes through the same `Io` trait the log uses, then is
/// fsynced: it models the medium returning other bytes than were written.
struct Env {
    io: IoRef,
    dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Env {
    fn all() -> Vec<Env> {
        let tmp = tempfile::tempdir().unwrap();
        let real = Env {
            io: PosixIo::new_ref(),
            dir: tmp.path().join("log"),
            _tmp: Some(tmp),
        };
        let sim = Env {
            io: SimDisk::new(7).io(),
            dir: PathBuf::from("/log"),
            _tmp: None,
        };
        let mut envs = vec![sim, real];
        if let Ok(io) = UringIo::new_ref() {
            let tmp = tempfile::tempdir().unwrap();
            envs.push(Env {
                io,
                dir: tmp.path().join("log"),
                _tmp: Some(tmp),
            });
        }
        envs
    }

    fn opts(&self) -> LogOptions {
        let mut opts = LogOptions::default();
        opts.io = self.io.clone().into();
        opts.segment_size_bytes = 16 << 10;
        opts.max_record_bytes = 4096;
        opts.superblock_interval_ms = 1_000_000;
        opts
    }

    fn open(&self) -> sitelog::Result<Log> {
        Log::open(&self.dir, self.opts())
    }

    fn segments(&self) -> Vec<PathBuf> {
        let mut names = self.io.list(&self.dir).unwrap();
        names.sort();
        names
            .into_iter()
            .filter(|n| segment::parse_file_name(n).is_some())
            .map(|n| self.dir.join(n))
            .collect()
    }

    fn bytes(&self, path: &Path) -> Vec<u8> {
        let f = self.io.open(path, false).unwrap();
        let mut buf = vec![0u8; f.len().unwrap() as usize];
        sitelog::io::read_exact_at(&*f, &mut buf, 0).unwrap();
        buf
    }

    fn overwrite(&self, path: &Path, at: u64, data: &[u8]) {
        let f = self.io.open(path, false).unwrap();
        f.write_at(data, at).unwrap();
        f.sync_data().unwrap();
    }

    fn chop(&self, path: &Path, len: u64) {
        let f = self.io.open(path, false).unwrap();
        f.set_len(len).unwrap();
        f.sync_data().unwrap();
    }

    fn flip_bit(&self, path: &Path, at: u64) {
        let byte = self.bytes(path)[at as usize] ^ 0x10;
        self.overwrite(path, at, &[byte]);
    }
}

fn payload(offset: u64) -> Vec<u8> {
    let len = 300 + (offset as usize * 53) % 700;
    (0..len)
        .map(|i| (offset as usize * 131 + i * 7) as u8)
        .collect()
}

/// Writes RECORDS durable records, persists the watermark and drops the log: sealed segments
/// plus an unsealed tail below the watermark (`close` would seal the tail too).
fn build(env: &Env) {
    let log = env.open().unwrap();
    for offset in 0..RECORDS {
        assert_eq!(log.append(&payload(offset)).unwrap(), offset);
    }
    log.flush().unwrap();
    drop(log);
    assert!(
        env.segments().len() >= 4,
        "several sealed segments and a tail"
    );
}

/// File position of the frame of `offset` inside a segment file's bytes.
fn frame_pos(bytes: &[u8], base: u64, offset: u64) -> u64 {
    let mut pos = HEADER_REGION_BYTES as usize;
    for _ in base..offset {
        let len = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap()) as usize;
        pos += sitelog::storage::record::frame_len(len);
    }
    pos as u64
}

fn base_of(path: &Path) -> u64 {
    segment::parse_file_name(path.file_name().unwrap().to_str().unwrap()).unwrap()
}

/// Reads every offset; each must be either the original bytes or a Corruption error. Returns
/// the offsets that failed.
fn read_all_checked(log: &Log) -> Vec<u64> {
    let mut bad = Vec::new();
    for offset in log.start_offset()..log.end_offset() {
        match log.read(offset) {
            Ok(r) => assert_eq!(
                r.payload.as_ref(),
                &payload(offset)[..],
                "wrong bytes at {offset}"
            ),
            Err(Error::Corruption { record_offset, .. }) => {
                assert!(record_offset.is_some());
                bad.push(offset)
            }
            Err(e) => panic!("unexpected error at {offset}: {e}"),
        }
    }
    for r in log.iter(log.start_offset()) {
        match r {
            Ok(r) => assert_eq!(r.payload.as_ref(), &payload(r.offset)[..]),
            Err(e) => assert!(matches!(e, Error::Corruption { .. }), "{e}"),
        }
    }
    bad
}

fn expect_corruption(result: sitelog::Result<Log>, path: &Path) {
    match result {
        Err(Error::Corruption { segment, .. }) => assert_eq!(segment, path),
        Err(e) => panic!("expected corruption in {}, got {e}", path.display()),
        Ok(_) => panic!("expected corruption in {}, open succeeded", path.display()),
    }
}

#[test]
fn bit_flip_in_sealed_segment_is_reported_on_read_and_verify() {
    for env in Env::all() {
        build(&env);
        let seg = env.segments()[1].clone();
        let base = base_of(&seg);
        let pos = frame_pos(&env.bytes(&seg), base, base + 2);
        env.flip_bit(&seg, pos + 60);
        let log = env
            .open()
            .expect("sealed segments are not rescanned on open");
        assert_eq!(read_all_checked(&log), vec![base + 2]);
        match log.verify() {
            Err(Error::Corruption { segment, .. }) => assert_eq!(segment, seg),
            other => panic!("verify: {other:?}"),
        }
    }
}

#[test]
fn zeroed_sector_in_sealed_segment() {
    for env in Env::all() {
        build(&env);
        let seg = env.segments()[0].clone();
        env.overwrite(&seg, SECTOR_BYTES * 2, &[0u8; SECTOR_BYTES as usize]);
        let log = env.open().unwrap();
        let bad = read_all_checked(&log);
        assert!(!bad.is_empty());
        assert!(log.verify().is_err());
        drop(log);
        // The sector holding the footer: the segment is no longer sealed, and it is not the
        // last one, so opening fails.
        let len = env.bytes(&seg).len() as u64;
        env.overwrite(&seg, len - 64, &[0u8; 64]);
        expect_corruption(env.open(), &seg);
    }
}

#[test]
fn truncated_sealed_segment_fails_open() {
    for env in Env::all() {
        build(&env);
        let seg = env.segments()[1].clone();
        let base = base_of(&seg);
        let pos = frame_pos(&env.bytes(&seg), base, base + 3);
        env.chop(&seg, pos + 20);
        expect_corruption(env.open(), &seg);
    }
}

#[test]
fn misdirected_sector_in_sealed_segment() {
    for env in Env::all() {
        build(&env);
        let segs = env.segments();
        // A well-formed sector of another segment lands here: valid frames, wrong place.
        let donor = env.bytes(&segs[0]);
        let victim = segs[1].clone();
        env.overwrite(
            &victim,
            SECTOR_BYTES,
            &donor[SECTOR_BYTES as usize..2 * SECTOR_BYTES as usize],
        );
        let log = env.open().unwrap();
        assert!(!read_all_checked(&log).is_empty());
        assert!(log.verify().is_err());
    }
}

/// Damages a file at a frame position.
type Damage = dyn Fn(&Env, &Path, u64);

#[test]
fn damage_in_durable_tail_fails_open_with_location() {
    let damages: Vec<(&str, Box<Damage>)> = vec![
        (
            "bit flip",
            Box::new(|env, seg, pos| env.flip_bit(seg, pos + 70)),
        ),
        (
            "zeroed sector",
            Box::new(|env, seg, pos| env.overwrite(seg, pos, &[0u8; 4096])),
        ),
        (
            "truncated mid-record",
            Box::new(|env, seg, pos| env.chop(seg, pos + 30)),
        ),
        (
            "misdirected sector",
            Box::new(|env, seg, pos| {
                let bytes = env.bytes(seg);
                let donor = bytes[HEADER_REGION_BYTES as usize..HEADER_REGION_BYTES as usize + 512]
                    .to_vec();
                env.overwrite(seg, pos, &donor)
            }),
        ),
    ];
    for (name, damage) in damages {
        for env in Env::all() {
            build(&env);
            let tail = env.segments().last().unwrap().clone();
            let base = base_of(&tail);
            let bytes = env.bytes(&tail);
            let last = RECORDS - 1;
            assert!(last > base, "tail holds several records");
            let pos = frame_pos(&bytes, base, base + 1);
            damage(&env, &tail, pos);
            match env.open() {
                Err(Error::Corruption {
                    segment,
                    record_offset,
                    ..
                }) => {
                    assert_eq!(segment, tail, "{name}");
                    assert_eq!(record_offset, Some(base + 1), "{name}");
                }
                Err(e) => panic!("{name}: {e}"),
                Ok(_) => {
                    panic!("{name}: damage below the durable watermark must not be cut silently")
                }
            }
        }
    }
}

#[test]
fn torn_unacknowledged_tail_is_cut() {
    for env in Env::all() {
        build(&env);
        let mut opts = env.opts();
        opts.sync = SyncMode::Manual;
        let log = Log::open(&env.dir, opts.clone()).unwrap();
        for offset in RECORDS..RECORDS + 5 {
            log.append(&payload(offset)).unwrap();
        }
        drop(log); // never synced: not acknowledged
        let tail = env.segments().last().unwrap().clone();
        // The file may be longer than its frames (preallocated zeros): cut inside the last frame.
        let data_end = frame_pos(&env.bytes(&tail), base_of(&tail), RECORDS + 5);
        env.chop(&tail, data_end - 100); // the last record is torn
        let log = Log::open(&env.dir, opts).unwrap();
        assert_eq!(log.end_offset(), RECORDS + 4);
        assert!(log.recovery_report().torn_bytes_truncated > 0);
        assert!(read_all_checked(&log).is_empty());
        assert_eq!(log.append(&payload(RECORDS + 4)).unwrap(), RECORDS + 4);
    }
}

#[test]
fn damaged_record_proven_durable_by_a_later_record_is_corruption() {
    for env in Env::all() {
        // Superblock watermark never advances (huge interval, no seal): only the records'
        // durable hints prove that earlier records were acknowledged.
        let mut opts = env.opts();
        opts.segment_size_bytes = 1 << 20;
        let log = Log::open(&env.dir, opts.clone()).unwrap();
        for offset in 0..10 {
            log.append(&payload(offset)).unwrap();
        }
        drop(log);
        let seg = env.segments()[0].clone();
        let pos = frame_pos(&env.bytes(&seg), 0, 4);
        env.flip_bit(&seg, pos + 100);
        match Log::open(&env.dir, opts) {
            Err(Error::Corruption {
                record_offset,
                detail,
                ..
            }) => {
                assert_eq!(record_offset, Some(4));
                assert!(detail.contains("durable"), "{detail}");
            }
            other => panic!("expected corruption, got {other:?}"),
        }
    }
}

#[test]
fn superblock_damage_falls_back_then_fails() {
    for env in Env::all() {
        build(&env);
        let sb = env.dir.join("superblock");
        let slots = [0u64, 4096];
        // Damage the newest copy: the other one is used.
        let newest = slots
            .into_iter()
            .max_by_key(|&at| {
                u64::from_le_bytes(
                    env.bytes(&sb)[at as usize + 16..at as usize + 24]
                        .try_into()
                        .unwrap(),
                )
            })
            .unwrap();
        env.flip_bit(&sb, newest + 40);
        let log = env.open().unwrap();
        assert!(read_all_checked(&log).is_empty());
        drop(log);
        // After that open wrote a fresh copy, damage both.
        env.flip_bit(&sb, 40);
        env.flip_bit(&sb, 4096 + 40);
        expect_corruption(env.open(), &sb);
    }
}

#[test]
fn missing_or_foreign_files_are_corruption() {
    for env in Env::all() {
        build(&env);
        let segs = env.segments();
        env.io.remove(&segs[1]).unwrap();
        assert!(
            matches!(env.open(), Err(Error::Corruption { .. })),
            "gap between segments"
        );
    }
    for env in Env::all() {
        build(&env);
        env.io.remove(&env.dir.join("superblock")).unwrap();
        assert!(
            matches!(env.open(), Err(Error::Corruption { .. })),
            "segments without superblock"
        );
    }
    for env in Env::all() {
        build(&env);
        // A segment of another log under the right name.
        let other = Env {
            io: env.io.clone(),
            dir: env.dir.with_file_name("other"),
            _tmp: None,
        };
        build(&other);
        let seg = env.segments()[0].clone();
        let foreign = other.bytes(&other.segments()[0]);
        env.chop(&seg, 0);
        env.overwrite(&seg, 0, &foreign);
        expect_corruption(env.open(), &seg);
    }
}
