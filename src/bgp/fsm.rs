//! The BGP finite state machine of one session (RFC 4271 §8), without I/O: events in
//! (connection changes, decoded messages, timer expiries, operator commands), actions out
//! (connect, send, arm a timer, adopt or refuse a connection, report). The session task
//! does the I/O and the clock; this is what it consults, and what the table tests drive.
//!
//! ```text
//!   Idle ─start─► Connect ⇄ Active ─TCP up─► OpenSent ─OPEN ok─► OpenConfirm ─KEEPALIVE─► Established
//!    ▲                                          │                    │                        │
//!    └──────── any error: NOTIFICATION (if a connection is up), close, back to Idle ◄────────┘
//!              (the session task restarts it after the connect-retry delay)
//! ```
//!
//! Decided here, as outputs, so that they are table-tested without sockets:
//!
//! - **OPEN checks** (RFC 4271 §6.2): version 4; the peer's AS as configured (or
//!   external/internal as asked); a BGP identifier that is not 0 and, for internal peers, not
//!   ours (RFC 6286); hold time 0 or at least 3. The hold time is the smaller of both;
//!   keepalives every third of it (or the configured keepalive when smaller).
//! - **Capability negotiation**: the families both sides announced (RFC 4760: an OPEN
//!   without multiprotocol capabilities means IPv4 unicast), 4-octet AS, enhanced route
//!   refresh, extended next hop (RFC 8950, when both offer it) — handed out in
//!   [`Negotiated`] with [`Action::Up`].
//! - **Collision resolution** (RFC 4271 §6.8): a connection of the peer's that arrives
//!   ([`Event::Incoming`]) is adopted when the session has none, held while kube-gw's own
//!   connection waits for the peer's OPEN, and then judged by BGP identifier (equal
//!   identifiers, allowed between ASes by RFC 6286: the larger AS wins). The loser is closed
//!   with Cease / Connection Collision Resolution; an Established session keeps its
//!   connection; two connections of the peer's own: the newer is the peer's present.

use std::net::Ipv4Addr;
use std::time::Duration;

use super::wire::{Code, Notification};

/// Session states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum State {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

/// Who the peer must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteAs {
    Exact(u32),
    /// Any AS other than ours.
    External,
    /// Our AS.
    Internal,
}

/// The address families and options kube-gw offers in its OPEN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offer {
    pub ipv4_unicast: bool,
    pub ipv6_unicast: bool,
    /// RFC 8950: IPv4 unicast routes with an IPv6 next hop.
    pub extended_next_hop: bool,
    /// RFC 4724: the graceful-restart capability, when configured.
    pub graceful_restart: Option<GracefulRestart>,
}

/// The graceful-restart capability kube-gw sends (RFC 4724 §3), for the families offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GracefulRestart {
    /// Restart Time: seconds the peer keeps our routes after the session went.
    pub time: u16,
    /// Restart State (R): kube-gw has just restarted; the peer must not wait for our
    /// End-of-RIB before sending its own routes.
    pub restarting: bool,
    /// Forwarding State (F) for each family: the forwarding of our routes went on while
    /// kube-gw was away.
    pub forwarding: bool,
    /// Long-lived graceful restart (RFC 9494): seconds the peer keeps our routes as
    /// LLGR_STALE after the restart time; 0: not offered.
    pub long_lived_stale_time: u32,
}

/// What the FSM needs to know of the neighbor's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub local_as: u32,
    pub router_id: Ipv4Addr,
    pub remote_as: RemoteAs,
    /// Proposed hold time in seconds (0 or ≥ 3).
    pub hold_time: u16,
    /// Keepalive interval in seconds, if configured (else a third of the hold time).
    pub keepalive: Option<u16>,
    /// Wait for the peer to connect instead of connecting.
    pub passive: bool,
    pub offer: Offer,
}

/// The capabilities kube-gw cares about in the peer's OPEN.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerCapabilities {
    pub four_octet_as: bool,
    pub ipv4_unicast: bool,
    pub ipv6_unicast: bool,
    pub route_refresh: bool,
    pub enhanced_route_refresh: bool,
    /// RFC 8950: the peer takes IPv4 unicast routes with an IPv6 next hop.
    pub extended_next_hop: bool,
    /// RFC 4724: the peer's restart time, if it sent the graceful-restart capability (it
    /// then keeps our routes when our connection goes without a NOTIFICATION).
    pub graceful_restart: Option<u16>,
    /// The capability listed address families: the peer keeps forwarding through its own
    /// restarts, so its routes may be kept while it restarts (the helper role).
    pub graceful_restart_families: bool,
    /// The capability's N bit (RFC 8538).
    pub graceful_notification: bool,
    /// RFC 9494: the peer sent the long-lived graceful-restart capability.
    pub long_lived_graceful_restart: bool,
    /// Capabilities kube-gw does not use (codes), for `kube-gw bgp neighbors`.
    pub others: Vec<String>,
}

/// A received OPEN, decoded (by `open::decode`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerOpen {
    pub version: u8,
    /// The peer's AS: the 4-octet AS capability's value, else the 2-octet field.
    pub asn: u32,
    pub hold_time: u16,
    pub router_id: Ipv4Addr,
    pub capabilities: PeerCapabilities,
}

/// The unicast families of a session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Families {
    pub ipv4: bool,
    pub ipv6: bool,
}

