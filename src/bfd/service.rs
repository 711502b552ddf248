//! The BFD service: the sockets, the clock and the sessions' state machines, on a thread of
//! its own (a current-thread runtime that nothing else in the daemon can starve: a 300 ms
//! detection must not wait for a busy reconciler).
//!
//! ```text
//!  0.0.0.0:3784, [::]:3784 (single hop, RFC 5881) ─┐  recvmsg: TTL, interface
//!  0.0.0.0:4784, [::]:4784 (multihop, RFC 5883) ───┼─► demux (your discriminator, or the
//!                                                  │   source for a first packet) ─► Session::handle
//!  per-session timers (transmit with jitter,       │            │
//!  detection) ─────────────────────────────────────┘            ├─► one UDP socket per session
//!                                                               │   (source port 49152–65535, TTL 255)
//!  commands (admin down/up, stop) ──────────────────────────────┼─► watch<Verdict> per peer (BGP)
//!                                                               └─► watch<statuses> (CLI, metrics)
//! ```
//!
//! Single hop (RFC 5881 §5): packets go out with TTL 255 and a packet that arrives with
//! less is discarded (counted) — a BFD GTSM. A packet is taken only from its session's peer
//! address (and interface, for a link-local one). Multihop sessions are not TTL-checked.
//!
//! What clients see ([`Verdict`]): the session's state and a count of path failures —
//! Up → Down because packets stopped or the peer said Down. A Down the peer signals with
//! AdminDown, or our own AdminDown, is not a failure (RFC 5882 §3.2): BGP keeps its session.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::packet::{Diag, Packet, State};
use super::session::{self, Action, Input, Session};
use crate::lifecycle::Heartbeat;

/// UDP port of single-hop Control packets (RFC 5881).
pub const SINGLE_HOP_PORT: u16 = 3784;
/// UDP port of multihop Control packets (RFC 5883).
pub const MULTIHOP_PORT: u16 = 4784;

/// A BFD peer as a client asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSpec {
    /// How status and logs name it (`192.0.2.1`, `fe80::1%swp1`).
    pub name: String,
    pub address: IpAddr,
    /// The interface of a link-local peer.
    pub interface: Option<String>,
    pub multihop: bool,
    /// The source of our packets (the BGP session's `local-address`); default: the
    /// kernel's choice.
    pub local: Option<IpAddr>,
    pub config: session::Config,
}

/// What a client (a BGP session) learns of its peer's BFD session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub state: State,
    /// Path failures so far: a client tears its session down when this grows.
    pub failures: u64,
    pub diag: Diag,
}

/// One session as `kube-gw bfd` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionStatus {
    pub name: String,
    pub multihop: bool,
    pub state: State,
    pub remote_state: Option<State>,
    pub local_diag: Diag,
    pub remote_diag: Option<Diag>,
    pub local_disc: u32,
    pub remote_disc: Option<u32>,
    /// The negotiated transmit interval and detection time.
    pub tx_interval: Duration,
    pub detection_time: Option<Duration>,
    /// What we ask for.
    pub desired_min_tx: Duration,
    pub required_min_rx: Duration,
    pub detect_mult: u8,
    pub up_since: Option<std::time::Instant>,
    pub packets_sent: u64,
    pub packets_received: u64,
    pub discarded: u64,
    pub last_discard: Option<String>,
    pub failures: u64,
    pub last_error: Option<String>,
}

/// Every session's status, by name.
pub type Statuses = BTreeMap<String, SessionStatus>;

/// Where the metrics find the sessions' status once the service runs.
pub type StatusCell = std::sync::Arc<std::sync::OnceLock<watch::Receiver<Statuses>>>;

/// A command to the service (through a [`Commander`]).
#[derive(Debug)]
pub enum Cmd {
    Admin {
        name: String,
        down: bool,
        reply: oneshot::Sender<bool>,
    },
}

