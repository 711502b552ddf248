//! One neighbor's session task: sockets, timers and framing around the pure parts. It
//! connects (TCP port 179, with the neighbor's MD5 key and GTSM set before the SYN), reads
//! bytes into the [`Framer`], turns messages into [`Fsm`] events, keeps the FSM's timers,
//! carries out its actions, writes what the [`AdjRibOut`] produces, feeds received UPDATEs
//! to the [`AdjRibIn`], and restarts the session after a failure with backoff and jitter.
//! Everything it learns goes to its `watch<NeighborStatus>`.
//!
//! ```text
//!  TCP read ─► Framer ─► decode ───────┐                 ┌─► socket writes (UPDATEs batched
//!  peer's connections (listener) ──────┤                 │   up to 64 KiB per write)
//!  timers (connect-retry, hold, ───────┼─► Fsm::handle ──┼─► AdjRibOut: up, export change,
//!  keepalive)                          │                 │   refresh, drain, close → UPDATEs
//!  stop, drain, pause (speaker) ───────┤                 └─► status (watch<NeighborStatus>)
//!  exported routes (watch) ────────────┘   UPDATE in ─► inbound::check ─► AdjRibIn (max-prefix)
//! ```
//!
//! Decisions live elsewhere: OPEN checks, capability negotiation and collision resolution in
//! the FSM ([`super::fsm`]); what to announce in [`super::rib_out`]; max-prefix in
//! [`super::rib_in`]. This file only carries them out.
//!
//! Every write is bounded by RFC 9687's send hold time (the larger of 8 minutes and twice
//! the hold time): a peer that keeps sending KEEPALIVEs but stops reading gets Send Hold
//! Timer Expired and loses the connection instead of wedging the session. While a write or
//! a connect waits on the peer, the session's heartbeat keeps beating (a slow peer is not a
//! stuck daemon); the loop itself turns at least every second.
//!
//! A stop withdraws and sends Cease; with graceful restart (`Inputs::leave`) it closes
//! without either, so that the peer keeps the routes. Sockets and next hops: [`transport`].

use std::collections::VecDeque;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::fsm::{Action, Event, Fsm, Settings, State, Timer};
use super::inputs::{Channels, Wake};
use super::open::{self, Proposal};
use super::peer::Peer;
use super::rib_in::{AdjRibIn, MAX_PREFIX_HOLD_DOWN};
use super::rib_out::{AdjRibOut, Out};
use super::status::{Dir, NeighborStatus, Report};
use super::transport::{self, send_hold_time};
use super::wire::{self, Framer, Kind, Notification};
use crate::lifecycle::Heartbeat;
use crate::model::Exported;

/// How long a write may take while the session is being stopped (the daemon's stop must
/// not wait minutes for a peer that does not read).
const STOP_SEND_LIMIT: Duration = Duration::from_secs(2);

/// How a session ended.
#[derive(Debug)]
pub(super) enum Ended {
    /// kube-gw is stopping.
    Stopped,
    /// `kube-gw drain`: closed until `kube-gw undrain`.
    Paused,
    /// Try again after the backoff (from the start again if the session had come up).
    Failed { was_up: bool },
    /// Try again only after this long (the peer sent more prefixes than allowed).
    HoldDown(Duration),
}

/// One session from Idle back to Idle.
pub(super) struct Session<'a> {
    peer: &'a Peer,
    status: &'a watch::Sender<NeighborStatus>,
    hb: &'a Heartbeat,
    fsm: Fsm,
    /// The session's connection; a connection of the peer's held until a collision is
    /// judged; one that just arrived, until the FSM says what becomes of it.
    conn: Option<TcpStream>,
    held: Option<TcpStream>,
    incoming: Option<TcpStream>,
    framer: Framer,
    timers: [Option<Instant>; 3],
    pending: VecDeque<Event>,
    rib_out: AdjRibOut,
    rib_in: AdjRibIn,
    /// The exported routes, read when the session comes up (changes come through
    /// [`Inputs::exported`]).
    exported: watch::Receiver<Exported>,
    /// Whether the export is complete (End-of-RIB), read likewise.
    complete: watch::Receiver<bool>,
    /// Families the peer asked to have again (ROUTE-REFRESH), as (AFI, SAFI).
    refresh: Vec<(u16, u8)>,
    send_hold: Duration,
    over_limit: bool,
    was_up: bool,
    /// BFD path failures already acted on.
    bfd_failures: u64,
}

