//! The desired state: from the cluster view and the configuration, what this switch should
//! serve. One pure function, [`compute`]: no I/O, no clock, no randomness, sorted maps, so
//! that the same inputs always give the same output and golden tests can pin it.
//!
//! Inputs: a [`ClusterSnapshot`], the [`Config`], and the [`NodeId`] (this switch's name and
//! its own addresses). Output: a [`DesiredState`] with
//! - `vips`: every address to put on `vip.interface` (/32 or /128), with its Services and
//!   whether it may be announced;
//! - `virtual_services`: one per (VIP, port, protocol), with its destinations in a fixed
//!   order — what the IPVS reconciler programs;
//! - `announcements`: the prefixes the BGP speaker may announce;
//! - `refusals`: every address that was asked for and not served, with the reason.
//!
//! The rules (CVE-2020-8554): an address is served only inside a configured pool, and never
//! inside `service-cidrs`, on a Node address, or on one of the switch's own addresses. Two
//! Services may share a VIP on different ports; the same VIP:port:protocol claimed twice
//! goes to the oldest Service (then namespace/name) and the other is refused.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use crate::config::{AnnouncePolicy, Config};
use crate::kube::snapshot::{ClusterSnapshot, Endpoint, ObjectKey, Protocol, Service};

/// Annotation that opts a Service out (`"false"`).
pub const ANNOUNCE_ANNOTATION: &str = "kube-gw.io/announce";

/// Who "this switch" is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeId {
    pub name: String,
    /// Addresses configured on the switch itself, not counting kube-gw's VIPs.
    pub own_addresses: BTreeSet<IpAddr>,
}

/// What this switch should serve.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DesiredState {
    pub vips: BTreeMap<IpAddr, Vip>,
    pub virtual_services: BTreeMap<VsKey, VirtualService>,
    pub announcements: BTreeSet<IpNet>,
    pub refusals: Vec<Refusal>,
}

/// One service address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Vip {
    pub address: IpAddr,
    /// Services served on it (at least one port each).
    pub services: BTreeSet<ObjectKey>,
    /// Ready endpoints over all its virtual services.
    pub ready_endpoints: usize,
    /// May be announced (policy and readiness).
    pub announceable: bool,
}

/// Key of a virtual service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VsKey {
    pub vip: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
}

impl Serialize for VsKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl std::fmt::Display for VsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let proto = match self.protocol {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        };
        match self.vip {
            IpAddr::V4(a) => write!(f, "{a}:{}/{proto}", self.port),
            IpAddr::V6(a) => write!(f, "[{a}]:{}/{proto}", self.port),
        }
    }
}

/// One (VIP, port, protocol) and where its traffic goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VirtualService {
    pub service: ObjectKey,
    pub port_name: String,
    /// Sorted by (address, port): every switch programs them in the same order.
    pub destinations: Vec<Destination>,
    /// `sessionAffinity: ClientIP` timeout in seconds.
    pub persistence: Option<i32>,
    /// `externalTrafficPolicy: Local`.
    pub external_traffic_local: bool,
}

/// A backend of a virtual service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Destination {
    pub address: IpAddr,
    pub port: u16,
    /// `ready`, or `terminating` when only serving-terminating endpoints are left (as
    /// kube-proxy falls back to them).
    pub state: DestState,
}

/// Why a destination is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DestState {
    Ready,
    Terminating,
}

/// An address that was asked for and is not served.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Refusal {
    pub service: ObjectKey,
    pub address: String,
    pub reason: Reason,
}

/// Why an address is refused.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Reason {
    /// Not inside any `vip.pools` prefix.
    OutsidePools,
    /// Inside the cluster's Service CIDR.
    InServiceCidr { cidr: IpNet },
    /// A Node's address.
    NodeAddress { node: String },
    /// One of this switch's own addresses.
    OwnAddress,
    /// Not an IP address.
    Unparsable,
    /// VIP:port/protocol already served for an older Service.
    Conflict {
        port: u16,
        protocol: Protocol,
        winner: ObjectKey,
    },
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::OutsidePools => write!(f, "not inside any of the switch's address pools"),
            Reason::InServiceCidr { cidr } => {
                write!(
                    f,
                    "inside the cluster's Service CIDR {cidr} (CVE-2020-8554)"
                )
            }
            Reason::NodeAddress { node } => write!(f, "the address of Node {node}"),
            Reason::OwnAddress => write!(f, "one of the switch's own addresses"),
            Reason::Unparsable => write!(f, "not an IP address"),
            Reason::Conflict {
                port,
                protocol,
                winner,
            } => write!(
                f,
                "port {port}/{} is already served on this address for {winner} (older)",
                format!("{protocol:?}").to_lowercase()
            ),
        }
    }
}

impl Refusal {
    /// The operator's sentence.
    pub fn message(&self) -> String {
        format!("{} refused: {}", self.address, self.reason)
    }
}

/// Does the Service opt in, given the selector and its annotation?
fn selected(svc: &Service, selector: &[(String, String)]) -> bool {
    if svc
        .annotations
        .get(ANNOUNCE_ANNOTATION)
        .is_some_and(|v| v.eq_ignore_ascii_case("false"))
    {
        return false;
    }
    selector
        .iter()
        .all(|(k, v)| svc.labels.get(k).is_some_and(|l| l == v))
}

