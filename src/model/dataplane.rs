//! The data plane's vocabulary: virtual services (VIP, port, protocol) with their
//! destinations, as the desired state computes them and the IPVS reconciler programs them,
//! and what the address reconciler reports as programmed.

use std::net::IpAddr;

use imbl::OrdSet;
use serde::Serialize;

use super::cluster::{ObjectKey, Protocol};

/// Key of a virtual service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VsKey {
    pub vip: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
}

impl Serialize for VsKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl std::fmt::Display for VsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let proto = match self.protocol {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        };
        match self.vip {
            IpAddr::V4(a) => write!(f, "{a}:{}/{proto}", self.port),
            IpAddr::V6(a) => write!(f, "[{a}]:{}/{proto}", self.port),
        }
    }
}

/// One (VIP, port, protocol) and where its traffic goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VirtualService {
    pub service: ObjectKey,
    pub port_name: String,
    /// Sorted by (address, port): every switch programs them in the same order.
    pub destinations: Vec<Destination>,
    /// `sessionAffinity: ClientIP` timeout in seconds.
    pub persistence: Option<i32>,
    /// `externalTrafficPolicy: Local`.
    pub external_traffic_local: bool,
    /// `loadBalancerSourceRanges`, for a LoadBalancer address (empty: everyone; `None`: a
    /// range that did not parse, which nothing matches).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub source_ranges: Vec<Option<ipnet::IpNet>>,
}

/// A backend of a virtual service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Destination {
    pub address: IpAddr,
    pub port: u16,
    /// `ready`, or `terminating` when only serving-terminating endpoints are left (as
    /// kube-proxy falls back to them).
    pub state: DestState,
    /// The scheduler's weight: 1 for an endpoint; with `tunnel` forwarding, the number of
    /// the node's endpoints.
    #[serde(skip_serializing_if = "is_one")]
    pub weight: u32,
}

fn is_one(w: &u32) -> bool {
    *w == 1
}

/// Why a destination is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DestState {
    Ready,
    Terminating,
}

/// What is on the interface after a pass.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Programmed {
    /// Wanted VIPs that are on the interface as kube-gw's.
    pub vips: OrdSet<IpAddr>,
    /// Wanted VIPs present as someone else's address (left alone).
    pub foreign: OrdSet<IpAddr>,
    /// The last failure, if the last pass had one.
    pub error: Option<String>,
    /// Passes made.
    pub passes: u64,
    /// A pass has applied a complete wanted set (`Wanted::Exactly`): what is on the
    /// interface is what the cluster asks for, not just the part listed so far.
    pub complete: bool,
}
