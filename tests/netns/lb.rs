//! LoadBalancer Services end to end: kube-gw allocates their addresses (one writer, elected),
//! serves and announces them, and its firewall opens only what the Services ask for. A real
//! API server and controller manager, kube-gw in switch namespaces, nmap from client
//! namespaces, a BIRD leaf.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams, ListParams, PostParams};

use crate::bgp::{bird_route, switch_and_leaf};
use crate::controlplane::{block_on, ControlPlane};
use crate::harness::{require_root, wait_for, Node};
use crate::vips::{lo_addresses, Switch};

const CONVERGE: Duration = Duration::from_secs(30);
/// A status written, on a machine busy with other tests (a join, an election, a list).
const ALLOCATE: Duration = Duration::from_secs(90);

/// Waits for `name`'s status to be `want`; on a timeout, says what kube-gw saw.
fn wait_status(sw: &Switch, name: &str, want: &[&str]) {
    let deadline = std::time::Instant::now() + ALLOCATE;
    loop {
        if status_of(&sw.ns, name) == want {
            return;
        }
        if std::time::Instant::now() > deadline {
            let log = sw.lab.log(&sw.kg.name);
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            panic!(
                "{name}'s status is {:?}, not {want:?}, after {ALLOCATE:?}\nkube-gw status: {}\nvips: {}\nlog (last lines, newest first):\n{}",
                status_of(&sw.ns, name),
                sw.kg.try_status().unwrap_or_default(),
                sw.kg.cli_output(&["vips", "--json"]).stdout.len(),
                tail.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn unique(prefix: &str) -> String {
    let uuid = std::fs::read_to_string("/proc/sys/kernel/random/uuid").unwrap();
    format!("{prefix}-{}", &uuid[..8])
}

/// This test's own `loadBalancerClass` (tests share the control plane; each elects its own
/// writer).
fn class() -> String {
    format!("kube-gw.io/{}", unique("lb"))
}

/// A LoadBalancer Service of `class` (or none) in the switch's namespace: `ports` as
/// (port, protocol), `spec` and `annotations` merged in.
fn lb_service(
    sw: &Switch,
    name: &str,
    class: Option<&str>,
    ports: &[(u16, &str)],
    spec: serde_json::Value,
    annotations: serde_json::Value,
) {
    let mut s = serde_json::json!({
        "type": "LoadBalancer",
        "ports": ports.iter().map(|(p, proto)| serde_json::json!({
            "name": format!("p{p}-{}", proto.to_lowercase()), "port": p, "protocol": proto
        })).collect::<Vec<_>>(),
    });
    if let Some(c) = class {
        s["loadBalancerClass"] = c.into();
    }
    for (k, v) in spec.as_object().into_iter().flatten() {
        s[k] = v.clone();
    }
    let svc: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": sw.ns, "labels": {"kube-gw.io/test": sw.ns},
                     "annotations": annotations},
        "spec": s,
    }))
    .unwrap();
    block_on(async {
        Api::<Service>::namespaced(ControlPlane::shared().admin().await, &sw.ns)
            .create(&PostParams::default(), &svc)
            .await
            .unwrap();
    });
}

fn delete(ns: &str, name: &str) {
    block_on(async {
        Api::<Service>::namespaced(ControlPlane::shared().admin().await, ns)
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    });
}

fn services(ns: &str) -> Vec<Service> {
    block_on(async {
        Api::<Service>::namespaced(ControlPlane::shared().admin().await, ns)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
    })
}

/// Each Service's `status.loadBalancer.ingress[].ip`, by name.
fn statuses(ns: &str) -> BTreeMap<String, Vec<String>> {
    services(ns)
        .into_iter()
        .map(|s| {
            let ips = s
                .status
                .and_then(|st| st.load_balancer)
                .and_then(|lb| lb.ingress)
                .into_iter()
                .flatten()
                .filter_map(|i| i.ip)
                .collect();
            (s.metadata.name.unwrap_or_default(), ips)
        })
        .collect()
}

fn status_of(ns: &str, name: &str) -> Vec<String> {
    statuses(ns).remove(name).unwrap_or_default()
}

