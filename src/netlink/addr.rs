//! The address reconciler: makes the addresses on `vip.interface` (default `lo`) equal to
//! the VIPs of the desired state — /32 for IPv4, /128 for IPv6 — and touches nothing else.
//!
//! ```text
//!  watch<Wanted> (the VIPs, or at least these) ─┐        model of the interface
//!  netlink RTMGRP_IPV{4,6}_IFADDR events ───────┼─► (dump once, then kept by the events)
//!  resync timer (30 s), netlink overrun ────────┘   dirty addresses → plan (pure) → add/del
//!                                                          │
//!                                                          ├─► watch<Programmed> (VIPs on the interface)
//!                                                          └─► watch<BTreeSet<IpAddr>> (the switch's own addresses)
//! ```
//!
//! Ownership: kube-gw marks its addresses with the address protocol `IFA_PROTO` =
//! [`PROTO`] (Linux ≥ 6.1). On older kernels, which keep no protocol, an address is taken
//! as kube-gw's when it is a host address (/32, /128) inside a configured pool — the same
//! rule that decides what kube-gw may serve. Every other address is foreign and never
//! removed; a wanted VIP that is already there as a foreign address is left as it is and
//! reported.
//!
//! Work is proportional to the change: the reconciler dumps the addresses once (and on
//! every resync or netlink overrun), keeps a model of the interface up to date from the
//! address notifications, and on each wakeup looks only at the addresses that changed — in
//! the wanted set (a structural diff) or on the interface (a notification). Its own
//! additions come back as notifications and find nothing to do. Drift (an address deleted
//! by hand or by the switch OS) is such a notification, repaired at once. A restart adopts
//! what it finds: nothing is removed before the first complete cluster view, and what is
//! already there is not added again, so nothing flaps.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use imbl::OrdSet;
use ipnet::IpNet;
use rtnetlink::packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST,
};
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressMessage, AddressProtocol,
};
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::sys::{self as netlink_sys, AsyncSocket};
use rtnetlink::Handle;
use tokio::sync::watch;

use crate::backoff::Backoff;
use crate::lifecycle::Heartbeat;
pub use crate::model::Programmed;
use crate::reconcile::{drive, Pacing, Reconciler, Wake};

/// `IFA_PROTO` value that marks kube-gw's addresses (ASCII `k`).
pub const PROTO: u8 = 0x6b;
/// Requests per netlink datagram.
const BATCH: usize = 256;
/// Periodic full pass, whatever the notifications said.
pub const RESYNC: Duration = Duration::from_secs(30);
/// Receive buffer of the notification socket, in bytes.
const NOTIFY_BUFFER: usize = 8 << 20;

/// One address as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Present {
    pub address: IpAddr,
    pub prefix_len: u8,
    pub ifindex: u32,
    pub proto: Option<u8>,
}

/// What a pass does.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    Add(IpAddr),
    Remove(IpAddr),
}

/// Decides whether an address on the VIP interface is kube-gw's.
#[derive(Debug, Clone)]
pub struct Ownership {
    /// The kernel keeps `IFA_PROTO`.
    pub proto_supported: bool,
    pub pools: Vec<IpNet>,
}

impl Ownership {
    /// Is this address kube-gw's?
    pub fn owns(&self, p: &Present) -> bool {
        if self.proto_supported {
            p.proto == Some(PROTO)
        } else {
            let host = u32::from(p.prefix_len) == host_len(p.address);
            host && self.pools.iter().any(|n| n.contains(&p.address))
        }
    }
}

fn host_len(a: IpAddr) -> u32 {
    if a.is_ipv4() {
        32
    } else {
        128
    }
}

/// The VIPs the interface should carry, as far as they are known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Wanted {
    /// Nothing is known yet: adopt what is there, change nothing.
    #[default]
    Unknown,
    /// The cluster is still being listed: these at least (add; never remove, because a
    /// VIP not listed yet is not a VIP that went away).
    AtLeast(OrdSet<IpAddr>),
    /// The complete set: add what is missing, remove what is kube-gw's and not in it.
    Exactly(OrdSet<IpAddr>),
}

impl Wanted {
    /// The VIPs known to be wanted.
    pub fn set(&self) -> Option<&OrdSet<IpAddr>> {
        match self {
            Wanted::Unknown => None,
            Wanted::AtLeast(s) | Wanted::Exactly(s) => Some(s),
        }
    }

