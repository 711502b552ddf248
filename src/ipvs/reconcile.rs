//! The IPVS reconciler: makes kube-gw's virtual services in the kernel equal to the desired
//! state's, one change at a time.
//!
//! Work is proportional to the change. IPVS sends no notifications, so the reconciler dumps
//! kube-gw's services and their destinations once (and on every resync), keeps a [`Model`]
//! of them up to date with its own successful requests, and on each new desired state looks
//! only at the virtual services that changed (an `imbl` diff). [`plan`] is pure: desired
//! services, the model and the drain bookkeeping in, requests out.
//!
//! - A service is created with its destinations in the desired state's order (sorted), so
//!   every switch builds the same scheduler table; later changes add, re-weight or remove
//!   single destinations and never re-create the service.
//! - A destination that leaves is first set to weight 0 — the scheduler sends it no new
//!   connections (with `fallback`, clients hashed to it go to the next one) while its
//!   established ones finish — and removed once the kernel counts no connections on it, or
//!   after `drain-timeout`.
//! - Ownership: a service whose VIP lies in a configured pool is kube-gw's; any other
//!   service in the kernel (another tool's, firewall-mark services) is never touched. A
//!   restart adopts what it finds and changes only what differs: nothing is flushed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use imbl::ordmap::DiffItem;
use imbl::OrdMap;
use ipnet::IpNet;
use serde::Serialize;
use tokio::sync::watch;

use super::client::{Client, IpvsError};
use super::codec::{flags, DestInfo, DestSpec, Request, ServiceKey, ServiceSpec};
use crate::backoff::Backoff;
use crate::config::{Forwarding, IpvsConfig, Scheduler};
use crate::lifecycle::Heartbeat;
use crate::model::{VirtualService, VsKey};
use crate::reconcile::{drive, Pacing, Reconciler, Wake};

/// Periodic full pass (re-dump), whatever changed.
pub const RESYNC: Duration = Duration::from_secs(30);
/// How often draining destinations are looked at.
const DRAIN_CHECK: Duration = Duration::from_secs(2);

/// A destination's identity within its service.
pub type DestKey = (IpAddr, u16);

/// kube-gw's services as the kernel has them (as last read, plus kube-gw's own changes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Model {
    pub services: BTreeMap<ServiceKey, (ServiceSpec, BTreeMap<DestKey, DestInfo>)>,
}

impl Model {
    /// Applies a request that succeeded.
    pub fn apply(&mut self, r: &Request) {
        match r {
            Request::NewService(s) | Request::SetService(s) => {
                let e = self
                    .services
                    .entry(s.key)
                    .or_insert_with(|| (s.clone(), BTreeMap::new()));
                e.0 = s.clone();
            }
            Request::DelService(k) => {
                self.services.remove(k);
            }
            Request::NewDest(k, d) | Request::SetDest(k, d) => {
                if let Some((_, dests)) = self.services.get_mut(k) {
                    let e = dests.entry((d.addr, d.port)).or_insert(DestInfo {
                        spec: *d,
                        active_conns: 0,
                        inactive_conns: 0,
                        persist_conns: 0,
                    });
                    e.spec = *d;
                }
            }
            Request::DelDest(k, a, p) => {
                if let Some((_, dests)) = self.services.get_mut(k) {
                    dests.remove(&(*a, *p));
                }
            }
            Request::DumpServices | Request::DumpDests(_) => {}
        }
    }

    /// Destinations in the model.
    pub fn destinations(&self) -> usize {
        self.services.values().map(|(_, d)| d.len()).sum()
    }
}

