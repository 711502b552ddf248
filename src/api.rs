//! The admin API: what the CLI asks the running daemon over the admin socket and what it
//! gets back — one [`Request`] line in, one [`Response`] line out, JSON.
//!
//! Typed both ways: every request has its answer type here ([`Status`], [`Vips`],
//! [`BgpNeighbors`], [`BgpRoutes`], [`ClusterView`], [`LogFilterChanged`], [`Reloaded`],
//! [`DrainAnswer`], [`Frozen`]), which the daemon's admin side fills in and the CLI decodes
//! with [`Response::decode`]. Nothing on either side reads the other's internal layouts by
//! string keys. A leaf module: it imports nothing of kube-gw.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// The daemon's state, components and loops.
    Status,
    /// Replace the log filter; the answer holds the previous one.
    SetLogLevel { filter: String },
    /// Re-read the configuration file (as SIGHUP does) and report the outcome.
    Reload,
    /// The cluster view kube-gw computes from (Services, EndpointSlices, Nodes).
    Cluster,
    /// The VIPs: Services, programmed, announceable; and the refused addresses.
    Vips,
    /// The BGP neighbors and their sessions.
    BgpNeighbors,
    /// What each BGP neighbor has been sent (Adj-RIB-Out), or one neighbor's.
    BgpRoutes { neighbor: Option<String> },
    /// The L7 gateway: steering, what each VIP:port serves, the Gateways' states.
    Gateway,
    /// The BFD sessions.
    Bfd,
    /// Take a neighbor's BFD session administratively down (`down`), or back up.
    BfdAdmin { neighbor: String, down: bool },
    /// Take the switch out of the fabric: GRACEFUL_SHUTDOWN, wait `bgp.drain-time`,
    /// withdraw, close the BGP sessions; answered when done.
    Drain,
    /// Bring the BGP sessions back after a drain.
    Undrain,
    /// Test hook: stop one of the daemon's loops (`main` unless named) from turning for
    /// this many seconds, as a stuck loop would. Refused unless the daemon was started with
    /// `KUBE_GW_TEST_HOOKS=1`.
    DebugFreeze {
        seconds: u64,
        #[serde(default, rename = "loop", skip_serializing_if = "Option::is_none")]
        loop_name: Option<String>,
    },
}

impl Request {
    /// The command's name (as in the JSON, and the metrics label).
    pub fn name(&self) -> &'static str {
        match self {
            Request::Status => "status",
            Request::SetLogLevel { .. } => "set-log-level",
            Request::Reload => "reload",
            Request::Cluster => "cluster",
            Request::Vips => "vips",
            Request::BgpNeighbors => "bgp-neighbors",
            Request::BgpRoutes { .. } => "bgp-routes",
            Request::DebugFreeze { .. } => "debug-freeze",
            Request::Drain => "drain",
            Request::Undrain => "undrain",
            Request::Bfd => "bfd",
            Request::Gateway => "gateway",
            Request::BfdAdmin { .. } => "bfd-admin",
        }
    }
}

/// What the daemon answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    /// A success carrying `answer`.
    pub fn ok<T: Serialize>(answer: &T) -> Self {
        match serde_json::to_value(answer) {
            Ok(v) => Self {
                ok: true,
                result: Some(v),
                error: None,
            },
            Err(e) => Self::err(format!("cannot encode the answer: {e}")),
        }
    }

    /// A failure with a message for the operator and an answer that says more.
    pub fn failed<T: Serialize>(msg: impl Into<String>, answer: &T) -> Self {
        Self {
            ok: false,
            result: serde_json::to_value(answer).ok(),
            error: Some(msg.into()),
        }
    }

    /// The answer as its type; a failure or an answer that is not understood (another
    /// version of kube-gw) as the message to show.
    pub fn decode<T: DeserializeOwned>(self) -> Result<T, String> {
        if !self.ok {
            return Err(self.error.unwrap_or_else(|| "the request failed".into()));
        }
        let v = self.result.unwrap_or(serde_json::Value::Null);
        serde_json::from_value(v).map_err(|e| {
            format!("the answer is not understood ({e}); is the daemon the same version as this command? try --json")
        })
    }

    /// The answer that came with a failure, if it is of type `T`.
    pub fn details<T: DeserializeOwned>(&self) -> Option<T> {
        self.result
            .clone()
            .and_then(|v| serde_json::from_value(v).ok())
    }
    /// A failure with a message for the operator.
    pub fn err(msg: impl Into<String>) -> Self {
        Self {
            ok: false,
            result: None,
            error: Some(msg.into()),
        }
    }
}

