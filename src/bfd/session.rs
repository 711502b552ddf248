//! One BFD session (RFC 5880 asynchronous mode, RFC 5881 single hop, RFC 5883 multihop) as
//! a pure state machine: inputs (a received packet, the transmit or detection timer, the
//! operator) in, actions (send, arm a timer, report a state change) out. The I/O shell
//! ([`super::service`]) owns the sockets and the clock and applies the transmit jitter.
//!
//! ```text
//!             ┌──── remote Down ────┐
//!   AdminDown │                     ▼
//!   ◄─admin─ Down ─remote Down─► Init ─remote Init/Up─► Up
//!            ▲  └──remote Init──────────────────────────►│
//!            └── detection time expired, remote Down/AdminDown ┘
//! ```
//!
//! Timers (RFC 5880 §6.8.2–§6.8.4): while not Up the session advertises a Desired Min TX
//! of at least one second (slow start); a change of what it advertises starts a Poll
//! Sequence (P until the peer answers F), and an increase of the transmit interval or a
//! decrease of the receive interval takes effect only when the Poll Sequence ends. The
//! transmit interval is the larger of our Desired Min TX and the peer's Required Min RX;
//! the detection time is the peer's Detect Mult times the larger of our Required Min RX and
//! the peer's Desired Min TX. A packet with P is answered at once with F.
//!
//! The C (Control Plane Independent) bit: kube-gw's BFD runs in the daemon's process and
//! stops with it, so it is not independent of the control plane and sends C = 0. A peer
//! doing graceful restart (BIRD `bfd graceful`, FRR `check-control-plane-failure`) can
//! then treat a BFD Down during kube-gw's restart as the control plane restarting, not the
//! path failing.

use std::time::Duration;

use super::packet::{Diag, Packet, State};

/// One second, in microseconds: the least Desired Min TX while not Up (RFC 5880 §6.8.3).
const SLOW: u32 = 1_000_000;

/// The session's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Microseconds.
    pub desired_min_tx: u32,
    /// Microseconds.
    pub required_min_rx: u32,
    pub detect_mult: u8,
}

/// What the peer last said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remote {
    pub disc: u32,
    pub state: State,
    pub diag: Diag,
    pub detect_mult: u8,
    /// Microseconds.
    pub desired_min_tx: u32,
    /// Microseconds; 0: it wants no packets.
    pub required_min_rx: u32,
}

/// Inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// A packet for this session (decoded and checked by [`Packet::decode`]).
    Received(Packet),
    /// The transmit timer fired.
    TxTimer,
    /// The detection timer fired.
    DetectTimer,
    /// The operator takes the session administratively down, or back.
    AdminDown,
    AdminUp,
}

/// Outputs, in the order to carry them out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Send(Packet),
    /// Arm the periodic transmit timer: this interval, less the jitter (75–100 %, 75–90 %
    /// with a Detect Mult of 1), from now.
    ArmTx(Duration),
    /// Do not transmit periodically (the peer's Required Min RX is 0).
    StopTx,
    /// (Re)arm the detection timer: this long from now, without jitter.
    ArmDetect(Duration),
    DisarmDetect,
    /// The state changed: from, to, and our diagnostic.
    Changed {
        from: State,
        to: State,
        diag: Diag,
    },
}

/// One session's state machine.
#[derive(Debug, Clone)]
pub struct Session {
    cfg: Config,
    local_disc: u32,
    state: State,
    diag: Diag,
    remote: Option<Remote>,
    /// A Poll Sequence is under way.
    poll: bool,
    /// The Desired Min TX and Required Min RX in force (they lag what is advertised during a
    /// Poll Sequence, in the direction RFC 5880 §6.8.3 says).
    tx_in_force: u32,
    rx_in_force: u32,
}

