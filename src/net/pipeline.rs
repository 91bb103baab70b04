//! Pipelined answering of client requests: the node reads the next request while earlier
//! ones are being answered, answers them concurrently and sends the replies in request
//! order, so the protocol needs no request ids (the client matches replies to requests by
//! their order).
//!
//! Bounded per connection by a window of at most `max_requests` requests and `max_bytes`
//! of request frames unanswered ([`MAX_PIPELINED_REQUESTS`], [`MAX_PIPELINED_BYTES`]):
//! beyond either the node stops reading the socket (TCP flow control then stops the client)
//! until a reply went out. A frame larger than the free bytes waits until nothing else is
//! in flight, so one frame of the connection's limit is always admitted.

use super::{BoxFut, FrameRx, FrameTx};
use crate::limits::{MAX_PIPELINED_BYTES, MAX_PIPELINED_REQUESTS};
use crate::net::frame::{read_frame_body, read_frame_header};
use crate::raft::remote::MessageTx;
use crate::{Error, Result};
use bytes::Bytes;
use futures_util::stream::{FuturesOrdered, StreamExt};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::timeout;

/// The bounds of one connection's pipeline.
#[derive(Debug, Clone, Copy)]
pub(super) struct Window {
    /// Most requests unanswered.
    pub max_requests: usize,
    /// Most bytes of request frames unanswered (a larger frame is admitted alone).
    pub max_bytes: usize,
}

impl Window {
    /// The window of every client connection.
    pub const CLIENT: Window = Window {
        max_requests: MAX_PIPELINED_REQUESTS,
        max_bytes: MAX_PIPELINED_BYTES,
    };
}

/// A request's place in the window, given back when its reply went out.
type Place = (OwnedSemaphorePermit, OwnedSemaphorePermit);

/// What is in flight on a connection.
struct InFlight {
    window: Window,
    requests: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
}

impl InFlight {
    fn new(window: Window) -> Self {
        assert!(window.max_requests >= 1 && window.max_bytes <= u32::MAX as usize);
        InFlight {
            window,
            requests: Arc::new(Semaphore::new(window.max_requests)),
            bytes: Arc::new(Semaphore::new(window.max_bytes)),
        }
    }

    /// No request is unanswered, but the one the reader holds a place for.
    fn only_reader(&self) -> bool {
        self.requests.available_permits() + 1 == self.window.max_requests
    }
}

fn closed_window() -> Error {
    // Invariant: the semaphores are never closed; kept typed rather than a panic.
    Error::Protocol("pipeline window closed".into())
}

/// Answers requests pipelined within `window` until the peer closes (the requests already
/// read are answered first) or sends nothing for the idle timeout while none is in flight.
pub(super) async fn pipelined_loop(
    mut tx: FrameTx,
    rx: FrameRx,
    window: Window,
    handle: impl Fn(Bytes) -> BoxFut<Bytes>,
) -> Result<()> {
    let in_flight = Arc::new(InFlight::new(window));
    let (read_tx, mut read) = mpsc::channel::<(Bytes, Place)>(window.max_requests);
    // Polled in place, never cancelled: a frame is never left half read.
    let reader = read_requests(rx, read_tx, in_flight);
    tokio::pin!(reader);
    let mut reading = true;
    let mut answering = FuturesOrdered::new();
    loop {
        tokio::select! {
            r = &mut reader, if reading => {
                reading = false;
                r?;
            }
            Some((msg, place)) = read.recv() => {
                let answer = handle(msg);
                answering.push_back(async move { (answer.await, place) });
            }
            Some((reply, place)) = answering.next(), if !answering.is_empty() => {
                tx.send(reply).await?;
                drop(place);
            }
            else => return Ok(()),
        }
    }
}

/// Reads requests into `out`, each once it has a place in the window. Returns at a clean
/// close, or when nothing arrived for the idle timeout while nothing was in flight.
async fn read_requests(
    mut rx: FrameRx,
    out: mpsc::Sender<(Bytes, Place)>,
    in_flight: Arc<InFlight>,
) -> Result<()> {
    loop {
        let request = in_flight
            .requests
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| closed_window())?;
        if !wait_for_request(&mut rx, &in_flight).await? {
            return Ok(());
        }
        let Some(head) = within(rx.idle, read_frame_header(&mut rx.r, rx.max_frame_bytes)).await?
        else {
            return Ok(());
        };
        let want = head.body_bytes.min(in_flight.window.max_bytes) as u32;
        let bytes = in_flight
            .bytes
            .clone()
            .acquire_many_owned(want)
            .await
            .map_err(|_| closed_window())?;
        let msg = within(rx.idle, read_frame_body(&mut rx.r, head)).await?;
        if let Some(a) = &rx.activity {
            a.received();
        }
        if out.send((msg, (request, bytes))).await.is_err() {
            return Ok(()); // the answering side ended
        }
    }
}

/// `f` within the idle timeout: once a frame started, the rest must follow.
async fn within<T>(idle: Option<Duration>, f: impl Future<Output = Result<T>>) -> Result<T> {
    match idle {
        None => f.await,
        Some(idle) => timeout(idle, f)
            .await
            .map_err(|_| Error::Protocol("a request frame stalled midway".into()))?,
    }
}

/// Waits until a request's first bytes arrived: `false` at a clean close, or when the idle
/// timeout passed with nothing in flight (a client waiting for a slow answer is not idle).
async fn wait_for_request(rx: &mut FrameRx, in_flight: &InFlight) -> Result<bool> {
    loop {
        let ready = match rx.idle {
            None => Some(rx.r.fill_buf().await),
            // `fill_buf` consumes nothing: cancelling it at the timeout loses no byte.
            Some(idle) => timeout(idle, rx.r.fill_buf()).await.ok(),
        };
        match ready {
            Some(Ok(buf)) => return Ok(!buf.is_empty()),
            Some(Err(e)) => return Err(super::net_io("<network read>", e)),
            None if in_flight.only_reader() => return Ok(false),
            None => continue,
        }
    }
}