/// What both sides agreed on, handed out when the session is established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub peer_as: u32,
    pub peer_id: Ipv4Addr,
    pub hold_time: u16,
    pub keepalive: u16,
    /// Families both sides announced.
    pub families: Families,
    /// The peer reads 4-octet AS numbers in AS_PATH.
    pub four_octet_as: bool,
    /// Route refreshes are answered between BoRR and EoRR (RFC 7313).
    pub enhanced_route_refresh: bool,
    /// IPv4 routes may carry IPv6 next hops (RFC 8950; both sides offered it).
    pub extended_next_hop: bool,
    /// Both sides sent the graceful-restart capability (RFC 4724): when kube-gw stops for
    /// a restart, the peer keeps our routes.
    pub graceful_restart: bool,
    /// The peer's restart time when it sent the graceful-restart capability: while it
    /// restarts, its routes are kept as stale this long (the helper role).
    pub peer_restart_time: Option<u16>,
    /// Both sides set the graceful-restart N bit (RFC 8538): a NOTIFICATION other than
    /// Hard Reset is a restart too, and a session that must end for good ends with one.
    pub hard_reset: bool,
}

/// The FSM's timers (the send-hold timer is the session task's: it sees the socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    ConnectRetry,
    Hold,
    Keepalive,
}

/// Inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Start,
    /// Operator stop or drain: Cease with this subcode and text.
    Stop {
        subcode: u8,
        reason: String,
    },
    /// kube-gw's own connection attempt succeeded.
    Connected,
    /// A connection of the peer's arrived (from the listener).
    Incoming,
    /// The connection attempt failed or the connection closed.
    ConnectionLost,
    Expired(Timer),
    Open(PeerOpen),
    Keepalive,
    Update,
    RouteRefresh,
    Notification(Notification),
    /// A message could not be read: answer with this NOTIFICATION and close.
    Malformed(Notification),
    /// The path to the peer is dead (BFD): close at once, no NOTIFICATION (it could not
    /// arrive).
    PathDown(String),
}

/// Outputs, in the order to carry them out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Connect,
    /// Listen for the peer (passive, or while waiting between attempts).
    Listen,
    SendOpen,
    SendKeepalive,
    Send(Notification),
    Close,
    Arm(Timer, Duration),
    Disarm(Timer),
    /// The session is up: send the routes.
    Up(Negotiated),
    /// The session left Established or failed before: why (for status and logs).
    Down(String),
    /// Let the speaker handle the message (an UPDATE or ROUTE-REFRESH in Established).
    Deliver,
    /// The incoming connection becomes the session's connection (it had none, or the
    /// current one was just closed).
    Adopt,
    /// Keep the incoming connection aside until the collision can be judged.
    Hold,
    /// Close the incoming connection with Cease / Connection Collision Resolution.
    Reject,
    /// Close the held connection with Cease / Connection Collision Resolution.
    CloseHeld,
    /// Close the current connection with Cease / Connection Collision Resolution (it lost).
    Yield,
    /// The held connection becomes the session's connection.
    Promote,
}

/// Large initial hold time while waiting for the peer's OPEN (RFC 4271 suggests 4 min).
pub const OPEN_HOLD: Duration = Duration::from_secs(240);
/// Connect-retry delay; the session task adds jitter and backoff.
pub const CONNECT_RETRY: Duration = Duration::from_secs(5);

/// One session's state machine.
#[derive(Debug, Clone)]
pub struct Fsm {
    settings: Settings,
    state: State,
    negotiated: Option<Negotiated>,
    /// The current connection is kube-gw's own (not the peer's).
    ours: bool,
    /// A connection of the peer's is held aside.
    held: bool,
    /// Set by [`Fsm::retain_routes`] for the reset that follows; then `retained`.
    retain: Option<u16>,
    retained: Option<u16>,
}

/// RFC 4271 §6.8: whether a new connection of the peer's wins against the current one.
/// The connection opened by the side with the higher BGP identifier stays — with equal
/// identifiers (RFC 6286), the side with the larger AS; two of the peer's own: the newer
/// (the old one is from before the peer restarted).
pub fn new_connection_wins(
    (local_id, local_as): (Ipv4Addr, u32),
    (peer_id, peer_as): (Ipv4Addr, u32),
    current_is_ours: bool,
) -> bool {
    !current_is_ours || (u32::from(local_id), local_as) < (u32::from(peer_id), peer_as)
}

