//! The Loc-RIB of placement (a), where kube-gw is the switch's only BGP speaker: which of
//! the neighbors' routes the kernel gets, with which next hops. Pure: the neighbors'
//! statuses (their Adj-RIB-In, End-of-RIB, how their last session ended) and the clock in,
//! a [`FibWant`] out; the FIB installer (`crate::fib`) carries it out.
//!
//! - **Import** is deny-all: a route is a candidate only when it matches one of its
//!   neighbor's `import` prefix filters.
//! - **Selection** per prefix (RFC 4271 §9.1.2.2, reduced to what a fabric uses): a path
//!   marked LLGR_STALE only when there is no other (RFC 9494), then the highest LOCAL_PREF,
//!   then the shortest AS_PATH; every path equal on those is installed as one ECMP route
//!   (multipath across neighbors and AS numbers, as `bestpath as-path multipath-relax`).
//! - **Graceful restart, the helper** (RFC 4724 §4.2): when a neighbor that sent the
//!   capability loses its session the way a restarting speaker does (the connection ends,
//!   the hold timer expires; [`super::fsm::Fsm::retained`]), its routes stay, stale, for
//!   its restart time; its new session replaces them and, at its End-of-RIB for every
//!   family, the stale ones it did not announce again go. A session that ends otherwise
//!   (a NOTIFICATION, BFD, a stop) takes its routes at once: a dead path is not a restart.
//! - **Our own restart**: routes installed before the start are the kernel's to keep until
//!   every importing neighbor has sent End-of-RIB, or the restart time has passed
//!   ([`FibWant::synced`]); only then does the installer remove the ones nobody announces.
//!
//! The whole Loc-RIB is computed again on each change: the routes a fabric switch imports
//! (defaults, aggregates, the fabric's loopbacks) number in the hundreds, not a full table.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::rib_in::{Path, Table};
use super::status::NeighborStatus;
use crate::config::PrefixFilter;
use crate::model::{FibWant, Installed, NextHop};

/// What a neighbor's routes need besides themselves.
#[derive(Debug, Clone, Default)]
pub struct Import {
    /// Its `import` filters (empty: nothing of it is installed).
    pub filters: Vec<PrefixFilter>,
    /// The interface of a link-local neighbor (the interface of its link-local next hops).
    pub interface: Option<String>,
}

#[derive(Debug, Clone, Default)]
struct Neighbor {
    import: Import,
    /// The current session's routes.
    table: Table,
    /// A lost session's routes, kept until the deadline or the new session's End-of-RIB.
    stale: Option<(Table, Instant)>,
    up_since: Option<Instant>,
    /// It has sent End-of-RIB for every family of a session since the start.
    synced: bool,
}

/// The neighbors' routes as the kernel should have them.
#[derive(Debug, Clone)]
pub struct LocRib {
    neighbors: Vec<Neighbor>,
    /// After this, routes from before the start may go whatever the neighbors said.
    sync_deadline: Instant,
}

impl LocRib {
    /// `imports` in the order of the statuses; `sync_after` is how long routes from before
    /// the start are kept at most (the restart time).
    pub fn new(imports: Vec<Import>, now: Instant, sync_after: Duration) -> Self {
        Self {
            neighbors: imports
                .into_iter()
                .map(|import| Neighbor {
                    import,
                    ..Neighbor::default()
                })
                .collect(),
            sync_deadline: now + sync_after,
        }
    }

    /// Neighbor `i`'s status changed.
    pub fn observe(&mut self, i: usize, s: &NeighborStatus, now: Instant) {
        let Some(n) = self.neighbors.get_mut(i) else {
            return;
        };
        match (n.up_since, s.up_since) {
            // Down (or still down): a session that was up ends here.
            (was, None) => {
                if was.is_some() {
                    let kept = std::mem::take(&mut n.table);
                    n.stale = s
                        .retained
                        .filter(|t| *t > 0)
                        .map(|t| (merge(kept, n.stale.take()), now + secs(t)));
                }
                n.up_since = None;
            }
            (_, Some(up)) => {
                n.up_since = Some(up);
                n.table = s.adj_rib_in.clone();
                let done = s
                    .families
                    .iter()
                    .zip(s.end_of_rib)
                    .all(|(f, eor)| !f || eor);
                if done {
                    n.stale = None;
                    n.synced = true;
                }
            }
        }
    }

    /// Drops stale routes whose restart time has passed.
    pub fn expire(&mut self, now: Instant) {
        for n in &mut self.neighbors {
            if n.stale.as_ref().is_some_and(|(_, until)| *until <= now) {
                n.stale = None;
            }
        }
    }

