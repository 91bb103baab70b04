//! Bulk segment fetch over real TCP: sources that do not hold the segment or send damaged
//! chunks are skipped; a fetch resumes from a partial staging file without fetching its bytes
//! again; a staging file with garbage fails whole-file verification and is fetched again;
//! fetched copies are adopted by a new log and read back identical.

use bytes::Bytes;
use sitelog::io::{IoRef, PosixIo};
use sitelog::net::fetch::{chunk_reply, fetch_segment, serve_chunk, FetchOptions, FetchProgress};
use sitelog::net::fetch_budget::FetchBudget;
use sitelog::net::tcp::{serve, BoxFut, FrameRx, FrameTx, NetLimits, ServerIdentity, Service};
use sitelog::storage::checksum::checksum;
use sitelog::{IoBackend, Log, LogOptions};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const CLUSTER: u64 = 0xfe7c;
const LOG_ID: u64 = 0x77;

#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    Honest,
    CorruptChunks,
}

struct Source {
    log: Log,
    behaviour: Behaviour,
    served_bytes: Arc<AtomicU64>,
}

impl Service for Source {
    fn rpc(&self, _: u64, _: Bytes) -> BoxFut<Bytes> {
        Box::pin(async { Bytes::new() })
    }
    fn append_stream(&self, _: u64, _: FrameTx, _: FrameRx) -> BoxFut<sitelog::Result<()>> {
        Box::pin(async { Ok(()) })
    }
    fn client(&self, _: sitelog::net::tls::ClientRole, _: Bytes) -> BoxFut<Bytes> {
        Box::pin(async { Bytes::new() })
    }
    fn fetch(&self, msg: Bytes) -> BoxFut<Bytes> {
        let reply = serve_chunk(&self.log, &msg);
        if reply[0] == 0x71 {
            let raw_len = u32::from_le_bytes(reply[2..6].try_into().unwrap());
            self.served_bytes
                .fetch_add(u64::from(raw_len), Ordering::Relaxed);
        }
        let reply = match self.behaviour {
            Behaviour::CorruptChunks if reply[0] == 0x71 => {
                // Same length, one byte changed, checksum of the original: a bad source.
                let mut data = reply[14..].to_vec();
                data[0] ^= 0xff;
                let raw_crc = u32::from_le_bytes(reply[6..10].try_into().unwrap());
                chunk_reply(
                    reply[1] == 1,
                    u32::from_le_bytes(reply[2..6].try_into().unwrap()),
                    raw_crc,
                    &data,
                )
            }
            _ => reply,
        };
        Box::pin(async move { reply })
    }
}

fn opts(dir: &Path) -> LogOptions {
    let _ = dir;
    let mut opts = LogOptions::default();
    opts.segment_size_bytes = 256 << 10;
    opts.max_record_bytes = 16 << 10;
    opts.log_id = Some(LOG_ID);
    opts.durable_hints = false;
    opts.io = IoBackend::Posix;
    opts
}

