//! `sitelog node`: runs one replica until SIGINT/SIGTERM (or `--exit-after-secs`). With
//! `--tls-dir`, SIGHUP (or a change of the files, polled) reloads the node's certificates.
//!
//! Prints `LISTENING <addr>` on stdout once the server is bound, so scripts and tests know
//! where it is.

use super::{CliError, CliResult, Context};
use crate::net::tls::{SideTlsReloader, TlsDir, Who};
use crate::node::{Node, NodeConfig, Peer, Placement};
use crate::{IoBackend, LogOptions};
use clap::{Args, ValueEnum};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Raft timer presets.
#[derive(Debug, Clone, Copy, ValueEnum, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Timers {
    /// Heartbeat 50 ms, election 150–300 ms (one machine, one LAN).
    Lan,
    /// Heartbeat 100 ms, election 1–2 s (sites tens of milliseconds apart).
    Wan,
}

/// I/O backend choice.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IoArg {
    /// POSIX with direct I/O (the default; measured faster), else io_uring if the kernel
    /// allows it, else POSIX.
    Auto,
    /// io_uring.
    #[value(name = "io_uring", alias = "io-uring")]
    IoUring,
    /// pread/pwrite/fdatasync.
    Posix,
}

/// Arguments of `sitelog node`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// A TOML file with any of these settings (same names, `-` written `_`; founding members
    /// as `members = [{ id = 1, site = "a", addr = "10.0.1.5:7400" }, ...]`). Flags given on
    /// the command line win over the file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// This node's id (never reuse the id of a lost node). Required (flag or file).
    #[arg(long)]
    pub id: Option<u64>,
    /// This node's site (datacenter) name. Required (flag or file).
    #[arg(long)]
    pub site: Option<String>,
    /// Data directory. Required (flag or file).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:7400].
    #[arg(long)]
    pub listen: Option<String>,
    /// Serve the node's metrics in the Prometheus text format over HTTP: a bare PORT listens
    /// on 127.0.0.1:PORT; an explicit HOST:PORT that is not loopback is allowed, with a
    /// warning at start.
    #[arg(long, value_name = "PORT|ADDR")]
    pub metrics_listen: Option<String>,
    /// Serve the metrics over HTTPS (TLS 1.3) with this node's certificate from DIR
    /// (`node-<id>.pem`, `node-<id>.key`, `ca.pem`); no client certificate is asked for.
    #[arg(long, value_name = "DIR", requires = "metrics_listen")]
    pub metrics_tls_dir: Option<PathBuf>,
    /// Serve mutual TLS 1.3 on the node's port and dial peers with it, with this node's
    /// certificate from DIR (`node-<id>.pem`, `node-<id>.key`, `ca.pem`). SIGHUP, or a change
    /// of those files (polled every 5 s), reloads them. This or --insecure is required.
    #[arg(long, value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,
    /// Plaintext, no authentication (labs and tests only; warned of at start). This or
    /// --tls-dir is required.
    #[arg(long)]
    pub insecure: bool,
    /// Address peers and clients use (default: the bound address).
    #[arg(long)]
    pub advertise: Option<String>,
    /// Cluster id (decimal or 0x-hex); peers of other clusters are refused. Required (flag or
    /// file).
    #[arg(long, value_parser = parse_u64)]
    pub cluster_id: Option<u64>,
    /// A founding member, `ID=SITE@HOST:PORT` (repeat for each, this node included). Only used
    /// when the node is not initialized yet.
    #[arg(long = "member", value_parser = parse_member)]
    pub members: Vec<(u64, Peer)>,
    /// Raft timers [default: lan].
    #[arg(long, value_enum)]
    pub timers: Option<Timers>,
    /// Accept a membership one site's loss could leave without a majority (labs only).
    #[arg(long)]
    pub allow_unsafe_placement: bool,
    /// Take a manifest snapshot every N applied entries (0: never) [default: 100000].
    #[arg(long)]
    pub snapshot_every: Option<u64>,
    /// Entries kept for Raft behind a snapshot (a replica further behind gets the snapshot)
    /// [default: 10000].
    #[arg(long)]
    pub snapshot_keep: Option<u64>,
    /// Segment size of the log in bytes [default: 64 MiB].
    #[arg(long)]
    pub segment_bytes: Option<u64>,
    /// Retention by size: delete the oldest sealed segments while the log's files exceed
    /// this many bytes, down to the floor (what Raft, the latest snapshot and transfers still
    /// need) [default: keep everything]. Needs snapshots.
    #[arg(long)]
    pub retention_bytes: Option<u64>,
    /// Retention by age: delete sealed segments whose newest record is older than this many
    /// seconds, down to the floor; checked after every seal and every second [default: keep
    /// everything]. Needs snapshots.
    #[arg(long)]
    pub retention_age_secs: Option<u64>,
    /// Catch-up fetch throttle in MB/s (0: unthrottled) [default: 100].
    #[arg(long)]
    pub fetch_mb_per_s: Option<u64>,
    /// Background scrub of sealed segments in MB/s (0: off); damage found is repaired from a
    /// peer [default: 10].
    #[arg(long)]
    pub scrub_mb_per_s: Option<u64>,
    /// Most idempotent producers the cluster keeps (1..=65536); past it, registering one
    /// expires the oldest idle one. Carried by each registration this node makes as leader
    /// [default: 4096].
    #[arg(long)]
    pub max_producers: Option<u32>,
    /// Entry time an idempotent producer may stay idle before it expires (10000..=604800000;
    /// clients retry for at most half of it) [default: 900000, 15 min].
    #[arg(long)]
    pub producer_idle_expiry_ms: Option<u64>,
    /// I/O backend of the log [default: auto].
    #[arg(long, value_enum)]
    pub io: Option<IoArg>,
    /// Write durable groups with O_DIRECT (`LogOptions::direct_io`; see the README's
    /// performance section): the default already, accepted for compatibility.
    #[arg(long, overrides_with = "no_direct_io")]
    pub direct_io: bool,
    /// Write durable groups through the page cache instead of with O_DIRECT (`direct_io =
    /// false` in the config file).
    #[arg(long, overrides_with = "direct_io")]
    pub no_direct_io: bool,
    /// Exit by itself after this many seconds (a safety net for test harnesses).
    #[arg(long)]
    pub exit_after_secs: Option<u64>,
}

