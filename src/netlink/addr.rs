//! The address reconciler: makes the addresses on `vip.interface` (default `lo`) equal to
//! the VIPs of the desired state — /32 for IPv4, /128 for IPv6 — and touches nothing else.
//!
//! ```text
//!  watch<BTreeSet<IpAddr>> (wanted VIPs) ─┐
//!  netlink RTMGRP_IPV{4,6}_IFADDR events ─┼─► pass: dump → plan (pure) → add/del → publish
//!  resync timer (30 s) ───────────────────┘        │
//!                                                  ├─► watch<Programmed> (VIPs on the interface)
//!                                                  └─► watch<BTreeSet<IpAddr>> (the switch's own addresses)
//! ```
//!
//! Ownership: kube-gw marks its addresses with the address protocol `IFA_PROTO` =
//! [`PROTO`] (Linux ≥ 6.1). On older kernels, which keep no protocol, an address is taken
//! as kube-gw's when it is a host address (/32, /128) inside a configured pool — the same
//! rule that decides what kube-gw may serve. Every other address is foreign and never
//! removed; a wanted VIP that is already there as a foreign address is left as it is and
//! reported.
//!
//! Drift (an address deleted by hand or by the switch OS) is seen through the netlink
//! notifications and repaired in the next pass, well within a second. A restart adopts
//! what it finds: a pass adds only what is missing, so nothing flaps.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use futures::StreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressMessage, AddressProtocol,
};
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::Handle;
use serde::Serialize;
use tokio::sync::watch;

/// `IFA_PROTO` value that marks kube-gw's addresses (ASCII `k`).
pub const PROTO: u8 = 0x6b;
/// Netlink requests kept in flight during a pass.
const IN_FLIGHT: usize = 64;
/// Periodic full pass, whatever the notifications said.
pub const RESYNC: Duration = Duration::from_secs(30);

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

/// The operations that make `present` (on the VIP interface) match `wanted`: add what is
/// missing, remove what is ours and not wanted. Foreign addresses are never removed; a
/// wanted address present as a foreign one is not added again. Sorted: removals first.
pub fn plan(wanted: &BTreeSet<IpAddr>, present: &[Present], own: &Ownership) -> Vec<Op> {
    let mut ops = Vec::new();
    let there: BTreeSet<IpAddr> = present.iter().map(|p| p.address).collect();
    for p in present {
        if own.owns(p) && !wanted.contains(&p.address) {
            ops.push(Op::Remove(p.address));
        }
    }
    for w in wanted {
        if !there.contains(w) {
            ops.push(Op::Add(*w));
        }
    }
    ops.sort_by_key(|o| match o {
        Op::Remove(a) => (0, *a),
        Op::Add(a) => (1, *a),
    });
    ops
}

/// What is on the interface after a pass.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Programmed {
    /// Wanted VIPs that are on the interface as kube-gw's.
    pub vips: BTreeSet<IpAddr>,
    /// Wanted VIPs present as someone else's address (left alone).
    pub foreign: BTreeSet<IpAddr>,
    /// The last failure, if the last pass had one.
    pub error: Option<String>,
    /// Passes made.
    pub passes: u64,
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

/// Netlink access for the reconciler.
#[derive(Debug, Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Opens a route netlink connection (its I/O task is spawned on the current runtime).
    pub fn connect() -> Result<Self, AddrError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(AddrError::Socket)?;
        tokio::spawn(conn);
        Ok(Self { handle })
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

    /// Adds a VIP (/32 or /128) marked as kube-gw's.
    pub async fn add(&self, ifindex: u32, a: IpAddr) -> Result<(), AddrError> {
        let plen = u8::try_from(host_len(a)).unwrap_or(32);
        let mut req = self.handle.address().add(ifindex, a, plen);
        let msg = req.message_mut();
        msg.attributes
            .push(AddressAttribute::Protocol(AddressProtocol::Other(PROTO)));
        if a.is_ipv6() {
            msg.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        req.execute().await?;
        Ok(())
    }

    /// Removes an address from an interface.
    pub async fn remove(&self, ifindex: u32, a: IpAddr) -> Result<(), AddrError> {
        let mut s = self
            .handle
            .address()
            .get()
            .set_link_index_filter(ifindex)
            .set_address_filter(a)
            .execute();
        while let Some(m) = s.next().await {
            let m: AddressMessage = m?;
            self.handle.address().del(m).execute().await?;
        }
        Ok(())
    }
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
    /// `None` until the first cluster view is in: then nothing is removed, only adopted.
    pub wanted: watch::Receiver<Option<BTreeSet<IpAddr>>>,
    pub programmed: watch::Sender<Programmed>,
    pub own: watch::Sender<BTreeSet<IpAddr>>,
    /// Turns true to remove kube-gw's addresses and stop (shutdown, `remove` mode).
    pub teardown: watch::Receiver<bool>,
}

