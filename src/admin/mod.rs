//! The admin surfaces of a running daemon: they answer from handles on the subsystems and
//! never see the app.
//!
//! ```text
//!   CLI ─► admin socket (socket.rs) ─┐
//!                                    ├─► Admin::handle ─► views.rs: status, vips, bgp, cluster
//!   curl ─► HTTP (http.rs) ──────────┘        │             (read watch receivers and reports)
//!           /metrics /livez /readyz            └─► reload → Control; drain/undrain → Speaker;
//!                                                  log filter → LogHandle; debug-freeze → Liveness
//! ```
//!
//! - `socket`: a Unix socket (default `/run/kube-gw/admin.sock`, mode 0660) that speaks one
//!   JSON request and one JSON response per connection, newline-terminated: the types of
//!   [`crate::api`], which the CLI decodes with the same types.
//! - `http`: `/metrics` (Prometheus text format), `/livez` (every loop turned recently),
//!   `/readyz` (serving and live).
//! - `views`: the answers, built from [`Handles`].
//!
//! Status answers even when the main loop is stuck: everything here reads watch channels,
//! atomics and reports; only `reload` goes through the main loop.

pub mod http;
pub mod socket;
pub mod views;

use std::sync::Arc;

use tokio::sync::watch;

use crate::api::{DrainAnswer, Frozen, LogFilterChanged, Request, Response};
use crate::bgp::speaker::{Drained, Speaker};
use crate::control::Control;
use crate::desired::DesiredState;
use crate::ipvs::reconcile::IpvsReport;
use crate::kube::KubeHandle;
use crate::lifecycle::{Liveness, WatchdogState, LIVENESS_MAX_AGE};
use crate::metrics::{CommandLabel, Metrics};
use crate::model::Programmed;

/// What the pipeline shows the admin side.
#[derive(Debug, Clone)]
pub struct PipelineView {
    pub desired: watch::Receiver<Arc<DesiredState>>,
    pub programmed: watch::Receiver<Programmed>,
    pub ipvs: watch::Receiver<IpvsReport>,
    pub nft: watch::Receiver<crate::nft::reconcile::NftReport>,
    /// The VIP interface (from the configuration at start).
    pub interface: String,
}

/// Everything the admin side reads or asks.
#[derive(Debug, Clone)]
pub struct Handles {
    pub control: Control,
    pub liveness: Liveness,
    pub metrics: Arc<Metrics>,
    pub kube: KubeHandle,
    pub pipeline: PipelineView,
    pub bgp: Arc<Speaker>,
    /// The FIB installer's report, when a neighbor imports routes.
    pub fib: Option<watch::Receiver<crate::fib::FibReport>>,
    /// The gateway's report and state, with `[gateway]`.
    pub gateway: Option<views::GatewayHandles>,
    pub watchdog: watch::Receiver<WatchdogState>,
    /// Where the admin socket and the HTTP listener are (for status).
    pub socket: String,
    pub http: String,
    /// Accept test-only requests (`debug-freeze`). Set by `KUBE_GW_TEST_HOOKS=1`.
    pub test_hooks: bool,
}

/// The admin side: answers requests from its handles.
#[derive(Debug)]
pub struct Admin {
    h: Handles,
    since: views::Since,
}

impl Admin {
    pub fn new(h: Handles) -> Arc<Self> {
        Arc::new(Self {
            h,
            since: views::Since::default(),
        })
    }

    pub fn metrics(&self) -> &Metrics {
        &self.h.metrics
    }

    pub fn liveness(&self) -> &Liveness {
        &self.h.liveness
    }

    /// Why `/readyz` should fail, if it should.
    pub fn not_ready_reason(&self) -> Option<String> {
        not_ready_reason(&self.h.control, &self.h.liveness)
    }

