//! UPDATE messages kube-gw sends: announcements and withdrawals of host routes (/32, /128)
//! packed into as few messages as fit in 4096 bytes, and End-of-RIB markers (RFC 4724).
//! Bytes through `netgauze-bgp-pkt`; its types stay in this file.
//!
//! IPv4 routes travel in the classic fields (NLRI, withdrawn routes, NEXT_HOP); IPv6 routes
//! in MP_REACH_NLRI / MP_UNREACH_NLRI (RFC 4760) with a global and, when known, a link-local
//! next hop. On an IPv6 session with extended next hop (RFC 8950), IPv4 routes travel in
//! MP_REACH_NLRI / MP_UNREACH_NLRI too, with the IPv6 next hops. Attributes: ORIGIN IGP,
//! AS_PATH (our AS for external peers, empty for internal ones, 4-octet), LOCAL_PREF 100 for
//! internal peers (RFC 4271 §5.1.5: every UPDATE to an internal peer carries it; FRR treats
//! one without it as a withdrawal), and the communities given.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use netgauze_bgp_pkt::community::{Community, LargeCommunity};
use netgauze_bgp_pkt::nlri::{Ipv4Unicast, Ipv4UnicastAddress, Ipv6Unicast, Ipv6UnicastAddress};
use netgauze_bgp_pkt::path_attribute::{
    As4PathSegment, AsPath, AsPathSegmentType, Communities, LargeCommunities, LocalPreference,
    MpReach, MpUnreach, MultiExitDiscriminator, NextHop, Origin, PathAttribute, PathAttributeValue,
};
use netgauze_bgp_pkt::update::BgpUpdateMessage;
use netgauze_parse_utils::WritablePdu;

use super::wire::{HEADER_LEN, MAX_LEN};

/// LOCAL_PREF on routes to internal peers: the usual default, so kube-gw's routes compete
/// with the switch's others on equal terms.
pub const LOCAL_PREF: u32 = 100;

/// The most an UPDATE body may take.
const MAX_BODY: usize = MAX_LEN - HEADER_LEN;

/// What every announcement to one peer carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attrs {
    pub local_as: u32,
    /// External peer: prepend our AS.
    pub external: bool,
    /// Our address on the session (next hop self) for IPv4 routes.
    pub next_hop_v4: Option<Ipv4Addr>,
    /// Our global address for IPv6 routes, and the link-local one when on a shared link.
    pub next_hop_v6: Option<Ipv6Addr>,
    pub next_hop_v6_local: Option<Ipv6Addr>,
    /// RFC 8950: IPv4 routes with the IPv6 next hops (no IPv4 next hop on this session).
    pub ipv4_via_ipv6: bool,
    /// RFC 1997 communities (`asn << 16 | value`).
    pub communities: Vec<u32>,
    /// RFC 8092 large communities.
    pub large_communities: Vec<(u32, u32, u32)>,
    /// MULTI_EXIT_DISC.
    pub med: Option<u32>,
    /// Extra copies of our AS in the AS_PATH (external peers only).
    pub prepend: u8,
}

/// A path attribute; `extended` for the 2-octet length (MP_REACH/MP_UNREACH, long lists).
fn attr(
    optional: bool,
    transitive: bool,
    extended: bool,
    value: PathAttributeValue,
) -> Option<PathAttribute> {
    PathAttribute::from(optional, transitive, false, extended, value).ok()
}

fn common(a: &Attrs) -> Vec<PathAttribute> {
    let mut out = Vec::new();
    out.extend(attr(
        false,
        true,
        false,
        PathAttributeValue::Origin(Origin::IGP),
    ));
    let segments = if a.external {
        let path = vec![a.local_as; 1 + usize::from(a.prepend)];
        vec![As4PathSegment::new(AsPathSegmentType::AsSequence, path)]
    } else {
        Vec::new()
    };
    out.extend(attr(
        false,
        true,
        false,
        PathAttributeValue::AsPath(AsPath::As4PathSegments(segments.into())),
    ));
    if let Some(m) = a.med {
        out.extend(attr(
            true,
            false,
            false,
            PathAttributeValue::MultiExitDiscriminator(MultiExitDiscriminator::new(m)),
        ));
    }
    if !a.external {
        out.extend(attr(
            false,
            true,
            false,
            PathAttributeValue::LocalPreference(LocalPreference::new(LOCAL_PREF)),
        ));
    }
    if !a.large_communities.is_empty() {
        let c: Vec<LargeCommunity> = a
            .large_communities
            .iter()
            .map(|(g, l1, l2)| LargeCommunity::new(*g, *l1, *l2))
            .collect();
        let long = c.len() * 12 > 255;
        out.extend(attr(
            true,
            true,
            long,
            PathAttributeValue::LargeCommunities(LargeCommunities::new(c)),
        ));
    }
    if !a.communities.is_empty() {
        let c: Vec<Community> = a.communities.iter().map(|v| Community::new(*v)).collect();
        let long = c.len() * 4 > 255;
        out.extend(attr(
            true,
            true,
            long,
            PathAttributeValue::Communities(Communities::new(c)),
        ));
    }
    out
}

