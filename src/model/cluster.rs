//! The cluster as kube-gw sees it: plain, owned views of Services, EndpointSlices and
//! Nodes, and the [`ClusterSnapshot`] that holds them. Kubernetes API types never reach
//! this far: `kube::convert` turns them into these, keeping only what kube-gw uses, in
//! sorted maps so that every computation over a snapshot is deterministic.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use imbl::ordmap::DiffItem;
use imbl::{OrdMap, OrdSet};
use serde::Serialize;

/// The prefix of the annotations kube-gw reads (`kube-gw.io/announce`, …); a Service's
/// other annotations are not kept.
pub const ANNOTATION_PREFIX: &str = "kube-gw.io/";

/// `namespace/name` of a namespaced object (serialized as that string). Shared strings: a
/// key is copied into every index that names its object (five for a served Service), and a
/// copy costs no allocation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

impl Serialize for ObjectKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl ObjectKey {
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: Arc::from(namespace),
            name: Arc::from(name),
        }
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
    /// The name Kubernetes and IPVS tools use (`TCP`, `UDP`, `SCTP`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
            Self::Sctp => "SCTP",
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
    /// kube-gw's own annotations only ([`ANNOTATION_PREFIX`]).
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
    /// What a `type: LoadBalancer` Service asks of its load balancer.
    pub lb: LoadBalancerSpec,
}

/// An address family, as `spec.ipFamilies` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Family {
    #[serde(rename = "IPv4")]
    V4,
    #[serde(rename = "IPv6")]
    V6,
}

impl Family {
    pub fn of(a: &IpAddr) -> Self {
        if a.is_ipv4() {
            Self::V4
        } else {
            Self::V6
        }
    }
}

/// The load-balancer part of a Service's spec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LoadBalancerSpec {
    /// `spec.loadBalancerClass`.
    pub class: Option<String>,
    /// `spec.loadBalancerIP` (deprecated upstream, still honoured).
    pub requested_ip: Option<String>,
    /// `spec.ipFamilies`, in order (the first is the primary).
    pub families: Vec<Family>,
    /// `spec.ipFamilyPolicy` is `RequireDualStack`.
    pub require_dual_stack: bool,
    /// `spec.loadBalancerSourceRanges` (an unparsable one is kept as `None`: traffic from
    /// nowhere matches it, so it fails closed).
    pub source_ranges: Vec<Option<ipnet::IpNet>>,
}

/// One port of a Service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ServicePort {
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
    /// `appProtocol` (`kubernetes.io/h2c` makes the gateway speak HTTP/2 to the endpoints).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
}

/// What kube-gw needs of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointSlice {
    pub key: ObjectKey,
    /// The owning Service's name (label `kubernetes.io/service-name`).
    pub service: Option<Arc<str>>,
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
    /// InternalIP addresses first, then the others (each kind sorted).
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
    pub(crate) slice_index: OrdMap<ObjectKey, OrdSet<ObjectKey>>,
    /// Every resource has been listed. While the cluster is first being listed the watch
    /// publishes partial views (Nodes complete, Services arriving): enough to start adding
    /// VIPs, never enough to remove one or to tell a Service it is refused.
    #[serde(skip)]
    pub complete: bool,
}

impl ClusterSnapshot {
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
