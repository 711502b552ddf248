//! The Gateway API as kube-gw reads it: the subset of `gateway.networking.k8s.io/v1`
//! (GatewayClass, Gateway, HTTPRoute, TLSRoute, ReferenceGrant) the gateway serves, plus the
//! TLS Secrets and Namespace labels those objects refer to, held in a [`GatewaySnapshot`].
//!
//! The spec types are plain serde structs in the API's own JSON shape (camelCase, unknown
//! fields ignored), written here because the `gateway-api` crate pins an older kube than
//! kube-gw's. `kube/` wraps them into API objects (metadata + spec) to watch them and hands
//! over only `spec`, key, generation and creation time; nothing here knows the API machinery.

use std::collections::BTreeMap;
use std::sync::Arc;

use imbl::OrdMap;
use serde::{Deserialize, Serialize};

use super::cluster::ObjectKey;

/// The API group of the Gateway API.
pub const GROUP: &str = "gateway.networking.k8s.io";

/// `GatewayClass.spec`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GatewayClassSpec {
    pub controller_name: String,
}

/// `Gateway.spec`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GatewaySpec {
    pub gateway_class_name: String,
    pub listeners: Vec<Listener>,
    pub addresses: Vec<GatewayAddress>,
    /// Not part of the spec: the IP addresses in the Gateway's `status.addresses`, which
    /// kube-gw's status writer put there when it allocated one (a Gateway without
    /// `spec.addresses`). Filled by `kube/` from the status; the allocation keeps them.
    #[serde(skip)]
    pub assigned: Vec<std::net::IpAddr>,
    pub tls: Option<GatewayTls>,
}

/// `Gateway.spec.tls`: the Gateway's own TLS settings (not a listener's).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GatewayTls {
    pub backend: Option<GatewayBackendTls>,
}

/// `Gateway.spec.tls.backend`: what the Gateway shows backends that ask who it is.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GatewayBackendTls {
    /// A `kubernetes.io/tls` Secret (its namespace defaults to the Gateway's).
    pub client_certificate_ref: Option<ObjectRef>,
}

/// `spec.addresses[]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GatewayAddress {
    /// `IPAddress` when absent.
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub value: String,
}

/// `spec.listeners[]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Listener {
    pub name: String,
    pub hostname: Option<String>,
    pub port: u16,
    /// `HTTP`, `HTTPS`, `TLS`, `TCP`, `UDP` or an implementation's own.
    pub protocol: String,
    pub tls: Option<ListenerTls>,
    pub allowed_routes: Option<AllowedRoutes>,
}

/// `listeners[].tls`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ListenerTls {
    /// `Terminate` (the default) or `Passthrough`.
    pub mode: Option<String>,
    pub certificate_refs: Vec<ObjectRef>,
}

/// `listeners[].allowedRoutes`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AllowedRoutes {
    pub namespaces: Option<RouteNamespaces>,
    pub kinds: Vec<RouteGroupKind>,
}

/// `allowedRoutes.namespaces`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RouteNamespaces {
    /// `Same` (the default), `All` or `Selector`.
    pub from: Option<String>,
    pub selector: Option<LabelSelector>,
}

/// A label selector (`matchLabels` and `matchExpressions`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LabelSelector {
    pub match_labels: BTreeMap<String, String>,
    pub match_expressions: Vec<LabelExpression>,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LabelExpression {
    pub key: String,
    /// `In`, `NotIn`, `Exists`, `DoesNotExist`.
    pub operator: String,
    pub values: Vec<String>,
}

impl LabelSelector {
    /// Does a set of labels match? (An empty selector matches everything.)
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|e| {
                let v = labels.get(&e.key);
                match e.operator.as_str() {
                    "In" => v.is_some_and(|v| e.values.contains(v)),
                    "NotIn" => !v.is_some_and(|v| e.values.contains(v)),
                    "Exists" => v.is_some(),
                    "DoesNotExist" => v.is_none(),
                    _ => false,
                }
            })
    }
}

/// `{group, kind}` of a route kind.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RouteGroupKind {
    pub group: Option<String>,
    pub kind: String,
}

/// A reference to another object (`certificateRefs[]`, `backendRefs[]`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ObjectRef {
    /// The core group when empty or absent.
    pub group: Option<String>,
    pub kind: Option<String>,
    pub name: String,
    pub namespace: Option<String>,
}

/// `spec.parentRefs[]` of a route.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ParentRef {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: String,
    pub section_name: Option<String>,
    pub port: Option<u16>,
}

/// `HTTPRoute.spec`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpRouteSpec {
    pub parent_refs: Vec<ParentRef>,
    pub hostnames: Vec<String>,
    pub rules: Vec<HttpRule>,
}

