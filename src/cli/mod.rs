//! The `sitelog` command line. Subcommands: `bench` (measure the log against the machine's own
//! limit), `drill` (the site-loss drill), `node` (run a replica), `certs` (TLS certificates),
//! and the hidden `bench-writer` (the child process `bench` kills with SIGKILL).

mod bench;
mod catchup_bench;
mod certs;
mod client_cmds;
mod cluster;
mod coldread;
mod drill;
mod drill_report;
mod json;
mod naive;
mod node;
mod offline;
mod prometheus;
mod raw;
mod replicated;
mod report;
mod soak;
mod soak_check;
mod soak_report;
mod stats;
mod sys;

use clap::{Parser, Subcommand};
use std::fmt;
use std::process::ExitCode;

/// sitelog: a crash-safe, append-only segment log.
#[derive(Debug, Parser)]
#[command(name = "sitelog", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure durable, buffered and read throughput, latency and reopen time against a plain
    /// pwrite + fdatasync loop on the same disk, in the same run.
    Bench(bench::BenchArgs),
    /// The site-loss drill: three sites, a chat workload, the leader's site burns down
    /// (process killed, disk deleted), a replacement site is rebuilt; RTO, RPO and time to
    /// full redundancy, with an SVG timeline. `--soak MINUTES`: the soak (steady traffic with
    /// retention, periodic fires + rebuilds and rolling restarts, bounds on disk, memory,
    /// descriptors, threads, p99 and RPO).
    Drill(drill::DrillArgs),
    /// Check every checksum of a stopped node's (or a log's) directory: exit 0 when clean, 2
    /// when damage is found.
    Verify(offline::VerifyArgs),
    /// Print the records of a stopped node's (or a log's) directory as JSON lines.
    Dump(offline::DumpArgs),
    /// Run recovery on a stopped node's (or a log's) directory, as the next open would: cut a
    /// torn, never-acknowledged tail, remove leftovers. Damage is refused (exit 2).
    Repair(offline::VerifyArgs),
    /// Send messages to a cluster (generated, or stdin lines), optionally writing a ledger of
    /// what was acknowledged.
    Append(client_cmds::AppendArgs),
    /// Read committed records from a cluster as JSON lines, or check a ledger against it.
    Read(client_cmds::ReadArgs),
    /// Show every node's role, term, leader, commit end and follower lag.
    Status(client_cmds::StatusArgs),
    /// Replace a lost node by a new one (new id): add it as a learner, wait for its catch-up
    /// (snapshot + bulk fetch), swap it in for the lost one.
    ReplaceNode(client_cmds::ReplaceArgs),
    /// Run one replica of a replicated sitelog (until SIGINT/SIGTERM).
    Node(node::NodeArgs),
    /// Certificates for mutual TLS: `certs init` creates a cluster CA, node certificates and
    /// client certificates (one per role).
    Certs(certs::CertsArgs),
    /// (internal) Open an existing log and append until killed, printing acknowledged ends.
    #[command(hide = true)]
    BenchWriter(bench::WriterArgs),
}

/// An error for the user: one message, printed once, exit status 1.
#[derive(Debug)]
pub struct CliError(pub String);

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<crate::Error> for CliError {
    fn from(e: crate::Error) -> Self {
        CliError(e.to_string())
    }
}

pub type CliResult<T> = Result<T, CliError>;

/// The security that `--tls-dir DIR` / `--insecure` choose, for a node and for every client
/// command alike: exactly one must be given, so that a forgotten flag never silently means
/// plaintext.
pub fn security_choice(
    tls_dir: Option<&std::path::PathBuf>,
    insecure: bool,
) -> CliResult<crate::Security> {
    match (tls_dir, insecure) {
        (Some(dir), false) => Ok(crate::Security::Tls(crate::TlsDir::new(dir))),
        (None, true) => Ok(crate::Security::Insecure),
        (Some(_), true) => Err(CliError(
            "--tls-dir and --insecure exclude each other: give one of them".into(),
        )),
        (None, false) => Err(CliError(
            "refusing to run without a security choice: give --tls-dir DIR (mutual TLS with \
             the certificates `sitelog certs init` writes) or --insecure (plaintext, no \
             authentication; labs only)"
                .into(),
        )),
    }
}

/// Adds what was being done to an error.
pub trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> CliResult<T>;
}

impl<T, E: fmt::Display> Context<T> for Result<T, E> {
    fn context(self, what: impl FnOnce() -> String) -> CliResult<T> {
        self.map_err(|e| CliError(format!("{}: {e}", what())))
    }
}

/// Parses the command line, runs the command, reports an error on stderr.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Warnings and errors of the library (refused connections, failed fetches, a poisoned
    // log) reach stderr; RUST_LOG selects more.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,openraft=error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    let result = match cli.command {
        Command::Bench(args) => bench::run(&args),
        Command::BenchWriter(args) => bench::run_writer(&args),
        Command::Node(args) => node::run(&args),
        Command::Certs(args) => certs::run(&args),
        Command::Drill(args) => drill::run(&args),
        Command::Append(args) => client_cmds::append(&args),
        Command::Status(args) => client_cmds::status(&args),
        Command::ReplaceNode(args) => client_cmds::replace_node(&args),
        Command::Read(args) => match client_cmds::read(&args) {
            Ok(code) => return code,
            Err(e) => Err(e),
        },
        Command::Verify(args) => return offline::verify(&args),
        Command::Dump(args) => return offline::dump(&args),
        Command::Repair(args) => return offline::repair(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sitelog: error: {e}");
            ExitCode::FAILURE
        }
    }
}
