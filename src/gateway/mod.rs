//! The gateway: L7 ingress (HTTP routing, TLS termination and SNI passthrough) served on the
//! switch itself at Gateway VIPs, configured by the Gateway API.
//!
//! ```text
//!  watch<Arc<GatewaySnapshot>> (kube::gateway) ─┐
//!  watch<Arc<ClusterSnapshot>> (Services, EPs) ─┼─► gateway task: compute (pure) ─┬─► watch<Arc<GatewayState>> ─► proxy
//!  watch<Arc<DesiredState>> (the L4 VIP:ports) ─┤                                 ├─► steer (eBPF sk_lookup map) ─► Accepted ─► proxy
//!  watch<Arc<Config>> ([gateway], [vip] pools) ─┘                                 ├─► watch<Arc<Statuses>> ─► kube (status writer, one leader)
//!                                                                                  ├─► watch<GatewayVips> ─► pipeline (VIPs on lo; export)
//!                                                                                  └─► watch<GatewayReport> ─► admin (`kube-gw gateway`)
//! ```
//!
//! - [`compute`] (pure): Gateway API objects + Services → per VIP:port plans and statuses.
//! - [`plan`]: those plans, and request matching over them (pure).
//! - [`steer`]: the eBPF `sk_lookup` program and its maps (VIP:port → the gateway's listening
//!   socket per family), with the per-pair fallback where BPF is unavailable.
//! - [`proxy`]: HTTP/1.1 and HTTP/2 (hyper), TLS (rustls), TLS passthrough.
//! - [`pool`]: the proxy's backend connections (per client connection, then a shared pool).
//! - [`proxy_protocol`]: the PROXY protocol v2 header toward backends that ask for it (pure).
//! - [`sni`]: the SNI of a ClientHello, for passthrough (pure).
//! - [`tickets`]: the TLS session-ticket keys every switch shares (from a Secret).
//!
//! Make before break, as for L4 VIPs: a Gateway VIP is announced only once its Gateway is
//! Programmed and every one of its VIP:ports is steered to the proxy; a VIP that goes is
//! withdrawn first, and its plans and steering go [`WITHDRAW_LEAD`] later.
//!
//! The gateway must not import the Kubernetes adapter, IPVS, netlink, BGP or the pipeline:
//! it gets plain values and reports what it serves (tests/architecture.rs).

pub mod backend_tls;
pub mod compute;
pub mod h1;
pub mod ktls;
pub mod metrics;
pub mod model_override;
pub mod plan;
pub mod policy;
pub mod pool;
pub mod proxy;
pub mod proxy_protocol;
pub mod sni;
pub mod steer;
pub mod tickets;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::desired::DesiredState;
use crate::lifecycle::Heartbeat;
use crate::model::gateway::GatewaySnapshot;
use crate::model::{ClusterSnapshot, ObjectKey, Protocol};
use plan::{GatewayState, Statuses};
use steer::{Pair, SteerReport, Steering};

/// How long a withdrawn Gateway VIP keeps being served: the peers' time to move its traffic.
pub const WITHDRAW_LEAD: Duration = Duration::from_millis(500);

/// Gateway VIPs for the pipeline: each address, and whether it may be announced.
pub type GatewayVips = Arc<BTreeMap<IpAddr, bool>>;

/// What the gateway reports (admin, status).
#[derive(Debug, Clone, Default, Serialize)]
pub struct GatewayReport {
    /// The Gateway API objects were listed (false until then, or without the CRDs).
    pub synced: bool,
    pub steering: Option<SteerReport>,
    /// Gateways of kube-gw's classes.
    pub gateways: usize,
    /// VIP:ports with a plan.
    pub ports: usize,
}

/// Handles to the running gateway.
#[derive(Debug)]
pub struct Gateway {
    pub state: watch::Receiver<Arc<GatewayState>>,
    pub vips: watch::Receiver<GatewayVips>,
    pub report: watch::Receiver<GatewayReport>,
    /// Kernel TLS support and connection counts.
    pub stats: Arc<proxy::ProxyStats>,
    pub task: tokio::task::JoinHandle<()>,
    /// The proxy: serves accepted connections (each in a task of its own).
    pub proxy: tokio::task::JoinHandle<()>,
    /// `[gateway] drain-timeout`.
    pub drain_timeout: Duration,
}

