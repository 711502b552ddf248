//! The permission check at start: one SelfSubjectAccessReview per thing kube-gw reads or
//! writes, so that a missing RBAC rule is named up front ("cannot watch endpointslices —
//! apply configs/kubernetes/kube-gw-rbac.yaml") instead of surfacing later as a 403 in a
//! watch loop.

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use kube::Client;

/// One permission: verb, API group, resource (with subresource), namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission {
    pub verb: &'static str,
    pub group: &'static str,
    pub resource: &'static str,
    pub subresource: &'static str,
    pub namespace: &'static str,
}

const fn p(verb: &'static str, group: &'static str, resource: &'static str) -> Permission {
    Permission {
        verb,
        group,
        resource,
        subresource: "",
        namespace: "",
    }
}

/// Everything kube-gw does with the API, and where the shipped manifests grant it.
pub const NEEDED: &[Permission] = &[
    p("list", "", "services"),
    p("watch", "", "services"),
    p("list", "discovery.k8s.io", "endpointslices"),
    p("watch", "discovery.k8s.io", "endpointslices"),
    p("list", "", "nodes"),
    p("watch", "", "nodes"),
    p("get", "", "nodes"),
    p("create", "", "nodes"),
    p("patch", "", "nodes"),
    Permission {
        subresource: "status",
        ..p("patch", "", "nodes")
    },
    Permission {
        namespace: "kube-node-lease",
        ..p("get", "coordination.k8s.io", "leases")
    },
    Permission {
        namespace: "kube-node-lease",
        ..p("create", "coordination.k8s.io", "leases")
    },
    Permission {
        namespace: "kube-node-lease",
        ..p("update", "coordination.k8s.io", "leases")
    },
    // The other switches' Leases (the writers' elections).
    Permission {
        namespace: "kube-node-lease",
        ..p("list", "coordination.k8s.io", "leases")
    },
    // The LoadBalancer addresses it allocates.
    Permission {
        subresource: "status",
        ..p("patch", "", "services")
    },
];

/// The manifest that grants what kube-gw needs beyond the Node authorizer.
pub const MANIFEST: &str = "configs/kubernetes/kube-gw-rbac.yaml";

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.verb, self.resource)?;
        if !self.subresource.is_empty() {
            write!(f, "/{}", self.subresource)?;
        }
        if !self.group.is_empty() {
            write!(f, ".{}", self.group)?;
        }
        if self.namespace.is_empty() {
            write!(f, " (cluster-wide)")
        } else {
            write!(f, " in namespace {}", self.namespace)
        }
    }
}

/// Checks every permission; returns the missing ones. `Err` if the check itself failed.
pub async fn missing(client: &Client, node: &str) -> Result<Vec<Permission>, kube::Error> {
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let checks = NEEDED.iter().map(|perm| {
        let api = api.clone();
        async move {
            let review = review(perm, node);
            let r = api.create(&PostParams::default(), &review).await?;
            Ok::<_, kube::Error>((!r.status.is_some_and(|s| s.allowed)).then_some(*perm))
        }
    });
    let results = futures::future::join_all(checks).await;
    let mut out = Vec::new();
    for r in results {
        if let Some(p) = r? {
            out.push(p);
        }
    }
    Ok(out)
}

fn review(perm: &Permission, node: &str) -> SelfSubjectAccessReview {
    SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(perm.verb.into()),
                group: Some(perm.group.into()),
                resource: Some(perm.resource.into()),
                subresource: (!perm.subresource.is_empty()).then(|| perm.subresource.into()),
                namespace: (!perm.namespace.is_empty()).then(|| perm.namespace.into()),
                // The Node authorizer decides on the object's name for node-scoped rights.
                name: match perm.resource {
                    "nodes" | "leases" if perm.verb != "list" && perm.verb != "watch" => {
                        Some(node.into())
                    }
                    _ => None,
                },
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The operator's message for missing permissions.
pub fn describe(missing: &[Permission], identity: &str) -> String {
    let list: Vec<String> = missing.iter().map(ToString::to_string).collect();
    format!(
        "{identity} lacks permissions kube-gw needs: {}; apply {MANIFEST} with its ClusterRoleBinding and RoleBinding for this switch's identity",
        list.join(", ")
    )
}
