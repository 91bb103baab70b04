//! Append streams reuse the connection of the last clean stream, and only that one.
//!
//! The peer is an in-memory server answering the real wire encoding; what is checked is how
//! many connections the client opens for a run of heartbeat-like streams.

use super::*;
use crate::raft::{log_id, NodeInfo};
use openraft::raft::StreamAppendError;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// Most streams any test here runs.
const MAX_STREAMS: usize = 8;

struct MemTx(UnboundedSender<Bytes>);
struct MemRx(UnboundedReceiver<Bytes>);

impl MessageTx for MemTx {
    async fn send(&mut self, msg: Bytes) -> Result<()> {
        self.0
            .send(msg)
            .map_err(|_| Error::Protocol("connection closed".into()))
    }
}

impl MessageRx for MemRx {
    async fn recv(&mut self) -> Result<Bytes> {
        self.0
            .recv()
            .await
            .ok_or_else(|| Error::Protocol("connection closed".into()))
    }
}

/// How the in-memory server answers.
#[derive(Clone, Copy)]
enum Answer {
    /// Success to every request.
    Success,
    /// A rejection (a higher vote) to the first request, then it closes, like the node does.
    Reject,
    /// Success to the first request, then it closes (an idle timeout or eviction).
    OnceThenClose,
}

#[derive(Clone)]
struct MemConnector {
    opened: Arc<AtomicUsize>,
    answer: Answer,
}

impl Connector for MemConnector {
    type Tx = MemTx;
    type Rx = MemRx;

    async fn connect(&self, _: u64, _: &str, purpose: ConnPurpose) -> Result<(MemTx, MemRx)> {
        assert_eq!(purpose, ConnPurpose::AppendStream);
        self.opened.fetch_add(1, Ordering::SeqCst);
        let (to_server, mut server_in) = unbounded_channel::<Bytes>();
        let (server_out, from_server) = unbounded_channel::<Bytes>();
        let answer = self.answer;
        tokio::spawn(async move {
            while let Some(msg) = server_in.recv().await {
                let req = wire::decode_append(&msg).expect("a valid append request");
                let (result, close) = match answer {
                    Answer::Success => (Ok(req.prev_log_id), false),
                    Answer::Reject => (Err(StreamAppendError::HigherVote(Vote::new(9, 9))), true),
                    Answer::OnceThenClose => (Ok(req.prev_log_id), true),
                };
                if server_out.send(wire::encode_stream_result(&result)).is_err() || close {
                    return; // drops both halves: the client sees the close
                }
            }
        });
        Ok((MemTx(to_server), MemRx(from_server)))
    }
}

fn heartbeat(index: u64) -> AppendEntriesRequest<TypeConfig> {
    AppendEntriesRequest {
        vote: Vote::new_committed(1, 1),
        prev_log_id: Some(log_id(1, index)),
        entries: vec![],
        leader_commit: None,
    }
}

/// Runs `streams` one-request streams in turn on one network; each stream's results.
async fn run_streams(
    answer: Answer,
    streams: usize,
) -> (Vec<Vec<StreamAppendResult<TypeConfig>>>, usize) {
    assert!(streams <= MAX_STREAMS);
    let opened = Arc::new(AtomicUsize::new(0));
    let connector = MemConnector {
        opened: opened.clone(),
        answer,
    };
    let node = NodeInfo {
        site: "s2".into(),
        addr: "mem:2".into(),
    };
    let mut net = RemoteNetworkFactory::new(connector)
        .new_client(2, &node)
        .await;
    let mut all = Vec::new();
    for i in 0..streams as u64 {
        let input = Box::pin(futures_util::stream::once(async move { heartbeat(i + 1) }));
        let option = RPCOption::new(Duration::from_secs(5));
        let out = net.stream_append(input, option).await.expect("connected");
        let results: Vec<_> = out.map(|r| r.expect("no transport error")).collect().await;
        all.push(results);
    }
    (all, opened.load(Ordering::SeqCst))
}

#[tokio::test]
async fn clean_streams_share_one_connection() {
    let (results, opened) = run_streams(Answer::Success, 5).await;
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r, &vec![Ok(Some(log_id(1, i as u64 + 1)))]);
    }
    assert_eq!(opened, 1, "five clean streams, one connection");
}

#[tokio::test]
async fn a_rejected_stream_leaves_no_connection_behind() {
    let (results, opened) = run_streams(Answer::Reject, 3).await;
    for r in &results {
        assert_eq!(r, &vec![Err(StreamAppendError::HigherVote(Vote::new(9, 9)))]);
    }
    assert_eq!(opened, 3, "every stream after a rejection connects anew");
}

#[tokio::test]
async fn a_connection_the_server_closed_is_not_reused() {
    let (results, opened) = run_streams(Answer::OnceThenClose, 3).await;
    // Every stream succeeds: the closed connection is noticed before it is used.
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r, &vec![Ok(Some(log_id(1, i as u64 + 1)))]);
    }
    assert_eq!(opened, 3);
}