fn v4(n: &Ipv4Net) -> Option<Ipv4UnicastAddress> {
    Ipv4Unicast::from_net(*n)
        .ok()
        .map(Ipv4UnicastAddress::new_no_path_id)
}

fn v6(n: &Ipv6Net) -> Option<Ipv6UnicastAddress> {
    Ipv6Unicast::from_net(*n)
        .ok()
        .map(|u| Ipv6UnicastAddress::new(None, u))
}

fn body(msg: &BgpUpdateMessage) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len());
    let _ = msg.write(&mut out);
    out
}

/// Builds UPDATEs for `items` with `make`, halving a batch until each fits.
fn fit<T: Clone>(items: &[T], make: &dyn Fn(&[T]) -> BgpUpdateMessage, out: &mut Vec<Vec<u8>>) {
    if items.is_empty() {
        return;
    }
    let m = make(items);
    if m.len() <= MAX_BODY || items.len() == 1 {
        out.push(body(&m));
        return;
    }
    let (a, b) = items.split_at(items.len() / 2);
    fit(a, make, out);
    fit(b, make, out);
}

/// The prefixes as netgauze's IPv4 and IPv6 unicast NLRI.
fn split(nets: &[IpNet]) -> (Vec<Ipv4UnicastAddress>, Vec<Ipv6UnicastAddress>) {
    let mut four = Vec::new();
    let mut six = Vec::new();
    for n in nets {
        match n {
            IpNet::V4(n) => four.extend(v4(n)),
            IpNet::V6(n) => six.extend(v6(n)),
        }
    }
    (four, six)
}

/// An UPDATE whose prefixes are all in one MP_REACH_NLRI or MP_UNREACH_NLRI (optional,
/// non-transitive, 2-octet length) after the attributes `pa`.
fn mp_only(mut pa: Vec<PathAttribute>, mp: PathAttributeValue) -> BgpUpdateMessage {
    pa.extend(attr(true, false, true, mp));
    BgpUpdateMessage::new(Vec::new(), pa, Vec::new())
}

/// UPDATE bodies that withdraw `withdraw` and announce `announce` with `attrs`. Prefixes of a
/// family without a next hop in `attrs` are left out (the caller decides the families).
pub fn pack(announce: &[IpNet], withdraw: &[IpNet], attrs: &Attrs) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let (w4, w6) = split(withdraw);
    let (a4, a6) = split(announce);
    if attrs.ipv4_via_ipv6 {
        fit(
            &w4,
            &|w| {
                let nlri = w.into();
                mp_only(
                    Vec::new(),
                    PathAttributeValue::MpUnreach(MpUnreach::Ipv4Unicast { nlri }),
                )
            },
            &mut out,
        );
    } else {
        fit(
            &w4,
            &|w| BgpUpdateMessage::new(w.to_vec(), Vec::new(), Vec::new()),
            &mut out,
        );
    }
    fit(
        &w6,
        &|w| {
            let nlri = w.into();
            mp_only(
                Vec::new(),
                PathAttributeValue::MpUnreach(MpUnreach::Ipv6Unicast { nlri }),
            )
        },
        &mut out,
    );
    if let Some(nh) = attrs.next_hop_v4 {
        fit(
            &a4,
            &|n| {
                let mut pa = common(attrs);
                pa.extend(attr(
                    false,
                    true,
                    false,
                    PathAttributeValue::NextHop(NextHop::new(nh)),
                ));
                BgpUpdateMessage::new(Vec::new(), pa, n.to_vec())
            },
            &mut out,
        );
    }
    if let (true, None, Some(nh)) = (attrs.ipv4_via_ipv6, attrs.next_hop_v4, attrs.next_hop_v6) {
        fit(
            &a4,
            &|n| {
                let reach = MpReach::Ipv4Unicast {
                    next_hop: nh.into(),
                    next_hop_local: attrs.next_hop_v6_local,
                    nlri: n.into(),
                };
                mp_only(common(attrs), PathAttributeValue::MpReach(reach))
            },
            &mut out,
        );
    }
    if let Some(nh) = attrs.next_hop_v6 {
        fit(
            &a6,
            &|n| {
                let reach = MpReach::Ipv6Unicast {
                    next_hop_global: nh,
                    next_hop_local: attrs.next_hop_v6_local,
                    nlri: n.into(),
                };
                mp_only(common(attrs), PathAttributeValue::MpReach(reach))
            },
            &mut out,
        );
    }
    out
}

