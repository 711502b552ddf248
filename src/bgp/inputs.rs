//! What wakes a session: its inputs from the speaker (stop, export, drain, pause, the
//! peer's connections, BFD), its timers, its socket and its heartbeat, waited on together
//! and handed back one at a time as a [`Wake`]. The session ([`super::session`]) decides
//! what each means; this file only waits.
//!
//! A channel whose sender is gone is remembered as closed and not polled again (it would be
//! ready forever).

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::bfd::service::Verdict;
use crate::lifecycle::Heartbeat;
use crate::model::Exported;

/// What a session task listens to besides its connection (from the speaker).
#[derive(Debug)]
pub struct Inputs {
    /// kube-gw is stopping: withdraw, Cease / Administrative Shutdown, close, end.
    pub stop: watch::Receiver<bool>,
    /// Read at the stop: true when it is a graceful restart (RFC 4724): close without
    /// withdrawing and without a NOTIFICATION, so the peer keeps the routes.
    pub leave: watch::Receiver<bool>,
    /// The exported routes.
    pub exported: watch::Receiver<Exported>,
    /// The export is complete (the first complete cluster view is programmed): End-of-RIB
    /// may go out.
    pub complete: watch::Receiver<bool>,
    /// RFC 8326 drain: everything with GRACEFUL_SHUTDOWN while true.
    pub drain: watch::Receiver<bool>,
    /// `kube-gw drain` (true) and `undrain`: withdraw and close, and stay closed.
    pub paused: watch::Receiver<bool>,
    /// The peer's connections, from the listener.
    pub incoming: mpsc::Receiver<TcpStream>,
    /// The neighbor's BFD session, when it has one: a path failure closes the session.
    pub bfd: Option<watch::Receiver<Verdict>>,
}

/// The inputs, with whether each channel's sender is still there.
pub(super) struct Channels {
    pub(super) inputs: Inputs,
    pub(super) exported_open: bool,
    pub(super) complete_open: bool,
    pub(super) drain_open: bool,
    pub(super) paused_open: bool,
    pub(super) incoming_open: bool,
    pub(super) bfd_open: bool,
}

/// One reason a session woke up.
pub(super) enum Wake {
    /// A connection of the peer's, from the listener.
    Incoming(TcpStream),
    /// The RFC 8326 drain changed to this.
    Drain(bool),
    /// kube-gw is stopping.
    Stop,
    /// `kube-gw drain`.
    Pause,
    /// The timer at this index expired.
    Timer(usize),
    /// The exported routes changed to these.
    Exported(Exported),
    /// The export became complete.
    Complete,
    /// BFD's verdict changed to this.
    Bfd(Verdict),
    /// The socket: bytes read into the buffer (0: the peer closed), or an error.
    Read(std::io::Result<usize>),
    /// Nothing: a channel closed, or a heartbeat's turn.
    Nothing,
}

impl Channels {
    pub(super) fn new(inputs: Inputs) -> Self {
        Self {
            inputs,
            exported_open: true,
            complete_open: true,
            drain_open: true,
            paused_open: true,
            incoming_open: true,
            bfd_open: true,
        }
    }

    /// Waits for the next thing that wakes the session: `timers` (index, when) the session
    /// keeps, `conn` to read into `buf`.
    pub(super) async fn next(
        &mut self,
        timers: &[Option<Instant>],
        conn: Option<&mut TcpStream>,
        buf: &mut [u8],
        hb: &Heartbeat,
    ) -> Wake {
        let next_timer = timers
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t.map(|t| (i, t)))
            .min_by_key(|(_, t)| *t);
        let sleep = async {
            match next_timer {
                Some((i, at)) => {
                    tokio::time::sleep_until(at).await;
                    i
                }
                None => std::future::pending().await,
            }
        };
        let read = async {
            match conn {
                Some(c) => c.read(buf).await,
                None => std::future::pending().await,
            }
        };
        let i = &mut self.inputs;
        let bfd = async {
            match i.bfd.as_mut() {
                Some(b) => b.changed().await.map(|()| *b.borrow_and_update()),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            c = i.incoming.recv(), if self.incoming_open => match c {
                None => self.incoming_open = false,
                Some(new) => return Wake::Incoming(new),
            },
            r = i.drain.changed(), if self.drain_open => {
                // The drain signal's sender goes away once the drain phase is over.
                self.drain_open = r.is_ok();
                if self.drain_open {
                    return Wake::Drain(*i.drain.borrow_and_update());
                }
            }
            () = crate::lifecycle::stopped(&mut i.stop) => return Wake::Stop,
            r = i.paused.changed(), if self.paused_open => {
                self.paused_open = r.is_ok();
                if self.paused_open && *i.paused.borrow_and_update() {
                    return Wake::Pause;
                }
            }
            t = sleep => return Wake::Timer(t),
            r = i.exported.changed(), if self.exported_open => {
                // A closed channel: the daemon is going away; the stop signal follows.
                self.exported_open = r.is_ok();
                if self.exported_open {
                    return Wake::Exported(i.exported.borrow_and_update().clone());
                }
            }
            r = i.complete.changed(), if self.complete_open => {
                self.complete_open = r.is_ok();
                if self.complete_open && *i.complete.borrow_and_update() {
                    return Wake::Complete;
                }
            }
            r = bfd, if self.bfd_open => match r {
                Ok(v) => return Wake::Bfd(v),
                Err(_) => self.bfd_open = false,
            },
            r = read => return Wake::Read(r),
            () = hb.idle() => {}
        }
        Wake::Nothing
    }
}
