//! TLS to backends end to end: BackendTLSPolicies (a CA bundle in a ConfigMap, the hostname
//! to verify) and the Gateway's client certificate (`spec.tls.backend.clientCertificateRef`),
//! against TLS echo servers in the backend namespace that demand a client certificate their
//! CA signed (`harness/echo.py --client-ca`).
//!
//! One valid backend and three ways to get it wrong (another CA, another name, an expired
//! certificate), and the Gateway without its client certificate: each wrong one answers 502
//! and the access-log line says why; none is ever served in plaintext.

use crate::gateway::{self, condition, World, VIP};
use crate::harness::require_root;

/// An issuing CA: (certificate PEM, issuer for signing).
fn ca(name: &str) -> (String, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    (cert.pem(), rcgen::Issuer::new(p, key))
}

/// A leaf certificate signed by `issuer`: (cert PEM, key PEM).
fn leaf(
    issuer: &rcgen::Issuer<'static, rcgen::KeyPair>,
    cn: &str,
    names: &[&str],
    client: bool,
    expired: bool,
) -> (String, String) {
    let mut p =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.extended_key_usages = vec![if client {
        rcgen::ExtendedKeyUsagePurpose::ClientAuth
    } else {
        rcgen::ExtendedKeyUsagePurpose::ServerAuth
    }];
    if expired {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A selector-less Service `name` (TCP `port`, named "https") with one ready endpoint.
fn tls_service(w: &World, ns: &str, name: &str, ep: &str, port: u16) {
    w.apply(&format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  ports:\n  - name: https\n    port: {port}\n    protocol: TCP\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  namespace: {ns}\n  labels:\n    kubernetes.io/service-name: {name}\n\
         addressType: IPv4\nports:\n- name: https\n  port: {port}\n  protocol: TCP\nendpoints:\n- addresses: [\"{ep}\"]\n  conditions: {{ready: true}}\n"
    ));
}

fn ca_config_map(w: &World, ns: &str, name: &str, pem: &str) {
    let indented: String = pem.lines().map(|l| format!("    {l}\n")).collect();
    w.apply(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {ns}\ndata:\n  ca.crt: |\n{indented}"
    ));
}

fn policy(w: &World, ns: &str, name: &str, service: &str, ca: &str, hostname: &str) {
    w.apply(&format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  targetRefs:\n  - {{group: \"\", kind: Service, name: {service}}}\n  validation:\n    caCertificateRefs:\n    - {{group: \"\", kind: ConfigMap, name: {ca}}}\n    hostname: {hostname}\n"
    ));
}

/// The last access-log line for `path`: (status, error).
fn access(w: &World, path: &str) -> Option<(u64, String)> {
    w.sw.lab
        .log(&w.sw.kg.name)
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["target"] == "kube_gw::access" && v["fields"]["path"] == path)
        .map(|v| {
            (
                v["fields"]["status"].as_u64().unwrap_or(0),
                v["fields"]["error"].as_str().unwrap_or("").to_string(),
            )
        })
}

fn get(w: &World, path: &str) -> (u16, serde_json::Value) {
    let (status, _, body) = w.curl(&[&format!("http://{VIP}{path}")]);
    (status, serde_json::from_str(&body).unwrap_or_default())
}

#[test]
fn backend_tls_verifies_the_backend_and_shows_the_gateway_s_client_certificate() {
    if !require_root("backend_tls_verifies_the_backend_and_shows_the_gateway_s_client_certificate")
    {
        return;
    }
    let mut w = gateway::start();
    let ns = w.sw.ns.clone();
    let (ca_a, issuer_a) = ca("backend CA A");
    let (ca_b, _) = ca("another CA B");
    let (good_cert, good_key) = leaf(&issuer_a, "api", &["api.example.com"], false, false);
    let (old_cert, old_key) = leaf(&issuer_a, "api", &["api.example.com"], false, true);
    let (client_cert, client_key) = leaf(&issuer_a, "spine-gateway", &[], true, false);
    let lab = &w.sw.lab;
    let file = |name: &str, text: &str| lab.write(name, text).display().to_string();
    let (good_c, good_k) = (file("good.crt", &good_cert), file("good.key", &good_key));
    let (old_c, old_k) = (file("old.crt", &old_cert), file("old.key", &old_key));
    let client_ca = file("client-ca.crt", &ca_a);
    let echo = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/netns/harness/echo.py");
    let backend = w.backend.clone();
    for (name, port, c, k) in [
        ("tls-good", "8443", &good_c, &good_k),
        ("tls-old", "9443", &old_c, &old_k),
    ] {
        w.sw.lab.spawn(
            &backend,
            name,
            "python3",
            &[
                echo,
                name,
                "203.0.113.12",
                port,
                c,
                k,
                "--client-ca",
                &client_ca,
            ],
        );
        w.wait(&format!("{name} to listen"), || {
            w.sw.lab.log(name).contains("listening").then_some(())
        });
    }
    w.apply(&gateway::tls_secret_yaml(
        &ns,
        "switch-client",
        &client_cert,
        &client_key,
    ));
    ca_config_map(&w, &ns, "ca-a", &ca_a);
    ca_config_map(&w, &ns, "ca-b", &ca_b);
    // Three Services on the good endpoint (one per policy), one on the expired one.
    for svc in ["good", "wrong-ca", "wrong-san"] {
        tls_service(&w, &ns, svc, "203.0.113.12", 8443);
    }
    tls_service(&w, &ns, "expired", "203.0.113.12", 9443);
    policy(&w, &ns, "good", "good", "ca-a", "api.example.com");
    policy(&w, &ns, "wrong-ca", "wrong-ca", "ca-b", "api.example.com");
    policy(
        &w,
        &ns,
        "wrong-san",
        "wrong-san",
        "ca-a",
        "other.example.com",
    );
    policy(&w, &ns, "expired", "expired", "ca-a", "api.example.com");
    let rule = |path: &str, svc: &str, port: u16| {
        format!("  - matches:\n    - path: {{type: PathPrefix, value: {path}}}\n    backendRefs:\n    - name: {svc}\n      port: {port}\n")
    };
    w.apply(&format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: tls\n  namespace: {ns}\nspec:\n  gatewayClassName: {}\n  addresses:\n  - type: IPAddress\n    value: {VIP}\n  tls:\n    backend:\n      clientCertificateRef: {{name: switch-client}}\n  listeners:\n  - name: http\n    port: 80\n    protocol: HTTP\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: tls\n  namespace: {ns}\nspec:\n  parentRefs:\n  - name: tls\n  rules:\n{}{}{}{}",
        w.class,
        rule("/good", "good", 8443),
        rule("/wrong-ca", "wrong-ca", 8443),
        rule("/wrong-san", "wrong-san", 8443),
        rule("/expired", "expired", 9443),
    ));
    w.wait("the policies to be accepted on the Gateway", || {
        ["good", "wrong-ca", "wrong-san", "expired"]
            .iter()
            .all(|p| {
                let st = gateway::object_status::<kube_gw::kube::gateway::BackendTlsPolicy>(&ns, p);
                let a = &st["ancestors"][0];
                a["ancestorRef"]["name"] == "tls"
                    && condition(&a["conditions"], "Accepted")["status"] == "True"
                    && condition(&a["conditions"], "ResolvedRefs")["status"] == "True"
            })
            .then_some(())
    });

    // 1. The good backend: verified, and it saw the Gateway's client certificate.
    let (status, answer) = w.wait("the verified backend to answer", || {
        let r = get(&w, "/good");
        (r.0 == 200).then_some(r)
    });
    assert_eq!(
        (
            status,
            answer["backend"].as_str(),
            answer["client"].as_str()
        ),
        (200, Some("tls-good"), Some("spine-gateway"))
    );

    // 2. Each wrong backend: 502, never an answer, and the log line says why.
    for (path, why) in [
        ("/wrong-ca", "UnknownIssuer"),
        ("/wrong-san", "NotValidForName"),
        ("/expired", "xpired"),
    ] {
        let (status, answer) = get(&w, path);
        assert_eq!(status, 502, "{path}: {answer}");
        assert!(
            answer.get("backend").is_none(),
            "{path} was answered: {answer}"
        );
        let (logged, error) = w.wait(&format!("the access log of {path}"), || access(&w, path));
        assert_eq!(logged, 502, "{path}");
        assert!(
            error.contains(why),
            "{path}: the log says {error:?}, not {why}"
        );
    }

    // 3. Without its client certificate the Gateway is refused by the backend that demands
    //    one (502); with it again, served. The same request before and after is the control.
    gateway::merge::<kube_gw::kube::gateway::Gateway>(
        &ns,
        "tls",
        serde_json::json!({"spec": {"tls": null}}),
    );
    let (status, _) = w.wait(
        "requests without a client certificate to be refused",
        || {
            let r = get(&w, "/good");
            (r.0 != 200).then_some(r)
        },
    );
    assert_eq!(status, 502);
    let (_, error) = w.wait("the refusal in the access log", || {
        access(&w, "/good").filter(|(s, _)| *s == 502)
    });
    assert!(!error.is_empty(), "a refused request logs why");
    gateway::merge::<kube_gw::kube::gateway::Gateway>(
        &ns,
        "tls",
        serde_json::json!({"spec": {"tls": {"backend": {"clientCertificateRef": {"name": "switch-client"}}}}}),
    );
    let (status, answer) = w.wait("the client certificate to be shown again", || {
        let r = get(&w, "/good");
        (r.0 == 200).then_some(r)
    });
    assert_eq!(
        (status, answer["client"].as_str()),
        (200, Some("spine-gateway"))
    );

    // 4. A policy whose CA ConfigMap goes away: the policy says so and requests fail (500),
    //    not plaintext.
    gateway::merge::<kube_gw::kube::gateway::BackendTlsPolicy>(
        &ns,
        "good",
        serde_json::json!({"spec": {"validation": {"caCertificateRefs": [
            {"group": "", "kind": "ConfigMap", "name": "no-such-ca"}
        ]}}}),
    );
    w.wait("the policy to say its CA is missing", || {
        let st = gateway::object_status::<kube_gw::kube::gateway::BackendTlsPolicy>(&ns, "good");
        let c = &st["ancestors"][0]["conditions"];
        (condition(c, "Accepted")["reason"] == "NoValidCACertificate"
            && condition(c, "ResolvedRefs")["reason"] == "InvalidCACertificateRef")
            .then_some(())
    });
    let (status, answer) = w.wait("requests to fail", || {
        let r = get(&w, "/good");
        (r.0 != 200).then_some(r)
    });
    assert_eq!(status, 500, "{answer}");
    let (_, error) = w.wait("the failure in the access log", || {
        access(&w, "/good").filter(|(s, _)| *s == 500)
    });
    assert!(error.contains("no-such-ca"), "{error}");
}

