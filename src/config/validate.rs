//! The semantic pass: rules that a well-typed configuration must still obey.
//!
//! Pure apart from looking at referenced files (existence and mode). Each rule yields a
//! [`Finding`] with the key path it concerns; the caller places it in the file. Sections
//! that failed to parse are `None` in the [`PartialConfig`] and are skipped, so every
//! problem in the sections that did parse is still reported.

use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use ipnet::IpNet;

pub use super::locate::Finding;
use super::locate::{KeyPath, Severity};
use super::schema::*;
use super::PartialConfig;

/// Whether the files a configuration references (kubeconfig, CA, token, passwords) are
/// looked at: their existence and, for secrets, their mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FileChecks {
    /// On the switch: a missing or world-readable file is an error.
    #[default]
    Check,
    /// Elsewhere (a config checked before it is deployed): the files are not looked at.
    Skip,
}

/// All findings for `cfg`, errors and warnings, in no particular order.
pub fn validate(cfg: &PartialConfig, files: FileChecks) -> Vec<Finding> {
    let mut out = Findings {
        found: Vec::new(),
        files,
    };
    if let Some(node) = &cfg.node {
        node_rules(node, &mut out);
    }
    match &cfg.kubernetes {
        Some(Some(k)) => kubernetes_rules(k, &mut out),
        Some(None) => out.warn(
            KeyPath::default(),
            "there is no [kubernetes] section, so no Service will be served".into(),
            "add [kubernetes] with a kubeconfig or bootstrap-token join",
        ),
        None => {}
    }
    if let Some(vip) = &cfg.vip {
        let cidrs = match &cfg.kubernetes {
            Some(Some(k)) => k.service_cidrs.as_slice(),
            _ => &[],
        };
        vip_rules(vip, cidrs, &mut out);
    }
    if let Some(Some(bgp)) = &cfg.bgp {
        bgp_rules(bgp, &cfg.neighbor_index, &mut out);
        let kept = cfg
            .vip
            .as_ref()
            .is_none_or(|v| v.on_shutdown == OnShutdown::Keep);
        if bgp.graceful_restart && !kept {
            out.error(
                KeyPath::keys(&["bgp", "graceful-restart"]),
                "graceful restart keeps the peers forwarding to this switch while kube-gw restarts, but [vip] on-shutdown = \"remove\" takes the addresses away at stop".into(),
                "set [vip] on-shutdown = \"keep\", or graceful-restart = false",
            );
        }
    }
    if let Some(Some(g)) = &cfg.gateway {
        gateway_rules(g, cfg.vip.as_ref(), &mut out);
    }
    if let Some(log) = &cfg.log {
        if let Err(e) = crate::telemetry::parse_filter(&log.level) {
            out.error(
                KeyPath::keys(&["log", "level"]),
                e,
                "use a level (error, warn, info, debug, trace) or directives like \"kube_gw=debug,info\"",
            );
        }
    }
    if let Some(admin) = &cfg.admin {
        if !admin.socket.is_absolute() {
            out.error(
                KeyPath::keys(&["admin", "socket"]),
                format!("`{}` is not an absolute path", admin.socket.display()),
                "use an absolute path such as /run/kube-gw/admin.sock",
            );
        }
        let ip = admin.metrics.ip();
        if cfg.vip.as_ref().is_some_and(|v| v.covers(&ip)) {
            out.error(
                KeyPath::keys(&["admin", "metrics"]),
                format!("{ip} is inside a VIP pool"),
                "the admin listener is the switch's own: keep it on 127.0.0.1 (or the management address), never a Service address",
            );
        } else if !ip.is_loopback() {
            out.warn(
                KeyPath::keys(&["admin", "metrics"]),
                format!("the admin HTTP listener is on {ip}, not on the loopback"),
                "/metrics, /livez and /readyz are unauthenticated: keep them on 127.0.0.1 and scrape through the switch's agent, or firewall this address",
            );
        }
    }
    out.found
}