impl Fsm {
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            state: State::Idle,
            negotiated: None,
            ours: false,
            held: false,
            retain: None,
            retained: None,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Feeds one event; returns what to do.
    pub fn handle(&mut self, ev: Event) -> Vec<Action> {
        use Event as E;
        use State as S;
        match (self.state, ev) {
            (S::Idle, E::Start) => {
                if self.settings.passive {
                    self.state = S::Active;
                    vec![Action::Listen]
                } else {
                    self.state = S::Connect;
                    vec![
                        Action::Connect,
                        Action::Arm(Timer::ConnectRetry, CONNECT_RETRY),
                    ]
                }
            }
            (S::Idle, E::Incoming) => vec![Action::Reject],
            (S::Idle, _) => Vec::new(),
            (_, E::Stop { subcode, reason }) => {
                let connected = matches!(self.state, S::OpenSent | S::OpenConfirm | S::Established);
                let mut out = Vec::new();
                if connected {
                    out.push(Action::Send(
                        self.ending(Notification::cease(subcode, &reason)),
                    ));
                }
                if self.held {
                    self.held = false;
                    out.push(Action::CloseHeld);
                }
                out.extend(self.reset(format!("stopped: {reason}")));
                out
            }
            (S::Connect | S::Active, E::Connected) => {
                self.ours = true;
                self.open_sent(Vec::new())
            }
            (S::Connect | S::Active, E::Incoming) => {
                self.ours = false;
                self.open_sent(vec![Action::Adopt])
            }
            (S::Connect, E::ConnectionLost) => {
                self.state = S::Active;
                vec![Action::Listen]
            }
            (S::Connect | S::Active, E::Expired(Timer::ConnectRetry)) => {
                if self.settings.passive {
                    vec![Action::Listen]
                } else {
                    self.state = S::Connect;
                    vec![
                        Action::Connect,
                        Action::Arm(Timer::ConnectRetry, CONNECT_RETRY),
                    ]
                }
            }
            (S::Active, E::ConnectionLost) => Vec::new(),
            (S::Connect | S::Active, _) => Vec::new(),
            // Two connections of the peer's own: the newer is the peer's present.
            (S::OpenSent, E::Incoming) if !self.ours => {
                self.open_sent(vec![Action::Yield, Action::Adopt])
            }
            // Judged once the peer's OPEN on the current connection names it.
            (S::OpenSent, E::Incoming) => {
                let mut out = Vec::new();
                if self.held {
                    out.push(Action::CloseHeld);
                }
                self.held = true;
                out.push(Action::Hold);
                out
            }
            (S::OpenConfirm, E::Incoming) => {
                if self.new_wins() {
                    self.open_sent(vec![Action::Yield, Action::Adopt])
                } else {
                    vec![Action::Reject]
                }
            }
            // RFC 4271 §6.8: an Established session stays.
            (S::Established, E::Incoming) => vec![Action::Reject],
            (S::OpenSent, E::Open(o)) => match self.check_open(&o) {
                Ok(n) => {
                    self.negotiated = Some(n.clone());
                    if self.held {
                        self.held = false;
                        if self.new_wins() {
                            self.negotiated = None;
                            self.ours = false;
                            return self.open_sent(vec![Action::Yield, Action::Promote]);
                        }
                        let mut out = vec![Action::CloseHeld];
                        out.extend(self.open_confirm(&n));
                        return out;
                    }
                    self.open_confirm(&n)
                }
                Err(notification) => self.fail(notification),
            },
            (S::OpenConfirm, E::Keepalive) => {
                self.state = S::Established;
                let n = self.negotiated.clone();
                let mut out = self.restart_hold();
                if let Some(n) = n {
                    out.push(Action::Up(n));
                }
                out
            }
            (S::Established, E::Keepalive) => self.restart_hold(),
            (S::Established, E::Update | E::RouteRefresh) => {
                let mut out = self.restart_hold();
                out.push(Action::Deliver);
                out
            }
            (S::OpenConfirm | S::Established, E::Expired(Timer::Keepalive)) => {
                let mut out = vec![Action::SendKeepalive];
                if let Some(k) = self
                    .negotiated
                    .as_ref()
                    .map(|n| n.keepalive)
                    .filter(|k| *k > 0)
                {
                    out.push(Action::Arm(
                        Timer::Keepalive,
                        Duration::from_secs(u64::from(k)),
                    ));
                }
                out
            }
            (S::OpenSent | S::OpenConfirm | S::Established, E::Expired(Timer::Hold)) => {
                self.retain_routes();
                self.fail(Notification::new(Code::HoldTimerExpired, 0, Vec::new()))
            }
            (S::OpenSent | S::OpenConfirm | S::Established, E::Malformed(n)) => self.fail(n),
            (S::OpenSent | S::OpenConfirm | S::Established, E::Notification(n)) => {
                // RFC 8538 §4: with the N bit, only a Hard Reset ends the peer's routes.
                if self.negotiated.as_ref().is_some_and(|g| g.hard_reset) && !n.is_hard_reset() {
                    self.retain_routes();
                }
                self.reset(format!("the peer sent {n}"))
            }
            (S::OpenSent | S::OpenConfirm | S::Established, E::ConnectionLost) => {
                self.retain_routes();
                self.reset("the connection closed".into())
            }
            (S::OpenSent | S::OpenConfirm | S::Established, E::PathDown(why)) => self.reset(why),
            // RFC 6608: a message that has no place in the state.
            (S::OpenSent, E::Keepalive | E::Update | E::RouteRefresh) => {
                self.fail(Notification::new(Code::Fsm, 1, Vec::new()))
            }
            (S::OpenConfirm, E::Open(_) | E::Update | E::RouteRefresh) => {
                self.fail(Notification::new(Code::Fsm, 2, Vec::new()))
            }
            (S::Established, E::Open(_)) => self.fail(Notification::new(Code::Fsm, 3, Vec::new())),
            (S::OpenSent | S::OpenConfirm | S::Established, E::Start | E::Connected) => Vec::new(),
            (S::OpenSent | S::OpenConfirm | S::Established, E::Expired(_)) => Vec::new(),
        }
    }

    /// A connection is up (after `first`): send our OPEN and wait for the peer's.
    fn open_sent(&mut self, first: Vec<Action>) -> Vec<Action> {
        self.state = State::OpenSent;
        self.negotiated = None;
        let mut out = first;
        out.extend([
            Action::Disarm(Timer::ConnectRetry),
            Action::SendOpen,
            Action::Arm(Timer::Hold, OPEN_HOLD),
        ]);
        out
    }

    /// The peer's OPEN was accepted: confirm it and run the negotiated timers.
    fn open_confirm(&mut self, n: &Negotiated) -> Vec<Action> {
        self.state = State::OpenConfirm;
        let mut out = vec![Action::SendKeepalive];
        out.extend(self.arm_timers(n));
        out
    }

