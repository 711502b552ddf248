//! The Gateway API side of the adapter: watches the `gateway.networking.k8s.io/v1` objects
//! (GatewayClass, Gateway, HTTPRoute, TLSRoute, ReferenceGrant, BackendTLSPolicy),
//! kube-gw's ModelOverrides, `kubernetes.io/tls` Secrets, ConfigMaps (only their `ca.crt` is
//! kept: CA bundles for BackendTLSPolicies), Namespaces and the one session-ticket Secret (`[gateway] session-ticket-secret`, watched
//! by name), and publishes them as one [`GatewaySnapshot`].
//!
//! ```text
//!  reflector stores (one per resource) ──"changed"──► publish: convert all ──► watch<Arc<GatewaySnapshot>>
//! ```
//!
//! - Runs only when the configuration has a `[gateway]` section. Without the Gateway API CRDs
//!   installed, the watches fail (404) and say so in the report: a degraded daemon that says
//!   what to install, and the L4 path unaffected.
//! - Nothing is published until every resource was listed once (`complete`); a watch that
//!   fails later keeps the last snapshot (losing the API server changes nothing).
//! - Gateway objects are few (tens to hundreds), so the publish step converts every store
//!   after each burst of events, simply; Secrets are limited to type `kubernetes.io/tls`.
//!
//! The API object types here wrap the model's spec subset (`model::gateway`) with
//! `ObjectMeta`; only the spec, key, generation and creation time leave this module.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};

use super::report::{KubeReport, WatchState};
use crate::model::gateway::{
    BackendTlsPolicySpec, GatewayClassSpec, GatewaySnapshot, GatewaySpec, HttpRouteSpec,
    ModelOverrideSpec, Object, ReferenceGrantSpec, TicketSecret, TlsRouteSpec, TlsSecret,
};
use crate::model::ObjectKey;

