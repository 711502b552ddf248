//! kube-gw against a real control plane (etcd, kube-apiserver, kube-controller-manager built
//! from the pinned Kubernetes release): the bootstrap-token join end to end, the kubeconfig
//! join, the permission check, Node re-registration, API-server outages, and clear errors
//! for a wrong token, an unreachable server and a CA mismatch.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/controlplane.rs"]
mod controlplane;
#[path = "common/daemon.rs"]
mod daemon;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use controlplane::{block_on, wait_for, ControlPlane};
use daemon::Daemon;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{Api, DeleteParams, ListParams, PostParams};

const JOIN: Duration = Duration::from_secs(60);

/// The test that restarts the control plane's etcd runs alone: every other test holds this
/// lock shared.
static ETCD: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn shared_etcd() -> std::sync::RwLockReadGuard<'static, ()> {
    ETCD.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn unique(prefix: &str) -> String {
    let uuid = std::fs::read_to_string("/proc/sys/kernel/random/uuid").unwrap();
    format!("{prefix}-{}", &uuid[..8])
}

fn secret(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p.display().to_string()
}

fn base_config(socket: &Path, node: &str, kubernetes: &str) -> String {
    format!(
        r#"[node]
name = "{node}"
labels = {{ "kube-gw.io/role" = "spine", "topology.kubernetes.io/zone" = "test" }}

[kubernetes]
{kubernetes}
service-cidrs = ["10.96.0.0/12"]

[vip]
pools = ["203.0.113.0/24"]

[bgp]
asn = 65010
router-id = "192.0.2.20"

[admin]
socket = "{}"
metrics = "127.0.0.1:0"
"#,
        socket.display()
    )
}

fn bootstrap_config<'a>(
    cp: &'a ControlPlane,
    node: &str,
    token: &str,
) -> impl FnOnce(&Path, &Path) -> String + 'a {
    let node = node.to_string();
    let token = token.to_string();
    move |socket: &Path, dir: &Path| {
        let ca = dir.join("ca.crt");
        std::fs::write(&ca, &cp.ca_pem).unwrap();
        let tok = secret(dir, "token", &format!("{token}\n"));
        base_config(
            socket,
            &node,
            &format!(
                "server = \"{}\"\nca-file = \"{}\"\nbootstrap-token-file = \"{tok}\"\nstate-dir = \"{}\"",
                cp.server,
                ca.display(),
                dir.join("state").display()
            ),
        )
    }
}

fn component<'a>(status: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    status["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
}

