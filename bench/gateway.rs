//! Benchmark: the L7 gateway against HAProxy 2.6 and nginx 1.22 (Debian packages) doing the
//! same job on the same VIP, in the same run, alternating rounds. Needs root.
//!
//!   sudo cargo bench --bench gateway                          # 3 rounds, 5 s per measurement
//!   sudo KUBE_GW_BENCH_ROUNDS=5 KUBE_GW_BENCH_SECONDS=10 cargo bench --bench gateway
//!   sudo KUBE_GW_BENCH_ONLY=mtls cargo bench --bench gateway  # the backend mTLS table alone
//!
//! ```text
//!   client ns (load, CPU 0) ── switch ns (the proxy, one worker pinned to CPU 1; VIP 198.51.100.40:443 on lo)
//!                                   └── backend ns: nginx serving / ("ok") and /1m (1 MiB), plain HTTP :8080 (CPU 0)
//! ```
//!
//! Same ECDSA P-256 certificate, TLS 1.3 only, ALPN h2 and http/1.1, keep-alive to the
//! backend for all three. kube-gw runs as the daemon's own proxy and eBPF steering
//! (`tests/common/gateway_role.rs`), without access logs, as are the others. This host's kernel
//! has no `tls` module: TLS is in userspace for all three here; the kernel TLS bulk target is
//! measured in the real-kernel lab (see bench/README.md).
//!
//! Measurements: full handshakes/s (wrk, `Connection: close`: a new TLS connection per
//! request), keep-alive HTTP/1.1 requests/s (wrk, 50 connections), HTTP/2 requests/s (h2load,
//! 10 connections × 10 streams), 1 MiB bulk throughput (wrk, 4 connections), p99 latency at a
//! fixed 500 requests/s (hey), CPU-seconds per 10 000 keep-alive requests (the proxy's
//! /proc/PID/stat), and the proxy's RSS at the end. Then the model-override filter's cost:
//! kube-gw alone, keep-alive JSON POSTs to /api/generate with and without the filter. Then
//! backend mTLS against HAProxy (`ssl verify required ca-file … crt …`): the backend is nginx
//! on :8443 demanding a client certificate its CA signed (`ssl_verify_client on`), the proxy
//! verifies the backend's certificate (CA and name) and shows its own; keep-alive req/s, new
//! client connections/s (`Connection: close`; backend sessions are reused by both), and CPU.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/gateway_role.rs"]
mod gateway_role;
#[path = "../tests/netns/harness/mod.rs"]
mod harness;
#[path = "../tests/common/proxy_world.rs"]
#[allow(dead_code)]
mod proxy_world;

use std::collections::BTreeMap;
use std::time::Duration;

use harness::Node;

const VIP: &str = "198.51.100.40";
const BACKEND: &str = "203.0.113.10";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Proxy {
    KubeGw,
    Haproxy,
    Nginx,
}

impl Proxy {
    fn name(self) -> &'static str {
        match self {
            Proxy::KubeGw => "kube-gw",
            Proxy::Haproxy => "HAProxy 2.6",
            Proxy::Nginx => "nginx 1.22",
        }
    }
}

const METRICS: [&str; 7] = [
    "full handshakes/s",
    "keep-alive HTTP/1.1 req/s",
    "HTTP/2 req/s",
    "1 MiB bulk MB/s",
    "p99 ms at 500 req/s",
    "CPU-s per 10k req",
    "RSS MiB",
];

fn me() -> String {
    std::env::current_exe().unwrap().display().to_string()
}

