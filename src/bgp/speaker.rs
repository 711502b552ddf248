//! The BGP speaker: owns the neighbors' session tasks and the listener on port 179, and
//! answers for them as one subsystem (status, drain, stop).
//!
//! ```text
//!                       ┌─► session task per neighbor ─► watch<NeighborStatus> (status, metrics)
//!  watch<Exported> ─────┤        ▲ mpsc<TcpStream>
//!  drain / pause / stop ┘        │
//!                       listener (0.0.0.0:179, [::]:179) ─ accept ─ which neighbor?
//! ```
//!
//! Inputs: the configuration at start (the neighbors; a reload does not change them yet),
//! the exported routes, and the operator's drain and undrain. Outputs: one status channel
//! per neighbor (in configuration order), the listener's state, and the shutdown steps the
//! daemon runs in order: [`Speaker::graceful_shutdown`] (RFC 8326) then [`Speaker::stop`]
//! (withdraw, Cease, close). Each session and the listener keep a heartbeat
//! (`bgp/<neighbor>`, `bgp-listener`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::fsm::State;
use super::inputs::Inputs;
use super::listen;
use super::neighbor;
use super::peer::{self, PORT};
use super::status::{NeighborStatus, Statuses};
use crate::config::Config;
use crate::lifecycle::Liveness;
use crate::model::Exported;

/// How the listener is doing, for status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerReport {
    /// `listening`, or `degraded` when a socket could not be bound.
    pub state: &'static str,
    pub info: String,
}

/// What `kube-gw drain` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Routes withdrawn and sessions closed after the drain time.
    Done { drain_time: u16 },
    /// It was drained already.
    Already,
    /// `kube-gw undrain` came during the drain time: nothing was withdrawn.
    Undrained,
}

/// The running speaker.
#[derive(Debug)]
pub struct Speaker {
    statuses: Statuses,
    drain: watch::Sender<bool>,
    paused: watch::Sender<bool>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    listener: Option<ListenerReport>,
    drain_time: u16,
    /// `[bgp] graceful-restart`: a stop leaves the peers our routes (RFC 4724).
    graceful_restart: bool,
    leave: watch::Sender<bool>,
    /// BFD for the neighbors that ask for it (stopped after the sessions).
    bfd: Mutex<Option<crate::bfd::service::Bfd>>,
}

