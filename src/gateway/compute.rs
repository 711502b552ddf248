//! Pure: (Gateway API objects, Services and EndpointSlices, pools, the L4 pairs) → what the
//! gateway serves ([`GatewayState`]) and the statuses of every object kube-gw owns.
//!
//! Gateway API semantics implemented here, in one place:
//! - GatewayClasses whose `controllerName` is kube-gw's are Accepted; their Gateways are ours.
//! - A Gateway's addresses come from `spec.addresses` (type `IPAddress`) and must lie in the
//!   configured VIP pools. A Gateway without `spec.addresses` gets one address from
//!   `[gateway] address-pools`: the one in its `status.addresses` if that is still free (so an
//!   address, once written, stays), else the lowest free one, older Gateways first. Every
//!   switch computes the same allocation from the same objects; the status writer records it.
//!   Without an address the Gateway is not Programmed (`AddressNotAssigned`).
//! - Listeners: HTTP, HTTPS (Terminate, `certificateRefs` to `kubernetes.io/tls` Secrets, across
//!   namespaces only with a ReferenceGrant) and TLS (Passthrough). On one port, listeners of
//!   different protocols conflict (`ProtocolConflict`), as do two with the same hostname
//!   (`HostnameConflict`). A VIP:port that IPVS serves for a plain Service, or that an older
//!   Gateway holds, is `Conflicted` with reason `PortUnavailable` and never programmed here:
//!   IPVS takes packets before the socket lookup, so both cannot serve it.
//! - Routes attach by `parentRefs` (section name, port), the listener's `allowedRoutes`
//!   (namespaces `Same`/`All`/`Selector`, kinds) and hostname intersection; backendRefs to
//!   Services (across namespaces only with a ReferenceGrant) resolve to the endpoints the L4 path
//!   would use.
//! - Determinism: everything is ordered by sorted maps, ties by creation time then name.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::backend_tls::ClientCert;
use super::model_override::{ModelOverride, DEFAULT_MAX_BODY, DEFAULT_PATHS};
use super::plan::{
    Allocation, Backend, CertRef, Certificates, Condition, Filter, GatewayState, GatewayStatus,
    HostPattern, ListenerStatus, Match, ParentStatus, PathMatch, PortPlan, RouteStatus, RouteTable,
    Rule, SniRoute, StrMatch, ValueMatch,
};
use super::policy::Policies;
use super::steer::Pair;
use crate::model::gateway::{
    self as api, BackendRef, GatewaySnapshot, GatewaySpec, Object, ParentRef, GROUP,
};
use crate::model::{ClusterSnapshot, ObjectKey, Protocol};

/// What `compute` reads.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    pub gateway: &'a GatewaySnapshot,
    pub cluster: &'a ClusterSnapshot,
    /// The `controllerName` kube-gw answers to.
    pub controller: &'a str,
    pub pools: &'a [IpNet],
    /// `[gateway] address-pools`: where Gateways without `spec.addresses` get theirs.
    pub address_pools: &'a [IpNet],
    /// TCP VIP:ports IPVS serves for plain Services, and the Service of each.
    pub l4: &'a BTreeMap<Pair, ObjectKey>,
    /// The addresses the previous computation allocated (its `GatewayState::allocations`).
    pub previous: &'a BTreeMap<ObjectKey, Allocation>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Http,
    Https,
    Passthrough,
}

impl Proto {
    fn route_kind(self) -> &'static str {
        match self {
            Self::Http | Self::Https => "HTTPRoute",
            Self::Passthrough => "TLSRoute",
        }
    }
}

/// One listener as computed.
#[derive(Debug)]
struct ListenerInfo {
    name: String,
    host: HostPattern,
    port: u16,
    proto: Option<Proto>,
    kinds: Vec<&'static str>,
    allowed_ns: AllowedNs,
    cert: Option<CertRef>,
    accepted: Option<Condition>,
    resolved: Option<Condition>,
    conflicted: Option<Condition>,
    attached: u32,
}

impl ListenerInfo {
    fn valid(&self) -> bool {
        self.proto.is_some()
            && self.accepted.is_none()
            && self.resolved.is_none()
            && self.conflicted.is_none()
    }
}

#[derive(Debug, Clone)]
enum AllowedNs {
    Same,
    All,
    Selector(api::LabelSelector),
}