/// The service settings kube-gw wants for a virtual service.
pub fn spec_for(key: &VsKey, vs: &VirtualService, cfg: &IpvsConfig) -> ServiceSpec {
    let mut f = 0;
    if vs.persistence.is_some() {
        f |= flags::PERSISTENT;
    }
    if cfg.fallback {
        f |= flags::SCHED1;
    }
    if cfg.hash_port {
        f |= flags::SCHED2;
    }
    ServiceSpec {
        key: *key,
        scheduler: match cfg.scheduler {
            Scheduler::Sh => "sh",
            Scheduler::Mh => "mh",
        }
        .into(),
        flags: f,
        timeout: vs
            .persistence
            .and_then(|t| u32::try_from(t).ok())
            .unwrap_or(0),
    }
}

/// Whether the kernel's service already has kube-gw's settings.
fn same_settings(have: &ServiceSpec, want: &ServiceSpec) -> bool {
    have.scheduler == want.scheduler
        && have.flags & flags::MANAGED == want.flags & flags::MANAGED
        && (want.flags & flags::PERSISTENT == 0 || have.timeout == want.timeout)
}

/// Destinations being drained: since when, per service and destination.
pub type Draining = BTreeMap<(ServiceKey, DestKey), Instant>;

/// What to send for the services in `look_at` (pure).
pub fn plan(
    look_at: &BTreeSet<ServiceKey>,
    desired: &OrdMap<VsKey, VirtualService>,
    cfg: &IpvsConfig,
    model: &Model,
    draining: &Draining,
    now: Instant,
) -> Vec<Request> {
    let mut out = Vec::new();
    for key in look_at {
        let want = desired.get(key);
        let have = model.services.get(key);
        match (want, have) {
            (None, None) => {}
            (None, Some(_)) => out.push(Request::DelService(*key)),
            (Some(vs), None) => {
                out.push(Request::NewService(spec_for(key, vs, cfg)));
                for d in &vs.destinations {
                    out.push(Request::NewDest(*key, dest(d, cfg)));
                }
            }
            (Some(vs), Some((spec, dests))) => {
                let want_spec = spec_for(key, vs, cfg);
                if !same_settings(spec, &want_spec) {
                    out.push(Request::SetService(want_spec));
                }
                let wanted: BTreeSet<DestKey> = vs
                    .destinations
                    .iter()
                    .map(|d| (d.address, d.port))
                    .collect();
                for d in &vs.destinations {
                    let want = dest(d, cfg);
                    match dests.get(&(d.address, d.port)) {
                        None => out.push(Request::NewDest(*key, want)),
                        Some(h) if h.spec != want => out.push(Request::SetDest(*key, want)),
                        Some(_) => {}
                    }
                }
                for (dk, h) in dests {
                    if wanted.contains(dk) {
                        continue;
                    }
                    let idle = h.active_conns == 0 && h.inactive_conns == 0;
                    let expired = draining
                        .get(&(*key, *dk))
                        .is_some_and(|since| now.duration_since(*since) >= cfg.drain_timeout);
                    if h.spec.weight != 0 && !idle {
                        out.push(Request::SetDest(
                            *key,
                            DestSpec {
                                weight: 0,
                                ..h.spec
                            },
                        ));
                    } else if h.spec.weight == 0 && !idle && !expired {
                        // Still draining.
                    } else {
                        out.push(Request::DelDest(*key, dk.0, dk.1));
                    }
                }
            }
        }
    }
    out
}

fn dest(d: &crate::model::Destination, cfg: &IpvsConfig) -> DestSpec {
    DestSpec {
        addr: d.address,
        port: d.port,
        weight: i32::try_from(d.weight).unwrap_or(i32::MAX),
        fwd: match cfg.forwarding {
            Forwarding::Masq => super::codec::FWD_MASQ,
            Forwarding::Tunnel => super::codec::FWD_TUNNEL,
        },
    }
}

