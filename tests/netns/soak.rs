//! The churn soak: kube-gw serving thousands of Services while a load generator creates,
//! changes and deletes them at a fixed rate, a BIRD leaf learns the routes, and every
//! minute the invariant is checked from outside kube-gw:
//!
//!   the addresses on `lo` = the routes at the leaf = what the cluster asks for,
//!
//! where "what the cluster asks for" is computed here, independently, from the API server
//! (the soak namespace's Services with a ready endpoint: their externalIPs), never from
//! kube-gw's report. The generator pauses for the check; the check waits at most 30 s for
//! the three to agree and records how long that took.
//!
//! Recorded every 5 s: kube-gw's RSS, file descriptors and CPU (from /proc); every minute:
//! the event→kernel latency p50/p99 of the minute's changes, measured outside kube-gw
//! (the API call's return → the address in `ip -ts monitor address`), and the daemon's own
//! histogram as a cross-check. Written to `$KUBE_GW_SOAK_OUT` (samples.csv, checks.csv),
//! plotted by `scripts/soak`.
//!
//! Run by `scripts/soak DURATION` (scripts/test: `scripts/soak 5m`); knobs:
//! `KUBE_GW_SOAK_SECS`, `KUBE_GW_SOAK_SERVICES` (default 2000), `KUBE_GW_SOAK_RATE`
//! (changes per second, default 50). IPVS is not in this kernel (the lab's business).
//! VIPs come from 198.18.0.0/15 (RFC 2544's benchmarking range).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};

use crate::bgp::{attach_leaf, metrics};
use crate::controlplane::ControlPlane;
use crate::harness::{knob, proc_use, require_root, wait_for, Node};
use crate::vips::Switch;

/// The n-th VIP of the soak: 198.18.0.0/15 from .1.
fn vip(n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + 1 + n)
}

fn in_range(a: &str) -> bool {
    a.parse::<Ipv4Addr>()
        .is_ok_and(|a| (u32::from(a) >> 17) == (u32::from(Ipv4Addr::new(198, 18, 0, 0)) >> 17))
}

/// The soak's VIPs on `lo`.
fn on_lo(node: &Node) -> BTreeSet<String> {
    let out = node.exec("ip", &["-j", "-4", "addr", "show", "dev", "lo"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v[0]["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["local"].as_str())
        .filter(|a| in_range(a))
        .map(String::from)
        .collect()
}

/// The soak's routes in the leaf's kernel (from BIRD).
fn at_leaf(leaf: &Node) -> BTreeSet<String> {
    let out = leaf.exec("ip", &["-j", "-4", "route", "show", "proto", "bird"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["dst"].as_str())
        .filter(|d| in_range(d))
        .map(String::from)
        .collect()
}

fn service(ns: &str, name: &str, ip: Ipv4Addr) -> Service {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": ns, "labels": {"kube-gw.io/test": ns}},
        "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
                 "externalIPs": [ip.to_string()]}
    }))
    .unwrap()
}

fn slice(ns: &str, name: &str) -> EndpointSlice {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("{name}-1"), "namespace": ns,
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["10.0.0.5"], "conditions": {"ready": true}}]
    }))
    .unwrap()
}