/// A Gateway of ours, as computed.
#[derive(Debug)]
struct GatewayInfo {
    generation: i64,
    addresses: Vec<IpAddr>,
    address_problem: Option<(bool, &'static str, String)>,
    listeners: Vec<ListenerInfo>,
    /// `spec.tls.backend.clientCertificateRef`, when given: the certificate, or why not.
    client_cert: Option<Result<ClientCert, (&'static str, String)>>,
}

/// Computes the gateway's desired state and statuses. Pure and deterministic.
pub fn compute(inp: &Inputs<'_>) -> GatewayState {
    let mut st = GatewayState {
        synced: true,
        ..GatewayState::default()
    };
    let ours: BTreeSet<&str> = inp
        .gateway
        .classes
        .iter()
        .filter(|(_, c)| c.spec.controller_name == inp.controller)
        .map(|(n, _)| n.as_str())
        .collect();
    for name in &ours {
        if let Some(c) = inp.gateway.classes.get(*name) {
            st.status.classes.insert(
                (*name).to_string(),
                (
                    c.generation,
                    vec![
                        Condition::new("Accepted", true, "Accepted", "handled by kube-gw"),
                        Condition::new(
                            "SupportedVersion",
                            true,
                            "SupportedVersion",
                            "Gateway API v1 (standard channel)",
                        ),
                    ],
                ),
            );
        }
    }
    // Older Gateways first: they keep a contested VIP:port.
    let mut gws: Vec<&Object<GatewaySpec>> = inp
        .gateway
        .gateways
        .values()
        .filter(|g| ours.contains(g.spec.gateway_class_name.as_str()))
        .collect();
    gws.sort_by(|a, b| a.created.cmp(&b.created).then(a.key.cmp(&b.key)));
    st.allocations = allocate(inp, &gws);
    let mut claimed: BTreeMap<Pair, ObjectKey> = BTreeMap::new();
    let mut infos: BTreeMap<ObjectKey, GatewayInfo> = BTreeMap::new();
    for g in gws {
        let allocated = st.allocations.get(&g.key).map(|a| a.ip);
        let info = gateway_info(inp, g, allocated, &mut claimed);
        infos.insert(g.key.clone(), info);
    }

    let policies = Policies::new(inp.gateway);
    let mut tables: BTreeMap<Pair, RouteTable> = BTreeMap::new();
    let mut sni: BTreeMap<Pair, Vec<SniRoute>> = BTreeMap::new();
    // HTTPRoutes.
    for r in inp.gateway.http_routes.values() {
        let compiled = compile_http(inp, &policies, r);
        let parents = attach(
            inp,
            &mut infos,
            &r.key,
            &r.spec.parent_refs,
            &r.spec.hostnames,
            "HTTPRoute",
            &compiled.problem,
            &compiled.resolved,
            |gw, l, hosts| {
                for addr in &gw.addresses {
                    let pair = Pair {
                        addr: *addr,
                        port: l.port,
                    };
                    let table = tables.entry(pair).or_default();
                    for h in hosts {
                        for rule in &compiled.rules {
                            table.push_via(l.host.clone(), h.clone(), rule.clone());
                        }
                    }
                }
            },
        );
        if !parents.is_empty() {
            st.status.http_routes.insert(
                r.key.clone(),
                RouteStatus {
                    generation: r.generation,
                    parents,
                },
            );
        }
    }
    // TLSRoutes.
    for r in inp.gateway.tls_routes.values() {
        let mut backends = Vec::new();
        let mut resolved = None;
        for rule in &r.spec.rules {
            for b in &rule.backend_refs {
                // Passthrough: the client's TLS goes through; no policy applies.
                let (backend, problem) =
                    resolve_backend(inp, None, &r.key.namespace, "TLSRoute", b);
                resolved = resolved.or(problem);
                backends.push(backend);
            }
        }
        let parents = attach(
            inp,
            &mut infos,
            &r.key,
            &r.spec.parent_refs,
            &r.spec.hostnames,
            "TLSRoute",
            &None,
            &resolved,
            |gw, l, hosts| {
                for addr in &gw.addresses {
                    let pair = Pair {
                        addr: *addr,
                        port: l.port,
                    };
                    for h in hosts {
                        sni.entry(pair).or_default().push(SniRoute {
                            host: h.clone(),
                            route: r.key.clone(),
                            backends: backends.clone(),
                        });
                    }
                }
            },
        );
        if !parents.is_empty() {
            st.status.tls_routes.insert(
                r.key.clone(),
                RouteStatus {
                    generation: r.generation,
                    parents,
                },
            );
        }
    }

    // BackendTLSPolicies: their ancestors are the Gateways of the HTTPRoutes that use a
    // Service they target.
    let mut ancestors: BTreeMap<ObjectKey, BTreeSet<ParentRef>> = BTreeMap::new();
    for r in inp.gateway.http_routes.values() {
        let Some(rs) = st.status.http_routes.get(&r.key) else {
            continue;
        };
        for b in r.spec.rules.iter().flat_map(|rule| &rule.backend_refs) {
            if !b.group.as_deref().unwrap_or("").is_empty()
                || b.kind.as_deref().unwrap_or("Service") != "Service"
            {
                continue;
            }
            let svc = ObjectKey::new(b.namespace.as_deref().unwrap_or(&r.key.namespace), &b.name);
            for policy in policies.targeting(&svc) {
                for p in &rs.parents {
                    ancestors
                        .entry(policy.clone())
                        .or_default()
                        .insert(ParentRef {
                            group: Some(GROUP.to_string()),
                            kind: Some("Gateway".to_string()),
                            namespace: Some(
                                p.parent
                                    .namespace
                                    .clone()
                                    .unwrap_or_else(|| r.key.namespace.to_string()),
                            ),
                            name: p.parent.name.clone(),
                            section_name: None,
                            port: None,
                        });
                }
            }
        }
    }
    for (key, generation, conditions) in policies.conditions() {
        st.status.backend_tls_policies.insert(
            key.clone(),
            RouteStatus {
                generation,
                parents: ancestors
                    .remove(key)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|parent| ParentStatus {
                        parent,
                        conditions: conditions.clone(),
                    })
                    .collect(),
            },
        );
    }

    // Ports, VIPs and Gateway statuses.
    for (key, gw) in &infos {
        let programmed_listeners = gw.listeners.iter().filter(|l| l.valid()).count();
        let programmed = gw.address_problem.is_none() && programmed_listeners > 0;
        if gw.address_problem.is_none() {
            for l in gw.listeners.iter().filter(|l| l.valid()) {
                for addr in &gw.addresses {
                    let pair = Pair {
                        addr: *addr,
                        port: l.port,
                    };
                    match l.proto {
                        Some(Proto::Passthrough) => {
                            let routes = sni.get(&pair).cloned().unwrap_or_default();
                            st.ports.insert(pair, PortPlan::Passthrough { routes });
                        }
                        Some(p @ (Proto::Http | Proto::Https)) => {
                            let plan = st.ports.entry(pair).or_insert_with(|| PortPlan::Http {
                                routes: tables.get(&pair).cloned().unwrap_or_default(),
                                tls: (p == Proto::Https).then(Certificates::default),
                            });
                            if let PortPlan::Http { routes, .. } = plan {
                                routes.listen(l.host.clone());
                                routes.client_cert = gw
                                    .client_cert
                                    .as_ref()
                                    .and_then(|c| c.as_ref().ok())
                                    .cloned();
                            }
                            if let (
                                PortPlan::Http {
                                    tls: Some(certs), ..
                                },
                                Some(c),
                            ) = (plan, &l.cert)
                            {
                                certs.by_host.push((l.host.clone(), c.clone()));
                            }
                        }
                        None => {}
                    }
                }
            }
            for addr in &gw.addresses {
                let a = st.vips.entry(*addr).or_insert(false);
                *a |= programmed;
            }
        }
        st.status
            .gateways
            .insert(key.clone(), gateway_status(gw, programmed));
    }
    for plan in st.ports.values_mut() {
        match plan {
            PortPlan::Http { routes, tls } => {
                routes.finish();
                if let Some(t) = tls {
                    t.by_host.sort_by_key(|(h, _)| std::cmp::Reverse(h.rank()));
                }
            }
            PortPlan::Passthrough { routes } => {
                routes.sort_by_key(|r| std::cmp::Reverse(r.host.rank()))
            }
        }
    }
    st
}

fn gateway_status(gw: &GatewayInfo, programmed: bool) -> GatewayStatus {
    let valid = gw.listeners.iter().filter(|l| l.valid()).count();
    let mut conditions = Vec::new();
    match &gw.address_problem {
        Some((false, reason, msg)) => {
            conditions.push(Condition::new("Accepted", false, reason, msg.clone()))
        }
        _ if valid == 0 && !gw.listeners.is_empty() => conditions.push(Condition::new(
            "Accepted",
            false,
            "ListenersNotValid",
            "no listener is valid",
        )),
        _ if valid < gw.listeners.len() => conditions.push(Condition::new(
            "Accepted",
            true,
            "ListenersNotValid",
            "some listeners are not valid; see their conditions",
        )),
        _ => conditions.push(Condition::new(
            "Accepted",
            true,
            "Accepted",
            "accepted by kube-gw",
        )),
    }
    match &gw.client_cert {
        None => {}
        Some(Ok(c)) => conditions.push(Condition::new(
            "ResolvedRefs",
            true,
            "ResolvedRefs",
            format!("client certificate for backends from Secret {}", c.secret),
        )),
        Some(Err((reason, msg))) => {
            conditions.push(Condition::new("ResolvedRefs", false, reason, msg.clone()))
        }
    }
    conditions.push(match &gw.address_problem {
        Some((_, reason, msg)) => Condition::new("Programmed", false, reason, msg.clone()),
        None if programmed => Condition::new(
            "Programmed",
            true,
            "Programmed",
            "served by every kube-gw switch",
        ),
        None => Condition::new(
            "Programmed",
            false,
            "Invalid",
            "no listener can be programmed",
        ),
    });
    GatewayStatus {
        generation: gw.generation,
        addresses: if gw.address_problem.is_none() {
            gw.addresses.clone()
        } else {
            Vec::new()
        },
        conditions,
        listeners: gw
            .listeners
            .iter()
            .map(|l| {
                let mut c = vec![l
                    .accepted
                    .clone()
                    .unwrap_or_else(|| Condition::new("Accepted", true, "Accepted", "accepted"))];
                c.push(l.conflicted.clone().unwrap_or_else(|| {
                    Condition::new("Conflicted", false, "NoConflicts", "no conflicts")
                }));
                c.push(l.resolved.clone().unwrap_or_else(|| {
                    Condition::new(
                        "ResolvedRefs",
                        true,
                        "ResolvedRefs",
                        "all references resolved",
                    )
                }));
                c.push(if l.valid() && gw.address_problem.is_none() {
                    Condition::new("Programmed", true, "Programmed", "serving")
                } else if l.valid() {
                    Condition::new(
                        "Programmed",
                        false,
                        "Pending",
                        "the Gateway has no usable address",
                    )
                } else {
                    Condition::new("Programmed", false, "Invalid", "see the other conditions")
                });
                ListenerStatus {
                    name: l.name.clone(),
                    supported_kinds: l.kinds.clone(),
                    attached_routes: l.attached,
                    conditions: c,
                }
            })
            .collect(),
    }
}

/// An address for each Gateway without `spec.addresses` (`gws` oldest first: an older
/// Gateway keeps a contested address), from the address pools; exhausted pools leave a
/// Gateway without one. Each Gateway first claims, if it is in the pools and still free:
///
/// - the address its status records, when that status changed since the previous
///   computation saw it: someone wrote it since (the status-writing switch, or an operator),
///   and every switch follows what the status says;
/// - otherwise the address the previous computation gave it. The status watch lags the
///   writes; taking the stale status it still shows would undo a newer allocation, which the
///   next status event undoes again (two Gateways swapping addresses every round, found by
///   the conformance suite under churn);
/// - with nothing remembered (after a restart), the address its status records.
///
/// The Gateways whose claim failed then get the lowest free addresses.
fn allocate(inp: &Inputs<'_>, gws: &[&Object<GatewaySpec>]) -> BTreeMap<ObjectKey, Allocation> {
    let mut taken: BTreeSet<IpAddr> = gws
        .iter()
        .flat_map(|g| &g.spec.addresses)
        .filter_map(|a| a.value.parse().ok())
        .collect();
    let in_pools = |ip: &IpAddr| inp.address_pools.iter().any(|p| p.contains(ip));
    let wanting: Vec<&&Object<GatewaySpec>> =
        gws.iter().filter(|g| g.spec.addresses.is_empty()).collect();
    let mut out = BTreeMap::new();
    for g in &wanting {
        let claim: &[IpAddr] = match inp.previous.get(&g.key) {
            Some(p) if p.seen == g.spec.assigned => std::slice::from_ref(&p.ip),
            _ => &g.spec.assigned,
        };
        if let Some(ip) = claim.iter().find(|ip| in_pools(ip) && !taken.contains(ip)) {
            taken.insert(*ip);
            out.insert(g.key.clone(), Allocation::new(*ip, g));
        }
    }
    for g in wanting {
        if out.contains_key(&g.key) {
            continue;
        }
        let free = inp
            .address_pools
            .iter()
            .find_map(|p| p.hosts().find(|ip| !taken.contains(ip)));
        if let Some(ip) = free {
            taken.insert(ip);
            out.insert(g.key.clone(), Allocation::new(ip, g));
        }
    }
    out
}

impl Allocation {
    fn new(ip: IpAddr, g: &Object<GatewaySpec>) -> Self {
        Self {
            ip,
            seen: g.spec.assigned.clone(),
        }
    }
}

fn gateway_info(
    inp: &Inputs<'_>,
    g: &Object<GatewaySpec>,
    allocated: Option<IpAddr>,
    claimed: &mut BTreeMap<Pair, ObjectKey>,
) -> GatewayInfo {
    let mut addresses: Vec<IpAddr> = allocated.into_iter().collect();
    let mut address_problem = None;
    for a in &g.spec.addresses {
        let ty = a.type_.as_deref().unwrap_or("IPAddress");
        if ty != "IPAddress" {
            address_problem = Some((
                false,
                "UnsupportedAddress",
                format!("address type {ty} is not supported: kube-gw serves IPAddress"),
            ));
            continue;
        }
        match a.value.parse::<IpAddr>() {
            Ok(ip) if inp.pools.iter().any(|p| p.contains(&ip)) => addresses.push(ip),
            Ok(ip) => {
                address_problem.get_or_insert((
                    true,
                    "AddressNotUsable",
                    format!("{ip} is outside kube-gw's VIP pools ([vip] pools)"),
                ));
            }
            Err(_) => {
                address_problem = Some((
                    false,
                    "UnsupportedAddress",
                    format!("{:?} is not an IP address", a.value),
                ));
            }
        }
    }
    addresses.sort();
    addresses.dedup();
    if address_problem.is_none() && addresses.is_empty() {
        address_problem = Some((
            true,
            "AddressNotAssigned",
            if inp.address_pools.is_empty() {
                "no address: set spec.addresses to an IPAddress in one of kube-gw's VIP pools, or configure [gateway] address-pools".to_string()
            } else {
                "no free address is left in [gateway] address-pools: free one, or widen the pools"
                    .to_string()
            },
        ));
    }
    let mut listeners: Vec<ListenerInfo> = g
        .spec
        .listeners
        .iter()
        .map(|l| listener_info(inp, g, l))
        .collect();
    // Conflicts among this Gateway's listeners on one port.
    let n = listeners.len();
    for i in 0..n {
        for j in 0..n {
            if i == j || listeners[i].port != listeners[j].port {
                continue;
            }
            let (a, b) = (listeners[i].proto, listeners[j].proto);
            let family = |p: Option<Proto>| match p {
                Some(Proto::Http) => 0,
                Some(Proto::Https) => 1,
                Some(Proto::Passthrough) => 2,
                None => 3,
            };
            if family(a) != family(b) {
                listeners[i].conflicted = Some(Condition::new(
                    "Conflicted",
                    true,
                    "ProtocolConflict",
                    format!(
                        "port {} is used by listeners of different protocols",
                        listeners[i].port
                    ),
                ));
            } else if listeners[i].host == listeners[j].host {
                listeners[i].conflicted = Some(Condition::new(
                    "Conflicted",
                    true,
                    "HostnameConflict",
                    format!(
                        "listener {} has the same port and hostname",
                        listeners[j].name
                    ),
                ));
            }
        }
    }
    // Pairs served by IPVS or an older Gateway.
    for l in &mut listeners {
        if l.conflicted.is_some() || l.proto.is_none() {
            continue;
        }
        for addr in &addresses {
            let pair = Pair {
                addr: *addr,
                port: l.port,
            };
            if let Some(svc) = inp.l4.get(&pair) {
                l.conflicted = Some(Condition::new("Conflicted", true, "PortUnavailable", format!("{pair}/TCP is an IPVS service of Service {svc}: a VIP:port is served by IPVS or by the gateway, never both")));
            } else if let Some(other) = claimed.get(&pair).filter(|o| **o != g.key) {
                l.conflicted = Some(Condition::new(
                    "Conflicted",
                    true,
                    "PortUnavailable",
                    format!("{pair} is served by the older Gateway {other}"),
                ));
            }
        }
    }
    if address_problem.is_none() {
        for l in listeners.iter().filter(|l| l.valid()) {
            for addr in &addresses {
                claimed
                    .entry(Pair {
                        addr: *addr,
                        port: l.port,
                    })
                    .or_insert_with(|| g.key.clone());
            }
        }
    }
    let client_cert = g
        .spec
        .tls
        .as_ref()
        .and_then(|t| t.backend.as_ref())
        .and_then(|b| b.client_certificate_ref.as_ref())
        .map(|r| {
            certificate(inp, &g.key.namespace, r)
                .map(|c| ClientCert::new(c.secret, c.key))
                .map_err(|(reason, msg)| {
                    let reason = if reason == "InvalidCertificateRef" {
                        "InvalidClientCertificateRef"
                    } else {
                        reason
                    };
                    (
                        reason,
                        format!("spec.tls.backend.clientCertificateRef: {msg}"),
                    )
                })
        });
    GatewayInfo {
        generation: g.generation,
        addresses,
        address_problem,
        listeners,
        client_cert,
    }
}

fn listener_info(inp: &Inputs<'_>, g: &Object<GatewaySpec>, l: &api::Listener) -> ListenerInfo {
    let mode = l
        .tls
        .as_ref()
        .and_then(|t| t.mode.as_deref())
        .unwrap_or("Terminate");
    let mut accepted = None;
    let proto = match (l.protocol.as_str(), mode) {
        ("HTTP", _) => Some(Proto::Http),
        ("HTTPS", "Terminate") => Some(Proto::Https),
        ("TLS", "Passthrough") => Some(Proto::Passthrough),
        // A protocol kube-gw serves, with a TLS mode it does not serve with it.
        (p @ ("HTTPS" | "TLS"), m) => {
            accepted = Some(Condition::new(
                "Accepted",
                false,
                "UnsupportedValue",
                format!(
                    "tls.mode {m} is not supported on a {p} listener: kube-gw serves HTTPS with Terminate and TLS with Passthrough"
                ),
            ));
            None
        }
        (p, m) => {
            accepted = Some(Condition::new(
                "Accepted",
                false,
                "UnsupportedProtocol",
                format!(
                    "kube-gw serves HTTP, HTTPS (Terminate) and TLS (Passthrough), not {p} ({m})"
                ),
            ));
            None
        }
    };
    let mut resolved = None;
    let mut kinds = Vec::new();
    let allowed = l.allowed_routes.clone().unwrap_or_default();
    if let Some(p) = proto {
        if allowed.kinds.is_empty() {
            kinds.push(p.route_kind());
        }
        for k in &allowed.kinds {
            let group_ok = k.group.as_deref().is_none_or(|g| g == GROUP);
            if group_ok && k.kind == p.route_kind() {
                if !kinds.contains(&p.route_kind()) {
                    kinds.push(p.route_kind());
                }
            } else {
                resolved = Some(Condition::new(
                    "ResolvedRefs",
                    false,
                    "InvalidRouteKinds",
                    format!(
                        "route kind {} is not supported on a {} listener",
                        k.kind, l.protocol
                    ),
                ));
            }
        }
    }
    let allowed_ns = match allowed.namespaces.as_ref().and_then(|n| n.from.as_deref()) {
        Some("All") => AllowedNs::All,
        Some("Selector") => AllowedNs::Selector(
            allowed
                .namespaces
                .as_ref()
                .and_then(|n| n.selector.clone())
                .unwrap_or_default(),
        ),
        _ => AllowedNs::Same,
    };
    let mut cert = None;
    if proto == Some(Proto::Https) {
        let refs = l
            .tls
            .as_ref()
            .map(|t| t.certificate_refs.as_slice())
            .unwrap_or_default();
        match refs.first() {
            None => {
                resolved = Some(Condition::new(
                    "ResolvedRefs",
                    false,
                    "InvalidCertificateRef",
                    "an HTTPS listener needs tls.certificateRefs",
                ))
            }
            Some(r) => match certificate(inp, &g.key.namespace, r) {
                Ok(c) => cert = Some(c),
                Err((reason, msg)) => {
                    resolved = Some(Condition::new("ResolvedRefs", false, reason, msg))
                }
            },
        }
    }
    ListenerInfo {
        name: l.name.clone(),
        host: HostPattern::parse(l.hostname.as_deref()),
        port: l.port,
        proto,
        kinds,
        allowed_ns,
        cert,
        accepted,
        resolved,
        conflicted: None,
        attached: 0,
    }
}

/// Is a reference from `(from_kind, from_ns)` to `(to_group, to_kind, to_ns, to_name)` allowed?
fn granted(
    inp: &Inputs<'_>,
    from_kind: &str,
    from_ns: &str,
    to_group: &str,
    to_kind: &str,
    to_ns: &str,
    to_name: &str,
) -> bool {
    from_ns == to_ns
        || inp.gateway.grants.values().any(|g| {
            &*g.key.namespace == to_ns
                && g.spec
                    .from
                    .iter()
                    .any(|f| f.group == GROUP && f.kind == from_kind && f.namespace == from_ns)
                && g.spec.to.iter().any(|t| {
                    t.group == to_group
                        && t.kind == to_kind
                        && t.name.as_deref().is_none_or(|n| n == to_name)
                })
        })
}

/// Why a reference across namespaces is refused.
fn not_granted(kind: &str, ns: &str, name: &str) -> String {
    format!("{kind} {ns}/{name} is in another namespace and no ReferenceGrant there allows it")
}

fn certificate(
    inp: &Inputs<'_>,
    gw_ns: &str,
    r: &api::ObjectRef,
) -> Result<CertRef, (&'static str, String)> {
    let group = r.group.as_deref().unwrap_or("");
    let kind = r.kind.as_deref().unwrap_or("Secret");
    if !group.is_empty() || kind != "Secret" {
        return Err((
            "InvalidCertificateRef",
            format!("certificateRefs must name Secrets, not {group}/{kind}"),
        ));
    }
    let ns = r.namespace.as_deref().unwrap_or(gw_ns);
    if !granted(inp, "Gateway", gw_ns, "", "Secret", ns, &r.name) {
        return Err(("RefNotPermitted", not_granted("Secret", ns, &r.name)));
    }
    let key = ObjectKey {
        namespace: ns.into(),
        name: r.name.as_str().into(),
    };
    let s = inp.gateway.secrets.get(&key).ok_or_else(|| {
        (
            "InvalidCertificateRef",
            format!("Secret {key} of type kubernetes.io/tls not found"),
        )
    })?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&s.cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            (
                "InvalidCertificateRef",
                format!("Secret {key}: tls.crt is not PEM certificates: {e}"),
            )
        })?;
    if chain.is_empty() {
        return Err((
            "InvalidCertificateRef",
            format!("Secret {key}: tls.crt holds no certificate"),
        ));
    }
    let private = PrivateKeyDer::from_pem_slice(&s.key_pem).map_err(|e| {
        (
            "InvalidCertificateRef",
            format!("Secret {key}: tls.key is not a PEM private key: {e}"),
        )
    })?;
    let provider = rustls::crypto::ring::default_provider();
    let certified =
        rustls::sign::CertifiedKey::from_der(chain, private, &provider).map_err(|e| {
            (
                "InvalidCertificateRef",
                format!("Secret {key}: the key does not fit the certificate: {e}"),
            )
        })?;
    Ok(CertRef {
        secret: key,
        key: Arc::new(certified),
    })
}

