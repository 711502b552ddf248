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

/// How often an idle loop turns anyway, so that its heartbeat stays fresh.
pub const IDLE_TURN: Duration = Duration::from_secs(1);

/// Heartbeats of the loops that must keep turning.
#[derive(Debug, Clone)]
pub struct Liveness {
    /// tokio's clock (the real one, except in tests that pause it).
    epoch: tokio::time::Instant,
    loops: Arc<Mutex<BTreeMap<String, Arc<Beat>>>>,
}

/// One loop's shared state: when it last turned, and a test freeze waiting for it.
#[derive(Debug, Default)]
struct Beat {
    last_ms: AtomicU64,
    /// Test hook: the next turn stops for this many milliseconds.
    freeze_ms: AtomicU64,
}

impl Default for Liveness {
    fn default() -> Self {
        Self {
            epoch: tokio::time::Instant::now(),
            loops: Arc::default(),
        }
    }
}

/// One loop's heartbeat. The loop calls [`Heartbeat::turn`] once per iteration (and waits
/// at most [`IDLE_TURN`] for anything else, so an idle loop still turns); a bounded wait on a
/// peer goes through [`Heartbeat::during`], which keeps beating while the peer is slow.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    epoch: tokio::time::Instant,
    beat: Arc<Beat>,
}

impl Heartbeat {
    /// Records that the loop is turning.
    pub fn beat(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.beat.last_ms.store(ms, Ordering::Relaxed);
    }

    /// One turn of the loop: a beat, and — only when a test asked for it
    /// (`kube-gw debug-freeze`, refused unless `KUBE_GW_TEST_HOOKS=1`) — a stop of the
    /// asked length without beating, which is what a stuck loop looks like from outside.
    pub async fn turn(&self) {
        let freeze = self.beat.freeze_ms.swap(0, Ordering::Relaxed);
        if freeze > 0 {
            tracing::warn!(millis = freeze, "test hook: this loop stops turning");
            tokio::time::sleep(Duration::from_millis(freeze)).await;
            tracing::warn!("test hook: the loop turns again");
        }
        self.beat();
    }

    /// Awaits `fut`, beating every [`IDLE_TURN`] while it is pending: for waits that are
    /// bounded by their own timeout (a write to a slow peer, a kernel request), which are
    /// not a stuck loop.
    pub async fn during<F: Future>(&self, fut: F) -> F::Output {
        let mut fut = std::pin::pin!(fut);
        loop {
            match tokio::time::timeout(IDLE_TURN, &mut fut).await {
                Ok(out) => return out,
                Err(_) => self.beat(),
            }
        }
    }

    /// Resolves after [`IDLE_TURN`]: a loop selects on it so that it turns while idle.
    pub async fn idle(&self) {
        tokio::time::sleep(IDLE_TURN).await;
    }
}

