//! Real-process crash test: a child process appends from several threads and is killed with
//! SIGKILL at a random moment; the parent reopens the log and checks it, round after round on
//! the same directory.
//!
//! The child is this test binary re-invoked on the ignored test [`kill9_child_writer`], which
//! does nothing unless `SITELOG_KILL9_CHILD_DIR` is set. Each writer thread follows a
//! deterministic plan (batch sizes and payload lengths drawn from a seeded generator per
//! `(seed, round, writer)`), so the parent can replay every writer's plan. A payload's bytes are
//! a function of `(seed, round, writer, seq)`: writer threads append concurrently, so a record's
//! offset is not known before its append returns; the offset is bound to the payload by the
//! child's acknowledgement line instead. Byte 0 of every payload names its writer, so even a
//! 1-byte record is attributable.
//!
//! After each successful append (`SyncMode::Always`), or after each `sync()` covering a few
//! batches (`SyncMode::Manual`), the child prints `ACK <start> <end> <writer> <seq0> <crc>` and
//! flushes. The parent counts only complete lines (a torn last line is not an ack) and checks,
//! after every kill:
//! - the log opens, offsets are dense from start to end, and every record verifies;
//! - every record that a previous round's check saw is unchanged;
//! - every acknowledged offset holds exactly the acknowledged payload (iterator and `read`);
//! - every other new record is a payload its writer planned, in order: per writer, the records
//!   found are exactly its first `m` planned payloads (no gaps, no duplicates, no foreign
//!   bytes), `m` is at least what was acknowledged and at most the batches that may have been in
//!   flight when the child died;
//! - in `Manual` mode, every offset below a `SYNCED <end>` line is present.
//!
//! The seed is printed; `SITELOG_KILL9_SEED=<n>` reuses one (kill timing stays random).

use std::io::{BufRead, BufReader, Read, Write};
use std::ops::Range;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use sitelog::{IoBackend, Log, LogOptions, SyncMode};

mod common;

const ENV_DIR: &str = "SITELOG_KILL9_CHILD_DIR";
const ENV_SEED: &str = "SITELOG_KILL9_CHILD_SEED";
const ENV_ROUND: &str = "SITELOG_KILL9_CHILD_ROUND";
const ENV_WRITERS: &str = "SITELOG_KILL9_CHILD_WRITERS";
const ENV_MODE: &str = "SITELOG_KILL9_CHILD_MODE";
/// Set by a user to rerun with a given seed.
const ENV_SEED_OVERRIDE: &str = "SITELOG_KILL9_SEED";

