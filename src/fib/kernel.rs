//! The route reconciler: makes kube-gw's routes in the kernel equal to the [`FibWant`].
//!
//! Ownership: a route is kube-gw's when its protocol is `[bgp] fib-protocol` (default 107,
//! `proto 107` in `ip route`) in `fib-table` at `fib-metric`. Only those are replaced or
//! deleted. A route of another protocol with the same prefix, table and metric blocks
//! kube-gw's (it is created with `NLM_F_EXCL`, so the kernel refuses to overwrite it) and is
//! reported as a conflict; routes at other metrics live beside kube-gw's as the kernel
//! allows.
//!
//! A change of next hops is one `RTM_NEWROUTE` with `NLM_F_REPLACE`: an ECMP route that
//! loses one of its next hops is replaced by the route with the others, never deleted and
//! added again (no moment without a route). Multiple next hops go in `RTA_MULTIPATH`; an
//! IPv4 route over an IPv6 next hop (RFC 8950) in `RTA_VIA`.
//!
//! The reconciler dumps the routes at the start, on every resync and after a failure; in
//! between it keeps its model from its own writes, so a pass costs what changed. Routes
//! found at the start and not wanted are removed only once the want is
//! [`FibWant::synced`]; routes it installed itself go as soon as they are not wanted.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use futures::StreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteNextHop, RouteProtocol,
    RouteScope, RouteType, RouteVia,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::Handle;
use serde::Serialize;
use tokio::sync::watch;

use crate::config::Fib as Settings;
use crate::model::{FibWant, NextHop};
use crate::reconcile::Reconciler;

/// What the installer reports (`kube-gw status`, `kube-gw bgp routes`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FibReport {
    /// Routes of kube-gw's in the kernel.
    pub installed: usize,
    /// Of those, with more than one next hop.
    pub multipath: usize,
    /// Wanted routes another protocol's route blocks (same prefix, table and metric).
    pub conflicts: Vec<String>,
    /// Routes the kernel refused, and why (an unreachable next hop, say).
    pub failed: Vec<String>,
}

/// The reconciler's state.
#[derive(Debug)]
pub struct Routes {
    handle: Handle,
    settings: Settings,
    /// kube-gw's routes as the kernel has them.
    model: BTreeMap<IpNet, Arc<[NextHop]>>,
    /// Prefixes another protocol holds at our table and metric.
    foreign: BTreeSet<IpNet>,
    /// Routes installed by this run (removable before the want is synced).
    ours_now: BTreeSet<IpNet>,
    report: watch::Sender<FibReport>,
}

impl Routes {
    pub fn connect(settings: Settings, report: watch::Sender<FibReport>) -> Result<Self, String> {
        let (conn, handle, _) = rtnetlink::new_connection()
            .map_err(|e| format!("cannot open a netlink socket: {e}"))?;
        tokio::spawn(conn);
        Ok(Self {
            handle,
            settings,
            model: BTreeMap::new(),
            foreign: BTreeSet::new(),
            ours_now: BTreeSet::new(),
            report,
        })
    }

