//! Benchmark: Service VIPs onto `lo`, kube-gw against the kernel's own pace (`ip -batch`),
//! measured in the same run on the same machine. Needs root.
//!
//!   sudo cargo bench --bench addresses            # N = 10000
//!   sudo KUBE_GW_BENCH_N=2000 cargo bench --bench addresses
//!   sudo KUBE_GW_BENCH_LOG=/tmp/kg.log cargo bench --bench addresses   # keep kube-gw's log
//!   sudo KUBE_GW_BENCH_ROUNDS=9 cargo bench --bench addresses        # more rounds
//!   sudo KUBE_GW_BENCH_PIN=1 cargo bench --bench addresses   # control plane on its own core
//!
//! By default everything shares the machine's cores, as in CI. With `KUBE_GW_BENCH_PIN=1`
//! the API server, etcd and the controller manager run on CPU 1 and everything measured
//! (`ip -batch`, kube-gw, the `ip monitor` observers, the API forwarders) on CPU 0: on a
//! switch the control plane is another machine, and this keeps its cost out of both sides.
//!
//! 1. N Services with one externalIP each (IPv6 /128s in 2001:db8:100::/112) are created in
//!    the real API server while kube-gw is not running.
//! 2. `ip -batch` adds the same N addresses in a fresh namespace: the baseline; once as an
//!    operator would (`nodad`), once with kube-gw's flags (also `noprefixroute`).
//! 3. kube-gw starts in a fresh namespace, joining as a new Node; the clock runs from its
//!    start to N addresses on `lo` (join, list, compute, program) — the "all objects in the
//!    API server" to "all addresses on the interface" time.
//!
//!    Steps 2 and 3 alternate for `KUBE_GW_BENCH_ROUNDS` rounds (default 7); the table
//!    shows each round and the ratio of the medians. Each round also times the API
//!    server's own pace — a streaming list of every Service to a client that only decodes
//!    them — and prints kube-gw's start timeline and CPU time, so a slow round can be told
//!    apart: a slow list, a slow kernel, or kube-gw.
//! 4. With N in place, one more Service, several times: the time from kube-gw's watch event
//!    to the netlink acknowledgement of its address (both from kube-gw's own log
//!    timestamps), and the time from the API's answer until `ip` shows the address.
//! 5. kube-gw's peak RSS (VmHWM).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/controlplane.rs"]
mod controlplane;
#[path = "../tests/netns/harness/mod.rs"]
mod harness;

use std::time::{Duration, Instant};

use controlplane::{block_on, ControlPlane};
use harness::peers::KubeGw;
use harness::{Lab, Node};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, PostParams};

fn vip(i: usize) -> String {
    format!("2001:db8:100::{:x}", i + 1)
}

