//! One neighbor's task: its sessions one after another ([`super::session`]), with backoff
//! and jitter between attempts (from the start again after a session that was up), the
//! hold-down after too many prefixes, and the pause of `kube-gw drain` until `undrain`.
//! A connection of the peer's that arrives while the task waits starts the next session
//! at once.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::fsm::State;
use super::inputs::{Channels, Inputs};
use super::peer::Peer;
use super::session::{Ended, Session};
use super::status::{NeighborStatus, Report};
use crate::backoff::Backoff;
use crate::lifecycle::Heartbeat;

/// What a drained neighbor's status says.
pub(super) const DRAINED: &str =
    "drained (kube-gw drain): routes withdrawn, session closed; `kube-gw undrain` resumes";

/// Runs the neighbor's sessions until `stop` turns true; then sends Cease / Administrative
/// Shutdown if the session is up.
pub async fn run(peer: Peer, status: watch::Sender<NeighborStatus>, inputs: Inputs, hb: Heartbeat) {
    let mut ch = Channels::new(inputs);
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60)).with_jitter();
    let mut initial: Option<TcpStream> = None;
    loop {
        hb.turn().await;
        // Drained (`kube-gw drain`): no session until `kube-gw undrain`; the peer's
        // connections are closed as they come.
        if *ch.inputs.paused.borrow_and_update() {
            initial = None;
            status.state(State::Idle);
            status.down(DRAINED.into(), None);
            while ch.paused_open {
                hb.turn().await;
                tokio::select! {
                    () = crate::lifecycle::stopped(&mut ch.inputs.stop) => return,
                    r = ch.inputs.paused.changed() => {
                        ch.paused_open = r.is_ok();
                        if !*ch.inputs.paused.borrow_and_update() {
                            break;
                        }
                    }
                    c = ch.inputs.incoming.recv(), if ch.incoming_open => ch.incoming_open = c.is_some(),
                    () = hb.idle() => {}
                }
            }
            backoff.reset();
            status.send_modify(|s| s.last_error = None);
        }
        let draining = *ch.inputs.drain.borrow();
        let (exported, complete) = (ch.inputs.exported.clone(), ch.inputs.complete.clone());
        let mut s = Session::new(&peer, &status, &hb, draining, exported, complete);
        let hold_down = match s.run(&mut ch, initial.take()).await {
            Ended::Stopped => return,
            Ended::Paused => continue,
            Ended::Failed { was_up } => {
                if was_up {
                    backoff.reset();
                }
                None
            }
            Ended::HoldDown(d) => Some(d),
        };
        let wait = hold_down.unwrap_or_else(|| backoff.next_delay());
        let until = Instant::now() + wait;
        loop {
            hb.turn().await;
            tokio::select! {
                () = crate::lifecycle::stopped(&mut ch.inputs.stop) => return,
                () = tokio::time::sleep_until(until) => break,
                // The peer connects while we wait: take its connection now.
                c = ch.inputs.incoming.recv(), if ch.incoming_open && hold_down.is_none() => {
                    match c {
                        Some(c) => {
                            initial = Some(c);
                            break;
                        }
                        None => ch.incoming_open = false,
                    }
                }
                () = hb.idle() => {}
            }
        }
        if hold_down.is_some() {
            // Connections that queued up during the hold-down are stale by now.
            while ch.inputs.incoming.try_recv().is_ok() {}
        }
    }
}