    /// May kube-gw's addresses outside the set be removed?
    pub fn exact(&self) -> bool {
        matches!(self, Wanted::Exactly(_))
    }
}

/// The operations that make the interface match `wanted` for the addresses in `dirty`:
/// add what is missing, remove what is ours and not wanted (only once the wanted set is
/// complete). Foreign addresses are never removed; a wanted address present as a foreign
/// one is not added again. Sorted: removals first, then additions, each by address.
pub fn plan<'a>(
    dirty: impl IntoIterator<Item = &'a IpAddr>,
    wanted: &Wanted,
    on_if: &BTreeMap<IpAddr, Present>,
    own: &Ownership,
) -> Vec<Op> {
    let mut ops = Vec::new();
    let Some(set) = wanted.set() else {
        return ops;
    };
    for a in dirty {
        match (set.contains(a), on_if.get(a)) {
            (true, None) => ops.push(Op::Add(*a)),
            (false, Some(p)) if wanted.exact() && own.owns(p) => ops.push(Op::Remove(*a)),
            _ => {}
        }
    }
    ops.sort_by_key(|o| match o {
        Op::Remove(a) => (0, *a),
        Op::Add(a) => (1, *a),
    });
    ops.dedup();
    ops
}

/// Why the reconciler cannot work.
#[derive(Debug, thiserror::Error)]
pub enum AddrError {
    #[error("cannot open a netlink socket: {0}; kube-gw needs CAP_NET_ADMIN")]
    Socket(#[source] std::io::Error),
    #[error(
        "the interface {0} does not exist; set [vip] interface to an existing one (normally lo)"
    )]
    NoInterface(String),
    #[error("netlink: {0}")]
    Netlink(#[from] rtnetlink::Error),
    #[error("netlink request failed: {0}")]
    Request(String),
}

/// True when the running kernel keeps `IFA_PROTO` (Linux 6.1 and later).
pub fn kernel_keeps_proto() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut it = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse::<u32>().ok());
    let (major, minor) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    (major, minor) >= (6, 1)
}

/// Netlink access for the reconciler: a route netlink connection for dumps and lookups,
/// and a plain socket for batched changes (used from a blocking thread).
#[derive(Debug, Clone)]
pub struct Netlink {
    handle: Handle,
    batch: Arc<netlink_sys::Socket>,
    /// Sequence numbers of batched requests, never reused: a late acknowledgement from an
    /// abandoned batch cannot be taken for one of a later batch.
    next_seq: Arc<AtomicU32>,
}

impl Netlink {
    /// Opens the netlink sockets (the connection's I/O task is spawned on the current
    /// runtime).
    pub fn connect() -> Result<Self, AddrError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(AddrError::Socket)?;
        tokio::spawn(conn);
        let mut batch = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_ROUTE)
            .map_err(AddrError::Socket)?;
        batch.bind_auto().map_err(AddrError::Socket)?;
        batch
            .connect(&netlink_sys::SocketAddr::new(0, 0))
            .map_err(AddrError::Socket)?;
        Ok(Self {
            handle,
            batch: Arc::new(batch),
            next_seq: Arc::new(AtomicU32::new(1)),
        })
    }

    /// The index of `name`.
    pub async fn ifindex(&self, name: &str) -> Result<u32, AddrError> {
        let mut links = self.handle.link().get().execute();
        while let Some(link) = links.next().await {
            let link = link?;
            let is = link
                .attributes
                .iter()
                .any(|a| matches!(a, LinkAttribute::IfName(n) if n == name));
            if is {
                return Ok(link.header.index);
            }
        }
        Err(AddrError::NoInterface(name.to_string()))
    }

    /// Every address on every interface.
    pub async fn dump(&self) -> Result<Vec<Present>, AddrError> {
        let mut out = Vec::new();
        let mut s = self.handle.address().get().execute();
        while let Some(m) = s.next().await {
            let m = m?;
            if let Some(p) = present(&m) {
                out.push(p);
            }
        }
        Ok(out)
    }
}

