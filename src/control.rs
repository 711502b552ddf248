//! The daemon's control: the configuration in force and its reloads, the daemon's phase
//! (starting, running, reloading, stopping) and readiness, and the main loop that waits
//! for signals.
//!
//! ```text
//!  SIGHUP ──────────────┐
//!  admin `reload` ──────┼─► main loop (heartbeat "main") ─► config::load ─► watch<Arc<Config>> ─► subsystems
//!  SIGTERM / SIGINT ────┘        └─► returns: the app runs the ordered stop
//! ```
//!
//! Who owns what: [`Control`] alone publishes the configuration (a new generation only when
//! a reload changed something; an invalid file is refused and the generation in force
//! stays) and the daemon's phase; everyone else holds a [`Control`] clone to read them or
//! to ask for a reload.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{mpsc, oneshot, watch};

use crate::api::{DaemonState, ReloadRecord, Reloaded, Response};
use crate::config::{self, Config};
use crate::lifecycle::{self, Heartbeat};
use crate::metrics::{Metrics, ResultLabel};
use crate::telemetry::LogHandle;

/// The main loop turns at least this often (its heartbeat).
const TICK: Duration = Duration::from_millis(500);

/// A reload asked for through the admin socket.
#[derive(Debug)]
pub struct ReloadRequest(oneshot::Sender<Response>);

/// The configuration and the daemon's phase; cheap to clone.
#[derive(Debug, Clone)]
pub struct Control {
    inner: Arc<Inner>,
    reloads: mpsc::Sender<ReloadRequest>,
}

struct Inner {
    started: Instant,
    config_path: PathBuf,
    config: watch::Sender<Arc<Config>>,
    generation: AtomicU64,
    last_reload: Mutex<Option<(String, Instant, Vec<String>)>>,
    state: Mutex<DaemonState>,
    ready: AtomicBool,
    log: LogHandle,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("config_path", &self.config_path)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The signals the main loop waits for, installed before anything starts.
#[derive(Debug)]
pub struct Signals {
    hup: Signal,
    term: Signal,
    int: Signal,
}

impl Signals {
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            hup: signal(SignalKind::hangup())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }
}

impl Control {
    /// The control of a daemon starting with `config`; the receiver is the main loop's.
    pub fn new(
        config: Config,
        config_path: PathBuf,
        log: LogHandle,
        metrics: Arc<Metrics>,
    ) -> (Self, mpsc::Receiver<ReloadRequest>) {
        let (tx, rx) = mpsc::channel(16);
        metrics.config_generation.set(1);
        let inner = Inner {
            started: Instant::now(),
            config_path,
            config: watch::Sender::new(Arc::new(config)),
            generation: AtomicU64::new(1),
            last_reload: Mutex::new(None),
            state: Mutex::new(DaemonState::Starting),
            ready: AtomicBool::new(false),
            log,
            metrics,
        };
        (
            Self {
                inner: Arc::new(inner),
                reloads: tx,
            },
            rx,
        )
    }