/// `HTTPRoute.spec.rules[]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpRule {
    pub name: Option<String>,
    pub matches: Vec<HttpMatch>,
    pub filters: Vec<HttpFilter>,
    pub backend_refs: Vec<BackendRef>,
    pub timeouts: Option<RouteTimeouts>,
}

/// `rules[].timeouts`: Gateway API durations (`1h30m`, `500ms`; `0s` disables).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RouteTimeouts {
    pub request: Option<String>,
    pub backend_request: Option<String>,
}

/// `rules[].matches[]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpMatch {
    pub path: Option<PathMatch>,
    pub headers: Vec<ValueMatch>,
    pub query_params: Vec<ValueMatch>,
    pub method: Option<String>,
}

/// `matches[].path`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PathMatch {
    /// `Exact`, `PathPrefix` (the default) or `RegularExpression`.
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub value: Option<String>,
}

/// `matches[].headers[]` and `matches[].queryParams[]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ValueMatch {
    /// `Exact` (the default) or `RegularExpression`.
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub name: String,
    pub value: String,
}

/// `rules[].filters[]` (and `backendRefs[].filters[]`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpFilter {
    #[serde(rename = "type")]
    pub type_: String,
    pub request_header_modifier: Option<HeaderModifier>,
    pub response_header_modifier: Option<HeaderModifier>,
    pub request_redirect: Option<RequestRedirect>,
    pub url_rewrite: Option<UrlRewrite>,
    pub extension_ref: Option<LocalObjectRef>,
}

/// A reference to an object in the referrer's namespace (`extensionRef`, a policy's CA refs).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LocalObjectRef {
    pub group: String,
    pub kind: String,
    pub name: String,
}

/// The API group of kube-gw's own resources (`ModelOverride`).
pub const KUBE_GW_GROUP: &str = "kube-gw.io";

/// `ModelOverride.spec` (`kube-gw.io/v1alpha1`): the settings of the model-override filter.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ModelOverrideSpec {
    /// The models written into requests, with optional weights (default 1 each).
    pub models: Vec<WeightedModel>,
    /// The request paths rewritten (default: Ollama's and OpenAI's generation APIs).
    pub paths: Vec<String>,
    /// Bodies larger than this are never rewritten (default 1 MiB).
    pub max_body_bytes: Option<u64>,
    /// `PassThrough` (default) or `Reject`: what happens to a body that is not a JSON object
    /// or is over the bound.
    pub on_unparsable: Option<String>,
}

/// `spec.models[]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WeightedModel {
    pub name: String,
    pub weight: Option<u32>,
}

/// `requestHeaderModifier` / `responseHeaderModifier`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HeaderModifier {
    pub set: Vec<Header>,
    pub add: Vec<Header>,
    pub remove: Vec<String>,
}

/// A header name and value.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Header {
    pub name: String,
    pub value: String,
}

/// `requestRedirect`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RequestRedirect {
    pub scheme: Option<String>,
    pub hostname: Option<String>,
    pub path: Option<PathModifier>,
    pub port: Option<u16>,
    /// 301 or 302 (the default).
    pub status_code: Option<u16>,
}

/// `urlRewrite`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UrlRewrite {
    pub hostname: Option<String>,
    pub path: Option<PathModifier>,
}

/// The `path` of a redirect or rewrite.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PathModifier {
    /// `ReplaceFullPath` or `ReplacePrefixMatch`.
    #[serde(rename = "type")]
    pub type_: String,
    pub replace_full_path: Option<String>,
    pub replace_prefix_match: Option<String>,
}

/// `backendRefs[]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BackendRef {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub name: String,
    pub namespace: Option<String>,
    pub port: Option<u16>,
    /// 1 when absent.
    pub weight: Option<u32>,
    pub filters: Vec<HttpFilter>,
}

/// `TLSRoute.spec`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TlsRouteSpec {
    pub parent_refs: Vec<ParentRef>,
    pub hostnames: Vec<String>,
    pub rules: Vec<TlsRule>,
}

/// `TLSRoute.spec.rules[]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TlsRule {
    pub backend_refs: Vec<BackendRef>,
}

/// `ReferenceGrant.spec`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ReferenceGrantSpec {
    pub from: Vec<GrantFrom>,
    pub to: Vec<GrantTo>,
}

/// `ReferenceGrant.spec.from[]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GrantFrom {
    pub group: String,
    pub kind: String,
    pub namespace: String,
}

/// `ReferenceGrant.spec.to[]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GrantTo {
    pub group: String,
    pub kind: String,
    pub name: Option<String>,
}

/// An object of the snapshot: its spec with what status needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Object<S> {
    pub key: ObjectKey,
    pub generation: i64,
    /// Creation time, seconds since the epoch (older routes win ties).
    pub created: i64,
    pub spec: S,
}

/// `BackendTLSPolicy.spec` (v1): how the gateway speaks TLS to the Services it targets.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BackendTlsPolicySpec {
    pub target_refs: Vec<PolicyTargetRef>,
    pub validation: BackendTlsValidation,
    pub options: BTreeMap<String, String>,
}