/// The netlink request for one operation: a VIP (/32, /128) marked as kube-gw's, or the
/// removal of an address as the kernel reported it.
fn request(op: &Op, ifindex: u32, present: Option<&Present>, seq: u32) -> Vec<u8> {
    let mut m = AddressMessage::default();
    let (address, prefix_len, index) = match (op, present) {
        (Op::Remove(_), Some(p)) => (p.address, p.prefix_len, p.ifindex),
        (Op::Add(a) | Op::Remove(a), _) => (*a, u8::try_from(host_len(*a)).unwrap_or(32), ifindex),
    };
    m.header.family = if address.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    m.header.prefix_len = prefix_len;
    m.header.index = index;
    m.attributes.push(AddressAttribute::Local(address));
    m.attributes.push(AddressAttribute::Address(address));
    let (inner, flags) = match op {
        Op::Add(_) => {
            m.attributes
                .push(AddressAttribute::Protocol(AddressProtocol::Other(PROTO)));
            // No prefix route: a host address on `lo` is delivered by its local route;
            // the extra main-table route per VIP would double the kernel's work and
            // clutter `ip route`. No duplicate address detection on a loopback.
            let mut flags = AddressFlags::Noprefixroute;
            if address.is_ipv6() {
                flags |= AddressFlags::Nodad;
            }
            m.attributes.push(AddressAttribute::Flags(flags));
            (
                RouteNetlinkMessage::NewAddress(m),
                NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            )
        }
        Op::Remove(_) => (
            RouteNetlinkMessage::DelAddress(m),
            NLM_F_REQUEST | NLM_F_ACK,
        ),
    };
    let mut msg = NetlinkMessage::from(inner);
    msg.header.flags = flags;
    msg.header.sequence_number = seq;
    msg.finalize();
    let mut buf = vec![0; msg.buffer_len()];
    msg.serialize(&mut buf);
    buf
}

/// Sends the operations in batches — many requests in one datagram, which the kernel
/// processes in order — and collects one result per operation from the acknowledgements.
/// Blocking: run it off the async runtime. An address that is already there (add) or
/// already gone (remove) counts as done.
fn send_batches(
    nl: &Netlink,
    ifindex: u32,
    ops: &[(Op, Option<Present>)],
) -> Vec<Result<(), String>> {
    let sock = &nl.batch;
    // None: no acknowledgement (yet).
    let mut out: Vec<Option<Result<(), String>>> = vec![None; ops.len()];
    let mut rbuf: Vec<u8> = Vec::with_capacity(1 << 16);
    for (chunk_no, chunk) in ops.chunks(BATCH).enumerate() {
        let base = chunk_no * BATCH;
        let n = u32::try_from(chunk.len()).unwrap_or(u32::MAX);
        // The chunk's sequence numbers are first..first + n.
        let first = nl.next_seq.fetch_add(n, Ordering::Relaxed);
        let mut buf = Vec::with_capacity(chunk.len() * 80);
        for ((op, p), seq) in chunk.iter().zip(first..) {
            buf.extend(request(op, ifindex, p.as_ref(), seq));
        }
        if let Err(e) = sock.send(&buf, 0) {
            let msg = format!("netlink send: {e}");
            out[base..base + chunk.len()].fill(Some(Err(msg)));
            continue;
        }
        let mut acked = 0;
        while acked < chunk.len() {
            rbuf.clear();
            if let Err(e) = sock.recv(&mut rbuf, 0) {
                let msg = format!("netlink receive: {e}");
                for r in out[base..base + chunk.len()]
                    .iter_mut()
                    .filter(|r| r.is_none())
                {
                    *r = Some(Err(msg.clone()));
                }
                break;
            }
            let mut off = 0;
            while off < rbuf.len() {
                let Ok(m) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rbuf[off..]) else {
                    break;
                };
                let len = usize::try_from(m.header.length).unwrap_or(0);
                if len == 0 {
                    break;
                }
                off += (len + 3) & !3;
                let NetlinkPayload::Error(e) = &m.payload else {
                    continue;
                };
                let Some(i) = m
                    .header
                    .sequence_number
                    .checked_sub(first)
                    .filter(|k| *k < n)
                    .and_then(|k| usize::try_from(k).ok())
                    .map(|k| base + k)
                else {
                    continue;
                };
                acked += 1;
                out[i] = Some(match e.code.map(|c| -c.get()) {
                    None => Ok(()),
                    Some(libc::EEXIST) if matches!(ops[i].0, Op::Add(_)) => Ok(()),
                    Some(libc::EADDRNOTAVAIL | libc::ENOENT)
                        if matches!(ops[i].0, Op::Remove(_)) =>
                    {
                        Ok(())
                    }
                    Some(c) => Err(std::io::Error::from_raw_os_error(c).to_string()),
                });
            }
        }
    }
    out.into_iter()
        .map(|r| r.unwrap_or_else(|| Err("no acknowledgement".into())))
        .collect()
}