impl Session {
    /// A session in Down with discriminator `local_disc` (unique and non-zero per system).
    pub fn new(cfg: Config, local_disc: u32) -> Self {
        let mut s = Self {
            cfg,
            local_disc,
            state: State::Down,
            diag: Diag::None,
            remote: None,
            poll: false,
            tx_in_force: 0,
            rx_in_force: cfg.required_min_rx,
        };
        s.tx_in_force = s.advertised_tx();
        s
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn diag(&self) -> Diag {
        self.diag
    }

    pub fn remote(&self) -> Option<&Remote> {
        self.remote.as_ref()
    }

    pub fn local_disc(&self) -> u32 {
        self.local_disc
    }

    pub fn polling(&self) -> bool {
        self.poll
    }

    /// What the session starts with: a first packet and the transmit timer.
    pub fn start(&mut self) -> Vec<Action> {
        vec![
            Action::Send(self.packet(false)),
            Action::ArmTx(self.tx_interval()),
        ]
    }

    /// The Desired Min TX we advertise: at least a second while not Up.
    fn advertised_tx(&self) -> u32 {
        if self.state == State::Up {
            self.cfg.desired_min_tx
        } else {
            self.cfg.desired_min_tx.max(SLOW)
        }
    }

    /// The periodic transmit interval (RFC 5880 §6.8.2).
    pub fn tx_interval(&self) -> Duration {
        let remote_rx = self.remote.map_or(1, |r| r.required_min_rx);
        Duration::from_micros(u64::from(self.tx_in_force.max(remote_rx)))
    }

    /// The detection time (RFC 5880 §6.8.4), once the peer has been heard.
    pub fn detection_time(&self) -> Option<Duration> {
        let r = self.remote?;
        let per = u64::from(self.rx_in_force.max(r.desired_min_tx));
        Some(Duration::from_micros(u64::from(r.detect_mult) * per))
    }

    /// The packet we send now (Final when answering a Poll).
    pub fn packet(&self, final_: bool) -> Packet {
        Packet {
            diag: self.diag,
            state: self.state,
            poll: self.poll && !final_,
            final_,
            cpi: false,
            demand: false,
            detect_mult: self.cfg.detect_mult,
            my_disc: self.local_disc,
            your_disc: self.remote.map_or(0, |r| r.disc),
            desired_min_tx: self.advertised_tx(),
            required_min_rx: self.cfg.required_min_rx,
            required_min_echo_rx: 0,
        }
    }

    /// Feeds one input; returns what to do.
    pub fn handle(&mut self, input: Input) -> Vec<Action> {
        match input {
            Input::Received(p) => self.receive(p),
            Input::TxTimer => {
                if self.remote.is_some_and(|r| r.required_min_rx == 0) {
                    return vec![Action::StopTx];
                }
                vec![
                    Action::Send(self.packet(false)),
                    Action::ArmTx(self.tx_interval()),
                ]
            }
            Input::DetectTimer => {
                let mut out = Vec::new();
                if matches!(self.state, State::Init | State::Up) {
                    out.extend(self.change(State::Down, Diag::ControlDetectionTimeExpired));
                }
                // The peer is gone: forget it (our packets say your discriminator 0).
                self.remote = None;
                out.push(Action::DisarmDetect);
                out.push(Action::ArmTx(self.tx_interval()));
                out
            }
            Input::AdminDown => {
                if self.state == State::AdminDown {
                    return Vec::new();
                }
                let mut out = self.change(State::AdminDown, Diag::AdministrativelyDown);
                out.push(Action::DisarmDetect);
                out
            }
            Input::AdminUp => {
                if self.state != State::AdminDown {
                    return Vec::new();
                }
                self.change(State::Down, Diag::None)
            }
        }
    }

    /// RFC 5880 §6.8.6, after the checks [`Packet::decode`] makes.
    fn receive(&mut self, p: Packet) -> Vec<Action> {
        let mut out = Vec::new();
        let old_remote_rx = self.remote.map(|r| r.required_min_rx);
        self.remote = Some(Remote {
            disc: p.my_disc,
            state: p.state,
            diag: p.diag,
            detect_mult: p.detect_mult,
            desired_min_tx: p.desired_min_tx,
            required_min_rx: p.required_min_rx,
        });
        // The peer answered our Poll: what we advertise is now in force.
        if self.poll && p.final_ {
            self.poll = false;
            self.tx_in_force = self.advertised_tx();
            self.rx_in_force = self.cfg.required_min_rx;
            out.push(Action::ArmTx(self.tx_interval()));
        } else if old_remote_rx != Some(p.required_min_rx) {
            // The peer's Required Min RX counts at once (RFC 5880 §6.8.2).
            out.push(if p.required_min_rx == 0 {
                Action::StopTx
            } else {
                Action::ArmTx(self.tx_interval())
            });
        }
        if self.state == State::AdminDown {
            return out;
        }
        if let Some(d) = self.detection_time() {
            out.push(Action::ArmDetect(d));
        }
        let next = match (self.state, p.state) {
            (State::Init | State::Up, State::AdminDown) => {
                Some((State::Down, Diag::NeighborSignaledSessionDown))
            }
            (State::Down, State::Down) => Some((State::Init, Diag::None)),
            (State::Down, State::Init) | (State::Init, State::Init | State::Up) => {
                Some((State::Up, Diag::None))
            }
            (State::Up, State::Down) => Some((State::Down, Diag::NeighborSignaledSessionDown)),
            _ => None,
        };
        if let Some((to, diag)) = next {
            out.extend(self.change(to, diag));
        }
        if p.poll {
            out.push(Action::Send(self.packet(true)));
        }
        out
    }

    /// Moves to `to` with `diag`: says so, tells the peer at once, and starts a Poll
    /// Sequence when what we advertise changes (into or out of Up).
    fn change(&mut self, to: State, diag: Diag) -> Vec<Action> {
        let from = self.state;
        let advertised = self.advertised_tx();
        self.state = to;
        // Our diagnostic says why we last left Up (or went down); coming up clears it.
        if to == State::Up || diag != Diag::None {
            self.diag = diag;
        }
        let now_advertised = self.advertised_tx();
        if now_advertised != advertised {
            self.poll = true;
            // A faster rate counts at once; a slower one after the Poll Sequence.
            if now_advertised < self.tx_in_force {
                self.tx_in_force = now_advertised;
            }
        }
        vec![
            Action::Changed { from, to, diag },
            Action::Send(self.packet(false)),
            Action::ArmTx(self.tx_interval()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u32 = 1000;

    fn cfg() -> Config {
        Config {
            desired_min_tx: 300 * MS,
            required_min_rx: 300 * MS,
            detect_mult: 3,
        }
    }

    /// The peer's packet: its state, discriminator 77, its timers (at least 1 s while it
    /// is not Up, as RFC 5880 §6.8.3 has it).
    fn peer(state: State, your_disc: u32) -> Packet {
        let desired_min_tx = if state == State::Up {
            300 * MS
        } else {
            1_000 * MS
        };
        Packet {
            diag: Diag::None,
            state,
            poll: false,
            final_: false,
            cpi: false,
            demand: false,
            detect_mult: 3,
            my_disc: 77,
            your_disc,
            desired_min_tx,
            required_min_rx: 300 * MS,
            required_min_echo_rx: 0,
        }
    }

    fn changes(out: &[Action]) -> Vec<(State, State)> {
        out.iter()
            .filter_map(|a| match a {
                Action::Changed { from, to, .. } => Some((*from, *to)),
                _ => None,
            })
            .collect()
    }

    fn sent(out: &[Action]) -> Vec<Packet> {
        out.iter()
            .filter_map(|a| match a {
                Action::Send(p) => Some(*p),
                _ => None,
            })
            .collect()
    }

    /// Brings a session up through the three-way handshake; returns it.
    fn up() -> Session {
        let mut s = Session::new(cfg(), 5);
        s.start();
        s.handle(Input::Received(peer(State::Down, 0)));
        s.handle(Input::Received(peer(State::Up, 5)));
        assert_eq!(s.state(), State::Up);
        s
    }

    #[test]
    fn the_three_way_handshake_comes_up_at_the_slow_rate_then_polls_to_the_fast_one() {
        let mut s = Session::new(cfg(), 5);
        let out = s.start();
        let first = sent(&out)[0];
        assert_eq!((first.state, first.your_disc), (State::Down, 0));
        assert_eq!(
            first.desired_min_tx, 1_000_000,
            "slow start: at least 1 s while not Up"
        );
        assert_eq!(out[1], Action::ArmTx(Duration::from_secs(1)));
        // The peer is Down: we go Init and tell it (with its discriminator).
        let out = s.handle(Input::Received(peer(State::Down, 0)));
        assert_eq!(changes(&out), [(State::Down, State::Init)]);
        assert_eq!(sent(&out)[0].your_disc, 77);
        assert!(
            out.contains(&Action::ArmDetect(Duration::from_secs(3))),
            "{out:?}"
        );
        // The peer is Init: Up. What we advertise drops to 300 ms: a Poll Sequence, and
        // the faster rate is used at once.
        let out = s.handle(Input::Received(peer(State::Init, 5)));
        assert_eq!(changes(&out), [(State::Init, State::Up)]);
        let p = sent(&out)[0];
        assert!(p.poll && p.desired_min_tx == 300 * MS, "{p:?}");
        assert!(
            out.contains(&Action::ArmTx(Duration::from_millis(300))),
            "{out:?}"
        );
        // Periodic packets keep P until the peer's F.
        assert!(sent(&s.handle(Input::TxTimer))[0].poll);
        let fin = Packet {
            final_: true,
            ..peer(State::Up, 5)
        };
        s.handle(Input::Received(fin));
        assert!(!s.polling());
        assert!(!sent(&s.handle(Input::TxTimer))[0].poll);
        assert_eq!(s.detection_time(), Some(Duration::from_millis(900)));
    }

    #[test]
    fn silence_for_the_detection_time_takes_it_down_with_diag_1() {
        let mut s = up();
        let out = s.handle(Input::DetectTimer);
        assert_eq!(changes(&out), [(State::Up, State::Down)]);
        assert_eq!(s.diag(), Diag::ControlDetectionTimeExpired);
        let p = sent(&out)[0];
        assert_eq!((p.state, p.diag.code(), p.your_disc), (State::Down, 1, 77));
        assert!(out.contains(&Action::DisarmDetect));
        assert!(s.remote().is_none(), "the peer is forgotten");
        assert_eq!(s.packet(false).your_disc, 0);
        // Back at the slow rate, and the change is polled.
        assert_eq!(s.packet(false).desired_min_tx, 1_000_000);
        assert!(s.polling());
    }

    #[test]
    fn the_peer_going_down_or_admin_down_takes_it_down_with_diag_3() {
        for remote in [State::Down, State::AdminDown] {
            let mut s = up();
            let out = s.handle(Input::Received(peer(remote, 5)));
            assert_eq!(changes(&out), [(State::Up, State::Down)], "{remote:?}");
            assert_eq!(s.diag(), Diag::NeighborSignaledSessionDown);
        }
        // In Down, the peer's AdminDown changes nothing.
        let mut s = Session::new(cfg(), 5);
        assert!(changes(&s.handle(Input::Received(peer(State::AdminDown, 5)))).is_empty());
    }

    #[test]
    fn admin_down_tells_the_peer_and_ignores_it_until_admin_up() {
        let mut s = up();
        let out = s.handle(Input::AdminDown);
        assert_eq!(changes(&out), [(State::Up, State::AdminDown)]);
        let p = sent(&out)[0];
        assert_eq!(
            (p.state, p.diag),
            (State::AdminDown, Diag::AdministrativelyDown)
        );
        assert!(out.contains(&Action::DisarmDetect));
        assert!(changes(&s.handle(Input::Received(peer(State::Up, 5)))).is_empty());
        assert!(s.handle(Input::AdminDown).is_empty());
        let out = s.handle(Input::AdminUp);
        assert_eq!(changes(&out), [(State::AdminDown, State::Down)]);
    }

    #[test]
    fn a_poll_is_answered_at_once_with_final() {
        let mut s = up();
        let p = Packet {
            poll: true,
            desired_min_tx: 500 * MS,
            ..peer(State::Up, 5)
        };
        let out = s.handle(Input::Received(p));
        let f = sent(&out);
        assert_eq!(f.len(), 1);
        assert!(f[0].final_ && !f[0].poll);
        // The peer now sends every 500 ms: our detection time follows at once.
        assert_eq!(s.detection_time(), Some(Duration::from_millis(1500)));
    }

    #[test]
    fn the_transmit_interval_is_the_larger_of_ours_and_the_peer_s_receive_interval() {
        let mut s = up();
        s.handle(Input::Received(Packet {
            final_: true,
            ..peer(State::Up, 5)
        }));
        assert_eq!(s.tx_interval(), Duration::from_millis(300));
        let slow = Packet {
            required_min_rx: 2_000 * MS,
            ..peer(State::Up, 5)
        };
        let out = s.handle(Input::Received(slow));
        assert!(
            out.contains(&Action::ArmTx(Duration::from_secs(2))),
            "{out:?}"
        );
        // The peer wants no packets at all.
        let none = Packet {
            required_min_rx: 0,
            ..peer(State::Up, 5)
        };
        assert!(s.handle(Input::Received(none)).contains(&Action::StopTx));
        assert_eq!(s.handle(Input::TxTimer), [Action::StopTx]);
    }
}
