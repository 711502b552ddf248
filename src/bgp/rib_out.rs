//! One neighbor's Adj-RIB-Out: what the neighbor has been sent, and the UPDATEs that each
//! event calls for. Pure — events in, messages out; the session task writes them.
//!
//! | event                      | messages                                                    |
//! |----------------------------|-------------------------------------------------------------|
//! | session up ([`AdjRibOut::up`]) | every exported route the session carries, then End-of-RIB per negotiated family (RFC 4724) once the export is complete |
//! | export complete ([`AdjRibOut::complete`]) | the End-of-RIB markers held back at up |
//! | export changed             | withdrawals of what left, announcements of what is new or whose communities changed |
//! | route refresh (RFC 2918/7313) | that family's routes again, between BoRR and EoRR when enhanced route refresh was negotiated |
//! | drain on / off (RFC 8326)  | everything again with / without GRACEFUL_SHUTDOWN (65535:0) |
//! | close                      | withdrawal of everything sent                               |
//!
//! End-of-RIB tells a peer that keeps our routes from before a restart (RFC 4724) to drop
//! those we did not announce again, so it waits for the first complete export (the
//! pipeline's: a complete cluster view, programmed): a session that comes up earlier sends
//! what there is, then the rest as changes, then End-of-RIB.
//!
//! What a session carries: the exported prefixes of a family that both sides negotiated and
//! for which the session has a next hop (its own IPv4 address; its IPv6 next hops, which also
//! carry IPv4 routes with extended next hop, RFC 8950). IPv6 routes over an IPv4 session are
//! not sent.
//!
//! Memory: the table is not copied. [`Exported`] is one map shared by every session and
//! their status; the Adj-RIB-Out keeps the version it last sent (an `Arc`) and finds what to
//! send next by walking it and the new version in order ([`diff`]): a comparison per route,
//! about a millisecond per 100 000, and nothing when the version is the same.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::fsm::{Families, Negotiated};
use super::peer::ExportPolicy;
use super::update::{self, Attrs};
use super::wire::RouteRefresh;
use crate::model::{Communities, Exported};

/// The GRACEFUL_SHUTDOWN community 65535:0 (RFC 8326).
pub const GRACEFUL_SHUTDOWN: u32 = 0xFFFF_0000;

/// A message for the session to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    /// An UPDATE body (framed by the session).
    Update(Vec<u8>),
    /// A BoRR or EoRR marker.
    RouteRefresh(RouteRefresh),
}

/// The session's own addresses, as next hops (read from the socket and the kernel's
/// address table by the session task).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NextHops {
    /// The session's local IPv4 address (an IPv4 session).
    pub v4: Option<Ipv4Addr>,
    /// The global IPv6 next hop (an IPv6 session), and the link-local one on a shared link.
    pub v6: Option<Ipv6Addr>,
    pub v6_local: Option<Ipv6Addr>,
}

/// The families a session carries routes of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Carries {
    pub ipv4: bool,
    pub ipv6: bool,
}

impl Carries {
    pub fn prefix(&self, p: &IpNet) -> bool {
        match p {
            IpNet::V4(_) => self.ipv4,
            IpNet::V6(_) => self.ipv6,
        }
    }
}

/// What a neighbor has been sent, as `kube-gw bgp routes` lists it: a cheap clone.
#[derive(Debug, Clone, Default)]
pub struct View {
    sent: Exported,
    carries: Carries,
    len: usize,
}

impl View {
    pub fn iter(&self) -> impl Iterator<Item = &IpNet> + '_ {
        self.sent.keys().filter(|p| self.carries.prefix(p))
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The state of an Established session.
#[derive(Debug, Clone)]
struct Up {
    attrs: Attrs,
    carries: Carries,
    families: Families,
    enhanced_route_refresh: bool,
    /// The exported version last sent (unfiltered: `carries` says which of it was).
    sent: Exported,
    len: usize,
    /// End-of-RIB waits for the export to be complete.
    eor_pending: bool,
}

/// One neighbor's Adj-RIB-Out.
#[derive(Debug, Clone)]
pub struct AdjRibOut {
    local_as: u32,
    policy: ExportPolicy,
    draining: bool,
    up: Option<Up>,
}

impl AdjRibOut {
    pub fn new(local_as: u32, policy: ExportPolicy) -> Self {
        Self {
            local_as,
            policy,
            draining: false,
            up: None,
        }
    }