/// No address is in two Services' statuses.
fn assert_no_address_twice(ns: &str, when: &str) {
    let mut holders: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, ips) in statuses(ns) {
        for ip in ips {
            holders.entry(ip).or_default().push(name.clone());
        }
    }
    let doubled: Vec<_> = holders.iter().filter(|(_, h)| h.len() > 1).collect();
    assert!(
        doubled.is_empty(),
        "{when}: an address on two Services: {doubled:?}"
    );
}

/// The `lb-allocator` component's state on a switch (`leader`, `follower`), if it answers.
fn allocator_role(sw: &Switch) -> Option<String> {
    let s = sw.kg.try_status()?;
    s["components"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == "lb-allocator")
        .and_then(|c| c["state"].as_str())
        .map(String::from)
}

#[test]
fn a_one_address_pool_serves_one_service_the_other_waits_and_twenty_leader_kills_never_give_an_address_twice(
) {
    if !require_root("a_one_address_pool_serves_one_service_the_other_waits_and_twenty_leader_kills_never_give_an_address_twice") {
        return;
    }
    let class = class();
    let vip = format!(
        "pools = [{{ prefix = \"198.51.100.7/32\", allocate = true, name = \"solo\" }}, \
         {{ prefix = \"198.51.100.16/28\", allocate = true, name = \"churn\" }}]\n\
         load-balancer-class = \"{class}\"\n"
    );
    // Fast failover for the test: a Lease lives 4 s.
    let kube = "lease-duration = 4";
    let mut a = Switch::start_custom(None, kube, &vip, "", &[]);
    let ns = a.ns.clone();
    let mut b = Switch::start_custom(Some(ns.clone()), kube, &vip, "", &[]);
    // Services kube-gw must not touch: another class, and no class (allocate-without-class
    // is off).
    lb_service(
        &a,
        "other-class",
        Some("example.com/elsewhere"),
        &[(80, "TCP")],
        serde_json::json!({}),
        serde_json::json!({}),
    );
    lb_service(
        &a,
        "no-class",
        None,
        &[(80, "TCP")],
        serde_json::json!({}),
        serde_json::json!({}),
    );
    let solo = serde_json::json!({"kube-gw.io/address-pool": "solo"});
    lb_service(
        &a,
        "first",
        Some(&class),
        &[(80, "TCP")],
        serde_json::json!({}),
        solo.clone(),
    );
    wait_status(&a, "first", &["198.51.100.7"]);
    lb_service(
        &a,
        "second",
        Some(&class),
        &[(80, "TCP")],
        serde_json::json!({}),
        solo,
    );
    let why = wait_for("second to be told why it waits", CONVERGE, || {
        a.events_of("second")
            .into_iter()
            .find(|(r, _)| r == "AllocationFailed")
            .map(|(_, n)| n)
    });
    assert!(
        why.contains("no free IPv4 address: pool `solo` (198.51.100.7/32) exhausted"),
        "{why}"
    );
    assert!(
        status_of(&ns, "second").is_empty(),
        "second has no address while first has it"
    );
    // Every switch serves the allocated address, whoever wrote it.
    for sw in [&a, &b] {
        wait_for("198.51.100.7 on lo", CONVERGE, || {
            lo_addresses(&sw.node)
                .contains("198.51.100.7/32")
                .then_some(())
        });
    }
    delete(&ns, "first");
    wait_for(
        "second to get 198.51.100.7 once first is gone",
        CONVERGE,
        || (status_of(&ns, "second") == ["198.51.100.7"]).then_some(()),
    );

    // Churn while the leader is killed, 20 times in a row.
    let churn = serde_json::json!({"kube-gw.io/address-pool": "churn"});
    let mut live: Vec<String> = Vec::new();
    for i in 0..20 {
        let a_leads = wait_for("one allocator leader", ALLOCATE, || {
            match (allocator_role(&a).as_deref(), allocator_role(&b).as_deref()) {
                (Some("leader"), Some("follower")) => Some(true),
                (Some("follower"), Some("leader")) => Some(false),
                _ => None,
            }
        });
        let (leader, follower) = if a_leads {
            (&mut a, &mut b)
        } else {
            (&mut b, &mut a)
        };
        leader.lab.signal(&leader.kg.name.clone(), "KILL");
        let name = format!("c{i:02}");
        lb_service(
            follower,
            &name,
            Some(&class),
            &[(80, "TCP")],
            serde_json::json!({}),
            churn.clone(),
        );
        live.push(name);
        if live.len() > 10 {
            delete(&ns, &live.remove(0));
        }
        assert_no_address_twice(&ns, &format!("kill {i}, after the churn"));
        wait_for("the follower to take over", ALLOCATE, || {
            (allocator_role(follower).as_deref() == Some("leader")).then_some(())
        });
        assert_no_address_twice(&ns, &format!("kill {i}, after the takeover"));
        let node = leader.node.clone();
        let kg_name = leader.kg.name.clone();
        // Reaped by the pid the lab started (it was killed above, before the churn).
        let status = leader.lab.stop(&kg_name, Duration::from_secs(5)).unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "kube-gw was killed, not stopped: {status:?}"
        );
        leader.kg.restart(&mut leader.lab, &node);
        assert_no_address_twice(&ns, &format!("kill {i}, after the restart"));
    }
    // Every live churn Service gets an address (14 in the pool, at most 11 asking), none twice.
    wait_for("every churn Service to have an address", ALLOCATE, || {
        let st = statuses(&ns);
        live.iter()
            .all(|n| st.get(n).is_some_and(|ips| ips.len() == 1))
            .then_some(())
    });
    assert_no_address_twice(&ns, "at the end");
    let st = statuses(&ns);
    for n in &live {
        let ip: std::net::IpAddr = st[n][0].parse().unwrap();
        let churn_pool: ipnet::IpNet = "198.51.100.16/28".parse().unwrap();
        assert!(churn_pool.contains(&ip), "{n} got {ip}, outside its pool");
    }
    // Other classes' Services: no status, and kube-gw never wrote to them.
    for s in services(&ns) {
        let name = s.metadata.name.clone().unwrap_or_default();
        if name == "other-class" || name == "no-class" {
            let ingress = s
                .status
                .as_ref()
                .and_then(|st| st.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.clone());
            assert!(
                ingress.unwrap_or_default().is_empty(),
                "{name} got a status: {:?}",
                s.status
            );
            let managers: Vec<String> = s
                .metadata
                .managed_fields
                .iter()
                .flatten()
                .filter_map(|m| m.manager.clone())
                .collect();
            assert!(
                !managers.iter().any(|m| m == "kube-gw"),
                "{name} managed by {managers:?}"
            );
            assert!(!managers.is_empty(), "managedFields are there to check");
        } else if name == "second" || live.contains(&name) {
            let managers: Vec<String> = s
                .metadata
                .managed_fields
                .iter()
                .flatten()
                .filter(|m| m.subresource.as_deref() == Some("status"))
                .filter_map(|m| m.manager.clone())
                .collect();
            assert_eq!(managers, ["kube-gw"], "{name}'s status is kube-gw's");
        }
    }
}

