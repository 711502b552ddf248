//! kube-gw's nftables table `inet kube-gw`, and nothing else in nftables: the return path of
//! `externalTrafficPolicy: Cluster` (source NAT) and the firewall on the VIPs. One owner
//! ([`reconcile`]); the table is computed here, pure.
//!
//! **Source NAT.** IPVS forwards with `masq`: it rewrites the destination to the backend and
//! keeps the client's address as the source. A backend's reply must come back through the
//! same switch to be rewritten back — which nothing guarantees in a fabric. For Services
//! with `externalTrafficPolicy: Cluster`, as kube-proxy does, the switch also rewrites the
//! source to its own address on the way to the backend. `Local` keeps the client's address;
//! with `[ipvs] forwarding = "tunnel"` nothing is rewritten (a tunnelled packet keeps its
//! addresses and its answer goes from the node straight to the client).
//!
//! **Firewall.** A VIP on `lo` would answer on every port the switch listens on (sshd, the
//! BGP speaker, anything bound to the wildcard address). The input chain sends traffic to a
//! VIP through a verdict of its own: accepted on the Services' own `port/protocol` (for a
//! LoadBalancer address with `loadBalancerSourceRanges`, only from those ranges, as
//! kube-proxy enforces them), on the Gateway listeners' ports, ICMP that PMTU discovery and
//! error reporting need (and echo), and dropped otherwise. The switch's own BGP (TCP 179) and
//! BFD (UDP 3784/4784) ports take only the configured neighbors. The filter runs at priority
//! `filter - 10` in the input hook, before IPVS (which takes packets later in LOCAL_IN).
//!
//! ```text
//!  prerouting (mangle): daddr . proto . dport in @cluster4/6 → mark |= MARK
//!  postrouting (srcnat): mark & MARK → clear it, masquerade
//!  input (filter - 10): daddr in @vips4/6 → vip4/6: @open4/6 accept; @ranged4/6 (… . saddr) accept;
//!                                                   ICMP for PMTU, errors, echo accept; drop
//!                       tcp dport 179, udp dport 3784/4784 → control: saddr in @peers4/6 accept; drop
//! ```
//!
//! How it is written: the whole table at start, after a failure and on every resync (one
//! `nft -f` transaction that deletes and re-creates it: a failure leaves the previous table in
//! place); in between, only the elements that changed are deleted from or added to their
//! sets, in one transaction. Endpoint changes touch nothing here: the sets hold VIPs, ports and
//! ranges, never backends.

pub mod reconcile;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::process::{Command, Stdio};

use imbl::OrdMap;
use ipnet::IpNet;

use crate::config::{Config, Forwarding};
use crate::model::{Protocol, VirtualService, VsKey};

/// nftables table family and name kube-gw owns.
pub const TABLE: &str = "inet kube-gw";
/// Packet mark bit for "source-NAT after IPVS" (kube-proxy uses 0x4000; this is another).
pub const MARK: u32 = 0x0020_0000;
/// BGP's port.
pub const BGP_PORT: u16 = 179;
/// BFD's ports: single hop (RFC 5881) and multihop (RFC 5883).
pub const BFD_PORTS: [u16; 2] = [3784, 4784];

fn proto(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    }
}

/// The switch's own control ports and who may reach them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Control {
    /// TCP 179 is filtered (the BGP listener runs).
    pub bgp: bool,
    /// UDP 3784/4784 are filtered (a neighbor has BFD).
    pub bfd: bool,
    /// The configured neighbors.
    pub peers: BTreeSet<IpAddr>,
}

/// The table kube-gw wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Want {
    /// Virtual services whose traffic is source-NATed.
    pub nat: BTreeSet<VsKey>,
    /// The VIPs the firewall filters (every address kube-gw puts on the interface).
    pub vips: BTreeSet<IpAddr>,
    /// VIP:port/protocol open to everyone.
    pub open: BTreeSet<VsKey>,
    /// VIP:port/protocol open to one source range.
    pub ranged: BTreeSet<(VsKey, IpNet)>,
    pub control: Control,
}

