//! Kubernetes API objects → the model's cluster view ([`crate::model::cluster`]). The API
//! types stop here: everything downstream computes from [`ClusterSnapshot`].

use std::net::IpAddr;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;

use crate::model::cluster::{
    ClusterSnapshot, Endpoint, EndpointPort, EndpointSlice, Family, LoadBalancerSpec, Node,
    ObjectKey, Protocol, Service, ServicePort, ANNOTATION_PREFIX,
};

/// Builds a complete snapshot from API objects (in any order).
pub fn snapshot<'a>(
    services: impl IntoIterator<Item = &'a core::Service>,
    slices: impl IntoIterator<Item = &'a discovery::EndpointSlice>,
    nodes: impl IntoIterator<Item = &'a core::Node>,
) -> ClusterSnapshot {
    let mut snap = ClusterSnapshot::default();
    for s in services.into_iter().filter_map(service_view) {
        snap.upsert_service(s);
    }
    for s in slices.into_iter().filter_map(endpoint_slice_view) {
        snap.upsert_slice(s);
    }
    for n in nodes.into_iter().filter_map(node_view) {
        snap.upsert_node(n);
    }
    snap.complete = true;
    snap
}

/// A port's protocol as the API writes it (absent means TCP).
fn protocol(s: Option<&str>) -> Option<Protocol> {
    match s.unwrap_or("TCP") {
        "TCP" => Some(Protocol::Tcp),
        "UDP" => Some(Protocol::Udp),
        "SCTP" => Some(Protocol::Sctp),
        _ => None,
    }
}

fn key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<ObjectKey> {
    Some(ObjectKey {
        namespace: meta.namespace.as_deref().unwrap_or("default").into(),
        name: meta.name.as_deref()?.into(),
    })
}

fn parse_ips<'a>(raw: impl IntoIterator<Item = &'a String>, bad: &mut Vec<String>) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for s in raw {
        match s.parse() {
            Ok(ip) => out.push(ip),
            Err(_) => bad.push(s.clone()),
        }
    }
    out
}

/// Converts an API Service (`None` without a name).
pub fn service_view(s: &core::Service) -> Option<Service> {
    let key = key(&s.metadata)?;
    let no_spec = core::ServiceSpec::default();
    let spec = s.spec.as_ref().unwrap_or(&no_spec);
    let mut bad = Vec::new();
    let external_ips = parse_ips(spec.external_ips.iter().flatten(), &mut bad);
    let lb_raw: Vec<String> = s
        .status
        .iter()
        .filter_map(|st| st.load_balancer.as_ref())
        .flat_map(|lb| lb.ingress.iter().flatten())
        .filter_map(|i| i.ip.clone())
        .collect();
    let load_balancer_ips = parse_ips(lb_raw.iter(), &mut bad);
    let mut ignored = Vec::new();
    let cluster_ips = parse_ips(
        spec.cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.iter())
            .filter(|ip| ip.as_str() != "None"),
        &mut ignored,
    );
    let mut cluster_ips = cluster_ips;
    cluster_ips.sort();
    cluster_ips.dedup();
    let ports = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            Some(ServicePort {
                name: p.name.clone().unwrap_or_default(),
                port: u16::try_from(p.port).ok()?,
                protocol: protocol(p.protocol.as_deref())?,
                app_protocol: p.app_protocol.clone(),
            })
        })
        .collect();
    let client_ip_affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .unwrap_or(10800)
    });
    Some(Service {
        key,
        uid: s.metadata.uid.clone().unwrap_or_default(),
        created: s
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(0, |t| t.0.as_second()),
        labels: s.metadata.labels.clone().unwrap_or_default(),
        // Only kube-gw's own: others (kubectl's last-applied-configuration among them) can
        // be kilobytes per Service and are never read.
        annotations: s
            .metadata
            .annotations
            .iter()
            .flatten()
            .filter(|(k, _)| k.starts_with(ANNOTATION_PREFIX))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        type_: spec.type_.clone().unwrap_or_else(|| "ClusterIP".into()),
        cluster_ips,
        external_ips,
        load_balancer_ips,
        ports,
        client_ip_affinity,
        external_traffic_local: spec.external_traffic_policy.as_deref() == Some("Local"),
        unparsable_ips: bad,
        lb: LoadBalancerSpec {
            class: spec.load_balancer_class.clone(),
            requested_ip: spec.load_balancer_ip.clone().filter(|s| !s.is_empty()),
            families: spec
                .ip_families
                .iter()
                .flatten()
                .filter_map(|f| match f.as_str() {
                    "IPv4" => Some(Family::V4),
                    "IPv6" => Some(Family::V6),
                    _ => None,
                })
                .collect(),
            require_dual_stack: spec.ip_family_policy.as_deref() == Some("RequireDualStack"),
            source_ranges: spec
                .load_balancer_source_ranges
                .iter()
                .flatten()
                .map(|r| r.trim().parse().ok())
                .collect(),
        },
    })
}