fn timer_index(t: Timer) -> usize {
    match t {
        Timer::ConnectRetry => 0,
        Timer::Hold => 1,
        Timer::Keepalive => 2,
    }
}

impl<'a> Session<'a> {
    pub(super) fn new(
        peer: &'a Peer,
        status: &'a watch::Sender<NeighborStatus>,
        hb: &'a Heartbeat,
        draining: bool,
        exported: watch::Receiver<Exported>,
        complete: watch::Receiver<bool>,
    ) -> Self {
        let mut rib_out = AdjRibOut::new(peer.settings.local_as, peer.export.clone());
        rib_out.set_draining(draining);
        let mut settings = peer.settings.clone();
        settings.offer.graceful_restart = peer.restart.map(|r| r.offer(Instant::now()));
        Self {
            peer,
            status,
            hb,
            fsm: Fsm::new(settings),
            conn: None,
            held: None,
            incoming: None,
            framer: Framer::default(),
            timers: [None; 3],
            pending: VecDeque::from([Event::Start]),
            rib_out,
            rib_in: AdjRibIn::new(peer.max_prefixes),
            exported,
            complete,
            refresh: Vec::new(),
            send_hold: send_hold_time(peer.settings.hold_time),
            over_limit: false,
            was_up: false,
            bfd_failures: 0,
        }
    }

    pub(super) async fn run(&mut self, ch: &mut Channels, initial: Option<TcpStream>) -> Ended {
        // Failures from before this session do not count against it.
        if let Some(b) = ch.inputs.bfd.as_mut() {
            self.bfd_failures = b.borrow_and_update().failures;
        }
        // A session that starts with the peer's connection does not connect itself.
        if let Some(c) = initial {
            self.fsm = Fsm::new(Settings {
                passive: true,
                ..self.peer.settings.clone()
            });
            self.incoming = Some(c);
            self.pending.push_back(Event::Incoming);
        }
        let mut buf = vec![0u8; 65536];
        loop {
            // Queued events, then the next received message, one at a time: each message is
            // judged in the state the ones before it left (an UPDATE right behind the
            // KEEPALIVE that completes the handshake is an Established UPDATE).
            loop {
                while let Some(ev) = self.pending.pop_front() {
                    if let Some(end) = self.feed(ev).await {
                        return end;
                    }
                }
                if self.conn.is_none() {
                    break;
                }
                match self.framer.next_frame() {
                    Ok(Some(f)) => {
                        let ev = self.decode(f);
                        self.pending.push_back(ev);
                    }
                    Ok(None) => break,
                    Err(n) => {
                        // The stream cannot be framed any more: nothing after this is read.
                        self.framer = Framer::default();
                        self.pending.push_back(Event::Malformed(n));
                    }
                }
            }
            self.hb.turn().await;
            let wake = ch
                .next(&self.timers, self.conn.as_mut(), &mut buf, self.hb)
                .await;
            match wake {
                Wake::Incoming(new) => {
                    self.incoming = Some(new);
                    self.pending.push_back(Event::Incoming);
                }
                Wake::Drain(draining) => {
                    let out = self.rib_out.set_draining(draining);
                    if !out.is_empty() {
                        tracing::info!(neighbor = %self.peer.name, routes = self.rib_out.len(), graceful_shutdown = draining, "routes re-announced");
                    }
                    self.send(out).await;
                }
                Wake::Stop => {
                    if *ch.inputs.leave.borrow() {
                        self.leave().await;
                    } else {
                        self.close("kube-gw is stopping").await;
                    }
                    return Ended::Stopped;
                }
                Wake::Complete => {
                    let out = self.rib_out.complete(&self.exported.borrow().clone());
                    self.send(out).await;
                }
                Wake::Pause => {
                    tracing::info!(neighbor = %self.peer.name, routes = self.rib_out.len(), "drained: routes withdrawn, session closed");
                    self.close("maintenance: kube-gw drain").await;
                    return Ended::Paused;
                }
                Wake::Timer(i) => {
                    self.timers[i] = None;
                    self.expired([Timer::ConnectRetry, Timer::Hold, Timer::Keepalive][i]);
                }
                Wake::Exported(now) => {
                    let (out, announced, withdrawn) = self.rib_out.export_changed(&now);
                    if announced + withdrawn > 0 {
                        tracing::info!(neighbor = %self.peer.name, announced, withdrawn, "routes sent");
                    }
                    self.send(out).await;
                    self.status.sent(self.rib_out.view());
                }
                Wake::Bfd(v) if v.failures > self.bfd_failures => {
                    self.bfd_failures = v.failures;
                    tracing::warn!(neighbor = %self.peer.name, diag = %v.diag, "BFD: the path is down; closing the session");
                    self.pending
                        .push_back(Event::PathDown(format!("BFD: {}", v.diag)));
                }
                Wake::Read(Ok(0) | Err(_)) => self.lost(),
                // Decoded one message at a time at the top of the loop.
                Wake::Read(Ok(n)) => self.framer.push(&buf[..n]),
                Wake::Bfd(_) | Wake::Nothing => {}
            }
        }
    }

