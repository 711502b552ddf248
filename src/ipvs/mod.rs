//! The IPVS data path: kube-gw's virtual services in the kernel's IPVS table, one per
//! (VIP, port, protocol) of the desired state, toward the ready endpoints.
//!
//! ```text
//!  desired task ──► watch<Option<virtual services>> ──► reconcile::run ──► watch<IpvsReport>
//!                   (None until the first complete                │
//!                    cluster view)                                 ▼
//!                                      plan (pure) ──► client (generic netlink, blocking)
//!                                                      └─► codec (pure bytes)
//! ```
//!
//! - [`codec`] owns the bytes of the IPVS generic-netlink family (`linux/ip_vs.h`).
//! - [`client`] is the socket: family lookup, dumps, batched requests with acknowledgements.
//! - [`reconcile`] owns kube-gw's services in the kernel: a model kept from one dump and
//!   its own changes, a pure plan per change, draining of leaving destinations, resync.
//! - The nftables table that source-NATs `externalTrafficPolicy: Cluster` traffic (so that
//!   replies come back through the switch) is [`crate::nft`]'s, with the firewall.
//! - [`sysctl`] sets and checks the kernel settings the data path depends on.
//!
//! Forwarding is `masq` (NAT): the switch rewrites the destination to the backend, and the
//! reply must come back through the switch to be rewritten back.

pub mod client;
pub mod codec;
pub mod reconcile;
pub mod sysctl;