/// The daemon's phase of life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DaemonState {
    Starting,
    Running,
    Reloading,
    Stopping,
}

/// `status`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub pid: u32,
    pub state: DaemonState,
    pub ready: bool,
    pub uptime_seconds: u64,
    pub config: ConfigStatus,
    pub log_filter: String,
    /// Set while something needs attention but kube-gw keeps serving its last good state.
    #[serde(default)]
    pub degraded: Option<String>,
    /// Object counts of the cluster view (absent without `[kubernetes]`).
    #[serde(default)]
    pub cluster: Option<ClusterCounts>,
    pub components: Vec<Component>,
}

/// Sizes of the cluster view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterCounts {
    pub services: usize,
    pub endpoint_slices: usize,
    pub nodes: usize,
    /// Snapshots published since start.
    pub snapshots: u64,
}

/// Which configuration is in force and how the last reload went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigStatus {
    pub path: String,
    /// 1 at start, +1 for every reload that changed something.
    pub generation: u64,
    pub last_reload: Option<ReloadRecord>,
}

/// The outcome of one reload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadRecord {
    /// `applied`, `unchanged` or `rejected`.
    pub result: String,
    pub seconds_ago: u64,
    /// The problems that made it fail, as `file:line:col: … — …`, and any notes.
    pub messages: Vec<String>,
}

/// One row of the status table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Component {
    pub name: String,
    pub kind: String,
    /// `up`, `down`, `stuck`, `off`.
    pub state: String,
    pub since_seconds: u64,
    pub info: String,
}

/// `vips`' answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vips {
    pub interface: String,
    pub vips: Vec<VipRow>,
    pub refused: Vec<RefusedAddress>,
    /// The address reconciler's last failure, if any.
    pub error: Option<String>,
    /// The LoadBalancer allocator (with an allocating pool only).
    #[serde(default)]
    pub allocations: Option<AllocationsView>,
    /// kube-gw's nftables filter on the VIPs.
    #[serde(default)]
    pub firewall: Option<FirewallView>,
}

/// The LoadBalancer allocator's table as this switch computes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationsView {
    /// This switch writes the statuses.
    pub leader: bool,
    pub pools: Vec<PoolUse>,
    pub services: Vec<AllocationRow>,
}

/// One allocating pool and how full it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolUse {
    pub name: String,
    pub prefix: String,
    /// Addresses it can give (network and broadcast left out).
    pub size: String,
    pub used: usize,
}

/// One Service's allocation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationRow {
    pub service: String,
    pub addresses: Vec<AllocatedAddress>,
    /// Why it lacks an address it must have.
    pub waiting: Vec<String>,
    pub notes: Vec<String>,
}

/// One allocated address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocatedAddress {
    pub address: String,
    pub pool: String,
    /// RFC 3339: since when this switch has seen it allocated.
    pub since: String,
    pub shared: Option<String>,
}

/// The firewall's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirewallView {
    /// The table is written as wanted.
    pub in_sync: bool,
    /// VIPs filtered.
    pub vips: usize,
    /// `vip:port/proto` open to everyone.
    pub open: Vec<String>,
    /// `vip:port/proto from range` open to some sources only.
    pub restricted: Vec<String>,
    /// Sources allowed to kube-gw's BGP and BFD ports (empty: those ports are not filtered).
    pub control_peers: Vec<String>,
    pub error: Option<String>,
}

/// One VIP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipRow {
    pub address: String,
    pub services: Vec<String>,
    /// On the interface, marked as kube-gw's.
    pub programmed: bool,
    /// On the interface, but someone else's (left alone).
    pub foreign: bool,
    pub announceable: bool,
    pub ready_endpoints: usize,
    /// `vip:port/proto` of each virtual service.
    pub ports: Vec<String>,
}