/// What the reconciler reports (status, metrics, BGP's make-before-break).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IpvsReport {
    /// VIPs whose every wanted virtual service is in the kernel with all its wanted
    /// destinations: the data plane is ready, they may be announced.
    #[serde(skip)]
    pub ready: std::sync::Arc<BTreeSet<std::net::IpAddr>>,
    /// `[ipvs] enabled = false`: kube-gw does not touch IPVS.
    pub disabled: bool,
    /// kube-gw's virtual services in the kernel.
    pub services: usize,
    /// Their destinations (draining ones included).
    pub destinations: usize,
    /// Destinations at weight 0, waiting for their connections to end.
    pub draining: usize,
    /// The last pass applied the whole desired state.
    pub in_sync: bool,
    pub passes: u64,
    pub error: Option<String>,
    /// Kernel settings that are wrong and could not be set (see [`super::sysctl`]).
    pub settings: Vec<String>,
}

/// Whether a service is kube-gw's: its VIP lies in a pool.
pub fn owned(key: &ServiceKey, pools: &[IpNet]) -> bool {
    pools.iter().any(|p| p.contains(&key.vip))
}

/// The VIPs whose wanted virtual services are all in `model`, each with every wanted
/// destination.
pub fn ready_vips(
    model: &Model,
    want: &OrdMap<VsKey, VirtualService>,
) -> BTreeSet<std::net::IpAddr> {
    let mut ready = BTreeSet::new();
    let mut not = BTreeSet::new();
    for (k, vs) in want {
        let complete = model.services.get(k).is_some_and(|(_, dests)| {
            vs.destinations
                .iter()
                .all(|d| dests.contains_key(&(d.address, d.port)))
        });
        if complete {
            ready.insert(k.vip);
        } else {
            not.insert(k.vip);
        }
    }
    ready.retain(|v| !not.contains(v));
    ready
}

/// Reads kube-gw's services and their destinations from the kernel.
pub fn load(client: &mut Client, pools: &[IpNet]) -> Result<Model, IpvsError> {
    let mut m = Model::default();
    for s in client.services()? {
        if !owned(&s.key, pools) {
            continue;
        }
        let dests = client
            .dests(&s.key)?
            .into_iter()
            .map(|d| ((d.spec.addr, d.spec.port), d))
            .collect();
        m.services.insert(s.key, (s, dests));
    }
    Ok(m)
}

/// The state the blocking side keeps between passes.
struct Kernel {
    client: Client,
    model: Model,
    /// Kernel settings still wrong after trying to set them.
    settings: Vec<String>,
}

/// The IPVS reconciler, as the driver ([`crate::reconcile`]) runs it.
struct IpvsReconciler {
    config: watch::Receiver<std::sync::Arc<crate::config::Config>>,
    config_open: bool,
    cfg: IpvsConfig,
    pools: Vec<IpNet>,
    kernel: Option<Kernel>,
    /// The desired state the last complete pass applied.
    applied: Option<OrdMap<VsKey, VirtualService>>,
    draining: Draining,
    drain_tick: tokio::time::Interval,
    passes: u64,
    opened_once: bool,
    report: watch::Sender<IpvsReport>,
}

fn settings(c: &crate::config::Config) -> (IpvsConfig, Vec<IpNet>) {
    (c.ipvs.clone(), c.vip.prefixes())
}

impl Reconciler for IpvsReconciler {
    /// `None` until the first complete desired state: nothing is touched before (a restart
    /// adopts what is there).
    type Want = Option<OrdMap<VsKey, VirtualService>>;

