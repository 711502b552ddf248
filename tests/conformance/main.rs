//! The upstream Gateway API conformance suite (v1.6.3, the release of the CRDs) against
//! kube-gw, on the real control plane. Needs root (CI runs it as root).
//!
//! ```text
//!   client ns 192.0.2.66 ─── 192.0.2.65 switch ns (kube-gw; Gateway VIPs 198.51.100.0/26 on lo)
//!   conformance.test                       bridge `pods` 203.0.113.1/24 ─┬─ pod ns 203.0.113.10 echo-basic
//!   (API server forwarded to 127.0.0.1)                                 └─ pod ns 203.0.113.11 …
//! ```
//!
//! - The suite is the module's own test binary (`go test -c`, built by
//!   `scripts/testenv-build`), run in the client namespace with profiles GATEWAY-HTTP and
//!   GATEWAY-TLS and the features kube-gw claims ([`FEATURES`]).
//! - Its Pods become processes of the suite's echo server through a kubelet stand-in
//!   ([`kubelet`]); kube-controller-manager makes ReplicaSets, Pods and EndpointSlices as in
//!   any cluster.
//! - Kept as artifacts in `target/conformance/`: the suite's ConformanceReport
//!   (`report.yaml`), its verbose log, and kube-gw's log.
//! - The verdict: every test in `tests/conformance/passing.txt` must pass (a regression
//!   fails this test); the counts are printed, and a test that passes without being listed
//!   is named so that the list grows.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../common/controlplane.rs"]
mod controlplane;
#[path = "../netns/harness/mod.rs"]
mod harness;
mod kubelet;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use controlplane::{block_on, ControlPlane};
use harness::peers::KubeGw;
use harness::{require_root, wait_for, Lab};

/// The GatewayClass the suite is told to use.
const CLASS: &str = "kube-gw";

/// The features kube-gw claims: the suite runs their tests (and only theirs, within the
/// profiles).
const FEATURES: &[&str] = &[
    "Gateway",
    "HTTPRoute",
    "ReferenceGrant",
    "TLSRoute",
    // Extended, claimed because their tests pass.
    "GatewayPort8080",
    "GatewayAddressEmpty",
    "HTTPRouteDestinationPortMatching",
    "HTTPRouteParentRefPort",
    "HTTPRouteQueryParamMatching",
    "HTTPRouteMethodMatching",
    "HTTPRouteResponseHeaderModification",
    "HTTPRoutePortRedirect",
    "HTTPRouteSchemeRedirect",
    "HTTPRoutePathRedirect",
    "HTTPRouteHostRewrite",
    "HTTPRoutePathRewrite",
    "HTTPRoute303RedirectStatusCode",
    "HTTPRoute307RedirectStatusCode",
    "HTTPRoute308RedirectStatusCode",
    "HTTPRouteNamedRouteRule",
    "HTTPRouteRequestTimeout",
    "HTTPRouteBackendTimeout",
    "HTTPRouteBackendProtocolWebSocket",
    "HTTPRouteBackendRequestHeaderModification",
    "GatewayHTTPListenerIsolation",
    "HTTPRouteBackendProtocolH2C",
    "BackendTLSPolicy",
    "BackendTLSPolicySANValidation",
    "GatewayBackendClientCertificate",
];

/// Tests skipped for a reason outside kube-gw, with the reason (also in the report).
const SKIPPED: &[(&str, &str)] = &[];

fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/conformance");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn crds(cp: &ControlPlane) {
    let dir = controlplane::binaries().join("gateway-api/v1.6.3");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{} (scripts/testenv-build makes it): {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with("gateway.networking.k8s.io_") && n.ends_with(".yaml")
            })
        })
        .collect();
    files.sort();
    for f in files {
        cp.apply_manifest(&std::fs::read_to_string(&f).unwrap());
    }
    wait_for(
        "the Gateway API to be served",
        Duration::from_secs(60),
        || {
            block_on(async {
                let api: kube::Api<kube_gw::kube::gateway::Gateway> =
                    kube::Api::all(cp.admin().await);
                api.list(&Default::default()).await.ok().map(|_| ())
            })
        },
    );
}

/// Results by test name from `go test -v` output (`--- PASS: TestConformance/<name>`).
fn results(log: &str) -> (BTreeSet<String>, BTreeSet<String>, BTreeSet<String>) {
    let (mut pass, mut fail, mut skip) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for line in log.lines() {
        let line = line.trim_start();
        for (prefix, set) in [
            ("--- PASS: TestConformance/", &mut pass),
            ("--- FAIL: TestConformance/", &mut fail),
            ("--- SKIP: TestConformance/", &mut skip),
        ] {
            if let Some(rest) = line.strip_prefix(prefix) {
                let name = rest.split_whitespace().next().unwrap_or_default();
                // Top-level tests only: subtests are `<test>/<case>`.
                if !name.contains('/') {
                    set.insert(name.to_string());
                }
            }
        }
    }
    (pass, fail, skip)
}