    /// A timer expired. After a long write the peer's KEEPALIVEs may be waiting unread:
    /// the hold timer expires only if nothing has arrived.
    fn expired(&mut self, t: Timer) {
        if let (Timer::Hold, Some(c)) = (t, self.conn.as_ref()) {
            let mut buf = [0u8; 4096];
            match c.try_read(&mut buf) {
                Ok(0) => return self.lost(),
                Ok(n) => {
                    self.framer.push(&buf[..n]);
                    // Re-armed for real by the messages these bytes complete.
                    self.timers[timer_index(t)] = Some(Instant::now() + Duration::from_secs(1));
                    return;
                }
                Err(_) => {}
            }
        }
        self.pending.push_back(Event::Expired(t));
    }

    fn lost(&mut self) {
        self.conn = None;
        self.framer = Framer::default();
        self.pending.push_back(Event::ConnectionLost);
    }

    /// Feeds one event to the FSM and carries out its actions. Returns how the session
    /// ended, if it did.
    async fn feed(&mut self, ev: Event) -> Option<Ended> {
        let before = self.fsm.state();
        for a in self.fsm.handle(ev) {
            self.act(a).await;
        }
        let after = self.fsm.state();
        if before != after {
            tracing::debug!(neighbor = %self.peer.name, from = ?before, to = ?after, "BGP state");
            self.status.state(after);
        }
        for (afi, safi) in std::mem::take(&mut self.refresh) {
            let (out, routes) = self.rib_out.refresh(afi, safi);
            if !out.is_empty() {
                tracing::info!(neighbor = %self.peer.name, afi, routes, "routes sent again (route refresh)");
            }
            self.send(out).await;
        }
        // Back to Idle: this session is over; `run` restarts it after a delay.
        let ended = if self.over_limit {
            Ended::HoldDown(MAX_PREFIX_HOLD_DOWN)
        } else {
            Ended::Failed {
                was_up: self.was_up,
            }
        };
        (after == State::Idle && before != State::Idle).then_some(ended)
    }

