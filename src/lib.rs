//! kube-gw: brings Kubernetes Services onto a datacenter fabric from the switch itself.
//!
//! The binary (`src/main.rs`) is a thin entry into [`cli`]. The daemon's wiring and
//! lifecycle are in [`app`]; the configuration contract in [`config`]; the admin socket,
//! metrics and health endpoints in [`admin`]; systemd integration and ordered shutdown in
//! [`lifecycle`]; logging in [`telemetry`]; joining and watching the cluster in [`kube`]. See DESIGN.md for how data flows between the
//! subsystems that build on these.

pub mod admin;
pub mod app;
pub mod bgp;
pub mod cli;
pub mod config;
pub mod desired;
pub mod ipvs;
pub mod kube;
pub mod lifecycle;
pub mod netlink;
pub mod serve;
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
