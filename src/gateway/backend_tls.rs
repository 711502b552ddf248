//! TLS from the gateway to backends: what a BackendTLSPolicy asks (`compute` resolves it into
//! a [`BackendTls`] on each `Backend` it applies to), and the rustls client side that
//! enforces it (`proxy` calls [`connect`] on each new backend connection).
//!
//! - Inputs: the policy's CA bundle (PEM, from a ConfigMap's `ca.crt`, or the switch's own
//!   trust store for `wellKnownCACertificates: System`), its `hostname` (sent as SNI) and
//!   `subjectAltNames`; the Gateway's client certificate (`spec.tls.backend
//!   .clientCertificateRef`), if any, from `compute` as a `CertRef`.
//! - Verification: the chain must lead to one of the policy's CAs and be valid now (expiry
//!   included). The name checked is the `hostname`, unless `subjectAltNames` is given: then
//!   the certificate must carry one of those (a DNS name, wildcards as RFC 6125 has them, or
//!   an exact URI such as a SPIFFE ID) and the hostname is only the SNI.
//! - Failure is a failed connection (the proxy answers 502 and logs why), never plaintext
//!   or an unverified session.
//! - Each `BackendTls` has an `id` (a hash of everything above): backend connections are
//!   pooled per endpoint *and* id, so a connection made for one policy (SNI, trust) is
//!   never reused for another.

use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};
use tokio::net::TcpStream;

use crate::model::ObjectKey;

/// Where the system's trust store is on Debian (`wellKnownCACertificates: System`).
pub const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A name the backend's certificate must carry (one is enough).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Expected {
    /// A DNS name; `*.example.com` matches one label.
    Dns(String),
    /// A URI SAN, compared exactly.
    Uri(String),
}

/// TLS toward one backend, as its BackendTLSPolicy asks.
pub struct BackendTls {
    /// The policy (for logs).
    pub policy: ObjectKey,
    /// Sent as SNI.
    pub sni: ServerName<'static>,
    verifier: Arc<Verifier>,
    /// Identifies this TLS setup among the pools' connections.
    pub id: u64,
    /// Client configurations made so far, by client certificate (its `CertRef::id`, 0 for
    /// none): one per Gateway, kept so that sessions resume.
    configs: Mutex<Vec<(u64, Arc<ClientConfig>)>>,
}

impl std::fmt::Debug for BackendTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendTls")
            .field("policy", &self.policy)
            .field("sni", &self.sni)
            .field("expected", &self.verifier.expected)
            .finish_non_exhaustive()
    }
}

impl BackendTls {
    /// From the policy's parts: `ca_pem` (one or more certificates), the hostname and the
    /// expected SANs (empty: the hostname). The error says what is wrong, for the status.
    pub fn new(
        policy: ObjectKey,
        ca_pem: &[&str],
        hostname: &str,
        expected: Vec<Expected>,
    ) -> Result<Self, String> {
        let mut roots = RootCertStore::empty();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for pem in ca_pem {
            pem.hash(&mut h);
            for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let c = c.map_err(|e| format!("not a PEM certificate: {e}"))?;
                // A bundle may hold certificates webpki cannot use as anchors; the others
                // still count (as a system bundle is read).
                let _ = roots.add(c);
            }
        }
        if roots.is_empty() {
            return Err("no CA certificate in it".into());
        }
        let sni = ServerName::try_from(hostname.to_string())
            .map_err(|e| format!("hostname {hostname:?}: {e}"))?;
        let expected = if expected.is_empty() {
            vec![Expected::Dns(hostname.to_ascii_lowercase())]
        } else {
            expected
        };
        hostname.hash(&mut h);
        expected.hash(&mut h);
        let provider = rustls::crypto::ring::default_provider();
        Ok(Self {
            policy,
            sni,
            verifier: Arc::new(Verifier {
                roots: Arc::new(roots),
                expected,
                algs: provider.signature_verification_algorithms,
            }),
            id: h.finish() | 1,
            configs: Mutex::new(Vec::new()),
        })
    }

    /// The client configuration for connections from a Gateway with `client` as its
    /// certificate (or none), made once.
    pub fn config(&self, client: Option<&ClientCert>) -> Result<Arc<ClientConfig>, String> {
        let key = client.map_or(0, |c| c.id);
        let mut configs = self.configs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, c)) = configs.iter().find(|(k, _)| *k == key) {
            return Ok(c.clone());
        }
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS versions: {e}"))?
                .dangerous()
                .with_custom_certificate_verifier(self.verifier.clone());
        let mut cfg = match client {
            Some(c) => builder.with_client_cert_resolver(Arc::new(Resolver(c.key.clone()))),
            None => builder.with_no_client_auth(),
        };
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let cfg = Arc::new(cfg);
        configs.push((key, cfg.clone()));
        Ok(cfg)
    }
}

