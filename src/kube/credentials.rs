//! Credentials for the API server, two ways:
//!
//! - **kubeconfig**: the operator's file, used as it is.
//! - **bootstrap token** (TLS bootstrap, as the kubelet does it): with the token, create a
//!   CertificateSigningRequest for `system:node:<name>` (O `system:nodes`, no SANs, signer
//!   `kubernetes.io/kube-apiserver-client-kubelet`) over a fresh ECDSA P-256 key, wait for
//!   it to be approved and signed, and store a kubeconfig with the key and certificate under
//!   the state directory (mode 0600). Later starts reuse it; at 70 % of its lifetime it is
//!   renewed with a new CSR made with the current certificate. A certificate the state
//!   directory does not take (full, read-only) is used from memory; the caller keeps
//!   trying to store it and reports why it is not stored ([`Credentials::unstored`]).
//!
//! The token is never logged or shown; errors say what to check instead.

use crate::backoff::Backoff;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use k8s_openapi::ByteString;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use super::report::{JoinState, KubeReport};
use crate::config::KubernetesConfig;

/// The signer kubelets use for their client certificates.
pub const SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// File name of the stored credentials in the state directory.
pub const STORED: &str = "kubeconfig";

/// Why credentials could not be had. `Display` is for the operator.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a usable kubeconfig: {message}")]
    Kubeconfig { path: PathBuf, message: String },
    #[error("the bootstrap token in {path} is not of the form abcdef.0123456789abcdef; write the token (and nothing else) into it")]
    TokenFormat { path: PathBuf },
    #[error("{0}")]
    Api(String),
    #[error("the certificate request {name} was denied: {reason}; approve a new one or check the approver (kube-controller-manager csrapproving) and the bootstrap RBAC")]
    Denied { name: String, reason: String },
    #[error("cannot store credentials in {path}: {source}; free space in the state directory or make it writable (systemd: StateDirectory=kube-gw)")]
    Store {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create a key or certificate request: {0}")]
    Crypto(String),
}

/// Working credentials.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub config: Config,
    /// When to renew (bootstrap only).
    pub renew_at: Option<SystemTime>,
    /// When the client certificate expires (bootstrap only).
    pub not_after: Option<SystemTime>,
    /// Where they came from, for status.
    pub source: String,
    /// A bootstrap join's kubeconfig that could not be written to the state directory, and
    /// why: the credentials work (they are in memory), but a restart would not find them.
    /// The caller keeps trying to store the text ([`store`]) and says so.
    pub unstored: Option<(String, String)>,
}

/// Turns a kube error into words an operator can act on.
pub fn explain(e: &kube::Error, server: &str) -> String {
    if let kube::Error::Api(s) = e {
        return match s.code {
            401 => format!("the API server {server} does not accept these credentials (401 Unauthorized): check the token or certificate, and that a bootstrap token has not expired"),
            403 => format!("permission denied (403): {}; apply the manifests in configs/kubernetes/", s.message),
            _ => format!("the API server {server} answered {} {}: {}", s.code, s.reason, s.message),
        };
    }
    let mut chain = String::new();
    let mut cur: Option<&dyn std::error::Error> = Some(e);
    while let Some(c) = cur {
        chain.push_str(&c.to_string());
        chain.push_str(": ");
        cur = c.source();
    }
    let lower = chain.to_lowercase();
    if lower.contains("unknownissuer")
        || lower.contains("unknown issuer")
        || lower.contains("certificate") && lower.contains("invalid peer")
    {
        format!("the API server {server} presents a certificate that is not signed by the configured CA: check ca-file (or the kubeconfig's certificate-authority)")
    } else if lower.contains("connection refused")
        || lower.contains("connect error")
        || lower.contains("timed out")
        || lower.contains("dns")
    {
        format!(
            "cannot reach the API server {server}: {}; check the address and that it is up",
            chain.trim_end_matches(": ")
        )
    } else {
        format!(
            "talking to the API server {server} failed: {}",
            chain.trim_end_matches(": ")
        )
    }
}