fn gateway_rules(g: &GatewayConfig, vip: Option<&VipConfig>, out: &mut Findings) {
    let path = || KeyPath::keys(&["gateway", "source-addresses"]);
    for v4 in [true, false] {
        if g.source_addresses
            .iter()
            .filter(|a| a.is_ipv4() == v4)
            .count()
            > 1
        {
            out.error(
                path(),
                format!("more than one IPv{} source address", if v4 { 4 } else { 6 }),
                "give at most one address per family: the switch's own address",
            );
        }
    }
    for a in &g.source_addresses {
        if vip.is_some_and(|v| v.covers(a)) {
            out.error(
                path(),
                format!("{a} is inside a VIP pool"),
                "backend connections must come from the switch's own address, not an anycast VIP (replies would go to another switch)",
            );
        }
    }
    for (i, p) in g.address_pools.iter().enumerate() {
        if !vip.is_some_and(|v| v.pools.iter().any(|q| q.prefix.contains(p))) {
            out.error(
                KeyPath::keys(&["gateway", "address-pools"]).index(i),
                format!("{p} is not inside a [vip] pool"),
                "Gateway addresses are VIPs: put each address pool inside one of [vip] pools",
            );
        }
        if let Some(q) = vip.and_then(|v| {
            v.pools
                .iter()
                .find(|q| q.allocate && overlaps(&q.prefix, p))
        }) {
            out.error(
                KeyPath::keys(&["gateway", "address-pools"]).index(i),
                format!("{p} overlaps the allocating pool `{}` ({})", q.name, q.prefix),
                "Gateways and LoadBalancer Services would get the same addresses: take Gateway address pools from a [vip] pool without allocate = true",
            );
        }
    }
    if !g.session_ticket_secret.is_empty() && g.ticket_secret().is_none() {
        out.error(
            KeyPath::keys(&["gateway", "session-ticket-secret"]),
            format!("`{}` is not namespace/name", g.session_ticket_secret),
            "name the Secret as namespace/name (kube-system/kube-gw-session-tickets), or \"\" to keep each switch's keys its own",
        );
    }
    if g.drain_timeout > std::time::Duration::from_secs(12) {
        out.error(
            KeyPath::keys(&["gateway", "drain-timeout"]),
            format!(
                "{} s is longer than a stop may take",
                g.drain_timeout.as_secs()
            ),
            "give at most 12: each step of the stop is bounded by 15 s (systemd waits 30 s in all)",
        );
    }
    if g.controller_name.is_empty() || !g.controller_name.contains('/') {
        out.error(
            KeyPath::keys(&["gateway", "controller-name"]),
            format!("`{}` is not a controller name", g.controller_name),
            "use a domain-prefixed path such as kube-gw.io/switch",
        );
    }
}

struct Findings {
    found: Vec<Finding>,
    files: FileChecks,
}

impl Findings {
    fn push(&mut self, path: KeyPath, message: String, hint: &str, severity: Severity) {
        self.found.push(Finding {
            path,
            message,
            hint: hint.to_string(),
            severity,
        });
    }
    fn error(&mut self, path: KeyPath, message: String, hint: &str) {
        self.push(path, message, hint, Severity::Error);
    }
    fn warn(&mut self, path: KeyPath, message: String, hint: &str) {
        self.push(path, message, hint, Severity::Warning);
    }
}

fn node_rules(node: &NodeConfig, out: &mut Findings) {
    if let Some(name) = &node.name {
        if !is_dns_subdomain(name) {
            out.error(
                KeyPath::keys(&["node", "name"]),
                format!("`{name}` is not a valid Node name"),
                "use lower-case letters, digits, '-' and '.', at most 253 characters, starting and ending alphanumeric",
            );
        }
    }
    for (i, t) in node.taints.iter().enumerate() {
        if !is_qualified_name(&t.key) {
            out.error(
                KeyPath::keys(&["node", "taints"]).index(i).key("key"),
                format!("`{}` is not a valid taint key", t.key),
                "use an optional DNS prefix and a name, e.g. kube-gw.io/network-device",
            );
        }
    }
    for k in node.labels.keys() {
        if !is_qualified_name(k) {
            out.error(
                KeyPath::keys(&["node", "labels"]),
                format!("`{k}` is not a valid label key"),
                "use an optional DNS prefix and a name, e.g. topology.kubernetes.io/zone",
            );
        }
    }
}