/// End-of-RIB for IPv4 unicast: an empty UPDATE.
pub fn end_of_rib_v4() -> Vec<u8> {
    body(&BgpUpdateMessage::new(Vec::new(), Vec::new(), Vec::new()))
}

/// End-of-RIB for IPv6 unicast: an UPDATE with an empty MP_UNREACH_NLRI.
pub fn end_of_rib_v6() -> Vec<u8> {
    let nlri = Vec::new().into();
    body(&mp_only(
        Vec::new(),
        PathAttributeValue::MpUnreach(MpUnreach::Ipv6Unicast { nlri }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs() -> Attrs {
        Attrs {
            local_as: 65010,
            external: true,
            next_hop_v4: Some("192.0.2.2".parse().unwrap()),
            next_hop_v6: Some("2001:db8:2::2".parse().unwrap()),
            next_hop_v6_local: None,
            ipv4_via_ipv6: false,
            communities: vec![],
            large_communities: vec![],
            med: None,
            prepend: 0,
        }
    }

    /// One /32 to an external peer, byte for byte (RFC 4271 §4.3 layout).
    #[test]
    fn one_ipv4_route_has_the_rfc_layout() {
        let b = pack(&["198.51.100.10/32".parse().unwrap()], &[], &attrs());
        assert_eq!(b.len(), 1);
        let want: Vec<u8> = [
            &[0u8, 0][..],                         // no withdrawn routes
            &[0, 20],                              // path attributes: 20 bytes
            &[0x40, 1, 1, 0],                      // ORIGIN IGP (well-known, transitive)
            &[0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xf2], // AS_PATH: AS_SEQUENCE [65010], 4-octet
            &[0x40, 3, 4, 192, 0, 2, 2],           // NEXT_HOP 192.0.2.2
            &[32, 198, 51, 100, 10],               // NLRI 198.51.100.10/32
        ]
        .concat();
        assert_eq!(b[0], want);
    }

    #[test]
    fn many_routes_are_packed_under_4096_bytes() {
        let routes: Vec<IpNet> = (0..3000u32)
            .map(|i| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(0xc633_0000 + i), 32).unwrap()))
            .collect();
        let bodies = pack(&routes, &[], &attrs());
        assert!(bodies.iter().all(|b| b.len() <= MAX_BODY));
        assert!(bodies.len() >= 4, "3000 × 5 bytes need at least 4 messages");
        assert!(bodies.len() <= 8, "but not many more: {}", bodies.len());
        let v6: Vec<IpNet> = (0..1000u32)
            .map(|i| format!("2001:db8:100::{i:x}/128").parse().unwrap())
            .collect();
        let bodies = pack(&v6, &v6[..500], &attrs());
        assert!(bodies.iter().all(|b| b.len() <= MAX_BODY));
    }

    /// Internal peers: an empty AS_PATH and LOCAL_PREF 100 (well-known, transitive, type 5);
    /// external peers get no LOCAL_PREF.
    #[test]
    fn internal_peers_get_local_pref_and_an_empty_as_path() {
        let mut a = attrs();
        a.external = false;
        let b = &pack(&["198.51.100.10/32".parse().unwrap()], &[], &a)[0];
        let has = |b: &[u8], needle: &[u8]| b.windows(needle.len()).any(|w| w == needle);
        assert!(has(b, &[0x40, 5, 4, 0, 0, 0, 100]), "{b:02x?}");
        assert!(has(b, &[0x40, 2, 0]), "{b:02x?}");
        let ext = &pack(&["198.51.100.10/32".parse().unwrap()], &[], &attrs())[0];
        assert!(!has(ext, &[0x40, 5, 4]), "{ext:02x?}");
    }

    /// Per-neighbor policy: prepend, MED, communities, large communities, in the bytes.
    #[test]
    fn policy_attributes_are_encoded() {
        let mut a = attrs();
        a.prepend = 2;
        a.med = Some(50);
        a.communities = vec![(65010 << 16) | 100];
        a.large_communities = vec![(65010, 1, 2)];
        let b = &pack(&["198.51.100.10/32".parse().unwrap()], &[], &a)[0];
        let has = |needle: &[u8]| b.windows(needle.len()).any(|w| w == needle);
        // AS_PATH: one AS_SEQUENCE of three 65010s.
        assert!(
            has(&[0x40, 2, 14, 2, 3, 0, 0, 0xfd, 0xf2, 0, 0, 0xfd, 0xf2, 0, 0, 0xfd, 0xf2]),
            "{b:02x?}"
        );
        // MULTI_EXIT_DISC (optional, non-transitive) 50.
        assert!(has(&[0x80, 4, 4, 0, 0, 0, 50]), "{b:02x?}");
        // COMMUNITIES (optional, transitive) 65010:100.
        assert!(has(&[0xc0, 8, 4, 0xfd, 0xf2, 0, 100]), "{b:02x?}");
        // LARGE_COMMUNITY (32) 65010:1:2.
        assert!(
            has(&[0xc0, 32, 12, 0, 0, 0xfd, 0xf2, 0, 0, 0, 1, 0, 0, 0, 2]),
            "{b:02x?}"
        );
    }

    /// RFC 8950 over a link-local session: an IPv4 /32 in MP_REACH_NLRI (AFI 1, SAFI 1) with
    /// a 32-byte next hop (no global: ::, then the link-local), and withdrawn in
    /// MP_UNREACH_NLRI.
    #[test]
    fn ipv4_routes_over_ipv6_carry_the_ipv6_next_hops() {
        let mut a = attrs();
        a.next_hop_v4 = None;
        a.next_hop_v6 = Some(Ipv6Addr::UNSPECIFIED);
        a.next_hop_v6_local = Some("fe80::2".parse().unwrap());
        a.ipv4_via_ipv6 = true;
        let b = pack(&["198.51.100.10/32".parse().unwrap()], &[], &a);
        assert_eq!(b.len(), 1);
        let mut ll = [0u8; 16];
        ll[0] = 0xfe;
        ll[1] = 0x80;
        ll[15] = 2;
        let want: Vec<u8> = [
            &[0x90u8, 14, 0, 42][..], // MP_REACH_NLRI, optional, extended length 42
            &[0, 1, 1, 32],           // AFI 1, SAFI 1, next hop length 32
            &[0; 16],                 // global ::
            &ll,                      // link-local fe80::2
            &[0],                     // reserved
            &[32, 198, 51, 100, 10],  // 198.51.100.10/32
        ]
        .concat();
        assert!(b[0].ends_with(&want), "{:02x?}", b[0]);
        // No classic NEXT_HOP or NLRI.
        assert!(!b[0].windows(3).any(|w| w == [0x40, 3, 4]));
        let w = pack(&[], &["198.51.100.10/32".parse().unwrap()], &a);
        let want = [0x90u8, 15, 0, 8, 0, 1, 1, 32, 198, 51, 100, 10];
        assert_eq!(&w[0][..4], &[0, 0, 0, 12]);
        assert_eq!(&w[0][4..], &want);
    }

    /// A global IPv6 session on a shared link: 32-byte next hop, global then link-local.
    #[test]
    fn ipv6_routes_carry_the_link_local_next_hop_on_a_shared_link() {
        let mut a = attrs();
        a.next_hop_v6_local = Some("fe80::2".parse().unwrap());
        let b = &pack(&["2001:db8:100::a/128".parse().unwrap()], &[], &a)[0];
        let mut want = vec![0, 2, 1, 32];
        want.extend("2001:db8:2::2".parse::<Ipv6Addr>().unwrap().octets());
        want.extend("fe80::2".parse::<Ipv6Addr>().unwrap().octets());
        want.push(0);
        assert!(b.windows(want.len()).any(|w| w == want), "{b:02x?}");
    }

    #[test]
    fn end_of_rib_markers() {
        assert_eq!(end_of_rib_v4(), vec![0, 0, 0, 0]);
        // MP_UNREACH_NLRI (15) with AFI 2 SAFI 1 and nothing else.
        let e = end_of_rib_v6();
        assert_eq!(&e[..2], &[0, 0]);
        assert!(e.ends_with(&[0, 2, 1]), "{e:?}");
    }
}
