//! Benchmark: how long a change takes to reach the fabric — a Service written to the API
//! server until its route is in a real FRR leaf's kernel FIB — with 10 000 Services present,
//! and where the time goes. Needs root.
//!
//!   sudo cargo bench --bench convergence                       # N = 10000, 100 changes
//!   sudo KUBE_GW_BENCH_N=2000 KUBE_GW_BENCH_CHANGES=50 cargo bench --bench convergence
//!   sudo KUBE_GW_BENCH_LOG=/tmp/kg.log cargo bench --bench convergence   # keep kube-gw's log
//!
//! ```text
//!  API server (test control plane) ─► kube-gw (switch ns) ─BGP─► FRR leaf (bgpd + zebra) ─► leaf kernel
//!                                               GoBGP (its own ns) ─BGP─┘
//! ```
//!
//! N Services with one IPv6 externalIP each are created, kube-gw starts and announces them
//! all, and the leaf installs them. Then, one at a time, a new Service is created; the clock
//! starts before the API request and stops at the leaf's `ip -ts monitor route` line for its
//! /128. The breakdown comes from timestamps on one clock (the machine's): kube-gw's log
//! (the watch event, the desired state computed, the address acknowledged on `lo`), the
//! leaf's bgpd log (`debug bgp updates in`: the UPDATE received) and the leaf's route
//! monitor. The leaf's own share is measured twice: from its bgpd's receipt to its kernel
//! for kube-gw's routes, and for the same kind of route injected from GoBGP
//! (`gobgp global rib add` → leaf FIB) in the same run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/controlplane.rs"]
mod controlplane;
#[path = "../tests/netns/harness/mod.rs"]
mod harness;

use std::io::Read;
use std::time::{Duration, SystemTime};

use controlplane::ControlPlane;
use harness::peers::{Frr, GoBgp, KubeGw};
use harness::{wait_for, Lab, Node};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, PostParams};

fn vip(i: usize) -> String {
    format!("2001:db8:100::{:x}", i + 1)
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn service(ns: &str, i: usize) -> Service {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("s{i}"), "namespace": ns},
        "spec": {"ports": [{"port": 80}], "externalIPs": [vip(i)]}
    }))
    .unwrap()
}

/// Seconds since the epoch of `2026-11-29T21:35:12.123456` / `2026/11/29 21:35:12.123456`
/// (UTC, as this machine's clock and logs are).
fn civil(s: &str) -> Option<f64> {
    let s = s.replace('/', "-").replacen(' ', "T", 1);
    let dt: jiff::civil::DateTime = s.trim_end_matches('Z').parse().ok()?;
    let ts = dt.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp();
    Some(ts.as_second() as f64 + f64::from(ts.subsec_nanosecond()) / 1e9)
}

/// A kube-gw JSON log line's time.
fn kg_ts(line: &str) -> Option<f64> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let t: jiff::Timestamp = v["timestamp"].as_str()?.parse().ok()?;
    Some(t.as_second() as f64 + f64::from(t.subsec_nanosecond()) / 1e9)
}

/// The time of the first line at or after `after` that `pred` accepts.
fn first_after(lines: &[(f64, String)], after: f64, pred: impl Fn(&str) -> bool) -> Option<f64> {
    lines
        .iter()
        .find(|(t, l)| *t >= after && pred(l))
        .map(|(t, _)| *t)
}

/// Reads what a growing log file gained since the last call.
struct Tail {
    file: std::fs::File,
    pending: String,
}

impl Tail {
    fn open(path: &std::path::Path) -> Self {
        Self {
            file: std::fs::File::open(path).unwrap(),
            pending: String::new(),
        }
    }

    /// Complete new lines.
    fn lines(&mut self) -> Vec<String> {
        let mut chunk = String::new();
        self.file.read_to_string(&mut chunk).unwrap();
        self.pending.push_str(&chunk);
        let complete = self.pending.rfind('\n').map_or(0, |i| i + 1);
        let out = self.pending[..complete].lines().map(String::from).collect();
        self.pending.drain(..complete);
        out
    }
}

/// `[2026-11-29T21:35:12.123456] 2001:db8:100::1 via …` → (time, prefix), additions only.
fn monitor_line(l: &str) -> Option<(f64, String)> {
    let rest = l.strip_prefix('[')?;
    let (ts, route) = rest.split_once("] ")?;
    if route.starts_with("Deleted") {
        return None;
    }
    Some((civil(ts)?, route.split_whitespace().next()?.to_string()))
}

