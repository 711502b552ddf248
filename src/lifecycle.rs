//! Lifecycle: liveness of the main loops, the systemd notification protocol, and the
//! ordered graceful shutdown.
//!
//! - [`Liveness`] holds one heartbeat per long-running loop. Loops call
//!   [`Heartbeat::beat`] each turn; the watchdog task pings systemd (`WATCHDOG=1`) only while
//!   every heartbeat is fresh, so a stuck loop makes systemd restart us. `/livez` reads the
//!   same heartbeats.
//! - [`notify`] wraps `sd_notify` (a no-op outside systemd) and never fails the caller.
//! - [`ShutdownPlan`] runs registered hooks phase by phase in the fixed order the design
//!   requires — BGP drain, BGP withdraw, data-plane teardown, close — each hook bounded by
//!   a timeout so one stuck subsystem cannot hold the others hostage.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use serde::Serialize;

/// Heartbeats of the loops that must keep turning.
#[derive(Debug, Clone)]
pub struct Liveness {
    epoch: Instant,
    loops: Arc<Mutex<BTreeMap<&'static str, Arc<AtomicU64>>>>,
}

impl Default for Liveness {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            loops: Arc::default(),
        }
    }
}

/// One loop's heartbeat.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    epoch: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Heartbeat {
    /// Records that the loop is turning.
    pub fn beat(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }
}

impl Liveness {
    /// Registers a loop (fresh as of now) and returns its heartbeat.
    pub fn register(&self, name: &'static str) -> Heartbeat {
        let hb = Heartbeat {
            epoch: self.epoch,
            last_ms: Arc::new(AtomicU64::new(0)),
        };
        hb.beat();
        self.loops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name, hb.last_ms.clone());
        hb
    }

    /// Stops watching a loop (it ended on purpose, e.g. at shutdown).
    pub fn unregister(&self, name: &'static str) {
        self.loops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }

    /// Ages of every loop's last heartbeat.
    pub fn ages(&self) -> BTreeMap<&'static str, Duration> {
        let now = self.epoch.elapsed();
        self.loops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| {
                let last = Duration::from_millis(v.load(Ordering::Relaxed));
                (*k, now.saturating_sub(last))
            })
            .collect()
    }

    /// Loops whose heartbeat is older than `max_age`.
    pub fn stale(&self, max_age: Duration) -> Vec<&'static str> {
        self.ages()
            .into_iter()
            .filter(|(_, age)| *age > max_age)
            .map(|(k, _)| k)
            .collect()
    }
}

/// Resolves once the stop flag turns true (or its sender is gone).
pub async fn stopped(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}

/// Sends states to systemd's notify socket; logs (once per call) if that fails.
pub fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!(error = %e, "cannot notify systemd");
    }
}

/// Tells systemd what we are doing (`STATUS=`) and logs it.
pub fn status(text: &str) {
    tracing::debug!(status = text, "systemd status");
    notify(&[NotifyState::Status(text)]);
}

/// The watchdog interval systemd asked for, if any: `WATCHDOG_USEC`, unless
/// `WATCHDOG_PID` names another process (the rule of libsystemd's `sd_watchdog_enabled`).
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// The phases of a graceful stop, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Re-announce routes with GRACEFUL_SHUTDOWN and let traffic move away.
    BgpDrain,
    /// Withdraw every route and close the sessions with a Cease.
    BgpWithdraw,
    /// Remove VIP addresses, IPVS services and other kernel state kube-gw owns.
    DataplaneTeardown,
    /// Close the admin and HTTP listeners.
    Close,
}

impl Phase {
    /// Every phase, in running order.
    pub const ALL: [Phase; 4] = [
        Phase::BgpDrain,
        Phase::BgpWithdraw,
        Phase::DataplaneTeardown,
        Phase::Close,
    ];

    /// The phase's name in logs and status.
    pub fn name(self) -> &'static str {
        match self {
            Phase::BgpDrain => "bgp-drain",
            Phase::BgpWithdraw => "bgp-withdraw",
            Phase::DataplaneTeardown => "dataplane-teardown",
            Phase::Close => "close",
        }
    }
}

