//! The BGP finite state machine of one session (RFC 4271 §8), without I/O: events in
//! (connection changes, decoded messages, timer expiries, operator commands), actions out
//! (connect, send, arm a timer, report). The session task does the I/O and the clock; this
//! is what it consults, and what the table tests drive.
//!
//! ```text
//!   Idle ─start─► Connect ⇄ Active ─TCP up─► OpenSent ─OPEN ok─► OpenConfirm ─KEEPALIVE─► Established
//!    ▲                                          │                    │                        │
//!    └──────── any error: NOTIFICATION (if a connection is up), close, back to Idle ◄────────┘
//!              (the session task restarts it after the connect-retry delay)
//! ```
//!
//! OPEN checks (RFC 4271 §6.2): version 4; the peer's AS as configured (or external/internal
//! as asked); a BGP identifier that is not 0 and, for internal peers, not ours (RFC 6286);
//! hold time 0 or at least 3. The hold time is the smaller of both; keepalives every third
//! of it (or the configured keepalive when smaller). Collision detection between two
//! connections to the same peer is the session task's: it keeps one FSM per connection.

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
}

/// The parts of a received OPEN the FSM judges (decoded elsewhere).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerOpen {
    pub version: u8,
    /// The peer's AS: the 4-octet AS capability's value, else the 2-octet field.
    pub asn: u32,
    pub hold_time: u16,
    pub router_id: Ipv4Addr,
}

/// What both sides agreed on, handed out when the session is established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub peer_as: u32,
    pub peer_id: Ipv4Addr,
    pub hold_time: u16,
    pub keepalive: u16,
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
    /// A TCP connection is up (ours or the peer's).
    Connected,
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
}

impl Fsm {
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            state: State::Idle,
            negotiated: None,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
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
            (S::Idle, _) => Vec::new(),
            (_, E::Stop { subcode, reason }) => {
                let connected = matches!(self.state, S::OpenSent | S::OpenConfirm | S::Established);
                let mut out = Vec::new();
                if connected {
                    out.push(Action::Send(Notification::cease(subcode, &reason)));
                }
                out.extend(self.reset(format!("stopped: {reason}")));
                out
            }
            (S::Connect | S::Active, E::Connected) => {
                self.state = S::OpenSent;
                vec![
                    Action::Disarm(Timer::ConnectRetry),
                    Action::SendOpen,
                    Action::Arm(Timer::Hold, OPEN_HOLD),
                ]
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
            (S::OpenSent, E::Open(o)) => match self.check_open(&o) {
                Ok(n) => {
                    self.state = S::OpenConfirm;
                    let mut out = vec![Action::SendKeepalive];
                    out.extend(self.arm_timers(&n));
                    self.negotiated = Some(n);
                    out
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
                self.fail(Notification::new(Code::HoldTimerExpired, 0, Vec::new()))
            }
            (S::OpenSent | S::OpenConfirm | S::Established, E::Malformed(n)) => self.fail(n),
            (S::OpenSent | S::OpenConfirm | S::Established, E::Notification(n)) => {
                self.reset(format!("the peer sent {n}"))
            }
            (S::OpenSent | S::OpenConfirm | S::Established, E::ConnectionLost) => {
                self.reset("the connection closed".into())
            }
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

    /// Judges a received OPEN (RFC 4271 §6.2, RFC 6286).
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
        Ok(Negotiated {
            peer_as: o.asn,
            peer_id: o.router_id,
            hold_time: hold,
            keepalive,
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

    /// Sends `n`, closes, and goes back to Idle.
    fn fail(&mut self, n: Notification) -> Vec<Action> {
        let why = format!("sent {n}");
        let mut out = vec![Action::Send(n)];
        out.extend(self.reset(why));
        out
    }

    /// Closes and goes back to Idle.
    fn reset(&mut self, why: String) -> Vec<Action> {
        self.state = State::Idle;
        self.negotiated = None;
        vec![
            Action::Close,
            Action::Disarm(Timer::ConnectRetry),
            Action::Disarm(Timer::Hold),
            Action::Disarm(Timer::Keepalive),
            Action::Down(why),
        ]
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
        }
    }

    fn open(asn: u32, hold: u16) -> PeerOpen {
        PeerOpen {
            version: 4,
            asn,
            hold_time: hold,
            router_id: "192.0.2.1".parse().unwrap(),
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
            keepalive: 3
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
}
