//! The L7 gateway end to end: the Gateway API CRDs (v1.6.3, standard channel) on the real
//! control plane, kube-gw in a switch namespace steering its Gateway VIP to the proxy with the
//! eBPF program, backends as processes in a backend namespace at the EndpointSlice addresses,
//! and clients (curl, Python) in a client namespace going through the VIP.
//!
//! ```text
//!   client ns 192.0.2.66 ──── 192.0.2.65 switch ns (kube-gw; VIP 198.51.100.40 on lo) 203.0.113.1 ──── backend ns
//!                                                                                          203.0.113.10 a, .11 b, .12 tls
//! ```

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube_gw::kube::gateway::{Gateway, HttpRoute};

use crate::controlplane::{block_on, ControlPlane};
use crate::harness::{require_root, wait_for, Lab, Node};
use crate::vips::Switch;

pub(crate) const VIP: &str = "198.51.100.40";
const CONVERGE: Duration = Duration::from_secs(30);

fn unique(prefix: &str) -> String {
    let uuid = std::fs::read_to_string("/proc/sys/kernel/random/uuid").unwrap();
    format!("{prefix}-{}", &uuid[..8])
}

/// The Gateway API CRDs, applied once per control plane, and served.
fn crds(cp: &ControlPlane) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let dir = crate::controlplane::binaries().join("gateway-api/v1.6.3");
        for kind in [
            "gatewayclasses",
            "gateways",
            "httproutes",
            "tlsroutes",
            "referencegrants",
            "backendtlspolicies",
        ] {
            let yaml =
                std::fs::read_to_string(dir.join(format!("gateway.networking.k8s.io_{kind}.yaml")))
                    .unwrap_or_else(|e| {
                        panic!(
                            "{kind} CRD in {} (scripts/testenv-build fetches them): {e}",
                            dir.display()
                        )
                    });
            cp.apply_manifest(&yaml);
        }
        // kube-gw's own CRD (the model-override filter), before any switch starts.
        cp.apply_manifest(include_str!(
            "../../configs/kubernetes/kube-gw-modeloverride-crd.yaml"
        ));
        wait_for("the Gateway API to be served", CONVERGE, || {
            block_on(async {
                let api: Api<Gateway> = Api::all(cp.admin().await);
                api.list(&Default::default()).await.ok().map(|_| ())
            })
        });
    });
}

/// The world of one gateway test.
pub(crate) struct World {
    pub(crate) sw: Switch,
    pub(crate) client: Node,
    pub(crate) backend: Node,
    pub(crate) class: String,
    /// This test's `controllerName`: switches of other tests (sharing the control plane)
    /// neither serve its Gateways nor take part in its election.
    controller: String,
}

fn gateway_config(controller: &str) -> String {
    format!(
        "\n[gateway]\ncontroller-name = \"{controller}\"\nsource-addresses = [\"203.0.113.1\", \"2001:db8:113::1\"]\n"
    )
}

pub(crate) fn start() -> World {
    start_with("")
}

/// With `extra_vip` lines in `[vip]`, `extra` in `[gateway]`, and `wrap` in front of
/// kube-gw's command.
pub(crate) fn start_wrapped(extra_vip: &str, extra: &str, wrap: &[&str]) -> World {
    let cp = ControlPlane::shared();
    crds(cp);
    let controller = format!("kube-gw.io/{}", unique("t"));
    setup(
        Switch::start_in_wrapped(
            None,
            extra_vip,
            &format!("{}{extra}", gateway_config(&controller)),
            wrap,
        ),
        controller,
    )
}

/// With `extra` lines in `[gateway]`.
fn start_with(extra: &str) -> World {
    let cp = ControlPlane::shared();
    crds(cp);
    let controller = format!("kube-gw.io/{}", unique("t"));
    setup(
        Switch::start_in(None, "", &format!("{}{extra}", gateway_config(&controller))),
        controller,
    )
}

/// With a BIRD leaf (192.0.2.1, AS 65000) peering with the switch.
fn start_with_leaf() -> (World, crate::harness::peers::Bird) {
    let cp = ControlPlane::shared();
    crds(cp);
    let controller = format!("kube-gw.io/{}", unique("t"));
    let (sw, _, _, bird) = crate::bgp::switch_and_leaf(
        "",
        &format!(
            "[[bgp.neighbors]]\naddress = \"192.0.2.1\"\nremote-asn = 65000\n{}",
            gateway_config(&controller)
        ),
    );
    (setup(sw, controller), bird)
}

fn setup(sw: Switch, controller: String) -> World {
    setup_in_class(sw, controller, None)
}

/// `setup`, joining the GatewayClass `class` (of another switch of the same controller)
/// instead of making one.
fn setup_in_class(mut sw: Switch, controller: String, class: Option<String>) -> World {
    let cp = ControlPlane::shared();
    let client = sw.lab.node("client");
    let backend = sw.lab.node("backend");
    let (sw_node, lab) = (sw.node.clone(), &mut sw.lab);
    lab.link(
        &client,
        &["192.0.2.66/30", "2001:db8:66::2/64"],
        &sw_node,
        &["192.0.2.65/30", "2001:db8:66::1/64"],
    );
    lab.link(
        &sw_node,
        &["203.0.113.1/24", "2001:db8:113::1/64"],
        &backend,
        &[
            "203.0.113.10/24",
            "203.0.113.11/24",
            "203.0.113.12/24",
            "2001:db8:113::10/64",
        ],
    );
    client.exec("ip", &["route", "add", "default", "via", "192.0.2.65"]);
    client.exec(
        "ip",
        &["-6", "route", "add", "default", "via", "2001:db8:66::1"],
    );
    backend.exec("ip", &["route", "add", "default", "via", "203.0.113.1"]);
    backend.exec(
        "ip",
        &["-6", "route", "add", "default", "via", "2001:db8:113::1"],
    );
    let echo = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/netns/harness/echo.py");
    for (name, addr) in [("a", "203.0.113.10"), ("b", "203.0.113.11")] {
        sw.lab.spawn(
            &backend,
            &format!("echo-{name}"),
            "python3",
            &[echo, name, addr, "8080"],
        );
    }
    for name in ["a", "b"] {
        let log = format!("echo-{name}");
        wait_for(&format!("backend {name} listening"), CONVERGE, || {
            sw.lab.log(&log).contains("listening").then_some(())
        });
    }
    let class = class.unwrap_or_else(|| {
        let class = unique("switch");
        cp.apply_manifest(&format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata:\n  name: {class}\nspec:\n  controllerName: {controller}\n"
        ));
        class
    });
    World {
        sw,
        client,
        backend,
        class,
        controller,
    }
}