/// The running service.
#[derive(Debug)]
pub struct Bfd {
    statuses: watch::Receiver<Statuses>,
    verdicts: HashMap<String, watch::Receiver<Verdict>>,
    cmds: mpsc::Sender<Cmd>,
    stop: Option<oneshot::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Bfd {
    /// The verdicts of `name`'s session (for its BGP session), if it has one.
    pub fn verdict(&self, name: &str) -> Option<watch::Receiver<Verdict>> {
        self.verdicts.get(name).cloned()
    }

    pub fn statuses(&self) -> Statuses {
        self.statuses.borrow().clone()
    }

    /// A handle that takes sessions administratively down or back.
    pub fn commander(&self) -> Commander {
        Commander(self.cmds.clone())
    }

    /// Stops: with `admin_down` every session goes AdminDown first (RFC 5882 §3.2: no
    /// path failure to its peer), else the sessions just fall silent (a graceful restart:
    /// the peer's BGP treats the timeout as the control plane restarting, when told to);
    /// then the thread ends.
    pub fn stop(&mut self, admin_down: bool) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(admin_down);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends the operator's commands to the service.
#[derive(Debug, Clone)]
pub struct Commander(mpsc::Sender<Cmd>);

impl Commander {
    /// Takes a session administratively down (`down`) or back; false if there is no such
    /// session.
    pub async fn admin(&self, name: &str, down: bool) -> bool {
        let (reply, rx) = oneshot::channel();
        let cmd = Cmd::Admin {
            name: name.into(),
            down,
            reply,
        };
        if self.0.send(cmd).await.is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }
}

impl Drop for Bfd {
    fn drop(&mut self) {
        self.stop(true);
    }
}

/// Starts the service with these peers on its own thread; `cell` gets its status channel.
pub fn spawn(peers: Vec<PeerSpec>, hb: Heartbeat, cell: &StatusCell) -> std::io::Result<Bfd> {
    let (status_tx, statuses) = watch::channel(Statuses::new());
    let _ = cell.set(statuses.clone());
    let (cmds_tx, cmds) = mpsc::channel(16);
    let (stop_tx, stop) = oneshot::channel();
    let mut verdicts = HashMap::new();
    let mut senders = HashMap::new();
    for p in &peers {
        let (tx, rx) = watch::channel(Verdict {
            state: State::Down,
            failures: 0,
            diag: Diag::None,
        });
        verdicts.insert(p.name.clone(), rx);
        senders.insert(p.name.clone(), tx);
    }
    let thread = std::thread::Builder::new()
        .name("kube-gw-bfd".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "BFD: cannot start its runtime; BFD is off");
                    return;
                }
            };
            rt.block_on(run(peers, senders, status_tx, cmds, stop, hb));
        })?;
    Ok(Bfd {
        statuses,
        verdicts,
        cmds: cmds_tx,
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

/// A session with its socket, timers and counters.
struct Entry {
    spec: PeerSpec,
    fsm: Session,
    sock: Option<UdpSocket>,
    tx_at: Option<Instant>,
    detect_at: Option<Instant>,
    verdict: watch::Sender<Verdict>,
    status: SessionStatus,
}

/// The receiving sockets: (single hop v4, v6), (multihop v4, v6).
struct Listeners {
    sockets: Vec<(UdpSocket, bool)>,
}

async fn run(
    peers: Vec<PeerSpec>,
    mut verdicts: HashMap<String, watch::Sender<Verdict>>,
    statuses: watch::Sender<Statuses>,
    mut cmds: mpsc::Receiver<Cmd>,
    mut stop: oneshot::Receiver<bool>,
    hb: Heartbeat,
) {
    let listeners = Listeners::bind(peers.iter().any(|p| p.multihop));
    let mut entries: Vec<Entry> = Vec::new();
    let seed = discriminator_seed();
    for (i, spec) in peers.into_iter().enumerate() {
        let Some(verdict) = verdicts.remove(&spec.name) else {
            continue;
        };
        // Non-zero and unique per system (RFC 5880 §6.3).
        let disc = seed.wrapping_add(u32::try_from(i).unwrap_or(0)).max(1);
        let fsm = Session::new(spec.config, disc);
        let status = SessionStatus {
            name: spec.name.clone(),
            multihop: spec.multihop,
            state: State::Down,
            remote_state: None,
            local_diag: Diag::None,
            remote_diag: None,
            local_disc: disc,
            remote_disc: None,
            tx_interval: fsm.tx_interval(),
            detection_time: None,
            desired_min_tx: Duration::from_micros(u64::from(spec.config.desired_min_tx)),
            required_min_rx: Duration::from_micros(u64::from(spec.config.required_min_rx)),
            detect_mult: spec.config.detect_mult,
            up_since: None,
            packets_sent: 0,
            packets_received: 0,
            discarded: 0,
            last_discard: None,
            failures: 0,
            last_error: listeners.problem(),
        };
        let mut e = Entry {
            spec,
            fsm,
            sock: None,
            tx_at: None,
            detect_at: None,
            verdict,
            status,
        };
        e.open().await;
        let start = e.fsm.start();
        e.apply(start).await;
        entries.push(e);
    }
    publish(&statuses, &entries);
    let mut buf = [0u8; 512];
    loop {
        hb.turn().await;
        let now = Instant::now();
        // Timers that are due.
        for e in &mut entries {
            if e.tx_at.is_some_and(|t| t <= now) {
                e.tx_at = None;
                let out = e.fsm.handle(Input::TxTimer);
                e.apply(out).await;
            }
            if e.detect_at.is_some_and(|t| t <= now) {
                e.detect_at = None;
                let out = e.fsm.handle(Input::DetectTimer);
                e.apply(out).await;
            }
        }
        publish(&statuses, &entries);
        let next = entries
            .iter()
            .flat_map(|e| [e.tx_at, e.detect_at])
            .flatten()
            .min()
            .unwrap_or(now + crate::lifecycle::IDLE_TURN)
            .min(now + crate::lifecycle::IDLE_TURN);
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            r = listeners.recv(&mut buf) => {
                if let Some((n, from, ttl, ifindex, multihop)) = r {
                    receive(&mut entries, &buf[..n], from, ttl, ifindex, multihop).await;
                }
            }
            Some(cmd) = cmds.recv() => match cmd {
                Cmd::Admin { name, down, reply } => {
                    let found = entries.iter_mut().find(|e| e.spec.name == name);
                    let ok = found.is_some();
                    if let Some(e) = found {
                        let out = e.fsm.handle(if down { Input::AdminDown } else { Input::AdminUp });
                        e.apply(out).await;
                    }
                    // The answer shows the session as the command left it.
                    publish(&statuses, &entries);
                    let _ = reply.send(ok);
                }
            },
            admin_down = &mut stop => {
                // A dropped handle (the daemon going away) counts as a plain stop.
                if admin_down.unwrap_or(true) {
                    for e in &mut entries {
                        let out = e.fsm.handle(Input::AdminDown);
                        e.apply(out).await;
                    }
                }
                publish(&statuses, &entries);
                return;
            }
        }
    }
}

/// Hands a received packet to its session, or counts why not.
async fn receive(
    entries: &mut [Entry],
    bytes: &[u8],
    from: SocketAddr,
    ttl: Option<u8>,
    ifindex: Option<u32>,
    multihop: bool,
) {
    let source = from.ip().to_canonical();
    let matches_peer = |e: &Entry| {
        e.spec.multihop == multihop
            && e.spec.address == source
            && (e.spec.interface.is_none()
                || ifindex.is_none()
                || e.spec.interface.as_deref().and_then(crate::link::index_of) == ifindex)
    };
    let packet = Packet::decode(bytes);
    let entry = match &packet {
        Ok(p) if p.your_disc != 0 => entries
            .iter_mut()
            .find(|e| e.fsm.local_disc() == p.your_disc && matches_peer(e)),
        _ => entries.iter_mut().find(|e| matches_peer(e)),
    };
    let Some(e) = entry else {
        tracing::debug!(%from, "BFD packet for no session; discarded");
        return;
    };
    let p = match packet {
        Ok(p) => p,
        Err(why) => return e.discard(why.to_string()),
    };
    if !multihop && ttl.is_some_and(|t| t != 255) {
        return e.discard(format!(
            "TTL {} on a single-hop session (RFC 5881 §5 wants 255)",
            ttl.unwrap_or(0)
        ));
    }
    e.status.packets_received += 1;
    let out = e.fsm.handle(Input::Received(p));
    e.apply(out).await;
}

impl Entry {
    fn discard(&mut self, why: String) {
        tracing::debug!(peer = %self.spec.name, reason = %why, "BFD packet discarded");
        self.status.discarded += 1;
        self.status.last_discard = Some(why);
    }

    /// The session's sending socket: a source port of 49152–65535 (RFC 5881 §4), TTL 255,
    /// connected to the peer's port.
    async fn open(&mut self) {
        let port = if self.spec.multihop {
            MULTIHOP_PORT
        } else {
            SINGLE_HOP_PORT
        };
        let to = match (self.spec.address, &self.spec.interface) {
            (IpAddr::V6(a), Some(i)) => match crate::link::resolve(i) {
                Ok(scope) => SocketAddr::V6(std::net::SocketAddrV6::new(a, port, 0, scope)),
                Err(e) => {
                    self.status.last_error = Some(e);
                    return;
                }
            },
            (a, _) => SocketAddr::new(a, port),
        };
        match open_sender(to, self.spec.local).await {
            Ok(s) => {
                self.sock = Some(s);
                self.status.last_error = None;
            }
            Err(e) => {
                tracing::warn!(peer = %self.spec.name, error = %e, "BFD: cannot open the sending socket; retrying");
                self.status.last_error = Some(format!("cannot send to {to}: {e}"));
            }
        }
    }

    async fn apply(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Send(p) => {
                    if self.sock.is_none() {
                        self.open().await;
                    }
                    if let Some(s) = &self.sock {
                        match s.send(&p.encode()).await {
                            Ok(_) => self.status.packets_sent += 1,
                            Err(e) => {
                                self.status.last_error = Some(format!("send: {e}"));
                                // A link that went away: open again on the next send.
                                self.sock = None;
                            }
                        }
                    }
                }
                Action::ArmTx(d) => {
                    let hi = if self.spec.config.detect_mult == 1 {
                        0.90
                    } else {
                        1.0
                    };
                    let f = 0.75 + (hi - 0.75) * f64::from(jitter());
                    self.tx_at = Some(Instant::now() + d.mul_f64(f));
                }
                Action::StopTx => self.tx_at = None,
                Action::ArmDetect(d) => self.detect_at = Some(Instant::now() + d),
                Action::DisarmDetect => self.detect_at = None,
                Action::Changed { from, to, diag } => {
                    let remote_admin = self
                        .fsm
                        .remote()
                        .is_some_and(|r| r.state == State::AdminDown);
                    let failure = from == State::Up
                        && to == State::Down
                        && !remote_admin
                        && diag != Diag::AdministrativelyDown;
                    if failure {
                        self.status.failures += 1;
                        tracing::warn!(peer = %self.spec.name, diag = %diag, "BFD session down");
                    } else {
                        tracing::info!(peer = %self.spec.name, from = ?from, to = ?to, diag = %diag, "BFD state");
                    }
                    self.status.up_since = (to == State::Up).then(std::time::Instant::now);
                    let failures = self.status.failures;
                    self.verdict.send_replace(Verdict {
                        state: to,
                        failures,
                        diag,
                    });
                }
            }
        }
        self.refresh();
    }

    fn refresh(&mut self) {
        let s = &mut self.status;
        s.state = self.fsm.state();
        s.local_diag = self.fsm.diag();
        let r = self.fsm.remote();
        s.remote_state = r.map(|r| r.state);
        s.remote_diag = r.map(|r| r.diag);
        s.remote_disc = r.map(|r| r.disc);
        s.tx_interval = self.fsm.tx_interval();
        s.detection_time = self.fsm.detection_time();
    }
}

