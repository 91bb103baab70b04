//! `sitelog node`: runs one replica until SIGINT/SIGTERM (or `--exit-after-secs`).
//!
//! Prints `LISTENING <addr>` on stdout once the server is bound, so scripts and tests know
//! where it is.

use super::{CliError, CliResult, Context};
use clap::{Args, ValueEnum};
use sitelog::node::{Node, NodeConfig, Peer, Placement};
use sitelog::raft::replica::RaftTimers;
use sitelog::IoBackend;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// Raft timer presets.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Timers {
    /// Heartbeat 50 ms, election 150–300 ms (one machine, one LAN).
    Lan,
    /// Heartbeat 100 ms, election 1–2 s (sites tens of milliseconds apart).
    Wan,
}

/// I/O backend choice.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum IoArg {
    /// io_uring if the kernel allows it, else POSIX.
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
    /// This node's id (never reuse the id of a lost node).
    #[arg(long)]
    pub id: u64,
    /// This node's site (datacenter) name.
    #[arg(long)]
    pub site: String,
    /// Data directory.
    #[arg(long)]
    pub data: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7400")]
    pub listen: String,
    /// Address peers and clients use (default: the bound address).
    #[arg(long)]
    pub advertise: Option<String>,
    /// Cluster id (decimal or 0x-hex); peers of other clusters are refused.
    #[arg(long, value_parser = parse_u64)]
    pub cluster_id: u64,
    /// A founding member, `ID=SITE@HOST:PORT` (repeat for each, this node included). Only used
    /// when the node is not initialized yet.
    #[arg(long = "member", value_parser = parse_member)]
    pub members: Vec<(u64, Peer)>,
    /// Raft timers.
    #[arg(long, value_enum, default_value = "lan")]
    pub timers: Timers,
    /// Accept a membership one site's loss could leave without a majority (labs only).
    #[arg(long)]
    pub allow_unsafe_placement: bool,
    /// I/O backend of the log.
    #[arg(long, value_enum, default_value = "auto")]
    pub io: IoArg,
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

/// Runs the node.
pub fn run(args: &NodeArgs) -> CliResult<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context(|| "cannot start the async runtime".into())?;
    rt.block_on(serve(args))
}

async fn serve(args: &NodeArgs) -> CliResult<()> {
    let mut cfg = NodeConfig::new(
        args.id,
        &args.site,
        &args.data,
        &args.listen,
        args.cluster_id,
    );
    cfg.advertise = args.advertise.clone();
    cfg.initial_members = args.members.iter().cloned().collect::<BTreeMap<_, _>>();
    cfg.timers = match args.timers {
        Timers::Lan => RaftTimers::default(),
        Timers::Wan => RaftTimers::wan(),
    };
    cfg.log.io = match args.io {
        IoArg::Auto => IoBackend::Auto,
        IoArg::IoUring => IoBackend::IoUring,
        IoArg::Posix => IoBackend::Posix,
    };
    if args.allow_unsafe_placement {
        cfg.placement = Placement::Warn;
    }
    let node = Node::start(cfg)
        .await
        .map_err(|e| CliError(format!("node {} failed to start: {e}", args.id)))?;
    println!("LISTENING {}", node.local_addr());
    let _ = std::io::stdout().flush();
    let limit = args.exit_after_secs.map(Duration::from_secs);
    let expired = async {
        match limit {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context(|| "cannot watch SIGTERM".into())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = expired => {}
    }
    node.shutdown()
        .await
        .map_err(|e| CliError(format!("shutdown: {e}")))
}
