//! `sitelog certs init --dir DIR --nodes 1=site-1,2=site-2,3=site-3 [--days N] [--force]`:
//! a cluster CA, a certificate and key per node, and a client certificate and key per role
//! (`produce`, `consume`, `admin`), in DIR (see `sitelog::net::certs::generate`). Prints the
//! files written, one per line. An existing CA is refused unless `--force`.
//!
//! `sitelog certs issue --dir DIR (--node ID=SITE | --client ROLE) [--days N] [--force]`: one
//! more certificate and key from the CA in DIR (see `sitelog::net::certs::issue`).

use super::{CliError, CliResult};
use crate::limits::MAX_MEMBERS;
use crate::net::certs::{self, CertOptions, DEFAULT_VALIDITY_DAYS};
use crate::net::tls::{ClientRole, TlsDir, TlsIdentity, Who};
use clap::{Args, Subcommand};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Arguments of `sitelog certs`.
#[derive(Debug, Args)]
pub struct CertsArgs {
    #[command(subcommand)]
    command: CertsCommand,
}

#[derive(Debug, Subcommand)]
enum CertsCommand {
    /// Create a cluster CA, a certificate and key for each node and a client certificate and
    /// key for each role (produce, consume, admin) in DIR. Keys are written with mode 0600.
    Init(InitArgs),
    /// Issue one more certificate and key from the CA already in DIR: a replacement node
    /// (`--node ID=SITE`) or a client role (`--client ROLE`). An existing certificate of that
    /// node or role is refused unless --force.
    Issue(IssueArgs),
}

/// Arguments of `sitelog certs issue`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("whom").required(true).args(["node", "client"])))]
pub struct IssueArgs {
    /// The directory holding the CA (`ca.pem`, `ca.key`); the new files go there too.
    #[arg(long)]
    dir: PathBuf,
    /// The node, as ID=SITE.
    #[arg(long, value_parser = parse_node)]
    node: Option<(u64, String)>,
    /// The client role: produce, consume or admin.
    #[arg(long, value_parser = parse_role)]
    client: Option<ClientRole>,
    /// Validity of the certificate, in days.
    #[arg(long, default_value_t = DEFAULT_VALIDITY_DAYS)]
    days: u32,
    /// Replace an existing certificate and key of that node or role.
    #[arg(long)]
    force: bool,
}

/// Arguments of `sitelog certs init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The directory to write (created with mode 0700 when missing).
    #[arg(long)]
    dir: PathBuf,
    /// The nodes, as ID=SITE,ID=SITE,... (a site: letters, digits, '-', '.', '_', '~').
    #[arg(long, value_parser = parse_nodes)]
    nodes: BTreeMap<u64, String>,
    /// Validity of every certificate, in days.
    #[arg(long, default_value_t = DEFAULT_VALIDITY_DAYS)]
    days: u32,
    /// Replace an existing CA in DIR (every certificate the old CA issued stops working).
    #[arg(long)]
    force: bool,
}

/// Runs `sitelog certs`.
pub fn run(args: &CertsArgs) -> CliResult<()> {
    match &args.command {
        CertsCommand::Init(init) => run_init(init),
        CertsCommand::Issue(issue) => run_issue(issue),
    }
}

/// Prints the two files written (certificate, then key).
fn run_issue(args: &IssueArgs) -> CliResult<()> {
    let identity = match (&args.node, args.client) {
        (Some((id, site)), None) => TlsIdentity::Node {
            id: *id,
            site: site.clone(),
        },
        (None, Some(role)) => TlsIdentity::Client { role },
        // clap's group requires exactly one of the two.
        _ => {
            return Err(CliError(
                "give one of --node ID=SITE or --client ROLE".into(),
            ))
        }
    };
    let opts = CertOptions {
        validity_days: args.days,
        force: args.force,
    };
    let who = certs::issue(&args.dir, &identity, &opts)?;
    let tls = TlsDir::new(&args.dir);
    println!("{}", tls.cert(who).display());
    println!("{}", tls.key(who).display());
    Ok(())
}

fn parse_node(s: &str) -> Result<(u64, String), String> {
    let nodes = parse_nodes(s)?;
    match nodes.into_iter().collect::<Vec<_>>().as_slice() {
        [(id, site)] => Ok((*id, site.clone())),
        _ => Err(format!("{s:?} is not one ID=SITE")),
    }
}

fn parse_role(s: &str) -> Result<ClientRole, String> {
    s.parse::<ClientRole>().map_err(|e| e.to_string())
}

fn run_init(args: &InitArgs) -> CliResult<()> {
    let opts = CertOptions {
        validity_days: args.days,
        force: args.force,
    };
    let tls = certs::generate(&args.dir, &args.nodes, &opts)?;
    let mut files = vec![tls.ca_cert(), tls.ca_key()];
    for id in args.nodes.keys() {
        files.extend([tls.cert(Who::Node(*id)), tls.key(Who::Node(*id))]);
    }
    for role in ClientRole::ALL {
        files.extend([tls.cert(Who::Client(role)), tls.key(Who::Client(role))]);
    }
    for file in files {
        println!("{}", file.display());
    }
    Ok(())
}

/// `1=site-1,2=site-2`: ids once each, at most `MAX_MEMBERS`.
fn parse_nodes(s: &str) -> Result<BTreeMap<u64, String>, String> {
    let mut nodes = BTreeMap::new();
    for item in s.split(',') {
        let err = || format!("{item:?} is not ID=SITE");
        let (id, site) = item.split_once('=').ok_or_else(err)?;
        let id: u64 = id.parse().map_err(|_| err())?;
        if site.is_empty() {
            return Err(err());
        }
        if nodes.insert(id, site.to_string()).is_some() {
            return Err(format!("node {id} is named twice"));
        }
        if nodes.len() > MAX_MEMBERS {
            return Err(format!("more than {MAX_MEMBERS} nodes"));
        }
    }
    Ok(nodes)
}
