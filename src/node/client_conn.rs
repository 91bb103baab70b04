//! One pipelined client connection to a node, shared by every task of a [`super::Client`]
//! and its clones: a writer task sends requests in the order they were queued and records a
//! waiter for each; a reader task completes the waiters in that same order (the node answers
//! in request order). A lost connection fails every waiter on it.

use crate::limits::MAX_PIPELINED_REQUESTS;
use crate::net::tcp::{connect_client_secured, FrameRx, FrameTx, NetLimits};
use crate::net::tls::TlsReloader;
use crate::raft::remote::MessageTx;
use crate::{Error, Result};
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::{mpsc, oneshot, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;
use tokio::time::Instant;

/// Why a request got no reply. A plain append or admin request that failed `Unknown` is never
/// sent again (it could be done twice); a produce is, with the same seqs (the producer table
/// answers a committed seq with its original offset).
#[derive(Debug)]
pub(super) enum Failure {
    /// It was never written to the connection: nothing was done, it may be sent again.
    NotSent(Error),
    /// It may have reached the node: its fate is unknown.
    Unknown(Error),
}

type Waiter = oneshot::Sender<std::result::Result<Bytes, Failure>>;

struct Queued {
    msg: Bytes,
    reply: Waiter,
}

/// The waiters of requests written and not answered yet, in the order written.
struct State {
    waiters: VecDeque<(Waiter, OwnedSemaphorePermit)>,
    /// Set once the connection is lost; no request is written after.
    lost: Option<String>,
}

struct Shared {
    addr: String,
    state: Mutex<State>,
    /// Requests written and not answered (the node's window: more would only wait in its
    /// socket buffers).
    window: Arc<Semaphore>,
    /// Told when the reader ended, so that the writer stops too.
    reader_ended: Notify,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // No code panics while holding it; a poisoned state is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lost_err(&self, reason: &str) -> Error {
        Error::ConnectionLost {
            addr: self.addr.clone(),
            reason: reason.to_string(),
        }
    }

    /// Marks the connection lost and fails every waiter on it: their requests were written,
    /// so their fate is unknown.
    fn lose(&self, why: &Error) {
        let waiters = {
            let mut st = self.state();
            st.lost.get_or_insert_with(|| why.to_string());
            std::mem::take(&mut st.waiters)
        };
        let reason = why.to_string();
        for (w, _) in waiters {
            let _ = w.send(Err(Failure::Unknown(self.lost_err(&reason))));
        }
    }
}

/// A connection; dropping the last handle ends its tasks and closes it.
pub(super) struct Conn {
    queue: mpsc::Sender<Queued>,
    shared: Arc<Shared>,
    tasks: [AbortHandle; 2],
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("addr", &self.shared.addr)
            .field("alive", &self.is_alive())
            .finish()
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Conn {
    /// Connects to the node at `addr` (TLS with `tls`'s client certificate when given, and
    /// the handshake) and starts the connection's writer and reader.
    pub(super) async fn open(
        addr: &str,
        cluster_id: u64,
        limits: NetLimits,
        tls: Option<Arc<TlsReloader>>,
    ) -> Result<Conn> {
        let (tx, rx, _) = connect_client_secured(addr, cluster_id, limits, tls).await?;
        let shared = Arc::new(Shared {
            addr: addr.to_string(),
            state: Mutex::new(State {
                waiters: VecDeque::new(),
                lost: None,
            }),
            window: Arc::new(Semaphore::new(MAX_PIPELINED_REQUESTS)),
            reader_ended: Notify::new(),
        });
        let (queue, queued) = mpsc::channel(MAX_PIPELINED_REQUESTS);
        let reader = tokio::spawn(read_replies(rx, shared.clone())).abort_handle();
        let writer = tokio::spawn(write_requests(tx, queued, shared.clone())).abort_handle();
        Ok(Conn {
            queue,
            shared,
            tasks: [reader, writer],
        })
    }

    /// False once the connection was lost (closed by the node, broken, or a write failed).
    pub(super) fn is_alive(&self) -> bool {
        self.shared.state().lost.is_none()
    }

    /// Sends `msg` and waits for its reply until `deadline`. A timeout fails this request
    /// only: its late reply is still read, in order, and dropped. `hold` is dropped once the
    /// request is queued (or could not be): a producer holds its seq lock until then, so that
    /// its requests are written in seq order.
    pub(super) async fn request<H>(
        &self,
        msg: Bytes,
        deadline: Instant,
        hold: H,
    ) -> std::result::Result<Bytes, Failure> {
        let (reply, answer) = oneshot::channel();
        let queued = tokio::time::timeout_at(deadline, self.queue.send(Queued { msg, reply })).await;
        drop(hold);
        match queued {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(Failure::NotSent(self.shared.lost_err("writer stopped"))),
            Err(_) => return Err(Failure::NotSent(Error::Timeout { offset: 0 })),
        }
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(r)) => r,
            // The tasks were stopped with the request queued or written.
            Ok(Err(_)) => Err(Failure::Unknown(self.shared.lost_err("connection closed"))),
            Err(_) => Err(Failure::Unknown(Error::Timeout { offset: 0 })),
        }
    }
}

/// Writes queued requests in order, each once the window has room, recording its waiter
/// before the write so that the reader finds it in the order of the wire.
async fn write_requests(mut tx: FrameTx, mut queued: mpsc::Receiver<Queued>, shared: Arc<Shared>) {
    loop {
        let q = tokio::select! {
            q = queued.recv() => q,
            _ = shared.reader_ended.notified() => None,
        };
        let Some(q) = q else { break };
        if q.reply.is_closed() {
            continue; // its caller gave up before it was written: it is never sent
        }
        let place = tokio::select! {
            p = shared.window.clone().acquire_owned() => p.ok(),
            _ = shared.reader_ended.notified() => None,
        };
        let Some(place) = place else {
            let _ = q.reply.send(Err(Failure::NotSent(shared.lost_err("lost"))));
            break;
        };
        {
            let mut st = shared.state();
            if let Some(why) = &st.lost {
                let err = shared.lost_err(why);
                let _ = q.reply.send(Err(Failure::NotSent(err)));
                break;
            }
            st.waiters.push_back((q.reply, place));
        }
        if let Err(e) = tx.send(q.msg).await {
            shared.lose(&e);
            break;
        }
    }
    // Whatever is still queued was never written.
    queued.close();
    while let Ok(q) = queued.try_recv() {
        let _ = q.reply.send(Err(Failure::NotSent(shared.lost_err("lost"))));
    }
}

/// Completes waiters in order with the replies read; at the end of the connection, fails
/// the rest.
async fn read_replies(mut rx: FrameRx, shared: Arc<Shared>) {
    let why = loop {
        match rx.recv_or_close().await {
            Ok(Some(reply)) => {
                let waiter = shared.state().waiters.pop_front();
                match waiter {
                    // A caller that timed out dropped its receiver: its reply is dropped.
                    Some((w, _place)) => {
                        let _ = w.send(Ok(reply));
                    }
                    None => break Error::Protocol("a reply to no request".into()),
                }
            }
            Ok(None) => break Error::Protocol("closed by the node".into()),
            Err(e) => break e,
        }
    };
    shared.lose(&why);
    shared.reader_ended.notify_one();
}
