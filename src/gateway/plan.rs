//! What the gateway serves, as `compute` derives it from the cluster: per VIP:port, a route
//! table (HTTP and HTTPS, with the certificates by SNI) or SNI passthrough routes; and the
//! Gateway API statuses to write. Plus request matching over a route table, pure, so that the
//! precedence rules of the Gateway API are tested without sockets.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use serde::Serialize;

use super::model_override::ModelOverride;
use super::steer::Pair;
use crate::model::gateway::{HeaderModifier, ParentRef, RequestRedirect, UrlRewrite};
use crate::model::ObjectKey;

/// The gateway's desired state.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GatewayState {
    /// Computed from the listed objects (false: the empty state before the first computation).
    pub synced: bool,
    /// What each served VIP:port does.
    pub ports: BTreeMap<Pair, PortPlan>,
    /// Gateway addresses, and whether each may be announced (its Gateway is Programmed).
    pub vips: BTreeMap<IpAddr, bool>,
    pub status: Statuses,
    /// The TLS session-ticket keys (shared from a Secret, or none: this switch's own).
    pub tickets: super::tickets::TicketKeys,
    /// The addresses allocated from `[gateway] address-pools`, by Gateway: the next
    /// computation's `Inputs::previous`.
    pub allocations: BTreeMap<ObjectKey, Allocation>,
}

/// An address allocated to a Gateway, and the addresses its status recorded at the time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Allocation {
    pub ip: IpAddr,
    pub seen: Vec<IpAddr>,
}

/// One VIP:port.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum PortPlan {
    /// HTTP, or HTTPS when `tls` is given.
    Http {
        routes: RouteTable,
        #[serde(skip_serializing_if = "Option::is_none")]
        tls: Option<Certificates>,
    },
    /// TLS passthrough: the ClientHello's SNI picks the backends; bytes are not touched.
    Passthrough { routes: Vec<SniRoute> },
}

/// Server certificates by SNI: the first pattern that matches wins (exact names first, then
/// wildcards by length, then the catch-all).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Certificates {
    pub by_host: Vec<(HostPattern, CertRef)>,
}

/// A certificate chain and key, parsed and checked to match.
#[derive(Clone, Serialize)]
pub struct CertRef {
    /// The Secret it came from.
    pub secret: ObjectKey,
    #[serde(skip)]
    pub key: Arc<rustls::sign::CertifiedKey>,
}

impl std::fmt::Debug for CertRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertRef")
            .field("secret", &self.secret)
            .finish_non_exhaustive()
    }
}

impl Certificates {
    /// The certificate for an SNI name (or for none).
    pub fn lookup(&self, sni: Option<&str>) -> Option<&CertRef> {
        let host = sni.map(str::to_ascii_lowercase);
        self.by_host
            .iter()
            .find(|(p, _)| {
                host.as_deref()
                    .map_or(*p == HostPattern::Any, |h| p.matches(h))
            })
            .or_else(|| self.by_host.iter().find(|(p, _)| *p == HostPattern::Any))
            .map(|(_, c)| c)
    }
}

/// A hostname pattern: exact, `*.suffix`, or any.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostPattern {
    Exact(String),
    /// `*.example.com`, kept as `.example.com`: matches one or more labels before it.
    Wildcard(String),
    Any,
}

impl HostPattern {
    /// Parses `*.a.b`, `a.b` or nothing (any).
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            None | Some("") | Some("*") => Self::Any,
            Some(s) => match s.strip_prefix('*') {
                Some(suffix) => Self::Wildcard(suffix.to_ascii_lowercase()),
                None => Self::Exact(s.to_ascii_lowercase()),
            },
        }
    }

    /// Does a (lower-case) host name match?
    pub fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(h) => h == host,
            Self::Wildcard(suffix) => host.len() > suffix.len() && host.ends_with(suffix.as_str()),
            Self::Any => true,
        }
    }

    /// How specific: exact beats any wildcard; a longer wildcard beats a shorter one.
    pub fn rank(&self) -> (u8, usize) {
        match self {
            Self::Exact(h) => (2, h.len()),
            Self::Wildcard(s) => (1, s.len()),
            Self::Any => (0, 0),
        }
    }

    /// The names both patterns accept, as a pattern, or None if there are none.
    pub fn intersect(&self, other: &Self) -> Option<Self> {
        match (self, other) {
            (Self::Any, x) | (x, Self::Any) => Some(x.clone()),
            (Self::Exact(a), Self::Exact(b)) => (a == b).then(|| self.clone()),
            (Self::Exact(a), w @ Self::Wildcard(_)) | (w @ Self::Wildcard(_), Self::Exact(a)) => {
                w.matches(a).then(|| Self::Exact(a.clone()))
            }
            (Self::Wildcard(a), Self::Wildcard(b)) => {
                if a.ends_with(b.as_str()) {
                    Some(self.clone())
                } else if b.ends_with(a.as_str()) {
                    Some(other.clone())
                } else {
                    None
                }
            }
        }
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exact(h) => f.write_str(h),
            Self::Wildcard(s) => write!(f, "*{s}"),
            Self::Any => f.write_str("*"),
        }
    }
}