/// What the firewall is computed from.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    pub virtual_services: &'a OrdMap<VsKey, VirtualService>,
    /// The addresses kube-gw wants on the interface (Services' and Gateways').
    pub vips: &'a BTreeSet<IpAddr>,
    /// The Gateway listeners' VIP:ports (TCP).
    pub gateway: &'a BTreeSet<(IpAddr, u16)>,
    pub config: &'a Config,
}

/// The virtual services whose forwarded traffic is source-NATed: `externalTrafficPolicy:
/// Cluster` with `masq` forwarding (a tunnelled packet keeps its addresses).
pub fn source_nat(
    virtual_services: &OrdMap<VsKey, VirtualService>,
    forwarding: Forwarding,
) -> BTreeSet<VsKey> {
    virtual_services
        .iter()
        .filter(|(_, vs)| forwarding == Forwarding::Masq && !vs.external_traffic_local)
        .map(|(k, _)| *k)
        .collect()
}

/// The table for these inputs (pure).
pub fn want(inp: &Inputs<'_>) -> Want {
    let mut w = Want {
        vips: inp.vips.clone(),
        nat: source_nat(inp.virtual_services, inp.config.ipvs.forwarding),
        ..Want::default()
    };
    for (k, vs) in inp.virtual_services {
        if vs.source_ranges.is_empty() {
            w.open.insert(*k);
        } else {
            // A range of the other family, or one that did not parse, lets nothing in.
            for r in vs.source_ranges.iter().flatten() {
                if r.addr().is_ipv4() == k.vip.is_ipv4() {
                    w.ranged.insert((*k, r.trunc()));
                }
            }
        }
    }
    for (addr, port) in inp.gateway {
        w.open.insert(VsKey {
            vip: *addr,
            port: *port,
            protocol: Protocol::Tcp,
        });
    }
    if let Some(b) = &inp.config.bgp {
        w.control = Control {
            bgp: b.listen,
            bfd: b.neighbors.iter().any(|n| n.bfd),
            peers: b.neighbors.iter().map(|n| n.address).collect(),
        };
    }
    w
}

/// The sets of the table, by name, with their elements as nft writes them.
fn sets(w: &Want) -> BTreeMap<&'static str, Vec<String>> {
    let mut s: BTreeMap<&'static str, Vec<String>> = [
        "cluster4", "cluster6", "vips4", "vips6", "open4", "open6", "ranged4", "ranged6", "peers4",
        "peers6",
    ]
    .into_iter()
    .map(|n| (n, Vec::new()))
    .collect();
    let fam = |a: &IpAddr, v4: &'static str, v6: &'static str| if a.is_ipv4() { v4 } else { v6 };
    let vs = |k: &VsKey| format!("{} . {} . {}", k.vip, proto(k.protocol), k.port);
    let mut push = |name: &'static str, e: String| {
        if let Some(v) = s.get_mut(name) {
            v.push(e);
        }
    };
    for k in &w.nat {
        push(fam(&k.vip, "cluster4", "cluster6"), vs(k));
    }
    for a in &w.vips {
        push(fam(a, "vips4", "vips6"), a.to_string());
    }
    for k in &w.open {
        push(fam(&k.vip, "open4", "open6"), vs(k));
    }
    for (k, r) in &w.ranged {
        push(
            fam(&k.vip, "ranged4", "ranged6"),
            format!("{} . {r}", vs(k)),
        );
    }
    for a in &w.control.peers {
        push(fam(a, "peers4", "peers6"), a.to_string());
    }
    s
}

