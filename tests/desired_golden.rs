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
use kube_gw::kube::snapshot::ClusterSnapshot;

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
    let snap = ClusterSnapshot::from_objects(&services, &slices, &nodes);
    let me = NodeId {
        name: case.node.name,
        own_addresses: case.node.own_addresses,
    };
    let out = compute(&snap, &loaded.config, &me);
    // Determinism: the same inputs in another order give the same output.
    services.reverse();
    slices.reverse();
    let again = compute(
        &ClusterSnapshot::from_objects(&services, &slices, &nodes),
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
