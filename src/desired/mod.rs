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
//!
//! How it is computed, in two steps that make incremental updates possible:
//! 1. per Service, on its own: is it selected, which of its addresses pass the rules
//!    (`Claims`, refusals that concern that Service alone);
//! 2. per VIP, among the Services that claim it in rank order: which Service wins each
//!    port, the destinations, readiness (`resolve_vip`, conflict refusals).
//!
//! Nothing about a VIP depends on Services that do not claim it, so the daemon keeps an
//! [`Engine`] that recomputes only the Services that changed and the VIPs they touch; with
//! 10 000 Services one change costs microseconds instead of a full pass. [`compute`] is the
//! same engine run once from nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use imbl::{OrdMap, OrdSet};
use ipnet::IpNet;
use serde::Serialize;

use crate::config::{AnnouncePolicy, Config};
use crate::model::cluster::{ClusterSnapshot, Endpoint, ObjectKey, Protocol, Service};
pub use crate::model::dataplane::{DestState, Destination, VirtualService, VsKey};
pub use crate::model::route::Communities;

/// Annotation that opts a Service out (`"false"`).
pub const ANNOUNCE_ANNOTATION: &str = "kube-gw.io/announce";

/// Annotation with BGP communities for a Service's addresses: standard (`ASN:VALUE`), large
/// (`ASN:DATA1:DATA2`) or well-known by name (`no-export`, `no-advertise`,
/// `no-export-subconfed`, `no-peer`), separated by commas or spaces.
pub const COMMUNITIES_ANNOTATION: &str = "kube-gw.io/bgp-communities";

/// Parses the communities annotation; returns what it gives and each refused token with
/// why. Reserved standard communities (0:x, 65535:x) are refused except the four
/// well-known ones (by name): a Service must not set GRACEFUL_SHUTDOWN or BLACKHOLE.
pub fn parse_communities(text: &str) -> (Communities, Vec<(String, String)>) {
    let mut out = Communities::default();
    let mut refused = Vec::new();
    for token in text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
    {
        let named = match token.to_ascii_lowercase().as_str() {
            "no-export" => Some(0xFFFF_FF01),
            "no-advertise" => Some(0xFFFF_FF02),
            "no-export-subconfed" => Some(0xFFFF_FF03),
            "no-peer" => Some(0xFFFF_FF04),
            _ => None,
        };
        if let Some(c) = named {
            out.standard.insert(c);
        } else if let Some(c) = crate::config::parse_community(token) {
            if c >> 16 == 0 || c >> 16 == 0xFFFF {
                refused.push((
                    token.to_string(),
                    "reserved (RFC 1997); use ASN:VALUE with your own ASN, or a well-known one by name (no-export, no-advertise, no-peer)".to_string(),
                ));
            } else {
                out.standard.insert(c);
            }
        } else if let Some(c) = crate::config::parse_large_community(token) {
            out.large.insert(c);
        } else {
            refused.push((
                token.to_string(),
                "not a community; write ASN:VALUE (each 0 to 65535), ASN:DATA1:DATA2, or no-export"
                    .to_string(),
            ));
        }
    }
    (out, refused)
}

/// The communities a Service asks for (nothing if it does not).
fn service_communities(svc: &Service) -> (Communities, Vec<(String, String)>) {
    svc.annotations
        .get(COMMUNITIES_ANNOTATION)
        .map(|t| parse_communities(t))
        .unwrap_or_default()
}

/// Who "this switch" is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeId {
    pub name: String,
    /// Addresses configured on the switch itself, not counting kube-gw's VIPs.
    pub own_addresses: BTreeSet<IpAddr>,
}

/// What this switch should serve.
///
/// Persistent maps (`imbl`): cloning is O(1) and [`imbl::OrdMap::diff`] between two versions
/// costs the size of the change, which is how consumers find what changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DesiredState {
    pub vips: OrdMap<IpAddr, Vip>,
    pub virtual_services: OrdMap<VsKey, VirtualService>,
    pub announcements: OrdSet<IpNet>,
    pub refusals: OrdSet<Refusal>,
}

