//! Gateway API semantics of `compute`, object by object.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use super::*;
use crate::gateway::plan::RequestView;
use crate::model::cluster::{Endpoint, EndpointPort, EndpointSlice, Service, ServicePort};
use crate::model::gateway::*;

const CONTROLLER: &str = "kube-gw.io/switch";

fn key(ns: &str, name: &str) -> ObjectKey {
    ObjectKey {
        namespace: ns.into(),
        name: name.into(),
    }
}

fn obj<S>(ns: &str, name: &str, created: i64, spec: S) -> Object<S> {
    Object {
        key: key(ns, name),
        generation: 3,
        created,
        spec,
    }
}

fn from_json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).unwrap()
}

struct World {
    gw: GatewaySnapshot,
    cluster: ClusterSnapshot,
    l4: BTreeMap<Pair, ObjectKey>,
    pools: Vec<IpNet>,
    address_pools: Vec<IpNet>,
    previous: BTreeMap<ObjectKey, Allocation>,
}

impl World {
    fn new() -> Self {
        let mut gw = GatewaySnapshot {
            complete: true,
            ..Default::default()
        };
        gw.classes.insert(
            "switch".into(),
            obj(
                "",
                "switch",
                0,
                GatewayClassSpec {
                    controller_name: CONTROLLER.into(),
                },
            ),
        );
        gw.classes.insert(
            "other".into(),
            obj(
                "",
                "other",
                0,
                GatewayClassSpec {
                    controller_name: "example.com/else".into(),
                },
            ),
        );
        let mut w = Self {
            gw,
            cluster: ClusterSnapshot::default(),
            l4: BTreeMap::new(),
            pools: vec![
                "192.0.2.0/24".parse().unwrap(),
                "2001:db8::/64".parse().unwrap(),
            ],
            address_pools: vec![],
            previous: BTreeMap::new(),
        };
        w.service("app", "web", &["10.0.0.1", "10.0.0.2"]);
        w
    }

    /// A Service with TCP port 8080 (name "http") and ready endpoints on 9090.
    fn service(&mut self, ns: &str, name: &str, eps: &[&str]) {
        self.cluster.upsert_service(Service {
            key: key(ns, name),
            uid: format!("uid-{name}"),
            created: 0,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            type_: "ClusterIP".into(),
            cluster_ips: vec![],
            external_ips: vec![],
            load_balancer_ips: vec![],
            ports: vec![ServicePort {
                name: "http".into(),
                port: 8080,
                protocol: Protocol::Tcp,
                app_protocol: None,
            }],
            client_ip_affinity: None,
            external_traffic_local: false,
            unparsable_ips: vec![],
            lb: Default::default(),
        });
        self.cluster.upsert_slice(EndpointSlice {
            key: key(ns, &format!("{name}-abc")),
            service: Some(name.into()),
            ports: vec![EndpointPort {
                name: "http".into(),
                port: 9090,
                protocol: Protocol::Tcp,
            }],
            endpoints: eps
                .iter()
                .map(|a| Endpoint {
                    addresses: vec![a.parse().unwrap()],
                    ready: true,
                    serving: true,
                    terminating: false,
                    node_name: None,
                })
                .collect(),
        });
    }

    /// Computes as the gateway's loop does: remembering the allocations for the next round.
    fn compute_again(&mut self) -> GatewayState {
        let st = self.compute();
        self.previous = st.allocations.clone();
        st
    }

    fn gateway(&mut self, ns: &str, name: &str, created: i64, spec: serde_json::Value) {
        self.gw
            .gateways
            .insert(key(ns, name), obj(ns, name, created, from_json(spec)));
    }

    fn http_route(&mut self, ns: &str, name: &str, created: i64, spec: serde_json::Value) {
        self.gw
            .http_routes
            .insert(key(ns, name), obj(ns, name, created, from_json(spec)));
    }

    fn compute(&self) -> GatewayState {
        compute(&Inputs {
            gateway: &self.gw,
            cluster: &self.cluster,
            controller: CONTROLLER,
            pools: &self.pools,
            address_pools: &self.address_pools,
            l4: &self.l4,
            previous: &self.previous,
        })
    }
}

fn http_gateway(addr: &str) -> serde_json::Value {
    serde_json::json!({
        "gatewayClassName": "switch",
        "addresses": [{"type": "IPAddress", "value": addr}],
        "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]
    })
}

fn pair(addr: &str, port: u16) -> Pair {
    Pair {
        addr: addr.parse().unwrap(),
        port,
    }
}