fn present(m: &AddressMessage) -> Option<Present> {
    let mut address = None;
    let mut local = None;
    let mut proto = None;
    for a in &m.attributes {
        match a {
            AddressAttribute::Address(ip) => address = Some(*ip),
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Protocol(p) => proto = Some(u8::from(*p)),
            _ => {}
        }
    }
    Some(Present {
        // For IPv4, IFA_LOCAL is the interface's own address (IFA_ADDRESS may be a peer).
        address: local.or(address)?,
        prefix_len: m.header.prefix_len,
        ifindex: m.header.index,
        proto,
    })
}

/// Channels of the reconciler.
#[derive(Debug)]
pub struct AddrChannels {
    /// `Unknown`, then `AtLeast` while the cluster is listed: nothing is removed until
    /// the first complete view is in (`Exactly`).
    pub wanted: watch::Receiver<Wanted>,
    pub programmed: watch::Sender<Programmed>,
    /// The switch's own addresses; `None` until the first dump.
    pub own: watch::Sender<Option<BTreeSet<IpAddr>>>,
    /// Turns true to remove kube-gw's addresses and stop (shutdown, `remove` mode).
    pub teardown: watch::Receiver<bool>,
}

/// What the reconciler believes is on the machine: a dump, kept current by notifications
/// and by the acknowledgements of its own requests.
#[derive(Debug)]
struct Model {
    ifindex: u32,
    own: Ownership,
    /// Addresses on the VIP interface.
    on_if: BTreeMap<IpAddr, Present>,
    /// Addresses on the other interfaces, as (address, ifindex).
    elsewhere: BTreeSet<(IpAddr, u32)>,
}

impl Model {
    fn load(&mut self, all: Vec<Present>) {
        self.on_if.clear();
        self.elsewhere.clear();
        for p in all {
            self.added(p);
        }
    }

    /// Records an address; true if it concerns the switch's own addresses.
    fn added(&mut self, p: Present) -> bool {
        if p.ifindex == self.ifindex {
            let foreign = !self.own.owns(&p);
            let before = self.on_if.insert(p.address, p);
            foreign || before.is_some_and(|b| !self.own.owns(&b))
        } else {
            self.elsewhere.insert((p.address, p.ifindex))
        }
    }

    /// Forgets an address; true if it concerns the switch's own addresses.
    fn removed(&mut self, address: IpAddr, ifindex: u32) -> bool {
        if ifindex == self.ifindex {
            self.on_if
                .remove(&address)
                .is_some_and(|b| !self.own.owns(&b))
        } else {
            self.elsewhere.remove(&(address, ifindex))
        }
    }

    /// The switch's own addresses: everything that is not one of kube-gw's VIPs.
    fn own_addresses(&self) -> BTreeSet<IpAddr> {
        self.elsewhere
            .iter()
            .map(|(a, _)| *a)
            .chain(
                self.on_if
                    .values()
                    .filter(|p| !self.own.owns(p))
                    .map(|p| p.address),
            )
            .collect()
    }

    /// Where `a` stands: (programmed by kube-gw, present as foreign).
    fn standing(&self, a: &IpAddr) -> (bool, bool) {
        match self.on_if.get(a) {
            Some(p) if self.own.owns(p) => (true, false),
            Some(_) => (false, true),
            None => (false, false),
        }
    }
}