fn kubernetes_rules(k: &KubernetesConfig, out: &mut Findings) {
    let base = || KeyPath::keys(&["kubernetes"]);
    if !(4..=300).contains(&k.lease_duration.as_secs()) {
        out.error(
            base().key("lease-duration"),
            format!("a lease duration of {} s", k.lease_duration.as_secs()),
            "use 4 to 300 seconds (40, the kubelet's, unless failover must be faster)",
        );
    }
    let bootstrap = k.server.is_some() || k.ca_file.is_some() || k.bootstrap_token_file.is_some();
    match (&k.kubeconfig, bootstrap) {
        (Some(_), true) => out.error(
            base(),
            "both `kubeconfig` and bootstrap keys (server, ca-file, bootstrap-token-file) are set"
                .into(),
            "keep one way of joining: the kubeconfig, or the three bootstrap keys",
        ),
        (None, false) => out.error(
            base(),
            "no way to reach the cluster is configured".into(),
            "set `kubeconfig`, or `server`, `ca-file` and `bootstrap-token-file`",
        ),
        (None, true) => {
            for (key, present) in [
                ("server", k.server.is_some()),
                ("ca-file", k.ca_file.is_some()),
                ("bootstrap-token-file", k.bootstrap_token_file.is_some()),
            ] {
                if !present {
                    out.error(
                        base(),
                        format!("the bootstrap join needs `{key}`"),
                        "set server, ca-file and bootstrap-token-file together",
                    );
                }
            }
        }
        (Some(_), false) => {}
    }
    if let Some(server) = &k.server {
        if !server.starts_with("https://") {
            out.error(
                base().key("server"),
                format!("`{server}` is not an https:// URL"),
                "write the API server as https://HOST:PORT",
            );
        }
    }
    if let Some(p) = &k.kubeconfig {
        secret_file(p, base().key("kubeconfig"), out);
    }
    if let Some(p) = &k.ca_file {
        existing_file(p, base().key("ca-file"), out);
    }
    if let Some(p) = &k.bootstrap_token_file {
        secret_file(p, base().key("bootstrap-token-file"), out);
    }
    if k.service_cidrs.is_empty() {
        out.error(
            base().key("service-cidrs"),
            "the cluster's Service CIDRs are not set".into(),
            "set service-cidrs to the API server's --service-cluster-ip-range (e.g. [\"10.96.0.0/12\"]) so its addresses are never served",
        );
    }
    for (i, c) in k.service_cidrs.iter().enumerate() {
        host_bits(c, base().key("service-cidrs").index(i), out);
    }
}

fn vip_rules(vip: &VipConfig, service_cidrs: &[IpNet], out: &mut Findings) {
    let base = || KeyPath::keys(&["vip"]);
    if vip.interface.is_empty() || vip.interface.len() > 15 || vip.interface.contains(['/', ' ']) {
        out.error(
            base().key("interface"),
            format!("`{}` is not a valid interface name", vip.interface),
            "use a Linux interface name of 1 to 15 characters, normally lo",
        );
    }
    if vip.pools.is_empty() {
        out.warn(
            base().key("pools"),
            "no address pools are configured, so no Service address will be served".into(),
            "add the prefixes your Services' external and LoadBalancer IPs come from",
        );
    }
    let prefixes = vip.prefixes();
    for (i, p) in prefixes.iter().enumerate() {
        let path = || base().key("pools").index(i);
        host_bits(p, path(), out);
        if let Some(j) = vip.pools[..i]
            .iter()
            .position(|q| q.name == vip.pools[i].name)
        {
            out.error(
                path(),
                format!(
                    "two pools are named `{}` (entries {j} and {i})",
                    vip.pools[i].name
                ),
                "give each pool its own name",
            );
        }
        for (j, q) in prefixes.iter().enumerate().skip(i + 1) {
            if overlaps(p, q) {
                out.error(
                    base().key("pools").index(j),
                    format!("pool {q} overlaps pool {p}"),
                    "make the pools disjoint (merge them or remove one)",
                );
            }
        }
        for c in service_cidrs {
            if overlaps(p, c) {
                out.error(
                    path(),
                    format!("pool {p} overlaps the Service CIDR {c}"),
                    "take pool addresses from outside the cluster's Service CIDRs (CVE-2020-8554)",
                );
            }
        }
    }
    if let Some(sel) = &vip.service_selector {
        if parse_selector(sel).is_none() {
            out.error(
                base().key("service-selector"),
                format!("`{sel}` is not a label selector"),
                "write key=value pairs separated by commas, e.g. kube-gw.io/fabric=dc1",
            );
        }
    }
}

