//! kube-gw's BGP speaker (DESIGN.md, "BGP codec notes"):
//!
//! - [`wire`]: message framing and the NOTIFICATION codec, ours (pure, golden-tested);
//! - [`open`] and [`update`]: OPEN and UPDATE bodies through `netgauze-bgp-pkt`, behind our
//!   own types, and UPDATE packing;
//! - [`inbound`]: received UPDATEs checked the RFC 7606 way, reduced to Adj-RIB-In changes;
//! - [`fsm`]: the RFC 4271 FSM as a pure state machine (events and timer expiries in,
//!   actions out);
//! - [`link`]: the interface of a link-local neighbor and the IPv6 next hops of a session
//!   (global, and link-local on a shared link), from the kernel's address table;
//! - [`listen`]: accepts the neighbors' connections on port 179 and hands them to their
//!   sessions;
//! - [`session`]: one task per neighbor, the thin TCP shell around the FSM, owning that
//!   neighbor's Adj-RIB-Out and Adj-RIB-In, fed the exported prefixes (the desired state's
//!   announcements that the address reconciler reports on `lo`).

pub mod fsm;
pub mod inbound;
pub mod link;
pub mod listen;
pub mod open;
pub mod session;
pub mod update;
pub mod wire;