    /// The session is Established: everything it carries, then — if the export is
    /// `complete` — End-of-RIB for each negotiated family.
    pub fn up(
        &mut self,
        n: &Negotiated,
        hops: NextHops,
        exported: &Exported,
        complete: bool,
    ) -> Vec<Out> {
        let ipv4_via_ipv6 = hops.v6.is_some() && n.extended_next_hop && n.families.ipv4;
        let attrs = Attrs {
            local_as: self.local_as,
            external: n.peer_as != self.local_as,
            next_hop_v4: hops.v4,
            next_hop_v6: hops.v6,
            next_hop_v6_local: hops.v6_local,
            ipv4_via_ipv6,
            communities: communities(&self.policy, self.draining),
            large_communities: self.policy.large_communities.clone(),
            med: self.policy.med,
            prepend: self.policy.prepend,
        };
        let carries = Carries {
            ipv4: n.families.ipv4 && (hops.v4.is_some() || (ipv4_via_ipv6 && hops.v6.is_some())),
            ipv6: n.families.ipv6 && hops.v6.is_some(),
        };
        let routes: Vec<(&IpNet, &Option<_>)> =
            exported.iter().filter(|(p, _)| carries.prefix(p)).collect();
        let mut out = pack(routes.iter().copied(), &[], &attrs);
        if complete {
            out.extend(end_of_rib(n.families));
        }
        self.up = Some(Up {
            attrs,
            carries,
            families: n.families,
            enhanced_route_refresh: n.enhanced_route_refresh,
            len: routes.len(),
            sent: exported.clone(),
            eor_pending: !complete,
        });
        out
    }

    /// The export is complete, as of `exported`: what changed since the last send, then
    /// the End-of-RIB markers held back at [`Self::up`] (nothing if they went out already
    /// or the session is down). The routes go first: the session may hear "complete"
    /// before it has read the export that completed it.
    pub fn complete(&mut self, exported: &Exported) -> Vec<Out> {
        if !self.up.as_ref().is_some_and(|u| u.eor_pending) {
            return Vec::new();
        }
        let (mut out, ..) = self.export_changed(exported);
        if let Some(up) = self.up.as_mut() {
            up.eor_pending = false;
            out.extend(end_of_rib(up.families));
        }
        out
    }

    /// The exported set changed: withdraw what left, announce what is new or changed.
    /// Returns the messages and how many routes were announced and withdrawn.
    pub fn export_changed(&mut self, exported: &Exported) -> (Vec<Out>, usize, usize) {
        let Some(up) = self.up.as_mut() else {
            return (Vec::new(), 0, 0);
        };
        let mut announce = Vec::new();
        let mut withdraw = Vec::new();
        let mut added = 0;
        for d in diff(&up.sent, exported) {
            match d {
                Change::Added(p, c) if up.carries.prefix(p) => {
                    added += 1;
                    announce.push((p, c));
                }
                Change::Changed(p, c) if up.carries.prefix(p) => announce.push((p, c)),
                Change::Removed(p) if up.carries.prefix(p) => withdraw.push(*p),
                _ => {}
            }
        }
        let out = pack(announce.iter().copied(), &withdraw, &up.attrs);
        let counts = (announce.len(), withdraw.len());
        up.len = up.len + added - withdraw.len();
        up.sent = exported.clone();
        (out, counts.0, counts.1)
    }

