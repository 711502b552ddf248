//! kube-gw's BGP speaker (being built; see the BGP issue). What exists so far:
//!
//! - [`wire`]: message framing and the NOTIFICATION codec, ours (pure, golden-tested).
//!
//! The design it grows into (DESIGN.md, "BGP codec notes"): OPEN/UPDATE/ROUTE-REFRESH bodies
//! through `netgauze-bgp-pkt` behind our own types; the RFC 4271 FSM as a pure state machine
//! (inputs and timer expiries in, actions out) driven by thin TCP tasks; one speaker actor
//! owning each neighbor's Adj-RIB-Out, fed by the desired state gated on what the address and
//! IPVS reconcilers report as programmed. Nothing here is wired into the daemon yet.

pub mod fsm;
pub mod open;
pub mod session;
pub mod update;
pub mod wire;
