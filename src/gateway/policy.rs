//! BackendTLSPolicy resolution, part of `compute`: which policy applies to which Service
//! port, what it asks (a [`BackendTls`]), and its status conditions.
//!
//! - Inputs: the policies and CA ConfigMaps of the `GatewaySnapshot`.
//! - A policy targets Services (`group: ""`, `kind: Service`), optionally one port by name
//!   (`sectionName`). For a Service port, a policy naming that port wins over one naming the
//!   whole Service; among equals the oldest wins (then `namespace/name`), and the others are
//!   `Accepted=False/Conflicted`.
//! - CA references must be core ConfigMaps in the policy's namespace with a non-empty,
//!   parsable `ca.crt` (`ResolvedRefs=False/InvalidKind` or `/InvalidCACertificateRef`
//!   otherwise); with none valid the policy is `Accepted=False/NoValidCACertificate`, and
//!   requests to its backends fail (500): never plaintext, never unverified.
//!   `wellKnownCACertificates: System` is the switch's trust store.
//! - Outputs: [`Policies::lookup`] for `resolve_backend`; [`Policies::conditions`] for the
//!   status, whose ancestors (the Gateways of the routes that use a targeted Service) the
//!   caller collects.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::backend_tls::{BackendTls, ClientCert, Expected, SYSTEM_CA_FILE};
use super::plan::Condition;
use crate::model::gateway::{BackendTlsPolicySpec, GatewaySnapshot, Object};
use crate::model::ObjectKey;

/// One policy, resolved.
#[derive(Debug)]
struct Resolved {
    /// What it asks, or why it cannot be used (the message of its conditions).
    tls: Result<Arc<BackendTls>, String>,
    accepted: Condition,
    resolved: Condition,
    /// Lost a target to another policy.
    conflicted: Option<ObjectKey>,
}

/// The policies of a snapshot, resolved.
#[derive(Debug)]
pub struct Policies {
    by_key: BTreeMap<ObjectKey, (i64, Resolved)>,
    /// (Service, port name or none) → the winning policy.
    winners: BTreeMap<(ObjectKey, Option<String>), ObjectKey>,
    /// Service → every policy targeting it.
    targets: BTreeMap<ObjectKey, BTreeSet<ObjectKey>>,
    /// kube-gw's minted client certificate (for Services that ask for it), or why it is
    /// not usable yet.
    pub minted: Result<ClientCert, String>,
}

impl Default for Policies {
    fn default() -> Self {
        Self {
            by_key: BTreeMap::new(),
            winners: BTreeMap::new(),
            targets: BTreeMap::new(),
            minted: Err(NOT_MINTED.into()),
        }
    }
}

/// Why a Service that asks for a minted certificate has none yet.
const NOT_MINTED: &str = "waiting for kube-gw's client certificate for backends: its CertificateSigningRequest must be approved and signed (kubectl get csr)";

/// The minted identity as a client certificate.
fn minted(snap: &GatewaySnapshot) -> Result<ClientCert, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let m = snap.minted.as_ref().ok_or(NOT_MINTED)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(m.cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the minted certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(m.key_pem.as_bytes())
        .map_err(|e| format!("the minted key: {e}"))?;
    let certified =
        rustls::sign::CertifiedKey::from_der(chain, key, &rustls::crypto::ring::default_provider())
            .map_err(|e| format!("the minted certificate and key: {e}"))?;
    Ok(ClientCert::new(
        ObjectKey::new("kube-gw", "minted"),
        Arc::new(certified),
    ))
}

impl Policies {
    pub fn new(snap: &GatewaySnapshot) -> Self {
        let mut out = Self {
            minted: minted(snap),
            ..Self::default()
        };
        // Oldest first: the first to claim a target keeps it.
        let mut all: Vec<&Object<BackendTlsPolicySpec>> =
            snap.backend_tls_policies.values().collect();
        all.sort_by(|a, b| a.created.cmp(&b.created).then(a.key.cmp(&b.key)));
        let mut losers: BTreeMap<ObjectKey, ObjectKey> = BTreeMap::new();
        for p in &all {
            for t in &p.spec.target_refs {
                if !t.group.is_empty() || t.kind != "Service" {
                    continue;
                }
                let service = ObjectKey::new(&p.key.namespace, &t.name);
                out.targets
                    .entry(service.clone())
                    .or_default()
                    .insert(p.key.clone());
                let target = (service, t.section_name.clone());
                match out.winners.get(&target) {
                    Some(w) if *w != p.key => {
                        losers.entry(p.key.clone()).or_insert_with(|| w.clone());
                    }
                    Some(_) => {}
                    None => {
                        out.winners.insert(target, p.key.clone());
                    }
                }
            }
        }
        for p in all {
            let mut r = resolve(snap, p);
            if let Some(w) = losers.get(&p.key) {
                r.accepted = Condition::new(
                    "Accepted",
                    false,
                    "Conflicted",
                    format!("an older BackendTLSPolicy ({w}) targets the same Service port"),
                );
                r.conflicted = Some(w.clone());
            }
            out.by_key.insert(p.key.clone(), (p.generation, r));
        }
        out
    }

