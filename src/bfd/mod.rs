//! BFD (RFC 5880 asynchronous mode; RFC 5881 single hop, RFC 5883 multihop): sub-second
//! detection of a dead path to a BGP neighbor, kube-gw's own.
//!
//! - [`packet`]: the Control packet codec and the reception checks (pure);
//! - [`session`]: one session's state machine — timer negotiation, slow start, Poll
//!   Sequence, detection time, diagnostics, AdminDown (pure, table-tested);
//! - [`service`]: the sockets, the clock and every session, on a thread of its own.
//!
//! Inputs: the neighbors with `bfd = true` (at start). Outputs: per neighbor a
//! `watch<Verdict>` that its BGP session follows (a path failure takes the session down at
//! once), and the sessions' status for `kube-gw bfd` and the metrics. The speaker owns the
//! service ([`crate::bgp::speaker`]).

pub mod packet;
pub mod service;
pub mod session;