fn cond<'a>(c: &'a [Condition], t: &str) -> &'a Condition {
    c.iter()
        .find(|c| c.type_ == t)
        .unwrap_or_else(|| panic!("no {t} in {c:?}"))
}

fn req<'a>(host: &'a str, path: &'a str) -> RequestView<'a> {
    RequestView {
        host,
        path,
        method: "GET",
        headers: vec![],
        query: vec![],
    }
}

fn table(st: &GatewayState, p: Pair) -> &RouteTable {
    match st.ports.get(&p) {
        Some(PortPlan::Http { routes, .. }) => routes,
        other => panic!("{p}: {other:?}"),
    }
}

#[test]
fn a_gateway_and_route_serve_the_service_s_endpoints_with_every_status_set() {
    let mut w = World::new();
    w.gateway("app", "gw", 1, http_gateway("192.0.2.10"));
    w.http_route(
        "app",
        "r",
        2,
        serde_json::json!({
            "parentRefs": [{"name": "gw"}],
            "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
                       "backendRefs": [{"name": "web", "port": 8080}]}]
        }),
    );
    let st = w.compute();
    let rule = table(&st, pair("192.0.2.10", 80))
        .select(&req("x.example", "/api/v1"))
        .unwrap();
    let eps: Vec<String> = rule.backends[0]
        .endpoints
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert_eq!(eps, ["10.0.0.1:9090", "10.0.0.2:9090"]);
    assert!(
        table(&st, pair("192.0.2.10", 80))
            .select(&req("x.example", "/apix"))
            .is_none(),
        "a prefix matches whole segments"
    );
    assert_eq!(st.vips.get(&"192.0.2.10".parse().unwrap()), Some(&true));
    let (generation, c) = &st.status.classes["switch"];
    assert_eq!((*generation, cond(c, "Accepted").status), (3, true));
    assert!(
        !st.status.classes.contains_key("other"),
        "another controller's class is not ours to write"
    );
    let g = &st.status.gateways[&key("app", "gw")];
    assert_eq!(
        (
            cond(&g.conditions, "Accepted").status,
            cond(&g.conditions, "Programmed").status
        ),
        (true, true)
    );
    assert_eq!(g.addresses, vec!["192.0.2.10".parse::<IpAddr>().unwrap()]);
    assert_eq!(g.listeners[0].attached_routes, 1);
    assert_eq!(g.listeners[0].supported_kinds, vec!["HTTPRoute"]);
    let r = &st.status.http_routes[&key("app", "r")];
    assert_eq!(r.generation, 3);
    assert_eq!(
        cond(&r.parents[0].conditions, "Accepted").reason,
        "Accepted"
    );
    assert!(cond(&r.parents[0].conditions, "ResolvedRefs").status);
}

#[test]
fn without_an_address_in_a_pool_nothing_is_served_and_the_gateway_says_why() {
    let mut w = World::new();
    w.gateway("app", "none", 1, serde_json::json!({"gatewayClassName": "switch", "listeners": [{"name": "h", "port": 80, "protocol": "HTTP"}]}));
    w.gateway("app", "outside", 1, http_gateway("198.51.100.1"));
    w.gateway("app", "theirs", 1, serde_json::json!({"gatewayClassName": "other", "addresses": [{"value": "192.0.2.20"}], "listeners": [{"name": "h", "port": 80, "protocol": "HTTP"}]}));
    let st = w.compute();
    assert!(st.ports.is_empty() && st.vips.is_empty(), "{st:?}");
    let none = cond(
        &st.status.gateways[&key("app", "none")].conditions,
        "Programmed",
    )
    .clone();
    assert_eq!(
        (none.status, none.reason.as_str()),
        (false, "AddressNotAssigned")
    );
    assert!(none.message.contains("spec.addresses"), "{none:?}");
    let out = cond(
        &st.status.gateways[&key("app", "outside")].conditions,
        "Programmed",
    )
    .clone();
    assert_eq!(
        (out.status, out.reason.as_str()),
        (false, "AddressNotUsable")
    );
    assert!(!st.status.gateways.contains_key(&key("app", "theirs")));
}

