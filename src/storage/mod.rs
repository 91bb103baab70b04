//! The local log: record format, segments, sparse index, superblock, recovery, readers and
//! retention. Usable on its own through [`Log`], without any network.

pub mod checksum;
pub mod index;
pub mod log;
pub mod options;
pub mod reader;
pub mod record;
pub mod recovery;
pub mod segment;
pub mod superblock;
pub mod verify;

pub use self::log::{Log, NewRecord, PurgeOutcome};
pub use options::{LogOptions, SyncMode};
pub use reader::{Iter, TailReader};
pub use record::{EntryKind, Record};
pub use recovery::RecoveryReport;
pub use verify::VerifyReport;
