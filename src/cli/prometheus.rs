//! `--metrics-listen`: installs a Prometheus recorder as the process's `metrics` recorder and
//! serves its text rendering to any HTTP GET (a scrape), one short connection per request.
//! Guards, so that a slow or hostile client cannot hold memory, descriptors or the node's
//! work: requests are bounded (8 KiB, and 2 s for the whole exchange); at most
//! [`MAX_CONNECTIONS`] are served at once (a newcomer evicts the oldest idle one, so a flood
//! of idle connections cannot lock out scrapes); a connection is closed at accept when the
//! process's descriptor reserve is reached (the node's own reserve is raised by
//! [`MAX_CONNECTIONS`] so that these never take what the node keeps for its files); refusals
//! and failed accepts are logged at most once per second, with a count.

use super::{CliError, CliResult};
use crate::net::budget::{Admission, Budget, Slot};
use crate::net::descriptors::DescriptorGuard;
use crate::net::warn_rate::{WarnRate, WARN_EVERY};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MAX_REQUEST_BYTES: usize = 8 << 10;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Most metrics connections served at once.
pub const MAX_CONNECTIONS: usize = 16;

/// Installs the recorder and starts serving on `addr`, keeping `fd_reserve` descriptors free;
/// returns the bound address and the task.
pub async fn start(
    addr: &str,
    fd_reserve: usize,
) -> CliResult<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|e| CliError(format!("cannot install the metrics recorder: {e}")))?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| CliError(format!("cannot listen for metrics on {addr}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| CliError(format!("metrics listener: {e}")))?;
    let task = tokio::spawn(accept_loop(listener, handle, fd_reserve));
    Ok((bound, task))
}

async fn accept_loop(listener: TcpListener, handle: PrometheusHandle, fd_reserve: usize) {
    // A scrape is one request: the oldest connection is always fair game.
    let budget = Budget::new("metrics", MAX_CONNECTIONS, Duration::ZERO);
    let mut fds = DescriptorGuard::new(fd_reserve);
    let (failed, refused) = (WarnRate::new(WARN_EVERY), WarnRate::new(WARN_EVERY));
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                if let Some(n) = failed.event() {
                    tracing::warn!(error = %e, failures = n, "metrics: accept failed; backing off");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if !fds.admit(stream.as_raw_fd()) {
            if let Some(n) = refused.event() {
                tracing::warn!(
                    refused = n,
                    "metrics: descriptor reserve reached; closing new connections"
                );
            }
            continue;
        }
        let Admission::Admitted { slot, .. } = budget.admit() else {
            continue; // every place busy rendering: close
        };
        let h = handle.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::timeout(REQUEST_TIMEOUT, scrape(stream, &h, &slot)) => {}
                _ = slot.evicted() => {}
            }
        });
    }
}

async fn scrape(mut s: TcpStream, handle: &PrometheusHandle, slot: &Slot) -> std::io::Result<()> {
    let mut req = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < MAX_REQUEST_BYTES {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        req.extend_from_slice(&buf[..n]);
    }
    slot.activity().received(); // rendering: not to be evicted
    let (status, body) = if req.starts_with(b"GET ") {
        handle.run_upkeep();
        ("200 OK", handle.render())
    } else {
        ("405 Method Not Allowed", String::new())
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body.as_bytes()).await?;
    s.shutdown().await
}
