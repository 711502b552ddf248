//! Benchmark: programming IPVS, kube-gw against `ipvsadm --restore` of the same rule set,
//! measured in the same run. IPVS is not in this machine's kernel, so it runs in the
//! real-kernel lab:
//!
//!   sudo scripts/lab-run --bench ipvs
//!   sudo KUBE_GW_BENCH_SERVICES=2000 scripts/lab-run --bench ipvs
//!
//! 1. N services (default 10 000) × 10 destinations, Maglev with fallback, masquerading:
//!    `ipvsadm -R` from a file in a fresh namespace — the baseline.
//! 2. kube-gw's reconciler from scratch in another fresh namespace: open the socket, read the
//!    (empty) table, plan, send.
//! 3. With the N services in place: one destination added to one service, 21 times — the
//!    reconciler's incremental path (diff of two desired states, plan, send, acknowledge).
//!
//! Rounds alternate (default 3, `KUBE_GW_BENCH_ROUNDS`); the ratio is between medians.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/netns/harness/mod.rs"]
mod harness;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use imbl::OrdMap;
use kube_gw::config::IpvsConfig;
use kube_gw::desired::{DestState, Destination, VirtualService, VsKey};
use kube_gw::ipvs::{client::Client, reconcile};
use kube_gw::model::{ObjectKey, Protocol};

const DESTS: usize = 10;

fn key(i: usize) -> VsKey {
    VsKey {
        vip: format!("198.51.100.{}", i % 250 + 1).parse().unwrap(),
        port: u16::try_from(1000 + i / 250).unwrap(),
        protocol: Protocol::Tcp,
    }
}

fn dest(j: usize) -> Destination {
    Destination {
        address: format!("203.0.113.{}", j + 1).parse().unwrap(),
        port: 8080,
        state: DestState::Ready,
        weight: 1,
    }
}

fn desired(n: usize) -> OrdMap<VsKey, VirtualService> {
    (0..n)
        .map(|i| {
            (
                key(i),
                VirtualService {
                    service: ObjectKey {
                        namespace: "bench".into(),
                        name: format!("s{i}").into(),
                    },
                    port_name: String::new(),
                    destinations: (0..DESTS).map(dest).collect(),
                    persistence: None,
                    external_traffic_local: false,
                    source_ranges: Vec::new(),
                },
            )
        })
        .collect()
}

fn pools() -> Vec<ipnet::IpNet> {
    vec!["198.51.100.0/24".parse().unwrap()]
}

/// Inside a namespace: program N services from scratch, then time single changes. Prints
/// `scratch SECONDS` and `change MICROS` lines.
fn role_kube_gw(n: usize) {
    let cfg = IpvsConfig::default();
    let want = desired(n);
    let t = Instant::now();
    let mut client = Client::open().unwrap();
    let mut model = reconcile::load(&mut client, &pools()).unwrap();
    let look_at: BTreeSet<VsKey> = want.keys().copied().collect();
    let reqs = reconcile::plan(
        &look_at,
        &want,
        &cfg,
        &model,
        &reconcile::Draining::new(),
        Instant::now(),
    );
    let results = client.apply(&reqs).unwrap();
    assert!(results.iter().all(Result::is_ok), "some requests failed");
    for r in &reqs {
        model.apply(r);
    }
    println!("scratch {:.6}", t.elapsed().as_secs_f64());
    assert_eq!(model.destinations(), n * DESTS);

    // One destination more on one service, as the reconciler handles a new desired state.
    let mut prev = want;
    for c in 0..21 {
        let mut next = prev.clone();
        let k = key((c * 7919) % n);
        let mut vs = next[&k].clone();
        vs.destinations.push(dest(DESTS + c));
        vs.destinations.sort();
        next.insert(k, vs);
        let t = Instant::now();
        let look_at: BTreeSet<VsKey> = prev
            .diff(&next)
            .map(|d| match d {
                imbl::ordmap::DiffItem::Add(k, _) | imbl::ordmap::DiffItem::Remove(k, _) => *k,
                imbl::ordmap::DiffItem::Update { new: (k, _), .. } => *k,
            })
            .collect();
        let reqs = reconcile::plan(
            &look_at,
            &next,
            &cfg,
            &model,
            &reconcile::Draining::new(),
            Instant::now(),
        );
        let results = client.apply(&reqs).unwrap();
        let took = t.elapsed();
        assert_eq!(reqs.len(), 1);
        assert!(results.iter().all(Result::is_ok));
        for r in &reqs {
            model.apply(r);
        }
        println!("change {}", took.as_micros());
        prev = next;
    }
}

