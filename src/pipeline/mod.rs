//! The pipeline from cluster view to kernel and fabric: cluster view + configuration +
//! this switch's own addresses → the desired state (kept by a `desired::Engine`, which
//! recomputes only what changed) → the reconcilers → the export gate that tells BGP what
//! it may announce.
//!
//! ```text
//!  watch<Arc<ClusterSnapshot>> ─┐
//!  watch<Arc<Config>> ──────────┼─► desired task ──► watch<Arc<DesiredState>> ──► Events (kube), `kube-gw vips`
//!  watch<own addresses> ────────┘        │
//!          ▲                             ├─► watch<Wanted> (VIP set) ──► address reconciler (netlink::addr)
//!          └──────────────── own addresses ◄──────────────────────────────┘   └─► watch<Programmed> ─┐
//!                                        └─► watch<Option<virtual services>> ──► IPVS reconciler (ipvs) │
//!                                                                                └─► watch<IpvsReport> ─┤
//!                              export gate: announceable ∧ on lo ∧ IPVS ready ◄─────────────────────────┘
//!                                  └─► watch<Exported> ──► BGP speaker
//! ```
//!
//! Who owns what: the desired task owns the engine and the order of publication (break
//! after make: the desired state, and with it the withdrawal, goes out before the
//! reconcilers' inputs, and a withdrawn VIP keeps its address and its previous virtual
//! services for `WITHDRAW_LEAD` while the rest of the change goes out at once: the lead is
//! a deadline in the task's loop, not a sleep); each reconciler owns its kernel objects; the export gate owns the
//! exported map (one persistent map, changed in place so that sessions diff it in
//! O(change)). Each task keeps a heartbeat: `pipeline`, `export`, `addresses`, `ipvs`.
//!
//! Nothing is computed until the reconciler has read the switch's own addresses. Until the
//! first complete cluster view is in, the wanted VIP set is `Unknown` and then `AtLeast`
//! (partial views while the Services are listed): the address reconciler adopts what it
//! finds, adds, and removes nothing, so a restart does not flap and a large cluster's VIPs
//! are programmed while the list is still arriving. The first complete view makes it
//! `Exactly`.

pub mod export;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use imbl::ordmap::DiffItem;
use imbl::{OrdMap, OrdSet};
use tokio::sync::watch;

use crate::config::{Config, OnShutdown};
use crate::desired::{DesiredState, Engine, NodeId};
use crate::gateway::{GatewayPorts, GatewayVips};
use crate::ipvs::reconcile::IpvsReport;
use crate::lifecycle::{Heartbeat, Liveness};
use crate::model::{ClusterSnapshot, Exported, Programmed, VirtualService, VsKey};
use crate::netlink::addr::{self, AddrChannels, Ownership, Wanted};

/// Handles to the pipeline.
#[derive(Debug)]
pub struct Pipeline {
    pub desired: watch::Receiver<Arc<DesiredState>>,
    pub programmed: watch::Receiver<Programmed>,
    pub ipvs: watch::Receiver<IpvsReport>,
    /// The nftables table (NAT and the firewall on the VIPs).
    pub nft: watch::Receiver<crate::nft::reconcile::NftReport>,
    /// What BGP may announce: the desired state's announcements whose address is on the
    /// interface (make before break).
    pub exported: watch::Receiver<Exported>,
    /// True once the export is complete: the first complete desired state is exported
    /// (every announcement of it, or what of it could be programmed within
    /// [`COMPLETE_WAIT`]). BGP sends End-of-RIB only then (RFC 4724).
    pub complete: watch::Receiver<bool>,
    pub teardown: watch::Sender<bool>,
    pub addr_task: tokio::task::JoinHandle<()>,
    pub ipvs_task: tokio::task::JoinHandle<()>,
    pub desired_task: tokio::task::JoinHandle<()>,
}