    async fn act(&mut self, a: Action) {
        match a {
            Action::Connect => self.connect().await,
            Action::Listen => {}
            Action::SendOpen => {
                let body = open::encode(&Proposal::from(self.fsm.settings()));
                if let Ok(bytes) = wire::frame(Kind::Open, &body) {
                    self.write(&bytes, Kind::Open, 1).await;
                }
            }
            Action::SendKeepalive => {
                if let Ok(bytes) = wire::frame(Kind::Keepalive, &[]) {
                    self.write(&bytes, Kind::Keepalive, 1).await;
                }
            }
            Action::Send(n) => {
                tracing::warn!(neighbor = %self.peer.name, notification = %n, "sending NOTIFICATION");
                self.status.notification(Dir::Sent, n.code.to_u8());
                self.write(&n.encode(), Kind::Notification, 1).await;
            }
            Action::Close => {
                if let Some(mut c) = self.conn.take() {
                    let _ = c.shutdown().await;
                }
                self.framer = Framer::default();
            }
            Action::Arm(t, d) => self.timers[timer_index(t)] = Some(Instant::now() + d),
            Action::Disarm(t) => self.timers[timer_index(t)] = None,
            Action::Up(n) => {
                self.was_up = true;
                self.send_hold = send_hold_time(n.hold_time);
                tracing::info!(neighbor = %self.peer.name, peer_as = n.peer_as, hold_time = n.hold_time, "BGP session established");
                let hops = self
                    .conn
                    .as_ref()
                    .map(|c| transport::next_hops(c, self.peer))
                    .unwrap_or_default();
                let done = *self.complete.borrow(); // read before the routes it vouches for
                let now = self.exported.borrow().clone();
                let out = self.rib_out.up(&n, hops, &now, done);
                self.send(out).await;
                self.status.up(&n, self.rib_out.view());
            }
            Action::Down(why) => {
                tracing::warn!(neighbor = %self.peer.name, reason = %why, "BGP session down");
                self.rib_out.down();
                self.rib_in.clear();
                self.status.down(why, self.fsm.retained());
            }
            Action::Deliver => {}
            Action::Adopt => {
                self.conn = self.incoming.take();
                self.framer = Framer::default();
            }
            Action::Hold => self.held = self.incoming.take(),
            Action::Reject => {
                if let Some(c) = self.incoming.take() {
                    self.close_collision(c).await;
                }
            }
            Action::CloseHeld => {
                if let Some(c) = self.held.take() {
                    self.close_collision(c).await;
                }
            }
            Action::Yield => {
                tracing::info!(neighbor = %self.peer.name, "connection collision: the peer's connection stays");
                if let Some(c) = self.conn.take() {
                    self.close_collision(c).await;
                }
                self.framer = Framer::default();
            }
            Action::Promote => {
                self.conn = self.held.take();
                self.framer = Framer::default();
            }
        }
    }

    /// Connects to the neighbor; the outcome is the next event.
    async fn connect(&mut self) {
        let ev = match transport::attempt(self.peer, self.hb).await {
            Ok(s) => {
                self.conn = Some(s);
                Event::Connected
            }
            Err(e) => {
                self.status.error(e);
                Event::ConnectionLost
            }
        };
        self.pending.push_back(ev);
    }

    /// The FSM event for a received message ([`super::receive`]), counted and logged.
    fn decode(&mut self, f: wire::Frame) -> Event {
        self.status.messages(Dir::Received, f.kind.code(), 1);
        let negotiated = (self.fsm.state() == State::Established)
            .then(|| self.fsm.negotiated())
            .flatten();
        let local_as = self.peer.settings.local_as;
        let r = super::receive::message(&f, negotiated, local_as, &mut self.rib_in);
        self.refresh.extend(r.refresh);
        match &r.event {
            Event::Notification(n) => {
                tracing::warn!(neighbor = %self.peer.name, notification = %n, "NOTIFICATION received");
                self.status.notification(Dir::Received, n.code.to_u8());
            }
            Event::Malformed(n) if f.kind == Kind::Update && r.update.is_none() => {
                tracing::warn!(neighbor = %self.peer.name, notification = %n, "malformed UPDATE");
            }
            _ => {}
        }
        if let Some(applied) = r.update {
            self.status.send_modify(|s| s.updates_received += 1);
            let problem = applied.problem.map(|p| p.to_string());
            if let Some(p) = &problem {
                tracing::warn!(neighbor = %self.peer.name, problem = %p, "UPDATE with errors");
            }
            self.status.received(&self.rib_in, problem);
            if let Some((_, msg)) = applied.over_limit {
                tracing::warn!(neighbor = %self.peer.name, "{msg}");
                self.status.update_error(msg);
                self.over_limit = true;
            }
        }
        r.event
    }

