//! What the Kubernetes subsystem tells the rest of the daemon about itself: the join's
//! progress, each watch's health, the Node's registration. Written by the kube tasks, read
//! by `kube-gw status`, `/metrics` and the Node's Ready condition.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

/// State of one resource's watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WatchState {
    /// Listing (first time or after an error / expired resource version).
    Listing,
    /// Listed and watching.
    Synced,
    /// The last attempt failed; retrying with backoff. The last good view is kept.
    Failing,
}

/// Health of one watch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WatchHealth {
    pub state: WatchState,
    pub objects: usize,
    pub relists: u64,
    pub errors: u64,
    pub last_error: Option<String>,
    #[serde(skip)]
    pub since: Option<Instant>,
    pub synced_once: bool,
}

/// The join's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum JoinState {
    /// Not configured (no `[kubernetes]` section).
    Off,
    /// Building credentials (kubeconfig, or TLS bootstrap waiting for the CSR).
    Joining,
    /// Credentials work and the permission check passed.
    Joined,
    /// Something is wrong; retrying. The message says what.
    Failing,
}

#[derive(Debug, Default)]
struct Inner {
    join: Option<(JoinState, String, Option<Instant>)>,
    watches: BTreeMap<&'static str, WatchHealth>,
    node: Option<(String, String)>,
    snapshots: u64,
    /// The writers' elections, by component (`gateway-status-writer`, `lb-allocator`): this
    /// switch leads, what it knows, since.
    elections: std::collections::BTreeMap<&'static str, (bool, String, Option<Instant>)>,
    /// When the client certificate in use expires (a bootstrap join's; none with a kubeconfig).
    client_cert_not_after: Option<std::time::SystemTime>,
    /// Why the client certificate in use is not in the state directory (held in memory).
    unstored: Option<String>,
}

/// Shared report of the Kubernetes subsystem.
#[derive(Debug, Default)]
pub struct KubeReport {
    inner: Mutex<Inner>,
}

impl KubeReport {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records the join's state and a message for the operator.
    pub fn join(&self, state: JoinState, message: impl Into<String>) {
        let mut g = self.lock();
        let since = match &g.join {
            Some((s, _, since)) if *s == state => *since,
            _ => Some(Instant::now()),
        };
        g.join = Some((state, message.into(), since));
    }

    /// Records the expiry of the client certificate in use.
    pub fn client_certificate(&self, not_after: Option<std::time::SystemTime>) {
        self.lock().client_cert_not_after = not_after;
    }

    /// Records why the client certificate in use could not be stored, or that it is stored.
    pub fn unstored(&self, error: Option<String>) {
        self.lock().unstored = error;
    }

    /// Records a watch's state.
    pub fn watch_state(&self, resource: &'static str, state: WatchState, error: Option<String>) {
        let mut g = self.lock();
        let w = g.watches.entry(resource).or_insert(WatchHealth {
            state,
            objects: 0,
            relists: 0,
            errors: 0,
            last_error: None,
            since: Some(Instant::now()),
            synced_once: false,
        });
        if w.state != state {
            w.since = Some(Instant::now());
        }
        w.state = state;
        if state == WatchState::Synced {
            w.synced_once = true;
        }
        if let Some(e) = error {
            w.errors += 1;
            w.last_error = Some(e);
        }
    }

    /// Forgets the watches' state (a new set of watches is starting from empty stores).
    pub fn reset_watches(&self) {
        self.lock().watches.clear();
    }

    /// Snapshots published since start (0: the cluster is not known yet).
    pub fn snapshots(&self) -> u64 {
        self.lock().snapshots
    }

    /// A (re-)list began.
    pub fn relist_started(&self, resource: &'static str) {
        // A list started after a failure is still failing until it ends: status must not
        // flicker back to healthy at each retry while the API server is away.
        let failing = self
            .lock()
            .watches
            .get(resource)
            .is_some_and(|w| w.state == WatchState::Failing);
        if !failing {
            self.watch_state(resource, WatchState::Listing, None);
        }
        if let Some(w) = self.lock().watches.get_mut(resource) {
            w.relists += 1;
        }
    }

    /// Number of objects in a resource's store.
    pub fn objects(&self, resource: &'static str, n: usize) {
        if let Some(w) = self.lock().watches.get_mut(resource) {
            w.objects = n;
        }
    }

    /// A new snapshot went out.
    pub fn snapshot_published(&self) {
        self.lock().snapshots += 1;
    }

    /// The Node's registration state (`registered`, `adopted`, `kubelet-owned`, …) and info.
    pub fn node(&self, state: impl Into<String>, info: impl Into<String>) {
        self.lock().node = Some((state.into(), info.into()));
    }

    /// A writer's election: whether this switch leads, and what it saw.
    pub fn election(&self, component: &'static str, leader: bool, info: impl Into<String>) {
        let mut g = self.lock();
        let since = match g.elections.get(component) {
            Some((l, _, since)) if *l == leader => *since,
            _ => Some(Instant::now()),
        };
        g.elections.insert(component, (leader, info.into(), since));
    }