fn read(what: &'static str, path: &Path) -> Result<String, JoinError> {
    std::fs::read_to_string(path).map_err(|source| JoinError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Obtains credentials as configured. `renew` asks for a new certificate even if the stored
/// one is still valid (bootstrap only). `held` is a kubeconfig from an earlier join that
/// could not be stored: it is stored now if the state directory takes it, and used (instead
/// of what is on disk) while it is the newer certificate.
pub async fn obtain(
    k: &KubernetesConfig,
    node: &str,
    renew: bool,
    held: Option<&str>,
    report: &KubeReport,
) -> Result<Credentials, JoinError> {
    if let Some(path) = &k.kubeconfig {
        let kc = Kubeconfig::read_from(path).map_err(|e| JoinError::Kubeconfig {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .map_err(|e| JoinError::Kubeconfig {
                path: path.clone(),
                message: e.to_string(),
            })?;
        return Ok(Credentials {
            config,
            renew_at: None,
            not_after: None,
            source: format!("kubeconfig {}", path.display()),
            unstored: None,
        });
    }
    let (Some(server), Some(ca_file), Some(token_file)) =
        (&k.server, &k.ca_file, &k.bootstrap_token_file)
    else {
        return Err(JoinError::Api(
            "no way to reach the cluster is configured".into(),
        ));
    };
    let ca = read("the CA bundle", ca_file)?;
    let stored = k.state_dir.join(STORED);
    let held = held.and_then(Stored::parse);
    let mut unstored = None;
    if let Some(h) = &held {
        if let Err(e) = store(&k.state_dir, &h.kubeconfig) {
            unstored = Some((h.kubeconfig.clone(), e.to_string()));
        }
    }
    let on_disk = match std::fs::read_to_string(&stored) {
        Ok(text) => match Stored::parse(&text) {
            Some(s) if s.not_after > SystemTime::now() => Some(s),
            Some(_) => {
                tracing::warn!(path = %stored.display(), "the stored client certificate has expired; bootstrapping again");
                None
            }
            None => {
                tracing::warn!(path = %stored.display(), "the stored credentials do not parse; bootstrapping again");
                None
            }
        },
        Err(_) => None,
    };
    // The newer of the two.
    let current = match (held, on_disk) {
        (Some(h), Some(d)) if d.not_after >= h.not_after => Some(d),
        (Some(h), _) if h.not_after > SystemTime::now() => Some(h),
        (_, d) => d,
    };
    if let Some(cur) = &current {
        if !renew && SystemTime::now() < cur.renew_at() {
            let in_memory = unstored
                .as_ref()
                .is_some_and(|(text, _)| *text == cur.kubeconfig);
            return Ok(Credentials {
                config: config_from(&cur.kubeconfig, &stored).await?,
                renew_at: Some(cur.renew_at()),
                not_after: Some(cur.not_after),
                source: if in_memory {
                    format!(
                        "certificate held in memory, not yet stored in {}",
                        stored.display()
                    )
                } else {
                    format!("stored certificate {}", stored.display())
                },
                unstored: unstored.filter(|_| in_memory),
            });
        }
    }
    // Either renew with the current certificate, or bootstrap with the token.
    let requester = match &current {
        Some(cur) => {
            tracing::info!("renewing the client certificate");
            config_from(&cur.kubeconfig, &stored).await?
        }
        None => {
            let token = read("the bootstrap token", token_file)?;
            let token = token.trim();
            if !valid_token(token) {
                return Err(JoinError::TokenFormat {
                    path: token_file.clone(),
                });
            }
            tracing::info!(server, "joining with a bootstrap token (TLS bootstrap)");
            config_from(
                &kubeconfig_text(server, &ca, Auth::Token(token)),
                token_file,
            )
            .await?
        }
    };
    let client = Client::try_from(requester).map_err(|e| JoinError::Api(explain(&e, server)))?;
    let (cert_pem, key_pem) = request_certificate(&client, node, server, report).await?;
    let text = kubeconfig_text(server, &ca, Auth::Cert(&cert_pem, &key_pem));
    let s = Stored::parse(&text)
        .ok_or_else(|| JoinError::Crypto("the signed certificate does not parse".into()))?;
    // A certificate that cannot be stored (disk full, read-only state directory) is used
    // all the same: the switch keeps its view of the cluster, and says what is wrong.
    let (source, unstored) = match store(&k.state_dir, &text) {
        Ok(()) => (
            format!(
                "certificate from TLS bootstrap, stored in {}",
                stored.display()
            ),
            None,
        ),
        Err(e) => {
            tracing::error!(error = %e, "the new client certificate cannot be stored; using it from memory and trying again");
            (
                format!(
                    "certificate from TLS bootstrap, held in memory, not yet stored in {}",
                    stored.display()
                ),
                Some((text.clone(), e.to_string())),
            )
        }
    };
    Ok(Credentials {
        config: config_from(&text, &stored).await?,
        renew_at: Some(s.renew_at()),
        not_after: Some(s.not_after),
        source,
        unstored,
    })
}

/// `abcdef.0123456789abcdef`: 6 and 16 characters of `[a-z0-9]`.
pub fn valid_token(t: &str) -> bool {
    let ok = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    t.split_once('.')
        .is_some_and(|(id, secret)| ok(id, 6) && ok(secret, 16))
}

enum Auth<'a> {
    Token(&'a str),
    Cert(&'a str, &'a str),
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn kubeconfig_text(server: &str, ca: &str, auth: Auth<'_>) -> String {
    let user = match auth {
        Auth::Token(t) => serde_json::json!({ "token": t }),
        Auth::Cert(c, k) => serde_json::json!({
            "client-certificate-data": b64(c),
            "client-key-data": b64(k),
        }),
    };
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "cluster", "cluster": {
            "server": server,
            "certificate-authority-data": b64(ca),
        }}],
        "users": [{ "name": "kube-gw", "user": user }],
        "contexts": [{ "name": "kube-gw", "context": { "cluster": "cluster", "user": "kube-gw" }}],
        "current-context": "kube-gw",
    })
    .to_string()
}

async fn config_from(text: &str, origin: &Path) -> Result<Config, JoinError> {
    let bad = |message: String| JoinError::Kubeconfig {
        path: origin.to_path_buf(),
        message,
    };
    let kc = Kubeconfig::from_yaml(text).map_err(|e| bad(e.to_string()))?;
    Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| bad(e.to_string()))
}