fn restore_file(n: usize) -> String {
    let mut s = String::with_capacity(n * (DESTS + 1) * 60);
    for i in 0..n {
        let k = key(i);
        let vs = format!("{}:{}", k.vip, k.port);
        s.push_str(&format!("-A -t {vs} -s mh -b mh-fallback\n"));
        for j in 0..DESTS {
            s.push_str(&format!("-a -t {vs} -r 203.0.113.{}:8080 -m -w 1\n", j + 1));
        }
    }
    s
}

fn count_dests(node: &harness::Node) -> usize {
    let out = node.exec("ipvsadm", &["-Ln"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.trim_start().starts_with("-> 203.0.113."))
        .count()
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("role") {
        role_kube_gw(args[1].parse().unwrap());
        return;
    }
    if !args.iter().any(|a| a == "--lab") {
        println!(
            "ipvs: needs IPVS; runs in the real-kernel lab: sudo scripts/lab-run --bench ipvs"
        );
        return;
    }
    let n: usize = std::env::var("KUBE_GW_BENCH_SERVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let rounds: usize = std::env::var("KUBE_GW_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    let me = std::env::current_exe().unwrap().display().to_string();
    let mut lab = harness::Lab::new();
    let file = lab.write("rules", &restore_file(n));
    let (mut base, mut ours, mut changes) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..rounds {
        let node = lab.node(&format!("restore{r}"));
        let t = Instant::now();
        let out = node
            .command("sh")
            .args(["-c", &format!("ipvsadm -R < {}", file.display())])
            .output()
            .unwrap();
        let took = t.elapsed().as_secs_f64();
        assert!(
            out.status.success(),
            "ipvsadm -R: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(count_dests(&node), n * DESTS);
        base.push(took);

        let node = lab.node(&format!("kubegw{r}"));
        let out = node.exec(&me, &["role", &n.to_string()]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert_eq!(count_dests(&node), n * DESTS + 21);
        for l in text.lines() {
            match l.split_once(' ') {
                Some(("scratch", s)) => ours.push(s.parse::<f64>().unwrap()),
                Some(("change", us)) => changes.push(us.parse::<f64>().unwrap() / 1000.0),
                _ => {}
            }
        }
        eprintln!(
            "round {}: ipvsadm -R {:.3} s, kube-gw {:.3} s",
            r + 1,
            base[r],
            ours[r]
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let line = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.3}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!();
    println!(
        "IPVS: {n} services x {DESTS} destinations, median of {rounds} rounds (one run, the lab's kernel under qemu)"
    );
    println!("{:<44} {:>10} {:>8}   rounds", "", "seconds", "ratio");
    println!(
        "{:<44} {:>10.3} {:>8}   {}",
        "ipvsadm -R (restore)",
        median(&base),
        "1.00",
        line(&base)
    );
    println!(
        "{:<44} {:>10.3} {:>8.2}   {}",
        "kube-gw reconciler, from scratch",
        median(&ours),
        median(&ours) / median(&base),
        line(&ours)
    );
    let mut c = changes.clone();
    c.sort_by(f64::total_cmp);
    println!(
        "one destination added with {n} services present: median {:.2} ms, max {:.2} ms (of {})",
        median(&c),
        c[c.len() - 1],
        c.len()
    );
}
