//! The configuration schema: one struct per section, kebab-case keys, unknown keys refused,
//! a default for everything that has a sensible one. Semantic rules live in `validate.rs`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The whole configuration of one kube-gw instance.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Config {
    pub node: NodeConfig,
    /// Absent: kube-gw runs without a cluster (nothing to serve; useful for bring-up).
    pub kubernetes: Option<KubernetesConfig>,
    pub vip: VipConfig,
    pub ipvs: IpvsConfig,
    /// Absent: nothing is announced.
    pub bgp: Option<BgpConfig>,
    /// Absent: no L7 gateway (the Gateway API is not watched).
    pub gateway: Option<GatewayConfig>,
    pub admin: AdminConfig,
    pub log: LogConfig,
}

impl Config {
    /// The Node name: `[node] name`, else the host name.
    pub fn node_name(&self) -> String {
        self.node.name.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "localhost".into())
        })
    }
}

/// `[node]`: how this switch appears in the cluster.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NodeConfig {
    /// Node name; default: the host name.
    pub name: Option<String>,
    /// Taints set when the Node is created.
    #[serde(default = "default_taints")]
    pub taints: Vec<Taint>,
    /// Labels set on the Node.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            name: None,
            taints: default_taints(),
            labels: BTreeMap::new(),
        }
    }
}

fn default_taints() -> Vec<Taint> {
    vec![Taint {
        key: "kube-gw.io/network-device".into(),
        value: Some("true".into()),
        effect: TaintEffect::NoSchedule,
    }]
}

/// A Kubernetes taint.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Taint {
    pub key: String,
    pub value: Option<String>,
    pub effect: TaintEffect,
}

/// The effect of a taint, spelled as Kubernetes spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

/// `[kubernetes]`: how to reach the cluster, and what never to serve.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KubernetesConfig {
    /// Credentials provided by the operator.
    pub kubeconfig: Option<PathBuf>,
    /// API server URL for the bootstrap-token join.
    pub server: Option<String>,
    /// CA bundle of the API server for the bootstrap-token join.
    pub ca_file: Option<PathBuf>,
    /// File holding a bootstrap token `abcdef.0123456789abcdef`.
    pub bootstrap_token_file: Option<PathBuf>,
    /// The cluster's Service CIDRs; addresses inside them are never served.
    #[serde(default)]
    pub service_cidrs: Vec<IpNet>,
    /// Where credentials from the bootstrap join are kept (mode 0600 files).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Seconds the switch's node Lease lives without renewal (renewed every quarter of it);
    /// the writers' elections fail over after this long.
    #[serde(default = "default_lease_duration", with = "seconds")]
    pub lease_duration: std::time::Duration,
}

fn default_lease_duration() -> std::time::Duration {
    std::time::Duration::from_secs(40)
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/kube-gw")
}

/// `[vip]`: which addresses may be served and where they are put.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct VipConfig {
    #[serde(default = "default_interface")]
    pub interface: String,
    /// Only addresses inside these prefixes are ever served; those marked `allocate = true`
    /// are also where LoadBalancer Services get their addresses from.
    #[serde(default)]
    pub pools: Vec<Pool>,
    /// The `spec.loadBalancerClass` of the Services kube-gw allocates addresses for.
    #[serde(default = "default_lb_class")]
    pub load_balancer_class: String,
    /// Allocate for LoadBalancer Services without a class too (as the cluster's default
    /// load balancer; leave false where a cloud controller or MetalLB has that job).
    #[serde(default)]
    pub allocate_without_class: bool,
    #[serde(default)]
    pub announce: AnnouncePolicy,
    /// A label selector (`key=value`, comma-separated) that narrows the Services served.
    pub service_selector: Option<String>,
    /// What happens to the VIP addresses when kube-gw stops.
    #[serde(default)]
    pub on_shutdown: OnShutdown,
}

/// The fate of kube-gw's addresses at stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnShutdown {
    /// Remove them (after the BGP routes were withdrawn).
    #[default]
    Remove,
    /// Leave them; a restart adopts them without a flap.
    Keep,
}