    /// Whether a connection of the peer's wins against the current one, now that the
    /// peer's identifier is known (OpenConfirm) — see [`new_connection_wins`].
    fn new_wins(&self) -> bool {
        let Some(n) = &self.negotiated else {
            return !self.ours;
        };
        new_connection_wins(
            (self.settings.router_id, self.settings.local_as),
            (n.peer_id, n.peer_as),
            self.ours,
        )
    }

    /// Judges a received OPEN (RFC 4271 §6.2, RFC 6286) and negotiates the capabilities.
    fn check_open(&self, o: &PeerOpen) -> Result<Negotiated, Notification> {
        let s = &self.settings;
        if o.version != 4 {
            // Data: the largest version we support.
            return Err(Notification::new(Code::Open, 1, vec![0, 4]));
        }
        let as_ok = match s.remote_as {
            RemoteAs::Exact(a) => o.asn == a,
            RemoteAs::External => o.asn != s.local_as,
            RemoteAs::Internal => o.asn == s.local_as,
        };
        if !as_ok || o.asn == 0 {
            return Err(Notification::new(Code::Open, 2, Vec::new()));
        }
        let internal = o.asn == s.local_as;
        if o.router_id.is_unspecified() || (internal && o.router_id == s.router_id) {
            return Err(Notification::new(Code::Open, 3, Vec::new()));
        }
        if o.hold_time == 1 || o.hold_time == 2 {
            return Err(Notification::new(Code::Open, 6, Vec::new()));
        }
        let hold = s.hold_time.min(o.hold_time);
        let keepalive = if hold == 0 {
            0
        } else {
            let third = (hold / 3).max(1);
            s.keepalive.map_or(third, |k| k.min(third).max(1))
        };
        let c = &o.capabilities;
        // RFC 4760: a peer that announces no multiprotocol capability speaks IPv4 unicast.
        let any_mp = c.ipv4_unicast || c.ipv6_unicast;
        Ok(Negotiated {
            peer_as: o.asn,
            peer_id: o.router_id,
            hold_time: hold,
            keepalive,
            families: Families {
                ipv4: s.offer.ipv4_unicast && (c.ipv4_unicast || !any_mp),
                ipv6: s.offer.ipv6_unicast && c.ipv6_unicast,
            },
            four_octet_as: c.four_octet_as,
            enhanced_route_refresh: c.enhanced_route_refresh,
            extended_next_hop: s.offer.extended_next_hop && c.extended_next_hop,
            graceful_restart: s.offer.graceful_restart.is_some() && c.graceful_restart.is_some(),
            peer_restart_time: c.graceful_restart.filter(|_| c.graceful_restart_families),
            hard_reset: s.offer.graceful_restart.is_some() && c.graceful_notification,
        })
    }

    fn arm_timers(&self, n: &Negotiated) -> Vec<Action> {
        if n.hold_time == 0 {
            return vec![
                Action::Disarm(Timer::Hold),
                Action::Disarm(Timer::Keepalive),
            ];
        }
        vec![
            Action::Arm(Timer::Hold, Duration::from_secs(u64::from(n.hold_time))),
            Action::Arm(
                Timer::Keepalive,
                Duration::from_secs(u64::from(n.keepalive)),
            ),
        ]
    }

    fn restart_hold(&self) -> Vec<Action> {
        match self.negotiated.as_ref().map(|n| n.hold_time) {
            Some(h) if h > 0 => vec![Action::Arm(Timer::Hold, Duration::from_secs(u64::from(h)))],
            _ => Vec::new(),
        }
    }

    /// `n` as it goes out: inside a Hard Reset where RFC 8538 asks for one.
    fn ending(&self, n: Notification) -> Notification {
        if self.negotiated.as_ref().is_some_and(|g| g.hard_reset) {
            n.hard_reset()
        } else {
            n
        }
    }

    /// Sends `n`, closes, and goes back to Idle.
    fn fail(&mut self, n: Notification) -> Vec<Action> {
        let n = self.ending(n);
        let why = format!("sent {n}");
        let mut out = vec![Action::Send(n)];
        out.extend(self.reset(why));
        out
    }

    /// The session is lost the way a restarting peer loses it (RFC 4724 §4.2: the
    /// connection ends or the hold timer expires): a peer that sent the graceful-restart
    /// capability keeps its routes, stale, for its restart time. Any other end (a
    /// NOTIFICATION either way, BFD, a stop) drops them.
    fn retain_routes(&mut self) {
        if self.state == State::Established {
            self.retain = self.negotiated.as_ref().and_then(|n| n.peer_restart_time);
        }
    }

    /// How long the routes of the session that just went down stay as stale (the peer's
    /// restart time), or None: they go now. Read at [`Action::Down`].
    pub fn retained(&self) -> Option<u16> {
        self.retained
    }

    /// Closes and goes back to Idle — or, when a connection of the peer's is held, goes on
    /// with that one at once (the peer is there and connecting).
    fn reset(&mut self, why: String) -> Vec<Action> {
        self.retained = self.retain.take();
        self.state = State::Idle;
        self.negotiated = None;
        let mut out = vec![
            Action::Close,
            Action::Disarm(Timer::ConnectRetry),
            Action::Disarm(Timer::Hold),
            Action::Disarm(Timer::Keepalive),
            Action::Down(why),
        ];
        if self.held {
            self.held = false;
            self.ours = false;
            out.extend(self.open_sent(vec![Action::Promote]));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            local_as: 65010,
            router_id: "192.0.2.20".parse().unwrap(),
            remote_as: RemoteAs::Exact(65000),
            hold_time: 9,
            keepalive: None,
            passive: false,
            offer: Offer {
                ipv4_unicast: true,
                ipv6_unicast: true,
                extended_next_hop: false,
                graceful_restart: None,
            },
        }
    }

