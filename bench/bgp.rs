//! Benchmark: announcing N /32 routes to a BIRD receiver, kube-gw's speaker against BIRD and
//! GoBGP as the sender, measured in the same run on the same machine. Needs root.
//!
//!   sudo cargo bench --bench bgp                      # N = 100 000, 3 rounds
//!   sudo KUBE_GW_BENCH_ROUTES=20000 cargo bench --bench bgp
//!   sudo KUBE_GW_BENCH_ROUNDS=1 cargo bench --bench bgp
//!
//! Two namespaces, a veth between them: a BIRD 2 receiver (import all, nothing to the
//! kernel) and, in turn, each sender with the same N routes ready before its session comes
//! up:
//! - kube-gw: N `[bgp] static-prefixes` (no Kubernetes, IPVS off), announced by its speaker
//!   at Established exactly as it announces VIPs;
//! - BIRD: N static routes exported to the session;
//! - GoBGP: N routes learned from a BIRD feeder in a third namespace (GoBGP 3.10's own bulk
//!   loading, `gobgp mrt inject global`, adds nothing; one `gobgp global rib add` per route
//!   would take most of an hour), all in its RIB before the receiver's session starts.
//!
//! Measured per sender, from the receiver's side: the receiver's session starts disabled
//! and is enabled once the sender has had its routes ready for a second; the clock runs from
//! the receiver seeing Established (polled back to back with `birdc`) to it holding all N
//! routes (polled every 10 ms with `birdc show route count`); then the time to withdraw them all with the session up (kube-gw: a reload
//! with no static prefixes; BIRD: `configure` without the statics; GoBGP: the feeder's
//! `configure` without them, so GoBGP's time includes the feeder's withdrawal); the sender's CPU seconds over the announcement (user + system, from /proc) and
//! its peak RSS (VmHWM). Senders alternate each round; the table shows medians and ratios.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/netns/harness/mod.rs"]
mod harness;

use std::time::{Duration, Instant};

use harness::peers::{Bird, GoBgp, KubeGw};
use harness::{wait_for, Lab, Node};

const SENDER_AS: u32 = 65010;
const RECEIVER_AS: u32 = 65000;

fn prefix(i: usize) -> String {
    format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255)
}

/// Routes the receiver holds from the sender (`show route count`'s first number).
fn count(recv: &Bird) -> usize {
    let out = recv.birdc(&["show", "route", "count"]);
    out.lines()
        .find_map(|l| {
            let first = l.split_whitespace().next()?;
            l.contains("routes").then(|| first.parse().ok()).flatten()
        })
        .unwrap_or(0)
}

fn established(recv: &Bird) -> bool {
    recv.protocol_info("sender").contains("Established")
}

/// A memory figure of a process in MiB: `VmRSS` (now) or `VmHWM` (peak).
fn mem_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// (RSS holding the routes now, peak RSS so far), MiB.
fn rss(pid: u32) -> (f64, f64) {
    (mem_mib(pid, "VmRSS"), mem_mib(pid, "VmHWM"))
}

fn receiver_config(log: &std::path::Path) -> String {
    format!(
        "router id 192.0.2.1;\nlog \"{}\" all;\ntimeformat log \"%s.%3f\";\n\
         debug protocols {{ states }};\nprotocol device {{}}\n\
         protocol bgp sender {{ disabled; local 192.0.2.1 as {RECEIVER_AS}; neighbor 192.0.2.2 as {SENDER_AS}; \
         hold time 90; connect retry time 1; ipv4 {{ import all; export none; }}; }}\n",
        log.display()
    )
}

