//! Graceful restart (RFC 4724) with a real BIRD leaf that installs what it learns into its
//! kernel: kube-gw restarting leaves the leaf's kernel route in place (its own `ip monitor
//! route` sees no deletion, a ping through it loses at most one packet), End-of-RIB after
//! the restart sweeps a VIP removed while kube-gw was away; away longer than the restart
//! time, long-lived graceful restart (RFC 9494) keeps it as LLGR_STALE, then it goes; and
//! with graceful restart off the route goes at the stop.

use std::time::Duration;

use crate::harness::{require_root, wait_for, Node};
use crate::vips::Switch;
use crate::{bird_leaf, ESTABLISH};

const KEPT: &str = "198.51.100.70";
const REMOVED_WHILE_AWAY: &str = "198.51.100.71";
/// The restart time kube-gw announces in the test (short, for the expiry control).
const RESTART_TIME: u64 = 8;
/// The long-lived stale time (RFC 9494) that follows it.
const LONG_LIVED: u64 = 6;
/// The LLGR_STALE community as BIRD prints it.
const LLGR_STALE: &str = "(65535,6)";

/// BIRD's `BGP.community` of its route to `vip`/32 (empty without one).
fn bird_communities(bird: &crate::harness::peers::Bird, vip: &str) -> String {
    bird.birdc(&["show", "route", &format!("{vip}/32"), "all"])
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("BGP.community:")
                .map(|c| c.trim().to_string())
        })
        .unwrap_or_default()
}

/// The leaf kernel's next hop for `vip`/32 (`ip -j route show` → `gateway`), if it has it.
pub(crate) fn leaf_next_hop(leaf: &Node, vip: &str) -> Option<String> {
    let out = leaf.exec("ip", &["-j", "route", "show", &format!("{vip}/32")]);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    j.as_array()?
        .first()
        .and_then(|r| r["gateway"].as_str().map(String::from))
}

/// How many times the leaf's kernel lost `vip`/32, from its `ip -ts monitor route` log: a
/// `Deleted` line not followed by the route's return within 50 ms. (BIRD sometimes rewrites
/// a route as a delete and an add microseconds apart; no packet can miss it, so it is not
/// a loss.)
pub(crate) fn deletions(log: &str, vip: &str) -> usize {
    let needle = format!("{vip} ");
    let seconds = |l: &str| -> Option<f64> {
        let ts = l.strip_prefix('[')?.split(']').next()?;
        let mut hms = ts.split('T').nth(1)?.split(':');
        let h: f64 = hms.next()?.parse().ok()?;
        let m: f64 = hms.next()?.parse().ok()?;
        let s: f64 = hms.next()?.parse().ok()?;
        Some(h * 3600.0 + m * 60.0 + s)
    };
    let events: Vec<(f64, bool)> = log
        .lines()
        .filter(|l| l.contains(&needle))
        .filter_map(|l| Some((seconds(l)?, l.contains("Deleted"))))
        .collect();
    events
        .iter()
        .enumerate()
        .filter(|(i, (t, deleted))| {
            let back_at_once = events[i + 1..]
                .first()
                .is_some_and(|(t2, d2)| !d2 && (t2 - t).rem_euclid(86_400.0) < 0.05);
            *deleted && !back_at_once
        })
        .count()
}

const MARK: &str = "203.0.113.251";

/// `ip -ts monitor route` on the leaf (its log: `leafmon`), proven subscribed before
/// anything happens: the marker route is added again until the monitor has shown it.
pub(crate) fn start_leaf_monitor(lab: &mut crate::harness::Lab, leaf: &Node) {
    lab.spawn(leaf, "leafmon", "ip", &["-ts", "monitor", "route"]);
    let mark = format!("{MARK}/32");
    wait_for("the leaf's route monitor to subscribe", ESTABLISH, || {
        let _ = leaf.try_exec("ip", &["route", "del", "blackhole", &mark]);
        leaf.exec("ip", &["route", "add", "blackhole", &mark]);
        std::thread::sleep(Duration::from_millis(300));
        lab.log("leafmon").contains(MARK).then_some(())
    });
}

