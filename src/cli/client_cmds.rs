//! Cluster client commands:
//! - `sitelog append`: a verifiable producer. Sends N generated messages, or stdin lines, one
//!   append each, through one idempotent producer (a lost answer is resent with the same seq
//!   until it resolves, never stored twice); with `--ledger FILE` writes one line per message:
//!   `<id> <crc32 hex> <size> OK <offset> retries=<k>` | `FAIL` | `UNKNOWN` (sent, no answer
//!   within the retry deadline: it may or may not be committed), so anyone can check later
//!   that nothing acknowledged was lost. An existing ledger is appended to, ids continuing
//!   after its highest (ledgers without `retries=` still check).
//! - `sitelog read`: a verifiable consumer: committed records as JSON lines (offset, term,
//!   timestamp, size, crc32, optionally the payload); `--check-ledger FILE` verifies every
//!   `OK` line of a ledger against what the cluster returns (exit 2 on a mismatch).
//! - `sitelog status`: every node's role, term, leader, commit and log ends, follower lag.

use super::json::Json;
use super::{CliError, CliResult, Context};
use crate::net::tls::{ClientRole, Security};
use crate::node::client::{AppendOutcome, Client};
use crate::node::protocol::WireRecord;
use crate::node::Role;
use crate::storage::checksum::checksum;
use crate::Error;
use bytes::Bytes;
use clap::Args;
use futures_util::StreamExt;
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Where the cluster is.
#[derive(Debug, Args)]
pub struct Target {
    /// A node's address (repeat for each node, or give a comma-separated list).
    #[arg(long = "node", value_delimiter = ',', required = true)]
    pub nodes: Vec<String>,
    /// The cluster id (decimal or 0x-hex).
    #[arg(long, value_parser = parse_u64)]
    pub cluster_id: u64,
    #[command(flatten)]
    pub security: ClientSecurity,
}

/// How a client command connects: `--tls-dir` (mutual TLS with a role's certificate) or
/// `--insecure` (plaintext). Exactly one is required, the same rule as `sitelog node`: a
/// forgotten flag must not silently downgrade to plaintext.
#[derive(Debug, Args)]
pub struct ClientSecurity {
    /// Connect with mutual TLS, presenting `client-<ROLE>.pem`/`.key` from DIR and trusting
    /// only its `ca.pem` (what `sitelog certs init` writes).
    #[arg(long, value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,
    /// The role whose client certificate is presented (with --tls-dir), default admin.
    /// Plaintext has no roles (every client is admin): with --insecure a warning says that
    /// the flag has no effect. No clap default, so that an explicit flag can be told apart.
    #[arg(long, value_parser = parse_role, value_name = "admin|produce|consume")]
    pub role: Option<ClientRole>,
    /// Plaintext, no authentication (labs and tests only): a warning is printed.
    #[arg(long)]
    pub insecure: bool,
}

/// Printed at start when a client command is given `--role` with `--insecure`: the role
/// would otherwise be dropped silently (a script asking for `consume` expects its writes to
/// be refused, and in plaintext they are not).
pub const ROLE_WITHOUT_TLS_WARNING: &str =
    "sitelog: warning: --role has no effect with --insecure: plaintext has no roles";

fn parse_role(s: &str) -> Result<ClientRole, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not a role: admin, produce or consume"))
}

impl Target {
    /// A client of `addrs` secured as the flags say; refuses neither or both of `--tls-dir`
    /// and `--insecure`.
    pub fn client(&self, addrs: Vec<String>) -> CliResult<Client> {
        let security =
            super::security_choice(self.security.tls_dir.as_ref(), self.security.insecure)?;
        match security {
            Security::Insecure => {
                eprintln!(
                    "sitelog: warning: --insecure: plaintext, no authentication of the nodes"
                );
                if self.security.role.is_some() {
                    eprintln!("{ROLE_WITHOUT_TLS_WARNING}");
                }
                Ok(Client::new(addrs, self.cluster_id))
            }
            Security::Tls(dir) => {
                let display = dir.path().display().to_string();
                let role = self.security.role.unwrap_or(ClientRole::Admin);
                Client::new_tls(addrs, self.cluster_id, dir, role)
                    .context(|| format!("TLS files in {display}"))
            }
        }
    }
}

