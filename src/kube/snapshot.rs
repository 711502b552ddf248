//! `ClusterSnapshot`: the plain, owned view of the cluster that everything downstream
//! computes from. Kubernetes API types stop here: [`ClusterSnapshot::from_objects`] converts
//! them, keeping only what kube-gw uses, in sorted maps so that computations over a snapshot
//! are deterministic.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use imbl::ordmap::DiffItem;
use imbl::{OrdMap, OrdSet};
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use serde::Serialize;

/// `namespace/name` of a namespaced object (serialized as that string).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl Serialize for ObjectKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// L4 protocol of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    fn parse(s: Option<&str>) -> Option<Self> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Self::Tcp),
            "UDP" => Some(Self::Udp),
            "SCTP" => Some(Self::Sctp),
            _ => None,
        }
    }
}

/// What kube-gw needs of a Service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Service {
    pub key: ObjectKey,
    pub uid: String,
    /// Creation time, seconds since the epoch (for "oldest wins").
    pub created: i64,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub type_: String,
    pub cluster_ips: Vec<IpAddr>,
    pub external_ips: Vec<IpAddr>,
    /// `status.loadBalancer.ingress[].ip`.
    pub load_balancer_ips: Vec<IpAddr>,
    pub ports: Vec<ServicePort>,
    /// `sessionAffinity: ClientIP` timeout in seconds, if set.
    pub client_ip_affinity: Option<i32>,
    /// `externalTrafficPolicy: Local`.
    pub external_traffic_local: bool,
    /// Addresses in the spec that do not parse, kept so they can be refused with a reason.
    pub unparsable_ips: Vec<String>,
}

/// One port of a Service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ServicePort {
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
}

/// What kube-gw needs of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointSlice {
    pub key: ObjectKey,
    /// The owning Service's name (label `kubernetes.io/service-name`).
    pub service: Option<String>,
    pub ports: Vec<EndpointPort>,
    pub endpoints: Vec<Endpoint>,
}

/// A named port of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct EndpointPort {
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
}

/// One endpoint, with its conditions as kube-proxy reads them (absent `ready` and
/// `serving` mean true; absent `terminating` means false).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    pub addresses: Vec<IpAddr>,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    pub node_name: Option<String>,
}

/// What kube-gw needs of a Node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    pub name: String,
    pub addresses: Vec<IpAddr>,
}

/// The cluster as last seen.
///
/// The maps are persistent (`imbl`): a clone is O(1) and shares structure, and two versions
/// differ by what changed, so [`ClusterSnapshot::diff_services`] and friends cost the size
/// of a change, not of the cluster. The watch updates one snapshot in place as events come
/// in ([`ClusterSnapshot::upsert_service`] …) and publishes clones of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClusterSnapshot {
    pub services: OrdMap<ObjectKey, Service>,
    pub endpoint_slices: OrdMap<ObjectKey, EndpointSlice>,
    pub nodes: OrdMap<String, Node>,
    /// Service → its EndpointSlices (by the `kubernetes.io/service-name` label).
    #[serde(skip)]
    slice_index: OrdMap<ObjectKey, OrdSet<ObjectKey>>,
    /// Every resource has been listed. While the cluster is first being listed the watch
    /// publishes partial views (Nodes complete, Services arriving): enough to start adding
    /// VIPs, never enough to remove one or to tell a Service it is refused.
    #[serde(skip)]
    pub complete: bool,
}

