//! Kubernetes objects as JSON from the API server, into kube-gw's model and on into the
//! desired state: Services, EndpointSlices and Nodes of any shape that deserializes give a
//! view or are skipped, never a panic, and the desired state computed from them never
//! serves an address outside the switch's pools or the Service CIDR's protection.
#![no_main]
use std::collections::BTreeSet;
use std::path::Path;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use kube_gw::desired::{Engine, NodeId};
use kube_gw::kube::convert;
use libfuzzer_sys::fuzz_target;

const CONFIG: &str = r#"
[node]
name = "spine-1"
[vip]
pools = ["198.51.100.0/24", "2001:db8:100::/64"]
[kubernetes]
kubeconfig = "/etc/kube-gw/kubeconfig"
service-cidrs = ["10.96.0.0/12"]
[bgp]
asn = 65010
router-id = "192.0.2.20"
"#;

fuzz_target!(|data: &[u8]| {
    // Up to three objects, separated by NUL: a Service, an EndpointSlice, a Node.
    let mut parts = data.split(|b| *b == 0);
    let svc: Option<core::Service> = parts.next().and_then(|p| serde_json::from_slice(p).ok());
    let slice: Option<discovery::EndpointSlice> =
        parts.next().and_then(|p| serde_json::from_slice(p).ok());
    let node: Option<core::Node> = parts.next().and_then(|p| serde_json::from_slice(p).ok());
    if let Some(s) = &svc {
        let _ = convert::service_view(s);
    }
    if let Some(s) = &slice {
        let _ = convert::endpoint_slice_view(s);
    }
    if let Some(n) = &node {
        let _ = convert::node_view(n);
    }
    let snap = convert::snapshot(svc.iter(), slice.iter(), node.iter());
    let cfg = kube_gw::config::parse_with(
        Path::new("fuzz.toml"),
        CONFIG,
        kube_gw::config::FileChecks::Skip,
    )
    .expect("the fuzz configuration is valid")
    .config;
    let me = NodeId {
        name: cfg.node_name(),
        own_addresses: BTreeSet::from(["192.0.2.20".parse().expect("an address")]),
    };
    let mut engine = Engine::default();
    engine.update(&snap, &cfg, &me);
    let pools = cfg.vip.prefixes();
    for vip in engine.state().vips.keys() {
        assert!(
            pools.iter().any(|p| p.contains(vip)),
            "{vip} served outside the pools"
        );
    }
});
