//! What the BGP speaker is given to announce: the exported prefixes, each with the
//! communities its Services ask for. Produced by the pipeline's export gate, read by every
//! session; shared, never copied per session.

use std::collections::BTreeSet;
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
/// A persistent map: one for all sessions, cloned in O(1). The export gate applies each
/// change to the previous version, so versions share structure and a session finds what to
/// send by diffing the version it last sent against the new one, in O(change).
pub type Exported = imbl::OrdMap<IpNet, Option<Arc<Communities>>>;