/// One service address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Vip {
    pub address: IpAddr,
    /// Services served on it (at least one port each), sorted. A sorted `Vec`, not a set:
    /// nearly always one Service, and a set's first node costs ten times its element.
    pub services: Vec<ObjectKey>,
    /// Ready endpoints over all its virtual services.
    pub ready_endpoints: usize,
    /// May be announced (policy and readiness).
    pub announceable: bool,
    /// Communities its routes carry (from the Services' `kube-gw.io/bgp-communities`).
    #[serde(skip_serializing_if = "Communities::is_empty")]
    pub communities: Communities,
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
    /// A token of the `kube-gw.io/bgp-communities` annotation (the address field holds it).
    Community { why: String },
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
            Reason::Community { why } => {
                write!(f, "in annotation {COMMUNITIES_ANNOTATION}: {why}")
            }
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

impl Reason {
    /// A short name for metrics labels (the serialized `kind`).
    pub fn kind(&self) -> &'static str {
        match self {
            Reason::OutsidePools => "outside-pools",
            Reason::InServiceCidr { .. } => "in-service-cidr",
            Reason::NodeAddress { .. } => "node-address",
            Reason::OwnAddress => "own-address",
            Reason::Unparsable => "unparsable",
            Reason::Conflict { .. } => "conflict",
            Reason::Community { .. } => "community",
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
pub(crate) fn selected(svc: &Service, selector: &[(String, String)]) -> bool {
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
    if !cfg.vip.covers(&addr) {
        return Some(Reason::OutsidePools);
    }
    None
}

/// The endpoints of one Service port, for one address family, as kube-proxy picks them:
/// the ready ones, or, if none is ready, the serving-terminating ones. With `tunnel`
/// forwarding (`tunnel_port`: the Service's port), their nodes instead: one destination
/// per node at its first InternalIP of the family, the Service's port, weighted by its
/// endpoints; an endpoint whose node is unknown or has no such address is left out.
fn destinations(
    snap: &ClusterSnapshot,
    svc: &Service,
    (port_name, protocol): (&str, Protocol),
    v4: bool,
    tunnel_port: Option<u16>,
) -> Vec<Destination> {
    let endpoints = endpoints(snap, svc, port_name, protocol, v4);
    let Some(port) = tunnel_port else {
        return endpoints;
    };
    let mut per_node: BTreeMap<IpAddr, Destination> = BTreeMap::new();
    for (d, node) in endpoints.iter().zip(endpoint_nodes(snap, svc, &endpoints)) {
        let Some(address) = node
            .and_then(|n| snap.nodes.get(n.as_str()))
            .and_then(|n| n.addresses.iter().find(|a| a.is_ipv4() == v4))
        else {
            continue;
        };
        per_node
            .entry(*address)
            .and_modify(|n| n.weight += 1)
            .or_insert(Destination {
                address: *address,
                port,
                state: d.state,
                weight: 1,
            });
    }
    per_node.into_values().collect()
}

/// The node of each destination (by endpoint address; the first slice that names it).
fn endpoint_nodes(
    snap: &ClusterSnapshot,
    svc: &Service,
    dests: &[Destination],
) -> Vec<Option<String>> {
    let mut node_of: BTreeMap<IpAddr, String> = BTreeMap::new();
    for slice in snap.slices_of(&svc.key) {
        for e in &slice.endpoints {
            if let Some(n) = &e.node_name {
                for a in &e.addresses {
                    node_of.entry(*a).or_insert_with(|| n.clone());
                }
            }
        }
    }
    dests
        .iter()
        .map(|d| node_of.get(&d.address).cloned())
        .collect()
}

/// The endpoints of one Service port (by name and protocol) for one address family: the
/// ready ones, or, if none is ready, the serving-terminating ones (as kube-proxy picks them;
/// the gateway reads them the same way).
pub fn endpoints(
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
                    weight: 1,
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
    let mut engine = Engine::default();
    engine.update(snap, cfg, me);
    engine.state
}

/// The inputs that apply to every Service, derived once per computation.
struct Context<'a> {
    cfg: &'a Config,
    me: &'a NodeId,
    selector: Vec<(String, String)>,
    node_addrs: BTreeMap<IpAddr, String>,
}

impl<'a> Context<'a> {
    fn new(snap: &ClusterSnapshot, cfg: &'a Config, me: &'a NodeId) -> Self {
        Self {
            cfg,
            me,
            selector: cfg
                .vip
                .service_selector
                .as_deref()
                .and_then(crate::config::validate::parse_selector)
                .unwrap_or_default(),
            node_addrs: snap
                .nodes
                .values()
                .flat_map(|n| n.addresses.iter().map(|a| (*a, n.name.clone())))
                .collect(),
        }
    }
}

/// Rank of a claim: oldest first, then namespace/name.
type Rank = (i64, ObjectKey);

/// What one Service asks for, judged on its own (no other Service involved).
#[derive(Debug, Clone)]
struct Claims {
    rank: Rank,
    /// Addresses that pass the rules, sorted.
    addresses: Vec<IpAddr>,
    /// Addresses that do not, with the reason.
    refusals: BTreeSet<Refusal>,
}

fn claims(svc: &Service, ctx: &Context<'_>) -> Option<Claims> {
    if !selected(svc, &ctx.selector) {
        return None;
    }
    let mut refusals = BTreeSet::new();
    for bad in &svc.unparsable_ips {
        refusals.insert(Refusal {
            service: svc.key.clone(),
            address: bad.clone(),
            reason: Reason::Unparsable,
        });
    }
    for (token, why) in service_communities(svc).1 {
        refusals.insert(Refusal {
            service: svc.key.clone(),
            address: token,
            reason: Reason::Community { why },
        });
    }
    let mut addresses = Vec::new();
    let lb: &[IpAddr] = if svc.type_ == "LoadBalancer" {
        &svc.load_balancer_ips
    } else {
        &[]
    };
    for addr in svc.external_ips.iter().chain(lb).copied() {
        match check_address(addr, ctx.cfg, &ctx.node_addrs, ctx.me) {
            Some(reason) => {
                refusals.insert(Refusal {
                    service: svc.key.clone(),
                    address: addr.to_string(),
                    reason,
                });
            }
            None => addresses.push(addr),
        }
    }
    addresses.sort_unstable();
    addresses.dedup();
    // Kept for the Service's lifetime: no spare capacity (a first push reserves four).
    addresses.shrink_to_fit();
    Some(Claims {
        rank: (svc.created, svc.key.clone()),
        addresses,
        refusals,
    })
}

/// What one VIP contributes to the desired state.
#[derive(Debug, Default)]
struct VipOutcome {
    vip: Option<Vip>,
    virtual_services: Vec<(VsKey, VirtualService)>,
    /// Conflicts lost on this VIP.
    refusals: Vec<Refusal>,
}

/// Resolves one VIP among the Services that claim it (in rank order).
fn resolve_vip(
    addr: IpAddr,
    claimants: &[Rank],
    snap: &ClusterSnapshot,
    cfg: &Config,
) -> VipOutcome {
    let mut out = VipOutcome::default();
    let mut winners: BTreeMap<VsKey, usize> = BTreeMap::new();
    let mut services = Vec::new();
    let mut communities = Communities::default();
    for (_, key) in claimants {
        let Some(svc) = snap.services.get(key) else {
            continue;
        };
        let mut served_any = false;
        for port in &svc.ports {
            let vs_key = VsKey {
                vip: addr,
                port: port.port,
                protocol: port.protocol,
            };
            if let Some(&i) = winners.get(&vs_key) {
                let winner = &out.virtual_services[i].1.service;
                if *winner != svc.key {
                    out.refusals.push(Refusal {
                        service: svc.key.clone(),
                        address: addr.to_string(),
                        reason: Reason::Conflict {
                            port: port.port,
                            protocol: port.protocol,
                            winner: winner.clone(),
                        },
                    });
                }
                continue;
            }
            served_any = true;
            winners.insert(vs_key, out.virtual_services.len());
            out.virtual_services.push((
                vs_key,
                VirtualService {
                    service: svc.key.clone(),
                    port_name: port.name.clone(),
                    destinations: destinations(
                        snap,
                        svc,
                        (&port.name, port.protocol),
                        addr.is_ipv4(),
                        (cfg.ipvs.forwarding == crate::config::Forwarding::Tunnel)
                            .then_some(port.port),
                    ),
                    persistence: svc.client_ip_affinity,
                    external_traffic_local: svc.external_traffic_local,
                    // As kube-proxy: the ranges apply to the load-balancer addresses.
                    source_ranges: if svc.type_ == "LoadBalancer"
                        && svc.load_balancer_ips.contains(&addr)
                    {
                        svc.lb.source_ranges.clone()
                    } else {
                        Vec::new()
                    },
                },
            ));
        }
        if served_any {
            services.push(svc.key.clone());
            communities.extend(service_communities(svc).0);
        }
    }
    if !services.is_empty() {
        services.sort_unstable();
        services.dedup();
        services.shrink_to_fit();
        let ready_endpoints = out
            .virtual_services
            .iter()
            .flat_map(|(_, vs)| &vs.destinations)
            .filter(|d| d.state == DestState::Ready)
            .count();
        out.vip = Some(Vip {
            address: addr,
            services,
            ready_endpoints,
            announceable: match cfg.vip.announce {
                AnnouncePolicy::Always => true,
                AnnouncePolicy::ReadyEndpoints => ready_endpoints > 0,
            },
            communities,
        });
    }
    out
}

/// What a VIP put into the state, so that it can be taken out again.
#[derive(Debug, Default)]
struct Placed {
    virtual_services: Vec<VsKey>,
    refusals: Vec<Refusal>,
}

/// The desired state kept up to date incrementally: a change to one Service (or its
/// EndpointSlices) recomputes that Service and the VIPs it claims or claimed, nothing else.
/// A change of the configuration, of the Nodes or of the switch's own addresses recomputes
/// everything. [`compute`] is a fresh engine's first update, so the golden tests pin both,
/// and a test checks that any sequence of updates ends where a fresh computation does.
#[derive(Debug, Default)]
pub struct Engine {
    state: DesiredState,
    /// The inputs of the last update (of the configuration, only what the computation
    /// reads: a change elsewhere, BGP say, keeps the state).
    last: Option<(ClusterSnapshot, ConfigInputs, NodeId)>,
    claims: BTreeMap<ObjectKey, Claims>,
    /// Each VIP's claimants, in rank order (a sorted `Vec`: nearly always one).
    by_vip: BTreeMap<IpAddr, Vec<Rank>>,
    placed: BTreeMap<IpAddr, Placed>,
}

/// The parts of the configuration the desired state depends on.
#[derive(Debug, Clone, PartialEq)]
struct ConfigInputs {
    service_cidrs: Option<Vec<IpNet>>,
    vip: crate::config::VipConfig,
    forwarding: crate::config::Forwarding,
}

impl ConfigInputs {
    fn of(cfg: &Config) -> Self {
        Self {
            service_cidrs: cfg.kubernetes.as_ref().map(|k| k.service_cidrs.clone()),
            vip: cfg.vip.clone(),
            forwarding: cfg.ipvs.forwarding,
        }
    }
}

impl Engine {
    /// The current desired state (an O(1) clone).
    pub fn state(&self) -> &DesiredState {
        &self.state
    }

