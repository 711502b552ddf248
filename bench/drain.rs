//! Benchmark: how fast a drain moves the traffic off a switch — kube-gw's `kube-gw drain`
//! against FRR's `bgp graceful-shutdown` as the switch, both RFC 8326, at the same leaf in
//! the same run. Needs root.
//!
//!   sudo cargo bench --bench drain                     # 20 drains of each
//!   sudo KUBE_GW_BENCH_ROUNDS=5 cargo bench --bench drain
//!
//! Three switches announce one anycast VIP (`harness::anycast`: a client with 50 sources
//! making a connection every few milliseconds, a shared backend) to an FRR 8.4 leaf (zebra,
//! ECMP, the RFC 8326 policy: GRACEFUL_SHUTDOWN routes at LOCAL_PREF 0): sw1 runs kube-gw,
//! sw2 FRR's bgpd, sw3 kube-gw and is never drained. Drains alternate between sw1 and sw2.
//! The clock starts when the drain command is given and stops (a) when the leaf's kernel
//! route no longer lists the drained switch, and (b) at the last packet the drained switch
//! forwarded to the VIP (its nftables counter, polled; the drain counts as done once it has
//! not moved for a second). Then the drain is undone and the next one waits for the ECMP
//! route over all three.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/netns/harness/mod.rs"]
mod harness;

use std::time::{Duration, Instant};

use harness::anycast::{leaf_address, switch_address, Anycast, VIP};
use harness::peers::{Frr, KubeGw};
use harness::Lab;

const DRAIN_TIME: u16 = 3;
const CONVERGE: Duration = Duration::from_secs(60);

fn leaf_config() -> String {
    let mut c = String::from(
        "frr defaults datacenter\n\
         bgp community-list standard GSHUT seq 5 permit 65535:0\n\
         route-map FROM-SW permit 10\n match community GSHUT\n set local-preference 0\n\
         route-map FROM-SW permit 20\n\
         router bgp 65000\n bgp router-id 192.0.2.1\n no bgp ebgp-requires-policy\n",
    );
    for i in 0..3 {
        let a = switch_address(i);
        c.push_str(&format!(
            " neighbor {a} remote-as 65100\n neighbor {a} timers connect 1\n"
        ));
    }
    c.push_str(" address-family ipv4 unicast\n");
    for i in 0..3 {
        c.push_str(&format!(
            "  neighbor {} route-map FROM-SW in\n",
            switch_address(i)
        ));
    }
    c.push_str(" exit-address-family\n");
    c
}

fn kube_gw_config(i: usize) -> String {
    format!(
        "[node]\nname = \"sw{}\"\n[vip]\npools = [\"198.51.100.0/24\"]\n[ipvs]\nenabled = false\n\
         [bgp]\nasn = 65100\nrouter-id = \"{}\"\nhold-time = 9\ndrain-time = {DRAIN_TIME}\n\
         static-prefixes = [\"{VIP}/32\"]\n\
         [[bgp.neighbors]]\naddress = \"{}\"\nremote-asn = 65000\n",
        i + 1,
        switch_address(i),
        leaf_address(i)
    )
}