fn count_lo(node: &Node) -> usize {
    let out = node.exec("ip", &["-6", "-o", "addr", "show", "dev", "lo"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("2001:db8:100::"))
        .count()
}

fn create_services(cp: &ControlPlane, ns: &str, range: std::ops::Range<usize>) {
    block_on(async {
        use futures::StreamExt;
        let api: Api<Service> = Api::namespaced(cp.admin().await, ns);
        futures::stream::iter(range)
            .map(|i| {
                let api = api.clone();
                async move {
                    let svc: Service = serde_json::from_value(serde_json::json!({
                        "metadata": {"name": format!("s{i}"), "namespace": ns},
                        "spec": {"ports": [{"port": 80}], "externalIPs": [vip(i)]}
                    }))
                    .unwrap();
                    api.create(&PostParams::default(), &svc).await.unwrap();
                }
            })
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await;
    });
}

/// The API server's own pace: a streaming list of every Service to a client that only
/// decodes them (kube-rs, the same types kube-gw reads), from the host, without the
/// forwarders. What kube-gw cannot go below for "all Services known".
fn list_pace(cp: &ControlPlane) -> (Duration, usize) {
    block_on(async {
        use futures::StreamExt;
        use kube::runtime::watcher::{self, watcher, Event};
        let api: Api<Service> = Api::all(cp.admin().await);
        let t = Instant::now();
        let mut events = watcher(api, watcher::Config::default().streaming_lists()).boxed();
        let mut count = 0;
        while let Some(e) = events.next().await {
            match e.unwrap() {
                Event::InitApply(_) => count += 1,
                Event::InitDone => break,
                _ => {}
            }
        }
        (t.elapsed(), count)
    })
}

/// `ip -batch` adding the N addresses in a fresh namespace, watched by `ip monitor` as
/// kube-gw is below.
fn baseline(lab: &mut Lab, role: &str, batch: &str, n: usize) -> Duration {
    let node = lab.node(role);
    let file = lab.write(&format!("{role}.batch"), batch);
    lab.spawn(
        &node,
        &format!("monitor-{role}"),
        "ip",
        &["-6", "-o", "monitor", "address", "dev", "lo"],
    );
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    node.exec("ip", &["-batch", file.to_str().unwrap()]);
    let took = t.elapsed();
    assert_eq!(count_lo(&node), n);
    lab.stop(&format!("monitor-{role}"), Duration::from_secs(5));
    took
}

/// kube-gw joining as a new Node in a fresh namespace: the time from its start until `ip
/// monitor` has seen N addresses added to `lo`. Returns it running.
fn cold_start(
    cp: &ControlPlane,
    lab: &mut Lab,
    port: u16,
    n: usize,
    round: usize,
) -> (Duration, (f64, f64), (String, Node, KubeGw)) {
    let name = format!("bench-{}-{round}", std::process::id());
    cp.bind_switch(&name);
    let sw = lab.node(&format!("switch{round}"));
    lab.forward_host_port(&sw, port);
    let kc_path = lab.path(&format!("{name}.kubeconfig"));
    cp.write_node_kubeconfig(&name, &kc_path);
    let config = format!(
        "[node]\nname = \"{name}\"\n[kubernetes]\nkubeconfig = \"{}\"\nservice-cidrs = [\"10.96.0.0/12\"]\n\
         [vip]\npools = [\"2001:db8:100::/112\"]\nannounce = \"always\"\n\
         [log]\nlevel = \"info,kube_gw::kube::watch=debug,kube_gw::pipeline=debug,kube_gw::netlink=info\"\n",
        kc_path.display()
    );
    // The addresses are counted as the kernel announces them (`ip monitor`), not by dumping
    // 10 000 addresses over and over, which would itself slow the kernel down.
    let monitor_name = format!("monitor-switch{round}");
    lab.spawn(
        &sw,
        &monitor_name,
        "ip",
        &["-6", "-o", "monitor", "address", "dev", "lo"],
    );
    std::thread::sleep(Duration::from_millis(300));
    // Read only what the monitor wrote since the last look.
    let mut monitor = std::fs::File::open(lab.path(&format!("{monitor_name}.log"))).unwrap();
    let mut pending = String::new();
    let mut seen = 0usize;
    let mut added = || {
        use std::io::Read;
        let mut chunk = String::new();
        monitor.read_to_string(&mut chunk).unwrap();
        pending.push_str(&chunk);
        let complete = pending.rfind('\n').map_or(0, |i| i + 1);
        seen += pending[..complete]
            .lines()
            .filter(|l| !l.starts_with("Deleted") && l.contains("2001:db8:100::"))
            .count();
        pending.drain(..complete);
        seen
    };
    let t = Instant::now();
    let kg = KubeGw::start(lab, &sw, &name, &config);
    let deadline = Instant::now() + Duration::from_secs(600);
    while added() < n {
        assert!(
            Instant::now() < deadline,
            "kube-gw did not program {n} addresses"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = t.elapsed();
    assert_eq!(count_lo(&sw), n, "ip addr show disagrees with ip monitor");
    lab.stop(&monitor_name, Duration::from_secs(5));
    let cpu = cpu_seconds(kg.status()["pid"].as_u64().unwrap());
    eprintln!(
        "  start, ms after kube-gw's first log line: {}",
        timeline(&lab.log(&name))
    );
    (took, cpu, (name, sw, kg))
}

/// The middle value (NaN when there is none).
fn middle(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// A log line's timestamp in milliseconds.
fn ts(line: &str) -> Option<f64> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let t = v["timestamp"].as_str()?;
    let ts: jiff::Timestamp = t.parse().ok()?;
    Some(ts.as_millisecond() as f64 + f64::from(ts.subsec_microsecond() % 1000) / 1000.0)
}

/// Where a start goes: milliseconds after the daemon's first log line until it joined, had
/// the Nodes (needed before any view), published its first view, had its first addresses
/// acknowledged, had all Services, and had its last addresses acknowledged.
fn timeline(log: &str) -> String {
    let first_ts = log.lines().find_map(ts);
    let at = |pred: &dyn Fn(&str) -> bool, last: bool| -> String {
        let mut hits = log.lines().filter(|l| pred(l)).filter_map(ts);
        let t = if last { hits.next_back() } else { hits.next() };
        match (first_ts, t) {
            (Some(a), Some(b)) => format!("{:.0}", b - a),
            _ => "?".into(),
        }
    };
    let listed = |what: &'static str| {
        move |l: &str| l.contains("\"listed\"") && l.contains(&format!("\"{what}\""))
    };
    [
        ("joined", at(&|l| l.contains("joined the cluster"), false)),
        ("nodes listed", at(&listed("nodes"), false)),
        (
            "first view",
            at(&|l| l.contains("cluster snapshot published"), false),
        ),
        (
            "first addresses",
            at(&|l| l.contains("addresses changed"), false),
        ),
        ("services listed", at(&listed("services"), false)),
        (
            "last addresses",
            at(&|l| l.contains("addresses changed"), true),
        ),
    ]
    .iter()
    .map(|(k, v)| format!("{k} {v}"))
    .collect::<Vec<_>>()
    .join(", ")
}

/// User and system CPU seconds a process has used so far (`/proc/PID/stat`, clock ticks).
fn cpu_seconds(pid: u64) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = stat.rsplit_once(')').unwrap().1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3, utime 14 and stime 15 (1-based, man proc).
    let tick = |i: usize| f[i - 3].parse::<f64>().unwrap() / 100.0;
    (tick(14), tick(15))
}

/// Puts the control plane (children of this process) on CPU 1 and this process — and so
/// every process it starts from now on — on CPU 0.
fn pin_control_plane_away() {
    let me = std::process::id();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = head.split_once('(').map_or("", |(_, c)| c);
        let ppid: u32 = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        if ppid == me && ["kube-apiserver", "etcd", "kube-controller"].contains(&comm) {
            harness::run(std::process::Command::new("taskset").args([
                "-a",
                "-p",
                "0x2",
                &pid.to_string(),
            ]));
            eprintln!("pinned {comm} ({pid}) to CPU 1");
        }
    }
    harness::run(std::process::Command::new("taskset").args(["-a", "-p", "0x1", &me.to_string()]));
    eprintln!("this benchmark and what it starts: CPU 0");
}