    /// Brings the state up to date with new inputs; returns the number of Services
    /// recomputed.
    pub fn update(&mut self, snap: &ClusterSnapshot, cfg: &Config, me: &NodeId) -> usize {
        let inputs = ConfigInputs::of(cfg);
        let dirty: BTreeSet<ObjectKey> = match &self.last {
            Some((s, c, m)) if *c == inputs && m == me && s.nodes == snap.nodes => {
                s.changed_services(snap)
            }
            _ => {
                *self = Self::default();
                snap.services.keys().cloned().collect()
            }
        };
        let ctx = Context::new(snap, cfg, me);
        let mut dirty_vips = BTreeSet::new();
        for key in &dirty {
            if let Some(old) = self.claims.remove(key) {
                for a in &old.addresses {
                    if let Some(set) = self.by_vip.get_mut(a) {
                        if let Ok(i) = set.binary_search(&old.rank) {
                            set.remove(i);
                        }
                        if set.is_empty() {
                            self.by_vip.remove(a);
                        }
                    }
                    dirty_vips.insert(*a);
                }
                for r in &old.refusals {
                    self.state.refusals.remove(r);
                }
            }
            let Some(c) = snap.services.get(key).and_then(|s| claims(s, &ctx)) else {
                continue;
            };
            for a in &c.addresses {
                let set = self
                    .by_vip
                    .entry(*a)
                    .or_insert_with(|| Vec::with_capacity(1));
                if let Err(i) = set.binary_search(&c.rank) {
                    set.insert(i, c.rank.clone());
                }
                dirty_vips.insert(*a);
            }
            for r in &c.refusals {
                self.state.refusals.insert(r.clone());
            }
            self.claims.insert(key.clone(), c);
        }
        for addr in dirty_vips {
            if let Some(old) = self.placed.remove(&addr) {
                for k in &old.virtual_services {
                    self.state.virtual_services.remove(k);
                }
                for r in &old.refusals {
                    self.state.refusals.remove(r);
                }
                self.state.vips.remove(&addr);
                self.state.announcements.remove(&IpNet::from(addr));
            }
            let Some(claimants) = self.by_vip.get(&addr) else {
                continue;
            };
            let o = resolve_vip(addr, claimants, snap, cfg);
            let mut placed = Placed {
                virtual_services: Vec::with_capacity(o.virtual_services.len()),
                refusals: Vec::new(),
            };
            for (k, vs) in o.virtual_services {
                placed.virtual_services.push(k);
                self.state.virtual_services.insert(k, vs);
            }
            for r in o.refusals {
                self.state.refusals.insert(r.clone());
                placed.refusals.push(r);
            }
            if let Some(vip) = o.vip {
                if vip.announceable {
                    self.state.announcements.insert(IpNet::from(addr));
                }
                self.state.vips.insert(addr, vip);
            }
            self.placed.insert(addr, placed);
        }
        self.last = Some((snap.clone(), inputs, me.clone()));
        dirty.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_annotation_read_is_one_the_conversion_keeps() {
        for a in [ANNOUNCE_ANNOTATION, COMMUNITIES_ANNOTATION] {
            assert!(
                a.starts_with(crate::model::cluster::ANNOTATION_PREFIX),
                "{a}"
            );
        }
    }

    #[test]
    fn the_communities_annotation_takes_standard_large_and_well_known_names() {
        let (c, refused) = parse_communities("65010:300, no-export\t65010:7:8  NO-PEER");
        assert_eq!(
            c.standard.into_iter().collect::<Vec<_>>(),
            vec![(65010 << 16) | 300, 0xFFFF_FF01, 0xFFFF_FF04]
        );
        assert_eq!(c.large.into_iter().collect::<Vec<_>>(), vec![(65010, 7, 8)]);
        assert!(refused.is_empty(), "{refused:?}");
    }

    #[test]
    fn reserved_and_unreadable_communities_are_refused_with_what_to_write() {
        let (c, refused) = parse_communities("65535:0 65535:666 0:5 65010:x 1:2:3:4 65010:1");
        assert_eq!(c.standard.len(), 1, "only 65010:1 is used");
        let tokens: Vec<&str> = refused.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            tokens,
            ["65535:0", "65535:666", "0:5", "65010:x", "1:2:3:4"]
        );
        assert!(refused[0].1.contains("reserved"));
        assert!(refused[3].1.contains("ASN:VALUE"));
    }
}
