//! Benchmark: 1 MiB bulk responses through the gateway with kernel TLS, against `openssl
//! speed -evp aes-128-gcm` on the same core, and against the gateway's own userspace TLS,
//! measured in the same run. The host kernel has no `tls` module, so this runs in the
//! real-kernel lab (software emulation: the absolute numbers say nothing about a real core;
//! the ratios compare work done on the same emulated core):
//!
//!   sudo scripts/lab-run --bench ktls
//!   sudo KUBE_GW_BENCH_ROUNDS=5 KUBE_GW_BENCH_SECONDS=20 scripts/lab-run --bench ktls
//!
//! ```text
//!   client ns (rustls, CPU 1) ── switch ns (the proxy, one thread pinned to CPU 0; VIP 198.51.100.40:443)
//!                                   └── backend ns (1 MiB per request, plain HTTP :8080, CPU 1)
//! ```
//!
//! The proxy is the daemon's (`tests/common/gateway_role.rs`), TLS 1.3 with
//! TLS13_AES_128_GCM_SHA256 only, one keep-alive client connection asking for 1 MiB at a
//! time. Each round (default 3, `KUBE_GW_BENCH_ROUNDS`; `KUBE_GW_BENCH_SECONDS` each, default
//! 10) measures, in an order that rotates: `openssl speed` on CPU 0 (16 KiB records, the
//! size TLS writes), the proxy with kernel TLS, the proxy with rustls in userspace. The
//! proxy's figure is MB of response body per CPU-second of the proxy process (user + system,
//! from /proc: kernel TLS encrypts in the system time of the process that writes), which is
//! the number comparable with `openssl speed` (MB per second of one busy core); its wall-clock
//! MB/s is printed beside it. The kernel's `/proc/net/tls_stat` must rise in the kernel TLS
//! rounds and stay put in the userspace ones, or the run fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/gateway_role.rs"]
mod gateway_role;
#[path = "../tests/netns/harness/mod.rs"]
mod harness;
#[path = "../tests/common/proxy_world.rs"]
mod proxy_world;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::Node;

const VIP: &str = "198.51.100.40";
const BACKEND: &str = "203.0.113.10";
const BODY: usize = 1 << 20;

fn me() -> String {
    std::env::current_exe().unwrap().display().to_string()
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The backend: answers every request on a connection with 1 MiB, kept alive.
fn role_backend() {
    let l = std::net::TcpListener::bind((BACKEND, 8080)).unwrap();
    println!("listening");
    let body: Arc<Vec<u8>> = Arc::new((0..BODY).map(|i| (i % 251) as u8).collect());
    for c in l.incoming() {
        let Ok(mut c) = c else { continue };
        let body = body.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(c.try_clone().unwrap());
            loop {
                let mut line = String::new();
                let mut ended = false;
                loop {
                    line.clear();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        ended = true;
                        break;
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                if ended {
                    return;
                }
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {BODY}\r\n\r\n");
                if c.write_all(head.as_bytes()).is_err() || c.write_all(&body).is_err() {
                    return;
                }
            }
        });
    }
}

/// The client: one kept-alive TLS connection, 1 MiB responses for `secs`; prints
/// `<body bytes> <seconds>`.
fn role_client(ca: &str, secs: u64) {
    let mut tls = BufReader::with_capacity(
        1 << 16,
        proxy_world::tls13_client(VIP, "TLS13_AES_128_GCM_SHA256", ca),
    );
    let t = Instant::now();
    let mut total = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    while t.elapsed() < Duration::from_secs(secs) {
        tls.get_mut()
            .write_all(b"GET /1m HTTP/1.1\r\nHost: app.example\r\n\r\n")
            .unwrap();
        let mut length = None;
        let mut line = String::new();
        loop {
            line.clear();
            assert!(tls.read_line(&mut line).unwrap() > 0, "closed mid-answer");
            if line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse::<usize>().ok();
                }
            }
        }
        let mut left = length.expect("a Content-Length");
        assert_eq!(left, BODY, "the backend's 1 MiB");
        while left > 0 {
            let n = tls.read(&mut buf[..left.min(1 << 16)]).unwrap();
            assert!(n > 0, "closed mid-body");
            left -= n;
        }
        total += BODY as u64;
    }
    println!("{total} {:.3}", t.elapsed().as_secs_f64());
}

