//! OPEN messages: the one kube-gw sends and what it reads from the peer's. The bytes go
//! through `netgauze-bgp-pkt`; its types stay in this file, so the codec can be swapped.
//!
//! kube-gw proposes: version 4, its AS (AS_TRANS 23456 in the 2-octet field when it does not
//! fit, RFC 6793), hold time, identifier, and the capabilities multiprotocol IPv4 and IPv6
//! unicast (RFC 4760), route refresh (RFC 2918), enhanced route refresh (RFC 7313),
//! 4-octet AS (RFC 6793) and, on IPv6 sessions that ask for it, extended next hop for IPv4
//! unicast (RFC 8950). Unknown capabilities of the peer are ignored (RFC 5492).

use std::collections::HashMap;
use std::net::Ipv4Addr;

use netgauze_bgp_pkt::capabilities::{
    BgpCapability, ExtendedNextHopEncoding, ExtendedNextHopEncodingCapability,
    FourOctetAsCapability, GracefulRestartAddressFamily, GracefulRestartCapability,
    LongLivedGracefulRestartAddressFamily, LongLivedGracefulRestartCapability,
    MultiProtocolExtensionsCapability,
};
use netgauze_bgp_pkt::open::{BgpOpenMessage, BgpOpenMessageParameter};
use netgauze_bgp_pkt::wire::deserializer::open::BgpOpenMessageParsingError;
use netgauze_bgp_pkt::wire::deserializer::BgpParsingContext;
use netgauze_iana::address_family::{AddressFamily, AddressType};
use netgauze_parse_utils::reader::SliceReader;
use netgauze_parse_utils::traits::ParseFromWithOneInput;
use netgauze_parse_utils::WritablePdu;

use super::fsm::{GracefulRestart, PeerCapabilities, PeerOpen, Settings};
use super::wire::{Code, Notification};

/// `AS_TRANS` (RFC 6793).
pub const AS_TRANS: u16 = 23456;

/// What kube-gw proposes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    pub local_as: u32,
    pub router_id: Ipv4Addr,
    pub hold_time: u16,
    pub ipv4_unicast: bool,
    pub ipv6_unicast: bool,
    /// RFC 8950: IPv4 unicast routes with an IPv6 next hop.
    pub extended_next_hop: bool,
    /// RFC 4724.
    pub graceful_restart: Option<GracefulRestart>,
}

impl From<&Settings> for Proposal {
    fn from(s: &Settings) -> Self {
        Self {
            local_as: s.local_as,
            router_id: s.router_id,
            hold_time: s.hold_time,
            ipv4_unicast: s.offer.ipv4_unicast,
            ipv6_unicast: s.offer.ipv6_unicast,
            extended_next_hop: s.offer.extended_next_hop,
            graceful_restart: s.offer.graceful_restart,
        }
    }
}

/// The OPEN body (after the header).
pub fn encode(p: &Proposal) -> Vec<u8> {
    let mut caps = Vec::new();
    if p.ipv4_unicast {
        caps.push(BgpCapability::MultiProtocolExtensions(
            MultiProtocolExtensionsCapability::new(AddressType::Ipv4Unicast),
        ));
    }
    if p.ipv6_unicast {
        caps.push(BgpCapability::MultiProtocolExtensions(
            MultiProtocolExtensionsCapability::new(AddressType::Ipv6Unicast),
        ));
    }
    if p.extended_next_hop {
        caps.push(BgpCapability::ExtendedNextHopEncoding(
            ExtendedNextHopEncodingCapability::new(vec![ExtendedNextHopEncoding::new(
                AddressType::Ipv4Unicast,
                AddressFamily::IPv6,
            )]),
        ));
    }
    if let Some(gr) = p.graceful_restart {
        let families = || {
            [
                (p.ipv4_unicast, AddressType::Ipv4Unicast),
                (p.ipv6_unicast, AddressType::Ipv6Unicast),
            ]
            .into_iter()
            .filter(|(on, _)| *on)
            .map(|(_, t)| t)
        };
        let gr_families: Vec<_> = families()
            .map(|t| GracefulRestartAddressFamily::new(gr.forwarding, t))
            .collect();
        // The N bit (RFC 8538): a NOTIFICATION that must end the session for good goes
        // inside a Hard Reset; any other keeps the routes for the restart time.
        caps.push(BgpCapability::GracefulRestartCapability(
            GracefulRestartCapability::new(gr.restarting, true, gr.time.min(4095), gr_families),
        ));
        if gr.long_lived_stale_time > 0 {
            let stale = gr.long_lived_stale_time.min(0xFF_FFFF);
            let ll: Vec<_> = families()
                .map(|t| LongLivedGracefulRestartAddressFamily::new(gr.forwarding, t, stale))
                .collect();
            caps.push(BgpCapability::LongLivedGracefulRestart(
                LongLivedGracefulRestartCapability::new(ll),
            ));
        }
    }
    caps.push(BgpCapability::RouteRefresh);
    caps.push(BgpCapability::EnhancedRouteRefresh);
    caps.push(BgpCapability::FourOctetAs(FourOctetAsCapability::new(
        p.local_as,
    )));
    let my_as = u16::try_from(p.local_as).unwrap_or(AS_TRANS);
    let msg = BgpOpenMessage::new(
        my_as,
        p.hold_time,
        p.router_id,
        vec![BgpOpenMessageParameter::new_capabilities(caps)],
    );
    let mut out = Vec::with_capacity(msg.len());
    // Writing into a Vec cannot fail.
    let _ = msg.write(&mut out);
    out
}

