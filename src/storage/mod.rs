//! The local log: record format, segments, sparse index, superblock, recovery, readers and
//! retention. Usable on its own through [`Log`], without any network.

pub(crate) mod background;
pub mod checksum;
#[cfg(test)]
mod direct_io_tests;
pub mod group_commit;
pub mod index;
pub mod log;
pub mod manifest;
mod namer;
#[cfg(test)]
mod namer_tests;
pub mod options;
pub mod pin;
pub mod read_ahead;
#[cfg(test)]
mod read_ahead_tests;
pub mod reader;
pub mod record;
pub mod recovery;
#[cfg(test)]
mod recycle_tests;
pub mod repair;
mod sealer;
#[cfg(test)]
mod seal_tests;
pub mod segment;
pub mod superblock;
mod truncate;
pub mod verify;
mod writer;

pub use self::log::{Log, NewRecord, PurgeOutcome};
pub use background::PrepareStats;
pub use group_commit::CommitStats;
pub use group_commit::DurableFuture;
pub use manifest::SegmentInfo;
pub use options::{IoBackend, LogOptions, SyncMode};
pub use pin::Pin;
pub use reader::{Iter, TailReader};
pub use record::{EntryKind, Record};
pub use recovery::{RecoveryReport, TornTail};
pub use verify::VerifyReport;
#[cfg_attr(not(any(feature = "cli", feature = "testing")), allow(unused_imports))]
pub use verify::{read_dir, verify_dir};
#[cfg_attr(not(any(feature = "cli", feature = "testing")), allow(unused_imports))]
pub use recovery::PendingRecovery;
#[cfg_attr(not(feature = "testing"), allow(unused_imports))]
pub use verify::DirReport;