#[test]
fn gateways_without_spec_addresses_get_stable_ones_from_the_address_pools() {
    let mut w = World::new();
    w.address_pools = vec!["192.0.2.64/30".parse().unwrap()];
    let bare = |assigned: &[&str]| {
        let mut s: GatewaySpec = from_json(
            serde_json::json!({"gatewayClassName": "switch", "listeners": [{"name": "h", "port": 80, "protocol": "HTTP"}]}),
        );
        s.assigned = assigned.iter().map(|a| a.parse().unwrap()).collect();
        s
    };
    let addr =
        |st: &GatewayState, name: &str| st.status.gateways[&key("app", name)].addresses.clone();
    let ip = |a: &str| vec![a.parse::<IpAddr>().unwrap()];
    // .65 and .66 are the pool's hosts. An explicit address takes .65 out of the pool.
    w.gateway("app", "fixed", 1, http_gateway("192.0.2.65"));
    w.gw.gateways
        .insert(key("app", "old"), obj("app", "old", 2, bare(&[])));
    w.gw.gateways
        .insert(key("app", "new"), obj("app", "new", 3, bare(&[])));
    let st = w.compute();
    assert_eq!(addr(&st, "old"), ip("192.0.2.66"));
    assert!(addr(&st, "new").is_empty());
    let c = cond(
        &st.status.gateways[&key("app", "new")].conditions,
        "Programmed",
    );
    assert_eq!((c.status, c.reason.as_str()), (false, "AddressNotAssigned"));
    assert!(c.message.contains("no free address"), "{c:?}");
    // The explicit Gateway goes: "new" gets .65, and "old" keeps .66 though .65 is lower.
    w.gw.gateways.remove(&key("app", "fixed"));
    w.gw.gateways.insert(
        key("app", "old"),
        obj("app", "old", 2, bare(&["192.0.2.66"])),
    );
    let st = w.compute();
    assert_eq!(addr(&st, "old"), ip("192.0.2.66"));
    assert_eq!(addr(&st, "new"), ip("192.0.2.65"));
    // A recorded address another Gateway holds, or outside the pools, is not kept.
    w.gw.gateways.insert(
        key("app", "new"),
        obj("app", "new", 3, bare(&["192.0.2.66"])),
    );
    w.gw.gateways.insert(
        key("app", "odd"),
        obj("app", "odd", 4, bare(&["192.0.2.10"])),
    );
    let st = w.compute();
    assert_eq!(addr(&st, "old"), ip("192.0.2.66"));
    assert_eq!(addr(&st, "new"), ip("192.0.2.65"));
    assert!(addr(&st, "odd").is_empty());
    assert!(
        st.vips
            .keys()
            .any(|v| *v == "192.0.2.65".parse::<IpAddr>().unwrap()),
        "{:?}",
        st.vips
    );
}

#[test]
fn an_allocation_holds_while_the_status_watch_lags_and_follows_a_status_written_since() {
    let mut w = World::new();
    w.address_pools = vec!["192.0.2.64/29".parse().unwrap()];
    let bare = |assigned: &[&str]| {
        let mut s: GatewaySpec = from_json(
            serde_json::json!({"gatewayClassName": "switch", "listeners": [{"name": "h", "port": 80, "protocol": "HTTP"}]}),
        );
        s.assigned = assigned.iter().map(|a| a.parse().unwrap()).collect();
        s
    };
    let set = |w: &mut World, name: &str, created: i64, assigned: &[&str]| {
        w.gw.gateways
            .insert(key("app", name), obj("app", name, created, bare(assigned)));
    };
    let addr = |st: &GatewayState, name: &str| {
        st.status.gateways[&key("app", name)]
            .addresses
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    };
    // "x" holds .65 by its status; "a" is new and gets .66.
    set(&mut w, "x", 1, &["192.0.2.65"]);
    set(&mut w, "a", 2, &[]);
    let st = w.compute_again();
    assert_eq!(addr(&st, "a"), ["192.0.2.66"]);
    // "x" goes before the status written for "a" is seen: "a" keeps .66, though .65 is
    // lower and its status still shows nothing.
    w.gw.gateways.remove(&key("app", "x"));
    let st = w.compute_again();
    assert_eq!(addr(&st, "a"), ["192.0.2.66"]);
    // A new Gateway then takes the freed .65; the written status arriving changes nothing.
    set(&mut w, "b", 3, &[]);
    let st = w.compute_again();
    assert_eq!(
        (addr(&st, "a"), addr(&st, "b")),
        (
            vec!["192.0.2.66".to_string()],
            vec!["192.0.2.65".to_string()]
        )
    );
    set(&mut w, "a", 2, &["192.0.2.66"]);
    let st = w.compute_again();
    assert_eq!(
        (addr(&st, "a"), addr(&st, "b")),
        (
            vec!["192.0.2.66".to_string()],
            vec!["192.0.2.65".to_string()]
        )
    );
    // A status written since with another address (the status-writing switch decided
    // otherwise) is followed.
    set(&mut w, "a", 2, &["192.0.2.68"]);
    let st = w.compute_again();
    assert_eq!(addr(&st, "a"), ["192.0.2.68"]);
    assert!(!st
        .vips
        .contains_key(&"192.0.2.66".parse::<IpAddr>().unwrap()));
    // A status claiming an address an older Gateway holds is not followed: "b" gets the
    // lowest free one.
    set(&mut w, "b", 3, &["192.0.2.68"]);
    let st = w.compute_again();
    assert_eq!(addr(&st, "a"), ["192.0.2.68"]);
    assert_eq!(addr(&st, "b"), ["192.0.2.65"]);
}

