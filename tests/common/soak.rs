//! The churn soak's engine, shared by its two worlds:
//!
//! - the host soak (`tests/netns/soak.rs`): kube-gw in a switch namespace on this machine's
//!   kernel, a BIRD leaf; the views checked are `lo` and the leaf (this kernel has no IPVS);
//! - the lab soak (`tests/lab/soak.rs`): kube-gw in the Debian kernel in qemu, talking to
//!   the test control plane on the host; the views are `lo`, IPVS (`ipvsadm -Ln`) and the
//!   leaf.
//!
//! A world gives the engine an admin client of the API server, the namespace to churn in,
//! and a way to read each view, kube-gw's pid, its metrics and an `ip -ts monitor address`
//! log. The engine makes the fleet (n Services with an externalIP from 198.18.0.0/15, each
//! with a ready EndpointSlice), then changes it `rate` times a second: a Service's address
//! moved (a Service update), a Service and its slice deleted and another created, or the
//! slice's endpoint moved (an EndpointSlice update). A Service never has two changes in
//! flight. Every minute it pauses, lets the calls in flight finish and checks the invariant
//!
//!   each view = what the cluster asks for,
//!
//! computed here from the API server (Services with a ready endpoint: their externalIPs on
//! `lo` and at the leaf; `TCP ip:port → endpoint:targetPort` in IPVS), never from kube-gw's
//! report. It waits at most 30 s for agreement and records how long that took. Recorded
//! every 5 s: RSS, file descriptors, CPU (from /proc); every minute: the event→kernel latency
//! p50/p99 of the minute's address changes (the API call's return → the address in the
//! monitor) and kube-gw's own histogram as a cross-check. The world decides where the CSVs
//! go.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};

/// The soak's size: from `KUBE_GW_SOAK_SECS`, `KUBE_GW_SOAK_SERVICES`, `KUBE_GW_SOAK_RATE`
/// (the lab's guest gets them as `KUBE_GW_LAB_SOAK_*`), with the world's defaults.
pub struct Params {
    pub secs: u64,
    pub services: u32,
    pub rate: u64,
}

impl Params {
    pub fn from_env(prefix: &str, services: u64, rate: u64) -> Params {
        let knob = |name: &str, default| crate::harness::knob(&format!("{prefix}_{name}"), default);
        Params {
            secs: knob("SECS", 300),
            services: knob("SERVICES", services) as u32,
            rate: knob("RATE", rate).max(1),
        }
    }
}

/// What a world can see, read from the kernel and the leaf (never from kube-gw).
pub struct Views {
    /// The soak's addresses on `lo`.
    pub lo: BTreeSet<String>,
    /// The soak's routes at the leaf.
    pub leaf: BTreeSet<String>,
    /// IPVS as `TCP ip:port → addr:port` (one entry per destination; a virtual service
    /// without one as `TCP ip:port → none`); `None` where the kernel has no IPVS.
    pub ipvs: Option<BTreeSet<String>>,
}

pub trait World {
    fn views(&self) -> Views;
    fn daemon_pid(&self) -> u32;
    fn metrics(&self) -> String;
    /// The output of `ip -ts -4 monitor address` in kube-gw's namespace, since the start.
    fn address_log(&self) -> String;
}

/// How many VIPs the soak's range holds: 198.18.0.1 to 198.19.255.254, inside the pool
/// kube-gw serves (198.18.0.0/15).
const VIP_SPAN: u32 = (1 << 17) - 2;

/// The n-th VIP of the soak's range (n < `VIP_SPAN`).
pub fn vip(n: u32) -> Ipv4Addr {
    assert!(n < VIP_SPAN, "VIP number {n} is outside the soak's range");
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + 1 + n)
}

/// The churn's VIPs: handed out in turn, round the range again and again, skipping any a
/// live Service holds. (A plain counter left the /15 after 131 070 changes, about an hour
/// of churn, and the Services it made were rightly refused by kube-gw as outside its
/// pools: the views and the cluster then disagreed for the soak's own fault.)
struct Vips {
    next: u32,
    held: BTreeSet<u32>,
}

impl Vips {
    /// The fleet holds VIPs 0..fleet; the churn starts after them.
    fn new(fleet: u32) -> Vips {
        Vips {
            next: fleet % VIP_SPAN,
            held: (0..fleet).collect(),
        }
    }