async fn start_source(log: Log, behaviour: Behaviour) -> (String, Arc<AtomicU64>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let served = Arc::new(AtomicU64::new(0));
    let svc = Arc::new(Source {
        log,
        behaviour,
        served_bytes: served.clone(),
    });
    let id = ServerIdentity {
        node_id: 1,
        cluster_id: CLUSTER,
        limits: NetLimits::default(),
        tls: None,
    };
    tokio::spawn(serve(l, id, svc));
    (addr, served)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_skips_bad_sources_resumes_and_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let src_dir = tmp.path().join("src");
    let log = Log::open(&src_dir, opts(&src_dir)).unwrap();
    let payloads: Vec<Vec<u8>> = (0..3000u32)
        .map(|i| {
            let mut rng = fastrand::Rng::with_seed(u64::from(i));
            (0..rng.usize(50..600))
                .map(|_| rng.alphanumeric() as u8)
                .collect()
        })
        .collect();
    for chunk in payloads.chunks(100) {
        log.append_batch(chunk).unwrap();
    }
    let manifest = log.sealed_segments(log.end_offset()).unwrap();
    assert!(manifest.len() >= 4, "{manifest:?}");

    let empty_dir = tmp.path().join("empty");
    let empty = Log::open(&empty_dir, opts(&empty_dir)).unwrap();
    let (not_holding, _) = start_source(empty, Behaviour::Honest).await;
    let (corrupting, _) = start_source(log.clone(), Behaviour::CorruptChunks).await;
    let (good, served) = start_source(log.clone(), Behaviour::Honest).await;
    let sources = vec![not_holding, corrupting, good];

    let io: IoRef = PosixIo::new_ref();
    let stage = tmp.path().join("stage");
    std::fs::create_dir_all(&stage).unwrap();
    let mut fopts = FetchOptions::new(CLUSTER);
    fopts.chunk_bytes = 64 << 10;
    let progress = FetchProgress::default();
    let budget = FetchBudget::new(fopts.max_bytes_per_s);

    // Segment 0: from scratch, past the two bad sources.
    let s0 = &manifest[0];
    let p0 = stage.join("0");
    fetch_segment(&io, LOG_ID, s0, &p0, &sources, &fopts, &budget, &progress)
        .await
        .unwrap();
    let src_file = |base: u64| std::fs::read(src_dir.join(format!("{base:020}.seg"))).unwrap();
    assert_eq!(std::fs::read(&p0).unwrap(), src_file(0));

    // Segment 1: half of it already staged (an interrupted fetch): only the rest is fetched.
    let s1 = &manifest[1];
    let p1 = stage.join("1");
    let whole = src_file(s1.base_offset);
    let half = whole.len() / 2;
    std::fs::write(&p1, &whole[..half]).unwrap();
    let before = served.load(Ordering::Relaxed);
    fetch_segment(&io, LOG_ID, s1, &p1, &sources, &fopts, &budget, &progress)
        .await
        .unwrap();
    let fetched = served.load(Ordering::Relaxed) - before;
    assert_eq!(
        fetched,
        (whole.len() - half) as u64,
        "resumed, not refetched"
    );
    assert_eq!(std::fs::read(&p1).unwrap(), whole);

    // Segment 2: a staged prefix with garbage (a crash mid-write): verification fails, the
    // copy is fetched again from the start, and ends up right.
    let s2 = &manifest[2];
    let p2 = stage.join("2");
    let whole2 = src_file(s2.base_offset);
    let mut garbage = whole2[..whole2.len() / 3].to_vec();
    let g = garbage.len() - 10;
    garbage[g] ^= 0x5a;
    std::fs::write(&p2, &garbage).unwrap();
    fetch_segment(&io, LOG_ID, s2, &p2, &sources, &fopts, &budget, &progress)
        .await
        .unwrap();
    assert_eq!(checksum(&std::fs::read(&p2).unwrap()), checksum(&whole2));

    // A source whose own copy of segment 3 is damaged on disk (its chunks are internally
    // consistent, so only the whole-file check can tell): the copy fails verification and is
    // fetched again from the next source.
    let rot_dir = tmp.path().join("rot");
    std::fs::create_dir_all(&rot_dir).unwrap();
    for e in std::fs::read_dir(&src_dir).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "LOCK" {
            std::fs::copy(e.path(), rot_dir.join(e.file_name())).unwrap();
        }
    }
    let s3 = manifest[3];
    let rotten = rot_dir.join(format!("{:020}.seg", s3.base_offset));
    let mut bytes = std::fs::read(&rotten).unwrap();
    bytes[5000] ^= 0x20;
    std::fs::write(&rotten, bytes).unwrap();
    let rot_log = Log::open(&rot_dir, opts(&rot_dir)).unwrap();
    let (rot_src, _) = start_source(rot_log, Behaviour::Honest).await;
    let (good2, _) = start_source(log.clone(), Behaviour::Honest).await;
    let p3 = stage.join("3");
    fetch_segment(
        &io,
        LOG_ID,
        &s3,
        &p3,
        &[rot_src, good2],
        &fopts,
        &budget,
        &progress,
    )
    .await
    .unwrap();
    assert_eq!(std::fs::read(&p3).unwrap(), src_file(s3.base_offset));

    // A new replica adopts the three copies and reads the records back.
    let new_dir = tmp.path().join("new");
    let new = Log::open(&new_dir, opts(&new_dir)).unwrap();
    let staged: Vec<_> = manifest[..3].iter().copied().zip([p0, p1, p2]).collect();
    new.adopt_sealed(&staged).unwrap();
    for (i, p) in payloads.iter().enumerate().take(s2.end_offset as usize) {
        assert_eq!(new.read(i as u64).unwrap().payload.as_ref(), &p[..]);
    }
    new.verify().unwrap();
}