impl Default for VipConfig {
    fn default() -> Self {
        Self {
            interface: default_interface(),
            pools: Vec::new(),
            load_balancer_class: default_lb_class(),
            allocate_without_class: false,
            announce: AnnouncePolicy::default(),
            service_selector: None,
            on_shutdown: OnShutdown::default(),
        }
    }
}

impl VipConfig {
    /// The pools' prefixes.
    pub fn prefixes(&self) -> Vec<IpNet> {
        self.pools.iter().map(|p| p.prefix).collect()
    }

    /// Whether `a` is inside one of the pools.
    pub fn covers(&self, a: &IpAddr) -> bool {
        self.pools.iter().any(|p| p.prefix.contains(a))
    }
}

fn default_lb_class() -> String {
    "kube-gw.io/switch".into()
}

/// One `[vip] pools` entry: a prefix (`"198.51.100.0/24"`), or a table
/// `{ prefix = "198.51.100.0/28", allocate = true, name = "public" }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Pool {
    pub prefix: IpNet,
    /// LoadBalancer Services get addresses from this pool.
    pub allocate: bool,
    /// What `kube-gw vips` and the annotation `kube-gw.io/address-pool` call it; default: the
    /// prefix.
    pub name: String,
}

impl Pool {
    /// A serve-only pool.
    pub fn serve(prefix: IpNet) -> Self {
        Self {
            prefix,
            allocate: false,
            name: prefix.to_string(),
        }
    }
}

impl<'de> Deserialize<'de> for Pool {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{self, MapAccess, Visitor};
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields, rename_all = "kebab-case")]
        struct Table {
            prefix: IpNet,
            #[serde(default)]
            allocate: bool,
            name: Option<String>,
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Pool;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "a prefix such as \"198.51.100.0/24\", or a table such as \
                     { prefix = \"198.51.100.0/28\", allocate = true, name = \"public\" }",
                )
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Pool, E> {
                s.parse()
                    .map(Pool::serve)
                    .map_err(|e| E::custom(format!("`{s}` is not a prefix: {e}")))
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<Pool, A::Error> {
                let t = Table::deserialize(de::value::MapAccessDeserializer::new(m))?;
                Ok(Pool {
                    name: t.name.unwrap_or_else(|| t.prefix.to_string()),
                    prefix: t.prefix,
                    allocate: t.allocate,
                })
            }
        }
        d.deserialize_any(V)
    }
}

fn default_interface() -> String {
    "lo".into()
}

/// When a VIP is announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AnnouncePolicy {
    /// Only while at least one endpoint is ready.
    #[default]
    ReadyEndpoints,
    /// Regardless of endpoint readiness.
    Always,
}

/// `[ipvs]`: the data path.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct IpvsConfig {
    /// Program IPVS (default true). With false kube-gw only puts the VIPs on the interface
    /// and announces them (another data plane forwards their traffic); with true a VIP is
    /// announced only once its virtual services are in the kernel.
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub scheduler: Scheduler,
    /// The scheduler skips an unavailable destination (weight 0, draining) and takes the
    /// next one (`sh-fallback` / `mh-fallback`). Without it, `sh` drops the new
    /// connections of the clients hashed to a draining destination.
    #[serde(default = "yes")]
    pub fallback: bool,
    /// Hash the client's source port too (`sh-port` / `mh-port`): spreads one client's
    /// connections over the backends; consistent across switches all the same.
    #[serde(default)]
    pub hash_port: bool,
    /// A destination that leaves is kept at weight 0 until its connections end, at most
    /// this long (seconds).
    #[serde(default = "default_drain_timeout", with = "seconds")]
    pub drain_timeout: std::time::Duration,
    /// How IPVS forwards to the endpoints: `masq` (default) or `tunnel`. See [`Forwarding`].
    #[serde(default)]
    pub forwarding: Forwarding,
}