    /// The policy for `service`'s port named `port` (empty: unnamed), and what it asks or
    /// why it cannot be used.
    pub fn lookup(
        &self,
        service: &ObjectKey,
        port: &str,
    ) -> Option<(&ObjectKey, Result<Arc<BackendTls>, String>)> {
        let named = (!port.is_empty())
            .then(|| self.winners.get(&(service.clone(), Some(port.to_string()))))
            .flatten();
        let key = named.or_else(|| self.winners.get(&(service.clone(), None)))?;
        let (_, r) = self.by_key.get(key)?;
        Some((key, r.tls.clone()))
    }

    /// The policies targeting `service` (any port), winners or not.
    pub fn targeting(&self, service: &ObjectKey) -> impl Iterator<Item = &ObjectKey> {
        self.targets.get(service).into_iter().flatten()
    }

    /// Each policy's generation and conditions (Accepted, ResolvedRefs).
    pub fn conditions(&self) -> impl Iterator<Item = (&ObjectKey, i64, Vec<Condition>)> {
        self.by_key
            .iter()
            .map(|(k, (g, r))| (k, *g, vec![r.accepted.clone(), r.resolved.clone()]))
    }
}

/// Whether `pem` holds at least one certificate, and nothing unparsable.
fn has_certificates(pem: &str) -> bool {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let all: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem.as_bytes()).collect();
    all.is_ok_and(|v| !v.is_empty())
}

fn resolve(snap: &GatewaySnapshot, p: &Object<BackendTlsPolicySpec>) -> Resolved {
    let v = &p.spec.validation;
    let mut pems: Vec<Arc<str>> = Vec::new();
    let mut bad: Option<(&'static str, String)> = None;
    for r in &v.ca_certificate_refs {
        if !r.group.is_empty() || r.kind != "ConfigMap" {
            bad.get_or_insert((
                "InvalidKind",
                format!(
                    "caCertificateRefs {}/{} {}: kube-gw reads CA bundles from ConfigMaps",
                    r.group, r.kind, r.name
                ),
            ));
            continue;
        }
        let key = ObjectKey::new(&p.key.namespace, &r.name);
        match snap.ca_bundles.get(&key) {
            Some(pem) if has_certificates(pem) => pems.push(pem.clone()),
            Some(pem) if !pem.trim().is_empty() => {
                bad.get_or_insert((
                    "InvalidCACertificateRef",
                    format!("ConfigMap {key}: ca.crt holds no PEM certificate"),
                ));
            }
            Some(_) => {
                bad.get_or_insert((
                    "InvalidCACertificateRef",
                    format!("ConfigMap {key}: ca.crt is empty"),
                ));
            }
            None => {
                bad.get_or_insert((
                    "InvalidCACertificateRef",
                    format!("ConfigMap {key} with a ca.crt not found"),
                ));
            }
        }
    }
    let mut invalid: Option<String> = None;
    match v.well_known_ca_certificates.as_deref() {
        None => {}
        Some("System") => match std::fs::read_to_string(SYSTEM_CA_FILE) {
            Ok(s) => pems.push(Arc::from(s)),
            Err(e) => invalid = Some(format!("the system trust store {SYSTEM_CA_FILE}: {e}")),
        },
        Some(other) => {
            invalid = Some(format!(
                "wellKnownCACertificates {other:?}: kube-gw knows only System"
            ))
        }
    }
    let expected: Vec<Expected> = v
        .subject_alt_names
        .iter()
        .filter_map(|s| match s.type_.as_str() {
            "Hostname" => s
                .hostname
                .clone()
                .map(|h| Expected::Dns(h.to_ascii_lowercase())),
            "URI" => s.uri.clone().map(Expected::Uri),
            _ => None,
        })
        .collect();
    let refs: Vec<&str> = pems.iter().map(|p| &**p).collect();
    let tls = match (&invalid, refs.is_empty()) {
        (Some(why), _) => Err(why.clone()),
        (None, true) => Err(bad
            .as_ref()
            .map_or_else(|| "no CA certificate given".to_string(), |b| b.1.clone())),
        (None, false) => BackendTls::new(p.key.clone(), &refs, &v.hostname, expected)
            .map(Arc::new)
            .map_err(|e| format!("CA certificates: {e}")),
    };
    let resolved = match &bad {
        Some((reason, msg)) => Condition::new("ResolvedRefs", false, reason, msg.clone()),
        None => Condition::new(
            "ResolvedRefs",
            true,
            "ResolvedRefs",
            "CA certificates found",
        ),
    };
    let accepted = match (&tls, &invalid) {
        (Ok(_), _) => Condition::new("Accepted", true, "Accepted", "accepted by kube-gw"),
        (Err(why), Some(_)) => Condition::new("Accepted", false, "Invalid", why.clone()),
        (Err(why), None) => Condition::new("Accepted", false, "NoValidCACertificate", why.clone()),
    };
    Resolved {
        tls,
        accepted,
        resolved,
        conflicted: None,
    }
}