impl ClusterSnapshot {
    /// Builds a snapshot from API objects (in any order).
    pub fn from_objects<'a>(
        services: impl IntoIterator<Item = &'a core::Service>,
        slices: impl IntoIterator<Item = &'a discovery::EndpointSlice>,
        nodes: impl IntoIterator<Item = &'a core::Node>,
    ) -> Self {
        let mut snap = Self::default();
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

    /// Inserts or replaces a Service; true if the view changed.
    pub fn upsert_service(&mut self, s: Service) -> bool {
        if self.services.get(&s.key) == Some(&s) {
            return false;
        }
        self.services.insert(s.key.clone(), s);
        true
    }

    /// Removes a Service; true if it was there.
    pub fn remove_service(&mut self, key: &ObjectKey) -> bool {
        self.services.remove(key).is_some()
    }

    /// Inserts or replaces an EndpointSlice; true if the view changed.
    pub fn upsert_slice(&mut self, s: EndpointSlice) -> bool {
        if self.endpoint_slices.get(&s.key) == Some(&s) {
            return false;
        }
        let key = s.key.clone();
        self.remove_slice(&key);
        if let Some(svc) = s.service_key() {
            let mut set = self.slice_index.get(&svc).cloned().unwrap_or_default();
            set.insert(key.clone());
            self.slice_index.insert(svc, set);
        }
        self.endpoint_slices.insert(key, s);
        true
    }

    /// Removes an EndpointSlice; true if it was there.
    pub fn remove_slice(&mut self, key: &ObjectKey) -> bool {
        let Some(old) = self.endpoint_slices.remove(key) else {
            return false;
        };
        if let Some(svc) = old.service_key() {
            if let Some(mut set) = self.slice_index.get(&svc).cloned() {
                set.remove(key);
                if set.is_empty() {
                    self.slice_index.remove(&svc);
                } else {
                    self.slice_index.insert(svc, set);
                }
            }
        }
        true
    }

    /// Inserts or replaces a Node; true if the view changed.
    pub fn upsert_node(&mut self, n: Node) -> bool {
        if self.nodes.get(&n.name) == Some(&n) {
            return false;
        }
        self.nodes.insert(n.name.clone(), n);
        true
    }

    /// Removes a Node; true if it was there.
    pub fn remove_node(&mut self, name: &str) -> bool {
        self.nodes.remove(name).is_some()
    }

    /// Makes the Services exactly `all` (a completed re-list), touching only what differs so
    /// that the new version still shares structure with the old one. True if anything changed.
    pub fn replace_services(&mut self, all: Vec<Service>) -> bool {
        let gone = missing(&self.services, all.iter().map(|s| &s.key));
        let mut changed = false;
        for k in &gone {
            changed |= self.remove_service(k);
        }
        all.into_iter()
            .fold(changed, |c, s| self.upsert_service(s) | c)
    }

    /// Makes the EndpointSlices exactly `all` (see [`Self::replace_services`]).
    pub fn replace_slices(&mut self, all: Vec<EndpointSlice>) -> bool {
        let gone = missing(&self.endpoint_slices, all.iter().map(|s| &s.key));
        let mut changed = false;
        for k in &gone {
            changed |= self.remove_slice(k);
        }
        all.into_iter()
            .fold(changed, |c, s| self.upsert_slice(s) | c)
    }

    /// Makes the Nodes exactly `all` (see [`Self::replace_services`]).
    pub fn replace_nodes(&mut self, all: Vec<Node>) -> bool {
        let gone = missing(&self.nodes, all.iter().map(|n| &n.name));
        let mut changed = false;
        for k in &gone {
            changed |= self.remove_node(k);
        }
        all.into_iter()
            .fold(changed, |c, n| self.upsert_node(n) | c)
    }

    /// The EndpointSlices of one Service.
    pub fn slices_of<'a>(&'a self, svc: &ObjectKey) -> impl Iterator<Item = &'a EndpointSlice> {
        self.slice_index
            .get(svc)
            .into_iter()
            .flat_map(|set| set.iter())
            .filter_map(|k| self.endpoint_slices.get(k))
    }

    /// The Services whose view or whose EndpointSlices differ between `self` and `newer`.
    pub fn changed_services(&self, newer: &Self) -> BTreeSet<ObjectKey> {
        let mut out = BTreeSet::new();
        for d in self.services.diff(&newer.services) {
            match d {
                DiffItem::Add(k, _) | DiffItem::Remove(k, _) => out.insert(k.clone()),
                DiffItem::Update { new: (k, _), .. } => out.insert(k.clone()),
            };
        }
        for d in self.endpoint_slices.diff(&newer.endpoint_slices) {
            let (a, b) = match d {
                DiffItem::Add(_, s) | DiffItem::Remove(_, s) => (s.service_key(), None),
                DiffItem::Update { old, new } => (old.1.service_key(), new.1.service_key()),
            };
            out.extend(a.into_iter().chain(b));
        }
        out
    }

    /// Every address of every Node.
    pub fn node_addresses(&self) -> BTreeSet<IpAddr> {
        self.nodes
            .values()
            .flat_map(|n| n.addresses.iter().copied())
            .collect()
    }
}

/// The keys of `map` that are not in `keep`.
fn missing<'a, K: Ord + Clone + 'a, V: Clone>(
    map: &OrdMap<K, V>,
    keep: impl Iterator<Item = &'a K>,
) -> Vec<K> {
    let keep: BTreeSet<&K> = keep.collect();
    map.keys().filter(|k| !keep.contains(k)).cloned().collect()
}

impl EndpointSlice {
    /// The key of the Service this slice belongs to.
    pub fn service_key(&self) -> Option<ObjectKey> {
        Some(ObjectKey {
            namespace: self.key.namespace.clone(),
            name: self.service.clone()?,
        })
    }
}

fn key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<ObjectKey> {
    Some(ObjectKey {
        namespace: meta.namespace.clone().unwrap_or_else(|| "default".into()),
        name: meta.name.clone()?,
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
                protocol: Protocol::parse(p.protocol.as_deref())?,
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
        annotations: s.metadata.annotations.clone().unwrap_or_default(),
        type_: spec.type_.clone().unwrap_or_else(|| "ClusterIP".into()),
        cluster_ips,
        external_ips,
        load_balancer_ips,
        ports,
        client_ip_affinity,
        external_traffic_local: spec.external_traffic_policy.as_deref() == Some("Local"),
        unparsable_ips: bad,
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
                protocol: Protocol::parse(p.protocol.as_deref())?,
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
            .cloned(),
        ports,
        endpoints,
    })
}

/// Converts an API Node (`None` without a name).
pub fn node_view(n: &core::Node) -> Option<Node> {
    let name = n.metadata.name.clone()?;
    let mut addresses: Vec<IpAddr> = n
        .status
        .iter()
        .flat_map(|s| s.addresses.iter().flatten())
        .filter(|a| a.type_ != "Hostname")
        .filter_map(|a| a.address.parse().ok())
        .collect();
    addresses.sort();
    addresses.dedup();
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
                         "annotations": {"kube-gw.io/announce": "false"}},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                     "externalIPs": ["198.51.100.10", "not-an-ip"],
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}],
                     "sessionAffinity": "ClientIP", "externalTrafficPolicy": "Local"},
            "status": {"loadBalancer": {"ingress": [{"ip": "2001:db8:100::10"}, {"hostname": "lb.example"}]}}
        }));
        let snap = ClusterSnapshot::from_objects([&svc], [], []);
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
        let snap = ClusterSnapshot::from_objects([], [&slice], []);
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
        let mut snap = ClusterSnapshot::from_objects([&a, &b], [&slice("a-1", "a")], []);
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
        let snap = ClusterSnapshot::from_objects([], [], [&n]);
        assert_eq!(
            snap.node_addresses().into_iter().collect::<Vec<_>>(),
            vec!["192.0.2.7".parse::<IpAddr>().unwrap()]
        );
    }
}