fn set_type(name: &str) -> &'static str {
    match name {
        "cluster4" | "open4" => "type ipv4_addr . inet_proto . inet_service",
        "cluster6" | "open6" => "type ipv6_addr . inet_proto . inet_service",
        "ranged4" => "type ipv4_addr . inet_proto . inet_service . ipv4_addr\n\t\tflags interval",
        "ranged6" => "type ipv6_addr . inet_proto . inet_service . ipv6_addr\n\t\tflags interval",
        "vips4" | "peers4" => "type ipv4_addr",
        _ => "type ipv6_addr",
    }
}

/// The whole table (pure): one transaction that creates it, deletes it and creates it anew.
pub fn render(w: &Want) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "table {TABLE}\ndelete table {TABLE}\ntable {TABLE} {{");
    for (name, elems) in sets(w) {
        let _ = writeln!(out, "\tset {name} {{\n\t\t{}", set_type(name));
        if !elems.is_empty() {
            let _ = writeln!(out, "\t\telements = {{ {} }}", elems.join(", "));
        }
        out.push_str("\t}\n");
    }
    let _ = writeln!(
        out,
        "\tchain prerouting {{\n\t\ttype filter hook prerouting priority mangle; policy accept;\n\
         \t\tip daddr . meta l4proto . th dport @cluster4 meta mark set meta mark | {MARK:#010x}\n\
         \t\tip6 daddr . meta l4proto . th dport @cluster6 meta mark set meta mark | {MARK:#010x}\n\t}}"
    );
    let _ = writeln!(
        out,
        "\tchain postrouting {{\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tmeta mark & {MARK:#010x} == {MARK:#010x} meta mark set meta mark & {:#010x} masquerade\n\t}}",
        !MARK
    );
    out.push_str(
        "\tchain input {\n\t\ttype filter hook input priority filter - 10; policy accept;\n\
         \t\tip daddr @vips4 jump vip4\n\t\tip6 daddr @vips6 jump vip6\n",
    );
    if w.control.bgp {
        let _ = writeln!(out, "\t\ttcp dport {BGP_PORT} jump control");
    }
    if w.control.bfd {
        let _ = writeln!(
            out,
            "\t\tudp dport {{ {}, {} }} jump control",
            BFD_PORTS[0], BFD_PORTS[1]
        );
    }
    out.push_str("\t}\n");
    out.push_str(
        "\tchain vip4 {\n\
         \t\tip daddr . meta l4proto . th dport @open4 accept\n\
         \t\tip daddr . meta l4proto . th dport . ip saddr @ranged4 accept\n\
         \t\ticmp type { destination-unreachable, time-exceeded, parameter-problem, echo-request } accept\n\
         \t\tcounter drop\n\t}\n\
         \tchain vip6 {\n\
         \t\tip6 daddr . meta l4proto . th dport @open6 accept\n\
         \t\tip6 daddr . meta l4proto . th dport . ip6 saddr @ranged6 accept\n\
         \t\ticmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem, echo-request, nd-neighbor-solicit, nd-neighbor-advert } accept\n\
         \t\tcounter drop\n\t}\n\
         \tchain control {\n\
         \t\tip saddr @peers4 accept\n\
         \t\tip6 saddr @peers6 accept\n\
         \t\tcounter drop\n\t}\n}\n",
    );
    out
}

/// The transaction from table `old` to `new` when only set elements differ: the elements that
/// left each set deleted, those that came added (a change of one Service among 10 000 is a
/// line, not the set again). `None` when the chains differ (the table is written whole);
/// `Some("")` when nothing changed.
pub fn update(old: &Want, new: &Want) -> Option<String> {
    if old.control.bgp != new.control.bgp || old.control.bfd != new.control.bfd {
        return None;
    }
    let (a, b) = (sets(old), sets(new));
    let mut out = String::new();
    for (name, elems) in &b {
        let before = a.get(name).map(Vec::as_slice).unwrap_or_default();
        if before == elems.as_slice() {
            continue;
        }
        let was: BTreeSet<&String> = before.iter().collect();
        let now: BTreeSet<&String> = elems.iter().collect();
        let gone: Vec<&str> = was.difference(&now).map(|e| e.as_str()).collect();
        let came: Vec<&str> = now.difference(&was).map(|e| e.as_str()).collect();
        if !gone.is_empty() {
            let _ = writeln!(
                out,
                "delete element {TABLE} {name} {{ {} }}",
                gone.join(", ")
            );
        }
        if !came.is_empty() {
            let _ = writeln!(out, "add element {TABLE} {name} {{ {} }}", came.join(", "));
        }
    }
    Some(out)
}