    /// A ROUTE-REFRESH request for `afi`/`safi`: that family's routes again, between BoRR
    /// and EoRR with enhanced route refresh. A family the session does not have is ignored
    /// (RFC 2918 §4). Returns the messages and the number of routes.
    pub fn refresh(&self, afi: u16, safi: u8) -> (Vec<Out>, usize) {
        let Some(up) = &self.up else {
            return (Vec::new(), 0);
        };
        let ipv4 = match (afi, safi) {
            (1, 1) if up.families.ipv4 => true,
            (2, 1) if up.families.ipv6 => false,
            _ => return (Vec::new(), 0),
        };
        let routes: Vec<(&IpNet, &Option<_>)> = up
            .sent
            .iter()
            .filter(|(p, _)| up.carries.prefix(p) && p.addr().is_ipv4() == ipv4)
            .collect();
        let mark = |subtype| Out::RouteRefresh(RouteRefresh { afi, subtype, safi });
        let mut out = Vec::new();
        if up.enhanced_route_refresh {
            out.push(mark(RouteRefresh::BEGIN));
        }
        out.extend(pack(routes.iter().copied(), &[], &up.attrs));
        if up.enhanced_route_refresh {
            out.push(mark(RouteRefresh::END));
        }
        (out, routes.len())
    }

    /// Drain on (RFC 8326: everything again with GRACEFUL_SHUTDOWN, so the peer prefers
    /// the other switches' paths before this one withdraws) or off again.
    pub fn set_draining(&mut self, draining: bool) -> Vec<Out> {
        self.draining = draining;
        let Some(up) = self.up.as_mut() else {
            return Vec::new();
        };
        let c = communities(&self.policy, draining);
        if up.attrs.communities == c {
            return Vec::new();
        }
        up.attrs.communities = c;
        let routes: Vec<(&IpNet, &Option<_>)> = up
            .sent
            .iter()
            .filter(|(p, _)| up.carries.prefix(p))
            .collect();
        pack(routes.iter().copied(), &[], &up.attrs)
    }

    pub fn draining(&self) -> bool {
        self.draining
    }

    /// Withdrawal of everything sent (a deliberate close).
    pub fn withdraw_all(&self) -> Vec<Out> {
        let Some(up) = &self.up else {
            return Vec::new();
        };
        let all: Vec<IpNet> = up
            .sent
            .keys()
            .filter(|p| up.carries.prefix(p))
            .copied()
            .collect();
        pack(std::iter::empty(), &all, &up.attrs)
    }

    /// The session went down: the neighbor has nothing of ours any more.
    pub fn down(&mut self) {
        self.up = None;
    }

    /// Routes sent on the current session.
    pub fn len(&self) -> usize {
        self.up.as_ref().map_or(0, |u| u.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What the neighbor has been sent, for status.
    pub fn view(&self) -> View {
        self.up.as_ref().map_or_else(View::default, |u| View {
            sent: u.sent.clone(),
            carries: u.carries,
            len: u.len,
        })
    }
}

fn end_of_rib(f: Families) -> Vec<Out> {
    let mut out = Vec::new();
    if f.ipv4 {
        out.push(Out::Update(update::end_of_rib_v4()));
    }
    if f.ipv6 {
        out.push(Out::Update(update::end_of_rib_v6()));
    }
    out
}

/// How a route differs between two versions of the exported map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change<'a> {
    Added(&'a IpNet, &'a Option<std::sync::Arc<Communities>>),
    /// Still there, with other communities.
    Changed(&'a IpNet, &'a Option<std::sync::Arc<Communities>>),
    Removed(&'a IpNet),
}

/// What differs from `old` to `new`, in prefix order: both are walked once, side by side
/// (nothing at all when they are the same version).
pub fn diff<'a>(old: &'a Exported, new: &'a Exported) -> Vec<Change<'a>> {
    let mut out = Vec::new();
    if std::sync::Arc::ptr_eq(old, new) {
        return out;
    }
    let (mut a, mut b) = (old.iter().peekable(), new.iter().peekable());
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some((p, _)), None) => {
                out.push(Change::Removed(p));
                a.next();
            }
            (None, Some((p, c))) => {
                out.push(Change::Added(p, c));
                b.next();
            }
            (Some((pa, ca)), Some((pb, cb))) => match pa.cmp(pb) {
                std::cmp::Ordering::Less => {
                    out.push(Change::Removed(pa));
                    a.next();
                }
                std::cmp::Ordering::Greater => {
                    out.push(Change::Added(pb, cb));
                    b.next();
                }
                std::cmp::Ordering::Equal => {
                    if ca != cb {
                        out.push(Change::Changed(pb, cb));
                    }
                    a.next();
                    b.next();
                }
            },
        }
    }
    out
}

