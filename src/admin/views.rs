//! The admin answers, built from the subsystems' handles: `status` (the daemon, its loops
//! and every component), `vips`, `bgp neighbors`, `bgp routes` and `cluster`. Pure reads:
//! watch receivers, reports and atomics; nothing here waits on a subsystem.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::{Handles, PipelineView};
use crate::api::{
    BgpNeighborRow, BgpNeighbors, BgpRoutes, BgpRoutesOf, ClusterCounts, ClusterView, Component,
    ConfigStatus, EndpointView, NodeView, PortView, RefusedAddress, ServiceView, SliceView, Status,
    VipRow, Vips,
};
use crate::bgp::speaker::Speaker;
use crate::lifecycle::LIVENESS_MAX_AGE;
use crate::model::ClusterSnapshot;

/// When each component entered its current state (for the `Since` column of components
/// that do not keep it themselves).
#[derive(Debug, Default)]
pub struct Since(Mutex<BTreeMap<String, (String, Instant)>>);

impl Since {
    /// Seconds `name` has been in `state`.
    fn seconds(&self, name: &str, state: &str) -> u64 {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let e = m
            .entry(name.to_string())
            .or_insert_with(|| (state.to_string(), Instant::now()));
        if e.0 != state {
            *e = (state.to_string(), Instant::now());
        }
        e.1.elapsed().as_secs()
    }
}

/// A reconciler's state in status: failing (its last pass had an error), programmed (the
/// kernel has what is wanted) or pending.
fn reconciler_state(error: bool, done: bool) -> &'static str {
    if error {
        "failing"
    } else if done {
        "programmed"
    } else {
        "pending"
    }
}

/// The FIB installer's row: `failing` when the kernel refused a route, `conflict` when
/// another protocol's route blocks one, else `programmed`.
fn fib_component(r: &crate::fib::FibReport) -> (&'static str, String) {
    let mut info = format!(
        "{} routes installed, {} with several next hops",
        r.installed, r.multipath
    );
    for (what, list) in [("refused", &r.failed), ("blocked", &r.conflicts)] {
        if !list.is_empty() {
            info.push_str(&format!("; {what}: {}", list.join("; ")));
        }
    }
    let state = if !r.failed.is_empty() {
        "failing"
    } else if !r.conflicts.is_empty() {
        "conflict"
    } else {
        "programmed"
    };
    (state, info)
}

/// `status`.
pub fn status(h: &Handles, since: &Since) -> Status {
    let mut components = Vec::new();
    let mut timed = |name: &str, kind: &str, state: &str, info: String| {
        components.push(Component {
            name: name.into(),
            kind: kind.into(),
            state: state.into(),
            since_seconds: since.seconds(name, state),
            info,
        });
    };
    timed("admin", "unix", "up", h.socket.clone());
    timed("http", "tcp", "up", format!("http://{}/metrics", h.http));
    let w = h.watchdog.borrow().clone();
    timed("watchdog", "systemd", w.state, w.info);
    if let Some(l) = h.bgp.listener() {
        timed("bgp-listener", "bgp", l.state, l.info.clone());
    }
    if let Some(f) = &h.fib {
        let (state, info) = fib_component(&f.borrow());
        timed("fib", "routes", state, info);
    }
    for (name, age) in h.liveness.ages() {
        let stuck = age > LIVENESS_MAX_AGE;
        components.push(Component {
            name: format!("{name}-loop"),
            kind: "loop".into(),
            state: if stuck { "stuck" } else { "up" }.into(),
            since_seconds: if stuck { age.as_secs() } else { 0 },
            info: format!("last turn {} ms ago", age.as_millis()),
        });
    }
    components.extend(kube_components(&h.kube.report.view()));
    components.extend(pipeline_components(&h.pipeline));
    components.extend(bgp_components(&h.bgp));
    components.sort_by(|a, b| a.name.cmp(&b.name));
    let c = &h.control;
    Status {
        version: env!("CARGO_PKG_VERSION").to_string(),
        pid: std::process::id(),
        state: c.state(),
        ready: super::not_ready_reason(c, &h.liveness).is_none(),
        uptime_seconds: c.uptime().as_secs(),
        config: ConfigStatus {
            path: c.config_path().display().to_string(),
            generation: c.generation(),
            last_reload: c.last_reload(),
        },
        log_filter: c.log().filter(),
        degraded: h.kube.report.degraded(),
        cluster: c.config().kubernetes.as_ref().map(|_| {
            let s = h.kube.snapshot.borrow();
            ClusterCounts {
                services: s.services.len(),
                endpoint_slices: s.endpoint_slices.len(),
                nodes: s.nodes.len(),
                snapshots: h.kube.report.snapshots(),
            }
        }),
        components,
    }
}

