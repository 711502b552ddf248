//! The three namespaces of the proxy benchmarks, and their TLS 1.3 client:
//!
//! ```text
//!   client (192.0.2.66) ── switch (192.0.2.65, 203.0.113.1; the VIP on lo) ── backend
//! ```

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::harness::{Lab, Node};

pub struct ProxyWorld {
    pub lab: Lab,
    pub client: Node,
    pub switch: Node,
    pub backend: Node,
    /// The lab's scratch directory.
    pub dir: String,
}

/// The namespaces, linked and routed, with `vip` on the switch's lo and `backend` (in
/// 203.0.113.0/24) on the backend's side.
pub fn proxy_world(vip: &str, backend_addr: &str) -> ProxyWorld {
    let mut lab = Lab::new();
    let client = lab.node("client");
    let switch = lab.node("switch");
    let backend = lab.node("backend");
    lab.link(&client, &["192.0.2.66/30"], &switch, &["192.0.2.65/30"]);
    lab.link(
        &switch,
        &["203.0.113.1/24"],
        &backend,
        &[&format!("{backend_addr}/24")],
    );
    client.exec("ip", &["route", "add", "default", "via", "192.0.2.65"]);
    backend.exec("ip", &["route", "add", "default", "via", "203.0.113.1"]);
    switch.exec("ip", &["addr", "add", &format!("{vip}/32"), "dev", "lo"]);
    let dir = lab.dir().display().to_string();
    ProxyWorld {
        lab,
        client,
        switch,
        backend,
        dir,
    }
}

/// A TLS 1.3 connection to `vip`:443 for `app.example` with one cipher suite (rustls' name,
/// e.g. `TLS13_AES_128_GCM_SHA256`), the server verified against the PEM file `ca`.
pub fn tls13_client(
    vip: &str,
    suite: &str,
    ca: &str,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .retain(|s| format!("{:?}", s.suite()) == suite);
    assert_eq!(provider.cipher_suites.len(), 1, "no suite {suite}");
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("app.example").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
    let sock = TcpStream::connect(SocketAddr::new(vip.parse().unwrap(), 443)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    rustls::StreamOwned::new(conn, sock)
}