/// Resolves one backendRef; the second value is the route's ResolvedRefs problem, if any.
fn resolve_backend(
    inp: &Inputs<'_>,
    policies: Option<&Policies>,
    route_ns: &str,
    route_kind: &str,
    b: &BackendRef,
) -> (Backend, Option<Condition>) {
    let ns = b.namespace.as_deref().unwrap_or(route_ns);
    let port = b.port.unwrap_or(0);
    let mut backend = Backend {
        name: format!("{ns}/{}:{port}", b.name),
        weight: b.weight.unwrap_or(1),
        endpoints: Vec::new(),
        proxy_protocol: false,
        error: None,
        h2c: false,
        request_headers: Vec::new(),
        response_headers: Vec::new(),
        tls: None,
        minted_client: None,
    };
    let fail = |mut backend: Backend, reason: &str, msg: String| {
        backend.error = Some(msg.clone());
        (
            backend,
            Some(Condition::new("ResolvedRefs", false, reason, msg)),
        )
    };
    let group = b.group.as_deref().unwrap_or("");
    let kind = b.kind.as_deref().unwrap_or("Service");
    if !group.is_empty() || kind != "Service" {
        return fail(
            backend,
            "InvalidKind",
            format!(
                "backendRef {group}/{kind} {}: kube-gw routes to Services",
                b.name
            ),
        );
    }
    if !granted(inp, route_kind, route_ns, "", "Service", ns, &b.name) {
        return fail(
            backend,
            "RefNotPermitted",
            not_granted("Service", ns, &b.name),
        );
    }
    let key = ObjectKey {
        namespace: ns.into(),
        name: b.name.as_str().into(),
    };
    let Some(svc) = inp.cluster.services.get(&key) else {
        return fail(
            backend,
            "BackendNotFound",
            format!("Service {key} not found"),
        );
    };
    match super::proxy_protocol::wanted(&svc.annotations) {
        Ok(on) => backend.proxy_protocol = on,
        Err(msg) => {
            return fail(
                backend,
                "UnsupportedProtocol",
                format!("Service {key}: {msg}"),
            )
        }
    }
    let Some(sp) = svc
        .ports
        .iter()
        .find(|p| p.port == port && p.protocol == Protocol::Tcp)
    else {
        return fail(
            backend,
            "BackendNotFound",
            format!("Service {key} has no TCP port {port}"),
        );
    };
    match policies.and_then(|p| p.lookup(&key, &sp.name).map(|l| (p, l))) {
        Some((p, (policy, Ok(tls)))) => {
            backend.tls = Some(tls);
            if svc
                .annotations
                .get(api::MINT_ANNOTATION)
                .map(String::as_str)
                == Some("mint")
            {
                match &p.minted {
                    Ok(c) => backend.minted_client = Some(c.clone()),
                    Err(why) => {
                        backend.error =
                            Some(format!("Service {key} (BackendTLSPolicy {policy}): {why}"));
                    }
                }
            }
        }
        // Never plaintext instead: requests fail (500) and the policy's status says why.
        Some((_, (policy, Err(why)))) => {
            backend.error = Some(format!("BackendTLSPolicy {policy}: {why}"));
        }
        None => {
            backend.h2c = sp.app_protocol.as_deref() == Some("kubernetes.io/h2c");
        }
    }
    let mut endpoints = Vec::new();
    for v4 in [true, false] {
        for d in crate::desired::endpoints(inp.cluster, svc, &sp.name, Protocol::Tcp, v4) {
            endpoints.push(SocketAddr::new(d.address, d.port));
        }
    }
    backend.set_endpoints(endpoints);
    (backend, None)
}