/// The CSRs a switch made for its backend identity: (name, approved or issued).
fn identity_csrs(node: &str) -> Vec<(String, bool)> {
    use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
    crate::controlplane::block_on(async {
        let api: kube::Api<CertificateSigningRequest> =
            kube::Api::all(crate::controlplane::ControlPlane::shared().admin().await);
        api.list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|c| {
                c.spec.username.as_deref() == Some(&format!("system:node:{node}"))
                    && c.spec.signer_name == "kubernetes.io/kube-apiserver-client"
            })
            .map(|c| {
                let done = c
                    .status
                    .is_some_and(|s| s.conditions.iter().flatten().any(|x| x.type_ == "Approved"));
                (c.metadata.name.unwrap_or_default(), done)
            })
            .collect()
    })
}

/// Approves a CSR as the cluster's operator would (`kubectl certificate approve`).
fn approve(name: &str) {
    use k8s_openapi::api::certificates::v1::{
        CertificateSigningRequest, CertificateSigningRequestCondition,
        CertificateSigningRequestStatus,
    };
    crate::controlplane::block_on(async {
        let api: kube::Api<CertificateSigningRequest> =
            kube::Api::all(crate::controlplane::ControlPlane::shared().admin().await);
        let mut csr = api.get(name).await.unwrap();
        csr.status = Some(CertificateSigningRequestStatus {
            conditions: Some(vec![CertificateSigningRequestCondition {
                type_: "Approved".into(),
                status: "True".into(),
                reason: Some("ApprovedByTest".into()),
                message: Some("approved by the backend TLS test".into()),
                ..Default::default()
            }]),
            ..Default::default()
        });
        api.replace_subresource("approval", name, &Default::default(), &csr)
            .await
            .unwrap();
    });
}