/// Stores a bootstrap join's kubeconfig in the state directory (also one that could not be
/// stored when it was made: [`Credentials::unstored`]).
pub fn store(dir: &Path, text: &str) -> Result<(), JoinError> {
    store_as(dir, STORED, text)
}

/// Writes `text` to `dir/name` (mode 0600) through a temporary file and a rename.
pub fn store_as(dir: &Path, name: &str, text: &str) -> Result<(), JoinError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| JoinError::Store { path, source }
    };
    std::fs::create_dir_all(dir).map_err(err(dir))?;
    let tmp = dir.join(format!("{name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let dest = dir.join(name);
    let written = (|| {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(err(&tmp))?;
        f.write_all(text.as_bytes()).map_err(err(&tmp))?;
        f.sync_all().map_err(err(&tmp))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .map_err(err(&tmp))?;
        std::fs::rename(&tmp, &dest).map_err(err(&dest))
    })();
    if written.is_err() {
        // A half-written file would only hold on to space on a full disk.
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    tracing::info!(path = %dest.display(), "credentials stored");
    Ok(())
}

/// Stored credentials and their certificate's validity.
struct Stored {
    kubeconfig: String,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl Stored {
    fn parse(text: &str) -> Option<Self> {
        let kc = Kubeconfig::from_yaml(text).ok()?;
        let data = kc
            .auth_infos
            .first()?
            .auth_info
            .as_ref()?
            .client_certificate_data
            .clone()?;
        let pem = base64::engine::general_purpose::STANDARD
            .decode(data)
            .ok()?;
        let (not_before, not_after) = validity(&pem)?;
        Some(Self {
            kubeconfig: text.to_string(),
            not_before,
            not_after,
        })
    }

    /// 70 % into the certificate's lifetime.
    fn renew_at(&self) -> SystemTime {
        renew_point(self.not_before, self.not_after)
    }
}

/// The moment to renew a certificate valid from `nb` to `na`: 70 % of its lifetime.
pub fn renew_point(nb: SystemTime, na: SystemTime) -> SystemTime {
    let life = na.duration_since(nb).unwrap_or(Duration::ZERO);
    nb + life.mul_f64(0.7)
}

/// A certificate's validity (not before, not after), from its PEM.
pub fn validity(pem: &[u8]) -> Option<(SystemTime, SystemTime)> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem).ok()?;
    let cert = p.parse_x509().ok()?;
    let v = cert.validity();
    let t = |s: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(s).unwrap_or(0));
    Some((t(v.not_before.timestamp()), t(v.not_after.timestamp())))
}

