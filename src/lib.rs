//! kube-gw: brings Kubernetes Services onto a datacenter fabric from the switch itself.
//!
//! The binary (`src/main.rs`) is a thin entry into [`cli`]. ARCHITECTURE.md has the map;
//! in short, from the bottom of the module graph up:
//!
//! - leaves: [`model`] (the shared vocabulary), [`config`] (the configuration contract),
//!   [`api`] (the admin API's typed requests and answers), [`backoff`], [`lifecycle`]
//!   (heartbeats, watchdog, systemd notify, ordered shutdown), [`telemetry`] (logging);
//! - pure computation: [`desired`] (cluster view + config → desired state);
//! - subsystems, each owning its state: [`kube`] (join, watch, Node, Events), [`netlink`]
//!   (VIP addresses on `lo`), [`ipvs`] (the data path), [`bgp`] (the speaker), [`fib`]
//!   (received routes into the kernel, when kube-gw is the switch's only speaker), driven
//!   by [`reconcile`] where they reconcile kernel state;
//! - wiring: [`pipeline`] (cluster view → desired state → reconcilers → export gate),
//!   [`control`] (configuration, reloads, the main loop), [`metrics`], [`admin`] (socket,
//!   HTTP, views over the subsystems' handles), [`app`] (the composition root), [`cli`].

/// mimalloc for every binary built on this library (the daemon, and its tests and benchmarks
/// alike): the gateway allocates per request, and glibc's malloc took about an eighth of the
/// proxy's CPU at keep-alive load. Not in the fuzz build (libFuzzer watches malloc).
#[cfg(not(fuzzing))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod admin;
pub mod api;
pub mod app;
pub mod backoff;
pub mod bfd;
pub mod bgp;
pub mod cli;
pub mod config;
pub mod control;
pub mod desired;
pub mod fib;
pub mod gateway;
pub mod ipam;
pub mod ipvs;
pub mod kube;
pub mod lifecycle;
pub mod link;
pub mod metrics;
pub mod model;
pub mod netlink;
pub mod nft;
pub mod pipeline;
pub mod reconcile;
pub mod telemetry;

/// Exit codes, from sysexits(3) where one fits.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// A runtime failure (could not bind, lost the daemon, …).
    pub const FAILURE: u8 = 1;
    /// The daemon is not reachable (`EX_UNAVAILABLE`).
    pub const UNAVAILABLE: u8 = 69;
    /// The configuration is invalid (`EX_CONFIG`).
    pub const CONFIG: u8 = 78;
}