/// How a switch forwards a VIP's traffic (`[ipvs] forwarding`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Forwarding {
    /// NAT to each endpoint (pod) address and port. With `externalTrafficPolicy: Cluster`
    /// the source becomes the switch's address too, so the answer comes back through it;
    /// a flow that ECMP moves to another switch then reaches its endpoint from a new source
    /// and is reset.
    #[default]
    Masq,
    /// IPIP to the endpoints' nodes (one destination per node, weighted by its ready
    /// endpoints), which decapsulate and hand the packet, still addressed to the VIP and
    /// port, to kube-proxy's rules for the external or LoadBalancer IP; the answer goes
    /// straight to the client. Every switch picks the same node for a flow (Maglev), so a
    /// flow that ECMP moves to another switch lands on the same node and its conntrack
    /// entry: it survives. Needs on every node: the `ipip` module with `tunl0` up, and
    /// `rp_filter` not strict on `tunl0`.
    Tunnel,
}

impl Default for IpvsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            scheduler: Scheduler::default(),
            fallback: true,
            hash_port: false,
            drain_timeout: default_drain_timeout(),
            forwarding: Forwarding::default(),
        }
    }
}

fn yes() -> bool {
    true
}

fn default_drain_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(300)
}

/// A duration written as whole seconds.
mod seconds {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
        u64::deserialize(d).map(std::time::Duration::from_secs)
    }
}

/// `[gateway]`: the L7 gateway on the switch, configured by the Gateway API.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct GatewayConfig {
    /// The `controllerName` of the GatewayClasses kube-gw serves.
    #[serde(default = "default_controller_name")]
    pub controller_name: String,
    /// Steer VIP:ports to the proxy with the eBPF `sk_lookup` program (default); false binds
    /// one socket per VIP:port instead.
    #[serde(default = "yes")]
    pub ebpf: bool,
    /// The switch's own addresses (at most one per family) that backend connections are
    /// sourced from; default: the kernel's choice for the route to the endpoint.
    #[serde(default)]
    pub source_addresses: Vec<IpAddr>,
    /// Prefixes, each inside a `[vip]` pool, from which a Gateway without `spec.addresses`
    /// gets one address (the status writer records it in `status.addresses`, and every
    /// switch serves what is recorded there). Empty: such a Gateway is not Programmed.
    #[serde(default)]
    pub address_pools: Vec<IpNet>,
    /// Hand terminated TLS sessions to the kernel (`tls` module) where it supports the
    /// cipher; userspace rustls otherwise.
    #[serde(default = "yes")]
    pub kernel_tls: bool,
    /// Seconds a client has to send its request headers or finish its TLS handshake.
    #[serde(default = "default_header_timeout", with = "seconds")]
    pub header_timeout: std::time::Duration,
    /// Seconds a backend has to answer with its response headers.
    #[serde(default = "default_backend_timeout", with = "seconds")]
    pub backend_timeout: std::time::Duration,
    /// `namespace/name` of the Secret whose entries (32 random bytes each) are the TLS
    /// session-ticket keys every switch shares; `""`: each switch keeps its own.
    #[serde(default = "default_ticket_secret")]
    pub session_ticket_secret: String,
    /// Seconds the gateway gives its client connections to finish when kube-gw stops (a
    /// restart): kept-alive ones are told to close after their current request; those still
    /// open after this are closed and counted. During a restart new connections wait in the
    /// kernel's accept queue for about this long plus the start: keep it well below the
    /// clients' connect timeouts.
    #[serde(default = "default_gateway_drain", with = "seconds")]
    pub drain_timeout: std::time::Duration,
    /// The signer (`signerName`) of the client certificate kube-gw mints for backends whose
    /// Service asks for one (`kube-gw.io/backend-client-certificate: mint`).
    #[serde(default = "default_identity_signer")]
    pub backend_identity_signer: String,
}

fn default_identity_signer() -> String {
    "kubernetes.io/kube-apiserver-client".into()
}

impl GatewayConfig {
    /// The session-ticket Secret as (namespace, name), unless sharing is off.
    pub fn ticket_secret(&self) -> Option<(&str, &str)> {
        self.session_ticket_secret
            .split_once('/')
            .filter(|(ns, n)| !ns.is_empty() && !n.is_empty())
    }
}

fn default_gateway_drain() -> std::time::Duration {
    std::time::Duration::from_secs(2)
}

fn default_ticket_secret() -> String {
    "kube-system/kube-gw-session-tickets".into()
}

fn default_controller_name() -> String {
    "kube-gw.io/switch".into()
}

fn default_header_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(10)
}

