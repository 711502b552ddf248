//! Service addresses on the loopback, end to end: a real API server, kube-gw in a switch
//! namespace, and the kernel's own view of `lo` (`ip -j addr`, `ip monitor`).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, PostParams};

use crate::controlplane::{block_on, ControlPlane};
use crate::harness::peers::KubeGw;
use crate::harness::{require_root, wait_for, Lab, Node};

const CONVERGE: Duration = Duration::from_secs(30);

pub(crate) fn unique(prefix: &str) -> String {
    let uuid = std::fs::read_to_string("/proc/sys/kernel/random/uuid").unwrap();
    format!("{prefix}-{}", &uuid[..8])
}

/// Addresses on `lo` in `node`, as `addr/prefix`.
pub(crate) fn lo_addresses(node: &Node) -> BTreeSet<String> {
    let out = node.exec("ip", &["-j", "addr", "show", "dev", "lo"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect()
}

pub(crate) fn wait_address(node: &Node, addr: &str, present: bool, within: Duration) {
    wait_for(
        &format!(
            "{addr} to be {} on lo",
            if present { "present" } else { "absent" }
        ),
        within,
        || (lo_addresses(node).contains(addr) == present).then_some(()),
    );
}

/// A switch namespace with kube-gw joined to the shared control plane.
pub(crate) struct Switch {
    pub(crate) lab: Lab,
    pub(crate) node: Node,
    pub(crate) kg: KubeGw,
    pub(crate) ns: String,
    cp: &'static ControlPlane,
}

impl Switch {
    pub(crate) fn start(extra_vip: &str) -> Self {
        Self::start_with(extra_vip, "")
    }

    /// With `extra` appended to the configuration (after `[bgp]`: neighbors).
    pub(crate) fn start_with(extra_vip: &str, extra: &str) -> Self {
        Self::start_in(None, extra_vip, extra)
    }

    /// Serving the Services of namespace `ns` (shared with other switches), or of a new one.
    pub(crate) fn start_in(ns: Option<String>, extra_vip: &str, extra: &str) -> Self {
        Self::start_in_wrapped(ns, extra_vip, extra, &[])
    }

    /// [`start_in`](Self::start_in) with `wrap` in front of kube-gw's command.
    pub(crate) fn start_in_wrapped(
        ns: Option<String>,
        extra_vip: &str,
        extra: &str,
        wrap: &[&str],
    ) -> Self {
        Self::start_custom(ns, "", extra_vip, extra, wrap)
    }

    /// With `kubernetes` lines in `[kubernetes]`; `extra_vip` may bring its own `pools`.
    pub(crate) fn start_custom(
        ns: Option<String>,
        kubernetes: &str,
        extra_vip: &str,
        extra: &str,
        wrap: &[&str],
    ) -> Self {
        Self::start_as(
            unique("spine"),
            None,
            ns,
            kubernetes,
            extra_vip,
            extra,
            wrap,
        )
    }

    /// [`start_custom`](Self::start_custom) as the Node `name`, through the API server on
    /// `api` (a port on the host's loopback; the shared control plane's when `None`).
    /// `kubernetes` lines with a `bootstrap-token-file` replace the kubeconfig (a bootstrap
    /// join); with a `state-dir`, they replace the lab's.
    pub(crate) fn start_as(
        name: String,
        api: Option<u16>,
        ns: Option<String>,
        kubernetes: &str,
        extra_vip: &str,
        extra: &str,
        wrap: &[&str],
    ) -> Self {
        let cp = ControlPlane::shared();
        cp.bind_switch(&name);
        if extra.contains("[gateway]") {
            cp.bind_switch_gateway(&name);
        }
        let mut lab = Lab::new();
        let node = lab.node("switch");
        let shared: u16 = cp.server.rsplit(':').next().unwrap().parse().unwrap();
        let port = api.unwrap_or(shared);
        lab.forward_host_port(&node, port);
        let kc_path = lab.path(&format!("{name}.kubeconfig"));
        cp.write_node_kubeconfig(&name, &kc_path);
        if port != shared {
            let kc = std::fs::read_to_string(&kc_path).unwrap();
            std::fs::write(
                &kc_path,
                kc.replace(&cp.server, &format!("https://127.0.0.1:{port}")),
            )
            .unwrap();
        }
        // Each test serves only its own Services: other tests share the control plane.
        let ns = ns.unwrap_or_else(|| unique("vips"));
        // The host kernel may lack IPVS (the real-kernel lab tests that side): VIPs are
        // announced without it unless a test brings its own `[ipvs]` section.
        let pools = if extra_vip.contains("pools = ") {
            ""
        } else {
            "pools = [\"198.51.100.0/24\", \"2001:db8:100::/64\"]"
        };
        let ipvs = if extra_vip.contains("[ipvs]") {
            ""
        } else {
            "[ipvs]\nenabled = false\n"
        };
        let credentials = if kubernetes.contains("bootstrap-token-file") {
            String::new()
        } else {
            format!("kubeconfig = \"{}\"", kc_path.display())
        };
        let state = if kubernetes.contains("state-dir") {
            String::new()
        } else {
            format!("state-dir = \"{}\"", lab.path("state").display())
        };
        let config = format!(
            r#"[node]
name = "{name}"

[kubernetes]
{credentials}
service-cidrs = ["10.96.0.0/12"]
{state}
{kubernetes}

[vip]
{pools}
service-selector = "kube-gw.io/test={ns}"
{extra_vip}
{ipvs}

[bgp]
asn = 65010
router-id = "192.0.2.20"
{extra}
"#
        );
        let kg = KubeGw::start_wrapped(&mut lab, &node, &name, &config, wrap);
        wait_for("kube-gw to join", CONVERGE, || {
            let s = kg.status();
            let joined = s["components"]
                .as_array()?
                .iter()
                .any(|c| c["name"] == "kubernetes" && c["state"] == "joined");
            joined.then_some(())
        });
        cp.create_namespace(&ns);
        Switch {
            lab,
            node,
            kg,
            ns,
            cp,
        }
    }

    pub(crate) fn service(&self, name: &str, ips: &[&str], ready_endpoint: Option<&str>) {
        self.service_annotated(name, ips, ready_endpoint, serde_json::json!({}));
    }

    /// A Service with annotations.
    pub(crate) fn service_annotated(
        &self,
        name: &str,
        ips: &[&str],
        ready_endpoint: Option<&str>,
        annotations: serde_json::Value,
    ) {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": self.ns, "labels": {"kube-gw.io/test": self.ns},
                         "annotations": annotations},
            "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}], "externalIPs": ips}
        }))
        .unwrap();
        block_on(async {
            let client = self.cp.admin().await;
            Api::<Service>::namespaced(client.clone(), &self.ns)
                .create(&PostParams::default(), &svc)
                .await
                .unwrap();
            if let Some(ep) = ready_endpoint {
                let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("{name}-1"), "namespace": self.ns,
                                 "labels": {"kubernetes.io/service-name": name}},
                    "addressType": "IPv4",
                    "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                    "endpoints": [{"addresses": [ep], "conditions": {"ready": true}}]
                }))
                .unwrap();
                Api::<EndpointSlice>::namespaced(client, &self.ns)
                    .create(&PostParams::default(), &slice)
                    .await
                    .unwrap();
            }
        });
    }

    /// One more ready endpoint for `service`, in its own EndpointSlice (`IPv4` or `IPv6`).
    pub(crate) fn add_endpoint(&self, service: &str, slice: &str, address_type: &str, ep: &str) {
        let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": slice, "namespace": self.ns,
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": address_type,
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ep], "conditions": {"ready": true}}]
        }))
        .unwrap();
        block_on(async {
            Api::<EndpointSlice>::namespaced(self.cp.admin().await, &self.ns)
                .create(&PostParams::default(), &slice)
                .await
                .unwrap();
        });
    }

    pub(crate) fn delete_service(&self, name: &str) {
        block_on(async {
            Api::<Service>::namespaced(self.cp.admin().await, &self.ns)
                .delete(name, &DeleteParams::default())
                .await
                .unwrap();
        });
    }

    pub(crate) fn events_of(&self, service: &str) -> Vec<(String, String)> {
        block_on(async {
            Api::<Event>::namespaced(self.cp.admin().await, &self.ns)
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(service))
                .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
                .collect()
        })
    }
}