    /// When [`LocRib::expire`] or [`LocRib::want`] next has something to do.
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let stale = self
            .neighbors
            .iter()
            .filter_map(|n| n.stale.as_ref().map(|s| s.1));
        let sync = (self.sync_deadline > now).then_some(self.sync_deadline);
        stale.chain(sync).min()
    }

    /// What the kernel should have now.
    pub fn want(&self, now: Instant) -> FibWant {
        // Per prefix: the best rank so far and its next hops.
        let mut best: BTreeMap<ipnet::IpNet, (Rank, Vec<NextHop>)> = BTreeMap::new();
        let importing = || {
            self.neighbors
                .iter()
                .filter(|n| !n.import.filters.is_empty())
        };
        for n in importing() {
            let stale = n.stale.as_ref().map(|(t, _)| t);
            let current = n.table.iter();
            let kept = stale
                .into_iter()
                .flat_map(|t| t.iter())
                .filter(|(p, _)| !n.table.contains_key(*p));
            for (prefix, path) in current.chain(kept) {
                if !n.import.filters.iter().any(|f| f.matches(prefix)) {
                    continue;
                }
                let Some(hop) = next_hop(path, n.import.interface.as_deref()) else {
                    continue;
                };
                let rank = Rank::of(path);
                let e = best.entry(*prefix).or_insert_with(|| (rank, Vec::new()));
                if rank > e.0 {
                    *e = (rank, Vec::new());
                }
                if rank == e.0 && !e.1.contains(&hop) {
                    e.1.push(hop);
                }
            }
        }
        let routes: Installed = best
            .into_iter()
            .map(|(p, (_, mut hops))| {
                hops.sort();
                (p, Arc::from(hops))
            })
            .collect();
        FibWant {
            routes,
            synced: now >= self.sync_deadline || importing().all(|n| n.synced),
        }
    }
}

/// Best-path order: higher is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    not_llgr_stale: bool,
    local_pref: u32,
    shorter_path: std::cmp::Reverse<u32>,
}

impl Rank {
    fn of(p: &Path) -> Self {
        Self {
            not_llgr_stale: !p.llgr_stale,
            local_pref: p.local_pref,
            shorter_path: std::cmp::Reverse(p.as_path_len),
        }
    }
}

/// The kernel next hop of a path: the link-local one with the neighbor's interface when
/// there is one (as FRR does for a directly connected peer), else the global one; a
/// link-local address without an interface to reach it on is no next hop.
fn next_hop(p: &Path, interface: Option<&str>) -> Option<NextHop> {
    let on_link = |a: IpAddr| NextHop {
        gateway: a,
        interface: interface.map(str::to_string),
    };
    match (p.link_local, interface, p.next_hop) {
        (Some(ll), Some(_), _) => Some(on_link(IpAddr::V6(ll))),
        (_, None, IpAddr::V6(a)) if crate::link::is_link_local(&a) => None,
        (_, Some(_), IpAddr::V6(a)) if crate::link::is_link_local(&a) => Some(on_link(a.into())),
        (_, _, a) => Some(NextHop {
            gateway: a,
            interface: None,
        }),
    }
}

/// The routes of a lost session on top of those still stale from an earlier one.
fn merge(kept: Table, earlier: Option<(Table, Instant)>) -> Table {
    match earlier {
        Some((old, _)) => kept.union(old),
        None => kept,
    }
}