/// Applies `ops` (removals first) in netlink batches; the model follows each
/// acknowledgement. Returns the first error (the rest is retried by the next pass).
async fn apply(nl: &Netlink, model: &mut Model, ops: Vec<Op>) -> Result<(), AddrError> {
    if ops.is_empty() {
        return Ok(());
    }
    let n = ops.len();
    let each_at_info = n <= 16;
    let ifindex = model.ifindex;
    let targets: Vec<(Op, Option<Present>)> = ops
        .into_iter()
        .map(|op| {
            let p = match op {
                Op::Remove(a) => model.on_if.get(&a).cloned(),
                Op::Add(_) => None,
            };
            (op, p)
        })
        .collect();
    let nl = nl.clone();
    let (targets, results) = tokio::task::spawn_blocking(move || {
        let r = send_batches(&nl, ifindex, &targets);
        (targets, r)
    })
    .await
    .map_err(|e| AddrError::Request(e.to_string()))?;
    let mut first_error = None;
    for ((op, _), r) in targets.into_iter().zip(results) {
        if let Err(e) = r {
            first_error.get_or_insert_with(|| format!("{op:?}: {e}"));
            continue;
        }
        match op {
            Op::Add(a) => {
                model.added(Present {
                    address: a,
                    prefix_len: u8::try_from(host_len(a)).unwrap_or(32),
                    ifindex,
                    proto: model.own.proto_supported.then_some(PROTO),
                });
                if each_at_info {
                    tracing::info!(vip = %a, "address added");
                } else {
                    tracing::debug!(vip = %a, "address added");
                }
            }
            Op::Remove(a) => {
                model.removed(a, ifindex);
                if each_at_info {
                    tracing::info!(vip = %a, "address removed");
                } else {
                    tracing::debug!(vip = %a, "address removed");
                }
            }
        }
    }
    if !each_at_info {
        tracing::info!(count = n, "addresses changed");
    }
    match first_error {
        Some(e) => Err(AddrError::Request(e)),
        None => Ok(()),
    }
}

/// Which addresses to look at in the next pass.
#[derive(Debug, Default)]
enum Dirty {
    #[default]
    None,
    Some(BTreeSet<IpAddr>),
    /// Everything (after a dump).
    All,
}

impl Dirty {
    fn add(&mut self, a: IpAddr) {
        match self {
            Dirty::None => *self = Dirty::Some(BTreeSet::from([a])),
            Dirty::Some(s) => {
                s.insert(a);
            }
            Dirty::All => {}
        }
    }
}

/// The address reconciler, as the driver ([`crate::reconcile`]) runs it.
struct AddrReconciler {
    nl: Netlink,
    ifindex: u32,
    events: futures::channel::mpsc::UnboundedReceiver<(
        NetlinkMessage<RouteNetlinkMessage>,
        netlink_sys::SocketAddr,
    )>,
    model: Model,
    passes: u64,
    /// The switch's own addresses changed since they were last published.
    own_changed: bool,
    dirty: Dirty,
    /// The wanted set the last successful pass applied.
    applied: Wanted,
    programmed: Programmed,
    programmed_tx: watch::Sender<Programmed>,
    own_tx: watch::Sender<Option<BTreeSet<IpAddr>>>,
}

impl AddrReconciler {
    /// One pass over the addresses that changed (all of them after a dump).
    async fn apply_pass(&mut self, wanted: &Wanted, full: bool) -> Result<(), AddrError> {
        if full {
            self.model.load(self.nl.dump().await?);
            self.own_changed = true;
            self.dirty = Dirty::All;
        }
        if self.own_changed {
            let own_addrs = self.model.own_addresses();
            self.own_tx.send_if_modified(|cur| {
                let changed = cur.as_ref() != Some(&own_addrs);
                if changed {
                    *cur = Some(own_addrs);
                }
                changed
            });
            self.own_changed = false;
        }
        // What changed in the wanted set since the last pass. Becoming exact makes every
        // address a candidate for removal: look at everything once.
        match (&self.applied, wanted) {
            (Wanted::AtLeast(a), Wanted::AtLeast(w)) | (Wanted::Exactly(a), Wanted::Exactly(w)) => {
                for d in a.diff(w) {
                    let (imbl::ordset::DiffItem::Add(x) | imbl::ordset::DiffItem::Remove(x)) = d;
                    self.dirty.add(*x);
                }
            }
            (Wanted::Unknown, Wanted::Unknown) => {}
            _ => self.dirty = Dirty::All,
        }
        let look_at: Vec<IpAddr> = match std::mem::take(&mut self.dirty) {
            Dirty::None => Vec::new(),
            Dirty::Some(s) => s.into_iter().collect(),
            Dirty::All => {
                let mut all: BTreeSet<IpAddr> = self.model.on_if.keys().copied().collect();
                all.extend(wanted.set().into_iter().flatten().copied());
                self.programmed.vips = OrdSet::new();
                self.programmed.foreign = OrdSet::new();
                all.into_iter().collect()
            }
        };
        let ops = plan(&look_at, wanted, &self.model.on_if, &self.model.own);
        if let Err(e) = apply(&self.nl, &mut self.model, ops).await {
            // What was not looked at successfully is looked at again.
            for a in &look_at {
                self.dirty.add(*a);
            }
            return Err(e);
        }
        // Until the set is complete, what is ours is what was adopted or added.
        for a in &look_at {
            let (ours, foreign) = self.model.standing(a);
            let listed = wanted.set().is_some_and(|w| w.contains(a));
            let want = listed || !wanted.exact();
            if want && ours {
                self.programmed.vips.insert(*a);
            } else {
                self.programmed.vips.remove(a);
            }
            if listed && foreign {
                if !self.programmed.foreign.contains(a) {
                    tracing::warn!(vip = %a, "the address is already on the interface and is not kube-gw's; leaving it alone");
                }
                self.programmed.foreign.insert(*a);
            } else {
                self.programmed.foreign.remove(a);
            }
        }
        Ok(())
    }
}