impl Liveness {
    /// Registers a loop (fresh as of now) and returns its heartbeat. A name registered
    /// again (a restarted loop) gets a fresh heartbeat.
    pub fn register(&self, name: impl Into<String>) -> Heartbeat {
        let hb = Heartbeat {
            epoch: self.epoch,
            beat: Arc::default(),
        };
        hb.beat();
        self.lock().insert(name.into(), hb.beat.clone());
        hb
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Beat>>> {
        self.loops.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops watching a loop (it ended on purpose, e.g. at shutdown).
    pub fn unregister(&self, name: &str) {
        self.lock().remove(name);
    }

    /// The daemon is stopping: its loops end one after another, bounded by the shutdown
    /// plan's timeouts, so only the watchdog's own heartbeat is watched from now on.
    pub fn retire(&self) {
        self.lock().retain(|name, _| name == "watchdog");
    }

    /// Test hook: the named loop's next turn stops for `d`. Errs with the known loops if
    /// there is no such loop.
    pub fn freeze(&self, name: &str, d: Duration) -> Result<(), String> {
        let loops = self.lock();
        match loops.get(name) {
            Some(b) => {
                let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
                b.freeze_ms.store(ms, Ordering::Relaxed);
                Ok(())
            }
            None => Err(format!(
                "no loop named {name}; the loops are: {}",
                loops.keys().cloned().collect::<Vec<_>>().join(", ")
            )),
        }
    }

    /// Ages of every loop's last heartbeat.
    pub fn ages(&self) -> BTreeMap<String, Duration> {
        let now = self.epoch.elapsed();
        self.lock()
            .iter()
            .map(|(k, v)| {
                let last = Duration::from_millis(v.last_ms.load(Ordering::Relaxed));
                (k.clone(), now.saturating_sub(last))
            })
            .collect()
    }

    /// Loops whose heartbeat is older than `max_age`.
    pub fn stale(&self, max_age: Duration) -> Vec<String> {
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

/// Whether the whole system is shutting down or rebooting (`systemctl is-system-running`
/// says `stopping`), as opposed to only kube-gw stopping or restarting. Without systemd (or
/// when it does not answer within two seconds): false.
pub async fn system_is_stopping() -> bool {
    use std::io::Read;
    let child = std::process::Command::new("systemctl")
        .arg("is-system-running")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        return false;
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
    let mut answer = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut answer);
    }
    system_state_is_stopping(&answer)
}

/// `systemctl is-system-running`'s answer means the system is going down.
fn system_state_is_stopping(answer: &str) -> bool {
    answer.trim() == "stopping"
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

/// What the watchdog task is doing, for status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchdogState {
    /// `off` (systemd asked for none), `pinging`, or `withholding` (a loop is stuck).
    pub state: &'static str,
    pub info: String,
}

impl Default for WatchdogState {
    fn default() -> Self {
        Self {
            state: "off",
            info: "systemd did not ask for a watchdog (WatchdogSec=)".into(),
        }
    }
}

/// Pings systemd's watchdog (`WATCHDOG=1`) while every registered loop is turning; a stuck
/// loop withholds the pings, so systemd restarts kube-gw. Runs until `stop`.
pub async fn watchdog(
    liveness: Liveness,
    pings: prometheus_client::metrics::counter::Counter,
    report: tokio::sync::watch::Sender<WatchdogState>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let Some(interval) = watchdog_interval() else {
        report.send_replace(WatchdogState::default());
        return;
    };
    let every = (interval / 2).max(Duration::from_millis(100));
    let max_age = every.clamp(Duration::from_secs(1), LIVENESS_MAX_AGE);
    let hb = liveness.register("watchdog");
    let info = format!("WATCHDOG=1 every {every:?} while loops turn within {max_age:?}");
    report.send_replace(WatchdogState {
        state: "pinging",
        info: info.clone(),
    });
    let mut tick = tokio::time::interval(every);
    let mut withholding = false;
    loop {
        tokio::select! {
            () = stopped(&mut stop) => break,
            _ = tick.tick() => {}
        }
        hb.beat();
        let stale = liveness.stale(max_age);
        if stale.is_empty() {
            notify(&[NotifyState::Watchdog]);
            pings.inc();
            if withholding {
                tracing::info!("all loops turn again; watchdog pings resumed");
                report.send_replace(WatchdogState {
                    state: "pinging",
                    info: info.clone(),
                });
                withholding = false;
            }
        } else if !withholding {
            tracing::error!(loops = ?stale, "loops are stuck; withholding watchdog pings so systemd restarts kube-gw");
            report.send_replace(WatchdogState {
                state: "withholding",
                info: format!("stuck: {}", stale.join(", ")),
            });
            withholding = true;
        }
    }
    liveness.unregister("watchdog");
}

/// A loop whose heartbeat is older than this makes `/livez` fail.
pub const LIVENESS_MAX_AGE: Duration = Duration::from_secs(5);

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

    #[test]
    fn only_stopping_is_a_system_shutdown() {
        assert!(system_state_is_stopping("stopping\n"));
        for other in ["running\n", "degraded\n", "starting", "offline", ""] {
            assert!(!system_state_is_stopping(other), "{other}");
        }
    }

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

    #[tokio::test(start_paused = true)]
    async fn a_frozen_loop_goes_stale_and_a_slow_peer_does_not() {
        let l = Liveness::default();
        let hb = l.register("ipvs");
        assert!(l
            .freeze("nope", Duration::from_secs(1))
            .unwrap_err()
            .contains("ipvs"));
        // A bounded wait on a peer keeps the heartbeat fresh.
        let slow = hb.during(tokio::time::sleep(Duration::from_secs(10)));
        let watch = async {
            for _ in 0..9 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                assert!(l.stale(Duration::from_millis(1500)).is_empty());
            }
        };
        tokio::join!(slow, watch);
        // A frozen turn does not beat.
        l.freeze("ipvs", Duration::from_secs(3)).unwrap();
        let frozen = hb.turn();
        let watch = async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            assert_eq!(l.stale(Duration::from_millis(1500)), vec!["ipvs"]);
        };
        tokio::join!(frozen, watch);
        assert!(
            l.stale(Duration::from_millis(1500)).is_empty(),
            "fresh after the turn"
        );
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