/// An HTTPRoute's rules, compiled once for all its parents.
struct Compiled {
    rules: Vec<Arc<Rule>>,
    /// Accepted=False: an unsupported filter or an invalid match.
    problem: Option<Condition>,
    resolved: Option<Condition>,
}

fn compile_http(inp: &Inputs<'_>, policies: &Policies, r: &Object<api::HttpRouteSpec>) -> Compiled {
    let mut out = Compiled {
        rules: Vec::new(),
        problem: None,
        resolved: None,
    };
    for (i, rule) in r.spec.rules.iter().enumerate() {
        let mut filters = Vec::new();
        for f in &rule.filters {
            match filter(inp, &r.key.namespace, f) {
                Ok(Filter::Unresolved(why)) => {
                    out.resolved = out.resolved.take().or(Some(Condition::new(
                        "ResolvedRefs",
                        false,
                        "ExtensionRefNotResolved",
                        why.clone(),
                    )));
                    filters.push(Filter::Unresolved(why));
                }
                Ok(x) => filters.push(x),
                Err(msg) => {
                    out.problem = Some(Condition::new("Accepted", false, "UnsupportedValue", msg))
                }
            }
        }
        let mut backends = Vec::new();
        for b in &rule.backend_refs {
            let (mut backend, problem) =
                resolve_backend(inp, Some(policies), &r.key.namespace, "HTTPRoute", b);
            out.resolved = out.resolved.take().or(problem);
            for f in &b.filters {
                match (f.type_.as_str(), &f.request_header_modifier, &f.response_header_modifier) {
                    ("RequestHeaderModifier", Some(m), _) => backend.request_headers.push(m.clone()),
                    ("ResponseHeaderModifier", _, Some(m)) => backend.response_headers.push(m.clone()),
                    (t, _, _) => {
                        out.problem = Some(Condition::new(
                            "Accepted",
                            false,
                            "UnsupportedValue",
                            format!("backendRef filter {t} is not supported by kube-gw (RequestHeaderModifier and ResponseHeaderModifier are)"),
                        ))
                    }
                }
            }
            backends.push(backend);
        }
        let t = rule.timeouts.clone().unwrap_or_default();
        let timeouts = match (
            t.request.as_deref().map(duration).transpose(),
            t.backend_request.as_deref().map(duration).transpose(),
        ) {
            (Ok(r), Ok(b)) => (r, b),
            (Err(msg), _) | (_, Err(msg)) => {
                out.problem = Some(Condition::new("Accepted", false, "UnsupportedValue", msg));
                (None, None)
            }
        };
        let matches: Vec<api::HttpMatch> = if rule.matches.is_empty() {
            vec![api::HttpMatch::default()]
        } else {
            rule.matches.clone()
        };
        for m in &matches {
            match compile_match(m) {
                Ok(match_) => out.rules.push(Arc::new(Rule {
                    route: r.key.clone(),
                    rule: i,
                    match_,
                    filters: filters.clone(),
                    backends: backends.clone(),
                    request_timeout: timeouts.0.filter(|d| !d.is_zero()),
                    backend_timeout: timeouts.1,
                    created: r.created,
                    metrics: Default::default(),
                })),
                Err(msg) => {
                    out.problem = Some(Condition::new("Accepted", false, "UnsupportedValue", msg))
                }
            }
        }
    }
    out
}

