//! A real Kubernetes control plane for tests: etcd, kube-apiserver and
//! kube-controller-manager built by `scripts/testenv-build` (cached outside the repository),
//! started on 127.0.0.1 with a CA generated here.
//!
//! - `--authorization-mode=Node,RBAC`, `--enable-admission-plugins=NodeRestriction`,
//!   `--enable-bootstrap-token-auth`; the controller manager signs and approves CSRs and
//!   runs the bootstrap-signer, token-cleaner and EndpointSlice controllers.
//! - One control plane serves a whole test binary ([`ControlPlane::shared`]); tests isolate
//!   themselves by namespace and by node name.
//! - Its processes are started from one long-lived thread with `setpriv --pdeathsig KILL`,
//!   so they die with the test binary however it ends; their directory is removed at the
//!   next start.
//! - [`ControlPlane::extra_apiserver`] starts a second API server on the same etcd, which a
//!   test may stop and restart without disturbing the others.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The pinned Kubernetes release (matches k8s-openapi's newest feature).
pub const K8S_VERSION: &str = "v1.37.2";

pub struct ControlPlane {
    pub dir: PathBuf,
    pub bin: PathBuf,
    pub server: String,
    pub etcd: String,
    pub ca_pem: String,
    ca_key_pem: String,
    pub admin_kubeconfig: PathBuf,
    /// etcd's pid and command line (for [`ControlPlane::restart_etcd`]).
    etcd_proc: std::sync::Mutex<(u32, Vec<String>)>,
}

/// Requests to the spawner thread.
enum Spawn {
    Start {
        name: String,
        program: PathBuf,
        args: Vec<String>,
        log: PathBuf,
        reply: mpsc::Sender<u32>,
    },
    Stop {
        pid: u32,
        reply: mpsc::Sender<()>,
    },
}

fn spawner() -> &'static Mutex<mpsc::Sender<Spawn>> {
    static TX: OnceLock<Mutex<mpsc::Sender<Spawn>>> = OnceLock::new();
    TX.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Spawn>();
        // This thread lives as long as the process; children get SIGKILL when it dies.
        std::thread::Builder::new()
            .name("controlplane-spawner".into())
            .spawn(move || {
                let mut children: Vec<Child> = Vec::new();
                for req in rx {
                    match req {
                        Spawn::Start {
                            name,
                            program,
                            args,
                            log,
                            reply,
                        } => {
                            let out = std::fs::File::create(&log).expect("log file");
                            let err = out.try_clone().expect("log file");
                            let child = Command::new("setpriv")
                                .args(["--pdeathsig", "KILL", "--"])
                                .arg(&program)
                                .args(&args)
                                .stdin(Stdio::null())
                                .stdout(out)
                                .stderr(err)
                                .spawn()
                                .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
                            let _ = reply.send(child.id());
                            children.push(child);
                        }
                        Spawn::Stop { pid, reply } => {
                            if let Some(i) = children.iter().position(|c| c.id() == pid) {
                                let mut c = children.remove(i);
                                let _ = c.kill();
                                let _ = c.wait();
                            }
                            let _ = reply.send(());
                        }
                    }
                }
            })
            .expect("spawner thread");
        Mutex::new(tx)
    })
}

fn start(name: &str, program: &Path, args: Vec<String>, log: PathBuf) -> u32 {
    let (reply, rx) = mpsc::channel();
    spawner()
        .lock()
        .unwrap()
        .send(Spawn::Start {
            name: name.into(),
            program: program.into(),
            args,
            log,
            reply,
        })
        .unwrap();
    rx.recv().unwrap()
}