fn pipeline_components(sv: &PipelineView) -> Vec<Component> {
    let d = sv.desired.borrow().clone();
    let p = sv.programmed.borrow().clone();
    let wanted = d.vips.len();
    let done = d.vips.keys().filter(|a| p.vips.contains(*a)).count();
    let mut info = format!(
        "{done}/{wanted} VIPs on {}, {} announceable, {} refused",
        sv.interface,
        d.vips.values().filter(|v| v.announceable).count(),
        d.refusals.len()
    );
    if let Some(e) = &p.error {
        info.push_str(&format!("; {e}"));
    }
    let vips = Component {
        name: "vips".into(),
        kind: "netlink".into(),
        state: reconciler_state(p.error.is_some(), done == wanted).into(),
        since_seconds: 0,
        info,
    };
    let r = sv.ipvs.borrow().clone();
    let mut info = format!(
        "{} virtual services ({} wanted), {} destinations, {} draining",
        r.services,
        d.virtual_services.len(),
        r.destinations,
        r.draining
    );
    for s in &r.settings {
        info.push_str(&format!("; {s}"));
    }
    if let Some(e) = &r.error {
        info.push_str(&format!("; {e}"));
    }
    let (state, info) = if r.disabled {
        (
            "disabled",
            "[ipvs] enabled = false: VIPs are announced without kube-gw's data plane".to_string(),
        )
    } else {
        (reconciler_state(r.error.is_some(), r.in_sync), info)
    };
    let ipvs = Component {
        name: "ipvs".into(),
        kind: "genetlink".into(),
        state: state.into(),
        since_seconds: 0,
        info,
    };
    vec![vips, ipvs]
}

fn bgp_components(bgp: &Speaker) -> Vec<Component> {
    bgp.neighbors()
        .into_iter()
        .map(|n| {
            let state = format!("{:?}", n.state).to_lowercase();
            let mut info = match (n.peer_as, n.up_since) {
                (Some(asn), Some(_)) => format!(
                    "AS {asn}, hold time {}s, {} UPDATEs received",
                    n.hold_time.unwrap_or(0),
                    n.updates_received
                ),
                _ => String::new(),
            };
            if let Some(e) = &n.last_error {
                if !info.is_empty() {
                    info.push_str("; ");
                }
                info.push_str(&format!("last: {e}"));
            }
            Component {
                name: format!("bgp/{}", n.name()),
                kind: "bgp".into(),
                state,
                since_seconds: n.up_since.map_or(0, |t| t.elapsed().as_secs()),
                info,
            }
        })
        .collect()
}

fn kube_components(v: &crate::kube::report::KubeView) -> Vec<Component> {
    use crate::kube::report::{JoinState, WatchState};
    let mut out = Vec::new();
    if let Some((state, msg, since)) = &v.join {
        let state = match state {
            JoinState::Off => "off",
            JoinState::Joining => "joining",
            JoinState::Joined => "joined",
            JoinState::Failing => "failing",
        };
        out.push(Component {
            name: "kubernetes".into(),
            kind: "api".into(),
            state: state.into(),
            since_seconds: *since,
            info: msg.clone(),
        });
    }
    for (name, w, since) in &v.watches {
        let state = match w.state {
            WatchState::Listing => "listing",
            WatchState::Synced => "synced",
            WatchState::Failing => "failing",
        };
        let mut info = format!(
            "{} objects, {} relists, {} errors",
            w.objects, w.relists, w.errors
        );
        if let (WatchState::Failing, Some(e)) = (w.state, &w.last_error) {
            info.push_str(&format!("; {e}"));
        }
        out.push(Component {
            name: format!("watch/{name}"),
            kind: "watch".into(),
            state: state.into(),
            since_seconds: *since,
            info,
        });
    }
    if let Some((state, info)) = &v.node {
        out.push(Component {
            name: "node".into(),
            kind: "node".into(),
            state: state.clone(),
            since_seconds: 0,
            info: info.clone(),
        });
    }
    for (name, leader, info, since) in &v.elections {
        out.push(Component {
            name: name.clone(),
            kind: "election".into(),
            state: if *leader { "leader" } else { "follower" }.into(),
            since_seconds: *since,
            info: info.clone(),
        });
    }
    out
}

