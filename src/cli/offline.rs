//! Offline tools on a stopped node's (or a local log's) directory:
//! - `sitelog verify DIR`: read-only: it never modifies anything (every file opened read-only,
//!   no cut, no superblock write, no LOCK file created). Checks every checksum, every sealed
//!   segment's footer and whole-file checksum, the superblock and, for a node's directory, the
//!   Raft metadata (`raft_meta`), the snapshot (`snapshot`) and the application state
//!   (`app_state`) with their own checksums. Exit 0 when clean, 2 when damage is found
//!   (printed with file, position and offset), 1 when the directory cannot be checked
//!   (missing, not a log, held by a running node: a shared, non-blocking flock on its
//!   existing LOCK file). What the next open would change without it being damage (a torn,
//!   never-acknowledged tail to cut, leftovers to remove) is printed as `note:` lines on
//!   stdout, and the exit status stays 0.
//! - `sitelog dump DIR [--from N] [--to M] [--payload]`: records as JSON lines; a record whose
//!   checksum fails is never printed (the dump stops there with exit 2). Read-only like
//!   `verify`: a torn tail is not printed and not cut (a `note:` on stderr says so).
//! - `sitelog repair DIR`: the explicit offline fixer: opens the log as a node would, so
//!   recovery cuts a torn, never-acknowledged tail, removes leftovers and completes a pending
//!   truncation, and says what it did. It never seals (a node's segments must seal at the same
//!   frame on every replica) and refuses damage like any open (exit 2).
//!
//! DIR is a log directory (holding `superblock`) or a node's data directory (holding `log/`).

use super::json::Json;
use crate::io::{IoRef, PosixIo, ReadOnlyIo};
use crate::storage::checksum::checksum;
use crate::storage::PendingRecovery;
use crate::{EntryKind, Error, LogOptions, Record};
use clap::Args;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Exit status when damage is found.
const EXIT_DAMAGE: u8 = 2;

/// Arguments of `sitelog verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// A log directory or a node's data directory.
    pub dir: PathBuf,
}

/// Arguments of `sitelog dump`.
#[derive(Debug, Args)]
pub struct DumpArgs {
    /// A log directory or a node's data directory.
    pub dir: PathBuf,
    /// First offset to print [default: the log's start].
    #[arg(long)]
    pub from: Option<u64>,
    /// Stop before this offset [default: the log's end].
    #[arg(long)]
    pub to: Option<u64>,
    /// Include the payload (as a string when it is UTF-8, else as hex).
    #[arg(long)]
    pub payload: bool,
}

/// The log directory inside `dir`.
fn log_dir(dir: &Path) -> PathBuf {
    if dir.join("log").join("superblock").exists() {
        dir.join("log")
    } else {
        dir.to_path_buf()
    }
}

/// The log directory inside `dir`, refusing a directory that holds no log.
fn checked_log_dir(dir: &Path) -> Result<PathBuf, Error> {
    let log_dir = log_dir(dir);
    if !log_dir.join("superblock").exists() {
        return Err(Error::InvalidArgument(format!(
            "{} is not a sitelog log or node directory (no superblock)",
            dir.display()
        )));
    }
    Ok(log_dir)
}

/// Damage is exit 2; anything else that stops the check is exit 1.
fn finish(r: Result<(), Error>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ Error::Corruption { .. }) => {
            eprintln!("sitelog: DAMAGE: {e}");
            ExitCode::from(EXIT_DAMAGE)
        }
        Err(e @ Error::Locked { .. }) => {
            eprintln!("sitelog: error: {e} (stop the node first)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("sitelog: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `sitelog verify`.
pub fn verify(args: &VerifyArgs) -> ExitCode {
    finish((|| {
        let log_dir = checked_log_dir(&args.dir)?;
        let io = ReadOnlyIo::new_ref(PosixIo::new_ref());
        // Held over the whole check: a node cannot start on the directory meanwhile.
        let lock_path = log_dir.join(crate::storage::recovery::LOCK_FILE);
        let _shared = io.lock_shared(&lock_path).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock => Error::Locked {
                path: args.dir.clone(),
            },
            _ => Error::Io {
                path: lock_path.clone(),
                source: e,
            },
        })?;
        let found = crate::storage::verify_dir(&io, &log_dir, &LogOptions::default())?;
        let node_files = if log_dir != args.dir {
            check_node_files(&io, &args.dir)?
        } else {
            Vec::new()
        };
        let r = found.report;
        println!(
            "clean: {} sealed segments, {} records, {} bytes checked in {}",
            r.sealed_segments,
            r.records,
            r.bytes,
            log_dir.display()
        );
        for name in node_files {
            println!("clean: {}", args.dir.join(name).display());
        }
        for line in pending_notes(&found.pending) {
            println!("{line}");
        }
        Ok(())
    })())
}

