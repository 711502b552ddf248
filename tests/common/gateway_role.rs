//! The gateway as a process of its own for the lab and the benchmarks: one HTTPS listener at
//! VIP:port (steered by the eBPF program) proxying every request to one backend, built from a
//! hand-made plan (no control plane). Prints `ready …` once the kernel TLS probe answered.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use kube_gw::gateway::plan::{
    Backend, CertRef, Certificates, Filter, GatewayState, HostPattern, Match, PathMatch, PortPlan,
    RouteTable, Rule,
};
use kube_gw::gateway::proxy::{ProxyOptions, ProxyStats};
use kube_gw::gateway::steer::{Pair, Steering};
use kube_gw::model::ObjectKey;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Serves `vip:port` (HTTPS, any SNI) → `backend` (`addr:port`) until killed, on one thread
/// (as nginx with one worker and HAProxy with one thread).
pub fn serve_https(vip: &str, port: u16, cert: &str, key: &str, backend: &str, kernel_tls: bool) {
    serve_https_with(vip, port, cert, key, backend, kernel_tls, vec![], None);
}

/// TLS toward the backend, as a BackendTLSPolicy and `spec.tls.backend` would ask: the CA
/// (PEM file) and name to verify, and the client certificate and key (PEM files) to show.
#[allow(dead_code)]
pub struct UpstreamTls<'a> {
    pub ca: &'a str,
    pub hostname: &'a str,
    pub cert: &'a str,
    pub key: &'a str,
}

fn certified_key(cert: &str, key: &str) -> rustls::sign::CertifiedKey {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let private = PrivateKeyDer::from_pem_file(key).unwrap();
    rustls::sign::CertifiedKey::from_der(chain, private, &rustls::crypto::ring::default_provider())
        .unwrap()
}

/// [`serve_https`] with `filters` on its one rule, and TLS to the backend when `upstream`.
#[allow(clippy::too_many_arguments)]
pub fn serve_https_with(
    vip: &str,
    port: u16,
    cert: &str,
    key: &str,
    backend: &str,
    kernel_tls: bool,
    filters: Vec<Filter>,
    upstream: Option<UpstreamTls<'_>>,
) {
    let certified = certified_key(cert, key);
    let key = |s: &str| ObjectKey {
        namespace: "lab".into(),
        name: s.into(),
    };
    let mut bulk = Backend {
        name: "lab/bulk:8081".into(),
        weight: 1,
        endpoints: Vec::new(),
        proxy_protocol: false,
        error: None,
        h2c: false,
        request_headers: vec![],
        response_headers: vec![],
        tls: None,
        minted_client: None,
    };
    bulk.set_endpoints(vec![backend.parse().unwrap()]);
    let mut client_cert = None;
    if let Some(u) = upstream {
        let ca = std::fs::read_to_string(u.ca).unwrap();
        bulk.tls = Some(Arc::new(
            kube_gw::gateway::backend_tls::BackendTls::new(
                key("policy"),
                &[&ca],
                u.hostname,
                vec![],
            )
            .unwrap(),
        ));
        client_cert = Some(kube_gw::gateway::backend_tls::ClientCert::new(
            key("client"),
            Arc::new(certified_key(u.cert, u.key)),
        ));
    }
    let rule = Rule {
        route: key("route"),
        rule: 0,
        match_: Match {
            path: PathMatch::Prefix("/".into()),
            method: None,
            headers: vec![],
            query: vec![],
        },
        filters,
        backends: vec![bulk],
        request_timeout: None,
        backend_timeout: None,
        created: 0,
        metrics: Default::default(),
    };
    let mut routes = RouteTable::default();
    routes.push(HostPattern::Any, Arc::new(rule));
    routes.finish();
    routes.client_cert = client_cert;
    let pair = Pair {
        addr: vip.parse::<IpAddr>().unwrap(),
        port,
    };
    let mut state = GatewayState::default();
    state.ports.insert(
        pair,
        PortPlan::Http {
            routes,
            tls: Some(Certificates {
                by_host: vec![(
                    HostPattern::Any,
                    CertRef {
                        secret: key("cert"),
                        key: Arc::new(certified),
                    },
                )],
            }),
        },
    );
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let (tx, rx) = tokio::sync::mpsc::channel(64);
            let mut steering = Steering::start(tx, true);
            let report = steering.set(&BTreeSet::from([pair]));
            assert!(report.failed.is_empty(), "{report:?}");
            let (_state_tx, state_rx) = tokio::sync::watch::channel(Arc::new(state));
            let stats = Arc::new(ProxyStats::default());
            let proxy = tokio::spawn(kube_gw::gateway::proxy::run(
                rx,
                state_rx,
                ProxyOptions {
                    kernel_tls,
                    ..ProxyOptions::default()
                },
                stats.clone(),
            ));
            // Ready once the kernel TLS probe has answered.
            loop {
                if let Some(k) = stats.kernel_tls.lock().unwrap().clone() {
                    println!("ready {:?} kernel-tls {k:?}", steering.mode());
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = proxy.await;
        });
}