fn tls_tx(switch: &Node) -> u64 {
    let out = switch.exec("cat", &["/proc/net/tls_stat"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("TlsTxSw"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

use proxy_world::ProxyWorld as World;

fn world() -> World {
    let World {
        mut lab,
        client,
        switch,
        backend,
        dir,
    } = proxy_world::proxy_world(VIP, BACKEND);
    // A CA and the gateway's certificate (ECDSA P-256).
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["app.example".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    lab.write("ca.pem", &ca_cert.pem());
    lab.write("cert.pem", &cert.pem());
    lab.write("key.pem", &key.serialize_pem());
    lab.spawn(
        &backend,
        "backend",
        "taskset",
        &["-c", "1", &me(), "role", "backend"],
    );
    harness::wait_for("the backend", Duration::from_secs(30), || {
        lab.log("backend").contains("listening").then_some(())
    });
    World {
        lab,
        client,
        switch,
        backend,
        dir,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Run {
    OpensslSpeed,
    KernelTls,
    UserspaceTls,
}

/// One measurement: (MB per CPU-second of the one core, wall-clock MB/s).
fn measure(w: &mut World, run: Run, secs: u64) -> (f64, f64) {
    if run == Run::OpensslSpeed {
        let out = w.switch.exec(
            "taskset",
            &[
                "-c",
                "0",
                "openssl",
                "speed",
                "-evp",
                "aes-128-gcm",
                "-bytes",
                "16384",
                "-seconds",
                &secs.to_string(),
                "-mr",
            ],
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let bps: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("+F:"))
            .and_then(|l| l.rsplit(':').next())
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no result from openssl speed: {text}"));
        return (bps / 1e6, bps / 1e6);
    }
    let ktls = if run == Run::KernelTls { "1" } else { "0" };
    let dir = w.dir.clone();
    let pid = w.lab.spawn(
        &w.switch,
        "proxy",
        "taskset",
        &[
            "-c",
            "0",
            &me(),
            "role",
            "gateway",
            &format!("{dir}/cert.pem"),
            &format!("{dir}/key.pem"),
            &format!("{BACKEND}:8080"),
            ktls,
        ],
    );
    harness::wait_for("the proxy", Duration::from_secs(60), || {
        w.lab
            .log("proxy")
            .lines()
            .any(|l| l.starts_with("ready"))
            .then_some(())
    });
    let tx0 = tls_tx(&w.switch);
    let cpu0 = harness::cpu_seconds(pid);
    let out = w.client.exec(
        "taskset",
        &[
            "-c",
            "1",
            &me(),
            "role",
            "client",
            &format!("{dir}/ca.pem"),
            &secs.to_string(),
        ],
    );
    let cpu = harness::cpu_seconds(pid) - cpu0;
    let tx = tls_tx(&w.switch) - tx0;
    w.lab.stop("proxy", Duration::from_secs(5));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let f: Vec<f64> = text
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    assert_eq!(f.len(), 2, "the client's answer: {text}");
    match run {
        Run::KernelTls => assert!(tx > 0, "kernel TLS round without kernel TLS (TlsTxSw +0)"),
        _ => assert_eq!(tx, 0, "userspace round, yet TlsTxSw rose by {tx}"),
    }
    (f[0] / 1e6 / cpu.max(0.01), f[0] / 1e6 / f[1])
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("role") => {
            match args.get(1).map(String::as_str) {
                Some("backend") => role_backend(),
                Some("client") => role_client(&args[2], args[3].parse().unwrap()),
                // role gateway CERT KEY BACKEND KTLS
                Some("gateway") => gateway_role::serve_https(
                    VIP,
                    443,
                    &args[2],
                    &args[3],
                    &args[4],
                    args[5] == "1",
                ),
                other => panic!("unknown role {other:?}"),
            }
            return;
        }
        _ if !args.iter().any(|a| a == "--lab") => {
            println!(
                "ktls: needs the kernel's tls module; runs in the real-kernel lab: \
                 sudo scripts/lab-run --bench ktls"
            );
            return;
        }
        _ => {}
    }
    let rounds = env("KUBE_GW_BENCH_ROUNDS", 3) as usize;
    let secs = env("KUBE_GW_BENCH_SECONDS", 10);
    let mut w = world();
    let order = [Run::OpensslSpeed, Run::KernelTls, Run::UserspaceTls];
    let mut per_cpu: BTreeMap<Run, Vec<f64>> = BTreeMap::new();
    let mut wall: BTreeMap<Run, Vec<f64>> = BTreeMap::new();
    for r in 0..rounds {
        for i in 0..order.len() {
            let run = order[(i + r) % order.len()];
            let (c, m) = measure(&mut w, run, secs);
            println!("round {r} {run:?}: {c:.1} MB per CPU-s, {m:.1} MB/s");
            per_cpu.entry(run).or_default().push(c);
            wall.entry(run).or_default().push(m);
        }
    }
    let mut c = |r: Run| median(per_cpu.get_mut(&r).unwrap());
    let (speed, k, u) = (
        c(Run::OpensslSpeed),
        c(Run::KernelTls),
        c(Run::UserspaceTls),
    );
    let mut m = |r: Run| median(wall.get_mut(&r).unwrap());
    let (km, um) = (m(Run::KernelTls), m(Run::UserspaceTls));
    println!(
        "\nktls benchmark: medians of {rounds} rotating rounds, {secs} s each, AES-128-GCM, \
         one core, under software emulation\n"
    );
    println!("| run | MB per CPU-s | wall MB/s | × openssl speed |");
    println!("|---|---:|---:|---:|");
    println!("| openssl speed -evp aes-128-gcm (16 KiB) | {speed:.1} | {speed:.1} | 1.00 |");
    println!(
        "| kube-gw, kernel TLS | {k:.1} | {km:.1} | {:.2} |",
        k / speed
    );
    println!(
        "| kube-gw, userspace TLS (rustls) | {u:.1} | {um:.1} | {:.2} |",
        u / speed
    );
    let ratio = k / speed;
    println!(
        "\ntarget: bulk with kernel TLS ≥ 0.8 × openssl speed on the same core: {ratio:.2} ({})",
        if ratio >= 0.8 { "met" } else { "NOT met" }
    );
}