    fn caps(ipv4: bool, ipv6: bool) -> PeerCapabilities {
        PeerCapabilities {
            four_octet_as: true,
            ipv4_unicast: ipv4,
            ipv6_unicast: ipv6,
            route_refresh: true,
            enhanced_route_refresh: true,
            extended_next_hop: false,
            graceful_restart: None,
            graceful_restart_families: false,
            graceful_notification: false,
            long_lived_graceful_restart: false,
            others: Vec::new(),
        }
    }

    fn open(asn: u32, hold: u16) -> PeerOpen {
        PeerOpen {
            version: 4,
            asn,
            hold_time: hold,
            router_id: "192.0.2.1".parse().unwrap(),
            capabilities: caps(true, false),
        }
    }

    fn open_from(id: &str, asn: u32) -> PeerOpen {
        PeerOpen {
            router_id: id.parse().unwrap(),
            ..open(asn, 9)
        }
    }

    /// Drives an FSM to OpenSent.
    fn open_sent(s: Settings) -> Fsm {
        let mut f = Fsm::new(s);
        f.handle(Event::Start);
        f.handle(Event::Connected);
        assert_eq!(f.state(), State::OpenSent);
        f
    }

    #[test]
    fn a_session_comes_up_with_the_smaller_hold_time() {
        let mut f = Fsm::new(settings());
        assert_eq!(
            f.handle(Event::Start),
            vec![
                Action::Connect,
                Action::Arm(Timer::ConnectRetry, CONNECT_RETRY)
            ]
        );
        assert_eq!(
            f.handle(Event::Connected),
            vec![
                Action::Disarm(Timer::ConnectRetry),
                Action::SendOpen,
                Action::Arm(Timer::Hold, OPEN_HOLD)
            ]
        );
        let out = f.handle(Event::Open(open(65000, 90)));
        assert_eq!(
            out,
            vec![
                Action::SendKeepalive,
                Action::Arm(Timer::Hold, Duration::from_secs(9)),
                Action::Arm(Timer::Keepalive, Duration::from_secs(3)),
            ]
        );
        assert_eq!(f.state(), State::OpenConfirm);
        let out = f.handle(Event::Keepalive);
        assert_eq!(f.state(), State::Established);
        assert!(out.contains(&Action::Up(Negotiated {
            peer_as: 65000,
            peer_id: "192.0.2.1".parse().unwrap(),
            hold_time: 9,
            keepalive: 3,
            families: Families {
                ipv4: true,
                ipv6: false
            },
            four_octet_as: true,
            enhanced_route_refresh: true,
            extended_next_hop: false,
            graceful_restart: false,
            peer_restart_time: None,
            hard_reset: false,
        })));
        // Traffic keeps the hold timer going; updates go to the speaker.
        assert_eq!(
            f.handle(Event::Update),
            vec![
                Action::Arm(Timer::Hold, Duration::from_secs(9)),
                Action::Deliver
            ]
        );
    }

    /// RFC 4271 §6.2: what a bad OPEN gets.
    #[test]
    fn bad_opens_get_the_prescribed_notification() {
        let cases: Vec<(PeerOpen, Vec<u8>)> = vec![
            (
                PeerOpen {
                    version: 3,
                    ..open(65000, 9)
                },
                vec![2, 1, 0, 4],
            ),
            (open(65001, 9), vec![2, 2]),
            (open(65000, 1), vec![2, 6]),
            (open(65000, 2), vec![2, 6]),
            (
                PeerOpen {
                    router_id: Ipv4Addr::UNSPECIFIED,
                    ..open(65000, 9)
                },
                vec![2, 3],
            ),
        ];
        for (o, want) in cases {
            let mut f = open_sent(settings());
            let out = f.handle(Event::Open(o.clone()));
            let Some(Action::Send(n)) = out.first() else {
                panic!("no NOTIFICATION for {o:?}: {out:?}");
            };
            assert_eq!(n.body(), want, "for {o:?}");
            assert!(out.contains(&Action::Close));
            assert_eq!(f.state(), State::Idle);
        }
        // Internal peers must not share our identifier.
        let mut s = settings();
        s.remote_as = RemoteAs::Internal;
        let mut f = open_sent(s);
        let same_id = PeerOpen {
            router_id: "192.0.2.20".parse().unwrap(),
            ..open(65010, 9)
        };
        let out = f.handle(Event::Open(same_id));
        assert!(matches!(out.first(), Some(Action::Send(n)) if n.body() == vec![2, 3]));
        // External: any AS but ours.
        let mut s = settings();
        s.remote_as = RemoteAs::External;
        let mut f = open_sent(s.clone());
        assert!(
            matches!(f.handle(Event::Open(open(65010, 9))).first(), Some(Action::Send(n)) if n.body() == vec![2, 2])
        );
        let mut f = open_sent(s);
        f.handle(Event::Open(open(64999, 9)));
        assert_eq!(f.state(), State::OpenConfirm);
    }

    #[test]
    fn hold_time_zero_means_no_keepalives_and_no_hold_timer() {
        let mut f = open_sent(settings());
        let out = f.handle(Event::Open(open(65000, 0)));
        assert_eq!(
            out,
            vec![
                Action::SendKeepalive,
                Action::Disarm(Timer::Hold),
                Action::Disarm(Timer::Keepalive)
            ]
        );
        assert_eq!(f.negotiated().unwrap().keepalive, 0);
    }