/// Starts the desired-state task, the reconcilers and the export gate.
pub fn spawn(
    config: watch::Receiver<Arc<Config>>,
    snapshot: watch::Receiver<Arc<ClusterSnapshot>>,
    (desired_tx, programmed_tx): (watch::Sender<Arc<DesiredState>>, watch::Sender<Programmed>),
    (gateway_vips, gateway_ports): (watch::Receiver<GatewayVips>, watch::Receiver<GatewayPorts>),
    liveness: &Liveness,
) -> Pipeline {
    let cfg = config.borrow().clone();
    let (wanted_tx, wanted_rx) = watch::channel(Wanted::Unknown);
    let programmed_rx = programmed_tx.subscribe();
    let (own_tx, own_rx) = watch::channel(None);
    let (teardown_tx, teardown_rx) = watch::channel(false);
    let ownership = Ownership {
        proto_supported: addr::kernel_keeps_proto(),
        pools: cfg.vip.prefixes(),
    };
    let span = tracing::info_span!("addresses", interface = %cfg.vip.interface);
    let addr_task = tokio::spawn(tracing::Instrument::instrument(
        addr::run(
            cfg.vip.interface.clone(),
            ownership,
            AddrChannels {
                wanted: wanted_rx,
                programmed: programmed_tx,
                own: own_tx,
                teardown: teardown_rx,
            },
            cfg.vip.on_shutdown == OnShutdown::Keep,
            liveness.register("addresses"),
        ),
        span,
    ));
    let (vs_tx, vs_rx) = watch::channel(None);
    let (nft_want_tx, nft_want_rx) = watch::channel(None);
    let (nft_tx, nft_rx) = watch::channel(crate::nft::reconcile::NftReport::default());
    tokio::spawn(firewall_loop(
        config.clone(),
        (vs_rx.clone(), wanted_tx.subscribe(), gateway_ports),
        nft_want_tx,
    ));
    tokio::spawn(tracing::Instrument::instrument(
        crate::nft::reconcile::run(nft_want_rx, nft_tx, liveness.register("nft")),
        tracing::info_span!("nft"),
    ));
    let (ipvs_tx, ipvs_rx) = watch::channel(IpvsReport::default());
    let ipvs_task = tokio::spawn(tracing::Instrument::instrument(
        crate::ipvs::reconcile::run(config.clone(), vs_rx, ipvs_tx, liveness.register("ipvs")),
        tracing::info_span!("ipvs"),
    ));
    let desired = desired_tx.subscribe();
    let (exported_tx, exported) = watch::channel(Exported::default());
    let (complete_tx, complete) = watch::channel(false);
    // The desired channel's initial value, taken before the desired task can publish: the
    // export gate tells a published state from it by identity.
    let initial_desired = desired_tx.borrow().clone();
    tokio::spawn(export_loop(
        (desired_tx.subscribe(), initial_desired),
        programmed_rx.clone(),
        (ipvs_rx.clone(), gateway_vips.clone()),
        config.clone(),
        (exported_tx, complete_tx),
        liveness.register("export"),
    ));
    let desired_task = tokio::spawn(desired_loop(
        config,
        snapshot,
        (own_rx, gateway_vips),
        Outputs {
            desired: desired_tx,
            wanted: wanted_tx,
            virtual_services: vs_tx,
        },
        liveness.register("pipeline"),
    ));
    Pipeline {
        desired,
        programmed: programmed_rx,
        ipvs: ipvs_rx,
        nft: nft_rx,
        exported,
        complete,
        ipvs_task,
        teardown: teardown_tx,
        addr_task,
        desired_task,
    }
}

/// What the firewall follows: the virtual services, the wanted addresses, the Gateway ports.
type FirewallInputs = (
    watch::Receiver<Option<imbl::OrdMap<VsKey, VirtualService>>>,
    watch::Receiver<Wanted>,
    watch::Receiver<GatewayPorts>,
);

/// Computes the nftables table kube-gw wants from the virtual services (`None` until the
/// first complete desired state), the addresses wanted on the interface, the Gateway
/// listeners and the configuration.
async fn firewall_loop(
    mut config: watch::Receiver<Arc<Config>>,
    (mut vs, mut wanted, mut gateway): FirewallInputs,
    out: watch::Sender<Option<Arc<crate::nft::Want>>>,
) {
    // Without a gateway its channel is closed from the start: nothing more to follow there.
    let mut gateway_open = true;
    loop {
        let current = vs.borrow_and_update().clone();
        let cfg = config.borrow_and_update().clone();
        let vips: BTreeSet<IpAddr> = wanted
            .borrow_and_update()
            .set()
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        let ports = gateway.borrow_and_update().clone();
        if let Some(current) = current {
            let next = Arc::new(crate::nft::want(&crate::nft::Inputs {
                virtual_services: &current,
                vips: &vips,
                gateway: &ports,
                config: &cfg,
            }));
            out.send_if_modified(|cur| {
                let changed = cur.as_deref() != Some(&*next);
                if changed {
                    *cur = Some(next);
                }
                changed
            });
        }
        tokio::select! {
            r = vs.changed() => if r.is_err() { return },
            r = config.changed() => if r.is_err() { return },
            r = wanted.changed() => if r.is_err() { return },
            r = gateway.changed(), if gateway_open => gateway_open = r.is_ok(),
        }
    }
}