impl Reconciler for AddrReconciler {
    type Want = Wanted;

    async fn pass(&mut self, wanted: &Wanted, full: bool) -> Result<(), String> {
        self.passes += 1;
        match self.apply_pass(wanted, full).await {
            Ok(()) => {
                self.programmed.complete |= wanted.exact();
                self.applied = wanted.clone();
                self.programmed.passes = self.passes;
                // `programmed` never carries an error: errors go to the channel only.
                let snapshot = self.programmed.clone();
                self.programmed_tx.send_if_modified(|cur| {
                    let changed = cur.vips != snapshot.vips
                        || cur.foreign != snapshot.foreign
                        || cur.complete != snapshot.complete
                        || cur.error.is_some();
                    *cur = snapshot;
                    changed
                });
                Ok(())
            }
            Err(e) => {
                let e = e.to_string();
                self.programmed_tx
                    .send_modify(|p| p.error = Some(e.clone()));
                Err(e)
            }
        }
    }

    async fn wake(&mut self) -> Wake {
        let Some((msg, _)) = self.events.next().await else {
            // The notification socket is gone: the periodic resync still repairs drift.
            return std::future::pending().await;
        };
        // Take the whole burst that is already queued.
        let mut wake = Wake::Pass;
        let mut next = Some(msg);
        while let Some(msg) = next {
            match notification(&msg) {
                Notified::Added(p) => {
                    let a = p.address;
                    let on_if = p.ifindex == self.ifindex;
                    self.own_changed |= self.model.added(p);
                    if on_if {
                        self.dirty.add(a);
                    }
                }
                Notified::Removed(a, i) => {
                    self.own_changed |= self.model.removed(a, i);
                    if i == self.ifindex {
                        self.dirty.add(a);
                    }
                }
                Notified::Overrun => {
                    tracing::warn!("netlink notifications were lost; reading the addresses again");
                    wake = Wake::Full;
                }
                Notified::Other => {}
            }
            next = self.events.next().now_or_never().flatten().map(|(m, _)| m);
        }
        wake
    }
}