/// Makes sure the leaf's monitor has written everything that happened before: the marker
/// route is deleted and its deletion waited for (the monitor writes in order), then added
/// back.
pub(crate) fn flush_monitor(lab: &crate::harness::Lab, leaf: &Node) {
    let before = deletions(&lab.log("leafmon"), MARK);
    leaf.exec("ip", &["route", "del", "blackhole", &format!("{MARK}/32")]);
    wait_for("the monitor to catch up", Duration::from_secs(10), || {
        (deletions(&lab.log("leafmon"), MARK) > before).then_some(())
    });
    leaf.exec("ip", &["route", "add", "blackhole", &format!("{MARK}/32")]);
}

#[test]
fn a_delete_and_add_at_once_is_no_loss() {
    let log = "[2026-11-29T18:43:50.339702] Deleted 198.51.100.70 via 192.0.2.2 dev x proto bird\n\
               [2026-11-29T18:43:50.339759] 198.51.100.70 via 192.0.2.2 dev x proto bird\n\
               [2026-11-29T18:43:52.000000] Deleted 198.51.100.71 via 192.0.2.2 dev x proto bird\n\
               [2026-11-29T18:43:53.000000] 198.51.100.71 via 192.0.2.2 dev x proto bird\n\
               [2026-11-29T18:43:54.000000] Deleted 198.51.100.71 via 192.0.2.2 dev x proto bird\n";
    assert_eq!(deletions(log, "198.51.100.70"), 0);
    assert_eq!(deletions(log, "198.51.100.71"), 2);
    assert_eq!(deletions(log, "198.51.100.7"), 0);
}

/// What BIRD read from kube-gw's graceful-restart capability (`show protocols all`, under
/// "Neighbor capabilities"): (restart time, R bit "Restart recovery", F bit families
/// "AF preserved"); `None` without the capability.
fn bird_sees_restart(bird: &crate::harness::peers::Bird) -> Option<(u32, bool, String)> {
    let all = bird.birdc(&["show", "protocols", "all", "sw"]);
    let neighbor = all.split("Neighbor capabilities").nth(1)?;
    let neighbor = neighbor.split("Session:").next()?;
    let gr = neighbor.split("Graceful restart").nth(1)?;
    let field = |name: &str| {
        gr.lines()
            .find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_string()))
    };
    Some((
        field("Restart time:")?.parse().ok()?,
        gr.lines().any(|l| l.trim() == "Restart recovery"),
        field("AF preserved:").unwrap_or_default(),
    ))
}

/// `graceful_restart` of the neighbor in `kube-gw bgp neighbors --json`.
fn kube_gw_negotiated(kg: &crate::harness::peers::KubeGw) -> serde_json::Value {
    let j: serde_json::Value =
        serde_json::from_str(&kg.cli(&["bgp", "neighbors", "--json"])).unwrap();
    j[0]["graceful_restart"].clone()
}

/// kube-gw without a cluster: graceful restart (60 s) and a static prefix for `KEPT`,
/// one neighbor 192.0.2.1 (AS 65000) with `neighbor_extra` lines.
fn static_gr_switch(state: &std::path::Path, hold: u16, neighbor_extra: &str) -> String {
    format!(
        "[node]\nname = \"sw\"\n[vip]\npools = [\"198.51.100.0/24\"]\non-shutdown = \"keep\"\n\
         [ipvs]\nenabled = false\n\
         [bgp]\nasn = 65010\nrouter-id = \"192.0.2.20\"\nhold-time = {hold}\n\
         graceful-restart = true\nrestart-time = 60\nrestart-state = \"{}\"\n\
         static-prefixes = [\"{KEPT}/32\"]\n\
         [[bgp.neighbors]]\naddress = \"192.0.2.1\"\nremote-asn = 65000\n{neighbor_extra}",
        state.display()
    )
}