fn parse_u64(s: &str) -> Result<u64, String> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    }
    .map_err(|e| format!("{s:?} is not a number: {e}"))
}

/// Arguments of `sitelog append`.
#[derive(Debug, Args)]
pub struct AppendArgs {
    #[command(flatten)]
    pub target: Target,
    /// Generate this many messages (otherwise: one message per stdin line).
    #[arg(long)]
    pub count: Option<u64>,
    /// Size of generated messages in bytes.
    #[arg(long, default_value_t = 256)]
    pub size: usize,
    /// Append the ledger (one line per message) to this file; ids continue after the highest
    /// id already in it.
    #[arg(long)]
    pub ledger: Option<PathBuf>,
}

/// Arguments of `sitelog read`.
#[derive(Debug, Args)]
pub struct ReadArgs {
    #[command(flatten)]
    pub target: Target,
    /// First offset [default: the first offset the cluster still holds]. An offset below it
    /// (deleted by retention) is an error naming the first available offset.
    #[arg(long)]
    pub from: Option<u64>,
    /// Stop before this offset [default: the commit end when the read starts; with
    /// --follow: never].
    #[arg(long)]
    pub to: Option<u64>,
    /// After the commit end, keep printing records as they commit (polling every 50 ms) until
    /// interrupted or --to is reached; every line is flushed.
    #[arg(long, conflicts_with = "check_ledger")]
    pub follow: bool,
    /// Include payloads (as a string when UTF-8, else hex).
    #[arg(long)]
    pub payload: bool,
    /// Instead of printing, check every `OK` line of this ledger (exit 2 on any mismatch).
    #[arg(long)]
    pub check_ledger: Option<PathBuf>,
}

/// Arguments of `sitelog status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: Target,
    /// One JSON object per node instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn runtime() -> CliResult<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context(|| "cannot start the async runtime".into())
}

fn generated(id: u64, size: usize) -> Vec<u8> {
    let mut m = format!("msg {id} ").into_bytes();
    let mut rng = fastrand::Rng::with_seed(id);
    while m.len() < size {
        m.push(rng.alphanumeric() as u8);
    }
    m.truncate(size.max(1));
    m
}

/// How long every node must stay a leaderless learner before `append` gives up: a founding
/// node answers as a learner between binding its port and founding the cluster.
const LEARNERS_CONFIRM_MS: u64 = 1000;
/// How often the nodes are asked again meanwhile.
const PROBE_EVERY_MS: u64 = 100;
const NO_LEADER_LEARNERS: &str =
    "no leader: nodes are learners — start them with --member ID=SITE@ADDR on every node";

/// What the nodes' status says before appending.
#[derive(Debug, PartialEq, Eq)]
enum Probe {
    /// Some node is (or may become) a voter, or none answered: let the client try.
    Usable,
    /// Every node that answered is a learner and knows no leader: nothing can ever commit.
    Learners,
}

/// Refuses at once, instead of after the client's leader wait, when the nodes belong to
/// another cluster (the typed handshake refusal) or are all learners of no cluster.
async fn preflight(target: &Target, probe: &Client) -> CliResult<()> {
    let deadline = Instant::now() + Duration::from_millis(LEARNERS_CONFIRM_MS);
    loop {
        match probe_nodes(target, probe).await? {
            Probe::Usable => return Ok(()),
            Probe::Learners if Instant::now() >= deadline => {
                return Err(CliError(NO_LEADER_LEARNERS.into()))
            }
            Probe::Learners => tokio::time::sleep(Duration::from_millis(PROBE_EVERY_MS)).await,
        }
    }
}

/// Asks every node for its status once.
async fn probe_nodes(target: &Target, probe: &Client) -> CliResult<Probe> {
    let (mut answered, mut learners) = (0usize, 0usize);
    let mut mismatch = None;
    for addr in &target.nodes {
        match probe.status_of(addr).await {
            Ok(s) => {
                answered += 1;
                learners += usize::from(s.role == Role::Learner && s.leader.is_none());
            }
            Err(e @ Error::ClusterMismatch { .. }) => mismatch = Some(format!("{addr}: {e}")),
            // Unreachable or busy: the client's own retries decide.
            Err(_) => {}
        }
    }
    match (answered, mismatch) {
        (0, Some(m)) => return Err(CliError(m)),
        (0, None) => return Ok(Probe::Usable),
        // The others may still take the messages; say which node is of another cluster.
        (_, Some(m)) => eprintln!("sitelog: warning: {m}"),
        (_, None) => {}
    }
    Ok(if learners == answered {
        Probe::Learners
    } else {
        Probe::Usable
    })
}