/// The HTTP routes of one VIP:port, grouped by host pattern, most specific first; within a
/// group, rules in Gateway API precedence order.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RouteTable {
    /// Rules are shared (`Arc`): a request takes its rule without copying it. Each group is
    /// (host pattern, rules, the hostname of the listener they came through).
    pub hosts: Vec<(HostPattern, Vec<Arc<Rule>>, HostPattern)>,
    /// The hostnames of the port's listeners, most specific first: a request belongs to the
    /// most specific one its host matches, and only routes attached through that listener
    /// serve it (listener isolation). Empty: no isolation (every group is a candidate).
    pub listeners: Vec<HostPattern>,
    /// Some rule matches on headers / on the query ([`finish`](Self::finish) sets them): a
    /// request's headers and query are gathered for matching only then.
    #[serde(skip)]
    pub reads_headers: bool,
    #[serde(skip)]
    pub reads_query: bool,
    /// The certificate the Gateway shows backends that ask (`spec.tls.backend`).
    #[serde(skip)]
    pub client_cert: Option<super::backend_tls::ClientCert>,
}

/// A path match.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case", tag = "type", content = "value")]
pub enum PathMatch {
    Exact(String),
    /// Normalized without a trailing `/` (except `/` itself).
    Prefix(String),
    Regex(#[serde(serialize_with = "ser_regex")] regex::Regex),
}

fn ser_regex<S: serde::Serializer>(r: &regex::Regex, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(r.as_str())
}

/// A header or query parameter match.
#[derive(Debug, Clone, Serialize)]
pub struct ValueMatch {
    pub name: String,
    #[serde(flatten)]
    pub value: StrMatch,
}

/// Exact or regular-expression value.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case", tag = "type", content = "value")]
pub enum StrMatch {
    Exact(String),
    Regex(#[serde(serialize_with = "ser_regex")] regex::Regex),
}

impl StrMatch {
    fn matches(&self, v: &str) -> bool {
        match self {
            Self::Exact(e) => e == v,
            Self::Regex(r) => r.is_match(v),
        }
    }
}

/// One match of a rule (a rule with several matches becomes several [`Rule`]s).
#[derive(Debug, Clone, Serialize)]
pub struct Match {
    pub path: PathMatch,
    pub method: Option<String>,
    pub headers: Vec<ValueMatch>,
    pub query: Vec<ValueMatch>,
}

impl Match {
    /// Precedence key, smaller first: exact path, then longer prefixes, then regular
    /// expressions; then a method; then more headers; then more query parameters.
    fn precedence(
        &self,
    ) -> (
        u8,
        std::cmp::Reverse<usize>,
        bool,
        std::cmp::Reverse<usize>,
        std::cmp::Reverse<usize>,
    ) {
        let (kind, len) = match &self.path {
            PathMatch::Exact(p) => (0, p.len()),
            PathMatch::Prefix(p) => (1, p.len()),
            PathMatch::Regex(r) => (2, r.as_str().len()),
        };
        (
            kind,
            std::cmp::Reverse(len),
            self.method.is_none(),
            std::cmp::Reverse(self.headers.len()),
            std::cmp::Reverse(self.query.len()),
        )
    }