    #[test]
    fn the_hold_timer_expiring_closes_with_code_4() {
        let mut f = open_sent(settings());
        f.handle(Event::Open(open(65000, 9)));
        f.handle(Event::Keepalive);
        let out = f.handle(Event::Expired(Timer::Hold));
        assert!(matches!(out.first(), Some(Action::Send(n)) if n.body() == vec![4, 0]));
        assert!(matches!(out.last(), Some(Action::Down(_))));
        assert_eq!(f.state(), State::Idle);
    }

    /// RFC 6608: unexpected messages per state.
    #[test]
    fn unexpected_messages_get_fsm_errors() {
        let mut f = open_sent(settings());
        assert!(
            matches!(f.handle(Event::Update).first(), Some(Action::Send(n)) if n.body() == vec![5, 1])
        );
        let mut f = open_sent(settings());
        f.handle(Event::Open(open(65000, 9)));
        assert!(
            matches!(f.handle(Event::Update).first(), Some(Action::Send(n)) if n.body() == vec![5, 2])
        );
        let mut f = open_sent(settings());
        f.handle(Event::Open(open(65000, 9)));
        f.handle(Event::Keepalive);
        assert!(
            matches!(f.handle(Event::Open(open(65000, 9))).first(), Some(Action::Send(n)) if n.body() == vec![5, 3])
        );
    }

    #[test]
    fn a_stop_sends_cease_with_the_reason_only_when_connected() {
        let stop = || Event::Stop {
            subcode: 2,
            reason: "drain".into(),
        };
        let mut f = Fsm::new(settings());
        f.handle(Event::Start);
        let out = f.handle(stop());
        assert!(!out.iter().any(|a| matches!(a, Action::Send(_))), "{out:?}");
        let mut f = open_sent(settings());
        f.handle(Event::Open(open(65000, 9)));
        f.handle(Event::Keepalive);
        let out = f.handle(stop());
        let Some(Action::Send(n)) = out.first() else {
            panic!("{out:?}")
        };
        assert_eq!(n.shutdown_text().as_deref(), Some("drain"));
        assert_eq!(f.state(), State::Idle);
    }

    #[test]
    fn a_failed_connect_waits_in_active_and_retries() {
        let mut f = Fsm::new(settings());
        f.handle(Event::Start);
        assert_eq!(f.handle(Event::ConnectionLost), vec![Action::Listen]);
        assert_eq!(f.state(), State::Active);
        assert_eq!(
            f.handle(Event::Expired(Timer::ConnectRetry)),
            vec![
                Action::Connect,
                Action::Arm(Timer::ConnectRetry, CONNECT_RETRY)
            ]
        );
        assert_eq!(f.state(), State::Connect);
        // A passive neighbor never connects.
        let mut s = settings();
        s.passive = true;
        let mut f = Fsm::new(s);
        assert_eq!(f.handle(Event::Start), vec![Action::Listen]);
        assert_eq!(f.state(), State::Active);
    }

    #[test]
    fn malformed_input_and_peer_notifications_close_the_session() {
        let mut f = open_sent(settings());
        let bad = Notification::new(Code::MessageHeader, 1, Vec::new());
        let out = f.handle(Event::Malformed(bad.clone()));
        assert_eq!(out.first(), Some(&Action::Send(bad)));
        assert_eq!(f.state(), State::Idle);
        let mut f = open_sent(settings());
        let out = f.handle(Event::Notification(Notification::cease(2, "bye")));
        assert!(!out.iter().any(|a| matches!(a, Action::Send(_))));
        assert!(matches!(out.last(), Some(Action::Down(w)) if w.contains("bye")));
    }

    /// Families and options: what both sides announced, and RFC 4760's default.
    #[test]
    fn capabilities_are_negotiated_from_both_opens() {
        let cases: Vec<(&str, Offer, PeerCapabilities, Families, bool)> = vec![
            (
                "both families on both sides",
                settings().offer,
                caps(true, true),
                Families {
                    ipv4: true,
                    ipv6: true,
                },
                false,
            ),
            (
                "no multiprotocol capability means IPv4 unicast",
                settings().offer,
                caps(false, false),
                Families {
                    ipv4: true,
                    ipv6: false,
                },
                false,
            ),
            (
                "an IPv6-only peer gets no IPv4",
                settings().offer,
                caps(false, true),
                Families {
                    ipv4: false,
                    ipv6: true,
                },
                false,
            ),
            (
                "extended next hop needs both sides",
                Offer {
                    extended_next_hop: true,
                    ..settings().offer
                },
                PeerCapabilities {
                    extended_next_hop: true,
                    ..caps(true, true)
                },
                Families {
                    ipv4: true,
                    ipv6: true,
                },
                true,
            ),
            (
                "offered by us only",
                Offer {
                    extended_next_hop: true,
                    ..settings().offer
                },
                caps(true, true),
                Families {
                    ipv4: true,
                    ipv6: true,
                },
                false,
            ),
            (
                "offered by the peer only",
                settings().offer,
                PeerCapabilities {
                    extended_next_hop: true,
                    ..caps(true, true)
                },
                Families {
                    ipv4: true,
                    ipv6: true,
                },
                false,
            ),
        ];
        for (name, offer, peer, families, enh) in cases {
            let mut f = open_sent(Settings {
                offer,
                ..settings()
            });
            f.handle(Event::Open(PeerOpen {
                capabilities: peer,
                ..open(65000, 9)
            }));
            let n = f.negotiated().unwrap();
            assert_eq!(n.families, families, "{name}");
            assert_eq!(n.extended_next_hop, enh, "{name}");
        }
        // Enhanced route refresh and 4-octet AS follow the peer.
        let mut f = open_sent(settings());
        let old = PeerCapabilities {
            enhanced_route_refresh: false,
            four_octet_as: false,
            ..caps(true, false)
        };
        f.handle(Event::Open(PeerOpen {
            capabilities: old,
            ..open(65000, 9)
        }));
        let n = f.negotiated().unwrap();
        assert!(!n.enhanced_route_refresh && !n.four_octet_as);
        // Graceful restart (RFC 4724): only when both sides sent the capability.
        let gr = Some(GracefulRestart {
            time: 120,
            restarting: false,
            forwarding: true,
            long_lived_stale_time: 0,
        });
        for (ours, theirs, want) in [
            (gr, Some(90), true),
            (gr, None, false),
            (None, Some(90), false),
            (None, None, false),
        ] {
            let mut f = open_sent(Settings {
                offer: Offer {
                    graceful_restart: ours,
                    ..settings().offer
                },
                ..settings()
            });
            f.handle(Event::Open(PeerOpen {
                capabilities: PeerCapabilities {
                    graceful_restart: theirs,
                    ..caps(true, true)
                },
                ..open(65000, 9)
            }));
            let n = f.negotiated().unwrap();
            assert_eq!(n.graceful_restart, want, "ours {ours:?}, theirs {theirs:?}");
        }
    }