/// Keeps the exported prefixes: announceable in the desired state, programmed on the
/// interface and — unless `[ipvs] enabled = false` — with every virtual service in the
/// kernel (the IPVS reconciler's `ready`). A VIP is announced only once its address and
/// data plane are there (fail-closed: no IPVS, no announcement), and withdrawn as soon as
/// the desired state drops it (before the reconcilers remove anything).
async fn export_loop(
    (mut desired, initial_desired): (watch::Receiver<Arc<DesiredState>>, Arc<DesiredState>),
    mut programmed: watch::Receiver<Programmed>,
    (mut ipvs, mut gateway): (watch::Receiver<IpvsReport>, watch::Receiver<GatewayVips>),
    mut config: watch::Receiver<Arc<Config>>,
    (out, complete): (watch::Sender<Exported>, watch::Sender<bool>),
    hb: Heartbeat,
) {
    let (mut ipvs_open, mut config_open, mut gateway_open) = (true, true, true);
    let mut exports = export::Gate::default();
    // When the first desired state came (the desired task publishes complete views only;
    // what is in the channel before is its empty initial value, `initial_desired`).
    let mut first_desired: Option<tokio::time::Instant> = None;
    loop {
        hb.turn().await;
        let d = desired.borrow_and_update().clone();
        let cfg = config.borrow_and_update().clone();
        let gate = cfg.ipvs.enabled;
        let ready = ipvs.borrow_and_update().ready.clone();
        let gateway_vips = gateway.borrow_and_update().clone();
        let statics = cfg
            .bgp
            .as_ref()
            .map(|b| b.static_prefixes.as_slice())
            .unwrap_or_default();
        let next = {
            let p = programmed.borrow_and_update();
            let current = out.borrow();
            let inputs = export::Inputs {
                desired: &d,
                vips: &p.vips,
                ready: gate.then_some(&ready),
                statics,
                gateway: &gateway_vips,
            };
            exports.next(&inputs, &current)
        };
        if let Some(next) = next {
            out.send_replace(next);
        }
        if !Arc::ptr_eq(&d, &initial_desired) {
            first_desired.get_or_insert_with(tokio::time::Instant::now);
        }
        if !*complete.borrow() {
            if let Some(since) = first_desired {
                let all = d.announcements.iter().all(|n| out.borrow().contains_key(n))
                    && gateway_vips
                        .iter()
                        .filter(|(_, r)| **r)
                        .all(|(a, _)| out.borrow().contains_key(&ipnet::IpNet::from(*a)));
                if all || since.elapsed() >= COMPLETE_WAIT {
                    tracing::info!(
                        routes = out.borrow().len(),
                        waited_for_all = all,
                        "the export is complete: End-of-RIB goes out"
                    );
                    complete.send_replace(true);
                }
            }
        }
        // Wait for a change, turning (beating) at least every second; or, while the export
        // is not complete, for the moment it counts as complete anyway.
        let give_up = first_desired
            .filter(|_| !*complete.borrow())
            .map(|t| t + COMPLETE_WAIT);
        loop {
            tokio::select! {
                r = desired.changed() => if r.is_err() { return } else { break },
                r = programmed.changed() => if r.is_err() { return } else { break },
                () = async { tokio::time::sleep_until(give_up.unwrap_or_else(tokio::time::Instant::now)).await }, if give_up.is_some() => break,
                r = ipvs.changed(), if ipvs_open => {
                    ipvs_open = r.is_ok();
                    break;
                }
                r = config.changed(), if config_open => {
                    config_open = r.is_ok();
                    break;
                }
                r = gateway.changed(), if gateway_open => {
                    gateway_open = r.is_ok();
                    break;
                }
                () = hb.idle() => hb.turn().await,
            }
        }
    }
}

/// How long after the first complete desired state the export counts as complete even
/// though some of its VIPs are not programmed yet (End-of-RIB cannot wait for ever).
pub const COMPLETE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a withdrawn VIP keeps its virtual services and address after the withdrawal
/// goes out: the peers' time to move its traffic to the other switches.
const WITHDRAW_LEAD: std::time::Duration = std::time::Duration::from_millis(500);

/// Where the desired task publishes.
struct Outputs {
    /// The desired state, from complete views only.
    desired: watch::Sender<Arc<DesiredState>>,
    /// The VIP set for the address reconciler (partial views add).
    wanted: watch::Sender<Wanted>,
    /// The virtual services for the IPVS reconciler: `None` until the first complete view.
    virtual_services: watch::Sender<Option<imbl::OrdMap<VsKey, VirtualService>>>,
}

