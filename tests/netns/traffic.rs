//! Traffic through drains and switch loss, at a leaf with the RFC 8326 policy: two
//! switches running kube-gw announce one anycast VIP (`harness::anycast`) to an FRR leaf
//! (zebra and bfdd, ECMP over both, routes with GRACEFUL_SHUTDOWN 65535:0 at LOCAL_PREF 0,
//! as operators configure it). What is tested here is the control plane's part: that a
//! drain or a stop moves the traffic before the switch stops forwarding, and that a dead
//! switch costs only what was in flight through it. Whether a flow that moves survives
//! depends on the forwarding method; here it does by construction, and the real-kernel
//! lab compares the methods with IPVS.

use std::time::Duration;

use crate::harness::anycast::{failures, now, records, Anycast, VIP};
use crate::harness::peers::{Frr, KubeGw};
use crate::harness::{require_root, wait_for, Lab};
use crate::ESTABLISH;

const SW: [&str; 2] = ["192.0.2.2", "192.0.2.6"];
/// Seconds between GRACEFUL_SHUTDOWN and the withdrawal.
const DRAIN: u64 = 6;

/// The leaf's FRR: ECMP over the switches, BFD, and the RFC 8326 policy.
pub(crate) const LEAF: &str = "frr defaults datacenter\n\
    bgp community-list standard GSHUT seq 5 permit 65535:0\n\
    route-map FROM-SW permit 10\n match community GSHUT\n set local-preference 0\n\
    route-map FROM-SW permit 20\n\
    router bgp 65000\n bgp router-id 192.0.2.1\n no bgp ebgp-requires-policy\n\
    neighbor 192.0.2.2 remote-as 65100\n neighbor 192.0.2.2 bfd\n neighbor 192.0.2.2 timers connect 1\n\
    neighbor 192.0.2.6 remote-as 65100\n neighbor 192.0.2.6 bfd\n neighbor 192.0.2.6 timers connect 1\n\
    address-family ipv4 unicast\n  neighbor 192.0.2.2 route-map FROM-SW in\n\
    neighbor 192.0.2.6 route-map FROM-SW in\n exit-address-family\n";

struct Fabric {
    lab: Lab,
    net: Anycast,
    leaf_frr: Frr,
    kg: Vec<KubeGw>,
}

fn fabric() -> Fabric {
    let mut lab = Lab::new();
    let net = Anycast::build(&mut lab, 2);
    let leaf_frr = Frr::start_with_bfd(&mut lab, &net.leaf, "leaf", LEAF, "");
    let kg = net
        .sw
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
                     [[bgp.neighbors]]\naddress = \"{}\"\nremote-asn = 65000\nbfd = true\n",
                    i + 1,
                    crate::harness::anycast::leaf_address(i)
                ),
            )
        })
        .collect();
    let f = Fabric {
        lab,
        net,
        leaf_frr,
        kg,
    };
    f.wait_hops(&SW);
    f
}

impl Fabric {
    fn wait_hops(&self, want: &[&str]) {
        self.net.wait_hops(want, ESTABLISH);
    }

    fn hops(&self) -> Vec<String> {
        self.net.hops()
    }

    fn forwarded(&self, i: usize) -> u64 {
        self.net.forwarded(i)
    }

    fn load(&mut self, name: &str, port: u16, seconds: u32) -> std::path::PathBuf {
        self.net.load(&mut self.lab, name, port, seconds)
    }

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
    let sw1 = f.net.sw[0].clone();
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
    let uplink = f.net.uplink[0].clone();
    f.net.sw[0].cut(&uplink);
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