    async fn pass(&mut self, want: &Self::Want, full: bool) -> Result<(), String> {
        let Some(current) = want else {
            return Ok(());
        };
        self.passes += 1;
        let passes = self.passes;
        let started = Instant::now();
        if !self.cfg.enabled {
            // Switched off: nothing is touched (what is in the kernel stays as it is).
            self.kernel = None;
            self.applied = None;
            self.report.send_replace(IpvsReport {
                disabled: true,
                in_sync: true,
                passes,
                ..IpvsReport::default()
            });
            return Ok(());
        }
        // Without IPVS in the kernel and nothing to program: nothing to do (and no leftover
        // of kube-gw's could be in a table that does not exist).
        if self.kernel.is_none() && current.is_empty() && !self.opened_once {
            self.report.send_modify(|r| {
                r.in_sync = true;
                r.passes = passes;
            });
            return Ok(());
        }
        let full = full || self.kernel.is_none() || self.applied.is_none();
        // What to look at: everything after a (re)load, else what changed since the last
        // applied state, plus services with draining destinations.
        let mut look_at: BTreeSet<ServiceKey> = BTreeSet::new();
        if let (false, Some(prev)) = (full, &self.applied) {
            for d in prev.diff(current) {
                let k = match d {
                    DiffItem::Add(k, _) | DiffItem::Remove(k, _) => *k,
                    DiffItem::Update { new: (k, _), .. } => *k,
                };
                look_at.insert(k);
            }
        }
        let drain_keys: BTreeSet<ServiceKey> = self.draining.keys().map(|(k, _)| *k).collect();
        let k = self.kernel.take();
        let want = current.clone();
        let cfg = self.cfg.clone();
        let pools = self.pools.clone();
        let drain = self.draining.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut k = match k {
                Some(k) => k,
                None => {
                    let client = Client::open()?;
                    // ip_vs is loaded now: its settings exist.
                    let settings = super::sysctl::ensure();
                    for s in &settings {
                        tracing::warn!("{s}");
                    }
                    Kernel {
                        client,
                        model: Model::default(),
                        settings,
                    }
                }
            };
            if full {
                k.model = load(&mut k.client, &pools)?;
                look_at.extend(k.model.services.keys().copied());
                look_at.extend(want.keys().copied());
            }
            // Draining destinations: read their connection counts again.
            for key in &drain_keys {
                if k.model.services.contains_key(key) {
                    let dests: BTreeMap<DestKey, DestInfo> = k
                        .client
                        .dests(key)?
                        .into_iter()
                        .map(|d| ((d.spec.addr, d.spec.port), d))
                        .collect();
                    if let Some(e) = k.model.services.get_mut(key) {
                        e.1 = dests;
                    }
                }
                look_at.insert(*key);
            }
            let look_at: BTreeSet<ServiceKey> =
                look_at.into_iter().filter(|k| owned(k, &pools)).collect();
            let reqs = plan(&look_at, &want, &cfg, &k.model, &drain, Instant::now());
            let results = k.client.apply(&reqs)?;
            let mut failed = Vec::new();
            for (r, res) in reqs.iter().zip(results) {
                match res {
                    Ok(()) => k.model.apply(r),
                    Err(errno) => failed.push(format!(
                        "{r:?}: {}",
                        std::io::Error::from_raw_os_error(errno)
                    )),
                }
            }
            Ok::<_, IpvsError>((k, reqs, failed))
        })
        .await;
        let (k, reqs, failed) = match result {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                let e = e.to_string();
                self.report.send_modify(|r| {
                    r.error = Some(e.clone());
                    r.in_sync = false;
                    r.passes = passes;
                });
                return Err(e);
            }
            Err(e) => {
                tracing::error!(error = %e, "IPVS pass panicked; retrying");
                return Err(format!("the IPVS pass panicked: {e}"));
            }
        };
        let now = Instant::now();
        // Drain bookkeeping: destinations at weight 0 that kube-gw does not want.
        let mut still = Draining::new();
        for (key, (_, dests)) in &k.model.services {
            let want: BTreeSet<DestKey> = current
                .get(key)
                .map(|vs| {
                    vs.destinations
                        .iter()
                        .map(|d| (d.address, d.port))
                        .collect()
                })
                .unwrap_or_default();
            for dk in dests.keys() {
                if !want.contains(dk) {
                    let since = self.draining.get(&(*key, *dk)).copied().unwrap_or(now);
                    still.insert((*key, *dk), since);
                }
            }
        }
        self.draining = still;
        if !reqs.is_empty() {
            tracing::info!(
                requests = reqs.len(),
                failed = failed.len(),
                micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                "IPVS changed"
            );
        }
        let error = (!failed.is_empty())
            .then(|| format!("{} IPVS changes failed, first: {}", failed.len(), failed[0]));
        self.opened_once = true;
        let r = IpvsReport {
            ready: std::sync::Arc::new(ready_vips(&k.model, current)),
            disabled: false,
            settings: k.settings.clone(),
            services: k.model.services.len(),
            destinations: k.model.destinations(),
            draining: self.draining.len(),
            in_sync: error.is_none(),
            passes,
            error: error.clone(),
        };
        self.kernel = Some(k);
        self.report.send_replace(r);
        match error {
            None => {
                self.applied = Some(current.clone());
                Ok(())
            }
            Some(e) => Err(e),
        }
    }

    async fn wake(&mut self) -> Wake {
        let draining = !self.draining.is_empty();
        tokio::select! {
            r = self.config.changed(), if self.config_open => {
                self.config_open = r.is_ok();
                if !self.config_open {
                    return std::future::pending().await;
                }
                let next = settings(&self.config.borrow_and_update());
                if next != (self.cfg.clone(), self.pools.clone()) {
                    tracing::info!("the [ipvs] settings or the pools changed; looking at every service");
                    (self.cfg, self.pools) = next;
                    return Wake::Full;
                }
                Wake::Pass
            }
            _ = self.drain_tick.tick(), if draining => Wake::Pass,
        }
    }
}