    /// A VIP no live Service holds, now held.
    fn take(&mut self) -> u32 {
        assert!((self.held.len() as u32) < VIP_SPAN, "every VIP is held");
        loop {
            let n = self.next;
            self.next = (self.next + 1) % VIP_SPAN;
            if self.held.insert(n) {
                return n;
            }
        }
    }

    fn release(&mut self, n: u32) {
        self.held.remove(&n);
    }
}

pub fn in_range(a: &str) -> bool {
    a.parse::<Ipv4Addr>()
        .is_ok_and(|a| (u32::from(a) >> 17) == (u32::from(Ipv4Addr::new(198, 18, 0, 0)) >> 17))
}

/// The n-th endpoint address: 10.1.0.0/16 from .1.
fn endpoint(n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 1, 0, 0)) + 1 + (n % 65_000))
}

fn service(ns: &str, name: &str, ip: Ipv4Addr) -> Service {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": ns, "labels": {"kube-gw.io/test": ns}},
        "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
                 "externalIPs": [ip.to_string()]}
    }))
    .unwrap()
}

fn slice(ns: &str, name: &str, ep: Ipv4Addr) -> EndpointSlice {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("{name}-1"), "namespace": ns,
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [ep.to_string()], "conditions": {"ready": true}}]
    }))
    .unwrap()
}

/// What the cluster asks for, from the API server.
pub struct Want {
    /// The externalIPs of the namespace's Services that have a ready endpoint.
    pub vips: BTreeSet<String>,
    /// For those: `TCP ip:port → addr:targetPort` for each port and ready endpoint.
    pub ipvs: BTreeSet<String>,
}

pub async fn expected(client: &kube::Client, ns: &str) -> Want {
    let lp = ListParams::default();
    let services = Api::<Service>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .unwrap();
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .unwrap();
    // Service name → its ready endpoints as (port name, address:port).
    let mut ready: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for s in &slices.items {
        let Some(name) = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name"))
        else {
            continue;
        };
        for e in s
            .endpoints
            .iter()
            .flatten()
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        {
            for p in s.ports.iter().flatten() {
                for a in &e.addresses {
                    let port = p.port.unwrap_or_default();
                    ready
                        .entry(name.clone())
                        .or_default()
                        .push((p.name.clone().unwrap_or_default(), format!("{a}:{port}")));
                }
            }
        }
    }
    let mut want = Want {
        vips: BTreeSet::new(),
        ipvs: BTreeSet::new(),
    };
    for s in &services.items {
        let (Some(name), Some(spec)) = (s.metadata.name.as_ref(), s.spec.as_ref()) else {
            continue;
        };
        let Some(eps) = ready.get(name) else { continue };
        for ip in spec.external_ips.iter().flatten() {
            want.vips.insert(ip.clone());
            for p in spec.ports.iter().flatten() {
                let pname = p.name.clone().unwrap_or_default();
                for (_, dest) in eps.iter().filter(|(n, _)| *n == pname) {
                    want.ipvs.insert(format!("TCP {ip}:{} → {dest}", p.port));
                }
            }
        }
    }
    want
}

/// `ip -j addr show dev lo` as the soak's `lo` view (its addresses in 198.18.0.0/15).
pub fn lo_view(out: &[u8]) -> BTreeSet<String> {
    let v: serde_json::Value = serde_json::from_slice(out).unwrap_or_default();
    v.as_array()
        .into_iter()
        .flatten()
        .flat_map(|i| i["addr_info"].as_array().into_iter().flatten())
        .filter_map(|a| a["local"].as_str())
        .filter(|a| in_range(a))
        .map(String::from)
        .collect()
}