/// Waits for `prefix` in the leaf's monitor; returns the monitor's time for it.
fn wait_fib(
    tail: &mut Tail,
    seen: &mut std::collections::HashMap<String, f64>,
    prefix: &str,
) -> f64 {
    let t = std::time::Instant::now();
    loop {
        for l in tail.lines() {
            if let Some((ts, p)) = monitor_line(&l) {
                seen.entry(p).or_insert(ts);
            }
        }
        if let Some(ts) = seen.get(prefix) {
            return *ts;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{prefix} never reached the leaf's FIB"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(f64::total_cmp);
    s[((s.len() as f64 - 1.0) * p).round() as usize]
}

fn leaf_routes(leaf: &Node) -> usize {
    let out = leaf.exec("ip", &["-6", "route", "show", "proto", "bgp"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("2001:db8:100::"))
        .count()
}

const LEAF: &str = "frr defaults datacenter\nlog stdout debugging\nlog timestamp precision 6\n\
    debug bgp updates in\n\
    router bgp 65000\n bgp router-id 192.0.2.1\n no bgp ebgp-requires-policy\n\
    neighbor 2001:db8:ff::2 remote-as 65100\n neighbor 2001:db8:ff::2 timers connect 1\n\
    neighbor 2001:db8:fe::2 remote-as 65200\n neighbor 2001:db8:fe::2 timers connect 1\n\
    address-family ipv6 unicast\n  neighbor 2001:db8:ff::2 activate\n\
    neighbor 2001:db8:fe::2 activate\n exit-address-family\n";

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "convergence: run with `sudo cargo bench --bench convergence` (skipped under cargo test)"
        );
        return;
    }
    if !harness::require_root("bench convergence") {
        return;
    }
    let env = |k: &str, d: usize| -> usize {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (n, changes) = (
        env("KUBE_GW_BENCH_N", 10_000),
        env("KUBE_GW_BENCH_CHANGES", 100),
    );
    let cp = ControlPlane::shared();
    let ns = format!("conv-{}", std::process::id());
    cp.create_namespace(&ns);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let api: Api<Service> = rt.block_on(async { Api::namespaced(cp.admin().await, &ns) });
    let t = std::time::Instant::now();
    rt.block_on(async {
        use futures::StreamExt;
        futures::stream::iter(0..n)
            .map(|i| {
                let api = api.clone();
                let svc = service(&ns, i);
                async move { api.create(&PostParams::default(), &svc).await.unwrap() }
            })
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await;
    });
    eprintln!("created {n} Services in {:.1}s", t.elapsed().as_secs_f64());

    let mut lab = Lab::new();
    let sw = lab.node("sw");
    let leaf = lab.node("leaf");
    let gob = lab.node("gob");
    lab.link(&sw, &["2001:db8:ff::2/64"], &leaf, &["2001:db8:ff::1/64"]);
    lab.link(&gob, &["2001:db8:fe::2/64"], &leaf, &["2001:db8:fe::1/64"]);
    let leaf_frr = Frr::start_with_zebra(&mut lab, &leaf, "leaf", LEAF);
    let gobgp = GoBgp::start(
        &mut lab,
        &gob,
        "gobgp",
        "[global.config]\n  as = 65200\n  router-id = \"192.0.2.9\"\n\
         [[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"2001:db8:fe::1\"\n    peer-as = 65000\n\
         [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"ipv6-unicast\"\n",
    );
    let port: u16 = cp.server.rsplit(':').next().unwrap().parse().unwrap();
    let name = format!("conv-{}", std::process::id());
    cp.bind_switch(&name);
    lab.forward_host_port(&sw, port);
    let kc_path = lab.path(&format!("{name}.kubeconfig"));
    cp.write_node_kubeconfig(&name, &kc_path);
    let kg = KubeGw::start(
        &mut lab,
        &sw,
        &name,
        &format!(
            "[node]\nname = \"{name}\"\n[kubernetes]\nkubeconfig = \"{}\"\nservice-cidrs = [\"10.96.0.0/12\"]\n\
             [vip]\npools = [\"2001:db8:100::/112\"]\nannounce = \"always\"\n[ipvs]\nenabled = false\n\
             [bgp]\nasn = 65100\nrouter-id = \"192.0.2.2\"\nlisten = false\n\
             [[bgp.neighbors]]\naddress = \"2001:db8:ff::1\"\nremote-asn = 65000\n\
             [log]\nlevel = \"info,kube_gw::kube::watch=debug,kube_gw::pipeline=debug,kube_gw::netlink=debug\"\n",
            kc_path.display()
        ),
    );
    gobgp.wait_established("2001:db8:fe::1", Duration::from_secs(60));
    let t = std::time::Instant::now();
    wait_for(
        "the leaf to install every VIP",
        Duration::from_secs(600),
        || (leaf_routes(&leaf) >= n).then_some(()),
    );
    eprintln!(
        "the leaf has {n} routes from kube-gw, {:.1}s after the session came up",
        t.elapsed().as_secs_f64()
    );
    lab.spawn(&leaf, "fibmon", "ip", &["-ts", "-6", "monitor", "route"]);
    std::thread::sleep(Duration::from_millis(500));
    let mut tail = Tail::open(&lab.path("fibmon.log"));
    let mut seen = std::collections::HashMap::new();

    // kube-gw: one Service at a time.
    let mut api_t0 = Vec::new();
    let mut fib_t = Vec::new();
    for k in 0..changes {
        let i = n + k;
        let svc = service(&ns, i);
        let t0 = now();
        rt.block_on(api.create(&PostParams::default(), &svc))
            .unwrap();
        api_t0.push(t0);
        fib_t.push(wait_fib(&mut tail, &mut seen, &vip(i)));
        std::thread::sleep(Duration::from_millis(20));
    }
    // GoBGP: the same kind of route, injected at the leaf's other neighbor.
    let mut gob_t0 = Vec::new();
    let mut gob_fib = Vec::new();
    for k in 0..changes {
        let p = format!("2001:db8:200::{:x}", k + 1);
        let t0 = now();
        gobgp.gobgp(&[
            "global",
            "rib",
            "-a",
            "ipv6",
            "add",
            &format!("{p}/128"),
            "nexthop",
            "2001:db8:fe::2",
        ]);
        gob_t0.push(t0);
        gob_fib.push(wait_fib(&mut tail, &mut seen, &p));
        std::thread::sleep(Duration::from_millis(20));
    }

    // The breakdown, from the logs.
    let kg_log: Vec<(f64, String)> = lab
        .log(&name)
        .lines()
        .filter_map(|l| Some((kg_ts(l)?, l.to_string())))
        .collect();
    let frr_log: Vec<(f64, String)> = lab
        .log(&leaf_frr.name)
        .lines()
        .filter_map(|l| {
            let ts = civil(l.get(..26)?)?;
            Some((ts, l.to_string()))
        })
        .collect();
    let rcvd = |prefix: &str, after: f64| {
        let needle = format!("{prefix}/128");
        first_after(&frr_log, after, |l| {
            l.contains("rcvd") && l.contains(&needle)
        })
    };
    let mut rows: Vec<[f64; 6]> = Vec::new();
    for k in 0..changes {
        let (t0, fib) = (api_t0[k], fib_t[k]);
        let v = vip(n + k);
        let watch = first_after(&kg_log, t0, |l| {
            l.contains("watch event") && l.contains("services")
        });
        let computed = watch.and_then(|w| {
            first_after(&kg_log, w, |l| {
                l.contains("desired state computed") && l.contains("\"complete\":true")
            })
        });
        let addr = first_after(&kg_log, t0, |l| {
            l.contains("address added") && l.contains(&format!("\"{v}\""))
        });
        let update = rcvd(&v, t0);
        let ms = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => (b - a) * 1000.0,
            _ => f64::NAN,
        };
        rows.push([
            (fib - t0) * 1000.0,
            ms(Some(t0), watch),
            ms(watch, computed),
            ms(computed, addr),
            ms(addr, update),
            ms(update, Some(fib)),
        ]);
    }
    let gob_rows: Vec<[f64; 2]> = (0..changes)
        .map(|k| {
            let p = format!("2001:db8:200::{:x}", k + 1);
            let update = rcvd(&p, gob_t0[k]);
            [
                (gob_fib[k] - gob_t0[k]) * 1000.0,
                update.map_or(f64::NAN, |u| (gob_fib[k] - u) * 1000.0),
            ]
        })
        .collect();
    let col = |i: usize| -> Vec<f64> { rows.iter().map(|r| r[i]).collect() };
    let gcol = |i: usize| -> Vec<f64> { gob_rows.iter().map(|r| r[i]).collect() };
    let share: Vec<f64> = rows.iter().map(|r| r[2] + r[3] + r[4]).collect();
    println!(
        "\nA change reaching the leaf's FIB, {changes} changes with {n} Services present (ms)"
    );
    println!("{:<58} {:>8} {:>8}", "", "p50", "p99");
    let line = |what: &str, v: &[f64]| {
        println!(
            "{what:<58} {:>8.1} {:>8.1}",
            percentile(v, 0.5),
            percentile(v, 0.99)
        );
    };
    line("API write → leaf FIB (kube-gw as the switch)", &col(0));
    line("  API write → kube-gw's watch event (API server)", &col(1));
    line("  watch event → desired state computed (kube-gw)", &col(2));
    line("  computed → address acknowledged on lo (kube-gw)", &col(3));
    line(
        "  address on lo → UPDATE received by the leaf (kube-gw)",
        &col(4),
    );
    line("  UPDATE received → leaf FIB (FRR)", &col(5));
    line("kube-gw's share: watch event → UPDATE at the leaf", &share);
    line("GoBGP inject (`gobgp global rib add`) → leaf FIB", &gcol(0));
    line(
        "  UPDATE received → leaf FIB (FRR), GoBGP's routes",
        &gcol(1),
    );
    let p99 = percentile(&col(0), 0.99);
    let share99 = percentile(&share, 0.99);
    println!(
        "\ntargets: API write → leaf FIB p99 ≤ 50 ms: {p99:.1} ms ({}); kube-gw's share p99 ≤ 10 ms: {share99:.1} ms ({})",
        if p99 <= 50.0 { "met" } else { "not met" },
        if share99 <= 10.0 { "met" } else { "not met" }
    );
    if let Ok(p) = std::env::var("KUBE_GW_BENCH_LOG") {
        std::fs::write(p, lab.log(&name)).unwrap();
    }
    drop(kg);
}