/// An address a Service asked for and did not get.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedAddress {
    pub service: String,
    pub address: String,
    pub reason: String,
}

/// `bgp neighbors`' answer.
pub type BgpNeighbors = Vec<BgpNeighborRow>;

/// One BGP neighbor, as `kube-gw bgp neighbors` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpNeighborRow {
    pub address: String,
    /// FSM state: idle, connect, active, opensent, openconfirm, established.
    pub state: String,
    pub peer_as: Option<u32>,
    pub hold_time: Option<u16>,
    /// Graceful restart (RFC 4724) negotiated: the peer keeps our routes through a restart.
    #[serde(default)]
    pub graceful_restart: bool,
    /// Seconds in Established (0 when not).
    pub uptime_seconds: u64,
    pub prefixes_sent: usize,
    #[serde(default)]
    pub prefixes_received: usize,
    pub updates_received: u64,
    /// Why it last went down, or why it is not started.
    pub last_error: Option<String>,
    /// The last received UPDATE that was treated as withdraw, had an attribute discarded or
    /// looped, and how many did.
    #[serde(default)]
    pub last_update_error: Option<String>,
    #[serde(default)]
    pub update_errors: u64,
}

/// `bgp routes`' answer: per neighbor, the prefixes announced to it and received from it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpRoutes {
    pub neighbors: Vec<BgpRoutesOf>,
}

/// The Adj-RIB-Out and Adj-RIB-In of one neighbor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpRoutesOf {
    pub neighbor: String,
    pub sent: Vec<String>,
    /// Kept and shown only: import is deny-all.
    #[serde(default)]
    pub received: Vec<String>,
}

/// `bfd`'s answer.
pub type BfdSessions = Vec<BfdRow>;

/// `kube-gw gateway`: the L7 gateway as it serves now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayView {
    /// `[gateway]` is configured.
    pub enabled: bool,
    /// The Gateway API objects were listed.
    pub synced: bool,
    /// `ebpf (program N)` or `bind: <why>`.
    pub steering: String,
    /// The ciphers the kernel takes over, or why kernel TLS is off.
    pub kernel_tls: String,
    /// Terminated TLS connections so far: handed to the kernel, kept in userspace.
    pub tls_connections_kernel: u64,
    pub tls_connections_userspace: u64,
    /// Where the TLS session-ticket keys come from (a Secret, or this switch's own), and why.
    #[serde(default)]
    pub session_tickets: String,
    pub listeners: Vec<GatewayListenerRow>,
    pub gateways: Vec<GatewayRow>,
}

/// One VIP:port the gateway serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayListenerRow {
    pub address: String,
    /// `http`, `https` or `tls-passthrough`.
    pub kind: String,
    /// Host patterns with routes.
    pub hosts: Vec<String>,
    /// Rules (one per match) or passthrough routes.
    pub routes: usize,
    /// `host → namespace/secret` (HTTPS).
    pub certificates: Vec<String>,
    /// `serving`, or why not.
    pub state: String,
}

/// One Gateway of kube-gw's classes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayRow {
    pub gateway: String,
    pub addresses: Vec<String>,
    pub programmed: bool,
    pub reason: String,
    /// `name: Programmed/reason, N routes`.
    pub listeners: Vec<String>,
}

/// One BFD session, as `kube-gw bfd` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BfdRow {
    pub neighbor: String,
    pub multihop: bool,
    /// admin-down, down, init, up.
    pub state: String,
    pub remote_state: Option<String>,
    /// Why our side last went down (RFC 5880 diagnostic), and the peer's.
    pub local_diag: String,
    pub remote_diag: Option<String>,
    pub local_discriminator: u32,
    pub remote_discriminator: Option<u32>,
    /// The negotiated transmit interval and detection time, milliseconds.
    pub tx_interval_ms: u64,
    pub detection_time_ms: Option<u64>,
    /// What this side asks for, milliseconds, and the multiplier.
    pub desired_min_tx_ms: u64,
    pub required_min_rx_ms: u64,
    pub multiplier: u8,
    pub uptime_seconds: u64,
    pub packets_sent: u64,
    pub packets_received: u64,
    pub discarded: u64,
    pub last_discard: Option<String>,
    /// Up → Down for a failed path (not AdminDown), since start.
    pub failures: u64,
    pub last_error: Option<String>,
}

