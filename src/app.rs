//! The composition root of the running daemon (`kube-gw run`): it starts each subsystem,
//! hands each the handles it needs, runs the main loop until a stop signal, then stops
//! everything in order. It decides nothing else.
//!
//! ```text
//!  signals, admin `reload` ─► control (main loop) ─► watch<Arc<Config>> ─────────────┬──────────────┐
//!                                                                                     ▼              ▼
//!  kube-apiserver ─► kube (join, watch, Node, Lease, Events) ─► watch<ClusterSnapshot> ─► pipeline ─► watch<Exported> ─► bgp speaker ─► peers
//!                        ▲ Events from the desired state                                   (desired, addresses on lo,    (sessions,
//!                        └────────────────────────────── desired, programmed ◄──────────── IPVS, export gate)              listener)
//!
//!  bgp speaker statuses ─► fib (neighbors' `import` → Loc-RIB → kernel routes, proto 107)
//!  admin (socket, HTTP) ◄── handles: control, liveness, metrics, kube, pipeline, speaker, fib, watchdog
//!  watchdog ◄── liveness: a heartbeat per loop (main, kubernetes, pipeline, export, addresses,
//!                         ipvs, bgp/<neighbor>, bgp-listener, watchdog)
//! ```
//!
//! Start order: admin surfaces first (so status answers from the first moment), then the
//! Kubernetes side, the pipeline and the BGP speaker. Stop order (the [`ShutdownPlan`]):
//! BGP graceful shutdown (RFC 8326) → BGP withdraw and Cease → data-plane teardown
//! (addresses, unless `on-shutdown = "keep"`; IPVS stays for the next start to adopt) →
//! Kubernetes → the admin surfaces last, so status answers during the drain.
//!
//! Where a new subsystem goes: its own module that returns a handle (like
//! [`crate::bgp::speaker::Speaker`]); wired here; read by the admin side through
//! [`crate::admin::Handles`]; its loops register heartbeats; its teardown is a hook in the
//! phase that fits. See ARCHITECTURE.md.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sd_notify::NotifyState;
use tokio::sync::watch;

use crate::admin::{self, Admin, Handles, PipelineView};
use crate::api::DaemonState;
use crate::config::Config;
use crate::control::{Control, Signals};
use crate::kube::report::KubeReport;
use crate::lifecycle::{self, Liveness, Phase, ShutdownPlan, WatchdogState};
use crate::metrics::Metrics;
use crate::telemetry::LogHandle;

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

