//! The two places kube-gw can have on a switch. Here (b): the switch OS already runs FRR
//! (SONiC, Cumulus), which owns port 179 toward the fabric. kube-gw runs no listener, peers
//! with the local FRR over the loopback (iBGP, the switch's AS), announces the switch's own
//! address as next hop, and FRR carries the VIPs to the leaf.

use std::time::Duration;

use crate::harness::peers::{Bird, Frr, KubeGw};
use crate::harness::{require_root, wait_for, Lab};
use crate::restart::leaf_next_hop;
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