fn secs(t: u16) -> Duration {
    Duration::from_secs(u64::from(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filters(f: &[&str]) -> Vec<PrefixFilter> {
        f.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn path(nh: &str, local_pref: u32, len: u32) -> Arc<Path> {
        Arc::new(Path {
            next_hop: nh.parse().unwrap(),
            link_local: None,
            as_path_len: len,
            local_pref,
            llgr_stale: false,
        })
    }

    fn status(up: Option<Instant>, routes: &[(&str, Arc<Path>)], eor: bool) -> NeighborStatus {
        let mut s = NeighborStatus::new("192.0.2.1".parse().unwrap(), None);
        s.up_since = up;
        s.families = [true, false];
        s.end_of_rib = [eor, false];
        s.adj_rib_in = routes
            .iter()
            .map(|(p, a)| (p.parse::<ipnet::IpNet>().unwrap(), a.clone()))
            .collect();
        s
    }

    fn hops(w: &FibWant, p: &str) -> Vec<String> {
        w.routes
            .get(&p.parse::<ipnet::IpNet>().unwrap())
            .map(|h| h.iter().map(|h| h.gateway.to_string()).collect())
            .unwrap_or_default()
    }

    fn two_upstreams() -> (LocRib, Instant) {
        let t0 = Instant::now();
        let imp = Import {
            filters: filters(&["0.0.0.0/0", "203.0.113.0/24 le 32"]),
            interface: None,
        };
        (
            LocRib::new(vec![imp.clone(), imp], t0, Duration::from_secs(120)),
            t0,
        )
    }

    #[test]
    fn equal_paths_from_two_neighbors_are_one_ecmp_route_and_filters_keep_the_rest_out() {
        let (mut rib, t0) = two_upstreams();
        let a = path("192.0.2.1", 100, 1);
        let b = path("192.0.2.5", 100, 1);
        rib.observe(
            0,
            &status(
                Some(t0),
                &[("0.0.0.0/0", a.clone()), ("10.0.0.0/8", a)],
                true,
            ),
            t0,
        );
        rib.observe(1, &status(Some(t0), &[("0.0.0.0/0", b)], true), t0);
        let w = rib.want(t0);
        assert_eq!(hops(&w, "0.0.0.0/0"), ["192.0.2.1", "192.0.2.5"]);
        assert!(hops(&w, "10.0.0.0/8").is_empty(), "not imported");
        assert!(w.synced, "both sent End-of-RIB");
    }

    #[test]
    fn a_better_path_wins_and_llgr_stale_only_when_alone() {
        let (mut rib, t0) = two_upstreams();
        rib.observe(
            0,
            &status(
                Some(t0),
                &[("203.0.113.0/24", path("192.0.2.1", 100, 1))],
                false,
            ),
            t0,
        );
        rib.observe(
            1,
            &status(
                Some(t0),
                &[("203.0.113.0/24", path("192.0.2.5", 100, 3))],
                false,
            ),
            t0,
        );
        assert_eq!(hops(&rib.want(t0), "203.0.113.0/24"), ["192.0.2.1"]);
        let mut stale = (*path("192.0.2.1", 200, 1)).clone();
        stale.llgr_stale = true;
        rib.observe(
            0,
            &status(Some(t0), &[("203.0.113.0/24", Arc::new(stale))], false),
            t0,
        );
        assert_eq!(hops(&rib.want(t0), "203.0.113.0/24"), ["192.0.2.5"]);
        assert!(!rib.want(t0).synced, "no End-of-RIB yet");
        assert!(
            rib.want(t0 + Duration::from_secs(120)).synced,
            "the restart time passed"
        );
    }

    #[test]
    fn a_restarting_neighbor_s_routes_stay_until_its_end_of_rib_or_its_restart_time() {
        let (mut rib, t0) = two_upstreams();
        let a = path("192.0.2.1", 100, 1);
        rib.observe(
            0,
            &status(
                Some(t0),
                &[("0.0.0.0/0", a.clone()), ("203.0.113.9/32", a.clone())],
                true,
            ),
            t0,
        );
        // Lost the way a restart loses it, with a restart time of 30 s: kept.
        let mut down = status(None, &[], false);
        down.retained = Some(30);
        let t1 = t0 + Duration::from_secs(1);
        rib.observe(0, &down, t1);
        assert_eq!(hops(&rib.want(t1), "0.0.0.0/0"), ["192.0.2.1"]);
        assert_eq!(rib.next_deadline(t1), Some(t1 + Duration::from_secs(30)));
        // Back, announcing the default only: both stay until End-of-RIB...
        let t2 = t1 + Duration::from_secs(5);
        rib.observe(0, &status(Some(t2), &[("0.0.0.0/0", a.clone())], false), t2);
        assert_eq!(hops(&rib.want(t2), "203.0.113.9/32"), ["192.0.2.1"]);
        // ...which sweeps the one not announced again.
        rib.observe(0, &status(Some(t2), &[("0.0.0.0/0", a.clone())], true), t2);
        let w = rib.want(t2);
        assert_eq!(hops(&w, "0.0.0.0/0"), ["192.0.2.1"]);
        assert!(hops(&w, "203.0.113.9/32").is_empty());
        // Lost again and not back within the restart time: gone.
        rib.observe(0, &down, t2);
        rib.expire(t2 + Duration::from_secs(30));
        assert!(rib.want(t2 + Duration::from_secs(30)).routes.is_empty());
    }

    #[test]
    fn a_session_that_ends_otherwise_takes_its_routes_at_once() {
        let (mut rib, t0) = two_upstreams();
        rib.observe(
            0,
            &status(Some(t0), &[("0.0.0.0/0", path("192.0.2.1", 100, 1))], true),
            t0,
        );
        rib.observe(
            1,
            &status(Some(t0), &[("0.0.0.0/0", path("192.0.2.5", 100, 1))], true),
            t0,
        );
        // BFD, a NOTIFICATION: `retained` is None.
        rib.observe(0, &status(None, &[], false), t0);
        assert_eq!(hops(&rib.want(t0), "0.0.0.0/0"), ["192.0.2.5"]);
    }

    #[test]
    fn link_local_next_hops_take_the_neighbor_s_interface() {
        let p = Path {
            next_hop: "2001:db8::1".parse().unwrap(),
            link_local: Some("fe80::1".parse().unwrap()),
            as_path_len: 1,
            local_pref: 100,
            llgr_stale: false,
        };
        let h = next_hop(&p, Some("swp1")).unwrap();
        assert_eq!(
            (h.gateway.to_string(), h.interface.as_deref()),
            ("fe80::1".into(), Some("swp1"))
        );
        assert_eq!(
            next_hop(&p, None).unwrap().gateway.to_string(),
            "2001:db8::1"
        );
        let bare = Path {
            next_hop: "fe80::1".parse().unwrap(),
            link_local: None,
            ..p
        };
        assert_eq!(next_hop(&bare, None), None);
    }
}
