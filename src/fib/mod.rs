//! The FIB installer, for placement (a): kube-gw is the switch's only BGP speaker (a Linux
//! router or border leaf without another routing daemon), so the routes its neighbors
//! announce — as far as their `import` filters let them — go into the kernel.
//!
//! ```text
//!  watch<NeighborStatus> per neighbor ─► Loc-RIB task ─► watch<FibWant> ─► route reconciler ─► kernel
//!  (Adj-RIB-In, End-of-RIB, how the    (bgp::loc_rib: import,            (kernel.rs: proto 107,
//!   last session ended)                  best path, ECMP, GR helper)        replace, never others')
//! ```
//!
//! Inputs: the configuration at start (the neighbors' `import`, `[bgp] fib-*`), the BGP
//! speaker's status channels. Outputs: kube-gw's routes in the kernel and a [`FibReport`].
//! Runs only when some neighbor has `import`; otherwise import stays deny-all and nothing
//! here starts. Heartbeats: `loc-rib`, `fib`.
//!
//! At a stop the routes stay when the stop is a graceful restart (the forwarding state is
//! kept, as the VIPs and IPVS are; the next start adopts them and sweeps what its
//! neighbors no longer announce) and are removed otherwise.

pub mod kernel;

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::bgp::loc_rib::{Import, LocRib};
use crate::bgp::status::{NeighborStatus, Statuses};
use crate::config::Config;
use crate::lifecycle::{Heartbeat, Liveness};
use crate::model::FibWant;
use crate::reconcile::{drive, Pacing};
pub use kernel::FibReport;

/// A full read of the routing table at least this often.
const RESYNC: Duration = Duration::from_secs(30);

/// The running installer.
#[derive(Debug)]
pub struct Fib {
    pub report: watch::Receiver<FibReport>,
    stop: watch::Sender<bool>,
    keep: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Fib {
    /// Stops it: kube-gw's routes stay when `keep` (a graceful restart), else they go.
    pub async fn stop(self, keep: bool) {
        let _ = self.keep.send(keep);
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Starts the installer when a neighbor imports routes. `statuses` is the speaker's (in
/// configuration order).
pub fn spawn(cfg: &Config, statuses: &Statuses, liveness: &Liveness) -> Option<Fib> {
    let bgp = cfg.bgp.as_ref()?;
    if bgp.neighbors.iter().all(|n| n.import.is_empty()) {
        return None;
    }
    let receivers = statuses.get()?.clone();
    let imports = bgp
        .neighbors
        .iter()
        .map(|n| Import {
            filters: n.import.clone(),
            interface: n.interface.clone(),
        })
        .collect();
    let rib = LocRib::new(
        imports,
        Instant::now(),
        Duration::from_secs(u64::from(bgp.restart_time)),
    );
    let (want_tx, mut want_rx) = watch::channel(FibWant::default());
    let (report_tx, report) = watch::channel(FibReport::default());
    let (stop, mut stop_rx) = watch::channel(false);
    let (keep, keep_rx) = watch::channel(false);
    let loc_rib = tokio::spawn(run_loc_rib(
        rib,
        receivers,
        want_tx,
        stop_rx.clone(),
        liveness.register("loc-rib"),
    ));
    let settings = bgp.fib;
    let hb = liveness.register("fib");
    let installer = tokio::spawn(async move {
        let mut backoff = Backoff::new(Duration::from_millis(200), RESYNC);
        let mut routes = loop {
            match kernel::Routes::connect(settings, report_tx.clone()) {
                Ok(r) => break r,
                Err(e) => {
                    tracing::error!(error = %e, "FIB installer cannot start; retrying");
                    tokio::select! {
                        () = hb.during(backoff.wait()) => {}
                        () = crate::lifecycle::stopped(&mut stop_rx) => return,
                    }
                }
            }
        };
        let pacing = Pacing {
            name: "fib",
            resync: RESYNC,
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
        };
        drive(&mut routes, &mut want_rx, pacing, &hb, &mut stop_rx).await;
        if *keep_rx.borrow() {
            tracing::info!("keeping the installed routes (graceful restart)");
            return;
        }
        match routes.remove_all().await {
            Ok(n) => tracing::info!(routes = n, "installed routes removed"),
            Err(e) => tracing::error!(error = %e, "cannot remove the installed routes"),
        }
    });
    Some(Fib {
        report,
        stop,
        keep,
        tasks: vec![loc_rib, installer],
    })
}

/// Follows the neighbors' statuses and the stale timers; publishes what the kernel should
/// have whenever it changes.
async fn run_loc_rib(
    mut rib: LocRib,
    mut statuses: Vec<watch::Receiver<NeighborStatus>>,
    want: watch::Sender<FibWant>,
    mut stop: watch::Receiver<bool>,
    hb: Heartbeat,
) {
    for (i, s) in statuses.iter_mut().enumerate() {
        rib.observe(i, &s.borrow_and_update(), Instant::now());
    }
    loop {
        let now = Instant::now();
        rib.expire(now);
        let next = rib.want(now);
        want.send_if_modified(|w| {
            let changed = *w != next;
            *w = next;
            changed
        });
        hb.turn().await;
        let deadline = rib.next_deadline(now);
        // A neighbor that could not start has no session task: its channel is closed.
        let open: Vec<_> = statuses
            .iter_mut()
            .enumerate()
            .filter(|(_, s)| s.has_changed().is_ok())
            .map(|(i, s)| Box::pin(async move { s.changed().await.map(|()| i) }))
            .collect();
        let any = !open.is_empty();
        let changed = async move {
            if any {
                futures::future::select_all(open).await.0.ok()
            } else {
                std::future::pending().await
            }
        };
        tokio::select! {
            i = changed => if let Some(i) = i {
                rib.observe(i, &statuses[i].borrow_and_update(), Instant::now());
            },
            () = sleep_until(deadline) => {}
            () = crate::lifecycle::stopped(&mut stop) => return,
            () = hb.idle() => {}
        }
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