/// `packets transmitted, received` of a finished ping's summary.
fn ping_counts(log: &str) -> Option<(u32, u32)> {
    let line = log.lines().find(|l| l.contains("packets transmitted"))?;
    let mut nums = line
        .split(',')
        .map(|p| p.split_whitespace().next().and_then(|n| n.parse().ok()));
    Some((nums.next()??, nums.next()??))
}

#[test]
fn a_graceful_restart_keeps_the_leaf_s_route_and_end_of_rib_sweeps_what_went() {
    if !require_root("a_graceful_restart_keeps_the_leaf_s_route_and_end_of_rib_sweeps_what_went") {
        return;
    }
    let state = std::env::temp_dir().join(format!("kube-gw-gr-{}", std::process::id()));
    let _ = std::fs::remove_file(&state);
    let bgp = format!(
        "hold-time = 9\ndrain-time = 1\ngraceful-restart = true\nrestart-time = {RESTART_TIME}\n\
         long-lived-stale-time = {LONG_LIVED}\n\
         restart-state = \"{}\"\n[[bgp.neighbors]]\naddress = \"192.0.2.1\"\nremote-asn = 65000\n",
        state.display()
    );
    let mut sw = Switch::start_with("on-shutdown = \"keep\"", &bgp);
    let leaf = sw.lab.node("leaf");
    let node = sw.node.clone();
    sw.lab
        .link(&node, &["192.0.2.2/30"], &leaf, &["192.0.2.1/30"]);
    let bird = crate::harness::peers::Bird::start(
        &mut sw.lab,
        &leaf,
        "leaf",
        &bird_leaf(
            "192.0.2.1",
            "192.0.2.1",
            65000,
            &[("sw", "192.0.2.2", 65010)],
        ),
    );
    bird.wait_established("sw", ESTABLISH);
    sw.service("kept", &[KEPT], Some("10.0.0.5"));
    sw.service("removed", &[REMOVED_WHILE_AWAY], Some("10.0.0.6"));
    for vip in [KEPT, REMOVED_WHILE_AWAY] {
        wait_for(
            &format!("the leaf's kernel to route {vip}"),
            ESTABLISH,
            || (leaf_next_hop(&leaf, vip)? == "192.0.2.2").then_some(()),
        );
    }
    // The first start in this boot: the capability with its restart time, neither
    // restarting (R) nor with forwarding state kept (F).
    assert_eq!(
        bird_sees_restart(&bird),
        Some((RESTART_TIME as u32, false, String::new()))
    );

    // The leaf's route notifications, subscribed before anything happens (a marker).
    start_leaf_monitor(&mut sw.lab, &leaf);
    // A probe through the leaf's route: 10 pings a second across the restart.
    sw.lab.spawn(
        &leaf,
        "probe",
        "ping",
        &["-n", "-i", "0.1", "-w", "12", KEPT],
    );

    // 1. Restart. kube-gw stops without withdrawing; while it is away the leaf keeps
    //    forwarding to it (the addresses stay), and a Service is deleted meanwhile.
    std::thread::sleep(Duration::from_secs(1));
    let st = sw.lab.stop(&sw.kg.name, Duration::from_secs(30)).unwrap();
    assert_eq!(st.code(), Some(0), "{}", sw.lab.log(&sw.kg.name));
    sw.delete_service("removed");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        leaf_next_hop(&leaf, KEPT).as_deref(),
        Some("192.0.2.2"),
        "the leaf dropped the route while kube-gw was away\nBIRD: {}\nkube-gw: {}",
        bird.birdc(&["show", "protocols", "all", "sw"]),
        sw.lab.log(&sw.kg.name)
    );
    assert_ne!(
        bird.protocol_info("sw"),
        "Established",
        "the session is gone meanwhile"
    );
    sw.kg.restart(&mut sw.lab, &node);
    bird.wait_established("sw", ESTABLISH);
    // Restarted in the same boot: R, and F for both families.
    assert_eq!(
        bird_sees_restart(&bird),
        Some((RESTART_TIME as u32, true, "ipv4 ipv6".into()))
    );
    assert_eq!(kube_gw_negotiated(&sw.kg), true);
    // End-of-RIB: the VIP deleted while kube-gw was away leaves the leaf; the other stays.
    wait_for(
        "End-of-RIB to sweep the VIP removed while kube-gw was away",
        ESTABLISH,
        || {
            leaf_next_hop(&leaf, REMOVED_WHILE_AWAY)
                .is_none()
                .then_some(())
        },
    );
    assert_eq!(leaf_next_hop(&leaf, KEPT).as_deref(), Some("192.0.2.2"));
    assert!(
        sw.lab
            .log(&sw.kg.name)
            .contains("restarted in the same boot"),
        "{}",
        sw.lab.log(&sw.kg.name)
    );
    // The probe: at most one packet lost across the restart.
    wait_for("the probe to finish", Duration::from_secs(30), || {
        (!sw.lab.running("probe")).then_some(())
    });
    let (sent, received) = ping_counts(&sw.lab.log("probe")).expect("ping's summary");
    assert!(
        sent >= 80 && sent - received <= 1,
        "{sent} sent, {received} received:\n{}",
        sw.lab.log("probe")
    );
    // The leaf's kernel never deleted the kept route; it did delete the swept one (so the
    // monitor sees deletions).
    // (`ip monitor` writes what the kernel told it a moment after the kernel acted: wait.)
    wait_for(
        "the monitor to record the swept VIP's deletion",
        Duration::from_secs(5),
        || (deletions(&sw.lab.log("leafmon"), REMOVED_WHILE_AWAY) == 1).then_some(()),
    );
    flush_monitor(&sw.lab, &leaf);
    let mon = sw.lab.log("leafmon");
    assert_eq!(deletions(&mon, KEPT), 0, "{mon}");

    // 2. Away longer than the restart time: with long-lived graceful restart (RFC 9494)
    //    the leaf keeps the route, now marked LLGR_STALE (65535:6), for the long-lived
    //    stale time; then it goes.
    let st = sw.lab.stop(&sw.kg.name, Duration::from_secs(30)).unwrap();
    assert_eq!(st.code(), Some(0));
    let stopped = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs(RESTART_TIME / 2));
    assert_eq!(
        leaf_next_hop(&leaf, KEPT).as_deref(),
        Some("192.0.2.2"),
        "kept for the restart time"
    );
    assert!(!bird_communities(&bird, KEPT).contains(LLGR_STALE));
    let marked = wait_for(
        "the route to turn LLGR_STALE after the restart time",
        Duration::from_secs(RESTART_TIME + 10),
        || {
            let c = bird_communities(&bird, KEPT);
            c.contains(LLGR_STALE).then_some(c)
        },
    );
    assert!(
        stopped.elapsed() >= Duration::from_secs(RESTART_TIME - 1),
        "LLGR_STALE after {:?} ({marked}), before the restart time",
        stopped.elapsed()
    );
    assert_eq!(leaf_next_hop(&leaf, KEPT).as_deref(), Some("192.0.2.2"));
    flush_monitor(&sw.lab, &leaf);
    assert_eq!(deletions(&sw.lab.log("leafmon"), KEPT), 0);
    wait_for(
        "the stale route to expire after the long-lived stale time",
        Duration::from_secs(LONG_LIVED + 10),
        || (deletions(&sw.lab.log("leafmon"), KEPT) == 1).then_some(()),
    );
    assert!(stopped.elapsed() >= Duration::from_secs(RESTART_TIME + LONG_LIVED - 1));
    assert_eq!(leaf_next_hop(&leaf, KEPT), None);

    // 3. Graceful restart off: the same stop withdraws (after the drain time).
    let text = std::fs::read_to_string(&sw.kg.config).unwrap();
    std::fs::write(
        &sw.kg.config,
        text.replace("graceful-restart = true", "graceful-restart = false"),
    )
    .unwrap();
    sw.kg.restart(&mut sw.lab, &node);
    wait_for("the leaf to learn the route again", ESTABLISH, || {
        (leaf_next_hop(&leaf, KEPT)? == "192.0.2.2").then_some(())
    });
    assert_eq!(bird_sees_restart(&bird), None);
    assert_eq!(kube_gw_negotiated(&sw.kg), false);
    let st = sw.lab.stop(&sw.kg.name, Duration::from_secs(30)).unwrap();
    assert_eq!(st.code(), Some(0));
    // Withdrawn before kube-gw ended; the leaf's kernel follows BIRD within moments (far
    // below the hold time, 9 s, and the restart time).
    wait_for(
        "the leaf to lose the withdrawn route",
        Duration::from_secs(3),
        || leaf_next_hop(&leaf, KEPT).is_none().then_some(()),
    );
    wait_for("the monitor to record it", Duration::from_secs(10), || {
        (deletions(&sw.lab.log("leafmon"), KEPT) == 2).then_some(())
    });

    // 4. Graceful restart on, but the peer does not offer it (BIRD `graceful restart off`):
    //    that session gets the ordinary stop, withdrawal and Cease / Administrative Shutdown.
    let conf = sw.lab.path("leaf.conf");
    let text = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(
        &conf,
        text.replace("hold time 9;", "hold time 9; graceful restart off;"),
    )
    .unwrap();
    let out = bird.birdc(&["configure"]);
    assert!(out.contains("Reconfigur"), "{out}");
    let text = std::fs::read_to_string(&sw.kg.config).unwrap();
    std::fs::write(
        &sw.kg.config,
        text.replace("graceful-restart = false", "graceful-restart = true"),
    )
    .unwrap();
    sw.kg.restart(&mut sw.lab, &node);
    wait_for("the leaf to learn the route again", ESTABLISH, || {
        (leaf_next_hop(&leaf, KEPT)? == "192.0.2.2").then_some(())
    });
    assert_eq!(
        bird_sees_restart(&bird).map(|r| r.0),
        Some(RESTART_TIME as u32)
    );
    assert_eq!(kube_gw_negotiated(&sw.kg), false);
    let st = sw.lab.stop(&sw.kg.name, Duration::from_secs(30)).unwrap();
    assert_eq!(st.code(), Some(0));
    wait_for(
        "the leaf to lose the withdrawn route",
        Duration::from_secs(3),
        || leaf_next_hop(&leaf, KEPT).is_none().then_some(()),
    );
    let info = bird.birdc(&["show", "protocols", "sw"]);
    assert!(info.contains("Administrative shutdown"), "{info}");
    let _ = std::fs::remove_file(&state);
}