#[test]
fn a_cross_namespace_backend_needs_a_reference_grant() {
    let mut w = World::new();
    w.service("other", "db", &["10.0.1.1"]);
    w.gateway("app", "gw", 1, http_gateway("192.0.2.10"));
    w.http_route(
        "app",
        "r",
        2,
        serde_json::json!({
            "parentRefs": [{"name": "gw"}],
            "rules": [{"backendRefs": [{"name": "db", "namespace": "other", "port": 8080}]}]
        }),
    );
    let st = w.compute();
    let c = cond(
        &st.status.http_routes[&key("app", "r")].parents[0].conditions,
        "ResolvedRefs",
    )
    .clone();
    assert_eq!((c.status, c.reason.as_str()), (false, "RefNotPermitted"));
    let rule = table(&st, pair("192.0.2.10", 80))
        .select(&req("a", "/"))
        .unwrap();
    assert!(rule.backends[0].endpoints.is_empty() && rule.backends[0].error.is_some());
    // The grant, in the Service's namespace, from HTTPRoutes of namespace app.
    w.gw.grants.insert(
        key("other", "g"),
        obj(
            "other",
            "g",
            0,
            from_json(serde_json::json!({
                "from": [{"group": GROUP, "kind": "HTTPRoute", "namespace": "app"}],
                "to": [{"group": "", "kind": "Service"}]
            })),
        ),
    );
    let st = w.compute();
    let c = cond(
        &st.status.http_routes[&key("app", "r")].parents[0].conditions,
        "ResolvedRefs",
    )
    .clone();
    assert_eq!((c.status, c.reason.as_str()), (true, "ResolvedRefs"));
    let rule = table(&st, pair("192.0.2.10", 80))
        .select(&req("a", "/"))
        .unwrap();
    assert_eq!(
        rule.backends[0].endpoints,
        vec!["10.0.1.1:9090".parse().unwrap()]
    );
}

#[test]
fn a_vip_port_ipvs_serves_is_a_conflict_and_not_served_by_the_gateway() {
    let mut w = World::new();
    w.l4.insert(pair("192.0.2.10", 80), key("app", "plain"));
    w.gateway("app", "gw", 1, serde_json::json!({
        "gatewayClassName": "switch",
        "addresses": [{"value": "192.0.2.10"}],
        "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}, {"name": "alt", "port": 8000, "protocol": "HTTP"}]
    }));
    let st = w.compute();
    assert!(!st.ports.contains_key(&pair("192.0.2.10", 80)));
    assert!(
        st.ports.contains_key(&pair("192.0.2.10", 8000)),
        "the other listener serves"
    );
    let l = &st.status.gateways[&key("app", "gw")].listeners[0];
    let c = cond(&l.conditions, "Conflicted");
    assert_eq!((c.status, c.reason.as_str()), (true, "PortUnavailable"));
    assert!(c.message.contains("app/plain"), "{c:?}");
    assert!(!cond(&l.conditions, "Programmed").status);
}

#[test]
fn listeners_of_different_protocols_or_the_same_hostname_on_one_port_conflict() {
    let mut w = World::new();
    w.gateway(
        "app",
        "gw",
        1,
        serde_json::json!({
            "gatewayClassName": "switch",
            "addresses": [{"value": "192.0.2.10"}],
            "listeners": [
                {"name": "a", "port": 80, "protocol": "HTTP", "hostname": "a.example"},
                {"name": "b", "port": 80, "protocol": "HTTP", "hostname": "a.example"},
                {"name": "c", "port": 80, "protocol": "HTTP", "hostname": "c.example"},
                {"name": "d", "port": 443, "protocol": "HTTP"},
                {"name": "e", "port": 443, "protocol": "TLS", "tls": {"mode": "Passthrough"}}
            ]
        }),
    );
    let st = w.compute();
    let ls = &st.status.gateways[&key("app", "gw")].listeners;
    let reason = |i: usize| cond(&ls[i].conditions, "Conflicted").reason.clone();
    assert_eq!(
        [reason(0), reason(1), reason(2), reason(3), reason(4)],
        [
            "HostnameConflict",
            "HostnameConflict",
            "NoConflicts",
            "ProtocolConflict",
            "ProtocolConflict"
        ]
    );
    assert!(
        st.ports.contains_key(&pair("192.0.2.10", 80)),
        "listener c serves port 80"
    );
    assert!(!st.ports.contains_key(&pair("192.0.2.10", 443)));
}

