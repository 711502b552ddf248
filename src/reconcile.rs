//! One driver for the reconcilers that make kernel state equal to the desired state — the
//! address reconciler (`netlink::addr`) and the IPVS reconciler (`ipvs::reconcile`).
//!
//! ```text
//!  watch<Want> (latest desired) ─┐
//!  Reconciler::wake (kernel      ├─► driver: pass(want, full) ── Ok ──► wait for the next input
//!  notifications, drain checks) ─┤            │  (observe → plan → apply; report)
//!  resync timer (full) ──────────┤            └─ Err ─► full observation next time, after backoff
//!  stop ─────────────────────────┘   heartbeat: every turn, and while a pass waits on the kernel
//! ```
//!
//! The driver owns the loop: when to pass, whether the next pass observes everything
//! (`full`: at the start, after a resync period, after a failure, when the reconciler
//! asks), the retry backoff, the heartbeat and the stop. A [`Reconciler`] owns its model of
//! the kernel, its plan (pure, in its own module) and its report channel. Idempotent by
//! construction: a pass with the same input and kernel does nothing.
//!
//! [`stats`] counts each reconciler's passes and failures and measures the event→kernel
//! latency: from the cluster watch publishing a changed view to the end of the pass that
//! applied it. `metrics.rs` reads it at scrape time.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

use crate::backoff::Backoff;
use crate::lifecycle::Heartbeat;

/// What a reconciler's own event source asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Something changed that the model knows about: an ordinary pass.
    Pass,
    /// The model cannot be trusted (notifications lost): observe everything again.
    Full,
}

/// A reconciler the driver runs.
pub trait Reconciler: Send {
    /// What it is given: the latest desired state for it.
    type Want: Clone + Send + Sync;

    /// One pass: observe (everything it owns when `full`, else what its model and the
    /// change point at), plan, apply, and publish its report. An error is retried after
    /// the backoff, with a full observation.
    fn pass(
        &mut self,
        want: &Self::Want,
        full: bool,
    ) -> impl Future<Output = Result<(), String>> + Send;

    /// Waits for something other than a new `Want` that calls for a pass: kernel
    /// notifications, a periodic check. Must be cancel-safe (the driver drops it when
    /// another input comes first). The default never wakes.
    fn wake(&mut self) -> impl Future<Output = Wake> + Send {
        std::future::pending()
    }
}

/// How the driver paces a reconciler.
#[derive(Debug, Clone)]
pub struct Pacing {
    /// Name in logs.
    pub name: &'static str,
    /// A full pass at least this often, whatever the notifications said.
    pub resync: Duration,
    /// Retry delays after a failed pass.
    pub backoff: Backoff,
}

/// Why the driver returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// `stop` turned true: the caller tears down (or not) what the reconciler owns.
    Stopped,
    /// The `want` channel closed: the daemon is going away.
    Closed,
}

/// Runs `r` until `stop` turns true or `want` closes.
pub async fn drive<R: Reconciler>(
    r: &mut R,
    want: &mut watch::Receiver<R::Want>,
    mut pacing: Pacing,
    hb: &Heartbeat,
    stop: &mut watch::Receiver<bool>,
) -> Ended {
    let mut resync =
        tokio::time::interval_at(tokio::time::Instant::now() + pacing.resync, pacing.resync);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut full = true;
    // The pass follows a new input (not a resync, a retry or the kernel): only such a pass
    // measures the event→kernel latency.
    let mut new_input = true;
    loop {
        hb.turn().await;
        if *stop.borrow() {
            return Ended::Stopped;
        }
        let w = want.borrow_and_update().clone();
        let mark = stats::mark();
        let result = hb.during(r.pass(&w, full)).await;
        stats::pass(
            pacing.name,
            result.is_ok(),
            new_input.then_some(mark).flatten(),
        );
        new_input = false;
        let retry = match result {
            Ok(()) => {
                full = false;
                pacing.backoff.reset();
                false
            }
            Err(e) => {
                tracing::warn!(reconciler = pacing.name, error = %e, retry_in = ?pacing.backoff.peek(), "pass failed; retrying");
                full = true;
                true
            }
        };
        let retry_at = tokio::time::Instant::now() + pacing.backoff.peek();
        // Wait for a reason to pass again, turning (beating) at least every second.
        loop {
            tokio::select! {
                r = want.changed() => if r.is_err() { return Ended::Closed } else { new_input = true; break },
                _ = resync.tick() => {
                    full = true;
                    break;
                }
                () = tokio::time::sleep_until(retry_at), if retry => {
                    pacing.backoff.next_delay();
                    break;
                }
                w = r.wake() => {
                    full |= w == Wake::Full;
                    break;
                }
                () = crate::lifecycle::stopped(stop) => return Ended::Stopped,
                () = hb.idle() => hb.turn().await,
            }
        }
    }
}

