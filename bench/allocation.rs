//! Benchmark: LoadBalancer address allocation. N Services of one class (10 000) exist; the
//! allocator starts (a cold start) — how long until every status names an address; then,
//! with N present, one more Service at a time — how long until its status is written. Needs
//! root (kube-gw runs in a switch namespace, as the daemon). Three in the same run, on the
//! same test control plane:
//!
//! - **floor**: the API server's own write rate — the same status merge PATCHes (one per
//!   Service, eight in flight as kube-gw sends them) from a minimal client that decides
//!   nothing;
//! - **MetalLB**: its controller, v0.16.1, built from the Go module (`bench/metallb-build`;
//!   v0.16.2 cannot be built from the module proxy, see there), `--lb-class` its own class,
//!   an `IPAddressPool` of a /18;
//! - **kube-gw**: the daemon (elected allocator, re-read and `resourceVersion` on every
//!   write), an allocating /18 pool.
//!
//!   sudo cargo bench --bench allocation
//!   sudo KUBE_GW_BENCH_N=2000 KUBE_GW_BENCH_MORE=10 cargo bench --bench allocation
//!
//! Times come from one watch per namespace (started and listed before the allocator starts):
//! the moment each Service first shows an address. Creating the Services is not timed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/controlplane.rs"]
mod controlplane;
#[path = "../tests/netns/harness/mod.rs"]
mod harness;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use controlplane::ControlPlane;
use futures::StreamExt;
use harness::peers::KubeGw;
use harness::{wait_for, Lab};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;

/// When each Service of a namespace first showed an address.
#[derive(Default)]
struct Seen {
    first: Mutex<HashMap<String, Instant>>,
    synced: AtomicBool,
}

fn has_address(s: &Service) -> bool {
    s.status
        .as_ref()
        .and_then(|st| st.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .is_some_and(|i| !i.is_empty())
}

/// Watches `api`, noting when each Service first has an address; returns once listed.
fn watch(rt: &tokio::runtime::Runtime, api: Api<Service>) -> Arc<Seen> {
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    rt.spawn(async move {
        let mut stream = watcher(api, watcher::Config::default()).boxed();
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(watcher::Event::Apply(svc) | watcher::Event::InitApply(svc))
                    if has_address(&svc) =>
                {
                    let name = svc.metadata.name.clone().unwrap_or_default();
                    s.first
                        .lock()
                        .unwrap()
                        .entry(name)
                        .or_insert_with(Instant::now);
                }
                Ok(watcher::Event::InitDone) => s.synced.store(true, Ordering::SeqCst),
                _ => {}
            }
        }
    });
    wait_for("the watch to list", Duration::from_secs(120), || {
        seen.synced.load(Ordering::SeqCst).then_some(())
    });
    seen
}

fn service(name: &str, class: &str) -> Service {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"type": "LoadBalancer", "loadBalancerClass": class,
                 "allocateLoadBalancerNodePorts": false,
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
    }))
    .unwrap()
}

fn create_many(rt: &tokio::runtime::Runtime, api: &Api<Service>, n: usize, class: &str) {
    let t = Instant::now();
    rt.block_on(async {
        futures::stream::iter(0..n)
            .map(|i| {
                let api = api.clone();
                let svc = service(&format!("s{i:05}"), class);
                async move { api.create(&PostParams::default(), &svc).await.unwrap() }
            })
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await;
    });
    eprintln!(
        "  created {n} Services of class {class} in {:.1}s",
        t.elapsed().as_secs_f64()
    );
}

/// Seconds from `t0` until all of `names` had an address.
fn wait_all(seen: &Seen, names: &[String], t0: Instant, what: &str) -> f64 {
    wait_all_while(seen, names, t0, what, || {})
}

/// [`wait_all`], calling `check` (which panics if the allocator died) while it waits.
fn wait_all_while(
    seen: &Seen,
    names: &[String],
    t0: Instant,
    what: &str,
    mut check: impl FnMut(),
) -> f64 {
    wait_for(what, Duration::from_secs(600), || {
        check();
        let f = seen.first.lock().unwrap();
        names.iter().all(|n| f.contains_key(n)).then_some(())
    });
    let f = seen.first.lock().unwrap();
    names
        .iter()
        .map(|n| f[n].saturating_duration_since(t0).as_secs_f64())
        .fold(0.0, f64::max)
}

/// One more Service at a time, `more` times: milliseconds until each has an address.
fn one_more(
    rt: &tokio::runtime::Runtime,
    api: &Api<Service>,
    seen: &Seen,
    class: &str,
    more: usize,
) -> Vec<f64> {
    let mut out = Vec::new();
    for k in 0..more {
        let name = format!("more{k:03}");
        let t0 = Instant::now();
        rt.block_on(api.create(&PostParams::default(), &service(&name, class)))
            .unwrap();
        let s = wait_all(
            seen,
            std::slice::from_ref(&name),
            t0,
            "one more Service's address",
        );
        out.push(s * 1000.0);
        std::thread::sleep(Duration::from_millis(100));
    }
    out
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn p90(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() * 9 / 10).copied().unwrap_or(f64::NAN)
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("s{i:05}")).collect()
}