#[test]
fn the_most_specific_host_then_the_gateway_api_match_precedence_picks_the_rule() {
    let mut w = World::new();
    w.service("app", "exact", &["10.0.0.3"]);
    w.service("app", "long", &["10.0.0.4"]);
    w.service("app", "method", &["10.0.0.5"]);
    w.service("app", "hdr", &["10.0.0.6"]);
    w.service("app", "wild", &["10.0.0.7"]);
    w.gateway("app", "gw", 1, http_gateway("192.0.2.10"));
    w.http_route("app", "any", 5, serde_json::json!({
        "parentRefs": [{"name": "gw"}],
        "rules": [
            {"backendRefs": [{"name": "web", "port": 8080}]},
            {"matches": [{"path": {"type": "Exact", "value": "/a/b"}}], "backendRefs": [{"name": "exact", "port": 8080}]},
            {"matches": [{"path": {"value": "/a/b/"}}], "backendRefs": [{"name": "long", "port": 8080}]},
            {"matches": [{"path": {"value": "/a"}, "method": "POST"}], "backendRefs": [{"name": "method", "port": 8080}]},
            {"matches": [{"path": {"value": "/a"}, "headers": [{"name": "X-Env", "value": "canary"}]}], "backendRefs": [{"name": "hdr", "port": 8080}]}
        ]
    }));
    w.http_route("app", "wild", 4, serde_json::json!({
        "parentRefs": [{"name": "gw"}],
        "hostnames": ["*.example.com"],
        "rules": [{"matches": [{"path": {"value": "/only"}}], "backendRefs": [{"name": "wild", "port": 8080}]}]
    }));
    let st = w.compute();
    let t = table(&st, pair("192.0.2.10", 80));
    let to = |r: RequestView<'_>| {
        t.select(&r)
            .map(|r| r.backends[0].name.clone())
            .unwrap_or_default()
    };
    assert_eq!(to(req("h", "/a/b")), "app/exact:8080");
    assert_eq!(to(req("h", "/a/b/c")), "app/long:8080");
    assert_eq!(
        to(RequestView {
            method: "POST",
            ..req("h", "/a/x")
        }),
        "app/method:8080"
    );
    assert_eq!(
        to(RequestView {
            headers: vec![("x-env", "canary")],
            ..req("h", "/a/x")
        }),
        "app/hdr:8080"
    );
    assert_eq!(to(req("h", "/z")), "app/web:8080");
    assert_eq!(to(req("foo.example.com", "/only/x")), "app/wild:8080");
    // The wildcard host's group is the most specific for this host: no fall-through.
    assert!(t.select(&req("foo.example.com", "/z")).is_none());
}

#[test]
fn a_bad_secret_fails_its_listener_only() {
    let mut w = World::new();
    let cert = rcgen::generate_simple_self_signed(vec!["good.example".into()]).unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["x".into()]).unwrap();
    let secret = |name: &str, c: String, k: String| TlsSecret {
        key: key("app", name),
        cert_pem: c.into_bytes().into(),
        key_pem: k.into_bytes().into(),
    };
    w.gw.secrets.insert(
        key("app", "good"),
        secret("good", cert.cert.pem(), cert.signing_key.serialize_pem()),
    );
    w.gw.secrets.insert(
        key("app", "notpem"),
        secret("notpem", "garbage".into(), "garbage".into()),
    );
    w.gw.secrets.insert(
        key("app", "mismatch"),
        secret(
            "mismatch",
            cert.cert.pem(),
            other.signing_key.serialize_pem(),
        ),
    );
    let https = |name: &str, host: &str, secret: &str| serde_json::json!({"name": name, "port": 443, "protocol": "HTTPS", "hostname": host, "tls": {"certificateRefs": [{"name": secret}]}});
    w.gateway("app", "gw", 1, serde_json::json!({
        "gatewayClassName": "switch",
        "addresses": [{"value": "192.0.2.10"}],
        "listeners": [https("good", "good.example", "good"), https("bad1", "b1.example", "notpem"), https("bad2", "b2.example", "mismatch"), https("bad3", "b3.example", "missing")]
    }));
    let st = w.compute();
    let ls = &st.status.gateways[&key("app", "gw")].listeners;
    let rr = |i: usize| {
        let c = cond(&ls[i].conditions, "ResolvedRefs");
        (c.status, c.reason.clone(), c.message.clone())
    };
    assert!(rr(0).0);
    for i in 1..4 {
        let (ok, reason, msg) = rr(i);
        assert!(
            !ok && reason == "InvalidCertificateRef",
            "{i}: {reason} {msg}"
        );
    }
    assert!(
        rr(1).2.contains("not PEM") || rr(1).2.contains("no certificate"),
        "{:?}",
        rr(1)
    );
    assert!(rr(2).2.contains("does not fit"), "{:?}", rr(2));
    assert!(rr(3).2.contains("not found"), "{:?}", rr(3));
    match st.ports.get(&pair("192.0.2.10", 443)) {
        Some(PortPlan::Http { tls: Some(c), .. }) => {
            assert_eq!(c.by_host.len(), 1);
            assert_eq!(
                c.lookup(Some("good.example")).unwrap().secret,
                key("app", "good")
            );
        }
        other => panic!("{other:?}"),
    }
    let g = &st.status.gateways[&key("app", "gw")];
    assert_eq!(cond(&g.conditions, "Accepted").reason, "ListenersNotValid");
    assert!(cond(&g.conditions, "Programmed").status);
}

