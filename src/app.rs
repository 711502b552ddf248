//! Wiring and lifecycle of the running daemon (`kube-gw run`).
//!
//! ```text
//!   signals (HUP, TERM, INT) ──────────┐
//!                                      ▼
//!   admin socket ──MainCmd (mpsc)──► main loop ──► watch<Arc<Config>> ──► subsystems
//!     │  (reads Shared directly)       │  owns: reloads, shutdown order      (later: kube,
//!     ▼                                │  beats: "main" heartbeat             desired, VIPs,
//!   CLI: status, log-level, reload     ▼                                      IPVS, BGP)
//!                                   Shared ◄── watchdog task: WATCHDOG=1 only while every
//!   HTTP /metrics /livez /readyz ──► (state,     heartbeat is fresh
//!                                    metrics,
//!                                    liveness)
//! ```
//!
//! Who owns what: the main loop owns the configuration (it alone reloads and publishes it)
//! and the order of shutdown; [`Shared`] holds what the admin surfaces read (state, ready
//! flag, heartbeats, metrics, component table), so `kube-gw status` answers even when the
//! main loop is stuck. Subsystems will subscribe to the `watch` channel for the latest
//! configuration and register their teardown in the [`ShutdownPlan`] phase that fits.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use sd_notify::NotifyState;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot, watch};

use crate::admin::metrics::{CommandLabel, Metrics, ResultLabel};
use crate::admin::protocol::{
    Component, ConfigStatus, DaemonState, ReloadRecord, Request, Response, Status,
};
use crate::config::{self, Config};
use crate::lifecycle::{self, Liveness, Phase, ShutdownPlan};
use crate::telemetry::LogHandle;

/// The main loop turns at least this often (its heartbeat).
const TICK: Duration = Duration::from_millis(500);
/// How long one shutdown hook may take.
const HOOK_TIMEOUT: Duration = Duration::from_secs(15);

