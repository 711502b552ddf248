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