#[test]
fn service_addresses_appear_on_lo_and_refusals_become_events() {
    if !require_root("service_addresses_appear_on_lo_and_refusals_become_events") {
        return;
    }
    let mut sw = Switch::start("");
    // An operator's address in the same pool, on the same interface: never touched.
    sw.node
        .exec("ip", &["addr", "add", "198.51.100.200/32", "dev", "lo"]);

    sw.service(
        "web",
        &["198.51.100.10", "2001:db8:100::10"],
        Some("192.0.2.100"),
    );
    wait_address(&sw.node, "198.51.100.10/32", true, CONVERGE);
    wait_address(&sw.node, "2001:db8:100::10/128", true, CONVERGE);
    let deadline = Instant::now() + CONVERGE;
    while !sw
        .events_of("web")
        .iter()
        .any(|(r, n)| r == "Serving" && n.contains("198.51.100.10") && n.contains("(announceable)"))
    {
        assert!(
            Instant::now() < deadline,
            "no Serving event for 198.51.100.10; events: {:?}\nkube-gw log:\n{}",
            sw.events_of("web"),
            sw.lab.log(&sw.kg.name)
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Outside the pool: no address, and an Event that says why.
    sw.service("outside", &["203.0.113.50"], None);
    let note = wait_for("an AddressRefused event", CONVERGE, || {
        sw.events_of("outside")
            .into_iter()
            .find(|(r, _)| r == "AddressRefused")
            .map(|(_, n)| n)
    });
    assert!(
        note.contains("203.0.113.50 refused: not inside any of the switch's address pools"),
        "{note}"
    );
    assert!(!lo_addresses(&sw.node)
        .iter()
        .any(|a| a.starts_with("203.0.113.50")));
    let vips = sw.kg.cli(&["vips"]);
    assert!(
        vips.contains("198.51.100.10") && vips.contains("programmed"),
        "{vips}"
    );
    assert!(
        vips.contains("203.0.113.50") && vips.contains("not inside any"),
        "{vips}"
    );

    // One Event per change, not one per pass: a resync-triggering change elsewhere adds none.
    std::thread::sleep(Duration::from_secs(2));
    let before = sw.events_of("web").len();
    sw.service("other", &["198.51.100.11"], None);
    wait_address(&sw.node, "198.51.100.11/32", true, CONVERGE);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sw.events_of("web").len(), before);

    // Deleted by hand: repaired from the kernel's notification, not at the next resync
    // (every 30 s): well under 10 s even on a busy machine (about 1 ms when idle).
    sw.node
        .exec("ip", &["addr", "del", "198.51.100.10/32", "dev", "lo"]);
    let t = Instant::now();
    wait_address(&sw.node, "198.51.100.10/32", true, Duration::from_secs(15));
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "repair took {:?}: it waited for the resync instead of the notification",
        t.elapsed()
    );

    // The Service goes: so does its address. The operator's address stays.
    sw.delete_service("web");
    wait_address(&sw.node, "198.51.100.10/32", false, CONVERGE);
    wait_address(&sw.node, "2001:db8:100::10/128", false, CONVERGE);
    assert!(lo_addresses(&sw.node).contains("198.51.100.200/32"));

    // Stopped (default on-shutdown = "remove"): its addresses go, the operator's stays.
    let st = sw.lab.stop(&sw.kg.name, Duration::from_secs(30)).unwrap();
    assert_eq!(st.code(), Some(0), "{}", sw.lab.log(&sw.kg.name));
    let left = lo_addresses(&sw.node);
    assert!(!left.contains("198.51.100.11/32"), "{left:?}");
    assert!(left.contains("198.51.100.200/32"), "{left:?}");
}

