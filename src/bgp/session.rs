//! One neighbor's session: the thin I/O around the [`Fsm`]. It connects (TCP port 179),
//! reads bytes into the [`Framer`], decodes messages into FSM events, keeps the FSM's
//! timers, carries out its actions, and restarts the session after a failure with backoff
//! and jitter. Everything it learns goes to a `watch<NeighborStatus>`.
//!
//! ```text
//!  TCP read ─► Framer ─► decode ─┐
//!  timers (connect-retry, hold, ├─► Fsm::handle ─► actions: connect, send OPEN/KEEPALIVE/
//!  keepalive) ──────────────────┤                  NOTIFICATION, close, arm/disarm, up/down
//!  stop (daemon stopping) ──────┘
//! ```
//!
//! Routes: once Established, the session announces the exported prefixes (the VIPs the
//! desired state marks announceable and the address reconciler reports on `lo`) of the
//! session's own address family with next hop self, then End-of-RIB; afterwards every change
//! of the exported set becomes withdrawals and announcements of the difference. A
//! ROUTE-REFRESH from the peer gets that family's routes again, between BoRR and EoRR when
//! enhanced route refresh is negotiated (RFC 7313). Received UPDATEs are checked (RFC 7606),
//! kept as the Adj-RIB-In, counted and shown, never installed (import is deny-all).
//!
//! Security per neighbor: a TCP MD5 key (RFC 2385, read from the neighbor's password file
//! at start; a neighbor whose file cannot be read is not started rather than connected
//! without it) and GTSM (RFC 5082: TTL 255 out, minimum TTL 255 in) are set on the socket
//! before the SYN (crates/sockopt holds the `setsockopt` calls).
//!
//! Every write is bounded by RFC 9687's send hold time (the larger of 8 minutes and twice
//! the hold time): a peer that keeps sending KEEPALIVEs but stops reading gets Send Hold
//! Timer Expired and loses the connection instead of wedging the session.
//!
//! The peer's own connections come from the listener ([`super::listen`]): taken when the
//! session has none, held while kube-gw's connection waits for the peer's OPEN, and then
//! resolved by BGP identifier (RFC 4271 §6.8; the loser gets Cease / Connection Collision
//! Resolution); an Established session keeps its connection. A passive neighbor only
//! waits for them.
//!
//! Link-local neighbors (`address = "fe80::…"` with `interface`): the connection is scoped
//! to the interface (its index read from the kernel at each attempt, so an interface that
//! appears later is found), and the listener tells the same address on two links apart.
//! IPv6 routes carry the session's next hops from [`super::link`]: a global one and, when the
//! peer shares the link, our link-local one. With extended next hop (RFC 8950, default on link-local neighbors)
//! IPv4 routes go over the IPv6 session with those IPv6 next hops. IPv6 routes over an IPv4
//! session are not sent.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::desired::Communities;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::fsm::{Action, Event, Fsm, Settings, State, Timer};
use super::inbound;
use super::open::{self, Proposal};
use super::update;
use super::wire::{self, Framer, Kind, Notification};

/// What `kube-gw status` and metrics show of a neighbor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NeighborStatus {
    pub address: IpAddr,
    /// The interface of a link-local neighbor.
    pub interface: Option<String>,
    pub state: State,
    /// Seconds since the session came up (0 when down).
    #[serde(skip)]
    pub up_since: Option<Instant>,
    pub peer_as: Option<u32>,
    pub hold_time: Option<u16>,
    pub updates_received: u64,
    /// Messages by type (OPEN, UPDATE, NOTIFICATION, KEEPALIVE, ROUTE-REFRESH), both ways.
    pub messages_sent: [u64; 5],
    pub messages_received: [u64; 5],
    /// Prefixes the neighbor has announced to us on the current session (the Adj-RIB-In;
    /// import is deny-all, so they are only kept, counted and shown).
    pub prefixes_received: usize,
    #[serde(skip)]
    pub adj_rib_in: Arc<BTreeSet<IpNet>>,
    /// UPDATEs that were treated as withdraw, had an attribute discarded or looped.
    pub update_errors: u64,
    /// What the last of those was.
    pub last_update_error: Option<String>,
    /// Prefixes announced on the current session.
    pub prefixes_sent: usize,
    /// Those prefixes (the Adj-RIB-Out).
    #[serde(skip)]
    pub adj_rib_out: Arc<BTreeSet<IpNet>>,
    /// Why it last went down, or why it cannot start.
    pub last_error: Option<String>,
    pub transitions: u64,
    /// NOTIFICATIONs sent and received, by error code.
    pub notifications_sent: std::collections::BTreeMap<u8, u64>,
    pub notifications_received: std::collections::BTreeMap<u8, u64>,
}

/// What may be announced: every exported prefix with the communities its Services ask for.
pub type Exported = Arc<BTreeMap<IpNet, Communities>>;

/// Every neighbor's status, set once the sessions start (read by status and metrics).
pub type Statuses = Arc<std::sync::OnceLock<Vec<watch::Receiver<NeighborStatus>>>>;

/// BGP metrics, read from the sessions' status at scrape time.
#[derive(Debug)]
pub struct BgpCollector(pub Statuses);