/// `vips`: the VIPs with their Services and state, and the refused addresses.
pub fn vips(sv: &PipelineView) -> Vips {
    let d = sv.desired.borrow().clone();
    let p = sv.programmed.borrow().clone();
    let vips = d
        .vips
        .values()
        .map(|v| VipRow {
            address: v.address.to_string(),
            services: v.services.iter().map(ToString::to_string).collect(),
            programmed: p.vips.contains(&v.address),
            foreign: p.foreign.contains(&v.address),
            announceable: v.announceable,
            ready_endpoints: v.ready_endpoints,
            ports: d
                .virtual_services
                .keys()
                .filter(|k| k.vip == v.address)
                .map(ToString::to_string)
                .collect(),
        })
        .collect();
    let refused = d
        .refusals
        .iter()
        .map(|r| RefusedAddress {
            service: r.service.to_string(),
            address: r.address.clone(),
            reason: r.reason.to_string(),
        })
        .collect();
    Vips {
        interface: sv.interface.clone(),
        vips,
        refused,
        error: p.error.clone(),
        allocations: None,
        firewall: Some(firewall(&sv.nft.borrow())),
    }
}

/// The firewall's part of `vips`.
fn firewall(r: &crate::nft::reconcile::NftReport) -> crate::api::FirewallView {
    let w = r.applied.as_deref();
    crate::api::FirewallView {
        in_sync: r.in_sync,
        vips: w.map_or(0, |w| w.vips.len()),
        open: w
            .map(|w| w.open.iter().map(ToString::to_string).collect())
            .unwrap_or_default(),
        restricted: w
            .map(|w| {
                w.ranged
                    .iter()
                    .map(|(k, n)| format!("{k} from {n}"))
                    .collect()
            })
            .unwrap_or_default(),
        control_peers: w
            .filter(|w| w.control.bgp || w.control.bfd)
            .map(|w| w.control.peers.iter().map(ToString::to_string).collect())
            .unwrap_or_default(),
        error: r.error.clone(),
    }
}

/// The allocator's part of `vips` (`None` where no allocator runs).
pub fn allocations(
    a: &crate::ipam::Allocations,
    pools: &[crate::config::Pool],
) -> Option<crate::api::AllocationsView> {
    use crate::api::{AllocatedAddress, AllocationRow, AllocationsView, PoolUse};
    let leader = a.leader?;
    let pools = pools
        .iter()
        .filter(|p| p.allocate)
        .map(|p| PoolUse {
            name: p.name.clone(),
            prefix: p.prefix.to_string(),
            size: crate::ipam::usable(&p.prefix).to_string(),
            used: a
                .table
                .entries
                .values()
                .flat_map(|e| &e.addresses)
                .filter(|h| p.prefix.contains(&h.address))
                .map(|h| h.address)
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
        })
        .collect();
    let services = a
        .table
        .entries
        .iter()
        .map(|(k, e)| AllocationRow {
            service: k.to_string(),
            addresses: e
                .addresses
                .iter()
                .map(|h| AllocatedAddress {
                    address: h.address.to_string(),
                    pool: h.pool.clone(),
                    since: jiff::Timestamp::from_second(h.since)
                        .map(|t| t.to_string())
                        .unwrap_or_default(),
                    shared: h.shared.clone(),
                })
                .collect(),
            waiting: e.waiting.clone(),
            notes: e.notes.clone(),
        })
        .collect();
    Some(AllocationsView {
        leader,
        pools,
        services,
    })
}