    /// Reads the table: kube-gw's routes into the model, others at our metric as foreign.
    async fn dump(&mut self) -> Result<(), String> {
        let links = crate::link::read();
        let mut model = BTreeMap::new();
        let mut foreign = BTreeSet::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut m = RouteMessage::default();
            m.header.address_family = family;
            let mut s = self.handle.route().get(m).execute();
            while let Some(r) = s.next().await {
                let r = r.map_err(|e| format!("cannot read the routing table: {e}"))?;
                let Some((prefix, table, metric)) = key(&r) else {
                    continue;
                };
                if table != self.settings.table || metric != self.settings.metric {
                    continue;
                }
                if r.header.protocol == RouteProtocol::from(self.settings.protocol) {
                    model.insert(prefix, hops(&r, &links));
                } else {
                    foreign.insert(prefix);
                }
            }
        }
        self.model = model;
        self.foreign = foreign;
        Ok(())
    }

    /// A route message for `prefix` (with `hops`, or none for a deletion).
    fn message(&self, prefix: IpNet, hops: &[NextHop]) -> Result<RouteMessage, String> {
        let mut m = RouteMessage::default();
        m.header = RouteHeader {
            address_family: family(prefix.addr()),
            destination_prefix_length: prefix.prefix_len(),
            table: u8::try_from(self.settings.table).unwrap_or(252),
            protocol: RouteProtocol::from(self.settings.protocol),
            scope: RouteScope::Universe,
            kind: RouteType::Unicast,
            ..RouteHeader::default()
        };
        let a = &mut m.attributes;
        a.push(RouteAttribute::Destination(address(prefix.addr())));
        a.push(RouteAttribute::Table(self.settings.table));
        a.push(RouteAttribute::Priority(self.settings.metric));
        // The interface table only for link-local next hops, not for every route.
        let links = if hops.iter().any(|h| h.interface.is_some()) {
            crate::link::read()
        } else {
            Vec::new()
        };
        let resolve = |h: &NextHop| -> Result<(Vec<RouteAttribute>, u32), String> {
            let ifindex = match &h.interface {
                Some(i) => crate::link::ifindex(&links, i)
                    .ok_or_else(|| format!("next hop {}: no interface {i}", h.gateway))?,
                None => 0,
            };
            let gw = if family(h.gateway) == family(prefix.addr()) {
                RouteAttribute::Gateway(address(h.gateway))
            } else {
                match h.gateway {
                    IpAddr::V6(v6) => RouteAttribute::Via(RouteVia::Inet6(v6)),
                    IpAddr::V4(v4) => RouteAttribute::Via(RouteVia::Inet(v4)),
                }
            };
            Ok((vec![gw], ifindex))
        };
        match hops {
            [] => {}
            [one] => {
                let (attrs, ifindex) = resolve(one)?;
                a.extend(attrs);
                if ifindex != 0 {
                    a.push(RouteAttribute::Oif(ifindex));
                }
            }
            many => {
                let mut list = Vec::new();
                for h in many {
                    let (attributes, interface_index) = resolve(h)?;
                    let mut nh = RouteNextHop::default();
                    nh.interface_index = interface_index;
                    nh.attributes = attributes;
                    list.push(nh);
                }
                a.push(RouteAttribute::MultiPath(list));
            }
        }
        Ok(m)
    }

    async fn install(&mut self, prefix: IpNet, hops: &Arc<[NextHop]>) -> Result<(), String> {
        let m = self.message(prefix, hops)?;
        let mut req = self.handle.route().add(m);
        if self.model.contains_key(&prefix) {
            req = req.replace();
        }
        match req.execute().await {
            Ok(()) => {
                self.model.insert(prefix, hops.clone());
                self.ours_now.insert(prefix);
                Ok(())
            }
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => {
                self.foreign.insert(prefix);
                Err(self.blocked(prefix))
            }
            Err(e) => Err(format!("{prefix}: {e}")),
        }
    }

    /// Why a wanted route is not installed: another protocol holds its place.
    fn blocked(&self, prefix: IpNet) -> String {
        format!(
            "{prefix}: another protocol's route has this prefix at metric {}",
            self.settings.metric
        )
    }

    /// Deletes kube-gw's route for `prefix`.
    pub async fn remove(&mut self, prefix: IpNet) -> Result<(), String> {
        let m = self.message(prefix, &[])?;
        match self.handle.route().del(m).execute().await {
            Ok(()) => {}
            // Already gone (deleted by hand, its interface went down).
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ESRCH => {}
            Err(e) => return Err(format!("cannot remove the route {prefix}: {e}")),
        }
        self.model.remove(&prefix);
        self.ours_now.remove(&prefix);
        Ok(())
    }

    /// Removes every route of kube-gw's (a stop that does not keep the forwarding state).
    pub async fn remove_all(&mut self) -> Result<usize, String> {
        self.dump().await?;
        let all: Vec<IpNet> = self.model.keys().copied().collect();
        for p in &all {
            self.remove(*p).await?;
        }
        Ok(all.len())
    }

    fn publish(&self, conflicts: Vec<String>, failed: Vec<String>) {
        let r = FibReport {
            installed: self.model.len(),
            multipath: self.model.values().filter(|h| h.len() > 1).count(),
            conflicts,
            failed,
        };
        self.report.send_if_modified(|old| {
            let changed = *old != r;
            *old = r;
            changed
        });
    }
}

