//! Graceful restart (RFC 4724), the restarting speaker's side: what kube-gw puts in the
//! capability, and how it knows whether the kernel's forwarding state survived since the
//! last run.
//!
//! Inputs: `[bgp] graceful-restart`, `restart-time`, `restart-state` (a file), and the
//! kernel's boot id. Output: a [`Restart`] that the speaker hands to every session's OPEN
//! (as [`GracefulRestart`] in the FSM's offer).
//!
//! The forwarding state is the VIP addresses on the interface and the IPVS services: the
//! kernel keeps both while kube-gw is away (`[vip] on-shutdown = "keep"`, which the
//! configuration check demands with graceful restart) and loses both at a reboot. So at
//! start kube-gw reads the boot id it wrote in `restart-state` the last time: the same
//! boot means the forwarding state was kept (F bit set, and the R bit — "I restarted" —
//! for the first `restart-time` seconds); another boot or no file means it was not (F
//! clear: the peers drop whatever they still hold of ours at once). Then it writes the
//! present boot id. `restart-state` belongs on a tmpfs (default /run/kube-gw), which a
//! reboot empties too.
//!
//! The stop side lives in the speaker and the session: with graceful restart a stop
//! closes the connections without withdrawing and without a NOTIFICATION, the peers keep
//! the routes (stale) for `restart-time`, and the next run's End-of-RIB — sent only after
//! the first complete export (`pipeline`) — lets them drop what is no longer announced.

use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use super::fsm::GracefulRestart;

const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// The graceful-restart side of this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restart {
    /// Seconds the peers should keep our routes while we are away.
    pub time: u16,
    /// Then, as LLGR_STALE, this long (RFC 9494; 0: not offered).
    pub long_lived_stale_time: u32,
    /// The kernel's forwarding state is the one the previous run programmed.
    pub forwarding_kept: bool,
    /// Until when OPENs say "restarted" (the R bit).
    restarting_until: Option<Instant>,
}

impl Restart {
    /// From what `restart-state` held (`previous`) and the present boot id.
    pub fn new(
        time: u16,
        long_lived_stale_time: u32,
        previous: Option<&str>,
        boot_id: &str,
        now: Instant,
    ) -> Self {
        let forwarding_kept =
            previous.is_some_and(|p| p.trim() == boot_id.trim() && !p.trim().is_empty());
        Self {
            time,
            long_lived_stale_time,
            forwarding_kept,
            restarting_until: forwarding_kept.then(|| now + Duration::from_secs(u64::from(time))),
        }
    }

    /// Reads `path` and the boot id, then writes the boot id to `path` for the next run.
    /// A file that cannot be written is logged: the next run then sees no kept state and
    /// clears the F bit, which is safe (the peers re-learn the routes).
    pub fn load(time: u16, long_lived_stale_time: u32, path: &Path) -> Self {
        let boot_id = std::fs::read_to_string(BOOT_ID).unwrap_or_default();
        let previous = std::fs::read_to_string(path).ok();
        let r = Self::new(
            time,
            long_lived_stale_time,
            previous.as_deref(),
            &boot_id,
            Instant::now(),
        );
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Err(e) = std::fs::write(path, boot_id.trim()) {
            tracing::warn!(path = %path.display(), error = %e, "cannot record the boot for graceful restart; the next start will clear the forwarding-state bit");
        }
        tracing::info!(
            restart_time = time,
            forwarding_kept = r.forwarding_kept,
            "graceful restart: {}",
            if r.forwarding_kept {
                "restarted in the same boot, the kernel's forwarding state is kept (R and F bits)"
            } else {
                "first start in this boot (F bit clear)"
            }
        );
        r
    }

    /// The capability for an OPEN sent at `now`.
    pub fn offer(&self, now: Instant) -> GracefulRestart {
        GracefulRestart {
            time: self.time,
            restarting: self.restarting_until.is_some_and(|u| now < u),
            forwarding: self.forwarding_kept,
            long_lived_stale_time: self.long_lived_stale_time,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_boot_keeps_forwarding_and_says_restarted_for_the_restart_time() {
        let t0 = Instant::now();
        let r = Restart::new(120, 0, Some("abc\n"), "abc", t0);
        assert!(r.forwarding_kept);
        let o = r.offer(t0 + Duration::from_secs(1));
        assert_eq!((o.time, o.restarting, o.forwarding), (120, true, true));
        let later = r.offer(t0 + Duration::from_secs(121));
        assert_eq!((later.restarting, later.forwarding), (false, true));
    }

    #[test]
    fn another_boot_or_no_record_is_a_first_start() {
        let t0 = Instant::now();
        for previous in [None, Some("other"), Some(""), Some("  \n")] {
            let r = Restart::new(120, 0, previous, "abc", t0);
            assert!(!r.forwarding_kept, "{previous:?}");
            let o = r.offer(t0);
            assert_eq!((o.restarting, o.forwarding), (false, false), "{previous:?}");
        }
        // An unreadable boot id never matches an empty record.
        assert!(!Restart::new(120, 0, Some(""), "", t0).forwarding_kept);
    }
}