    #[test]
    fn a_collision_keeps_the_connection_of_the_higher_identifier() {
        let ours: Ipv4Addr = "192.0.2.20".parse().unwrap();
        let lower = "10.9.9.9".parse().unwrap();
        let higher = "203.0.113.250".parse().unwrap();
        let me = (ours, 65010);
        // kube-gw opened the current connection: the peer's new one wins only if the
        // peer's identifier is higher.
        assert!(!new_connection_wins(me, (lower, 65000), true));
        assert!(new_connection_wins(me, (higher, 65000), true));
        // Equal identifiers (RFC 6286): the larger AS's connection stays.
        assert!(new_connection_wins(me, (ours, 65020), true));
        assert!(!new_connection_wins(me, (ours, 65000), true));
        // The current one is the peer's own too: the newer one is the peer's present.
        assert!(new_connection_wins(me, (lower, 65000), false));
    }

    /// RFC 4271 §6.8 as the session sees it: a connection of the peer's arrives in each
    /// state; what happens to it and to the current one.
    #[test]
    fn a_peer_connection_is_adopted_held_or_refused_by_state() {
        let opened = [
            Action::Disarm(Timer::ConnectRetry),
            Action::SendOpen,
            Action::Arm(Timer::Hold, OPEN_HOLD),
        ];
        let with = |first: &[Action]| -> Vec<Action> {
            first
                .iter()
                .cloned()
                .chain(opened.iter().cloned())
                .collect()
        };
        // No connection yet (waiting between attempts, or passive): adopted.
        let mut f = Fsm::new(Settings {
            passive: true,
            ..settings()
        });
        f.handle(Event::Start);
        assert_eq!(f.handle(Event::Incoming), with(&[Action::Adopt]));
        assert_eq!(f.state(), State::OpenSent);
        // The current connection is the peer's too: the newer replaces it.
        assert_eq!(
            f.handle(Event::Incoming),
            with(&[Action::Yield, Action::Adopt])
        );
        // Our own connection waits for the peer's OPEN: the new one is held; a second one
        // replaces the first held one.
        let mut f = open_sent(settings());
        assert_eq!(f.handle(Event::Incoming), vec![Action::Hold]);
        assert_eq!(
            f.handle(Event::Incoming),
            vec![Action::CloseHeld, Action::Hold]
        );
        // Established: the session stays, the newcomer is refused.
        let mut f = open_sent(settings());
        f.handle(Event::Open(open(65000, 9)));
        f.handle(Event::Keepalive);
        assert_eq!(f.handle(Event::Incoming), vec![Action::Reject]);
        assert_eq!(f.state(), State::Established);
    }

    #[test]
    fn a_held_connection_is_judged_when_the_peer_s_open_names_it() {
        // Our identifier 192.0.2.20. A peer with a higher one: its connection wins, ours
        // is closed with Cease 6/7 and the session goes on with the peer's.
        let mut f = open_sent(settings());
        f.handle(Event::Incoming);
        let out = f.handle(Event::Open(open_from("203.0.113.250", 65000)));
        assert_eq!(
            out,
            vec![
                Action::Yield,
                Action::Promote,
                Action::Disarm(Timer::ConnectRetry),
                Action::SendOpen,
                Action::Arm(Timer::Hold, OPEN_HOLD)
            ]
        );
        assert_eq!(f.state(), State::OpenSent);
        assert!(
            f.negotiated().is_none(),
            "the OPEN on the closed connection counts no more"
        );
        // The promoted connection is the peer's: its OPEN brings the session up.
        f.handle(Event::Open(open_from("203.0.113.250", 65000)));
        assert_eq!(f.state(), State::OpenConfirm);
        // A peer with a lower identifier: ours stays, the held one is closed.
        let mut f = open_sent(settings());
        f.handle(Event::Incoming);
        let out = f.handle(Event::Open(open_from("10.9.9.9", 65000)));
        assert_eq!(out.first(), Some(&Action::CloseHeld));
        assert!(out.contains(&Action::SendKeepalive));
        assert_eq!(f.state(), State::OpenConfirm);
        // In OpenConfirm the identifier is known: judged at once.
        let mut f = open_sent(settings());
        f.handle(Event::Open(open_from("10.9.9.9", 65000)));
        assert_eq!(f.handle(Event::Incoming), vec![Action::Reject]);
        let mut f = open_sent(settings());
        f.handle(Event::Open(open_from("203.0.113.250", 65000)));
        let out = f.handle(Event::Incoming);
        assert_eq!(&out[..2], &[Action::Yield, Action::Adopt]);
        assert_eq!(f.state(), State::OpenSent);
    }

