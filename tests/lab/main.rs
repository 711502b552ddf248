//! Real-kernel lab tests: IPVS as the kernel does it. This machine's kernel has no IPVS, so
//! these run inside the Debian kernel booted in qemu by `scripts/lab-run`, which puts this
//! binary in the guest and starts it with `--lab`. Under `cargo test` on a host they only
//! say where they run.
//!
//! The binary is its own helper: started with `role …` inside a namespace (`ip netns exec`)
//! it is a backend, a client or the IPVS reconciler of one switch, so no test needs more
//! than this binary, iproute2 and ipvsadm in the guest.
//!
//! ```text
//!   client ns (192.0.2.10–209) ── switch ns (VIP 198.51.100.10 on lo, IPVS masq) ─┬─ b1 203.0.113.2
//!                                                                                  ├─ b2 203.0.113.6
//!                                                                                  └─ b3 203.0.113.10
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod gateway;
#[path = "../common/gateway_role.rs"]
mod gateway_role;
#[path = "../netns/harness/mod.rs"]
mod harness;
#[path = "../common/proxy_world.rs"]
#[allow(dead_code)]
mod proxy_world;
mod soak;
#[path = "../common/soak.rs"]
mod soak_engine;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Stdio;
use std::time::Duration;

use harness::{Lab, Node};
use imbl::OrdMap;
use kube_gw::config::{Forwarding, IpvsConfig, Scheduler};
use kube_gw::desired::{DestState, Destination, VirtualService, VsKey};
use kube_gw::ipvs::{client::Client, codec::Request, reconcile};
use kube_gw::model::{ObjectKey, Protocol};

const VIP: &str = "198.51.100.10";
const POOLS: &str = "198.51.100.0/24,2001:db8:100::/64";

// ---------------------------------------------------------------------------------------
// Roles: this binary inside a namespace.

fn role(args: &[String]) {
    match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1], args[2].parse().unwrap()),
        Some("clients") => clients(&args[1], args[2].parse().unwrap(), &args[3..]),
        Some("hold") => hold(&args[1], args[2].parse().unwrap(), &args[3]),
        Some("knock") => knock(&args[1], args[2].parse().unwrap()),
        Some("ipvs") => ipvs_pass(&args[1]),
        Some("httpbulk") => gateway::httpbulk(args[1].parse().unwrap()),
        Some("tlsstat") => gateway::tlsstat(),
        Some("gateway") => gateway::gateway(&args[1], &args[2], &args[3]),
        Some("tlsget") => gateway::tlsget(&args[1], &args[2], &args[3]),
        Some("tlskeyupdate") => gateway::tlskeyupdate(&args[1]),
        other => panic!("unknown role {other:?}"),
    }
}

/// A backend: says its name and the address the connection came from, then echoes lines.
fn serve(name: &str, port: u16) {
    let l = std::net::TcpListener::bind(("0.0.0.0", port)).unwrap();
    println!("listening");
    for c in l.incoming() {
        let Ok(mut c) = c else { continue };
        let name = name.to_string();
        std::thread::spawn(move || {
            let peer = c
                .peer_addr()
                .map(|p| p.ip().to_string())
                .unwrap_or_default();
            let _ = writeln!(c, "{name} {peer}");
            let mut r = BufReader::new(c.try_clone().unwrap());
            let mut line = String::new();
            while r.read_line(&mut line).is_ok_and(|n| n > 0) {
                if c.write_all(line.as_bytes()).is_err() {
                    break;
                }
                line.clear();
            }
        });
    }
}

fn connect_from(src: &str, vip: &str, port: u16) -> std::io::Result<TcpStream> {
    let dst: SocketAddr = SocketAddr::new(vip.parse().unwrap(), port);
    let s = socket2::Socket::new(
        socket2::Domain::for_address(dst),
        socket2::Type::STREAM,
        None,
    )?;
    s.bind(&SocketAddr::new(src.parse().unwrap(), 0).into())?;
    s.connect_timeout(&dst.into(), Duration::from_secs(3))?;
    let t: TcpStream = s.into();
    t.set_read_timeout(Some(Duration::from_secs(3)))?;
    Ok(t)
}

/// One connection per source address; prints `src backend peer` (or `src ERR …`), where
/// peer is the source address the backend saw.
fn clients(vip: &str, port: u16, srcs: &[String]) {
    for src in srcs {
        let got = connect_from(src, vip, port).and_then(|t| {
            let mut line = String::new();
            BufReader::new(t).read_line(&mut line)?;
            Ok(line.trim().to_string())
        });
        match got {
            Ok(name) if !name.is_empty() => println!("{src} {name}"),
            Ok(_) => println!("{src} ERR empty answer"),
            Err(e) => println!("{src} ERR {e}"),
        }
    }
}