fn main() {
    // `cargo test --all-targets` runs bench binaries as smoke tests without `--bench`;
    // this one takes minutes and measures nothing in a debug build, so it only runs
    // under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "addresses: run with `sudo cargo bench --bench addresses` (skipped under cargo test)"
        );
        return;
    }
    if !harness::require_root("bench addresses") {
        return;
    }
    let n: usize = std::env::var("KUBE_GW_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let cp = ControlPlane::shared();
    let pinned = std::env::var("KUBE_GW_BENCH_PIN").is_ok_and(|v| v == "1")
        && std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2);
    if pinned {
        pin_control_plane_away();
    }
    let ns = format!("bench-{}", std::process::id());
    cp.create_namespace(&ns);
    let t = Instant::now();
    create_services(cp, &ns, 0..n);
    eprintln!("created {n} Services in {:.1}s", t.elapsed().as_secs_f64());

    // Several rounds, alternating: ip -batch, as an operator would add the addresses, and
    // with the flags kube-gw uses (no prefix route), then kube-gw from start; each in its
    // own fresh namespace with the same observer (`ip monitor`). On a shared machine one
    // round can be off by a third either way; the ratio is taken between medians.
    let rounds: usize = std::env::var("KUBE_GW_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7)
        .max(1);
    let mut lab = Lab::new();
    let batch: String = (0..n)
        .map(|i| format!("addr add {}/128 dev lo nodad\n", vip(i)))
        .collect();
    let batch_npr: String = batch.replace(" nodad\n", " nodad noprefixroute\n");
    let port: u16 = cp.server.rsplit(':').next().unwrap().parse().unwrap();
    let (mut ip_batch, mut ip_batch_npr, mut kube_gw) = (Vec::new(), Vec::new(), Vec::new());
    let mut kube_gw_cpu: Vec<(f64, f64)> = Vec::new();
    let mut list: Vec<Duration> = Vec::new();
    let mut running: Option<(String, Node, KubeGw)> = None;
    for round in 0..rounds {
        ip_batch.push(baseline(&mut lab, &format!("ipbatch{round}"), &batch, n));
        ip_batch_npr.push(baseline(
            &mut lab,
            &format!("ipbatchnpr{round}"),
            &batch_npr,
            n,
        ));
        // Only the last round's kube-gw stays up, for the change latency below. Its
        // removal of N addresses leaves kernel work behind (route cleanup, freeing): let
        // it settle before the next round, which it would otherwise slow down.
        if let Some((name, _, _)) = running.take() {
            lab.stop(&name, Duration::from_secs(60));
            std::thread::sleep(Duration::from_secs(2));
        }
        let (took, listed) = list_pace(cp);
        assert!(
            listed >= n,
            "the API server listed {listed} Services, not {n}"
        );
        list.push(took);
        let (took, cpu, started) = cold_start(cp, &mut lab, port, n, round);
        kube_gw.push(took);
        kube_gw_cpu.push(cpu);
        eprintln!(
            "round {}: ip -batch {:.3} s, noprefixroute {:.3} s, Services list alone {:.3} s, kube-gw {:.3} s (CPU user {:.2} s, system {:.2} s)",
            round + 1,
            ip_batch[round].as_secs_f64(),
            ip_batch_npr[round].as_secs_f64(),
            list[round].as_secs_f64(),
            took.as_secs_f64(),
            cpu.0,
            cpu.1
        );
        running = Some(started);
    }
    let (name, sw, kg) = running.unwrap();
    let median_of = |v: &[Duration]| {
        let mut v = v.to_vec();
        v.sort();
        v[v.len() / 2]
    };
    let rounds_line = |v: &[Duration]| {
        v.iter()
            .map(|d| format!("{:.3}", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let (ip_batch_all, ip_batch_npr_all, kube_gw_all, list_all) = (
        rounds_line(&ip_batch),
        rounds_line(&ip_batch_npr),
        rounds_line(&kube_gw),
        rounds_line(&list),
    );
    let list = median_of(&list);
    let (ip_batch, ip_batch_npr, kube_gw) = (
        median_of(&ip_batch),
        median_of(&ip_batch_npr),
        median_of(&kube_gw),
    );

    // One change while N exist.
    let mut lat = Vec::new();
    for k in 0..7 {
        let i = n + k;
        create_services(cp, &ns, i..i + 1);
        let t = Instant::now();
        let want = format!("{}/128", vip(i));
        loop {
            let out = sw.exec(
                "ip",
                &["-6", "-o", "addr", "show", "dev", "lo", "to", &want],
            );
            if !out.stdout.is_empty() {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "no address for the new Service"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        lat.push(t.elapsed());
    }
    lat.sort();
    let median = lat[lat.len() / 2];
    // Inside kube-gw: watch event -> "address added" (logged after the netlink ack).
    let log = lab.log(&name);
    if let Ok(path) = std::env::var("KUBE_GW_BENCH_LOG") {
        std::fs::write(&path, &log).unwrap();
        eprintln!("kube-gw's log: {path}");
    }
    let mut internal = Vec::new();
    for k in 0..7 {
        let want = vip(n + k);
        let lines: Vec<&str> = log.lines().collect();
        let Some(added) = lines
            .iter()
            .position(|l| l.contains("address added") && l.contains(&format!("\"{want}\"")))
        else {
            continue;
        };
        let Some(event) = lines[..added]
            .iter()
            .rposition(|l| l.contains("watch event") && l.contains("services"))
        else {
            continue;
        };
        if let (Some(a), Some(b)) = (ts(lines[event]), ts(lines[added])) {
            internal.push(a.max(b) - a);
        }
    }
    // Where a change's time goes, from the same log: snapshot build and desired-state
    // compute, on complete views (the partial ones belong to the start).
    let micros = |msg: &str| -> Vec<f64> {
        log.lines()
            .filter(|l| l.contains(msg) && l.contains("\"complete\":true"))
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["fields"]["micros"].as_f64())
            .collect()
    };
    let (snap_us, compute_us) = (
        micros("cluster snapshot published"),
        micros("desired state computed"),
    );
    let internal_count = internal.len();
    let internal_median = middle(internal);

    let pid = kg.status()["pid"].as_u64().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or("VmHWM: ?")
        .to_string();

    println!();
    println!("addresses onto lo, N = {n}, median of {rounds} rounds (one run, this machine)");
    if pinned {
        println!("control plane on CPU 1; ip -batch, kube-gw and the observers on CPU 0");
    }
    println!("{:<46} {:>10} {:>8}   rounds", "", "seconds", "ratio");
    println!(
        "{:<46} {:>10.3} {:>8}   {ip_batch_all}",
        "ip -batch (kernel pace)",
        ip_batch.as_secs_f64(),
        "1.00"
    );
    println!(
        "{:<46} {:>10.3} {:>8.2}   {ip_batch_npr_all}",
        "ip -batch, noprefixroute (kube-gw's flags)",
        ip_batch_npr.as_secs_f64(),
        ip_batch_npr.as_secs_f64() / ip_batch.as_secs_f64()
    );
    println!(
        "{:<46} {:>10.3} {:>8.2}   {kube_gw_all}",
        "kube-gw: start -> all addresses on lo",
        kube_gw.as_secs_f64(),
        kube_gw.as_secs_f64() / ip_batch.as_secs_f64()
    );
    println!(
        "  kube-gw against ip -batch with the same flags: {:.2}",
        kube_gw.as_secs_f64() / ip_batch_npr.as_secs_f64()
    );
    println!(
        "{:<46} {:>10.3} {:>8}   {list_all}",
        "for scale: the Services' list alone (no kube-gw)",
        list.as_secs_f64(),
        ""
    );
    println!(
        "one Service change with {n} present: watch event -> netlink ack median {internal_median:.1} ms (of {}); \
         API answer -> address visible to ip: median {:.1} ms (of {})",
        internal_count,
        median.as_secs_f64() * 1000.0,
        lat.len()
    );
    println!(
        "  of which: snapshot rebuild median {:.1} ms, desired-state compute median {:.1} ms",
        middle(snap_us) / 1000.0,
        middle(compute_us) / 1000.0
    );
    println!(
        "  kube-gw's start (last round), ms after its first log line: {}",
        timeline(&log)
    );
    println!(
        "  kube-gw's CPU from start to all addresses on lo, median: user {:.2} s, system {:.2} s \
         (system includes the kernel's address work, done in kube-gw's netlink requests)",
        middle(kube_gw_cpu.iter().map(|c| c.0).collect()),
        middle(kube_gw_cpu.iter().map(|c| c.1).collect())
    );
    println!(
        "kube-gw peak RSS: {}",
        hwm.split_whitespace().skip(1).collect::<Vec<_>>().join(" ")
    );
}