fn filter(inp: &Inputs<'_>, ns: &str, f: &api::HttpFilter) -> Result<Filter, String> {
    let missing = || format!("filter {} lacks its settings", f.type_);
    match f.type_.as_str() {
        "ExtensionRef" => {
            let x = f.extension_ref.as_ref().ok_or_else(missing)?;
            if x.group != api::KUBE_GW_GROUP || x.kind != "ModelOverride" {
                return Err(format!(
                    "ExtensionRef to {}/{} is not supported: kube-gw's filters are {}/ModelOverride",
                    x.group,
                    x.kind,
                    api::KUBE_GW_GROUP
                ));
            }
            let key = ObjectKey {
                namespace: ns.into(),
                name: x.name.as_str().into(),
            };
            Ok(match inp.gateway.model_overrides.get(&key) {
                None => Filter::Unresolved(format!(
                    "ModelOverride {ns}/{} not found (is configs/kubernetes/kube-gw-modeloverride-crd.yaml applied?)",
                    x.name
                )),
                Some(o) => model_override(&key, &o.spec)
                    .map_or_else(Filter::Unresolved, |m| Filter::ModelOverride(Arc::new(m))),
            })
        }
        "RequestHeaderModifier" => Ok(Filter::RequestHeaders(
            f.request_header_modifier.clone().ok_or_else(missing)?,
        )),
        "ResponseHeaderModifier" => Ok(Filter::ResponseHeaders(
            f.response_header_modifier.clone().ok_or_else(missing)?,
        )),
        "RequestRedirect" => Ok(Filter::Redirect(
            f.request_redirect.clone().ok_or_else(missing)?,
        )),
        "URLRewrite" => Ok(Filter::Rewrite(f.url_rewrite.clone().ok_or_else(missing)?)),
        other => Err(format!("filter type {other} is not supported by kube-gw")),
    }
}