    #[test]
    fn a_lost_connection_or_hold_expiry_keeps_a_restarting_peer_s_routes_a_notification_does_not() {
        let up = |families: bool| {
            let mut f = open_sent(settings());
            let mut o = open(65000, 9);
            o.capabilities.graceful_restart = Some(90);
            o.capabilities.graceful_restart_families = families;
            f.handle(Event::Open(o));
            f.handle(Event::Keepalive);
            assert_eq!(f.state(), State::Established);
            f
        };
        let mut f = up(true);
        f.handle(Event::ConnectionLost);
        assert_eq!(f.retained(), Some(90));
        let mut f = up(true);
        f.handle(Event::Expired(Timer::Hold));
        assert_eq!(f.retained(), Some(90));
        let mut f = up(true);
        f.handle(Event::Notification(Notification::new(
            Code::Cease,
            2,
            Vec::new(),
        )));
        assert_eq!(f.retained(), None);
        let mut f = up(true);
        f.handle(Event::PathDown("BFD: the path is down".into()));
        assert_eq!(f.retained(), None);
        // Only "aware" (no families in the capability): nothing to keep.
        let mut f = up(false);
        f.handle(Event::ConnectionLost);
        assert_eq!(f.retained(), None);
    }

    #[test]
    fn with_the_n_bit_a_stop_is_a_hard_reset_and_only_a_hard_reset_drops_the_routes() {
        let mut s = settings();
        s.offer.graceful_restart = Some(GracefulRestart {
            time: 120,
            restarting: false,
            forwarding: true,
            long_lived_stale_time: 0,
        });
        let up = |n_bit: bool| {
            let mut f = open_sent(s.clone());
            let mut o = open(65000, 9);
            o.capabilities.graceful_restart = Some(90);
            o.capabilities.graceful_restart_families = true;
            o.capabilities.graceful_notification = n_bit;
            f.handle(Event::Open(o));
            f.handle(Event::Keepalive);
            assert_eq!(f.state(), State::Established);
            f
        };
        let sent = |out: &[Action]| {
            out.iter()
                .find_map(|a| match a {
                    Action::Send(n) => Some(n.clone()),
                    _ => None,
                })
                .unwrap()
        };
        // A drain's Administrative Shutdown goes inside a Hard Reset (RFC 8538 §5.1)...
        let mut f = up(true);
        let n = sent(&f.handle(Event::Stop {
            subcode: 2,
            reason: "maintenance".into(),
        }));
        assert_eq!((n.code, n.subcode), (Code::Cease, 9));
        assert_eq!(&n.data[..2], &[6, 2], "the original code and subcode first");
        // ...but not without the peer's N bit.
        let mut f = up(false);
        let n = sent(&f.handle(Event::Stop {
            subcode: 2,
            reason: "maintenance".into(),
        }));
        assert_eq!((n.code, n.subcode), (Code::Cease, 2));
        // Received: a NOTIFICATION other than Hard Reset keeps the peer's routes; a Hard
        // Reset does not.
        let mut f = up(true);
        f.handle(Event::Notification(Notification::new(
            Code::Cease,
            4,
            Vec::new(),
        )));
        assert_eq!(f.retained(), Some(90));
        let mut f = up(true);
        f.handle(Event::Notification(Notification::new(
            Code::Cease,
            9,
            vec![6, 2],
        )));
        assert_eq!(f.retained(), None);
    }

    #[test]
    fn a_failure_with_a_held_connection_goes_on_with_it_and_a_stop_closes_both() {
        let mut f = open_sent(settings());
        f.handle(Event::Incoming);
        let out = f.handle(Event::ConnectionLost);
        assert!(matches!(out.get(4), Some(Action::Down(_))), "{out:?}");
        assert_eq!(out.get(5), Some(&Action::Promote));
        assert_eq!(f.state(), State::OpenSent);
        let mut f = open_sent(settings());
        f.handle(Event::Incoming);
        let out = f.handle(Event::Stop {
            subcode: 2,
            reason: "bye".into(),
        });
        assert!(
            out.contains(&Action::CloseHeld) && !out.contains(&Action::Promote),
            "{out:?}"
        );
        assert_eq!(f.state(), State::Idle);
    }

    #[test]
    fn a_dead_path_closes_at_once_without_a_notification() {
        let mut f = open_sent(settings());
        f.handle(Event::Open(open(65000, 9)));
        f.handle(Event::Keepalive);
        let out = f.handle(Event::PathDown(
            "BFD: control detection time expired".into(),
        ));
        assert!(!out.iter().any(|a| matches!(a, Action::Send(_))), "{out:?}");
        assert_eq!(out.first(), Some(&Action::Close));
        assert!(matches!(out.last(), Some(Action::Down(w)) if w.starts_with("BFD")));
        assert_eq!(f.state(), State::Idle);
    }
}