/// Runs the daemon until SIGTERM/SIGINT, then stops it in order.
pub async fn run(config: Config, opts: Options, log: LogHandle) -> Result<(), RunError> {
    lifecycle::status("starting");
    let signals = Signals::install().map_err(RunError::Signals)?;
    let start_unix = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
    let kube_report = Arc::new(KubeReport::default());
    let bgp_statuses = crate::bgp::status::Statuses::default();
    let bfd_statuses = crate::bfd::service::StatusCell::default();
    let (desired_tx, desired_rx) = watch::channel(Arc::default());
    let (programmed_tx, programmed_rx) = watch::channel(crate::model::Programmed::default());
    let metrics = Arc::new(Metrics::new(
        env!("CARGO_PKG_VERSION"),
        start_unix,
        kube_report.clone(),
        bgp_statuses.clone(),
        bfd_statuses.clone(),
        crate::metrics::PipelineCollector {
            desired: desired_rx.clone(),
            programmed: programmed_rx.clone(),
        },
    ));
    let liveness = Liveness::default();
    let admin_path = config.admin.socket.clone();
    let http_addr = config.admin.metrics;
    let interface = config.vip.interface.clone();
    let (control, reloads) = Control::new(config, opts.config_path, log, metrics.clone());

    // The admin surfaces bind first: a second kube-gw fails here, before touching anything.
    let (stop_tx, stop_rx) = watch::channel(false);
    let admin_listener = admin::socket::bind(&admin_path).await?;
    let http_listener = tokio::net::TcpListener::bind(http_addr)
        .await
        .map_err(|source| RunError::Http {
            addr: http_addr,
            source,
        })?;
    let http_addr = http_listener.local_addr().unwrap_or(http_addr);
    let (watchdog_tx, watchdog_rx) = watch::channel(WatchdogState::default());
    let watchdog_task = tokio::spawn(lifecycle::watchdog(
        liveness.clone(),
        metrics.watchdog_pings.clone(),
        watchdog_tx,
        stop_rx.clone(),
    ));

    // Kubernetes: join, watch, the Node; the Node's Ready condition follows our health.
    let (kube_stop_tx, kube_stop_rx) = watch::channel(false);
    let health: crate::kube::HealthFn = {
        let (control, liveness, report) = (control.clone(), liveness.clone(), kube_report.clone());
        Arc::new(move || admin::not_ready_reason(&control, &liveness).or_else(|| report.stale()))
    };
    let (gw_status_tx, gw_status_rx) = watch::channel(Arc::default());
    let (kube, kube_task) = crate::kube::spawn(
        control.subscribe(),
        kube_report,
        health,
        crate::kube::Serving {
            desired: desired_rx,
            programmed: programmed_rx,
            gateway_status: gw_status_rx,
        },
        kube_stop_rx,
        liveness.register("kubernetes"),
    );

    // The L7 gateway (with `[gateway]`): Gateway API → proxy, eBPF steering, statuses.
    let gateway = crate::gateway::spawn(
        crate::gateway::GatewayInputs {
            config: control.subscribe(),
            gateway: kube.gateway.clone(),
            cluster: kube.snapshot.clone(),
            desired: desired_tx.subscribe(),
        },
        gw_status_tx,
        &liveness,
        metrics.gateway.clone(),
    );
    let gateway_vips = gateway
        .as_ref()
        .map_or_else(|| watch::channel(Arc::default()).1, |g| g.vips.clone());
    let gateway_ports = gateway.as_ref().map_or_else(
        || watch::channel(Arc::default()).1,
        |g| crate::gateway::listener_ports(g.state.clone()),
    );
    // The pipeline: desired state, reconcilers, nftables, export gate.
    let pipeline = crate::pipeline::spawn(
        control.subscribe(),
        kube.snapshot.clone(),
        (desired_tx, programmed_tx),
        (gateway_vips, gateway_ports),
        &liveness,
    );

    // BGP: sessions per neighbor and the listener (read at start; a reload does not change
    // them yet).
    let speaker = Arc::new(crate::bgp::speaker::spawn(
        &control.config(),
        (pipeline.exported.clone(), pipeline.complete.clone()),
        &liveness,
        bgp_statuses.clone(),
        &bfd_statuses,
    ));
    // Placement (a): what the neighbors' `import` lets in goes into the kernel.
    let fib = crate::fib::spawn(&control.config(), &bgp_statuses, &liveness);

    let admin = Admin::new(Handles {
        control: control.clone(),
        liveness: liveness.clone(),
        metrics,
        kube,
        pipeline: PipelineView {
            desired: pipeline.desired.clone(),
            programmed: pipeline.programmed.clone(),
            ipvs: pipeline.ipvs.clone(),
            nft: pipeline.nft.clone(),
            interface,
        },
        bgp: speaker.clone(),
        fib: fib.as_ref().map(|f| f.report.clone()),
        gateway: gateway.as_ref().map(|g| admin::views::GatewayHandles {
            report: g.report.clone(),
            state: g.state.clone(),
            stats: g.stats.clone(),
        }),
        watchdog: watchdog_rx,
        socket: admin_path.display().to_string(),
        http: http_addr.to_string(),
        test_hooks: opts.test_hooks,
    });
    let admin_task = tokio::spawn(admin::socket::serve(
        admin_listener,
        admin_path.clone(),
        admin.clone(),
        stop_rx.clone(),
    ));
    let http_task = tokio::spawn(admin::http::serve(http_listener, admin, stop_rx));

    let heartbeat = liveness.register("main");
    control.set_state(DaemonState::Running);
    control.set_ready(true);
    lifecycle::notify(&[NotifyState::Ready]);
    lifecycle::status(&control.systemd_status());
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        admin = %admin_path.display(),
        http = %http_addr,
        "kube-gw started"
    );

    control.run(signals, reloads, heartbeat).await;

    control.set_state(DaemonState::Stopping);
    control.set_ready(false);
    liveness.retire();
    lifecycle::notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);

    let mut plan = ShutdownPlan::new(HOOK_TIMEOUT);
    let bgp = speaker.clone();
    plan.register(
        Phase::BgpDrain,
        "bgp-graceful-shutdown",
        move || async move {
            // A graceful restart keeps the routes announced: nothing to drain. Not when the
            // whole system goes down (a reboot loses the forwarding state): then drain,
            // which also makes the stop a withdrawal.
            if !bgp.restarts_gracefully() || lifecycle::system_is_stopping().await {
                bgp.graceful_shutdown(HOOK_TIMEOUT - Duration::from_secs(1))
                    .await;
            }
        },
    );
    if let Some(fib) = fib {
        let bgp = speaker.clone();
        plan.register(Phase::DataplaneTeardown, "fib-routes", move || async move {
            let keep = bgp.restarts_gracefully() && !lifecycle::system_is_stopping().await;
            fib.stop(keep).await;
        });
    }
    plan.register(Phase::BgpWithdraw, "bgp-sessions", move || async move {
        speaker.stop().await;
    });
    let crate::pipeline::Pipeline {
        teardown,
        addr_task,
        desired_task,
        ipvs_task,
        ..
    } = pipeline;
    plan.register(
        Phase::DataplaneTeardown,
        "vip-addresses",
        move || async move {
            desired_task.abort();
            // kube-gw's IPVS services stay: established flows are not cut, and the next start
            // adopts them without a flap.
            ipvs_task.abort();
            let _ = teardown.send(true);
            let _ = addr_task.await;
        },
    );
    if let Some(g) = gateway {
        // After the withdrawal and before the addresses go: the proxy stops accepting and
        // its connections get `drain-timeout` to finish. The eBPF program and its maps go
        // with the task, unless pinned for the next daemon (handed-over sockets).
        plan.register(Phase::BgpWithdraw, "gateway-drain", move || async move {
            g.drain().await;
        });
    }
    plan.register(Phase::Close, "kubernetes", move || async move {
        let _ = kube_stop_tx.send(true);
        let _ = kube_task.await;
    });
    plan.register(Phase::Close, "admin-and-http", move || async move {
        let _ = stop_tx.send(true);
        let _ = admin_task.await;
        let _ = http_task.await;
        let _ = watchdog_task.await;
    });
    let outcomes = plan.run().await;
    let abandoned = outcomes.iter().filter(|o| !o.completed).count();
    tracing::info!(hooks = outcomes.len(), abandoned, "kube-gw stopped");
    Ok(())
}