/// Starts a session task per configured neighbor and, when `[bgp] listen` is on, the
/// listener. `statuses` is filled here (the metrics hold it from before the start).
pub fn spawn(
    cfg: &Config,
    (exported, complete): (watch::Receiver<Exported>, watch::Receiver<bool>),
    liveness: &Liveness,
    statuses: Statuses,
    bfd_statuses: &crate::bfd::service::StatusCell,
) -> Speaker {
    let (stop_tx, stop_rx) = watch::channel(false);
    let (drain_tx, drain_rx) = watch::channel(false);
    let (paused_tx, paused_rx) = watch::channel(false);
    let (leave_tx, leave_rx) = watch::channel(false);
    let restart = cfg.bgp.as_ref().filter(|b| b.graceful_restart).map(|b| {
        super::restart::Restart::load(b.restart_time, b.long_lived_stale_time, &b.restart_state)
    });
    let mut receivers = Vec::new();
    let mut tasks = Vec::new();
    let mut routes = HashMap::new();
    // Every started neighbor's MD5 key (or none), in configuration order.
    let mut keys = Vec::new();
    let peers = peer::peers(cfg);
    let specs: Vec<_> = peers
        .iter()
        .filter(|(_, problem)| problem.is_none())
        .filter_map(|(p, _)| p.bfd.clone())
        .collect();
    let bfd = if specs.is_empty() {
        None
    } else {
        match crate::bfd::service::spawn(specs, liveness.register("bfd"), bfd_statuses) {
            Ok(b) => Some(b),
            Err(e) => {
                tracing::error!(error = %e, "BFD: cannot start its thread; sessions run without BFD");
                None
            }
        }
    };
    for (mut peer, problem) in peers {
        peer.restart = restart;
        let mut st = NeighborStatus::new(peer.address, peer.interface.clone());
        if let Some(p) = problem {
            tracing::warn!(neighbor = %peer.name, "{p}");
            st.last_error = Some(p);
            let (_tx, rx) = watch::channel(st);
            receivers.push(rx);
            continue;
        }
        let (tx, rx) = watch::channel(st);
        receivers.push(rx);
        let (conn_tx, conn_rx) = mpsc::channel(2);
        // A link-local neighbor's connections are recognised by the interface they come
        // in on (looked up when they arrive); the others by address.
        keys.push((peer.address, peer.password.clone()));
        routes.insert(
            (peer.address, peer.interface.clone()),
            listen::Route {
                sessions: conn_tx,
                ttl_security: peer.ttl_security,
            },
        );
        let hb = liveness.register(format!("bgp/{}", peer.name));
        let inputs = Inputs {
            stop: stop_rx.clone(),
            leave: leave_rx.clone(),
            exported: exported.clone(),
            complete: complete.clone(),
            drain: drain_rx.clone(),
            paused: paused_rx.clone(),
            incoming: conn_rx,
            bfd: peer
                .bfd
                .as_ref()
                .and_then(|b| bfd.as_ref()?.verdict(&b.name)),
        };
        let span = tracing::info_span!("bgp", neighbor = %peer.name);
        tasks.push(tokio::spawn(tracing::Instrument::instrument(
            neighbor::run(peer, tx, inputs, hb),
            span,
        )));
    }
    let _ = statuses.set(receivers);
    let bgp = cfg.bgp.as_ref();
    let mut listener = None;
    if bgp.is_some_and(|b| b.listen) && !routes.is_empty() {
        let gtsm = routes.values().any(|r| r.ttl_security);
        let (listeners, problems) = listen::bind(PORT, &keys, gtsm);
        for p in &problems {
            tracing::warn!("BGP listener: {p}");
        }
        listener = Some(if problems.is_empty() {
            ListenerReport {
                state: "listening",
                info: "port 179, IPv4 and IPv6".into(),
            }
        } else {
            ListenerReport {
                state: "degraded",
                info: format!(
                    "{}; passive neighbors cannot connect, kube-gw still connects to the others \
                     (is another BGP daemon running here?)",
                    problems.join("; ")
                ),
            }
        });
        let hb = liveness.register("bgp-listener");
        tasks.push(tokio::spawn(listen::run(
            listeners,
            routes,
            stop_rx.clone(),
            hb,
        )));
    }
    Speaker {
        statuses,
        drain: drain_tx,
        paused: paused_tx,
        stop: stop_tx,
        tasks: Mutex::new(tasks),
        listener,
        drain_time: bgp.map_or(0, |b| b.drain_time),
        graceful_restart: restart.is_some(),
        leave: leave_tx,
        bfd: Mutex::new(bfd),
    }
}

impl Speaker {
    /// Every neighbor's session status, in configuration order.
    pub fn neighbors(&self) -> Vec<NeighborStatus> {
        self.statuses
            .get()
            .into_iter()
            .flatten()
            .map(|rx| rx.borrow().clone())
            .collect()
    }

    pub fn has_neighbors(&self) -> bool {
        self.statuses.get().is_some_and(|n| !n.is_empty())
    }

    pub fn listener(&self) -> Option<&ListenerReport> {
        self.listener.as_ref()
    }