/// What `run` needs besides the configuration.
#[derive(Debug)]
pub struct Options {
    pub config_path: PathBuf,
    /// Accept test-only admin requests (`debug-freeze`). Set by `KUBE_GW_TEST_HOOKS=1`.
    pub test_hooks: bool,
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    AdminSocket(#[from] crate::admin::socket::BindError),
    #[error("cannot listen for HTTP on {addr}: {source}; free the port or change [admin] metrics")]
    Http {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
}

enum MainCmd {
    Reload(oneshot::Sender<Response>),
    Freeze(Duration),
}

/// What `kube-gw drain` and `undrain` act on.
struct BgpControl {
    /// Re-announce everything with GRACEFUL_SHUTDOWN.
    drain: watch::Sender<bool>,
    /// Withdraw, close and stay closed.
    paused: watch::Sender<bool>,
}

struct ComponentEntry {
    kind: &'static str,
    state: String,
    since: Instant,
    info: String,
}

/// State the admin surfaces read; written by the main loop and the tasks it starts.
pub struct Shared {
    started: Instant,
    config_path: PathBuf,
    config: watch::Sender<Arc<Config>>,
    generation: AtomicU64,
    last_reload: Mutex<Option<(String, Instant, Vec<String>)>>,
    state: Mutex<DaemonState>,
    ready: AtomicBool,
    pub(crate) liveness: Liveness,
    log: LogHandle,
    pub(crate) metrics: Metrics,
    components: Mutex<BTreeMap<&'static str, ComponentEntry>>,
    test_hooks: bool,
    main_tx: mpsc::Sender<MainCmd>,
    kube: std::sync::OnceLock<crate::kube::KubeHandle>,
    serving: std::sync::OnceLock<Serving>,
    /// One status per BGP neighbor (sessions only; routes come with the speaker).
    bgp: crate::bgp::session::Statuses,
    /// `kube-gw drain` / `undrain`: the BGP sessions' drain and pause signals.
    bgp_control: std::sync::OnceLock<BgpControl>,
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

/// What the admin surfaces read of the serving pipeline.
#[derive(Debug)]
struct Serving {
    desired: watch::Receiver<Arc<crate::desired::DesiredState>>,
    programmed: watch::Receiver<crate::netlink::addr::Programmed>,
    ipvs: watch::Receiver<crate::ipvs::reconcile::IpvsReport>,
    interface: String,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("config_path", &self.config_path)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    fn set_state(&self, s: DaemonState) {
        *lock(&self.state) = s;
    }

    fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
        self.metrics.ready.set(i64::from(ready));
    }

    fn set_component(&self, name: &'static str, kind: &'static str, state: &str, info: String) {
        let mut c = lock(&self.components);
        let since = match c.get(name) {
            Some(e) if e.state == state => e.since,
            _ => Instant::now(),
        };
        c.insert(
            name,
            ComponentEntry {
                kind,
                state: state.to_string(),
                since,
                info,
            },
        );
    }

    /// Why `/readyz` should fail, if it should.
    pub(crate) fn not_ready_reason(&self) -> Option<String> {
        if !self.ready.load(Ordering::SeqCst) {
            return Some(format!("not ready: {:?}", *lock(&self.state)).to_lowercase());
        }
        let stale = self.liveness.stale(crate::admin::http::LIVENESS_MAX_AGE);
        (!stale.is_empty()).then(|| format!("not ready: stuck loops: {}", stale.join(", ")))
    }

    /// Answers one admin request.
    pub(crate) async fn handle_admin(&self, req: Request) -> Response {
        let name = match &req {
            Request::Status => "status",
            Request::SetLogLevel { .. } => "set-log-level",
            Request::Reload => "reload",
            Request::Cluster => "cluster",
            Request::Vips => "vips",
            Request::BgpNeighbors => "bgp-neighbors",
            Request::BgpRoutes { .. } => "bgp-routes",
            Request::DebugFreeze { .. } => "debug-freeze",
            Request::Drain => "drain",
            Request::Undrain => "undrain",
        };
        self.metrics
            .admin_requests
            .get_or_create(&CommandLabel {
                command: name.into(),
            })
            .inc();
        match req {
            Request::Status => match serde_json::to_value(self.status()) {
                Ok(v) => Response::ok(v),
                Err(e) => Response::err(format!("cannot encode the status: {e}")),
            },
            Request::Vips => match serde_json::to_value(self.vips()) {
                Ok(v) => Response::ok(v),
                Err(e) => Response::err(format!("cannot encode the VIPs: {e}")),
            },
            Request::BgpNeighbors => match serde_json::to_value(self.bgp_neighbors()) {
                Ok(v) => Response::ok(v),
                Err(e) => Response::err(format!("cannot encode the neighbors: {e}")),
            },
            Request::BgpRoutes { neighbor } => {
                let all = self.bgp_neighbors_status();
                if let Some(n) = &neighbor {
                    if !all.iter().any(|s| s.name() == *n) {
                        return Response::err(format!(
                            "{n} is not a configured BGP neighbor; `kube-gw bgp neighbors` lists them"
                        ));
                    }
                }
                let routes = crate::admin::protocol::BgpRoutes {
                    neighbors: all
                        .iter()
                        .filter(|s| neighbor.as_ref().is_none_or(|n| s.name() == *n))
                        .map(|s| crate::admin::protocol::BgpRoutesOf {
                            neighbor: s.name(),
                            sent: s.adj_rib_out.iter().map(ToString::to_string).collect(),
                            received: s.adj_rib_in.iter().map(ToString::to_string).collect(),
                        })
                        .collect(),
                };
                match serde_json::to_value(routes) {
                    Ok(v) => Response::ok(v),
                    Err(e) => Response::err(format!("cannot encode the routes: {e}")),
                }
            }
            Request::Cluster => match self.kube.get() {
                None => Response::err("the Kubernetes side has not started"),
                Some(k) => {
                    let snap = k.snapshot.borrow().clone();
                    match serde_json::to_value(&*snap) {
                        Ok(v) => Response::ok(v),
                        Err(e) => Response::err(format!("cannot encode the cluster view: {e}")),
                    }
                }
            },
            Request::SetLogLevel { filter } => match self.log.set(&filter) {
                Ok(previous) => {
                    tracing::info!(%filter, %previous, "log filter changed through the admin socket");
                    Response::ok(serde_json::json!({ "previous": previous, "current": filter }))
                }
                Err(e) => Response::err(e),
            },
            Request::Drain => self.drain().await,
            Request::Undrain => {
                let Some(c) = self.bgp_control.get().filter(|_| self.has_neighbors()) else {
                    return Response::err("no BGP neighbors are configured; nothing to undrain");
                };
                let was = *c.paused.borrow() || *c.drain.borrow();
                let _ = c.drain.send(false);
                let _ = c.paused.send(false);
                tracing::info!("undrain: the BGP sessions start again");
                Response::ok(serde_json::json!({ "state": "undrained", "was_drained": was }))
            }
            Request::Reload => {
                let (tx, rx) = oneshot::channel();
                if self.main_tx.send(MainCmd::Reload(tx)).await.is_err() {
                    return Response::err("the daemon is stopping; not reloading");
                }
                match tokio::time::timeout(Duration::from_secs(30), rx).await {
                    Ok(Ok(r)) => r,
                    _ => Response::err("the main loop did not answer within 30 s; see the log"),
                }
            }
            Request::DebugFreeze { seconds } => {
                if !self.test_hooks {
                    return Response::err(
                        "debug-freeze is a test hook; start the daemon with KUBE_GW_TEST_HOOKS=1 to use it",
                    );
                }
                match self
                    .main_tx
                    .try_send(MainCmd::Freeze(Duration::from_secs(seconds)))
                {
                    Ok(()) => Response::ok(serde_json::json!({ "frozen_seconds": seconds })),
                    Err(e) => Response::err(format!("cannot reach the main loop: {e}")),
                }
            }
        }
    }

    /// The status the CLI shows.
    pub fn status(&self) -> Status {
        let now = Instant::now();
        let mut components: Vec<Component> = lock(&self.components)
            .iter()
            .map(|(name, e)| Component {
                name: (*name).to_string(),
                kind: e.kind.to_string(),
                state: e.state.clone(),
                since_seconds: now.duration_since(e.since).as_secs(),
                info: e.info.clone(),
            })
            .collect();
        for (name, age) in self.liveness.ages() {
            let stuck = age > crate::admin::http::LIVENESS_MAX_AGE;
            components.push(Component {
                name: format!("{name}-loop"),
                kind: "loop".into(),
                state: if stuck { "stuck" } else { "up" }.into(),
                since_seconds: if stuck { age.as_secs() } else { 0 },
                info: format!("last turn {} ms ago", age.as_millis()),
            });
        }
        if let Some(k) = self.kube.get() {
            components.extend(kube_components(&k.report.view()));
        }
        if let Some(sv) = self.serving.get() {
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
            components.push(Component {
                name: "vips".into(),
                kind: "netlink".into(),
                state: reconciler_state(p.error.is_some(), done == wanted).into(),
                since_seconds: 0,
                info,
            });
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
                    "[ipvs] enabled = false: VIPs are announced without kube-gw's data plane"
                        .to_string(),
                )
            } else {
                (reconciler_state(r.error.is_some(), r.in_sync), info)
            };
            components.push(Component {
                name: "ipvs".into(),
                kind: "genetlink".into(),
                state: state.into(),
                since_seconds: 0,
                info,
            });
        }
        for rx in self.bgp.get().into_iter().flatten() {
            let n = rx.borrow().clone();
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
            components.push(Component {
                name: format!("bgp/{}", n.name()),
                kind: "bgp".into(),
                state,
                since_seconds: n.up_since.map_or(0, |t| t.elapsed().as_secs()),
                info,
            });
        }
        components.sort_by(|a, b| a.name.cmp(&b.name));
        let last_reload = lock(&self.last_reload)
            .as_ref()
            .map(|(result, at, messages)| ReloadRecord {
                result: result.clone(),
                seconds_ago: now.duration_since(*at).as_secs(),
                messages: messages.clone(),
            });
        Status {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            state: *lock(&self.state),
            ready: self.not_ready_reason().is_none(),
            uptime_seconds: now.duration_since(self.started).as_secs(),
            config: ConfigStatus {
                path: self.config_path.display().to_string(),
                generation: self.generation.load(Ordering::SeqCst),
                last_reload,
            },
            log_filter: self.log.filter(),
            degraded: self.kube.get().and_then(|k| k.report.degraded()),
            cluster: self.kube.get().map(|k| {
                let s = k.snapshot.borrow();
                crate::admin::protocol::ClusterCounts {
                    services: s.services.len(),
                    endpoint_slices: s.endpoint_slices.len(),
                    nodes: s.nodes.len(),
                    snapshots: k.report.snapshots(),
                }
            }),
            components,
        }
    }