impl Gateway {
    /// Stops the gateway for a stop of kube-gw: no new connection is accepted (with
    /// handed-over sockets they wait in the kernel for the next daemon), those accepted are
    /// served, every open one is told to finish after its current request, and after
    /// `drain_timeout` the rest are cut. Returns (connections that finished, connections cut).
    pub async fn drain(self) -> (u64, u64) {
        self.task.abort();
        let _ = self.task.await;
        // The accept loops are gone: the proxy serves what was accepted, then ends.
        let _ = tokio::time::timeout(Duration::from_secs(1), self.proxy).await;
        let open = self.stats.open.load(std::sync::atomic::Ordering::Relaxed);
        self.stats.draining.start();
        let deadline = tokio::time::Instant::now() + self.drain_timeout;
        loop {
            let now = self.stats.open.load(std::sync::atomic::Ordering::Relaxed);
            if now == 0 || tokio::time::Instant::now() >= deadline {
                let cut = now;
                tracing::info!(
                    open_at_stop = open,
                    finished = open.saturating_sub(cut),
                    cut,
                    timeout = ?self.drain_timeout,
                    "gateway: drained"
                );
                return (open.saturating_sub(cut), cut);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// What the gateway task reads.
#[derive(Debug)]
pub struct GatewayInputs {
    pub config: watch::Receiver<Arc<Config>>,
    pub gateway: watch::Receiver<Arc<GatewaySnapshot>>,
    pub cluster: watch::Receiver<Arc<ClusterSnapshot>>,
    pub desired: watch::Receiver<Arc<DesiredState>>,
}

/// Starts the gateway when the configuration has `[gateway]`: the task, steering and proxy.
pub fn spawn(
    inputs: GatewayInputs,
    statuses: watch::Sender<Arc<Statuses>>,
    liveness: &crate::lifecycle::Liveness,
    metrics: metrics::GatewayMetrics,
) -> Option<Gateway> {
    let Some(cfg) = inputs.config.borrow().gateway.clone() else {
        // No gateway: steering an earlier run pinned must not outlive it.
        steer::remove_pins();
        return None;
    };
    let hb = liveness.register("gateway");
    let (state_tx, state_rx) = watch::channel(Arc::new(GatewayState::default()));
    let (vips_tx, vips_rx) = watch::channel(GatewayVips::default());
    let (report_tx, report_rx) = watch::channel(GatewayReport::default());
    let (acc_tx, acc_rx) = mpsc::channel(1024);
    let opts = proxy::ProxyOptions {
        source_v4: cfg.source_addresses.iter().find_map(|a| match a {
            IpAddr::V4(v) => Some(*v),
            IpAddr::V6(_) => None,
        }),
        source_v6: cfg.source_addresses.iter().find_map(|a| match a {
            IpAddr::V6(v) => Some(*v),
            IpAddr::V4(_) => None,
        }),
        header_timeout: cfg.header_timeout,
        backend_timeout: cfg.backend_timeout,
        kernel_tls: cfg.kernel_tls,
    };
    let stats = Arc::new(proxy::ProxyStats {
        metrics,
        ..proxy::ProxyStats::default()
    });
    // The proxy starts serving once the first state is computed: connections accepted before
    // (the accept queue of handed-over sockets, after a restart) wait for it.
    let mut first = state_rx.clone();
    let proxy_state = state_rx.clone();
    let proxy_stats = stats.clone();
    let proxy_task = tokio::spawn(async move {
        if first.wait_for(|s| s.synced).await.is_ok() {
            proxy::run(acc_rx, proxy_state, opts, proxy_stats).await;
        }
    });
    let handover = if cfg.ebpf {
        match steer::Handover::from_env() {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!("gateway: {e}");
                None
            }
        }
    } else {
        None
    };
    let steering = match handover {
        Some(h) => Steering::start_handed_over(acc_tx, h),
        None => Steering::start(acc_tx, cfg.ebpf),
    };
    let task = tokio::spawn(async move {
        run(
            inputs,
            steering,
            Outputs {
                state: state_tx,
                vips: vips_tx,
                report: report_tx,
                statuses,
            },
            hb,
        )
        .await;
    });
    Some(Gateway {
        state: state_rx,
        vips: vips_rx,
        report: report_rx,
        stats,
        task,
        proxy: proxy_task,
        drain_timeout: cfg.drain_timeout,
    })
}

/// The Gateway listeners' VIP:ports (TCP), for the firewall.
pub type GatewayPorts = Arc<std::collections::BTreeSet<(IpAddr, u16)>>;

/// Follows the gateway's state with its listeners' VIP:ports.
pub fn listener_ports(
    mut state: watch::Receiver<Arc<GatewayState>>,
) -> watch::Receiver<GatewayPorts> {
    let ports = |s: &GatewayState| -> GatewayPorts {
        Arc::new(s.ports.keys().map(|p| (p.addr, p.port)).collect())
    };
    let (tx, rx) = watch::channel(ports(&state.borrow_and_update()));
    tokio::spawn(async move {
        while state.changed().await.is_ok() {
            let next = ports(&state.borrow_and_update());
            tx.send_if_modified(|cur| {
                let changed = *cur != next;
                if changed {
                    *cur = next;
                }
                changed
            });
        }
    });
    rx
}

struct Outputs {
    state: watch::Sender<Arc<GatewayState>>,
    vips: watch::Sender<GatewayVips>,
    report: watch::Sender<GatewayReport>,
    statuses: watch::Sender<Arc<Statuses>>,
}

/// The TCP VIP:ports IPVS serves, with their Services.
fn l4_pairs(d: &DesiredState) -> BTreeMap<Pair, ObjectKey> {
    d.virtual_services
        .iter()
        .filter(|(k, _)| k.protocol == Protocol::Tcp)
        .map(|(k, v)| {
            (
                Pair {
                    addr: k.vip,
                    port: k.port,
                },
                v.service.clone(),
            )
        })
        .collect()
}

/// The VIPs that may be announced: their Gateway is Programmed and every pair of theirs is
/// steered.
fn ready_vips(state: &GatewayState, steer: &SteerReport) -> BTreeMap<IpAddr, bool> {
    let failed: BTreeSet<IpAddr> = steer.failed.keys().map(|p| p.addr).collect();
    state
        .vips
        .iter()
        .map(|(a, programmed)| (*a, *programmed && !failed.contains(a)))
        .collect()
}

async fn run(mut inp: GatewayInputs, mut steering: Steering, out: Outputs, hb: Heartbeat) {
    let mut first = true;
    loop {
        hb.turn().await;
        let gw = inp.gateway.borrow_and_update().clone();
        let cluster = inp.cluster.borrow_and_update().clone();
        // Both views listed: a route computed without the Services would answer 500 until
        // they arrive (after a restart, to connections that waited in the accept queue).
        if gw.complete && cluster.complete {
            let cfg = inp.config.borrow_and_update().clone();
            let desired = inp.desired.borrow_and_update().clone();
            let l4 = l4_pairs(&desired);
            let controller = cfg
                .gateway
                .as_ref()
                .map(|g| g.controller_name.clone())
                .unwrap_or_default();
            let previous = out.state.borrow().allocations.clone();
            let mut next = compute::compute(&compute::Inputs {
                gateway: &gw,
                cluster: &cluster,
                controller: &controller,
                pools: &cfg.vip.prefixes(),
                address_pools: cfg
                    .gateway
                    .as_ref()
                    .map(|g| g.address_pools.as_slice())
                    .unwrap_or_default(),
                l4: &l4,
                previous: &previous,
            });
            let ticket_secret = cfg
                .gateway
                .as_ref()
                .and_then(|g| g.ticket_secret())
                .map(|(ns, name)| ObjectKey::new(ns, name));
            next.tickets =
                tickets::TicketKeys::from_secret(ticket_secret.as_ref(), gw.ticket_secret.as_ref());
            if next.tickets != out.state.borrow().tickets {
                match &next.tickets.problem {
                    Some(p) => tracing::warn!("gateway: session tickets: {p}"),
                    None => tracing::info!("gateway: session tickets: {}", next.tickets.describe()),
                }
            }
            // Break after make: withdraw what goes (or stops being ready) first.
            let before = out.vips.borrow().clone();
            let keep: BTreeMap<IpAddr, bool> = before
                .iter()
                .map(|(a, r)| (*a, *r && next.vips.get(a).copied().unwrap_or(false)))
                .collect();
            if keep != *before {
                out.vips.send_replace(Arc::new(keep));
                tokio::time::sleep(WITHDRAW_LEAD).await;
            }
            let want: BTreeSet<Pair> = next.ports.keys().copied().collect();
            let steer = steering.set(&want);
            let ready = ready_vips(&next, &steer);
            out.statuses.send_if_modified(|cur| {
                let changed = **cur != next.status;
                if changed {
                    *cur = Arc::new(next.status.clone());
                }
                changed
            });
            out.report.send_replace(GatewayReport {
                synced: true,
                steering: Some(steer.clone()),
                gateways: next.status.gateways.len(),
                ports: next.ports.len(),
            });
            out.state.send_replace(Arc::new(next));
            // The first publication always notifies: the pipeline waits for it before it
            // removes any address (a restart keeps the Gateway VIPs on `lo` meanwhile).
            if first {
                out.vips.send_replace(Arc::new(ready));
                first = false;
            } else {
                out.vips.send_if_modified(|cur| {
                    let changed = **cur != ready;
                    if changed {
                        *cur = Arc::new(ready);
                    }
                    changed
                });
            }
            if !steer.failed.is_empty() {
                tracing::warn!(failed = ?steer.failed, "gateway: some VIP:ports cannot be served; retrying");
            }
        } else {
            out.report.send_modify(|r| {
                r.synced = false;
                r.steering = Some(steering.report());
            });
        }
        // A pair that failed is retried every few seconds.
        let retry = !steering.report().failed.is_empty();
        loop {
            tokio::select! {
                r = inp.gateway.changed() => if r.is_err() { return } else { break },
                r = inp.cluster.changed() => if r.is_err() { return } else { break },
                r = inp.desired.changed() => if r.is_err() { return } else { break },
                r = inp.config.changed() => if r.is_err() { return } else { break },
                () = tokio::time::sleep(Duration::from_secs(5)), if retry => break,
                () = hb.idle() => hb.turn().await,
            }
        }
    }
}