    /// `kube-gw drain`: every route re-announced with GRACEFUL_SHUTDOWN (RFC 8326), then
    /// after `bgp.drain-time` withdrawn and the sessions closed with Cease / Administrative
    /// Shutdown "maintenance: kube-gw drain". They stay closed until [`Self::undrain`]; the
    /// addresses and IPVS stay as they are, so flows still arriving are served.
    pub async fn drain(&self) -> Drained {
        if *self.paused.borrow() || *self.drain.borrow() {
            return Drained::Already;
        }
        // With no session up there is nobody to tell: withdraw (close) at once.
        let up = self.neighbors().iter().any(|s| s.up_since.is_some());
        let secs = if up { self.drain_time } else { 0 };
        tracing::info!(
            drain_time = secs,
            "drain: routes re-announced with GRACEFUL_SHUTDOWN"
        );
        let _ = self.drain.send(true);
        tokio::time::sleep(Duration::from_secs(u64::from(secs))).await;
        if !*self.drain.borrow() {
            return Drained::Undrained;
        }
        let _ = self.paused.send(true);
        // The sessions withdraw and close; wait (briefly) until each is down.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && self.neighbors().iter().any(|n| n.state != State::Idle) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::info!("drain: routes withdrawn, BGP sessions closed until `kube-gw undrain`");
        Drained::Done { drain_time: secs }
    }

    /// `kube-gw undrain`: the sessions start again. Returns whether it was drained.
    pub fn undrain(&self) -> bool {
        let was = *self.paused.borrow() || *self.drain.borrow();
        let _ = self.drain.send(false);
        let _ = self.paused.send(false);
        tracing::info!("undrain: the BGP sessions start again");
        was
    }

    /// The first step of a stop (RFC 8326): everything re-announced with
    /// GRACEFUL_SHUTDOWN, then `drain-time` for the fabric to move the traffic to the other
    /// switches — waited only if a session is up to tell. At most `limit`.
    pub async fn graceful_shutdown(&self, limit: Duration) {
        let _ = self.drain.send(true);
        let up = self.neighbors().iter().any(|s| s.up_since.is_some());
        if up && self.drain_time > 0 {
            tracing::info!(
                seconds = self.drain_time,
                "draining: routes carry GRACEFUL_SHUTDOWN"
            );
            tokio::time::sleep(Duration::from_secs(u64::from(self.drain_time)).min(limit)).await;
        }
    }

    /// Whether a stop now is a graceful restart: `[bgp] graceful-restart` is on and the
    /// switch is not drained (`kube-gw drain` withdrew on purpose; that stays so).
    pub fn restarts_gracefully(&self) -> bool {
        self.graceful_restart && !*self.paused.borrow() && !*self.drain.borrow()
    }

    /// Withdraws everything, sends Cease / Administrative Shutdown, closes the sessions and
    /// the listener, and waits for their tasks; then BFD says AdminDown to its peers (which
    /// is no path failure to them) and stops. A graceful restart
    /// ([`Self::restarts_gracefully`]) instead closes the connections without withdrawing
    /// or a NOTIFICATION, and BFD falls silent: the peers keep our routes for the restart
    /// time (BIRD `bfd graceful`, FRR `check-control-plane-failure` keep them through the
    /// BFD timeout too; an AdminDown would make both reset the session).
    pub async fn stop(&self) {
        let graceful = self.restarts_gracefully();
        if graceful {
            tracing::info!("graceful restart: the BGP sessions close without withdrawing; the peers keep the routes for the restart time (`kube-gw drain` before a stop withdraws them)");
        }
        let _ = self.leave.send(graceful);
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in tasks {
            let _ = t.await;
        }
        let bfd = self.bfd.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(mut b) = bfd {
            let _ = tokio::task::spawn_blocking(move || b.stop(!graceful)).await;
        }
    }

    /// Every BFD session's status (none without BFD neighbors).
    pub fn bfd(&self) -> crate::bfd::service::Statuses {
        self.bfd
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(crate::bfd::service::Bfd::statuses)
            .unwrap_or_default()
    }

    /// `kube-gw bfd admin-down|admin-up NEIGHBOR`: false if it has no BFD session.
    pub async fn bfd_admin(&self, neighbor: &str, down: bool) -> bool {
        let cmds = {
            let b = self.bfd.lock().unwrap_or_else(|p| p.into_inner());
            b.as_ref().map(crate::bfd::service::Bfd::commander)
        };
        match cmds {
            Some(c) => c.admin(neighbor, down).await,
            None => false,
        }
    }
}