/// Creates a CSR for `system:node:<node>` and waits until it is signed.
async fn request_certificate(
    client: &Client,
    node: &str,
    server: &str,
    report: &KubeReport,
) -> Result<(String, String), JoinError> {
    let cn = format!("system:node:{node}");
    let csr = Csr {
        common_name: &cn,
        organization: "system:nodes",
        signer: SIGNER,
        generate_name: "node-csr-",
        expiration_seconds: None,
    };
    sign(client, &csr, server, |name| {
        report.join(
            JoinState::Joining,
            format!("waiting for certificate signing request {name} to be approved and signed"),
        );
    })
    .await
}

/// What a client-certificate request asks for (usages: digital signature, client auth).
#[derive(Debug)]
pub struct Csr<'a> {
    pub common_name: &'a str,
    pub organization: &'a str,
    pub signer: &'a str,
    pub generate_name: &'a str,
    pub expiration_seconds: Option<i32>,
}

/// Makes a fresh ECDSA P-256 key, asks `csr.signer` for a client certificate for it with a
/// CertificateSigningRequest, and waits until it is approved and signed (or denied); calls
/// `pending` with the CSR's name once it exists. Returns (certificate PEM, key PEM).
pub async fn sign(
    client: &Client,
    csr: &Csr<'_>,
    server: &str,
    pending: impl FnOnce(&str),
) -> Result<(String, String), JoinError> {
    let key = rcgen::KeyPair::generate().map_err(|e| JoinError::Crypto(e.to_string()))?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, csr.common_name);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, csr.organization);
    let request = params
        .serialize_request(&key)
        .and_then(|c| c.pem())
        .map_err(|e| JoinError::Crypto(e.to_string()))?;
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let obj = CertificateSigningRequest {
        metadata: ObjectMeta {
            generate_name: Some(csr.generate_name.into()),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(request.into_bytes()),
            signer_name: csr.signer.into(),
            usages: Some(vec!["digital signature".into(), "client auth".into()]),
            expiration_seconds: csr.expiration_seconds,
            ..Default::default()
        },
        status: None,
    };
    let created = api
        .create(&PostParams::default(), &obj)
        .await
        .map_err(|e| JoinError::Api(explain(&e, server)))?;
    let name = created.metadata.name.unwrap_or_default();
    tracing::info!(csr = %name, signer = csr.signer, "certificate signing request created; waiting for approval");
    pending(&name);
    let mut poll = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
    loop {
        poll.wait().await;
        let csr = match api.get(&name).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(csr = %name, error = %explain(&e, server), "cannot read the CSR; retrying");
                continue;
            }
        };
        let status = csr.status.unwrap_or_default();
        for c in status.conditions.iter().flatten() {
            if (c.type_ == "Denied" || c.type_ == "Failed") && c.status == "True" {
                return Err(JoinError::Denied {
                    name,
                    reason: c
                        .message
                        .clone()
                        .or_else(|| c.reason.clone())
                        .unwrap_or_else(|| c.type_.clone()),
                });
            }
        }
        if let Some(cert) = status.certificate.filter(|c| !c.0.is_empty()) {
            tracing::info!(csr = %name, "certificate issued");
            let key_pem = key.serialize_pem();
            let cert_pem = String::from_utf8(cert.0)
                .map_err(|_| JoinError::Crypto("the issued certificate is not PEM".into()))?;
            return Ok((cert_pem, key_pem));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_tokens_have_the_kubeadm_shape() {
        assert!(valid_token("abcdef.0123456789abcdef"));
        assert!(!valid_token("abcdef0123456789abcdef"));
        assert!(!valid_token("ABCDEF.0123456789abcdef"));
        assert!(!valid_token("abcde.0123456789abcdef"));
    }

    #[test]
    fn renewal_is_at_seventy_percent_of_the_lifetime() {
        let nb = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let na = nb + Duration::from_secs(1000);
        assert_eq!(renew_point(nb, na), nb + Duration::from_secs(700));
    }

    /// A kubeconfig with a client certificate valid from `nb` to `na`, and its CA's PEM.
    fn kubeconfig_valid(nb: SystemTime, na: SystemTime) -> (String, String) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::from_params(&ca, &ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.not_before = nb.into();
        p.not_after = na.into();
        let cert = p.signed_by(&key, &issuer).unwrap();
        let text = kubeconfig_text(
            "https://127.0.0.1:6443",
            &ca_cert.pem(),
            Auth::Cert(&cert.pem(), &key.serialize_pem()),
        );
        (text, ca_cert.pem())
    }

    #[tokio::test]
    async fn a_certificate_the_state_directory_did_not_take_is_used_and_stored_once_it_can_be() {
        let now = SystemTime::now();
        let (text, ca) = kubeconfig_valid(
            now - Duration::from_secs(3600),
            now + Duration::from_secs(30 * 86_400),
        );
        let dir = std::env::temp_dir().join(format!("kube-gw-unstored-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.crt"), ca).unwrap();
        // The state directory is a file: nothing can be stored in it.
        let state = dir.join("state");
        std::fs::write(&state, "").unwrap();
        let k = KubernetesConfig {
            kubeconfig: None,
            server: Some("https://127.0.0.1:6443".into()),
            ca_file: Some(dir.join("ca.crt")),
            bootstrap_token_file: Some(dir.join("no-token")),
            service_cidrs: vec![],
            state_dir: state.clone(),
            lease_duration: Duration::from_secs(40),
        };
        let report = KubeReport::default();
        let c = obtain(&k, "spine-1", false, Some(&text), &report)
            .await
            .unwrap();
        let (held, why) = c.unstored.expect("reported as not stored");
        assert_eq!(held, text);
        assert!(why.contains("cannot store credentials in"), "{why}");
        assert!(c.source.contains("held in memory"), "{}", c.source);
        // Positive control: the same certificate, with a directory that takes it, is stored
        // (mode 0600) and no longer reported.
        std::fs::remove_file(&state).unwrap();
        let c = obtain(&k, "spine-1", false, Some(&text), &report)
            .await
            .unwrap();
        assert!(c.unstored.is_none());
        assert!(c.source.starts_with("stored certificate"), "{}", c.source);
        let stored = state.join(STORED);
        assert_eq!(std::fs::read_to_string(&stored).unwrap(), text);
        let mode = std::fs::metadata(&stored).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!state.join("kubeconfig.tmp").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_kubeconfig_with_a_certificate_round_trips_and_its_validity_is_read() {
        let (text, _) = kubeconfig_valid(
            rcgen::date_time_ymd(2026, 1, 1).into(),
            rcgen::date_time_ymd(2027, 1, 1).into(),
        );
        let s = Stored::parse(&text).unwrap();
        assert_eq!(
            s.not_after
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            1_798_761_600
        );
        assert!(config_from(&text, Path::new("test")).await.is_ok());
    }
}