/// One long connection: prints the backend, then answers each stdin line with `pong` when
/// the backend still echoes, or `broken …`.
fn hold(vip: &str, port: u16, src: &str) {
    let t = connect_from(src, vip, port).unwrap();
    let mut r = BufReader::new(t.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    println!("{}", line.split_whitespace().next().unwrap_or_default());
    let mut w = t;
    for cmd in std::io::stdin().lines() {
        if cmd.is_err() {
            break;
        }
        let mut echo = String::new();
        let ok = w.write_all(b"ping\n").is_ok() && r.read_line(&mut echo).is_ok_and(|n| n > 0);
        if ok && echo.trim() == "ping" {
            println!("pong");
        } else {
            println!("broken");
        }
    }
}

/// One reconciler pass in this namespace from a spec file; prints each request sent.
/// Opens `n` connections to `addr` (a SYN each, 300 ms for an answer), whatever becomes of
/// them.
fn knock(addr: &str, n: usize) {
    let to: SocketAddr = addr.parse().unwrap();
    for _ in 0..n {
        let _ = TcpStream::connect_timeout(&to, Duration::from_millis(300));
    }
}

fn ipvs_pass(spec: &str) {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(spec).unwrap()).unwrap();
    let pools: Vec<ipnet::IpNet> = v["pools"]
        .as_str()
        .unwrap()
        .split(',')
        .map(|p| p.parse().unwrap())
        .collect();
    let cfg = IpvsConfig {
        scheduler: if v["scheduler"] == "sh" {
            Scheduler::Sh
        } else {
            Scheduler::Mh
        },
        fallback: v["fallback"].as_bool().unwrap_or(true),
        hash_port: v["hash_port"].as_bool().unwrap_or(false),
        forwarding: if v["forwarding"] == "tunnel" {
            Forwarding::Tunnel
        } else {
            Forwarding::Masq
        },
        ..IpvsConfig::default()
    };
    let mut desired = OrdMap::new();
    for s in v["services"].as_array().unwrap() {
        let key = VsKey {
            vip: s["vip"].as_str().unwrap().parse().unwrap(),
            port: u16::try_from(s["port"].as_u64().unwrap()).unwrap(),
            protocol: match s["proto"].as_str().unwrap() {
                "udp" => Protocol::Udp,
                "sctp" => Protocol::Sctp,
                _ => Protocol::Tcp,
            },
        };
        let mut destinations: Vec<Destination> = s["dests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| Destination {
                address: d[0].as_str().unwrap().parse().unwrap(),
                port: u16::try_from(d[1].as_u64().unwrap()).unwrap(),
                state: DestState::Ready,
                weight: 1,
            })
            .collect();
        destinations.sort();
        desired.insert(
            key,
            VirtualService {
                service: ObjectKey {
                    namespace: "lab".into(),
                    name: format!("svc-{}", key.port).into(),
                },
                port_name: String::new(),
                destinations,
                persistence: s["persistence"].as_i64().map(|t| i32::try_from(t).unwrap()),
                external_traffic_local: s["local"].as_bool().unwrap_or(false),
                source_ranges: Vec::new(),
            },
        );
    }
    let mut client = Client::open().unwrap();
    let model = reconcile::load(&mut client, &pools).unwrap();
    let look_at: BTreeSet<VsKey> = desired
        .keys()
        .chain(model.services.keys())
        .copied()
        .filter(|k| reconcile::owned(k, &pools))
        .collect();
    let reqs = reconcile::plan(
        &look_at,
        &desired,
        &cfg,
        &model,
        &reconcile::Draining::new(),
        std::time::Instant::now(),
    );
    let results = client.apply(&reqs).unwrap();
    let mut failed = 0;
    for (r, res) in reqs.iter().zip(results) {
        let kind = match r {
            Request::NewService(_) => "new-service",
            Request::SetService(_) => "set-service",
            Request::DelService(_) => "del-service",
            Request::NewDest(..) => "new-dest",
            Request::SetDest(..) => "set-dest",
            Request::DelDest(..) => "del-dest",
            Request::DumpServices | Request::DumpDests(_) => "dump",
        };
        match res {
            Ok(()) => println!("{kind} {r:?}"),
            Err(e) => {
                failed += 1;
                println!(
                    "FAILED {kind} {r:?}: {}",
                    std::io::Error::from_raw_os_error(e)
                );
            }
        }
    }
    // The NAT part of kube-gw's nftables table (no VIPs filtered here).
    let table = kube_gw::nft::Want {
        nat: kube_gw::nft::source_nat(&desired, cfg.forwarding),
        ..kube_gw::nft::Want::default()
    };
    if let Err(e) = kube_gw::nft::apply(&kube_gw::nft::render(&table)) {
        println!("FAILED nat {e}");
        failed += 1;
    }
    for s in kube_gw::ipvs::sysctl::ensure() {
        println!("FAILED sysctl {s}");
        failed += 1;
    }
    if failed > 0 {
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------------------
// Helpers for the tests.

fn me() -> String {
    std::env::current_exe().unwrap().display().to_string()
}

/// Runs this binary's role in `node`; returns stdout (success required).
fn run_role(node: &Node, args: &[&str]) -> String {
    let mut full = vec!["role"];
    full.extend_from_slice(args);
    let out = node.exec(&me(), &full);
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Writes a spec and runs one reconciler pass in `node`; returns the request kinds.
fn ipvs(lab: &Lab, node: &Node, name: &str, spec: &serde_json::Value) -> Vec<String> {
    let p = lab.write(&format!("{name}.json"), &spec.to_string());
    run_role(node, &["ipvs", p.to_str().unwrap()])
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or_default().to_string())
        .collect()
}

fn spec(scheduler: &str, services: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"pools": POOLS, "scheduler": scheduler, "services": services})
}

fn web(dests: &[&str]) -> serde_json::Value {
    let d: Vec<serde_json::Value> = dests.iter().map(|a| serde_json::json!([a, 8080])).collect();
    serde_json::json!([{"vip": VIP, "port": 80, "proto": "tcp", "dests": d}])
}

/// `ipvsadm -Ln` as {service line → destination lines}, spacing normalised.
fn ipvsadm(node: &Node) -> BTreeMap<String, BTreeSet<String>> {
    let out = node.exec("ipvsadm", &["-Ln"]);
    ipvsadm_table(&String::from_utf8_lossy(&out.stdout))
}

/// `ipvsadm -Ln`'s output as {service line → destination lines (address, method, weight)}.
fn ipvsadm_table(out: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut cur = None;
    for l in out.lines() {
        let norm = l.split_whitespace().collect::<Vec<_>>().join(" ");
        if l.starts_with("TCP") || l.starts_with("UDP") || l.starts_with("SCTP") {
            m.insert(norm.clone(), BTreeSet::new());
            cur = Some(norm);
        } else if let (Some(c), true) = (&cur, l.trim_start().starts_with("->")) {
            // "-> addr:port Masq weight active inactive": keep addr, method, weight.
            let f: Vec<&str> = norm.split(' ').collect();
            if f.get(1) != Some(&"RemoteAddress:Port") {
                m.get_mut(c).unwrap().insert(f[1..4].join(" "));
            }
        }
    }
    m
}

/// A switch with a VIP on lo, `n` backends serving on 8080 and a client namespace with
/// 200 source addresses. Every switch made this way is identical.
struct World {
    switch: Node,
    client: Node,
    backends: Vec<(Node, String)>,
}

fn sources() -> Vec<String> {
    (10..210).map(|i| format!("192.0.2.{i}")).collect()
}

fn world(lab: &mut Lab, tag: &str, n: usize) -> World {
    let switch = lab.node(&format!("{tag}sw"));
    let client = lab.node(&format!("{tag}c"));
    switch.exec("ip", &["addr", "add", &format!("{VIP}/32"), "dev", "lo"]);
    let (ci, _) = lab.link(&client, &["192.0.2.2/24"], &switch, &["192.0.2.1/24"]);
    for s in sources() {
        client.exec("ip", &["addr", "add", &format!("{s}/32"), "dev", &ci]);
    }
    client.exec("ip", &["route", "add", "default", "via", "192.0.2.1"]);
    let mut backends = Vec::new();
    for i in 0..n {
        let b = lab.node(&format!("{tag}b{}", i + 1));
        let sw_side = format!("203.0.113.{}/30", 4 * i + 1);
        let addr = format!("203.0.113.{}", 4 * i + 2);
        lab.link(&switch, &[&sw_side], &b, &[&format!("{addr}/30")]);
        b.exec(
            "ip",
            &[
                "route",
                "add",
                "default",
                "via",
                &format!("203.0.113.{}", 4 * i + 1),
            ],
        );
        let name = format!("b{}", i + 1);
        lab.spawn(
            &b,
            &format!("{tag}{name}"),
            &me(),
            &["role", "serve", &name, "8080"],
        );
        backends.push((b, addr));
    }
    for (i, _) in backends.iter().enumerate() {
        let log = format!("{tag}b{}", i + 1);
        harness::wait_for(&format!("{log} listening"), Duration::from_secs(20), || {
            lab.log(&log).contains("listening").then_some(())
        });
    }
    World {
        switch,
        client,
        backends,
    }
}

/// For each source address: the backend it reached and the source address that backend saw.
fn connect_all(w: &World, srcs: &[String]) -> BTreeMap<String, (String, String)> {
    let mut args = vec!["clients", VIP, "80"];
    args.extend(srcs.iter().map(String::as_str));
    run_role(&w.client, &args)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 3 && f[1] != "ERR")
                .then(|| (f[0].to_string(), (f[1].to_string(), f[2].to_string())))
        })
        .collect()
}

/// Which backend each source address reaches.
fn answers(w: &World, srcs: &[String]) -> BTreeMap<String, String> {
    connect_all(w, srcs)
        .into_iter()
        .map(|(s, (b, _))| (s, b))
        .collect()
}

// ---------------------------------------------------------------------------------------
// The tests.