fn default_backend_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(30)
}

/// IPVS scheduler.
///
/// Maglev (`mh`) is the default: its table depends only on the set of destinations, so every
/// switch sends a client to the same backend whatever order the destinations were added in
/// over time, and removing one backend moves only that backend's clients. Source hashing
/// (`sh`) fills its table in the order destinations were added: a switch that restarted
/// (and added them sorted) and one that has run for a week (and added them as endpoints
/// came) disagree, and removing one backend moves about half of the other clients too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scheduler {
    /// Source hashing.
    Sh,
    /// Maglev hashing.
    #[default]
    Mh,
}

/// `[bgp]` without its neighbors (they are read one by one).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct BgpCommon {
    asn: u32,
    router_id: Ipv4Addr,
    #[serde(default = "default_hold")]
    hold_time: u16,
    keepalive: Option<u16>,
    #[serde(default = "default_drain_time")]
    drain_time: u16,
    #[serde(default = "default_true")]
    listen: bool,
    #[serde(default)]
    static_prefixes: Vec<ipnet::IpNet>,
    #[serde(default)]
    graceful_restart: bool,
    #[serde(default = "default_restart_time")]
    restart_time: u16,
    #[serde(default = "default_restart_state")]
    restart_state: PathBuf,
    #[serde(default)]
    long_lived_stale_time: u32,
    #[serde(default = "default_fib_table")]
    fib_table: u32,
    #[serde(default = "default_fib_metric")]
    fib_metric: u32,
    #[serde(default = "default_fib_protocol")]
    fib_protocol: u8,
}

fn default_fib_table() -> u32 {
    254
}

fn default_fib_metric() -> u32 {
    20
}

/// kube-gw's route protocol id (ASCII `k`, as its address protocol).
fn default_fib_protocol() -> u8 {
    0x6b
}

fn default_restart_time() -> u16 {
    120
}

fn default_restart_state() -> PathBuf {
    PathBuf::from("/run/kube-gw/bgp-restart")
}

fn default_true() -> bool {
    true
}

fn default_drain_time() -> u16 {
    10
}

impl BgpCommon {
    pub(crate) fn set_static_prefixes(&mut self, p: Vec<ipnet::IpNet>) {
        self.static_prefixes = p;
    }

    pub(crate) fn with_neighbors(self, neighbors: Vec<NeighborConfig>) -> BgpConfig {
        BgpConfig {
            asn: self.asn,
            router_id: self.router_id,
            hold_time: self.hold_time,
            keepalive: self.keepalive.unwrap_or(self.hold_time / 3),
            drain_time: self.drain_time,
            listen: self.listen,
            static_prefixes: self.static_prefixes,
            graceful_restart: self.graceful_restart,
            restart_time: self.restart_time,
            restart_state: self.restart_state,
            long_lived_stale_time: self.long_lived_stale_time,
            fib: Fib {
                table: self.fib_table,
                metric: self.fib_metric,
                protocol: self.fib_protocol,
            },
            neighbors,
        }
    }
}

fn default_bfd_interval() -> u32 {
    300
}

fn default_bfd_multiplier() -> u8 {
    3
}

fn default_hold() -> u16 {
    9
}

