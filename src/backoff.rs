//! One retry policy for every retry loop in the daemon: an exponential backoff with a
//! ceiling, optional jitter, and a reset after success.
//!
//! Users: the reconciler driver (address and IPVS passes), the Kubernetes join supervisor,
//! the Node agent and its Lease, the bootstrap credential requests, and each BGP session's
//! reconnects. Each owns one [`Backoff`]; nothing here sleeps on its own except [`Backoff::wait`].

use std::time::Duration;

/// Delays that double from `initial` up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
    /// Add up to a quarter of the delay at random (RFC 4271 §10 asks for it on BGP's
    /// timers; it also keeps many switches from retrying against an API server in step).
    jitter: bool,
}

impl Backoff {
    /// A backoff starting at `initial` and never above `max`, without jitter.
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: initial,
            jitter: false,
        }
    }

    /// The same with jitter: each delay gets up to a quarter of itself added.
    pub const fn with_jitter(mut self) -> Self {
        self.jitter = true;
        self
    }

    /// The delay before the next attempt; the one after it is twice as long (up to `max`).
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        if self.jitter {
            base + base.mul_f64(f64::from(jitter_fraction()) / 4.0)
        } else {
            base
        }
    }

    /// The delay [`Self::next_delay`] would give, without jitter and without advancing.
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// Back to `initial` (after a success).
    pub fn reset(&mut self) {
        self.next = self.initial;
    }

    /// Sleeps for the next delay.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }
}

/// A number in [0, 1) that differs between calls and processes (no RNG dependency: this
/// only spreads retries, it protects nothing).
fn jitter_fraction() -> f32 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static STATE: AtomicU64 = AtomicU64::new(0);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id()).rotate_left(32);
    // xorshift64* over a shared state, seeded by the clock on first use.
    let mut x = STATE.load(Ordering::Relaxed);
    if x == 0 {
        x = seed | 1;
    }
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    STATE.store(x, Ordering::Relaxed);
    let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
    (r % 1000) as f32 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_ceiling_and_reset() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let got: Vec<u128> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, [100, 200, 400, 500, 500]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
        assert_eq!(b.peek(), Duration::from_millis(200));
    }

    #[test]
    fn jitter_adds_at_most_a_quarter_and_varies() {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..50 {
            let mut b = Backoff::new(Duration::from_secs(4), Duration::from_secs(60)).with_jitter();
            let d = b.next_delay();
            assert!(
                d >= Duration::from_secs(4) && d < Duration::from_secs(5),
                "{d:?}"
            );
            seen.insert(d);
        }
        assert!(seen.len() > 5, "jitter should vary: {seen:?}");
    }
}
