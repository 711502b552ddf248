//! An anycast VIP for the traffic tests and the drain benchmark: what a client sees, not
//! what the routes say.
//!
//! ```text
//!              ┌── sw0 ──┐
//!  client ── leaf ─ sw1 ── backend (VIP 198.51.100.80 on lo, echo server on 8080)
//!   50 sources ├── …  ──┘       └── answers straight to the leaf
//!              └──────────────────┘
//! ```
//!
//! Switch `i` is 192.0.2.(4i+2) on its link to the leaf (the leaf 192.0.2.(4i+1)) and
//! forwards the VIP to the one backend, which owns it and answers the client directly: the
//! forwarding the ECMP flow study calls tunnelling to the endpoint with direct return, where
//! a flow the leaf moves from one switch to another still reaches its endpoint. (IPVS is
//! not in this host's kernel; the switches route instead.) Each switch counts the packets it
//! forwards to the VIP (nftables). The leaf forwards and hashes on ports too; its routing
//! daemon, and what the switches announce, are the caller's.
//!
//! The client (`load.py`) opens a connection every few milliseconds from 50 source
//! addresses and keeps each 200–400 ms, exchanging a line every 50 ms.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{wait_for, Lab, Node};

pub const VIP: &str = "198.51.100.80";

#[derive(Debug)]
pub struct Anycast {
    pub leaf: Node,
    pub client: Node,
    pub sw: Vec<Node>,
    /// Each switch's interface toward the leaf.
    pub uplink: Vec<String>,
    script: String,
}

/// Switch `i`'s address on its link to the leaf.
pub fn switch_address(i: usize) -> String {
    format!("192.0.2.{}", 4 * i + 2)
}

/// The leaf's address on its link to switch `i`.
pub fn leaf_address(i: usize) -> String {
    format!("192.0.2.{}", 4 * i + 1)
}

impl Anycast {
    pub fn build(lab: &mut Lab, switches: usize) -> Self {
        let leaf = lab.node("leaf");
        let client = lab.node("cl");
        let be = lab.node("be");
        let (ci, _) = lab.link(&client, &["203.0.113.2/26"], &leaf, &["203.0.113.1/26"]);
        let mut sw = Vec::new();
        let mut uplink = Vec::new();
        for i in 0..switches {
            let n = lab.node(&format!("sw{}", i + 1));
            let (up, _) = lab.link(
                &n,
                &[&format!("{}/30", switch_address(i))],
                &leaf,
                &[&format!("{}/30", leaf_address(i))],
            );
            let (s, b) = (
                format!("192.0.2.{}", 32 + 4 * i + 1),
                format!("192.0.2.{}", 32 + 4 * i + 2),
            );
            lab.link(&n, &[&format!("{s}/30")], &be, &[&format!("{b}/30")]);
            n.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
            n.exec("ip", &["route", "add", &format!("{VIP}/32"), "via", &b]);
            for cmd in [
                "add table inet kgload",
                "add chain inet kgload through { type filter hook forward priority 0; }",
                "add rule inet kgload through ip daddr 198.51.100.80 counter",
            ] {
                n.exec("nft", &cmd.split(' ').collect::<Vec<_>>());
            }
            sw.push(n);
            uplink.push(up);
        }
        lab.link(&leaf, &["192.0.2.65/30"], &be, &["192.0.2.66/30"]);
        leaf.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
        leaf.exec("sysctl", &["-qw", "net.ipv4.fib_multipath_hash_policy=1"]);
        let sources: Vec<String> = (10..60).map(|i| format!("203.0.113.{i}")).collect();
        for s in &sources {
            client.exec("ip", &["addr", "add", &format!("{s}/26"), "dev", &ci]);
        }
        lab.write("sources", &sources.join("\n"));
        client.exec("ip", &["route", "add", "default", "via", "203.0.113.1"]);
        // The backend owns the VIP and answers straight to the leaf.
        be.exec("ip", &["addr", "add", &format!("{VIP}/32"), "dev", "lo"]);
        be.exec("ip", &["route", "add", "default", "via", "192.0.2.65"]);
        let script = lab
            .write("load.py", include_str!("load.py"))
            .display()
            .to_string();
        lab.spawn(&be, "echo", "python3", &[&script, "server", VIP, "8080"]);
        Self {
            leaf,
            client,
            sw,
            uplink,
            script,
        }
    }

    /// The leaf's kernel next hops for the VIP, sorted.
    pub fn hops(&self) -> Vec<String> {
        super::route_next_hops(&self.leaf, &[&format!("{VIP}/32")])
            .into_iter()
            .next()
            .unwrap_or_default()
    }

    pub fn wait_hops(&self, want: &[&str], timeout: Duration) {
        wait_for(
            &format!("the leaf to route the VIP via {want:?}"),
            timeout,
            || (self.hops() == want).then_some(()),
        );
    }

    /// Packets switch `i` has forwarded to the VIP.
    pub fn forwarded(&self, i: usize) -> u64 {
        let out = self.sw[i].exec("nft", &["-j", "list", "chain", "inet", "kgload", "through"]);
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        j["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|e| {
                e["rule"]["expr"]
                    .as_array()?
                    .iter()
                    .find_map(|x| x["counter"]["packets"].as_u64())
            })
            .unwrap_or_else(|| panic!("no counter on switch {i}: {j}"))
    }

    /// Starts the client for `seconds` against `port`; its records go to `<name>.json`.
    pub fn load(&self, lab: &mut Lab, name: &str, port: u16, seconds: u32) -> PathBuf {
        let out = lab.path(&format!("{name}.json"));
        let sources = lab.path("sources");
        lab.spawn(
            &self.client,
            name,
            "python3",
            &[
                &self.script,
                "client",
                VIP,
                &port.to_string(),
                &seconds.to_string(),
                sources.to_str().unwrap_or_default(),
                out.to_str().unwrap_or_default(),
            ],
        );
        out
    }
}

/// One connection the client made.
#[derive(Debug)]
pub struct Record {
    /// Wall clock, seconds.
    pub start: f64,
    pub end: f64,
    /// `ok`, or the error.
    pub outcome: String,
}

/// The client's records, once it has finished.
pub fn records(lab: &Lab, path: &Path, name: &str, within: Duration) -> Vec<Record> {
    let text = wait_for(&format!("the client {name} to finish"), within, || {
        std::fs::read_to_string(path).ok()
    });
    let j: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {}", lab.log(name)));
    j.as_array()
        .into_iter()
        .flatten()
        .map(|r| Record {
            start: r["start"].as_f64().unwrap_or_default(),
            end: r["end"].as_f64().unwrap_or_default(),
            outcome: r["outcome"].as_str().unwrap_or_default().to_string(),
        })
        .collect()
}

/// The connections that failed.
pub fn failures(r: &[Record]) -> Vec<&Record> {
    r.iter().filter(|r| r.outcome != "ok").collect()
}

/// Wall-clock seconds (the client's clock).
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}