/// `[bgp]`: the speaker.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct BgpConfig {
    pub asn: u32,
    pub router_id: Ipv4Addr,
    /// Seconds; 0 disables keepalives and the hold timer.
    pub hold_time: u16,
    /// Seconds; default: a third of the hold time.
    pub keepalive: u16,
    /// Seconds between re-announcing every route with GRACEFUL_SHUTDOWN (RFC 8326) and
    /// withdrawing them when kube-gw stops; default 10.
    pub drain_time: u16,
    /// Accept the neighbors' connections on TCP port 179 (default true); connections from
    /// addresses that are not neighbors are closed at once.
    pub listen: bool,
    /// Prefixes announced to every neighbor while kube-gw runs, whatever the cluster says
    /// (an aggregate of the pools, say).
    pub static_prefixes: Vec<ipnet::IpNet>,
    /// Graceful restart (RFC 4724) as the restarting speaker: the capability with restart
    /// time and forwarding state, and a stop (`systemctl stop|restart`, a package upgrade)
    /// that closes the sessions without withdrawing, so the peers keep the routes for
    /// `restart-time` while the kept addresses and IPVS go on forwarding. Needs
    /// `[vip] on-shutdown = "keep"`. `kube-gw drain` before a stop still withdraws.
    pub graceful_restart: bool,
    /// Seconds the peers keep our routes after the sessions went (1..=4095; default 120).
    pub restart_time: u16,
    /// Where kube-gw notes the boot it programmed the kernel in (default
    /// /run/kube-gw/bgp-restart): a start in the same boot has kept the forwarding state.
    pub restart_state: PathBuf,
    /// Long-lived graceful restart (RFC 9494): seconds a peer that supports it keeps our
    /// routes after the restart time, marked LLGR_STALE and least preferred (0: not
    /// offered; at most 16777215).
    pub long_lived_stale_time: u32,
    /// Where imported routes go (`fib-table`, `fib-metric`, `fib-protocol`).
    #[serde(flatten)]
    pub fib: Fib,
    pub neighbors: Vec<NeighborConfig>,
}

/// The kernel routes kube-gw installs from the neighbors' `import`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Fib {
    /// Routing table (default 254, main).
    #[serde(rename = "fib-table")]
    pub table: u32,
    /// Route metric (priority; default 20, as FRR's eBGP routes): a route of another
    /// protocol with the same prefix and metric is never replaced.
    #[serde(rename = "fib-metric")]
    pub metric: u32,
    /// Route protocol id that marks kube-gw's routes (default 107): kube-gw changes and
    /// removes only routes with it.
    #[serde(rename = "fib-protocol")]
    pub protocol: u8,
}

/// `[[bgp.neighbors]]`: one peer.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NeighborConfig {
    pub address: IpAddr,
    pub remote_asn: RemoteAsn,
    /// File holding the TCP MD5 password (RFC 2385); the peer must use the same one.
    pub password_file: Option<PathBuf>,
    /// GTSM (RFC 5082): send with TTL 255 and accept only packets that arrive with 255,
    /// i.e. from a directly connected peer that does the same.
    #[serde(default)]
    pub ttl_security: bool,
    /// More prefixes received than this closes the session (Cease, RFC 4486) for a minute.
    pub max_prefixes: Option<u32>,
    /// Never connect; wait for the neighbor to connect (needs `[bgp] listen`).
    #[serde(default)]
    pub passive: bool,
    /// The interface of a link-local peer (`address = "fe80::…"`): the session runs over it
    /// and the routes get our link-local address there as next hop.
    pub interface: Option<String>,
    /// RFC 8950: IPv4 routes over this IPv6 session with an IPv6 next hop, when the peer
    /// agrees (capability Extended Next Hop Encoding). Default: on for link-local neighbors
    /// (an unnumbered link has no IPv4 session), off for the others.
    pub extended_next_hop: Option<bool>,
    /// BFD (RFC 5880) toward this neighbor: a dead path takes the BGP session down within
    /// `bfd-interval` × `bfd-multiplier` instead of the hold time.
    #[serde(default)]
    pub bfd: bool,
    /// BFD transmit and receive interval, milliseconds (default 300).
    #[serde(default = "default_bfd_interval")]
    pub bfd_interval: u32,
    /// BFD detection multiplier (default 3).
    #[serde(default = "default_bfd_multiplier")]
    pub bfd_multiplier: u8,
    /// Multihop BFD (RFC 5883, port 4784) for a neighbor that is not on a shared link.
    #[serde(default)]
    pub bfd_multihop: bool,
    /// The source address of kube-gw's connections to this neighbor (default: the
    /// kernel's choice). Beside the switch's own FRR: an address of the switch's loopback
    /// other than FRR's, so that each side has its own.
    pub local_address: Option<IpAddr>,
    /// The IPv4 next hop announced to this neighbor instead of the session's own address:
    /// for a session over the loopback to the switch's own routing daemon (FRR on SONiC or
    /// Cumulus), the switch's address.
    pub next_hop_ipv4: Option<std::net::Ipv4Addr>,
    /// The IPv6 next hop likewise; it also lets an IPv4 session carry IPv6 routes.
    pub next_hop_ipv6: Option<std::net::Ipv6Addr>,
    /// Free text shown in status output.
    pub description: Option<String>,
    /// RFC 1997 communities added to every route sent to this neighbor, `"ASN:VALUE"`.
    #[serde(default)]
    pub communities: Vec<String>,
    /// RFC 8092 large communities, `"ASN:DATA1:DATA2"`.
    #[serde(default)]
    pub large_communities: Vec<String>,
    /// MULTI_EXIT_DISC sent with every route.
    pub med: Option<u32>,
    /// Extra copies of our AS prepended for this (external) neighbor, 0 to 10.
    #[serde(default)]
    pub prepend: u8,
    /// Which of this neighbor's routes kube-gw installs into the kernel (placement (a):
    /// kube-gw is the switch's only BGP speaker). Prefix filters as in a prefix list:
    /// `"0.0.0.0/0"` (that prefix exactly), `"10.0.0.0/8 le 24"`, `"2001:db8::/32 ge 48 le
    /// 64"`. Default: none (import is deny-all: received routes are only kept and shown).
    #[serde(default)]
    pub import: Vec<PrefixFilter>,
}

