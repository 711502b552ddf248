//! One neighbor's Adj-RIB-In: the routes it announces on the current session (prefix → the
//! path attributes import reads), kept after the RFC 7606 checks ([`super::inbound`]),
//! counted and shown. What of it reaches the kernel is the FIB's decision (`crate::fib`:
//! the neighbor's `import` filter, default deny). Pure: checked UPDATEs in, the outcome out.
//!
//! Max-prefix (RFC 4486): a neighbor with `max-prefixes` that announces more gets Cease /
//! Maximum Number of Prefixes Reached (data: AFI, SAFI, the limit), and the session task
//! holds the session down for [`MAX_PREFIX_HOLD_DOWN`].
//!
//! The table is a persistent set: a snapshot for status is an O(1) clone, not a copy per
//! UPDATE.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use imbl::OrdMap;
use ipnet::IpNet;

use super::inbound::{Attrs, Checked, Problem};
use super::wire::{Code, Notification};

/// How long a session closed for too many prefixes stays down.
pub const MAX_PREFIX_HOLD_DOWN: Duration = Duration::from_secs(60);

/// The routes a neighbor has announced.
#[derive(Debug, Clone, Default)]
pub struct AdjRibIn {
    routes: Table,
    max_prefixes: Option<u32>,
    /// End-of-RIB received on this session, per AFI (IPv4, IPv6).
    end_of_rib: [bool; 2],
}

/// A neighbor's routes: prefix → path (an O(1) clone).
pub type Table = OrdMap<IpNet, Arc<Path>>;

/// What a received route carries that the FIB needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    /// The next hop: NEXT_HOP, or MP_REACH_NLRI's global address.
    pub next_hop: IpAddr,
    /// MP_REACH_NLRI's link-local next hop, when it carries one.
    pub link_local: Option<Ipv6Addr>,
    pub as_path_len: u32,
    /// LOCAL_PREF (100 when the neighbor sent none, as for external peers).
    pub local_pref: u32,
    /// Marked LLGR_STALE by the neighbor.
    pub llgr_stale: bool,
}

impl Path {
    fn from_attrs(a: &Attrs, next_hop: Option<(IpAddr, Option<Ipv6Addr>)>) -> Option<Self> {
        let (next_hop, link_local) = next_hop?;
        Some(Self {
            next_hop,
            link_local,
            as_path_len: a.as_path_len,
            local_pref: a.local_pref.unwrap_or(100),
            llgr_stale: a.llgr_stale,
        })
    }
}

/// What one UPDATE did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// What was wrong with it without costing the session (for the log and status).
    pub problem: Option<Problem>,
    /// The neighbor is over its `max-prefixes`: send this and close.
    pub over_limit: Option<(Notification, String)>,
}

impl AdjRibIn {
    pub fn new(max_prefixes: Option<u32>) -> Self {
        Self {
            routes: OrdMap::new(),
            max_prefixes,
            end_of_rib: [false; 2],
        }
    }

    /// Applies a checked UPDATE: withdrawals first, then announcements.
    pub fn apply(&mut self, c: Checked) -> Applied {
        if let Some(afi @ 1..=2) = c.end_of_rib {
            self.end_of_rib[usize::from(afi - 1)] = true;
        }
        for p in &c.withdrawn {
            self.routes.remove(p);
        }
        let last_family = c.announced.last().copied();
        let classic =
            Path::from_attrs(&c.attrs, c.attrs.next_hop.map(|a| (a.into(), None))).map(Arc::new);
        let mp = Path::from_attrs(&c.attrs, c.attrs.mp_next_hop).map(Arc::new);
        for (i, p) in c.announced.into_iter().enumerate() {
            let path = if i < c.classic { &classic } else { &mp };
            // Announced with no usable next hop (a family we do not read): not a route.
            match path {
                Some(path) => self.routes.insert(p, path.clone()),
                None => self.routes.remove(&p),
            };
        }
        let over_limit = self.max_prefixes.and_then(|limit| {
            if self.routes.len() <= limit as usize {
                return None;
            }
            // RFC 4486: AFI, SAFI and the limit.
            let afi: u16 = match last_family {
                Some(IpNet::V6(_)) => 2,
                _ => 1,
            };
            let mut data = afi.to_be_bytes().to_vec();
            data.push(1);
            data.extend_from_slice(&limit.to_be_bytes());
            let msg = format!(
                "{} prefixes received, more than max-prefixes {limit}; the session stays down for {}s",
                self.routes.len(),
                MAX_PREFIX_HOLD_DOWN.as_secs()
            );
            Some((Notification::new(Code::Cease, 1, data), msg))
        });
        Applied {
            // Our own routes echoed back (an AS-path loop) are routine in eBGP: the routes
            // are not accepted, and it is no error to report.
            problem: c.problem.filter(|p| *p != Problem::AsPathLoop),
            over_limit,
        }
    }