impl Reconciler for Routes {
    type Want = FibWant;

    async fn pass(&mut self, want: &FibWant, full: bool) -> Result<(), String> {
        if full {
            self.dump().await?;
        }
        let mut conflicts = Vec::new();
        let mut failed = Vec::new();
        for (prefix, hops) in &want.routes {
            if self.model.get(prefix) == Some(hops) {
                continue;
            }
            if self.foreign.contains(prefix) && !self.model.contains_key(prefix) {
                conflicts.push(self.blocked(*prefix));
                continue;
            }
            if let Err(e) = self.install(*prefix, hops).await {
                if self.foreign.contains(prefix) {
                    conflicts.push(e);
                } else {
                    tracing::warn!(error = %e, "cannot install a route");
                    failed.push(e);
                }
            }
        }
        let gone: Vec<IpNet> = self
            .model
            .keys()
            .filter(|p| !want.routes.contains_key(*p))
            .filter(|p| want.synced || self.ours_now.contains(*p))
            .copied()
            .collect();
        for p in gone {
            if let Err(e) = self.remove(p).await {
                failed.push(e);
            }
        }
        let retry = !failed.is_empty();
        self.publish(conflicts, failed);
        if retry {
            return Err("some routes could not be installed (see kube-gw bgp routes)".into());
        }
        Ok(())
    }
}

fn family(a: IpAddr) -> AddressFamily {
    match a {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn address(a: IpAddr) -> RouteAddress {
    match a {
        IpAddr::V4(v4) => RouteAddress::Inet(v4),
        IpAddr::V6(v6) => RouteAddress::Inet6(v6),
    }
}

fn ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// A dumped route's prefix, table and metric (None for what kube-gw never installs:
/// non-unicast routes, source-specific routes).
fn key(r: &RouteMessage) -> Option<(IpNet, u32, u32)> {
    if r.header.kind != RouteType::Unicast || r.header.source_prefix_length != 0 {
        return None;
    }
    let mut dst = None;
    let mut table = u32::from(r.header.table);
    let mut metric = 0;
    for a in &r.attributes {
        match a {
            RouteAttribute::Destination(d) => dst = ip(d),
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Priority(p) => metric = *p,
            _ => {}
        }
    }
    let len = r.header.destination_prefix_length;
    let dst = dst.unwrap_or(match r.header.address_family {
        AddressFamily::Inet6 => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        _ => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
    });
    Some((IpNet::new(dst, len).ok()?, table, metric))
}

/// A dumped route's next hops, named as the Loc-RIB names them: the interface only for a
/// link-local gateway or one of the other family.
fn hops(r: &RouteMessage, links: &[crate::link::Addr6]) -> Arc<[NextHop]> {
    let one = |attrs: &[RouteAttribute], oif: u32| -> Option<NextHop> {
        let gateway = attrs.iter().find_map(|a| match a {
            RouteAttribute::Gateway(g) => ip(g),
            RouteAttribute::Via(RouteVia::Inet6(v6)) => Some(IpAddr::V6(*v6)),
            RouteAttribute::Via(RouteVia::Inet(v4)) => Some(IpAddr::V4(*v4)),
            _ => None,
        })?;
        let needs_interface = match gateway {
            IpAddr::V6(v6) => crate::link::is_link_local(&v6),
            IpAddr::V4(_) => false,
        };
        Some(NextHop {
            gateway,
            interface: needs_interface
                .then(|| crate::link::interface_name(links, oif))
                .flatten(),
        })
    };
    let oif = r
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Oif(i) => Some(*i),
            _ => None,
        })
        .unwrap_or(0);
    let mut out: Vec<NextHop> = match r.attributes.iter().find_map(|a| match a {
        RouteAttribute::MultiPath(m) => Some(m),
        _ => None,
    }) {
        Some(list) => list
            .iter()
            .filter_map(|h| one(&h.attributes, h.interface_index))
            .collect(),
        None => one(&r.attributes, oif).into_iter().collect(),
    };
    out.sort();
    out.into()
}