    /// Every BGP neighbor's session status.
    fn bgp_neighbors_status(&self) -> Vec<crate::bgp::session::NeighborStatus> {
        self.bgp
            .get()
            .into_iter()
            .flatten()
            .map(|rx| rx.borrow().clone())
            .collect()
    }

    fn has_neighbors(&self) -> bool {
        self.bgp.get().is_some_and(|n| !n.is_empty())
    }

    /// `kube-gw drain`: every route re-announced with GRACEFUL_SHUTDOWN (RFC 8326), then
    /// after `bgp.drain-time` withdrawn and the sessions closed with Cease / Administrative
    /// Shutdown "maintenance: kube-gw drain". They stay closed until `kube-gw undrain`; the
    /// addresses and IPVS stay as they are, so flows still arriving are served.
    async fn drain(&self) -> Response {
        let Some(c) = self.bgp_control.get().filter(|_| self.has_neighbors()) else {
            return Response::err("no BGP neighbors are configured; nothing to drain");
        };
        if *c.paused.borrow() || *c.drain.borrow() {
            return Response::ok(serde_json::json!({ "state": "drained", "already": true }));
        }
        let secs = self
            .config
            .borrow()
            .bgp
            .as_ref()
            .map_or(0, |b| b.drain_time);
        tracing::info!(
            drain_time = secs,
            "drain: routes re-announced with GRACEFUL_SHUTDOWN"
        );
        let _ = c.drain.send(true);
        tokio::time::sleep(Duration::from_secs(u64::from(secs))).await;
        if !*c.drain.borrow() {
            // `kube-gw undrain` came during the drain time: nothing is withdrawn.
            return Response::ok(serde_json::json!({ "state": "undrained" }));
        }
        let _ = c.paused.send(true);
        // The sessions withdraw and close; wait (briefly) until each is down.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline
            && self
                .bgp_neighbors_status()
                .iter()
                .any(|n| n.state != crate::bgp::fsm::State::Idle)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::info!("drain: routes withdrawn, BGP sessions closed until `kube-gw undrain`");
        Response::ok(serde_json::json!({ "state": "drained", "drain_time": secs }))
    }