    /// Does a request match?
    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        let path_ok = match &self.path {
            PathMatch::Exact(p) => req.path == p,
            PathMatch::Prefix(p) => {
                p == "/"
                    || (req.path.starts_with(p.as_str())
                        && matches!(req.path.as_bytes().get(p.len()), None | Some(b'/')))
            }
            PathMatch::Regex(r) => r.is_match(req.path),
        };
        path_ok
            && self.method.as_deref().is_none_or(|m| m == req.method)
            && self.headers.iter().all(|h| {
                req.headers
                    .iter()
                    .filter(|(n, _)| n.eq_ignore_ascii_case(&h.name))
                    .any(|(_, v)| h.value.matches(v))
            })
            && self.query.iter().all(|q| {
                req.query
                    .iter()
                    .find(|(n, _)| *n == q.name)
                    .is_some_and(|(_, v)| q.value.matches(v))
            })
    }
}

/// What a request looks like to matching.
#[derive(Debug, Clone)]
pub struct RequestView<'a> {
    /// Lower case, without a port.
    pub host: &'a str,
    pub path: &'a str,
    pub method: &'a str,
    pub headers: Vec<(&'a str, &'a str)>,
    pub query: Vec<(String, String)>,
}

/// One match of one rule, with everything needed to serve it.
#[derive(Debug, Clone, Serialize)]
pub struct Rule {
    pub route: ObjectKey,
    /// Index of the rule in the route (for logs and metrics).
    pub rule: usize,
    #[serde(rename = "match")]
    pub match_: Match,
    pub filters: Vec<Filter>,
    pub backends: Vec<Backend>,
    /// `timeouts.request`: the client has its answer's head within this, or 504; `None`: no
    /// bound (absent or `0s`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_timeout: Option<std::time::Duration>,
    /// `timeouts.backendRequest`: `None` → `[gateway] backend-timeout`; `Some(ZERO)` (`0s`)
    /// → no bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_timeout: Option<std::time::Duration>,
    /// Route creation time (ties: older first).
    #[serde(skip)]
    pub created: i64,
    /// The route's metric series, looked up at its first request.
    #[serde(skip)]
    pub metrics: super::metrics::RouteCache,
}

/// A filter the proxy applies.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum Filter {
    RequestHeaders(HeaderModifier),
    ResponseHeaders(HeaderModifier),
    Redirect(RequestRedirect),
    Rewrite(UrlRewrite),
    /// `ExtensionRef` to a `ModelOverride`.
    ModelOverride(Arc<ModelOverride>),
    /// An `ExtensionRef` that did not resolve: requests the filter would have processed get
    /// 500 with this reason (never a silent skip).
    Unresolved(String),
}

/// One backendRef, resolved.
#[derive(Debug, Clone, Serialize)]
pub struct Backend {
    /// `namespace/name:port`.
    pub name: String,
    pub weight: u32,
    /// Where requests go (ready endpoints, or serving-terminating ones if none is ready).
    pub endpoints: Vec<SocketAddr>,
    /// Send a PROXY protocol v2 header first (the Service's `kube-gw.io/proxy-protocol: v2`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub proxy_protocol: bool,
    /// Why requests given to this backend fail (a reference that did not resolve → 500).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// HTTP/2 with prior knowledge to the endpoints (the Service port's `appProtocol` is
    /// `kubernetes.io/h2c`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub h2c: bool,
    /// The backendRef's own header filters, applied after the rule's.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub request_headers: Vec<HeaderModifier>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub response_headers: Vec<HeaderModifier>,
    /// TLS to the endpoints, as the Service port's BackendTLSPolicy asks.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_backend_tls"
    )]
    pub tls: Option<Arc<super::backend_tls::BackendTls>>,
    /// The client certificate kube-gw minted, for a Service that asks for one; the Gateway's
    /// own (`RouteTable::client_cert`) comes first.
    #[serde(skip)]
    pub minted_client: Option<super::backend_tls::ClientCert>,
}

fn ser_backend_tls<S: serde::Serializer>(
    t: &Option<Arc<super::backend_tls::BackendTls>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&format!("BackendTLSPolicy {} (SNI {:?})", t.policy, t.sni)),
        None => s.serialize_none(),
    }
}

impl Backend {
    /// Sets the endpoints.
    pub fn set_endpoints(&mut self, endpoints: Vec<SocketAddr>) {
        self.endpoints = endpoints;
    }
}

/// A passthrough route of one VIP:port.
#[derive(Debug, Clone, Serialize)]
pub struct SniRoute {
    pub host: HostPattern,
    pub route: ObjectKey,
    pub backends: Vec<Backend>,
}