/// kube-gw with graceful restart and BFD toward a BIRD leaf (300 ms × 3, a 90 s hold time).
/// kube-gw's BFD falls silent at a graceful stop (no AdminDown). BIRD with `bfd graceful`
/// takes the BFD timeout for the restart it is: the route stays. The control: the same BIRD
/// with plain `bfd on` takes it as a dead path and drops the route within a second or two.
#[test]
fn with_bfd_the_peer_that_knows_a_restart_keeps_the_route_through_the_bfd_timeout() {
    if !require_root(
        "with_bfd_the_peer_that_knows_a_restart_keeps_the_route_through_the_bfd_timeout",
    ) {
        return;
    }
    let state = std::env::temp_dir().join(format!("kube-gw-gr-bfd-{}", std::process::id()));
    let _ = std::fs::remove_file(&state);
    let bgp = format!(
        "hold-time = 90\ngraceful-restart = true\nrestart-time = 60\nrestart-state = \"{}\"\n\
         [[bgp.neighbors]]\naddress = \"192.0.2.1\"\nremote-asn = 65000\nbfd = true\n",
        state.display()
    );
    let mut sw = Switch::start_with("on-shutdown = \"keep\"", &bgp);
    let leaf = sw.lab.node("leaf");
    let node = sw.node.clone();
    sw.lab
        .link(&node, &["192.0.2.2/30"], &leaf, &["192.0.2.1/30"]);
    let conf = |bfd: &str| {
        format!(
            "{}protocol bfd {{ interface \"*\" {{ min rx interval 300 ms; min tx interval 300 ms; multiplier 3; }}; }}\n",
            bird_leaf("192.0.2.1", "192.0.2.1", 65000, &[("sw", "192.0.2.2", 65010)]).replace(
                "hold time 9;",
                &format!("hold time 90; {bfd}; error wait time 1, 5;"),
            )
        )
    };
    let bird =
        crate::harness::peers::Bird::start(&mut sw.lab, &leaf, "leaf", &conf("bfd graceful"));
    bird.wait_established("sw", ESTABLISH);
    sw.service("kept", &[KEPT], Some("10.0.0.5"));
    let bfd_up = || {
        bird.birdc(&["show", "bfd", "sessions"])
            .lines()
            .any(|l| l.starts_with("192.0.2.2 ") && l.split_whitespace().nth(2) == Some("Up"))
    };
    wait_for("the route and BFD Up at the leaf", ESTABLISH, || {
        (leaf_next_hop(&leaf, KEPT)? == "192.0.2.2" && bfd_up()).then_some(())
    });
    start_leaf_monitor(&mut sw.lab, &leaf);

    // Stopped for three seconds, three times BFD's detection time: BIRD's BFD goes Down
    // (the attempt), BIRD keeps the route (`bfd graceful`).
    let st = sw.lab.stop(&sw.kg.name, Duration::from_secs(30)).unwrap();
    assert_eq!(st.code(), Some(0), "{}", sw.lab.log(&sw.kg.name));
    wait_for(
        "BIRD's BFD session to go Down",
        Duration::from_secs(5),
        || (!bfd_up()).then_some(()),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(leaf_next_hop(&leaf, KEPT).as_deref(), Some("192.0.2.2"));
    sw.kg.restart(&mut sw.lab, &node);
    bird.wait_established("sw", ESTABLISH);
    wait_for("BFD Up again", ESTABLISH, || bfd_up().then_some(()));
    assert_eq!(leaf_next_hop(&leaf, KEPT).as_deref(), Some("192.0.2.2"));
    flush_monitor(&sw.lab, &leaf);
    assert_eq!(
        deletions(&sw.lab.log("leafmon"), KEPT),
        0,
        "{}",
        sw.lab.log("leafmon")
    );

    // The control: plain `bfd on`. The same stop, and BIRD drops the route at the BFD
    // timeout, long before the restart time (60 s).
    std::fs::write(sw.lab.path("leaf.conf"), conf("bfd on")).unwrap();
    let out = bird.birdc(&["configure"]);
    assert!(out.contains("Reconfigur"), "{out}");
    wait_for(
        "the session and BFD after the reconfiguration",
        ESTABLISH,
        || {
            (bird.protocol_info("sw") == "Established"
                && bfd_up()
                && leaf_next_hop(&leaf, KEPT).is_some())
            .then_some(())
        },
    );
    flush_monitor(&sw.lab, &leaf);
    let before = deletions(&sw.lab.log("leafmon"), KEPT);
    let st = sw.lab.stop(&sw.kg.name, Duration::from_secs(30)).unwrap();
    assert_eq!(st.code(), Some(0));
    wait_for(
        "plain `bfd on` to drop the route at the BFD timeout",
        Duration::from_secs(10),
        || (deletions(&sw.lab.log("leafmon"), KEPT) > before).then_some(()),
    );
    let _ = std::fs::remove_file(&state);
}

/// FRR as the helper (`bgp graceful-restart`, with zebra installing into the leaf's kernel):
/// kube-gw restarted (static prefixes, no cluster) → FRR reads R and F in the capability,
/// and its kernel route is never deleted.
#[test]
fn frr_keeps_the_route_in_its_kernel_through_a_graceful_restart() {
    if !require_root("frr_keeps_the_route_in_its_kernel_through_a_graceful_restart") {
        return;
    }
    let mut lab = crate::harness::Lab::new();
    let sw = lab.node("sw");
    let leaf = lab.node("leaf");
    lab.link(&sw, &["192.0.2.2/30"], &leaf, &["192.0.2.1/30"]);
    let frr = crate::harness::peers::Frr::start_with_zebra(
        &mut lab,
        &leaf,
        "frr",
        "frr defaults datacenter\nrouter bgp 65000\n bgp router-id 192.0.2.1\n\
         no bgp ebgp-requires-policy\n bgp graceful-restart\n\
         neighbor 192.0.2.2 remote-as 65010\n neighbor 192.0.2.2 timers connect 1\n\
         address-family ipv4 unicast\n  neighbor 192.0.2.2 activate\n exit-address-family\n",
    );
    let state = lab.path("bgp-restart");
    let kg =
        crate::harness::peers::KubeGw::start(&mut lab, &sw, "kg", &static_gr_switch(&state, 9, ""));
    frr.wait_established("192.0.2.2", ESTABLISH);
    wait_for("FRR's kernel route", ESTABLISH, || {
        (leaf_next_hop(&leaf, KEPT)? == "192.0.2.2").then_some(())
    });
    // What FRR read from the OPEN: (R bit, F bit for IPv4 unicast).
    let frr_sees = || {
        let j: serde_json::Value =
            serde_json::from_str(&frr.vtysh("show bgp neighbors 192.0.2.2 json"))
                .unwrap_or_default();
        let n = &j["192.0.2.2"]["gracefulRestartInfo"];
        (
            n["remoteGrMode"].as_str().unwrap_or_default().to_string(),
            n["rBit"].as_bool(),
            n["ipv4Unicast"]["fBit"].as_bool(),
        )
    };
    assert_eq!(
        frr_sees(),
        ("Restart".to_string(), Some(false), Some(false))
    );
    start_leaf_monitor(&mut lab, &leaf);

    let st = lab.stop(&kg.name, Duration::from_secs(30)).unwrap();
    assert_eq!(st.code(), Some(0), "{}", lab.log(&kg.name));
    std::thread::sleep(Duration::from_secs(2));
    assert_ne!(frr.peer_state("192.0.2.2"), "Established");
    assert_eq!(leaf_next_hop(&leaf, KEPT).as_deref(), Some("192.0.2.2"));
    kg.restart(&mut lab, &sw);
    frr.wait_established("192.0.2.2", ESTABLISH);
    assert_eq!(frr_sees(), ("Restart".to_string(), Some(true), Some(true)));
    // FRR got End-of-RIB and leaves its stale state; the route was never deleted.
    wait_for("FRR to end the restart", ESTABLISH, || {
        let j: serde_json::Value =
            serde_json::from_str(&frr.vtysh("show bgp ipv4 unicast 198.51.100.70/32 json"))
                .unwrap_or_default();
        let stale = j["paths"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["stale"].as_bool() == Some(true));
        (j["paths"].as_array().is_some_and(|p| !p.is_empty()) && !stale).then_some(())
    });
    assert_eq!(leaf_next_hop(&leaf, KEPT).as_deref(), Some("192.0.2.2"));
    // The monitor does see deletions (the marker's), and has written all before it.
    flush_monitor(&lab, &leaf);
    let mon = lab.log("leafmon");
    assert_eq!(deletions(&mon, KEPT), 0, "{mon}");
    // RFC 8538: both sides set the N bit, so a drain's Administrative Shutdown goes inside
    // a Hard Reset — FRR drops the routes instead of keeping them for a restart.
    let neighbor = || -> serde_json::Value {
        let j: serde_json::Value =
            serde_json::from_str(&frr.vtysh("show bgp neighbors 192.0.2.2 json"))
                .unwrap_or_default();
        j["192.0.2.2"].clone()
    };
    assert_eq!(neighbor()["gracefulRestartInfo"]["nBit"], true);
    kg.cli(&["drain"]);
    let n = wait_for("FRR to record the drain's NOTIFICATION", ESTABLISH, || {
        let n = neighbor();
        (n["bgpState"] != "Established" && n["lastErrorCodeSubcode"].is_string()).then_some(n)
    });
    assert_eq!(n["lastNotificationHardReset"], true, "{n}");
    assert_eq!(n["lastErrorCodeSubcode"], "0602", "{n}");
    assert_eq!(
        n["lastShutdownDescription"], "maintenance: kube-gw drain",
        "{n}"
    );
    wait_for(
        "the leaf to lose the route (not kept stale)",
        ESTABLISH,
        || leaf_next_hop(&leaf, KEPT).is_none().then_some(()),
    );
}

/// FRR as the helper with BFD on the session: kube-gw's graceful stop closes the TCP
/// connection first (FRR enters helper mode) and its BFD falls silent; the BFD timeout that
/// follows does not make FRR drop the stale route — with `neighbor X bfd
/// check-control-plane-failure` (which reads the C bit, 0 in kube-gw's BFD) and without it.
#[test]
fn frr_keeps_the_route_through_the_bfd_timeout_of_a_graceful_restart() {
    if !require_root("frr_keeps_the_route_through_the_bfd_timeout_of_a_graceful_restart") {
        return;
    }
    for extra in ["neighbor 192.0.2.2 bfd check-control-plane-failure\n", ""] {
        frr_bfd_restart(extra);
    }
}

fn frr_bfd_restart(extra: &str) {
    let mut lab = crate::harness::Lab::new();
    let sw = lab.node("sw");
    let leaf = lab.node("leaf");
    lab.link(&sw, &["192.0.2.2/30"], &leaf, &["192.0.2.1/30"]);
    let frr = crate::harness::peers::Frr::start_with_bfd(
        &mut lab,
        &leaf,
        "frr",
        &format!(
            "frr defaults datacenter\nrouter bgp 65000\n bgp router-id 192.0.2.1\n\
             no bgp ebgp-requires-policy\n bgp graceful-restart\n\
             neighbor 192.0.2.2 remote-as 65010\n neighbor 192.0.2.2 timers 30 90\n\
             neighbor 192.0.2.2 timers connect 1\n neighbor 192.0.2.2 bfd\n {extra}\
             address-family ipv4 unicast\n  neighbor 192.0.2.2 activate\n exit-address-family\n"
        ),
        "",
    );
    let state = lab.path("bgp-restart");
    let kg = crate::harness::peers::KubeGw::start(
        &mut lab,
        &sw,
        "kg",
        &static_gr_switch(&state, 90, "bfd = true\n"),
    );
    let bfd_up = || {
        let v: serde_json::Value =
            serde_json::from_str(&frr.bfdd("show bfd peers json")).unwrap_or_default();
        v.as_array()
            .into_iter()
            .flatten()
            .any(|p| p["peer"] == "192.0.2.2" && p["status"] == "up")
    };
    wait_for("the route and BFD Up at FRR", ESTABLISH, || {
        (leaf_next_hop(&leaf, KEPT)? == "192.0.2.2" && bfd_up()).then_some(())
    });
    start_leaf_monitor(&mut lab, &leaf);
    let st = lab.stop(&kg.name, Duration::from_secs(30)).unwrap();
    assert_eq!(st.code(), Some(0), "{}", lab.log(&kg.name));
    wait_for(
        "FRR's BFD session to go down",
        Duration::from_secs(5),
        || (!bfd_up()).then_some(()),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(leaf_next_hop(&leaf, KEPT).as_deref(), Some("192.0.2.2"));
    kg.restart(&mut lab, &sw);
    frr.wait_established("192.0.2.2", ESTABLISH);
    wait_for("BFD Up again", ESTABLISH, || bfd_up().then_some(()));
    assert_eq!(leaf_next_hop(&leaf, KEPT).as_deref(), Some("192.0.2.2"));
    flush_monitor(&lab, &leaf);
    let mon = lab.log("leafmon");
    assert_eq!(deletions(&mon, KEPT), 0, "{extra}: {mon}");
}
