//! Traffic through drains and switch loss: what a client sees, not what the routes say.
//!
//! ```text
//!              ┌── sw1 (kube-gw) ──┐
//!  client ── leaf (FRR)           backend (VIP 198.51.100.80 on lo, echo server)
//!   50 sources └── sw2 (kube-gw) ──┘       └── replies straight to the leaf
//! ```
//!
//! Both switches announce the VIP to the leaf (FRR with zebra and bfdd, ECMP over both,
//! hashing on ports too, and the RFC 8326 policy operators configure: routes with
//! GRACEFUL_SHUTDOWN 65535:0 get LOCAL_PREF 0). Each switch forwards the VIP to the same
//! backend, which answers the client directly: the forwarding the ECMP flow study calls
//! tunnelling to the endpoint with direct return, where a flow the leaf moves from one
//! switch to the other still reaches its endpoint. (IPVS itself is not in this host's
//! kernel; the switches route instead. The forwarding methods with IPVS are compared in the
//! real-kernel lab.) What is tested here is the control plane's part: that a drain or a
//! stop moves the traffic before the switch stops forwarding, and that a dead switch costs
//! only what was in flight through it.
//!
//! The client opens a connection every few milliseconds from 50 source addresses and keeps
//! each 200–400 ms, exchanging a line every 50 ms (`harness/load.py`).

use std::time::{Duration, SystemTime};

use crate::harness::peers::{Frr, KubeGw};
use crate::harness::{require_root, wait_for, Lab, Node};
use crate::ESTABLISH;

const VIP: &str = "198.51.100.80";
/// Seconds between GRACEFUL_SHUTDOWN and the withdrawal.
const DRAIN: u64 = 6;
const SW: [&str; 2] = ["192.0.2.2", "192.0.2.6"];

struct Fabric {
    lab: Lab,
    leaf: Node,
    leaf_frr: Frr,
    client: Node,
    sw: Vec<Node>,
    /// Each switch's interface toward the leaf.
    uplink: Vec<String>,
    kg: Vec<KubeGw>,
    script: String,
}

const LEAF: &str = "frr defaults datacenter\n\
    bgp community-list standard GSHUT seq 5 permit 65535:0\n\
    route-map FROM-SW permit 10\n match community GSHUT\n set local-preference 0\n\
    route-map FROM-SW permit 20\n\
    router bgp 65000\n bgp router-id 192.0.2.1\n no bgp ebgp-requires-policy\n\
    neighbor 192.0.2.2 remote-as 65100\n neighbor 192.0.2.2 bfd\n neighbor 192.0.2.2 timers connect 1\n\
    neighbor 192.0.2.6 remote-as 65100\n neighbor 192.0.2.6 bfd\n neighbor 192.0.2.6 timers connect 1\n\
    address-family ipv4 unicast\n  neighbor 192.0.2.2 route-map FROM-SW in\n\
    neighbor 192.0.2.6 route-map FROM-SW in\n exit-address-family\n";

fn fabric() -> Fabric {
    let mut lab = Lab::new();
    let leaf = lab.node("leaf");
    let client = lab.node("cl");
    let be = lab.node("be");
    let sw = vec![lab.node("sw1"), lab.node("sw2")];
    lab.link(&client, &["203.0.113.2/26"], &leaf, &["203.0.113.1/26"]);
    let (up1, _) = lab.link(&sw[0], &["192.0.2.2/30"], &leaf, &["192.0.2.1/30"]);
    let (up2, _) = lab.link(&sw[1], &["192.0.2.6/30"], &leaf, &["192.0.2.5/30"]);
    lab.link(&sw[0], &["192.0.2.9/30"], &be, &["192.0.2.10/30"]);
    lab.link(&sw[1], &["192.0.2.13/30"], &be, &["192.0.2.14/30"]);
    lab.link(&leaf, &["192.0.2.17/30"], &be, &["192.0.2.18/30"]);
    for n in [&leaf, &sw[0], &sw[1]] {
        n.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
    }
    leaf.exec("sysctl", &["-qw", "net.ipv4.fib_multipath_hash_policy=1"]);
    let sources: Vec<String> = (10..60).map(|i| format!("203.0.113.{i}")).collect();
    let ifname = {
        let out = client.exec("ip", &["-j", "addr", "show", "to", "203.0.113.2"]);
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        j[0]["ifname"].as_str().unwrap().to_string()
    };
    for s in &sources {
        client.exec("ip", &["addr", "add", &format!("{s}/26"), "dev", &ifname]);
    }
    lab.write("sources", &sources.join("\n"));
    client.exec("ip", &["route", "add", "default", "via", "203.0.113.1"]);
    // The backend owns the VIP and answers straight to the leaf.
    be.exec("ip", &["addr", "add", &format!("{VIP}/32"), "dev", "lo"]);
    be.exec("ip", &["route", "add", "default", "via", "192.0.2.17"]);
    let script = lab
        .write("load.py", include_str!("harness/load.py"))
        .display()
        .to_string();
    lab.spawn(&be, "echo", "python3", &[&script, "server", VIP, "8080"]);
    // Each switch forwards the VIP to the backend, and counts what it forwards.
    for (n, be_addr) in sw.iter().zip(["192.0.2.10", "192.0.2.14"]) {
        n.exec(
            "ip",
            &["route", "add", &format!("{VIP}/32"), "via", be_addr],
        );
        for cmd in [
            "add table inet kgload",
            "add chain inet kgload through { type filter hook forward priority 0; }",
            "add rule inet kgload through ip daddr 198.51.100.80 counter",
        ] {
            n.exec("nft", &cmd.split(' ').collect::<Vec<_>>());
        }
    }
    let leaf_frr = Frr::start_with_bfd(&mut lab, &leaf, "leaf", LEAF, "");
    let kg = sw
        .iter()
        .zip(SW)
        .enumerate()
        .map(|(i, (n, addr))| {
            KubeGw::start(
                &mut lab,
                n,
                &format!("kg{}", i + 1),
                &format!(
                    "[node]\nname = \"sw{}\"\n[vip]\npools = [\"198.51.100.0/24\"]\n[ipvs]\nenabled = false\n\
                     [bgp]\nasn = 65100\nrouter-id = \"{addr}\"\nhold-time = 9\ndrain-time = {DRAIN}\n\
                     static-prefixes = [\"{VIP}/32\"]\n\
                     [[bgp.neighbors]]\naddress = \"192.0.2.{}\"\nremote-asn = 65000\nbfd = true\n",
                    i + 1,
                    if i == 0 { 1 } else { 5 }
                ),
            )
        })
        .collect();
    let f = Fabric {
        lab,
        leaf,
        leaf_frr,
        client,
        sw,
        uplink: vec![up1, up2],
        kg,
        script,
    };
    f.wait_hops(&SW);
    f
}

