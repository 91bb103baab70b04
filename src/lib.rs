//! sitelog: a replicated, append-only message log that survives the loss of a whole site.
//!
//! Layers, each depending only on those below it: `io` (one trait over file operations),
//! `storage` (the local log, [`Log`]), `raft` (consensus on the segment log), `net` (the TCP
//! transport and bulk segment fetch) and `node` (a replica, [`Node`], and [`Client`]). The
//! layers are internal: everything an embedder names is re-exported here at the crate root,
//! and the option and configuration structs are `#[non_exhaustive]` (start from `default()` or
//! [`NodeConfig::new`] and assign fields), so new settings are not breaking changes.
//!
//! # A local log
//!
//! [`Log`] is one directory of segment files. With the default [`SyncMode::Always`] an
//! append returns once its record is fsynced; reopening recovers what was acknowledged.
//!
//! ```
//! use sitelog::{Log, LogOptions};
//!
//! # fn main() -> sitelog::Result<()> {
//! let dir = tempfile::tempdir().expect("a temporary directory");
//! let mut opts = LogOptions::default();
//! opts.segment_size_bytes = 4 << 20;
//! opts.max_record_bytes = 1 << 20;
//! let log = Log::open(dir.path(), opts.clone())?;
//! let first = log.append(b"hello")?;
//! let more = log.append_batch(&[b"two".as_slice(), b"three"])?;
//! assert_eq!(more.start, first + 1);
//! assert_eq!(log.read(first)?.payload.as_ref(), b"hello");
//! log.close()?;
//!
//! // Reopening recovers every acknowledged record.
//! let log = Log::open(dir.path(), opts)?;
//! assert_eq!(log.end_offset(), more.end);
//! let payloads: Vec<_> = log
//!     .iter(first)
//!     .map(|r| r.map(|r| r.payload))
//!     .collect::<sitelog::Result<_>>()?;
//! assert_eq!(payloads, [&b"hello"[..], b"two", b"three"]);
//! # Ok(())
//! # }
//! ```
//!
//! # A three-node cluster in one process
//!
//! Each [`Node`] is one replica (in production: one process per site, `sitelog node`).
//! Every founding member is given the same members (id, site, address), so the listeners are
//! bound first. Appends go to the leader ([`Client`] finds it) and are
//! acknowledged once a majority has them fsynced. The first message lands at offset 2: Raft's
//! own entries (the founding membership, the first leader's blank entry) take 0 and 1. A lost
//! site is replaced with one call, [`Node::replace_site`] (or the same on a `Client`).
//!
//! ```
//! use bytes::Bytes;
//! use futures_util::StreamExt;
//! use sitelog::{AppendOutcome, Client, Node, NodeConfig, Peer, ReplaceEvent, ReplaceOptions};
//! use std::collections::BTreeMap;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     const CLUSTER: u64 = 0x5e1f;
//!     let dir = tempfile::tempdir()?;
//!     let mut listeners = BTreeMap::new();
//!     let mut members = BTreeMap::new();
//!     for id in 1..=3u64 {
//!         let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//!         let peer = Peer {
//!             site: format!("site-{id}"),
//!             addr: l.local_addr()?.to_string(),
//!         };
//!         members.insert(id, peer);
//!         listeners.insert(id, l);
//!     }
//!     let mut nodes = Vec::new();
//!     for (id, listener) in listeners {
//!         let site = &members[&id].site;
//!         let data = dir.path().join(format!("n{id}"));
//!         let mut cfg = NodeConfig::new(id, site, data, "127.0.0.1:0", CLUSTER);
//!         cfg.initial_members = members.clone();
//!         cfg.log.segment_size_bytes = 4 << 20;
//!         nodes.push(Node::start_on(cfg, listener).await?);
//!     }
//!
//!     let addrs = members.values().map(|p| p.addr.clone()).collect();
//!     let client = Client::new(addrs, CLUSTER);
//!     let offsets = match client.append(vec![Bytes::from_static(b"hello")]).await {
//!         AppendOutcome::Ok(offsets) => offsets,
//!         other => panic!("not acknowledged: {other:?}"),
//!     };
//!     let (_commit_end, records) = client.read(offsets[0], 10).await?;
//!     assert_eq!(records[0].payload.as_ref(), b"hello");
//!
//!     // The leader's Node serves appends directly too (a follower answers NotLeader).
//!     let leader = nodes
//!         .iter()
//!         .find(|n| n.status().leader == Some(n.id()))
//!         .expect("a leader: the append was acknowledged");
//!     let at = leader.append(vec![Bytes::from_static(b"world")]).await?;
//!     assert_eq!(leader.read(at[0])?.payload.as_ref(), b"world");
//!
//!     // A follower's site burns down. A new node in a new site (started without members)
//!     // replaces it: added as a learner, caught up (by snapshot when it is far behind),
//!     // then swapped in for the lost voter, with progress events along the way.
//!     let lost = nodes.iter().position(|n| n.id() != leader.id()).expect("a follower");
//!     let lost = nodes.remove(lost);
//!     let lost_id = lost.id();
//!     lost.shutdown().await?;
//!     let data = dir.path().join("n4");
//!     let cfg = NodeConfig::new(4, "site-4", data, "127.0.0.1:0", CLUSTER);
//!     let new = Node::start(cfg).await?;
//!     let addr = new.advertise_addr().to_string();
//!     let peer = Peer { site: "site-4".into(), addr };
//!     let leader = nodes.iter().find(|n| n.id() != lost_id).expect("a live node");
//!     let mut replace = leader.replace_site(lost_id, 4, peer, ReplaceOptions::default());
//!     let mut voters = Vec::new();
//!     while let Some(event) = replace.next().await {
//!         match event {
//!             ReplaceEvent::Progress(p) => println!("{:?} {}", p.phase, p.commit_done),
//!             ReplaceEvent::Done { voters: v } => voters = v,
//!             ReplaceEvent::Failed(e) => return Err(e.into()),
//!         }
//!     }
//!     assert!(voters.contains(&4) && !voters.contains(&lost_id));
//!     assert_eq!(new.read(at[0])?.payload.as_ref(), b"world");
//!     nodes.push(new);
//!     for node in nodes {
//!         node.shutdown().await?;
//!     }
//!     Ok(())
//! }
//! ```
#![warn(missing_docs)]