/// What kube-gw programs is what ipvsadm reads back — several ports, both protocols, IPv6,
/// persistence, both schedulers; a foreign service is never touched; a second pass (a
/// restart: a fresh reconciler loading the kernel's state) sends nothing.
fn programmed_state_is_what_ipvsadm_reads() {
    let mut lab = Lab::new();
    let sw = lab.node("sw");
    sw.exec("ipvsadm", &["-A", "-t", "203.0.113.50:80", "-s", "rr"]);
    sw.exec(
        "ipvsadm",
        &["-a", "-t", "203.0.113.50:80", "-r", "192.0.2.77:80", "-m"],
    );
    let services = serde_json::json!([
        {"vip": VIP, "port": 80, "proto": "tcp", "dests": [["10.1.0.3", 8080], ["10.1.0.1", 8080], ["10.1.0.2", 8080]]},
        {"vip": VIP, "port": 443, "proto": "tcp", "dests": [["10.1.0.1", 8443], ["10.1.0.2", 8443]]},
        {"vip": VIP, "port": 53, "proto": "udp", "dests": [["10.1.0.9", 5353]]},
        {"vip": "2001:db8:100::10", "port": 80, "proto": "tcp", "persistence": 600,
         "dests": [["2001:db8:1::2", 8080], ["2001:db8:1::1", 8080]]}
    ]);
    let first = ipvs(&lab, &sw, "sh", &spec("sh", services.clone()));
    assert_eq!(
        first.iter().filter(|k| *k == "new-service").count(),
        4,
        "{first:?}"
    );
    assert_eq!(
        first.iter().filter(|k| *k == "new-dest").count(),
        8,
        "{first:?}"
    );
    let want_sh: BTreeMap<String, BTreeSet<String>> = [
        (
            "TCP 198.51.100.10:80 sh (sh-fallback)",
            vec!["10.1.0.1:8080", "10.1.0.2:8080", "10.1.0.3:8080"],
        ),
        (
            "TCP 198.51.100.10:443 sh (sh-fallback)",
            vec!["10.1.0.1:8443", "10.1.0.2:8443"],
        ),
        (
            "UDP 198.51.100.10:53 sh (sh-fallback)",
            vec!["10.1.0.9:5353"],
        ),
        (
            "TCP [2001:db8:100::10]:80 sh (sh-fallback) persistent 600",
            vec!["[2001:db8:1::1]:8080", "[2001:db8:1::2]:8080"],
        ),
        ("TCP 203.0.113.50:80 rr", vec!["192.0.2.77:80"]),
    ]
    .into_iter()
    .map(|(s, d)| {
        (
            s.to_string(),
            d.into_iter().map(|a| format!("{a} Masq 1")).collect(),
        )
    })
    .collect();
    assert_eq!(ipvsadm(&sw), want_sh);

    // A restart changes nothing.
    let again = ipvs(&lab, &sw, "sh-again", &spec("sh", services.clone()));
    assert!(again.is_empty(), "a second pass sent {again:?}");

    // Maglev: the services change in place (no delete, no re-create).
    let to_mh = ipvs(&lab, &sw, "mh", &spec("mh", services.clone()));
    assert_eq!(
        to_mh,
        vec!["set-service"; 4],
        "switching the scheduler sent {to_mh:?}"
    );
    let seen = ipvsadm(&sw);
    assert!(
        seen.keys()
            .filter(|k| k.contains(" mh (mh-fallback)"))
            .count()
            == 4,
        "{seen:?}"
    );
    assert!(
        seen.contains_key("TCP 203.0.113.50:80 rr"),
        "the foreign service changed: {seen:?}"
    );

    // Everything gone from the desired state: kube-gw's services go, the foreign one stays.
    let gone = ipvs(&lab, &sw, "none", &spec("mh", serde_json::json!([])));
    assert_eq!(gone, vec!["del-service"; 4]);
    let left: Vec<String> = ipvsadm(&sw).into_keys().collect();
    assert_eq!(left, vec!["TCP 203.0.113.50:80 rr".to_string()]);
}

/// Connections reach ready backends and get their answer; a backend that becomes not ready
/// gets no new connections while its established one keeps working.
fn traffic_reaches_ready_backends_and_a_leaving_one_drains() {
    let mut lab = Lab::new();
    let w = world(&mut lab, "t", 3);
    let addrs: Vec<&str> = w.backends.iter().map(|(_, a)| a.as_str()).collect();
    ipvs(&lab, &w.switch, "all", &spec("mh", web(&addrs)));
    let srcs = sources();
    let got = answers(&w, &srcs[..60]);
    assert_eq!(got.len(), 60, "{got:?}");
    let names: BTreeSet<&str> = got.values().map(String::as_str).collect();
    assert_eq!(names, BTreeSet::from(["b1", "b2", "b3"]), "{got:?}");

    // A long connection to b2.
    let src = got
        .iter()
        .find(|(_, b)| *b == "b2")
        .map(|(s, _)| s.clone())
        .unwrap();
    let mut holder = w
        .client
        .command(me())
        .args(["role", "hold", VIP, "80", &src])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(holder.stdout.take().unwrap());
    let mut input = holder.stdin.take().unwrap();
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "b2");

    // b2 is no longer ready: weight 0 while its connection lives.
    let reqs = ipvs(
        &lab,
        &w.switch,
        "no-b2",
        &spec("mh", web(&[addrs[0], addrs[2]])),
    );
    assert_eq!(reqs, vec!["set-dest"], "{reqs:?}");
    let table = ipvsadm(&w.switch);
    assert!(
        table
            .values()
            .next()
            .unwrap()
            .contains(&format!("{}:8080 Masq 0", addrs[1])),
        "{table:?}"
    );
    let after = answers(&w, &srcs[..60]);
    assert_eq!(after.len(), 60);
    assert!(after.values().all(|b| b == "b1" || b == "b3"), "{after:?}");
    // Clients that were not on b2 keep their backend (Maglev moves b2's, and at most a
    // few others when its table is rebuilt).
    let others: Vec<&String> = got
        .iter()
        .filter(|(_, b)| *b != "b2")
        .map(|(s, _)| s)
        .collect();
    let kept = others.iter().filter(|s| after[**s] == got[**s]).count();
    println!(
        "    {kept}/{} clients not on b2 kept their backend",
        others.len()
    );
    assert!(
        kept * 100 >= others.len() * 95,
        "{kept}/{} kept",
        others.len()
    );
    writeln!(input, "ping").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(
        line.trim(),
        "pong",
        "the established connection to b2 broke"
    );
    drop(input);
    let _ = holder.wait();
}

