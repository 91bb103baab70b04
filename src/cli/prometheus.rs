//! `--metrics-listen`: installs a Prometheus recorder as the process's `metrics` recorder and
//! serves its text rendering to any HTTP GET (a scrape), one short connection per request.
//!
//! Exposure: a bare port binds 127.0.0.1 (metrics tell who the peers are and how loaded the
//! node is); any address that is not loopback is allowed but warned about at start. With
//! `--metrics-tls-dir` the endpoint speaks HTTPS (TLS 1.3) with the node's own certificate;
//! no client certificate is asked for, so any scraper that trusts the cluster CA can read it.
//! The certificate is reloaded with the node's (SIGHUP, or a change of the files, polled by
//! `sitelog node`): each new connection takes the current one.
//!
//! Guards, so that a slow or hostile client cannot hold memory, descriptors or the node's
//! work: requests are bounded (8 KiB, and 2 s for the whole exchange, TLS handshake
//! included); at most [`MAX_CONNECTIONS`] are served at once (a newcomer evicts the oldest
//! idle one, so a flood of idle connections cannot lock out scrapes); a connection is closed
//! at accept when the process's descriptor reserve is reached (the node's own reserve is
//! raised by [`MAX_CONNECTIONS`] so that these never take what the node keeps for its
//! files); refusals, failed accepts and failed TLS handshakes are logged at most once per
//! [`WARN_EVERY`] (10 s), with a count.

use super::{CliError, CliResult};
use crate::net::budget::{Admission, Budget, Slot};
use crate::net::descriptors::DescriptorGuard;
use crate::net::tls::SideTlsReloader;
use crate::net::warn_rate::{WarnRate, WARN_EVERY};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

const MAX_REQUEST_BYTES: usize = 8 << 10;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Most metrics connections served at once.
pub const MAX_CONNECTIONS: usize = 16;

/// Where to listen: a bare port means loopback (127.0.0.1:PORT); anything else is an address
/// as given.
pub fn listen_addr(arg: &str) -> String {
    match arg.parse::<u16>() {
        Ok(port) => format!("127.0.0.1:{port}"),
        Err(_) => arg.to_string(),
    }
}

/// Installs the recorder and starts serving on `addr` ([`listen_addr`] applied), over TLS
/// with `tls`'s current configuration when given, keeping `fd_reserve` descriptors free;
/// returns the bound address and the task.
pub async fn start(
    addr: &str,
    tls: Option<Arc<SideTlsReloader>>,
    fd_reserve: usize,
) -> CliResult<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let addr = listen_addr(addr);
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|e| CliError(format!("cannot install the metrics recorder: {e}")))?;
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|e| CliError(format!("cannot listen for metrics on {addr}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| CliError(format!("metrics listener: {e}")))?;
    if !bound.ip().is_loopback() {
        tracing::warn!(
            addr = %bound,
            tls = tls.is_some(),
            "metrics: listening on a non-loopback address: whoever can reach it reads the \
             node's metrics (give a bare port for 127.0.0.1)"
        );
    }
    let task = tokio::spawn(accept_loop(listener, handle, tls, fd_reserve));
    Ok((bound, task))
}

async fn accept_loop(
    listener: TcpListener,
    handle: PrometheusHandle,
    tls: Option<Arc<SideTlsReloader>>,
    fd_reserve: usize,
) {
    // A scrape is one request: the oldest connection is always fair game.
    let budget = Budget::new("metrics", MAX_CONNECTIONS, Duration::ZERO);
    let mut fds = DescriptorGuard::new(fd_reserve);
    let (failed, refused) = (WarnRate::new(WARN_EVERY), WarnRate::new(WARN_EVERY));
    let bad_tls = Arc::new(WarnRate::new(WARN_EVERY));
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
        // The configuration current now: a reload applies to the next connection.
        let tls = tls
            .as_ref()
            .map(|t| TlsAcceptor::from(Arc::clone(&*t.current())));
        let (h, bad_tls) = (handle.clone(), bad_tls.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::timeout(REQUEST_TIMEOUT, exchange(stream, tls, &h, &slot, &bad_tls)) => {}
                _ = slot.evicted() => {}
            }
        });
    }
}

/// One connection: the TLS handshake (when configured), then the scrape.
async fn exchange(
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    handle: &PrometheusHandle,
    slot: &Slot,
    bad_tls: &WarnRate,
) -> std::io::Result<()> {
    let Some(acceptor) = tls else {
        return scrape(stream, handle, slot).await;
    };
    match acceptor.accept(stream).await {
        Ok(s) => scrape(s, handle, slot).await,
        Err(e) => {
            // rustls' own text (alerts, protocol errors): no received bytes, no key material.
            if let Some(n) = bad_tls.event() {
                tracing::warn!(error = %e, failed = n, "metrics: TLS handshakes failed");
            }
            Ok(())
        }
    }
}

async fn scrape<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    handle: &PrometheusHandle,
    slot: &Slot,
) -> std::io::Result<()> {
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
