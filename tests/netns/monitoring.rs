//! The operator's view against a running daemon: every metric that the Grafana dashboard
//! (`configs/grafana-dashboard.json`) and the alerting rules (`configs/prometheus-rules.yaml`)
//! name is one kube-gw really exposes, and the series the alerts read carry the values they
//! should on a healthy switch with a refused address. (`scripts/check-monitoring` checks the
//! same files' syntax and the alerts' behaviour with promtool.)

use std::collections::{BTreeMap, BTreeSet};

use crate::bgp::{metrics, sample as value, switch_and_leaf};
use crate::harness::{require_root, wait_for};

/// The `kube_gw_…` names a file's queries use.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("kube_gw_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

/// What a scrape offers: families (`# TYPE`: name → type) and sample names.
struct Exposed {
    families: BTreeMap<String, String>,
    samples: BTreeSet<String>,
}

impl Exposed {
    fn parse(text: &str) -> Self {
        let mut families = BTreeMap::new();
        let mut samples = BTreeSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut words = rest.split_whitespace();
                if let (Some(name), Some(kind)) = (words.next(), words.next()) {
                    families.insert(name.to_string(), kind.to_string());
                }
            } else if !line.starts_with('#') && !line.is_empty() {
                let end = line.find(['{', ' ']).unwrap_or(line.len());
                samples.insert(line[..end].to_string());
            }
        }
        Self { families, samples }
    }

    /// A queried name is exposed: as a sample, or as a family (whose samples may be absent
    /// on this switch, such as the gateway's without `[gateway]`) with a suffix its type has.
    fn has(&self, name: &str) -> bool {
        if self.samples.contains(name) {
            return true;
        }
        let suffixes: &[(&str, &[&str])] = &[
            ("gauge", &[""]),
            ("counter", &["_total"]),
            ("histogram", &["_bucket", "_sum", "_count"]),
            ("info", &["_info"]),
        ];
        self.families.iter().any(|(family, kind)| {
            suffixes
                .iter()
                .filter(|(k, _)| k == kind)
                .flat_map(|(_, s)| s.iter())
                .any(|s| name.strip_prefix(family.as_str()) == Some(*s))
        })
    }
}

#[test]
fn the_dashboard_and_alerts_ask_only_for_metrics_the_daemon_exposes() {
    if !require_root("the_dashboard_and_alerts_ask_only_for_metrics_the_daemon_exposes") {
        return;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let dashboard = std::fs::read_to_string(format!("{root}/configs/grafana-dashboard.json"))
        .expect("configs/grafana-dashboard.json");
    let rules = std::fs::read_to_string(format!("{root}/configs/prometheus-rules.yaml"))
        .expect("configs/prometheus-rules.yaml");
    let wanted: BTreeSet<String> = names_in(&dashboard)
        .into_iter()
        .chain(names_in(&rules))
        .collect();
    assert!(
        wanted.len() >= 25,
        "the files name too few metrics: {wanted:?}"
    );

    let (sw, node, _leaf, bird) = switch_and_leaf(
        "",
        "[[bgp.neighbors]]\naddress = \"192.0.2.1\"\nremote-asn = 65000\n",
    );
    sw.service("served", &["198.51.100.95"], Some("10.0.0.5"));
    // Outside the pools: refused (and an Event), counted by reason.
    sw.service("refused", &["203.0.113.71"], Some("10.0.0.6"));
    wait_for(
        "the leaf to learn 198.51.100.95/32",
        crate::ESTABLISH,
        || {
            crate::bgp::bird_route(&bird, "198.51.100.95/32")
                .contains("via 192.0.2.2")
                .then_some(())
        },
    );
    let text = wait_for("the refusal in the metrics", crate::ESTABLISH, || {
        let t = metrics(&node);
        (value(&t, "kube_gw_vips_refused{reason=\"outside-pools\"}") == Some(1.0)).then_some(t)
    });
    let exposed = Exposed::parse(&text);
    // The check refuses what is not there (positive control of the negative path).
    assert!(!exposed.has("kube_gw_no_such_metric"));
    assert!(!exposed.has("kube_gw_vips_desired_total"));
    let missing: Vec<&String> = wanted.iter().filter(|n| !exposed.has(n)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard or the alerts ask for metrics kube-gw does not expose: {missing:?}\n\n{text}"
    );
    let without_samples: Vec<&String> = wanted
        .iter()
        .filter(|n| !exposed.samples.contains(*n))
        .collect();
    eprintln!(
        "monitoring: {} metric names in the dashboard and the rules, all exposed; \
         without a sample on this switch (no gateway, no BFD, kubeconfig join, counters \
         named by family): {without_samples:?}",
        wanted.len()
    );

    // The values the alerts read, on this switch.
    for (series, expected) in [
        ("kube_gw_ready", 1.0),
        ("kube_gw_kube_degraded", 0.0),
        ("kube_gw_kube_watch_synced{resource=\"services\"}", 1.0),
        (
            "kube_gw_bgp_session_established{neighbor=\"192.0.2.1\"}",
            1.0,
        ),
        ("kube_gw_vips_desired", 1.0),
        ("kube_gw_vips_on_interface", 1.0),
        ("kube_gw_vips_announceable", 1.0),
        ("kube_gw_vips_refused{reason=\"outside-pools\"}", 1.0),
        (
            "kube_gw_reconcile_consecutive_failures{reconciler=\"addresses\"}",
            0.0,
        ),
    ] {
        assert_eq!(value(&text, series), Some(expected), "{series}\n\n{text}");
    }
    let passes = value(
        &text,
        "kube_gw_reconcile_passes_total{reconciler=\"addresses\",result=\"ok\"}",
    );
    assert!(passes.is_some_and(|n| n >= 1.0), "{passes:?}\n\n{text}");
    // The served address came through the pipeline: its latency was measured.
    let measured = value(
        &text,
        "kube_gw_event_to_kernel_seconds_count{reconciler=\"addresses\"}",
    );
    assert!(measured.is_some_and(|n| n >= 1.0), "{measured:?}\n\n{text}");
    drop(sw);
}
