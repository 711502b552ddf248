//! How the CLI shows the daemon's answers: tables in the spirit of `birdc show …`, from the
//! typed answers of [`crate::api`] (never from raw JSON).

use std::fmt::Write as _;

use crate::api::{BfdSessions, BgpNeighbors, BgpRoutes, ClusterView, Status, Vips};

/// The `vips` table.
pub fn vips(v: &Vips) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:<28} {:<12} {:<13} {:<8} {:<36} Ports",
        "VIP", "State", "Announce", "Ready", "Services"
    );
    for r in &v.vips {
        let state = if r.programmed {
            "programmed"
        } else if r.foreign {
            "foreign"
        } else {
            "pending"
        };
        let _ = writeln!(
            o,
            "{:<28} {:<12} {:<13} {:<8} {:<36} {}",
            r.address,
            state,
            if r.announceable { "yes" } else { "no" },
            r.ready_endpoints,
            r.services.join(","),
            r.ports.join(",")
        );
    }
    if !v.refused.is_empty() {
        let _ = writeln!(o, "\nRefused:");
        for r in &v.refused {
            let _ = writeln!(o, "  {:<28} {:<36} {}", r.address, r.service, r.reason);
        }
    }
    if let Some(e) = &v.error {
        let _ = writeln!(o, "\naddress reconciler: {e}");
    }
    let _ = writeln!(o, "{} VIPs on {}", v.vips.len(), v.interface);
    if let Some(a) = &v.allocations {
        let _ = writeln!(
            o,
            "\nAllocations (this switch {} the statuses):",
            if a.leader { "writes" } else { "does not write" }
        );
        for p in &a.pools {
            let _ = writeln!(
                o,
                "  pool {:<16} {:<24} {} of {} used",
                p.name, p.prefix, p.used, p.size
            );
        }
        let _ = writeln!(
            o,
            "  {:<40} {:<28} {:<16} {:<22} Shared",
            "Service", "Address", "Pool", "Since"
        );
        for r in &a.services {
            for h in &r.addresses {
                let _ = writeln!(
                    o,
                    "  {:<40} {:<28} {:<16} {:<22} {}",
                    r.service,
                    h.address,
                    h.pool,
                    h.since,
                    h.shared.as_deref().unwrap_or("-")
                );
            }
            for w in &r.waiting {
                let _ = writeln!(o, "  {:<40} waiting: {w}", r.service);
            }
        }
    }
    if let Some(f) = &v.firewall {
        let _ = writeln!(
            o,
            "\nFirewall ({}): {} VIPs; {} open, {} source-restricted; control ports from {}",
            if f.in_sync { "in sync" } else { "NOT in sync" },
            f.vips,
            f.open.len(),
            f.restricted.len(),
            if f.control_peers.is_empty() {
                "anywhere".to_string()
            } else {
                f.control_peers.join(",")
            }
        );
        for x in f.open.iter().chain(&f.restricted) {
            let _ = writeln!(o, "  accept {x}");
        }
        if let Some(e) = &f.error {
            let _ = writeln!(o, "  error: {e}");
        }
    }
    o
}

/// The `cluster` table: one line per Service with its addresses and endpoint readiness.
pub fn cluster(v: &ClusterView) -> String {
    let list = |items: &[String]| {
        if items.is_empty() {
            "-".to_string()
        } else {
            items.join(",")
        }
    };
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:<40} {:<13} {:<24} {:<24} {:<16} Endpoints",
        "Service", "Type", "External IPs", "LB IPs", "Ports"
    );
    for (key, s) in &v.services {
        let (mut ready, mut total) = (0, 0);
        for slice in v
            .endpoint_slices
            .values()
            .filter(|sl| sl.service.as_deref() == Some(key.as_str()))
        {
            for e in &slice.endpoints {
                total += 1;
                if e.ready {
                    ready += 1;
                }
            }
        }
        let ports: Vec<String> = s
            .ports
            .iter()
            .map(|p| format!("{}/{}", p.port, p.protocol.to_lowercase()))
            .collect();
        let _ = writeln!(
            o,
            "{:<40} {:<13} {:<24} {:<24} {:<16} {ready}/{total} ready",
            key,
            s.kind,
            list(&s.external_ips),
            list(&s.load_balancer_ips),
            list(&ports),
        );
    }
    let _ = writeln!(
        o,
        "{} services, {} endpoint slices, {} nodes",
        v.services.len(),
        v.endpoint_slices.len(),
        v.nodes.len()
    );
    o
}