/// Reads the peer's OPEN body; a malformed one gives the NOTIFICATION to answer with.
pub fn decode(body: &[u8]) -> Result<PeerOpen, Notification> {
    // Unknown or malformed optional capabilities are not a reason to refuse a peer.
    let mut ctx = BgpParsingContext::new(
        true,
        HashMap::new(),
        HashMap::new(),
        true,
        true,
        false,
        true,
    );
    let mut cur = SliceReader::new(body);
    let msg = BgpOpenMessage::parse(&mut cur, &mut ctx).map_err(|e| match e {
        BgpOpenMessageParsingError::UnsupportedVersionNumber { .. } => {
            Notification::new(Code::Open, 1, vec![0, 4])
        }
        BgpOpenMessageParsingError::UnacceptableHoldTime { .. } => {
            Notification::new(Code::Open, 6, Vec::new())
        }
        BgpOpenMessageParsingError::InvalidBgpId { .. } => {
            Notification::new(Code::Open, 3, Vec::new())
        }
        BgpOpenMessageParsingError::ParameterError(_) => {
            Notification::new(Code::Open, 4, Vec::new())
        }
        // Truncated or otherwise unreadable: OPEN Message Error, unspecific.
        _ => Notification::new(Code::Open, 0, Vec::new()),
    })?;
    let mut caps = PeerCapabilities::default();
    for c in msg.capabilities() {
        match c {
            BgpCapability::FourOctetAs(_) => caps.four_octet_as = true,
            BgpCapability::MultiProtocolExtensions(m) => match m.address_type() {
                AddressType::Ipv4Unicast => caps.ipv4_unicast = true,
                AddressType::Ipv6Unicast => caps.ipv6_unicast = true,
                other => caps.others.push(format!("multiprotocol {other:?}")),
            },
            BgpCapability::RouteRefresh => caps.route_refresh = true,
            BgpCapability::EnhancedRouteRefresh => caps.enhanced_route_refresh = true,
            BgpCapability::ExtendedNextHopEncoding(e) => {
                caps.extended_next_hop |= e.encodings().iter().any(|x| {
                    x.address_type() == AddressType::Ipv4Unicast
                        && x.next_hop_afi() == AddressFamily::IPv6
                });
            }
            BgpCapability::GracefulRestartCapability(g) => {
                caps.graceful_restart = Some(g.time());
                caps.graceful_restart_families = !g.address_families().is_empty();
                caps.graceful_notification = g.graceful_notification();
            }
            BgpCapability::LongLivedGracefulRestart(_) => caps.long_lived_graceful_restart = true,
            other => caps.others.push(capability_name(other)),
        }
    }
    Ok(PeerOpen {
        version: msg.version(),
        asn: msg.my_asn4(),
        hold_time: msg.hold_time(),
        router_id: msg.bgp_id(),
        capabilities: caps,
    })
}

