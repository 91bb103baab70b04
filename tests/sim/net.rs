//! The simulated network: sitelog's real message transport seam (`raft::remote::Connector`)
//! over in-memory pipes whose timing and failures come from the run's seed.
//!
//! Model (what a TCP network between sites can do to sitelog):
//! - A connection is two FIFO pipes. Each message is delivered after a random delay (but never
//!   before the one sent ahead of it on the same pipe: TCP keeps order within a connection).
//!   Messages on different connections overtake each other freely (reordering).
//! - Loss: a lost message resets its connection, both directions (what TCP turns loss into
//!   when retransmission fails); the peer sees the stream end, the sender's next send fails.
//! - Partitions: directional cuts `(from, to)`. A cut link refuses new connections and resets
//!   connections whose next message crosses it. Asymmetric cuts and whole-site isolation are
//!   sets of cuts.
//! - Duplicates and stale messages: a request may be copied and delivered again much later on a
//!   fresh connection (its answer goes nowhere): an old leader's AppendEntries or an old vote
//!   request arriving after the cluster moved on.
//! - Crash: a node's incarnation number changes; pipes into or out of an old incarnation
//!   deliver nothing more, and a zombie of the old incarnation can neither connect nor send.
//! - Pause: messages to a paused node wait until the pause ends.