/// `cluster`'s answer: the cluster view kube-gw computes from, keyed `namespace/name`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    pub services: BTreeMap<String, ServiceView>,
    pub endpoint_slices: BTreeMap<String, SliceView>,
    pub nodes: BTreeMap<String, NodeView>,
    /// Every resource has been listed.
    pub complete: bool,
}

/// A Service as kube-gw keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceView {
    #[serde(rename = "type")]
    pub kind: String,
    pub cluster_ips: Vec<String>,
    pub external_ips: Vec<String>,
    pub load_balancer_ips: Vec<String>,
    pub ports: Vec<PortView>,
    pub external_traffic_local: bool,
    pub annotations: BTreeMap<String, String>,
}

/// A port of a Service or an EndpointSlice.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortView {
    pub name: String,
    pub port: u16,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
}

/// An EndpointSlice as kube-gw keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceView {
    /// `namespace/name` of the Service it belongs to.
    pub service: Option<String>,
    pub ports: Vec<PortView>,
    pub endpoints: Vec<EndpointView>,
}

/// One endpoint and its conditions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointView {
    pub addresses: Vec<String>,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    pub node_name: Option<String>,
}

/// A Node's addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    pub addresses: Vec<String>,
}

/// `set-log-level`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogFilterChanged {
    pub previous: String,
    pub current: String,
}

/// `reload`'s answer (also with a failure: why it was rejected).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reloaded {
    /// `applied`, `unchanged` or `rejected`.
    pub result: String,
    /// The generation in force afterwards.
    pub generation: u64,
    /// The problems (`file:line:col: … — …`) or notes.
    pub messages: Vec<String>,
}

/// `drain`'s and `undrain`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum DrainAnswer {
    /// Routes withdrawn after `drain_time` seconds with GRACEFUL_SHUTDOWN, sessions closed.
    Drained { drain_time: u16 },
    /// It was drained already.
    AlreadyDrained,
    /// Undrained (or `undrain` came during the drain time: nothing was withdrawn).
    Undrained,
    /// `undrain` of a switch that was not drained.
    NotDrained,
}

/// `debug-freeze`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frozen {
    #[serde(rename = "loop")]
    pub loop_name: String,
    pub seconds: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_keep_their_wire_names() {
        let r: Request = serde_json::from_str(r#"{"command":"debug-freeze","seconds":7}"#).unwrap();
        assert_eq!(
            r,
            Request::DebugFreeze {
                seconds: 7,
                loop_name: None
            }
        );
        let r: Request =
            serde_json::from_str(r#"{"command":"debug-freeze","seconds":7,"loop":"ipvs"}"#)
                .unwrap();
        assert_eq!(r.name(), "debug-freeze");
        assert_eq!(
            r,
            Request::DebugFreeze {
                seconds: 7,
                loop_name: Some("ipvs".into())
            }
        );
        assert!(serde_json::from_str::<Request>(r#"{"command":"flush-everything"}"#).is_err());
    }

    #[test]
    fn an_answer_round_trips_and_a_failure_decodes_to_its_message() {
        let a = DrainAnswer::Drained { drain_time: 5 };
        let r = Response::ok(&a);
        assert_eq!(r.result.as_ref().unwrap()["state"], "drained");
        assert_eq!(r.decode::<DrainAnswer>().unwrap(), a);
        let f = Response::failed(
            "invalid",
            &Reloaded {
                result: "rejected".into(),
                generation: 1,
                messages: vec!["x".into()],
            },
        );
        assert_eq!(f.details::<Reloaded>().unwrap().result, "rejected");
        assert_eq!(f.decode::<Reloaded>().unwrap_err(), "invalid");
        let wrong = Response::ok(&"a string");
        assert!(wrong
            .decode::<Status>()
            .unwrap_err()
            .contains("not understood"));
    }
}
