//! One neighbor's Adj-RIB-In: the prefixes it announces on the current session, kept after
//! the RFC 7606 checks ([`super::inbound`]), counted, shown — and never installed (import is
//! deny-all). Pure: checked UPDATEs in, the outcome out.
//!
//! Max-prefix (RFC 4486): a neighbor with `max-prefixes` that announces more gets Cease /
//! Maximum Number of Prefixes Reached (data: AFI, SAFI, the limit), and the session task
//! holds the session down for [`MAX_PREFIX_HOLD_DOWN`].
//!
//! The table is a persistent set: a snapshot for status is an O(1) clone, not a copy per
//! UPDATE.

use std::time::Duration;

use imbl::OrdSet;
use ipnet::IpNet;

use super::inbound::{Checked, Problem};
use super::wire::{Code, Notification};

/// How long a session closed for too many prefixes stays down.
pub const MAX_PREFIX_HOLD_DOWN: Duration = Duration::from_secs(60);

/// The routes a neighbor has announced.
#[derive(Debug, Clone, Default)]
pub struct AdjRibIn {
    routes: OrdSet<IpNet>,
    max_prefixes: Option<u32>,
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
            routes: OrdSet::new(),
            max_prefixes,
        }
    }

    /// Applies a checked UPDATE: withdrawals first, then announcements.
    pub fn apply(&mut self, c: Checked) -> Applied {
        for p in &c.withdrawn {
            self.routes.remove(p);
        }
        let last_family = c.announced.last().copied();
        for p in c.announced {
            self.routes.insert(p);
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
            problem: c.problem,
            over_limit,
        }
    }

    /// The session went down: the neighbor's routes go with it.
    pub fn clear(&mut self) {
        self.routes = OrdSet::new();
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The table as it is now (an O(1) clone).
    pub fn snapshot(&self) -> OrdSet<IpNet> {
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
        Checked {
            announced: nets(announced),
            withdrawn: nets(withdrawn),
            problem: None,
        }
    }

    #[test]
    fn announcements_and_withdrawals_keep_the_table() {
        let mut rib = AdjRibIn::new(None);
        rib.apply(update(&["192.0.2.0/24", "2001:db8::/48"], &[]));
        let before = rib.snapshot();
        rib.apply(update(&["198.51.100.0/24"], &["192.0.2.0/24"]));
        let now: Vec<String> = rib.snapshot().iter().map(ToString::to_string).collect();
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
    fn a_problem_is_passed_on() {
        let mut rib = AdjRibIn::new(None);
        let c = Checked {
            problem: Some(Problem::AsPathLoop),
            ..update(&[], &["192.0.2.0/24"])
        };
        assert_eq!(rib.apply(c).problem, Some(Problem::AsPathLoop));
    }
}