/// What the cluster asks for, from the API server: the externalIPs of the namespace's
/// Services that have a ready endpoint.
async fn expected(client: &kube::Client, ns: &str) -> BTreeSet<String> {
    let lp = ListParams::default();
    let services = Api::<Service>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .unwrap();
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .unwrap();
    let ready: BTreeSet<String> = slices
        .items
        .iter()
        .filter(|s| {
            s.endpoints
                .iter()
                .flatten()
                .any(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        })
        .filter_map(|s| {
            s.metadata
                .labels
                .as_ref()?
                .get("kubernetes.io/service-name")
                .cloned()
        })
        .collect();
    services
        .items
        .iter()
        .filter(|s| s.metadata.name.as_ref().is_some_and(|n| ready.contains(n)))
        .flat_map(|s| {
            s.spec
                .iter()
                .flat_map(|p| p.external_ips.iter().flatten())
                .cloned()
        })
        .collect()
}

/// One /proc sample: seconds into the soak, RSS (KiB), file descriptors, CPU (%).
type Sample = (f64, u64, usize, f64);

/// The change log: when each VIP's API call returned (wall clock, for `ip -ts`).
type Sent = Arc<Mutex<Vec<(String, SystemTime)>>>;

/// Seconds of a day from `ip -ts`'s `[YYYY-MM-DDTHH:MM:SS.ffffff]`, and the address added.
fn monitor_line(l: &str) -> Option<(f64, String)> {
    if l.contains("Deleted") {
        return None;
    }
    let ts = l.strip_prefix('[')?.split(']').next()?;
    let t = crate::harness::unix_seconds(ts)?;
    let addr = l.split(" inet ").nth(1)?.split('/').next()?.to_string();
    Some((t, addr))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// p50 and p99 of kube-gw's own event→kernel histogram (addresses), from its buckets.
fn daemon_quantiles(text: &str) -> (f64, f64) {
    let mut buckets: Vec<(f64, f64)> = text
        .lines()
        .filter(|l| {
            l.starts_with("kube_gw_event_to_kernel_seconds_bucket{")
                && l.contains("reconciler=\"addresses\"")
        })
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last().map_or(0.0, |b| b.1);
    let q = |p: f64| {
        buckets
            .iter()
            .find(|b| b.1 >= total * p)
            .map_or(f64::NAN, |b| b.0)
    };
    (q(0.5), q(0.99))
}

#[test]
#[ignore = "the soak: scripts/soak DURATION runs it (scripts/test: its 5-minute short form)"]
fn churn_soak_keeps_lo_and_the_leaf_equal_to_the_cluster() {
    if !require_root("churn_soak_keeps_lo_and_the_leaf_equal_to_the_cluster") {
        return;
    }
    let secs = knob("KUBE_GW_SOAK_SECS", 300);
    let n = knob("KUBE_GW_SOAK_SERVICES", 2000) as u32;
    let rate = knob("KUBE_GW_SOAK_RATE", 50).max(1);
    let out = std::path::PathBuf::from(
        std::env::var("KUBE_GW_SOAK_OUT").unwrap_or_else(|_| "target/soak".into()),
    );
    std::fs::create_dir_all(&out).unwrap();
    let mut sw = Switch::start_with(
        "pools = [\"198.18.0.0/15\"]",
        "[[bgp.neighbors]]\naddress = \"192.0.2.1\"\nremote-asn = 65000\n",
    );
    let (node, leaf, _bird) = attach_leaf(&mut sw);
    let pid = sw.lab.pid(&sw.kg.name).unwrap();
    sw.lab
        .spawn(&node, "addrmon", "ip", &["-ts", "-4", "monitor", "address"]);
    std::thread::sleep(Duration::from_millis(500));
    let ns = sw.ns.clone();
    let cp = ControlPlane::shared();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // The client's connection task lives on the runtime that made it: this one.
    let client = rt.block_on(cp.admin());

    // The fleet: n Services, each with a ready endpoint.
    let started = Instant::now();
    rt.block_on(async {
        futures::stream::iter(0..n)
            .map(|i| {
                let (client, ns) = (client.clone(), ns.clone());
                async move {
                    let name = format!("s{i}");
                    let pp = PostParams::default();
                    Api::<Service>::namespaced(client.clone(), &ns)
                        .create(&pp, &service(&ns, &name, vip(i)))
                        .await
                        .unwrap();
                    Api::<EndpointSlice>::namespaced(client, &ns)
                        .create(&pp, &slice(&ns, &name))
                        .await
                        .unwrap();
                }
            })
            .buffer_unordered(16)
            .collect::<Vec<()>>()
            .await;
    });
    let want = rt.block_on(expected(&client, &ns));
    assert_eq!(want.len(), n as usize);
    wait_for(
        "the fleet on lo and at the leaf",
        Duration::from_secs(300),
        || (on_lo(&node) == want && at_leaf(&leaf) == want).then_some(()),
    );
    eprintln!(
        "soak: {n} Services created and converged on lo and at the leaf in {:?}",
        started.elapsed()
    );

    // The churn: `rate` changes a second (half moves of a Service's address, half a
    // Service deleted and another created), paused for each check.
    let paused = Arc::new(AtomicBool::new(false));
    let in_flight = Arc::new(tokio::sync::Semaphore::new(16));
    let sent: Sent = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let changes = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // Calls the API server refused: none expected (each Service has one change at a time).
    let failed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let churn = {
        let (client, ns, paused, in_flight, sent, stop, changes, failed) = (
            client.clone(),
            ns.clone(),
            paused.clone(),
            in_flight.clone(),
            sent.clone(),
            stop.clone(),
            changes.clone(),
            failed.clone(),
        );
        rt.spawn(async move {
            // Live Services by slot: name and the index of its VIP; the slots with a change
            // in flight (a slot's changes never overlap); the next fresh VIP and name.
            let mut live: Vec<(String, u32)> = (0..n).map(|i| (format!("s{i}"), i)).collect();
            let busy: Arc<Mutex<BTreeSet<usize>>> = Arc::default();
            let mut next = n;
            let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                if paused.load(Ordering::Relaxed) {
                    continue;
                }
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let k = (seed % live.len() as u64) as usize;
                if !busy.lock().unwrap().insert(k) {
                    continue;
                }
                let fresh = next;
                next += 1;
                let permit = in_flight.clone().acquire_owned().await.unwrap();
                let (client, ns, sent, busy, failed) = (
                    client.clone(),
                    ns.clone(),
                    sent.clone(),
                    busy.clone(),
                    failed.clone(),
                );
                let (name, _) = live[k].clone();
                let op_move = seed & 1 == 0;
                if op_move {
                    live[k].1 = fresh;
                } else {
                    live[k] = (format!("s{fresh}"), fresh);
                }
                changes.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let svcs = Api::<Service>::namespaced(client.clone(), &ns);
                    let ip = vip(fresh);
                    // The change is made by the call that names the new address: the
                    // latency runs from its return.
                    let done: Result<(), kube::Error> = async {
                        if op_move {
                            let patch =
                                serde_json::json!({"spec": {"externalIPs": [ip.to_string()]}});
                            svcs.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                                .await?;
                            sent.lock()
                                .unwrap()
                                .push((ip.to_string(), SystemTime::now()));
                        } else {
                            let slices = Api::<EndpointSlice>::namespaced(client.clone(), &ns);
                            let dp = DeleteParams::default();
                            svcs.delete(&name, &dp).await?;
                            slices.delete(&format!("{name}-1"), &dp).await?;
                            let new = format!("s{fresh}");
                            let pp = PostParams::default();
                            svcs.create(&pp, &service(&ns, &new, ip)).await?;
                            sent.lock()
                                .unwrap()
                                .push((ip.to_string(), SystemTime::now()));
                            slices.create(&pp, &slice(&ns, &new)).await?;
                        }
                        Ok(())
                    }
                    .await;
                    if let Err(e) = done {
                        failed.fetch_add(1, Ordering::Relaxed);
                        eprintln!("soak: a change to {name} failed: {e}");
                    }
                    busy.lock().unwrap().remove(&k);
                    drop(permit);
                });
            }
        })
    };

    // The sampler: /proc every 5 s.
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let sampler = {
        let (samples, stop) = (samples.clone(), stop.clone());
        std::thread::spawn(move || {
            let hz = 100.0;
            let t0 = Instant::now();
            let (mut last_t, mut last_ticks) = (t0, proc_use(pid).cpu_ticks);
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(5));
                let crate::harness::ProcUse {
                    rss_kib: rss,
                    fds,
                    cpu_ticks: ticks,
                    ..
                } = proc_use(pid);
                let now = Instant::now();
                let cpu = (ticks - last_ticks) as f64 / hz / (now - last_t).as_secs_f64() * 100.0;
                (last_t, last_ticks) = (now, ticks);
                samples
                    .lock()
                    .unwrap()
                    .push((t0.elapsed().as_secs_f64(), rss, fds, cpu));
            }
        })
    };

    // Every minute: pause, let the calls in flight finish, check, resume.
    let mut checks = Vec::new();
    let soak_start = Instant::now();
    let mut measured = 0usize;
    while soak_start.elapsed() < Duration::from_secs(secs) {
        let left = Duration::from_secs(secs).saturating_sub(soak_start.elapsed());
        std::thread::sleep(left.min(Duration::from_secs(60)));
        paused.store(true, Ordering::Relaxed);
        rt.block_on(async {
            let _all = in_flight.acquire_many(16).await.unwrap();
        });
        let t = Instant::now();
        let want = rt.block_on(expected(&client, &ns));
        let mut agreed = None;
        let (mut lo, mut at) = (BTreeSet::new(), BTreeSet::new());
        while t.elapsed() < Duration::from_secs(30) {
            lo = on_lo(&node);
            at = at_leaf(&leaf);
            if lo == want && at == want {
                agreed = Some(t.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        // This minute's latencies: each change's API return → its address in the monitor.
        let appeared: BTreeMap<String, f64> = sw
            .lab
            .log("addrmon")
            .lines()
            .filter_map(monitor_line)
            .map(|(t, a)| (a, t))
            .collect();
        let sent_now = sent.lock().unwrap().clone();
        let mut lat: Vec<f64> = sent_now[measured..]
            .iter()
            .filter_map(|(a, at)| {
                let s = at
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .ok()?
                    .as_secs_f64();
                Some((appeared.get(a)? - s).max(0.0) * 1000.0)
            })
            .collect();
        measured = sent_now.len();
        lat.sort_by(f64::total_cmp);
        let (d50, d99) = daemon_quantiles(&metrics(&node));
        let row = (
            soak_start.elapsed().as_secs_f64(),
            want.len(),
            lo.len(),
            at.len(),
            agreed,
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            lat.len(),
            d50 * 1000.0,
            d99 * 1000.0,
        );
        eprintln!(
            "soak: t={:.0}s wanted {} lo {} leaf {} agreed {:?}; latency p50 {:.1} ms p99 {:.1} ms over {} changes (kube-gw's own: p50 ≤ {} ms, p99 ≤ {} ms)",
            row.0, row.1, row.2, row.3, row.4, row.5, row.6, row.7, row.8, row.9
        );
        if agreed.is_none() {
            let missing: Vec<_> = want.difference(&lo).take(5).collect();
            let extra: Vec<_> = lo.difference(&want).take(5).collect();
            let leaf_missing: Vec<_> = want.difference(&at).take(5).collect();
            eprintln!("soak: disagreement: lo lacks {missing:?}, lo has extra {extra:?}, leaf lacks {leaf_missing:?}");
        }
        checks.push(row);
        paused.store(false, Ordering::Relaxed);
    }
    stop.store(true, Ordering::Relaxed);
    rt.block_on(churn).unwrap();
    sampler.join().unwrap();

    let samples = samples.lock().unwrap().clone();
    let mut csv = String::from("seconds,rss_kib,fds,cpu_percent\n");
    for (t, rss, fds, cpu) in &samples {
        csv.push_str(&format!("{t:.1},{rss},{fds},{cpu:.1}\n"));
    }
    std::fs::write(out.join("samples.csv"), csv).unwrap();
    let mut csv = String::from(
        "seconds,wanted,on_lo,at_leaf,agreed_ms,p50_ms,p99_ms,changes,daemon_p50_le_ms,daemon_p99_le_ms\n",
    );
    for r in &checks {
        csv.push_str(&format!(
            "{:.0},{},{},{},{},{:.1},{:.1},{},{},{}\n",
            r.0,
            r.1,
            r.2,
            r.3,
            r.4.map_or(-1.0, |d| d.as_secs_f64() * 1000.0),
            r.5,
            r.6,
            r.7,
            r.8,
            r.9
        ));
    }
    std::fs::write(out.join("checks.csv"), csv).unwrap();
    let (first, last) = (samples.first().unwrap(), samples.last().unwrap());
    eprintln!(
        "soak: {} s, {} changes; RSS {} → {} KiB, fds {} → {}; results in {}",
        secs,
        changes.load(Ordering::Relaxed),
        first.1,
        last.1,
        first.2,
        last.2,
        out.display()
    );
    // Every change was made; every check agreed; each minute's changes reached the kernel
    // (latencies measured).
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "changes the API server refused"
    );
    assert!(!checks.is_empty());
    for r in &checks {
        assert!(
            r.4.is_some(),
            "lo, the leaf and the cluster disagreed at {:.0} s",
            r.0
        );
        assert!(r.7 > 0, "no change measured in the minute to {:.0} s", r.0);
    }
    assert!(
        last.2 <= first.2 + 8,
        "file descriptors grew: {} → {}",
        first.2,
        last.2
    );
}