/// Stops a process started here (by its pid).
pub fn stop(pid: u32) {
    let (reply, rx) = mpsc::channel();
    spawner()
        .lock()
        .unwrap()
        .send(Spawn::Stop { pid, reply })
        .unwrap();
    rx.recv().unwrap();
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The directory of the test control plane (built once by scripts/testenv-build), with the
/// Gateway API CRDs under `gateway-api/`.
pub fn binaries() -> PathBuf {
    if let Ok(dir) = std::env::var("KUBE_GW_TESTENV") {
        return PathBuf::from(dir);
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/testenv-build");
    let out = Command::new(script)
        .env("KUBE_GW_K8S_VERSION", K8S_VERSION)
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/testenv-build");
    assert!(out.status.success(), "scripts/testenv-build failed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn ca() -> (rcgen::CertificateParams, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "kube-gw-test-ca");
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    (p, key)
}

/// A certificate signed by the CA in `ca_params`/`ca_key`.
fn leaf(
    ca_params: &rcgen::CertificateParams,
    ca_key: &rcgen::KeyPair,
    cn: &str,
    orgs: &[&str],
    sans: &[&str],
    server: bool,
) -> (String, String) {
    sign(
        &rcgen::Issuer::from_params(ca_params, ca_key),
        cn,
        orgs,
        sans,
        server,
    )
}

/// A certificate for `cn`/`orgs` signed by `issuer`; returns (certificate, key) PEM.
fn sign<S: rcgen::SigningKey>(
    issuer: &rcgen::Issuer<'_, S>,
    cn: &str,
    orgs: &[&str],
    sans: &[&str],
    server: bool,
) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params(cn, orgs, sans, server)
        .signed_by(&key, issuer)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

/// What [`sign`] signs: `cn`/`orgs`, `sans`, server or client use.
fn params(cn: &str, orgs: &[&str], sans: &[&str], server: bool) -> rcgen::CertificateParams {
    let mut p =
        rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    for o in orgs {
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, *o);
    }
    p.extended_key_usages = vec![if server {
        rcgen::ExtendedKeyUsagePurpose::ServerAuth
    } else {
        rcgen::ExtendedKeyUsagePurpose::ClientAuth
    }];
    p
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A kubeconfig (JSON is YAML) for `server` with a client certificate.
pub fn kubeconfig(server: &str, ca_pem: &str, cert: &str, key: &str) -> String {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "test", "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)}}],
        "users": [{"name": "user", "user": {"client-certificate-data": b64(cert), "client-key-data": b64(key)}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "user"}}],
        "current-context": "test"
    })
    .to_string()
}

/// Runs an async block on a fresh current-thread runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

