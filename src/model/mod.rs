//! The shared vocabulary: plain types every layer speaks, with no behaviour beyond small
//! helpers and no dependency on any other kube-gw module (a leaf of the module graph).
//!
//! - [`cluster`]: the cluster view — [`ObjectKey`], [`Protocol`], Services, EndpointSlices,
//!   Nodes and the [`ClusterSnapshot`] that holds them. `kube/` converts API objects into
//!   these; `desired` computes from them.
//! - [`dataplane`]: virtual services ([`VsKey`], [`VirtualService`], [`Destination`]) as
//!   `desired` computes them and `ipvs` programs them, and the address reconciler's
//!   [`Programmed`] report.
//! - [`route`]: what BGP is given to announce ([`Exported`], [`Communities`]) and what it
//!   installs ([`Installed`], [`FibWant`]).
//!
//! Who may import what (checked by `tests/architecture.rs`): `model` imports nothing of
//! kube-gw; `desired`, `ipvs`, `netlink` and `bgp` import `model` and never `kube`.

pub mod cluster;
pub mod dataplane;
pub mod gateway;
pub mod route;

pub use cluster::{ClusterSnapshot, ObjectKey, Protocol};
pub use dataplane::{DestState, Destination, Programmed, VirtualService, VsKey};
pub use route::{Communities, Exported, FibWant, Installed, NextHop};
