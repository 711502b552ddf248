//! A received message → the FSM event it is, pure. UPDATEs and ROUTE-REFRESHes of an
//! Established session are checked first (RFC 7606 through [`super::inbound`]; RFC 7313
//! lengths), and an UPDATE enters the neighbor's [`AdjRibIn`] (max-prefix included). The
//! session task logs and counts what comes back; nothing here does I/O.

use super::fsm::{Event, Negotiated};
use super::inbound;
use super::rib_in::{AdjRibIn, Applied};
use super::wire::{self, Frame, Kind, Notification};

/// What a message means for the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub event: Event,
    /// A ROUTE-REFRESH request for (AFI, SAFI).
    pub refresh: Option<(u16, u8)>,
    /// What an UPDATE did to the Adj-RIB-In.
    pub update: Option<Applied>,
}

impl Received {
    fn event(event: Event) -> Self {
        Self {
            event,
            refresh: None,
            update: None,
        }
    }
}

/// Turns one framed message into its event. `negotiated` is the session's while it is
/// Established (`None` before).
pub fn message(
    f: &Frame,
    negotiated: Option<&Negotiated>,
    local_as: u32,
    rib_in: &mut AdjRibIn,
) -> Received {
    match (f.kind, negotiated) {
        (Kind::Open, _) => Received::event(match super::open::decode(&f.body) {
            Ok(o) => Event::Open(o),
            Err(n) => Event::Malformed(n),
        }),
        (Kind::Keepalive, _) => Received::event(Event::Keepalive),
        (Kind::RouteRefresh, Some(_)) => match wire::RouteRefresh::decode(&f.body) {
            Err(n) => Received::event(Event::Malformed(n)),
            // BoRR/EoRR (kube-gw never asks for a refresh) and unknown subtypes are
            // ignored (RFC 7313 §4).
            Ok(r) => Received {
                refresh: (r.subtype == wire::RouteRefresh::REQUEST).then_some((r.afi, r.safi)),
                ..Received::event(Event::RouteRefresh)
            },
        },
        (Kind::RouteRefresh, None) => Received::event(Event::RouteRefresh),
        (Kind::Update, Some(n)) => update(&f.body, n, local_as, rib_in),
        // Not Established: the FSM answers with an FSM error (RFC 6608).
        (Kind::Update, None) => Received::event(Event::Update),
        (Kind::Notification, _) => Received::event(match Notification::decode(&f.body) {
            Ok(n) => Event::Notification(n),
            Err(n) => Event::Malformed(n),
        }),
    }
}

/// Checks an UPDATE and applies it to the Adj-RIB-In.
fn update(body: &[u8], n: &Negotiated, local_as: u32, rib_in: &mut AdjRibIn) -> Received {
    let ctx = inbound::Context {
        local_as,
        four_octet: n.four_octet_as,
        external: n.peer_as != local_as,
    };
    match inbound::check(body, &ctx) {
        Err(n) => Received::event(Event::Malformed(n)),
        Ok(checked) => {
            let applied = rib_in.apply(checked);
            let event = match &applied.over_limit {
                Some((n, _)) => Event::Malformed(n.clone()),
                None => Event::Update,
            };
            Received {
                update: Some(applied),
                ..Received::event(event)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bgp::fsm::Families;
    use crate::bgp::wire::{Code, RouteRefresh};

    fn negotiated() -> Negotiated {
        Negotiated {
            peer_as: 65000,
            peer_id: "192.0.2.1".parse().unwrap(),
            hold_time: 9,
            keepalive: 3,
            families: Families {
                ipv4: true,
                ipv6: true,
            },
            four_octet_as: true,
            enhanced_route_refresh: true,
            extended_next_hop: false,
            graceful_restart: false,
            peer_restart_time: None,
            hard_reset: false,
        }
    }

    fn frame(kind: Kind, body: &[u8]) -> Frame {
        Frame {
            kind,
            body: body.to_vec(),
        }
    }

    /// An UPDATE announcing 203.0.113.7/32 from AS 65000 with next hop 192.0.2.1.
    fn announce() -> Vec<u8> {
        let attrs = [
            0x40, 1, 1, 0, // ORIGIN IGP
            0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe8, // AS_PATH 65000
            0x40, 3, 4, 192, 0, 2, 1, // NEXT_HOP
        ];
        let mut b = vec![0, 0, 0, attrs.len() as u8];
        b.extend_from_slice(&attrs);
        b.extend_from_slice(&[32, 203, 0, 113, 7]);
        b
    }

    #[test]
    fn an_established_update_enters_the_adj_rib_in() {
        let mut rib = AdjRibIn::new(None);
        let n = negotiated();
        let r = message(&frame(Kind::Update, &announce()), Some(&n), 65010, &mut rib);
        assert_eq!(r.event, Event::Update);
        assert_eq!(rib.len(), 1);
        assert_eq!(r.update.map(|u| u.problem), Some(None));
        // Before Established it is only an event (the FSM refuses it), never a route.
        let mut rib = AdjRibIn::new(None);
        let r = message(&frame(Kind::Update, &announce()), None, 65010, &mut rib);
        assert_eq!((r.event, rib.len()), (Event::Update, 0));
    }

    #[test]
    fn malformed_input_becomes_the_notification_to_send() {
        let mut rib = AdjRibIn::new(None);
        let n = negotiated();
        let r = message(&frame(Kind::Update, &[0, 9]), Some(&n), 65010, &mut rib);
        assert!(matches!(r.event, Event::Malformed(n) if n.code == Code::Update));
        // A BoRR of the wrong length: ROUTE-REFRESH Message Error (RFC 7313 §5).
        let r = message(
            &frame(Kind::RouteRefresh, &[0, 1, 1, 1, 0]),
            Some(&n),
            65010,
            &mut rib,
        );
        assert!(matches!(r.event, Event::Malformed(n) if n.code == Code::RouteRefresh));
        // Over max-prefixes: Cease 1 to send.
        let mut rib = AdjRibIn::new(Some(0));
        let r = message(&frame(Kind::Update, &announce()), Some(&n), 65010, &mut rib);
        assert!(matches!(r.event, Event::Malformed(n) if n.code == Code::Cease && n.subcode == 1));
    }

    #[test]
    fn a_refresh_request_is_handed_out_and_markers_are_ignored() {
        let mut rib = AdjRibIn::new(None);
        let n = negotiated();
        let ask = |subtype| {
            let r = RouteRefresh {
                afi: 2,
                subtype,
                safi: 1,
            }
            .encode();
            message(
                &frame(Kind::RouteRefresh, &r[19..]),
                Some(&n),
                65010,
                &mut AdjRibIn::new(None),
            )
        };
        assert_eq!(ask(RouteRefresh::REQUEST).refresh, Some((2, 1)));
        assert_eq!(ask(RouteRefresh::BEGIN).refresh, None);
        assert_eq!(ask(RouteRefresh::END).event, Event::RouteRefresh);
        let _ = &mut rib;
    }
}