/// One prefix-list entry: routes inside `prefix` whose length is in `ge..=le` (both
/// default to the prefix's own length: that prefix exactly).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixFilter {
    pub prefix: ipnet::IpNet,
    pub ge: u8,
    pub le: u8,
}

impl PrefixFilter {
    pub fn matches(&self, p: &ipnet::IpNet) -> bool {
        (self.ge..=self.le).contains(&p.prefix_len()) && self.prefix.contains(p)
    }
}

impl std::str::FromStr for PrefixFilter {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut words = s.split_whitespace();
        let prefix: ipnet::IpNet = words.next().unwrap_or_default().parse().map_err(|_| {
            format!(
                "`{s}`: expected a prefix such as 192.0.2.0/24, then optionally `ge N` and `le M`"
            )
        })?;
        if prefix.trunc() != prefix {
            return Err(format!(
                "`{prefix}` has host bits set; write {}",
                prefix.trunc()
            ));
        }
        let (mut ge, mut le) = (None, None);
        while let Some(w) = words.next() {
            let n: u8 = words
                .next()
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| format!("`{s}`: `{w}` needs a prefix length after it"))?;
            match w {
                "ge" if ge.is_none() && le.is_none() => ge = Some(n),
                "le" if le.is_none() => le = Some(n),
                _ => return Err(format!("`{s}`: expected `ge N` then `le M`, found `{w}`")),
            }
        }
        let own = prefix.prefix_len();
        let ge = ge.unwrap_or(own);
        let le = le.unwrap_or(if ge > own {
            prefix.max_prefix_len()
        } else {
            own
        });
        if !(own <= ge && ge <= le && le <= prefix.max_prefix_len()) {
            return Err(format!(
                "`{s}`: lengths must satisfy {own} <= ge <= le <= {}",
                prefix.max_prefix_len()
            ));
        }
        Ok(Self { prefix, ge, le })
    }
}

impl<'de> Deserialize<'de> for PrefixFilter {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for PrefixFilter {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let own = self.prefix.prefix_len();
        match (self.ge == own, self.le == own) {
            (true, true) => s.collect_str(&self.prefix),
            (true, false) => s.collect_str(&format_args!("{} le {}", self.prefix, self.le)),
            _ => s.collect_str(&format_args!(
                "{} ge {} le {}",
                self.prefix, self.ge, self.le
            )),
        }
    }
}

/// Parses `"ASN:VALUE"` (each 0..=65535) into an RFC 1997 community.
pub fn parse_community(s: &str) -> Option<u32> {
    let (a, b) = s.split_once(':')?;
    let a: u16 = a.trim().parse().ok()?;
    let b: u16 = b.trim().parse().ok()?;
    Some((u32::from(a) << 16) | u32::from(b))
}