/// One pass; returns what is programmed.
async fn pass(
    nl: &Netlink,
    ifindex: u32,
    wanted: Option<&BTreeSet<IpAddr>>,
    own: &Ownership,
    ch: &AddrChannels,
) -> Result<Programmed, AddrError> {
    let all = nl.dump().await?;
    let own_addrs: BTreeSet<IpAddr> = all
        .iter()
        .filter(|p| !(p.ifindex == ifindex && own.owns(p)))
        .map(|p| p.address)
        .collect();
    ch.own.send_if_modified(|cur| {
        let changed = *cur != own_addrs;
        if changed {
            *cur = own_addrs.clone();
        }
        changed
    });
    let on_if: Vec<Present> = all.into_iter().filter(|p| p.ifindex == ifindex).collect();
    let ops = match wanted {
        Some(w) => plan(w, &on_if, own),
        None => Vec::new(),
    };
    let added: Vec<IpAddr> = ops
        .iter()
        .filter_map(|o| match o {
            Op::Add(a) => Some(*a),
            Op::Remove(_) => None,
        })
        .collect();
    // Removals first, then additions; each batch keeps many requests in flight on the one
    // netlink socket instead of waiting for every acknowledgement in turn.
    let (removes, adds): (Vec<Op>, Vec<Op>) =
        ops.into_iter().partition(|o| matches!(o, Op::Remove(_)));
    for batch in [removes, adds] {
        let n = batch.len();
        let each_at_info = n <= 16;
        let mut results = futures::stream::iter(batch)
            .map(|op| async move {
                match op {
                    Op::Add(a) => nl.add(ifindex, a).await.map(|()| op),
                    Op::Remove(a) => nl.remove(ifindex, a).await.map(|()| op),
                }
            })
            .buffer_unordered(IN_FLIGHT);
        let mut last = None;
        while let Some(r) = results.next().await {
            let op = r?;
            match (&op, each_at_info) {
                (Op::Add(a), true) => tracing::info!(vip = %a, "address added"),
                (Op::Remove(a), true) => tracing::info!(vip = %a, "address removed"),
                (Op::Add(a), false) => tracing::debug!(vip = %a, "address added"),
                (Op::Remove(a), false) => tracing::debug!(vip = %a, "address removed"),
            }
            last = Some(op);
        }
        match last {
            Some(Op::Add(_)) if !each_at_info => tracing::info!(count = n, "addresses added"),
            Some(Op::Remove(_)) if !each_at_info => tracing::info!(count = n, "addresses removed"),
            _ => {}
        }
    }
    // What is there now: the dump, changed by the operations that succeeded (all did, or
    // this function returned early with the error).
    let mut out = Programmed::default();
    for p in &on_if {
        let removed = wanted.is_some_and(|w| own.owns(p) && !w.contains(&p.address));
        if removed {
            continue;
        }
        // Before the first cluster view, what is ours is what was adopted.
        if wanted.is_none_or(|w| w.contains(&p.address)) {
            if own.owns(p) {
                out.vips.insert(p.address);
            } else if wanted.is_some() {
                out.foreign.insert(p.address);
            }
        }
    }
    out.vips.extend(added);
    Ok(out)
}