fn seconds() -> u64 {
    std::env::var("KUBE_GW_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
}

fn out(node: &Node, cmd: &[&str]) -> String {
    let o = node.try_exec(cmd[0], &cmd[1..]);
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The first number after `key` in `text` (with a unit suffix handled by `scale`).
fn after(text: &str, key: &str) -> Option<f64> {
    let rest = &text[text.find(key)? + key.len()..];
    let tok: String = rest
        .trim_start()
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != ',')
        .collect();
    let (num, unit): (String, String) = tok.chars().partition(|c| c.is_ascii_digit() || *c == '.');
    let v: f64 = num.parse().ok()?;
    Some(match unit.as_str() {
        "KB" => v / 1000.0,
        "MB" => v,
        "GB" => v * 1000.0,
        _ => v,
    })
}

/// utime + stime of the processes, in seconds.
fn cpu_seconds(pids: &[u32]) -> f64 {
    pids.iter().map(|&p| harness::cpu_seconds(p)).sum()
}

fn rss_mib(pids: &[u32]) -> f64 {
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .sum::<f64>()
        / 1024.0
}

/// Every pid in the process tree under `pid` (nginx's master and worker).
fn tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let p = all[i];
        if let Ok(c) = std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")) {
            all.extend(c.split_whitespace().filter_map(|x| x.parse::<u32>().ok()));
        }
        i += 1;
    }
    all
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
    // Certificate: ECDSA P-256 (rcgen's default).
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["app.example".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    lab.write("cert.pem", &cert.pem());
    lab.write("key.pem", &key.serialize_pem());
    lab.write(
        "combined.pem",
        &format!("{}{}", cert.pem(), key.serialize_pem()),
    );
    // The backend's own PKI for the mTLS measurement: a CA, the backend's certificate for
    // api.example, and the proxy's client certificate.
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "backend CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    lab.write("bca.pem", &ca.self_signed(&ca_key).unwrap().pem());
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server = rcgen::CertificateParams::new(vec!["api.example".to_string()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    lab.write("bsrv.pem", &server.pem());
    lab.write("bsrv.key", &server_key.serialize_pem());
    let mut cp = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    cp.distinguished_name
        .push(rcgen::DnType::CommonName, "gateway");
    cp.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let client_key = rcgen::KeyPair::generate().unwrap();
    let client_cert = cp.signed_by(&client_key, &issuer).unwrap();
    lab.write("bcli.pem", &client_cert.pem());
    lab.write("bcli.key", &client_key.serialize_pem());
    lab.write(
        "bcli-combined.pem",
        &format!("{}{}", client_cert.pem(), client_key.serialize_pem()),
    );
    // The backend: nginx, static files.
    std::fs::create_dir_all(format!("{dir}/www")).unwrap();
    std::fs::write(format!("{dir}/www/index.html"), "ok\n").unwrap();
    std::fs::write(format!("{dir}/www/1m"), vec![b'x'; 1 << 20]).unwrap();
    for d in ["be", "px"] {
        std::fs::create_dir_all(format!("{dir}/{d}/logs")).unwrap();
    }
    lab.write(
        "backend.conf",
        &format!(
            "worker_processes 1; daemon off; pid {dir}/be/nginx.pid; error_log {dir}/be/error.log;\n\
             events {{ worker_connections 8192; }}\n\
             http {{ access_log off; keepalive_requests 1000000; client_body_temp_path {dir}/be; proxy_temp_path {dir}/be;\n\
               fastcgi_temp_path {dir}/be; uwsgi_temp_path {dir}/be; scgi_temp_path {dir}/be;\n\
               server {{ listen {BACKEND}:8080; root {dir}/www; index index.html;\n\
                 location /api/ {{ return 200 \"ok\\n\"; }} }}\n\
               server {{ listen {BACKEND}:8443 ssl; ssl_certificate {dir}/bsrv.pem; ssl_certificate_key {dir}/bsrv.key;\n\
                 ssl_protocols TLSv1.3; ssl_verify_client on; ssl_client_certificate {dir}/bca.pem; root {dir}/www; index index.html; }} }}\n"
        ),
    );
    lab.spawn(
        &backend,
        "backend",
        "taskset",
        &[
            "-c",
            "0",
            "nginx",
            "-p",
            &format!("{dir}/be"),
            "-c",
            &format!("{dir}/backend.conf"),
        ],
    );
    harness::wait_for("the backend", Duration::from_secs(20), || {
        (out(&switch, &["curl", "-s", &format!("http://{BACKEND}:8080/")]).trim() == "ok")
            .then_some(())
    });
    World {
        lab,
        client,
        switch,
        backend,
        dir,
    }
}

/// What the proxy does toward the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Plain HTTP to :8080.
    Plain,
    /// kube-gw only: the model-override filter on its route.
    ModelOverride,
    /// TLS to :8443, the backend verified, with a client certificate.
    Mtls,
}

/// Starts a proxy on the switch (CPU 1); returns its pids.
fn start(w: &mut World, p: Proxy) -> Vec<u32> {
    start_with(w, p, Mode::Plain)
}

/// [`start`], with the backend side `mode` asks.
fn start_with(w: &mut World, p: Proxy, mode: Mode) -> Vec<u32> {
    let dir = w.dir.clone();
    let backend = if mode == Mode::Mtls {
        format!("{BACKEND}:8443")
    } else {
        format!("{BACKEND}:8080")
    };
    let (cert, key) = (format!("{dir}/cert.pem"), format!("{dir}/key.pem"));
    let (bca, bcli, bkey) = (
        format!("{dir}/bca.pem"),
        format!("{dir}/bcli.pem"),
        format!("{dir}/bcli.key"),
    );
    let pid = match p {
        Proxy::KubeGw => {
            let me = me();
            let mut args = vec!["-c", "1", &me];
            match mode {
                Mode::Plain => args.extend(["role", "gateway"]),
                Mode::ModelOverride => args.push("role-model-override"),
                Mode::Mtls => args.push("role-mtls"),
            }
            args.extend([cert.as_str(), key.as_str(), backend.as_str()]);
            if mode == Mode::Mtls {
                args.extend([bca.as_str(), bcli.as_str(), bkey.as_str()]);
            }
            w.lab.spawn(&w.switch, "proxy", "taskset", &args)
        }
        Proxy::Haproxy => {
            w.lab.write(
                "haproxy.cfg",
                &format!(
                    "global\n  nbthread 1\n  maxconn 8000\n\
                     defaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n  option http-keep-alive\n\
                     frontend fe\n  bind {VIP}:443 ssl crt {dir}/combined.pem alpn h2,http/1.1 ssl-min-ver TLSv1.3\n  default_backend be\n\
                     backend be\n  http-reuse always\n  server b1 {backend}{}\n",
                    if mode == Mode::Mtls {
                        format!(" ssl verify required ca-file {bca} crt {dir}/bcli-combined.pem sni str(api.example) verifyhost api.example alpn http/1.1")
                    } else {
                        String::new()
                    }
                ),
            );
            w.lab.spawn(
                &w.switch,
                "proxy",
                "taskset",
                &[
                    "-c",
                    "1",
                    "haproxy",
                    "-db",
                    "-f",
                    &format!("{dir}/haproxy.cfg"),
                ],
            )
        }
        Proxy::Nginx => {
            w.lab.write(
                "proxy.conf",
                &format!(
                    "worker_processes 1; daemon off; pid {dir}/px/nginx.pid; error_log {dir}/px/error.log;\n\
                     events {{ worker_connections 20000; }}\n\
                     http {{ access_log off; keepalive_requests 1000000; client_body_temp_path {dir}/px; proxy_temp_path {dir}/px;\n\
                       fastcgi_temp_path {dir}/px; uwsgi_temp_path {dir}/px; scgi_temp_path {dir}/px;\n\
                       upstream be {{ server {backend}; keepalive 64; }}\n\
                       server {{ listen {VIP}:443 ssl http2; ssl_certificate {dir}/cert.pem; ssl_certificate_key {dir}/key.pem;\n\
                         ssl_protocols TLSv1.3; location / {{ proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }} }}\n"
                ),
            );
            w.lab.spawn(
                &w.switch,
                "proxy",
                "taskset",
                &[
                    "-c",
                    "1",
                    "nginx",
                    "-p",
                    &format!("{dir}/px"),
                    "-c",
                    &format!("{dir}/proxy.conf"),
                ],
            )
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while out(
        &w.client,
        &["curl", "-sk", "--max-time", "2", &format!("https://{VIP}/")],
    )
    .trim()
        != "ok"
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{} does not serve within 30 s; its log:\n{}",
            p.name(),
            w.lab.log("proxy")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // `taskset` execs the proxy; nginx forks its worker.
    std::thread::sleep(Duration::from_millis(300));
    tree(pid)
}

fn measure(w: &mut World, p: Proxy) -> BTreeMap<&'static str, f64> {
    let pids = start(w, p);
    let d = seconds().to_string();
    let url = format!("https://{VIP}/");
    let load = |cmd: &[&str]| {
        let mut full = vec!["taskset", "-c", "0"];
        full.extend_from_slice(cmd);
        out(&w.client, &full)
    };
    let mut m = BTreeMap::new();
    let t = load(&[
        "wrk",
        "-t1",
        "-c16",
        &format!("-d{d}s"),
        "-H",
        "Connection: close",
        &url,
    ]);
    m.insert(METRICS[0], after(&t, "Requests/sec:").unwrap_or(0.0));
    let cpu0 = cpu_seconds(&pids);
    let t = load(&["wrk", "-t1", "-c50", &format!("-d{d}s"), &url]);
    let cpu1 = cpu_seconds(&pids);
    let rps = after(&t, "Requests/sec:").unwrap_or(0.0);
    m.insert(METRICS[1], rps);
    let reqs = rps * seconds() as f64;
    m.insert(
        METRICS[5],
        if reqs > 0.0 {
            (cpu1 - cpu0) / reqs * 10_000.0
        } else {
            0.0
        },
    );
    let t = load(&["h2load", "-c10", "-m10", "-D", &d, &url]);
    m.insert(METRICS[2], after(&t, "s, ").unwrap_or(0.0));
    let t = load(&["wrk", "-t1", "-c4", &format!("-d{d}s"), &format!("{url}1m")]);
    m.insert(METRICS[3], after(&t, "Transfer/sec:").unwrap_or(0.0));
    let t = load(&["hey", "-z", &format!("{d}s"), "-c", "10", "-q", "50", &url]);
    m.insert(METRICS[4], after(&t, "99% in").map_or(0.0, |s| s * 1000.0));
    m.insert(METRICS[6], rss_mib(&pids));
    w.lab.stop("proxy", Duration::from_secs(5));
    eprintln!("{}: {m:?}", p.name());
    m
}

/// The model-override filter's cost: keep-alive POSTs of a JSON body to /api/generate (wrk,
/// 50 connections) through kube-gw with and without the filter; (req/s, CPU µs per request).
fn measure_override(w: &mut World, with: bool) -> (f64, f64) {
    let pids = start_with(
        w,
        Proxy::KubeGw,
        if with {
            Mode::ModelOverride
        } else {
            Mode::Plain
        },
    );
    let script = w.lab.write(
        "post.lua",
        "wrk.method = \"POST\"\n\
         wrk.headers[\"Content-Type\"] = \"application/json\"\n\
         wrk.body = '{\"model\": \"llama3.2:1b\", \"prompt\": \"Why is the sky blue? Answer in one sentence.\", \"stream\": false, \"options\": {\"temperature\": 0.7}}'\n",
    );
    let d = seconds().to_string();
    let cpu0 = cpu_seconds(&pids);
    let t = out(
        &w.client,
        &[
            "taskset",
            "-c",
            "0",
            "wrk",
            "-t1",
            "-c50",
            &format!("-d{d}s"),
            "-s",
            script.to_str().unwrap(),
            &format!("https://{VIP}/api/generate"),
        ],
    );
    let cpu1 = cpu_seconds(&pids);
    w.lab.stop("proxy", Duration::from_secs(5));
    let rps = after(&t, "Requests/sec:").unwrap_or(0.0);
    let reqs = rps * seconds() as f64;
    let us = if reqs > 0.0 {
        (cpu1 - cpu0) / reqs * 1e6
    } else {
        0.0
    };
    eprintln!("kube-gw, model override {with}: {rps:.0} req/s, {us:.1} µs CPU per request");
    (rps, us)
}

/// Backend mTLS: (keep-alive req/s, new client connections/s, CPU µs per keep-alive request).
fn measure_mtls(w: &mut World, p: Proxy) -> (f64, f64, f64) {
    let pids = start_with(w, p, Mode::Mtls);
    let d = seconds().to_string();
    let url = format!("https://{VIP}/");
    let load = |extra: &[&str]| {
        let mut full = vec!["taskset", "-c", "0", "wrk", "-t1"];
        full.extend_from_slice(extra);
        full.extend([url.as_str()]);
        out(&w.client, &full)
    };
    let cpu0 = cpu_seconds(&pids);
    let t = load(&["-c50", &format!("-d{d}s")]);
    let cpu1 = cpu_seconds(&pids);
    let rps = after(&t, "Requests/sec:").unwrap_or(0.0);
    let us = if rps > 0.0 {
        (cpu1 - cpu0) / (rps * seconds() as f64) * 1e6
    } else {
        0.0
    };
    let t = load(&["-c16", &format!("-d{d}s"), "-H", "Connection: close"]);
    let close = after(&t, "Requests/sec:").unwrap_or(0.0);
    w.lab.stop("proxy", Duration::from_secs(5));
    eprintln!("{} backend mTLS: {rps:.0} req/s keep-alive, {close:.0} new connections/s, {us:.1} µs CPU per request", p.name());
    (rps, close, us)
}

/// The backend mTLS table: kube-gw against HAProxy, alternating rounds.
fn backend_mtls(w: &mut World, rounds: usize) {
    // Backend mTLS against HAProxy, alternating.
    let mut mtls: BTreeMap<Proxy, [Vec<f64>; 3]> = BTreeMap::new();
    for r in 0..rounds {
        for i in 0..2 {
            let p = [Proxy::KubeGw, Proxy::Haproxy][(i + r) % 2];
            let (a, b, c) = measure_mtls(w, p);
            let e = mtls.entry(p).or_default();
            e[0].push(a);
            e[1].push(b);
            e[2].push(c);
        }
    }
    let m = |p: Proxy, i: usize| median(&mut mtls[&p][i].clone());
    println!("\nbackend mTLS (the proxy verifies the backend's certificate and shows its own; backend nginx demands it)\n");
    println!("| metric | kube-gw | HAProxy 2.6 | × HAProxy |");
    println!("|---|---:|---:|---:|");
    for (i, name) in [
        "keep-alive req/s",
        "new client connections/s",
        "CPU µs per keep-alive request",
    ]
    .into_iter()
    .enumerate()
    {
        let (g, h) = (m(Proxy::KubeGw, i), m(Proxy::Haproxy, i));
        println!("| {name} | {g:.1} | {h:.1} | {:.2} |", g / h);
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("role") {
        // role gateway CERT KEY BACKEND
        gateway_role::serve_https(VIP, 443, &args[2], &args[3], &args[4], true);
        return;
    }
    if args.first().map(String::as_str) == Some("role-model-override") {
        // role-model-override CERT KEY BACKEND: the same, with the model-override filter.
        let mo = kube_gw::gateway::model_override::ModelOverride {
            name: "lab/llm".into(),
            models: vec![("qwen2.5:0.5b".into(), 1)],
            paths: vec!["/api/generate".into()],
            max_body: 1 << 20,
            reject: false,
        };
        gateway_role::serve_https_with(
            VIP,
            443,
            &args[1],
            &args[2],
            &args[3],
            true,
            vec![kube_gw::gateway::plan::Filter::ModelOverride(
                std::sync::Arc::new(mo),
            )],
            None,
        );
        return;
    }
    if args.first().map(String::as_str) == Some("role-mtls") {
        // role-mtls CERT KEY BACKEND CA CLIENT-CERT CLIENT-KEY: TLS to the backend, verified,
        // with a client certificate.
        gateway_role::serve_https_with(
            VIP,
            443,
            &args[1],
            &args[2],
            &args[3],
            true,
            vec![],
            Some(gateway_role::UpstreamTls {
                ca: &args[4],
                hostname: "api.example",
                cert: &args[5],
                key: &args[6],
            }),
        );
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        println!("gateway: run with `sudo cargo bench --bench gateway` (skipped under cargo test)");
        return;
    }
    if !harness::require_root("bench gateway") {
        return;
    }
    let missing: Vec<&str> = [
        "haproxy", "nginx", "wrk", "h2load", "hey", "taskset", "curl",
    ]
    .into_iter()
    .filter(|t| {
        !std::process::Command::new("sh")
            .args(["-c", &format!("command -v {t} >/dev/null")])
            .status()
            .is_ok_and(|s| s.success())
    })
    .collect();
    if !missing.is_empty() {
        eprintln!(
            "bench gateway: missing {missing:?}; install the peers and load generators first:\n  \
             apt-get install haproxy nginx-light wrk nghttp2-client hey util-linux curl\n\
             (stop the haproxy and nginx services the packages start: the benchmark runs its own)"
        );
        std::process::exit(1);
    }
    let rounds: usize = std::env::var("KUBE_GW_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let mut w = world();
    // KUBE_GW_BENCH_ONLY=mtls: the backend mTLS table alone.
    if std::env::var("KUBE_GW_BENCH_ONLY").as_deref() == Ok("mtls") {
        backend_mtls(&mut w, rounds);
        return;
    }
    let order = [Proxy::KubeGw, Proxy::Haproxy, Proxy::Nginx];
    let mut all: BTreeMap<Proxy, BTreeMap<&str, Vec<f64>>> = BTreeMap::new();
    for r in 0..rounds {
        for i in 0..3 {
            let p = order[(i + r) % 3];
            for (k, v) in measure(&mut w, p) {
                all.entry(p).or_default().entry(k).or_default().push(v);
            }
        }
    }
    let med: BTreeMap<Proxy, BTreeMap<&str, f64>> = all
        .into_iter()
        .map(|(p, m)| {
            (
                p,
                m.into_iter()
                    .map(|(k, mut v)| (k, median(&mut v)))
                    .collect(),
            )
        })
        .collect();
    println!("\ngateway benchmark: medians of {rounds} alternating rounds, {} s each, proxy on one core\n", seconds());
    println!("| metric | kube-gw | HAProxy 2.6 | nginx 1.22 | × HAProxy | × nginx |");
    println!("|---|---:|---:|---:|---:|---:|");
    for k in METRICS {
        let v = |p: Proxy| med[&p][k];
        let (g, h, n) = (v(Proxy::KubeGw), v(Proxy::Haproxy), v(Proxy::Nginx));
        println!(
            "| {k} | {g:.2} | {h:.2} | {n:.2} | {:.2} | {:.2} |",
            g / h,
            g / n
        );
    }
    println!("\n(× > 1 is better for rates; < 1 is better for p99, CPU and RSS)");
    // The model-override filter: the same proxy, with and without it, alternating.
    let (mut rps, mut cpu): ([Vec<f64>; 2], [Vec<f64>; 2]) = Default::default();
    for r in 0..rounds {
        for i in 0..2 {
            let with = (i + r) % 2 == 1;
            let (a, b) = measure_override(&mut w, with);
            rps[usize::from(with)].push(a);
            cpu[usize::from(with)].push(b);
        }
    }
    let (r0, r1) = (median(&mut rps[0]), median(&mut rps[1]));
    let (c0, c1) = (median(&mut cpu[0]), median(&mut cpu[1]));
    println!(
        "\nmodel override (POST /api/generate, 132-byte JSON body, keep-alive, 50 connections)\n"
    );
    println!("| kube-gw | req/s | CPU µs per request |");
    println!("|---|---:|---:|");
    println!("| without the filter | {r0:.0} | {c0:.1} |");
    println!("| with the filter | {r1:.0} | {c1:.1} |");
    println!(
        "| with ÷ without | {:.2} | {:.2} (+{:.1} µs) |",
        r1 / r0,
        c1 / c0,
        c1 - c0
    );
    backend_mtls(&mut w, rounds);
    let hs = med[&Proxy::KubeGw][METRICS[0]] / med[&Proxy::Haproxy][METRICS[0]];
    let ka = med[&Proxy::KubeGw][METRICS[1]] / med[&Proxy::Nginx][METRICS[1]];
    println!(
        "target: full handshakes/s ≥ 1.0 × HAProxy: {hs:.2} ({})",
        if hs >= 1.0 { "met" } else { "NOT met" }
    );
    println!(
        "target: keep-alive req/s ≥ 1.0 × nginx: {ka:.2} ({})",
        if ka >= 1.0 { "met" } else { "NOT met" }
    );
}