fn publish(statuses: &watch::Sender<Statuses>, entries: &[Entry]) {
    let all: Statuses = entries
        .iter()
        .map(|e| (e.spec.name.clone(), e.status.clone()))
        .collect();
    statuses.send_if_modified(|cur| {
        let changed = *cur != all;
        if changed {
            *cur = all;
        }
        changed
    });
}

/// A sending socket: bound to a free port of 49152–65535 (on `local` when given), TTL 255,
/// connected to `to`.
async fn open_sender(to: SocketAddr, local: Option<IpAddr>) -> std::io::Result<UdpSocket> {
    let any: IpAddr = local.unwrap_or(match to {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    });
    let start = 49152 + u16::try_from(jitter_u32() % 16384).unwrap_or(0);
    let mut last = None;
    for i in 0..64u16 {
        let port = 49152 + (start - 49152 + i * 257) % 16384;
        match UdpSocket::bind(SocketAddr::new(any, port)).await {
            Ok(s) => {
                let r = socket2::SockRef::from(&s);
                match to {
                    SocketAddr::V4(_) => r.set_ttl_v4(255)?,
                    SocketAddr::V6(_) => r.set_unicast_hops_v6(255)?,
                }
                s.connect(to).await?;
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free source port")))
}

impl Listeners {
    /// Binds what can be bound; a failure is reported in the sessions' status.
    fn bind(multihop: bool) -> Self {
        let mut sockets = Vec::new();
        let mut ports = vec![(SINGLE_HOP_PORT, false)];
        if multihop {
            ports.push((MULTIHOP_PORT, true));
        }
        for (port, mh) in ports {
            for any in [
                SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port),
                SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port),
            ] {
                match bind_receiver(any) {
                    Ok(s) => sockets.push((s, mh)),
                    Err(e) => tracing::warn!(%any, error = %e, "BFD: cannot listen"),
                }
            }
        }
        Self { sockets }
    }

    fn problem(&self) -> Option<String> {
        (self.sockets.len() < 2).then(|| {
            format!(
                "BFD listens on {} of its sockets (port {SINGLE_HOP_PORT} IPv4 and IPv6): is another BFD daemon running here?",
                self.sockets.len()
            )
        })
    }

    /// The next packet on any socket: (length, source, TTL, interface, multihop).
    async fn recv(
        &self,
        buf: &mut [u8],
    ) -> Option<(usize, SocketAddr, Option<u8>, Option<u32>, bool)> {
        if self.sockets.is_empty() {
            return std::future::pending().await;
        }
        let ready =
            futures::future::select_all(self.sockets.iter().map(|(s, _)| Box::pin(s.readable())));
        let (r, i, _) = ready.await;
        if r.is_err() {
            return None;
        }
        let (sock, multihop) = &self.sockets[i];
        match sock.try_io(Interest::READABLE, || recv_with_info(sock, buf)) {
            Ok((n, from, ttl, ifindex)) => Some((n, from, ttl, ifindex, *multihop)),
            Err(_) => None,
        }
    }
}

/// A receiving socket that reports each packet's TTL and interface.
fn bind_receiver(any: SocketAddr) -> std::io::Result<UdpSocket> {
    use nix::sys::socket::{setsockopt, sockopt};
    let domain = socket2::Domain::for_address(any);
    let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    s.set_reuse_address(true)?;
    match any {
        SocketAddr::V4(_) => {
            setsockopt(&s, sockopt::Ipv4RecvTtl, &true).map_err(std::io::Error::from)?;
            setsockopt(&s, sockopt::Ipv4PacketInfo, &true).map_err(std::io::Error::from)?;
        }
        SocketAddr::V6(_) => {
            s.set_only_v6(true)?;
            setsockopt(&s, sockopt::Ipv6RecvHopLimit, &true).map_err(std::io::Error::from)?;
            setsockopt(&s, sockopt::Ipv6RecvPacketInfo, &true).map_err(std::io::Error::from)?;
        }
    }
    s.set_nonblocking(true)?;
    s.bind(&any.into())?;
    UdpSocket::from_std(s.into())
}

/// One datagram with its TTL / hop limit and the interface it came in on.
fn recv_with_info(
    sock: &UdpSocket,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr, Option<u8>, Option<u32>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, SockaddrStorage};
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!(libc::c_int, libc::in6_pktinfo);
    let msg = recvmsg::<SockaddrStorage>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    )
    .map_err(std::io::Error::from)?;
    let mut ttl = None;
    let mut ifindex = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            match c {
                ControlMessageOwned::Ipv4Ttl(t) | ControlMessageOwned::Ipv6HopLimit(t) => {
                    ttl = u8::try_from(t).ok();
                }
                ControlMessageOwned::Ipv4PacketInfo(i) => {
                    ifindex = u32::try_from(i.ipi_ifindex).ok();
                }
                ControlMessageOwned::Ipv6PacketInfo(i) => ifindex = Some(i.ipi6_ifindex),
                _ => {}
            }
        }
    }
    let from = msg
        .address
        .and_then(|a| {
            a.as_sockaddr_in()
                .map(|v4| SocketAddr::from(std::net::SocketAddrV4::from(*v4)))
                .or_else(|| {
                    a.as_sockaddr_in6()
                        .map(|v6| SocketAddr::from(std::net::SocketAddrV6::from(*v6)))
                })
        })
        .ok_or_else(|| std::io::Error::other("a datagram without a source address"))?;
    Ok((msg.bytes, from, ttl, ifindex))
}