/// Parses `"ASN:DATA1:DATA2"` (each a u32) into an RFC 8092 large community.
pub fn parse_large_community(s: &str) -> Option<(u32, u32, u32)> {
    let mut it = s.split(':').map(|p| p.trim().parse::<u32>());
    let (Some(Ok(a)), Some(Ok(b)), Some(Ok(c)), None) =
        (it.next(), it.next(), it.next(), it.next())
    else {
        return None;
    };
    Some((a, b, c))
}

/// The peer's AS: a number, or the kind of session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum RemoteAsn {
    Number(u32),
    Kind(PeerKind),
}

impl<'de> Deserialize<'de> for RemoteAsn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = RemoteAsn;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an AS number (1..=4294967295), \"external\" or \"internal\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RemoteAsn, E> {
                u32::try_from(v).map(RemoteAsn::Number).map_err(|_| {
                    E::custom(format!("AS number {v} is out of range (1..=4294967295)"))
                })
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RemoteAsn, E> {
                u32::try_from(v).map(RemoteAsn::Number).map_err(|_| {
                    E::custom(format!("AS number {v} is out of range (1..=4294967295)"))
                })
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RemoteAsn, E> {
                match v {
                    "external" => Ok(RemoteAsn::Kind(PeerKind::External)),
                    "internal" => Ok(RemoteAsn::Kind(PeerKind::Internal)),
                    _ => Err(E::custom(format!(
                        "`{v}` is neither an AS number nor \"external\" / \"internal\""
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// eBGP or iBGP without naming the number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PeerKind {
    External,
    Internal,
}

/// `[admin]`: the control surfaces.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AdminConfig {
    /// Unix socket for the CLI (mode 0660).
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
    /// HTTP listener for /metrics, /livez, /readyz.
    #[serde(default = "default_metrics")]
    pub metrics: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            socket: default_socket(),
            metrics: default_metrics(),
        }
    }
}

fn default_socket() -> PathBuf {
    PathBuf::from("/run/kube-gw/admin.sock")
}

fn default_metrics() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9472))
}

/// `[log]`: the starting log filter (changeable at runtime with `kube-gw log-level`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LogConfig {
    /// A tracing filter: `info`, `debug`, `kube_gw::bgp=trace,info`, …
    #[serde(default = "default_level")]
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: default_level(),
        }
    }
}

fn default_level() -> String {
    "info".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn communities_parse_and_bad_ones_do_not() {
        assert_eq!(parse_community("65010:100"), Some((65010 << 16) | 100));
        assert_eq!(parse_community("65536:1"), None);
        assert_eq!(parse_community("65010"), None);
        assert_eq!(
            parse_large_community("4200000000:1:2"),
            Some((4_200_000_000, 1, 2))
        );
        assert_eq!(parse_large_community("1:2"), None);
        assert_eq!(parse_large_community("1:2:3:4"), None);
    }
}

#[cfg(test)]
mod prefix_filter_tests {
    use super::PrefixFilter;

    fn f(s: &str) -> Result<PrefixFilter, String> {
        s.parse()
    }

    #[test]
    fn prefix_filters_read_as_prefix_lists_do() {
        let exact = f("203.0.113.0/24").unwrap();
        assert!(exact.matches(&"203.0.113.0/24".parse().unwrap()));
        assert!(!exact.matches(&"203.0.113.0/25".parse().unwrap()));
        let le = f("203.0.113.0/24 le 32").unwrap();
        assert!(le.matches(&"203.0.113.7/32".parse().unwrap()));
        assert!(!le.matches(&"203.0.112.0/23".parse().unwrap()));
        let ge = f("2001:db8::/32 ge 48 le 64").unwrap();
        assert!(ge.matches(&"2001:db8:1::/48".parse().unwrap()));
        assert!(!ge.matches(&"2001:db8::/40".parse().unwrap()));
        // `ge` alone runs to the family's longest.
        assert_eq!(f("10.0.0.0/8 ge 24").unwrap().le, 32);
        assert!(f("10.0.0.1/8").unwrap_err().contains("host bits"));
        assert!(f("10.0.0.0/8 le 4")
            .unwrap_err()
            .contains("8 <= ge <= le <= 32"));
        assert!(f("10.0.0.0/8 le")
            .unwrap_err()
            .contains("needs a prefix length"));
        assert!(f("nonsense").unwrap_err().contains("expected a prefix"));
    }
}