/// Reconciler passes and the event→kernel latency, process-wide (one daemon per process):
/// the cluster watch marks each view it publishes, the desired task its own publications,
/// the driver records each pass, `metrics.rs` reads a copy at scrape time.
pub mod stats {
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use std::time::Instant;

    /// Upper bounds of the latency buckets, in seconds (the last is +Inf).
    pub const BUCKETS: [f64; 12] = [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    ];

    /// One reconciler's record.
    #[derive(Debug, Clone, Default, PartialEq)]
    pub struct Record {
        pub passes_ok: u64,
        pub passes_failed: u64,
        /// Failures since the last successful pass.
        pub consecutive_failures: u64,
        /// Event→kernel latency: per bucket (not cumulative; one more for +Inf), sum, count.
        pub latency_buckets: [u64; BUCKETS.len() + 1],
        pub latency_sum: f64,
        pub latency_count: u64,
        /// The publication last measured (each is measured once).
        measured: u64,
    }

    struct State {
        /// The oldest cluster change not yet published by the desired task.
        pending: Option<Instant>,
        /// The last publication: its number and the oldest change it carried.
        mark: Option<(u64, Instant)>,
        records: BTreeMap<&'static str, Record>,
    }

    static STATE: Mutex<State> = Mutex::new(State {
        pending: None,
        mark: None,
        records: BTreeMap::new(),
    });

    fn lock() -> std::sync::MutexGuard<'static, State> {
        STATE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The cluster watch published a changed view.
    pub fn cluster_changed() {
        let mut s = lock();
        if s.pending.is_none() {
            s.pending = Some(Instant::now());
        }
    }

    /// The desired task is about to publish what it computed from the changes so far.
    pub fn published() {
        let mut s = lock();
        if let Some(at) = s.pending.take() {
            let n = s.mark.map_or(1, |(n, _)| n + 1);
            s.mark = Some((n, at));
        }
    }

    /// The last publication, read by a reconciler before its pass.
    pub fn mark() -> Option<(u64, Instant)> {
        lock().mark
    }

    /// A pass ended; `applied` is the publication it applied, if it followed a new input.
    pub fn pass(name: &'static str, ok: bool, applied: Option<(u64, Instant)>) {
        let mut s = lock();
        let r = s.records.entry(name).or_default();
        if !ok {
            r.passes_failed += 1;
            r.consecutive_failures += 1;
            return;
        }
        r.passes_ok += 1;
        r.consecutive_failures = 0;
        if let Some((n, at)) = applied {
            if n > r.measured {
                r.measured = n;
                let secs = at.elapsed().as_secs_f64();
                let i = BUCKETS
                    .iter()
                    .position(|b| secs <= *b)
                    .unwrap_or(BUCKETS.len());
                r.latency_buckets[i] += 1;
                r.latency_sum += secs;
                r.latency_count += 1;
            }
        }
    }

    /// A copy of every reconciler's record.
    pub fn records() -> BTreeMap<&'static str, Record> {
        lock().records.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A reconciler that records its passes and fails the ones it is told to.
    struct Probe {
        passes: Arc<Mutex<Vec<(u32, bool)>>>,
        fail: u32,
        wake: Option<tokio::sync::mpsc::Receiver<Wake>>,
    }