    /// The BGP neighbors as `kube-gw bgp neighbors` shows them.
    pub fn bgp_neighbors(&self) -> Vec<crate::admin::protocol::BgpNeighborRow> {
        self.bgp_neighbors_status()
            .into_iter()
            .map(|n| crate::admin::protocol::BgpNeighborRow {
                address: n.name(),
                state: format!("{:?}", n.state).to_lowercase(),
                peer_as: n.peer_as,
                hold_time: n.hold_time,
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

    /// VIPs with their Services and state, and the refused addresses.
    pub fn vips(&self) -> crate::admin::protocol::Vips {
        use crate::admin::protocol::{RefusedAddress, VipRow};
        let Some(sv) = self.serving.get() else {
            return crate::admin::protocol::Vips::default();
        };
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
                    .map(|k| k.to_string())
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
        crate::admin::protocol::Vips {
            interface: sv.interface.clone(),
            vips,
            refused,
            error: p.error.clone(),
        }
    }

    /// A receiver of the configuration in force (subsystems hold one).
    pub fn subscribe_config(&self) -> watch::Receiver<Arc<Config>> {
        self.config.subscribe()
    }

    fn record_reload(&self, result: &str, messages: Vec<String>) {
        *lock(&self.last_reload) = Some((result.to_string(), Instant::now(), messages));
        self.metrics
            .config_reloads
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
    }

    fn systemd_status(&self) -> String {
        let g = self.generation.load(Ordering::SeqCst);
        match lock(&self.last_reload).as_ref() {
            Some((r, _, m)) if r == "rejected" => format!(
                "running; config generation {g}; last reload rejected ({} problems), see journal",
                m.len()
            ),
            _ => format!("running; config generation {g}"),
        }
    }
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
    out
}

/// Runs the daemon until SIGTERM/SIGINT, then stops it in order.
pub async fn run(config: Config, opts: Options, log: LogHandle) -> Result<(), RunError> {
    lifecycle::status("starting");
    let mut hup = signal(SignalKind::hangup()).map_err(RunError::Signals)?;
    let mut term = signal(SignalKind::terminate()).map_err(RunError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(RunError::Signals)?;

    let (main_tx, mut main_rx) = mpsc::channel(16);
    let start_unix = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
    let admin_path = config.admin.socket.clone();
    let http_addr = config.admin.metrics;
    let kube_report = Arc::new(crate::kube::report::KubeReport::default());
    let bgp: crate::bgp::session::Statuses = Arc::default();
    let shared = Arc::new(Shared {
        started: Instant::now(),
        config_path: opts.config_path,
        config: watch::Sender::new(Arc::new(config)),
        generation: AtomicU64::new(1),
        last_reload: Mutex::new(None),
        state: Mutex::new(DaemonState::Starting),
        ready: AtomicBool::new(false),
        liveness: Liveness::default(),
        log,
        metrics: Metrics::new(
            env!("CARGO_PKG_VERSION"),
            start_unix,
            kube_report.clone(),
            bgp.clone(),
        ),
        components: Mutex::new(BTreeMap::new()),
        test_hooks: opts.test_hooks,
        main_tx,
        kube: std::sync::OnceLock::new(),
        serving: std::sync::OnceLock::new(),
        bgp,
        bgp_control: std::sync::OnceLock::new(),
    });
    shared.metrics.config_generation.set(1);

    let (stop_tx, stop_rx) = watch::channel(false);
    let admin_listener = crate::admin::socket::bind(&admin_path).await?;
    let http_listener = tokio::net::TcpListener::bind(http_addr)
        .await
        .map_err(|source| RunError::Http {
            addr: http_addr,
            source,
        })?;
    let http_addr = http_listener.local_addr().unwrap_or(http_addr);
    shared.set_component("admin", "unix", "up", admin_path.display().to_string());
    shared.set_component("http", "tcp", "up", format!("http://{http_addr}/metrics"));
    let admin_task = tokio::spawn(crate::admin::socket::serve(
        admin_listener,
        admin_path.clone(),
        shared.clone(),
        stop_rx.clone(),
    ));
    let http_task = tokio::spawn(crate::admin::http::serve(
        http_listener,
        shared.clone(),
        stop_rx.clone(),
    ));
    let watchdog_task = tokio::spawn(watchdog(shared.clone(), stop_rx.clone()));
    let (kube_stop_tx, kube_stop_rx) = watch::channel(false);
    let health: crate::kube::HealthFn = {
        let weak = Arc::downgrade(&shared);
        Arc::new(move || match weak.upgrade() {
            Some(s) => s
                .not_ready_reason()
                .or_else(|| s.kube.get().and_then(|k| k.report.degraded())),
            None => Some("kube-gw is stopping".into()),
        })
    };
    let (desired_tx, desired_rx) =
        watch::channel(Arc::new(crate::desired::DesiredState::default()));
    let (programmed_tx, programmed_rx) =
        watch::channel(crate::netlink::addr::Programmed::default());
    let (kube_handle, kube_task) = crate::kube::spawn(
        shared.subscribe_config(),
        kube_report.clone(),
        health,
        crate::kube::Serving {
            desired: desired_rx,
            programmed: programmed_rx,
        },
        kube_stop_rx,
    );
    let serve = crate::serve::spawn(
        shared.subscribe_config(),
        kube_handle.snapshot.clone(),
        desired_tx,
        programmed_tx,
    );
    let _ = shared.kube.set(kube_handle);
    let _ = shared.serving.set(Serving {
        desired: serve.desired.clone(),
        programmed: serve.programmed.clone(),
        ipvs: serve.ipvs.clone(),
        interface: shared.config.borrow().vip.interface.clone(),
    });

    // BGP sessions, one per neighbor (read at start; a reload does not change them yet).
    let (bgp_stop_tx, bgp_stop_rx) = watch::channel(false);
    let (bgp_drain_tx, bgp_drain_rx) = watch::channel(false);
    let (bgp_pause_tx, bgp_pause_rx) = watch::channel(false);
    let _ = shared.bgp_control.set(BgpControl {
        drain: bgp_drain_tx.clone(),
        paused: bgp_pause_tx,
    });
    let bgp_tasks = {
        let cfg = shared.config.borrow().clone();
        let mut statuses = Vec::new();
        let mut tasks = Vec::new();
        let peers = crate::bgp::session::peers(&cfg);
        let mut routes = std::collections::HashMap::new();
        // Every started neighbor's MD5 key (or none), in configuration order.
        let mut keys = Vec::new();
        for (peer, problem) in peers {
            let mut st =
                crate::bgp::session::NeighborStatus::new(peer.address, peer.interface.clone());
            if let Some(p) = problem {
                tracing::warn!(neighbor = %peer.name, "{p}");
                st.last_error = Some(p);
                let (_tx, rx) = watch::channel(st);
                statuses.push(rx);
                continue;
            }
            let (tx, rx) = watch::channel(st);
            statuses.push(rx);
            let (conn_tx, conn_rx) = mpsc::channel(2);
            // A link-local neighbor's connections are recognised by the interface they come
            // in on (looked up when they arrive); the others by address.
            keys.push((peer.address, peer.password.clone()));
            routes.insert(
                (peer.address, peer.interface.clone()),
                crate::bgp::listen::Route {
                    sessions: conn_tx,
                    ttl_security: peer.ttl_security,
                },
            );
            tasks.push(tokio::spawn(tracing::Instrument::instrument(
                crate::bgp::session::run(
                    peer.clone(),
                    tx,
                    bgp_stop_rx.clone(),
                    serve.exported.clone(),
                    bgp_drain_rx.clone(),
                    conn_rx,
                    bgp_pause_rx.clone(),
                ),
                tracing::info_span!("bgp", neighbor = %peer.name),
            )));
        }
        let _ = shared.bgp.set(statuses);
        // The neighbors' own connections, on port 179.
        let listen = cfg.bgp.as_ref().is_some_and(|b| b.listen);
        if listen && !routes.is_empty() {
            let gtsm = routes.values().any(|r| r.ttl_security);
            let (listeners, problems) = crate::bgp::listen::bind(179, &keys, gtsm);
            let info = if problems.is_empty() {
                "port 179, IPv4 and IPv6".to_string()
            } else {
                format!(
                    "{}; passive neighbors cannot connect, kube-gw still connects to the others \
                     (is another BGP daemon running here?)",
                    problems.join("; ")
                )
            };
            let state = if problems.is_empty() {
                "listening"
            } else {
                "degraded"
            };
            for p in &problems {
                tracing::warn!("BGP listener: {p}");
            }
            shared.set_component("bgp-listener", "bgp", state, info);
            tasks.push(tokio::spawn(crate::bgp::listen::run(
                listeners,
                routes,
                bgp_stop_rx.clone(),
            )));
        }
        tasks
    };

    let heartbeat = shared.liveness.register("main");
    shared.set_state(DaemonState::Running);
    shared.set_ready(true);
    lifecycle::notify(&[NotifyState::Ready]);
    lifecycle::status(&shared.systemd_status());
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        admin = %admin_path.display(),
        http = %http_addr,
        "kube-gw started"
    );

    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = hup.recv() => {
                tracing::info!("SIGHUP received; reloading the configuration");
                reload(&shared).await;
            }
            _ = term.recv() => {
                tracing::info!("SIGTERM received; stopping");
                break;
            }
            _ = int.recv() => {
                tracing::info!("SIGINT received; stopping");
                break;
            }
            Some(cmd) = main_rx.recv() => match cmd {
                MainCmd::Reload(reply) => {
                    tracing::info!("reload requested through the admin socket");
                    let _ = reply.send(reload(&shared).await);
                }
                MainCmd::Freeze(d) => {
                    tracing::warn!(seconds = d.as_secs(), "test hook: blocking the main loop");
                    // Deliberately blocks this worker thread: that is what a stuck loop is.
                    std::thread::sleep(d);
                    tracing::warn!("test hook: main loop resumed");
                }
            },
        }
        heartbeat.beat();
    }

    shared.set_state(DaemonState::Stopping);
    shared.set_ready(false);
    shared.liveness.unregister("main");
    lifecycle::notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);