fn bgp_rules(bgp: &BgpConfig, file_index: &[usize], out: &mut Findings) {
    let base = || KeyPath::keys(&["bgp"]);
    if let Some(why) = asn_problem(bgp.asn) {
        out.error(
            base().key("asn"),
            format!("AS {} {why}", bgp.asn),
            "use your fabric's AS number (private ranges: 64512-65534, 4200000000-4294967294)",
        );
    }
    let rid = bgp.router_id;
    if rid.is_unspecified() || rid.is_broadcast() || rid.is_multicast() {
        out.error(
            base().key("router-id"),
            format!("{rid} cannot be a router ID"),
            "use a unicast IPv4 address unique in the fabric, usually the switch's loopback",
        );
    }
    if bgp.hold_time != 0 && bgp.hold_time < 3 {
        out.error(
            base().key("hold-time"),
            format!(
                "a hold time of {} s is not allowed (RFC 4271)",
                bgp.hold_time
            ),
            "use 0 (no keepalives) or at least 3 seconds; 9 is the fabric default",
        );
    }
    if bgp.hold_time == 0 && bgp.keepalive != 0 {
        out.error(
            base().key("keepalive"),
            "keepalives are set while the hold time is 0".into(),
            "set keepalive = 0 too, or give a hold time of at least 3 s",
        );
    } else if bgp.hold_time != 0 && (bgp.keepalive == 0 || bgp.keepalive >= bgp.hold_time) {
        out.error(
            base().key("keepalive"),
            format!(
                "the keepalive interval ({} s) must be above 0 and below the hold time ({} s)",
                bgp.keepalive, bgp.hold_time
            ),
            "use a third of the hold time (e.g. hold-time = 9, keepalive = 3)",
        );
    }
    if bgp.graceful_restart && !(1..=4095).contains(&bgp.restart_time) {
        out.error(
            base().key("restart-time"),
            format!(
                "a restart time of {} s does not fit the capability's 12 bits (RFC 4724)",
                bgp.restart_time
            ),
            "use 1 to 4095 seconds; 120 is the usual value",
        );
    }
    if bgp.long_lived_stale_time > 0xFF_FFFF {
        out.error(
            base().key("long-lived-stale-time"),
            format!(
                "a long-lived stale time of {} s does not fit the capability's 24 bits (RFC 9494)",
                bgp.long_lived_stale_time
            ),
            "use at most 16777215 seconds (about 194 days)",
        );
    }
    if bgp.long_lived_stale_time > 0 && !bgp.graceful_restart {
        out.warn(
            base().key("long-lived-stale-time"),
            "long-lived graceful restart is offered only with graceful-restart = true".into(),
            "set graceful-restart = true, or remove long-lived-stale-time",
        );
    }
    // Protocol ids the kernel and the usual routing daemons use: kube-gw would replace and
    // remove their routes as its own.
    const TAKEN: &[(u8, &str)] = &[
        (0, "unspec"),
        (1, "redirect"),
        (2, "kernel"),
        (3, "boot"),
        (4, "static"),
        (11, "zebra"),
        (12, "bird"),
        (16, "dhcp"),
        (18, "keepalived"),
        (42, "babel"),
        (186, "bgp (FRR)"),
        (187, "isis (FRR)"),
        (188, "ospf (FRR)"),
        (189, "rip (FRR)"),
        (192, "eigrp (FRR)"),
    ];
    if let Some((_, who)) = TAKEN.iter().find(|(p, _)| *p == bgp.fib.protocol) {
        out.error(
            base().key("fib-protocol"),
            format!("route protocol {} is {who}'s", bgp.fib.protocol),
            "keep the default (107) or pick an id no other program on the switch uses",
        );
    }
    if bgp.restart_state.is_relative() {
        out.error(
            base().key("restart-state"),
            format!("{} is a relative path", bgp.restart_state.display()),
            "use an absolute path on a tmpfs, such as /run/kube-gw/bgp-restart",
        );
    }
    for (i, p) in bgp.static_prefixes.iter().enumerate() {
        if p.trunc() != *p {
            out.error(
                base().key("static-prefixes").index(i),
                format!("{p} has host bits set"),
                &format!("write the network: {}", p.trunc()),
            );
        }
    }
    for (i, n) in bgp.neighbors.iter().enumerate() {
        let entry = file_index.get(i).copied().unwrap_or(i);
        let path = || base().key("neighbors").index(entry);
        if let Some(a) = n.local_address {
            let link_local = a.is_ipv6() && is_link_local(a);
            if a.is_ipv4() != n.address.is_ipv4()
                || a.is_unspecified()
                || a.is_multicast()
                || link_local
            {
                out.error(
                    path().key("local-address"),
                    format!("{a} cannot be the source of a session to {}", n.address),
                    "use a unicast, not link-local, address of this switch in the neighbor's family",
                );
            }
        }
        if let Some(h) = n.next_hop_ipv4 {
            if h.is_unspecified() || h.is_loopback() || h.is_multicast() || h.is_broadcast() {
                out.error(
                    path().key("next-hop-ipv4"),
                    format!("{h} cannot be a next hop"),
                    "use a unicast address of this switch that the neighbor can route to, e.g. its loopback",
                );
            }
        }
        if let Some(h) = n.next_hop_ipv6 {
            let link_local = is_link_local(IpAddr::V6(h));
            if h.is_unspecified() || h.is_loopback() || h.is_multicast() || link_local {
                out.error(
                    path().key("next-hop-ipv6"),
                    format!("{h} cannot be a next hop"),
                    "use a global unicast address of this switch, e.g. its loopback",
                );
            }
        }
        if let RemoteAsn::Number(asn) = n.remote_asn {
            if let Some(why) = asn_problem(asn) {
                out.error(
                    path().key("remote-asn"),
                    format!("AS {asn} {why}"),
                    "use the peer's AS number, or \"external\" / \"internal\"",
                );
            }
        }
        if n.passive && !bgp.listen {
            out.error(
                path().key("passive"),
                format!(
                    "{} is passive, but kube-gw does not listen (`[bgp] listen = false`)",
                    n.address
                ),
                "remove `listen = false` from [bgp], or let kube-gw connect (passive = false)",
            );
        }
        let addr = n.address;
        if addr.is_unspecified() || addr.is_multicast() || is_broadcast(addr) {
            out.error(
                path().key("address"),
                format!("{addr} cannot be a neighbor address"),
                "use the peer's unicast address",
            );
        }
        match (is_link_local(addr), &n.interface) {
            (true, None) => out.error(
                path().key("address"),
                format!("{addr} is link-local, so the interface must be named"),
                "add interface = \"swpN\" for this neighbor",
            ),
            (false, Some(_)) => out.warn(
                path().key("interface"),
                format!("`interface` is only used for link-local neighbors, not {addr}"),
                "remove it",
            ),
            _ => {}
        }
        if n.extended_next_hop == Some(true) && addr.is_ipv4() {
            out.warn(
                path().key("extended-next-hop"),
                format!(
                    "{addr} is an IPv4 neighbor; extended next hop (RFC 8950) is for IPv6 sessions"
                ),
                "remove it",
            );
        }
        if let Some(ifname) = &n.interface {
            if ifname.is_empty() || ifname.len() > 15 {
                out.error(
                    path().key("interface"),
                    format!("`{ifname}` is not a valid interface name"),
                    "use a Linux interface name of 1 to 15 characters",
                );
            }
        }
        if let Some(p) = &n.password_file {
            secret_file(p, path().key("password-file"), out);
        }
        for (k, c) in n.communities.iter().enumerate() {
            if crate::config::parse_community(c).is_none() {
                out.error(
                    path().key("communities").index(k),
                    format!("`{c}` is not a community"),
                    "write it as \"ASN:VALUE\", each 0 to 65535 (e.g. \"65010:100\")",
                );
            }
        }
        for (k, c) in n.large_communities.iter().enumerate() {
            if crate::config::parse_large_community(c).is_none() {
                out.error(
                    path().key("large-communities").index(k),
                    format!("`{c}` is not a large community"),
                    "write it as \"ASN:DATA1:DATA2\", three numbers up to 4294967295",
                );
            }
        }
        if !(10..=60_000).contains(&n.bfd_interval) {
            out.error(
                path().key("bfd-interval"),
                format!("a BFD interval of {} ms", n.bfd_interval),
                "use 10 to 60000 milliseconds (300 detects a dead path in 0.9 s with bfd-multiplier 3)",
            );
        }
        if n.bfd_multiplier == 0 {
            out.error(
                path().key("bfd-multiplier"),
                "a BFD multiplier of 0".into(),
                "use 1 to 255 (3 is usual)",
            );
        }
        if n.bfd_multihop && is_link_local(addr) {
            out.error(
                path().key("bfd-multihop"),
                format!("{addr} is link-local, so it is one hop away"),
                "remove bfd-multihop for this neighbor",
            );
        }
        if n.prepend > 10 {
            out.error(
                path().key("prepend"),
                format!(
                    "prepending our AS {} times is more than any path needs",
                    n.prepend
                ),
                "use 0 to 10",
            );
        }
        for (j, m) in bgp.neighbors.iter().enumerate().take(i) {
            // An IPv6 link-local address may be used again on another interface.
            let scoped = n.address.is_ipv6() && is_link_local(n.address);
            if m.address == n.address && (!scoped || m.interface == n.interface) {
                out.error(
                    path().key("address"),
                    format!(
                        "neighbor {addr} is configured twice (also entry {})",
                        file_index.get(j).copied().unwrap_or(j) + 1
                    ),
                    "keep one [[bgp.neighbors]] block per peer",
                );
            }
        }
    }
}