/// Two switches programmed from the same desired state — one all at once, one as the
/// endpoints came over time — send every client to the same backend; removing one of
/// three backends moves only its own clients.
fn switches_agree_and_maglev_moves_only_the_removed_backends_clients() {
    let mut lab = Lab::new();
    let a = world(&mut lab, "a", 3);
    let b = world(&mut lab, "b", 3);
    let addrs: Vec<&str> = a.backends.iter().map(|(_, x)| x.as_str()).collect();
    ipvs(&lab, &a.switch, "a-all", &spec("mh", web(&addrs)));
    ipvs(&lab, &b.switch, "b-two", &spec("mh", web(&addrs[1..])));
    ipvs(&lab, &b.switch, "b-all", &spec("mh", web(&addrs)));
    let srcs = sources();
    let (ra, rb) = (answers(&a, &srcs), answers(&b, &srcs));
    assert_eq!(ra.len(), srcs.len());
    let agree = srcs.iter().filter(|s| ra.get(*s) == rb.get(*s)).count();
    println!(
        "    {agree}/{} clients got the same backend on both switches",
        srcs.len()
    );
    assert_eq!(agree, srcs.len(), "switches disagree: {ra:?} vs {rb:?}");

    // For the record (why Maglev is the default): source hashing fills its table in the
    // order the destinations were added, which differs between these two switches.
    for w in [&a, &b] {
        ipvs(&lab, &w.switch, "to-sh", &spec("sh", web(&addrs)));
    }
    let (sa, sb) = (answers(&a, &srcs), answers(&b, &srcs));
    let sh_agree = srcs.iter().filter(|s| sa.get(*s) == sb.get(*s)).count();
    println!(
        "    with sh instead: {sh_agree}/{} clients got the same backend on both switches",
        srcs.len()
    );
    for w in [&a, &b] {
        ipvs(&lab, &w.switch, "to-mh", &spec("mh", web(&addrs)));
    }
    assert_eq!(
        answers(&a, &srcs),
        ra,
        "back on Maglev, the same table as before"
    );

    for w in [&a, &b] {
        ipvs(&lab, &w.switch, "drop-b3", &spec("mh", web(&addrs[..2])));
    }
    let (ra2, rb2) = (answers(&a, &srcs), answers(&b, &srcs));
    let others: Vec<&String> = srcs.iter().filter(|s| ra[*s] != "b3").collect();
    let kept = others.iter().filter(|s| ra2[**s] == ra[**s]).count();
    println!(
        "    after removing b3: {kept}/{} clients of b1 and b2 kept their backend; {} of b3's moved",
        others.len(),
        srcs.len() - others.len()
    );
    // Maglev's promise: only b3's clients move, up to the few entries a table rebuild shifts.
    assert!(
        kept * 100 >= others.len() * 95,
        "Maglev moved {} of {} clients that were not on b3",
        others.len() - kept,
        others.len()
    );
    assert!(ra2.values().all(|x| x != "b3"));
    let agree = srcs.iter().filter(|s| ra2.get(*s) == rb2.get(*s)).count();
    assert_eq!(agree, srcs.len(), "switches disagree after the removal");
}

/// `externalTrafficPolicy: Cluster`: the backend sees the switch's address (kube-gw's
/// nftables table masquerades), so its reply returns through the switch. `Local`: the
/// backend sees the client's own address. The IPVS pass also set the kernel settings.
fn cluster_policy_is_source_natted_and_local_keeps_the_client_address() {
    let mut lab = Lab::new();
    let w = world(&mut lab, "n", 2);
    let addrs: Vec<&str> = w.backends.iter().map(|(_, a)| a.as_str()).collect();
    ipvs(&lab, &w.switch, "cluster", &spec("mh", web(&addrs)));
    let srcs = sources();
    let got = connect_all(&w, &srcs[..20]);
    assert_eq!(got.len(), 20, "{got:?}");
    for (src, (b, peer)) in &got {
        // The switch's address on the link to that backend: b1 203.0.113.1, b2 .5.
        let want = if b == "b1" {
            "203.0.113.1"
        } else {
            "203.0.113.5"
        };
        assert_eq!(peer, want, "client {src} on {b}: the backend saw {peer}");
    }
    let table = w.switch.exec("nft", &["list", "table", "inet", "kube-gw"]);
    let table = String::from_utf8_lossy(&table.stdout).to_string();
    // nft names the protocol only where /etc/protocols exists (not in the lab's initramfs).
    assert!(
        table.contains("198.51.100.10 . tcp . 80") || table.contains("198.51.100.10 . 6 . 80"),
        "{table}"
    );
    for (name, want) in [
        ("net/ipv4/vs/sloppy_tcp", "1"),
        ("net/ipv4/vs/conntrack", "1"),
        ("net/ipv4/vs/expire_nodest_conn", "1"),
    ] {
        let v = w.switch.exec("cat", &[&format!("/proc/sys/{name}")]);
        assert_eq!(String::from_utf8_lossy(&v.stdout).trim(), want, "{name}");
    }

    let mut local = web(&addrs);
    local[0]["local"] = serde_json::json!(true);
    ipvs(&lab, &w.switch, "local", &spec("mh", local));
    let got = connect_all(&w, &srcs[..20]);
    assert_eq!(got.len(), 20, "{got:?}");
    for (src, (b, peer)) in &got {
        assert_eq!(peer, src, "Local: client {src} on {b} was seen as {peer}");
    }
    let table = w.switch.exec("nft", &["list", "table", "inet", "kube-gw"]);
    assert!(!String::from_utf8_lossy(&table.stdout).contains("198.51.100.10"));
}

// ---------------------------------------------------------------------------------------