    let mut plan = ShutdownPlan::new(HOOK_TIMEOUT);
    let drain_time = shared
        .config
        .borrow()
        .bgp
        .as_ref()
        .map_or(0, |b| b.drain_time);
    let up = shared
        .bgp
        .get()
        .into_iter()
        .flatten()
        .any(|s| s.borrow().up_since.is_some());
    plan.register(
        Phase::BgpDrain,
        "bgp-graceful-shutdown",
        move || async move {
            // RFC 8326: re-announce with GRACEFUL_SHUTDOWN and give the fabric time to move
            // the traffic to the other switches (only if a session is up to tell).
            let _ = bgp_drain_tx.send(true);
            if up && drain_time > 0 {
                tracing::info!(
                    seconds = drain_time,
                    "draining: routes carry GRACEFUL_SHUTDOWN"
                );
                tokio::time::sleep(Duration::from_secs(
                    u64::from(drain_time).min(HOOK_TIMEOUT.as_secs() - 1),
                ))
                .await;
            }
        },
    );
    plan.register(Phase::BgpWithdraw, "bgp-sessions", move || async move {
        // Each session sends Cease / Administrative Shutdown and closes.
        let _ = bgp_stop_tx.send(true);
        for t in bgp_tasks {
            let _ = t.await;
        }
    });
    // BGP drain and withdraw, then data-plane teardown, register here as those subsystems
    // land; the admin surfaces close last so status answers during the drain.
    let crate::serve::Serve {
        teardown,
        addr_task,
        desired_task,
        ipvs_task,
        ..
    } = serve;
    plan.register(
        Phase::DataplaneTeardown,
        "vip-addresses",
        move || async move {
            desired_task.abort();
            // kube-gw's IPVS services stay: established flows are not cut, and the next
            // start adopts them without a flap.
            ipvs_task.abort();
            let _ = teardown.send(true);
            let _ = addr_task.await;
        },
    );
    plan.register(Phase::Close, "kubernetes", move || async move {
        let _ = kube_stop_tx.send(true);
        let _ = kube_task.await;
    });
    let stop = stop_tx.clone();
    plan.register(Phase::Close, "admin-and-http", move || async move {
        let _ = stop.send(true);
        let _ = admin_task.await;
        let _ = http_task.await;
        let _ = watchdog_task.await;
    });
    let outcomes = plan.run().await;
    let abandoned = outcomes.iter().filter(|o| !o.completed).count();
    tracing::info!(hooks = outcomes.len(), abandoned, "kube-gw stopped");
    Ok(())
}

