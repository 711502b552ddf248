//! The two places kube-gw can have on a switch.
//!
//! (a) kube-gw is the switch's only BGP speaker: it installs what its neighbors' `import`
//! filters let in, as ECMP routes of its own protocol (107), and touches no other route.
//!
//! (b) The switch OS already runs FRR (SONiC, Cumulus), which owns port 179 toward the
//! fabric. kube-gw runs no listener, peers with the local FRR over the loopback (iBGP, the
//! switch's AS), announces the switch's own address as next hop, and FRR carries the VIPs
//! to the leaf.

use std::time::Duration;

use crate::harness::peers::{Bird, Frr, KubeGw};
use crate::harness::{require_root, wait_for, Lab, Node};
use crate::restart::{deletions, flush_monitor, leaf_next_hop, start_leaf_monitor};
use crate::{bird_leaf, ESTABLISH};

const VIP: &str = "198.51.100.80";

/// FRR's path for `VIP`/32 from kube-gw: (next hop, valid).
fn frr_path(frr: &Frr) -> Option<(String, bool)> {
    let j: serde_json::Value =
        serde_json::from_str(&frr.vtysh(&format!("show bgp ipv4 unicast {VIP}/32 json")))
            .unwrap_or_default();
    let p = j["paths"].as_array()?.first()?.clone();
    Some((
        p["nexthops"][0]["ip"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        p["valid"].as_bool().unwrap_or(false),
    ))
}

#[test]
fn beside_the_switch_s_frr_kube_gw_peers_over_the_loopback_and_frr_carries_the_vip() {
    if !require_root(
        "beside_the_switch_s_frr_kube_gw_peers_over_the_loopback_and_frr_carries_the_vip",
    ) {
        return;
    }
    let mut lab = Lab::new();
    let sw = lab.node("sw");
    let leaf = lab.node("leaf");
    lab.link(&sw, &["192.0.2.2/30"], &leaf, &["192.0.2.1/30"]);
    // The switch's own address (FRR's) and kube-gw's, on the loopback.
    sw.exec("ip", &["addr", "add", "192.0.2.11/32", "dev", "lo"]);
    sw.exec("ip", &["addr", "add", "192.0.2.12/32", "dev", "lo"]);
    // The discard next hop for the VIPs FRR holds: they are local to the switch anyway.
    sw.exec("ip", &["route", "add", "blackhole", "192.0.2.250/32"]);
    let bird = Bird::start(
        &mut lab,
        &leaf,
        "leaf",
        &bird_leaf(
            "192.0.2.1",
            "192.0.2.1",
            65000,
            &[("sw", "192.0.2.2", 65100)],
        ),
    );
    // The switch's FRR: eBGP to the leaf, iBGP to kube-gw on the loopback. FRR owns port
    // 179; it waits for kube-gw to connect (passive: it would otherwise dial itself).
    let frr = Frr::start_with_zebra(
        &mut lab,
        &sw,
        "frr",
        "frr defaults datacenter\nrouter bgp 65100\n bgp router-id 192.0.2.11\n\
         no bgp ebgp-requires-policy\n\
         neighbor 192.0.2.1 remote-as 65000\n neighbor 192.0.2.1 timers connect 1\n\
         neighbor 192.0.2.12 remote-as internal\n neighbor 192.0.2.12 passive\n\
         address-family ipv4 unicast\n  neighbor 192.0.2.1 activate\n\
         neighbor 192.0.2.12 activate\n exit-address-family\n",
    );
    let config = |next_hop: &str| {
        format!(
            "[node]\nname = \"sw\"\n[vip]\npools = [\"198.51.100.0/24\"]\n[ipvs]\nenabled = false\n\
             [bgp]\nasn = 65100\nrouter-id = \"192.0.2.12\"\nhold-time = 9\ndrain-time = 1\n\
             listen = false\nstatic-prefixes = [\"{VIP}/32\"]\n\
             [[bgp.neighbors]]\naddress = \"192.0.2.11\"\nlocal-address = \"192.0.2.12\"\nremote-asn = \"internal\"\n{next_hop}"
        )
    };
    let kg = KubeGw::start(
        &mut lab,
        &sw,
        "kg",
        &config("next-hop-ipv4 = \"192.0.2.250\"\n"),
    );
    frr.wait_established("192.0.2.12", ESTABLISH);
    bird.wait_established("sw", ESTABLISH);
    // FRR holds kube-gw's route with the switch's address as next hop, valid...
    let path = wait_for("FRR to hold the VIP from kube-gw", ESTABLISH, || {
        frr_path(&frr).filter(|(_, valid)| *valid)
    });
    assert_eq!(path.0, "192.0.2.250");
    // ...and the leaf learns it from FRR, with FRR's address on their link as next hop.
    wait_for(
        "the leaf to route the VIP via the switch",
        ESTABLISH,
        || (leaf_next_hop(&leaf, VIP)? == "192.0.2.2").then_some(()),
    );
    // kube-gw has no listener: port 179 is FRR's alone.
    let status = kg.status();
    assert!(
        !status["components"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["name"] == "bgp-listener"),
        "{status}"
    );
    let listening = sw.exec("ss", &["-Hltnp", "sport", "= :179"]);
    let listening = String::from_utf8_lossy(&listening.stdout).to_string();
    assert!(
        listening.contains("bgpd") && !listening.contains("kube-gw"),
        "{listening}"
    );

    // The control: without `next-hop-ipv4` the route carries kube-gw's own address
    // (192.0.2.12), a local address to FRR, which refuses it ("martian or self next-hop"):
    // kube-gw sent it, FRR accepted nothing, the leaf loses the VIP.
    let st = lab.stop(&kg.name, Duration::from_secs(30)).unwrap();
    assert_eq!(st.code(), Some(0));
    wait_for("the leaf to lose the VIP", ESTABLISH, || {
        leaf_next_hop(&leaf, VIP).is_none().then_some(())
    });
    std::fs::write(&kg.config, {
        let t = std::fs::read_to_string(&kg.config).unwrap();
        t.replace("next-hop-ipv4 = \"192.0.2.250\"\n", "")
    })
    .unwrap();
    kg.restart(&mut lab, &sw);
    frr.wait_established("192.0.2.12", ESTABLISH);
    wait_for("kube-gw to send the VIP", ESTABLISH, || {
        let j: serde_json::Value =
            serde_json::from_str(&kg.cli(&["bgp", "neighbors", "--json"])).ok()?;
        (j[0]["prefixes_sent"] == 1).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let j: serde_json::Value =
        serde_json::from_str(&frr.vtysh("show bgp neighbors 192.0.2.12 json")).unwrap();
    assert_eq!(
        j["192.0.2.12"]["addressFamilyInfo"]["ipv4Unicast"]["acceptedPrefixCounter"], 0,
        "{j}"
    );
    assert_eq!(frr_path(&frr), None);
    assert_eq!(leaf_next_hop(&leaf, VIP), None);
}

/// kube-gw's routes for `prefix` on `node`: the next hops of each (one entry per route).
fn kube_gw_routes(node: &crate::harness::Node, prefix: &str) -> Vec<Vec<String>> {
    crate::harness::route_next_hops(node, &[prefix, "proto", "107"])
}

/// Routes of other protocols on `node`, as `ip route` prints them (protocol, prefix, metric).
fn foreign_routes(node: &crate::harness::Node) -> Vec<String> {
    let out = node.exec("ip", &["-j", "route", "show", "table", "main"]);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let mut v: Vec<String> = j
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["protocol"] != "107" && r["type"] != "blackhole")
        .map(|r| format!("{} {} {}", r["protocol"], r["dst"], r["metric"]))
        .collect();
    v.sort();
    v
}

/// The lab of placement (a): `sw` runs kube-gw importing 203.0.113.0/24 from two BIRD
/// upstreams (up1 192.0.2.1, AS 65001; up2 192.0.2.5, AS 65002, with `up2_extra` in its
/// BGP protocol), which both announce it and 198.18.0.0/15; `sw` also holds two static
/// routes (the returned `others`). Returns once the ECMP route is in `sw`'s kernel.
fn two_upstreams(up2_extra: &str) -> (Lab, Node, Node, Bird, Bird, KubeGw, Vec<String>) {
    let mut lab = Lab::new();
    let sw = lab.node("sw");
    let up1 = lab.node("up1");
    let up2 = lab.node("up2");
    lab.link(&sw, &["192.0.2.2/30"], &up1, &["192.0.2.1/30"]);
    lab.link(&sw, &["192.0.2.6/30"], &up2, &["192.0.2.5/30"]);
    // Two upstreams announce the same prefixes: 203.0.113.0/24 (imported) and
    // 198.18.0.0/15 (not: no filter matches it).
    let upstream = |id: &str, local: &str, sw_addr: &str, asn: u32, extra: &str| {
        format!(
            "router id {id};\nprotocol device {{}}\n\
             protocol static {{ ipv4; route 203.0.113.0/24 blackhole; route 203.0.113.128/25 blackhole; route 198.18.0.0/15 blackhole; }}\n\
             protocol bgp sw {{ local {local} as {asn}; neighbor {sw_addr} as 65100; hold time 9; \
             connect retry time 1; {extra} ipv4 {{ import none; export all; }}; }}\n"
        )
    };
    let b1 = Bird::start(
        &mut lab,
        &up1,
        "up1",
        &upstream("192.0.2.1", "192.0.2.1", "192.0.2.2", 65001, ""),
    );
    let b2 = Bird::start(
        &mut lab,
        &up2,
        "up2",
        &upstream("192.0.2.5", "192.0.2.5", "192.0.2.6", 65002, up2_extra),
    );
    // Routes of other protocols: one for another prefix, one for the same prefix at
    // another metric. Neither may change.
    sw.exec(
        "ip",
        &[
            "route",
            "add",
            "198.51.100.0/24",
            "via",
            "192.0.2.1",
            "proto",
            "static",
        ],
    );
    sw.exec(
        "ip",
        &[
            "route",
            "add",
            "203.0.113.0/24",
            "via",
            "192.0.2.5",
            "metric",
            "500",
            "proto",
            "static",
        ],
    );
    // And one at kube-gw's own metric (20) for a prefix the upstreams announce and the
    // filter lets in: it blocks kube-gw's, which must not overwrite it.
    sw.exec(
        "ip",
        &[
            "route",
            "add",
            "203.0.113.128/25",
            "via",
            "192.0.2.1",
            "metric",
            "20",
            "proto",
            "static",
        ],
    );
    let others = foreign_routes(&sw);
    assert!(
        others
            .iter()
            .any(|r| r.contains("203.0.113.0/24") && r.contains("500")),
        "{others:?}"
    );
    let kg = KubeGw::start(
        &mut lab,
        &sw,
        "kg",
        "[node]\nname = \"sw\"\n[vip]\npools = [\"198.51.100.0/24\"]\n[ipvs]\nenabled = false\n\
         [bgp]\nasn = 65100\nrouter-id = \"192.0.2.2\"\nhold-time = 9\ndrain-time = 1\n\
         [[bgp.neighbors]]\naddress = \"192.0.2.1\"\nremote-asn = 65001\nimport = [\"203.0.113.0/24 le 32\"]\n\
         [[bgp.neighbors]]\naddress = \"192.0.2.5\"\nremote-asn = 65002\nimport = [\"203.0.113.0/24 le 32\"]\n",
    );
    b1.wait_established("sw", ESTABLISH);
    b2.wait_established("sw", ESTABLISH);
    // One kernel route, two next hops.
    let routes = wait_for("kube-gw to install the ECMP route", ESTABLISH, || {
        let r = kube_gw_routes(&sw, "203.0.113.0/24");
        (r.first().is_some_and(|h| h.len() == 2)).then_some(r)
    });
    assert_eq!(
        routes,
        [vec!["192.0.2.1".to_string(), "192.0.2.5".to_string()]]
    );
    (lab, sw, up2, b1, b2, kg, others)
}

#[test]
fn as_the_only_speaker_kube_gw_installs_imported_routes_as_ecmp_and_replaces_rather_than_deletes() {
    if !require_root(
        "as_the_only_speaker_kube_gw_installs_imported_routes_as_ecmp_and_replaces_rather_than_deletes",
    ) {
        return;
    }
    let (mut lab, sw, _up2, _b1, b2, kg, others) = two_upstreams("");
    // The prefix no filter matches was received (the control) and not installed.
    let j: serde_json::Value =
        serde_json::from_str(&kg.cli(&["bgp", "neighbors", "--json"])).unwrap();
    assert_eq!(j[0]["prefixes_received"], 3, "{j}");
    assert!(kube_gw_routes(&sw, "198.18.0.0/15").is_empty());
    // The static route at kube-gw's metric blocked 203.0.113.128/25: reported, not replaced.
    let status = kg.status();
    let fib = status["components"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == "fib")
        .cloned()
        .unwrap_or_default();
    assert_eq!(fib["state"], "conflict", "{status}");
    let info = fib["info"].as_str().unwrap_or_default();
    assert!(
        info.starts_with("1 routes installed, 1 with several next hops; blocked: 203.0.113.128/25"),
        "{info}"
    );
    assert!(kube_gw_routes(&sw, "203.0.113.128/25").is_empty());

    // One upstream goes: the route is replaced by the one with the other next hop — the
    // kernel never loses it (no `Deleted` for it in the route monitor).
    start_leaf_monitor(&mut lab, &sw);
    lab.stop(&b2.name, Duration::from_secs(10));
    let routes = wait_for("kube-gw to replace the route", ESTABLISH, || {
        let r = kube_gw_routes(&sw, "203.0.113.0/24");
        (r.first().is_some_and(|h| h.len() == 1)).then_some(r)
    });
    assert_eq!(routes, [vec!["192.0.2.1".to_string()]]);
    flush_monitor(&lab, &sw);
    let log = lab.log("leafmon");
    assert!(
        log.lines()
            .any(|l| l.contains("203.0.113.0/24 via 192.0.2.1")),
        "the monitor saw the change: {log}"
    );
    assert_eq!(deletions(&log, "203.0.113.0/24"), 0, "{log}");
    assert_eq!(
        foreign_routes(&sw),
        others,
        "routes of other protocols are untouched"
    );

    // A stop (no graceful restart) removes kube-gw's routes and only those.
    let st = lab.stop(&kg.name, Duration::from_secs(30)).unwrap();
    assert_eq!(st.code(), Some(0));
    assert!(kube_gw_routes(&sw, "203.0.113.0/24").is_empty());
    assert_eq!(foreign_routes(&sw), others);
}

#[test]
fn a_restarting_upstream_keeps_its_next_hop_until_its_end_of_rib_and_one_that_dies_otherwise_does_not(
) {
    if !require_root(
        "a_restarting_upstream_keeps_its_next_hop_until_its_end_of_rib_and_one_that_dies_otherwise_does_not",
    ) {
        return;
    }
    // up2 does graceful restart (its capability lists IPv4 unicast); up1 is only "aware"
    // (BIRD's default: the capability without families), so it is not helped.
    let (mut lab, sw, up2, b1, b2, kg, _others) = two_upstreams("graceful restart on;");
    let both = [vec!["192.0.2.1".to_string(), "192.0.2.5".to_string()]];
    // up2 dies without a word: its connection closes, kube-gw keeps its routes as stale.
    lab.signal(&b2.name, "KILL");
    lab.stop(&b2.name, Duration::from_secs(5));
    wait_for("kube-gw to see up2's session go", ESTABLISH, || {
        let j: serde_json::Value =
            serde_json::from_str(&kg.cli(&["bgp", "neighbors", "--json"])).ok()?;
        (j[1]["state"] != "Established").then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        kube_gw_routes(&sw, "203.0.113.0/24"),
        both,
        "kept while up2 restarts"
    );
    // up2 comes back and sends End-of-RIB: the route still has both next hops.
    let config = std::fs::read_to_string(lab.path("up2.conf")).unwrap();
    let b2 = Bird::start(&mut lab, &up2, "up2b", &config);
    b2.wait_established("sw", ESTABLISH);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(kube_gw_routes(&sw, "203.0.113.0/24"), both);
    // up1 dies the same way, but without graceful restart: its next hop goes at once.
    lab.signal(&b1.name, "KILL");
    lab.stop(&b1.name, Duration::from_secs(5));
    let routes = wait_for("kube-gw to drop up1's next hop", ESTABLISH, || {
        let r = kube_gw_routes(&sw, "203.0.113.0/24");
        (r.first().is_some_and(|h| h.len() == 1)).then_some(r)
    });
    assert_eq!(routes, [vec!["192.0.2.5".to_string()]]);
}

#[test]
fn a_graceful_restart_keeps_the_installed_routes_and_sweeps_what_is_not_announced_again() {
    if !require_root(
        "a_graceful_restart_keeps_the_installed_routes_and_sweeps_what_is_not_announced_again",
    ) {
        return;
    }
    let mut lab = Lab::new();
    let sw = lab.node("sw");
    let up = lab.node("up");
    lab.link(&sw, &["192.0.2.2/30"], &up, &["192.0.2.1/30"]);
    // Two static protocols, so one can be switched off while kube-gw is away.
    let bird = Bird::start(
        &mut lab,
        &up,
        "up",
        "router id 192.0.2.1;\nprotocol device {}\n\
         protocol static stays { ipv4; route 203.0.113.0/25 blackhole; }\n\
         protocol static leaves { ipv4; route 203.0.113.128/25 blackhole; }\n\
         protocol bgp sw { local 192.0.2.1 as 65001; neighbor 192.0.2.2 as 65100; hold time 9; \
         connect retry time 1; ipv4 { import none; export all; }; }\n",
    );
    let state = lab.path("bgp-restart");
    let kg = KubeGw::start(
        &mut lab,
        &sw,
        "kg",
        &format!(
            "[node]\nname = \"sw\"\n[vip]\npools = [\"198.51.100.0/24\"]\non-shutdown = \"keep\"\n\
             [ipvs]\nenabled = false\n\
             [bgp]\nasn = 65100\nrouter-id = \"192.0.2.2\"\nhold-time = 9\n\
             graceful-restart = true\nrestart-time = 60\nrestart-state = \"{}\"\n\
             [[bgp.neighbors]]\naddress = \"192.0.2.1\"\nremote-asn = 65001\n\
             import = [\"203.0.113.0/24 le 32\"]\n",
            state.display()
        ),
    );
    bird.wait_established("sw", ESTABLISH);
    let both = |want: bool| {
        move |sw: &Node| {
            let a = kube_gw_routes(sw, "203.0.113.0/25") == [vec!["192.0.2.1".to_string()]];
            let b = kube_gw_routes(sw, "203.0.113.128/25") == [vec!["192.0.2.1".to_string()]];
            (a && b == want).then_some(())
        }
    };
    wait_for("both routes installed", ESTABLISH, || both(true)(&sw));
    start_leaf_monitor(&mut lab, &sw);
    // A graceful stop keeps them: the kernel goes on forwarding while kube-gw is away.
    let st = lab.stop(&kg.name, Duration::from_secs(30)).unwrap();
    assert_eq!(st.code(), Some(0));
    assert!(both(true)(&sw).is_some(), "kept through the stop");
    // Meanwhile the upstream stops announcing one of them.
    bird.birdc(&["disable", "leaves"]);
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        both(true)(&sw).is_some(),
        "nobody removes them while kube-gw is away"
    );
    kg.restart(&mut lab, &sw);
    bird.wait_established("sw", ESTABLISH);
    // Back and synced (the upstream's End-of-RIB): the one not announced again is swept,
    // the other never left the kernel.
    wait_for("the stale route swept", ESTABLISH, || both(false)(&sw));
    flush_monitor(&lab, &sw);
    let log = lab.log("leafmon");
    assert!(
        deletions(&log, "203.0.113.128/25") >= 1,
        "the sweep is a deletion the monitor saw: {log}"
    );
    assert_eq!(
        deletions(&log, "203.0.113.0/25"),
        0,
        "the route announced again never left: {log}"
    );
}