#[test]
fn routes_attach_only_where_listeners_allow_them() {
    let mut w = World::new();
    w.service("team", "web", &["10.0.2.1"]);
    w.gw.namespaces.insert(
        "team".into(),
        BTreeMap::from([("gw-access".into(), "yes".into())]),
    );
    w.gateway("app", "gw", 1, serde_json::json!({
        "gatewayClassName": "switch",
        "addresses": [{"value": "192.0.2.10"}],
        "listeners": [
            {"name": "same", "port": 80, "protocol": "HTTP"},
            {"name": "sel", "port": 81, "protocol": "HTTP", "allowedRoutes": {"namespaces": {"from": "Selector", "selector": {"matchLabels": {"gw-access": "yes"}}}}},
            {"name": "host", "port": 82, "protocol": "HTTP", "hostname": "only.example", "allowedRoutes": {"namespaces": {"from": "All"}}}
        ]
    }));
    let parent = |s: &str| serde_json::json!({"name": "gw", "namespace": "app", "sectionName": s});
    w.http_route("team", "to-same", 2, serde_json::json!({"parentRefs": [parent("same")], "rules": [{"backendRefs": [{"name": "web", "port": 8080}]}]}));
    w.http_route("team", "to-sel", 2, serde_json::json!({"parentRefs": [parent("sel")], "rules": [{"backendRefs": [{"name": "web", "port": 8080}]}]}));
    w.http_route("team", "to-host", 2, serde_json::json!({"parentRefs": [parent("host")], "hostnames": ["other.example"], "rules": []}));
    w.http_route(
        "team",
        "to-none",
        2,
        serde_json::json!({"parentRefs": [parent("nope")], "rules": []}),
    );
    let st = w.compute();
    let reason = |r: &str| {
        cond(
            &st.status.http_routes[&key("team", r)].parents[0].conditions,
            "Accepted",
        )
        .reason
        .clone()
    };
    assert_eq!(reason("to-same"), "NotAllowedByListeners");
    assert_eq!(reason("to-sel"), "Accepted");
    assert_eq!(reason("to-host"), "NoMatchingListenerHostname");
    assert_eq!(reason("to-none"), "NoMatchingParent");
    let ls = &st.status.gateways[&key("app", "gw")].listeners;
    assert_eq!(
        ls.iter().map(|l| l.attached_routes).collect::<Vec<_>>(),
        vec![0, 1, 0]
    );
    assert!(table(&st, pair("192.0.2.10", 81))
        .select(&req("a", "/"))
        .is_some());
    assert!(table(&st, pair("192.0.2.10", 80))
        .select(&req("a", "/"))
        .is_none());
}

#[test]
fn an_unserved_tls_mode_is_an_unsupported_value_and_an_unknown_protocol_unsupported() {
    let mut w = World::new();
    w.gateway(
        "app",
        "gw",
        1,
        serde_json::json!({
            "gatewayClassName": "switch",
            "addresses": [{"value": "192.0.2.10"}],
            "listeners": [
                {"name": "t", "port": 8443, "protocol": "TLS", "tls": {"mode": "Terminate"}},
                {"name": "s", "port": 9000, "protocol": "SCTP"},
                {"name": "p", "port": 443, "protocol": "TLS", "tls": {"mode": "Passthrough"}}
            ]
        }),
    );
    let st = w.compute();
    let ls = &st.status.gateways[&key("app", "gw")].listeners;
    let acc = |i: usize| {
        let c = cond(&ls[i].conditions, "Accepted");
        (c.status, c.reason.clone())
    };
    assert_eq!(acc(0), (false, "UnsupportedValue".to_string()));
    assert_eq!(acc(1), (false, "UnsupportedProtocol".to_string()));
    assert_eq!(acc(2), (true, "Accepted".to_string()));
}