/// Runs the reconciler on `ifname` until teardown; then removes kube-gw's addresses unless
/// `keep_on_teardown`.
pub async fn run(
    ifname: String,
    own: Ownership,
    mut ch: AddrChannels,
    keep_on_teardown: bool,
    hb: Heartbeat,
) {
    let mut backoff = Backoff::new(Duration::from_millis(200), RESYNC);
    // Set up: a netlink handle, the interface, and a notification stream.
    let (nl, ifindex, events) = loop {
        hb.turn().await;
        let setup = async {
            let nl = Netlink::connect()?;
            let ifindex = nl.ifindex(&ifname).await?;
            let (mut conn, _h, msgs) = rtnetlink::new_multicast_connection(&[
                rtnetlink::MulticastGroup::Ipv4Ifaddr,
                rtnetlink::MulticastGroup::Ipv6Ifaddr,
            ])
            .map_err(AddrError::Socket)?;
            // Programming 10 000 VIPs sends 10 000 notifications back; a larger buffer
            // avoids overruns (which are handled anyway: they force a dump).
            if let Err(e) = conn.socket_mut().socket_mut().set_rx_buf_sz(NOTIFY_BUFFER) {
                tracing::debug!(error = %e, "cannot enlarge the netlink notification buffer");
            }
            tokio::spawn(conn);
            Ok::<_, AddrError>((nl, ifindex, msgs))
        };
        match hb.during(setup).await {
            Ok(x) => break x,
            Err(e) => {
                tracing::error!(interface = %ifname, error = %e, "address reconciler cannot start; retrying");
                ch.programmed.send_modify(|p| p.error = Some(e.to_string()));
                tokio::select! {
                    () = hb.during(backoff.wait()) => {}
                    () = crate::lifecycle::stopped(&mut ch.teardown) => return,
                }
            }
        }
    };
    tracing::info!(interface = %ifname, ifindex, proto_marking = own.proto_supported, "address reconciler started");
    let mut r = AddrReconciler {
        nl,
        ifindex,
        events,
        model: Model {
            ifindex,
            own,
            on_if: BTreeMap::new(),
            elsewhere: BTreeSet::new(),
        },
        passes: 0,
        own_changed: false,
        dirty: Dirty::All,
        applied: Wanted::Unknown,
        programmed: Programmed::default(),
        programmed_tx: ch.programmed.clone(),
        own_tx: ch.own,
    };
    let pacing = Pacing {
        name: "addresses",
        resync: RESYNC,
        backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
    };
    // Teardown, or the desired task is gone (it is stopped first at teardown).
    drive(&mut r, &mut ch.wanted, pacing, &hb, &mut ch.teardown).await;
    if keep_on_teardown {
        tracing::info!("keeping the VIP addresses on the interface ([vip] on-shutdown = \"keep\")");
        return;
    }
    let AddrReconciler { nl, mut model, .. } = r;
    let result = async {
        model.load(nl.dump().await?);
        let all: Vec<IpAddr> = model.on_if.keys().copied().collect();
        let ops = plan(
            &all,
            &Wanted::Exactly(OrdSet::new()),
            &model.on_if,
            &model.own,
        );
        apply(&nl, &mut model, ops).await
    }
    .await;
    match result {
        Ok(()) => {
            ch.programmed.send_modify(|p| {
                p.vips = OrdSet::new();
                p.foreign = OrdSet::new();
            });
            tracing::info!("VIP addresses removed");
        }
        Err(e) => tracing::error!(error = %e, "cannot remove the VIP addresses"),
    }
}

/// An address notification, decoded.
enum Notified {
    Added(Present),
    Removed(IpAddr, u32),
    Overrun,
    Other,
}