/// `ipvsadm -Ln` as the soak's IPVS view (its virtual services in 198.18.0.0/15).
pub fn ipvs_view(ipvsadm_ln: &str) -> BTreeSet<String> {
    let mut view = BTreeSet::new();
    let mut current: Option<(String, bool)> = None;
    let close = |c: Option<(String, bool)>, view: &mut BTreeSet<String>| {
        if let Some((vs, false)) = c {
            view.insert(format!("{vs} → none"));
        }
    };
    for l in ipvsadm_ln.lines() {
        let mut w = l.split_whitespace();
        match w.next() {
            Some(proto @ ("TCP" | "UDP")) => {
                close(current.take(), &mut view);
                let addr = w.next().unwrap_or_default();
                let ip = addr.rsplit_once(':').map_or("", |(ip, _)| ip);
                if in_range(ip) {
                    current = Some((format!("{proto} {addr}"), false));
                }
            }
            Some("->") => {
                if let (Some((vs, any)), Some(dest)) = (current.as_mut(), w.next()) {
                    if dest != "RemoteAddress:Port" {
                        view.insert(format!("{vs} → {dest}"));
                        *any = true;
                    }
                }
            }
            _ => {}
        }
    }
    close(current, &mut view);
    view
}

/// Seconds of a day from `ip -ts`'s `[YYYY-MM-DDTHH:MM:SS.ffffff]`, and the address added.
fn monitor_line(l: &str) -> Option<(f64, String)> {
    if l.contains("Deleted") {
        return None;
    }
    let ts = l.strip_prefix('[')?.split(']').next()?;
    let t = crate::harness::unix_seconds(ts)?;
    let addr = l.split(" inet ").nth(1)?.split('/').next()?.to_string();
    Some((t, addr))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// p50 and p99 of kube-gw's own event→kernel histogram (addresses), from its buckets.
fn daemon_quantiles(text: &str) -> (f64, f64) {
    let mut buckets: Vec<(f64, f64)> = text
        .lines()
        .filter(|l| {
            l.starts_with("kube_gw_event_to_kernel_seconds_bucket{")
                && l.contains("reconciler=\"addresses\"")
        })
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last().map_or(0.0, |b| b.1);
    let q = |p: f64| {
        buckets
            .iter()
            .find(|b| b.1 >= total * p)
            .map_or(f64::NAN, |b| b.0)
    };
    (q(0.5), q(0.99))
}

/// Each view against what it should be: the names of those that differ, with a sample of
/// the difference.
fn disagreements(want: &Want, v: &Views) -> Vec<String> {
    let mut out = Vec::new();
    let mut cmp = |name: &str, have: &BTreeSet<String>, want: &BTreeSet<String>| {
        if have != want {
            let lacks: Vec<_> = want.difference(have).take(3).collect();
            let extra: Vec<_> = have.difference(want).take(3).collect();
            out.push(format!("{name} lacks {lacks:?} has extra {extra:?}"));
        }
    };
    cmp("lo", &v.lo, &want.vips);
    cmp("leaf", &v.leaf, &want.vips);
    if let Some(ipvs) = &v.ipvs {
        cmp("ipvs", ipvs, &want.ipvs);
    }
    out
}

/// One /proc sample: seconds into the soak, RSS (KiB), file descriptors, CPU (%).
type Sample = (f64, u64, usize, f64);

/// One check: seconds, wanted, on lo, at the leaf, in IPVS (entries; -1: not observed),
/// agreed after, latency p50/p99 (ms), changes measured, kube-gw's own p50/p99 bounds (ms).
struct Check {
    t: f64,
    wanted: usize,
    lo: usize,
    leaf: usize,
    ipvs: i64,
    agreed: Option<Duration>,
    p50: f64,
    p99: f64,
    measured: usize,
    d50: f64,
    d99: f64,
}

/// The runtime the soak's client and generator live on (a client's connection task stays
/// on the runtime that made it: make the client on this one).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// What a soak leaves: `samples.csv` and `checks.csv` (as `scripts/soak` plots them).
pub struct Results {
    pub samples_csv: String,
    pub checks_csv: String,
}

/// Makes the fleet, churns it for `p.secs` with a check every minute, hands the results to
/// `save` (so a failed soak still leaves its data), then asserts: no change refused, every
/// check agreed, each minute's changes measured, file descriptors back where they started
/// (± 8).
pub fn run(
    p: &Params,
    world: &dyn World,
    rt: &tokio::runtime::Runtime,
    client: &kube::Client,
    ns: &str,
    save: &dyn Fn(&Results),
) {
    let n = p.services;
    let started = Instant::now();
    rt.block_on(async {
        futures::stream::iter(0..n)
            .map(|i| {
                let client = client.clone();
                async move {
                    let name = format!("s{i}");
                    let pp = PostParams::default();
                    Api::<Service>::namespaced(client.clone(), ns)
                        .create(&pp, &service(ns, &name, vip(i)))
                        .await
                        .unwrap();
                    Api::<EndpointSlice>::namespaced(client, ns)
                        .create(&pp, &slice(ns, &name, endpoint(i)))
                        .await
                        .unwrap();
                }
            })
            .buffer_unordered(16)
            .collect::<Vec<()>>()
            .await;
    });
    let want = rt.block_on(expected(client, ns));
    assert_eq!(want.vips.len(), n as usize);
    let mut last = Vec::new();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(600) {
        last = disagreements(&want, &world.views());
        if last.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        last.is_empty(),
        "the fleet did not converge in 600 s: {last:?}"
    );
    eprintln!(
        "soak: {n} Services created and converged in {:?}",
        started.elapsed()
    );

    // The churn, paused for each check.
    let paused = Arc::new(AtomicBool::new(false));
    let in_flight = Arc::new(tokio::sync::Semaphore::new(16));
    let sent: Arc<Mutex<Vec<(String, SystemTime)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let changes = Arc::new(AtomicU64::new(0));
    // Calls the API server refused: none expected (each Service has one change at a time).
    let failed = Arc::new(AtomicU64::new(0));
    let churn = {
        let (client, ns) = (client.clone(), ns.to_string());
        let (paused, in_flight, sent, stop, changes, failed) = (
            paused.clone(),
            in_flight.clone(),
            sent.clone(),
            stop.clone(),
            changes.clone(),
            failed.clone(),
        );
        let rate = p.rate;
        rt.spawn(async move {
            // Live Services by slot (name); the slots with a change in flight; the next
            // fresh number (for a name or an endpoint).
            let mut live: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
            // Each slot's VIP, and the VIPs held.
            let mut slot_vip: Vec<u32> = (0..n).collect();
            let mut vips = Vips::new(n);
            let busy: Arc<Mutex<BTreeSet<usize>>> = Arc::default();
            let mut next = n;
            let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                if paused.load(Ordering::Relaxed) {
                    continue;
                }
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let k = (seed % live.len() as u64) as usize;
                if !busy.lock().unwrap().insert(k) {
                    continue;
                }
                let fresh = next;
                next += 1;
                let permit = in_flight.clone().acquire_owned().await.unwrap();
                let (client, ns, sent, busy, failed) = (
                    client.clone(),
                    ns.clone(),
                    sent.clone(),
                    busy.clone(),
                    failed.clone(),
                );
                let name = live[k].clone();
                // 0: the address moves; 1: the Service is replaced; 2: the endpoint moves.
                let op = (seed >> 8) % 3;
                if op == 1 {
                    live[k] = format!("s{fresh}");
                }
                // The address moves, or comes with the new Service: a VIP of its own.
                let ip = if op == 2 {
                    vip(slot_vip[k])
                } else {
                    let v = vips.take();
                    vips.release(std::mem::replace(&mut slot_vip[k], v));
                    vip(v)
                };
                changes.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let svcs = Api::<Service>::namespaced(client.clone(), &ns);
                    let slices = Api::<EndpointSlice>::namespaced(client.clone(), &ns);
                    // An address change is made by the call that names the new address: the
                    // latency runs from its return.
                    let done: Result<(), kube::Error> = async {
                        match op {
                            0 => {
                                let patch =
                                    serde_json::json!({"spec": {"externalIPs": [ip.to_string()]}});
                                svcs.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                                    .await?;
                                sent.lock()
                                    .unwrap()
                                    .push((ip.to_string(), SystemTime::now()));
                            }
                            1 => {
                                let dp = DeleteParams::default();
                                svcs.delete(&name, &dp).await?;
                                slices.delete(&format!("{name}-1"), &dp).await?;
                                let new = format!("s{fresh}");
                                let pp = PostParams::default();
                                svcs.create(&pp, &service(&ns, &new, ip)).await?;
                                sent.lock()
                                    .unwrap()
                                    .push((ip.to_string(), SystemTime::now()));
                                slices
                                    .create(&pp, &slice(&ns, &new, endpoint(fresh)))
                                    .await?;
                            }
                            _ => {
                                let patch = serde_json::json!({"endpoints": [
                                    {"addresses": [endpoint(fresh).to_string()],
                                     "conditions": {"ready": true}}]});
                                slices
                                    .patch(
                                        &format!("{name}-1"),
                                        &PatchParams::default(),
                                        &Patch::Merge(&patch),
                                    )
                                    .await?;
                            }
                        }
                        Ok(())
                    }
                    .await;
                    if let Err(e) = done {
                        failed.fetch_add(1, Ordering::Relaxed);
                        eprintln!("soak: a change to {name} failed: {e}");
                    }
                    busy.lock().unwrap().remove(&k);
                    drop(permit);
                });
            }
        })
    };

    // The sampler: /proc every 5 s.
    let pid = world.daemon_pid();
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let sampler = {
        let (samples, stop) = (samples.clone(), stop.clone());
        std::thread::spawn(move || {
            let hz = 100.0;
            let t0 = Instant::now();
            let (mut last_t, mut last_ticks) = (t0, crate::harness::proc_use(pid).cpu_ticks);
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(5));
                let u = crate::harness::proc_use(pid);
                let now = Instant::now();
                let cpu =
                    (u.cpu_ticks - last_ticks) as f64 / hz / (now - last_t).as_secs_f64() * 100.0;
                (last_t, last_ticks) = (now, u.cpu_ticks);
                samples
                    .lock()
                    .unwrap()
                    .push((t0.elapsed().as_secs_f64(), u.rss_kib, u.fds, cpu));
            }
        })
    };

    // Every minute: pause, let the calls in flight finish, check, resume.
    let mut checks = Vec::new();
    let soak_start = Instant::now();
    let mut measured = 0usize;
    while soak_start.elapsed() < Duration::from_secs(p.secs) {
        let left = Duration::from_secs(p.secs).saturating_sub(soak_start.elapsed());
        std::thread::sleep(left.min(Duration::from_secs(60)));
        paused.store(true, Ordering::Relaxed);
        rt.block_on(async {
            let _all = in_flight.acquire_many(16).await.unwrap();
        });
        let t = Instant::now();
        let want = rt.block_on(expected(client, ns));
        let mut agreed = None;
        let mut views;
        let mut differ;
        loop {
            views = world.views();
            differ = disagreements(&want, &views);
            if differ.is_empty() {
                agreed = Some(t.elapsed());
                break;
            }
            if t.elapsed() > Duration::from_secs(30) {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        // This minute's latencies: each change's API return → its address in the monitor.
        let appeared: BTreeMap<String, f64> = world
            .address_log()
            .lines()
            .filter_map(monitor_line)
            .map(|(t, a)| (a, t))
            .collect();
        let sent_now = sent.lock().unwrap().clone();
        let mut lat: Vec<f64> = sent_now[measured..]
            .iter()
            .filter_map(|(a, at)| {
                let s = at
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .ok()?
                    .as_secs_f64();
                Some((appeared.get(a)? - s).max(0.0) * 1000.0)
            })
            .collect();
        measured = sent_now.len();
        lat.sort_by(f64::total_cmp);
        let (d50, d99) = daemon_quantiles(&world.metrics());
        let c = Check {
            t: soak_start.elapsed().as_secs_f64(),
            wanted: want.vips.len(),
            lo: views.lo.len(),
            leaf: views.leaf.len(),
            ipvs: views.ipvs.as_ref().map_or(-1, |v| v.len() as i64),
            agreed,
            p50: percentile(&lat, 0.5),
            p99: percentile(&lat, 0.99),
            measured: lat.len(),
            d50: d50 * 1000.0,
            d99: d99 * 1000.0,
        };
        eprintln!(
            "soak: t={:.0}s wanted {} lo {} leaf {} ipvs {} agreed {:?}; latency p50 {:.1} ms p99 {:.1} ms over {} changes (kube-gw's own: p50 ≤ {} ms, p99 ≤ {} ms)",
            c.t, c.wanted, c.lo, c.leaf, c.ipvs, c.agreed, c.p50, c.p99, c.measured, c.d50, c.d99
        );
        if agreed.is_none() {
            eprintln!("soak: disagreement: {differ:?}");
        }
        checks.push(c);
        paused.store(false, Ordering::Relaxed);
    }
    stop.store(true, Ordering::Relaxed);
    rt.block_on(churn).unwrap();
    sampler.join().unwrap();

    let samples = samples.lock().unwrap().clone();
    let mut samples_csv = String::from("seconds,rss_kib,fds,cpu_percent\n");
    for (t, rss, fds, cpu) in &samples {
        samples_csv.push_str(&format!("{t:.1},{rss},{fds},{cpu:.1}\n"));
    }
    let mut checks_csv = String::from(
        "seconds,wanted,on_lo,at_leaf,agreed_ms,p50_ms,p99_ms,changes,daemon_p50_le_ms,daemon_p99_le_ms,in_ipvs\n",
    );
    for c in &checks {
        checks_csv.push_str(&format!(
            "{:.0},{},{},{},{},{:.1},{:.1},{},{},{},{}\n",
            c.t,
            c.wanted,
            c.lo,
            c.leaf,
            c.agreed.map_or(-1.0, |d| d.as_secs_f64() * 1000.0),
            c.p50,
            c.p99,
            c.measured,
            c.d50,
            c.d99,
            c.ipvs
        ));
    }
    save(&Results {
        samples_csv,
        checks_csv,
    });
    let (first, last) = (samples.first().unwrap(), samples.last().unwrap());
    eprintln!(
        "soak: {} s, {} changes; RSS {} → {} KiB, fds {} → {}",
        p.secs,
        changes.load(Ordering::Relaxed),
        first.1,
        last.1,
        first.2,
        last.2,
    );
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "changes the API server refused"
    );
    assert!(!checks.is_empty());
    for c in &checks {
        assert!(
            c.agreed.is_some(),
            "the views and the cluster disagreed at {:.0} s",
            c.t
        );
        assert!(
            c.measured > 0,
            "no change measured in the minute to {:.0} s",
            c.t
        );
    }
    assert!(
        last.2 <= first.2 + 8,
        "file descriptors grew: {} → {}",
        first.2,
        last.2
    );
}

