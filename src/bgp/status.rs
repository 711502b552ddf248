//! What a neighbor's session reports: its state, counters and tables, published on a
//! `watch` channel per neighbor for `kube-gw status`, `kube-gw bgp`, the metrics and the
//! drain command. Written only by the neighbor's session task.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use super::fsm::State;
use super::rib_out;

/// What `kube-gw status` and metrics show of a neighbor.
#[derive(Debug, Clone, Serialize)]
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
    /// Graceful restart (RFC 4724) negotiated on the current or last session: the peer
    /// keeps our routes through a restart of kube-gw.
    pub graceful_restart: bool,
    pub updates_received: u64,
    /// Messages by type (OPEN, UPDATE, NOTIFICATION, KEEPALIVE, ROUTE-REFRESH), both ways.
    pub messages_sent: [u64; 5],
    pub messages_received: [u64; 5],
    /// Prefixes the neighbor has announced to us on the current session (the Adj-RIB-In,
    /// before the import filter).
    pub prefixes_received: usize,
    #[serde(skip)]
    pub adj_rib_in: super::rib_in::Table,
    /// End-of-RIB received on the current session for (IPv4, IPv6).
    #[serde(skip)]
    pub end_of_rib: [bool; 2],
    /// The families of the current session (IPv4, IPv6).
    #[serde(skip)]
    pub families: [bool; 2],
    /// Set when the session went down the way a restarting peer's does and the peer had
    /// sent the graceful-restart capability: its routes stay, stale, this many seconds.
    #[serde(skip)]
    pub retained: Option<u16>,
    /// UPDATEs that were treated as withdraw, had an attribute discarded or looped.
    pub update_errors: u64,
    /// What the last of those was.
    pub last_update_error: Option<String>,
    /// Prefixes announced on the current session.
    pub prefixes_sent: usize,
    /// Those prefixes (the Adj-RIB-Out).
    #[serde(skip)]
    pub adj_rib_out: rib_out::View,
    /// Why it last went down, or why it cannot start.
    pub last_error: Option<String>,
    pub transitions: u64,
    /// NOTIFICATIONs sent and received, by error code.
    pub notifications_sent: BTreeMap<u8, u64>,
    pub notifications_received: BTreeMap<u8, u64>,
}

/// Every neighbor's status, set once the speaker starts (read by status and metrics).
pub type Statuses = Arc<std::sync::OnceLock<Vec<watch::Receiver<NeighborStatus>>>>;

impl NeighborStatus {
    pub fn new(address: IpAddr, interface: Option<String>) -> Self {
        Self {
            address,
            interface,
            state: State::Idle,
            up_since: None,
            peer_as: None,
            hold_time: None,
            graceful_restart: false,
            updates_received: 0,
            messages_sent: [0; 5],
            messages_received: [0; 5],
            prefixes_received: 0,
            adj_rib_in: Default::default(),
            end_of_rib: [false; 2],
            families: [false; 2],
            retained: None,
            update_errors: 0,
            last_update_error: None,
            prefixes_sent: 0,
            adj_rib_out: rib_out::View::default(),
            last_error: None,
            transitions: 0,
            notifications_sent: BTreeMap::new(),
            notifications_received: BTreeMap::new(),
        }
    }

    /// How the neighbor is named in status, metrics and the CLI: `fe80::1%swp1` for a
    /// link-local one.
    pub fn name(&self) -> String {
        crate::link::neighbor_name(self.address, self.interface.as_deref())
    }
}

/// Which way a message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    Sent,
    Received,
}

/// How a session task writes its status: one named change per event, so the task reads as
/// what happened, not as field updates.
pub trait Report {
    /// `count` messages of type `code` (1 OPEN … 5 ROUTE-REFRESH).
    fn messages(&self, dir: Dir, code: u8, count: u64);
    /// A NOTIFICATION with this error code.
    fn notification(&self, dir: Dir, code: u8);
    /// The FSM changed state.
    fn state(&self, state: State);
    /// The session came up with what was sent on it.
    fn up(&self, n: &super::fsm::Negotiated, sent: rib_out::View);
    /// The session went down (or could not start): why, and how long its routes stay
    /// stale ([`super::fsm::Fsm::retained`]).
    fn down(&self, why: String, retained: Option<u16>);
    /// What the neighbor has been sent changed.
    fn sent(&self, view: rib_out::View);
    /// The neighbor's routes after an UPDATE (and End-of-RIB seen), and what was wrong
    /// with it if anything.
    fn received(&self, rib: &super::rib_in::AdjRibIn, problem: Option<String>);
    /// Something the operator should know about the last UPDATE (max-prefixes).
    fn update_error(&self, msg: String);
    /// The last thing that went wrong (kept after the session recovers only until up).
    fn error(&self, e: String);
}

impl Report for watch::Sender<NeighborStatus> {
    fn messages(&self, dir: Dir, code: u8, count: u64) {
        let i = usize::from(code).saturating_sub(1);
        self.send_modify(|s| {
            let counts = match dir {
                Dir::Sent => &mut s.messages_sent,
                Dir::Received => &mut s.messages_received,
            };
            if let Some(n) = counts.get_mut(i) {
                *n += count;
            }
        });
    }

    fn notification(&self, dir: Dir, code: u8) {
        self.send_modify(|s| {
            let m = match dir {
                Dir::Sent => &mut s.notifications_sent,
                Dir::Received => &mut s.notifications_received,
            };
            *m.entry(code).or_default() += 1;
        });
    }

    fn state(&self, state: State) {
        self.send_modify(|s| {
            if s.state != state {
                s.transitions += 1;
            }
            s.state = state;
        });
    }

    fn up(&self, n: &super::fsm::Negotiated, sent: rib_out::View) {
        self.send_modify(|s| {
            s.up_since = Some(Instant::now());
            s.peer_as = Some(n.peer_as);
            s.hold_time = Some(n.hold_time);
            s.graceful_restart = n.graceful_restart;
            s.families = [n.families.ipv4, n.families.ipv6];
            s.end_of_rib = [false; 2];
            s.retained = None;
            s.last_error = None;
            s.prefixes_sent = sent.len();
            s.adj_rib_out = sent;
        });
    }

    fn down(&self, why: String, retained: Option<u16>) {
        self.send_modify(|s| {
            s.up_since = None;
            s.retained = retained;
            s.end_of_rib = [false; 2];
            s.prefixes_received = 0;
            s.adj_rib_in = Default::default();
            s.last_error = Some(why);
            s.prefixes_sent = 0;
            s.adj_rib_out = rib_out::View::default();
        });
    }

    fn sent(&self, view: rib_out::View) {
        self.send_modify(|s| {
            s.prefixes_sent = view.len();
            s.adj_rib_out = view;
        });
    }

    fn received(&self, rib: &super::rib_in::AdjRibIn, problem: Option<String>) {
        self.send_modify(|s| {
            s.prefixes_received = rib.len();
            s.adj_rib_in = rib.snapshot();
            s.end_of_rib = rib.end_of_rib();
            if let Some(p) = problem {
                s.update_errors += 1;
                s.last_update_error = Some(p);
            }
        });
    }

    fn update_error(&self, msg: String) {
        self.send_modify(|s| s.last_update_error = Some(msg));
    }

    fn error(&self, e: String) {
        self.send_modify(|s| s.last_error = Some(e));
    }
}