impl Fabric {
    /// The leaf's BGP paths for the VIP: (neighbor, LOCAL_PREF).
    fn paths(&self) -> Vec<(String, u64)> {
        let j: serde_json::Value = serde_json::from_str(
            &self
                .leaf_frr
                .vtysh(&format!("show bgp ipv4 unicast {VIP}/32 json")),
        )
        .unwrap_or_default();
        let mut v: Vec<(String, u64)> = j["paths"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                (
                    p["peer"]["peerId"].as_str().unwrap_or_default().to_string(),
                    p["locPrf"].as_u64().unwrap_or(100),
                )
            })
            .collect();
        v.sort();
        v
    }

    /// While switch 1 drains (its routes carry GRACEFUL_SHUTDOWN and are still there):
    /// the leaf has moved the VIP to switch 2 before any withdrawal, and switch 1 forwards
    /// nothing more.
    fn moved_before_the_withdrawal(&self, t0: std::time::Instant) {
        self.wait_hops(&SW[1..]);
        let paths = self.paths();
        assert_eq!(
            paths,
            [(SW[0].to_string(), 0), (SW[1].to_string(), 100)],
            "sw1's path is still there, at LOCAL_PREF 0"
        );
        let before = self.forwarded(0);
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(
            self.forwarded(0),
            before,
            "sw1 forwards nothing while it drains"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(DRAIN),
            "all within the drain time ({:?})",
            t0.elapsed()
        );
    }

    /// The leaf's kernel next hops for the VIP, sorted.
    fn hops(&self) -> Vec<String> {
        let out = self
            .leaf
            .exec("ip", &["-j", "route", "show", &format!("{VIP}/32")]);
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let Some(r) = j.as_array().and_then(|a| a.first()) else {
            return Vec::new();
        };
        let mut v: Vec<String> = match r["nexthops"].as_array() {
            Some(list) => list
                .iter()
                .filter_map(|h| h["gateway"].as_str().map(String::from))
                .collect(),
            None => r["gateway"]
                .as_str()
                .map(String::from)
                .into_iter()
                .collect(),
        };
        v.sort();
        v
    }

    fn wait_hops(&self, want: &[&str]) {
        wait_for(
            &format!("the leaf to route the VIP via {want:?}"),
            ESTABLISH,
            || (self.hops() == want).then_some(()),
        );
    }

    /// Packets switch `i` has forwarded to the VIP.
    fn forwarded(&self, i: usize) -> u64 {
        let out = self.sw[i].exec("nft", &["-j", "list", "chain", "inet", "kgload", "through"]);
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        j["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|e| {
                e["rule"]["expr"]
                    .as_array()?
                    .iter()
                    .find_map(|x| x["counter"]["packets"].as_u64())
            })
            .unwrap()
    }

    /// Starts the client for `seconds` against `port`; its records go to `<name>.json`.
    fn load(&mut self, name: &str, port: u16, seconds: u32) -> std::path::PathBuf {
        let out = self.lab.path(&format!("{name}.json"));
        let sources = self.lab.path("sources");
        let client = self.client.clone();
        self.lab.spawn(
            &client,
            name,
            "python3",
            &[
                &self.script,
                "client",
                VIP,
                &port.to_string(),
                &seconds.to_string(),
                sources.to_str().unwrap(),
                out.to_str().unwrap(),
            ],
        );
        out
    }
}