#[test]
fn gateway_api_conformance() {
    if !require_root("gateway_api_conformance") {
        return;
    }
    let cp = ControlPlane::shared();
    crds(cp);
    let bin = controlplane::binaries().join("gateway-api/v1.6.3");
    let port: u16 = cp.server.rsplit(':').next().unwrap().parse().unwrap();

    let mut lab = Lab::new();
    let switch = lab.node("switch");
    let client = lab.node("client");
    lab.link(&client, &["192.0.2.66/30"], &switch, &["192.0.2.65/30"]);
    client.exec("ip", &["route", "add", "default", "via", "192.0.2.65"]);
    kubelet::bridge(&switch);
    lab.forward_host_port(&switch, port);
    lab.forward_host_port(&client, port);

    let name = "conformance-switch";
    cp.bind_switch(name);
    cp.bind_switch_gateway(name);
    let kc = cp.user_kubeconfig(
        &format!("system:node:{name}"),
        &["system:nodes"],
        &cp.server,
    );
    let kc_path = lab.write("switch.kubeconfig", &kc);
    std::fs::set_permissions(
        &kc_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let config = format!(
        r#"[node]
name = "{name}"

[kubernetes]
kubeconfig = "{}"
service-cidrs = ["10.96.0.0/12"]

[vip]
pools = ["198.51.100.0/24"]

[ipvs]
enabled = false

[bgp]
asn = 65010
router-id = "192.0.2.65"

[gateway]
source-addresses = ["203.0.113.1"]
address-pools = ["198.51.100.0/26"]
"#,
        kc_path.display()
    );
    let kg = KubeGw::start(&mut lab, &switch, name, &config);
    let _kubelet = kubelet::start(cp, switch.clone(), bin.join("echo-basic"));
    cp.apply_manifest(&format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata:\n  name: {CLASS}\nspec:\n  controllerName: kube-gw.io/switch\n"
    ));

    let admin = cp.user_kubeconfig("conformance", &["system:masters"], &cp.server);
    let admin_path = lab.write("conformance.kubeconfig", &admin);
    let out = artifacts();
    let report = out.join("report.yaml");
    let _ = std::fs::remove_file(&report);
    let log_path = out.join("suite.log");
    let skip: Vec<&str> = SKIPPED.iter().map(|(t, _)| *t).collect();
    // KUBE_GW_CONFORMANCE_FEATURES: another feature list, to try a feature before claiming it.
    let features = std::env::var("KUBE_GW_CONFORMANCE_FEATURES").unwrap_or(FEATURES.join(","));
    let mut args = vec![
        "env".to_string(),
        format!("KUBECONFIG={}", admin_path.display()),
        bin.join("conformance.test").display().to_string(),
        "-test.v".into(),
        "-test.run=^TestConformance$".into(),
        "-test.timeout=50m".into(),
        format!("-gateway-class={CLASS}"),
        "-conformance-profiles=GATEWAY-HTTP,GATEWAY-TLS".into(),
        format!("-supported-features={features}"),
        format!("-report-output={}", report.display()),
        "-organization=kube-gw".into(),
        "-project=kube-gw".into(),
        "-url=https://github.com/kube-gw/kube-gw".into(),
        format!("-version={}", env!("CARGO_PKG_VERSION")),
        "-contact=kube-gw maintainers".into(),
        "-cleanup-base-resources=false".into(),
    ];
    if !skip.is_empty() {
        args.push(format!("-skip-tests={}", skip.join(",")));
    }
    if let Ok(t) = std::env::var("KUBE_GW_CONFORMANCE_RUN") {
        args.push(format!("-run-test={t}"));
    }
    let log = std::fs::File::create(&log_path).unwrap();
    let status = client
        .command("env")
        .args(&args[1..])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .status()
        .unwrap();
    let _ = std::fs::copy(lab.path(&format!("{name}.log")), out.join("kube-gw.log"));
    let text = std::fs::read_to_string(&log_path).unwrap();
    let (pass, fail, skipped) = results(&text);
    eprintln!(
        "conformance (Gateway API v1.6.3, GATEWAY-HTTP + GATEWAY-TLS, features {features}): {} passed, {} failed, {} skipped; suite exit {status}; report {}",
        pass.len(),
        fail.len(),
        skipped.len(),
        report.display()
    );
    // The report's verdict per profile, for the CI log (the whole report is an artifact).
    if let Ok(r) = std::fs::read_to_string(&report) {
        if let Some(i) = r.find("profiles:") {
            eprintln!("{}", &r[i..]);
        }
    }
    for t in &fail {
        eprintln!("  FAIL {t}");
    }
    for (t, why) in SKIPPED {
        eprintln!("  SKIP {t}: {why}");
    }
    assert!(
        !pass.is_empty() || !fail.is_empty(),
        "the suite ran no test; its log ({}) ends:\n{}",
        log_path.display(),
        text.lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    let expected: BTreeSet<String> = include_str!("passing.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    for t in pass.difference(&expected) {
        eprintln!("  newly passing (add it to tests/conformance/passing.txt): {t}");
    }
    let regressed: Vec<&String> = expected.difference(&pass).collect();
    drop(kg);
    assert!(
        regressed.is_empty()
            || std::env::var("KUBE_GW_CONFORMANCE_RUN").is_ok()
            || std::env::var("KUBE_GW_CONFORMANCE_FEATURES").is_ok(),
        "conformance tests that passed before did not pass now: {regressed:?} (log {})",
        log_path.display()
    );
}