/// Why `addr` may not be served, if it may not.
fn check_address(
    addr: IpAddr,
    cfg: &Config,
    node_addrs: &BTreeMap<IpAddr, String>,
    me: &NodeId,
) -> Option<Reason> {
    if let Some(k) = &cfg.kubernetes {
        if let Some(c) = k.service_cidrs.iter().find(|c| c.contains(&addr)) {
            return Some(Reason::InServiceCidr { cidr: *c });
        }
    }
    if let Some(node) = node_addrs.get(&addr) {
        return Some(Reason::NodeAddress { node: node.clone() });
    }
    if me.own_addresses.contains(&addr) {
        return Some(Reason::OwnAddress);
    }
    if !cfg.vip.pools.iter().any(|p| p.contains(&addr)) {
        return Some(Reason::OutsidePools);
    }
    None
}

/// The endpoints of one Service port, for one address family, as kube-proxy picks them:
/// the ready ones, or, if none is ready, the serving-terminating ones.
fn destinations(
    snap: &ClusterSnapshot,
    svc: &Service,
    port_name: &str,
    protocol: Protocol,
    v4: bool,
) -> Vec<Destination> {
    let mut ready = BTreeSet::new();
    let mut terminating = BTreeSet::new();
    for slice in snap.slices_of(&svc.key) {
        let Some(port) = slice
            .ports
            .iter()
            .find(|p| p.name == port_name && p.protocol == protocol)
        else {
            continue;
        };
        for e in &slice.endpoints {
            for a in e.addresses.iter().filter(|a| a.is_ipv4() == v4) {
                let d = |state| Destination {
                    address: *a,
                    port: port.port,
                    state,
                };
                if is_ready(e) {
                    ready.insert(d(DestState::Ready));
                } else if e.serving && e.terminating {
                    terminating.insert(d(DestState::Terminating));
                }
            }
        }
    }
    if ready.is_empty() {
        terminating.into_iter().collect()
    } else {
        ready.into_iter().collect()
    }
}

fn is_ready(e: &Endpoint) -> bool {
    e.ready && !e.terminating
}

/// Computes what this switch should serve. Pure and deterministic.
pub fn compute(snap: &ClusterSnapshot, cfg: &Config, me: &NodeId) -> DesiredState {
    let selector = cfg
        .vip
        .service_selector
        .as_deref()
        .and_then(crate::config::validate::parse_selector)
        .unwrap_or_default();
    let node_addrs: BTreeMap<IpAddr, String> = snap
        .nodes
        .values()
        .flat_map(|n| n.addresses.iter().map(|a| (*a, n.name.clone())))
        .collect();

    // Oldest first, then namespace/name: the order in which claims win.
    let mut services: Vec<&Service> = snap
        .services
        .values()
        .filter(|s| selected(s, &selector))
        .collect();
    services.sort_by(|a, b| (a.created, &a.key).cmp(&(b.created, &b.key)));

    let mut out = DesiredState::default();
    for svc in services {
        for bad in &svc.unparsable_ips {
            out.refusals.push(Refusal {
                service: svc.key.clone(),
                address: bad.clone(),
                reason: Reason::Unparsable,
            });
        }
        let addresses: BTreeSet<IpAddr> = svc
            .external_ips
            .iter()
            .chain(if svc.type_ == "LoadBalancer" {
                svc.load_balancer_ips.iter()
            } else {
                [].iter()
            })
            .copied()
            .collect();
        for addr in addresses {
            if let Some(reason) = check_address(addr, cfg, &node_addrs, me) {
                out.refusals.push(Refusal {
                    service: svc.key.clone(),
                    address: addr.to_string(),
                    reason,
                });
                continue;
            }
            let mut served_any = false;
            for port in &svc.ports {
                let key = VsKey {
                    vip: addr,
                    port: port.port,
                    protocol: port.protocol,
                };
                if let Some(existing) = out.virtual_services.get(&key) {
                    if existing.service != svc.key {
                        out.refusals.push(Refusal {
                            service: svc.key.clone(),
                            address: addr.to_string(),
                            reason: Reason::Conflict {
                                port: port.port,
                                protocol: port.protocol,
                                winner: existing.service.clone(),
                            },
                        });
                    }
                    continue;
                }
                served_any = true;
                out.virtual_services.insert(
                    key,
                    VirtualService {
                        service: svc.key.clone(),
                        port_name: port.name.clone(),
                        destinations: destinations(
                            snap,
                            svc,
                            &port.name,
                            port.protocol,
                            addr.is_ipv4(),
                        ),
                        persistence: svc.client_ip_affinity,
                        external_traffic_local: svc.external_traffic_local,
                    },
                );
            }
            if served_any {
                out.vips
                    .entry(addr)
                    .or_insert_with(|| Vip {
                        address: addr,
                        services: BTreeSet::new(),
                        ready_endpoints: 0,
                        announceable: false,
                    })
                    .services
                    .insert(svc.key.clone());
            }
        }
    }
    for (key, vs) in &out.virtual_services {
        if let Some(vip) = out.vips.get_mut(&key.vip) {
            vip.ready_endpoints += vs
                .destinations
                .iter()
                .filter(|d| d.state == DestState::Ready)
                .count();
        }
    }
    for vip in out.vips.values_mut() {
        vip.announceable = match cfg.vip.announce {
            AnnouncePolicy::Always => true,
            AnnouncePolicy::ReadyEndpoints => vip.ready_endpoints > 0,
        };
        if vip.announceable {
            out.announcements.insert(IpNet::from(vip.address));
        }
    }
    out.refusals.sort();
    out.refusals.dedup();
    out
}