    /// Answers one admin request.
    pub async fn handle(&self, req: Request) -> Response {
        self.h
            .metrics
            .admin_requests
            .get_or_create(&CommandLabel {
                command: req.name().into(),
            })
            .inc();
        let h = &self.h;
        match req {
            Request::Status => Response::ok(&self.status()),
            Request::Vips => {
                let cfg = h.control.config();
                let alloc = h.kube.allocations.borrow().clone();
                let mut v = views::vips(&h.pipeline);
                v.allocations = views::allocations(&alloc, &cfg.vip.pools);
                Response::ok(&v)
            }
            Request::BgpNeighbors => Response::ok(&views::bgp_neighbors(&h.bgp)),
            Request::BgpRoutes { neighbor } => match views::bgp_routes(&h.bgp, neighbor.as_deref())
            {
                Ok(r) => Response::ok(&r),
                Err(e) => Response::err(e),
            },
            Request::Cluster => Response::ok(&views::cluster(&h.kube.snapshot.borrow())),
            Request::Bfd => Response::ok(&views::bfd(&h.bgp)),
            Request::Gateway => Response::ok(&views::gateway(h.gateway.as_ref())),
            Request::BfdAdmin { neighbor, down } => {
                if h.bgp.bfd_admin(&neighbor, down).await {
                    tracing::info!(%neighbor, down, "BFD session set administratively through the admin socket");
                    Response::ok(&views::bfd(&h.bgp))
                } else {
                    Response::err(format!(
                        "{neighbor} has no BFD session; `kube-gw bfd` lists them (set bfd = true on the neighbor)"
                    ))
                }
            }
            Request::SetLogLevel { filter } => match h.control.log().set(&filter) {
                Ok(previous) => {
                    tracing::info!(%filter, %previous, "log filter changed through the admin socket");
                    Response::ok(&LogFilterChanged {
                        previous,
                        current: filter,
                    })
                }
                Err(e) => Response::err(e),
            },
            Request::Drain => {
                if !h.bgp.has_neighbors() {
                    return Response::err("no BGP neighbors are configured; nothing to drain");
                }
                Response::ok(&match h.bgp.drain().await {
                    Drained::Done { drain_time } => DrainAnswer::Drained { drain_time },
                    Drained::Already => DrainAnswer::AlreadyDrained,
                    Drained::Undrained => DrainAnswer::Undrained,
                })
            }
            Request::Undrain => {
                if !h.bgp.has_neighbors() {
                    return Response::err("no BGP neighbors are configured; nothing to undrain");
                }
                Response::ok(&if h.bgp.undrain() {
                    DrainAnswer::Undrained
                } else {
                    DrainAnswer::NotDrained
                })
            }
            Request::Reload => h.control.request_reload().await,
            Request::DebugFreeze { seconds, loop_name } => {
                if !h.test_hooks {
                    return Response::err(
                        "debug-freeze is a test hook; start the daemon with KUBE_GW_TEST_HOOKS=1 to use it",
                    );
                }
                let name = loop_name.unwrap_or_else(|| "main".into());
                match h
                    .liveness
                    .freeze(&name, std::time::Duration::from_secs(seconds))
                {
                    Ok(()) => Response::ok(&Frozen {
                        loop_name: name,
                        seconds,
                    }),
                    Err(e) => Response::err(e),
                }
            }
        }
    }

    /// The status the CLI shows.
    pub fn status(&self) -> crate::api::Status {
        views::status(&self.h, &self.since)
    }
}

/// Why the daemon is not ready, if it is not: not serving yet (or any more), or a loop is
/// stuck.
pub fn not_ready_reason(control: &Control, liveness: &Liveness) -> Option<String> {
    if !control.ready() {
        let state = serde_json::to_value(control.state())
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        return Some(format!("not ready: {state}"));
    }
    let stale = liveness.stale(LIVENESS_MAX_AGE);
    (!stale.is_empty()).then(|| format!("not ready: stuck loops: {}", stale.join(", ")))
}
