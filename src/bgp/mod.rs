//! kube-gw's BGP speaker, split the way holo-bgp and rustybgp split theirs: the protocol is
//! pure (values in, values out, table-tested without sockets), the I/O is a thin shell.
//!
//! Pure parts:
//! - [`wire`]: message framing and the NOTIFICATION and ROUTE-REFRESH codecs, ours
//!   (golden-tested);
//! - [`open`] and [`update`]: OPEN and UPDATE bodies through `netgauze-bgp-pkt`, behind our
//!   own types, and UPDATE packing;
//! - [`inbound`]: received UPDATEs checked the RFC 7606 way, reduced to Adj-RIB-In changes;
//! - [`fsm`]: the RFC 4271 FSM — OPEN checks, capability negotiation and collision
//!   resolution included — events and timer expiries in, actions out;
//! - [`rib_out`]: a neighbor's Adj-RIB-Out — session up, export change, route refresh
//!   (BoRR/EoRR), drain (GRACEFUL_SHUTDOWN), close → UPDATE bodies and markers;
//! - [`rib_in`]: a neighbor's Adj-RIB-In with max-prefix; [`loc_rib`]: import filters, best
//!   path and ECMP, the graceful-restart helper — what the FIB installs (placement (a));
//! - [`peer`]: configuration → neighbors (passwords included, never shown);
//! - [`restart`]: graceful restart (RFC 4724), the restarting side — the capability's
//!   R and F bits from whether the kernel's forwarding state survived (same boot);
//! - [`status`] and [`metrics`]: what a session reports, and its Prometheus collector.
//!
//! I/O (with [`crate::link`] for link-local interfaces and IPv6 next hops):
//! - [`session`]: one task per neighbor — sockets, timers, framing — carrying out what the
//!   pure parts decide; [`inputs`]: what wakes it (the speaker's channels, BFD, timers,
//!   the socket);
//! - [`listen`]: accepts the neighbors' connections on port 179 and hands them to their
//!   sessions;
//! - [`speaker`]: owns the sessions and the listener; the daemon's one handle on BGP
//!   (status, drain/undrain, graceful shutdown, stop).
//!
//! The routes come from the pipeline's export gate as [`crate::model::Exported`]: the
//! announceable VIPs whose address is on `lo` and whose IPVS services are programmed.

pub mod fsm;
pub mod inbound;
pub mod inputs;
pub mod listen;
pub mod loc_rib;
pub mod metrics;
pub mod neighbor;
pub mod open;
pub mod peer;
pub mod receive;
pub mod restart;
pub mod rib_in;
pub mod rib_out;
pub mod session;
pub mod speaker;
pub mod status;
pub mod transport;
pub mod update;
pub mod wire;