impl World {
    /// Like `wait_for`, with kube-gw's log in the failure.
    pub(crate) fn wait<T>(&self, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = std::time::Instant::now() + CONVERGE;
        loop {
            if let Some(v) = f() {
                return v;
            }
            if std::time::Instant::now() > deadline {
                let log = self.sw.lab.log(&self.sw.kg.name);
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                panic!(
                    "timed out after {CONVERGE:?} waiting for {what}; kube-gw's log ends:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn cp(&self) -> &'static ControlPlane {
        ControlPlane::shared()
    }

    pub(crate) fn apply(&self, yaml: &str) {
        self.cp().apply_manifest(yaml);
    }

    /// A selector-less Service `name` (TCP 8080 "http") with ready endpoints at `eps`:8080.
    pub(crate) fn service(&self, ns: &str, name: &str, eps: &[&str]) {
        let endpoints: Vec<String> = eps
            .iter()
            .map(|e| format!("  - addresses: [\"{e}\"]\n    conditions: {{ready: true}}\n"))
            .collect();
        self.apply(&format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  ports:\n  - name: http\n    port: 8080\n    protocol: TCP\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  namespace: {ns}\n  labels:\n    kubernetes.io/service-name: {name}\n\
             addressType: IPv4\nports:\n- name: http\n  port: 8080\n  protocol: TCP\nendpoints:\n{}",
            endpoints.concat()
        ));
    }

    fn gateway_status(&self, ns: &str, name: &str) -> serde_json::Value {
        block_on(async {
            let api: Api<Gateway> = Api::namespaced(self.cp().admin().await, ns);
            api.get(name).await.unwrap().status.unwrap_or_default()
        })
    }

    pub(crate) fn route_status(&self, ns: &str, name: &str) -> serde_json::Value {
        block_on(async {
            let api: Api<HttpRoute> = Api::namespaced(self.cp().admin().await, ns);
            api.get(name).await.unwrap().status.unwrap_or_default()
        })
    }

    /// `curl` in the client namespace; returns (HTTP status, headers, body).
    pub(crate) fn curl(&self, args: &[&str]) -> (u16, String, String) {
        let mut all = vec!["-sS", "--max-time", "10", "-D", "-", "-o", "/dev/stdout"];
        all.extend_from_slice(args);
        let out = self.client.try_exec("curl", &all);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, head.to_string(), body.to_string())
    }

    /// GET through the VIP with a host name; the backend's JSON answer (or status on failure).
    fn get(&self, host: &str, path: &str, extra: &[&str]) -> Result<serde_json::Value, u16> {
        let resolve = format!("{host}:80:{VIP}");
        let url = format!("http://{host}{path}");
        let mut args = vec!["--resolve", &resolve, &url];
        args.extend_from_slice(extra);
        let (status, _, body) = self.curl(&args);
        if status == 200 {
            Ok(serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}")))
        } else {
            Err(status)
        }
    }
}

/// A JSON merge patch of `ns/name` (the client made inside: it lives in block_on's runtime).
pub(crate) fn merge<K>(ns: &str, name: &str, patch: serde_json::Value)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    block_on(async {
        let api: Api<K> = Api::namespaced(ControlPlane::shared().admin().await, ns);
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap_or_else(|e| panic!("patch {name}: {e}"));
    });
}

/// The `status` of `ns/name` as JSON (Null when it has none).
pub(crate) fn object_status<K>(ns: &str, name: &str) -> serde_json::Value
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    block_on(async {
        let api: Api<K> = Api::namespaced(ControlPlane::shared().admin().await, ns);
        let o = api
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("get {name}: {e}"));
        serde_json::to_value(&o).unwrap()["status"].clone()
    })
}

pub(crate) fn condition<'a>(conds: &'a serde_json::Value, t: &str) -> &'a serde_json::Value {
    conds
        .as_array()
        .and_then(|a| a.iter().find(|c| c["type"] == t))
        .unwrap_or(&serde_json::Value::Null)
}

#[test]
fn http_routes_through_the_vip_reach_the_right_backend_with_status_as_the_spec_says() {
    if !require_root(
        "http_routes_through_the_vip_reach_the_right_backend_with_status_as_the_spec_says",
    ) {
        return;
    }
    let (w, bird) = start_with_leaf();
    let ns = w.sw.ns.clone();
    w.service(&ns, "svc-a", &["203.0.113.10"]);
    w.service(&ns, "svc-b", &["203.0.113.11"]);
    let announced =
        || crate::bgp::bird_route(&bird, &format!("{VIP}/32")).contains("via 192.0.2.2");
    // Fail closed: a Gateway with its address but no listener kube-gw can serve is not
    // Programmed; its VIP goes on lo and is not announced.
    w.apply(&format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: udp\n  namespace: {ns}\nspec:\n  gatewayClassName: {}\n  addresses:\n  - type: IPAddress\n    value: {VIP}\n  listeners:\n  - name: dns\n    port: 53\n    protocol: UDP\n",
        w.class
    ));
    let st = w.wait("the UDP Gateway's status", || {
        let s = w.gateway_status(&ns, "udp");
        (condition(&s["conditions"], "Programmed")["status"] == "False").then_some(s)
    });
    assert_eq!(
        condition(&st["listeners"][0]["conditions"], "Accepted")["reason"],
        "UnsupportedProtocol"
    );
    w.wait("the VIP on lo", || {
        crate::vips::lo_addresses(&w.sw.node)
            .contains(&format!("{VIP}/32"))
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !announced(),
        "a VIP whose Gateway is not Programmed must not be announced"
    );
    block_on(async {
        let api: Api<Gateway> = Api::namespaced(w.cp().admin().await, &ns);
        api.delete("udp", &Default::default()).await.unwrap();
    });
    w.wait("the VIP to leave lo", || {
        (!crate::vips::lo_addresses(&w.sw.node).contains(&format!("{VIP}/32"))).then_some(())
    });
    // A Gateway whose address is outside the pools: not Programmed, nothing on lo.
    w.apply(&format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: web\n  namespace: {ns}\nspec:\n  gatewayClassName: {}\n  addresses:\n  - type: IPAddress\n    value: 192.0.2.200\n  listeners:\n  - name: http\n    port: 80\n    protocol: HTTP\n",
        w.class
    ));
    let st = w.wait("the Gateway's status", || {
        let s = w.gateway_status(&ns, "web");
        (condition(&s["conditions"], "Programmed")["reason"] == "AddressNotUsable").then_some(s)
    });
    assert_eq!(
        condition(&st["conditions"], "Programmed")["status"],
        "False"
    );
    assert!(!crate::vips::lo_addresses(&w.sw.node)
        .iter()
        .any(|a| a.starts_with("192.0.2.200")));
    // Fix the address: Programmed, with status.addresses, and the VIP on lo.
    block_on(async {
        let api: Api<Gateway> = Api::namespaced(w.cp().admin().await, &ns);
        let patch =
            serde_json::json!({"spec": {"addresses": [{"type": "IPAddress", "value": VIP}]}});
        api.patch("web", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    });
    let st = w.wait("the Gateway to be Programmed", || {
        let s = w.gateway_status(&ns, "web");
        (condition(&s["conditions"], "Programmed")["status"] == "True").then_some(s)
    });
    assert_eq!(
        st["addresses"],
        serde_json::json!([{"type": "IPAddress", "value": VIP}])
    );
    assert_eq!(condition(&st["conditions"], "Accepted")["status"], "True");
    assert_eq!(
        condition(&st["conditions"], "Programmed")["observedGeneration"],
        2
    );
    assert_eq!(st["listeners"][0]["supportedKinds"][0]["kind"], "HTTPRoute");
    w.wait("the VIP on lo", || {
        crate::vips::lo_addresses(&w.sw.node)
            .contains(&format!("{VIP}/32"))
            .then_some(())
    });
    // Programmed: now announced to the leaf, with the switch as next hop.
    w.wait("the VIP announced", || announced().then_some(()));

    w.apply(&format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: app
  namespace: {ns}
spec:
  parentRefs: [{{name: web}}]
  hostnames: [app.example]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /a}}}}]
    backendRefs: [{{name: svc-a, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /b}}}}, {{headers: [{{name: X-Env, value: canary}}]}}]
    backendRefs: [{{name: svc-b, port: 8080}}]
  - matches: [{{path: {{type: Exact, value: /w}}}}]
    backendRefs: [{{name: svc-a, port: 8080, weight: 1}}, {{name: svc-b, port: 8080, weight: 3}}]
  - matches: [{{path: {{type: PathPrefix, value: /old}}}}]
    filters: [{{type: RequestRedirect, requestRedirect: {{scheme: https, statusCode: 301}}}}]
  - matches: [{{path: {{type: PathPrefix, value: /rw}}}}]
    filters:
    - {{type: URLRewrite, urlRewrite: {{path: {{type: ReplacePrefixMatch, replacePrefixMatch: /new}}}}}}
    - {{type: RequestHeaderModifier, requestHeaderModifier: {{set: [{{name: X-Added, value: yes}}]}}}}
    backendRefs: [{{name: svc-a, port: 8080}}]