fn parse_u64(s: &str) -> Result<u64, String> {
    let r = match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|e| format!("{s:?} is not a number: {e}"))
}

fn parse_member(s: &str) -> Result<(u64, Peer), String> {
    let err = || format!("{s:?} is not ID=SITE@HOST:PORT");
    let (id, rest) = s.split_once('=').ok_or_else(err)?;
    let (site, addr) = rest.split_once('@').ok_or_else(err)?;
    let id = id.parse().map_err(|_| err())?;
    if site.is_empty() || addr.is_empty() {
        return Err(err());
    }
    Ok((
        id,
        Peer {
            site: site.into(),
            addr: addr.into(),
        },
    ))
}

/// The `--config` file.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    id: Option<u64>,
    site: Option<String>,
    data: Option<PathBuf>,
    listen: Option<String>,
    advertise: Option<String>,
    cluster_id: Option<u64>,
    #[serde(default)]
    members: Vec<FileMember>,
    timers: Option<Timers>,
    io: Option<IoArg>,
    direct_io: Option<bool>,
    allow_unsafe_placement: Option<bool>,
    metrics_listen: Option<String>,
    metrics_tls_dir: Option<PathBuf>,
    tls_dir: Option<PathBuf>,
    insecure: Option<bool>,
    snapshot_every: Option<u64>,
    snapshot_keep: Option<u64>,
    segment_bytes: Option<u64>,
    retention_bytes: Option<u64>,
    retention_age_secs: Option<u64>,
    fetch_mb_per_s: Option<u64>,
    scrub_mb_per_s: Option<u64>,
    max_producers: Option<u32>,
    producer_idle_expiry_ms: Option<u64>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileMember {
    id: u64,
    site: String,
    addr: String,
}