type HookFuture = Pin<Box<dyn Future<Output = ()> + Send>>;
type Hook = Box<dyn FnOnce() -> HookFuture + Send>;

/// What became of one hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HookOutcome {
    pub phase: Phase,
    pub hook: String,
    pub completed: bool,
    pub millis: u64,
}

/// Hooks to run at shutdown, grouped by phase.
pub struct ShutdownPlan {
    hooks: Vec<(Phase, String, Hook)>,
    timeout: Duration,
}

impl std::fmt::Debug for ShutdownPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShutdownPlan")
            .field(
                "hooks",
                &self
                    .hooks
                    .iter()
                    .map(|(p, n, _)| (p, n))
                    .collect::<Vec<_>>(),
            )
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl ShutdownPlan {
    /// A plan whose hooks may each take at most `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self {
            hooks: Vec::new(),
            timeout,
        }
    }

    /// Adds a hook to a phase. Hooks of one phase run in the order they were added.
    pub fn register<F, Fut>(&mut self, phase: Phase, name: impl Into<String>, hook: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.hooks
            .push((phase, name.into(), Box::new(move || Box::pin(hook()))));
    }

    /// Runs every phase in order; a hook that exceeds the timeout is abandoned (and
    /// reported) so the next phase still runs.
    pub async fn run(mut self) -> Vec<HookOutcome> {
        let mut outcomes = Vec::new();
        self.hooks.sort_by_key(|(p, _, _)| *p); // stable: keeps registration order
        let mut hooks = self.hooks.into_iter().peekable();
        for phase in Phase::ALL {
            let span = tracing::info_span!("shutdown", phase = phase.name());
            let _g = span.enter();
            status(&format!("stopping: {}", phase.name()));
            tracing::info!(phase = phase.name(), "shutdown phase started");
            let mut ran = 0;
            while let Some((_, name, hook)) = hooks.next_if(|(p, _, _)| *p == phase) {
                ran += 1;
                let start = Instant::now();
                let completed = tokio::time::timeout(self.timeout, hook()).await.is_ok();
                let millis = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
                if completed {
                    tracing::info!(phase = phase.name(), hook = %name, millis, "shutdown hook done");
                } else {
                    tracing::warn!(phase = phase.name(), hook = %name, timeout = ?self.timeout,
                        "shutdown hook did not finish in time; going on");
                }
                outcomes.push(HookOutcome {
                    phase,
                    hook: name,
                    completed,
                    millis,
                });
            }
            tracing::info!(phase = phase.name(), hooks = ran, "shutdown phase finished");
        }
        outcomes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn phases_run_in_order_whatever_the_registration_order() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut plan = ShutdownPlan::new(Duration::from_secs(1));
        for (phase, name) in [
            (Phase::Close, "admin"),
            (Phase::DataplaneTeardown, "addresses"),
            (Phase::BgpDrain, "gshut"),
            (Phase::BgpWithdraw, "withdraw"),
            (Phase::DataplaneTeardown, "ipvs"),
        ] {
            let log = log.clone();
            plan.register(phase, name, move || async move {
                log.lock().unwrap().push(name);
            });
        }
        let out = plan.run().await;
        assert_eq!(
            *log.lock().unwrap(),
            vec!["gshut", "withdraw", "addresses", "ipvs", "admin"]
        );
        assert!(out.iter().all(|o| o.completed));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stuck_hook_times_out_and_later_phases_still_run() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut plan = ShutdownPlan::new(Duration::from_secs(2));
        plan.register(Phase::BgpDrain, "stuck", std::future::pending::<()>);
        let l = log.clone();
        plan.register(Phase::Close, "admin", move || async move {
            l.lock().unwrap().push("admin");
        });
        let out = plan.run().await;
        assert_eq!(out[0].hook, "stuck");
        assert!(!out[0].completed);
        assert!(out[1].completed);
        assert_eq!(*log.lock().unwrap(), vec!["admin"]);
    }

    #[test]
    fn stale_loops_are_named() {
        let l = Liveness::default();
        let _a = l.register("main");
        assert!(l.stale(Duration::from_secs(5)).is_empty());
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(l.stale(Duration::from_millis(5)), vec!["main"]);
    }
}