/// How long the wanted addresses wait (only added to) for the gateway's first VIPs.
const GATEWAY_FIRST_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

async fn desired_loop(
    mut config: watch::Receiver<Arc<Config>>,
    mut snapshot: watch::Receiver<Arc<ClusterSnapshot>>,
    (mut own, mut gateway): (
        watch::Receiver<Option<BTreeSet<IpAddr>>>,
        watch::Receiver<GatewayVips>,
    ),
    out: Outputs,
    hb: Heartbeat,
) {
    let Outputs {
        desired: desired_tx,
        wanted: wanted_tx,
        virtual_services: vs_tx,
    } = out;
    let mut engine = Engine::default();
    let mut wanted: OrdSet<IpAddr> = OrdSet::new();
    // Withdrawn VIPs that keep their address and their previous virtual services until the
    // instant given (WITHDRAW_LEAD after the withdrawal went out), and the virtual services
    // last sent: the lead delays only what leaves, never the rest of the change.
    let mut lingering: BTreeMap<IpAddr, tokio::time::Instant> = BTreeMap::new();
    let mut sent_vs: OrdMap<VsKey, VirtualService> = OrdMap::new();
    let mut gateway_open = true;
    // The gateway's VIPs are known once it published them (or there is no gateway): until
    // then the wanted addresses are only added to, so a restart does not take a Gateway VIP
    // off `lo` before the gateway has computed it again.
    let mut gateway_seen = false;
    // …for at most this long: a gateway that cannot compute (its CRDs missing, a watch
    // refused) must not keep Services' VIPs on `lo` for ever.
    let gateway_deadline = tokio::time::Instant::now() + GATEWAY_FIRST_WAIT;
    loop {
        hb.turn().await;
        let cfg = config.borrow_and_update().clone();
        let snap = snapshot.borrow_and_update().clone();
        // Nothing is computed before the switch's own addresses are known: a VIP must
        // never be one of them.
        let own_addresses = own.borrow_and_update().clone();
        if let Some(own_addresses) = own_addresses {
            let me = NodeId {
                name: cfg.node_name(),
                own_addresses,
            };
            let complete = cfg.kubernetes.is_none() || snap.complete;
            let started = std::time::Instant::now();
            let before = engine.state().vips.clone();
            let recomputed = engine.update(&snap, &cfg, &me);
            let d = engine.state().clone();
            // The wanted VIP set follows the VIPs that changed.
            for change in before.diff(&d.vips) {
                match change {
                    DiffItem::Add(a, _) => {
                        wanted.insert(*a);
                    }
                    DiffItem::Remove(a, _) => {
                        wanted.remove(a);
                    }
                    DiffItem::Update { .. } => {}
                }
            }
            tracing::debug!(
                services = snap.services.len(),
                recomputed,
                complete,
                micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                "desired state computed"
            );
            // A partial view only adds VIPs; the desired state (Events, status, later BGP
            // and IPVS) is published from complete views only.
            let next = if complete {
                // Break after make: the desired state goes out first, so a VIP that leaves
                // is withdrawn from the BGP peers (the export follows it at once) and the
                // peers get WITHDRAW_LEAD to move its traffic before its virtual services
                // and address go. Everything else in the change is applied at once.
                crate::reconcile::stats::published();
                let now = tokio::time::Instant::now();
                for c in desired_tx.borrow().announcements.diff(&d.announcements) {
                    if let imbl::ordset::DiffItem::Remove(net) = c {
                        if before.contains_key(&net.addr()) {
                            lingering.entry(net.addr()).or_insert(now + WITHDRAW_LEAD);
                        }
                    }
                }
                lingering.retain(|a, until| {
                    *until > now && !d.announcements.contains(&ipnet::IpNet::from(*a))
                });
                let vs = linger_virtual_services(&d.virtual_services, &sent_vs, &lingering);
                desired_tx.send_if_modified(|cur| {
                    let changed = **cur != d;
                    if changed {
                        *cur = Arc::new(d);
                    }
                    changed
                });
                vs_tx.send_if_modified(|cur| {
                    let changed = cur.as_ref() != Some(&vs);
                    if changed {
                        *cur = Some(vs.clone());
                    }
                    changed
                });
                sent_vs = vs;
                let mut all = wanted.clone();
                all.extend(lingering.keys().copied());
                if gateway_seen || !gateway_open || tokio::time::Instant::now() >= gateway_deadline
                {
                    Wanted::Exactly(with_gateway(&all, &gateway, &me.own_addresses))
                } else {
                    Wanted::AtLeast(with_gateway(&all, &gateway, &me.own_addresses))
                }
            } else {
                Wanted::AtLeast(with_gateway(&wanted, &gateway, &me.own_addresses))
            };
            wanted_tx.send_if_modified(|cur| {
                let changed = *cur != next;
                if changed {
                    *cur = next;
                }
                changed
            });
        }
        // Wait for a change, turning (beating) at least every second.
        loop {
            tokio::select! {
                r = config.changed() => if r.is_err() { return } else { break },
                r = snapshot.changed() => if r.is_err() { return } else { break },
                r = own.changed() => if r.is_err() { return } else { break },
                r = gateway.changed(), if gateway_open => {
                    gateway_open = r.is_ok();
                    gateway_seen |= r.is_ok();
                    break;
                }
                () = tokio::time::sleep_until(gateway_deadline), if !gateway_seen && gateway_open && tokio::time::Instant::now() < gateway_deadline => break,
                () = tokio::time::sleep_until(lingering.values().min().copied().unwrap_or_else(tokio::time::Instant::now)), if !lingering.is_empty() => break,
                () = hb.idle() => hb.turn().await,
            }
        }
    }
}