use bytes::Bytes;
use sitelog::raft::remote::{ConnPurpose, Connector, MessageRx, MessageTx};
use sitelog::raft::runtime;
use sitelog::{Error, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Accepts a connection: the server side's halves.
/// Hands a server an accepted connection: its purpose, the calling node, and the halves.
pub type Accept = Arc<dyn Fn(ConnPurpose, u64, SimTx, SimRx) + Send + Sync>;

/// Network fault rates; all in parts per thousand of messages.
#[derive(Debug, Clone, Copy)]
pub struct NetFaults {
    pub delay_min_ms: u64,
    pub delay_max_ms: u64,
    pub loss_per_mille: u32,
    pub dup_per_mille: u32,
}

impl NetFaults {
    pub fn calm() -> Self {
        NetFaults {
            delay_min_ms: 1,
            delay_max_ms: 3,
            loss_per_mille: 0,
            dup_per_mille: 0,
        }
    }
}

struct Endpoint {
    incarnation: u64,
    accept: Option<Accept>,
    paused_until: Instant,
}

struct State {
    rng: fastrand::Rng,
    nodes: BTreeMap<u64, Endpoint>,
    cut: BTreeSet<(u64, u64)>,
    faults: NetFaults,
    pub delivered: u64,
    pub resets: u64,
    pub ghosts: u64,
    /// Every delivery, when tracing (to find where two runs of one seed part).
    trace: Option<Vec<String>>,
    t0: Instant,
}

/// The network of one simulated run. Cloning shares it.
#[derive(Clone)]
pub struct SimNet {
    st: Arc<Mutex<State>>,
}

impl SimNet {
    pub fn new(seed: u64) -> SimNet {
        SimNet {
            st: Arc::new(Mutex::new(State {
                rng: fastrand::Rng::with_seed(seed),
                nodes: BTreeMap::new(),
                cut: BTreeSet::new(),
                faults: NetFaults::calm(),
                delivered: 0,
                resets: 0,
                ghosts: 0,
                trace: std::env::var("SIM_TRACE").is_ok().then(Vec::new),
                t0: Instant::now(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap()
    }

    /// Node `id` comes up as incarnation `incarnation`, accepting connections with `accept`.
    pub fn up(&self, id: u64, incarnation: u64, accept: Accept) {
        let now = Instant::now();
        self.lock().nodes.insert(
            id,
            Endpoint {
                incarnation,
                accept: Some(accept),
                paused_until: now,
            },
        );
    }

    /// Node `id` is down: nothing reaches it, nothing it sent before is delivered.
    pub fn down(&self, id: u64) {
        if let Some(e) = self.lock().nodes.get_mut(&id) {
            e.incarnation += 1_000_000;
            e.accept = None;
        }
    }

    pub fn pause(&self, id: u64, until: Instant) {
        if let Some(e) = self.lock().nodes.get_mut(&id) {
            e.paused_until = until;
        }
    }

    pub fn set_faults(&self, f: NetFaults) {
        self.lock().faults = f;
    }

    pub fn cut(&self, from: u64, to: u64) {
        self.lock().cut.insert((from, to));
    }

    pub fn heal(&self) {
        self.lock().cut.clear();
    }

    pub fn take_trace(&self) -> Vec<String> {
        self.lock().trace.take().unwrap_or_default()
    }

    pub fn stats(&self) -> (u64, u64, u64) {
        let s = self.lock();
        (s.delivered, s.resets, s.ghosts)
    }

    pub fn connector(&self, from: u64, incarnation: u64) -> SimConnector {
        SimConnector {
            net: self.clone(),
            from,
            incarnation,
        }
    }

    fn alive(st: &State, id: u64, incarnation: u64) -> bool {
        st.nodes
            .get(&id)
            .is_some_and(|e| e.incarnation == incarnation)
    }

    fn delay(st: &mut State) -> Duration {
        let f = st.faults;
        Duration::from_millis(
            st.rng
                .u64(f.delay_min_ms..=f.delay_max_ms.max(f.delay_min_ms)),
        )
    }

    /// Opens a connection `from → to` and hands the server its halves.
    fn open(&self, from: (u64, u64), to: u64, purpose: ConnPurpose) -> Result<(SimTx, SimRx)> {
        let st = self.lock();
        let refused = |why: &str| Err(Error::Protocol(format!("connect {} → {to}: {why}", from.0)));
        if !Self::alive(&st, from.0, from.1) {
            return refused("sender is not running");
        }
        if st.cut.contains(&(from.0, to)) || st.cut.contains(&(to, from.0)) {
            return refused("unreachable");
        }
        let Some(ep) = st.nodes.get(&to) else {
            return refused("no such node");
        };
        let Some(accept) = ep.accept.clone() else {
            return refused("connection refused");
        };
        let to = (to, ep.incarnation);
        let broken = Arc::new(AtomicBool::new(false));
        let (c_tx, s_rx) = self.pipe(from, to, broken.clone(), true);
        let (s_tx, c_rx) = self.pipe(to, from, broken, false);
        drop(st);
        accept(purpose, from.0, s_tx, s_rx);
        Ok((c_tx, c_rx))
    }

    fn pipe(
        &self,
        from: (u64, u64),
        to: (u64, u64),
        broken: Arc<AtomicBool>,
        requests: bool,
    ) -> (SimTx, SimRx) {
        let (in_tx, mut in_rx) = mpsc::unbounded_channel::<(Instant, bool, Bytes)>();
        let (out_tx, out_rx) = mpsc::unbounded_channel::<Bytes>();
        let net = self.clone();
        let b = broken.clone();
        runtime::spawn(async move {
            while let Some((at, lost, msg)) = in_rx.recv().await {
                tokio::time::sleep_until(at).await;
                loop {
                    let until = net.lock().nodes.get(&to.0).map(|e| e.paused_until);
                    match until {
                        Some(u) if u > Instant::now() => tokio::time::sleep_until(u).await,
                        _ => break,
                    }
                }
                let mut st = net.lock();
                let ok = !lost
                    && !b.load(Ordering::Relaxed)
                    && Self::alive(&st, from.0, from.1)
                    && Self::alive(&st, to.0, to.1)
                    && !st.cut.contains(&(from.0, to.0));
                if !ok {
                    if !b.swap(true, Ordering::Relaxed) {
                        st.resets += 1;
                    }
                    return;
                }
                st.delivered += 1;
                let t0 = st.t0;
                if let Some(t) = st.trace.as_mut() {
                    t.push(format!(
                        "{:?} {}->{} {} {:?}",
                        Instant::now() - t0,
                        from.0,
                        to.0,
                        msg.len(),
                        msg.get(..12)
                    ));
                }
                drop(st);
                if out_tx.send(msg).is_err() {
                    return;
                }
            }
        });
        let tx = SimTx {
            net: self.clone(),
            from,
            to: to.0,
            inbox: in_tx,
            last_at: Instant::now(),
            broken: broken.clone(),
            requests,
        };
        (tx, SimRx { rx: out_rx })
    }

    /// Delivers a copy of `msg` to `to` again, later, on a connection of its own.
    fn ghost(&self, from: (u64, u64), to: u64, msg: Bytes, after: Duration) {
        let net = self.clone();
        runtime::spawn(async move {
            tokio::time::sleep(after).await;
            // The ghost comes from the network, not from a running node: any incarnation.
            let inc = net.lock().nodes.get(&from.0).map(|e| e.incarnation);
            let Some(inc) = inc else { return };
            if let Ok((mut tx, _rx)) = net.open((from.0, inc), to, ConnPurpose::Rpc) {
                net.lock().ghosts += 1;
                let _ = tx.send(msg).await;
            }
        });
    }
}

/// Opens connections for one incarnation of one node.
#[derive(Clone)]
pub struct SimConnector {
    net: SimNet,
    from: u64,
    incarnation: u64,
}

impl Connector for SimConnector {
    type Tx = SimTx;
    type Rx = SimRx;

    async fn connect(
        &self,
        target: u64,
        _addr: &str,
        purpose: ConnPurpose,
    ) -> Result<(SimTx, SimRx)> {
        let d = {
            let mut st = self.net.lock();
            let d = SimNet::delay(&mut st);
            let t0 = st.t0;
            if let Some(t) = st.trace.as_mut() {
                t.push(format!(
                    "{:?} connect {}->{target} {purpose:?} delay {d:?}",
                    Instant::now() - t0,
                    self.from
                ));
            }
            d
        };
        tokio::time::sleep(d).await; // the handshake's round trip
        self.net
            .open((self.from, self.incarnation), target, purpose)
    }
}

/// The sending half of a simulated connection.
pub struct SimTx {
    net: SimNet,
    from: (u64, u64),
    to: u64,
    inbox: mpsc::UnboundedSender<(Instant, bool, Bytes)>,
    last_at: Instant,
    broken: Arc<AtomicBool>,
    /// Client → server (only requests are ever duplicated).
    requests: bool,
}

impl MessageTx for SimTx {
    async fn send(&mut self, msg: Bytes) -> Result<()> {
        if self.broken.load(Ordering::Relaxed) {
            return Err(Error::Protocol("connection reset".into()));
        }
        let (delay, lost, ghost) = {
            let mut st = self.net.lock();
            if !SimNet::alive(&st, self.from.0, self.from.1) {
                return Err(Error::Protocol("sender is not running".into()));
            }
            let f = st.faults;
            let delay = SimNet::delay(&mut st);
            let lost = st.rng.u32(0..1000) < f.loss_per_mille;
            let ghost = (self.requests && st.rng.u32(0..1000) < f.dup_per_mille)
                .then(|| Duration::from_millis(st.rng.u64(50..=2000)));
            (delay, lost, ghost)
        };
        if let Some(after) = ghost {
            self.net.ghost(self.from, self.to, msg.clone(), after);
        }
        let at = (Instant::now() + delay).max(self.last_at);
        self.last_at = at;
        self.inbox
            .send((at, lost, msg))
            .map_err(|_| Error::Protocol("connection closed".into()))
    }
}

/// The receiving half of a simulated connection.
pub struct SimRx {
    rx: mpsc::UnboundedReceiver<Bytes>,
}

impl MessageRx for SimRx {
    async fn recv(&mut self) -> Result<Bytes> {
        // The end of the stream is a half-close (the peer may still read what we send) or a
        // reset (then `broken` is already set).
        self.rx
            .recv()
            .await
            .ok_or_else(|| Error::Protocol("connection closed".into()))
    }
}