/// A Gateway API duration: one to four `<number><unit>` parts, units `h`, `m`, `s`, `ms`
/// (`1h30m`, `500ms`, `0s`).
pub fn duration(text: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("{text:?} is not a Gateway API duration (like 10s, 500ms, 1h30m)");
    let mut total = std::time::Duration::ZERO;
    let mut rest = text;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 5 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (std::time::Duration::from_millis(1), 2)
        } else if rest.starts_with('h') {
            (std::time::Duration::from_secs(3600), 1)
        } else if rest.starts_with('m') {
            (std::time::Duration::from_secs(60), 1)
        } else if rest.starts_with('s') {
            (std::time::Duration::from_secs(1), 1)
        } else {
            return Err(bad());
        };
        rest = &rest[len..];
        total += unit * u32::try_from(n).map_err(|_| bad())?;
        parts += 1;
    }
    if parts == 0 || parts > 4 {
        return Err(bad());
    }
    Ok(total)
}

/// A `ModelOverride` object compiled; `Err` says why it cannot be used.
fn model_override(key: &ObjectKey, spec: &api::ModelOverrideSpec) -> Result<ModelOverride, String> {
    let models: Vec<(String, u32)> = spec
        .models
        .iter()
        .map(|m| (m.name.clone(), m.weight.unwrap_or(1)))
        .filter(|(n, w)| !n.is_empty() && *w > 0)
        .collect();
    if models.is_empty() {
        return Err(format!(
            "ModelOverride {key} names no model with a weight above 0"
        ));
    }
    let reject = match spec.on_unparsable.as_deref() {
        None | Some("PassThrough") => false,
        Some("Reject") => true,
        Some(other) => {
            return Err(format!(
                "ModelOverride {key}: onUnparsable {other:?} is neither PassThrough nor Reject"
            ))
        }
    };
    Ok(ModelOverride {
        name: key.to_string(),
        models,
        paths: if spec.paths.is_empty() {
            DEFAULT_PATHS.iter().map(|p| p.to_string()).collect()
        } else {
            spec.paths.clone()
        },
        max_body: spec
            .max_body_bytes
            .map_or(DEFAULT_MAX_BODY, |n| n.min(64 << 20) as usize),
        reject,
    })
}