/// The communities of every route: the neighbor's, plus GRACEFUL_SHUTDOWN while draining.
fn communities(export: &ExportPolicy, draining: bool) -> Vec<u32> {
    let mut c = export.communities.clone();
    if draining && !c.contains(&GRACEFUL_SHUTDOWN) {
        c.push(GRACEFUL_SHUTDOWN);
    }
    c
}

/// UPDATE bodies withdrawing `withdraw` and announcing `routes`, one attribute set per
/// distinct set of Service communities (added to the neighbor's).
fn pack<'a>(
    routes: impl Iterator<Item = (&'a IpNet, &'a Option<std::sync::Arc<Communities>>)>,
    withdraw: &[IpNet],
    a: &Attrs,
) -> Vec<Out> {
    let mut groups: BTreeMap<Option<&Communities>, Vec<IpNet>> = BTreeMap::new();
    for (p, c) in routes {
        groups.entry(c.as_deref()).or_default().push(*p);
    }
    let mut out = if withdraw.is_empty() {
        Vec::new()
    } else {
        update::pack(&[], withdraw, a)
    };
    for (c, prefixes) in groups {
        let Some(c) = c.filter(|c| !c.is_empty()) else {
            out.extend(update::pack(&prefixes, &[], a));
            continue;
        };
        let mut attrs = a.clone();
        for x in &c.standard {
            if !attrs.communities.contains(x) {
                attrs.communities.push(*x);
            }
        }
        for x in &c.large {
            if !attrs.large_communities.contains(x) {
                attrs.large_communities.push(*x);
            }
        }
        out.extend(update::pack(&prefixes, &[], &attrs));
    }
    out.into_iter().map(Out::Update).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use super::*;
    use crate::bgp::inbound;

    const LOCAL_AS: u32 = 65010;

    fn negotiated(ipv4: bool, ipv6: bool, enhanced: bool) -> Negotiated {
        Negotiated {
            peer_as: 65000,
            peer_id: "192.0.2.1".parse().unwrap(),
            hold_time: 9,
            keepalive: 3,
            families: Families { ipv4, ipv6 },
            four_octet_as: true,
            enhanced_route_refresh: enhanced,
            extended_next_hop: false,
            graceful_restart: false,
            peer_restart_time: None,
            hard_reset: false,
        }
    }

    fn v4_hops() -> NextHops {
        NextHops {
            v4: Some("192.0.2.2".parse().unwrap()),
            ..NextHops::default()
        }
    }

    fn v6_hops() -> NextHops {
        NextHops {
            v6: Some("2001:db8::2".parse().unwrap()),
            v6_local: Some("fe80::2".parse().unwrap()),
            ..NextHops::default()
        }
    }

    /// Standard communities written `ASN:VALUE` or `no-export`.
    fn communities_of(text: &str) -> Communities {
        let mut c = Communities::default();
        for t in text.split(',') {
            c.standard.insert(match t.trim() {
                "no-export" => 0xFFFF_FF01,
                t => {
                    let (a, v) = t.split_once(':').unwrap();
                    a.parse::<u32>().unwrap() << 16 | v.parse::<u32>().unwrap()
                }
            });
        }
        c
    }

    fn exported(routes: &[(&str, Option<&str>)]) -> Exported {
        Arc::new(
            routes
                .iter()
                .map(|(p, c)| {
                    let c = c.map(|c| Arc::new(communities_of(c)));
                    (p.parse::<IpNet>().unwrap(), c)
                })
                .collect(),
        )
    }

    /// `base` with some routes removed and others set.
    fn edit(base: &Exported, remove: &[&str], set: &[(&str, Option<Communities>)]) -> Exported {
        let mut m = (**base).clone();
        for p in remove {
            m.remove(&p.parse::<IpNet>().unwrap());
        }
        for (p, c) in set {
            m.insert(p.parse().unwrap(), c.clone().map(Arc::new));
        }
        Arc::new(m)
    }

    /// What a list of messages does to a peer's table, read back with kube-gw's own
    /// RFC 7606 decoder: (announced, withdrawn, End-of-RIBs, BoRR/EoRR markers).
    #[derive(Debug, Default, PartialEq, Eq)]
    struct Seen {
        announced: BTreeSet<String>,
        withdrawn: BTreeSet<String>,
        end_of_ribs: usize,
        markers: Vec<u8>,
        /// Standard communities of each UPDATE that announces something.
        communities: Vec<Vec<u32>>,
    }

    fn seen(out: &[Out]) -> Seen {
        let ctx = inbound::Context {
            local_as: 65000,
            four_octet: true,
            external: true,
        };
        let mut s = Seen::default();
        for o in out {
            match o {
                Out::RouteRefresh(r) => s.markers.push(r.subtype),
                Out::Update(body) => {
                    let c = inbound::check(body, &ctx).unwrap();
                    assert!(c.problem.is_none(), "{:?}", c.problem);
                    if c.announced.is_empty() && c.withdrawn.is_empty() {
                        s.end_of_ribs += 1;
                    }
                    if !c.announced.is_empty() {
                        s.communities.push(standard_communities(body));
                    }
                    s.announced
                        .extend(c.announced.iter().map(ToString::to_string));
                    s.withdrawn
                        .extend(c.withdrawn.iter().map(ToString::to_string));
                }
            }
        }
        s
    }

    /// The COMMUNITIES attribute (type 8) of an UPDATE body.
    fn standard_communities(body: &[u8]) -> Vec<u32> {
        let wlen = usize::from(u16::from_be_bytes([body[0], body[1]]));
        let at = 2 + wlen;
        let alen = usize::from(u16::from_be_bytes([body[at], body[at + 1]]));
        let mut attrs = &body[at + 2..at + 2 + alen];
        while attrs.len() >= 3 {
            let (flags, kind) = (attrs[0], attrs[1]);
            let (len, head) = if flags & 0x10 != 0 {
                (usize::from(u16::from_be_bytes([attrs[2], attrs[3]])), 4)
            } else {
                (usize::from(attrs[2]), 3)
            };
            let value = &attrs[head..head + len];
            if kind == 8 {
                return value
                    .chunks(4)
                    .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
            }
            attrs = &attrs[head + len..];
        }
        Vec::new()
    }

    fn set(a: &[&str]) -> BTreeSet<String> {
        a.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn session_up_sends_what_the_session_carries_then_end_of_rib_per_family() {
        let all = exported(&[("198.51.100.1/32", None), ("2001:db8:100::1/128", None)]);
        // (case, families, next hops, announced, End-of-RIBs)
        let cases = [
            (
                "IPv4 session, both families",
                (true, true),
                v4_hops(),
                vec!["198.51.100.1/32"],
                2,
            ),
            (
                "IPv6 session, both families",
                (true, true),
                v6_hops(),
                vec!["2001:db8:100::1/128"],
                2,
            ),
            (
                "IPv4 only negotiated",
                (true, false),
                v4_hops(),
                vec!["198.51.100.1/32"],
                1,
            ),
            (
                "IPv6 session, IPv6 not negotiated",
                (true, false),
                v6_hops(),
                vec![],
                1,
            ),
        ];
        for (name, (v4, v6), hops, want, eors) in cases {
            let mut rib = AdjRibOut::new(LOCAL_AS, ExportPolicy::default());
            let s = seen(&rib.up(&negotiated(v4, v6, true), hops, &all, true));
            assert_eq!(s.announced, set(&want), "{name}");
            assert_eq!(s.end_of_ribs, eors, "{name}");
            assert_eq!(rib.len(), want.len(), "{name}");
            assert_eq!(rib.view().iter().count(), want.len(), "{name}");
        }
        // Extended next hop (RFC 8950): IPv4 routes go over the IPv6 session too.
        let mut n = negotiated(true, true, true);
        n.extended_next_hop = true;
        let mut rib = AdjRibOut::new(LOCAL_AS, ExportPolicy::default());
        let s = seen(&rib.up(&n, v6_hops(), &all, true));
        assert_eq!(
            s.announced,
            set(&["198.51.100.1/32", "2001:db8:100::1/128"])
        );
    }

    /// RFC 4724: End-of-RIB only once the export is complete, so that a peer holding our
    /// routes from before a restart does not drop those still to come.
    #[test]
    fn end_of_rib_waits_for_the_complete_export() {
        let partial = exported(&[("198.51.100.1/32", None)]);
        let mut rib = AdjRibOut::new(LOCAL_AS, ExportPolicy::default());
        let s = seen(&rib.up(&negotiated(true, true, true), v4_hops(), &partial, false));
        assert_eq!((s.announced, s.end_of_ribs), (set(&["198.51.100.1/32"]), 0));
        let more = edit(&partial, &[], &[("198.51.100.2/32", None)]);
        let s = seen(&rib.export_changed(&more).0);
        assert_eq!((s.announced, s.end_of_ribs), (set(&["198.51.100.2/32"]), 0));
        // Complete, with a route the session had not read yet: the route, then one
        // End-of-RIB per negotiated family, once.
        let full = edit(&more, &[], &[("198.51.100.3/32", None)]);
        let out = rib.complete(&full);
        let s = seen(&out);
        assert_eq!((s.announced, s.end_of_ribs), (set(&["198.51.100.3/32"]), 2));
        assert!(
            matches!(out.last(), Some(Out::Update(b)) if b.len() < 12),
            "End-of-RIB last"
        );
        assert!(rib.complete(&full).is_empty());
        // A session that comes up after the export was complete sends them at once; a
        // down session sends nothing.
        let mut late = AdjRibOut::new(LOCAL_AS, ExportPolicy::default());
        assert_eq!(
            seen(&late.up(&negotiated(true, false, true), v4_hops(), &full, true)).end_of_ribs,
            1
        );
        assert!(late.complete(&full).is_empty());
        late.down();
        assert!(late.complete(&full).is_empty());
    }

    #[test]
    fn an_export_change_sends_only_the_difference() {
        let mut rib = AdjRibOut::new(LOCAL_AS, ExportPolicy::default());
        let v1 = exported(&[("198.51.100.1/32", None), ("198.51.100.2/32", None)]);
        rib.up(&negotiated(true, true, true), v4_hops(), &v1, true);
        let v2 = edit(
            &v1,
            &["198.51.100.1/32"],
            &[("198.51.100.3/32", None), ("2001:db8:100::9/128", None)],
        );
        let (out, announced, withdrawn) = rib.export_changed(&v2);
        let s = seen(&out);
        assert_eq!(
            s.announced,
            set(&["198.51.100.3/32"]),
            "IPv6 is not carried on this session"
        );
        assert_eq!(s.withdrawn, set(&["198.51.100.1/32"]));
        assert_eq!((announced, withdrawn, rib.len()), (1, 1, 2));
        // Communities of a route change: announced again with them.
        let v3 = edit(
            &v2,
            &[],
            &[("198.51.100.2/32", Some(communities_of("65010:7")))],
        );
        let (out, ..) = rib.export_changed(&v3);
        let s = seen(&out);
        assert_eq!(s.announced, set(&["198.51.100.2/32"]));
        assert_eq!(s.communities, vec![vec![65010 << 16 | 7]]);
        assert_eq!(rib.len(), 2);
        // Nothing changed: nothing sent.
        assert!(rib.export_changed(&v3).0.is_empty());
        // Down: nothing is sent, and nothing is counted.
        rib.down();
        assert!(rib.export_changed(&v1).0.is_empty());
        assert_eq!(rib.len(), 0);
    }

    #[test]
    fn a_route_refresh_gets_only_its_family_between_borr_and_eorr() {
        let all = exported(&[("198.51.100.1/32", None), ("2001:db8:100::1/128", None)]);
        let mut n = negotiated(true, true, true);
        n.extended_next_hop = true;
        let mut rib = AdjRibOut::new(LOCAL_AS, ExportPolicy::default());
        rib.up(&n, v6_hops(), &all, true);
        let (out, count) = rib.refresh(1, 1);
        let s = seen(&out);
        assert_eq!(s.announced, set(&["198.51.100.1/32"]));
        assert_eq!(
            (s.markers.clone(), count),
            (vec![RouteRefresh::BEGIN, RouteRefresh::END], 1)
        );
        let s = seen(&rib.refresh(2, 1).0);
        assert_eq!(s.announced, set(&["2001:db8:100::1/128"]));
        // Without enhanced route refresh: no markers.
        let mut rib = AdjRibOut::new(LOCAL_AS, ExportPolicy::default());
        rib.up(&negotiated(true, true, false), v4_hops(), &all, true);
        let s = seen(&rib.refresh(1, 1).0);
        assert_eq!(
            (s.announced, s.markers),
            (set(&["198.51.100.1/32"]), vec![])
        );
        // A family the session does not have, or another SAFI: ignored.
        let mut rib = AdjRibOut::new(LOCAL_AS, ExportPolicy::default());
        rib.up(&negotiated(true, false, true), v4_hops(), &all, true);
        assert!(rib.refresh(2, 1).0.is_empty());
        assert!(rib.refresh(1, 128).0.is_empty());
    }

    #[test]
    fn a_drain_announces_everything_again_with_graceful_shutdown_and_undrain_without() {
        let policy = ExportPolicy {
            communities: vec![65010 << 16 | 100],
            ..ExportPolicy::default()
        };
        let all = exported(&[
            ("198.51.100.1/32", None),
            ("198.51.100.2/32", Some("no-export")),
        ]);
        let mut rib = AdjRibOut::new(LOCAL_AS, policy);
        rib.up(&negotiated(true, false, true), v4_hops(), &all, true);
        let s = seen(&rib.set_draining(true));
        assert_eq!(s.announced, set(&["198.51.100.1/32", "198.51.100.2/32"]));
        assert!(
            s.communities
                .iter()
                .all(|c| c.contains(&GRACEFUL_SHUTDOWN) && c.contains(&(65010 << 16 | 100))),
            "{:?}",
            s.communities
        );
        // Already draining: nothing again.
        assert!(rib.set_draining(true).is_empty());
        let s = seen(&rib.set_draining(false));
        assert_eq!(s.announced.len(), 2);
        assert!(s
            .communities
            .iter()
            .all(|c| !c.contains(&GRACEFUL_SHUTDOWN)));
        // A session that comes up while draining starts with it.
        rib.set_draining(true);
        rib.down();
        let s = seen(&rib.up(&negotiated(true, false, true), v4_hops(), &all, true));
        assert!(s.communities.iter().all(|c| c.contains(&GRACEFUL_SHUTDOWN)));
    }

    #[test]
    fn a_close_withdraws_everything_sent() {
        let all = exported(&[("198.51.100.1/32", None), ("2001:db8:100::1/128", None)]);
        let mut rib = AdjRibOut::new(LOCAL_AS, ExportPolicy::default());
        assert!(
            rib.withdraw_all().is_empty(),
            "nothing sent, nothing to withdraw"
        );
        rib.up(&negotiated(true, true, true), v4_hops(), &all, true);
        let s = seen(&rib.withdraw_all());
        assert_eq!(s.withdrawn, set(&["198.51.100.1/32"]));
        assert!(s.announced.is_empty());
    }

    #[test]
    fn the_diff_walks_both_versions_in_order() {
        let old = exported(&[
            ("10.0.0.1/32", None),
            ("10.0.0.2/32", None),
            ("10.0.0.4/32", None),
        ]);
        let new = edit(
            &old,
            &["10.0.0.1/32", "10.0.0.4/32"],
            &[
                ("10.0.0.3/32", None),
                ("10.0.0.2/32", Some(communities_of("65010:1"))),
                ("10.0.0.5/32", None),
            ],
        );
        let d: Vec<String> = diff(&old, &new)
            .into_iter()
            .map(|c| match c {
                Change::Added(p, _) => format!("+{p}"),
                Change::Changed(p, _) => format!("~{p}"),
                Change::Removed(p) => format!("-{p}"),
            })
            .collect();
        assert_eq!(
            d,
            [
                "-10.0.0.1/32",
                "~10.0.0.2/32",
                "+10.0.0.3/32",
                "-10.0.0.4/32",
                "+10.0.0.5/32"
            ]
        );
        assert!(diff(&new, &new).is_empty());
        assert!(
            diff(&new, &Arc::new((*new).clone())).is_empty(),
            "equal contents"
        );
    }
}