/// `sitelog append`.
pub fn append(args: &AppendArgs) -> CliResult<()> {
    let rt = runtime()?;
    let client = args.target.client(args.target.nodes.clone())?;
    rt.block_on(preflight(&args.target, &client))?;
    let (mut ledger, first_id) = match &args.ledger {
        Some(p) => {
            let (file, first_id) = open_ledger(p)?;
            (Some(std::io::BufWriter::new(file)), first_id)
        }
        None => (None, 0),
    };
    let messages: Box<dyn Iterator<Item = CliResult<Vec<u8>>>> = match args.count {
        Some(n) => Box::new((first_id..first_id + n).map(|i| Ok(generated(i, args.size)))),
        None => Box::new(
            std::io::stdin()
                .lock()
                .lines()
                .map(|l| l.map(String::into_bytes).context(|| "reading stdin".into())),
        ),
    };
    // A refusal by role refuses every message alike: registering is refused first.
    let producer = rt
        .block_on(client.producer())
        .map_err(|e| CliError(format!("append: {e}")))?;
    let (mut ok, mut unknown, mut failed, mut retries) = (0u64, 0u64, 0u64, 0u64);
    for (id, m) in (first_id..).zip(messages) {
        let m = m?;
        let (crc, size) = (checksum(&m), m.len());
        let report = rt.block_on(producer.append_report(vec![Bytes::from(m)]));
        retries += u64::from(report.retries);
        let status = match report.outcome {
            AppendOutcome::Ok(o) => {
                ok += 1;
                format!("OK {} retries={}", o[0], report.retries)
            }
            AppendOutcome::Unknown(_) => {
                unknown += 1;
                "UNKNOWN".into()
            }
            AppendOutcome::Failed(_) => {
                failed += 1;
                "FAIL".into()
            }
        };
        if let Some(l) = ledger.as_mut() {
            writeln!(l, "{id} {crc:08x} {size} {status}")
                .context(|| "writing the ledger".into())?;
        }
    }
    if let Some(mut l) = ledger {
        l.flush().context(|| "writing the ledger".into())?;
    }
    eprintln!("{ok} acknowledged, {unknown} unknown, {failed} failed, {retries} retries");
    if ok == 0 && (unknown + failed) > 0 {
        return Err(CliError("no message was acknowledged".into()));
    }
    Ok(())
}

/// Opens the ledger at `path` for appending (created if missing); returns it and the id of
/// the next message: one past the highest id already in it, so that several runs build one
/// ledger that `read --check-ledger` checks whole.
fn open_ledger(path: &std::path::Path) -> CliResult<(std::fs::File, u64)> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(CliError(format!("cannot read {}: {e}", path.display()))),
    };
    let mut next_id = 0u64;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let after: u64 = line
            .split_whitespace()
            .next()
            .and_then(|id| id.parse::<u64>().ok())
            .and_then(|id| id.checked_add(1))
            .ok_or_else(|| {
                CliError(format!(
                    "{}: not a ledger line: {line:?}; give another --ledger file",
                    path.display()
                ))
            })?;
        next_id = next_id.max(after);
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .context(|| format!("cannot open {}", path.display()))?;
    // A run cut off mid-line: the next line starts on its own.
    if !text.is_empty() && !text.ends_with('\n') {
        file.write_all(b"\n")
            .context(|| format!("writing {}", path.display()))?;
    }
    Ok((file, next_id))
}

