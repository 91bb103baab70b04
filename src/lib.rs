//! sitelog: a replicated, append-only message log that survives the loss of a whole site.
//!
//! Layers, each depending only on those below it: [`io`] (one trait over file operations),
//! [`storage`] (the local log, [`Log`]), [`raft`] (openraft on the segment log), [`net`]
//! (the TCP transport and bulk segment fetch) and [`node`] (the embedding API, `Node`).
#![warn(missing_docs)]

pub(crate) mod codec;
pub mod error;
pub mod io;
pub mod limits;
pub mod net;
pub mod node;
pub mod raft;
pub mod storage;

pub use error::{Error, Result};
pub use storage::{EntryKind, IoBackend, Log, LogOptions, PrepareStats, Record, SyncMode};