/// The node's own files beside its log, each with its own decoder's checksum; returns the
/// names of those present.
fn check_node_files(io: &IoRef, dir: &Path) -> Result<Vec<&'static str>, Error> {
    let mut present = Vec::new();
    let meta = dir.join(crate::raft::meta::FILE_NAME);
    if meta.exists() {
        check_raft_meta(&meta)?;
        present.push(crate::raft::meta::FILE_NAME);
    }
    let identity = dir.join(crate::raft::identity::FILE_NAME);
    if identity.exists() {
        crate::raft::identity::verify_file(&identity)?;
        present.push(crate::raft::identity::FILE_NAME);
    }
    if crate::raft::snapshot::load(io, dir)?.is_some() {
        present.push(crate::raft::snapshot::FILE_NAME);
    }
    if let Some(app) = crate::raft::snapshot::load_app_state(io, dir)? {
        // The compressed state must expand to its recorded size, too.
        app.decompress().map_err(|e| Error::Corruption {
            segment: dir.join(crate::raft::snapshot::APP_STATE_FILE),
            file_offset: 0,
            record_offset: None,
            detail: format!("application state does not decompress: {e}"),
        })?;
        present.push(crate::raft::snapshot::APP_STATE_FILE);
    }
    Ok(present)
}

/// What the next open would change: not damage, said so.
fn pending_notes(p: &PendingRecovery) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(t) = &p.torn_tail {
        lines.push(format!(
            "note: torn, never-acknowledged tail (not damage; the next open cuts it): {} bytes \
             in {} from file position {} (offset {}: {})",
            t.bytes,
            t.path.display(),
            t.file_offset,
            t.offset,
            t.reason
        ));
    }
    if let Some(path) = &p.unused_segment {
        lines.push(format!(
            "note: segment never written (the next open removes it): {}",
            path.display()
        ));
    }
    if let Some(path) = &p.unnamed_segment {
        lines.push(format!(
            "note: last segment still under its prepared name, a crash came before its rename \
             (the next open renames it): {}",
            path.display()
        ));
    }
    if let Some(path) = &p.interrupted_seal {
        lines.push(format!(
            "note: segment whose seal a crash interrupted, every record present (the next open \
             seals it): {}",
            path.display()
        ));
    }
    for path in p.temp_files.iter().chain(&p.released_segments) {
        lines.push(format!(
            "note: leftover file (the next open removes it): {}",
            path.display()
        ));
    }
    if let Some(from) = p.truncate_from {
        lines.push(format!(
            "note: truncation in progress (the next open completes it): from offset {from}"
        ));
    }
    lines
}

/// Both copies of the Raft metadata are read; at least one must be valid.
fn check_raft_meta(path: &Path) -> Result<(), Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::Io {
        path: path.into(),
        source: e,
    })?;
    if !crate::raft::meta::any_valid_copy(&bytes) {
        return Err(Error::Corruption {
            segment: path.into(),
            file_offset: 0,
            record_offset: None,
            detail: "neither copy of the Raft metadata is valid".into(),
        });
    }
    Ok(())
}

/// `sitelog repair`.
pub fn repair(args: &VerifyArgs) -> ExitCode {
    finish((|| {
        let log_dir = checked_log_dir(&args.dir)?;
        let opts = LogOptions {
            preallocate: false,
            direct_io: false,
            ..LogOptions::default()
        };
        // Dropped, not closed: closing would seal the active segment.
        let log = crate::Log::open(&log_dir, opts)?;
        let r = log.recovery_report();
        if r.torn_bytes_truncated == 0 && r.temp_files_removed == 0 {
            println!("nothing to repair in {}", log_dir.display());
        } else {
            println!(
                "repaired {}: cut {} bytes of torn, never-acknowledged tail, removed {} \
                 temporary files",
                log_dir.display(),
                r.torn_bytes_truncated,
                r.temp_files_removed
            );
        }
        println!("log: offsets {}..{}", log.start_offset(), log.end_offset());
        Ok(())
    })())
}

fn kind_name(k: EntryKind) -> &'static str {
    match k {
        EntryKind::Normal => "normal",
        EntryKind::Blank => "blank",
        EntryKind::Membership => "membership",
        EntryKind::Produce => "produce",
        EntryKind::Register => "register",
    }
}

/// `sitelog dump` (read-only, like `verify`).
pub fn dump(args: &DumpArgs) -> ExitCode {
    finish((|| {
        let log_dir = checked_log_dir(&args.dir)?;
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        let io = PosixIo::new_ref();
        let stdout_err = |e| Error::Io {
            path: "<stdout>".into(),
            source: e,
        };
        let read = crate::storage::read_dir(
            &io,
            &log_dir,
            &LogOptions::default(),
            args.from,
            args.to,
            |rec| {
                // The checksum was verified; a damaged record is an error, never printed.
                writeln!(out, "{}", record_json(&rec, args.payload).render()).map_err(stdout_err)
            },
        );
        out.flush().map_err(stdout_err)?;
        for line in pending_notes(&read?) {
            eprintln!("sitelog: {line}");
        }
        Ok(())
    })())
}

fn record_json(rec: &Record, payload: bool) -> Json {
    let mut fields = vec![
        ("offset".to_string(), Json::from(rec.offset)),
        ("term".to_string(), rec.term.into()),
        ("timestamp_us".to_string(), rec.timestamp_us.into()),
        ("kind".to_string(), kind_name(rec.kind).into()),
        ("size".to_string(), rec.payload.len().into()),
        (
            "crc32".to_string(),
            u64::from(checksum(&rec.payload)).into(),
        ),
    ];
    if payload {
        fields.push(match std::str::from_utf8(&rec.payload) {
            Ok(s) => ("payload".to_string(), s.into()),
            Err(_) => ("payload_hex".to_string(), hex(&rec.payload).into()),
        });
    }
    Json::Obj(fields)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