/// The virtual services to program: the desired ones, except that a lingering (withdrawn)
/// VIP keeps the ones last sent for it.
fn linger_virtual_services(
    desired: &OrdMap<VsKey, VirtualService>,
    sent: &OrdMap<VsKey, VirtualService>,
    lingering: &BTreeMap<IpAddr, tokio::time::Instant>,
) -> OrdMap<VsKey, VirtualService> {
    if lingering.is_empty() {
        return desired.clone();
    }
    let mut vs = desired.clone();
    for k in desired.keys().filter(|k| lingering.contains_key(&k.vip)) {
        vs.remove(k);
    }
    for (k, v) in sent {
        if lingering.contains_key(&k.vip) {
            vs.insert(*k, v.clone());
        }
    }
    vs
}

/// The VIPs on the interface: the Services' and the Gateways' (a Gateway VIP that is one of the
/// switch's own addresses is never taken: it would be removed at stop).
fn with_gateway(
    wanted: &OrdSet<IpAddr>,
    gateway: &watch::Receiver<GatewayVips>,
    own: &BTreeSet<IpAddr>,
) -> OrdSet<IpAddr> {
    let g = gateway.borrow();
    if g.is_empty() {
        return wanted.clone();
    }
    let mut all = wanted.clone();
    all.extend(g.keys().filter(|a| !own.contains(a)).copied());
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ObjectKey, Protocol};

    fn vs(port_name: &str) -> VirtualService {
        VirtualService {
            service: ObjectKey {
                namespace: "ns".into(),
                name: "web".into(),
            },
            port_name: port_name.into(),
            destinations: Vec::new(),
            persistence: None,
            external_traffic_local: false,
            source_ranges: Vec::new(),
        }
    }

    fn key(vip: &str, port: u16) -> VsKey {
        VsKey {
            vip: vip.parse().unwrap(),
            port,
            protocol: Protocol::Tcp,
        }
    }

    #[test]
    fn a_lingering_vip_keeps_what_was_sent_for_it_and_the_rest_follows_at_once() {
        let mut sent = OrdMap::new();
        sent.insert(key("198.51.100.1", 80), vs("old"));
        sent.insert(key("198.51.100.2", 80), vs("old"));
        // The desired state: .1 withdrawn (gone), .2 changed, .3 new.
        let mut desired = OrdMap::new();
        desired.insert(key("198.51.100.2", 80), vs("new"));
        desired.insert(key("198.51.100.3", 80), vs("new"));
        let mut lingering = BTreeMap::new();
        let until = tokio::time::Instant::now();
        lingering.insert("198.51.100.1".parse().unwrap(), until);
        let out = linger_virtual_services(&desired, &sent, &lingering);
        assert_eq!(out.get(&key("198.51.100.1", 80)), Some(&vs("old")));
        assert_eq!(out.get(&key("198.51.100.2", 80)), Some(&vs("new")));
        assert_eq!(out.get(&key("198.51.100.3", 80)), Some(&vs("new")));
        // .2 withdrawn too (its endpoints went): it keeps its old virtual service.
        lingering.insert("198.51.100.2".parse().unwrap(), until);
        let out = linger_virtual_services(&desired, &sent, &lingering);
        assert_eq!(out.get(&key("198.51.100.2", 80)), Some(&vs("old")));
        // Nothing lingering: the desired state as it is.
        assert_eq!(
            linger_virtual_services(&desired, &sent, &BTreeMap::new()),
            desired
        );
    }
}