"#
    ));
    let a = w.wait("the route to serve /a", || {
        w.get("app.example", "/a/x", &[]).ok()
    });
    assert_eq!(a["backend"], "a");
    assert_eq!(a["path"], "/a/x");
    // The backend sees the client, and the connection comes from the switch's own address.
    assert_eq!(a["headers"]["x-forwarded-for"], "192.0.2.66");
    assert_eq!(a["headers"]["x-forwarded-proto"], "http");
    assert_eq!(a["peer"], "203.0.113.1");
    assert_eq!(w.get("app.example", "/b", &[]).unwrap()["backend"], "b");
    // A request with a body (hyper's client toward the backend) and one without (kube-gw's
    // own, h1.rs) both arrive whole; HEAD gets the head only.
    let big = "x".repeat(100_000);
    let posted = w
        .get("app.example", "/a/post", &["--data-binary", &big])
        .unwrap();
    assert_eq!(
        (posted["method"].as_str(), posted["body"].as_u64()),
        (Some("POST"), Some(100_000)),
        "{posted}"
    );
    assert_eq!(a["body"], 0);
    // (A proxy that waited for HEAD's announced body would time out here.)
    let (status, head, _) = w.curl(&[
        "--resolve",
        &format!("app.example:80:{VIP}"),
        "-I",
        "http://app.example/a/x",
    ]);
    assert_eq!(status, 200, "{head}");
    assert!(
        head.lines()
            .any(|l| l.to_ascii_lowercase().starts_with("content-length: ")),
        "HEAD keeps the backend's Content-Length: {head}"
    );
    assert_eq!(
        w.get("app.example", "/zzz", &["-H", "X-Env: canary"])
            .unwrap()["backend"],
        "b"
    );
    assert_eq!(
        w.get("app.example", "/zzz", &[]),
        Err(404),
        "no rule matches"
    );
    assert_eq!(
        w.get("other.example", "/a", &[]),
        Err(404),
        "another host name is not the route's"
    );
    let rw = w.get("app.example", "/rw/x?q=1", &[]).unwrap();
    assert_eq!(
        (rw["path"].as_str(), rw["headers"]["x-added"].as_str()),
        (Some("/new/x?q=1"), Some("yes"))
    );
    // Redirect.
    let (status, head, _) = w.curl(&[
        "--resolve",
        &format!("app.example:80:{VIP}"),
        "http://app.example/old/p?x=1",
    ]);
    assert_eq!(status, 301);
    assert!(
        head.lines()
            .any(|l| l.eq_ignore_ascii_case("location: https://app.example/old/p?x=1")),
        "{head}"
    );
    // Weights 1:3 over 200 requests: b gets 150 ± 30.
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..200 {
        let b = w.get("app.example", "/w", &[]).unwrap()["backend"]
            .as_str()
            .unwrap()
            .to_string();
        *counts.entry(b).or_default() += 1;
    }
    let b = counts.get("b").copied().unwrap_or(0);
    assert!((120..=180).contains(&b), "weights 1:3 gave {counts:?}");
    // Per-route metrics: the 200 requests of the weights check, at least, and the 404s.
    let text = crate::bgp::metrics(&w.sw.node);
    let count = |route: &str, code: u16| -> f64 {
        text.lines()
            .filter(|l| l.starts_with("kube_gw_gateway_requests_total{"))
            .filter(|l| {
                l.contains(&format!("route=\"{route}\"")) && l.contains(&format!("code=\"{code}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(count(&format!("{ns}/app"), 200) >= 200.0, "{text}");
    assert!(
        count("-", 404) >= 2.0,
        "the unmatched requests are counted under route \"-\""
    );
    assert!(
        text.contains("kube_gw_gateway_request_duration_seconds_bucket{"),
        "latency histogram"
    );
    // Route status: Accepted and ResolvedRefs toward our Gateway, with the generation.
    let rs = w.route_status(&ns, "app");
    let parent = &rs["parents"][0];
    assert_eq!(parent["controllerName"], w.controller.as_str());
    assert_eq!(
        condition(&parent["conditions"], "Accepted")["status"],
        "True"
    );
    assert_eq!(
        condition(&parent["conditions"], "ResolvedRefs")["status"],
        "True"
    );
    assert_eq!(
        condition(&parent["conditions"], "Accepted")["observedGeneration"],
        1
    );
    let gs = w.gateway_status(&ns, "web");
    assert_eq!(gs["listeners"][0]["attachedRoutes"], 1);

    // Cross-namespace: a route in another namespace may attach (allowedRoutes All on a second
    // listener), but its backend in `ns` needs a ReferenceGrant there.
    let other = unique("gwother");
    w.cp().create_namespace(&other);
    block_on(async {
        let api: Api<Gateway> = Api::namespaced(w.cp().admin().await, &ns);
        let patch = serde_json::json!({"spec": {"listeners": [
            {"name": "http", "port": 80, "protocol": "HTTP"},
            {"name": "shared", "port": 8000, "protocol": "HTTP", "allowedRoutes": {"namespaces": {"from": "All"}}}
        ]}});
        api.patch("web", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    });
    w.apply(&format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: cross\n  namespace: {other}\nspec:\n  parentRefs: [{{name: web, namespace: {ns}, sectionName: shared}}]\n  rules:\n  - backendRefs: [{{name: svc-a, namespace: {ns}, port: 8080}}]\n"
    ));
    let refused = w.wait("the cross-namespace ref to be refused", || {
        let s = w.route_status(&other, "cross");
        let c = condition(&s["parents"][0]["conditions"], "ResolvedRefs").clone();
        (c["reason"] == "RefNotPermitted").then_some(c)
    });
    assert_eq!(refused["status"], "False");
    let get8000 = || {
        let (status, _, body) = w.curl(&[&format!("http://{VIP}:8000/")]);
        (status, body)
    };
    // Attempted and refused: the route is served (500, the backend reference is not allowed).
    w.wait("the refused backend to answer 500", || {
        (get8000().0 == 500).then_some(())
    });
    w.apply(&format!(
        "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata:\n  name: allow-{other}\n  namespace: {ns}\nspec:\n  from:\n  - group: gateway.networking.k8s.io\n    kind: HTTPRoute\n    namespace: {other}\n  to:\n  - group: \"\"\n    kind: Service\n"
    ));
    let body = w.wait("the granted backend to answer", || {
        let (s, b) = get8000();
        (s == 200).then_some(b)
    });
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["backend"],
        "a"
    );
    w.wait("ResolvedRefs True", || {
        let s = w.route_status(&other, "cross");
        (condition(&s["parents"][0]["conditions"], "ResolvedRefs")["status"] == "True")
            .then_some(())
    });
    let _ = &w.backend;
}

/// A CA and a server certificate for `names`, signed by it; (ca_pem, cert_pem, key_pem, serial).
pub(crate) fn issue(names: &[&str], serial: u64) -> (String, String, String) {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "kube-gw test CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let mut leaf =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    leaf.serial_number = Some(rcgen::SerialNumber::from(serial));
    let key = rcgen::KeyPair::generate().unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

pub(crate) fn tls_secret_yaml(ns: &str, name: &str, cert: &str, key: &str) -> String {
    use base64::Engine;
    let b = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {ns}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n",
        b(cert),
        b(key)
    )
}

#[test]
fn https_with_the_secret_s_certificate_rotation_bad_secrets_and_tls_passthrough() {
    if !require_root("https_with_the_secret_s_certificate_rotation_bad_secrets_and_tls_passthrough")
    {
        return;
    }
    let mut w = start();
    let ns = w.sw.ns.clone();
    w.service(&ns, "svc-a", &["203.0.113.10"]);
    let (ca1, cert1, key1) = issue(&["app.example"], 1001);
    let (ca2, cert2, key2) = issue(&["app.example"], 2002);
    // The TLS backend for passthrough, with its own certificate.
    let (pass_ca, pass_cert, pass_key) = issue(&["pass.example"], 3003);
    let lab_file = |lab: &Lab, name: &str, text: &str| lab.write(name, text).display().to_string();
    let ca1_path = lab_file(&w.sw.lab, "ca1.pem", &ca1);
    let ca2_path = lab_file(&w.sw.lab, "ca2.pem", &ca2);
    let pass_ca_path = lab_file(&w.sw.lab, "pass-ca.pem", &pass_ca);
    let pc = lab_file(&w.sw.lab, "pass.crt", &pass_cert);
    let pk = lab_file(&w.sw.lab, "pass.key", &pass_key);
    let echo = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/netns/harness/echo.py");
    let backend = w.backend.clone();
    w.sw.lab.spawn(
        &backend,
        "echo-tls",
        "python3",
        &[echo, "tls", "203.0.113.12", "8443", &pc, &pk],
    );
    // The TLS backend's Service: port 443 ("tls"), its endpoint listening on 8443.
    w.apply(&format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: svc-tls-2\n  namespace: {ns}\n  labels:\n    kubernetes.io/service-name: svc-tls-2\naddressType: IPv4\nports:\n- name: tls\n  port: 8443\n  protocol: TCP\nendpoints:\n- addresses: [\"203.0.113.12\"]\n  conditions: {{ready: true}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata:\n  name: svc-tls-2\n  namespace: {ns}\nspec:\n  ports:\n  - name: tls\n    port: 443\n    protocol: TCP\n"
    ));
    w.apply(&tls_secret_yaml(&ns, "app-cert", &cert1, &key1));
    w.apply(&tls_secret_yaml(
        &ns,
        "bad-cert",
        "not a certificate",
        "not a key",
    ));
    w.apply(&format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: tls
  namespace: {ns}
spec:
  gatewayClassName: {class}
  addresses: [{{type: IPAddress, value: "{VIP}"}}]
  listeners:
  - name: https
    port: 443
    protocol: HTTPS
    hostname: app.example
    tls: {{certificateRefs: [{{name: app-cert}}]}}
  - name: bad
    port: 443
    protocol: HTTPS
    hostname: bad.example
    tls: {{certificateRefs: [{{name: bad-cert}}]}}
  - name: pass
    port: 8443
    protocol: TLS
    tls: {{mode: Passthrough}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: app
  namespace: {ns}
spec:
  parentRefs: [{{name: tls, sectionName: https}}]
  rules:
  - backendRefs: [{{name: svc-a, port: 8080}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata:
  name: pass
  namespace: {ns}
spec:
  parentRefs: [{{name: tls, sectionName: pass}}]
  hostnames: [pass.example]
  rules:
  - backendRefs: [{{name: svc-tls-2, port: 443}}]
"#,
        class = w.class
    ));
    // The bad Secret fails its listener only.
    let st = w.wait("the Gateway to be Programmed", || {
        let s = w.gateway_status(&ns, "tls");
        (condition(&s["conditions"], "Programmed")["status"] == "True"
            && s["listeners"].as_array().is_some_and(|l| l.len() == 3))
        .then_some(s)
    });
    let listener = |name: &str| {
        st["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == name)
            .unwrap()
            .clone()
    };
    let bad = condition(&listener("bad")["conditions"], "ResolvedRefs").clone();
    assert_eq!(
        (bad["status"].as_str(), bad["reason"].as_str()),
        (Some("False"), Some("InvalidCertificateRef")),
        "{bad}"
    );
    assert!(
        bad["message"].as_str().unwrap().contains("bad-cert"),
        "{bad}"
    );
    for good in ["https", "pass"] {
        assert_eq!(
            condition(&listener(good)["conditions"], "Programmed")["status"],
            "True",
            "{good}"
        );
    }
    assert_eq!(
        condition(&st["conditions"], "Accepted")["reason"],
        "ListenersNotValid"
    );

    // HTTPS, verified by the client against the CA of the Secret's certificate.
    let https = |ca: &str, host: &str| {
        w.curl(&[
            "--cacert",
            ca,
            "--resolve",
            &format!("{host}:443:{VIP}"),
            &format!("https://{host}/x"),
        ])
    };
    let (status, _, body) = w.wait("HTTPS through the VIP", || {
        let r = https(&ca1_path, "app.example");
        (r.0 == 200).then_some(r)
    });
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (
            v["backend"].as_str(),
            v["headers"]["x-forwarded-proto"].as_str()
        ),
        (Some("a"), Some("https"))
    );
    // HTTP/2 (ALPN h2): a bodiless request and a 100 kB POST on one connection.
    let big = "y".repeat(100_000);
    let resolve = format!("app.example:443:{VIP}");
    let h2 = |extra: &[&str]| {
        let mut args = vec![
            "--http2",
            "--cacert",
            &ca1_path,
            "--resolve",
            &resolve,
            "https://app.example/h2",
        ];
        args.extend_from_slice(extra);
        w.curl(&args)
    };
    let (status, head, body) = h2(&[]);
    assert_eq!(status, 200, "{head}");
    assert!(head.starts_with("HTTP/2 "), "spoken over HTTP/2: {head}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["backend"].as_str(), v["body"].as_u64()),
        (Some("a"), Some(0))
    );
    let (status, head, body) = h2(&["--data-binary", &big]);
    assert_eq!(status, 200, "{head}");
    assert!(head.starts_with("HTTP/2 "), "{head}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["method"].as_str(), v["body"].as_u64()),
        (Some("POST"), Some(100_000)),
        "{v}"
    );

    // Unknown SNI (the bad listener's host has no usable certificate): the handshake fails.
    let (status, _, _) = https(&ca1_path, "bad.example");
    assert_eq!(
        status, 0,
        "no certificate for bad.example: the handshake must fail"
    );

    // Rotation: an open connection keeps working; new handshakes get the new certificate.
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/netns/harness/https_client.py"
    );
    let mut held = w
        .client
        .command("python3")
        .args([script, VIP, "443", "app.example", &ca1_path, "/held"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(held.stdout.take().unwrap()).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(
        (first["status"].as_u64(), first["backend"].as_str()),
        (Some(200), Some("a"))
    );
    block_on(async {
        let api: Api<Secret> = Api::namespaced(w.cp().admin().await, &ns);
        let s: Secret =
            serde_yaml::from_str(&tls_secret_yaml(&ns, "app-cert", &cert2, &key2)).unwrap();
        api.replace(
            "app-cert",
            &Default::default(),
            &Secret {
                metadata: api.get("app-cert").await.unwrap().metadata,
                ..s
            },
        )
        .await
        .unwrap();
    });
    w.wait("new handshakes to get the new certificate", || {
        (https(&ca2_path, "app.example").0 == 200).then_some(())
    });
    assert_eq!(
        https(&ca1_path, "app.example").0,
        0,
        "the old CA no longer verifies new handshakes"
    );
    let mut stdin = held.stdin.take().unwrap();
    writeln!(stdin).unwrap();
    let second: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(
        second["status"].as_u64(),
        Some(200),
        "the open connection still works"
    );
    assert_eq!(
        second["serial"], first["serial"],
        "and keeps the certificate it was handshaken with"
    );
    drop(stdin);
    let _ = held.wait();

    // Passthrough: the client verifies the backend's own certificate through the VIP.
    let (status, _, body) = w.wait("TLS passthrough", || {
        let r = w.curl(&[
            "--cacert",
            &pass_ca_path,
            "--resolve",
            &format!("pass.example:8443:{VIP}"),
            "https://pass.example:8443/p",
        ]);
        (r.0 == 200).then_some(r)
    });
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["backend"], "tls");
    // Untouched: no X-Forwarded-* (the gateway never saw the HTTP inside), and the backend's
    // peer is the switch (a TCP proxy), not the client.
    assert!(v["headers"].get("x-forwarded-for").is_none(), "{v}");
    assert_eq!(v["peer"], "203.0.113.1");
    // An SNI without a route: the connection is closed.
    let (status, _, _) = w.curl(&[
        "-k",
        "--resolve",
        &format!("nope.example:8443:{VIP}"),
        "https://nope.example:8443/",
    ]);
    assert_eq!(status, 0);
    // Handshakes are counted: this host's kernel has no `tls` module, so all in userspace,
    // and the ones refused for want of a certificate as failed.
    let text = crate::bgp::metrics(&w.sw.node);
    let handshakes = |result: &str, mode: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with("kube_gw_gateway_tls_handshakes_total{"))
            .filter(|l| {
                l.contains(&format!("result=\"{result}\""))
                    && l.contains(&format!("mode=\"{mode}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(handshakes("ok", "userspace") >= 3.0, "{text}");
    assert!(handshakes("failed", "-") >= 2.0, "{text}");
    let view: serde_json::Value =
        serde_json::from_str(&w.sw.kg.cli(&["gateway", "--json"])).unwrap();
    let why = view["kernel_tls"].as_str().unwrap();
    assert!(
        why.contains("module") || why.contains("failed"),
        "kernel TLS unavailable here, and why: {view}"
    );
    assert!(
        view["tls_connections_userspace"].as_u64().unwrap() >= 3,
        "{view}"
    );
    let _ = &mut w;
}

#[test]
fn bad_input_costs_one_connection_and_nothing_else() {
    if !require_root("bad_input_costs_one_connection_and_nothing_else") {
        return;
    }
    let w = start();
    let ns = w.sw.ns.clone();
    w.service(&ns, "svc-a", &["203.0.113.10"]);
    w.apply(&format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: web\n  namespace: {ns}\nspec:\n  gatewayClassName: {}\n  addresses:\n  - type: IPAddress\n    value: {VIP}\n  listeners:\n  - name: http\n    port: 80\n    protocol: HTTP\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: app\n  namespace: {ns}\nspec:\n  parentRefs: [{{name: web}}]\n  rules:\n  - backendRefs: [{{name: svc-a, port: 8080}}]\n",
        w.class
    ));
    w.wait("the route to serve", || w.get("x", "/", &[]).ok());
    // Raw bytes to the VIP from the client namespace (Python: one connection each).
    // What the client got back, or `ERR <kind>` where sending or reading failed (a server that
    // closes while the client still sends makes the kernel reset the connection, and the
    // reset may discard an answer already sent).
    let raw = |payload: &str, wait: f64| -> String {
        let code = format!(
            "import socket,sys,time\ns=socket.create_connection(('{VIP}',80),timeout=20)\nout=b''\n\
             try:\n  s.sendall({payload})\n  time.sleep({wait})\n  while True:\n    d=s.recv(65536)\n    if not d: break\n    out+=d\n\
             except Exception as e:\n  out+=('ERR '+type(e).__name__).encode()\nprint(out[:200].decode('latin1'))\n"
        );
        String::from_utf8_lossy(&w.client.try_exec("python3", &["-c", &code]).stdout).to_string()
    };
    let malformed = raw("b'GARBAGE\\x00\\x01 / HTTP/9.9\\r\\n\\r\\n'", 0.0);
    assert!(
        malformed.starts_with("HTTP/1.1 400"),
        "malformed request: {malformed}"
    );
    let big = raw(
        "b'GET / HTTP/1.1\\r\\nHost: x\\r\\nX-Big: ' + b'a'*200000 + b'\\r\\n\\r\\n'",
        0.0,
    );
    // Refused with 431 (or 400), or, when the answer was lost to the reset of a client still
    // sending, reset: either way the gateway closed it (what follows shows it still serves).
    assert!(
        big.starts_with("HTTP/1.1 431")
            || big.starts_with("HTTP/1.1 400")
            || big.contains("ERR ConnectionResetError")
            || big.contains("ERR BrokenPipeError"),
        "oversized headers: {big:?}"
    );
    // Slowloris: half a request line, then nothing: closed after the header timeout (10 s).
    let t0 = std::time::Instant::now();
    let slow = raw("b'GET / HTTP/1.1\\r\\nHost: x\\r\\n'", 0.0);
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(8) && took < Duration::from_secs(19),
        "slow client closed after {took:?}: {slow:?}"
    );
    assert!(
        !slow.contains("ERR timeout"),
        "the gateway, not the client, closed it: {slow}"
    );
    // TLS garbage on an HTTP port is malformed HTTP too.
    let tls = raw("b'\\x16\\x03\\x01\\x00\\x05hello'", 0.0);
    assert!(tls.starts_with("HTTP/1.1 400") || tls.is_empty(), "{tls}");
    // Everything else still works.
    assert_eq!(w.get("x", "/after", &[]).unwrap()["backend"], "a");
}

/// Creates or replaces the Opaque Secret `ns/name` with `entries`.
fn put_secret(cp: &ControlPlane, ns: &str, name: &str, entries: &[(&str, Vec<u8>)]) {
    block_on(async {
        let api: Api<Secret> = Api::namespaced(cp.admin().await, ns);
        let mut s = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            data: Some(
                entries
                    .iter()
                    .map(|(k, v)| (k.to_string(), k8s_openapi::ByteString(v.clone())))
                    .collect(),
            ),
            ..Default::default()
        };
        match api.get_opt(name).await.unwrap() {
            None => {
                api.create(&Default::default(), &s).await.unwrap();
            }
            Some(old) => {
                s.metadata = old.metadata;
                api.replace(name, &Default::default(), &s).await.unwrap();
            }
        }
    });
}

fn random_key() -> Vec<u8> {
    let mut k = vec![0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut k))
        .unwrap();
    k
}

#[test]
fn session_tickets_from_a_secret_resume_across_a_restart_and_a_key_rotation() {
    if !require_root("session_tickets_from_a_secret_resume_across_a_restart_and_a_key_rotation") {
        return;
    }
    let secret = unique("tickets");
    let mut w = start_with(&format!(
        "session-ticket-secret = \"kube-system/{secret}\"\n"
    ));
    let ns = w.sw.ns.clone();
    w.service(&ns, "svc-a", &["203.0.113.10"]);
    let (ca, cert, key) = issue(&["app.example"], 4004);
    let ca_path = w.sw.lab.write("ca.pem", &ca).display().to_string();
    w.apply(&tls_secret_yaml(&ns, "app-cert", &cert, &key));
    w.apply(&format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: tls
  namespace: {ns}
spec:
  gatewayClassName: {class}
  addresses: [{{type: IPAddress, value: "{VIP}"}}]
  listeners:
  - name: https
    port: 443
    protocol: HTTPS
    hostname: app.example
    tls: {{certificateRefs: [{{name: app-cert}}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: app
  namespace: {ns}
spec:
  parentRefs: [{{name: tls}}]
  rules:
  - backendRefs: [{{name: svc-a, port: 8080}}]
"#,
        class = w.class
    ));
    let https_ok = |w: &World| {
        w.curl(&[
            "--cacert",
            &ca_path,
            "--resolve",
            &format!("app.example:443:{VIP}"),
            "https://app.example/x",
        ])
        .0 == 200
    };
    w.wait("HTTPS through the VIP", || https_ok(&w).then_some(()));
    let tickets = |w: &World| -> String {
        let v: serde_json::Value =
            serde_json::from_str(&w.sw.kg.cli(&["gateway", "--json"])).unwrap();
        v["session_tickets"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    // No Secret yet: this switch's own keys, and the view says what to create.
    let own = tickets(&w);
    assert!(
        own.starts_with("this switch's own keys") && own.contains("not found"),
        "{own}"
    );

    let old = random_key();
    put_secret(
        w.cp(),
        "kube-system",
        &secret,
        &[("2026-11-01", old.clone())],
    );
    w.wait("the shared key to be in force", || {
        tickets(&w)
            .contains("1 key(s), 2026-11-01 encrypts")
            .then_some(())
    });

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/netns/harness/tickets_client.py"
    );
    let spawn_client = |w: &World| {
        let mut c = w
            .client
            .command("python3")
            .args([script, VIP, "443", "app.example", &ca_path])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(c.stdout.take().unwrap()).lines();
        (c, out)
    };
    let (mut client, mut out) = spawn_client(&w);
    let mut stdin = client.stdin.take().unwrap();
    let mut ask = |cmd: &str| -> (u64, bool) {
        writeln!(stdin, "{cmd}").unwrap();
        let line = out.next().expect("an answer").unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["version"], "TLSv1.3", "{line}");
        (
            v["status"].as_u64().unwrap(),
            v["reused"].as_bool().unwrap(),
        )
    };
    assert_eq!(ask("new s1"), (200, false), "a first handshake is full");
    assert_eq!(
        ask("resume s1"),
        (200, true),
        "and resumes on the same switch"
    );

    // A restarted kube-gw has no memory of its keys but the Secret: the ticket still opens
    // (as it would on another switch ECMP moves the client to).
    let name = w.sw.kg.name.clone();
    let st = w.sw.lab.stop(&name, Duration::from_secs(30)).unwrap();
    assert_eq!(st.code(), Some(0), "{}", w.sw.lab.log(&name));
    w.sw.kg.restart(&mut w.sw.lab, &w.sw.node.clone());
    w.wait("HTTPS after the restart", || https_ok(&w).then_some(()));
    w.wait("the shared key after the restart", || {
        tickets(&w).contains("2026-11-01 encrypts").then_some(())
    });
    assert_eq!(ask("resume s1"), (200, true), "resumed after the restart");

    // Rotation: a new key encrypts, the old one still decrypts.
    let new = random_key();
    let encoded = |k: &[u8]| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(k)
    };
    let (old_b64, new_b64) = (encoded(&old), encoded(&new));
    put_secret(
        w.cp(),
        "kube-system",
        &secret,
        &[("2026-11-01", old), ("2026-12-01", new.clone())],
    );
    w.wait("the new key to encrypt", || {
        tickets(&w)
            .contains("2 key(s), 2026-12-01 encrypts")
            .then_some(())
    });
    assert_eq!(ask("resume s1"), (200, true), "the old key still decrypts");
    assert_eq!(ask("new s2"), (200, false));
    // The old key removed: its tickets are refused and the client makes a full handshake
    // (still served); tickets of the new key resume.
    put_secret(w.cp(), "kube-system", &secret, &[("2026-12-01", new)]);
    w.wait("the old key to go", || {
        tickets(&w).contains("1 key(s), 2026-12-01").then_some(())
    });
    assert_eq!(
        ask("resume s1"),
        (200, false),
        "the old key's ticket is refused"
    );
    assert_eq!(
        ask("resume s2"),
        (200, true),
        "the new key's ticket resumes"
    );
    drop(stdin);
    let _ = client.wait();

    // The changes were logged, the keys were not.
    let log = w.sw.lab.log(&w.sw.kg.name);
    assert!(log.contains("session tickets"), "{log}");
    assert!(!log.contains(&old_b64) && !log.contains(&new_b64));
}

#[test]
fn proxy_protocol_v2_names_each_client_to_backends_that_ask_for_it() {
    if !require_root("proxy_protocol_v2_names_each_client_to_backends_that_ask_for_it") {
        return;
    }
    let mut w = start();
    let ns = w.sw.ns.clone();
    let echo = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/netns/harness/echo.py");
    let (pass_ca, pass_cert, pass_key) = issue(&["pass.example"], 5005);
    let pass_ca_path =
        w.sw.lab
            .write("pass-ca.pem", &pass_ca)
            .display()
            .to_string();
    let pc = w.sw.lab.write("pass.crt", &pass_cert).display().to_string();
    let pk = w.sw.lab.write("pass.key", &pass_key).display().to_string();
    let backend = w.backend.clone();
    w.sw.lab.spawn(
        &backend,
        "echo-pp",
        "python3",
        &[echo, "pp", "203.0.113.12", "8081", "--proxy-v2"],
    );
    w.sw.lab.spawn(
        &backend,
        "echo-pp-tls",
        "python3",
        &[
            echo,
            "pp-tls",
            "203.0.113.12",
            "8444",
            &pc,
            &pk,
            "--proxy-v2",
        ],
    );
    for log in ["echo-pp", "echo-pp-tls"] {
        wait_for(&format!("{log} listening"), CONVERGE, || {
            w.sw.lab.log(log).contains("listening").then_some(())
        });
    }
    let service = |name: &str, annotation: &str, port: u16, target: u16| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\n  annotations: {{kube-gw.io/proxy-protocol: \"{annotation}\"}}\nspec:\n  ports:\n  - name: p\n    port: {port}\n    protocol: TCP\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  namespace: {ns}\n  labels:\n    kubernetes.io/service-name: {name}\n\
             addressType: IPv4\nports:\n- name: p\n  port: {target}\n  protocol: TCP\nendpoints:\n- addresses: [\"203.0.113.12\"]\n  conditions: {{ready: true}}\n"
        )
    };
    w.apply(&service("svc-pp", "v2", 80, 8081));
    w.apply(&service("svc-pp-tls", "v2", 443, 8444));
    w.apply(&service("svc-v1", "v1", 80, 8081));
    w.apply(&format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: pp
  namespace: {ns}
spec:
  gatewayClassName: {class}
  addresses: [{{type: IPAddress, value: "{VIP}"}}]
  listeners:
  - name: http
    port: 80
    protocol: HTTP
  - name: pass
    port: 8443
    protocol: TLS
    tls: {{mode: Passthrough}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: pp
  namespace: {ns}
spec:
  parentRefs: [{{name: pp, sectionName: http}}]
  hostnames: [pp.example]
  rules:
  - backendRefs: [{{name: svc-pp, port: 80}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: v1
  namespace: {ns}
spec:
  parentRefs: [{{name: pp, sectionName: http}}]
  hostnames: [v1.example]
  rules:
  - backendRefs: [{{name: svc-v1, port: 80}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata:
  name: pass
  namespace: {ns}
spec:
  parentRefs: [{{name: pp, sectionName: pass}}]
  hostnames: [pass.example]
  rules:
  - backendRefs: [{{name: svc-pp-tls, port: 443}}]
"#,
        class = w.class
    ));
    let first = w.wait("HTTP through the VIP to the PROXY backend", || {
        w.get("pp.example", "/a", &["--local-port", "40001"]).ok()
    });
    assert_eq!(first["backend"], "pp");
    assert_eq!(first["proxy"]["src"], "192.0.2.66:40001", "{first}");
    assert_eq!(first["proxy"]["dst"], format!("{VIP}:80"), "{first}");
    assert_eq!(first["proxy"]["authority"], serde_json::Value::Null);
    // The TCP peer is the switch; the header is what names the client.
    assert_eq!(first["peer"], "203.0.113.1");

    // Two requests on one client connection share one backend connection (one header).
    let out = w.client.try_exec(
        "curl",
        &[
            "-sS",
            "--fail",
            "--max-time",
            "10",
            "--resolve",
            &format!("pp.example:80:{VIP}"),
            "--local-port",
            "40002",
            "http://pp.example/1",
            "http://pp.example/2",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let body = String::from_utf8_lossy(&out.stdout).to_string();
    let answers: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&body)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(answers.len(), 2, "{body}");
    assert_eq!(answers[0]["proxy"]["src"], "192.0.2.66:40002");
    assert_eq!(answers[0]["conn"], answers[1]["conn"], "{body}");
    // Another client gets its own backend connection: the header names it, not the first.
    let other = w
        .get("pp.example", "/b", &["--local-port", "40003"])
        .unwrap();
    assert_eq!(other["proxy"]["src"], "192.0.2.66:40003", "{other}");
    assert_ne!(other["conn"], answers[0]["conn"]);

    // TLS passthrough: the header, then the client's TLS bytes untouched (the client
    // verifies the backend's certificate), with the SNI as the authority.
    let (status, _, body) = w.wait("passthrough to the PROXY backend", || {
        let r = w.curl(&[
            "--cacert",
            &pass_ca_path,
            "--resolve",
            &format!("pass.example:8443:{VIP}"),
            "--local-port",
            "40004",
            "https://pass.example:8443/p",
        ]);
        (r.0 == 200).then_some(r)
    });
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (
            v["backend"].as_str(),
            v["proxy"]["src"].as_str(),
            v["proxy"]["dst"].as_str(),
            v["proxy"]["authority"].as_str()
        ),
        (
            Some("pp-tls"),
            Some("192.0.2.66:40004"),
            Some(format!("{VIP}:8443").as_str()),
            Some("pass.example")
        )
    );

    // A version kube-gw does not send: the route says so, requests get 500, and the backend
    // was never sent a connection without its header (the refusal is the route's).
    let st = w.wait("the v1 route's ResolvedRefs", || {
        let s = w.route_status(&ns, "v1");
        let c = s["parents"]
            .as_array()
            .and_then(|p| p.first())
            .map(|p| condition(&p["conditions"], "ResolvedRefs").clone())?;
        (c["status"] == "False").then_some(c)
    });
    assert_eq!(st["reason"], "UnsupportedProtocol", "{st}");
    assert!(st["message"].as_str().unwrap().contains("\"v1\""), "{st}");
    assert_eq!(w.get("v1.example", "/", &[]), Err(500));
    assert!(!w.sw.lab.log("echo-pp").contains("refused a connection"));
    let _ = &mut w;
}

#[test]
fn ipv6_gateway_serves_ipv6_clients_from_ipv6_backends() {
    if !require_root("ipv6_gateway_serves_ipv6_clients_from_ipv6_backends") {
        return;
    }
    const VIP6: &str = "2001:db8:100::40";
    let mut w = start();
    let ns = w.sw.ns.clone();
    let echo = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/netns/harness/echo.py");
    let backend = w.backend.clone();
    w.sw.lab.spawn(
        &backend,
        "echo-a6",
        "python3",
        &[echo, "a6", "2001:db8:113::10", "8080"],
    );
    w.wait("backend a6 listening", || {
        w.sw.lab.log("echo-a6").contains("listening").then_some(())
    });
    w.apply(&format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: svc-a6\n  namespace: {ns}\nspec:\n  ports:\n  - name: http\n    port: 8080\n    protocol: TCP\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: svc-a6-1\n  namespace: {ns}\n  labels:\n    kubernetes.io/service-name: svc-a6\n\
         addressType: IPv6\nports:\n- name: http\n  port: 8080\n  protocol: TCP\nendpoints:\n  - addresses: [\"2001:db8:113::10\"]\n    conditions: {{ready: true}}\n"
    ));
    w.apply(&format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: web6
  namespace: {ns}
spec:
  gatewayClassName: {}
  addresses: [{{type: IPAddress, value: "{VIP6}"}}]
  listeners:
  - {{name: http, port: 80, protocol: HTTP}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: app6
  namespace: {ns}
spec:
  parentRefs: [{{name: web6}}]
  hostnames: [app6.example]
  rules:
  - backendRefs: [{{name: svc-a6, port: 8080}}]
"#,
        w.class
    ));
    let st = w.wait("the Gateway to be Programmed", || {
        let s = w.gateway_status(&ns, "web6");
        (condition(&s["conditions"], "Programmed")["status"] == "True").then_some(s)
    });
    assert_eq!(
        st["addresses"],
        serde_json::json!([{"type": "IPAddress", "value": VIP6}])
    );
    w.wait("the VIP on lo", || {
        crate::vips::lo_addresses(&w.sw.node)
            .contains(&format!("{VIP6}/128"))
            .then_some(())
    });
    let resolve = format!("app6.example:80:[{VIP6}]");
    let v = w.wait("the route to serve over IPv6", || {
        let (status, _, body) = w.curl(&["--resolve", &resolve, "http://app6.example/six"]);
        (status == 200).then(|| serde_json::from_str::<serde_json::Value>(&body).unwrap())
    });
    assert_eq!(v["backend"], "a6");
    assert_eq!(v["path"], "/six");
    // The client as the backend learns it, and the switch's own IPv6 address as the source.
    assert_eq!(v["headers"]["x-forwarded-for"], "2001:db8:66::2");
    assert_eq!(
        v["headers"]["forwarded"],
        "for=\"[2001:db8:66::2]\";proto=http;host=\"app6.example\""
    );
    assert_eq!(v["peer"], "2001:db8:113::1");
}

/// The `gateway-status-writer` component of a switch's `kube-gw status`: (state, info).
fn writer_role(w: &World) -> Option<(String, String)> {
    let s = w.sw.kg.status();
    let c = s["components"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == "gateway-status-writer")?
        .clone();
    Some((
        c["state"].as_str()?.to_string(),
        c["info"].as_str()?.to_string(),
    ))
}

#[test]
fn two_switches_serve_one_gateway_and_one_writes_its_status() {
    if !require_root("two_switches_serve_one_gateway_and_one_writes_its_status") {
        return;
    }
    let w1 = start();
    let sw2 = Switch::start_in(None, "", &gateway_config(&w1.controller));
    let w2 = setup_in_class(sw2, w1.controller.clone(), Some(w1.class.clone()));
    let ns = w1.sw.ns.clone();
    w1.service(&ns, "svc-a", &["203.0.113.10"]);
    let route = |name: &str, host: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  parentRefs: [{{name: web}}]\n  hostnames: [{host}]\n  rules:\n  - backendRefs: [{{name: svc-a, port: 8080}}]\n"
        )
    };
    w1.apply(&format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: web\n  namespace: {ns}\nspec:\n  gatewayClassName: {}\n  addresses:\n  - type: IPAddress\n    value: {VIP}\n  listeners:\n  - name: http\n    port: 80\n    protocol: HTTP\n---\n{}",
        w1.class,
        route("app", "app.example")
    ));
    w1.wait("the Gateway to be Programmed", || {
        let s = w1.gateway_status(&ns, "web");
        (condition(&s["conditions"], "Programmed")["status"] == "True").then_some(())
    });
    // Every switch serves: the same VIP answers through each, to its own client.
    for w in [&w1, &w2] {
        let v = w.wait("the route to serve through this switch", || {
            w.get("app.example", "/x", &[]).ok()
        });
        assert_eq!(v["backend"], "a");
    }
    // Exactly one writes status: the candidate with the smallest name.
    let (mut lead, follow) = if w1.sw.kg.name < w2.sw.kg.name {
        (w1, w2)
    } else {
        (w2, w1)
    };
    let lead_name = lead.sw.kg.name.clone();
    lead.wait("one leader and one follower", || {
        let (a, b) = (writer_role(&lead)?, writer_role(&follow)?);
        (a.0 == "leader" && b.0 == "follower").then_some(())
    });
    let (_, info) = writer_role(&follow).unwrap();
    assert!(
        info.contains(&format!("leader {lead_name};")),
        "the follower names the leader: {info}"
    );
    // The leader's kube-gw stops: its Lease ages out, the follower takes over and writes
    // the status of a route made meanwhile.
    lead.sw.lab.stop(&lead_name, Duration::from_secs(10));
    follow.apply(&route("later", "later.example"));
    let deadline = std::time::Instant::now() + leader_failover();
    loop {
        let st = follow.route_status(&ns, "later");
        let accepted = st["parents"]
            .as_array()
            .and_then(|p| p.first())
            .map(|p| condition(&p["conditions"], "Accepted")["status"] == "True")
            .unwrap_or(false);
        if accepted {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the follower never wrote the new route's status; its role: {:?}",
            writer_role(&follow)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        writer_role(&follow).map(|r| r.0).as_deref(),
        Some("leader"),
        "the follower took over"
    );
    assert_eq!(
        follow.get("later.example", "/x", &[]).unwrap()["backend"],
        "a"
    );
}

/// Lease duration (40 s), a round, and margin for a busy machine.
fn leader_failover() -> Duration {
    Duration::from_secs(40 + 2 + 40)
}
