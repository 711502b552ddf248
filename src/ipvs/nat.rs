//! The return path of `externalTrafficPolicy: Cluster`: kube-gw's nftables table
//! `inet kube-gw`, and nothing else in nftables.
//!
//! With `[ipvs] forwarding = "tunnel"` the table stays empty: a tunnelled packet keeps its
//! addresses and its answer goes from the node straight to the client.
//!
//! IPVS forwards with `masq`: it rewrites the destination to the backend and keeps the
//! client's address as the source. A backend's reply must then come back through the same
//! switch to be rewritten back — which nothing guarantees in a fabric (the backend's node
//! routes to the client its own way, and another switch may have forwarded the flow). For
//! Services with `externalTrafficPolicy: Cluster`, as kube-proxy does, the switch also
//! rewrites the source to its own address on the way to the backend, so the reply returns
//! to it. `Local` keeps the client's address (the point of `Local`); its backends' nodes need
//! a route to the clients through the switches (the fabric's default route normally is).
//!
//! ```text
//!  prerouting (mangle): daddr . proto . dport in @cluster4/@cluster6 → mark |= MARK
//!  IPVS (LOCAL_IN) forwards to the backend, the mark stays on the packet
//!  postrouting (srcnat): mark & MARK → clear it, masquerade (first packet; conntrack does the rest)
//! ```
//!
//! The table is rendered whole ([`render`], pure) and replaced atomically with `nft -f -`
//! (one transaction: a failure leaves the previous table in place). It changes only when the
//! set of Cluster-policy virtual services changes, not when endpoints do.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::process::{Command, Stdio};

use crate::model::{Protocol, VsKey};

/// nftables table family and name kube-gw owns.
pub const TABLE: &str = "inet kube-gw";
/// Packet mark bit for "source-NAT after IPVS" (kube-proxy uses 0x4000; this is another).
pub const MARK: u32 = 0x0020_0000;

fn proto(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    }
}

/// The whole table for the virtual services whose traffic is source-NATed (pure).
pub fn render(cluster: &BTreeSet<VsKey>) -> String {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for k in cluster {
        let e = format!("{} . {} . {}", k.vip, proto(k.protocol), k.port);
        match k.vip {
            IpAddr::V4(_) => v4.push(e),
            IpAddr::V6(_) => v6.push(e),
        }
    }
    let set = |name: &str, ty: &str, elems: &[String]| {
        let mut s = format!("\tset {name} {{\n\t\ttype {ty} . inet_proto . inet_service\n");
        if !elems.is_empty() {
            let _ = writeln!(s, "\t\telements = {{ {} }}", elems.join(", "));
        }
        s.push_str("\t}\n");
        s
    };
    let mut out = String::new();
    // Create-then-delete makes the replacement work whether or not the table exists; the
    // file is one transaction.
    let _ = writeln!(out, "table {TABLE}\ndelete table {TABLE}\ntable {TABLE} {{");
    out.push_str(&set("cluster4", "ipv4_addr", &v4));
    out.push_str(&set("cluster6", "ipv6_addr", &v6));
    let _ = writeln!(
        out,
        "\tchain prerouting {{\n\t\ttype filter hook prerouting priority mangle; policy accept;\n\
         \t\tip daddr . meta l4proto . th dport @cluster4 meta mark set meta mark | {MARK:#010x}\n\
         \t\tip6 daddr . meta l4proto . th dport @cluster6 meta mark set meta mark | {MARK:#010x}\n\t}}"
    );
    let _ = writeln!(
        out,
        "\tchain postrouting {{\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tmeta mark & {MARK:#010x} == {MARK:#010x} meta mark set meta mark & {:#010x} masquerade\n\t}}\n}}",
        !MARK
    );
    out
}

/// Why the table could not be written.
#[derive(Debug, thiserror::Error)]
pub enum NatError {
    #[error("cannot run nft ({0}); install the nftables package")]
    Spawn(#[source] std::io::Error),
    #[error("nft refused kube-gw's table: {0}")]
    Refused(String),
}

/// Replaces kube-gw's table with `text` (one nft transaction).
pub fn apply(text: &str) -> Result<(), NatError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(NatError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(text.as_bytes()).map_err(NatError::Spawn)?;
    }
    let out = child.wait_with_output().map_err(NatError::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NatError::Refused(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_marks_cluster_services_and_masquerades_them() {
        let mut s = BTreeSet::new();
        s.insert(VsKey {
            vip: "198.51.100.10".parse().unwrap(),
            port: 80,
            protocol: Protocol::Tcp,
        });
        s.insert(VsKey {
            vip: "2001:db8:100::10".parse().unwrap(),
            port: 53,
            protocol: Protocol::Udp,
        });
        let want = "table inet kube-gw
delete table inet kube-gw
table inet kube-gw {
\tset cluster4 {
\t\ttype ipv4_addr . inet_proto . inet_service
\t\telements = { 198.51.100.10 . tcp . 80 }
\t}
\tset cluster6 {
\t\ttype ipv6_addr . inet_proto . inet_service
\t\telements = { 2001:db8:100::10 . udp . 53 }
\t}
\tchain prerouting {
\t\ttype filter hook prerouting priority mangle; policy accept;
\t\tip daddr . meta l4proto . th dport @cluster4 meta mark set meta mark | 0x00200000
\t\tip6 daddr . meta l4proto . th dport @cluster6 meta mark set meta mark | 0x00200000
\t}
\tchain postrouting {
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\tmeta mark & 0x00200000 == 0x00200000 meta mark set meta mark & 0xffdfffff masquerade
\t}
}
";
        assert_eq!(render(&s), want);
        // Empty sets have no elements line (nft refuses `elements = { }`).
        assert!(!render(&BTreeSet::new()).contains("elements"));
    }

    /// The host has nf_tables (not IPVS): nft must accept the table. Needs root and nft;
    /// runs in a namespace of its own.
    #[test]
    fn nft_accepts_the_table() {
        let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        });
        let has_nft = Command::new("nft").arg("--version").output().is_ok();
        if !root || !has_nft {
            assert!(
                std::env::var("CI").is_err(),
                "CI runs as root with nft installed"
            );
            eprintln!("SKIP nft_accepts_the_table: needs root and nft");
            return;
        }
        let ns = format!("kgnat{}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &ns])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip netns add");
        let mut s = BTreeSet::new();
        s.insert(VsKey {
            vip: "198.51.100.10".parse().unwrap(),
            port: 80,
            protocol: Protocol::Tcp,
        });
        let text = render(&s);
        let run = |text: &str| {
            let mut c = Command::new("ip")
                .args(["netns", "exec", &ns, "nft", "-f", "-"])
                .stdin(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
            c.wait_with_output().unwrap()
        };
        // Twice: creating and replacing.
        let first = run(&text);
        let second = run(&render(&BTreeSet::new()));
        let listed = Command::new("ip")
            .args([
                "netns", "exec", &ns, "nft", "list", "table", "inet", "kube-gw",
            ])
            .output()
            .unwrap();
        let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        assert!(
            first.status.success(),
            "{}",
            String::from_utf8_lossy(&first.stderr)
        );
        assert!(
            second.status.success(),
            "{}",
            String::from_utf8_lossy(&second.stderr)
        );
        let listed = String::from_utf8_lossy(&listed.stdout);
        assert!(listed.contains("masquerade"), "{listed}");
        assert!(
            !listed.contains("198.51.100.10"),
            "the replacement kept the old element: {listed}"
        );
    }
}