/// Milliseconds from `t0` until the leaf no longer routes via switch `i`, and until switch
/// `i` forwarded its last packet.
fn measure(net: &Anycast, i: usize, t0: Instant) -> (f64, f64) {
    let gone = switch_address(i);
    let mut fib = None;
    let mut count = net.forwarded(i);
    let mut last_change = t0;
    loop {
        let now = Instant::now();
        assert!(
            now - t0 < Duration::from_secs(30),
            "switch {i} never drained"
        );
        if fib.is_none() && !net.hops().contains(&gone) {
            fib = Some(now);
        }
        let c = net.forwarded(i);
        if c != count {
            count = c;
            last_change = now;
        }
        if fib.is_some() && now - last_change > Duration::from_secs(1) {
            break;
        }
    }
    let ms = |t: Instant| (t - t0).as_secs_f64() * 1000.0;
    (ms(fib.unwrap()), ms(last_change))
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[((s.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("drain: run with `sudo cargo bench --bench drain` (skipped under cargo test)");
        return;
    }
    if !harness::require_root("bench drain") {
        return;
    }
    let rounds: usize = std::env::var("KUBE_GW_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut lab = Lab::new();
    let net = Anycast::build(&mut lab, 3);
    let leaf_frr = Frr::start_with_zebra(&mut lab, &net.leaf, "leaf", &leaf_config());
    let kg1 = KubeGw::start(&mut lab, &net.sw[0], "kg1", &kube_gw_config(0));
    let frr = Frr::start(
        &mut lab,
        &net.sw[1],
        "sw2frr",
        &format!(
            "frr defaults datacenter\nrouter bgp 65100\n bgp router-id {a}\n no bgp ebgp-requires-policy\n\
             no bgp network import-check\n neighbor {l} remote-as 65000\n neighbor {l} timers connect 1\n\
             address-family ipv4 unicast\n  network {VIP}/32\n exit-address-family\n",
            a = switch_address(1),
            l = leaf_address(1)
        ),
    );
    let _kg3 = KubeGw::start(&mut lab, &net.sw[2], "kg3", &kube_gw_config(2));
    let mut all: Vec<String> = (0..3).map(switch_address).collect();
    all.sort(); // as the leaf's next hops are listed
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let t = Instant::now();
    while net.hops() != all && t.elapsed() < CONVERGE {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        net.hops(),
        all,
        "the leaf's paths: {}",
        leaf_frr.vtysh(&format!("show bgp ipv4 unicast {VIP}/32"))
    );
    let _load = net.load(&mut lab, "load", 8080, 3600);
    std::thread::sleep(Duration::from_secs(3));
    for i in 0..3 {
        assert!(net.forwarded(i) > 50, "switch {i} carries traffic");
    }

    let (mut kg_fib, mut kg_last, mut frr_fib, mut frr_last) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let socket = kg1.socket.display().to_string();
    for round in 0..rounds {
        // kube-gw: `kube-gw drain` (it returns after the drain time; run aside).
        let name = format!("drain{round}");
        let t0 = Instant::now();
        lab.spawn(
            &net.sw[0],
            &name,
            &KubeGw::bin(),
            &["drain", "--socket", &socket],
        );
        let (f, l) = measure(&net, 0, t0);
        kg_fib.push(f);
        kg_last.push(l);
        harness::wait_for("the drain to end", CONVERGE, || {
            (!lab.running(&name)).then_some(())
        });
        kg1.cli(&["undrain"]);
        net.wait_hops(&all, CONVERGE);
        std::thread::sleep(Duration::from_secs(2));

        // FRR: `bgp graceful-shutdown`.
        let t0 = Instant::now();
        frr.bgpd_lines(&["configure terminal", "bgp graceful-shutdown"]);
        let (f, l) = measure(&net, 1, t0);
        frr_fib.push(f);
        frr_last.push(l);
        frr.bgpd_lines(&["configure terminal", "no bgp graceful-shutdown"]);
        net.wait_hops(&all, CONVERGE);
        std::thread::sleep(Duration::from_secs(2));
        println!(
            "round {}: kube-gw leaf FIB {:.0} ms, last packet {:.0} ms; FRR leaf FIB {:.0} ms, last packet {:.0} ms",
            round + 1,
            kg_fib[round],
            kg_last[round],
            frr_fib[round],
            frr_last[round]
        );
    }
    println!(
        "\nDrain → traffic off the drained switch, {rounds} drains each, RFC 8326 at an FRR 8.4 leaf"
    );
    println!(
        "{:<64} {:>8} {:>8} {:>10} {:>10}",
        "", "p50 ms", "p95 ms", "p50 ratio", "p95 ratio"
    );
    for (what, k, f) in [
        ("leaf FIB without the switch", &kg_fib, &frr_fib),
        ("last packet through the switch", &kg_last, &frr_last),
    ] {
        let (k50, k95, f50, f95) = (
            percentile(k, 0.5),
            percentile(k, 0.95),
            percentile(f, 0.5),
            percentile(f, 0.95),
        );
        println!(
            "{:<64} {k50:>8.0} {k95:>8.0} {:>10.2} {:>10.2}",
            format!("{what}: kube-gw (`kube-gw drain`)"),
            k50 / f50,
            k95 / f95
        );
        println!(
            "{:<64} {f50:>8.0} {f95:>8.0} {:>10.2} {:>10.2}",
            format!("{what}: FRR 8.4 (`bgp graceful-shutdown`)"),
            1.0,
            1.0
        );
    }
}
