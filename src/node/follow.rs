//! Following a cluster's log from a client: [`Client::subscribe`] reads committed records in
//! batches with [`Client::read`] and, once it reached the commit end, waits a poll period
//! before asking again (the protocol has no push, and a short poll keeps the node's work per
//! follower to one small request per period).

use super::client::Client;
use super::protocol::WireRecord;
use crate::{Error, Result};
use futures_util::stream::{self, Stream};
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// Default period between two reads once the follower reached the commit end.
pub const DEFAULT_FOLLOW_POLL_MS: u64 = 50;
/// Bounds of the poll period: tighter only loads the node, looser only delays the reader.
pub const FOLLOW_POLL_MS_MIN: u64 = 1;
/// See [`FOLLOW_POLL_MS_MIN`].
pub const FOLLOW_POLL_MS_MAX: u64 = 60_000;
/// Default records asked for per read (a reply is also capped at 4 MiB by the node).
pub const DEFAULT_FOLLOW_BATCH_RECORDS: u32 = 1000;
/// Bound of the batch size (the CLI's `read` asks for as many).
pub const FOLLOW_BATCH_RECORDS_MAX: u32 = 10_000;

/// How a [`ClientSubscription`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FollowOptions {
    /// Wait this long before reading again at the commit end, or after a failed read
    /// (clamped to `FOLLOW_POLL_MS_MIN`, `FOLLOW_POLL_MS_MAX`).
    pub poll_ms: u64,
    /// Records asked for per read (clamped to 1, `FOLLOW_BATCH_RECORDS_MAX`).
    pub batch_records: u32,
}

impl Default for FollowOptions {
    fn default() -> Self {
        FollowOptions {
            poll_ms: DEFAULT_FOLLOW_POLL_MS,
            batch_records: DEFAULT_FOLLOW_BATCH_RECORDS,
        }
    }
}

impl Client {
    /// Committed records from `from`, in order, following the commit end with the default
    /// [`FollowOptions`] (see [`ClientSubscription`]). The stream has its own connection.
    pub fn subscribe(&self, from: u64) -> ClientSubscription {
        self.subscribe_with(from, FollowOptions::default())
    }

    /// [`Client::subscribe`] with explicit options.
    pub fn subscribe_with(&self, from: u64, opts: FollowOptions) -> ClientSubscription {
        ClientSubscription::new(self.sibling(), from, opts)
    }
}

/// Committed application records (Raft's own entries are not served to clients) from a
/// cluster, in order: a [`Stream`] of `Result<WireRecord>`.
///
/// End-of-stream rule: the stream ends only after yielding [`Error::BelowFloor`] (the position
/// was deleted by retention: subscribe anew at `first_available`). Any other error (no node
/// answered) is yielded and the stream goes on: it waits one poll period and reads the same
/// position again, from any node. The caller decides how many failures it tolerates.
pub struct ClientSubscription {
    inner: Pin<Box<dyn Stream<Item = Result<WireRecord>> + Send>>,
}

impl std::fmt::Debug for ClientSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientSubscription")
    }
}

impl Stream for ClientSubscription {
    type Item = Result<WireRecord>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// The follower's state, owned by the stream.
struct Follower {
    client: Client,
    /// The offset to read next (one past the last record buffered).
    next: u64,
    /// Records read but not yielded yet.
    buffered: VecDeque<WireRecord>,
    /// Sleep before the next read: the last one reached the commit end or failed.
    wait: bool,
    ended: bool,
    poll: Duration,
    batch_records: u32,
}

impl ClientSubscription {
    fn new(client: Client, from: u64, opts: FollowOptions) -> ClientSubscription {
        let poll_ms = opts.poll_ms.clamp(FOLLOW_POLL_MS_MIN, FOLLOW_POLL_MS_MAX);
        let follower = Follower {
            client,
            next: from,
            buffered: VecDeque::new(),
            wait: false,
            ended: false,
            poll: Duration::from_millis(poll_ms),
            batch_records: opts.batch_records.clamp(1, FOLLOW_BATCH_RECORDS_MAX),
        };
        let inner = stream::unfold(follower, |mut f| async move {
            let item = f.next_item().await?;
            Some((item, f))
        });
        ClientSubscription {
            inner: Box::pin(inner),
        }
    }
}

impl Follower {
    /// The next record or error; `None` once ended.
    async fn next_item(&mut self) -> Option<Result<WireRecord>> {
        loop {
            if let Some(rec) = self.buffered.pop_front() {
                return Some(Ok(rec));
            }
            if self.ended {
                return None;
            }
            if self.wait {
                tokio::time::sleep(self.poll).await;
            }
            match self.client.read(self.next, self.batch_records).await {
                Ok((commit_end, records)) => self.take_batch(commit_end, records),
                Err(e @ Error::BelowFloor { .. }) => {
                    self.ended = true;
                    return Some(Err(e));
                }
                Err(e) => {
                    self.wait = true;
                    return Some(Err(e));
                }
            }
        }
    }

    fn take_batch(&mut self, commit_end: u64, records: Vec<WireRecord>) {
        match records.last().map(|r| r.offset) {
            Some(last) => {
                debug_assert!(records[0].offset >= self.next, "records come in order");
                self.next = last + 1;
            }
            // Nothing to serve below the commit end: only Raft's own entries lay there (or the
            // node that answered lags behind what we already read, then nothing moves).
            None => self.next = self.next.max(commit_end),
        }
        self.wait = self.next >= commit_end;
        self.buffered.extend(records);
    }
}

#[cfg(test)]
#[path = "follow_tests.rs"]
mod tests;