/// `bgp neighbors`.
pub fn bgp_neighbors(bgp: &Speaker) -> BgpNeighbors {
    bgp.neighbors()
        .into_iter()
        .map(|n| BgpNeighborRow {
            address: n.name(),
            state: format!("{:?}", n.state).to_lowercase(),
            peer_as: n.peer_as,
            hold_time: n.hold_time,
            graceful_restart: n.graceful_restart,
            uptime_seconds: n.up_since.map_or(0, |t| t.elapsed().as_secs()),
            prefixes_sent: n.prefixes_sent,
            prefixes_received: n.prefixes_received,
            updates_received: n.updates_received,
            last_error: n.last_error,
            last_update_error: n.last_update_error,
            update_errors: n.update_errors,
        })
        .collect()
}

/// `bfd`: every BFD session.
pub fn bfd(bgp: &Speaker) -> crate::api::BfdSessions {
    let name = |s: crate::bfd::packet::State| {
        serde_json::to_value(s)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default()
    };
    let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    bgp.bfd()
        .into_values()
        .map(|s| crate::api::BfdRow {
            neighbor: s.name,
            multihop: s.multihop,
            state: name(s.state),
            remote_state: s.remote_state.map(name),
            local_diag: s.local_diag.to_string(),
            remote_diag: s.remote_diag.map(|d| d.to_string()),
            local_discriminator: s.local_disc,
            remote_discriminator: s.remote_disc,
            tx_interval_ms: ms(s.tx_interval),
            detection_time_ms: s.detection_time.map(ms),
            desired_min_tx_ms: ms(s.desired_min_tx),
            required_min_rx_ms: ms(s.required_min_rx),
            multiplier: s.detect_mult,
            uptime_seconds: s.up_since.map_or(0, |t| t.elapsed().as_secs()),
            packets_sent: s.packets_sent,
            packets_received: s.packets_received,
            discarded: s.discarded,
            last_discard: s.last_discard,
            failures: s.failures,
            last_error: s.last_error,
        })
        .collect()
}

/// `bgp routes`: what each neighbor (or one) was sent and has announced.
pub fn bgp_routes(bgp: &Speaker, neighbor: Option<&str>) -> Result<BgpRoutes, String> {
    let all = bgp.neighbors();
    if let Some(n) = neighbor {
        if !all.iter().any(|s| s.name() == n) {
            return Err(format!(
                "{n} is not a configured BGP neighbor; `kube-gw bgp neighbors` lists them"
            ));
        }
    }
    Ok(BgpRoutes {
        neighbors: all
            .iter()
            .filter(|s| neighbor.is_none_or(|n| s.name() == n))
            .map(|s| BgpRoutesOf {
                neighbor: s.name(),
                sent: s.adj_rib_out.iter().map(ToString::to_string).collect(),
                received: s.adj_rib_in.keys().map(ToString::to_string).collect(),
            })
            .collect(),
    })
}

/// `cluster`: the cluster view, as the API types it.
pub fn cluster(s: &ClusterSnapshot) -> ClusterView {
    let ips = |v: &[std::net::IpAddr]| v.iter().map(ToString::to_string).collect();
    let port = |name: &str, port: u16, p: crate::model::Protocol| PortView {
        name: name.into(),
        port,
        protocol: p.as_str().into(),
    };
    ClusterView {
        services: s
            .services
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    ServiceView {
                        kind: v.type_.clone(),
                        cluster_ips: ips(&v.cluster_ips),
                        external_ips: ips(&v.external_ips),
                        load_balancer_ips: ips(&v.load_balancer_ips),
                        ports: v
                            .ports
                            .iter()
                            .map(|p| port(&p.name, p.port, p.protocol))
                            .collect(),
                        external_traffic_local: v.external_traffic_local,
                        annotations: v.annotations.clone(),
                    },
                )
            })
            .collect(),
        endpoint_slices: s
            .endpoint_slices
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    SliceView {
                        service: v.service_key().map(|k| k.to_string()),
                        ports: v
                            .ports
                            .iter()
                            .map(|p| port(&p.name, p.port, p.protocol))
                            .collect(),
                        endpoints: v
                            .endpoints
                            .iter()
                            .map(|e| EndpointView {
                                addresses: ips(&e.addresses),
                                ready: e.ready,
                                serving: e.serving,
                                terminating: e.terminating,
                                node_name: e.node_name.clone(),
                            })
                            .collect(),
                    },
                )
            })
            .collect(),
        nodes: s
            .nodes
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    NodeView {
                        addresses: ips(&v.addresses),
                    },
                )
            })
            .collect(),
        complete: s.complete,
    }
}