    impl Reconciler for Probe {
        type Want = u32;
        async fn pass(&mut self, want: &u32, full: bool) -> Result<(), String> {
            self.passes.lock().unwrap().push((*want, full));
            if self.fail > 0 {
                self.fail -= 1;
                return Err("kernel said no".into());
            }
            Ok(())
        }
        async fn wake(&mut self) -> Wake {
            match self.wake.as_mut() {
                Some(rx) => rx.recv().await.unwrap_or(Wake::Pass),
                None => std::future::pending().await,
            }
        }
    }

    fn pacing() -> Pacing {
        Pacing {
            name: "probe",
            resync: Duration::from_secs(30),
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(1)),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_pass_is_full_then_only_changes_and_a_failure_retries_in_full() {
        let passes = Arc::new(Mutex::new(Vec::new()));
        let (wake_tx, wake_rx) = tokio::sync::mpsc::channel(4);
        let mut r = Probe {
            passes: passes.clone(),
            fail: 2,
            wake: Some(wake_rx),
        };
        let (want_tx, mut want) = watch::channel(1);
        let (stop_tx, mut stop) = watch::channel(false);
        let hb = crate::lifecycle::Liveness::default().register("probe");
        let driver =
            tokio::spawn(async move { drive(&mut r, &mut want, pacing(), &hb, &mut stop).await });
        // Two failures: retried after 100 ms and 200 ms, each in full.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(*passes.lock().unwrap(), [(1, true)]);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(*passes.lock().unwrap(), [(1, true), (1, true), (1, true)]);
        // Success: the next input gets an ordinary pass.
        want_tx.send(2).unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(passes.lock().unwrap().last(), Some(&(2, false)));
        // The reconciler's own source: a pass, or a full one.
        wake_tx.send(Wake::Pass).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(passes.lock().unwrap().last(), Some(&(2, false)));
        wake_tx.send(Wake::Full).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(passes.lock().unwrap().last(), Some(&(2, true)));
        // The resync period: a full pass without any input.
        let n = passes.lock().unwrap().len();
        tokio::time::sleep(Duration::from_secs(31)).await;
        let after: Vec<_> = passes.lock().unwrap()[n..].to_vec();
        assert!(after.contains(&(2, true)), "{after:?}");
        stop_tx.send(true).unwrap();
        assert_eq!(driver.await.unwrap(), Ended::Stopped);
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_input_ends_the_driver() {
        let passes = Arc::new(Mutex::new(Vec::new()));
        let mut r = Probe {
            passes,
            fail: 0,
            wake: None,
        };
        let (want_tx, mut want) = watch::channel(1);
        let (_stop_tx, mut stop) = watch::channel(false);
        let hb = crate::lifecycle::Liveness::default().register("probe");
        let driver =
            tokio::spawn(async move { drive(&mut r, &mut want, pacing(), &hb, &mut stop).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(want_tx);
        assert_eq!(driver.await.unwrap(), Ended::Closed);
    }

    #[test]
    fn a_publication_is_measured_once_per_reconciler_and_failures_are_counted() {
        // Process-wide state: this test's own reconciler name, and the mark it took.
        stats::cluster_changed();
        stats::published();
        let mark = stats::mark();
        assert!(mark.is_some());
        stats::pass("stats-test", true, mark);
        stats::pass("stats-test", true, mark);
        stats::pass("stats-test", false, None);
        stats::pass("stats-test", false, None);
        let r = stats::records()["stats-test"].clone();
        assert_eq!(r.latency_count, 1, "one publication, one sample");
        assert_eq!(r.latency_buckets.iter().sum::<u64>(), 1);
        assert_eq!(
            (r.passes_ok, r.passes_failed, r.consecutive_failures),
            (2, 2, 2)
        );
        stats::pass("stats-test", true, None);
        assert_eq!(stats::records()["stats-test"].consecutive_failures, 0);
    }
}
