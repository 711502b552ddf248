//! Benchmark: how fast a leaf stops using a switch that fails, kube-gw as the switch against
//! FRR as the switch (bgpd + bfdd), the same BFD timers (300 ms × 3) and BGP hold time
//! (90 s), measured in the same run. Needs root.
//!
//!   sudo cargo bench --bench failover                  # 20 runs of each
//!   sudo KUBE_GW_BENCH_ROUNDS=5 cargo bench --bench failover
//!
//! One leaf (FRR: zebra, bfdd, bgpd with `neighbor X bfd`, installing what it learns into
//! its kernel) and two switches on their own links: kube-gw announcing 198.51.100.90/32 (a
//! static prefix) and FRR announcing 198.51.100.91/32 (`network`). Runs alternate between
//! the two. The clock starts when the failure is made and stops when the leaf's kernel no
//! longer has the switch's route (polled every 5 ms):
//!
//! - **path cut**: nftables on the switch drops everything on its link, both ways (the
//!   switch or its link dies silently); BFD is what can notice within the hold time;
//! - **kill**: the switch's routing daemons are SIGKILLed (kube-gw; FRR's bgpd and bfdd).
//!   The kernel closes their TCP connections, so the leaf learns it from TCP, BFD or not.
//!
//! After each run the failure is undone and the next run waits until the leaf has the route
//! again. The table shows p50 and p95 per switch and kube-gw's ratio to FRR.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/netns/harness/mod.rs"]
mod harness;

use std::time::{Duration, Instant};

use harness::peers::{Frr, KubeGw};
use harness::{wait_for, Lab, Node};

const KG_ROUTE: &str = "198.51.100.90";
const FRR_ROUTE: &str = "198.51.100.91";
const CONVERGE: Duration = Duration::from_secs(60);

fn leaf_has(leaf: &Node, prefix: &str) -> bool {
    let out = leaf.exec("ip", &["-j", "route", "show", &format!("{prefix}/32")]);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    j.as_array().is_some_and(|a| !a.is_empty())
}

/// Milliseconds from now until the leaf's kernel loses `prefix`.
fn time_until_gone(leaf: &Node, prefix: &str, t0: Instant) -> f64 {
    while leaf_has(leaf, prefix) {
        assert!(t0.elapsed() < Duration::from_secs(120), "{prefix} stayed");
        std::thread::sleep(Duration::from_millis(5));
    }
    t0.elapsed().as_secs_f64() * 1000.0
}

fn wait_back(leaf: &Node, prefix: &str) {
    wait_for(
        &format!("the leaf to have {prefix} again"),
        CONVERGE,
        || leaf_has(leaf, prefix).then_some(()),
    );
    // BFD's and BGP's timers settle (BFD leaves its slow start).
    std::thread::sleep(Duration::from_secs(3));
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let i = ((s.len() as f64 - 1.0) * p).round() as usize;
    s[i]
}

const FRR_SWITCH: &str = "frr defaults datacenter\nrouter bgp 65010\n bgp router-id 192.0.2.21\n\
    no bgp ebgp-requires-policy\n no bgp network import-check\n\
    neighbor 192.0.2.5 remote-as 65000\n neighbor 192.0.2.5 bfd\n neighbor 192.0.2.5 timers 30 90\n\
    neighbor 192.0.2.5 timers connect 1\n\
    address-family ipv4 unicast\n  network 198.51.100.91/32\n exit-address-family\n";