type Test = (&'static str, fn());

// ---------------------------------------------------------------------------------------
// The daemon itself: the export gate against a real BGP peer, on a kernel with IPVS.

/// The guest's root namespace is the switch: kube-gw runs there (it reaches the test
/// control plane on the host at 10.0.2.2 through qemu's user network), a BIRD leaf in a
/// namespace behind a veth. Stopped (by its pid) when dropped.
struct Daemon {
    child: std::process::Child,
    config: std::path::PathBuf,
    socket: String,
    log: std::path::PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The console is all a lab failure leaves: the daemon's last words.
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            println!("kube-gw's log (last 40 lines):");
            for l in &lines[lines.len().saturating_sub(40)..] {
                println!("  {l}");
            }
        }
        if let Ok(Some(_)) = self.child.try_wait() {
            // Already gone (and reaped): its pid may be someone else's by now.
            return;
        }
        let pid = self.child.id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn bin() -> String {
        std::env::var("KUBE_GW_LAB_BIN").unwrap_or_else(|_| "/sbin/kube-gw".into())
    }

    fn status(&self) -> serde_json::Value {
        let out = std::process::Command::new(Self::bin())
            .args(["status", "--json", "--socket", &self.socket])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }

    fn component(&self, name: &str) -> serde_json::Value {
        self.status()["components"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or_default()
    }
}

/// Item 5 of the fabric issue: a long-lived flow that ECMP moves from one switch to the other
/// in mid-connection, for each way of forwarding. Two switches with the same IPVS services
/// (Maglev) in front of three backends; the leaf routes the VIP via sw1, then via sw2.
///
/// ```text
///  client ── leaf ─┬─ sw1 (VIP on lo, IPVS) ─┐ (both switches reach the backends
///                  ├─ sw2 (VIP on lo, IPVS) ─┘  through the leaf)
///                  └─ b1, b2, b3
/// ```
///
/// - masq + SNAT (`externalTrafficPolicy: Cluster`): sw2 takes the flow up (`sloppy_tcp`),
///   Maglev picks the same backend, but the source NAT gives it sw2's address: the backend
///   has no such connection and resets it. The flow dies.
/// - masq without SNAT (`Local`), the backends' answers routed back through the switch
///   that now has the flow: the backend sees the same client address and port. It lives.
/// - tunnel (IPIP) to the node, which answers the client directly: the node gets the same
///   packet, whichever switch sent it. It lives, and needs no return path through the
///   switches.
///
/// Each flow first answers through sw1 (the method works at all), and after the move sw2's
/// IPVS holds it (the move happened).
fn a_flow_moved_between_switches_survives_only_where_the_endpoint_sees_the_same_packets() {
    let mut lab = Lab::new();
    let client = lab.node("mc");
    let leaf = lab.node("ml");
    let sws = [lab.node("ms1"), lab.node("ms2")];
    let (ci, _) = lab.link(&client, &["192.0.2.2/24"], &leaf, &["192.0.2.1/24"]);
    let src = "192.0.2.10";
    client.exec("ip", &["addr", "add", &format!("{src}/32"), "dev", &ci]);
    client.exec("ip", &["route", "add", "default", "via", "192.0.2.1"]);
    leaf.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
    let sw_addr = ["203.0.113.66", "203.0.113.70"];
    for (i, sw) in sws.iter().enumerate() {
        let leaf_side = format!("203.0.113.{}/30", 65 + 4 * i);
        lab.link(&leaf, &[&leaf_side], sw, &[&format!("{}/30", sw_addr[i])]);
        sw.exec("ip", &["addr", "add", &format!("{VIP}/32"), "dev", "lo"]);
        sw.exec(
            "ip",
            &[
                "route",
                "add",
                "default",
                "via",
                &format!("203.0.113.{}", 65 + 4 * i),
            ],
        );
    }
    let mut backends = Vec::new();
    for i in 0..3 {
        let b = lab.node(&format!("mb{}", i + 1));
        let addr = format!("203.0.113.{}", 4 * i + 2);
        lab.link(
            &leaf,
            &[&format!("203.0.113.{}/30", 4 * i + 1)],
            &b,
            &[&format!("{addr}/30")],
        );
        b.exec(
            "ip",
            &[
                "route",
                "add",
                "default",
                "via",
                &format!("203.0.113.{}", 4 * i + 1),
            ],
        );
        let name = format!("b{}", i + 1);
        lab.spawn(
            &b,
            &format!("m{name}"),
            &me(),
            &["role", "serve", &name, "8080"],
        );
        // What kube-proxy does on a node for an external IP: the VIP's port to the pod's.
        for cmd in [
            "add table ip kp",
            "add chain ip kp pre { type nat hook prerouting priority -100; }",
            "add rule ip kp pre ip daddr 198.51.100.10 tcp dport 80 dnat to 198.51.100.10:8080",
        ] {
            b.exec("nft", &cmd.split(' ').collect::<Vec<_>>());
        }
        backends.push((b, addr));
    }
    for i in 1..=3 {
        let log = format!("mb{i}");
        harness::wait_for(&format!("{log} listening"), Duration::from_secs(20), || {
            lab.log(&log).contains("listening").then_some(())
        });
    }
    let via = |i: usize| {
        leaf.exec(
            "ip",
            &["route", "replace", &format!("{VIP}/32"), "via", sw_addr[i]],
        );
    };
    let mut table = Vec::new();
    for (method, forwarding, local, port) in [
        (
            "masq + SNAT (externalTrafficPolicy: Cluster)",
            "masq",
            false,
            8080,
        ),
        (
            "masq, no SNAT (Local), answers back through the switch",
            "masq",
            true,
            8080,
        ),
        (
            "tunnel (IPIP) to the node, direct return",
            "tunnel",
            false,
            80,
        ),
    ] {
        let dests: Vec<serde_json::Value> = backends
            .iter()
            .map(|(_, a)| serde_json::json!([a, port]))
            .collect();
        let spec = serde_json::json!({"pools": POOLS, "scheduler": "mh", "forwarding": forwarding,
            "services": [{"vip": VIP, "port": 80, "proto": "tcp", "dests": dests, "local": local}]});
        for (i, sw) in sws.iter().enumerate() {
            sw.exec("ipvsadm", &["-C"]);
            ipvs(&lab, sw, &format!("m{i}-{forwarding}-{local}"), &spec);
        }
        // The backends' side of each method.
        for (b, _) in &backends {
            let _ = b.try_exec("ip", &["addr", "del", &format!("{VIP}/32"), "dev", "lo"]);
            if forwarding == "tunnel" {
                b.exec("ip", &["addr", "add", &format!("{VIP}/32"), "dev", "lo"]);
                b.exec("ip", &["link", "set", "tunl0", "up"]);
                b.exec("sysctl", &["-qw", "net.ipv4.conf.all.rp_filter=0"]);
                b.exec("sysctl", &["-qw", "net.ipv4.conf.tunl0.rp_filter=0"]);
            }
        }
        // Local: the backends' answers go back through the switch that has the flow.
        let _ = leaf.try_exec(
            "ip",
            &["rule", "del", "from", "203.0.113.0/27", "lookup", "100"],
        );
        if local {
            leaf.exec(
                "ip",
                &["rule", "add", "from", "203.0.113.0/27", "lookup", "100"],
            );
        }
        let back_via = |i: usize| {
            if local {
                leaf.exec(
                    "ip",
                    &[
                        "route",
                        "replace",
                        "192.0.2.0/24",
                        "via",
                        sw_addr[i],
                        "table",
                        "100",
                    ],
                );
            }
        };
        via(0);
        back_via(0);
        let mut holder = client
            .command(me())
            .args(["role", "hold", VIP, "80", src])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(holder.stdout.take().unwrap());
        let mut input = holder.stdin.take().unwrap();
        let mut backend = String::new();
        out.read_line(&mut backend).unwrap();
        let backend = backend.trim().to_string();
        let mut ask = || {
            writeln!(input).unwrap();
            let mut l = String::new();
            out.read_line(&mut l).unwrap();
            l.trim().to_string()
        };
        let before = ask();
        via(1);
        back_via(1);
        std::thread::sleep(Duration::from_millis(200));
        let after = ask();
        let conns = sws[1].exec("ipvsadm", &["-Lnc"]);
        let moved = String::from_utf8_lossy(&conns.stdout).contains(src);
        drop(input);
        let _ = holder.kill();
        let _ = holder.wait();
        println!(
            "moved flow: {method}: {backend}; before {before}, after {after}, sw2 has it: {moved}"
        );
        table.push((method, before, after, moved));
    }
    let _ = leaf.try_exec(
        "ip",
        &["rule", "del", "from", "203.0.113.0/27", "lookup", "100"],
    );
    println!("\n| forwarding | before the move | after the move |\n|---|---|---|");
    for (m, b, a, _) in &table {
        println!("| {m} | {b} | {a} |");
    }
    for (m, before, _, moved) in &table {
        assert_eq!(before, "pong", "{m}: the method works through sw1");
        assert!(moved, "{m}: the flow reached sw2");
    }
    let after: Vec<&str> = table.iter().map(|t| t.2.as_str()).collect();
    assert_eq!(after, ["broken", "pong", "pong"]);
}

/// iproute2 in the guest's root namespace (by full path: busybox's shell would run its own
/// `ip`, which knows no `netns`).
fn ip(args: &[&str]) {
    let st = std::process::Command::new("/sbin/ip")
        .args(args)
        .status()
        .unwrap();
    assert!(st.success(), "ip {}", args.join(" "));
}

fn sh(cmd: &str) {
    let st = std::process::Command::new("sh")
        .args(["-c", cmd])
        .status()
        .unwrap();
    assert!(st.success(), "{cmd}");
}

/// Is the service's virtual service in the kernel (`ipvsadm -Ln` in the root namespace)?
fn ipvs_has(vip: &str) -> bool {
    std::process::Command::new("ipvsadm")
        .arg("-Ln")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("{vip}:80")))
        .unwrap_or(false)
}

