//! The daemon's lifecycle as systemd and an operator see it: READY=1 on a notify socket the
//! test provides, `kube-gw status`, reload on SIGHUP (and refusal of a broken config while
//! staying up), the watchdog withholding pings while any loop is stuck, `/metrics`,
//! `/livez`, `/readyz`, and an ordered stop on SIGTERM.
//!
//! These run unprivileged: sockets live in a temporary directory and HTTP binds an ephemeral
//! loopback port.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/daemon.rs"]
mod daemon;

use std::process::Command;
use std::time::{Duration, Instant};

use daemon::{config_text, http_get, Daemon, BIN};

fn message_of(rec: &serde_json::Value) -> &str {
    rec["fields"]["message"].as_str().unwrap_or("")
}

#[test]
fn starts_answers_status_and_stops_in_order_on_sigterm() {
    let mut d = Daemon::start(&[]);
    assert!(d.messages.iter().any(|(_, m)| m.starts_with("STATUS=")));

    let table = d.cli(&["status"]);
    assert!(table.status.success());
    let table = String::from_utf8_lossy(&table.stdout).to_string();
    assert!(table.contains("running, ready"), "{table}");
    assert!(table.contains("generation 1"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("main-loop") && l.contains(" up ")),
        "{table}"
    );

    let s = d.status();
    assert_eq!(s["state"], "running");
    assert_eq!(s["ready"], true);
    assert_eq!(s["pid"].as_u64().unwrap().to_string(), d.pid());

    d.signal("TERM");
    let st = d.wait_exit(Duration::from_secs(20));
    assert_eq!(st.code(), Some(0), "log:\n{}", d.log());
    assert!(
        d.messages.iter().any(|(_, m)| m == "STOPPING=1"),
        "{:?}",
        d.messages
    );
    let phases: Vec<String> = d
        .log_records()
        .iter()
        .filter(|r| message_of(r) == "shutdown phase started")
        .map(|r| r["fields"]["phase"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        phases,
        ["bgp-drain", "bgp-withdraw", "dataplane-teardown", "close"],
        "log:\n{}",
        d.log()
    );
    assert!(
        !d.path("admin.sock").exists(),
        "the admin socket is removed at stop"
    );
}

#[test]
fn sighup_applies_a_valid_config_and_keeps_the_old_one_on_error() {
    let mut d = Daemon::start(&[]);
    let socket = d.path("admin.sock");
    std::fs::write(d.path("config.toml"), config_text(&socket, "debug")).unwrap();
    d.signal("HUP");
    d.wait_for_message("RELOADING=1", Duration::from_secs(10));
    d.wait_for_message("READY=1", Duration::from_secs(10));
    let s = d.status();
    assert_eq!(s["config"]["generation"], 2, "{s:#}");
    assert_eq!(s["config"]["last_reload"]["result"], "applied");
    assert_eq!(s["log_filter"], "debug");

    // A broken file: the daemon says so, keeps generation 2 and keeps serving.
    let broken = config_text(&socket, "debug").replace("asn = 65010", "asn = 23456");
    std::fs::write(d.path("config.toml"), broken).unwrap();
    d.signal("HUP");
    d.wait_for_message("READY=1", Duration::from_secs(10));
    let s = d.status();
    assert_eq!(s["state"], "running");
    assert_eq!(s["config"]["generation"], 2);
    let last = &s["config"]["last_reload"];
    assert_eq!(last["result"], "rejected");
    let msgs = last["messages"].as_array().unwrap();
    assert!(
        msgs.iter()
            .any(|m| m.as_str().unwrap().contains("config.toml:8:7: bgp.asn")),
        "{last:#}"
    );
    assert!(d
        .log_records()
        .iter()
        .any(|r| message_of(r) == "the new configuration is invalid; keeping the one in force"));

    // The CLI's reload says the same and exits 78.
    let out = d.cli(&["reload"]);
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("AS_TRANS"));

    // Fixed again: applied without a restart.
    std::fs::write(d.path("config.toml"), config_text(&socket, "info")).unwrap();
    let out = d.cli(&["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(d.status()["config"]["generation"], 3);
    assert_eq!(d.status()["log_filter"], "info");
}

/// Every long-running loop keeps a heartbeat: frozen in turn (the `debug-freeze` test
/// hook stops one loop from turning, as a stuck loop would), each makes the watchdog withhold
/// `WATCHDOG=1`, `/livez` and `/readyz` fail naming it, and status mark it stuck; once it
/// turns again, everything comes back. Margins: the watchdog (1 s here) notices a loop
/// within ~2.5 s and `/livez` after 5 s; the checks look at [3 s, 8 s] of a 10 s freeze.
#[test]
fn the_watchdog_stops_pinging_while_any_loop_is_stuck() {
    const FREEZE: Duration = Duration::from_secs(10);
    let mut d = Daemon::start_with(
        |socket, _| {
            // A passive BGP neighbor on loopback (nothing is sent to it): its session's loop
            // and the listener's exist and can be frozen.
            config_text(socket, "info").replace(
                "router-id = \"192.0.2.20\"\n",
                "router-id = \"192.0.2.20\"\n\n[[bgp.neighbors]]\naddress = \"127.0.0.2\"\nremote-asn = 65000\npassive = true\n",
            )
        },
        &[("WATCHDOG_USEC", "1000000"), ("KUBE_GW_TEST_HOOKS", "1")],
    );
    let t0 = Instant::now();
    d.pump_until(t0 + Duration::from_secs(2));
    let pings = |d: &Daemon, from: usize| {
        d.messages[from..]
            .iter()
            .filter(|(_, m)| m == "WATCHDOG=1")
            .count()
    };
    assert!(pings(&d, 0) >= 2, "pings while healthy: {:?}", d.messages);
    let addr = d.http_addr();
    assert_eq!(http_get(&addr, "/livez").0, 200);
    // Every loop the daemon runs here, as status lists them.
    let loops: Vec<String> = d.status()["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == "loop")
        .filter_map(|c| c["name"].as_str()?.strip_suffix("-loop").map(String::from))
        .filter(|n| n != "watchdog")
        .collect();
    for want in [
        "main",
        "kubernetes",
        "pipeline",
        "export",
        "addresses",
        "ipvs",
        "bgp/127.0.0.2",
        "bgp-listener",
    ] {
        assert!(
            loops.iter().any(|l| l == want),
            "no {want} loop in {loops:?}"
        );
    }
    for name in &loops {
        let r = d.admin_raw(&format!(
            r#"{{"command":"debug-freeze","seconds":{},"loop":"{name}"}}"#,
            FREEZE.as_secs()
        ));
        assert_eq!(r["ok"], true, "{r}");
        let frozen_at = Instant::now();
        d.pump_until(frozen_at + Duration::from_secs(3));
        let mark = d.messages.len();
        d.pump_until(frozen_at + Duration::from_secs(8));
        assert_eq!(
            pings(&d, mark),
            0,
            "{name} frozen: {:?}",
            &d.messages[mark..]
        );
        let (code, body) = http_get(&addr, "/livez");
        assert_eq!(
            (code, body.trim()),
            (503, format!("stuck loops: {name}").as_str())
        );
        assert_eq!(http_get(&addr, "/readyz").0, 503);
        let s = d.status();
        assert_eq!(s["ready"], false);
        let row = s["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == format!("{name}-loop"))
            .unwrap()
            .clone();
        assert_eq!(row["state"], "stuck", "{s:#}");
        // When the loop turns again, pings and health come back.
        let resume = d.messages.len();
        let deadline = frozen_at + FREEZE + Duration::from_secs(6);
        while pings(&d, resume) == 0 || http_get(&addr, "/livez").0 != 200 {
            assert!(Instant::now() < deadline, "{name} did not recover");
            d.pump_until(Instant::now() + Duration::from_millis(500));
        }
        assert_eq!(http_get(&addr, "/readyz").0, 200);
    }
    // An unknown loop is refused, naming the real ones.
    let r = d.admin_raw(r#"{"command":"debug-freeze","seconds":1,"loop":"nope"}"#);
    assert_eq!(r["ok"], false);
    assert!(r["error"].as_str().unwrap().contains("pipeline"), "{r}");
}

#[test]
fn test_hooks_are_refused_unless_enabled() {
    let d = Daemon::start(&[]);
    let r = d.admin_raw(r#"{"command":"debug-freeze","seconds":7}"#);
    assert_eq!(r["ok"], false);
    assert!(r["error"].as_str().unwrap().contains("KUBE_GW_TEST_HOOKS"));
    let r = d.admin_raw("not json");
    assert_eq!(r["ok"], false);
    assert!(r["error"].as_str().unwrap().contains("not a valid request"));
}

#[test]
fn metrics_parse_as_prometheus_text_and_readyz_is_ok_when_serving() {
    let d = Daemon::start(&[]);
    let addr = d.http_addr();
    let (code, body) = http_get(&addr, "/metrics");
    assert_eq!(code, 200);
    let lines = body.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    let value = |name: &str| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name)
            .map(|s| match s.value {
                prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
            .unwrap_or_else(|| panic!("{name} missing in:\n{body}"))
    };
    assert_eq!(value("kube_gw_ready"), 1.0);
    assert_eq!(value("kube_gw_config_generation"), 1.0);
    assert!(value("kube_gw_start_time_seconds") > 1.7e9);
    // The status request made by http_addr() was counted.
    let status_requests = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "kube_gw_admin_requests_total" && s.labels.get("command") == Some("status")
        })
        .unwrap_or_else(|| panic!("no admin request counter in:\n{body}"));
    // OpenMetrics names the family without `_total`, so a classic-text parser may see the
    // sample as untyped; its value is what matters.
    assert!(matches!(
        status_requests.value,
        prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) if v >= 1.0
    ));

    assert_eq!(http_get(&addr, "/readyz"), (200, "ok\n".to_string()));
    assert_eq!(http_get(&addr, "/nope").0, 404);
}

#[test]
fn log_level_changes_at_runtime_through_the_admin_socket() {
    let d = Daemon::start(&[]);
    let out = d.cli(&["log-level", "kube_gw=trace,info"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "log filter: info -> kube_gw=trace,info"
    );
    assert_eq!(d.status()["log_filter"], "kube_gw=trace,info");
    let bad = d.cli(&["log-level", "kube_gw=loud"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a log filter"));
    assert_eq!(d.status()["log_filter"], "kube_gw=trace,info");
}

#[test]
fn a_second_daemon_on_the_same_socket_refuses_to_start() {
    let d = Daemon::start(&[]);
    let out = Command::new(BIN)
        .args(["run", "--log-format", "json", "-c"])
        .arg(d.path("config.toml"))
        .env_remove("NOTIFY_SOCKET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("another kube-gw is already running"),
        "{stderr}"
    );
    // The first one is unharmed.
    assert_eq!(d.status()["state"], "running");
}