    /// A receiver of the configuration in force (subsystems hold one).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Config>> {
        self.inner.config.subscribe()
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.inner.config.borrow().clone()
    }

    pub fn config_path(&self) -> &Path {
        &self.inner.config_path
    }

    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::SeqCst)
    }

    pub fn state(&self) -> DaemonState {
        *lock(&self.inner.state)
    }

    pub fn set_state(&self, s: DaemonState) {
        *lock(&self.inner.state) = s;
    }

    /// Serving (set once started, cleared when stopping).
    pub fn ready(&self) -> bool {
        self.inner.ready.load(Ordering::SeqCst)
    }

    pub fn set_ready(&self, ready: bool) {
        self.inner.ready.store(ready, Ordering::SeqCst);
        self.inner.metrics.ready.set(i64::from(ready));
    }

    pub fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }

    pub fn log(&self) -> &LogHandle {
        &self.inner.log
    }

    /// The last reload's outcome, for status.
    pub fn last_reload(&self) -> Option<ReloadRecord> {
        lock(&self.inner.last_reload)
            .as_ref()
            .map(|(result, at, messages)| ReloadRecord {
                result: result.clone(),
                seconds_ago: at.elapsed().as_secs(),
                messages: messages.clone(),
            })
    }

    /// Asks the main loop to reload and waits for the outcome (as SIGHUP does).
    pub async fn request_reload(&self) -> Response {
        let (tx, rx) = oneshot::channel();
        if self.reloads.send(ReloadRequest(tx)).await.is_err() {
            return Response::err("the daemon is stopping; not reloading");
        }
        match tokio::time::timeout(Duration::from_secs(30), rx).await {
            Ok(Ok(r)) => r,
            _ => Response::err("the main loop did not answer within 30 s; see the log"),
        }
    }

    /// Runs the main loop until SIGTERM or SIGINT: reloads on SIGHUP and on request.
    pub async fn run(
        &self,
        mut signals: Signals,
        mut reloads: mpsc::Receiver<ReloadRequest>,
        hb: Heartbeat,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            hb.turn().await;
            tokio::select! {
                _ = tick.tick() => {}
                _ = signals.hup.recv() => {
                    tracing::info!("SIGHUP received; reloading the configuration");
                    self.reload().await;
                }
                _ = signals.term.recv() => {
                    tracing::info!("SIGTERM received; stopping");
                    return;
                }
                _ = signals.int.recv() => {
                    tracing::info!("SIGINT received; stopping");
                    return;
                }
                Some(ReloadRequest(reply)) = reloads.recv() => {
                    tracing::info!("reload requested through the admin socket");
                    let _ = reply.send(self.reload().await);
                }
            }
        }
    }

    /// Re-reads the configuration; keeps the one in force if the new one is invalid.
    async fn reload(&self) -> Response {
        let inner = &self.inner;
        self.set_state(DaemonState::Reloading);
        let mut states = vec![NotifyState::Reloading];
        if let Ok(m) = NotifyState::monotonic_usec_now() {
            states.push(m);
        }
        lifecycle::notify(&states);
        let response = match config::load(&inner.config_path) {
            Err(e) => {
                let messages: Vec<String> = e.diagnostics.iter().map(ToString::to_string).collect();
                let generation = self.generation();
                for m in &messages {
                    tracing::error!(problem = %m, "configuration problem");
                }
                tracing::error!(
                    problems = messages.len(),
                    generation,
                    "the new configuration is invalid; keeping the one in force"
                );
                self.record_reload("rejected", messages.clone());
                Response::failed(
                    format!("the configuration is invalid; generation {generation} stays in force"),
                    &Reloaded {
                        result: "rejected".into(),
                        generation,
                        messages,
                    },
                )
            }
            Ok(loaded) => {
                let mut notes: Vec<String> =
                    loaded.warnings.iter().map(ToString::to_string).collect();
                for w in &notes {
                    tracing::warn!(problem = %w, "configuration warning");
                }
                let current = self.config();
                if *current == loaded.config {
                    tracing::info!("the configuration is unchanged");
                    self.record_reload("unchanged", notes.clone());
                    Response::ok(&Reloaded {
                        result: "unchanged".into(),
                        generation: self.generation(),
                        messages: notes,
                    })
                } else {
                    if current.log.level != loaded.config.log.level {
                        match inner.log.set(&loaded.config.log.level) {
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
                    let g = inner.generation.fetch_add(1, Ordering::SeqCst) + 1;
                    inner
                        .metrics
                        .config_generation
                        .set(i64::try_from(g).unwrap_or(i64::MAX));
                    inner.config.send_replace(Arc::new(loaded.config));
                    tracing::info!(generation = g, "configuration applied");
                    self.record_reload("applied", notes.clone());
                    Response::ok(&Reloaded {
                        result: "applied".into(),
                        generation: g,
                        messages: notes,
                    })
                }
            }
        };
        self.set_state(DaemonState::Running);
        lifecycle::notify(&[NotifyState::Ready]);
        lifecycle::status(&self.systemd_status());
        response
    }

    fn record_reload(&self, result: &str, messages: Vec<String>) {
        *lock(&self.inner.last_reload) = Some((result.to_string(), Instant::now(), messages));
        self.inner
            .metrics
            .config_reloads
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
    }

    /// The `STATUS=` line for systemd.
    pub fn systemd_status(&self) -> String {
        let g = self.generation();
        match lock(&self.inner.last_reload).as_ref() {
            Some((r, _, m)) if r == "rejected" => format!(
                "running; config generation {g}; last reload rejected ({} problems), see journal",
                m.len()
            ),
            _ => format!("running; config generation {g}"),
        }
    }
}
