//! Bulk fetch of sealed segment files: the catch-up path of a new or far-behind replica.
//!
//! Protocol (connection purpose "fetch"; messages framed and CRC-checked by `frame.rs`):
//!
//! ```text
//! FETCH    = 0x51, u64 base, u64 end, u64 size, u32 file_crc, u64 from, u32 max_len,
//!            u8 compress (0 none, 1 zstd)
//! CHUNK    = 0x71, u8 compressed, u32 raw_len, u32 raw_crc, u32 data_len, data
//! NOT_HELD = 0x72   (the source has no sealed segment with that identity)
//! ERROR    = 0x73, u16 len, text
//! IDENTIFY = 0x52, u64 base                 (repair: which sealed segment starts at base?)
//! IDENTITY = 0x74, u64 base, u64 end, u64 size, u32 file_crc   | NOT_HELD
//! ```
//!
//! IDENTIFY lets a node whose own copy is damaged (perhaps its footer, so that it no longer
//! knows the whole-file CRC) learn the identity to FETCH. A source answers only for a sealed
//! segment wholly below its committed end: committed entries are the same on every replica,
//! so the answer names the same records the asker held.
//!
//! A chunk is verified twice: the frame's CRC covers it on the wire; `raw_crc` covers the
//! bytes as they are in the source's file, so a chunk damaged at the source or by the
//! (de)compression is caught too. The fetcher writes chunks into a staging file, fsyncing
//! each, so an interrupted fetch resumes from the staging file's length (after a restart of
//! either side); at the end the whole file is verified against the manifest (size, whole-file
//! CRC, footer), and a copy that fails is fetched again from the start from another source.
//! Sources are tried in the order given (callers put the same site first); a source that
//! does not hold the segment, fails, or sends a bad chunk is skipped for the next chunk.

use super::fetch_budget::FetchBudget;
use super::tcp::{connect_fetch, FrameRx, FrameTx, NetLimits};
use super::warn_rate::{WarnRate, WARN_EVERY};
use crate::codec::{clip_utf8, DecodeError, DecodeResult, Reader, Writer};
use crate::io::{read_exact_at, IoRef};
use crate::limits::MAX_ERROR_TEXT_BYTES;
use crate::raft::remote::{MessageRx, MessageTx};
use crate::storage::checksum::checksum;
use crate::storage::manifest::{verify_segment_file, SegmentInfo};
use crate::{Error, Log, Result};
use bytes::Bytes;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

const FETCH: u8 = 0x51;
const CHUNK: u8 = 0x71;
const NOT_HELD: u8 = 0x72;
const ERROR: u8 = 0x73;
const IDENTIFY: u8 = 0x52;
const IDENTITY: u8 = 0x74;
/// Largest chunk a source sends (and a fetcher asks for).
pub const MAX_CHUNK_BYTES: u32 = 8 << 20;
/// How many times a segment's whole-file verification may fail before the fetch gives up.
const MAX_WHOLE_FILE_ATTEMPTS: usize = 3;
/// A source that serves bad chunks (damaged, or hostile) makes every fetch of this process
/// fail over: one line per [`WARN_EVERY`] for all of them, with the count.
static CHUNK_FAILED: WarnRate = WarnRate::new(WARN_EVERY);
static COPY_FAILED: WarnRate = WarnRate::new(WARN_EVERY);

/// How to fetch.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FetchOptions {
    /// Bytes per chunk. Default 4 MiB.
    pub chunk_bytes: u32,
    /// zstd on the wire. Default true.
    pub compress: bool,
    /// The node's fetch budget in bytes/s of file data, shared by all its fetches at once
    /// (`None`: as fast as it goes). Default 100 MB/s. The node builds one `FetchBudget`
    /// from it.
    pub max_bytes_per_s: Option<u64>,
    /// Network limits of the fetch connections.
    pub limits: NetLimits,
    /// Cluster id for the handshake.
    pub cluster_id: u64,
    /// The fetching node's id for the handshake (a node sets its own; over TLS it must be
    /// the id its certificate names). Default: none (`u64::MAX`).
    pub from_node: u64,
    /// TLS with the fetching node's configuration (a node sets its own); `None`: plaintext.
    pub tls: Option<std::sync::Arc<super::tls::TlsReloader>>,
}