/// The `bgp neighbors` table.
pub fn bgp_neighbors(rows: &BgpNeighbors) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:<28} {:<12} {:<11} {:<3} {:>9} {:>6} {:>6} {:>9}  Last error",
        "Neighbor", "State", "AS", "GR", "Up (s)", "Sent", "Rcvd", "Updates"
    );
    for n in rows {
        let gr = match (n.peer_as, n.graceful_restart) {
            (None, _) => "-",
            (Some(_), true) => "yes",
            (Some(_), false) => "no",
        };
        let _ = writeln!(
            o,
            "{:<28} {:<12} {:<11} {:<3} {:>9} {:>6} {:>6} {:>9}  {}",
            n.address,
            n.state,
            n.peer_as.map(|a| a.to_string()).unwrap_or_default(),
            gr,
            n.uptime_seconds,
            n.prefixes_sent,
            n.prefixes_received,
            n.updates_received,
            n.last_error.as_deref().unwrap_or_default()
        );
        if let Some(e) = &n.last_update_error {
            let _ = writeln!(o, "{:<28} {} UPDATE errors, last: {e}", "", n.update_errors);
        }
    }
    o
}

/// The `bfd` table, in the spirit of `show bfd peers`.
pub fn bfd(rows: &BfdSessions) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:<28} {:<10} {:<10} {:>8} {:>9} {:>9}  Diagnostic",
        "Neighbor", "State", "Remote", "TX (ms)", "Detect", "Up"
    );
    for r in rows {
        let detect = r
            .detection_time_ms
            .map_or("-".to_string(), |d| format!("{d} ms"));
        let diag = match &r.remote_diag {
            Some(d) if d != "no diagnostic" => format!("{}; peer: {d}", r.local_diag),
            _ => r.local_diag.clone(),
        };
        let _ = writeln!(
            o,
            "{:<28} {:<10} {:<10} {:>8} {:>9} {:>9}  {}",
            format!(
                "{}{}",
                r.neighbor,
                if r.multihop { " (multihop)" } else { "" }
            ),
            r.state,
            r.remote_state.as_deref().unwrap_or("-"),
            r.tx_interval_ms,
            detect,
            human_duration(r.uptime_seconds),
            diag
        );
        if let Some(e) = &r.last_error {
            let _ = writeln!(o, "{:<28} {e}", "");
        }
    }
    if rows.is_empty() {
        let _ = writeln!(o, "no BFD sessions (bfd = true on a neighbor asks for one)");
    }
    o
}

/// The `bgp routes` listing.
pub fn bgp_routes(routes: &BgpRoutes) -> String {
    let mut o = String::new();
    for n in &routes.neighbors {
        let _ = writeln!(
            o,
            "{} ({} sent, {} received)",
            n.neighbor,
            n.sent.len(),
            n.received.len()
        );
        for p in &n.sent {
            let _ = writeln!(o, "  sent      {p}");
        }
        for p in &n.received {
            let _ = writeln!(o, "  received  {p}");
        }
    }
    o
}

pub fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// Formats seconds as `1d2h`, `3h4m`, `5m6s` or `7s`.
pub fn human_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s}s"),
        (0, _, _) => format!("{h}h{m}m"),
        _ => format!("{d}d{h}h"),
    }
}

/// The `status` table, in the spirit of `birdc show protocols`.
pub fn status(s: &Status) -> String {
    let mut o = String::new();
    let state = serde_json::to_value(s.state)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default();
    let _ = writeln!(
        o,
        "kube-gw {} (pid {}): {}, {}, up {}",
        s.version,
        s.pid,
        state,
        if s.ready { "ready" } else { "not ready" },
        human_duration(s.uptime_seconds)
    );
    let reload = match &s.config.last_reload {
        None => "no reload yet".to_string(),
        Some(r) => format!(
            "last reload {} {} ago",
            r.result,
            human_duration(r.seconds_ago)
        ),
    };
    let _ = writeln!(
        o,
        "config {} (generation {}), {}",
        s.config.path, s.config.generation, reload
    );
    if let Some(r) = &s.config.last_reload {
        for m in &r.messages {
            let _ = writeln!(o, "  {m}");
        }
    }
    let _ = writeln!(o, "log filter {}", s.log_filter);
    let _ = writeln!(o);
    let w = s
        .components
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let _ = writeln!(
        o,
        "{:<w$}  {:<8} {:<11} {:<8} Info",
        "Name", "Kind", "State", "Since"
    );
    for c in &s.components {
        let _ = writeln!(
            o,
            "{:<w$}  {:<8} {:<11} {:<8} {}",
            c.name,
            c.kind,
            c.state,
            human_duration(c.since_seconds),
            c.info
        );
    }
    o
}