/// The settings after merging flags over the file.
struct Settings {
    cfg: NodeConfig,
    metrics_listen: Option<String>,
    metrics_tls_dir: Option<PathBuf>,
}

fn settings(args: &NodeArgs) -> CliResult<Settings> {
    let file: FileConfig = match &args.config {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).context(|| format!("cannot read {}", p.display()))?;
            toml::from_str(&text).map_err(|e| CliError(format!("{}: {e}", p.display())))?
        }
        None => FileConfig::default(),
    };
    let need = |what: &str| CliError(format!("--{what} is required (as a flag or in --config)"));
    let id = args.id.or(file.id).ok_or_else(|| need("id"))?;
    let site = args
        .site
        .clone()
        .or(file.site)
        .ok_or_else(|| need("site"))?;
    let data = args
        .data
        .clone()
        .or(file.data)
        .ok_or_else(|| need("data"))?;
    let cluster_id = args
        .cluster_id
        .or(file.cluster_id)
        .ok_or_else(|| need("cluster-id"))?;
    let listen = args
        .listen
        .clone()
        .or(file.listen)
        .unwrap_or_else(|| "127.0.0.1:7400".into());
    let mut cfg = NodeConfig::new(id, &site, data, &listen, cluster_id);
    let tls_dir = args.tls_dir.clone().or(file.tls_dir);
    cfg.security = super::security_choice(
        tls_dir.as_ref(),
        args.insecure || file.insecure == Some(true),
    )?;
    cfg.advertise = args.advertise.clone().or(file.advertise);
    cfg.initial_members = if args.members.is_empty() {
        let peer = |m: FileMember| {
            (
                m.id,
                Peer {
                    site: m.site,
                    addr: m.addr,
                },
            )
        };
        file.members.into_iter().map(peer).collect()
    } else {
        args.members.iter().cloned().collect::<BTreeMap<_, _>>()
    };
    cfg.timers = match args.timers.or(file.timers).unwrap_or(Timers::Lan) {
        Timers::Lan => crate::node::Timers::lan(),
        Timers::Wan => crate::node::Timers::wan(),
    };
    cfg.log.io = match args.io.or(file.io).unwrap_or(IoArg::Auto) {
        IoArg::Auto => IoBackend::Auto,
        IoArg::IoUring => IoBackend::IoUring,
        IoArg::Posix => IoBackend::Posix,
    };
    cfg.log.direct_io = direct_io(args, file.direct_io);
    if let Some(n) = args.snapshot_every.or(file.snapshot_every) {
        cfg.snapshots.every_entries = (n > 0).then_some(n);
    }
    if let Some(k) = args.snapshot_keep.or(file.snapshot_keep) {
        cfg.snapshots.keep_entries = k;
    }
    if let Some(b) = args.segment_bytes.or(file.segment_bytes) {
        cfg.log.segment_size_bytes = b;
        // A record must fit a segment with room to spare.
        cfg.log.max_record_bytes = cfg.log.max_record_bytes.min((b / 4) as u32);
    }
    cfg.log.retention_bytes = args.retention_bytes.or(file.retention_bytes);
    cfg.log.retention_age_ms = match args.retention_age_secs.or(file.retention_age_secs) {
        Some(secs) => Some(
            secs.checked_mul(1000)
                .ok_or_else(|| CliError(format!("--retention-age-secs {secs} is too large")))?,
        ),
        None => None,
    };
    if let Some(mb) = args.fetch_mb_per_s.or(file.fetch_mb_per_s) {
        cfg.catch_up.fetch.max_bytes_per_s = (mb > 0).then_some(mb * 1_000_000);
    }
    if let Some(mb) = args.scrub_mb_per_s.or(file.scrub_mb_per_s) {
        cfg.repair.scrub_mb_per_s = mb;
    }
    // Checked, with the rest of the configuration, by `NodeConfig::validate` at start.
    if let Some(n) = args.max_producers.or(file.max_producers) {
        cfg.producers.max_producers = n;
    }
    if let Some(ms) = args
        .producer_idle_expiry_ms
        .or(file.producer_idle_expiry_ms)
    {
        cfg.producers.idle_expiry_ms = ms;
    }
    if args.allow_unsafe_placement || file.allow_unsafe_placement == Some(true) {
        cfg.placement = Placement::Warn;
    }
    let metrics_tls_dir = args.metrics_tls_dir.clone().or(file.metrics_tls_dir);
    let metrics_listen = args.metrics_listen.clone().or(file.metrics_listen);
    if metrics_tls_dir.is_some() && metrics_listen.is_none() {
        return Err(CliError(
            "--metrics-tls-dir needs --metrics-listen (the endpoint to serve over TLS)".into(),
        ));
    }
    Ok(Settings {
        cfg,
        metrics_listen,
        metrics_tls_dir,
    })
}