impl FetchOptions {
    /// Defaults for `cluster_id`.
    pub fn new(cluster_id: u64) -> Self {
        FetchOptions {
            chunk_bytes: 4 << 20,
            compress: true,
            max_bytes_per_s: Some(100_000_000),
            limits: NetLimits::default(),
            cluster_id,
            from_node: super::handshake::ANY_NODE,
            tls: None,
        }
    }

    async fn connect(&self, addr: &str) -> Result<(FrameTx, FrameRx, u64)> {
        connect_fetch(
            addr,
            self.cluster_id,
            self.from_node,
            self.limits,
            self.tls.clone(),
        )
        .await
    }
}

struct Req {
    info: SegmentInfo,
    from: u64,
    max_len: u32,
    compress: bool,
}

fn put_info(w: &mut Writer<'_>, i: &SegmentInfo) {
    for v in [i.base_offset, i.end_offset, i.size_bytes] {
        w.u64(v);
    }
    w.u32(i.file_crc);
}

fn get_info(c: &mut Reader<'_>) -> DecodeResult<SegmentInfo> {
    Ok(SegmentInfo {
        base_offset: c.u64()?,
        end_offset: c.u64()?,
        size_bytes: c.u64()?,
        file_crc: c.u32()?,
    })
}

/// Encodes a message of the fetch protocol into a fresh buffer.
fn message(f: impl FnOnce(&mut Writer<'_>)) -> Bytes {
    let mut out = Vec::new();
    f(&mut Writer::new(&mut out));
    out.into()
}

fn encode_req(r: &Req) -> Bytes {
    message(|w| {
        w.u8(FETCH);
        put_info(w, &r.info);
        w.u64(r.from);
        w.u32(r.max_len);
        w.bool(r.compress);
    })
}

fn decode_req(b: &[u8]) -> DecodeResult<Req> {
    let mut c = Reader::new(b, "fetch request");
    if c.u8()? != FETCH {
        return Err(c.invalid());
    }
    let req = Req {
        info: get_info(&mut c)?,
        from: c.u64()?,
        max_len: c.u32()?,
        compress: c.bool()?,
    };
    c.finish(req)
}

/// The text of an ERROR reply (after its tag).
fn error_text(c: &mut Reader<'_>) -> String {
    c.text_u16(u16::MAX as usize).unwrap_or_default()
}

/// Whether a fetch-connection message is an IDENTIFY request.
pub fn is_identify(msg: &[u8]) -> bool {
    msg.first() == Some(&IDENTIFY)
}

/// Encodes an IDENTIFY request for the sealed segment starting at `base`.
pub fn encode_identify(base: u64) -> Bytes {
    message(|w| {
        w.u8(IDENTIFY);
        w.u64(base);
    })
}

/// Decodes an IDENTIFY request to its base offset.
pub fn decode_identify(b: &[u8]) -> Option<u64> {
    let mut c = Reader::new(b, "identify request");
    let base = (c.u8().ok()? == IDENTIFY)
        .then(|| c.u64())
        .transpose()
        .ok()??;
    c.finish(base).ok()
}

/// Encodes the answer to an IDENTIFY: the segment's identity, or NOT_HELD.
pub fn identity_reply(info: Option<&SegmentInfo>) -> Bytes {
    let Some(i) = info else {
        return Bytes::from_static(&[NOT_HELD]);
    };
    message(|w| {
        w.u8(IDENTITY);
        put_info(w, i);
    })
}

/// Decodes the answer to an IDENTIFY: `Ok(None)` for NOT_HELD.
pub fn decode_identity(b: &[u8]) -> std::result::Result<Option<SegmentInfo>, String> {
    let mut c = Reader::new(b, "identity reply");
    let v = match c.u8() {
        Ok(NOT_HELD) => Ok(None),
        Ok(IDENTITY) => get_info(&mut c).map(Some),
        Ok(ERROR) => return Err(format!("source error: {}", error_text(&mut c))),
        _ => Err(c.invalid()),
    };
    v.and_then(|v| c.finish(v))
        .map_err(|e| format!("malformed identity reply: {e}"))
}

/// Answers an IDENTIFY from `log`: the sealed segment starting at the asked base, if it lies
/// wholly below `commit_end` and its stored whole-file CRC can be read.
pub fn serve_identify(log: &Log, commit_end: u64, msg: &[u8]) -> Bytes {
    let Some(base) = decode_identify(msg) else {
        return error_reply("malformed identify request");
    };
    let held = log
        .sealed_segment_info(base)
        .filter(|i| i.end_offset <= commit_end);
    identity_reply(held.as_ref())
}

/// Asks the source at `addr` which sealed segment starts at `base` (`Ok(None)`: it holds
/// none wholly committed there).
pub async fn identify(addr: &str, base: u64, opts: &FetchOptions) -> Result<Option<SegmentInfo>> {
    let (mut tx, mut rx, _) = opts.connect(addr).await?;
    tx.send(encode_identify(base)).await?;
    let reply = rx.recv().await?;
    decode_identity(&reply).map_err(Error::Protocol)
}

/// Encodes an error reply of the fetch protocol.
/// The text is a diagnostic: it is clipped to [`MAX_ERROR_TEXT_BYTES`] (at a character
/// boundary) as the format documents.
pub fn error_reply(text: &str) -> Bytes {
    let t = clip_utf8(text, MAX_ERROR_TEXT_BYTES).as_bytes();
    message(|w| {
        w.u8(ERROR);
        // Fits: MAX_ERROR_TEXT_BYTES <= u16::MAX (asserted in `limits`).
        w.u16(t.len() as u16);
        w.raw(t);
    })
}

/// How long serving a chunk of a segment keeps that segment from retention: longer than a
/// fetcher's pause between two chunks (throttling, a retry), short enough that an abandoned
/// transfer does not hold retention back for long.
pub const TRANSFER_PIN_LEASE_MS: u64 = 30_000;

/// How long a segment stays leased after its last chunk was served. Holding the whole lease
/// after the transfer finished kept a rebuild's source 30 s behind retention (8 MB over the
/// soak's disk bound); the grace only covers a second transfer of the same segment that is
/// between two chunks (each of its requests renews the full lease).
pub const TRANSFER_DONE_GRACE_MS: u64 = 2_000;

/// Answers one fetch request from `log`'s sealed segments (the source side).
pub fn serve_chunk(log: &Log, msg: &[u8]) -> Bytes {
    let Ok(req) = decode_req(msg) else {
        return error_reply("malformed fetch request");
    };
    let Some(file) = log.sealed_segment_file(&req.info) else {
        return Bytes::from_static(&[NOT_HELD]);
    };
    // A transfer is many chunk requests: each renews a lease on the segment, so retention
    // does not delete it between two chunks (a fetcher gone quiet releases it when the lease
    // ends). The chunk itself reads through the open file, which outlives a deletion.
    log.lease_pin(
        req.info.base_offset,
        std::time::Duration::from_millis(TRANSFER_PIN_LEASE_MS),
    );
    if req.from >= req.info.size_bytes {
        return error_reply("fetch past the end of the segment");
    }
    let len =
        (req.info.size_bytes - req.from).min(u64::from(req.max_len.min(MAX_CHUNK_BYTES))) as usize;
    let mut raw = vec![0u8; len];
    if let Err(e) = read_exact_at(&*file, &mut raw, req.from) {
        return error_reply(&format!("read failed: {e}"));
    }
    if req.from + len as u64 >= req.info.size_bytes {
        log.shorten_lease_pin(
            req.info.base_offset,
            std::time::Duration::from_millis(TRANSFER_DONE_GRACE_MS),
        );
    }
    let raw_crc = checksum(&raw);
    let (compressed, data) = if req.compress {
        match zstd::bulk::compress(&raw, 1) {
            Ok(c) if c.len() < raw.len() => (true, c),
            _ => (false, raw),
        }
    } else {
        (false, raw)
    };
    chunk_reply(compressed, len as u32, raw_crc, &data)
}

/// Encodes a chunk reply (public for tests that build misbehaving sources).
/// `data` is at most one chunk (bounded by the caller's `max_len`, at most
/// [`MAX_CHUNK_BYTES`] plus what compression may add), far below the u32 length.
pub fn chunk_reply(compressed: bool, raw_len: u32, raw_crc: u32, data: &[u8]) -> Bytes {
    debug_assert!(data.len() <= u32::MAX as usize);
    let mut o = Vec::with_capacity(14 + data.len());
    let mut w = Writer::new(&mut o);
    w.u8(CHUNK);
    w.bool(compressed);
    w.u32(raw_len);
    w.u32(raw_crc);
    w.u32(data.len() as u32);
    w.raw(data);
    o.into()
}

/// Decodes a chunk reply into the raw bytes, verified.
fn decode_chunk(b: &[u8], asked: u32) -> std::result::Result<Vec<u8>, String> {
    let mut c = Reader::new(b, "chunk");
    match c.u8() {
        Ok(CHUNK) => {}
        Ok(NOT_HELD) => return Err("source does not hold the segment".into()),
        Ok(ERROR) => return Err(format!("source error: {}", error_text(&mut c))),
        _ => return Err("malformed chunk".into()),
    }
    let head = (|| Ok((c.u8()?, c.u32()?, c.u32()?)))();
    let (compressed, raw_len, raw_crc): (u8, u32, u32) =
        head.map_err(|e: DecodeError| format!("malformed chunk: {e}"))?;
    let data = c
        .bytes_u32(u32::MAX as usize)
        .map_err(|e| format!("bad chunk length: {e}"))?;
    c.finish(()).map_err(|e| format!("bad chunk length: {e}"))?;
    if raw_len > asked || raw_len == 0 {
        return Err(format!(
            "chunk of {raw_len} bytes, asked for at most {asked}"
        ));
    }
    let raw = match compressed {
        0 => data.to_vec(),
        // The decompressed size is bounded by what was asked for: no zip bomb.
        1 => zstd::bulk::decompress(data, raw_len as usize).map_err(|e| format!("zstd: {e}"))?,
        _ => return Err("bad compression flag".into()),
    };
    if raw.len() != raw_len as usize || checksum(&raw) != raw_crc {
        return Err("chunk checksum mismatch".into());
    }
    Ok(raw)
}

/// Progress of a catch-up: bytes done and total, for status displays.
#[derive(Debug, Default)]
pub struct FetchProgress {
    /// Bytes of segment files in place (fetched, or already held).
    pub done_bytes: AtomicU64,
    /// Bytes of all segments to have.
    pub total_bytes: AtomicU64,
}

/// Fetches one sealed segment into `staging` (resuming from what it already holds) from the
/// first of `sources` that serves it, verifies the whole file, and fsyncs it. Returns once
/// `staging` is a verified copy.
// The budget is the node's, the progress the caller's, the rest the segment's: no grouping
// of them would be used twice.
#[allow(clippy::too_many_arguments)]
pub async fn fetch_segment(
    io: &IoRef,
    log_id: u64,
    info: &SegmentInfo,
    staging: &Path,
    sources: &[String],
    opts: &FetchOptions,
    budget: &FetchBudget,
    progress: &FetchProgress,
) -> Result<()> {
    if sources.is_empty() {
        return Err(Error::InvalidArgument("no source to fetch from".into()));
    }
    let mut source = 0usize;
    for _attempt in 0..MAX_WHOLE_FILE_ATTEMPTS {
        let file = io.open(staging, true).map_err(|e| Error::io(staging, e))?;
        let mut pos = file.len().map_err(|e| Error::io(staging, e))?;
        if pos > info.size_bytes {
            file.set_len(0).map_err(|e| Error::io(staging, e))?;
            pos = 0;
        }
        progress.done_bytes.fetch_add(pos, Ordering::Relaxed);
        let mut conn: Option<(FrameTx, FrameRx)> = None;
        let mut failures = 0usize;
        while pos < info.size_bytes {
            if conn.is_none() {
                match opts.connect(&sources[source % sources.len()]).await {
                    Ok((tx, rx, _)) => conn = Some((tx, rx)),
                    Err(e) => {
                        failures += 1;
                        source += 1;
                        give_up_after(failures, sources.len(), &e.to_string())?;
                        continue;
                    }
                }
            }
            let want = (info.size_bytes - pos).min(u64::from(opts.chunk_bytes.min(MAX_CHUNK_BYTES)))
                as u32;
            let req = Req {
                info: *info,
                from: pos,
                max_len: want,
                compress: opts.compress,
            };
            let Some((tx, rx)) = conn.as_mut() else {
                continue;
            };
            let reply = async {
                tx.send(encode_req(&req)).await?;
                rx.recv().await
            }
            .await;
            // Decompressing, checking and writing a chunk is milliseconds of CPU and disk:
            // off the async threads, which carry this node's consensus traffic.
            let decoded = match reply {
                Ok(b) => match budget.run_cpu(move || decode_chunk(&b, want)).await {
                    Ok(Ok(raw)) => {
                        let f = file.clone();
                        let write = move || f.write_at_sync(&raw, pos).map(|()| raw.len() as u64);
                        tokio::task::spawn_blocking(write)
                            .await
                            .map_err(|e| e.to_string())
                    }
                    Ok(Err(why)) => Err(why),
                    Err(e) => Err(e.to_string()),
                },
                Err(e) => Err(e.to_string()),
            };
            let written = match decoded {
                Ok(written) => written.map_err(|e| Error::io(staging, e))?,
                Err(why) => {
                    if let Some(n) = CHUNK_FAILED.event() {
                        tracing::warn!(segment = info.base_offset, source = %sources[source % sources.len()], %why, failures = n, "fetch chunk failed; trying another source");
                    }
                    conn = None;
                    failures += 1;
                    source += 1;
                    give_up_after(failures, sources.len(), &why)?;
                    continue;
                }
            };
            pos += written;
            progress.done_bytes.fetch_add(written, Ordering::Relaxed);
            budget.spend(written).await;
        }
        let verified = {
            let (io, staging, info) = (io.clone(), staging.to_path_buf(), *info);
            budget
                .run_cpu(move || verify_segment_file(&io, &staging, &info, log_id))
                .await
                .and_then(|r| r)
        };
        match verified {
            Ok(()) => return Ok(()),
            Err(e) => {
                if let Some(n) = COPY_FAILED.event() {
                    tracing::warn!(segment = info.base_offset, error = %e, failures = n, "fetched copy failed verification; fetching it again");
                }
                progress.done_bytes.fetch_sub(pos, Ordering::Relaxed);
                file.set_len(0).map_err(|e| Error::io(staging, e))?;
                source += 1;
            }
        }
    }
    Err(Error::Corruption {
        segment: staging.to_path_buf(),
        file_offset: 0,
        record_offset: Some(info.base_offset),
        detail: "no source gave a copy that verifies".into(),
    })
}

/// Fails once every source failed several times in a row.
fn give_up_after(failures: usize, sources: usize, why: &str) -> Result<()> {
    if failures >= 3 * sources.max(1) {
        return Err(Error::Protocol(format!(
            "segment fetch failed from every source: {why}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_encoding_is_unchanged() {
        let info = SegmentInfo {
            base_offset: 1,
            end_offset: 2,
            size_bytes: 3,
            file_crc: 4,
        };
        let req = encode_req(&Req {
            info,
            from: 5,
            max_len: 6,
            compress: true,
        });
        let mut want = vec![FETCH];
        for v in [1u64, 2, 3] {
            want.extend_from_slice(&v.to_le_bytes());
        }
        want.extend_from_slice(&4u32.to_le_bytes());
        want.extend_from_slice(&5u64.to_le_bytes());
        want.extend_from_slice(&6u32.to_le_bytes());
        want.push(1);
        assert_eq!(&req[..], &want[..]);
        assert_eq!(&error_reply("no")[..], &[ERROR, 2, 0, b'n', b'o']);
        assert_eq!(
            &chunk_reply(false, 1, 2, b"x")[..],
            &[CHUNK, 0, 1, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, b'x']
        );
        let long = "é".repeat(MAX_ERROR_TEXT_BYTES);
        let err = decode_identity(&error_reply(&long)).unwrap_err();
        assert!(
            err.ends_with(&"é".repeat(MAX_ERROR_TEXT_BYTES / 2)),
            "clipped whole"
        );
    }

    #[test]
    fn requests_and_chunks_decode_and_reject_damage() {
        let info = SegmentInfo {
            base_offset: 10,
            end_offset: 20,
            size_bytes: 5000,
            file_crc: 7,
        };
        let r = decode_req(&encode_req(&Req {
            info,
            from: 100,
            max_len: 4096,
            compress: true,
        }))
        .unwrap();
        assert_eq!(
            (r.info, r.from, r.max_len, r.compress),
            (info, 100, 4096, true)
        );
        assert!(decode_req(&[FETCH, 1, 2]).is_err());

        let raw = vec![42u8; 3000];
        let plain = chunk_reply(false, 3000, checksum(&raw), &raw);
        assert_eq!(decode_chunk(&plain, 4096).unwrap(), raw);
        let z = zstd::bulk::compress(&raw, 1).unwrap();
        let packed = chunk_reply(true, 3000, checksum(&raw), &z);
        assert_eq!(decode_chunk(&packed, 4096).unwrap(), raw);
        // Larger than asked, damaged data, a lying length, a decompression bomb.
        assert!(decode_chunk(&plain, 100).is_err());
        let mut bad = plain.to_vec();
        bad[20] ^= 1;
        assert!(decode_chunk(&bad, 4096).is_err());
        let lying = chunk_reply(true, 10, checksum(&raw), &z);
        assert!(decode_chunk(&lying, 4096).is_err());
        assert!(decode_chunk(&[NOT_HELD], 10)
            .unwrap_err()
            .contains("does not hold"));
    }

    #[test]
    fn identify_round_trips_and_rejects_malformed_messages() {
        let info = SegmentInfo {
            base_offset: 10,
            end_offset: 20,
            size_bytes: 5000,
            file_crc: 7,
        };
        assert_eq!(decode_identify(&encode_identify(42)), Some(42));
        assert!(is_identify(&encode_identify(42)));
        assert!(!is_identify(&encode_req(&Req {
            info,
            from: 0,
            max_len: 1,
            compress: false
        })));
        assert_eq!(decode_identify(&[IDENTIFY, 1, 2]), None);
        assert_eq!(decode_identify(&[]), None);
        assert_eq!(
            decode_identity(&identity_reply(Some(&info))).unwrap(),
            Some(info)
        );
        assert_eq!(decode_identity(&identity_reply(None)).unwrap(), None);
        let full = identity_reply(Some(&info));
        for cut in 0..full.len() {
            assert!(decode_identity(&full[..cut]).is_err());
        }
        let mut long = full.to_vec();
        long.push(0);
        assert!(decode_identity(&long).is_err());
        assert!(decode_identity(&error_reply("no"))
            .unwrap_err()
            .contains("no"));
    }

    #[test]
    fn identify_answers_only_for_committed_sealed_segments() {
        let dir = tempfile::tempdir().unwrap();
        let opts = crate::storage::LogOptions {
            segment_size_bytes: 16 << 10,
            max_record_bytes: 1 << 10,
            preallocate: false,
            ..crate::storage::LogOptions::default()
        };
        let log = Log::open(dir.path(), opts).unwrap();
        for _ in 0..200 {
            log.append(&[7u8; 200]).unwrap();
        }
        let info = log.sealed_segments(u64::MAX).unwrap()[1];
        let ask = encode_identify(info.base_offset);
        let answer = |commit_end| decode_identity(&serve_identify(&log, commit_end, &ask));
        assert_eq!(answer(info.end_offset).unwrap(), Some(info));
        assert_eq!(answer(info.end_offset - 1).unwrap(), None);
        let active = log.segments_snapshot().last().unwrap().base_offset;
        assert!(active < log.end_offset());
        let ask_active = encode_identify(active);
        assert_eq!(
            decode_identity(&serve_identify(&log, u64::MAX, &ask_active)).unwrap(),
            None
        );
        assert!(decode_identity(&serve_identify(&log, u64::MAX, &[IDENTIFY])).is_err());
    }

    #[test]
    fn a_segment_being_served_is_kept_from_retention() {
        let dir = tempfile::tempdir().unwrap();
        let opts = crate::storage::LogOptions {
            segment_size_bytes: 16 << 10,
            max_record_bytes: 1 << 10,
            preallocate: false,
            retention_bytes: Some(32 << 10),
            ..crate::storage::LogOptions::default()
        };
        let log = Log::open(dir.path(), opts).unwrap();
        // Everything stays while the pin at 0 lives.
        let hold = log.pin(0);
        for _ in 0..600 {
            log.append(&[7u8; 200]).unwrap();
        }
        let first = log.sealed_segments(u64::MAX).unwrap()[1];
        let req = encode_req(&Req {
            info: first,
            from: 0,
            max_len: 4096,
            compress: false,
        });
        assert_eq!(serve_chunk(&log, &req)[0], CHUNK);
        drop(hold);
        // A transfer of `first` is under way: retention deletes only what lies below it.
        log.apply_retention().unwrap();
        assert_eq!(log.start_offset(), first.base_offset);
        assert!(log.sealed_segment_file(&first).is_some());
        let lease_left = || {
            log.lease_expiry(first.base_offset)
                .expect("leased")
                .saturating_duration_since(std::time::Instant::now())
        };
        assert!(lease_left() > Duration::from_millis(TRANSFER_PIN_LEASE_MS / 2));
        // Its last chunk served, the transfer holds the segment only for a short grace (a
        // finished transfer held retention back for 30 s: 8 MB over the soak's disk bound).
        let last = encode_req(&Req {
            info: first,
            from: first.size_bytes - 100,
            max_len: 4096,
            compress: false,
        });
        assert_eq!(serve_chunk(&log, &last)[0], CHUNK);
        assert!(lease_left() <= Duration::from_millis(TRANSFER_DONE_GRACE_MS));
    }
}