/// Converts an API EndpointSlice (`None` without a name, or for FQDN slices).
pub fn endpoint_slice_view(s: &discovery::EndpointSlice) -> Option<EndpointSlice> {
    let key = key(&s.metadata)?;
    if !matches!(s.address_type.as_str(), "IPv4" | "IPv6") {
        return None; // FQDN slices carry no addresses kube-gw can program.
    }
    let ports = s
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            Some(EndpointPort {
                name: p.name.clone().unwrap_or_default(),
                port: u16::try_from(p.port?).ok()?,
                protocol: protocol(p.protocol.as_deref())?,
            })
        })
        .collect();
    let endpoints = s
        .endpoints
        .iter()
        .flatten()
        .map(|e| {
            let c = e.conditions.clone().unwrap_or_default();
            Endpoint {
                addresses: e.addresses.iter().filter_map(|a| a.parse().ok()).collect(),
                ready: c.ready.unwrap_or(true),
                serving: c.serving.unwrap_or(true),
                terminating: c.terminating.unwrap_or(false),
                node_name: e.node_name.clone(),
            }
        })
        .collect();
    Some(EndpointSlice {
        key,
        service: s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name"))
            .map(|n| n.as_str().into()),
        ports,
        endpoints,
    })
}

/// Converts an API Node (`None` without a name). Its InternalIP addresses come first (the
/// ones `tunnel` forwarding sends to), each kind sorted.
pub fn node_view(n: &core::Node) -> Option<Node> {
    let name = n.metadata.name.clone()?;
    let mut addresses: Vec<(bool, IpAddr)> = n
        .status
        .iter()
        .flat_map(|s| s.addresses.iter().flatten())
        .filter(|a| a.type_ != "Hostname")
        .filter_map(|a| Some((a.type_ != "InternalIP", a.address.parse().ok()?)))
        .collect();
    addresses.sort();
    let mut seen = std::collections::BTreeSet::new();
    let addresses = addresses
        .into_iter()
        .map(|(_, a)| a)
        .filter(|a| seen.insert(*a))
        .collect();
    Some(Node { name, addresses })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn from_json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_service_keeps_what_kube_gw_uses() {
        let svc: core::Service = from_json(json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u1",
                         "creationTimestamp": "2026-01-01T00:00:00Z",
                         "annotations": {"kube-gw.io/announce": "false",
                                         "kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                     "externalIPs": ["198.51.100.10", "not-an-ip"],
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}],
                     "sessionAffinity": "ClientIP", "externalTrafficPolicy": "Local"},
            "status": {"loadBalancer": {"ingress": [{"ip": "2001:db8:100::10"}, {"hostname": "lb.example"}]}}
        }));
        let snap = snapshot([&svc], [], []);
        let s = &snap.services[&ObjectKey {
            namespace: "shop".into(),
            name: "web".into(),
        }];
        assert_eq!(
            s.external_ips,
            vec!["198.51.100.10".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(s.unparsable_ips, vec!["not-an-ip".to_string()]);
        assert_eq!(
            s.load_balancer_ips,
            vec!["2001:db8:100::10".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(s.cluster_ips, vec!["10.96.0.10".parse::<IpAddr>().unwrap()]);
        assert_eq!(s.ports.len(), 2);
        assert_eq!(s.ports[1].protocol, Protocol::Udp);
        assert_eq!(s.client_ip_affinity, Some(10800));
        assert!(s.external_traffic_local);
        assert_eq!(s.created, 1_767_225_600);
        assert_eq!(s.annotations["kube-gw.io/announce"], "false");
        assert_eq!(
            s.annotations.len(),
            1,
            "only kube-gw's annotations: {:?}",
            s.annotations
        );
    }

    #[test]
    fn endpoint_conditions_default_as_kube_proxy_reads_them() {
        let slice: discovery::EndpointSlice = from_json(json!({
            "metadata": {"name": "web-abc", "namespace": "shop",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["203.0.113.1"]},
                {"addresses": ["203.0.113.2"], "conditions": {"ready": false, "serving": true, "terminating": true}}
            ]
        }));
        let snap = snapshot([], [&slice], []);
        let key = ObjectKey {
            namespace: "shop".into(),
            name: "web".into(),
        };
        let s: Vec<_> = snap.slices_of(&key).collect();
        assert_eq!(s.len(), 1);
        assert!(
            s[0].endpoints[0].ready && s[0].endpoints[0].serving && !s[0].endpoints[0].terminating
        );
        assert!(
            !s[0].endpoints[1].ready && s[0].endpoints[1].serving && s[0].endpoints[1].terminating
        );
        assert_eq!(s[0].ports[0].port, 8080);
    }

    #[test]
    fn a_relist_replaces_only_what_differs_and_keeps_the_slice_index() {
        let svc = |name: &str, ip: &str| -> core::Service {
            from_json(json!({
                "metadata": {"name": name, "namespace": "shop"},
                "spec": {"ports": [{"port": 80}], "externalIPs": [ip]}
            }))
        };
        let slice = |name: &str, svc: &str| -> discovery::EndpointSlice {
            from_json(json!({
                "metadata": {"name": name, "namespace": "shop",
                             "labels": {"kubernetes.io/service-name": svc}},
                "addressType": "IPv4", "endpoints": []
            }))
        };
        let (a, b) = (svc("a", "198.51.100.1"), svc("b", "198.51.100.2"));
        let mut snap = snapshot([&a, &b], [&slice("a-1", "a")], []);
        let before = snap.clone();
        let views = |l: &[&core::Service]| l.iter().filter_map(|s| service_view(s)).collect();
        // The same objects again: nothing changes, and the maps are still shared.
        assert!(!snap.replace_services(views(&[&a, &b])));
        assert!(snap.services.ptr_eq(&before.services));
        // b went away while the watch was down; a changed.
        let a2 = svc("a", "198.51.100.9");
        assert!(snap.replace_services(views(&[&a2])));
        let keys: Vec<String> = snap.services.keys().map(ToString::to_string).collect();
        assert_eq!(keys, vec!["shop/a".to_string()]);
        let changed: Vec<String> = before
            .changed_services(&snap)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(changed, vec!["shop/a".to_string(), "shop/b".to_string()]);
        // A slice moves from Service a to b: the index follows.
        let key = |n: &str| ObjectKey {
            namespace: "shop".into(),
            name: n.into(),
        };
        assert!(snap.replace_slices(
            [slice("a-1", "b")]
                .iter()
                .filter_map(endpoint_slice_view)
                .collect()
        ));
        assert_eq!(snap.slices_of(&key("a")).count(), 0);
        assert_eq!(snap.slices_of(&key("b")).count(), 1);
        assert!(snap.replace_slices(Vec::new()));
        assert_eq!(snap.slices_of(&key("b")).count(), 0);
    }

    #[test]
    fn node_addresses_skip_host_names() {
        let n: core::Node = from_json(json!({
            "metadata": {"name": "w1"},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.7"},
                                     {"type": "Hostname", "address": "w1"}]}
        }));
        let snap = snapshot([], [], [&n]);
        assert_eq!(
            snap.node_addresses().into_iter().collect::<Vec<_>>(),
            vec!["192.0.2.7".parse::<IpAddr>().unwrap()]
        );
        // InternalIP first, whatever the order in the object.
        let n: core::Node = from_json(json!({
            "metadata": {"name": "w2"},
            "status": {"addresses": [{"type": "ExternalIP", "address": "192.0.2.1"},
                                     {"type": "InternalIP", "address": "192.0.2.9"}]}
        }));
        let v = node_view(&n).unwrap().addresses;
        assert_eq!(v[0], "192.0.2.9".parse::<IpAddr>().unwrap());
        assert_eq!(v.len(), 2);
    }
}