#[test]
fn a_service_that_asks_gets_a_client_certificate_kube_gw_minted_through_a_csr() {
    if !require_root("a_service_that_asks_gets_a_client_certificate_kube_gw_minted_through_a_csr") {
        return;
    }
    let mut w = gateway::start();
    let ns = w.sw.ns.clone();
    let node = w.sw.kg.name.clone();
    let (ca_a, issuer_a) = ca("backend CA A");
    let (cert, key) = leaf(&issuer_a, "api", &["api.example.com"], false, false);
    let lab = &w.sw.lab;
    let file = |name: &str, text: &str| lab.write(name, text).display().to_string();
    let (c, k) = (file("minted-srv.crt", &cert), file("minted-srv.key", &key));
    // The backend trusts client certificates of the cluster's CA (as it would from its
    // namespace's kube-root-ca.crt).
    let cluster_ca = file(
        "cluster-ca.crt",
        &crate::controlplane::ControlPlane::shared().ca_pem,
    );
    let echo = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/netns/harness/echo.py");
    let backend = w.backend.clone();
    w.sw.lab.spawn(
        &backend,
        "tls-minted",
        "python3",
        &[
            echo,
            "tls-minted",
            "203.0.113.12",
            "7443",
            &c,
            &k,
            "--client-ca",
            &cluster_ca,
        ],
    );
    w.wait("tls-minted to listen", || {
        w.sw.lab
            .log("tls-minted")
            .contains("listening")
            .then_some(())
    });
    ca_config_map(&w, &ns, "ca-a", &ca_a);
    w.apply(&format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: minted\n  namespace: {ns}\n  annotations:\n    kube-gw.io/backend-client-certificate: mint\nspec:\n  ports:\n  - name: https\n    port: 7443\n    protocol: TCP\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: minted-1\n  namespace: {ns}\n  labels:\n    kubernetes.io/service-name: minted\n\
         addressType: IPv4\nports:\n- name: https\n  port: 7443\n  protocol: TCP\nendpoints:\n- addresses: [\"203.0.113.12\"]\n  conditions: {{ready: true}}\n"
    ));
    policy(&w, &ns, "minted", "minted", "ca-a", "api.example.com");
    // A Gateway without a client certificate of its own.
    w.apply(&format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: tls\n  namespace: {ns}\nspec:\n  gatewayClassName: {}\n  addresses:\n  - type: IPAddress\n    value: {VIP}\n  listeners:\n  - name: http\n    port: 80\n    protocol: HTTP\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: tls\n  namespace: {ns}\nspec:\n  parentRefs:\n  - name: tls\n  rules:\n  - backendRefs:\n    - name: minted\n      port: 7443\n",
        w.class
    ));

    // 1. Until its CSR is approved, requests fail with the reason: never without a
    //    certificate, never in plaintext.
    let (status, _) = w.wait("requests to wait for the identity", || {
        let r = get(&w, "/");
        (r.0 == 500).then_some(r)
    });
    assert_eq!(status, 500);
    let (_, error) = w.wait("the failure in the access log", || {
        access(&w, "/").filter(|(s, _)| *s == 500)
    });
    assert!(error.contains("CertificateSigningRequest"), "{error}");
    let csr = w.wait("kube-gw's CSR for its backend identity", || {
        identity_csrs(&node).into_iter().next()
    });
    assert!(!csr.1, "nobody approved it yet");

    // 2. Approved (and signed by the cluster's signer): the backend sees kube-gw's identity.
    approve(&csr.0);
    let (status, answer) = w.wait("the backend to see the minted certificate", || {
        let r = get(&w, "/");
        (r.0 == 200).then_some(r)
    });
    let cn = format!("kube-gw-gateway:{node}");
    assert_eq!(
        (status, answer["client"].as_str()),
        (200, Some(cn.as_str()))
    );
    // One CSR, and its key only in the state directory, readable by kube-gw alone.
    assert_eq!(identity_csrs(&node).len(), 1);
    let key_file = w.sw.lab.path("state").join("backend-identity.key");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&key_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "{}", key_file.display());
    assert!(std::fs::read_to_string(&key_file)
        .unwrap()
        .contains("PRIVATE KEY"));
}