impl ControlPlane {
    /// The control plane shared by every test of this binary, started on first use.
    pub fn shared() -> &'static ControlPlane {
        static CP: OnceLock<ControlPlane> = OnceLock::new();
        CP.get_or_init(ControlPlane::start)
    }

    fn start() -> ControlPlane {
        let t0 = Instant::now();
        let bin = binaries();
        // Directories of earlier runs whose process is gone.
        for e in std::fs::read_dir(std::env::temp_dir()).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(pid) = name.strip_prefix("kube-gw-cp-") {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let dir = std::env::temp_dir().join(format!("kube-gw-cp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let w = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let (ca_params, ca_key) = ca();
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let ca_pem = ca_cert.pem();
        w("ca.crt", &ca_pem);
        w("ca.key", &ca_key.serialize_pem());
        let (srv_cert, srv_key) = leaf(
            &ca_params,
            &ca_key,
            "kube-apiserver",
            &[],
            &[
                "127.0.0.1",
                "localhost",
                // The host as a qemu guest with user networking reaches it (the install test).
                "10.0.2.2",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "10.96.0.1",
            ],
            true,
        );
        w("apiserver.crt", &srv_cert);
        w("apiserver.key", &srv_key);
        let sa = rcgen::KeyPair::generate().unwrap();
        w("sa.key", &sa.serialize_pem());
        w("sa.pub", &sa.public_key_pem());

        let etcd_port = free_port();
        let peer_port = free_port();
        let etcd = format!("http://127.0.0.1:{etcd_port}");
        let etcd_args = vec![
            format!("--data-dir={}", dir.join("etcd").display()),
            format!("--listen-client-urls={etcd}"),
            format!("--advertise-client-urls={etcd}"),
            format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"),
            format!("--initial-cluster=default=http://127.0.0.1:{peer_port}"),
            "--name=default".into(),
            "--log-level=warn".into(),
            "--unsafe-no-fsync".into(),
        ];
        let etcd_pid = start(
            "etcd",
            &bin.join("etcd"),
            etcd_args.clone(),
            dir.join("etcd.log"),
        );

        let (admin_cert, admin_key) = leaf(
            &ca_params,
            &ca_key,
            "kube-gw-test-admin",
            &["system:masters"],
            &[],
            false,
        );
        let mut cp = ControlPlane {
            dir: dir.clone(),
            bin: bin.clone(),
            server: String::new(),
            etcd,
            ca_pem: ca_pem.clone(),
            ca_key_pem: ca_key.serialize_pem(),
            admin_kubeconfig: PathBuf::new(),
            etcd_proc: std::sync::Mutex::new((etcd_pid, etcd_args)),
        };
        let port = free_port();
        cp.server = format!("https://127.0.0.1:{port}");
        cp.admin_kubeconfig = w(
            "admin.kubeconfig",
            &kubeconfig(&cp.server, &ca_pem, &admin_cert, &admin_key),
        );
        cp.apiserver(port, "apiserver");
        cp.wait_ready(&cp.server, Duration::from_secs(120));

        let (kcm_cert, kcm_key) = leaf(
            &ca_params,
            &ca_key,
            "system:kube-controller-manager",
            &[],
            &[],
            false,
        );
        let kcm_kc = w(
            "kcm.kubeconfig",
            &kubeconfig(&cp.server, &ca_pem, &kcm_cert, &kcm_key),
        );
        start(
            "kube-controller-manager",
            &bin.join("kube-controller-manager"),
            vec![
                format!("--kubeconfig={}", kcm_kc.display()),
                format!("--authentication-kubeconfig={}", kcm_kc.display()),
                format!("--authorization-kubeconfig={}", kcm_kc.display()),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={}", free_port()),
                format!("--cert-dir={}", dir.join("kcm").display()),
                "--leader-elect=false".into(),
                "--controllers=*,bootstrapsigner,tokencleaner".into(),
                format!(
                    "--cluster-signing-cert-file={}",
                    dir.join("ca.crt").display()
                ),
                format!(
                    "--cluster-signing-key-file={}",
                    dir.join("ca.key").display()
                ),
                format!("--root-ca-file={}", dir.join("ca.crt").display()),
                format!(
                    "--service-account-private-key-file={}",
                    dir.join("sa.key").display()
                ),
                // Each controller acts as its own service account, as kubeadm sets it up.
                "--use-service-account-credentials=true".into(),
            ],
            dir.join("kcm.log"),
        );
        cp.apply_manifest(include_str!("../../configs/kubernetes/bootstrap-rbac.yaml"));
        cp.apply_manifest(&kube_gw_role_only());
        eprintln!(
            "control plane {K8S_VERSION} up in {:.1}s at {} (dir {})",
            t0.elapsed().as_secs_f64(),
            cp.server,
            dir.display()
        );
        cp
    }

    /// Starts a kube-apiserver on `port` against this control plane's etcd; returns its pid.
    pub fn apiserver(&self, port: u16, name: &str) -> u32 {
        self.apiserver_with(port, name, &[])
    }

    /// [`Self::apiserver`] with extra flags (feature gates, say).
    pub fn apiserver_with(&self, port: u16, name: &str, extra: &[&str]) -> u32 {
        let d = |f: &str| self.dir.join(f).display().to_string();
        let mut args: Vec<String> = vec![
            format!("--etcd-servers={}", self.etcd),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            // A loopback address cannot back the `kubernetes` Service endpoints.
            "--endpoint-reconciler-type=none".into(),
            format!("--secure-port={port}"),
            format!("--cert-dir={}", d(name)),
            format!("--tls-cert-file={}", d("apiserver.crt")),
            format!("--tls-private-key-file={}", d("apiserver.key")),
            format!("--client-ca-file={}", d("ca.crt")),
            format!("--service-account-key-file={}", d("sa.pub")),
            format!("--service-account-signing-key-file={}", d("sa.key")),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            "--service-cluster-ip-range=10.96.0.0/12,fd00:10:96::/112".into(),
            "--authorization-mode=Node,RBAC".into(),
            "--enable-admission-plugins=NodeRestriction".into(),
            "--enable-bootstrap-token-auth".into(),
            "--allow-privileged=true".into(),
            "--profiling=false".into(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        start(
            name,
            &self.bin.join("kube-apiserver"),
            args,
            self.dir.join(format!("{name}.log")),
        )
    }

    /// A second API server on the same etcd, for tests that stop and restart one.
    pub fn extra_apiserver(&self, name: &str) -> (u16, u32) {
        self.extra_apiserver_with(name, &[])
    }

    /// [`Self::extra_apiserver`] with extra flags.
    pub fn extra_apiserver_with(&self, name: &str, extra: &[&str]) -> (u16, u32) {
        let port = free_port();
        let pid = self.apiserver_with(port, name, extra);
        self.wait_ready(
            &format!("https://127.0.0.1:{port}"),
            Duration::from_secs(120),
        );
        (port, pid)
    }

    /// Waits until the API server at `server` answers /readyz.
    pub fn wait_ready(&self, server: &str, timeout: Duration) {
        let kc = std::fs::read_to_string(&self.admin_kubeconfig)
            .unwrap()
            .replace(&self.server, server);
        wait_for(&format!("{server}/readyz"), timeout, || {
            block_on(async {
                let client = client_from(&kc).await?;
                let req = http::Request::get("/readyz").body(Vec::new()).ok()?;
                client.request_text(req).await.ok().filter(|t| t == "ok")
            })
        });
    }

    /// An admin client (system:masters).
    pub async fn admin(&self) -> kube::Client {
        let kc = std::fs::read_to_string(&self.admin_kubeconfig).unwrap();
        client_from(&kc).await.expect("admin client")
    }

    /// A kubeconfig for a client certificate with this CN and these groups.
    /// Stops etcd (SIGTERM, by its pid) and starts it again on the same data; returns once
    /// it answers its health endpoint.
    pub fn restart_etcd(&self) {
        let mut proc = self.etcd_proc.lock().unwrap();
        stop(proc.0);
        proc.0 = start(
            "etcd",
            &self.bin.join("etcd"),
            proc.1.clone(),
            self.dir.join("etcd-again.log"),
        );
        let health = format!("{}/health", self.etcd);
        wait_for("etcd to answer again", Duration::from_secs(60), || {
            let out = std::process::Command::new("curl")
                .args(["-sf", "--max-time", "2", &health])
                .output()
                .ok()?;
            out.status.success().then_some(())
        });
    }

    /// A new serving certificate for the API server, from the same CA, written as
    /// `<name>.crt`/`<name>.key` in the control plane's directory: the flags that serve it.
    pub fn serving_certificate(&self, name: &str) -> [String; 2] {
        let ca_key = rcgen::KeyPair::from_pem(&self.ca_key_pem).unwrap();
        let issuer = rcgen::Issuer::from_ca_cert_pem(&self.ca_pem, ca_key).unwrap();
        let (cert, key) = sign(
            &issuer,
            "kube-apiserver",
            &[],
            &["127.0.0.1", "localhost", "kubernetes", "10.96.0.1"],
            true,
        );
        let crt = self.dir.join(format!("{name}.crt"));
        let k = self.dir.join(format!("{name}.key"));
        std::fs::write(&crt, cert).unwrap();
        std::fs::write(&k, key).unwrap();
        [
            format!("--tls-cert-file={}", crt.display()),
            format!("--tls-private-key-file={}", k.display()),
        ]
    }

    pub fn user_kubeconfig(&self, cn: &str, groups: &[&str], server: &str) -> String {
        let ca_key = rcgen::KeyPair::from_pem(&self.ca_key_pem).unwrap();
        let issuer = rcgen::Issuer::from_ca_cert_pem(&self.ca_pem, ca_key).unwrap();
        let (cert, key) = sign(&issuer, cn, groups, &[], false);
        kubeconfig(server, &self.ca_pem, &cert, &key)
    }

    /// A switch's kubeconfig (`system:node:<node>`, group `system:nodes`) whose certificate
    /// is valid from `not_before` to `not_after`, as a bootstrap join stores it.
    pub fn node_kubeconfig_valid(
        &self,
        node: &str,
        not_before: std::time::SystemTime,
        not_after: std::time::SystemTime,
    ) -> String {
        let ca_key = rcgen::KeyPair::from_pem(&self.ca_key_pem).unwrap();
        let issuer = rcgen::Issuer::from_ca_cert_pem(&self.ca_pem, ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = params(
            &format!("system:node:{node}"),
            &["system:nodes"],
            &[],
            false,
        );
        p.not_before = not_before.into();
        p.not_after = not_after.into();
        let cert = p.signed_by(&key, &issuer).unwrap();
        kubeconfig(
            &self.server,
            &self.ca_pem,
            &cert.pem(),
            &key.serialize_pem(),
        )
    }

    /// Writes a switch's kubeconfig (`system:node:<node>`, group `system:nodes`) to `path`,
    /// mode 0600 as kube-gw requires of secrets.
    pub fn write_node_kubeconfig(&self, node: &str, path: &std::path::Path) {
        let kc = self.user_kubeconfig(
            &format!("system:node:{node}"),
            &["system:nodes"],
            &self.server,
        );
        std::fs::write(path, kc).unwrap();
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
    }

    /// Creates every object in a multi-document YAML manifest (already existing ones are
    /// left as they are).
    pub fn apply_manifest(&self, yaml: &str) {
        block_on(async {
            let client = self.admin().await;
            for doc in serde_yaml::Deserializer::from_str(yaml) {
                let value = serde_yaml::Value::deserialize(doc).unwrap();
                if value.is_null() {
                    continue;
                }
                let obj: kube::api::DynamicObject = serde_yaml::from_value(value).unwrap();
                let tm = obj.types.clone().unwrap();
                let gvk = kube::api::GroupVersionKind::try_from(&tm).unwrap();
                let (ar, caps) = kube::discovery::pinned_kind(&client, &gvk).await.unwrap();
                let api: kube::Api<kube::api::DynamicObject> =
                    if caps.scope == kube::discovery::Scope::Namespaced {
                        kube::Api::namespaced_with(
                            client.clone(),
                            obj.metadata.namespace.as_deref().unwrap_or("default"),
                            &ar,
                        )
                    } else {
                        kube::Api::all_with(client.clone(), &ar)
                    };
                match api.create(&Default::default(), &obj).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(e) => panic!("cannot create {:?}: {e}", obj.metadata.name),
                }
            }
        });
    }

    /// Binds the kube-gw ClusterRole to `system:node:<node>` (as an operator does per switch).
    pub fn create_namespace(&self, name: &str) {
        self.apply_manifest(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n"
        ));
    }

    pub fn bind_switch(&self, node: &str) {
        let rbac = include_str!("../../configs/kubernetes/kube-gw-rbac.yaml");
        let bindings = rbac
            .split("\n---\n")
            .filter(|d| d.contains("kind: ClusterRoleBinding") || d.contains("kind: RoleBinding"))
            .collect::<Vec<_>>()
            .join("\n---\n")
            .replace("spine-1", node);
        self.apply_manifest(&bindings);
    }

    /// What a switch's `[gateway]` needs (configs/kubernetes/kube-gw-gateway-rbac.yaml): the
    /// shared roles once, and this switch's two bindings.
    pub fn bind_switch_gateway(&self, node: &str) {
        let rbac = include_str!("../../configs/kubernetes/kube-gw-gateway-rbac.yaml");
        self.apply_manifest(&rbac.replace("spine-1", node));
    }

    /// Creates a bootstrap token (as `kubeadm token create` would) and returns it.
    pub fn bootstrap_token(&self) -> String {
        let random = || {
            std::fs::read_to_string("/proc/sys/kernel/random/uuid")
                .unwrap()
                .replace('-', "")
                .trim()
                .to_string()
        };
        let (id, secret) = (random()[..6].to_string(), random()[..16].to_string());
        let yaml = include_str!("../../configs/kubernetes/bootstrap-token.example.yaml")
            .replace("0123456789abcdef", &secret)
            .replace("abcdef", &id)
            .replace("2027-01-01T00:00:00Z", "2099-01-01T00:00:00Z");
        self.apply_manifest(&yaml);
        format!("{id}.{secret}")
    }
}

/// The kube-gw ClusterRole without the example binding.
fn kube_gw_role_only() -> String {
    include_str!("../../configs/kubernetes/kube-gw-rbac.yaml")
        .split("\n---\n")
        .filter(|d| d.contains("kind: ClusterRole\n") || d.contains("kind: Role\n"))
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// A client from kubeconfig text.
pub async fn client_from(text: &str) -> Option<kube::Client> {
    let kc = kube::config::Kubeconfig::from_yaml(text).ok()?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .ok()?;
    kube::Client::try_from(cfg).ok()
}

use serde::Deserialize as _;