/// The `gateway` view.
pub fn gateway(v: &crate::api::GatewayView) -> String {
    let mut o = String::new();
    if !v.enabled {
        let _ = writeln!(
            o,
            "the gateway is off (no [gateway] section in the configuration)"
        );
        return o;
    }
    let _ = writeln!(o, "steering: {}", v.steering);
    let _ = writeln!(
        o,
        "kernel TLS: {} (connections: {} in the kernel, {} in userspace)",
        v.kernel_tls, v.tls_connections_kernel, v.tls_connections_userspace
    );
    let _ = writeln!(o, "session tickets: {}", v.session_tickets);
    if !v.synced {
        let _ = writeln!(o, "the Gateway API objects are not listed yet (are the CRDs installed? see `kube-gw status`)");
    }
    let _ = writeln!(
        o,
        "\n{:<26} {:<16} {:>6}  {:<28} Hosts / certificates",
        "VIP:port", "Kind", "Routes", "State"
    );
    for l in &v.listeners {
        let hosts = if l.certificates.is_empty() {
            l.hosts.join(", ")
        } else {
            l.certificates.join(", ")
        };
        let _ = writeln!(
            o,
            "{:<26} {:<16} {:>6}  {:<28} {}",
            l.address, l.kind, l.routes, l.state, hosts
        );
    }
    if v.listeners.is_empty() {
        let _ = writeln!(o, "(no VIP:port is served)");
    }
    let _ = writeln!(
        o,
        "\n{:<40} {:<14} {:<20} Addresses",
        "Gateway", "Programmed", "Reason"
    );
    for g in &v.gateways {
        let _ = writeln!(
            o,
            "{:<40} {:<14} {:<20} {}",
            g.gateway,
            if g.programmed { "yes" } else { "no" },
            g.reason,
            g.addresses.join(", ")
        );
        for l in &g.listeners {
            let _ = writeln!(o, "    {l}");
        }
    }
    if v.gateways.is_empty() {
        let _ = writeln!(o, "(no Gateway of kube-gw's classes)");
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{EndpointView, PortView, ServiceView, SliceView};

    #[test]
    fn durations_read_like_birdc() {
        assert_eq!(human_duration(7), "7s");
        assert_eq!(human_duration(366), "6m6s");
        assert_eq!(human_duration(3 * 3600 + 240), "3h4m");
        assert_eq!(human_duration(90000), "1d1h");
    }

    #[test]
    fn the_cluster_table_counts_each_service_s_ready_endpoints() {
        let mut v = ClusterView::default();
        v.services.insert(
            "shop/web".into(),
            ServiceView {
                kind: "LoadBalancer".into(),
                external_ips: vec!["198.51.100.10".into()],
                ports: vec![PortView {
                    name: "http".into(),
                    port: 80,
                    protocol: "TCP".into(),
                }],
                ..ServiceView::default()
            },
        );
        let ep = |ready| EndpointView {
            ready,
            ..EndpointView::default()
        };
        for (name, svc) in [("shop/web-a", "shop/web"), ("other/web-a", "other/web")] {
            v.endpoint_slices.insert(
                name.into(),
                SliceView {
                    service: Some(svc.into()),
                    endpoints: vec![ep(true), ep(false)],
                    ..SliceView::default()
                },
            );
        }
        let t = cluster(&v);
        let line = t.lines().find(|l| l.starts_with("shop/web")).unwrap();
        assert!(
            line.contains("198.51.100.10") && line.contains("80/tcp"),
            "{line}"
        );
        assert!(line.ends_with("1/2 ready"), "{line}");
        assert!(
            t.ends_with("1 services, 2 endpoint slices, 0 nodes\n"),
            "{t}"
        );
    }
}