/// Declares an internal module: private in the library's API, `pub` (and hidden from the docs)
/// with the `testing` feature, which this crate's own tests, benches and fuzz targets turn on
/// (a dev-dependency on itself) to reach the test hooks and the layers below the façade.
macro_rules! internal_mod {
    ($name:ident) => {
        #[cfg(feature = "testing")]
        #[doc(hidden)]
        pub mod $name;
        #[cfg(not(feature = "testing"))]
        mod $name;
    };
}

pub(crate) mod codec;
internal_mod!(error);
internal_mod!(io);
pub mod limits;
internal_mod!(net);
internal_mod!(node);
// The consensus layer names the consensus library's types: never part of the API (see
// .ci/public-api-check), whatever the features.
internal_mod!(raft);
internal_mod!(storage);
// The command line (the `sitelog` binary, src/main.rs, only calls `cli::main`). It lives in
// the library so that it reaches the internal modules as `crate::...`; not part of the API.
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod cli;

// The façade: everything an embedder names. The modules above are internal; a type reachable
// from these (an argument, a return value, a field) is re-exported here too.
pub use error::{Error, Result};
pub use net::fetch::FetchOptions;
pub use net::limits::KindBudgets;
pub use net::tls::{ClientRole, Operation, Security, TlsDir};
pub use net::NetLimits;
pub use node::catchup::CatchUpOptions;
pub use node::client::{
    AppendOutcome, Client, ProduceReport, Producer, DEFAULT_PRODUCE_RETRY_DEADLINE_MS,
};
pub use node::follow::{ClientSubscription, FollowOptions};
pub use node::protocol::WireRecord;
pub use node::repair::{RepairOptions, RepairStats};
pub use node::{
    FollowerProgress, HealOptions, Health, Node, NodeConfig, NodeStatus, Peer, Placement,
    ProduceAck, ProducerInfo, ProducerSettings, ReplaceEvent, ReplaceOptions, ReplacePhase,
    ReplaceProgress, ReplaceStream, Role, SnapshotSettings, Subscription, Timers,
};
pub use raft::health::Fault;
pub use storage::{
    CommitStats, DurableFuture, EntryKind, IoBackend, Iter, Log, LogOptions, NewRecord, Pin,
    PrepareStats, PurgeOutcome, Record, RecoveryReport, SegmentInfo, SyncMode, TailReader,
    TornTail, VerifyReport,
};
