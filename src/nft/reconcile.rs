//! The nftables reconciler: the one writer of `inet kube-gw`, as the driver
//! ([`crate::reconcile`]) runs it.
//!
//! - Input: `watch<Option<Arc<Want>>>` — `None` until the first complete desired state, so a
//!   restart leaves the previous table (and with it the firewall and the NAT) in force until
//!   kube-gw knows what it wants.
//! - A full pass (at start, after a failure, every [`RESYNC`]) writes the whole table in one
//!   transaction; other passes delete and add only the set elements that changed.
//! - Output: `watch<NftReport>` (`kube-gw vips`, status).
//! - The table stays when kube-gw stops: addresses kept on `lo` for a graceful restart stay
//!   filtered and NATed.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Want;
use crate::backoff::Backoff;
use crate::lifecycle::Heartbeat;
use crate::reconcile::{drive, Pacing, Reconciler};

/// A full rewrite at least this often (repairs a table changed behind kube-gw's back).
pub const RESYNC: Duration = Duration::from_secs(300);

/// What the reconciler reports.
#[derive(Debug, Clone, Default)]
pub struct NftReport {
    /// The table in the kernel is the one wanted.
    pub in_sync: bool,
    pub passes: u64,
    /// Sets rewritten by partial passes (not whole tables).
    pub set_updates: u64,
    pub error: Option<String>,
    /// What was last written.
    pub applied: Option<Arc<Want>>,
}

struct NftReconciler {
    applied: Option<Arc<Want>>,
    report: watch::Sender<NftReport>,
}

impl Reconciler for NftReconciler {
    type Want = Option<Arc<Want>>;

    async fn pass(&mut self, want: &Self::Want, full: bool) -> Result<(), String> {
        let Some(want) = want else {
            return Ok(());
        };
        if !full && self.applied.as_ref() == Some(want) {
            return Ok(());
        }
        let text = match (&self.applied, full) {
            (Some(old), false) => super::update(old, want),
            _ => None,
        };
        let partial = text.is_some();
        let text = text.unwrap_or_else(|| super::render(want));
        let result = if text.is_empty() {
            Ok(())
        } else {
            tokio::task::spawn_blocking(move || super::apply(&text))
                .await
                .map_err(|e| format!("the nft pass panicked: {e}"))?
                .map_err(|e| e.to_string())
        };
        match result {
            Ok(()) => {
                self.applied = Some(want.clone());
                self.report.send_modify(|r| {
                    r.in_sync = true;
                    r.passes += 1;
                    r.set_updates += u64::from(partial);
                    r.error = None;
                    r.applied = Some(want.clone());
                });
                Ok(())
            }
            Err(e) => {
                let e = format!("the nftables table {}: {e}", super::TABLE);
                self.applied = None;
                self.report.send_modify(|r| {
                    r.in_sync = false;
                    r.passes += 1;
                    r.error = Some(e.clone());
                });
                Err(e)
            }
        }
    }
}

/// Runs the reconciler until `want` closes.
pub async fn run(
    mut want: watch::Receiver<Option<Arc<Want>>>,
    report: watch::Sender<NftReport>,
    hb: Heartbeat,
) {
    let mut r = NftReconciler {
        applied: None,
        report,
    };
    let pacing = Pacing {
        name: "nft",
        resync: RESYNC,
        backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(10)),
    };
    // Never stopped from outside: the table outlives the daemon.
    let (_keep, mut stop) = watch::channel(false);
    drive(&mut r, &mut want, pacing, &hb, &mut stop).await;
}