/// `sitelog read`; exit 2 when a ledger check finds a lost or changed message.
pub fn read(args: &ReadArgs) -> CliResult<ExitCode> {
    let rt = runtime()?;
    let client = args.target.client(args.target.nodes.clone())?;
    if let Some(ledger) = &args.check_ledger {
        return rt.block_on(check_ledger(&client, ledger));
    }
    if args.follow {
        return rt.block_on(follow(&client, args));
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut next = args.from.unwrap_or(0);
    let mut end = args.to;
    loop {
        let (commit_end, recs) = match rt.block_on(client.read(next, 10_000)) {
            Ok(r) => r,
            // No --from: start where the cluster's retained records start.
            Err(Error::BelowFloor {
                first_available, ..
            }) if args.from.is_none() && first_available > next => {
                next = first_available;
                continue;
            }
            Err(e @ Error::BelowFloor { .. }) => return Err(below_floor(e)),
            Err(e) => return Err(CliError(format!("read: {e}"))),
        };
        let stop = *end.get_or_insert(commit_end);
        let Some(last) = recs.last().map(|r| r.offset) else {
            break;
        };
        for r in recs.iter().filter(|r| r.offset < stop) {
            writeln!(out, "{}", record_line(r, args.payload)).context(|| "stdout".into())?;
        }
        next = last + 1;
        if next >= stop {
            break;
        }
    }
    out.flush().context(|| "stdout".into())?;
    Ok(ExitCode::SUCCESS)
}

/// The CLI's message for a read below the floor.
fn below_floor(e: Error) -> CliError {
    match e {
        Error::BelowFloor {
            offset,
            first_available,
        } => CliError(format!(
            "read: offset {offset} is below the first available offset {first_available}: \
             older records were deleted by retention (read again with --from {first_available})"
        )),
        other => CliError(format!("read: {other}")),
    }
}

/// One record as the JSON line `read` prints.
fn record_line(r: &WireRecord, payload: bool) -> String {
    let mut fields = vec![
        ("offset".to_string(), Json::from(r.offset)),
        ("term".to_string(), r.term.into()),
        ("timestamp_us".to_string(), r.timestamp_us.into()),
        ("size".to_string(), r.payload.len().into()),
        ("crc32".to_string(), u64::from(checksum(&r.payload)).into()),
    ];
    if payload {
        fields.push(match std::str::from_utf8(&r.payload) {
            Ok(s) => ("payload".to_string(), s.into()),
            Err(_) => {
                let hex: String = r.payload.iter().map(|b| format!("{b:02x}")).collect();
                ("payload_hex".to_string(), hex.into())
            }
        });
    }
    Json::Obj(fields).render()
}

/// `read --follow` gives up after failing to reach any node for this long in a row (a node
/// restarting or an election takes seconds; a cluster gone for this long is reported).
const FOLLOW_GIVE_UP_MS: u64 = 30_000;

/// `sitelog read --follow`: the records up to the commit end, then each new one as it commits,
/// until interrupted or `--to`.
async fn follow(client: &Client, args: &ReadArgs) -> CliResult<ExitCode> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let stop = args.to.unwrap_or(u64::MAX);
    let mut from = args.from.unwrap_or(0);
    // Set while reads fail: since when (one warning per streak, not one per poll).
    let mut failing_since: Option<std::time::Instant> = None;
    let mut printed = false;
    'subscribe: loop {
        if from >= stop {
            break;
        }
        let mut records = client.subscribe(from);
        while let Some(item) = records.next().await {
            let r = match item {
                Ok(r) => r,
                // No --from: start where the cluster's retained records start (only before
                // the first line: a follower that falls behind the floor later is told).
                Err(Error::BelowFloor {
                    first_available, ..
                }) if args.from.is_none() && !printed && first_available > from => {
                    from = first_available;
                    continue 'subscribe;
                }
                Err(e @ Error::BelowFloor { .. }) => return Err(below_floor(e)),
                Err(e) => {
                    let since = *failing_since.get_or_insert_with(|| {
                        eprintln!("read --follow: {e} (retrying)");
                        std::time::Instant::now()
                    });
                    if since.elapsed() >= Duration::from_millis(FOLLOW_GIVE_UP_MS) {
                        return Err(CliError(format!("read --follow: {e}")));
                    }
                    continue;
                }
            };
            failing_since = None;
            if r.offset >= stop {
                break 'subscribe;
            }
            writeln!(out, "{}", record_line(&r, args.payload)).context(|| "stdout".into())?;
            out.flush().context(|| "stdout".into())?;
            from = r.offset + 1;
            printed = true;
            if from >= stop {
                break 'subscribe;
            }
        }
        // The stream ends only after BelowFloor, handled above.
        break;
    }
    out.flush().context(|| "stdout".into())?;
    Ok(ExitCode::SUCCESS)
}