const SEGMENT_BYTES: u64 = 256 << 10;
const MAX_RECORD_BYTES: u32 = 64 << 10;
/// Byte 0 of a payload is `TAG_BASE | writer`.
const TAG_BASE: u8 = 0xA0;
const MAX_WRITERS: u32 = 4;
/// Payloads at least this long carry `round`, `seq` and `len` after the tag (for debugging).
const PAYLOAD_HEADER_BYTES: usize = 17;
/// In `Manual` mode a writer syncs and acknowledges after 1..=this many batches.
const MAX_BATCHES_PER_SYNC: u64 = 4;
/// A child that is somehow never killed stops on its own.
const CHILD_MAX_RUNTIME: Duration = Duration::from_secs(60);
/// How long the parent waits for the child to open the log.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// A whole kill loop normally takes under 10 s; past this the log is taken to be deadlocked.
const WATCHDOG: Duration = Duration::from_secs(180);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `SyncMode::Always`, single appends and small batches of up to 16 KiB records.
    Always,
    /// `SyncMode::Manual`, large batches of small records, explicit `sync()` before acking.
    Manual,
    /// As `Always`, with `O_DIRECT` group writes (`LogOptions::direct_io`).
    Direct,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Always => "always",
            Mode::Manual => "manual",
            Mode::Direct => "direct",
        }
    }

    fn parse(s: &str) -> Option<Mode> {
        match s {
            "always" => Some(Mode::Always),
            "manual" => Some(Mode::Manual),
            "direct" => Some(Mode::Direct),
            _ => None,
        }
    }

    fn options(self) -> LogOptions {
        let mut opts = LogOptions::default();
        opts.segment_size_bytes = SEGMENT_BYTES;
        opts.max_record_bytes = MAX_RECORD_BYTES;
        opts.sync = match self {
            Mode::Always | Mode::Direct => SyncMode::Always,
            Mode::Manual => SyncMode::Manual,
        };
        // Both backends on the real kernel: io_uring (where the kernel allows it) for the
        // durable-append loops, buffered and direct, POSIX for the manual-sync loop. (`Auto`
        // would pick POSIX for the direct loop: the default, which other tests cover.)
        let uring = sitelog::io::UringIo::new().is_ok();
        opts.io = match self {
            Mode::Always | Mode::Direct if uring => IoBackend::IoUring,
            Mode::Always | Mode::Direct | Mode::Manual => IoBackend::Posix,
        };
        opts.direct_io = self == Mode::Direct;
        opts
    }

    /// Batches of one writer that may be written but unacknowledged when the child dies: in
    /// `Always` mode a writer acks each batch before it starts the next; in `Manual` mode it
    /// acks a whole sync cycle at once.
    fn max_unacked_batches(self) -> u64 {
        match self {
            Mode::Always | Mode::Direct => 1,
            Mode::Manual => MAX_BATCHES_PER_SYNC,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Deterministic generation, shared by child and parent (they are the same binary).

/// SplitMix64: tiny, seedable and stable across versions.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

fn mix(a: u64, b: u64) -> u64 {
    Rng::new(a ^ b.wrapping_mul(0xD6E8_FEB8_6659_FD93)).next_u64()
}

/// The payload of record `seq` of `writer` in `round`.
fn payload(seed: u64, round: u32, writer: u32, seq: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng::new(mix(
        mix(mix(seed, u64::from(round)), u64::from(writer)),
        seq,
    ));
    let mut p = vec![0u8; len];
    rng.fill(&mut p);
    p[0] = TAG_BASE | writer as u8;
    if len >= PAYLOAD_HEADER_BYTES {
        p[1..5].copy_from_slice(&round.to_le_bytes());
        p[5..13].copy_from_slice(&seq.to_le_bytes());
        p[13..17].copy_from_slice(&(len as u32).to_le_bytes());
    }
    p
}

/// Checksum of a batch of payloads, as printed in an ACK line.
fn batch_crc<P: AsRef<[u8]>>(payloads: &[P]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for p in payloads {
        h.update(&(p.as_ref().len() as u64).to_le_bytes());
        h.update(p.as_ref());
    }
    h.finalize()
}

fn digest(payload: &[u8]) -> u64 {
    (payload.len() as u64) << 32 | u64::from(crc32fast::hash(payload))
}

#[derive(Debug, Clone)]
struct Batch {
    seq0: u64,
    lens: Vec<usize>,
}

impl Batch {
    fn seqs(&self) -> Range<u64> {
        self.seq0..self.seq0 + self.lens.len() as u64
    }

    fn payloads(&self, seed: u64, round: u32, writer: u32) -> Vec<Vec<u8>> {
        self.seqs()
            .zip(&self.lens)
            .map(|(seq, &len)| payload(seed, round, writer, seq, len))
            .collect()
    }
}

/// The batches one writer appends in one round, in order.
#[derive(Debug)]
struct Plan {
    rng: Rng,
    mode: Mode,
    next_seq: u64,
}

impl Plan {
    fn new(seed: u64, round: u32, writer: u32, mode: Mode) -> Plan {
        Plan {
            rng: Rng::new(mix(
                mix(seed ^ 0x504C_414E, u64::from(round)),
                u64::from(writer),
            )),
            mode,
            next_seq: 0,
        }
    }

    fn next_batch(&mut self) -> Batch {
        let rng = &mut self.rng;
        let (n, max_len) = match self.mode {
            Mode::Always | Mode::Direct if rng.range(0, 9) < 7 => (1, 16 << 10),
            Mode::Always | Mode::Direct => (rng.range(2, 8), 16 << 10),
            Mode::Manual => (rng.range(4, 64), 4 << 10),
        };
        let lens = (0..n)
            .map(|_| match rng.range(0, 9) {
                0..=2 => rng.range(1, 64),
                3..=6 => rng.range(65, 4096.min(max_len)),
                _ => rng.range(1, max_len),
            } as usize)
            .collect();
        let batch = Batch {
            seq0: self.next_seq,
            lens,
        };
        self.next_seq += n;
        batch
    }
}

// ---------------------------------------------------------------------------------------------
// Child.

#[derive(Debug, Clone)]
struct ChildConfig {
    dir: PathBuf,
    seed: u64,
    round: u32,
    writers: u32,
    mode: Mode,
}

impl ChildConfig {
    fn from_env() -> Option<ChildConfig> {
        let dir = std::env::var_os(ENV_DIR)?;
        let var =
            |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("child: {name} is not set"));
        Some(ChildConfig {
            dir: PathBuf::from(dir),
            seed: var(ENV_SEED).parse().expect("child seed"),
            round: var(ENV_ROUND).parse().expect("child round"),
            writers: var(ENV_WRITERS).parse().expect("child writers"),
            mode: Mode::parse(&var(ENV_MODE)).expect("child mode"),
        })
    }
}

/// Writes one whole line to stdout and flushes it.
fn emit(line: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(line.as_bytes())?;
    out.flush()
}

/// The child process. Ignored, and a no-op unless `SITELOG_KILL9_CHILD_DIR` is set: the
/// `kill9_*` tests run it in a process of its own and kill it.
#[test]
#[ignore = "child process of the kill9 tests; a no-op unless SITELOG_KILL9_CHILD_DIR is set"]
fn kill9_child_writer() {
    let Some(cfg) = ChildConfig::from_env() else {
        return;
    };
    // libtest has printed "test kill9_child_writer ... " without a newline: start a fresh line.
    let _ = emit("\n");
    let log = match Log::open(&cfg.dir, cfg.mode.options()) {
        Ok(log) => log,
        Err(e) => {
            let _ = emit(&format!("ERR open: {e}\n"));
            return;
        }
    };
    if emit(&format!(
        "START {} {}\n",
        log.start_offset(),
        log.end_offset()
    ))
    .is_err()
    {
        return;
    }
    let threads: Vec<_> = (0..cfg.writers)
        .map(|w| {
            let (log, cfg) = (log.clone(), cfg.clone());
            thread::spawn(move || child_writer(&log, &cfg, w))
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

fn child_writer(log: &Log, cfg: &ChildConfig, w: u32) {
    let mut plan = Plan::new(cfg.seed, cfg.round, w, cfg.mode);
    let mut cadence = Rng::new(mix(
        cfg.seed ^ 0x5359_4E43,
        mix(u64::from(cfg.round), w.into()),
    ));
    let mut pending: Vec<String> = Vec::new();
    let mut until_sync = cadence.range(1, MAX_BATCHES_PER_SYNC);
    let deadline = Instant::now() + CHILD_MAX_RUNTIME;
    while Instant::now() < deadline {
        let batch = plan.next_batch();
        let payloads = batch.payloads(cfg.seed, cfg.round, w);
        let result = if payloads.len() == 1 {
            log.append(&payloads[0]).map(|o| o..o + 1)
        } else {
            log.append_batch(&payloads)
        };
        let range = match result {
            Ok(r) if r.end - r.start == payloads.len() as u64 => r,
            Ok(r) => {
                let _ = emit(&format!(
                    "ERR writer {w}: batch of {} got offsets {r:?}\n",
                    payloads.len()
                ));
                return;
            }
            Err(e) => {
                let _ = emit(&format!("ERR writer {w}: append: {e}\n"));
                return;
            }
        };
        let ack = format!(
            "ACK {} {} {w} {} {:08x}\n",
            range.start,
            range.end,
            batch.seq0,
            batch_crc(&payloads)
        );
        match cfg.mode {
            Mode::Always | Mode::Direct => {
                if emit(&ack).is_err() {
                    return;
                }
            }
            Mode::Manual => {
                pending.push(ack);
                until_sync -= 1;
                if until_sync > 0 {
                    continue;
                }
                until_sync = cadence.range(1, MAX_BATCHES_PER_SYNC);
                let end = log.end_offset();
                if let Err(e) = log.sync() {
                    let _ = emit(&format!("ERR writer {w}: sync: {e}\n"));
                    return;
                }
                if emit(&format!("SYNCED {end}\n")).is_err() {
                    return;
                }
                for line in pending.drain(..) {
                    if emit(&line).is_err() {
                        return;
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Parent.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ack {
    range: (u64, u64),
    writer: u32,
    seq0: u64,
    crc: u32,
}

/// What a killed child printed, complete lines only.
#[derive(Debug, Default)]
struct ChildOutput {
    start: Option<(u64, u64)>,
    acks: Vec<Ack>,
    synced: u64,
    errors: Vec<String>,
    /// Bytes of a last line cut by the kill (not counted).
    torn_line_bytes: usize,
    stderr: String,
    status: Option<ExitStatus>,
}

fn parse_ack(line: &str) -> Ack {
    let f: Vec<&str> = line.split(' ').collect();
    assert_eq!(f.len(), 6, "malformed ACK line {line:?}");
    let num = |i: usize| -> u64 {
        f[i].parse()
            .unwrap_or_else(|_| panic!("malformed ACK line {line:?}"))
    };
    Ack {
        range: (num(1), num(2)),
        writer: num(3) as u32,
        seq0: num(4),
        crc: u32::from_str_radix(f[5], 16).unwrap_or_else(|_| panic!("bad ACK crc {line:?}")),
    }
}

fn parse_output(lines: &[String], out: &mut ChildOutput) {
    for line in lines {
        if let Some(rest) = line.strip_prefix("START ") {
            let v: Vec<u64> = rest
                .split(' ')
                .map(|s| s.parse().expect("START line"))
                .collect();
            out.start = Some((v[0], v[1]));
        } else if line.starts_with("ACK ") {
            out.acks.push(parse_ack(line));
        } else if let Some(rest) = line.strip_prefix("SYNCED ") {
            out.synced = out.synced.max(rest.parse().expect("SYNCED line"));
        } else if line.starts_with("ERR ") {
            out.errors.push(line.clone());
        }
        // Anything else is libtest's own output.
    }
}

/// Held while this process has a log open and while it spawns a child. The log's directory
/// lock is a `flock`, which belongs to the open file description: a child forked (by the other
/// test, on another thread) while a log is open holds a copy of the descriptor until it execs,
/// and with it the lock, so a child spawned right after the parent's `close` could find its
/// directory "locked". `Command::spawn` returns only after the exec.
static NO_FORK_WHILE_OPEN: Mutex<()> = Mutex::new(());

fn no_fork_while_open() -> MutexGuard<'static, ()> {
    NO_FORK_WHILE_OPEN.lock().unwrap_or_else(|p| p.into_inner())
}

/// Kills and reaps the child if the parent panics before doing so.
struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Reads complete lines; signals when the START line arrives. Returns the lines and the length
/// of a torn last line.
fn read_lines(
    stdout: impl Read + Send + 'static,
    started: mpsc::Sender<()>,
) -> JoinHandle<(Vec<String>, usize)> {
    thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut lines = Vec::new();
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) => return (lines, 0),
                Ok(_) if buf.ends_with(b"\n") => {
                    let line = String::from_utf8_lossy(&buf[..buf.len() - 1]).into_owned();
                    if line.starts_with("START ") {
                        let _ = started.send(());
                    }
                    lines.push(line);
                }
                // End of file inside a line: the kill cut it. Not an acknowledgement.
                Ok(_) | Err(_) => return (lines, buf.len()),
            }
        }
    })
}

/// When to kill the child.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// This long after the child reported the log open (while it appends).
    AfterStart(Duration),
    /// This long after spawning it (possibly while it opens and recovers the log).
    AfterSpawn(Duration),
}

fn run_child(
    dir: &Path,
    seed: u64,
    round: u32,
    writers: u32,
    mode: Mode,
    at: KillAt,
) -> ChildOutput {
    let exe = common::this_test_binary();
    let guard = no_fork_while_open();
    let mut child = Command::new(exe)
        .args([
            "--ignored",
            "--exact",
            "kill9_child_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ENV_DIR, dir)
        .env(ENV_SEED, seed.to_string())
        .env(ENV_ROUND, round.to_string())
        .env(ENV_WRITERS, writers.to_string())
        .env(ENV_MODE, mode.name())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn child");
    drop(guard);
    let spawned = Instant::now();
    let (tx, started) = mpsc::channel();
    let stdout_reader = read_lines(child.stdout.take().expect("child stdout"), tx);
    let mut stderr = child.stderr.take().expect("child stderr");
    let stderr_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut guard = KillOnDrop(Some(child));
    match at {
        KillAt::AfterStart(delay) => {
            // Wait for the START line (or for the child to die: the channel then disconnects).
            let _ = started.recv_timeout(START_TIMEOUT);
            thread::sleep(delay);
        }
        KillAt::AfterSpawn(delay) => thread::sleep(delay.saturating_sub(spawned.elapsed())),
    }
    let mut child = guard.0.take().expect("child");
    // SIGKILL. Fails only if the child is already reaped, which it is not.
    child.kill().expect("kill child");
    let status = child.wait().expect("reap child");
    let (lines, torn_line_bytes) = stdout_reader.join().expect("stdout reader");
    let mut out = ChildOutput {
        torn_line_bytes,
        stderr: stderr_reader.join().expect("stderr reader"),
        status: Some(status),
        ..ChildOutput::default()
    };
    parse_output(&lines, &mut out);
    out
}

/// Replays one writer's plan on demand.
struct Replay {
    plan: Plan,
    batches: Vec<Batch>,
    /// Records of this writer found in the log so far.
    found: u64,
}

impl Replay {
    /// The batch holding `seq`, generating the plan up to it.
    fn batch_of(&mut self, seq: u64) -> &Batch {
        while self.batches.last().is_none_or(|b| b.seqs().end <= seq) {
            self.batches.push(self.plan.next_batch());
        }
        let i = self.batches.partition_point(|b| b.seqs().end <= seq);
        &self.batches[i]
    }

    fn len_of(&mut self, seq: u64) -> usize {
        let b = self.batch_of(seq);
        b.lens[(seq - b.seq0) as usize]
    }

    /// Index of the batch holding `seq`.
    fn batch_index(&mut self, seq: u64) -> usize {
        self.batch_of(seq);
        self.batches.partition_point(|b| b.seqs().end <= seq)
    }
}

/// What the parent knows survived earlier rounds.
#[derive(Debug, Default)]
struct Model {
    /// Digest of the payload at each offset below the verified end.
    digests: Vec<u64>,
}

#[derive(Debug, Default)]
struct Totals {
    acked_records: u64,
    unacked_survivors: u64,
    torn_bytes: u64,
    /// Seals of a segment before the last that a kill interrupted (between a roll and the
    /// background seal of the segment it left), completed by the reopen.
    seals_completed: usize,
    torn_ack_lines: usize,
    killed_before_start: u32,
    records: u64,
    segments: usize,
}

struct RoundCtx<'a> {
    dir: &'a Path,
    seed: u64,
    round: u32,
    writers: u32,
    mode: Mode,
}

impl RoundCtx<'_> {
    fn describe(&self) -> String {
        format!(
            "mode={} seed={} round={} writers={} (rerun with {ENV_SEED_OVERRIDE}={})",
            self.mode.name(),
            self.seed,
            self.round,
            self.writers,
            self.seed
        )
    }
}

/// Reopens the log after the kill and checks everything the child acknowledged.
fn verify_round(ctx: &RoundCtx<'_>, out: &ChildOutput, model: &mut Model, totals: &mut Totals) {
    let what = ctx.describe();
    let child_dump = || {
        format!(
            "child status {:?}, stderr:\n{}",
            out.status,
            out.stderr.trim_end()
        )
    };
    assert!(
        out.errors.is_empty(),
        "{what}: child reported errors {:?}; {}",
        out.errors,
        child_dump()
    );
    assert_eq!(
        out.status.and_then(|s| s.signal()),
        Some(libc::SIGKILL),
        "{what}: child was not killed by SIGKILL but ended on its own; {}",
        child_dump()
    );
    let prev_end = model.digests.len() as u64;
    let _no_fork = no_fork_while_open();
    match out.start {
        Some((start, end)) => {
            assert_eq!(
                (start, end),
                (0, prev_end),
                "{what}: the child opened the log at a different end than the parent verified"
            );
        }
        None => totals.killed_before_start += 1,
    }

    let log = Log::open(ctx.dir, ctx.mode.options())
        .unwrap_or_else(|e| panic!("{what}: reopening after kill -9 failed: {e}"));
    assert!(log.poisoned().is_none(), "{what}: reopened log is poisoned");
    let report = log.recovery_report().clone();
    totals.torn_bytes += report.torn_bytes_truncated;
    totals.seals_completed += report.seals_completed;
    totals.segments = report.segments;
    let (start, end) = (log.start_offset(), log.end_offset());
    assert_eq!(start, 0, "{what}: nothing was purged but the start moved");
    assert!(
        end >= prev_end,
        "{what}: log end {end} is below the end {prev_end} verified before this round"
    );
    let acked_end = out.acks.iter().map(|a| a.range.1).max().unwrap_or(0);
    assert!(
        end >= acked_end,
        "{what}: log ends at {end} but offsets up to {acked_end} were acknowledged"
    );
    assert!(
        end >= out.synced,
        "{what}: log ends at {end} but a sync covered offsets below {}",
        out.synced
    );

    // Walk everything with the iterator: dense offsets, old records unchanged, new ones exactly
    // their writer's next planned payloads.
    let mut replays: Vec<Replay> = (0..ctx.writers)
        .map(|w| Replay {
            plan: Plan::new(ctx.seed, ctx.round, w, ctx.mode),
            batches: Vec::new(),
            found: 0,
        })
        .collect();
    let mut owner: Vec<(u32, u64)> = Vec::new(); // (writer, seq) of each new offset
    let mut expected = start;
    for item in log.iter(start) {
        let rec = item.unwrap_or_else(|e| panic!("{what}: iterating at offset {expected}: {e}"));
        assert_eq!(
            rec.offset, expected,
            "{what}: offsets not dense: expected {expected}, got {}",
            rec.offset
        );
        let p = &rec.payload[..];
        if expected < prev_end {
            assert_eq!(
                digest(p),
                model.digests[expected as usize],
                "{what}: record {expected}, verified in an earlier round, changed"
            );
        } else {
            assert!(!p.is_empty(), "{what}: record {expected} is empty");
            let w = u32::from(p[0] ^ TAG_BASE);
            assert!(
                p[0] & 0xF0 == TAG_BASE && w < ctx.writers,
                "{what}: record {expected} ({} bytes) starts with {:#04x}, not a writer tag",
                p.len(),
                p[0]
            );
            let r = &mut replays[w as usize];
            let seq = r.found;
            let len = r.len_of(seq);
            let want = payload(ctx.seed, ctx.round, w, seq, len);
            if p != &want[..] {
                let first_diff = p.iter().zip(&want).position(|(a, b)| a != b);
                panic!(
                    "{what}: record {expected} is not writer {w}'s next payload (seq {seq}): \
                     {} bytes, expected {len}; first differing byte {first_diff:?}",
                    p.len()
                );
            }
            r.found += 1;
            owner.push((w, seq));
            model.digests.push(digest(p));
        }
        expected += 1;
    }
    assert_eq!(
        expected, end,
        "{what}: the iterator stopped at {expected}, the log ends at {end}"
    );

    // Every acknowledged batch: at its offsets, in its writer's plan order, readable by offset.
    let mut acked_per_writer = vec![0u64; ctx.writers as usize];
    let mut acks = out.acks.clone();
    acks.sort_by_key(|a| (a.writer, a.seq0));
    for ack in &acks {
        let w = ack.writer;
        assert!(w < ctx.writers, "{what}: ACK from unknown writer {w}");
        let r = &mut replays[w as usize];
        let batch = r.batch_of(ack.seq0).clone();
        assert_eq!(
            batch.seq0, ack.seq0,
            "{what}: ACK seq {} is not a batch start",
            ack.seq0
        );
        let payloads = batch.payloads(ctx.seed, ctx.round, w);
        assert_eq!(
            ack.crc,
            batch_crc(&payloads),
            "{what}: ACK checksum differs from the replayed plan (test bug?)"
        );
        assert_eq!(
            ack.range.1 - ack.range.0,
            payloads.len() as u64,
            "{what}: ACK range {:?} does not match a batch of {}",
            ack.range,
            payloads.len()
        );
        assert_eq!(
            acked_per_writer[w as usize], ack.seq0,
            "{what}: writer {w} acked seq {} but not everything before it",
            ack.seq0
        );
        acked_per_writer[w as usize] = batch.seqs().end;
        for (i, want) in payloads.iter().enumerate() {
            let offset = ack.range.0 + i as u64;
            let seq = ack.seq0 + i as u64;
            let rel = offset
                .checked_sub(prev_end)
                .unwrap_or_else(|| panic!("{what}: acked offset {offset} below round start"));
            assert_eq!(
                owner.get(rel as usize),
                Some(&(w, seq)),
                "{what}: acknowledged offset {offset} (writer {w} seq {seq}) holds another record"
            );
            let rec = log
                .read(offset)
                .unwrap_or_else(|e| panic!("{what}: read({offset}) of an acked record: {e}"));
            assert_eq!(rec.offset, offset);
            assert!(
                rec.payload[..] == want[..],
                "{what}: read({offset}) returned different bytes than acknowledged"
            );
        }
        totals.acked_records += payloads.len() as u64;
    }

    // Unacknowledged survivors: only what may have been in flight.
    for (w, r) in replays.iter_mut().enumerate() {
        let acked = acked_per_writer[w];
        assert!(r.found >= acked, "{what}: writer {w} lost acked records");
        if r.found > acked {
            let first_unacked = r.batch_index(acked);
            let last_found = r.batch_index(r.found - 1);
            let in_flight = (last_found - first_unacked) as u64 + 1;
            assert!(
                in_flight <= ctx.mode.max_unacked_batches(),
                "{what}: writer {w} has {} unacked records over {in_flight} batches after its \
                 last ack; at most {} batches can have been in flight",
                r.found - acked,
                ctx.mode.max_unacked_batches()
            );
            totals.unacked_survivors += r.found - acked;
        }
    }
    totals.torn_ack_lines += usize::from(out.torn_line_bytes > 0);
    totals.records = end;
    log.close()
        .unwrap_or_else(|e| panic!("{what}: closing after verification: {e}"));
}

fn seed() -> u64 {
    match std::env::var(ENV_SEED_OVERRIDE) {
        Ok(s) => s.parse().expect("SITELOG_KILL9_SEED must be a u64"),
        Err(_) => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            mix(t, u64::from(std::process::id()))
        }
    }
}

/// Runs `f` on a thread of its own and fails the test if it has not finished within
/// [`WATCHDOG`]: a deadlock in the log (the parent's open, iteration or close) must fail the
/// test, not hang `cargo test`. A stuck thread dies with the test process.
fn with_watchdog(f: impl FnOnce() + Send + 'static) {
    let (done_tx, done) = mpsc::channel::<()>();
    let worker = thread::Builder::new()
        .name("kill9 loop".into())
        .spawn(move || {
            f();
            let _ = done_tx.send(());
        })
        .expect("spawn the kill9 loop");
    match done.recv_timeout(WATCHDOG) {
        // Finished, or panicked (the sender was dropped): join to pass the panic on.
        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(panic) = worker.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("no result after {WATCHDOG:?}: the log (or a child) appears to be deadlocked")
        }
    }
}

fn kill9_rounds(mode: Mode, rounds: u32, delay_ms: Range<u64>) {
    let seed = seed();
    eprintln!(
        "kill9 {}: seed {seed} (rerun with {ENV_SEED_OVERRIDE}={seed})",
        mode.name()
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    let mut rng = Rng::new(seed);
    let mut model = Model::default();
    let mut totals = Totals::default();
    let began = Instant::now();
    for round in 0..rounds {
        let writers = rng.range(2, u64::from(MAX_WRITERS)) as u32;
        // Every fifth round the kill may land while the child opens and recovers the log.
        let at = if round % 5 == 4 {
            KillAt::AfterSpawn(Duration::from_millis(rng.range(0, 25)))
        } else {
            KillAt::AfterStart(Duration::from_millis(
                rng.range(delay_ms.start, delay_ms.end),
            ))
        };
        let ctx = RoundCtx {
            dir: &dir,
            seed,
            round,
            writers,
            mode,
        };
        let out = run_child(&dir, seed, round, writers, mode, at);
        verify_round(&ctx, &out, &mut model, &mut totals);
    }
    eprintln!(
        "kill9 {}: {rounds} rounds in {:.1?}: {} records ({} segments), {} acknowledged in the \
         rounds' windows, {} unacked survivors, {} torn tail bytes cut, {} interrupted seals \
         completed, {} torn ACK lines, {} kills before the log was open",
        mode.name(),
        began.elapsed(),
        totals.records,
        totals.segments,
        totals.acked_records,
        totals.unacked_survivors,
        totals.torn_bytes,
        totals.seals_completed,
        totals.torn_ack_lines,
        totals.killed_before_start
    );
    assert!(
        totals.acked_records > 0,
        "seed {seed}: no append was ever acknowledged; the test exercised nothing"
    );
}

/// `SyncMode::Always`, 2-4 writer threads, single appends and small batches of 1 B..16 KiB
/// records, 256 KiB segments; 20 kills.
#[test]
fn kill9_loop_preserves_every_acknowledged_record() {
    with_watchdog(|| kill9_rounds(Mode::Always, 20, 20..300));
}

/// As the first loop with `O_DIRECT` group writes (each group rewrites the partly filled
/// block it starts in); 12 kills.
#[test]
fn kill9_loop_with_direct_io_preserves_every_acknowledged_record() {
    with_watchdog(|| kill9_rounds(Mode::Direct, 12, 20..300));
}

/// `SyncMode::Manual`, heavy batching (4-64 records of 1 B..4 KiB per batch), explicit
/// `sync()` before acknowledging; 12 kills.
#[test]
fn kill9_manual_sync_batches_preserve_synced_records() {
    with_watchdog(|| kill9_rounds(Mode::Manual, 12, 20..200));
}
