//! What the BGP speaker is given to announce: the exported prefixes, each with the
//! communities its Services ask for. Produced by the pipeline's export gate, read by every
//! session; shared, never copied per session.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use ipnet::IpNet;
use serde::Serialize;

/// BGP communities a VIP's routes carry (the union over the Services served on it), on top
/// of each neighbor's own.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Communities {
    pub standard: BTreeSet<u32>,
    pub large: BTreeSet<(u32, u32, u32)>,
}

impl Communities {
    pub fn is_empty(&self) -> bool {
        self.standard.is_empty() && self.large.is_empty()
    }

    /// Adds `other`'s communities.
    pub fn extend(&mut self, other: Communities) {
        self.standard.extend(other.standard);
        self.large.extend(other.large);
    }
}

/// What may be announced: every exported prefix with its Services' communities (`None`: no
/// communities of its own, the common case, which costs no allocation).
///
/// One map for all sessions and their status, shared behind an `Arc` and never copied:
/// the export gate builds a new version when something changes (from sorted input, so its
/// nodes are full: about 36 bytes a route), and each session keeps the version it last
/// sent and finds what to send next by walking both in order.
pub type Exported = Arc<BTreeMap<IpNet, Option<Arc<Communities>>>>;

/// One next hop of an installed route: a gateway, and the interface when the gateway is
/// link-local (or the route is IPv4 over an IPv6 next hop on an unnumbered link).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct NextHop {
    pub gateway: std::net::IpAddr,
    pub interface: Option<String>,
}

/// The routes kube-gw installs into the kernel (placement (a)): prefix → its next hops,
/// sorted (ECMP when more than one). Built by the BGP Loc-RIB, read by the FIB installer.
pub type Installed = imbl::OrdMap<IpNet, Arc<[NextHop]>>;

/// What the FIB installer is given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FibWant {
    pub routes: Installed,
    /// Every importing neighbor has sent its End-of-RIB (or the restart time passed since
    /// the start): routes found from before the start that are not wanted may go.
    pub synced: bool,
}