impl RouteTable {
    /// Sorts the groups (most specific host first) and each group's rules by precedence.
    pub fn finish(&mut self) {
        self.hosts
            .sort_by(|a, b| b.0.rank().cmp(&a.0.rank()).then(a.0.cmp(&b.0)));
        self.listeners
            .sort_by(|a, b| b.rank().cmp(&a.rank()).then(a.cmp(b)));
        self.listeners.dedup();
        for (_, rules, _) in &mut self.hosts {
            rules.sort_by(|a, b| {
                a.match_
                    .precedence()
                    .cmp(&b.match_.precedence())
                    .then(a.created.cmp(&b.created))
                    .then(a.route.cmp(&b.route))
                    .then(a.rule.cmp(&b.rule))
            });
        }
        let all = || self.hosts.iter().flat_map(|(_, r, _)| r.iter());
        self.reads_headers = all().any(|r| !r.match_.headers.is_empty());
        self.reads_query = all().any(|r| !r.match_.query.is_empty());
    }

    /// Adds a rule under a host pattern (no listener isolation).
    pub fn push(&mut self, host: HostPattern, rule: Arc<Rule>) {
        self.push_via(HostPattern::Any, host, rule);
    }

    /// Adds a rule under a host pattern, attached through a listener with this hostname.
    pub fn push_via(&mut self, listener: HostPattern, host: HostPattern, rule: Arc<Rule>) {
        match self
            .hosts
            .iter_mut()
            .find(|(h, _, l)| *h == host && *l == listener)
        {
            Some((_, rules, _)) => rules.push(rule),
            None => self.hosts.push((host, vec![rule], listener)),
        }
    }

    /// Declares a listener of this port (see `listeners`).
    pub fn listen(&mut self, hostname: HostPattern) {
        self.listeners.push(hostname);
    }

    /// The rule a request goes to: the most specific listener its host matches, then among
    /// the routes attached through it the most specific host group that matches, then the
    /// first rule of that group that matches (no fall-through to less specific hosts or
    /// other listeners).
    pub fn select(&self, req: &RequestView<'_>) -> Option<&Arc<Rule>> {
        let listener = if self.listeners.is_empty() {
            None
        } else {
            Some(self.listeners.iter().find(|l| l.matches(req.host))?)
        };
        let (_, rules, _) = self
            .hosts
            .iter()
            .find(|(h, _, l)| listener.is_none_or(|x| x == l) && h.matches(req.host))?;
        rules.iter().find(|r| r.match_.matches(req))
    }
}

/// The passthrough route for an SNI name: most specific pattern first.
pub fn select_sni<'a>(routes: &'a [SniRoute], sni: Option<&str>) -> Option<&'a SniRoute> {
    let host = sni.map(str::to_ascii_lowercase);
    let mut best: Option<&SniRoute> = None;
    for r in routes {
        let ok = match &host {
            Some(h) => r.host.matches(h),
            None => r.host == HostPattern::Any,
        };
        if ok && best.is_none_or(|b| r.host.rank() > b.host.rank()) {
            best = Some(r);
        }
    }
    best
}

/// A status condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

impl Condition {
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: &str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// The status of one listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListenerStatus {
    pub name: String,
    pub supported_kinds: Vec<&'static str>,
    pub attached_routes: u32,
    pub conditions: Vec<Condition>,
}

/// The status of one Gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GatewayStatus {
    pub generation: i64,
    pub addresses: Vec<IpAddr>,
    pub conditions: Vec<Condition>,
    pub listeners: Vec<ListenerStatus>,
}

/// The status of a route toward one of its parents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParentStatus {
    pub parent: ParentRef,
    pub conditions: Vec<Condition>,
}

/// The status of one route (only the parents that are kube-gw's Gateways).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteStatus {
    pub generation: i64,
    pub parents: Vec<ParentStatus>,
}

/// Every status kube-gw owns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Statuses {
    /// GatewayClass name → (generation, conditions).
    pub classes: BTreeMap<String, (i64, Vec<Condition>)>,
    pub gateways: BTreeMap<ObjectKey, GatewayStatus>,
    pub http_routes: BTreeMap<ObjectKey, RouteStatus>,
    pub tls_routes: BTreeMap<ObjectKey, RouteStatus>,
    /// BackendTLSPolicies: their ancestors (Gateways) as a route's parents are kept.
    pub backend_tls_policies: BTreeMap<ObjectKey, RouteStatus>,
}