fn notification(msg: &NetlinkMessage<RouteNetlinkMessage>) -> Notified {
    match &msg.payload {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(m)) => {
            present(m).map_or(Notified::Other, Notified::Added)
        }
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelAddress(m)) => {
            present(m).map_or(Notified::Other, |p| Notified::Removed(p.address, p.ifindex))
        }
        NetlinkPayload::Overrun(_) => Notified::Overrun,
        _ => Notified::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(a: &str, plen: u8, proto: Option<u8>) -> Present {
        Present {
            address: a.parse().unwrap(),
            prefix_len: plen,
            ifindex: 1,
            proto,
        }
    }

    fn set(a: &[&str]) -> OrdSet<IpAddr> {
        a.iter().map(|s| s.parse::<IpAddr>().unwrap()).collect()
    }

    fn exactly(a: &[&str]) -> Wanted {
        Wanted::Exactly(set(a))
    }

    fn on_if(present: &[Present]) -> BTreeMap<IpAddr, Present> {
        present.iter().map(|p| (p.address, p.clone())).collect()
    }

    /// Every address in `wanted` or on the interface.
    fn everything(wanted: &Wanted, present: &[Present]) -> BTreeSet<IpAddr> {
        wanted
            .set()
            .into_iter()
            .flatten()
            .copied()
            .chain(present.iter().map(|p| p.address))
            .collect()
    }

    #[test]
    fn only_marked_addresses_are_removed() {
        let own = Ownership {
            proto_supported: true,
            pools: vec!["198.51.100.0/24".parse().unwrap()],
        };
        let present = [
            p("127.0.0.1", 8, Some(1)),
            p("198.51.100.1", 32, Some(PROTO)),
            p("198.51.100.2", 32, None), // an operator's address inside the pool
            p("198.51.100.3", 32, Some(PROTO)),
        ];
        let wanted = exactly(&["198.51.100.3", "198.51.100.4", "198.51.100.2"]);
        let ops = plan(
            &everything(&wanted, &present),
            &wanted,
            &on_if(&present),
            &own,
        );
        assert_eq!(
            ops,
            vec![
                Op::Remove("198.51.100.1".parse().unwrap()),
                Op::Add("198.51.100.4".parse().unwrap())
            ]
        );
    }

    #[test]
    fn a_plan_looks_only_at_the_dirty_addresses() {
        let own = Ownership {
            proto_supported: true,
            pools: vec![],
        };
        let present = [
            p("198.51.100.1", 32, Some(PROTO)),
            p("198.51.100.9", 32, Some(PROTO)),
        ];
        let wanted = exactly(&["198.51.100.2", "198.51.100.3"]);
        let dirty: Vec<IpAddr> = vec!["198.51.100.2".parse().unwrap()];
        assert_eq!(
            plan(&dirty, &wanted, &on_if(&present), &own),
            vec![Op::Add("198.51.100.2".parse().unwrap())]
        );
    }

    #[test]
    fn while_the_cluster_is_listed_nothing_is_removed() {
        let own = Ownership {
            proto_supported: true,
            pools: vec![],
        };
        let present = [p("198.51.100.1", 32, Some(PROTO))];
        let partial = Wanted::AtLeast(set(&["198.51.100.2"]));
        assert_eq!(
            plan(
                &everything(&partial, &present),
                &partial,
                &on_if(&present),
                &own
            ),
            vec![Op::Add("198.51.100.2".parse().unwrap())]
        );
        let unknown = Wanted::Unknown;
        let all: Vec<IpAddr> = vec!["198.51.100.1".parse().unwrap()];
        assert!(plan(&all, &unknown, &on_if(&present), &own).is_empty());
    }

    #[test]
    fn without_ifa_proto_host_addresses_in_pools_are_ours() {
        let own = Ownership {
            proto_supported: false,
            pools: vec!["2001:db8:100::/64".parse().unwrap()],
        };
        assert!(own.owns(&p("2001:db8:100::1", 128, None)));
        assert!(!own.owns(&p("2001:db8:100::1", 64, None)));
        assert!(!own.owns(&p("2001:db8:200::1", 128, None)));
    }

    #[test]
    fn an_unchanged_state_plans_nothing() {
        let own = Ownership {
            proto_supported: true,
            pools: vec![],
        };
        let present = [p("198.51.100.1", 32, Some(PROTO))];
        let wanted = exactly(&["198.51.100.1"]);
        assert!(plan(
            &everything(&wanted, &present),
            &wanted,
            &on_if(&present),
            &own
        )
        .is_empty());
    }

    #[test]
    fn the_model_follows_notifications_and_knows_the_own_addresses() {
        let mut m = Model {
            ifindex: 1,
            own: Ownership {
                proto_supported: true,
                pools: vec![],
            },
            on_if: BTreeMap::new(),
            elsewhere: BTreeSet::new(),
        };
        m.load(vec![
            p("127.0.0.1", 8, Some(1)),
            p("198.51.100.1", 32, Some(PROTO)),
            Present {
                ifindex: 2,
                ..p("192.0.2.1", 24, Some(1))
            },
        ]);
        assert_eq!(
            m.own_addresses().into_iter().collect::<Vec<_>>(),
            vec![
                "127.0.0.1".parse::<IpAddr>().unwrap(),
                "192.0.2.1".parse().unwrap()
            ]
        );
        // kube-gw's own VIP coming and going does not concern the own addresses.
        assert!(!m.added(p("198.51.100.2", 32, Some(PROTO))));
        assert!(!m.removed("198.51.100.2".parse().unwrap(), 1));
        // An operator's address does.
        assert!(m.added(p("198.51.100.3", 32, None)));
        assert_eq!(m.standing(&"198.51.100.3".parse().unwrap()), (false, true));
        assert_eq!(m.standing(&"198.51.100.1".parse().unwrap()), (true, false));
        assert!(m.removed("192.0.2.1".parse().unwrap(), 2));
    }
}