fn capability_name(c: &BgpCapability) -> String {
    let s = format!("{c:?}");
    s.split(['(', ' ', '{'])
        .next()
        .unwrap_or_default()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bgp::wire::{Framer, Kind};

    /// BIRD's OPEN (tests/golden/bgp/README.md).
    #[test]
    fn bird_s_open_decodes() {
        let capture = include_bytes!("../../tests/golden/bgp/bird-2.0.12-open-then-disable.bin");
        let mut f = Framer::default();
        f.push(capture);
        let open = f.next_frame().unwrap().unwrap();
        assert_eq!(open.kind, Kind::Open);
        let r = decode(&open.body).unwrap();
        assert_eq!(
            (r.version, r.asn, r.hold_time, r.router_id),
            (4, 65000, 240, "192.0.2.1".parse().unwrap())
        );
        let c = &r.capabilities;
        assert!(c.four_octet_as && c.ipv4_unicast && c.ipv6_unicast);
        assert!(c.route_refresh && c.enhanced_route_refresh);
        assert_eq!(c.graceful_restart, Some(120));
        assert!(c.long_lived_graceful_restart);
        assert!(c.others.is_empty(), "{:?}", c.others);
    }

    #[test]
    fn our_open_round_trips_and_a_large_as_goes_in_as_trans() {
        let p = Proposal {
            local_as: 4_200_000_010,
            router_id: "192.0.2.20".parse().unwrap(),
            hold_time: 9,
            ipv4_unicast: true,
            ipv6_unicast: true,
            extended_next_hop: true,
            graceful_restart: None,
        };
        let body = encode(&p);
        assert_eq!(body[0], 4);
        assert_eq!(u16::from_be_bytes([body[1], body[2]]), AS_TRANS);
        assert_eq!(u16::from_be_bytes([body[3], body[4]]), 9);
        let r = decode(&body).unwrap();
        assert_eq!(r.asn, 4_200_000_010);
        assert_eq!(r.router_id, p.router_id);
        assert!(r.capabilities.ipv4_unicast && r.capabilities.ipv6_unicast);
        assert!(r.capabilities.extended_next_hop);
        assert!(r.capabilities.others.is_empty());
        // Capability 5, length 6: AFI 1, SAFI 1, next hop AFI 2 (RFC 8950 §3).
        assert!(
            body.windows(8).any(|w| w == [5, 6, 0, 1, 0, 1, 0, 2]),
            "{body:02x?}"
        );
    }

    /// RFC 4724 §3: code 64, then flags (R = 0x8, and N = 0x4 from RFC 8538) and the 12-bit
    /// restart time, then per family AFI, SAFI and flags (F = 0x80).
    #[test]
    fn the_graceful_restart_capability_carries_r_f_and_the_time() {
        let mut p = Proposal {
            local_as: 65010,
            router_id: "192.0.2.20".parse().unwrap(),
            hold_time: 9,
            ipv4_unicast: true,
            ipv6_unicast: true,
            extended_next_hop: false,
            graceful_restart: Some(GracefulRestart {
                time: 120,
                restarting: true,
                forwarding: true,
                long_lived_stale_time: 0,
            }),
        };
        let body = encode(&p);
        let want = [64, 10, 0xc0, 120, 0, 1, 1, 0x80, 0, 2, 1, 0x80];
        assert!(body.windows(12).any(|w| w == want), "{body:02x?}");
        assert!(decode(&body).unwrap().capabilities.graceful_notification);
        assert!(
            !decode(&body)
                .unwrap()
                .capabilities
                .long_lived_graceful_restart
        );
        assert_eq!(
            decode(&body).unwrap().capabilities.graceful_restart,
            Some(120)
        );
        p.graceful_restart = Some(GracefulRestart {
            time: 4095,
            restarting: false,
            forwarding: false,
            long_lived_stale_time: 3600,
        });
        p.ipv6_unicast = false;
        let body = encode(&p);
        let want = [64, 6, 0x4f, 0xff, 0, 1, 1, 0];
        assert!(body.windows(8).any(|w| w == want), "{body:02x?}");
        // RFC 9494 §2: code 71, then per family AFI, SAFI, flags, 24-bit stale time.
        let want = [71, 7, 0, 1, 1, 0, 0, 0x0e, 0x10];
        assert!(body.windows(9).any(|w| w == want), "{body:02x?}");
        assert!(
            decode(&body)
                .unwrap()
                .capabilities
                .long_lived_graceful_restart
        );
        p.graceful_restart = None;
        assert_eq!(
            decode(&encode(&p)).unwrap().capabilities.graceful_restart,
            None
        );
    }

    #[test]
    fn bad_opens_map_to_their_notifications() {
        let mut body = encode(&Proposal {
            local_as: 65010,
            router_id: "192.0.2.20".parse().unwrap(),
            hold_time: 9,
            ipv4_unicast: true,
            ipv6_unicast: false,
            extended_next_hop: false,
            graceful_restart: None,
        });
        let mut v3 = body.clone();
        v3[0] = 3;
        assert_eq!(decode(&v3).unwrap_err().body(), vec![2, 1, 0, 4]);
        let mut hold1 = body.clone();
        hold1[3..5].copy_from_slice(&1u16.to_be_bytes());
        assert_eq!(decode(&hold1).unwrap_err().body(), vec![2, 6]);
        let mut id0 = body.clone();
        id0[5..9].copy_from_slice(&[0, 0, 0, 0]);
        assert_eq!(decode(&id0).unwrap_err().body(), vec![2, 3]);
        body.truncate(12);
        assert_eq!(decode(&body).unwrap_err().code, Code::Open);
    }
}