async fn check_ledger(client: &Client, path: &PathBuf) -> CliResult<ExitCode> {
    let text =
        std::fs::read_to_string(path).context(|| format!("cannot read {}", path.display()))?;
    // offset -> (line id, crc, size) of every acknowledged message.
    let mut want: BTreeMap<u64, (String, u32, usize)> = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        // `retries=<k>` and any later field are for people; older ledgers end at the offset.
        if let [id, crc, size, "OK", off, ..] = f[..] {
            let crc = u32::from_str_radix(crc, 16)
                .map_err(|_| CliError(format!("bad ledger line {line:?}")))?;
            let size = size
                .parse()
                .map_err(|_| CliError(format!("bad ledger line {line:?}")))?;
            let off = off
                .parse()
                .map_err(|_| CliError(format!("bad ledger line {line:?}")))?;
            want.insert(off, (id.to_string(), crc, size));
        }
    }
    let mut bad = 0usize;
    let mut next = want.keys().next().copied().unwrap_or(0);
    let last = want.keys().next_back().copied().unwrap_or(0);
    let mut seen = 0usize;
    while !want.is_empty() && next <= last {
        let (_, recs) = client
            .read(next, 10_000)
            .await
            .map_err(|e| CliError(format!("read: {e}")))?;
        let Some(l) = recs.last().map(|r| r.offset) else {
            break;
        };
        for r in &recs {
            if let Some((id, crc, size)) = want.get(&r.offset) {
                seen += 1;
                if checksum(&r.payload) != *crc || r.payload.len() != *size {
                    bad += 1;
                    eprintln!(
                        "MISMATCH: message {id} at offset {} differs from the ledger",
                        r.offset
                    );
                }
            }
        }
        next = l + 1;
    }
    let missing = want.len() - seen;
    if missing > 0 {
        eprintln!("LOST: {missing} acknowledged messages are not in the cluster's committed log");
    }
    println!(
        "{} acknowledged messages checked, {bad} changed, {missing} missing",
        want.len()
    );
    Ok(if bad + missing > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// `sitelog status`; an error (exit 1) when no node answers.
pub fn status(args: &StatusArgs) -> CliResult<()> {
    let rt = runtime()?;
    let client = args.target.client(vec![])?;
    let mut answered = 0usize;
    for addr in &args.target.nodes {
        let s = rt.block_on(client.status_of(addr));
        answered += usize::from(s.is_ok());
        match (s, args.json) {
            (Ok(s), true) => {
                let followers = s
                    .followers
                    .iter()
                    .map(|f| {
                        Json::obj([
                            ("node", f.node_id.into()),
                            ("lag_entries", f.lag_entries.into()),
                        ])
                    })
                    .collect();
                let leader = s.leader.map_or(Json::Null, Json::from);
                println!(
                    "{}",
                    Json::obj([
                        ("addr", addr.as_str().into()),
                        ("node", s.node_id.into()),
                        ("role", format!("{:?}", s.role).into()),
                        ("term", s.term.into()),
                        ("leader", leader),
                        ("commit_end", s.commit_end.into()),
                        ("log_end", s.log_end.into()),
                        ("catch_up_done_bytes", s.catch_up_bytes.0.into()),
                        ("catch_up_total_bytes", s.catch_up_bytes.1.into()),
                        ("followers", Json::Arr(followers)),
                    ])
                    .render()
                );
            }
            (Ok(s), false) => {
                let lag: Vec<String> = s
                    .followers
                    .iter()
                    .map(|f| format!("{}:{}", f.node_id, f.lag_entries))
                    .collect();
                println!(
                    "{addr}  node {}  {:?}  term {}  leader {}  commit_end {}  log_end {}{}",
                    s.node_id,
                    s.role,
                    s.term,
                    s.leader.map_or("none".to_string(), |l| l.to_string()),
                    s.commit_end,
                    s.log_end,
                    if lag.is_empty() {
                        String::new()
                    } else {
                        format!("  lag {}", lag.join(" "))
                    }
                );
            }
            (Err(e), true) => println!(
                "{}",
                Json::obj([
                    ("addr", addr.as_str().into()),
                    ("error", e.to_string().into())
                ])
                .render()
            ),
            (Err(e @ Error::NotAllowed { .. }), false) => println!("{addr}  refused: {e}"),
            (Err(e), false) => println!("{addr}  unreachable: {e}"),
        }
    }
    if answered == 0 {
        return Err(CliError(format!(
            "no node answered ({} asked)",
            args.target.nodes.len()
        )));
    }
    Ok(())
}

/// Arguments of `sitelog replace-node`.
#[derive(Debug, Args)]
pub struct ReplaceArgs {
    #[command(flatten)]
    pub target: Target,
    /// The id of the lost node to replace.
    #[arg(long)]
    pub dead: u64,
    /// The new node's id (never an id used before). The node must be running
    /// (`sitelog node --id NEW ...` without `--member`).
    #[arg(long)]
    pub new_id: u64,
    /// The new node's site.
    #[arg(long)]
    pub new_site: String,
    /// The new node's address.
    #[arg(long)]
    pub new_addr: String,
    /// Give up after this many seconds of catching up.
    #[arg(long, default_value_t = 3600)]
    pub timeout_secs: u64,
}

/// `sitelog replace-node`: adds the new node as a learner, waits until it has caught up
/// (showing bytes, rate and ETA of a catch-up by snapshot), then swaps it in for the dead one
/// (all through `Client::replace_site`).
pub fn replace_node(args: &ReplaceArgs) -> CliResult<()> {
    use crate::node::{ReplaceEvent, ReplaceOptions, ReplacePhase};
    use futures_util::StreamExt;
    let rt = runtime()?;
    rt.block_on(async {
        let client = args.target.client(args.target.nodes.clone())?;
        let peer = crate::node::Peer {
            site: args.new_site.clone(),
            addr: args.new_addr.clone(),
        };
        let opts = ReplaceOptions {
            catch_up_deadline_ms: args.timeout_secs.saturating_mul(1000),
            ..ReplaceOptions::default()
        };
        let mut events = client.replace_site(args.dead, args.new_id, peer, opts);
        let bar = indicatif::ProgressBar::new(1);
        let mut phase = ReplacePhase::AddingLearner;
        while let Some(event) = events.next().await {
            match event {
                ReplaceEvent::Progress(p) => {
                    phase = p.phase;
                    if p.phase == ReplacePhase::CatchingUp {
                        bar.set_length(p.commit_target.max(1));
                        bar.set_position(p.commit_done.min(p.commit_target));
                        bar.set_message(format!(
                            "{:.1}/{:.1} MB of segments, {:.1} MB/s, ETA {:.0} s",
                            p.snapshot_done_bytes as f64 / 1e6,
                            p.snapshot_total_bytes as f64 / 1e6,
                            p.rate_bytes_per_s / 1e6,
                            p.eta_ms.unwrap_or(0) as f64 / 1e3
                        ));
                    }
                }
                ReplaceEvent::Done { .. } => {
                    bar.finish();
                    println!("node {} replaced node {}", args.new_id, args.dead);
                    return Ok(());
                }
                ReplaceEvent::Failed(e) => return Err(replace_error(phase, args.new_id, &e)),
            }
        }
        Err(CliError("the replacement ended without an outcome".into()))
    })
}

/// The message of a replacement that failed at `phase`.
fn replace_error(phase: crate::node::ReplacePhase, new_id: u64, e: &Error) -> CliError {
    use crate::node::ReplacePhase;
    CliError(match (phase, e) {
        (ReplacePhase::AddingLearner, _) => format!("add learner: {e}"),
        (ReplacePhase::CatchingUp, Error::Timeout { .. }) => {
            format!("node {new_id} did not catch up in time")
        }
        (ReplacePhase::CatchingUp, _) => format!("new node: {e}"),
        (ReplacePhase::Swapping, _) => format!("membership change: {e}"),
    })
}
