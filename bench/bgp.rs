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
//! - GoBGP: N routes injected into its RIB (an MRT TABLE_DUMP_V2 file this bench writes,
//!   `gobgp mrt inject global`) before the neighbor is added.
//!
//! Measured per sender, from the receiver's side: the time from the session reaching
//! Established to the receiver holding all N routes (polled every 10 ms with `birdc show
//! route count`), then the time to withdraw them all with the session up (kube-gw: a reload
//! with no static prefixes; BIRD: `configure` without the statics; GoBGP: `global rib del
//! all`); the sender's CPU seconds over the announcement (user + system, from /proc) and
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

/// CPU seconds (user + system) of a process so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn receiver_config() -> String {
    format!(
        "router id 192.0.2.1;\nprotocol device {{}}\n\
         protocol bgp sender {{ local 192.0.2.1 as {RECEIVER_AS}; neighbor 192.0.2.2 as {SENDER_AS}; \
         hold time 90; connect retry time 1; ipv4 {{ import all; export none; }}; }}\n"
    )
}

#[derive(Debug, Clone, Copy, Default)]
struct Run {
    announce: f64,
    withdraw: f64,
    cpu: f64,
    rss: f64,
}

/// Waits for the session, then for all `n` routes; returns (seconds, CPU over it).
fn measure_announce(recv: &Bird, n: usize, pid: u32) -> (f64, f64) {
    wait_for("the session", Duration::from_secs(120), || {
        established(recv).then_some(())
    });
    let (t0, c0) = (Instant::now(), cpu_seconds(pid));
    while count(recv) < n {
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "only {} of {n} routes after 10 min",
            count(recv)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    (t0.elapsed().as_secs_f64(), cpu_seconds(pid) - c0)
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

/// A fresh lab: receiver and sender namespaces, the receiver up.
fn lab() -> (Lab, Node, Bird) {
    let mut lab = Lab::new();
    let recv_node = lab.node("recv");
    let send = lab.node("send");
    lab.link(&recv_node, &["192.0.2.1/30"], &send, &["192.0.2.2/30"]);
    let recv = Bird::start(&mut lab, &recv_node, "recv", &receiver_config());
    (lab, send, recv)
}

fn kube_gw(n: usize) -> Run {
    let (mut lab, send, recv) = lab();
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
    let (announce, cpu) = measure_announce(&recv, n, pid);
    let rss = peak_rss_mb(pid);
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
        rss,
    }
}

fn bird_sender_config(n: usize) -> String {
    let mut c =
        String::from("router id 192.0.2.2;\nprotocol device {}\nprotocol static s { ipv4;\n");
    for i in 0..n {
        c.push_str(&format!("  route {}/32 blackhole;\n", prefix(i)));
    }
    c.push_str(&format!(
        "}}\nprotocol bgp recv {{ local 192.0.2.2 as {SENDER_AS}; neighbor 192.0.2.1 as {RECEIVER_AS}; \
         hold time 90; connect retry time 1; ipv4 {{ import none; export all; }}; }}\n"
    ));
    c
}

fn bird(n: usize) -> Run {
    let (mut lab, send, recv) = lab();
    let sender = Bird::start(&mut lab, &send, "sender", &bird_sender_config(n));
    let pid = lab.pid("sender").unwrap();
    let (announce, cpu) = measure_announce(&recv, n, pid);
    let rss = peak_rss_mb(pid);
    std::fs::write(lab.path("sender.conf"), bird_sender_config(0)).unwrap();
    let t0 = Instant::now();
    sender.birdc(&["configure"]);
    let withdraw = measure_withdraw(&recv);
    let _ = t0;
    assert!(established(&recv), "the session stayed up");
    Run {
        announce,
        withdraw,
        cpu,
        rss,
    }
}

/// An MRT TABLE_DUMP_V2 file (RFC 6396) with `n` IPv4 /32 routes from one peer, for
/// `gobgp mrt inject global`.
fn mrt(n: usize) -> Vec<u8> {
    fn record(subtype: u16, body: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(&0u32.to_be_bytes()); // timestamp
        out.extend_from_slice(&13u16.to_be_bytes()); // TABLE_DUMP_V2
        out.extend_from_slice(&subtype.to_be_bytes());
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(body);
    }
    let mut out = Vec::new();
    // PEER_INDEX_TABLE: collector id, no view name, one peer (IPv4, 4-octet AS).
    let mut p = vec![192, 0, 2, 2, 0, 0, 0, 1, 0x02];
    p.extend_from_slice(&[192, 0, 2, 2]); // peer BGP id
    p.extend_from_slice(&[192, 0, 2, 2]); // peer address
    p.extend_from_slice(&SENDER_AS.to_be_bytes());
    record(1, &p, &mut out);
    // ORIGIN IGP, AS_PATH (empty: our own routes), NEXT_HOP 192.0.2.2.
    let attrs: Vec<u8> = [
        &[0x40, 1, 1, 0][..],
        &[0x40, 2, 0][..],
        &[0x40, 3, 4, 192, 0, 2, 2][..],
    ]
    .concat();
    for i in 0..n {
        let mut r = (i as u32).to_be_bytes().to_vec(); // sequence
        r.push(32);
        r.extend_from_slice(&[
            10,
            ((i >> 16) & 255) as u8,
            ((i >> 8) & 255) as u8,
            (i & 255) as u8,
        ]);
        r.extend_from_slice(&1u16.to_be_bytes()); // one entry
        r.extend_from_slice(&0u16.to_be_bytes()); // peer index
        r.extend_from_slice(&0u32.to_be_bytes()); // originated
        r.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        r.extend_from_slice(&attrs);
        record(2, &r, &mut out);
    }
    out
}

fn gobgp(n: usize) -> Run {
    let (mut lab, send, recv) = lab();
    let g = GoBgp::start(
        &mut lab,
        &send,
        "sender",
        &format!("[global.config]\n  as = {SENDER_AS}\n  router-id = \"192.0.2.2\"\n"),
    );
    let file = lab.path("routes.mrt");
    std::fs::write(&file, mrt(n)).unwrap();
    g.gobgp(&["mrt", "inject", "global", file.to_str().unwrap()]);
    wait_for("GoBGP to hold the routes", Duration::from_secs(300), || {
        let out = g.gobgp(&["global", "rib", "summary", "-a", "ipv4"]);
        out.contains(&format!("Destination: {n},")).then_some(())
    });
    let pid = lab.pid("sender").unwrap();
    g.gobgp(&[
        "neighbor",
        "add",
        "192.0.2.1",
        "as",
        &RECEIVER_AS.to_string(),
    ]);
    let (announce, cpu) = measure_announce(&recv, n, pid);
    let rss = peak_rss_mb(pid);
    g.gobgp(&["global", "rib", "-a", "ipv4", "del", "all"]);
    let withdraw = measure_withdraw(&recv);
    assert!(established(&recv), "the session stayed up");
    Run {
        announce,
        withdraw,
        cpu,
        rss,
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
                "round {}: {name}: announce {:.3}s, withdraw {:.3}s, CPU {:.2}s, peak RSS {:.0} MB",
                round + 1,
                r.announce,
                r.withdraw,
                r.cpu,
                r.rss
            );
            runs[i].push(r);
        }
    }
    let med = |i: usize, f: fn(&Run) -> f64| median(runs[i].iter().map(f).collect());
    println!(
        "\nBGP announce benchmark: {n} /32 routes to a BIRD 2 receiver, {rounds} rounds, medians"
    );
    println!(
        "\n| sender | announce s | × kube-gw | withdraw s | × kube-gw | CPU s | × kube-gw | peak RSS MB | × kube-gw |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let base = [
        med(0, |r| r.announce),
        med(0, |r| r.withdraw),
        med(0, |r| r.cpu),
        med(0, |r| r.rss),
    ];
    for (i, (name, _)) in senders.iter().enumerate() {
        let v = [
            med(i, |r| r.announce),
            med(i, |r| r.withdraw),
            med(i, |r| r.cpu),
            med(i, |r| r.rss),
        ];
        println!(
            "| {name} | {:.3} | {:.2} | {:.3} | {:.2} | {:.2} | {:.2} | {:.0} | {:.2} |",
            v[0],
            v[0] / base[0],
            v[1],
            v[1] / base[1],
            v[2],
            v[2] / base[2].max(0.01),
            v[3],
            v[3] / base[3]
        );
    }
    println!("\n(× kube-gw: the sender's value divided by kube-gw's; above 1 means kube-gw is faster or smaller.)");
}
