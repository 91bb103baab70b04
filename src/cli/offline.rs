//! Offline tools on a stopped node's (or a local log's) directory:
//! - `sitelog verify DIR`: every checksum, every sealed segment's footer and whole-file
//!   checksum, the superblock and (for a node's directory) the Raft metadata. Exit 0 when
//!   clean, 2 when damage is found (printed with file, position and offset), 1 when the
//!   directory cannot be checked (missing, locked by a running node).
//! - `sitelog dump DIR [--from N] [--to M] [--payload]`: records as JSON lines; a record whose
//!   checksum fails is never printed (the dump stops there with exit 2).
//!
//! DIR is a log directory (holding `superblock`) or a node's data directory (holding `log/`).
//! Opening runs the log's recovery, as any open does: a torn, never-acknowledged tail is cut.

use super::json::Json;
use clap::Args;
use sitelog::storage::checksum::checksum;
use sitelog::{EntryKind, Error, Log, LogOptions};
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

fn open(dir: &Path) -> Result<Log, Error> {
    let log_dir = log_dir(dir);
    if !log_dir.join("superblock").exists() {
        return Err(Error::InvalidArgument(format!(
            "{} is not a sitelog log or node directory (no superblock)",
            dir.display()
        )));
    }
    let opts = LogOptions {
        preallocate: false,
        ..LogOptions::default()
    };
    Log::open(&log_dir, opts)
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
        let meta = args.dir.join("raft_meta");
        if meta.exists() {
            check_raft_meta(&meta)?;
        }
        let identity = args.dir.join(sitelog::raft::identity::FILE_NAME);
        if identity.exists() {
            sitelog::raft::identity::verify_file(&identity)?;
        }
        let log = open(&args.dir)?;
        let r = log.verify()?;
        println!(
            "clean: {} sealed segments, {} records, {} bytes checked in {}",
            r.sealed_segments,
            r.records,
            r.bytes,
            log_dir(&args.dir).display()
        );
        Ok(())
    })())
}

/// Both copies of the Raft metadata are read; at least one must be valid.
fn check_raft_meta(path: &Path) -> Result<(), Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::Io {
        path: path.into(),
        source: e,
    })?;
    if !sitelog::raft::meta::any_valid_copy(&bytes) {
        return Err(Error::Corruption {
            segment: path.into(),
            file_offset: 0,
            record_offset: None,
            detail: "neither copy of the Raft metadata is valid".into(),
        });
    }
    Ok(())
}

fn kind_name(k: EntryKind) -> &'static str {
    match k {
        EntryKind::Normal => "normal",
        EntryKind::Blank => "blank",
        EntryKind::Membership => "membership",
    }
}

/// `sitelog dump`.
pub fn dump(args: &DumpArgs) -> ExitCode {
    finish((|| {
        let log = open(&args.dir)?;
        let from = args
            .from
            .unwrap_or(log.start_offset())
            .max(log.start_offset());
        let to = args.to.unwrap_or(u64::MAX).min(log.end_offset());
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        for rec in log.iter(from) {
            // The iterator verified the checksum; a damaged record is an error, never printed.
            let rec = rec?;
            if rec.offset >= to {
                break;
            }
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
            if args.payload {
                fields.push(match std::str::from_utf8(&rec.payload) {
                    Ok(s) => ("payload".to_string(), s.into()),
                    Err(_) => ("payload_hex".to_string(), hex(&rec.payload).into()),
                });
            }
            writeln!(out, "{}", Json::Obj(fields).render()).map_err(|e| Error::Io {
                path: "<stdout>".into(),
                source: e,
            })?;
        }
        out.flush().map_err(|e| Error::Io {
            path: "<stdout>".into(),
            source: e,
        })
    })())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
