//! The BGP session state machine driven by arbitrary sequences: connection events, timer
//! expiries, operator stops and BFD verdicts, and peer bytes (framed, decoded and turned
//! into events exactly as the session task does: `wire::Framer` → `receive::message`).
//! Never a panic, and the session's promises hold after every step: Established only with
//! negotiated parameters; `Up` only into Established and never twice without a `Down`; a
//! NOTIFICATION or malformed message never leaves the session Established; a NOTIFICATION
//! sent is followed by closing the connection.
#![no_main]
use std::net::Ipv4Addr;

use kube_gw::bgp::fsm::{Action, Event, Fsm, Offer, RemoteAs, Settings, State, Timer};
use kube_gw::bgp::open::{self, Proposal};
use kube_gw::bgp::receive;
use kube_gw::bgp::rib_in::AdjRibIn;
use kube_gw::bgp::wire::{frame, Framer, Kind, Notification};
use libfuzzer_sys::fuzz_target;

const LOCAL_AS: u32 = 65010;

/// The peer's well-formed OPEN (so that sequences reach Established often).
fn peer_open(hold: u16, four_octet_as: u32) -> Vec<u8> {
    let body = open::encode(&Proposal {
        local_as: four_octet_as,
        router_id: Ipv4Addr::new(192, 0, 2, 1),
        hold_time: hold,
        ipv4_unicast: true,
        ipv6_unicast: hold % 2 == 0,
        extended_next_hop: false,
        graceful_restart: None,
    });
    frame(Kind::Open, &body).unwrap_or_default()
}

fn step(fsm: &mut Fsm, up: &mut bool, ev: Event) {
    let fatal = matches!(ev, Event::Notification(_) | Event::Malformed(_));
    let actions = fsm.handle(ev);
    for (i, a) in actions.iter().enumerate() {
        match a {
            Action::Up(_) => {
                assert!(!*up, "Up twice without a Down: {actions:?}");
                *up = true;
            }
            Action::Down(_) => *up = false,
            Action::Send(_) => assert!(
                actions[i..].iter().any(|b| matches!(b, Action::Close)),
                "a NOTIFICATION without closing: {actions:?}"
            ),
            _ => {}
        }
    }
    if actions.iter().any(|a| matches!(a, Action::Up(_))) {
        assert_eq!(fsm.state(), State::Established, "{actions:?}");
    }
    if fsm.state() == State::Established {
        assert!(fsm.negotiated().is_some());
    }
    if fatal {
        assert_ne!(fsm.state(), State::Established, "{actions:?}");
    }
    if fsm.state() != State::Established {
        *up = false;
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let mut fsm = Fsm::new(Settings {
        local_as: LOCAL_AS,
        router_id: Ipv4Addr::new(192, 0, 2, 20),
        remote_as: match flags % 3 {
            0 => RemoteAs::Exact(65000),
            1 => RemoteAs::External,
            _ => RemoteAs::Internal,
        },
        hold_time: if flags & 4 == 0 { 90 } else { 3 },
        keepalive: None,
        passive: flags & 8 != 0,
        offer: Offer {
            ipv4_unicast: true,
            ipv6_unicast: flags & 16 != 0,
            extended_next_hop: flags & 32 != 0,
            graceful_restart: None,
        },
    });
    let mut framer = Framer::default();
    let mut rib_in = AdjRibIn::new(Some(100));
    let mut up = false;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        let ev = match op % 16 {
            0 => Some(Event::Start),
            1 => Some(Event::Stop {
                subcode: op >> 4,
                reason: "fuzz".into(),
            }),
            2 => Some(Event::Connected),
            3 => Some(Event::Incoming),
            4 => {
                framer = Framer::default();
                Some(Event::ConnectionLost)
            }
            5 => Some(Event::Expired(Timer::ConnectRetry)),
            6 => Some(Event::Expired(Timer::Hold)),
            7 => Some(Event::Expired(Timer::Keepalive)),
            8 => Some(Event::PathDown("fuzz".into())),
            9 => {
                let asn = if op & 0x10 == 0 { 65000 } else { LOCAL_AS };
                framer.push(&peer_open(u16::from(op >> 5) * 30, asn));
                None
            }
            10 => {
                framer.push(&frame(Kind::Keepalive, &[]).unwrap_or_default());
                None
            }
            11 => {
                let n = Notification::cease(op >> 4, "fuzz");
                framer.push(&frame(Kind::Notification, &n.body()).unwrap_or_default());
                None
            }
            _ => {
                // Raw peer bytes: the next `len` bytes of the input.
                let len = (usize::from(op >> 4) * 8).min(rest.len());
                framer.push(&rest[..len]);
                rest = &rest[len..];
                None
            }
        };
        if let Some(ev) = ev {
            step(&mut fsm, &mut up, ev);
        }
        // Whatever the peer sent so far, as the session task reads it.
        loop {
            match framer.next_frame() {
                Ok(Some(f)) => {
                    let r = receive::message(&f, fsm.negotiated(), LOCAL_AS, &mut rib_in);
                    step(&mut fsm, &mut up, r.event);
                }
                Ok(None) => break,
                Err(n) => {
                    step(&mut fsm, &mut up, Event::Malformed(n));
                    framer = Framer::default();
                    break;
                }
            }
        }
    }
});
