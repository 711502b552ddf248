//! The switch as a Node: registration, the `kube-node-lease` Lease, and the Ready condition.
//!
//! - Registration creates the Node **with its taints** (NodeRestriction forbids a node to
//!   change them afterwards), labels, addresses and node info, annotated
//!   `kube-gw.io/managed-by: kube-gw`.
//! - If a Node of that name exists without that annotation, a kubelet owns it: kube-gw uses
//!   it as it is, never writes its status or Lease, and warns if the expected taint is
//!   missing.
//! - Every 10 s the Lease is renewed (backing off on failure, up to the lease duration) and
//!   the Node's existence checked; a deleted Node is registered again.
//! - The Ready condition is True with reason `KubeGwReady` while kube-gw is healthy, and
//!   False with reason `KubeGwDegraded` and the problem as message otherwise. It is written
//!   when it changes and at least every minute.

use crate::backoff::Backoff;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    Node, NodeAddress, NodeCondition, NodeSpec, NodeStatus, NodeSystemInfo, Taint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, OwnerReference, Time};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::Client;

use super::report::KubeReport;
use crate::config::{NodeConfig, TaintEffect};

/// Annotation marking Nodes that kube-gw created.
pub const MANAGED_BY: &str = "kube-gw.io/managed-by";
/// The Lease is renewed every quarter of its duration (10 s of 40, as the kubelet's).
pub fn renew_period(lease: Duration) -> Duration {
    lease / 4
}
const STATUS_EVERY: Duration = Duration::from_secs(60);

/// What the agent needs.
pub struct NodeAgent {
    pub client: Client,
    pub name: String,
    pub config: NodeConfig,
    pub addresses: Vec<IpAddr>,
    /// `[kubernetes] lease-duration`.
    pub lease: Duration,
    pub report: std::sync::Arc<KubeReport>,
    /// Returns the reason kube-gw is unhealthy, or None when it is healthy.
    pub health: Box<dyn Fn() -> Option<String> + Send + Sync>,
}

impl std::fmt::Debug for NodeAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeAgent")
            .field("name", &self.name)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ownership {
    Ours,
    Kubelet,
}

fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

impl NodeAgent {
    fn taints(&self) -> Vec<Taint> {
        self.config
            .taints
            .iter()
            .map(|t| Taint {
                key: t.key.clone(),
                value: t.value.clone(),
                effect: match t.effect {
                    TaintEffect::NoSchedule => "NoSchedule",
                    TaintEffect::PreferNoSchedule => "PreferNoSchedule",
                    TaintEffect::NoExecute => "NoExecute",
                }
                .into(),
                time_added: None,
            })
            .collect()
    }

    fn ready_condition(&self) -> NodeCondition {
        let (status, reason, message) = match (self.health)() {
            None => ("True", "KubeGwReady", "kube-gw is serving".to_string()),
            Some(why) => ("False", "KubeGwDegraded", why),
        };
        NodeCondition {
            type_: "Ready".into(),
            status: status.into(),
            reason: Some(reason.into()),
            message: Some(message),
            last_heartbeat_time: Some(Time(now())),
            last_transition_time: Some(Time(now())),
        }
    }