/// Does the leaf's BIRD hold the VIP's route from the switch?
fn leaf_has(bird: &harness::peers::Bird, vip: &str) -> bool {
    let out = std::process::Command::new("birdc")
        .arg("-s")
        .arg(&bird.ctl)
        .args(["show", "route", &format!("{vip}/32")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains("via 192.0.2.2")
}

/// IPVS and the schedulers the daemon uses, loaded unless already there (the first daemon
/// test unloads them).
fn load_ipvs() {
    for m in ["ip_vs", "ip_vs_rr", "ip_vs_sh", "ip_vs_mh"] {
        sh(&format!(
            "grep -q '^{m} ' /proc/modules || insmod /m/{m}.ko*"
        ));
    }
}

/// The daemon's world in the guest: its root namespace is the switch (kgw-sw 192.0.2.2/30),
/// a BIRD leaf in a namespace behind a veth (kgw-leaf 192.0.2.1/30).
fn daemon_lab() -> (Lab, Node, harness::peers::Bird) {
    // A veth left by an earlier test whose namespace is still being destroyed.
    let _ = std::process::Command::new("/sbin/ip")
        .args(["link", "del", "kgw-sw"])
        .stderr(Stdio::null())
        .status();
    let mut lab = Lab::new();
    let leaf = lab.node("leaf");
    ip(&[
        "link", "add", "kgw-sw", "type", "veth", "peer", "name", "kgw-leaf",
    ]);
    ip(&["link", "set", "kgw-leaf", "netns", &leaf.ns]);
    ip(&["addr", "add", "192.0.2.2/30", "dev", "kgw-sw"]);
    ip(&["link", "set", "kgw-sw", "up"]);
    leaf.exec("ip", &["addr", "add", "192.0.2.1/30", "dev", "kgw-leaf"]);
    leaf.exec("ip", &["link", "set", "kgw-leaf", "up"]);
    let bird = harness::peers::Bird::start(
        &mut lab,
        &leaf,
        "leaf",
        "router id 192.0.2.1;\nprotocol device {}\n\
         protocol bgp sw { local 192.0.2.1 as 65000; neighbor 192.0.2.2 as 65010; \
         hold time 9; connect retry time 1; ipv4 { import all; export none; }; }\n",
    );
    (lab, leaf, bird)
}

/// The daemon's configuration: the test control plane (`/lab/kubeconfig`), IPVS on, the
/// leaf as neighbor; `vip_extra` goes into `[vip]`.
fn daemon_config(lab: &Lab, vip_extra: &str) -> String {
    let socket = lab.path("kg.sock").display().to_string();
    format!(
        "[node]\nname = \"kube-gw-vm\"\n\
         [kubernetes]\nkubeconfig = \"/lab/kubeconfig\"\nservice-cidrs = [\"10.96.0.0/12\"]\n\
         [vip]\npools = [\"198.51.100.0/24\"]\n{vip_extra}[ipvs]\nenabled = true\n\
         [bgp]\nasn = 65010\nrouter-id = \"192.0.2.20\"\nhold-time = 9\ndrain-time = 0\n\
         [[bgp.neighbors]]\naddress = \"192.0.2.1\"\nremote-asn = 65000\n\
         [admin]\nsocket = \"{socket}\"\nmetrics = \"127.0.0.1:9472\"\n"
    )
}

/// Starts the daemon with `config` (written to the lab's `kg.toml`; its log appended to
/// `kg.log`).
fn spawn_daemon(lab: &Lab, config: &str) -> Daemon {
    let config_path = lab.write("kg.toml", config);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(lab.path("kg.log"))
        .unwrap();
    let child = std::process::Command::new(Daemon::bin())
        .args(["run", "--log-format", "json", "-c"])
        .arg(&config_path)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    Daemon {
        child,
        config: config_path,
        socket: lab.path("kg.sock").display().to_string(),
        log: lab.path("kg.log"),
    }
}

/// RFC 8212's spirit, fail-closed: with IPVS enabled, the daemon announces a Service's VIP
/// only once its virtual service is in the kernel, and withdraws it before the virtual
/// service goes. Against a BIRD leaf and the test control plane's Service (externalIP
/// from `scripts/lab-run`):
/// 1. IPVS not in the kernel: the address goes on `lo`, the session is up, and for 5 s the
///    leaf has no route; status says why.
/// 2. IPVS loaded: the reconciler programs the service and then the route comes. Sampled
///    every ~20 ms, the route first and then `ipvsadm`: never a route without the service.
/// 3. The Service is no longer selected (a reload with `service-selector`): sampled
///    `ipvsadm` first, then the route: never the service gone with the route still there,
///    and a moment with the service still there and the route gone (the 500 ms lead).
fn the_daemon_announces_only_what_ipvs_has_and_withdraws_before_it_goes() {
    let kubeconfig = std::path::Path::new("/lab/kubeconfig");
    assert!(
        kubeconfig.exists(),
        "no /lab/kubeconfig: scripts/lab-run starts the test control plane for this test"
    );
    let vip = std::fs::read_to_string("/lab/vip")
        .unwrap()
        .trim()
        .to_string();
    // 1. No IPVS in the kernel. (The earlier tests' namespaces are destroyed in the
    // background and hold the modules until they are gone: retried for a while.)
    harness::wait_for(
        "the IPVS modules to unload",
        Duration::from_secs(60),
        || {
            for m in ["ip_vs_mh", "ip_vs_sh", "ip_vs_rr", "ip_vs"] {
                let _ = std::process::Command::new("rmmod")
                    .arg(m)
                    .stderr(Stdio::null())
                    .status();
            }
            let modules = std::fs::read_to_string("/proc/modules").unwrap_or_default();
            if modules.lines().any(|l| l.starts_with("ip_vs")) {
                std::thread::sleep(Duration::from_millis(500));
                return None;
            }
            Some(())
        },
    );
    assert!(
        !std::path::Path::new("/proc/net/ip_vs").exists(),
        "ip_vs still loaded"
    );
    let (lab, _leaf, bird) = daemon_lab();
    let config = |vip_extra: &str| daemon_config(&lab, vip_extra);
    let kg = spawn_daemon(&lab, &config(""));
    bird.wait_established("sw", Duration::from_secs(60));
    harness::wait_for("the VIP on lo", Duration::from_secs(120), || {
        let out = std::process::Command::new("/sbin/ip")
            .args(["-4", "addr", "show", "dev", "lo"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .contains(&format!("{vip}/32"))
            .then_some(())
    });
    let quiet = std::time::Instant::now();
    while quiet.elapsed() < Duration::from_secs(5) {
        assert!(
            !leaf_has(&bird, &vip),
            "announced without IPVS in the kernel"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let ipvs = kg.component("ipvs");
    assert_ne!(ipvs["state"], "programmed", "{ipvs}");
    // 2. IPVS loaded: the service, then the route.
    for m in ["ip_vs", "ip_vs_rr", "ip_vs_sh", "ip_vs_mh"] {
        sh(&format!("insmod /m/{m}.ko*"));
    }
    let t0 = std::time::Instant::now();
    let mut first_service = None;
    let first_route = loop {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no route after IPVS came: {}",
            kg.component("ipvs")
        );
        let route = leaf_has(&bird, &vip);
        let service = ipvs_has(&vip);
        assert!(
            !route || service,
            "the leaf has the route while ipvsadm shows no service"
        );
        if service && first_service.is_none() {
            first_service = Some(t0.elapsed());
        }
        if route {
            break t0.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    println!("IPVS loaded: service after {first_service:?}, route after {first_route:?}");
    // 3. The Service is no longer selected (a reload with a selector it does not match):
    // withdrawn before the service goes.
    std::fs::write(
        &kg.config,
        config("service-selector = \"kube-gw.io/fabric=elsewhere\"\n"),
    )
    .unwrap();
    sh(&format!("kill -HUP {}", kg.child.id()));
    let t0 = std::time::Instant::now();
    let mut withdrawn_first = false;
    loop {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the service never went"
        );
        let service = ipvs_has(&vip);
        let route = leaf_has(&bird, &vip);
        assert!(
            service || !route,
            "the service went while the leaf still had the route"
        );
        withdrawn_first |= service && !route;
        if !service {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        withdrawn_first,
        "never saw the route gone while the service was still there"
    );
    drop(kg);
    ip(&["link", "del", "kgw-sw"]);
}

/// `ipvsadm -Ln` in the guest's root namespace, as [`ipvsadm_table`].
fn ipvsadm_root() -> BTreeMap<String, BTreeSet<String>> {
    let out = std::process::Command::new("ipvsadm")
        .arg("-Ln")
        .output()
        .unwrap();
    ipvsadm_table(&String::from_utf8_lossy(&out.stdout))
}

/// The connections IPVS has scheduled for the virtual service `vip:80` since it was made
/// (`ipvsadm -Ln --stats`, "Conns"): a service made again starts from 0.
fn ipvs_conns(vip: &str) -> u64 {
    let out = std::process::Command::new("ipvsadm")
        .args(["-Ln", "--stats", "-t", &format!("{vip}:80")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines()
        .find(|l| l.starts_with("TCP"))
        .and_then(|l| l.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or_else(|| panic!("no stats for {vip}:80: {text}"))
}

/// The fault matrix's IPVS rows (the host kernel has no IPVS; `tests/netns/faults.rs` has
/// the address and nftables side), against the daemon joined to the test control plane:
/// 1. Changed behind its back, as `src/ipvs/reconcile.rs` documents ownership: a service
///    outside the pools (another tool's) is left alone; one inside the pools that no
///    Service wants is removed; a destination's weight changed by hand is set back; its
///    virtual service deleted by hand is made again — each at the next full pass (every
///    30 s), with the route at the leaf back once the service is.
/// 2. SIGKILL and a restart adopt the virtual service as it is: its connection counter
///    keeps counting (the service made again in 1 shows that a new one starts from 0), and
///    nothing else in `ipvsadm` changes.
/// 3. The API server unreachable for 30 s (its connections destroyed with `ss -K`, new ones
///    answered with TCP resets by the guest's firewall, as a dead server's host does): status
///    degraded, `ipvsadm` and the leaf's route unchanged throughout (a full pass included)
///    and after the return; the counter keeps counting.
fn the_daemon_keeps_ipvs_right_through_hand_changes_sigkill_and_an_api_server_outage() {
    let vip = std::fs::read_to_string("/lab/vip")
        .unwrap()
        .trim()
        .to_string();
    load_ipvs();
    let (lab, leaf, bird) = daemon_lab();
    let config = daemon_config(&lab, "");
    let mut kg = spawn_daemon(&lab, &config);
    bird.wait_established("sw", Duration::from_secs(60));
    harness::wait_for("the route at the leaf", Duration::from_secs(120), || {
        leaf_has(&bird, &vip).then_some(())
    });
    let service = format!("TCP {vip}:80 mh (mh-fallback)");
    let programmed = ipvsadm_root();
    let dests = programmed
        .get(&service)
        .unwrap_or_else(|| panic!("no {service} in {programmed:?}"))
        .clone();
    let dest = dests
        .iter()
        .next()
        .and_then(|d| d.split(' ').next())
        .unwrap()
        .to_string();
    // Connections from the leaf to the VIP, counted by IPVS as it schedules each one (the
    // backend's address is a blackhole here, so nothing leaves the guest). The kernel sums
    // its per-CPU counters every 2 s: `counted(n)` waits up to 20 s for at least `n`.
    let endpoint = dest.rsplit_once(':').unwrap().0.to_string();
    ip(&["route", "add", "blackhole", &format!("{endpoint}/32")]);
    leaf.exec(
        "ip",
        &["route", "add", &format!("{vip}/32"), "via", "192.0.2.2"],
    );
    let connect = || {
        run_role(&leaf, &["knock", &format!("{vip}:80"), "5"]);
    };
    let counted = |n: u64| {
        let t = std::time::Instant::now();
        let mut c = ipvs_conns(&vip);
        while c < n && t.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(500));
            c = ipvs_conns(&vip);
        }
        c
    };
    connect();
    // Positive control: the counter counts.
    assert!(
        counted(5) >= 5,
        "IPVS counted {} connections of 5",
        ipvs_conns(&vip)
    );
    // 1. Behind its back.
    let foreign = "TCP 203.0.113.50:80 rr".to_string();
    let unwanted = "TCP 198.51.100.250:8080 rr".to_string();
    sh("ipvsadm -A -t 203.0.113.50:80 -s rr && ipvsadm -a -t 203.0.113.50:80 -r 192.0.2.77:80 -m");
    sh("ipvsadm -A -t 198.51.100.250:8080 -s rr");
    sh(&format!("ipvsadm -e -t {vip}:80 -r {dest} -m -w 7"));
    // Positive control: the kernel took all three.
    let changed = ipvsadm_root();
    assert!(
        changed.contains_key(&foreign)
            && changed.contains_key(&unwanted)
            && changed[&service].contains(&format!("{dest} Masq 7")),
        "{changed:?}"
    );
    let t = std::time::Instant::now();
    harness::wait_for(
        "the weight set back and the unwanted service removed",
        Duration::from_secs(75),
        || {
            let now = ipvsadm_root();
            (now.get(&service) == Some(&dests) && !now.contains_key(&unwanted)).then_some(())
        },
    );
    let repaired = t.elapsed();
    let now = ipvsadm_root();
    assert_eq!(
        now.get(&foreign)
            .map(|d| d.iter().cloned().collect::<Vec<_>>()),
        Some(vec!["192.0.2.77:80 Masq 1".to_string()]),
        "another tool's service was touched: {now:?}"
    );
    sh(&format!("ipvsadm -D -t {vip}:80"));
    assert!(!ipvs_has(&vip), "the virtual service was not deleted");
    let t = std::time::Instant::now();
    harness::wait_for(
        "the deleted virtual service made again",
        Duration::from_secs(75),
        || (ipvsadm_root().get(&service) == Some(&dests)).then_some(()),
    );
    let remade = t.elapsed();
    // Control for the adoption below: a virtual service made again counts from 0.
    assert_eq!(
        ipvs_conns(&vip),
        0,
        "the re-made virtual service kept its counter"
    );
    harness::wait_for("the route at the leaf", Duration::from_secs(30), || {
        leaf_has(&bird, &vip).then_some(())
    });
    println!("behind its back: weight and unwanted service repaired after {repaired:?}, deleted service made again after {remade:?}; another tool's service untouched");
    // 2. SIGKILL under a counted load.
    connect();
    let before = counted(5);
    let table_before = ipvsadm_root();
    sh(&format!("kill -KILL {}", kg.child.id()));
    let st = kg.child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&st),
        Some(9),
        "{st:?}"
    );
    // Dead: the kernel keeps what it had.
    assert_eq!(ipvsadm_root(), table_before);
    let t = std::time::Instant::now();
    // The old daemon is reaped: the replacement is what `kg` stops at the end.
    kg = spawn_daemon(&lab, &config);
    harness::wait_for(
        "the restarted daemon programmed",
        Duration::from_secs(120),
        || (kg.component("ipvs")["state"] == "programmed").then_some(()),
    );
    bird.wait_established("sw", Duration::from_secs(60));
    harness::wait_for("the route at the leaf", Duration::from_secs(60), || {
        leaf_has(&bird, &vip).then_some(())
    });
    let back = t.elapsed();
    connect();
    // Made again, it would count the 5 new ones only.
    let after = counted(before + 5);
    assert!(
        after >= before + 5,
        "the virtual service was made again: {before} connections counted before the kill, {after} after"
    );
    assert_eq!(ipvsadm_root(), table_before, "the restart changed ipvsadm");
    println!("sigkill: adopted (connections counted {before} → {after}), programmed and announced again after {back:?}");
    // 3. The API server gone for 30 s: status says degraded; IPVS and the route stay as they
    // are; back, it clears and still nothing changed.
    let server = std::fs::read_to_string("/lab/kubeconfig").unwrap();
    let port = server
        .split("https://10.0.2.2:")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .expect("the API server's port in /lab/kubeconfig")
        .to_string();
    let table = ipvsadm_root();
    let nft = |script: &str| {
        let mut c = std::process::Command::new("nft")
            .arg("-f")
            .arg("-")
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        assert!(c.wait().unwrap().success(), "nft: {script}");
    };
    nft(&format!(
        "table inet lab-outage {{\n chain out {{\n  type filter hook output priority 0\n  \
         ip daddr 10.0.2.2 tcp dport {port} reject with tcp reset\n }}\n}}\n"
    ));
    // The connections kube-gw has (its watches) end as a dead server's would.
    sh(&format!("ss -K dst 10.0.2.2 dport = :{port} > /dev/null"));
    let t = std::time::Instant::now();
    let why = harness::wait_for("status to say degraded", Duration::from_secs(45), || {
        kg.status()["degraded"].as_str().map(String::from)
    });
    let noticed = t.elapsed();
    while t.elapsed() < Duration::from_secs(30) {
        assert_eq!(ipvsadm_root(), table, "IPVS changed during the outage");
        assert!(leaf_has(&bird, &vip), "the route went during the outage");
        assert!(
            kg.status()["degraded"].is_string(),
            "degraded cleared during the outage"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    nft("delete table inet lab-outage\n");
    // Positive control: the API server's port answers again.
    let api: SocketAddr = format!("10.0.2.2:{port}").parse().unwrap();
    harness::wait_for(
        "the API server's port to answer",
        Duration::from_secs(10),
        || TcpStream::connect_timeout(&api, Duration::from_secs(1)).ok(),
    );
    let t = std::time::Instant::now();
    harness::wait_for("degraded to clear", Duration::from_secs(90), || {
        kg.status()["degraded"].is_null().then_some(())
    });
    let cleared = t.elapsed();
    // After the return, still nothing changed (full passes ran through the outage, every
    // 30 s, from the view kept), and the counter counts on.
    assert_eq!(ipvsadm_root(), table, "IPVS changed after the outage");
    assert!(leaf_has(&bird, &vip));
    connect();
    let later = counted(after + 5);
    assert!(
        later >= after + 5,
        "the virtual service was made again: {after} then {later}"
    );
    println!("api server gone 30 s: degraded after {noticed:?} ({why}); IPVS and the route unchanged; cleared {cleared:?} after its return");
    drop(kg);
    sh("ipvsadm -D -t 203.0.113.50:80");
    ip(&["route", "del", "blackhole", &format!("{endpoint}/32")]);
}

const TESTS: &[Test] = &[
    (
        "programmed_state_is_what_ipvsadm_reads",
        programmed_state_is_what_ipvsadm_reads,
    ),
    (
        "traffic_reaches_ready_backends_and_a_leaving_one_drains",
        traffic_reaches_ready_backends_and_a_leaving_one_drains,
    ),
    (
        "switches_agree_and_maglev_moves_only_the_removed_backends_clients",
        switches_agree_and_maglev_moves_only_the_removed_backends_clients,
    ),
    (
        "cluster_policy_is_source_natted_and_local_keeps_the_client_address",
        cluster_policy_is_source_natted_and_local_keeps_the_client_address,
    ),
    (
        "a_flow_moved_between_switches_survives_only_where_the_endpoint_sees_the_same_packets",
        a_flow_moved_between_switches_survives_only_where_the_endpoint_sees_the_same_packets,
    ),
    (
        "gateway_terminates_tls_in_the_kernel_and_shares_a_vip_with_ipvs",
        gateway::gateway_terminates_tls_in_the_kernel_and_shares_a_vip_with_ipvs,
    ),
    // Last two, with the daemon: the first unloads and reloads the IPVS modules.
    (
        "the_daemon_announces_only_what_ipvs_has_and_withdraws_before_it_goes",
        the_daemon_announces_only_what_ipvs_has_and_withdraws_before_it_goes,
    ),
    (
        "the_daemon_keeps_ipvs_right_through_hand_changes_sigkill_and_an_api_server_outage",
        the_daemon_keeps_ipvs_right_through_hand_changes_sigkill_and_an_api_server_outage,
    ),
];

/// Run only when a filter names them, after the others: the churn soak (`scripts/soak --lab`).
const EXPLICIT: &[Test] = &[(
    "soak_keeps_lo_ipvs_and_the_leaf_equal_to_the_cluster",
    soak::soak_keeps_lo_ipvs_and_the_leaf_equal_to_the_cluster,
)];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("role") {
        role(&args[1..]);
        return;
    }
    if !args.iter().any(|a| a == "--lab") {
        println!(
            "lab: {} tests need IPVS, which this kernel lacks; they run in the real-kernel lab: sudo scripts/lab-run",
            TESTS.len()
        );
        return;
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let named = |n: &str| filters.iter().any(|f| n.contains(f.as_str()));
    let chosen: Vec<&Test> = TESTS
        .iter()
        .filter(|(n, _)| filters.is_empty() || named(n))
        .chain(EXPLICIT.iter().filter(|(n, _)| named(n)))
        .collect();
    println!("running {} lab tests", chosen.len());
    let mut failed = Vec::new();
    for (name, f) in &chosen {
        let t = std::time::Instant::now();
        let r = std::panic::catch_unwind(f);
        let secs = t.elapsed().as_secs_f64();
        if r.is_ok() {
            println!("test {name} ... ok ({secs:.1}s)");
        } else {
            println!("test {name} ... FAILED ({secs:.1}s)");
            failed.push(*name);
        }
    }
    println!(
        "lab result: {} passed; {} failed {:?}",
        chosen.len() - failed.len(),
        failed.len(),
        failed
    );
    if !failed.is_empty() || chosen.is_empty() {
        std::process::exit(1);
    }
}