macro_rules! gateway_kind {
    ($(#[$doc:meta])* $name:ident, $spec:ty, $kind:literal, $plural:literal, $scope:ty) => {
        gateway_kind!($(#[$doc])* $name, $spec, $kind, $plural, $scope, "gateway.networking.k8s.io", "v1");
    };
    ($(#[$doc:meta])* $name:ident, $spec:ty, $kind:literal, $plural:literal, $scope:ty, $group:literal, $version:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Deserialize, Serialize)]
        pub struct $name {
            pub metadata: ObjectMeta,
            #[serde(default)]
            pub spec: $spec,
            /// Read only to be rewritten by the status writer.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub status: Option<serde_json::Value>,
        }
        impl k8s_openapi::Resource for $name {
            const API_VERSION: &'static str = concat!($group, "/", $version);
            const GROUP: &'static str = $group;
            const KIND: &'static str = $kind;
            const VERSION: &'static str = $version;
            const URL_PATH_SEGMENT: &'static str = $plural;
            type Scope = $scope;
        }
        impl k8s_openapi::Metadata for $name {
            type Ty = ObjectMeta;
            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

gateway_kind!(
    /// `GatewayClass` (cluster-scoped).
    GatewayClass, GatewayClassSpec, "GatewayClass", "gatewayclasses", k8s_openapi::ClusterResourceScope
);
gateway_kind!(
    /// `Gateway`.
    Gateway, GatewaySpec, "Gateway", "gateways", k8s_openapi::NamespaceResourceScope
);
gateway_kind!(
    /// `HTTPRoute`.
    HttpRoute, HttpRouteSpec, "HTTPRoute", "httproutes", k8s_openapi::NamespaceResourceScope
);
gateway_kind!(
    /// `TLSRoute` (v1 since Gateway API 1.5).
    TlsRoute, TlsRouteSpec, "TLSRoute", "tlsroutes", k8s_openapi::NamespaceResourceScope
);
gateway_kind!(
    /// `ReferenceGrant`.
    ReferenceGrant, ReferenceGrantSpec, "ReferenceGrant", "referencegrants", k8s_openapi::NamespaceResourceScope
);

gateway_kind!(
    /// `BackendTLSPolicy` (v1 since Gateway API 1.4; optional: watched once served).
    BackendTlsPolicy, BackendTlsPolicySpec, "BackendTLSPolicy", "backendtlspolicies", k8s_openapi::NamespaceResourceScope
);

gateway_kind!(
    /// `ModelOverride` (kube-gw's own filter, `configs/kubernetes/kube-gw-modeloverride-crd.yaml`).
    ModelOverride, ModelOverrideSpec, "ModelOverride", "modeloverrides", k8s_openapi::NamespaceResourceScope, "kube-gw.io", "v1alpha1"
);

fn key_of(meta: &ObjectMeta) -> ObjectKey {
    ObjectKey {
        namespace: meta.namespace.as_deref().unwrap_or_default().into(),
        name: meta.name.as_deref().unwrap_or_default().into(),
    }
}

fn object<S: Clone>(meta: &ObjectMeta, spec: &S) -> Object<S> {
    Object {
        key: key_of(meta),
        generation: meta.generation.unwrap_or_default(),
        created: meta
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second())
            .unwrap_or_default(),
        spec: spec.clone(),
    }
}

/// The IP addresses of a Gateway's `status.addresses` (others, and junk, are ignored).
fn status_addresses(status: Option<&serde_json::Value>) -> Vec<std::net::IpAddr> {
    status
        .and_then(|s| s.get("addresses"))
        .and_then(|a| a.as_array())
        .map(|a| {
            a.iter()
                .filter(|a| {
                    a.get("type")
                        .and_then(|t| t.as_str())
                        .unwrap_or("IPAddress")
                        == "IPAddress"
                })
                .filter_map(|a| a.get("value")?.as_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// A TLS Secret's certificate and key as found (`tls.crt`, `tls.key`); absent data is empty.
pub fn tls_secret(s: &Secret) -> TlsSecret {
    let get = |k: &str| -> Arc<[u8]> {
        s.data
            .as_ref()
            .and_then(|d| d.get(k))
            .map(|b| Arc::from(b.0.as_slice()))
            .unwrap_or_else(|| Arc::from(&[][..]))
    };
    TlsSecret {
        key: key_of(&s.metadata),
        cert_pem: get("tls.crt"),
        key_pem: get("tls.key"),
    }
}

/// The stores of the watched resources.
struct Stores {
    classes: Store<GatewayClass>,
    gateways: Store<Gateway>,
    http: Store<HttpRoute>,
    tls: Store<TlsRoute>,
    grants: Store<ReferenceGrant>,
    overrides: Store<ModelOverride>,
    policies: Store<BackendTlsPolicy>,
    config_maps: Store<ConfigMap>,
    secrets: Store<Secret>,
    namespaces: Store<Namespace>,
    /// The session-ticket Secret (one object at most), when configured.
    tickets: Option<Store<Secret>>,
}

/// The session-ticket Secret's data entries.
pub fn ticket_secret(s: &Secret) -> TicketSecret {
    TicketSecret {
        key: key_of(&s.metadata),
        entries: s
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), Arc::from(v.0.as_slice())))
            .collect(),
    }
}

impl Stores {
    fn snapshot(&self) -> GatewaySnapshot {
        let mut s = GatewaySnapshot {
            complete: true,
            ..GatewaySnapshot::default()
        };
        for c in self.classes.state() {
            let o = object(&c.metadata, &c.spec);
            s.classes.insert(o.key.name.to_string(), o);
        }
        for g in self.gateways.state() {
            let mut o = object(&g.metadata, &g.spec);
            o.spec.assigned = status_addresses(g.status.as_ref());
            s.gateways.insert(o.key.clone(), o);
        }
        for r in self.http.state() {
            let o = object(&r.metadata, &r.spec);
            s.http_routes.insert(o.key.clone(), o);
        }
        for r in self.tls.state() {
            let o = object(&r.metadata, &r.spec);
            s.tls_routes.insert(o.key.clone(), o);
        }
        for r in self.overrides.state() {
            let o = object(&r.metadata, &r.spec);
            s.model_overrides.insert(o.key.clone(), o);
        }
        for r in self.policies.state() {
            let o = object(&r.metadata, &r.spec);
            s.backend_tls_policies.insert(o.key.clone(), o);
        }
        for m in self.config_maps.state() {
            if let Some(ca) = m.data.as_ref().and_then(|d| d.get("ca.crt")) {
                s.ca_bundles
                    .insert(key_of(&m.metadata), Arc::from(ca.as_str()));
            }
        }
        for r in self.grants.state() {
            let o = object(&r.metadata, &r.spec);
            s.grants.insert(o.key.clone(), o);
        }
        for x in self.secrets.state() {
            let t = tls_secret(&x);
            s.secrets.insert(t.key.clone(), t);
        }
        s.ticket_secret = self
            .tickets
            .as_ref()
            .and_then(|t| t.state().first().map(|x| ticket_secret(x)));
        for n in self.namespaces.state() {
            let labels: BTreeMap<String, String> = n.metadata.labels.clone().unwrap_or_default();
            s.namespaces
                .insert(n.metadata.name.clone().unwrap_or_default(), labels);
        }
        s
    }
}

/// What a failed watch's error means for the operator, and what to do.
fn hint(text: &str) -> String {
    if text.contains("404") || text.contains("NotFound") {
        format!(
            "{text}: are the Gateway API CRDs (standard channel, v1) installed? \
             kube-gw's [gateway] section needs them"
        )
    } else if text.contains("403") || text.contains("Forbidden") || text.contains("forbidden") {
        format!(
            "{text}: this switch's identity may not read it; apply \
             configs/kubernetes/kube-gw-gateway-rbac.yaml with a ClusterRoleBinding for this \
             switch's identity (the file binds system:node:spine-1 as the example)"
        )
    } else {
        text.to_string()
    }
}

/// What a watched resource type is.
trait Watched:
    kube::Resource<DynamicType = ()>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
}

impl<K> Watched for K where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static
{
}

/// Watches one resource into `writer`, recording its health under `name`; every event wakes
/// the publisher.
async fn track<K>(
    name: &'static str,
    api: Api<K>,
    config: watcher::Config,
    writer: reflector::store::Writer<K>,
    report: &KubeReport,
    changed: &Notify,
) where
    K: Watched,
{
    report.watch_state(name, WatchState::Listing, None);
    let stream = reflector::reflector(writer, watcher(api, config).default_backoff());
    drive(name, stream, report, changed).await;
}

/// Follows a reflector's stream, recording the watch's health under `name`; every event
/// wakes the publisher.
async fn drive<K>(
    name: &'static str,
    stream: impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
    report: &KubeReport,
    changed: &Notify,
) {
    futures::pin_mut!(stream);
    while let Some(item) = stream.next().await {
        match item {
            Ok(watcher::Event::InitDone | watcher::Event::Apply(_) | watcher::Event::Delete(_)) => {
                report.watch_state(name, WatchState::Synced, None);
                changed.notify_one();
            }
            Ok(_) => {}
            Err(e) => {
                let hint = hint(&e.to_string());
                tracing::warn!(resource = name, error = %hint, "watch failed; retrying with backoff");
                report.watch_state(name, WatchState::Failing, Some(hint));
            }
        }
    }
}

/// Watches ConfigMaps keeping only what a BackendTLSPolicy reads (`ca.crt`, the name):
/// every switch watches them all, so the rest of each is dropped before it is stored.
async fn track_ca_bundles(
    client: &Client,
    writer: reflector::store::Writer<ConfigMap>,
    report: &KubeReport,
    changed: &Notify,
) {
    let name = "configmaps";
    report.watch_state(name, WatchState::Listing, None);
    let stream = reflector::reflector(
        writer,
        watcher(
            Api::<ConfigMap>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .modify(|m| {
            m.metadata.managed_fields = None;
            m.metadata.annotations = None;
            m.metadata.labels = None;
            m.binary_data = None;
            if let Some(d) = &mut m.data {
                d.retain(|k, _| k == "ca.crt");
            }
        }),
    );
    drive(name, stream, report, changed).await;
}

/// Watches a resource whose CRD may not be installed: once it is served (checked every
/// 10 s until then), without reporting a failing watch meanwhile. `absent` is true while the
/// API server says the resource does not exist (404): then, and only then, no such object
/// exists and the snapshot may be complete without it. Any other error (403, a timeout) is
/// retried and the store stays unlisted, so nothing is served as if no policy existed.
async fn optional<K>(
    name: &'static str,
    api: Api<K>,
    writer: reflector::store::Writer<K>,
    (report, changed): (&KubeReport, &Notify),
    absent: &std::sync::atomic::AtomicBool,
) where
    K: Watched,
{
    use std::sync::atomic::Ordering;
    loop {
        match api.list(&kube::api::ListParams::default().limit(1)).await {
            Err(kube::Error::Api(e)) if e.code == 404 => {
                absent.store(true, Ordering::Relaxed);
                changed.notify_one();
                tokio::time::sleep(std::time::Duration::from_secs(10)).await;
            }
            Err(e) => {
                let hint = hint(&e.to_string());
                tracing::warn!(resource = name, error = %hint, "cannot list; retrying");
                report.watch_state(name, WatchState::Failing, Some(hint));
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            }
            Ok(_) => break,
        }
    }
    absent.store(false, Ordering::Relaxed);
    track(
        name,
        api,
        watcher::Config::default(),
        writer,
        report,
        changed,
    )
    .await;
}

/// Until `store` is listed, or its CRD is known to be absent.
async fn listed_or_absent<K: Watched>(store: &Store<K>, absent: &std::sync::atomic::AtomicBool) {
    use std::sync::atomic::Ordering;
    tokio::select! {
        _ = store.wait_until_ready() => {}
        () = async {
            while !absent.load(Ordering::Relaxed) {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        } => {}
    }
}

/// Runs the gateway watches until dropped, publishing on `out`. `tickets` names the
/// session-ticket Secret (namespace, name) to watch, if any.
pub async fn run(
    client: Client,
    out: watch::Sender<Arc<GatewaySnapshot>>,
    report: Arc<KubeReport>,
    tickets: Option<(&str, &str)>,
    mut minted: watch::Receiver<Option<crate::model::gateway::MintedIdentity>>,
) {
    let changed = Notify::new();
    let (classes, w_classes) = reflector::store();
    let (gateways, w_gateways) = reflector::store();
    let (http, w_http) = reflector::store();
    let (tls, w_tls) = reflector::store();
    let (grants, w_grants) = reflector::store();
    let (overrides, w_overrides) = reflector::store();
    let (policies, w_policies) = reflector::store();
    let (config_maps, w_config_maps) = reflector::store();
    let (secrets, w_secrets) = reflector::store();
    let (namespaces, w_namespaces) = reflector::store();
    let (ticket_store, w_tickets) = reflector::store();
    let stores = Stores {
        tickets: tickets.map(|_| ticket_store),
        classes,
        gateways,
        http,
        tls,
        grants,
        overrides,
        policies,
        config_maps,
        secrets,
        namespaces,
    };
    let cfg = watcher::Config::default;
    let overrides_absent = std::sync::atomic::AtomicBool::new(false);
    let policies_absent = std::sync::atomic::AtomicBool::new(false);
    let c = &client;
    let (r, n) = (&*report, &changed);
    let watches = async {
        tokio::join!(
            track(
                "gatewayclasses",
                Api::<GatewayClass>::all(c.clone()),
                cfg(),
                w_classes,
                r,
                n
            ),
            track(
                "gateways",
                Api::<Gateway>::all(c.clone()),
                cfg(),
                w_gateways,
                r,
                n
            ),
            track(
                "httproutes",
                Api::<HttpRoute>::all(c.clone()),
                cfg(),
                w_http,
                r,
                n
            ),
            track(
                "tlsroutes",
                Api::<TlsRoute>::all(c.clone()),
                cfg(),
                w_tls,
                r,
                n
            ),
            track(
                "referencegrants",
                Api::<ReferenceGrant>::all(c.clone()),
                cfg(),
                w_grants,
                r,
                n
            ),
            // kube-gw's own CRD is optional, and so is BackendTLSPolicy (older Gateway API
            // installs lack it).
            optional(
                "modeloverrides",
                Api::<ModelOverride>::all(c.clone()),
                w_overrides,
                (r, n),
                &overrides_absent
            ),
            optional(
                "backendtlspolicies",
                Api::<BackendTlsPolicy>::all(c.clone()),
                w_policies,
                (r, n),
                &policies_absent
            ),
            track_ca_bundles(c, w_config_maps, r, n),
            track(
                "secrets (tls)",
                Api::<Secret>::all(c.clone()),
                cfg().fields("type=kubernetes.io/tls"),
                w_secrets,
                r,
                n
            ),
            track(
                "namespaces",
                Api::<Namespace>::all(c.clone()),
                cfg(),
                w_namespaces,
                r,
                n
            ),
            async {
                if let Some((ns, name)) = tickets {
                    track(
                        "secret (session tickets)",
                        Api::<Secret>::namespaced(c.clone(), ns),
                        cfg().fields(&format!("metadata.name={name}")),
                        w_tickets,
                        r,
                        n,
                    )
                    .await;
                }
            },
        );
    };
    let publish = async {
        // Every store listed once before the first snapshot: a partial one would look like
        // routes and certificates disappearing.
        let ready = async {
            let _ = tokio::join!(
                stores.classes.wait_until_ready(),
                stores.gateways.wait_until_ready(),
                stores.http.wait_until_ready(),
                stores.tls.wait_until_ready(),
                stores.grants.wait_until_ready(),
                // The optional CRDs: listed, or not installed (then no such object exists).
                listed_or_absent(&stores.overrides, &overrides_absent),
                listed_or_absent(&stores.policies, &policies_absent),
                stores.config_maps.wait_until_ready(),
                stores.secrets.wait_until_ready(),
                stores.namespaces.wait_until_ready(),
                async {
                    if let Some(t) = &stores.tickets {
                        let _ = t.wait_until_ready().await;
                    }
                },
            );
        };
        ready.await;
        loop {
            // Let the events of one instant land in one snapshot.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            let mut snap = stores.snapshot();
            snap.minted = minted.borrow_and_update().clone();
            out.send_if_modified(|cur| {
                if **cur == snap {
                    false
                } else {
                    *cur = Arc::new(snap);
                    true
                }
            });
            tokio::select! {
                () = changed.notified() => {}
                r = minted.changed() => if r.is_err() {
                    // No identity task any more: only the watches wake the publisher.
                    changed.notified().await;
                },
            }
        }
    };
    tokio::join!(watches, publish);
}

#[cfg(test)]
mod tests {
    use super::hint;

    #[test]
    fn a_failed_watch_says_what_to_do() {
        let forbidden = "ApiError: gateways.gateway.networking.k8s.io is forbidden: User \
                         \"system:node:sw1\" cannot list resource \"gateways\": Forbidden";
        assert!(hint(forbidden).contains("apply configs/kubernetes/kube-gw-gateway-rbac.yaml"));
        assert!(
            hint("ApiError: the server could not find the requested resource: NotFound")
                .contains("are the Gateway API CRDs")
        );
        // Anything else is passed on as it came.
        assert_eq!(hint("connection refused"), "connection refused");
    }
}