#[derive(Debug)]
struct Record {
    start: f64,
    end: f64,
    outcome: String,
}

/// The client's records, once it has finished.
fn records(lab: &Lab, path: &std::path::Path, name: &str, within: Duration) -> Vec<Record> {
    let text = wait_for(&format!("the client {name} to finish"), within, || {
        std::fs::read_to_string(path).ok()
    });
    let j: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {}", lab.log(name)));
    j.as_array()
        .unwrap()
        .iter()
        .map(|r| Record {
            start: r["start"].as_f64().unwrap(),
            end: r["end"].as_f64().unwrap(),
            outcome: r["outcome"].as_str().unwrap().to_string(),
        })
        .collect()
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn failures(r: &[Record]) -> Vec<&Record> {
    r.iter().filter(|r| r.outcome != "ok").collect()
}

#[test]
fn a_drain_and_a_stop_move_the_traffic_with_no_failed_connection() {
    if !require_root("a_drain_and_a_stop_move_the_traffic_with_no_failed_connection") {
        return;
    }
    let mut f = fabric();
    let out = f.load("load", 8080, 45);
    std::thread::sleep(Duration::from_secs(4));
    let (a, b) = (f.forwarded(0), f.forwarded(1));
    assert!(a > 100 && b > 100, "both switches carry traffic: {a}, {b}");

    // `kube-gw drain`: GRACEFUL_SHUTDOWN, the drain time, then the withdrawal.
    let socket = f.kg[0].socket.display().to_string();
    let sw1 = f.sw[0].clone();
    let t0 = std::time::Instant::now();
    f.lab.spawn(
        &sw1,
        "drain",
        &KubeGw::bin(),
        &["drain", "--socket", &socket],
    );
    f.moved_before_the_withdrawal(t0);
    wait_for("the drain to end", ESTABLISH, || {
        (!f.lab.running("drain")).then_some(())
    });
    assert_eq!(f.paths().len(), 1, "withdrawn after the drain time");
    let before = f.forwarded(0);
    f.kg[0].cli(&["undrain"]);
    f.wait_hops(&SW);
    std::thread::sleep(Duration::from_secs(3));
    assert!(f.forwarded(0) > before + 100, "sw1 carries traffic again");

    // SIGTERM: the same drain, then the stop.
    let name = f.kg[0].name.clone();
    let t0 = std::time::Instant::now();
    f.lab.signal(&name, "TERM");
    f.moved_before_the_withdrawal(t0);
    let st = f.lab.stop(&name, Duration::from_secs(30)).unwrap();
    assert_eq!(st.code(), Some(0));
    assert_eq!(f.hops(), SW[1..], "withdrawn before kube-gw exited");
    f.kg[0].restart(&mut f.lab, &sw1);
    f.wait_hops(&SW);

    let r = records(&f.lab, &out, "load", Duration::from_secs(90));
    let failed = failures(&r);
    eprintln!(
        "drain, undrain, SIGTERM, restart under load: {} of {} connections failed",
        failed.len(),
        r.len()
    );
    assert!(r.len() > 500, "the load ran: {} connections", r.len());
    assert!(
        failed.is_empty(),
        "{} of {} failed: {:?}",
        failed.len(),
        r.len(),
        &failed[..failed.len().min(10)]
    );
}

#[test]
fn a_dead_switch_costs_at_most_the_connections_in_flight_through_it() {
    if !require_root("a_dead_switch_costs_at_most_the_connections_in_flight_through_it") {
        return;
    }
    let mut f = fabric();
    let out = f.load("load", 8080, 20);
    std::thread::sleep(Duration::from_secs(5));
    // The switch dies: its link goes silent and kube-gw is killed.
    let cut = now();
    let uplink = f.uplink[0].clone();
    f.sw[0].cut(&uplink);
    let name = f.kg[0].name.clone();
    f.lab.signal(&name, "KILL");
    f.wait_hops(&SW[1..]);
    let detected = now();
    let r = records(&f.lab, &out, "load", Duration::from_secs(60));
    let failed = failures(&r);
    let in_flight = r
        .iter()
        .filter(|c| c.start <= detected && c.end >= cut)
        .count();
    eprintln!(
        "switch loss: leaf converged in {:.0} ms; {} of {} connections failed; {} were in flight during the outage",
        (detected - cut) * 1000.0,
        failed.len(),
        r.len(),
        in_flight
    );
    assert!(r.len() > 200, "the load ran: {} connections", r.len());
    assert!(failed.len() <= in_flight, "{failed:?}");
    // Nothing that started after the leaf moved away failed.
    let late: Vec<_> = failed.iter().filter(|c| c.start > detected).collect();
    assert!(late.is_empty(), "{late:?}");

    // The positive control: the client does see failures (nothing listens on 8081).
    let out = f.load("refused", 8081, 2);
    let r = records(&f.lab, &out, "refused", Duration::from_secs(30));
    assert!(
        !r.is_empty() && failures(&r).len() == r.len(),
        "{:?}",
        &r[..r.len().min(3)]
    );
    assert!(
        r[0].outcome.starts_with("ConnectionRefusedError"),
        "{:?}",
        r[0]
    );
}