    /// Ends the session on purpose: withdraws everything sent, then Cease / Administrative
    /// Shutdown with `reason` (RFC 9003), and closes every connection.
    async fn close(&mut self, reason: &str) {
        self.send_hold = STOP_SEND_LIMIT;
        let out = self.rib_out.withdraw_all();
        self.send(out).await;
        let ev = Event::Stop {
            subcode: 2,
            reason: reason.into(),
        };
        for a in self.fsm.handle(ev) {
            self.act(a).await;
        }
        self.shut().await;
    }

    /// Graceful restart (RFC 4724): closes without withdrawing or NOTIFICATION (a session
    /// not up yet too); an up peer without graceful restart gets the ordinary close.
    async fn leave(&mut self) {
        if self.fsm.negotiated().is_some_and(|n| !n.graceful_restart) {
            return self.close("kube-gw is stopping").await;
        }
        tracing::info!(neighbor = %self.peer.name, routes = self.rib_out.len(), "graceful restart: closed without withdrawing");
        self.shut().await;
    }

    async fn shut(&mut self) {
        let conns = [self.conn.take(), self.incoming.take()];
        for mut c in conns.into_iter().flatten() {
            let _ = c.shutdown().await;
        }
        self.status.state(State::Idle);
    }

    /// Closes a connection with Cease / Connection Collision Resolution.
    async fn close_collision(&self, c: TcpStream) {
        let n = Notification::new(wire::Code::Cease, 7, Vec::new());
        self.status.notification(Dir::Sent, 6);
        transport::notify_and_close(c, &n, self.hb, STOP_SEND_LIMIT).await;
    }

    /// Frames and writes messages in order ([`transport::batches`]).
    async fn send(&mut self, msgs: Vec<Out>) {
        for b in transport::batches(msgs) {
            self.write(&b.bytes, b.kind, b.count).await;
        }
    }

    /// Writes `count` framed messages of one kind. A peer that takes nothing for the send
    /// hold time (it keeps its window shut) gets Send Hold Timer Expired, attempted without
    /// blocking, and the connection is dropped (RFC 9687).
    async fn write(&mut self, bytes: &[u8], kind: Kind, count: u64) {
        let Some(c) = self.conn.as_mut() else {
            return;
        };
        let limit = self.send_hold;
        match self
            .hb
            .during(tokio::time::timeout(limit, c.write_all(bytes)))
            .await
        {
            Ok(Ok(())) => self.status.messages(Dir::Sent, kind.code(), count),
            Ok(Err(_)) => self.lost(),
            Err(_) => {
                let n = Notification::new(wire::Code::SendHoldTimerExpired, 0, Vec::new());
                let _ = c.try_write(&n.encode());
                self.conn = None;
                self.framer = Framer::default();
                // The FSM reports it (sent, counted) and resets; the socket is already gone.
                self.pending.push_back(Event::Malformed(n));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_peer_that_stops_reading_gets_send_hold_timer_expired() {
        // The peer accepts and never reads: once the socket buffers are full, nothing moves.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let conn = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (_peer, _) = l.accept().await.unwrap();
        let peer = crate::bgp::peer::tests_support::peer();
        let (status, _) = watch::channel(NeighborStatus::new(peer.address, None));
        let hb = crate::lifecycle::Liveness::default().register("test");
        let (_tx, exported) = watch::channel(Exported::default());
        let (_done, complete) = watch::channel(true);
        let mut s = Session::new(&peer, &status, &hb, false, exported, complete);
        s.conn = Some(conn);
        s.send_hold = Duration::from_millis(300);
        let big = vec![0u8; 64 << 20];
        s.write(&big, Kind::Update, 1).await;
        assert!(s.conn.is_none(), "the connection is dropped");
        assert!(
            matches!(s.pending.back(), Some(Event::Malformed(n)) if n.code == wire::Code::SendHoldTimerExpired),
            "{:?}",
            s.pending
        );
    }
}