/// A Gateway's client certificate for backends, with an id for the pools.
#[derive(Debug, Clone)]
pub struct ClientCert {
    pub secret: ObjectKey,
    pub key: Arc<CertifiedKey>,
    pub id: u64,
}

impl ClientCert {
    pub fn new(secret: ObjectKey, key: Arc<CertifiedKey>) -> Self {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for c in &key.cert {
            c.as_ref().hash(&mut h);
        }
        Self {
            secret,
            key,
            id: h.finish() | 1,
        }
    }
}

/// The pool id of a TLS setup with a client certificate.
pub fn pool_id(tls: &BackendTls, client: Option<&ClientCert>) -> u64 {
    // Never 0: that is plaintext's.
    (tls.id ^ client.map_or(0, |c| c.id.rotate_left(1))).max(1)
}

/// A TLS session over `stream` to a backend.
pub async fn connect(
    tls: &BackendTls,
    client: Option<&ClientCert>,
    stream: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    tokio_rustls::TlsConnector::from(tls.config(client)?)
        .connect(tls.sni.clone(), stream)
        .await
        .map_err(|e| format!("TLS to the backend (BackendTLSPolicy {}): {e}", tls.policy))
}

#[derive(Debug)]
struct Resolver(Arc<CertifiedKey>);

impl ResolvesClientCert for Resolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
    fn has_certs(&self) -> bool {
        true
    }
}

#[derive(Debug)]
struct Verifier {
    roots: Arc<RootCertStore>,
    expected: Vec<Expected>,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algs.all,
        )?;
        let (dns, uris) = sans(end_entity);
        let ok = self.expected.iter().any(|e| match e {
            Expected::Dns(name) => dns.iter().any(|d| dns_matches(d, name)),
            Expected::Uri(u) => uris.iter().any(|x| x == u),
        });
        if ok {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// The DNS names (lowercased) and URIs of a certificate's subjectAltName extension.
fn sans(cert: &CertificateDer<'_>) -> (Vec<String>, Vec<String>) {
    let mut dns = Vec::new();
    let mut uris = Vec::new();
    if let Ok((_, c)) = x509_parser::parse_x509_certificate(cert.as_ref()) {
        if let Ok(Some(ext)) = c.subject_alternative_name() {
            for n in &ext.value.general_names {
                match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => {
                        dns.push(d.to_ascii_lowercase())
                    }
                    x509_parser::extensions::GeneralName::URI(u) => uris.push((*u).to_string()),
                    _ => {}
                }
            }
        }
    }
    (dns, uris)
}

/// Whether the certificate's DNS name `cert` covers the expected `name` (lowercase both):
/// equal, or a wildcard on either side standing for exactly one leftmost label.
fn dns_matches(cert: &str, name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    if cert == name {
        return true;
    }
    let one_label = |wild: &str, host: &str| match (wild.strip_prefix("*."), host.split_once('.')) {
        (Some(suffix), Some((label, rest))) => {
            !label.is_empty() && label != "*" && rest == suffix && suffix.contains('.')
        }
        _ => false,
    };
    one_label(cert, &name) || one_label(&name, cert)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_stand_for_one_leftmost_label() {
        assert!(dns_matches("abc.example.com", "ABC.example.com"));
        assert!(dns_matches("*.example.com", "abc.example.com"));
        assert!(dns_matches("abc.example.com", "*.example.com"));
        assert!(!dns_matches("*.example.com", "a.b.example.com"));
        assert!(!dns_matches("*.example.com", "example.com"));
        assert!(!dns_matches("*.com", "example.com"));
        assert!(!dns_matches("abc.example.com", "dce.example.com"));
    }

    #[test]
    fn a_bundle_without_certificates_or_a_bad_hostname_is_refused() {
        let k = ObjectKey::new("ns", "p");
        let e = BackendTls::new(k.clone(), &["not pem"], "abc.example.com", vec![]).unwrap_err();
        assert_eq!(e, "no CA certificate in it");
        let ca = rcgen::generate_simple_self_signed(vec!["ca.example".into()]).unwrap();
        let pem = ca.cert.pem();
        let e = BackendTls::new(k.clone(), &[&pem], "not a host name!", vec![]).unwrap_err();
        assert!(e.starts_with("hostname"), "{e}");
        // Positive control: the same CA with a good hostname is taken, and the id depends on
        // what is verified.
        let a = BackendTls::new(k.clone(), &[&pem], "abc.example.com", vec![]).unwrap();
        let b = BackendTls::new(k, &[&pem], "other.example.com", vec![]).unwrap();
        assert_ne!(a.id, b.id);
    }
}