/// `LogOptions::direct_io`: a flag wins over the file, the file over the library default (on).
/// Where the file system refuses O_DIRECT (tmpfs) the log warns once and writes through the
/// page cache, so the default never keeps a node from starting.
fn direct_io(args: &NodeArgs, file: Option<bool>) -> bool {
    if args.no_direct_io {
        false
    } else if args.direct_io {
        true
    } else {
        file.unwrap_or(LogOptions::default().direct_io)
    }
}

/// Runs the node.
pub fn run(args: &NodeArgs) -> CliResult<()> {
    let mut settings = settings(args)?;
    raise_descriptor_limit();
    if settings.metrics_listen.is_some() {
        // The metrics endpoint's connections come out of the node's descriptor headroom.
        settings.cfg.net.fd_reserve += super::prometheus::MAX_CONNECTIONS;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context(|| "cannot start the async runtime".into())?;
    rt.block_on(serve(settings, args.exit_after_secs))
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, as servers commonly do (systemd's
/// default soft limit of 1024 is meant for select()-era programs; the hard limit is what the
/// administrator allows). The node then keeps its descriptor reserve under the raised limit.
fn raise_descriptor_limit() {
    use crate::net::descriptors::raise_nofile_to_hard;
    match raise_nofile_to_hard() {
        Ok(soft) => tracing::info!(soft, "descriptor limit (RLIMIT_NOFILE)"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the descriptor limit"),
    }
}

async fn serve(settings: Settings, exit_after_secs: Option<u64>) -> CliResult<()> {
    let id = settings.cfg.node_id;
    let node_is_insecure = settings.cfg.security == crate::Security::Insecure;
    let metrics = match &settings.metrics_listen {
        Some(addr) => {
            let tls = match &settings.metrics_tls_dir {
                Some(dir) => Some(Arc::new(SideTlsReloader::load_without_client_auth(
                    TlsDir::new(dir),
                    Who::Node(id),
                )?)),
                None => None,
            };
            // The node's reserve was raised by the endpoint's connections (see `run`).
            let reserve = settings.cfg.net.fd_reserve - super::prometheus::MAX_CONNECTIONS;
            let (bound, task) = super::prometheus::start(addr, tls.clone(), reserve).await?;
            Some((bound, task, tls))
        }
        None => None,
    };
    let direct_io = settings.cfg.log.direct_io;
    tracing::info!(direct_io, io = ?settings.cfg.log.io, "storage");
    let node = Node::start(settings.cfg)
        .await
        .map_err(|e| CliError(format!("node {id} failed to start: {e}")))?;
    // stdout may be closed (a supervisor that ignores it): a failed write must not kill the
    // node (`println!` panics on EPIPE), so these lines are best effort.
    let mut out = std::io::stdout().lock();
    // Set once the recorder is installed; what the log was configured with (see `direct_io`).
    metrics::gauge!("sitelog_direct_io").set(if direct_io { 1.0 } else { 0.0 });
    let _ = writeln!(out, "LISTENING {}", node.local_addr());
    if let Some((addr, _, _)) = &metrics {
        let scheme = if settings.metrics_tls_dir.is_some() {
            "https"
        } else {
            "http"
        };
        let _ = writeln!(out, "METRICS {scheme}://{addr}/metrics");
    }
    let _ = out.flush();
    drop(out);
    if node_is_insecure {
        eprintln!("sitelog: warning: --insecure: plaintext on node {id}'s port and connections, no authentication");
    }
    let limit = exit_after_secs.map(Duration::from_secs);
    let expired = async {
        match limit {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    let metrics_tls = metrics.as_ref().and_then(|(_, _, tls)| tls.clone());
    let gave_up = run_until_stopped(&node, metrics_tls.as_deref(), expired).await?;
    if let Some((_, task, _)) = metrics {
        task.abort();
    }
    let stopped = node
        .shutdown()
        .await
        .map_err(|e| CliError(format!("shutdown: {e}")));
    match gave_up {
        Some(why) => Err(CliError(format!("node {id} stopped serving: {why}"))),
        None => stopped,
    }
}

/// How often the TLS files are checked for a change (rotation without a signal).
const TLS_POLL_MS: u64 = 5000;

/// Serves until SIGINT/SIGTERM, `expired`, or the node gives up (`Some(why)`); reloads the
/// TLS files on SIGHUP and when they change: the node's, and the metrics endpoint's
/// (`metrics_tls`, `--metrics-tls-dir`) on the same trigger.
async fn run_until_stopped(
    node: &Node,
    metrics_tls: Option<&SideTlsReloader>,
    expired: impl std::future::Future<Output = ()>,
) -> CliResult<Option<String>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context(|| "cannot watch SIGTERM".into())?;
    let mut hup = signal(SignalKind::hangup()).context(|| "cannot watch SIGHUP".into())?;
    let mut poll = tokio::time::interval(Duration::from_millis(TLS_POLL_MS));
    // The first tick is immediate: the files were just loaded.
    poll.tick().await;
    tokio::pin!(expired);
    loop {
        // A node that cannot heal its storage in place serves no more: the process exits
        // non-zero (after closing its ports) so that its supervisor restarts it.
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(None),
            _ = term.recv() => return Ok(None),
            _ = &mut expired => return Ok(None),
            why = node.failed() => return Ok(Some(why.to_string())),
            _ = hup.recv() => {
                report_reload("SIGHUP", "node", node.reload_tls().map(|()| true));
                if let Some(m) = metrics_tls {
                    report_reload("SIGHUP", "metrics", m.reload().map(|()| true));
                }
            }
            _ = poll.tick() => {
                report_reload("file change", "node", node.reload_tls_if_changed());
                if let Some(m) = metrics_tls {
                    report_reload("file change", "metrics", m.reload_if_changed());
                }
            }
        }
    }
}

/// Logs a TLS reload's outcome (`endpoint`: the node's ports, or the metrics endpoint); on
/// error it keeps serving with the old certificates.
fn report_reload(cause: &str, endpoint: &str, outcome: crate::Result<bool>) {
    match outcome {
        // At warn level: an operator rotating certificates wants to see it under the default
        // filter (warn).
        Ok(true) => tracing::warn!(cause, endpoint, "TLS certificates reloaded"),
        Ok(false) => {}
        Err(e) => tracing::error!(
            cause,
            endpoint,
            error = %e,
            "TLS reload failed; still serving with the previous certificates"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        node: NodeArgs,
    }

    fn direct(flags: &[&str], file: Option<bool>) -> bool {
        let cmd = Cmd::try_parse_from(std::iter::once("node").chain(flags.iter().copied()))
            .expect("flags parse");
        direct_io(&cmd.node, file)
    }

    /// O_DIRECT follows the library default; a flag wins over the file, the last flag wins.
    #[test]
    fn direct_io_follows_the_default_then_the_file_then_the_flags() {
        assert!(LogOptions::default().direct_io);
        assert!(direct(&[], None));
        assert!(!direct(&[], Some(false)));
        assert!(!direct(&["--no-direct-io"], None));
        assert!(!direct(&["--no-direct-io"], Some(true)));
        assert!(direct(&["--direct-io"], Some(false)));
        assert!(direct(&["--no-direct-io", "--direct-io"], None));
        assert!(!direct(&["--direct-io", "--no-direct-io"], None));
    }
}