    /// The session went down: the neighbor's routes go with it.
    pub fn clear(&mut self) {
        self.routes = OrdMap::new();
        self.end_of_rib = [false; 2];
    }

    /// End-of-RIB received on this session for (IPv4, IPv6).
    pub fn end_of_rib(&self) -> [bool; 2] {
        self.end_of_rib
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The table as it is now (an O(1) clone).
    pub fn snapshot(&self) -> Table {
        self.routes.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(a: &[&str]) -> Vec<IpNet> {
        a.iter().map(|p| p.parse().unwrap()).collect()
    }

    fn update(announced: &[&str], withdrawn: &[&str]) -> Checked {
        let announced = nets(announced);
        Checked {
            classic: announced.len(),
            announced,
            withdrawn: nets(withdrawn),
            attrs: Attrs {
                next_hop: Some("192.0.2.1".parse().unwrap()),
                as_path_len: 1,
                ..Attrs::default()
            },
            ..Checked::default()
        }
    }

    #[test]
    fn announcements_and_withdrawals_keep_the_table() {
        let mut rib = AdjRibIn::new(None);
        rib.apply(update(&["192.0.2.0/24", "2001:db8::/48"], &[]));
        let before = rib.snapshot();
        rib.apply(update(&["198.51.100.0/24"], &["192.0.2.0/24"]));
        let now: Vec<String> = rib.snapshot().keys().map(ToString::to_string).collect();
        assert_eq!(
            rib.snapshot()[&"2001:db8::/48".parse::<IpNet>().unwrap()].next_hop,
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(now, ["198.51.100.0/24", "2001:db8::/48"]);
        assert_eq!(before.len(), 2, "a snapshot does not move with the table");
        rib.clear();
        assert!(rib.is_empty());
    }

    #[test]
    fn more_prefixes_than_allowed_is_cease_1_with_afi_safi_and_the_limit() {
        let mut rib = AdjRibIn::new(Some(2));
        assert_eq!(
            rib.apply(update(&["192.0.2.0/24", "192.0.2.1/32"], &[]))
                .over_limit,
            None
        );
        // Replacing one is not more.
        let a = rib.apply(update(&["192.0.2.2/32"], &["192.0.2.1/32"]));
        assert_eq!(a.over_limit, None);
        let a = rib.apply(update(&["2001:db8::/48"], &[]));
        let (n, msg) = a.over_limit.unwrap();
        assert_eq!(n.body(), vec![6, 1, 0, 2, 1, 0, 0, 0, 2]);
        assert!(
            msg.starts_with("3 prefixes received, more than max-prefixes 2"),
            "{msg}"
        );
    }

    #[test]
    fn a_problem_is_passed_on_but_a_loop_is_none() {
        let mut rib = AdjRibIn::new(None);
        let why = Problem::TreatAsWithdraw("malformed ORIGIN".into());
        let c = Checked {
            problem: Some(why.clone()),
            ..update(&[], &["192.0.2.0/24"])
        };
        assert_eq!(rib.apply(c).problem, Some(why));
        let c = Checked {
            problem: Some(Problem::AsPathLoop),
            ..update(&[], &["192.0.2.0/24"])
        };
        assert_eq!(rib.apply(c).problem, None);
    }
}