    /// Everything, for status output.
    pub fn view(&self) -> KubeView {
        let g = self.lock();
        let now = Instant::now();
        KubeView {
            join: g.join.as_ref().map(|(s, m, since)| {
                (
                    s.clone(),
                    m.clone(),
                    since.map_or(0, |t| now.duration_since(t).as_secs()),
                )
            }),
            watches: g
                .watches
                .iter()
                .map(|(k, w)| {
                    (
                        (*k).to_string(),
                        w.clone(),
                        w.since.map_or(0, |t| now.duration_since(t).as_secs()),
                    )
                })
                .collect(),
            node: g.node.clone(),
            snapshots: g.snapshots,
            elections: g
                .elections
                .iter()
                .map(|(c, (l, info, since))| {
                    (
                        (*c).to_string(),
                        *l,
                        info.clone(),
                        since.map_or(0, |t| now.duration_since(t).as_secs()),
                    )
                })
                .collect(),
        }
    }

    /// Why the view of the cluster is stale (the join failing, watches failing), or `None`.
    /// The Node's Ready condition and `kube_gw_kube_degraded` follow this.
    pub fn stale(&self) -> Option<String> {
        Self::stale_in(&self.lock())
    }

    fn stale_in(g: &Inner) -> Option<String> {
        if let Some((JoinState::Failing, m, _)) = &g.join {
            return Some(m.clone());
        }
        let failing: Vec<_> = g
            .watches
            .iter()
            .filter(|(_, w)| w.state == WatchState::Failing)
            .map(|(k, _)| *k)
            .collect();
        (!failing.is_empty()).then(|| format!("watches failing: {}", failing.join(", ")))
    }

    /// Why the daemon needs attention while it keeps serving: a stale view ([`stale`]
    /// (Self::stale)), the client certificate held in memory only; or `None`.
    pub fn degraded(&self) -> Option<String> {
        let g = self.lock();
        let mut why: Vec<String> = Self::stale_in(&g).into_iter().collect();
        if let Some(e) = &g.unstored {
            why.push(format!(
                "the client certificate in use is held in memory only (a restart now would fall back to the state directory's older credentials or the bootstrap token): {e}"
            ));
        }
        (!why.is_empty()).then(|| why.join("; "))
    }
}

/// A copy of the report for rendering.
#[derive(Debug, Clone)]
pub struct KubeView {
    pub join: Option<(JoinState, String, u64)>,
    pub watches: Vec<(String, WatchHealth, u64)>,
    pub node: Option<(String, String)>,
    pub snapshots: u64,
    /// (component, this switch leads, what it saw, seconds since the last change of
    /// leadership).
    pub elections: Vec<(String, bool, String, u64)>,
}

/// Exposes the report on `/metrics`, read at scrape time.
#[derive(Debug)]
pub struct KubeCollector(pub std::sync::Arc<KubeReport>);

impl prometheus_client::collector::Collector for KubeCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        use prometheus_client::metrics::MetricType;
        let v = self.0.view();
        let not_after = self.0.lock().client_cert_not_after;
        let mut m = encoder.encode_descriptor(
            "kube_client_certificate_expiry_timestamp_seconds",
            "Unix time at which the client certificate from the bootstrap join expires (renewed at 70 % of its life)",
            None,
            MetricType::Gauge,
        )?;
        if let Some(t) = not_after {
            let secs = t
                .duration_since(std::time::SystemTime::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            ConstGauge::new(secs).encode(m.encode_family(&[("kind", "client")])?)?;
        }
        let joined = i64::from(matches!(v.join, Some((JoinState::Joined, _, _))));
        let degraded = i64::from(self.0.stale().is_some());
        let unstored = i64::from(self.0.lock().unstored.is_some());
        for (name, help, value) in [
            ("kube_joined", "1 when kube-gw has joined the cluster", joined),
            (
                "kube_degraded",
                "1 while the cluster view is stale or the join is failing (the last good view is kept)",
                degraded,
            ),
            (
                "kube_credentials_unstored",
                "1 while the client certificate in use could not be written to the state directory (disk full, read-only) and is held in memory only",
                unstored,
            ),
        ] {
            let g = ConstGauge::new(value);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        type Get = fn(&WatchHealth) -> i64;
        let gauges: [(&str, &str, Get); 2] = [
            (
                "kube_watch_objects",
                "Objects in each watched resource's store",
                |w| i64::try_from(w.objects).unwrap_or(i64::MAX),
            ),
            (
                "kube_watch_synced",
                "1 when the resource is listed and watched",
                |w| i64::from(w.state == WatchState::Synced),
            ),
        ];
        for (name, help, get) in gauges {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (res, w, _) in &v.watches {
                let labels = [("resource", res.as_str())];
                ConstGauge::new(get(w)).encode(m.encode_family(&labels)?)?;
            }
        }
        type Count = fn(&WatchHealth) -> u64;
        let counters: [(&str, &str, Count); 2] = [
            (
                "kube_watch_errors",
                "Watch failures (retried with backoff)",
                |w| w.errors,
            ),
            (
                "kube_watch_relists",
                "Full lists (start, expired resource version, reconnect)",
                |w| w.relists,
            ),
        ];
        for (name, help, get) in counters {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (res, w, _) in &v.watches {
                let labels = [("resource", res.as_str())];
                ConstCounter::new(get(w)).encode(m.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