    fn node_object(&self) -> Node {
        let mut labels: BTreeMap<String, String> = self.config.labels.clone();
        labels.insert("kubernetes.io/hostname".into(), self.name.clone());
        labels.insert("kubernetes.io/os".into(), "linux".into());
        labels.insert("kubernetes.io/arch".into(), go_arch().into());
        let mut addresses: Vec<NodeAddress> = self
            .addresses
            .iter()
            .map(|a| NodeAddress {
                type_: "InternalIP".into(),
                address: a.to_string(),
            })
            .collect();
        addresses.push(NodeAddress {
            type_: "Hostname".into(),
            address: self.name.clone(),
        });
        Node {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some(labels),
                annotations: Some(BTreeMap::from([(MANAGED_BY.into(), "kube-gw".into())])),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: Some(self.taints()),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(addresses),
                conditions: Some(vec![self.ready_condition()]),
                node_info: Some(system_info()),
                ..Default::default()
            }),
        }
    }

    /// Registers (or adopts) the Node; returns who owns it.
    async fn register(&self, nodes: &Api<Node>) -> Result<(Ownership, Node), kube::Error> {
        match nodes.get_opt(&self.name).await? {
            None => {
                let created = match nodes
                    .create(&PostParams::default(), &self.node_object())
                    .await
                {
                    Ok(n) => n,
                    Err(kube::Error::Api(e)) if e.code == 409 => nodes.get(&self.name).await?,
                    Err(e) => return Err(e),
                };
                tracing::info!(node = %self.name, "Node registered with its taints");
                self.report.node("registered", "created by kube-gw");
                // The status in a create is kept for Nodes, but write it again to be sure.
                self.write_status(nodes).await?;
                Ok((Ownership::Ours, created))
            }
            Some(n) => {
                let ours = n
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(MANAGED_BY))
                    .is_some_and(|v| v == "kube-gw");
                let taints = n
                    .spec
                    .as_ref()
                    .and_then(|s| s.taints.clone())
                    .unwrap_or_default();
                for want in self.taints() {
                    if !taints
                        .iter()
                        .any(|t| t.key == want.key && t.effect == want.effect)
                    {
                        tracing::warn!(node = %self.name, taint = %want.key, effect = %want.effect,
                            "the Node lacks the expected taint; it cannot be added by kube-gw (NodeRestriction) — add it with kubectl taint");
                    }
                }
                if ours {
                    tracing::info!(node = %self.name, "adopting the Node kube-gw registered earlier");
                    self.report.node("registered", "adopted at start");
                    Ok((Ownership::Ours, n))
                } else {
                    tracing::warn!(node = %self.name, "a Node of this name exists and is not kube-gw's (a kubelet owns it); using it without touching its status or lease");
                    self.report
                        .node("kubelet-owned", "status and lease left to the kubelet");
                    Ok((Ownership::Kubelet, n))
                }
            }
        }
    }

    async fn write_status(&self, nodes: &Api<Node>) -> Result<(), kube::Error> {
        let patch = serde_json::json!({ "status": { "conditions": [self.ready_condition()] } });
        nodes
            .patch_status(
                &self.name,
                &PatchParams::default(),
                &Patch::Strategic(patch),
            )
            .await
            .map(|_| ())
    }

    async fn renew_lease(&self, leases: &Api<Lease>, node: &Node) -> Result<(), kube::Error> {
        let spec = LeaseSpec {
            holder_identity: Some(self.name.clone()),
            lease_duration_seconds: Some(i32::try_from(self.lease.as_secs()).unwrap_or(40)),
            renew_time: Some(MicroTime(now())),
            ..Default::default()
        };
        match leases.get_opt(&self.name).await? {
            Some(mut l) => {
                l.spec = Some(spec);
                leases
                    .replace(&self.name, &PostParams::default(), &l)
                    .await?;
            }
            None => {
                let owner = OwnerReference {
                    api_version: "v1".into(),
                    kind: "Node".into(),
                    name: self.name.clone(),
                    uid: node.metadata.uid.clone().unwrap_or_default(),
                    ..Default::default()
                };
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        namespace: Some("kube-node-lease".into()),
                        owner_references: Some(vec![owner]),
                        ..Default::default()
                    },
                    spec: Some(spec),
                };
                leases.create(&PostParams::default(), &lease).await?;
            }
        }
        Ok(())
    }

    /// Runs until dropped.
    pub async fn run(self) {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), "kube-node-lease");
        let renew = renew_period(self.lease);
        let mut backoff = Backoff::new(Duration::from_secs(1), renew);
        let (ownership, mut node) = loop {
            match self.register(&nodes).await {
                Ok(x) => break x,
                Err(e) => {
                    let msg = super::credentials::explain(&e, "");
                    tracing::warn!(node = %self.name, error = %msg, "cannot register the Node; retrying");
                    self.report.node("failing", format!("registration: {msg}"));
                    backoff.wait().await;
                }
            }
        };
        if ownership == Ownership::Kubelet {
            std::future::pending::<()>().await;
        }
        let mut last_status = tokio::time::Instant::now();
        let mut last_ready = (self.health)().is_none();
        // After a failure: 0.5 s, doubling up to the renewal period.
        let mut retry = Backoff::new(Duration::from_millis(500), renew);
        let mut delay = Duration::ZERO;
        loop {
            tokio::time::sleep(delay).await;
            let result: Result<(), kube::Error> = async {
                if nodes.get_opt(&self.name).await?.is_none() {
                    tracing::warn!(node = %self.name, "the Node was deleted; registering it again");
                    node = self.register(&nodes).await?.1;
                }
                self.renew_lease(&leases, &node).await?;
                let ready = (self.health)().is_none();
                if ready != last_ready || last_status.elapsed() >= STATUS_EVERY {
                    self.write_status(&nodes).await?;
                    last_status = tokio::time::Instant::now();
                    last_ready = ready;
                }
                Ok(())
            }
            .await;
            match result {
                Ok(()) => {
                    self.report.node(
                        "registered",
                        format!("lease renewed every {}s", renew.as_secs()),
                    );
                    delay = renew;
                    retry.reset();
                }
                Err(e) => {
                    let msg = super::credentials::explain(&e, "");
                    tracing::warn!(node = %self.name, error = %msg, "cannot renew the Node lease; backing off");
                    self.report.node("failing", format!("lease: {msg}"));
                    delay = retry.next_delay();
                }
            }
        }
    }
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn system_info() -> NodeSystemInfo {
    let os_image = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "Linux".into());
    let version = env!("CARGO_PKG_VERSION");
    NodeSystemInfo {
        architecture: go_arch().into(),
        boot_id: read_trim("/proc/sys/kernel/random/boot_id"),
        container_runtime_version: format!("kube-gw://{version}"),
        kernel_version: read_trim("/proc/sys/kernel/osrelease"),
        kube_proxy_version: String::new(),
        kubelet_version: format!("kube-gw-{version}"),
        machine_id: read_trim("/etc/machine-id"),
        operating_system: "linux".into(),
        os_image,
        system_uuid: read_trim("/sys/class/dmi/id/product_uuid"),
        ..Default::default()
    }
}