/// What the admin side reads of the gateway.
#[derive(Debug, Clone)]
pub struct GatewayHandles {
    pub report: tokio::sync::watch::Receiver<crate::gateway::GatewayReport>,
    pub state: tokio::sync::watch::Receiver<Arc<crate::gateway::plan::GatewayState>>,
    pub stats: Arc<crate::gateway::proxy::ProxyStats>,
}

/// `gateway`: steering, the VIP:ports and the Gateways.
pub fn gateway(h: Option<&GatewayHandles>) -> crate::api::GatewayView {
    use crate::api::{GatewayListenerRow, GatewayRow, GatewayView};
    use crate::gateway::plan::PortPlan;
    use crate::gateway::steer::Mode;
    let Some(h) = h else {
        return GatewayView::default();
    };
    let report = h.report.borrow().clone();
    let state = h.state.borrow().clone();
    let failed = report
        .steering
        .as_ref()
        .map(|s| s.failed.clone())
        .unwrap_or_default();
    let steering = match report.steering.as_ref().map(|s| &s.mode) {
        Some(Mode::Ebpf { program_id, .. }) => format!("ebpf sk_lookup (program {program_id})"),
        Some(Mode::Bind { reason }) => format!("one socket per VIP:port: {reason}"),
        None => "not started".into(),
    };
    let listeners = state
        .ports
        .iter()
        .map(|(pair, plan)| {
            let (kind, hosts, routes, certificates) = match plan {
                PortPlan::Http { routes, tls } => (
                    if tls.is_some() { "https" } else { "http" },
                    routes.hosts.iter().map(|(h, _, _)| h.to_string()).collect(),
                    routes.hosts.iter().map(|(_, r, _)| r.len()).sum(),
                    tls.iter()
                        .flat_map(|t| t.by_host.iter().map(|(h, c)| format!("{h} → {}", c.secret)))
                        .collect(),
                ),
                PortPlan::Passthrough { routes } => (
                    "tls-passthrough",
                    routes.iter().map(|r| r.host.to_string()).collect(),
                    routes.len(),
                    Vec::new(),
                ),
            };
            GatewayListenerRow {
                address: pair.to_string(),
                kind: kind.into(),
                hosts,
                routes,
                certificates,
                state: failed
                    .get(pair)
                    .map_or_else(|| "serving".to_string(), |e| format!("not served: {e}")),
            }
        })
        .collect();
    let cond = |c: &[crate::gateway::plan::Condition], t: &str| {
        c.iter()
            .find(|c| c.type_ == t)
            .map(|c| (c.status, c.reason.clone()))
            .unwrap_or((false, "-".into()))
    };
    let gateways = state
        .status
        .gateways
        .iter()
        .map(|(k, g)| {
            let (programmed, reason) = cond(&g.conditions, "Programmed");
            GatewayRow {
                gateway: k.to_string(),
                addresses: g.addresses.iter().map(ToString::to_string).collect(),
                programmed,
                reason,
                listeners: g
                    .listeners
                    .iter()
                    .map(|l| {
                        let (ok, why) = cond(&l.conditions, "Programmed");
                        let not = l.conditions.iter().find(|c| {
                            !c.status && c.type_ != "Conflicted"
                                || c.status && c.type_ == "Conflicted"
                        });
                        let detail = if ok {
                            why
                        } else {
                            not.map_or(why, |c| format!("{}: {}", c.reason, c.message))
                        };
                        format!(
                            "{}: {} ({}), {} routes",
                            l.name,
                            if ok { "programmed" } else { "not programmed" },
                            detail,
                            l.attached_routes
                        )
                    })
                    .collect(),
            }
        })
        .collect();
    let kernel_tls = match h.stats.kernel_tls.lock().ok().and_then(|k| k.clone()) {
        None => "not probed yet".to_string(),
        Some(k) => k.unavailable.unwrap_or_else(|| k.ciphers.join(", ")),
    };
    let count = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    GatewayView {
        kernel_tls,
        tls_connections_kernel: count(&h.stats.ktls_connections),
        tls_connections_userspace: count(&h.stats.userspace_tls_connections),
        session_tickets: state.tickets.describe(),
        enabled: true,
        synced: report.synced,
        steering,
        listeners,
        gateways,
    }
}