/// `spec.targetRefs[]` of a policy: a local object, and optionally one of its sections (a
/// Service port's name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PolicyTargetRef {
    pub group: String,
    pub kind: String,
    pub name: String,
    pub section_name: Option<String>,
}

/// `BackendTLSPolicy.spec.validation`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BackendTlsValidation {
    /// ConfigMaps (core group) with the CA bundle under `ca.crt`, in the policy's namespace.
    pub ca_certificate_refs: Vec<LocalObjectRef>,
    /// `System`: the switch's own trust store.
    pub well_known_ca_certificates: Option<String>,
    /// The name sent as SNI, and the one the certificate must carry unless
    /// `subjectAltNames` is given.
    pub hostname: String,
    pub subject_alt_names: Vec<SubjectAltName>,
}

/// `validation.subjectAltNames[]`: `type` is `Hostname` or `URI`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SubjectAltName {
    #[serde(rename = "type")]
    pub type_: String,
    pub hostname: Option<String>,
    pub uri: Option<String>,
}

/// The Service annotation that asks kube-gw to show backends a client certificate it minted
/// (value `mint`), when the Gateway names none (`spec.tls.backend.clientCertificateRef`).
pub const MINT_ANNOTATION: &str = "kube-gw.io/backend-client-certificate";

/// A client certificate kube-gw minted for itself (a key it made, signed through a
/// CertificateSigningRequest). Its `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct MintedIdentity {
    pub cert_pem: Arc<str>,
    pub key_pem: Arc<str>,
}

impl std::fmt::Debug for MintedIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintedIdentity")
            .field("cert_pem", &self.cert_pem.len())
            .finish_non_exhaustive()
    }
}

/// A `kubernetes.io/tls` Secret: its PEM data as found (checked by the gateway, not here).
/// Its `Debug` shows lengths, never the bytes (the private key).
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct TlsSecret {
    pub key: ObjectKey,
    #[serde(skip)]
    pub cert_pem: Arc<[u8]>,
    #[serde(skip)]
    pub key_pem: Arc<[u8]>,
}

/// The Secret of shared TLS session-ticket keys (`[gateway] session-ticket-secret`): its data
/// entries as found (checked by the gateway, not here). Its `Debug` shows entry names and
/// lengths, never the bytes.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct TicketSecret {
    pub key: ObjectKey,
    #[serde(skip)]
    pub entries: BTreeMap<String, Arc<[u8]>>,
}

impl std::fmt::Debug for TlsSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSecret")
            .field("key", &self.key)
            .field("cert_pem_bytes", &self.cert_pem.len())
            .field("key_pem_bytes", &self.key_pem.len())
            .finish()
    }
}

impl std::fmt::Debug for TicketSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lengths: BTreeMap<&str, usize> = self
            .entries
            .iter()
            .map(|(k, v)| (k.as_str(), v.len()))
            .collect();
        f.debug_struct("TicketSecret")
            .field("key", &self.key)
            .field("entry_lengths", &lengths)
            .finish()
    }
}

/// Everything the gateway reads from the cluster besides Services and EndpointSlices.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GatewaySnapshot {
    /// GatewayClasses by name.
    pub classes: OrdMap<String, Object<GatewayClassSpec>>,
    pub gateways: OrdMap<ObjectKey, Object<GatewaySpec>>,
    pub http_routes: OrdMap<ObjectKey, Object<HttpRouteSpec>>,
    pub tls_routes: OrdMap<ObjectKey, Object<TlsRouteSpec>>,
    pub grants: OrdMap<ObjectKey, Object<ReferenceGrantSpec>>,
    /// kube-gw's `ModelOverride` filters (empty when their CRD is not installed).
    pub model_overrides: OrdMap<ObjectKey, Object<ModelOverrideSpec>>,
    pub secrets: OrdMap<ObjectKey, TlsSecret>,
    pub backend_tls_policies: OrdMap<ObjectKey, Object<BackendTlsPolicySpec>>,
    /// The `ca.crt` of every ConfigMap that has one (CA bundles for BackendTLSPolicies).
    pub ca_bundles: OrdMap<ObjectKey, Arc<str>>,
    /// kube-gw's own client certificate for backends that ask for one to be minted, once
    /// signed (`kube/backend_identity.rs`).
    #[serde(skip)]
    pub minted: Option<MintedIdentity>,
    /// The session-ticket Secret, when configured and found.
    pub ticket_secret: Option<TicketSecret>,
    /// Namespace labels (for `allowedRoutes.namespaces.selector`).
    pub namespaces: OrdMap<String, BTreeMap<String, String>>,
    /// The Gateway API's CRDs are installed and every watched resource was listed.
    pub complete: bool,
}
