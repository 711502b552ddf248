//! Prometheus metrics of the daemon: the registry, the daemon-wide families (created here,
//! registered once, handed to the code that updates them), and the subsystems' collectors
//! (Kubernetes watches, BGP sessions), which read their state at scrape time. `/metrics`
//! (admin/http.rs) encodes it.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::lifecycle::Liveness;

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
    ) -> Self {
        let mut registry = Registry::with_prefix("kube_gw");
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
