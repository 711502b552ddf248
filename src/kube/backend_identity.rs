//! kube-gw's own client identity toward backends that demand one: a key it makes and a
//! certificate the cluster signs, for Services that ask for it (annotation
//! `kube-gw.io/backend-client-certificate: mint`) behind a BackendTLSPolicy, where the
//! Gateway names no certificate of its own (`spec.tls.backend.clientCertificateRef`).
//!
//! - Inputs: the cluster and Gateway API views (is it wanted: an annotated Service that a
//!   BackendTLSPolicy targets), `[gateway] backend-identity-signer`, the state directory.
//! - The identity: CN `kube-gw-gateway:<node>`, O `kube-gw:gateways`, a fresh ECDSA P-256
//!   key, a CertificateSigningRequest to the signer (default
//!   `kubernetes.io/kube-apiserver-client`: the cluster CA, which backends find in every
//!   namespace's `kube-root-ca.crt`; someone — an operator, or an approver the cluster runs —
//!   approves it), valid 24 h, renewed at 70 % of its lifetime with a new key.
//! - Kept only in the state directory (`backend-identity.crt`, `backend-identity.key`, mode
//!   0600), so that a restart reuses it without a new approval; never logged.
//! - Output: `watch<Option<MintedIdentity>>`, merged into the Gateway snapshot. Until it is
//!   signed, requests to those backends fail (500, "waiting for …") — never without a
//!   certificate, never in plaintext.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kube::Client;
use tokio::sync::watch;

use super::credentials::{self, Csr};
use crate::backoff::Backoff;
use crate::model::gateway::{GatewaySnapshot, MintedIdentity, MINT_ANNOTATION};
use crate::model::{ClusterSnapshot, ObjectKey};

pub const CERT_FILE: &str = "backend-identity.crt";
pub const KEY_FILE: &str = "backend-identity.key";
/// The lifetime asked for.
const LIFETIME_SECONDS: i32 = 86_400;

/// Whether some Service asks for a minted certificate and a BackendTLSPolicy targets it.
pub fn wanted(cluster: &ClusterSnapshot, gateway: &GatewaySnapshot) -> bool {
    gateway.backend_tls_policies.values().any(|p| {
        p.spec.target_refs.iter().any(|t| {
            t.group.is_empty()
                && t.kind == "Service"
                && cluster
                    .services
                    .get(&ObjectKey::new(&p.key.namespace, &t.name))
                    .is_some_and(|s| {
                        s.annotations.get(MINT_ANNOTATION).map(String::as_str) == Some("mint")
                    })
        })
    })
}

/// The stored identity, if it parses and is not yet due for renewal.
fn load(dir: &Path) -> Option<(MintedIdentity, SystemTime)> {
    let cert = std::fs::read_to_string(dir.join(CERT_FILE)).ok()?;
    let key = std::fs::read_to_string(dir.join(KEY_FILE)).ok()?;
    let (nb, na) = credentials::validity(cert.as_bytes())?;
    let renew_at = credentials::renew_point(nb, na);
    (SystemTime::now() < renew_at).then(|| {
        (
            MintedIdentity {
                cert_pem: Arc::from(cert),
                key_pem: Arc::from(key),
            },
            renew_at,
        )
    })
}

/// Runs until dropped: mints (or reuses) the identity while it is wanted, renews it, and
/// publishes it on `out`.
pub async fn run(
    client: Client,
    node: String,
    state_dir: PathBuf,
    signer: String,
    mut cluster: watch::Receiver<Arc<ClusterSnapshot>>,
    mut gateway: watch::Receiver<Arc<GatewaySnapshot>>,
    out: watch::Sender<Option<MintedIdentity>>,
) {
    let mut backoff = Backoff::new(Duration::from_secs(2), Duration::from_secs(60));
    loop {
        // Wait until some Service wants it.
        loop {
            let w = wanted(&cluster.borrow_and_update(), &gateway.borrow_and_update());
            if w {
                break;
            }
            tokio::select! {
                r = cluster.changed() => if r.is_err() { return },
                r = gateway.changed() => if r.is_err() { return },
            }
        }
        if let Some((id, renew_at)) = load(&state_dir) {
            out.send_replace(Some(id));
            let wait = renew_at
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            tokio::time::sleep(wait).await;
            continue;
        }
        let cn = format!("kube-gw-gateway:{node}");
        let csr = Csr {
            common_name: &cn,
            organization: "kube-gw:gateways",
            signer: &signer,
            generate_name: "kube-gw-backend-identity-",
            expiration_seconds: Some(LIFETIME_SECONDS),
        };
        match credentials::sign(&client, &csr, "the API server", |name| {
            tracing::warn!(csr = name, signer = %signer, "gateway: the client certificate for backends waits for its CertificateSigningRequest to be approved (kubectl certificate approve {name})");
        })
        .await
        {
            Ok((cert, key)) => {
                backoff.reset();
                tracing::info!(cn = %cn, "gateway: minted the client certificate for backends");
                if let Err(e) = credentials::store_as(&state_dir, KEY_FILE, &key)
                    .and_then(|()| credentials::store_as(&state_dir, CERT_FILE, &cert))
                {
                    tracing::warn!("gateway: cannot keep the minted client certificate (a restart will ask for another): {e}");
                }
                let renew_at = credentials::validity(cert.as_bytes())
                    .map(|(nb, na)| credentials::renew_point(nb, na));
                out.send_replace(Some(MintedIdentity {
                    cert_pem: Arc::from(cert),
                    key_pem: Arc::from(key),
                }));
                let wait = renew_at
                    .and_then(|t| t.duration_since(SystemTime::now()).ok())
                    .unwrap_or(Duration::from_secs(3600));
                tokio::time::sleep(wait).await;
            }
            Err(e) => {
                tracing::warn!("gateway: cannot mint a client certificate for backends: {e}; retrying");
                backoff.wait().await;
            }
        }
    }
}