/// Re-reads the configuration; keeps the one in force if the new one is invalid.
async fn reload(shared: &Shared) -> Response {
    shared.set_state(DaemonState::Reloading);
    let mut states = vec![NotifyState::Reloading];
    if let Ok(m) = NotifyState::monotonic_usec_now() {
        states.push(m);
    }
    lifecycle::notify(&states);
    let response = match config::load(&shared.config_path) {
        Err(e) => {
            let messages: Vec<String> = e.diagnostics.iter().map(ToString::to_string).collect();
            let generation = shared.generation.load(Ordering::SeqCst);
            for m in &messages {
                tracing::error!(problem = %m, "configuration problem");
            }
            tracing::error!(
                problems = messages.len(),
                generation,
                "the new configuration is invalid; keeping the one in force"
            );
            shared.record_reload("rejected", messages.clone());
            Response {
                ok: false,
                result: Some(serde_json::json!({ "result": "rejected", "messages": messages })),
                error: Some(format!(
                    "the configuration is invalid; generation {generation} stays in force"
                )),
            }
        }
        Ok(loaded) => {
            let mut notes: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
            for w in &notes {
                tracing::warn!(problem = %w, "configuration warning");
            }
            let current = shared.config.borrow().clone();
            if *current == loaded.config {
                tracing::info!("the configuration is unchanged");
                shared.record_reload("unchanged", notes.clone());
                Response::ok(serde_json::json!({ "result": "unchanged", "messages": notes }))
            } else {
                if current.log.level != loaded.config.log.level {
                    match shared.log.set(&loaded.config.log.level) {
                        Ok(_) => {
                            tracing::info!(level = %loaded.config.log.level, "log filter changed")
                        }
                        Err(e) => notes.push(e),
                    }
                }
                if current.admin != loaded.config.admin {
                    let n = "[admin] changes take effect at the next restart".to_string();
                    tracing::warn!("{n}");
                    notes.push(n);
                }
                let g = shared.generation.fetch_add(1, Ordering::SeqCst) + 1;
                shared
                    .metrics
                    .config_generation
                    .set(i64::try_from(g).unwrap_or(i64::MAX));
                shared.config.send_replace(Arc::new(loaded.config));
                tracing::info!(generation = g, "configuration applied");
                shared.record_reload("applied", notes.clone());
                Response::ok(
                    serde_json::json!({ "result": "applied", "generation": g, "messages": notes }),
                )
            }
        }
    };
    shared.set_state(DaemonState::Running);
    lifecycle::notify(&[NotifyState::Ready]);
    lifecycle::status(&shared.systemd_status());
    response
}