/// Runs the reconciler until `desired` closes. `[ipvs]` and the pools are read from
/// `config`; a reload that changes them makes the next pass look at everything (a new
/// scheduler is set on each service in place).
pub async fn run(
    config: watch::Receiver<std::sync::Arc<crate::config::Config>>,
    mut desired: watch::Receiver<Option<OrdMap<VsKey, VirtualService>>>,
    report: watch::Sender<IpvsReport>,
    hb: Heartbeat,
) {
    let (cfg, pools) = settings(&config.borrow());
    let mut drain_tick = tokio::time::interval(DRAIN_CHECK);
    drain_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut r = IpvsReconciler {
        config,
        config_open: true,
        cfg,
        pools,
        kernel: None,
        applied: None,
        draining: Draining::new(),
        drain_tick,
        passes: 0,
        opened_once: false,
        report,
    };
    let pacing = Pacing {
        name: "ipvs",
        resync: RESYNC,
        backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(10)),
    };
    // Never stopped from outside: the daemon keeps kube-gw's IPVS services on stop
    // (established flows are not cut, and the next start adopts them).
    let (_never, mut stop) = watch::channel(false);
    drive(&mut r, &mut desired, pacing, &hb, &mut stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DestState, Destination, ObjectKey, Protocol};

    fn key(vip: &str, port: u16) -> VsKey {
        VsKey {
            vip: vip.parse().unwrap(),
            port,
            protocol: Protocol::Tcp,
        }
    }

    fn vs(dests: &[&str]) -> VirtualService {
        let mut destinations: Vec<Destination> = dests
            .iter()
            .map(|a| Destination {
                address: a.parse().unwrap(),
                port: 8080,
                state: DestState::Ready,
                weight: 1,
            })
            .collect();
        destinations.sort();
        VirtualService {
            service: ObjectKey {
                namespace: "default".into(),
                name: "web".into(),
            },
            port_name: String::new(),
            destinations,
            persistence: None,
            external_traffic_local: false,
            source_ranges: Vec::new(),
        }
    }

    fn cfg() -> IpvsConfig {
        IpvsConfig::default()
    }

    fn all(d: &OrdMap<VsKey, VirtualService>, m: &Model) -> BTreeSet<VsKey> {
        d.keys().chain(m.services.keys()).copied().collect()
    }

    /// Applies a plan to the model as if every request succeeded.
    fn run_plan(
        d: &OrdMap<VsKey, VirtualService>,
        m: &mut Model,
        drain: &Draining,
    ) -> Vec<Request> {
        let p = plan(&all(d, m), d, &cfg(), m, drain, Instant::now());
        for r in &p {
            m.apply(r);
        }
        p
    }

    #[test]
    fn a_vip_is_ready_only_when_all_its_services_and_destinations_are_in_the_kernel() {
        let (a80, a443, b80) = (
            key("198.51.100.10", 80),
            key("198.51.100.10", 443),
            key("198.51.100.11", 80),
        );
        let mut d = OrdMap::new();
        d.insert(a80, vs(&["10.0.0.1"]));
        d.insert(a443, vs(&["10.0.0.1"]));
        d.insert(b80, vs(&["10.0.0.2", "10.0.0.3"]));
        let mut m = Model::default();
        assert!(ready_vips(&m, &d).is_empty(), "nothing in the kernel yet");
        run_plan(&d, &mut m, &Draining::new());
        let both: BTreeSet<std::net::IpAddr> = [a80.vip, b80.vip].into();
        assert_eq!(ready_vips(&m, &d), both);
        // One port of a missing: a is not ready. A destination of b missing: b is not.
        m.services.remove(&a443);
        m.services
            .get_mut(&b80)
            .unwrap()
            .1
            .remove(&("10.0.0.3".parse().unwrap(), 8080));
        assert!(ready_vips(&m, &d).is_empty());
    }

    #[test]
    fn a_new_service_gets_its_destinations_in_order() {
        let mut d = OrdMap::new();
        d.insert(
            key("198.51.100.10", 80),
            vs(&["10.0.0.3", "10.0.0.1", "10.0.0.2"]),
        );
        let mut m = Model::default();
        let p = run_plan(&d, &mut m, &Draining::new());
        assert!(
            matches!(&p[0], Request::NewService(s) if s.scheduler == "mh" && s.flags == flags::SCHED1)
        );
        let order: Vec<String> = p[1..]
            .iter()
            .map(|r| match r {
                Request::NewDest(_, d) => d.addr.to_string(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(order, ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
        // A second pass has nothing to do.
        assert!(run_plan(&d, &mut m, &Draining::new()).is_empty());
    }

    #[test]
    fn one_endpoint_changing_touches_one_destination() {
        let k = key("198.51.100.10", 80);
        let mut d = OrdMap::new();
        d.insert(k, vs(&["10.0.0.1", "10.0.0.2"]));
        let mut m = Model::default();
        run_plan(&d, &mut m, &Draining::new());
        d.insert(k, vs(&["10.0.0.1", "10.0.0.2", "10.0.0.9"]));
        let p = run_plan(&d, &mut m, &Draining::new());
        assert_eq!(p.len(), 1);
        assert!(matches!(&p[0], Request::NewDest(_, d) if d.addr.to_string() == "10.0.0.9"));
    }

    #[test]
    fn a_leaving_destination_drains_before_it_goes() {
        let k = key("198.51.100.10", 80);
        let mut d = OrdMap::new();
        d.insert(k, vs(&["10.0.0.1", "10.0.0.2"]));
        let mut m = Model::default();
        run_plan(&d, &mut m, &Draining::new());
        // With connections on it: weight 0 first.
        m.services
            .get_mut(&k)
            .unwrap()
            .1
            .values_mut()
            .for_each(|x| x.active_conns = 3);
        d.insert(k, vs(&["10.0.0.1"]));
        let p = run_plan(&d, &mut m, &Draining::new());
        assert_eq!(p.len(), 1);
        assert!(
            matches!(&p[0], Request::SetDest(_, d) if d.weight == 0 && d.addr.to_string() == "10.0.0.2")
        );
        // Still busy, within the drain timeout: nothing.
        let gone = (k, ("10.0.0.2".parse().unwrap(), 8080));
        let mut drain = Draining::new();
        drain.insert(gone, Instant::now());
        assert!(run_plan(&d, &mut m, &drain).is_empty());
        // Past the timeout: removed.
        drain.insert(
            gone,
            Instant::now() - cfg().drain_timeout - Duration::from_secs(1),
        );
        let p = run_plan(&d, &mut m, &drain);
        assert!(matches!(&p[..], [Request::DelDest(_, a, 8080)] if a.to_string() == "10.0.0.2"));
        // Idle ones go at once.
        d.insert(k, vs(&[]));
        m.services
            .get_mut(&k)
            .unwrap()
            .1
            .values_mut()
            .for_each(|x| x.active_conns = 0);
        let p = run_plan(&d, &mut m, &Draining::new());
        assert!(matches!(&p[..], [Request::DelDest(_, a, 8080)] if a.to_string() == "10.0.0.1"));
    }

    #[test]
    fn a_returning_destination_gets_its_weight_back() {
        let k = key("198.51.100.10", 80);
        let mut d = OrdMap::new();
        d.insert(k, vs(&["10.0.0.1"]));
        let mut m = Model::default();
        run_plan(&d, &mut m, &Draining::new());
        m.services
            .get_mut(&k)
            .unwrap()
            .1
            .values_mut()
            .for_each(|x| x.spec.weight = 0);
        let p = run_plan(&d, &mut m, &Draining::new());
        assert!(matches!(&p[..], [Request::SetDest(_, d)] if d.weight == 1));
    }

    #[test]
    fn tunnel_forwarding_programs_ipip_with_the_node_s_weight_and_no_source_nat() {
        let k = key("198.51.100.10", 80);
        let mut d = OrdMap::new();
        let mut two = vs(&["192.0.2.201"]);
        two.destinations[0].weight = 2;
        d.insert(k, two);
        let tunnel = IpvsConfig {
            forwarding: Forwarding::Tunnel,
            ..cfg()
        };
        let mut m = Model::default();
        let p = plan(
            &all(&d, &m),
            &d,
            &tunnel,
            &m,
            &Draining::new(),
            Instant::now(),
        );
        assert!(
            matches!(&p[1], Request::NewDest(_, x) if x.fwd == super::super::codec::FWD_TUNNEL && x.weight == 2),
            "{p:?}"
        );
        // (No source NAT with tunnel: `nft::tests::tunnel_forwarding_rewrites_no_source`.)
        // Programmed with masq before: switching the method is one SetDest.
        run_plan(&d, &mut m, &Draining::new());
        let p = plan(
            &all(&d, &m),
            &d,
            &tunnel,
            &m,
            &Draining::new(),
            Instant::now(),
        );
        assert!(
            matches!(&p[..], [Request::SetDest(_, x)] if x.fwd == super::super::codec::FWD_TUNNEL),
            "{p:?}"
        );
    }

    #[test]
    fn settings_change_in_place_and_gone_services_are_deleted() {
        let k = key("198.51.100.10", 80);
        let mut d = OrdMap::new();
        d.insert(k, vs(&["10.0.0.1"]));
        let mut m = Model::default();
        run_plan(&d, &mut m, &Draining::new());
        let mut affinity = vs(&["10.0.0.1"]);
        affinity.persistence = Some(600);
        d.insert(k, affinity);
        let p = run_plan(&d, &mut m, &Draining::new());
        assert!(
            matches!(&p[..], [Request::SetService(s)] if s.timeout == 600 && s.flags & flags::PERSISTENT != 0)
        );
        d.remove(&k);
        let p = run_plan(&d, &mut m, &Draining::new());
        assert_eq!(p, vec![Request::DelService(k)]);
    }

    #[test]
    fn ownership_is_the_pools() {
        let pools: Vec<IpNet> = vec!["198.51.100.0/24".parse().unwrap()];
        assert!(owned(&key("198.51.100.10", 80), &pools));
        assert!(!owned(&key("203.0.113.10", 80), &pools));
    }
}
