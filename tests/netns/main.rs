//! Integration tests in network namespaces: the lab harness proven with real BGP daemons
//! talking to each other, kube-gw running inside a namespace, and clean-up that holds even
//! when a test panics. Needs root (CI runs it as root; see `harness::require_root`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod backend_tls;
mod bfd;
mod bgp;
#[path = "../common/controlplane.rs"]
mod controlplane;
mod faults;
mod gateway;
mod gateway_reload;
mod harness;
mod lb;
mod model_override;
mod monitoring;
mod placement;
mod restart;
mod soak;
#[path = "../common/soak.rs"]
#[allow(dead_code)]
mod soak_engine;
mod steer;
mod traffic;
mod vips;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use harness::peers::{Bird, Frr, GoBgp, KubeGw};
use harness::{require_root, Lab};

pub(crate) const ESTABLISH: Duration = Duration::from_secs(60);

pub(crate) fn bird_leaf(
    router_id: &str,
    local: &str,
    local_as: u32,
    peers: &[(&str, &str, u32)],
) -> String {
    let mut c = format!(
        "router id {router_id};\nprotocol device {{}}\n\
         protocol kernel {{ ipv4 {{ export all; }}; merge paths on; }}\n\
         protocol kernel {{ ipv6 {{ export all; }}; merge paths on; }}\n"
    );
    for (name, addr, asn) in peers {
        let af = if addr.contains(':') { "ipv6" } else { "ipv4" };
        c.push_str(&format!(
            "protocol bgp {name} {{ local {local} as {local_as}; neighbor {addr} as {asn}; \
             hold time 9; connect retry time 1; {af} {{ import all; export none; }}; }}\n"
        ));
    }
    c
}

#[test]
fn bird_and_gobgp_reach_established_over_ipv4() {
    if !require_root("bird_and_gobgp_reach_established_over_ipv4") {
        return;
    }
    let mut lab = Lab::new();
    let leaf = lab.node("leaf");
    let r1 = lab.node("r1");
    lab.link(&leaf, &["192.0.2.1/30"], &r1, &["192.0.2.2/30"]);

    let bird = Bird::start(
        &mut lab,
        &leaf,
        "leaf",
        &bird_leaf(
            "192.0.2.1",
            "192.0.2.1",
            65000,
            &[("r1", "192.0.2.2", 65001)],
        ),
    );
    let gobgp = GoBgp::start(
        &mut lab,
        &r1,
        "r1",
        r#"
[global.config]
  as = 65001
  router-id = "192.0.2.2"
[[neighbors]]
  [neighbors.config]
    neighbor-address = "192.0.2.1"
    peer-as = 65000
"#,
    );
    bird.wait_established("r1", ESTABLISH);
    gobgp.wait_established("192.0.2.1", ESTABLISH);

    // Both ends say so through their own CLIs.
    assert_eq!(bird.protocol_info("r1"), "Established");
    assert!(gobgp.gobgp(&["neighbor"]).contains("Establ"));
}

#[test]
fn frr_and_bird_reach_established_over_ipv6() {
    if !require_root("frr_and_bird_reach_established_over_ipv6") {
        return;
    }
    let mut lab = Lab::new();
    let leaf = lab.node("leaf");
    let spine = lab.node("spine");
    lab.link(&leaf, &["2001:db8:1::1/64"], &spine, &["2001:db8:1::2/64"]);

    let bird = Bird::start(
        &mut lab,
        &leaf,
        "leaf",
        &bird_leaf(
            "192.0.2.1",
            "2001:db8:1::1",
            65000,
            &[("spine", "2001:db8:1::2", 65002)],
        ),
    );
    let frr = Frr::start(
        &mut lab,
        &spine,
        "spine",
        "frr defaults datacenter\n\
         router bgp 65002\n bgp router-id 192.0.2.2\n no bgp ebgp-requires-policy\n\
         neighbor 2001:db8:1::1 remote-as 65000\n\
         neighbor 2001:db8:1::1 timers connect 1\n\
         address-family ipv6 unicast\n  neighbor 2001:db8:1::1 activate\n exit-address-family\n",
    );
    bird.wait_established("spine", ESTABLISH);
    frr.wait_established("2001:db8:1::1", ESTABLISH);
    assert_eq!(frr.peer_state("2001:db8:1::1"), "Established");
}

#[test]
fn kube_gw_runs_inside_a_namespace_and_stops_cleanly() {
    if !require_root("kube_gw_runs_inside_a_namespace_and_stops_cleanly") {
        return;
    }
    let mut lab = Lab::new();
    let switch = lab.node("switch");
    let kg = KubeGw::start(
        &mut lab,
        &switch,
        "spine-1",
        "[node]\nname = \"spine-1\"\n[vip]\npools = [\"198.51.100.0/24\"]\n",
    );
    let s = kg.status();
    assert_eq!(s["state"], "running");
    assert_eq!(s["ready"], true);

    // Its HTTP listener is on the namespace's own loopback, not the host's.
    let ss = switch.exec("ss", &["-Hltn", "sport = :9472"]);
    assert!(
        String::from_utf8_lossy(&ss.stdout).contains("127.0.0.1:9472"),
        "{}",
        String::from_utf8_lossy(&ss.stdout)
    );

    let st = lab.stop("spine-1", Duration::from_secs(20)).unwrap();
    assert_eq!(st.code(), Some(0), "{}", lab.log("spine-1"));
    assert!(lab.log("spine-1").contains("kube-gw stopped"));
}

#[test]
fn nothing_is_left_behind_even_when_a_test_panics() {
    if !require_root("nothing_is_left_behind_even_when_a_test_panics") {
        return;
    }
    let seen: Arc<Mutex<(Vec<String>, Vec<u32>)>> = Arc::default();
    let record = seen.clone();
    let result = std::panic::catch_unwind(move || {
        let mut lab = Lab::new();
        let a = lab.node("a");
        let b = lab.node("b");
        lab.link(&a, &["203.0.113.1/30"], &b, &["203.0.113.2/30"]);
        Bird::start(
            &mut lab,
            &a,
            "a",
            &bird_leaf(
                "203.0.113.1",
                "203.0.113.1",
                65000,
                &[("b", "203.0.113.2", 65001)],
            ),
        );
        *record.lock().unwrap() = (lab.namespaces(), lab.pids());
        panic!("a failing test");
    });
    assert!(result.is_err(), "the inner test was meant to fail");

    let (namespaces, pids) = seen.lock().unwrap().clone();
    assert_eq!(namespaces.len(), 2);
    assert_eq!(pids.len(), 1);
    let listed = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    for ns in &namespaces {
        assert!(
            !listed
                .lines()
                .any(|l| l.split_whitespace().next() == Some(ns)),
            "namespace {ns} survived the panic"
        );
    }
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} survived the panic"
        );
    }
}