fn main() {
    // `cargo test --all-targets` runs bench binaries as smoke tests without `--bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "failover: run with `sudo cargo bench --bench failover` (skipped under cargo test)"
        );
        return;
    }
    if !harness::require_root("bench failover") {
        return;
    }
    let rounds: usize = std::env::var("KUBE_GW_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut lab = Lab::new();
    let leaf = lab.node("leaf");
    let swk = lab.node("swk");
    let swf = lab.node("swf");
    let (kg_if, _) = lab.link(&swk, &["192.0.2.2/30"], &leaf, &["192.0.2.1/30"]);
    let (frr_if, _) = lab.link(&swf, &["192.0.2.6/30"], &leaf, &["192.0.2.5/30"]);
    let _leaf_frr = Frr::start_with_bfd(
        &mut lab,
        &leaf,
        "leaf",
        "frr defaults datacenter\nrouter bgp 65000\n bgp router-id 192.0.2.1\n no bgp ebgp-requires-policy\n\
         neighbor 192.0.2.2 remote-as 65010\n neighbor 192.0.2.2 bfd\n neighbor 192.0.2.2 timers 30 90\n\
         neighbor 192.0.2.2 timers connect 1\n\
         neighbor 192.0.2.6 remote-as 65010\n neighbor 192.0.2.6 bfd\n neighbor 192.0.2.6 timers 30 90\n\
         neighbor 192.0.2.6 timers connect 1\n",
        "",
    );
    let kg = KubeGw::start(
        &mut lab,
        &swk,
        "kg",
        &format!(
            "[node]\nname = \"sw\"\n[vip]\npools = [\"198.51.100.0/24\"]\n[ipvs]\nenabled = false\n\
             [bgp]\nasn = 65010\nrouter-id = \"192.0.2.20\"\nhold-time = 90\ndrain-time = 0\n\
             static-prefixes = [\"{KG_ROUTE}/32\"]\n\
             [[bgp.neighbors]]\naddress = \"192.0.2.1\"\nremote-asn = 65000\nbfd = true\n"
        ),
    );
    let mut frr_gen = 0;
    let mut frr_name = format!("sw{frr_gen}");
    Frr::start_with_bfd(&mut lab, &swf, &frr_name, FRR_SWITCH, "");
    wait_back(&leaf, KG_ROUTE);
    wait_back(&leaf, FRR_ROUTE);

    let (mut cut_kg, mut cut_frr, mut kill_kg, mut kill_frr) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        // Path cut.
        let t0 = Instant::now();
        swk.cut(&kg_if);
        cut_kg.push(time_until_gone(&leaf, KG_ROUTE, t0));
        swk.heal();
        let t0 = Instant::now();
        swf.cut(&frr_if);
        cut_frr.push(time_until_gone(&leaf, FRR_ROUTE, t0));
        swf.heal();
        wait_back(&leaf, KG_ROUTE);
        wait_back(&leaf, FRR_ROUTE);

        // Kill.
        let t0 = Instant::now();
        lab.signal("kg", "KILL");
        kill_kg.push(time_until_gone(&leaf, KG_ROUTE, t0));
        lab.stop("kg", Duration::from_secs(5));
        kg.restart(&mut lab, &swk);
        let t0 = Instant::now();
        for d in [format!("{frr_name}-bfdd"), frr_name.clone()] {
            lab.signal(&d, "KILL");
        }
        kill_frr.push(time_until_gone(&leaf, FRR_ROUTE, t0));
        for d in [
            format!("{frr_name}-bfdd"),
            frr_name.clone(),
            format!("{frr_name}-zebra"),
        ] {
            lab.stop(&d, Duration::from_secs(5));
        }
        frr_gen += 1;
        frr_name = format!("sw{frr_gen}");
        Frr::start_with_bfd(&mut lab, &swf, &frr_name, FRR_SWITCH, "");
        wait_back(&leaf, KG_ROUTE);
        wait_back(&leaf, FRR_ROUTE);
        println!(
            "round {}: cut kube-gw {:.0} ms, FRR {:.0} ms; kill kube-gw {:.0} ms, FRR {:.0} ms",
            round + 1,
            cut_kg[round],
            cut_frr[round],
            kill_kg[round],
            kill_frr[round]
        );
    }

    println!(
        "\nLeaf route gone after the switch fails, {rounds} runs each, BFD 300 ms x 3, hold time 90 s"
    );
    println!(
        "{:<42} {:>8} {:>8} {:>10} {:>10}",
        "", "p50 ms", "p95 ms", "p50 ratio", "p95 ratio"
    );
    for (what, k, f) in [
        ("path cut", &cut_kg, &cut_frr),
        ("daemons SIGKILLed", &kill_kg, &kill_frr),
    ] {
        let (kp50, kp95, fp50, fp95) = (
            percentile(k, 0.5),
            percentile(k, 0.95),
            percentile(f, 0.5),
            percentile(f, 0.95),
        );
        println!(
            "{:<42} {:>8.0} {:>8.0} {:>10.2} {:>10.2}",
            format!("{what}: kube-gw"),
            kp50,
            kp95,
            kp50 / fp50,
            kp95 / fp95
        );
        println!(
            "{:<42} {:>8.0} {:>8.0} {:>10.2} {:>10.2}",
            format!("{what}: FRR 8.4 (bgpd + bfdd)"),
            fp50,
            fp95,
            1.0,
            1.0
        );
    }
}