/// Runs the reconciler on `ifname` until teardown.
pub async fn run(ifname: String, own: Ownership, mut ch: AddrChannels, keep_on_teardown: bool) {
    let mut delay = Duration::from_millis(200);
    // Set up: a netlink handle, the interface, and a notification stream.
    let (nl, ifindex, mut events) = loop {
        let setup = async {
            let nl = Netlink::connect()?;
            let ifindex = nl.ifindex(&ifname).await?;
            let (conn, _h, msgs) = rtnetlink::new_multicast_connection(&[
                rtnetlink::MulticastGroup::Ipv4Ifaddr,
                rtnetlink::MulticastGroup::Ipv6Ifaddr,
            ])
            .map_err(AddrError::Socket)?;
            tokio::spawn(conn);
            Ok::<_, AddrError>((nl, ifindex, msgs))
        };
        match setup.await {
            Ok(x) => break x,
            Err(e) => {
                tracing::error!(interface = %ifname, error = %e, "address reconciler cannot start; retrying");
                ch.programmed.send_modify(|p| p.error = Some(e.to_string()));
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = crate::lifecycle::stopped(&mut ch.teardown) => return,
                }
                delay = (delay * 2).min(RESYNC);
            }
        }
    };
    tracing::info!(interface = %ifname, ifindex, proto_marking = own.proto_supported, "address reconciler started");
    let mut passes = 0u64;
    let mut resync = tokio::time::interval(RESYNC);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut backoff = Duration::from_millis(100);
    loop {
        let wanted = ch.wanted.borrow_and_update().clone();
        passes += 1;
        let mut retry = false;
        match pass(&nl, ifindex, wanted.as_ref(), &own, &ch).await {
            Ok(mut p) => {
                p.passes = passes;
                for f in &p.foreign {
                    tracing::warn!(vip = %f, "the address is already on the interface and is not kube-gw's; leaving it alone");
                }
                ch.programmed.send_if_modified(|cur| {
                    let changed =
                        cur.vips != p.vips || cur.foreign != p.foreign || cur.error.is_some();
                    *cur = p;
                    changed
                });
                backoff = Duration::from_millis(100);
            }
            Err(e) => {
                tracing::warn!(error = %e, "address pass failed; retrying");
                ch.programmed.send_modify(|p| p.error = Some(e.to_string()));
                retry = true;
            }
        }
        // Wait for something to do.
        let teardown = tokio::select! {
            r = ch.wanted.changed() => r.is_err(),
            _ = resync.tick() => false,
            () = async {
                if retry {
                    tokio::time::sleep(backoff).await;
                } else {
                    std::future::pending::<()>().await;
                }
            } => { backoff = (backoff * 2).min(Duration::from_secs(5)); false }
            Some((msg, _)) = events.next() => {
                let ours = match &msg.payload {
                    rtnetlink::packet_core::NetlinkPayload::InnerMessage(
                        rtnetlink::packet_route::RouteNetlinkMessage::DelAddress(m)
                        | rtnetlink::packet_route::RouteNetlinkMessage::NewAddress(m),
                    ) => m.header.index == ifindex,
                    _ => false,
                };
                // Drain a burst of notifications before the next pass.
                if ours {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                false
            }
            () = crate::lifecycle::stopped(&mut ch.teardown) => true,
        };
        if teardown || *ch.teardown.borrow() {
            break;
        }
    }
    if keep_on_teardown {
        tracing::info!("keeping the VIP addresses on the interface ([vip] on-shutdown = \"keep\")");
        return;
    }
    match pass(&nl, ifindex, Some(&BTreeSet::new()), &own, &ch).await {
        Ok(p) => {
            ch.programmed.send_replace(p);
            tracing::info!("VIP addresses removed");
        }
        Err(e) => tracing::error!(error = %e, "cannot remove the VIP addresses"),
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

    fn set(a: &[&str]) -> BTreeSet<IpAddr> {
        a.iter().map(|s| s.parse().unwrap()).collect()
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
        let ops = plan(
            &set(&["198.51.100.3", "198.51.100.4", "198.51.100.2"]),
            &present,
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
        assert!(plan(&set(&["198.51.100.1"]), &present, &own).is_empty());
    }
}
