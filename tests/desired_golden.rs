//! Golden tests for `desired::compute`: each `tests/golden/desired/<case>.yaml` holds a
//! configuration, this switch's identity and Kubernetes objects; the computed desired state
//! must equal `<case>.expected.json`. `UPDATE_GOLDEN=1 cargo test --test desired_golden`
//! rewrites the expected files — read the diff before committing it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube_gw::desired::{compute, NodeId};
use kube_gw::kube::convert;
use kube_gw::model::ClusterSnapshot;

#[derive(serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
struct NodeSpec {
    name: String,
    #[serde(default)]
    own_addresses: BTreeSet<std::net::IpAddr>,
}

#[derive(serde::Deserialize)]
struct Case {
    config: String,
    node: NodeSpec,
    objects: Vec<serde_yaml::Value>,
}

fn run_case(path: &Path) -> String {
    let case: Case = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    std::fs::write(&kc, "placeholder").unwrap();
    std::fs::set_permissions(&kc, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cfg_path = dir.path().join("config.toml");
    let loaded = kube_gw::config::parse(&cfg_path, &case.config)
        .unwrap_or_else(|e| panic!("{}: bad config:\n{e}", path.display()));
    let (mut services, mut slices, mut nodes) = (Vec::new(), Vec::new(), Vec::new());
    for o in case.objects {
        match o["kind"].as_str().unwrap() {
            "Service" => services.push(serde_yaml::from_value::<Service>(o).unwrap()),
            "EndpointSlice" => slices.push(serde_yaml::from_value::<EndpointSlice>(o).unwrap()),
            "Node" => nodes.push(serde_yaml::from_value::<Node>(o).unwrap()),
            k => panic!("{}: unexpected kind {k}", path.display()),
        }
    }
    let snap = convert::snapshot(&services, &slices, &nodes);
    let me = NodeId {
        name: case.node.name,
        own_addresses: case.node.own_addresses,
    };
    let out = compute(&snap, &loaded.config, &me);
    // Determinism: the same inputs in another order give the same output.
    services.reverse();
    slices.reverse();
    let again = compute(
        &convert::snapshot(&services, &slices, &nodes),
        &loaded.config,
        &me,
    );
    assert_eq!(out, again, "{}: order-dependent output", path.display());
    serde_json::to_string_pretty(&out).unwrap() + "\n"
}

#[test]
fn desired_state_matches_the_golden_files() {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/desired"));
    let update = std::env::var("UPDATE_GOLDEN").as_deref() == Ok("1");
    let mut cases = 0;
    let mut failures = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
    {
        cases += 1;
        let got = run_case(path);
        let expected_path = path.with_extension("expected.json");
        if update {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&expected_path).unwrap_or_else(|_| {
            panic!(
                "{} is missing; run with UPDATE_GOLDEN=1",
                expected_path.display()
            )
        });
        if got != want {
            failures.push(format!(
                "{}:\n--- want\n{want}\n--- got\n{got}",
                path.display()
            ));
        }
    }
    assert!(cases >= 6, "expected the golden cases, found {cases}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A small deterministic generator (no test may depend on the clock or on entropy).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// The daemon keeps the desired state up to date with `desired::Engine`, recomputing only
/// what a change touches; the Events task does the same with `events::apply`. Over a long
/// random sequence of changes — Services and EndpointSlices coming, changing and going,
/// shared and conflicting VIPs, Nodes and own addresses changing — both must always equal
/// what a fresh computation gives.
#[test]
fn incremental_updates_end_where_a_fresh_computation_does() {
    use kube_gw::desired::Engine;
    use kube_gw::kube::events;
    use kube_gw::model::cluster::{
        self as snapshot, Endpoint, EndpointPort, ObjectKey, Protocol, ServicePort,
    };

    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    std::fs::write(&kc, "placeholder").unwrap();
    std::fs::set_permissions(&kc, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = "[kubernetes]\nkubeconfig = \"kubeconfig\"\nservice-cidrs = [\"10.96.0.0/12\"]\n\
                [vip]\npools = [\"198.51.100.0/28\", \"2001:db8:100::/124\"]\n";
    let cfg = kube_gw::config::parse(&dir.path().join("config.toml"), text)
        .unwrap()
        .config;
    let addrs: Vec<std::net::IpAddr> = [
        "198.51.100.1",
        "198.51.100.2",
        "198.51.100.3",
        "198.51.100.4",
        "2001:db8:100::1",
        "2001:db8:100::2",
        "203.0.113.9", // outside the pools
        "10.96.0.20",  // in the service CIDR
    ]
    .iter()
    .map(|a| a.parse().unwrap())
    .collect();
    let ports = [
        (80, Protocol::Tcp),
        (443, Protocol::Tcp),
        (53, Protocol::Udp),
    ];
    let mut rng = Lcg(7);
    let mut snap = ClusterSnapshot::default();
    let mut me = NodeId {
        name: "spine-1".into(),
        own_addresses: BTreeSet::new(),
    };
    let mut engine = Engine::default();
    let mut outcomes = std::collections::BTreeMap::new();
    let mut shown = kube_gw::desired::DesiredState::default();
    let mut recomputed_small = 0;
    for step in 0..600 {
        let name = format!("s{}", rng.next(12));
        let key = ObjectKey {
            namespace: "shop".into(),
            name: name.as_str().into(),
        };
        match rng.next(10) {
            0..=3 => {
                let n_ips = 1 + rng.next(2) as usize;
                let mut svc = snapshot::Service {
                    key: key.clone(),
                    uid: format!("uid-{name}"),
                    created: rng.next(4) as i64,
                    labels: Default::default(),
                    annotations: Default::default(),
                    type_: "ClusterIP".into(),
                    cluster_ips: vec![],
                    external_ips: (0..n_ips)
                        .map(|_| addrs[rng.next(addrs.len() as u64) as usize])
                        .collect(),
                    load_balancer_ips: vec![],
                    ports: vec![],
                    client_ip_affinity: None,
                    external_traffic_local: false,
                    unparsable_ips: if rng.next(8) == 0 {
                        vec!["not-an-ip".into()]
                    } else {
                        vec![]
                    },
                    lb: Default::default(),
                };
                for _ in 0..1 + rng.next(2) {
                    let (port, protocol) = ports[rng.next(3) as usize];
                    if !svc
                        .ports
                        .iter()
                        .any(|p| p.port == port && p.protocol == protocol)
                    {
                        svc.ports.push(ServicePort {
                            name: format!("p{port}"),
                            port,
                            protocol,
                            app_protocol: None,
                        });
                    }
                }
                if rng.next(6) == 0 {
                    svc.annotations
                        .insert("kube-gw.io/announce".into(), "false".into());
                }
                snap.upsert_service(svc);
            }
            4 => {
                snap.remove_service(&key);
            }
            5..=7 => {
                let slice = snapshot::EndpointSlice {
                    key: ObjectKey {
                        namespace: "shop".into(),
                        name: format!("{name}-{}", rng.next(2)).into(),
                    },
                    service: Some(name.as_str().into()),
                    ports: ports
                        .iter()
                        .map(|(p, proto)| EndpointPort {
                            name: format!("p{p}"),
                            port: p + 8000,
                            protocol: *proto,
                        })
                        .collect(),
                    endpoints: (0..rng.next(3))
                        .map(|i| Endpoint {
                            addresses: vec![format!("192.0.2.{}", 10 + i).parse().unwrap()],
                            ready: rng.next(2) == 0,
                            serving: true,
                            terminating: rng.next(3) == 0,
                            node_name: None,
                        })
                        .collect(),
                };
                snap.upsert_slice(slice);
            }
            8 => {
                let slice = ObjectKey {
                    namespace: "shop".into(),
                    name: format!("{name}-{}", rng.next(2)).into(),
                };
                snap.remove_slice(&slice);
            }
            _ => {
                // Rare global changes: a Node takes one of the addresses, or the switch does.
                if rng.next(2) == 0 {
                    snap.upsert_node(snapshot::Node {
                        name: "worker-1".into(),
                        addresses: vec![addrs[rng.next(4) as usize]],
                    });
                } else {
                    me.own_addresses = BTreeSet::from([addrs[rng.next(4) as usize]]);
                }
            }
        }
        let n = engine.update(&snap, &cfg, &me);
        if n <= 1 {
            recomputed_small += 1;
        }
        let fresh = compute(&snap, &cfg, &me);
        assert_eq!(
            *engine.state(),
            fresh,
            "step {step}: incremental state differs"
        );
        let now = engine.state().clone();
        events::apply(&mut outcomes, &shown, &now);
        let mut from_scratch = std::collections::BTreeMap::new();
        events::apply(&mut from_scratch, &Default::default(), &now);
        assert_eq!(outcomes, from_scratch, "step {step}: Event outcomes differ");
        shown = now;
    }
    // The sequence really exercised the incremental path, not only full recomputations.
    assert!(
        recomputed_small > 300,
        "only {recomputed_small} small updates"
    );
}