/// Why the table could not be written.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot run nft ({0}); install the nftables package")]
    Spawn(#[source] std::io::Error),
    #[error("nft refused kube-gw's table: {0}")]
    Refused(String),
}

/// Runs `text` as one nft transaction.
pub fn apply(text: &str) -> Result<(), NftError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(NftError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(text.as_bytes()).map_err(NftError::Spawn)?;
    }
    let out = child.wait_with_output().map_err(NftError::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NftError::Refused(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ObjectKey;

    fn k(vip: &str, port: u16, p: Protocol) -> VsKey {
        VsKey {
            vip: vip.parse().unwrap(),
            port,
            protocol: p,
        }
    }

    fn vs(local: bool, ranges: &[&str]) -> VirtualService {
        VirtualService {
            service: ObjectKey::new("ns", "web"),
            port_name: String::new(),
            destinations: vec![],
            persistence: None,
            external_traffic_local: local,
            source_ranges: ranges.iter().map(|r| r.parse().ok()).collect(),
        }
    }

    fn config(text: &str) -> Config {
        crate::config::parse(std::path::Path::new("test.toml"), text)
            .unwrap()
            .config
    }

    #[test]
    fn services_open_their_ports_ranges_restrict_and_neighbors_reach_the_control_ports() {
        let cfg = config(
            "[vip]\npools = [\"198.51.100.0/24\", \"2001:db8:100::/64\"]\n[bgp]\nasn = 65010\nrouter-id = \"192.0.2.20\"\n\
             [[bgp.neighbors]]\naddress = \"192.0.2.1\"\nremote-asn = 65000\nbfd = true\n",
        );
        let mut m = OrdMap::new();
        m.insert(k("198.51.100.10", 80, Protocol::Tcp), vs(false, &[]));
        m.insert(
            k("198.51.100.11", 53, Protocol::Udp),
            vs(true, &["192.0.2.0/24", "2001:db8::/32", "bad"]),
        );
        m.insert(
            k("2001:db8:100::10", 443, Protocol::Tcp),
            vs(true, &["192.0.2.0/24"]),
        );
        let vips: BTreeSet<IpAddr> = [
            "198.51.100.10",
            "198.51.100.11",
            "2001:db8:100::10",
            "198.51.100.99",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        let gw: BTreeSet<(IpAddr, u16)> = [("198.51.100.99".parse().unwrap(), 443)].into();
        let w = want(&Inputs {
            virtual_services: &m,
            vips: &vips,
            gateway: &gw,
            config: &cfg,
        });
        assert_eq!(
            w.nat,
            [k("198.51.100.10", 80, Protocol::Tcp)].into(),
            "Local is not NATed"
        );
        assert_eq!(
            w.open,
            [
                k("198.51.100.10", 80, Protocol::Tcp),
                k("198.51.100.99", 443, Protocol::Tcp)
            ]
            .into()
        );
        assert_eq!(
            w.ranged,
            [(
                k("198.51.100.11", 53, Protocol::Udp),
                "192.0.2.0/24".parse().unwrap()
            )]
            .into(),
            "the IPv6 range and the bad one let nothing in to an IPv4 VIP"
        );
        assert!(
            !w.ranged.iter().any(|(k, _)| k.vip.is_ipv6()),
            "an IPv6 VIP with only IPv4 ranges is closed to all"
        );
        assert_eq!(w.control.peers, ["192.0.2.1".parse().unwrap()].into());
        assert!(w.control.bgp && w.control.bfd);
        let text = render(&w);
        assert!(
            text.contains("elements = { 198.51.100.11 . udp . 53 . 192.0.2.0/24 }"),
            "{text}"
        );
        assert!(text.contains("tcp dport 179 jump control"));
        assert!(text.contains("udp dport { 3784, 4784 } jump control"));
        // Only what changed is written between two states.
        let mut w2 = w.clone();
        w2.open.insert(k("198.51.100.10", 443, Protocol::Tcp));
        w2.vips.remove(&"198.51.100.99".parse().unwrap());
        let u = update(&w, &w2).unwrap();
        assert_eq!(
            u,
            "add element inet kube-gw open4 { 198.51.100.10 . tcp . 443 }\n\
             delete element inet kube-gw vips4 { 198.51.100.99 }\n"
        );
        assert_eq!(update(&w, &w).as_deref(), Some(""));
        let mut w3 = w.clone();
        w3.control.bfd = false;
        assert!(
            update(&w, &w3).is_none(),
            "a chain change rewrites the table"
        );
    }

    #[test]
    fn tunnel_forwarding_rewrites_no_source() {
        let cfg = config("[vip]\npools = [\"198.51.100.0/24\"]\n[ipvs]\nforwarding = \"tunnel\"\n");
        let mut m = OrdMap::new();
        m.insert(k("198.51.100.10", 80, Protocol::Tcp), vs(false, &[]));
        let w = want(&Inputs {
            virtual_services: &m,
            vips: &BTreeSet::new(),
            gateway: &BTreeSet::new(),
            config: &cfg,
        });
        assert!(w.nat.is_empty());
        assert!(!w.control.bgp, "no [bgp]: nothing to filter");
        assert!(!render(&w).contains("jump control"));
    }

    fn root_with_nft() -> bool {
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
            return false;
        }
        true
    }

    /// nft must accept the whole table and the updates (in a namespace of the test's own).
    #[test]
    fn nft_accepts_the_table_and_its_updates() {
        if !root_with_nft() {
            eprintln!("SKIP nft_accepts_the_table_and_its_updates: needs root and nft");
            return;
        }
        let ns = format!("kgnft{}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &ns])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip netns add");
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
        let list = || {
            let o = Command::new("ip")
                .args([
                    "netns", "exec", &ns, "nft", "list", "table", "inet", "kube-gw",
                ])
                .output()
                .unwrap();
            String::from_utf8_lossy(&o.stdout).to_string()
        };
        let mut w = Want::default();
        w.nat.insert(k("198.51.100.10", 80, Protocol::Tcp));
        w.vips.insert("198.51.100.10".parse().unwrap());
        w.vips.insert("2001:db8:100::10".parse().unwrap());
        w.open.insert(k("198.51.100.10", 80, Protocol::Tcp));
        w.ranged.insert((
            k("2001:db8:100::10", 443, Protocol::Tcp),
            "2001:db8:66::/64".parse().unwrap(),
        ));
        w.control = Control {
            bgp: true,
            bfd: true,
            peers: ["192.0.2.1".parse().unwrap(), "fe80::1".parse().unwrap()].into(),
        };
        let first = run(&render(&w));
        let twice = run(&render(&w));
        let mut w2 = w.clone();
        w2.open.insert(k("198.51.100.10", 53, Protocol::Udp));
        w2.ranged.clear();
        let upd = run(&update(&w, &w2).unwrap());
        let listed = list();
        let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        for (what, o) in [
            ("the table", &first),
            ("the table again", &twice),
            ("the update", &upd),
        ] {
            assert!(
                o.status.success(),
                "nft refused {what}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        assert!(listed.contains("198.51.100.10 . udp . 53"), "{listed}");
        assert!(
            !listed.contains("2001:db8:66::/64"),
            "the ranged set was emptied: {listed}"
        );
        assert!(listed.contains("tcp dport 179 jump control"), "{listed}");
    }
}