/// When the receiver's session last came up, from its log (seconds since the epoch, ms).
fn session_up_at(log: &std::path::Path) -> f64 {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .rev()
        .filter(|l| l.contains("sender: State changed to up"))
        .find_map(|l| l.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no session-up line in the receiver's log:\n{text}"))
}

fn epoch_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[derive(Debug, Clone, Copy, Default)]
struct Run {
    announce: f64,
    withdraw: f64,
    cpu: f64,
    /// RSS while holding all N routes (right after the receiver has them all), MiB.
    held: f64,
    /// Peak RSS up to then, MiB.
    peak: f64,
}

/// Enables the receiver's session (the sender has its routes ready by now) and waits for
/// all `n` routes; returns (seconds, sender CPU seconds over it). The receiver connects to
/// the sender, which every sender accepts at once.
fn measure_announce(recv: &Bird, log: &std::path::Path, n: usize, pid: u32) -> (f64, f64) {
    let (t0, c0) = (Instant::now(), harness::cpu_seconds(pid));
    recv.birdc(&["enable", "sender"]);
    while count(recv) < n {
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "only {} of {n} routes after 10 min",
            count(recv)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The clock starts when the receiver's session came up (its log, in ms): how soon the
    // two sides connect depends on each daemon's retry timers, not on announcing.
    let done = epoch_now();
    (done - session_up_at(log), harness::cpu_seconds(pid) - c0)
}

fn measure_withdraw(recv: &Bird) -> f64 {
    let t0 = Instant::now();
    while count(recv) > 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "withdrawal not done"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    t0.elapsed().as_secs_f64()
}

/// A fresh lab: receiver and sender namespaces, the receiver up (its session disabled),
/// and the receiver's log.
fn lab() -> (Lab, Node, Bird, std::path::PathBuf) {
    let mut lab = Lab::new();
    let recv_node = lab.node("recv");
    let send = lab.node("send");
    lab.link(&recv_node, &["192.0.2.1/30"], &send, &["192.0.2.2/30"]);
    let log = lab.path("recv-states.log");
    let recv = Bird::start(&mut lab, &recv_node, "recv", &receiver_config(&log));
    (lab, send, recv, log)
}

fn kube_gw(n: usize) -> Run {
    let (mut lab, send, recv, log) = lab();
    let statics: Vec<String> = (0..n).map(|i| format!("\"{}/32\"", prefix(i))).collect();
    let body = |statics: &str| {
        format!(
            "[node]\nname = \"bench\"\n[vip]\npools = [\"198.51.100.0/24\"]\n[ipvs]\nenabled = false\n\
             [bgp]\nasn = {SENDER_AS}\nrouter-id = \"192.0.2.2\"\nhold-time = 90\nkeepalive = 30\n\
             static-prefixes = [{statics}]\n\
             [[bgp.neighbors]]\naddress = \"192.0.2.1\"\nremote-asn = {RECEIVER_AS}\n"
        )
    };
    let kg = KubeGw::start(&mut lab, &send, "kg", &body(&statics.join(",")));
    let pid = lab.pid("kg").unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let (announce, cpu) = measure_announce(&recv, &log, n, pid);
    let (held, peak) = rss(pid);
    // Withdraw all with the session up: the static prefixes go in a reload.
    let text = std::fs::read_to_string(&kg.config).unwrap();
    let start = text.find("static-prefixes = [").unwrap();
    let end = start + text[start..].find("]\n").unwrap() + 2;
    std::fs::write(
        &kg.config,
        format!("{}static-prefixes = []\n{}", &text[..start], &text[end..]),
    )
    .unwrap();
    let t0 = Instant::now();
    kg.cli(&["reload"]);
    let reload = t0.elapsed().as_secs_f64();
    let withdraw = reload + measure_withdraw(&recv);
    assert!(established(&recv), "the session stayed up");
    Run {
        announce,
        withdraw,
        cpu,
        held,
        peak,
    }
}

fn bird_sender_config(n: usize) -> String {
    let mut c =
        String::from("router id 192.0.2.2;\nprotocol device {}\nprotocol static statics { ipv4;\n");
    for i in 0..n {
        c.push_str(&format!("  route {}/32 blackhole;\n", prefix(i)));
    }
    c.push_str(&format!(
        "}}\nprotocol bgp recv {{ local 192.0.2.2 as {SENDER_AS}; neighbor 192.0.2.1 as {RECEIVER_AS}; \
         hold time 90; connect retry time 1; ipv4 {{ import none; export all; }}; }}\n"
    ));
    c
}

/// GoBGP's feeder: the BIRD sender's configuration from 192.0.2.5 (AS 65020) to GoBGP.
fn feeder_config(n: usize) -> String {
    bird_sender_config(n)
        .replace("router id 192.0.2.2", "router id 192.0.2.5")
        .replace(
            &format!("local 192.0.2.2 as {SENDER_AS}; neighbor 192.0.2.1 as {RECEIVER_AS}"),
            &format!("local 192.0.2.5 as 65020; neighbor 192.0.2.6 as {SENDER_AS}"),
        )
}

fn bird(n: usize) -> Run {
    let (mut lab, send, recv, log) = lab();
    let sender = Bird::start(&mut lab, &send, "sender", &bird_sender_config(n));
    let pid = lab.pid("sender").unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let (announce, cpu) = measure_announce(&recv, &log, n, pid);
    let (held, peak) = rss(pid);
    std::fs::write(lab.path("sender.conf"), bird_sender_config(0)).unwrap();
    sender.birdc(&["configure"]);
    let withdraw = measure_withdraw(&recv);
    assert!(established(&recv), "the session stayed up");
    Run {
        announce,
        withdraw,
        cpu,
        held,
        peak,
    }
}

fn gobgp(n: usize) -> Run {
    let (mut lab, send, recv, log) = lab();
    // GoBGP learns the routes from a BIRD feeder (its own bulk loading, `gobgp mrt inject
    // global`, adds nothing in GoBGP 3.10, and 100 000 `gobgp global rib add` calls would
    // take most of an hour); the receiver is enabled once GoBGP holds all of them.
    let feed = lab.node("feed");
    lab.link(&send, &["192.0.2.6/30"], &feed, &["192.0.2.5/30"]);
    let feeder = Bird::start(&mut lab, &feed, "feeder", &feeder_config(n));
    let g = GoBgp::start(
        &mut lab,
        &send,
        "sender",
        &format!(
            "[global.config]\n  as = {SENDER_AS}\n  router-id = \"192.0.2.2\"\n\
             [[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"192.0.2.5\"\n    peer-as = 65020\n\
             [[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"192.0.2.1\"\n    peer-as = {RECEIVER_AS}\n"
        ),
    );
    wait_for("GoBGP to hold the routes", Duration::from_secs(600), || {
        let out = g.gobgp(&["global", "rib", "summary", "-a", "ipv4"]);
        out.contains(&format!("Destination: {n},")).then_some(())
    });
    let pid = lab.pid("sender").unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let (announce, cpu) = measure_announce(&recv, &log, n, pid);
    let (held, peak) = rss(pid);
    std::fs::write(lab.path("feeder.conf"), feeder_config(0)).unwrap();
    feeder.birdc(&["configure"]);
    let withdraw = measure_withdraw(&recv);
    assert!(established(&recv), "the session stayed up");
    Run {
        announce,
        withdraw,
        cpu,
        held,
        peak,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    // `cargo test --all-targets` runs bench binaries as smoke tests without `--bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("bgp: run with `sudo cargo bench --bench bgp` (skipped under cargo test)");
        return;
    }
    if !harness::require_root("bench bgp") {
        return;
    }
    let n: usize = std::env::var("KUBE_GW_BENCH_ROUTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rounds: usize = std::env::var("KUBE_GW_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    type Sender = (&'static str, fn(usize) -> Run);
    let senders: [Sender; 3] = [("kube-gw", kube_gw), ("BIRD 2", bird), ("GoBGP 3", gobgp)];
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); senders.len()];
    for round in 0..rounds {
        for (i, (name, f)) in senders.iter().enumerate() {
            let r = f(n);
            eprintln!(
                "round {}: {name}: announce {:.3}s, withdraw {:.3}s, CPU {:.2}s, RSS holding {:.1} MiB, peak {:.1} MiB",
                round + 1,
                r.announce,
                r.withdraw,
                r.cpu,
                r.held,
                r.peak
            );
            runs[i].push(r);
        }
    }
    let med = |i: usize, f: fn(&Run) -> f64| median(runs[i].iter().map(f).collect());
    println!(
        "\nBGP announce benchmark: {n} /32 routes to a BIRD 2 receiver, {rounds} rounds, medians"
    );
    println!(
        "\n| sender | announce s | × kube-gw | withdraw s | × kube-gw | CPU s | × kube-gw | RSS holding MiB | × kube-gw | peak RSS MiB | × kube-gw |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let row = |i: usize| {
        [
            med(i, |r| r.announce),
            med(i, |r| r.withdraw),
            med(i, |r| r.cpu),
            med(i, |r| r.held),
            med(i, |r| r.peak),
        ]
    };
    let base = row(0);
    for (i, (name, _)) in senders.iter().enumerate() {
        let v = row(i);
        println!(
            "| {name} | {:.3} | {:.2} | {:.3} | {:.2} | {:.2} | {:.2} | {:.1} | {:.2} | {:.1} | {:.2} |",
            v[0],
            v[0] / base[0],
            v[1],
            v[1] / base[1],
            v[2],
            v[2] / base[2].max(0.01),
            v[3],
            v[3] / base[3],
            v[4],
            v[4] / base[4]
        );
    }
    println!("\n(× kube-gw: the sender's value divided by kube-gw's; above 1 means kube-gw is faster or smaller.)");
}