/// Pings systemd's watchdog while every registered loop is turning.
async fn watchdog(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let Some(interval) = lifecycle::watchdog_interval() else {
        shared.set_component(
            "watchdog",
            "systemd",
            "off",
            "systemd did not ask for a watchdog (WatchdogSec=)".into(),
        );
        return;
    };
    let every = (interval / 2).max(Duration::from_millis(100));
    let max_age = every.clamp(Duration::from_secs(1), crate::admin::http::LIVENESS_MAX_AGE);
    let hb = shared.liveness.register("watchdog");
    let info = format!("WATCHDOG=1 every {every:?} while loops turn within {max_age:?}");
    shared.set_component("watchdog", "systemd", "pinging", info.clone());
    let mut tick = tokio::time::interval(every);
    let mut withholding = false;
    loop {
        tokio::select! {
            () = crate::lifecycle::stopped(&mut stop) => break,
            _ = tick.tick() => {}
        }
        hb.beat();
        let stale = shared.liveness.stale(max_age);
        if stale.is_empty() {
            lifecycle::notify(&[NotifyState::Watchdog]);
            shared.metrics.watchdog_pings.inc();
            if withholding {
                tracing::info!("all loops turn again; watchdog pings resumed");
                shared.set_component("watchdog", "systemd", "pinging", info.clone());
                withholding = false;
            }
        } else if !withholding {
            tracing::error!(loops = ?stale, "loops are stuck; withholding watchdog pings so systemd restarts kube-gw");
            shared.set_component(
                "watchdog",
                "systemd",
                "withholding",
                format!("stuck: {}", stale.join(", ")),
            );
            withholding = true;
        }
    }
}
