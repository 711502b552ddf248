//! The admin surfaces of a running daemon.
//!
//! - `socket`: a Unix socket (default `/run/kube-gw/admin.sock`, mode 0660) that speaks one
//!   JSON request and one JSON response per connection, newline-terminated. The CLI
//!   (`kube-gw status`, `log-level`, `reload`) is its client. Requests and responses are the
//!   types in [`protocol`].
//! - `http`: `/metrics` (Prometheus text format), `/livez` (every main loop turned recently),
//!   `/readyz` (serving and live).
//! - `metrics`: the registry and the metric families the rest of the daemon updates.
//!
//! Both servers read the daemon's shared state ([`crate::app::Shared`]) directly, so status
//! still answers when the main loop is stuck; requests that change something go to the main
//! loop over its command channel.

pub mod http;
pub mod metrics;
pub mod protocol;
pub mod socket;
