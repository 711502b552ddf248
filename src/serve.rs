//! The serving pipeline: cluster view + configuration + this switch's own addresses →
//! `desired::compute` → the reconcilers.
//!
//! ```text
//!  watch<Arc<ClusterSnapshot>> ─┐
//!  watch<Arc<Config>> ──────────┼─► desired task ──► watch<Arc<DesiredState>> ──► Events (kube), status, `kube-gw vips`
//!  watch<own addresses> ────────┘        │                                      (later: IPVS, BGP)
//!          ▲                             └─► watch<Option<VIP set>> ──► address reconciler (netlink::addr)
//!          └──────────────── own addresses ◄──────────────────────────────┘   └─► watch<Programmed>
//! ```
//!
//! Until the first complete cluster view is in, the wanted VIP set is `None`: the address
//! reconciler adopts what it finds and removes nothing, so a restart does not flap.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use tokio::sync::watch;

use crate::config::{Config, OnShutdown};
use crate::desired::{compute, DesiredState, NodeId};
use crate::kube::report::KubeReport;
use crate::kube::snapshot::ClusterSnapshot;
use crate::netlink::addr::{self, AddrChannels, Ownership, Programmed};

/// Handles to the pipeline.
#[derive(Debug)]
pub struct Serve {
    pub desired: watch::Receiver<Arc<DesiredState>>,
    pub programmed: watch::Receiver<Programmed>,
    pub teardown: watch::Sender<bool>,
    pub addr_task: tokio::task::JoinHandle<()>,
    pub desired_task: tokio::task::JoinHandle<()>,
}

/// Starts the desired-state task and the address reconciler.
pub fn spawn(
    config: watch::Receiver<Arc<Config>>,
    snapshot: watch::Receiver<Arc<ClusterSnapshot>>,
    report: Arc<KubeReport>,
    desired_tx: watch::Sender<Arc<DesiredState>>,
) -> Serve {
    let cfg = config.borrow().clone();
    let (wanted_tx, wanted_rx) = watch::channel::<Option<BTreeSet<IpAddr>>>(None);
    let (programmed_tx, programmed_rx) = watch::channel(Programmed::default());
    let (own_tx, own_rx) = watch::channel(BTreeSet::new());
    let (teardown_tx, teardown_rx) = watch::channel(false);
    let ownership = Ownership {
        proto_supported: addr::kernel_keeps_proto(),
        pools: cfg.vip.pools.clone(),
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
        ),
        span,
    ));
    let desired = desired_tx.subscribe();
    let desired_task = tokio::spawn(desired_loop(
        config, snapshot, own_rx, report, desired_tx, wanted_tx,
    ));
    Serve {
        desired,
        programmed: programmed_rx,
        teardown: teardown_tx,
        addr_task,
        desired_task,
    }
}

async fn desired_loop(
    mut config: watch::Receiver<Arc<Config>>,
    mut snapshot: watch::Receiver<Arc<ClusterSnapshot>>,
    mut own: watch::Receiver<BTreeSet<IpAddr>>,
    report: Arc<KubeReport>,
    desired_tx: watch::Sender<Arc<DesiredState>>,
    wanted_tx: watch::Sender<Option<BTreeSet<IpAddr>>>,
) {
    loop {
        let cfg = config.borrow_and_update().clone();
        let snap = snapshot.borrow_and_update().clone();
        let me = NodeId {
            name: crate::kube::node_name(&cfg),
            own_addresses: own.borrow_and_update().clone(),
        };
        let known = cfg.kubernetes.is_none() || report.snapshots() > 0;
        if known {
            let started = std::time::Instant::now();
            let d = compute(&snap, &cfg, &me);
            tracing::debug!(
                services = snap.services.len(),
                micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                "desired state computed"
            );
            let vips: BTreeSet<IpAddr> = d.vips.keys().copied().collect();
            desired_tx.send_if_modified(|cur| {
                let changed = **cur != d;
                if changed {
                    *cur = Arc::new(d);
                }
                changed
            });
            wanted_tx.send_if_modified(|cur| {
                let changed = cur.as_ref() != Some(&vips);
                if changed {
                    *cur = Some(vips);
                }
                changed
            });
        }
        tokio::select! {
            r = config.changed() => if r.is_err() { return },
            r = snapshot.changed() => if r.is_err() { return },
            r = own.changed() => if r.is_err() { return },
        }
    }
}