#[test]
fn an_extension_ref_filter_resolves_to_its_model_override_or_fails_requests() {
    let mut w = World::new();
    w.gateway("app", "gw", 1, http_gateway("192.0.2.10"));
    let route = |kind: &str| {
        serde_json::json!({
            "parentRefs": [{"name": "gw"}],
            "rules": [{
                "filters": [{"type": "ExtensionRef", "extensionRef": {"group": "kube-gw.io", "kind": kind, "name": "llm"}}],
                "backendRefs": [{"name": "web", "port": 8080}]
            }]
        })
    };
    w.http_route("app", "r", 2, route("ModelOverride"));
    // Not there yet: the route says so and its requests fail (the filter is never skipped).
    let st = w.compute();
    let parent = |st: &GatewayState| {
        st.status.http_routes[&key("app", "r")].parents[0]
            .conditions
            .clone()
    };
    let c = cond(&parent(&st), "ResolvedRefs").clone();
    assert_eq!(
        (c.status, c.reason.as_str()),
        (false, "ExtensionRefNotResolved")
    );
    let rule = table(&st, pair("192.0.2.10", 80))
        .select(&req("a", "/api/chat"))
        .unwrap();
    assert!(
        matches!(&rule.filters[0], Filter::Unresolved(m) if m.contains("app/llm")),
        "{:?}",
        rule.filters
    );
    // Created: resolved, with its defaults.
    w.gw.model_overrides.insert(
        key("app", "llm"),
        obj("app", "llm", 3, from_json(serde_json::json!({"models": [{"name": "a", "weight": 3}, {"name": "b"}, {"name": "off", "weight": 0}]}))),
    );
    let st = w.compute();
    assert!(cond(&parent(&st), "ResolvedRefs").status);
    let rule = table(&st, pair("192.0.2.10", 80))
        .select(&req("a", "/api/chat"))
        .unwrap();
    let Filter::ModelOverride(m) = &rule.filters[0] else {
        panic!("{:?}", rule.filters)
    };
    assert_eq!(m.models, vec![("a".to_string(), 3), ("b".to_string(), 1)]);
    assert_eq!((m.paths.len(), m.max_body, m.reject), (4, 1 << 20, false));
    // Another kind is not kube-gw's: the route is not Accepted.
    w.http_route("app", "r", 2, route("Other"));
    let st = w.compute();
    let c = cond(&parent(&st), "Accepted").clone();
    assert_eq!((c.status, c.reason.as_str()), (false, "UnsupportedValue"));
}

#[test]
fn route_timeouts_are_gateway_api_durations_and_0s_disables() {
    use std::time::Duration;
    assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(duration("1h30m"), Ok(Duration::from_secs(5400)));
    assert_eq!(duration("1h1m1s1ms"), Ok(Duration::from_millis(3_661_001)));
    assert_eq!(duration("0s"), Ok(Duration::ZERO));
    for bad in ["", "10", "1d", "1.5s", "123456s", "1h1m1s1ms1h", "s", "-1s"] {
        assert!(duration(bad).is_err(), "{bad:?}");
    }
    let mut w = World::new();
    w.gateway("app", "gw", 1, http_gateway("192.0.2.10"));
    w.http_route(
        "app",
        "r",
        2,
        serde_json::json!({
            "parentRefs": [{"name": "gw"}],
            "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/a"}}], "timeouts": {"request": "2s", "backendRequest": "500ms"}, "backendRefs": [{"name": "web", "port": 8080}]},
                {"matches": [{"path": {"type": "PathPrefix", "value": "/b"}}], "timeouts": {"request": "0s", "backendRequest": "0s"}, "backendRefs": [{"name": "web", "port": 8080}]},
                {"matches": [{"path": {"type": "PathPrefix", "value": "/c"}}], "backendRefs": [{"name": "web", "port": 8080}]}
            ]
        }),
    );
    let st = w.compute();
    let t = table(&st, pair("192.0.2.10", 80));
    let of = |p: &str| {
        let r = t.select(&req("a", p)).unwrap();
        (r.request_timeout, r.backend_timeout)
    };
    assert_eq!(
        of("/a"),
        (
            Some(Duration::from_secs(2)),
            Some(Duration::from_millis(500))
        )
    );
    assert_eq!(of("/b"), (None, Some(Duration::ZERO)));
    assert_eq!(of("/c"), (None, None));
}