impl prometheus_client::collector::Collector for BgpCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        use prometheus_client::metrics::MetricType;
        let all: Vec<NeighborStatus> = self
            .0
            .get()
            .into_iter()
            .flatten()
            .map(|rx| rx.borrow().clone())
            .collect();
        type Get = fn(&NeighborStatus) -> i64;
        let gauges: [(&str, &str, Get); 3] = [
            (
                "bgp_session_established",
                "1 while the session with the neighbor is Established",
                |n| i64::from(n.state == State::Established),
            ),
            (
                "bgp_prefixes_sent",
                "Prefixes announced to the neighbor on the current session",
                |n| i64::try_from(n.prefixes_sent).unwrap_or(i64::MAX),
            ),
            (
                "bgp_prefixes_received",
                "Prefixes the neighbor announces on the current session (kept, not installed)",
                |n| i64::try_from(n.prefixes_received).unwrap_or(i64::MAX),
            ),
        ];
        for (name, help, get) in gauges {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for n in &all {
                let a = n.name();
                ConstGauge::new(get(n)).encode(m.encode_family(&[("neighbor", a.as_str())])?)?;
            }
        }
        type Count = fn(&NeighborStatus) -> u64;
        let counters: [(&str, &str, Count); 3] = [
            (
                "bgp_session_transitions",
                "FSM state changes of the session with the neighbor",
                |n| n.transitions,
            ),
            (
                "bgp_updates_received",
                "UPDATE messages received from the neighbor",
                |n| n.updates_received,
            ),
            (
                "bgp_update_errors",
                "Received UPDATEs treated as withdraw (RFC 7606), with an attribute discarded, or with our AS in the path",
                |n| n.update_errors,
            ),
        ];
        for (name, help, get) in counters {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for n in &all {
                let a = n.name();
                ConstCounter::new(get(n)).encode(m.encode_family(&[("neighbor", a.as_str())])?)?;
            }
        }
        let mut m = encoder.encode_descriptor(
            "bgp_messages",
            "BGP messages by direction and type",
            None,
            MetricType::Counter,
        )?;
        const TYPES: [&str; 5] = [
            "open",
            "update",
            "notification",
            "keepalive",
            "route_refresh",
        ];
        for n in &all {
            let a = n.name();
            for (dir, counts) in [
                ("sent", &n.messages_sent),
                ("received", &n.messages_received),
            ] {
                for (t, count) in TYPES.iter().zip(counts) {
                    let labels = [("neighbor", a.as_str()), ("direction", dir), ("type", *t)];
                    ConstCounter::new(*count).encode(m.encode_family(&labels)?)?;
                }
            }
        }
        let mut m = encoder.encode_descriptor(
            "bgp_notifications",
            "NOTIFICATION messages by direction and error code",
            None,
            MetricType::Counter,
        )?;
        for n in &all {
            let a = n.name();
            for (dir, map) in [
                ("sent", &n.notifications_sent),
                ("received", &n.notifications_received),
            ] {
                for (code, count) in map {
                    let c = code.to_string();
                    let labels = [
                        ("neighbor", a.as_str()),
                        ("direction", dir),
                        ("code", c.as_str()),
                    ];
                    ConstCounter::new(*count).encode(m.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }
}

impl NeighborStatus {
    pub fn new(address: IpAddr, interface: Option<String>) -> Self {
        Self {
            address,
            interface,
            state: State::Idle,
            up_since: None,
            peer_as: None,
            hold_time: None,
            updates_received: 0,
            messages_sent: [0; 5],
            messages_received: [0; 5],
            prefixes_received: 0,
            adj_rib_in: Arc::default(),
            update_errors: 0,
            last_update_error: None,
            prefixes_sent: 0,
            adj_rib_out: Arc::default(),
            last_error: None,
            transitions: 0,
            notifications_sent: std::collections::BTreeMap::new(),
            notifications_received: std::collections::BTreeMap::new(),
        }
    }

    /// How the neighbor is named in status, metrics and the CLI: `fe80::1%swp1` for a
    /// link-local one.
    pub fn name(&self) -> String {
        super::link::neighbor_name(self.address, self.interface.as_deref())
    }
}

/// How to reach the neighbor and what to propose.
#[derive(Debug, Clone)]
pub struct Peer {
    pub address: IpAddr,
    /// The interface of a link-local neighbor.
    pub interface: Option<String>,
    /// How logs and status name it (`fe80::1%swp1` for a link-local one).
    pub name: String,
    /// RFC 8950: offer IPv4 routes over this IPv6 session.
    pub extended_next_hop: bool,
    pub port: u16,
    pub settings: Settings,
    pub ipv4_unicast: bool,
    pub ipv6_unicast: bool,
    /// What every route to this neighbor carries (from its configuration).
    pub export: ExportPolicy,
    /// TCP MD5 key, if the neighbor has a password file.
    pub password: Option<Password>,
    /// GTSM: TTL 255 out, nothing below 255 in.
    pub ttl_security: bool,
    /// More received prefixes than this closes the session (Cease / Maximum Number of
    /// Prefixes Reached, RFC 4486) and holds it down for a minute.
    pub max_prefixes: Option<u32>,
}

/// A TCP MD5 password: its bytes never reach a log, status or error message.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(Arc<[u8]>);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

impl Password {
    #[cfg(test)]
    pub(crate) fn from_bytes(b: &[u8]) -> Self {
        Self(b.into())
    }

    /// The key, for the socket option only.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// Reads a password file: its first line, without the line break (so `echo pw > file`
    /// works); an empty or too long password is an error that says so.
    pub fn read(path: &std::path::Path) -> Result<Self, String> {
        let bytes = std::fs::read(path).map_err(|e| {
            format!(
                "cannot read the password file {}: {e}; check that it exists and kube-gw may read it",
                path.display()
            )
        })?;
        let line = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return Err(format!(
                "the password file {} is empty; write the neighbor's TCP MD5 password in it",
                path.display()
            ));
        }
        if line.len() > kube_gw_sockopt::MAX_KEY_LEN {
            return Err(format!(
                "the password in {} is {} bytes; TCP MD5 takes at most {}",
                path.display(),
                line.len(),
                kube_gw_sockopt::MAX_KEY_LEN
            ));
        }
        Ok(Self(line.into()))
    }
}

/// Per-neighbor attributes of the routes sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportPolicy {
    pub communities: Vec<u32>,
    pub large_communities: Vec<(u32, u32, u32)>,
    pub med: Option<u32>,
    pub prepend: u8,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The GRACEFUL_SHUTDOWN community 65535:0 (RFC 8326).
pub const GRACEFUL_SHUTDOWN: u32 = 0xFFFF_0000;

/// The neighbors of a configuration, each with the reason it cannot be started (if any).
pub fn peers(cfg: &crate::config::Config) -> Vec<(Peer, Option<String>)> {
    use crate::config::{PeerKind, RemoteAsn};
    let Some(b) = &cfg.bgp else {
        return Vec::new();
    };
    b.neighbors
        .iter()
        .map(|n| {
            // The interface scopes only an IPv6 link-local neighbor (an IPv4 link-local one
            // is reached through the kernel's on-link route; for others it is ignored, and
            // the configuration check warns).
            let interface = match n.address {
                IpAddr::V6(a) if super::link::is_link_local(&a) => n.interface.clone(),
                _ => None,
            };
            let remote_as = match n.remote_asn {
                RemoteAsn::Number(a) => super::fsm::RemoteAs::Exact(a),
                RemoteAsn::Kind(PeerKind::External) => super::fsm::RemoteAs::External,
                RemoteAsn::Kind(PeerKind::Internal) => super::fsm::RemoteAs::Internal,
            };
            // A neighbor whose password cannot be read is not started, rather than
            // connected without it.
            let password = n.password_file.as_deref().map(Password::read);
            let problem = if let Some(Err(e)) = &password {
                Some(format!("{e}; this neighbor is not started"))
            } else {
                None
            };
            (
                Peer {
                    address: n.address,
                    name: super::link::neighbor_name(n.address, interface.as_deref()),
                    extended_next_hop: n.address.is_ipv6()
                        && n.extended_next_hop.unwrap_or(interface.is_some()),
                    interface,
                    port: 179,
                    settings: Settings {
                        local_as: b.asn,
                        router_id: b.router_id,
                        remote_as,
                        hold_time: b.hold_time,
                        keepalive: Some(b.keepalive).filter(|k| *k > 0),
                        passive: n.passive,
                    },
                    ipv4_unicast: true,
                    ipv6_unicast: true,
                    // Unparsable values were refused when the configuration was checked.
                    export: ExportPolicy {
                        communities: n
                            .communities
                            .iter()
                            .filter_map(|c| crate::config::parse_community(c))
                            .collect(),
                        large_communities: n
                            .large_communities
                            .iter()
                            .filter_map(|c| crate::config::parse_large_community(c))
                            .collect(),
                        med: n.med,
                        prepend: n.prepend,
                    },
                    password: password.and_then(Result::ok),
                    ttl_security: n.ttl_security,
                    max_prefixes: n.max_prefixes,
                },
                problem,
            )
        })
        .collect()
}
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Runs the session until `stop` turns true; then sends Cease / Administrative Shutdown
/// with `reason` if the session is up.
pub async fn run(
    peer: Peer,
    status: watch::Sender<NeighborStatus>,
    mut stop: watch::Receiver<bool>,
    mut exported: watch::Receiver<Exported>,
    mut drain: watch::Receiver<bool>,
    mut incoming: mpsc::Receiver<TcpStream>,
    mut paused: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_secs(1);
    let mut initial: Option<TcpStream> = None;
    let mut incoming_open = true;
    let mut paused_open = true;
    loop {
        // Drained (`kube-gw drain`): no session until `kube-gw undrain`; the peer's
        // connections are closed as they come.
        if *paused.borrow_and_update() {
            initial = None;
            status.send_modify(|s| {
                s.state = State::Idle;
                s.up_since = None;
                s.last_error = Some(DRAINED.into());
            });
            loop {
                tokio::select! {
                    () = crate::lifecycle::stopped(&mut stop) => return,
                    r = paused.changed(), if paused_open => {
                        paused_open = r.is_ok();
                        if !*paused.borrow_and_update() {
                            break;
                        }
                    }
                    c = incoming.recv(), if incoming_open => incoming_open = c.is_some(),
                }
                if !paused_open {
                    break;
                }
            }
            backoff = Duration::from_secs(1);
            status.send_modify(|s| s.last_error = None);
        }
        let ended = session(
            &peer,
            &status,
            Channels {
                stop: &mut stop,
                exported: &mut exported,
                drain: &mut drain,
                incoming: &mut incoming,
                incoming_open: &mut incoming_open,
                paused: &mut paused,
                paused_open: &mut paused_open,
            },
            initial.take(),
        )
        .await;
        let hold_down = match ended {
            Ended::Stopped => return,
            Ended::Paused => continue,
            Ended::Failed { was_up } => {
                if was_up {
                    backoff = Duration::from_secs(1);
                }
                None
            }
            Ended::HoldDown(d) => Some(d),
            Ended::Replaced(c) => {
                initial = Some(c);
                continue;
            }
        };
        // Jitter: up to a quarter of the delay (RFC 4271 §10 asks for it on the timers).
        let jitter = backoff.mul_f64(f64::from(jitter_fraction()) / 4.0);
        let wait = hold_down.unwrap_or(backoff + jitter);
        tokio::select! {
            () = crate::lifecycle::stopped(&mut stop) => return,
            () = tokio::time::sleep(wait) => {}
            // The peer connects while we wait: take its connection now.
            c = incoming.recv(), if incoming_open && hold_down.is_none() => match c {
                Some(c) => initial = Some(c),
                None => incoming_open = false,
            },
        }
        if hold_down.is_some() {
            // Connections that queued up during the hold-down are stale by now.
            while incoming.try_recv().is_ok() {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// A number in [0, 1) that differs between calls and processes (no RNG dependency).
fn jitter_fraction() -> f32 {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (n % 1000) as f32 / 1000.0
}

/// How a session ended.
#[derive(Debug)]
enum Ended {
    /// kube-gw is stopping.
    Stopped,
    /// `kube-gw drain`: closed until `kube-gw undrain`.
    Paused,
    /// Try again after the backoff (from 1 s again if the session had come up).
    Failed { was_up: bool },
    /// Try again only after this long (the peer sent more prefixes than allowed).
    HoldDown(Duration),
    /// Go on at once with this connection of the peer's (it won a collision, or arrived
    /// while the session's own connection failed).
    Replaced(TcpStream),
}

/// What a session listens to besides its connection.
struct Channels<'a> {
    stop: &'a mut watch::Receiver<bool>,
    exported: &'a mut watch::Receiver<Exported>,
    drain: &'a mut watch::Receiver<bool>,
    /// The peer's connections, from the listener.
    incoming: &'a mut mpsc::Receiver<TcpStream>,
    incoming_open: &'a mut bool,
    /// `kube-gw drain` (true) and `undrain`.
    paused: &'a mut watch::Receiver<bool>,
    paused_open: &'a mut bool,
}

/// What a drained neighbor's status says.
const DRAINED: &str =
    "drained (kube-gw drain): routes withdrawn, session closed; `kube-gw undrain` resumes";

/// RFC 4271 §6.8: which connection stays when both sides connected. The one opened by the
/// side with the higher BGP identifier — with equal identifiers (RFC 6286 allows them
/// between ASes), the side with the larger AS; two of the peer's own: the newer (the old one
/// is from before the peer restarted).
fn new_connection_wins(
    (local_id, local_as): (std::net::Ipv4Addr, u32),
    (peer_id, peer_as): (std::net::Ipv4Addr, u32),
    current_is_ours: bool,
) -> bool {
    !current_is_ours || (u32::from(local_id), local_as) < (u32::from(peer_id), peer_as)
}

/// Closes a connection with Cease / Connection Collision Resolution.
async fn close_collision(mut c: TcpStream, status: &watch::Sender<NeighborStatus>) {
    let n = Notification::new(wire::Code::Cease, 7, Vec::new());
    status.send_modify(|s| *s.notifications_sent.entry(6).or_default() += 1);
    let _ = c.write_all(&n.encode()).await;
    let _ = c.shutdown().await;
}

/// RFC 9687's send hold time: the larger of 8 minutes and twice the hold time.
fn send_hold_time(hold_time: u16) -> Duration {
    Duration::from_secs(480).max(Duration::from_secs(2 * u64::from(hold_time)))
}

/// How long a write may take while the session is being stopped (the daemon's stop must
/// not wait minutes for a peer that does not read).
const STOP_SEND_LIMIT: Duration = Duration::from_secs(2);

/// How long a session closed for too many prefixes stays down.
const MAX_PREFIX_HOLD_DOWN: Duration = Duration::from_secs(60);

/// One session from Idle back to Idle.
async fn session(
    peer: &Peer,
    status: &watch::Sender<NeighborStatus>,
    ch: Channels<'_>,
    initial: Option<TcpStream>,
) -> Ended {
    let Channels {
        stop,
        exported,
        drain,
        incoming,
        incoming_open,
        paused,
        paused_open,
    } = ch;
    // What the peer has from us on this session, and how to announce to it.
    let mut sent: BTreeMap<IpNet, Communities> = BTreeMap::new();
    let mut attrs: Option<update::Attrs> = None;
    // Families the peer asked to have again (ROUTE-REFRESH), as (AFI, SAFI).
    let mut refresh: Vec<(u16, u8)> = Vec::new();
    // The families both sides announced in their OPENs (RFC 4760: none means IPv4 unicast).
    let mut families = (false, false);
    // What the peer's OPEN offered (4-octet AS, extended next hop, enhanced route refresh).
    let mut peer_caps = open::PeerCapabilities::default();
    // The neighbor's routes (Adj-RIB-In), and whether it sent more than allowed.
    let mut received: BTreeSet<IpNet> = BTreeSet::new();
    let mut over_limit = false;
    let mut was_up = false;
    // Channels whose sender is gone are not polled again (they would be ready forever).
    let (mut exported_open, mut drain_open) = (true, true);
    // A session that starts with the peer's connection does not connect itself.
    let mut fsm = Fsm::new(Settings {
        passive: peer.settings.passive || initial.is_some(),
        ..peer.settings.clone()
    });
    // The connection, whether kube-gw opened it, and one of the peer's held until the
    // collision can be decided (its identifier is known once its OPEN is read).
    let mut ours = false;
    let mut held: Option<TcpStream> = None;
    let mut conn: Option<TcpStream> = None;
    let mut framer = Framer::default();
    let mut timers: [Option<Instant>; 3] = [None; 3];
    let mut pending: VecDeque<Event> = VecDeque::from([Event::Start]);
    if let Some(c) = initial {
        conn = Some(c);
        pending.push_back(Event::Connected);
    }
    let mut buf = vec![0u8; 65536];
    let mut send_hold = send_hold_time(peer.settings.hold_time);
    let idx = |t: Timer| match t {
        Timer::ConnectRetry => 0,
        Timer::Hold => 1,
        Timer::Keepalive => 2,
    };
    loop {
        // Feed queued events, then the next received message, one at a time: each message is
        // judged in the state the ones before it left (an UPDATE right behind the KEEPALIVE
        // that completes the handshake is an Established UPDATE).
        loop {
            while let Some(ev) = pending.pop_front() {
                let before = fsm.state();
                let actions = fsm.handle(ev);
                for a in actions {
                    match a {
                        Action::Connect => {
                            let to = match peer_socket(peer) {
                                Ok(to) => to,
                                Err(e) => {
                                    note_error(status, e);
                                    pending.push_back(Event::ConnectionLost);
                                    continue;
                                }
                            };
                            match tokio::time::timeout(CONNECT_TIMEOUT, connect(peer, to)).await {
                                Ok(Ok(s)) => {
                                    let _ = s.set_nodelay(true);
                                    conn = Some(s);
                                    ours = true;
                                    pending.push_back(Event::Connected);
                                }
                                Ok(Err(e)) => {
                                    note_error(status, format!("cannot connect to {to}: {e}"));
                                    pending.push_back(Event::ConnectionLost);
                                }
                                Err(_) => {
                                    note_error(
                                        status,
                                        format!("no answer from {to} within {CONNECT_TIMEOUT:?}"),
                                    );
                                    pending.push_back(Event::ConnectionLost);
                                }
                            }
                        }
                        Action::Listen => {}
                        Action::SendOpen => {
                            let body = open::encode(&Proposal {
                                local_as: peer.settings.local_as,
                                router_id: peer.settings.router_id,
                                hold_time: peer.settings.hold_time,
                                ipv4_unicast: peer.ipv4_unicast,
                                ipv6_unicast: peer.ipv6_unicast,
                                extended_next_hop: peer.extended_next_hop,
                            });
                            if let Ok(bytes) = wire::frame(Kind::Open, &body) {
                                send(status, &mut conn, &bytes, &mut pending, send_hold).await;
                            }
                        }
                        Action::SendKeepalive => {
                            if let Ok(bytes) = wire::frame(Kind::Keepalive, &[]) {
                                send(status, &mut conn, &bytes, &mut pending, send_hold).await;
                            }
                        }
                        Action::Send(n) => {
                            tracing::warn!(neighbor = %peer.name, notification = %n, "sending NOTIFICATION");
                            let code = n.code.to_u8();
                            status.send_modify(|s| {
                                *s.notifications_sent.entry(code).or_default() += 1
                            });
                            send(status, &mut conn, &n.encode(), &mut pending, send_hold).await;
                        }
                        Action::Close => {
                            if let Some(mut c) = conn.take() {
                                let _ = c.shutdown().await;
                            }
                            framer = Framer::default();
                        }
                        Action::Arm(t, d) => timers[idx(t)] = Some(Instant::now() + d),
                        Action::Disarm(t) => timers[idx(t)] = None,
                        Action::Up(n) => {
                            was_up = true;
                            send_hold = send_hold_time(n.hold_time);
                            tracing::info!(neighbor = %peer.name, peer_as = n.peer_as, hold_time = n.hold_time, "BGP session established");
                            let ends = conn
                                .as_ref()
                                .and_then(|c| Some((c.local_addr().ok()?, c.peer_addr().ok()?)));
                            let six = ends.and_then(|(l, p)| {
                                super::link::next_hops(&super::link::read(), l, p)
                            });
                            let a = update::Attrs {
                                local_as: peer.settings.local_as,
                                external: n.peer_as != peer.settings.local_as,
                                next_hop_v4: match ends.map(|(l, _)| l.ip().to_canonical()) {
                                    Some(IpAddr::V4(v)) => Some(v),
                                    _ => None,
                                },
                                next_hop_v6: six.map(|(g, _)| g),
                                next_hop_v6_local: six.and_then(|(_, l)| l),
                                // RFC 8950 when both sides offered it and IPv4 is negotiated.
                                ipv4_via_ipv6: six.is_some()
                                    && peer.extended_next_hop
                                    && peer_caps.extended_next_hop
                                    && families.0,
                                communities: communities(&peer.export, *drain.borrow()),
                                large_communities: peer.export.large_communities.clone(),
                                med: peer.export.med,
                                prepend: peer.export.prepend,
                            };
                            // Everything exported of the session's family (if negotiated), then
                            // End-of-RIB for each negotiated family.
                            let (v4, v6) = families;
                            let all = for_session(&exported.borrow_and_update(), &a, families);
                            let mut bodies = pack_routes(&all, &[], &a);
                            if v4 {
                                bodies.push(update::end_of_rib_v4());
                            }
                            if v6 {
                                bodies.push(update::end_of_rib_v6());
                            }
                            send_updates(status, &mut conn, bodies, &mut pending, send_hold).await;
                            sent = all;
                            attrs = Some(a);
                            let rib = adj_rib_out(&sent);
                            status.send_modify(|s| {
                                s.up_since = Some(Instant::now());
                                s.peer_as = Some(n.peer_as);
                                s.hold_time = Some(n.hold_time);
                                s.last_error = None;
                                s.prefixes_sent = rib.len();
                                s.adj_rib_out = rib;
                            });
                        }
                        Action::Down(why) => {
                            tracing::warn!(neighbor = %peer.name, reason = %why, "BGP session down");
                            sent.clear();
                            received.clear();
                            attrs = None;
                            status.send_modify(|s| {
                                s.up_since = None;
                                s.prefixes_received = 0;
                                s.adj_rib_in = Arc::default();
                                s.last_error = Some(why.clone());
                                s.prefixes_sent = 0;
                                s.adj_rib_out = Arc::default();
                            });
                        }
                        Action::Deliver => status.send_modify(|s| s.updates_received += 1),
                    }
                }
                let after = fsm.state();
                if before != after {
                    tracing::debug!(neighbor = %peer.name, from = ?before, to = ?after, "BGP state");
                    status.send_modify(|s| {
                        s.state = after;
                        s.transitions += 1;
                    });
                }
                // A ROUTE-REFRESH: the peer gets that family's routes again, between BoRR and
                // EoRR when enhanced route refresh was negotiated (RFC 7313), so it can drop
                // what was not re-advertised.
                for (afi, safi) in std::mem::take(&mut refresh) {
                    let Some(a) = &attrs else { break };
                    let four = afi == 1 && families.0;
                    if safi != 1 || !(four || (afi == 2 && families.1)) {
                        // Not a family of this session: ignored (RFC 2918 §4).
                        continue;
                    }
                    let routes = of_family(&sent, four);
                    let mark = |subtype| wire::RouteRefresh { afi, subtype, safi }.encode();
                    if peer_caps.enhanced_route_refresh {
                        send(
                            status,
                            &mut conn,
                            &mark(wire::RouteRefresh::BEGIN),
                            &mut pending,
                            send_hold,
                        )
                        .await;
                    }
                    send_updates(
                        status,
                        &mut conn,
                        pack_routes(&routes, &[], a),
                        &mut pending,
                        send_hold,
                    )
                    .await;
                    if peer_caps.enhanced_route_refresh {
                        send(
                            status,
                            &mut conn,
                            &mark(wire::RouteRefresh::END),
                            &mut pending,
                            send_hold,
                        )
                        .await;
                    }
                    tracing::info!(neighbor = %peer.name, afi, routes = routes.len(), "routes sent again (route refresh)");
                }
                if after == State::Idle && before != State::Idle {
                    // Back to Idle: this session is over; `run` restarts it after a delay, or
                    // at once with the peer's connection if one is waiting.
                    if let Some(h) = held.take() {
                        return Ended::Replaced(h);
                    }
                    return if over_limit {
                        Ended::HoldDown(MAX_PREFIX_HOLD_DOWN)
                    } else {
                        Ended::Failed { was_up }
                    };
                }
            }
            // A held connection of the peer's, now that its identifier is known.
            if fsm.state() == State::OpenConfirm {
                if let (Some(h), Some(n)) = (held.take(), fsm.negotiated()) {
                    if new_connection_wins(
                        (peer.settings.router_id, peer.settings.local_as),
                        (n.peer_id, n.peer_as),
                        ours,
                    ) {
                        tracing::info!(neighbor = %peer.name, "connection collision: the peer's connection stays");
                        if let Some(c) = conn.take() {
                            close_collision(c, status).await;
                        }
                        return Ended::Replaced(h);
                    }
                    tracing::info!(neighbor = %peer.name, "connection collision: kube-gw's connection stays");
                    close_collision(h, status).await;
                }
            } else if fsm.state() == State::Established {
                // Established before the held one could be judged: the session stays.
                if let Some(h) = held.take() {
                    close_collision(h, status).await;
                }
            }
            // The next whole message, if one has arrived.
            if conn.is_none() {
                break;
            }
            match framer.next_frame() {
                Ok(Some(f)) => {
                    let code = usize::from(f.kind.code()).saturating_sub(1);
                    status.send_modify(|s| {
                        if let Some(n) = s.messages_received.get_mut(code) {
                            *n += 1;
                        }
                    });
                    if f.kind == Kind::RouteRefresh && fsm.state() == State::Established {
                        match wire::RouteRefresh::decode(&f.body) {
                            Err(n) => {
                                pending.push_back(Event::Malformed(n));
                                continue;
                            }
                            Ok(r) if r.subtype == wire::RouteRefresh::REQUEST => {
                                refresh.push((r.afi, r.safi));
                            }
                            // BoRR/EoRR (kube-gw never asks for a refresh) and unknown
                            // subtypes are ignored (RFC 7313 §4).
                            Ok(_) => {}
                        }
                    }
                    if f.kind == Kind::Update && fsm.state() == State::Established {
                        let ctx = inbound::Context {
                            local_as: peer.settings.local_as,
                            four_octet: peer_caps.four_octet_as,
                            external: status.borrow().peer_as != Some(peer.settings.local_as),
                        };
                        match inbound::check(&f.body, &ctx) {
                            Err(n) => {
                                tracing::warn!(neighbor = %peer.name, notification = %n, "malformed UPDATE");
                                pending.push_back(Event::Malformed(n));
                                continue;
                            }
                            Ok(c) => {
                                if let Some(n) = receive(peer, status, &mut received, c) {
                                    over_limit = true;
                                    pending.push_back(Event::Malformed(n));
                                    continue;
                                }
                            }
                        }
                    }
                    let ev = to_event(f, &mut families, &mut peer_caps);
                    if let Event::Notification(n) = &ev {
                        tracing::warn!(neighbor = %peer.name, notification = %n, "NOTIFICATION received");
                        let code = n.code.to_u8();
                        status.send_modify(|s| {
                            *s.notifications_received.entry(code).or_default() += 1;
                        });
                    }
                    pending.push_back(ev);
                }
                Ok(None) => break,
                Err(n) => {
                    // The stream cannot be framed any more: nothing after this is read.
                    framer = Framer::default();
                    pending.push_back(Event::Malformed(n));
                }
            }
        }
        // Wait for the next event.
        let next_timer = timers
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t.map(|t| (i, t)))
            .min_by_key(|(_, t)| *t);
        let sleep = async {
            match next_timer {
                Some((_, at)) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let read = async {
            match conn.as_mut() {
                Some(c) => c.read(&mut buf).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            c = incoming.recv(), if *incoming_open => match c {
                None => *incoming_open = false,
                Some(new) => match fsm.state() {
                    State::Idle | State::Connect | State::Active => {
                        conn = Some(new);
                        ours = false;
                        framer = Framer::default();
                        pending.push_back(Event::Connected);
                    }
                    // Two of the peer's own: the newer is the peer's present.
                    State::OpenSent if !ours => {
                        if let Some(c) = conn.take() {
                            close_collision(c, status).await;
                        }
                        return Ended::Replaced(new);
                    }
                    // Decided once the peer's OPEN on the current connection names it.
                    State::OpenSent => {
                        if let Some(old) = held.replace(new) {
                            close_collision(old, status).await;
                        }
                    }
                    State::OpenConfirm => held = Some(new),
                    // RFC 4271 §6.8: an Established session stays.
                    State::Established => close_collision(new, status).await,
                },
            },
            r = drain.changed(), if drain_open => {
                // The drain signal's sender goes away once the drain phase is over.
                drain_open = r.is_ok();
                // RFC 8326: everything again with GRACEFUL_SHUTDOWN, so the peer prefers
                // the other switches' paths before this one withdraws.
                // Turned off again (`undrain` during the drain time): everything without it.
                if drain_open {
                    let draining = *drain.borrow_and_update();
                    if let Some(a) = attrs.as_mut() {
                        let c = communities(&peer.export, draining);
                        if a.communities != c {
                            a.communities = c;
                            send_updates(status, &mut conn, pack_routes(&sent, &[], a), &mut pending, send_hold).await;
                            tracing::info!(neighbor = %peer.name, routes = sent.len(), graceful_shutdown = draining, "routes re-announced");
                        }
                    }
                }
            }
            () = crate::lifecycle::stopped(stop) => {
                close(status, &mut fsm, &mut conn, &mut held, attrs.as_ref(), &sent, "kube-gw is stopping").await;
                return Ended::Stopped;
            }
            r = paused.changed(), if *paused_open => {
                *paused_open = r.is_ok();
                if *paused_open && *paused.borrow_and_update() {
                    tracing::info!(neighbor = %peer.name, routes = sent.len(), "drained: routes withdrawn, session closed");
                    close(status, &mut fsm, &mut conn, &mut held, attrs.as_ref(), &sent, "maintenance: kube-gw drain").await;
                    return Ended::Paused;
                }
            }
            () = sleep => {
                if let Some((i, _)) = next_timer {
                    timers[i] = None;
                    let t = [Timer::ConnectRetry, Timer::Hold, Timer::Keepalive][i];
                    // After a long write the peer's KEEPALIVEs may be waiting unread: the hold
                    // timer expires only if nothing has arrived.
                    let unread = match (t, conn.as_ref()) {
                        (Timer::Hold, Some(c)) => match c.try_read(&mut buf) {
                            Ok(0) => {
                                conn = None;
                                framer = Framer::default();
                                pending.push_back(Event::ConnectionLost);
                                true
                            }
                            Ok(n) => {
                                framer.push(&buf[..n]);
                                // Re-armed for real by the messages these bytes complete.
                                timers[i] = Some(Instant::now() + Duration::from_secs(1));
                                true
                            }
                            Err(_) => false,
                        },
                        _ => false,
                    };
                    if !unread {
                        pending.push_back(Event::Expired(t));
                    }
                }
            }
            r = exported.changed(), if exported_open => {
                // A closed channel: the daemon is going away; the stop signal follows.
                exported_open = r.is_ok();
                if let (true, Some(a)) = (exported_open, &attrs) {
                    let now = for_session(&exported.borrow_and_update(), a, families);
                    // New prefixes, and those whose communities changed, are announced.
                    let announce: BTreeMap<IpNet, Communities> = now
                        .iter()
                        .filter(|(p, c)| sent.get(p) != Some(c))
                        .map(|(p, c)| (*p, c.clone()))
                        .collect();
                    let withdraw: Vec<IpNet> =
                        sent.keys().filter(|p| !now.contains_key(p)).copied().collect();
                    send_updates(status, &mut conn, pack_routes(&announce, &withdraw, a), &mut pending, send_hold).await;
                    if !announce.is_empty() || !withdraw.is_empty() {
                        tracing::info!(neighbor = %peer.name, announced = announce.len(), withdrawn = withdraw.len(), "routes sent");
                    }
                    sent = now;
                    let rib = adj_rib_out(&sent);
                    status.send_modify(|s| {
                        s.prefixes_sent = rib.len();
                        s.adj_rib_out = rib;
                    });
                }
            }
            r = read => match r {
                Ok(0) | Err(_) => {
                    conn = None;
                    framer = Framer::default();
                    pending.push_back(Event::ConnectionLost);
                }
                // Decoded one message at a time at the top of the loop.
                Ok(n) => framer.push(&buf[..n]),
            },
        }
    }
}

/// Where to connect: the neighbor's address on port 179, scoped to its interface when it is
/// link-local.
fn peer_socket(peer: &Peer) -> Result<SocketAddr, String> {
    match (peer.address, &peer.interface) {
        (IpAddr::V6(a), Some(i)) => {
            let scope = super::link::resolve(i)?;
            Ok(SocketAddr::V6(std::net::SocketAddrV6::new(
                a, peer.port, 0, scope,
            )))
        }
        (a, _) => Ok(SocketAddr::new(a, peer.port)),
    }
}

/// Connects to the peer with the neighbor's TCP MD5 key and GTSM settings in place before
/// the SYN goes out.
async fn connect(peer: &Peer, to: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = match to {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    if let Some(p) = &peer.password {
        // By address only, also for a link-local peer: the key's interface index may only
        // name a VRF (crates/sockopt), and this socket talks to one peer anyway.
        kube_gw_sockopt::set_md5(&sock, to.ip(), &p.0, None).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot set the TCP MD5 key ({e}); the kernel needs CONFIG_TCP_MD5SIG"),
            )
        })?;
    }
    if peer.ttl_security {
        let s = socket2::SockRef::from(&sock);
        match to {
            SocketAddr::V4(_) => s.set_ttl_v4(255)?,
            SocketAddr::V6(_) => s.set_unicast_hops_v6(255)?,
        }
        kube_gw_sockopt::set_min_ttl(&sock, to, 255)?;
    }
    sock.connect(to).await
}

/// Applies a checked UPDATE to the neighbor's Adj-RIB-In and status. Returns the Cease to
/// send when the neighbor now has more prefixes than its `max-prefixes`.
fn receive(
    peer: &Peer,
    status: &watch::Sender<NeighborStatus>,
    rib: &mut BTreeSet<IpNet>,
    c: inbound::Checked,
) -> Option<Notification> {
    for p in &c.withdrawn {
        rib.remove(p);
    }
    let last_family = c.announced.last().copied();
    rib.extend(c.announced);
    if let Some(p) = &c.problem {
        tracing::warn!(neighbor = %peer.name, problem = %p, "UPDATE with errors");
    }
    let snapshot = Arc::new(rib.clone());
    status.send_modify(|s| {
        s.prefixes_received = snapshot.len();
        s.adj_rib_in = snapshot;
        if let Some(p) = &c.problem {
            s.update_errors += 1;
            s.last_update_error = Some(p.to_string());
        }
    });
    let limit = peer.max_prefixes?;
    if rib.len() <= limit as usize {
        return None;
    }
    // RFC 4486: AFI, SAFI and the limit.
    let afi: u16 = match last_family {
        Some(IpNet::V6(_)) => 2,
        _ => 1,
    };
    let mut data = afi.to_be_bytes().to_vec();
    data.push(1);
    data.extend_from_slice(&limit.to_be_bytes());
    let msg = format!(
        "{} prefixes received, more than max-prefixes {limit}; the session stays down for {}s",
        rib.len(),
        MAX_PREFIX_HOLD_DOWN.as_secs()
    );
    tracing::warn!(neighbor = %peer.name, "{msg}");
    status.send_modify(|s| s.last_update_error = Some(msg));
    Some(Notification::new(wire::Code::Cease, 1, data))
}

/// Ends a session on purpose: withdraws everything sent, then Cease / Administrative
/// Shutdown with `reason` (RFC 9003), and closes both connections.
async fn close(
    status: &watch::Sender<NeighborStatus>,
    fsm: &mut Fsm,
    conn: &mut Option<TcpStream>,
    held: &mut Option<TcpStream>,
    attrs: Option<&update::Attrs>,
    sent: &BTreeMap<IpNet, Communities>,
    reason: &str,
) {
    if let Some(a) = attrs {
        let all: Vec<IpNet> = sent.keys().copied().collect();
        send_updates(
            status,
            conn,
            update::pack(&[], &all, a),
            &mut VecDeque::new(),
            STOP_SEND_LIMIT,
        )
        .await;
    }
    let actions = fsm.handle(Event::Stop {
        subcode: 2,
        reason: reason.into(),
    });
    for a in actions {
        if let Action::Send(n) = a {
            status.send_modify(|s| *s.notifications_sent.entry(6).or_default() += 1);
            send(
                status,
                conn,
                &n.encode(),
                &mut VecDeque::new(),
                STOP_SEND_LIMIT,
            )
            .await;
        }
    }
    for c in [conn.take(), held.take()].into_iter().flatten() {
        let mut c = c;
        let _ = c.shutdown().await;
    }
    status.send_modify(|s| {
        if s.state != State::Idle {
            s.transitions += 1;
        }
        s.state = State::Idle;
        s.up_since = None;
        s.prefixes_sent = 0;
        s.adj_rib_out = Arc::default();
        s.prefixes_received = 0;
        s.adj_rib_in = Arc::default();
    });
}

/// UPDATE bodies withdrawing `withdraw` and announcing `routes`, one attribute set per
/// distinct set of Service communities (added to the neighbor's).
fn pack_routes(
    routes: &BTreeMap<IpNet, Communities>,
    withdraw: &[IpNet],
    a: &update::Attrs,
) -> Vec<Vec<u8>> {
    let mut groups: BTreeMap<&Communities, Vec<IpNet>> = BTreeMap::new();
    for (p, c) in routes {
        groups.entry(c).or_default().push(*p);
    }
    let mut out = if withdraw.is_empty() {
        Vec::new()
    } else {
        update::pack(&[], withdraw, a)
    };
    for (c, prefixes) in groups {
        if c.is_empty() {
            out.extend(update::pack(&prefixes, &[], a));
            continue;
        }
        let mut attrs = a.clone();
        for x in &c.standard {
            if !attrs.communities.contains(x) {
                attrs.communities.push(*x);
            }
        }
        for x in &c.large {
            if !attrs.large_communities.contains(x) {
                attrs.large_communities.push(*x);
            }
        }
        out.extend(update::pack(&prefixes, &[], &attrs));
    }
    out
}

/// The communities of every route: the neighbor's, plus GRACEFUL_SHUTDOWN while draining.
fn communities(export: &ExportPolicy, draining: bool) -> Vec<u32> {
    let mut c = export.communities.clone();
    if draining && !c.contains(&GRACEFUL_SHUTDOWN) {
        c.push(GRACEFUL_SHUTDOWN);
    }
    c
}

/// The exported routes this session carries: those of a family it has a next hop for (its
/// own, and IPv4 over IPv6 with extended next hop), and negotiated.
fn for_session(
    exported: &BTreeMap<IpNet, Communities>,
    a: &update::Attrs,
    families: (bool, bool),
) -> BTreeMap<IpNet, Communities> {
    exported
        .iter()
        .filter(|(p, _)| has_next_hop(p, a) && negotiated(p, families))
        .map(|(p, c)| (*p, c.clone()))
        .collect()
}

/// The routes of one family (IPv4 or IPv6) of those sent: what a ROUTE-REFRESH for it gets.
fn of_family(sent: &BTreeMap<IpNet, Communities>, ipv4: bool) -> BTreeMap<IpNet, Communities> {
    sent.iter()
        .filter(|(p, _)| p.addr().is_ipv4() == ipv4)
        .map(|(p, c)| (*p, c.clone()))
        .collect()
}

/// The Adj-RIB-Out as status shows it.
fn adj_rib_out(sent: &BTreeMap<IpNet, Communities>) -> Arc<BTreeSet<IpNet>> {
    Arc::new(sent.keys().copied().collect())
}

/// Whether a prefix's family was negotiated (IPv4, IPv6).
fn negotiated(p: &IpNet, (v4, v6): (bool, bool)) -> bool {
    match p {
        IpNet::V4(_) => v4,
        IpNet::V6(_) => v6,
    }
}

/// Whether the session has a next hop for the prefix's family.
fn has_next_hop(p: &IpNet, a: &update::Attrs) -> bool {
    match p {
        IpNet::V4(_) => a.next_hop_v4.is_some() || (a.ipv4_via_ipv6 && a.next_hop_v6.is_some()),
        IpNet::V6(_) => a.next_hop_v6.is_some(),
    }
}

/// The FSM event for a message; an OPEN also records the families the peer supports
/// (kube-gw announces both) and its capabilities.
fn to_event(
    f: wire::Frame,
    families: &mut (bool, bool),
    caps: &mut open::PeerCapabilities,
) -> Event {
    match f.kind {
        Kind::Open => match open::decode(&f.body) {
            Ok(r) => {
                let c = &r.capabilities;
                let any_mp = c.ipv4_unicast || c.ipv6_unicast;
                *families = (c.ipv4_unicast || !any_mp, c.ipv6_unicast);
                *caps = r.capabilities;
                Event::Open(r.open)
            }
            Err(n) => Event::Malformed(n),
        },
        Kind::Keepalive => Event::Keepalive,
        Kind::Update => Event::Update,
        Kind::RouteRefresh => Event::RouteRefresh,
        Kind::Notification => match Notification::decode(&f.body) {
            Ok(n) => Event::Notification(n),
            Err(n) => Event::Malformed(n),
        },
    }
}

/// Frames each UPDATE body and sends them, many messages per write (up to 64 KiB): a
/// full table is ~125 UPDATEs per 100 000 routes, and one write each would cost a system
/// call and a TCP segment apiece on both sides.
async fn send_updates(
    status: &watch::Sender<NeighborStatus>,
    conn: &mut Option<TcpStream>,
    bodies: impl IntoIterator<Item = Vec<u8>>,
    pending: &mut VecDeque<Event>,
    send_hold: Duration,
) {
    const CHUNK: usize = 64 * 1024;
    let mut buf = Vec::with_capacity(CHUNK);
    let mut n = 0;
    for b in bodies {
        let Ok(bytes) = wire::frame(Kind::Update, &b) else {
            continue;
        };
        if buf.len() + bytes.len() > CHUNK && !buf.is_empty() {
            write(status, conn, &buf, Kind::Update, n, pending, send_hold).await;
            buf.clear();
            n = 0;
        }
        buf.extend_from_slice(&bytes);
        n += 1;
    }
    if !buf.is_empty() {
        write(status, conn, &buf, Kind::Update, n, pending, send_hold).await;
    }
}

/// Writes one message. A peer that takes nothing for `send_hold` (it keeps its window
/// shut) gets Send Hold Timer Expired, attempted without blocking, and the connection is
/// dropped (RFC 9687): a session must not hang on a peer that does not read.
async fn send(
    status: &watch::Sender<NeighborStatus>,
    conn: &mut Option<TcpStream>,
    bytes: &[u8],
    pending: &mut VecDeque<Event>,
    send_hold: Duration,
) {
    // One framed message: its type is octet 18.
    let Some(kind) = bytes.get(18).and_then(|t| Kind::from_code(*t)) else {
        return;
    };
    write(status, conn, bytes, kind, 1, pending, send_hold).await;
}

/// Writes `count` framed messages of one kind.
async fn write(
    status: &watch::Sender<NeighborStatus>,
    conn: &mut Option<TcpStream>,
    bytes: &[u8],
    kind: Kind,
    count: u64,
    pending: &mut VecDeque<Event>,
    send_hold: Duration,
) {
    let Some(c) = conn.as_mut() else {
        return;
    };
    match tokio::time::timeout(send_hold, c.write_all(bytes)).await {
        Ok(Ok(())) => {
            let i = usize::from(kind.code()).saturating_sub(1);
            status.send_modify(|s| {
                if let Some(n) = s.messages_sent.get_mut(i) {
                    *n += count;
                }
            });
        }
        Ok(Err(_)) => {
            *conn = None;
            pending.push_back(Event::ConnectionLost);
        }
        Err(_) => {
            let n = Notification::new(wire::Code::SendHoldTimerExpired, 0, Vec::new());
            let _ = c.try_write(&n.encode());
            *conn = None;
            // The FSM reports it (sent, counted) and resets; the socket is already gone.
            pending.push_back(Event::Malformed(n));
        }
    }
}

fn note_error(status: &watch::Sender<NeighborStatus>, e: String) {
    status.send_modify(|s| s.last_error = Some(e));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_peer_that_stops_reading_gets_send_hold_timer_expired() {
        // The peer accepts and never reads: once the socket buffers are full, nothing moves.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut conn = Some(TcpStream::connect(l.local_addr().unwrap()).await.unwrap());
        let (_peer, _) = l.accept().await.unwrap();
        let mut pending = VecDeque::new();
        let big = vec![0u8; 64 << 20];
        let (status, _) = watch::channel(NeighborStatus::new("192.0.2.1".parse().unwrap(), None));
        write(
            &status,
            &mut conn,
            &big,
            Kind::Update,
            1,
            &mut pending,
            Duration::from_millis(300),
        )
        .await;
        assert!(conn.is_none(), "the connection is dropped");
        assert!(
            matches!(pending.front(), Some(Event::Malformed(n)) if n.code == wire::Code::SendHoldTimerExpired),
            "{pending:?}"
        );
    }

    #[test]
    fn a_route_refresh_gets_only_its_family_again() {
        let sent: BTreeMap<IpNet, Communities> = ["198.51.100.1/32", "2001:db8:100::1/128"]
            .iter()
            .map(|p| (p.parse().unwrap(), Communities::default()))
            .collect();
        let four: Vec<String> = of_family(&sent, true)
            .keys()
            .map(ToString::to_string)
            .collect();
        let six: Vec<String> = of_family(&sent, false)
            .keys()
            .map(ToString::to_string)
            .collect();
        assert_eq!(four, ["198.51.100.1/32"]);
        assert_eq!(six, ["2001:db8:100::1/128"]);
    }

    #[test]
    fn the_send_hold_time_is_eight_minutes_or_twice_the_hold_time() {
        assert_eq!(send_hold_time(9), Duration::from_secs(480));
        assert_eq!(send_hold_time(0), Duration::from_secs(480));
        assert_eq!(send_hold_time(300), Duration::from_secs(600));
    }

    #[test]
    fn a_collision_keeps_the_connection_of_the_higher_identifier() {
        let ours: std::net::Ipv4Addr = "192.0.2.20".parse().unwrap();
        let lower = "10.9.9.9".parse().unwrap();
        let higher = "203.0.113.250".parse().unwrap();
        let me = (ours, 65010);
        // kube-gw opened the current connection: the peer's new one wins only if the
        // peer's identifier is higher.
        assert!(!new_connection_wins(me, (lower, 65000), true));
        assert!(new_connection_wins(me, (higher, 65000), true));
        // Equal identifiers (RFC 6286): the larger AS's connection stays.
        assert!(new_connection_wins(me, (ours, 65020), true));
        assert!(!new_connection_wins(me, (ours, 65000), true));
        // The current one is the peer's own too: the newer one is the peer's present.
        assert!(new_connection_wins(me, (lower, 65000), false));
    }

    #[test]
    fn a_password_file_gives_its_first_line_and_never_shows_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret\r\nsecond line\n").unwrap();
        let pw = Password::read(&p).unwrap();
        assert_eq!(&*pw.0, b"s3cret");
        assert_eq!(format!("{pw:?}"), "Password(<redacted>)");
    }

    #[test]
    fn an_empty_or_too_long_password_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "\n").unwrap();
        assert!(Password::read(&p).unwrap_err().contains("is empty"));
        std::fs::write(&p, "x".repeat(81)).unwrap();
        assert!(Password::read(&p).unwrap_err().contains("at most 80"));
        let missing = Password::read(&dir.path().join("none")).unwrap_err();
        assert!(
            missing.contains("cannot read the password file"),
            "{missing}"
        );
    }
}