fn wait_joined(d: &Daemon) -> serde_json::Value {
    let deadline = std::time::Instant::now() + JOIN;
    loop {
        let s = d.status();
        let joined = component(&s, "kubernetes").is_some_and(|c| c["state"] == "joined")
            && component(&s, "watch/services").is_some_and(|c| c["state"] == "synced");
        if joined {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "kube-gw did not join within {JOIN:?}; status:\n{s:#}\nlog:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn csrs_of(cp: &ControlPlane, node: &str) -> usize {
    block_on(async {
        let api: Api<CertificateSigningRequest> = Api::all(cp.admin().await);
        api.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|c| {
                c.spec
                    .username
                    .as_deref()
                    .is_some_and(|u| u.starts_with("system:bootstrap:"))
                    && c.status
                        .as_ref()
                        .and_then(|s| s.certificate.as_ref())
                        .is_some_and(|cert| {
                            let pem = String::from_utf8_lossy(&cert.0).to_string();
                            let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
                            let x = p.parse_x509().unwrap();
                            x.subject()
                                .to_string()
                                .contains(&format!("system:node:{node}"))
                        })
            })
            .count()
    })
}

#[test]
fn bootstrap_token_join_end_to_end() {
    let _etcd = shared_etcd();
    let cp = ControlPlane::shared();
    let node = unique("spine");
    cp.bind_switch(&node);
    let token = cp.bootstrap_token();
    let mut d = Daemon::start_with(bootstrap_config(cp, &node, &token), &[]);
    let s = wait_joined(&d);
    let join = component(&s, "kubernetes").unwrap()["info"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(join.contains(&format!("system:node:{node}")), "{join}");
    assert!(join.contains("TLS bootstrap"), "{join}");

    // The CSR was approved and signed by the real controller manager.
    assert_eq!(csrs_of(cp, &node), 1);
    let stored = d.path("state/kubeconfig");
    assert_eq!(
        std::fs::metadata(&stored).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(!d.log().contains(&token), "the token must never be logged");
    assert!(!d.log().contains(token.split('.').nth(1).unwrap()));

    block_on(async {
        let client = cp.admin().await;
        let nodes: Api<Node> = Api::all(client.clone());
        let n = wait_for_async(|| async { nodes.get_opt(&node).await.ok().flatten() }).await;
        let taints = n.spec.unwrap().taints.unwrap();
        assert!(taints.iter().any(|t| t.key == "kube-gw.io/network-device"
            && t.effect == "NoSchedule"
            && t.value.as_deref() == Some("true")));
        let labels = n.metadata.labels.unwrap();
        assert_eq!(labels["kube-gw.io/role"], "spine");
        assert_eq!(labels["topology.kubernetes.io/zone"], "test");
        let status = n.status.unwrap();
        let ready = status
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
        assert_eq!(ready.reason.as_deref(), Some("KubeGwReady"));
        assert!(status
            .addresses
            .unwrap()
            .iter()
            .any(|a| a.type_ == "InternalIP" && a.address == "192.0.2.20"));

        // The Lease is renewed (every 10 s).
        let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
        let first = wait_for_async(|| async {
            leases.get_opt(&node).await.ok().flatten()?.spec?.renew_time
        })
        .await;
        tokio::time::sleep(Duration::from_secs(12)).await;
        let second = leases
            .get(&node)
            .await
            .unwrap()
            .spec
            .unwrap()
            .renew_time
            .unwrap();
        assert!(
            second.0 > first.0,
            "lease not renewed: {first:?} then {second:?}"
        );
    });

    // A restart reuses the stored credentials: no new CSR.
    d.signal("TERM");
    assert_eq!(d.wait_exit(Duration::from_secs(30)).code(), Some(0));
    let dir = d.dir.path().to_path_buf();
    let config = std::fs::read_to_string(dir.join("config.toml")).unwrap();
    std::mem::forget(d); // keep its directory (state, token); the process has exited
    let d2 = Daemon::start_with(
        |socket, _| {
            config.replace(
                &dir.join("admin.sock").display().to_string(),
                &socket.display().to_string(),
            )
        },
        &[],
    );
    let s = wait_joined(&d2);
    assert!(component(&s, "kubernetes").unwrap()["info"]
        .as_str()
        .unwrap()
        .contains("stored certificate"));
    assert_eq!(csrs_of(cp, &node), 1, "a restart must not make a new CSR");
    let _ = std::fs::remove_dir_all(&dir);
}

async fn wait_for_async<T, F, Fut>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..300 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out");
}

#[test]
fn kubeconfig_join_names_a_missing_permission_and_recovers_when_granted() {
    let _etcd = shared_etcd();
    let cp = ControlPlane::shared();
    let node = unique("leaf");
    let kc = cp.user_kubeconfig(
        &format!("system:node:{node}"),
        &["system:nodes"],
        &cp.server,
    );
    let d = Daemon::start_with(
        |socket, dir| {
            let path = secret(dir, "kubeconfig", &kc);
            base_config(socket, &node, &format!("kubeconfig = \"{path}\""))
        },
        &[],
    );
    // Without the kube-gw binding a node may not watch EndpointSlices: said plainly.
    let msg = wait_for("the permission error", JOIN, || {
        let s = d.status();
        let k = component(&s, "kubernetes")?;
        (k["state"] == "failing").then(|| k["info"].as_str().unwrap().to_string())
    });
    assert!(
        msg.contains("list endpointslices.discovery.k8s.io (cluster-wide)"),
        "{msg}"
    );
    assert!(
        msg.contains("configs/kubernetes/kube-gw-rbac.yaml"),
        "{msg}"
    );
    assert!(d.status()["degraded"].as_str().is_some());

    // Granted: it joins on its next attempt, without a restart.
    cp.bind_switch(&node);
    let s = wait_joined(&d);
    assert!(component(&s, "kubernetes").unwrap()["info"]
        .as_str()
        .unwrap()
        .contains(&format!("system:node:{node}")));
    assert!(s["degraded"].is_null(), "{s:#}");
}

#[test]
fn a_deleted_node_is_registered_again() {
    let _etcd = shared_etcd();
    let cp = ControlPlane::shared();
    let node = unique("spine");
    cp.bind_switch(&node);
    let kc = cp.user_kubeconfig(
        &format!("system:node:{node}"),
        &["system:nodes"],
        &cp.server,
    );
    let d = Daemon::start_with(
        |socket, dir| {
            let path = secret(dir, "kubeconfig", &kc);
            base_config(socket, &node, &format!("kubeconfig = \"{path}\""))
        },
        &[],
    );
    wait_joined(&d);
    block_on(async {
        let nodes: Api<Node> = Api::all(cp.admin().await);
        let before = wait_for_async(|| async { nodes.get_opt(&node).await.ok().flatten() }).await;
        nodes.delete(&node, &DeleteParams::default()).await.unwrap();
        let after = wait_for_async(|| async {
            nodes
                .get_opt(&node)
                .await
                .ok()
                .flatten()
                .filter(|n| n.metadata.uid != before.metadata.uid)
        })
        .await;
        assert!(after
            .spec
            .unwrap()
            .taints
            .unwrap()
            .iter()
            .any(|t| t.key == "kube-gw.io/network-device"));
    });
    assert!(d
        .log()
        .contains("the Node was deleted; registering it again"));
}

/// A daemon for switch `node`, joined with a Node certificate through the API server at
/// `server`.
fn joined_through(cp: &ControlPlane, node: &str, server: &str) -> Daemon {
    let kc = cp.user_kubeconfig(&format!("system:node:{node}"), &["system:nodes"], server);
    let d = Daemon::start_with(
        |socket, dir| {
            let path = secret(dir, "kubeconfig", &kc);
            base_config(socket, node, &format!("kubeconfig = \"{path}\""))
        },
        &[],
    );
    wait_joined(&d);
    d
}

/// kube-gw asks for streaming lists (`sendInitialEvents`); an API server that has them
/// switched off (or predates them) refuses, and kube-gw lists in pages instead.
#[test]
fn an_api_server_without_streaming_lists_is_listed_in_pages() {
    let _etcd = shared_etcd();
    let cp = ControlPlane::shared();
    let node = unique("spine");
    cp.bind_switch(&node);
    let ns = unique("pages");
    let (port, pid) = cp.extra_apiserver_with(
        &format!("apiserver-{ns}"),
        &["--feature-gates=WatchList=false"],
    );
    let server = format!("https://127.0.0.1:{port}");
    let d = joined_through(cp, &node, &server);
    cp.create_namespace(&ns);
    block_on(async {
        let client = cp.admin().await;
        let services: Api<Service> = Api::namespaced(client, &ns);
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "paged", "namespace": ns},
            "spec": {"ports": [{"port": 80, "protocol": "TCP"}], "externalIPs": ["198.51.100.3"]}
        }))
        .unwrap();
        services.create(&PostParams::default(), &svc).await.unwrap();
    });
    wait_for("the Service in the view", JOIN, || {
        let out = d.cli(&["cluster", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["services"].get(format!("{ns}/paged")).map(|_| ())
    });
    assert!(
        d.log().contains("does not stream lists; listing in pages"),
        "kube-gw should have said it fell back to paged lists"
    );
    controlplane::stop(pid);
}

#[test]
fn an_api_server_outage_keeps_the_view_and_converges_after() {
    let _etcd = shared_etcd();
    let cp = ControlPlane::shared();
    let node = unique("spine");
    cp.bind_switch(&node);
    let ns = unique("outage");
    let (port, pid) = cp.extra_apiserver(&format!("apiserver-{ns}"));
    let server = format!("https://127.0.0.1:{port}");
    let d = joined_through(cp, &node, &server);
    cp.create_namespace(&ns);

    let svc = |name: &str, ip: &str| -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": {"ports": [{"port": 80, "protocol": "TCP"}], "externalIPs": [ip]}
        }))
        .unwrap()
    };
    block_on(async {
        let client = cp.admin().await;
        let services: Api<Service> = Api::namespaced(client, &ns);
        services
            .create(&PostParams::default(), &svc("before", "198.51.100.1"))
            .await
            .unwrap();
    });
    let has = |name: &str| {
        let out = d.cli(&["cluster", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["services"].get(format!("{ns}/{name}")).is_some()
    };
    wait_for("the first Service in the view", JOIN, || {
        has("before").then_some(())
    });

    // kube-gw's API server goes away: the view stays, status says degraded.
    controlplane::stop(pid);
    wait_for("degraded status", JOIN, || {
        d.status()["degraded"].as_str().map(str::to_string)
    });
    assert!(has("before"), "the view must not shrink during an outage");
    let metric = |name: &str| -> f64 {
        let (_, body) = daemon::http_get(&d.http_addr(), "/metrics");
        body.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} not in\n{body}"))
    };
    assert_eq!(metric("kube_gw_kube_degraded "), 1.0);
    // A Service created meanwhile (through the other API server)...
    block_on(async {
        let services: Api<Service> = Api::namespaced(cp.admin().await, &ns);
        services
            .create(&PostParams::default(), &svc("during", "198.51.100.2"))
            .await
            .unwrap();
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(!has("during"));
    // ...appears once kube-gw's API server is back.
    let pid2 = cp.apiserver(port, &format!("apiserver-{ns}-again"));
    cp.wait_ready(&server, Duration::from_secs(120));
    wait_for("the Service created during the outage", JOIN, || {
        has("during").then_some(())
    });
    assert!(has("before"));
    wait_for("the degraded flag to clear", JOIN, || {
        d.status()["degraded"].is_null().then_some(())
    });
    assert_eq!(metric("kube_gw_kube_degraded "), 0.0);
    assert!(metric("kube_gw_kube_watch_relists_total{resource=\"services\"}") >= 2.0);
    assert!(metric("kube_gw_kube_watch_errors_total{resource=\"services\"}") >= 1.0);
    let out = d.cli(&["cluster"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains(&format!("{ns}/during")) && table.contains("198.51.100.2"),
        "{table}"
    );
    controlplane::stop(pid2);
}

#[test]
fn bad_credentials_and_servers_give_clear_errors_and_retries_without_a_crash() {
    let _etcd = shared_etcd();
    let cp = ControlPlane::shared();
    let other_ca = {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.self_signed(&key).unwrap().pem()
    };
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cases: Vec<(&str, String, String, &str)> = vec![
        (
            "wrong token",
            cp.server.clone(),
            cp.ca_pem.clone(),
            "does not accept these credentials (401 Unauthorized)",
        ),
        (
            "unreachable server",
            format!("https://127.0.0.1:{dead_port}"),
            cp.ca_pem.clone(),
            "cannot reach the API server",
        ),
        (
            "CA mismatch",
            cp.server.clone(),
            other_ca,
            "not signed by the configured CA",
        ),
    ];
    for (what, server, ca, expect) in cases {
        let node = unique("bad");
        let d = Daemon::start_with(
            |socket, dir| {
                let ca_path = dir.join("ca.crt");
                std::fs::write(&ca_path, &ca).unwrap();
                let tok = secret(dir, "token", "abcdef.0123456789abcdef\n");
                base_config(
                    socket,
                    &node,
                    &format!(
                        "server = \"{server}\"\nca-file = \"{}\"\nbootstrap-token-file = \"{tok}\"\nstate-dir = \"{}\"",
                        ca_path.display(),
                        dir.join("state").display()
                    ),
                )
            },
            &[],
        );
        let msg = wait_for(what, JOIN, || {
            let s = d.status();
            let k = component(&s, "kubernetes")?;
            (k["state"] == "failing").then(|| k["info"].as_str().unwrap().to_string())
        });
        assert!(msg.contains(expect), "{what}: {msg}");
        // It keeps trying, with growing pauses, and keeps running.
        wait_for(&format!("{what}: a retry"), JOIN, || {
            let attempts = d
                .log_records()
                .iter()
                .filter(|r| r["fields"]["message"] == "cannot join the cluster")
                .count();
            (attempts >= 2).then_some(())
        });
        assert_eq!(d.status()["state"], "running");
        assert!(
            !d.log().contains("0123456789abcdef"),
            "{what}: token in the log"
        );
    }
}

/// etcd restarted under a running API server, then the API server restarted with a new
/// serving certificate from the same CA: kube-gw's view never shrinks, it follows changes
/// made after each, and it stays joined (no new join, no re-bootstrap).
#[test]
fn an_etcd_restart_and_a_new_serving_certificate_cost_nothing() {
    let _alone = ETCD
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let cp = ControlPlane::shared();
    let node = unique("spine");
    cp.bind_switch(&node);
    let ns = unique("etcd");
    let name = format!("apiserver-{ns}");
    let (port, pid) = cp.extra_apiserver(&name);
    let server = format!("https://127.0.0.1:{port}");
    let d = joined_through(cp, &node, &server);
    cp.create_namespace(&ns);
    let create = |svc: &str, ip: &str| {
        let s: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": svc, "namespace": ns},
            "spec": {"ports": [{"port": 80, "protocol": "TCP"}], "externalIPs": [ip]}
        }))
        .unwrap();
        // The API server may still be settling after a restart: retried for a while.
        wait_for(&format!("Service {svc} created"), JOIN, || {
            block_on(async {
                Api::<Service>::namespaced(cp.admin().await, &ns)
                    .create(&PostParams::default(), &s)
                    .await
                    .ok()
            })
        });
    };
    let has = |svc: &str| {
        let out = d.cli(&["cluster", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["services"].get(format!("{ns}/{svc}")).is_some()
    };
    let joined_message = || {
        component(&d.status(), "kubernetes")
            .and_then(|c| c["message"].as_str().map(String::from))
            .unwrap_or_default()
    };
    create("before", "198.51.100.1");
    wait_for("the first Service in the view", JOIN, || {
        has("before").then_some(())
    });
    let joined = joined_message();

    // 1. etcd restarts under both API servers.
    cp.restart_etcd();
    create("after-etcd", "198.51.100.2");
    wait_for("the Service created after etcd's restart", JOIN, || {
        has("after-etcd").then_some(())
    });
    assert!(has("before"), "the view shrank after etcd's restart");

    // 2. kube-gw's API server restarts with a new serving certificate (same CA).
    controlplane::stop(pid);
    let flags = cp.serving_certificate(&format!("{name}-new"));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let pid2 = cp.apiserver_with(port, &format!("{name}-again"), &flags);
    cp.wait_ready(&server, Duration::from_secs(120));
    // The new certificate is the one served (positive control of the change).
    let crt = flags[0].trim_start_matches("--tls-cert-file=");
    let fingerprint = |args: &[&str], input: Option<&str>| {
        let mut c = std::process::Command::new("openssl");
        c.args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        if let Some(text) = input {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        } else {
            drop(child.stdin.take());
        }
        String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout).to_string()
    };
    let served = fingerprint(
        &[
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-showcerts",
        ],
        None,
    );
    let served_fp = fingerprint(
        &["x509", "-noout", "-fingerprint", "-sha256"],
        Some(&served),
    );
    let new_fp = fingerprint(
        &["x509", "-noout", "-fingerprint", "-sha256", "-in", crt],
        None,
    );
    assert!(new_fp.contains("Fingerprint"), "{new_fp}");
    assert_eq!(
        served_fp, new_fp,
        "the API server does not serve the new certificate"
    );
    create("after-cert", "198.51.100.3");
    wait_for(
        "the Service created after the new certificate",
        JOIN,
        || has("after-cert").then_some(()),
    );
    assert!(has("before") && has("after-etcd"), "the view shrank");
    wait_for("the degraded flag to clear", JOIN, || {
        d.status()["degraded"].is_null().then_some(())
    });
    // Still the same join: no re-bootstrap, no new identity.
    assert_eq!(joined_message(), joined);
    controlplane::stop(pid2);
}
