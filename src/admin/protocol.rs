//! The JSON spoken on the admin socket: one [`Request`] line in, one [`Response`] line out.

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
    /// Take the switch out of the fabric: GRACEFUL_SHUTDOWN, wait `bgp.drain-time`,
    /// withdraw, close the BGP sessions; answered when done.
    Drain,
    /// Bring the BGP sessions back after a drain.
    Undrain,
    /// Test hook: block the main loop for this many seconds. Refused unless the daemon was
    /// started with `KUBE_GW_TEST_HOOKS=1`.
    DebugFreeze { seconds: u64 },
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
    /// A success carrying `result`.
    pub fn ok(result: serde_json::Value) -> Self {
        Self {
            ok: true,
            result: Some(result),
            error: None,
        }
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

/// One BGP neighbor, as `kube-gw bgp neighbors` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpNeighborRow {
    pub address: String,
    /// FSM state: idle, connect, active, opensent, openconfirm, established.
    pub state: String,
    pub peer_as: Option<u32>,
    pub hold_time: Option<u16>,
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
