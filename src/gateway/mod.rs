//! The gateway: L7 ingress (HTTP routing, TLS termination and SNI passthrough) served on the
//! switch itself at Gateway VIPs, configured by the Gateway API.
//!
//! This module is being built in steps (issue #16); what exists today:
//!
//! - [`steer`]: the eBPF `sk_lookup` program and its maps (VIP:port → the gateway's listening
//!   socket per family), with the per-pair fallback where BPF is unavailable.
//!
//! The gateway must not import the Kubernetes adapter, IPVS, netlink or the pipeline: it gets
//! its desired state as plain values and reports what it serves (tests/architecture.rs).

pub mod compute;
pub mod plan;
pub mod steer;