/// The first local discriminator: different across restarts, so a peer that still holds
/// the old session does not mistake the new one for it.
fn discriminator_seed() -> u32 {
    jitter_u32() | 1
}

fn jitter_u32() -> u32 {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let x = (n as u64) ^ (u64::from(std::process::id()) << 32);
    // splitmix64's finalizer: good enough to spread ports and discriminators.
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) as u32
}

/// A number in [0, 1) for the transmit jitter.
fn jitter() -> f32 {
    (jitter_u32() % 10_000) as f32 / 10_000.0
}

/// BFD metrics, read from the sessions' status at scrape time.
#[derive(Debug)]
pub struct BfdCollector(pub StatusCell);

impl prometheus_client::collector::Collector for BfdCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        use prometheus_client::metrics::MetricType;
        let all: Vec<SessionStatus> = self
            .0
            .get()
            .map(|rx| rx.borrow().values().cloned().collect())
            .unwrap_or_default();
        type Get = fn(&SessionStatus) -> f64;
        let gauges: [(&str, &str, Get); 3] = [
            ("bfd_session_up", "1 while the BFD session is Up", |s| {
                f64::from(u8::from(s.state == State::Up))
            }),
            (
                "bfd_session_state",
                "BFD session state (0 AdminDown, 1 Down, 2 Init, 3 Up)",
                |s| f64::from(s.state as u8),
            ),
            (
                "bfd_detection_time_seconds",
                "Negotiated detection time of the BFD session (0 until the peer is heard)",
                |s| s.detection_time.map_or(0.0, |d| d.as_secs_f64()),
            ),
        ];
        for (name, help, get) in gauges {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for s in &all {
                ConstGauge::new(get(s))
                    .encode(m.encode_family(&[("neighbor", s.name.as_str())])?)?;
            }
        }
        type Count = fn(&SessionStatus) -> u64;
        let counters: [(&str, &str, Count); 4] = [
            (
                "bfd_path_failures",
                "BFD sessions that went from Up to Down for a failed path (not AdminDown)",
                |s| s.failures,
            ),
            ("bfd_packets_sent", "BFD Control packets sent", |s| {
                s.packets_sent
            }),
            (
                "bfd_packets_received",
                "BFD Control packets received and accepted",
                |s| s.packets_received,
            ),
            (
                "bfd_packets_discarded",
                "BFD Control packets discarded (malformed, wrong TTL, unknown discriminator)",
                |s| s.discarded,
            ),
        ];
        for (name, help, get) in counters {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for s in &all {
                ConstCounter::new(get(s))
                    .encode(m.encode_family(&[("neighbor", s.name.as_str())])?)?;
            }
        }
        Ok(())
    }
}
