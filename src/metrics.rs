//! Prometheus metrics of the daemon: the registry, the daemon-wide families (created here,
//! registered once, handed to the code that updates them), and the subsystems' collectors
//! (Kubernetes watches, BGP sessions, BFD, the pipeline's VIPs and reconcilers), which read
//! their state at scrape time. `/metrics` (admin/http.rs) encodes it.
//!
//! The operator's view over these families is `configs/grafana-dashboard.json` and
//! `configs/prometheus-rules.yaml`; `scripts/check-monitoring` and the netns test
//! `the_dashboard_and_alerts_ask_only_for_metrics_the_daemon_exposes` keep them true.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use std::sync::Arc;

use tokio::sync::watch;

use crate::desired::DesiredState;
use crate::lifecycle::Liveness;
use crate::model::Programmed;

/// Label set `{result="…"}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

/// Label set `{command="…"}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabel {
    pub command: String,
}

/// Label set `{loop_name="…"}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoopLabel {
    pub loop_name: String,
}

/// The daemon's metric families.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub ready: Gauge,
    pub config_generation: Gauge,
    pub config_reloads: Family<ResultLabel, Counter>,
    pub admin_requests: Family<CommandLabel, Counter>,
    pub watchdog_pings: Counter,
    loop_heartbeat_age_ms: Family<LoopLabel, Gauge>,
    /// The gateway's families (registered whether or not `[gateway]` is on: they stay empty).
    pub gateway: crate::gateway::metrics::GatewayMetrics,
}

impl Metrics {
    /// Creates and registers every family.
    pub fn new(
        version: &str,
        start_unix_seconds: i64,
        kube: std::sync::Arc<crate::kube::report::KubeReport>,
        bgp: crate::bgp::status::Statuses,
        bfd: crate::bfd::service::StatusCell,
        pipeline: PipelineCollector,
    ) -> Self {
        let mut registry = Registry::with_prefix("kube_gw");
        registry.register_collector(Box::new(pipeline));
        registry.register_collector(Box::new(crate::kube::report::KubeCollector(kube)));
        registry.register_collector(Box::new(crate::bgp::metrics::BgpCollector(bgp)));
        registry.register_collector(Box::new(crate::bfd::service::BfdCollector(bfd)));
        let info = Info::new(vec![("version".to_string(), version.to_string())]);
        registry.register("build", "Build information", info);
        let start = Gauge::<i64>::default();
        start.set(start_unix_seconds);
        registry.register(
            "start_time_seconds",
            "Unix time at which the daemon started",
            start,
        );
        let m = Self {
            ready: Gauge::default(),
            config_generation: Gauge::default(),
            config_reloads: Family::default(),
            admin_requests: Family::default(),
            watchdog_pings: Counter::default(),
            loop_heartbeat_age_ms: Family::default(),
            gateway: crate::gateway::metrics::GatewayMetrics::default(),
            registry,
        };
        let mut m = m;
        let r = &mut m.registry;
        m.gateway.register(r);
        r.register("ready", "1 when the daemon is serving", m.ready.clone());
        r.register(
            "config_generation",
            "Generation of the configuration in force",
            m.config_generation.clone(),
        );
        r.register(
            "config_reloads",
            "Configuration reloads by result (applied, unchanged, rejected)",
            m.config_reloads.clone(),
        );
        r.register(
            "admin_requests",
            "Requests on the admin socket by command",
            m.admin_requests.clone(),
        );
        r.register(
            "watchdog_pings",
            "WATCHDOG=1 notifications sent to systemd",
            m.watchdog_pings.clone(),
        );
        r.register(
            "loop_heartbeat_age_milliseconds",
            "Time since each main loop last turned",
            m.loop_heartbeat_age_ms.clone(),
        );
        m
    }

    /// The registry in Prometheus text format, with loop ages read now.
    pub fn encode(&self, liveness: &Liveness) -> Result<String, std::fmt::Error> {
        for (name, age) in liveness.ages() {
            self.loop_heartbeat_age_ms
                .get_or_create(&LoopLabel { loop_name: name })
                .set(i64::try_from(age.as_millis()).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// The pipeline's metrics, read at scrape time: VIPs wanted, on the interface, announceable
/// and refused (by reason), and each reconciler's passes and event→kernel latency
/// (`reconcile::stats`).
#[derive(Debug)]
pub struct PipelineCollector {
    pub desired: watch::Receiver<Arc<DesiredState>>,
    pub programmed: watch::Receiver<Programmed>,
}

impl prometheus_client::collector::Collector for PipelineCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        use prometheus_client::metrics::MetricType;
        let count = |n: usize| ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX));
        let (desired, announceable, refusals) = {
            let d = self.desired.borrow();
            let mut by_kind = std::collections::BTreeMap::<&str, usize>::new();
            for r in &d.refusals {
                *by_kind.entry(r.reason.kind()).or_default() += 1;
            }
            let a = d.vips.values().filter(|v| v.announceable).count();
            (d.vips.len(), a, by_kind)
        };
        let (on_interface, foreign) = {
            let p = self.programmed.borrow();
            (p.vips.len(), p.foreign.len())
        };
        for (name, help, n) in [
            (
                "vips_desired",
                "Service addresses the cluster asks this switch to serve",
                desired,
            ),
            (
                "vips_announceable",
                "Desired addresses that policy and readiness let BGP announce",
                announceable,
            ),
            (
                "vips_on_interface",
                "Wanted addresses on the VIP interface as kube-gw's",
                on_interface,
            ),
            (
                "vips_foreign",
                "Wanted addresses already on the interface as someone else's (left alone)",
                foreign,
            ),
        ] {
            count(n).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)?;
        }
        let mut m = encoder.encode_descriptor(
            "vips_refused",
            "Service addresses refused, by reason (each is also an Event on its Service)",
            None,
            MetricType::Gauge,
        )?;
        for (kind, n) in &refusals {
            count(*n).encode(m.encode_family(&[("reason", *kind)])?)?;
        }
        let records = crate::reconcile::stats::records();
        let mut m = encoder.encode_descriptor(
            "reconcile_passes",
            "Reconciler passes by result (ok, error)",
            None,
            MetricType::Counter,
        )?;
        for (name, r) in &records {
            for (result, n) in [("ok", r.passes_ok), ("error", r.passes_failed)] {
                ConstCounter::new(n)
                    .encode(m.encode_family(&[("reconciler", *name), ("result", result)])?)?;
            }
        }
        let mut m = encoder.encode_descriptor(
            "reconcile_consecutive_failures",
            "Failed passes since the reconciler last succeeded",
            None,
            MetricType::Gauge,
        )?;
        for (name, r) in &records {
            ConstGauge::new(i64::try_from(r.consecutive_failures).unwrap_or(i64::MAX))
                .encode(m.encode_family(&[("reconciler", *name)])?)?;
        }
        let mut m = encoder.encode_descriptor(
            "event_to_kernel_seconds",
            "From the cluster watch publishing a changed view to the end of the reconciler pass that applied it",
            None,
            MetricType::Histogram,
        )?;
        for (name, r) in &records {
            let buckets: Vec<(f64, u64)> = crate::reconcile::stats::BUCKETS
                .iter()
                .copied()
                .chain([f64::INFINITY])
                .zip(r.latency_buckets)
                .collect();
            m.encode_family(&[("reconciler", *name)])?
                .encode_histogram::<Vec<(String, String)>>(
                    r.latency_sum,
                    r.latency_count,
                    &buckets,
                    None,
                )?;
        }
        Ok(())
    }
}