#[test]
fn backend_ref_header_filters_go_with_their_backend_and_others_are_refused() {
    let mut w = World::new();
    w.gateway("app", "gw", 1, http_gateway("192.0.2.10"));
    let route = |t: &str| {
        serde_json::json!({
            "parentRefs": [{"name": "gw"}],
            "rules": [{"backendRefs": [{"name": "web", "port": 8080, "filters": [
                {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x-b", "value": "1"}]}},
                {"type": t, "responseHeaderModifier": {"remove": ["server"]}}
            ]}]}]
        })
    };
    w.http_route("app", "r", 2, route("ResponseHeaderModifier"));
    let st = w.compute();
    let rule = table(&st, pair("192.0.2.10", 80))
        .select(&req("a", "/"))
        .unwrap();
    let b = &rule.backends[0];
    assert_eq!((b.request_headers.len(), b.response_headers.len()), (1, 1));
    assert_eq!(b.request_headers[0].set[0].name, "x-b");
    w.http_route("app", "r", 2, route("RequestMirror"));
    let st = w.compute();
    let c = cond(
        &st.status.http_routes[&key("app", "r")].parents[0].conditions,
        "Accepted",
    )
    .clone();
    assert_eq!((c.status, c.reason.as_str()), (false, "UnsupportedValue"));
}

#[test]
fn a_request_is_served_only_by_routes_of_the_most_specific_listener_its_host_matches() {
    let mut w = World::new();
    w.gateway(
        "app",
        "gw",
        1,
        serde_json::json!({
            "gatewayClassName": "switch",
            "addresses": [{"value": "192.0.2.10"}],
            "listeners": [
                {"name": "any", "port": 80, "protocol": "HTTP"},
                {"name": "wild", "port": 80, "protocol": "HTTP", "hostname": "*.example.com"},
                {"name": "abc", "port": 80, "protocol": "HTTP", "hostname": "abc.example.com"}
            ]
        }),
    );
    // Attached to the empty-hostname listener, with hostnames that reach into the others'.
    w.http_route("app", "to-any", 2, serde_json::json!({
        "parentRefs": [{"name": "gw", "sectionName": "any"}],
        "hostnames": ["bar.com", "abc.example.com", "x.example.com"],
        "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/any"}}], "backendRefs": [{"name": "web", "port": 8080}]}]
    }));
    w.http_route("app", "to-wild", 3, serde_json::json!({
        "parentRefs": [{"name": "gw", "sectionName": "wild"}],
        "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/wild"}}], "backendRefs": [{"name": "web", "port": 8080}]}]
    }));
    let st = w.compute();
    let t = table(&st, pair("192.0.2.10", 80));
    let route =
        |host: &str, path: &str| t.select(&req(host, path)).map(|r| r.route.name.to_string());
    assert_eq!(route("bar.com", "/any").as_deref(), Some("to-any"));
    // x.example.com belongs to listener "wild": the route of "any" is not a candidate.
    assert_eq!(route("x.example.com", "/any"), None);
    assert_eq!(route("x.example.com", "/wild").as_deref(), Some("to-wild"));
    // abc.example.com belongs to listener "abc", which has no route: nothing serves it.
    assert_eq!(route("abc.example.com", "/any"), None);
    assert_eq!(route("abc.example.com", "/wild"), None);
}

#[test]
fn a_service_port_with_app_protocol_h2c_makes_its_backend_h2c() {
    let mut w = World::new();
    w.service("app", "grpc", &["10.0.0.9"]);
    let mut svc = w.cluster.services[&key("app", "grpc")].clone();
    svc.ports[0].app_protocol = Some("kubernetes.io/h2c".into());
    w.cluster.upsert_service(svc);
    w.gateway("app", "gw", 1, http_gateway("192.0.2.10"));
    w.http_route("app", "r", 2, serde_json::json!({
        "parentRefs": [{"name": "gw"}],
        "rules": [
            {"matches": [{"path": {"type": "PathPrefix", "value": "/g"}}], "backendRefs": [{"name": "grpc", "port": 8080}]},
            {"backendRefs": [{"name": "web", "port": 8080}]}
        ]
    }));
    let st = w.compute();
    let t = table(&st, pair("192.0.2.10", 80));
    assert!(t.select(&req("a", "/g")).unwrap().backends[0].h2c);
    assert!(!t.select(&req("a", "/")).unwrap().backends[0].h2c);
}