#[test]
fn a_restart_adopts_the_addresses_without_a_flap() {
    if !require_root("a_restart_adopts_the_addresses_without_a_flap") {
        return;
    }
    let mut sw = Switch::start("on-shutdown = \"keep\"");
    sw.service(
        "web",
        &["198.51.100.20", "2001:db8:100::20"],
        Some("192.0.2.100"),
    );
    wait_address(&sw.node, "198.51.100.20/32", true, CONVERGE);
    wait_address(&sw.node, "2001:db8:100::20/128", true, CONVERGE);

    // Watch the kernel's address notifications across a stop and a start.
    let node = sw.node.clone();
    sw.lab
        .spawn(&node, "monitor", "ip", &["monitor", "address"]);
    // Positive control: the monitor is subscribed before the restart starts, and still at
    // its end — it sees an address the test adds (outside the pools: kube-gw leaves it
    // alone), and later its removal.
    // (It subscribes a moment after it starts: the marker goes on again until it is seen.)
    const MARK: &str = "203.0.113.250";
    wait_for("ip monitor to see the marker address", CONVERGE, || {
        let _ = node.try_exec("ip", &["addr", "del", &format!("{MARK}/32"), "dev", "lo"]);
        node.exec("ip", &["addr", "add", &format!("{MARK}/32"), "dev", "lo"]);
        std::thread::sleep(Duration::from_millis(300));
        sw.lab.log("monitor").contains(MARK).then_some(())
    });
    let st = sw.lab.stop(&sw.kg.name, Duration::from_secs(30)).unwrap();
    assert_eq!(st.code(), Some(0));
    assert!(
        lo_addresses(&sw.node).contains("198.51.100.20/32"),
        "kept at stop"
    );
    sw.kg.restart(&mut sw.lab, &node);
    // The restarted daemon sees the cluster and its VIPs as programmed...
    let deadline = Instant::now() + CONVERGE;
    loop {
        let v = sw.kg.cli(&["vips", "--json"]);
        let parsed: serde_json::Value = serde_json::from_str(&v).unwrap_or_default();
        let rows = parsed["vips"].as_array().cloned().unwrap_or_default();
        if rows.len() == 2 && rows.iter().all(|r| r["programmed"] == true) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "VIPs not programmed after the restart: {v}\n{}",
            sw.lab.log(&sw.kg.name)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    node.exec("ip", &["addr", "del", &format!("{MARK}/32"), "dev", "lo"]);
    wait_for("ip monitor to see the marker go", CONVERGE, || {
        sw.lab
            .log("monitor")
            .lines()
            .any(|l| l.starts_with("Deleted") && l.contains(MARK))
            .then_some(())
    });
    // ...and the kernel saw no deletion nor a new addition of them.
    let monitor = sw.lab.log("monitor");
    let flaps: Vec<&str> = monitor
        .lines()
        .filter(|l| l.contains("198.51.100.20") || l.contains("2001:db8:100::20"))
        .collect();
    assert!(
        flaps.is_empty(),
        "address notifications during the restart: {flaps:?}"
    );
}