fn regex(s: &str) -> Result<regex::Regex, String> {
    // The whole value must match, as the Gateway API means it.
    regex::Regex::new(&format!("^(?:{s})$"))
        .map_err(|e| format!("invalid regular expression {s:?}: {e}"))
}

fn compile_match(m: &api::HttpMatch) -> Result<Match, String> {
    let value = m
        .path
        .as_ref()
        .and_then(|p| p.value.clone())
        .unwrap_or_else(|| "/".into());
    let path = match m
        .path
        .as_ref()
        .and_then(|p| p.type_.as_deref())
        .unwrap_or("PathPrefix")
    {
        "Exact" => PathMatch::Exact(value),
        "PathPrefix" => {
            let trimmed = value.trim_end_matches('/');
            PathMatch::Prefix(if trimmed.is_empty() {
                "/".into()
            } else {
                trimmed.into()
            })
        }
        "RegularExpression" => PathMatch::Regex(regex(&value)?),
        other => return Err(format!("path match type {other} is not supported")),
    };
    let values = |v: &[api::ValueMatch]| -> Result<Vec<ValueMatch>, String> {
        v.iter()
            .map(|h| {
                Ok(ValueMatch {
                    name: h.name.clone(),
                    value: match h.type_.as_deref().unwrap_or("Exact") {
                        "Exact" => StrMatch::Exact(h.value.clone()),
                        "RegularExpression" => StrMatch::Regex(regex(&h.value)?),
                        other => return Err(format!("match type {other} is not supported")),
                    },
                })
            })
            .collect()
    };
    Ok(Match {
        path,
        method: m.method.clone(),
        headers: values(&m.headers)?,
        query: values(&m.query_params)?,
    })
}