/// Peak RSS of a process, MiB.
fn peak_rss(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

struct Result {
    cold_s: f64,
    more_ms: Vec<f64>,
    rss_mib: f64,
}

fn floor(rt: &tokio::runtime::Runtime, cp: &ControlPlane, n: usize, more: usize) -> Result {
    let ns = format!("alloc-floor-{}", std::process::id());
    cp.create_namespace(&ns);
    let api: Api<Service> = rt.block_on(async { Api::namespaced(cp.admin().await, &ns) });
    let class = "bench.example/nobody";
    create_many(rt, &api, n, class);
    let seen = watch(rt, api.clone());
    let patch = |i: usize| {
        serde_json::json!({"status": {"loadBalancer": {"ingress": [
            {"ip": format!("198.18.{}.{}", 128 + i / 250, 1 + i % 250), "ipMode": "VIP"}]}}})
    };
    let params = PatchParams {
        field_manager: Some("bench-floor".into()),
        ..PatchParams::default()
    };
    let t0 = Instant::now();
    rt.block_on(async {
        futures::stream::iter(0..n)
            .map(|i| {
                let (api, p, params) = (api.clone(), patch(i), params.clone());
                async move {
                    api.patch_status(&format!("s{i:05}"), &params, &Patch::Merge(&p))
                        .await
                        .unwrap()
                }
            })
            .buffer_unordered(8)
            .collect::<Vec<_>>()
            .await;
    });
    let cold_s = wait_all(&seen, &names(n), t0, "the floor's statuses");
    // One more: create it, then write its status at once.
    let mut more_ms = Vec::new();
    for k in 0..more {
        let name = format!("more{k:03}");
        let t0 = Instant::now();
        rt.block_on(async {
            api.create(&PostParams::default(), &service(&name, class))
                .await
                .unwrap();
            api.patch_status(&name, &params, &Patch::Merge(&patch(n + k)))
                .await
                .unwrap();
        });
        more_ms.push(wait_all(&seen, std::slice::from_ref(&name), t0, "one more status") * 1000.0);
    }
    Result {
        cold_s,
        more_ms,
        rss_mib: f64::NAN,
    }
}

fn metallb(
    rt: &tokio::runtime::Runtime,
    cp: &ControlPlane,
    n: usize,
    more: usize,
) -> Option<Result> {
    let out = Command::new("bench/metallb-build")
        .stderr(Stdio::inherit())
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!("  MetalLB's controller could not be built; its column is left out");
        return None;
    }
    let bin = String::from_utf8_lossy(&out.stdout).trim().to_string();
    // Its CRDs, from the same module.
    let dir = Command::new("go")
        .env("GOFLAGS", "-mod=mod")
        .current_dir(std::env::temp_dir())
        .args(["mod", "download", "-json", "go.universe.tf/metallb@v0.16.1"])
        .output()
        .ok()?;
    let dir: serde_json::Value = serde_json::from_slice(&dir.stdout).ok()?;
    let crds = std::path::Path::new(dir["Dir"].as_str()?).join("config/crd/bases");
    for f in std::fs::read_dir(&crds).ok()?.flatten() {
        cp.apply_manifest(&std::fs::read_to_string(f.path()).ok()?);
    }
    cp.create_namespace("metallb-system");
    let pool = "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: bench\n  namespace: metallb-system\nspec:\n  addresses: [198.18.0.0/18]\n";
    // The CRDs take a moment to be served.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ok = std::panic::catch_unwind(|| cp.apply_manifest(pool)).is_ok();
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the IPAddressPool CRD is not served"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let ns = format!("alloc-metallb-{}", std::process::id());
    cp.create_namespace(&ns);
    let api: Api<Service> = rt.block_on(async { Api::namespaced(cp.admin().await, &ns) });
    let class = "bench.example/metallb";
    create_many(rt, &api, n, class);
    let seen = watch(rt, api.clone());
    let kc = std::env::temp_dir().join(format!("metallb-{}.kubeconfig", std::process::id()));
    std::fs::write(
        &kc,
        cp.user_kubeconfig("bench-metallb", &["system:masters"], &cp.server),
    )
    .unwrap();
    // The controller reads its own Pod (for owner references): one that never runs.
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: controller-bench\n  namespace: metallb-system\n\
               spec:\n  automountServiceAccountToken: false\n  containers:\n  - name: controller\n    image: quay.io/metallb/controller:v0.16.1\n";
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::panic::catch_unwind(|| cp.apply_manifest(pod)).is_err() {
        assert!(
            Instant::now() < deadline,
            "cannot create MetalLB's Pod object"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let log_path = std::env::temp_dir().join("metallb-controller.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let t0 = Instant::now();
    let mut child = Command::new(&bin)
        .env("KUBECONFIG", &kc)
        .args([
            "--namespace",
            "metallb-system",
            "--lb-class",
            class,
            "--webhook-mode",
            "disabled",
            "--port",
            "0",
            "--health-probe-port",
            "18081",
            "--log-level",
            "warn",
            "--pod-name",
            "controller-bench",
        ])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let cold_s = wait_all_while(&seen, &names(n), t0, "MetalLB's statuses", || {
        if let Ok(Some(st)) = child.try_wait() {
            panic!(
                "MetalLB's controller exited ({st}):\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
    });
    let more_ms = one_more(rt, &api, &seen, class, more);
    let rss_mib = peak_rss(child.id());
    // Stopped by the pid started here.
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
    let _ = std::fs::remove_file(&kc);
    Some(Result {
        cold_s,
        more_ms,
        rss_mib,
    })
}

fn kube_gw(rt: &tokio::runtime::Runtime, cp: &ControlPlane, n: usize, more: usize) -> Result {
    let ns = format!("alloc-kg-{}", std::process::id());
    cp.create_namespace(&ns);
    let api: Api<Service> = rt.block_on(async { Api::namespaced(cp.admin().await, &ns) });
    let class = "bench.example/kube-gw";
    create_many(rt, &api, n, class);
    let seen = watch(rt, api.clone());
    let mut lab = Lab::new();
    let sw = lab.node("sw");
    let port: u16 = cp.server.rsplit(':').next().unwrap().parse().unwrap();
    let name = format!("alloc-{}", std::process::id());
    cp.bind_switch(&name);
    lab.forward_host_port(&sw, port);
    let kc_path = lab.path(&format!("{name}.kubeconfig"));
    cp.write_node_kubeconfig(&name, &kc_path);
    let state = lab.path("state");
    let t0 = Instant::now();
    let _kg = KubeGw::start(
        &mut lab,
        &sw,
        &name,
        &format!(
            "[node]\nname = \"{name}\"\n[kubernetes]\nkubeconfig = \"{}\"\nservice-cidrs = [\"10.96.0.0/12\"]\n\
             state-dir = \"{}\"\n\
             [vip]\npools = [{{ prefix = \"198.18.64.0/18\", allocate = true, name = \"bench\" }}]\n\
             load-balancer-class = \"{class}\"\n[ipvs]\nenabled = false\n",
            kc_path.display(),
            state.display()
        ),
    );
    let cold_s = wait_all(&seen, &names(n), t0, "kube-gw's statuses");
    let more_ms = one_more(rt, &api, &seen, class, more);
    let rss_mib = lab.pid(&name).map_or(f64::NAN, peak_rss);
    Result {
        cold_s,
        more_ms,
        rss_mib,
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "allocation: run with `sudo cargo bench --bench allocation` (skipped under cargo test)"
        );
        return;
    }
    if !harness::require_root("bench allocation") {
        return;
    }
    let env = |k: &str, d: usize| -> usize {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (n, more) = (
        env("KUBE_GW_BENCH_N", 10_000),
        env("KUBE_GW_BENCH_MORE", 20),
    );
    let cp = ControlPlane::shared();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    eprintln!("floor: {n} status PATCHes from a minimal client");
    let fl = floor(&rt, cp, n, more);
    eprintln!("MetalLB v0.16.1's controller");
    let mlb = metallb(&rt, cp, n, more);
    eprintln!("kube-gw");
    let kg = kube_gw(&rt, cp, n, more);
    println!("\nLoadBalancer allocation, N = {n} Services, one more × {more} (times to status written)\n");
    println!("| metric | floor (API writes only) | MetalLB v0.16.1 | kube-gw | kube-gw × MetalLB | kube-gw × floor |");
    println!("|---|---:|---:|---:|---:|---:|");
    let row = |what: &str, f: f64, m: Option<f64>, k: f64| {
        let m_s = m.map_or("-".to_string(), |m| format!("{m:.2}"));
        let r_m = m.map_or("-".to_string(), |m| format!("{:.2}", k / m));
        println!(
            "| {what} | {f:.2} | {m_s} | {k:.2} | {r_m} | {:.2} |",
            k / f
        );
    };
    row(
        "cold start: all N written, s",
        fl.cold_s,
        mlb.as_ref().map(|m| m.cold_s),
        kg.cold_s,
    );
    row(
        "one more with N present, median ms",
        median(&fl.more_ms),
        mlb.as_ref().map(|m| median(&m.more_ms)),
        median(&kg.more_ms),
    );
    row(
        "one more with N present, p90 ms",
        p90(&fl.more_ms),
        mlb.as_ref().map(|m| p90(&m.more_ms)),
        p90(&kg.more_ms),
    );
    println!(
        "| peak RSS, MiB | - | {} | {:.1} | {} | - |",
        mlb.as_ref()
            .map_or("-".into(), |m| format!("{:.1}", m.rss_mib)),
        kg.rss_mib,
        mlb.as_ref()
            .map_or("-".into(), |m| format!("{:.2}", kg.rss_mib / m.rss_mib)),
    );
    println!("\n(× below 1 is better: less time, less memory. kube-gw's RSS is the whole daemon: it also serves the {n} addresses on lo.)");
}