#[test]
fn sharing_keys_dual_stack_and_requested_addresses() {
    if !require_root("sharing_keys_dual_stack_and_requested_addresses") {
        return;
    }
    let class = class();
    let vip = format!(
        "pools = [{{ prefix = \"198.51.100.32/29\", allocate = true, name = \"v4\" }}, \
         {{ prefix = \"2001:db8:100::/120\", allocate = true, name = \"v6\" }}]\n\
         load-balancer-class = \"{class}\"\n"
    );
    let sw = Switch::start_custom(None, "", &vip, "", &[]);
    let ns = sw.ns.clone();
    let c = Some(class.as_str());
    let web = serde_json::json!({"kube-gw.io/sharing-key": "web"});
    let none = serde_json::json!({});
    lb_service(&sw, "share-a", c, &[(80, "TCP")], none.clone(), web.clone());
    wait_for("share-a's address", ALLOCATE, || {
        (!status_of(&ns, "share-a").is_empty()).then_some(())
    });
    lb_service(
        &sw,
        "share-b",
        c,
        &[(443, "TCP"), (53, "UDP")],
        none.clone(),
        web.clone(),
    );
    lb_service(&sw, "share-c", c, &[(80, "TCP")], none.clone(), web.clone());
    lb_service(
        &sw,
        "dual",
        c,
        &[(80, "TCP")],
        serde_json::json!({"ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv4", "IPv6"]}),
        none.clone(),
    );
    lb_service(
        &sw,
        "asked",
        c,
        &[(80, "TCP")],
        serde_json::json!({"loadBalancerIP": "198.51.100.38"}),
        none.clone(),
    );
    lb_service(
        &sw,
        "asked6",
        c,
        &[(80, "TCP")],
        serde_json::json!({"ipFamilies": ["IPv6"], "ipFamilyPolicy": "SingleStack"}),
        serde_json::json!({"kube-gw.io/load-balancer-ips": "2001:db8:100::77"}),
    );
    lb_service(
        &sw,
        "no-node-ports",
        c,
        &[(8080, "TCP")],
        serde_json::json!({"allocateLoadBalancerNodePorts": false}),
        none,
    );
    let st = wait_for(
        "every Service but share-c to have its addresses",
        ALLOCATE,
        || {
            let st = statuses(&ns);
            let done = ["share-b", "asked", "asked6", "no-node-ports"]
                .iter()
                .all(|n| st.get(*n).is_some_and(|v| !v.is_empty()))
                && st.get("dual").is_some_and(|v| v.len() == 2);
            done.then_some(st)
        },
    );
    assert_eq!(
        st["share-b"], st["share-a"],
        "disjoint ports under one key share"
    );
    assert!(
        st["share-c"].is_empty(),
        "port 80 clashes: {:?}",
        st["share-c"]
    );
    let why = wait_for("share-c's Event", CONVERGE, || {
        sw.events_of("share-c")
            .into_iter()
            .find(|(r, _)| r == "AllocationFailed")
            .map(|(_, n)| n)
    });
    assert!(why.contains("port TCP/80 clashes with"), "{why}");
    let dual: Vec<std::net::IpAddr> = st["dual"].iter().map(|a| a.parse().unwrap()).collect();
    assert!(
        dual[0].is_ipv4() && dual[1].is_ipv6(),
        "one of each, in ipFamilies order: {dual:?}"
    );
    assert_eq!(st["asked"], ["198.51.100.38"]);
    assert_eq!(st["asked6"], ["2001:db8:100::77"]);
    // allocateLoadBalancerNodePorts: false is the API server's to honour; kube-gw needs none.
    let nnp = services(&ns)
        .into_iter()
        .find(|s| s.metadata.name.as_deref() == Some("no-node-ports"))
        .unwrap();
    assert!(
        nnp.spec
            .unwrap()
            .ports
            .unwrap()
            .iter()
            .all(|p| p.node_port.is_none()),
        "no node port was allocated"
    );
    // Served on lo, and `kube-gw vips` shows who has what, from which pool.
    for a in [&st["share-a"][0], &dual[1].to_string(), &st["asked6"][0]] {
        let plen = if a.contains(':') { 128 } else { 32 };
        wait_for(&format!("{a} on lo"), CONVERGE, || {
            lo_addresses(&sw.node)
                .contains(&format!("{a}/{plen}"))
                .then_some(())
        });
    }
    let v: serde_json::Value = serde_json::from_str(&sw.kg.cli(&["vips", "--json"])).unwrap();
    let rows = v["allocations"]["services"].as_array().unwrap();
    let row = |n: &str| {
        rows.iter()
            .find(|r| r["service"] == format!("{ns}/{n}"))
            .unwrap()
            .clone()
    };
    assert_eq!(row("share-b")["addresses"][0]["shared"], "web");
    assert_eq!(row("asked6")["addresses"][0]["pool"], "v6");
    assert_eq!(row("share-c")["addresses"].as_array().unwrap().len(), 0);
    assert!(row("share-c")["waiting"][0]
        .as_str()
        .unwrap()
        .contains("clashes"));
    assert_eq!(v["allocations"]["leader"], true);
    let v4 = v["allocations"]["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "v4")
        .unwrap()
        .clone();
    assert_eq!(v4["size"], "6", "a /29 gives 6 addresses");
}