/// Attaches a route to the listeners its parentRefs select; calls `serve` for each valid
/// listener with the host patterns it serves there. Returns the route's parent statuses.
#[allow(clippy::too_many_arguments)]
fn attach(
    inp: &Inputs<'_>,
    infos: &mut BTreeMap<ObjectKey, GatewayInfo>,
    route: &ObjectKey,
    parents: &[ParentRef],
    hostnames: &[String],
    kind: &'static str,
    problem: &Option<Condition>,
    resolved: &Option<Condition>,
    mut serve: impl FnMut(&GatewayInfo, &ListenerInfo, &[HostPattern]),
) -> Vec<ParentStatus> {
    let route_hosts: Vec<HostPattern> = if hostnames.is_empty() {
        vec![HostPattern::Any]
    } else {
        hostnames
            .iter()
            .map(|h| HostPattern::parse(Some(h)))
            .collect()
    };
    let ns_labels = inp
        .gateway
        .namespaces
        .get(&*route.namespace)
        .cloned()
        .unwrap_or_default();
    let mut out = Vec::new();
    for p in parents {
        if p.group.as_deref().unwrap_or(GROUP) != GROUP
            || p.kind.as_deref().unwrap_or("Gateway") != "Gateway"
        {
            continue;
        }
        let gw_key = ObjectKey {
            namespace: p.namespace.as_deref().unwrap_or(&route.namespace).into(),
            name: p.name.as_str().into(),
        };
        let Some(gw) = infos.get_mut(&gw_key) else {
            continue; // not one of ours
        };
        let mut accepted = problem.clone();
        let mut matched_section = false;
        let mut allowed_any = false;
        let mut host_any = false;
        let mut to_serve: Vec<(usize, Vec<HostPattern>)> = Vec::new();
        for (i, l) in gw.listeners.iter_mut().enumerate() {
            if p.section_name.as_deref().is_some_and(|s| s != l.name)
                || p.port.is_some_and(|port| port != l.port)
            {
                continue;
            }
            matched_section = true;
            let ns_ok = match &l.allowed_ns {
                AllowedNs::Same => route.namespace == gw_key.namespace,
                AllowedNs::All => true,
                AllowedNs::Selector(sel) => sel.matches(&ns_labels),
            };
            if !ns_ok || !l.kinds.contains(&kind) {
                continue;
            }
            allowed_any = true;
            let hosts: Vec<HostPattern> = route_hosts
                .iter()
                .filter_map(|h| h.intersect(&l.host))
                .collect();
            if hosts.is_empty() {
                continue;
            }
            host_any = true;
            if problem.is_none() {
                l.attached += 1;
                to_serve.push((i, hosts));
            }
        }
        if accepted.is_none() {
            accepted = if !matched_section {
                Some(Condition::new(
                    "Accepted",
                    false,
                    "NoMatchingParent",
                    "no listener matches the parentRef's sectionName/port",
                ))
            } else if !allowed_any {
                Some(Condition::new(
                    "Accepted",
                    false,
                    "NotAllowedByListeners",
                    "no listener allows this route (kind or namespace)",
                ))
            } else if !host_any {
                Some(Condition::new(
                    "Accepted",
                    false,
                    "NoMatchingListenerHostname",
                    "no listener hostname matches the route's hostnames",
                ))
            } else {
                None
            };
        }
        if accepted.is_none() {
            for (i, hosts) in &to_serve {
                let l = &gw.listeners[*i];
                if l.valid() {
                    serve(gw, l, hosts);
                }
            }
        }
        out.push(ParentStatus {
            parent: p.clone(),
            conditions: vec![
                accepted
                    .unwrap_or_else(|| Condition::new("Accepted", true, "Accepted", "accepted")),
                resolved.clone().unwrap_or_else(|| {
                    Condition::new(
                        "ResolvedRefs",
                        true,
                        "ResolvedRefs",
                        "all references resolved",
                    )
                }),
            ],
        });
    }
    out
}

#[cfg(test)]
#[path = "compute_tests.rs"]
mod tests;