/// Why an AS number cannot be used, if it cannot.
pub fn asn_problem(asn: u32) -> Option<&'static str> {
    match asn {
        0 => Some("is reserved (RFC 7607)"),
        23456 => Some("is AS_TRANS, reserved for 2-byte compatibility (RFC 6793)"),
        65535 | 4_294_967_295 => Some("is reserved (RFC 7300)"),
        _ => None,
    }
}

fn host_bits(net: &IpNet, path: KeyPath, out: &mut Findings) {
    if net.trunc() != *net {
        out.error(
            path,
            format!("{net} has host bits set"),
            &format!("write the network address: {}", net.trunc()),
        );
    }
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn is_broadcast(a: IpAddr) -> bool {
    matches!(a, IpAddr::V4(v4) if v4 == Ipv4Addr::BROADCAST)
}

fn is_link_local(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

fn existing_file(p: &Path, path: KeyPath, out: &mut Findings) -> Option<std::fs::Metadata> {
    if out.files == FileChecks::Skip {
        return None;
    }
    match std::fs::metadata(p) {
        Ok(m) if m.is_file() => Some(m),
        Ok(_) => {
            out.error(
                path,
                format!("{} is not a regular file", p.display()),
                "point it at a file",
            );
            None
        }
        Err(e) => {
            out.error(
                path,
                format!("cannot read {}: {e}", p.display()),
                "create the file or correct the path",
            );
            None
        }
    }
}

fn secret_file(p: &Path, path: KeyPath, out: &mut Findings) {
    if let Some(m) = existing_file(p, path.clone(), out) {
        let mode = m.permissions().mode() & 0o777;
        if mode & 0o007 != 0 {
            out.error(
                path,
                format!(
                    "{} holds a secret but its mode {mode:04o} lets every user read or write it",
                    p.display()
                ),
                &format!("chmod 0600 {} (or 0640 with a trusted group)", p.display()),
            );
        }
    }
}

/// Parses `k=v,k2=v2` (equality only; the form kube-gw supports).
pub fn parse_selector(s: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let (k, v) = part.split_once('=')?;
        let (k, v) = (k.trim(), v.trim().trim_start_matches('='));
        if !is_qualified_name(k) || v.contains(['=', '!']) {
            return None;
        }
        out.push((k.to_string(), v.to_string()));
    }
    Some(out)
}

fn is_dns_label_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(is_dns_label_char)
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// A Kubernetes qualified name: `[dns-subdomain/]name`, name ≤ 63 of `[A-Za-z0-9_.-]`.
fn is_qualified_name(s: &str) -> bool {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    name_ok && prefix.is_none_or(is_dns_subdomain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_asns_are_named() {
        for asn in [0, 23456, 65535, 4_294_967_295] {
            assert!(asn_problem(asn).is_some(), "{asn}");
        }
        for asn in [1, 64512, 65010, 4_200_000_000] {
            assert_eq!(asn_problem(asn), None, "{asn}");
        }
    }

    #[test]
    fn qualified_names_follow_kubernetes_rules() {
        assert!(is_qualified_name("kube-gw.io/network-device"));
        assert!(is_qualified_name("zone"));
        assert!(!is_qualified_name("Kube_GW.io/x"));
        assert!(!is_qualified_name("a/-x"));
        assert!(!is_qualified_name(""));
    }

    #[test]
    fn selectors_parse_equality_terms() {
        assert_eq!(
            parse_selector("kube-gw.io/fabric=dc1, tier=edge"),
            Some(vec![
                ("kube-gw.io/fabric".into(), "dc1".into()),
                ("tier".into(), "edge".into())
            ])
        );
        assert_eq!(parse_selector("noequals"), None);
        assert_eq!(parse_selector("a!=b"), None);
    }

    #[test]
    fn overlap_is_symmetric_and_exact() {
        let a: IpNet = "198.51.100.0/24".parse().unwrap();
        let b: IpNet = "198.51.100.128/25".parse().unwrap();
        let c: IpNet = "198.51.101.0/24".parse().unwrap();
        assert!(overlaps(&a, &b) && overlaps(&b, &a));
        assert!(!overlaps(&a, &c));
    }
}