/// nmap's verdict per port: (port, state) from its XML report.
fn nmap(client: &Node, target: &str, ports: &str) -> BTreeMap<u16, String> {
    let out = client.exec(
        "nmap",
        &[
            "-Pn",
            "-n",
            "-sS",
            "-T4",
            "--max-retries",
            "1",
            "--host-timeout",
            "60s",
            "-p",
            ports,
            "-oX",
            "-",
            target,
        ],
    );
    let xml = String::from_utf8_lossy(&out.stdout).to_string();
    let mut states = BTreeMap::new();
    for chunk in xml.split("<port ").skip(1) {
        let port: u16 = chunk
            .split("portid=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("nmap output without a port: {xml}"));
        let state = chunk
            .split("<state state=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or_default()
            .to_string();
        states.insert(port, state);
    }
    assert!(
        !states.is_empty(),
        "nmap reported no port: {xml}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    states
}

fn expect(states: &BTreeMap<u16, String>, want: &[(u16, &str)], what: &str) {
    let want: BTreeMap<u16, String> = want.iter().map(|(p, s)| (*p, s.to_string())).collect();
    assert_eq!(*states, want, "{what}");
}

#[test]
fn the_firewall_opens_only_the_services_ports_honours_source_ranges_and_keeps_bgp_to_neighbors() {
    if !require_root("the_firewall_opens_only_the_services_ports_honours_source_ranges_and_keeps_bgp_to_neighbors") {
        return;
    }
    let class = class();
    let vip = format!(
        "pools = [\"198.51.100.0/25\", {{ prefix = \"198.51.100.128/28\", allocate = true, name = \"lb\" }}]\n\
         load-balancer-class = \"{class}\"\n"
    );
    // The client inside the source range is also the BGP neighbor (passive: kube-gw waits).
    let bgp = "[[bgp.neighbors]]\naddress = \"192.0.2.66\"\nremote-asn = 65066\npassive = true\n";
    let mut sw = Switch::start_custom(None, "", &vip, bgp, &[]);
    let inside = sw.lab.node("inside");
    let outside = sw.lab.node("outside");
    let node = sw.node.clone();
    sw.lab
        .link(&inside, &["192.0.2.66/30"], &node, &["192.0.2.65/30"]);
    sw.lab
        .link(&outside, &["192.0.2.70/30"], &node, &["192.0.2.69/30"]);
    inside.exec("ip", &["route", "add", "default", "via", "192.0.2.65"]);
    outside.exec("ip", &["route", "add", "default", "via", "192.0.2.69"]);
    // Something listens on every port on the switch (as sshd and friends would, on the
    // wildcard address): without the firewall every VIP would answer on all of them.
    let listen = "import socket, threading\n\
        def serve(p):\n\
        \x20   s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
        \x20   s.bind(('0.0.0.0', p)); s.listen(16)\n\
        \x20   while True:\n\
        \x20       c, _ = s.accept(); c.close()\n\
        for p in (22, 80, 443, 8080): threading.Thread(target=serve, args=(p,), daemon=True).start()\n\
        threading.Event().wait()\n";
    sw.lab.spawn(&node, "listeners", "python3", &["-c", listen]);
    sw.service("web", &["198.51.100.10"], None);
    lb_service(
        &sw,
        "restricted",
        Some(&class),
        &[(443, "TCP")],
        serde_json::json!({"loadBalancerSourceRanges": ["192.0.2.66/32"]}),
        serde_json::json!({}),
    );
    let ns = sw.ns.clone();
    wait_status(&sw, "restricted", &["198.51.100.129"]);
    for a in ["198.51.100.10/32", "198.51.100.129/32"] {
        wait_for(&format!("{a} on lo"), CONVERGE, || {
            lo_addresses(&node).contains(a).then_some(())
        });
    }
    wait_for("the firewall to hold both VIPs", CONVERGE, || {
        let v: serde_json::Value = serde_json::from_str(&sw.kg.cli(&["vips", "--json"])).ok()?;
        let f = &v["firewall"];
        let restricted = f["restricted"].as_array()?;
        (f["in_sync"] == true
            && f["vips"] == 2
            && restricted
                .iter()
                .any(|r| r == "198.51.100.129:443/tcp from 192.0.2.66/32"))
        .then_some(())
    });
    // Positive control: the switch's own address is not a VIP; its listeners answer.
    expect(
        &nmap(&outside, "192.0.2.69", "22,80"),
        &[(22, "open"), (80, "open")],
        "the switch's own address",
    );
    // A VIP answers on its Service's port only.
    expect(
        &nmap(&outside, "198.51.100.10", "22,80,443,8080"),
        &[
            (22, "filtered"),
            (80, "open"),
            (443, "filtered"),
            (8080, "filtered"),
        ],
        "198.51.100.10 (web: 80/TCP)",
    );
    // loadBalancerSourceRanges: the client outside is filtered, the one inside connects.
    expect(
        &nmap(&outside, "198.51.100.129", "22,80,443"),
        &[(22, "filtered"), (80, "filtered"), (443, "filtered")],
        "198.51.100.129 from outside the source range",
    );
    expect(
        &nmap(&inside, "198.51.100.129", "80,443"),
        &[(80, "filtered"), (443, "open")],
        "198.51.100.129 from inside the source range",
    );
    // BGP takes only its neighbors.
    expect(
        &nmap(&outside, "192.0.2.69", "179"),
        &[(179, "filtered")],
        "TCP 179 from a non-neighbor",
    );
    expect(
        &nmap(&inside, "192.0.2.65", "179"),
        &[(179, "open")],
        "TCP 179 from the neighbor",
    );
    // The Service goes: its port closes with it (the address leaves lo; what is left of the
    // VIP set no longer has it).
    delete(&ns, "web");
    wait_for("198.51.100.10 to leave lo", CONVERGE, || {
        (!lo_addresses(&node).contains("198.51.100.10/32")).then_some(())
    });
    let table = String::from_utf8_lossy(
        &node
            .exec("nft", &["list", "set", "inet", "kube-gw", "open4"])
            .stdout,
    )
    .to_string();
    assert!(!table.contains("198.51.100.10"), "{table}");
}

#[test]
fn a_loadbalancer_service_is_allocated_served_announced_and_released() {
    if !require_root("a_loadbalancer_service_is_allocated_served_announced_and_released") {
        return;
    }
    let class = class();
    let vip = format!(
        "pools = [{{ prefix = \"198.51.100.64/28\", allocate = true, name = \"lb\" }}]\n\
         load-balancer-class = \"{class}\"\n"
    );
    let (sw, node, _leaf, bird) = switch_and_leaf(
        &vip,
        "[[bgp.neighbors]]\naddress = \"192.0.2.1\"\nremote-asn = 65000\n",
    );
    let ns = sw.ns.clone();
    // As `kubectl apply -f` would: a manifest, and an endpoint for it.
    let manifest = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: shop\n  namespace: {ns}\n  labels:\n    kube-gw.io/test: {ns}\n\
         spec:\n  type: LoadBalancer\n  loadBalancerClass: {class}\n  ports:\n  - name: http\n    port: 80\n    protocol: TCP\n\
         ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: shop-1\n  namespace: {ns}\n  labels:\n    kubernetes.io/service-name: shop\n\
         addressType: IPv4\nports:\n- name: http\n  port: 8080\n  protocol: TCP\nendpoints:\n- addresses: [10.0.0.5]\n  conditions:\n    ready: true\n"
    );
    // This switch is its class's only candidate: it leads once its Node is labelled.
    wait_for("this switch to lead the allocation", ALLOCATE, || {
        (allocator_role(&sw).as_deref() == Some("leader")).then_some(())
    });
    ControlPlane::shared().apply_manifest(&manifest);
    // The lowest free address of the pool: other tests' Services on the shared control
    // plane may use some of it (as externalIPs), and those are never given.
    let shop = wait_for("shop's status to name an address", ALLOCATE, || {
        status_of(&ns, "shop").into_iter().next()
    });
    let pool: ipnet::IpNet = "198.51.100.64/28".parse().unwrap();
    assert!(
        pool.contains(&shop.parse::<std::net::IpAddr>().unwrap()),
        "{shop} is outside its pool"
    );
    let host = format!("{shop}/32");
    wait_for(&format!("{host} on lo"), CONVERGE, || {
        lo_addresses(&node).contains(&host).then_some(())
    });
    let route = wait_for(&format!("the leaf to learn {host}"), CONVERGE, || {
        let r = bird_route(&bird, &host);
        r.lines()
            .any(|l| l.trim() == "BGP.next_hop: 192.0.2.2")
            .then_some(r)
    });
    assert!(route.contains("BGP.as_path: 65010"), "{route}");
    delete(&ns, "shop");
    wait_for(&format!("the leaf to lose {host}"), CONVERGE, || {
        (!bird_route(&bird, &host).contains("BGP.next_hop")).then_some(())
    });
    wait_for(&format!("{host} to leave lo"), CONVERGE, || {
        (!lo_addresses(&node).contains(&host)).then_some(())
    });
    // Released: the next Service gets it.
    lb_service(
        &sw,
        "next",
        Some(&class),
        &[(80, "TCP")],
        serde_json::json!({}),
        serde_json::json!({}),
    );
    wait_status(&sw, "next", &[shop.as_str()]);
}