#[cfg(test)]
mod tests {
    // The lab's binary (harness = false) compiles this module but not its #[test]s.
    #[allow(unused_imports)]
    use super::*;

    /// The churn's VIPs stay inside the pool: after the last one they go round again,
    /// past any a live Service holds; a released one is handed out again in its turn.
    #[test]
    fn the_churn_s_vips_go_round_the_range_past_the_held_ones() {
        let mut v = Vips::new(3);
        assert_eq!(v.take(), 3);
        v.next = VIP_SPAN - 1;
        assert_eq!(v.take(), VIP_SPAN - 1);
        // Round again: 0, 1, 2 and 3 are held.
        assert_eq!(v.take(), 4);
        v.release(1);
        v.next = VIP_SPAN - 1;
        // VIP_SPAN - 1 is still held: the next free one is 1.
        assert_eq!(v.take(), 1);
        assert!(in_range(&vip(VIP_SPAN - 1).to_string()));
        assert_eq!(vip(VIP_SPAN - 1), Ipv4Addr::new(198, 19, 255, 255 - 1));
        assert!(!in_range(
            &Ipv4Addr::from(u32::from(vip(VIP_SPAN - 1)) + 2).to_string()
        ));
    }

    /// `ipvsadm -Ln` as the kernel prints it: services outside the soak's range are not in
    /// the view; one without destinations shows as `→ none`.
    #[test]
    fn the_ipvs_view_reads_ipvsadm() {
        let out = "IP Virtual Server version 1.2.1 (size=4096)\n\
                   Prot LocalAddress:Port Scheduler Flags\n  \
                   -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
                   TCP  198.18.0.1:80 mh (mh-fallback)\n  \
                   -> 10.1.0.1:8080                Masq    1      0          0\n  \
                   -> 10.1.0.9:8080                Masq    1      0          0\n\
                   TCP  198.18.0.2:80 mh (mh-fallback)\n\
                   TCP  203.0.113.50:80 rr\n  \
                   -> 192.0.2.77:80                Masq    1      0          0\n";
        let v: Vec<String> = ipvs_view(out).into_iter().collect();
        assert_eq!(
            v,
            [
                "TCP 198.18.0.1:80 → 10.1.0.1:8080",
                "TCP 198.18.0.1:80 → 10.1.0.9:8080",
                "TCP 198.18.0.2:80 → none",
            ]
        );
    }
}
