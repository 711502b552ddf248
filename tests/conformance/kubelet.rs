//! A kubelet stand-in, so that the conformance suite's Pods are real in the way the suite and
//! the cluster see them: no kubelet, scheduler or container runtime runs here.
//!
//! - One Node (`conformance-node`), kept Ready: its Lease in `kube-node-lease` is renewed
//!   every 10 s, so the node-lifecycle controller never taints it nor marks its Pods unready.
//! - Every unscheduled Pod is bound to that Node (the `binding` subresource, as the scheduler
//!   does). A bound Pod gets an address from 203.0.113.10–250 and a network namespace of its
//!   own, linked to the bridge `pods` in the switch namespace (203.0.113.1, the default
//!   route). Its container, when the image is the suite's `echo-basic`, runs as that binary
//!   in the namespace with the container's environment (`value`s, and `fieldRef`s to the
//!   Pod's name, namespace, address and node) and its Secret and ConfigMap volumes written to files (paths
//!   under a `mountPath` point there). Once something listens in the namespace, the Pod's
//!   status says Running and Ready with its `podIP`, so kube-controller-manager puts it into
//!   the Service's EndpointSlices.
//! - Other images (the base manifests' coredns, used only by UDPRoute tests, which kube-gw
//!   does not claim) run nothing but are marked Ready too: the suite waits for every Pod of
//!   its namespaces to be Ready before any test.
//! - A Pod being deleted has its process stopped and is then deleted with grace 0, as the
//!   kubelet confirms a deletion; namespaces of the suite can then go away.
//!
//! Addresses are never reused within one run (a deleted Pod's namespace stays until the
//! end), and everything is removed when the [`Kubelet`] is dropped (its own `Lab`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;

use crate::controlplane::ControlPlane;
use crate::harness::{Lab, Node};

pub const NODE: &str = "conformance-node";
const GATEWAY: &str = "203.0.113.1";
const BRIDGE: &str = "pods";

/// The stand-in, running in a thread until dropped.
pub struct Kubelet {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The bridge the Pods hang off, in `switch`: 203.0.113.1/24.
pub fn bridge(switch: &Node) {
    switch.exec("ip", &["link", "add", BRIDGE, "type", "bridge"]);
    switch.exec(
        "ip",
        &["addr", "add", &format!("{GATEWAY}/24"), "dev", BRIDGE],
    );
    switch.exec("ip", &["link", "set", BRIDGE, "up"]);
}

/// Starts the stand-in; `echo_basic` is the suite's echo server binary.
pub fn start(cp: &'static ControlPlane, switch: Node, echo_basic: PathBuf) -> Kubelet {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let client = cp.admin().await;
            let mut pods = Pods {
                lab: Lab::new(),
                switch,
                echo_basic,
                client: client.clone(),
                running: BTreeMap::new(),
                next: 10,
            };
            register_node(&client).await;
            let stream = watcher(Api::<Pod>::all(client.clone()), Default::default());
            let mut stream = std::pin::pin!(stream);
            let mut beat = tokio::time::interval(Duration::from_secs(10));
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tokio::select! {
                    ev = stream.next() => match ev {
                        Some(Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p))) => pods.seen(p).await,
                        Some(Ok(watcher::Event::Delete(p))) => pods.gone(&p),
                        Some(Ok(_)) => {}
                        Some(Err(e)) => eprintln!("kubelet: watch: {e}"),
                        None => break,
                    },
                    _ = beat.tick() => heartbeat(&client).await,
                    _ = tick.tick() => if flag.load(Ordering::SeqCst) { break },
                }
            }
        });
    });
    Kubelet {
        stop,
        thread: Some(thread),
    }
}

fn now() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap()
        .to_string()
}

async fn register_node(client: &kube::Client) {
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE, "kubernetes.io/os": "linux"}},
    }))
    .unwrap();
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("kubelet: cannot create the Node: {e}"),
    }
    heartbeat(client).await;
}

/// The Node's Ready condition and its Lease, renewed.
async fn heartbeat(client: &kube::Client) {
    let t = now();
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let status = json!({"status": {
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "the conformance test's kubelet stand-in", "lastHeartbeatTime": t, "lastTransitionTime": t}],
        "addresses": [{"type": "InternalIP", "address": GATEWAY}, {"type": "Hostname", "address": NODE}],
        "capacity": {"cpu": "64", "memory": "256Gi", "pods": "250"},
        "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "250"},
    }});
    if let Err(e) = nodes
        .patch_status(NODE, &PatchParams::default(), &Patch::Merge(&status))
        .await
    {
        eprintln!("kubelet: node status: {e}");
    }
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), "kube-node-lease");
    // MicroTime: exactly six fractional digits.
    let micro = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": NODE},
        "spec": {"holderIdentity": NODE, "leaseDurationSeconds": 40, "renewTime": micro},
    });
    let pp = PatchParams::apply("conformance-kubelet").force();
    if let Err(e) = leases.patch(NODE, &pp, &Patch::Apply(&lease)).await {
        eprintln!("kubelet: node lease: {e}");
    }
}

struct Pods {
    lab: Lab,
    switch: Node,
    echo_basic: PathBuf,
    client: kube::Client,
    /// Pod uid → the name of its process in `lab` (empty when none runs).
    running: BTreeMap<String, String>,
    next: u8,
}

impl Pods {
    async fn seen(&mut self, p: Pod) {
        let (ns, name, uid) = (
            p.metadata.namespace.clone().unwrap_or_default(),
            p.metadata.name.clone().unwrap_or_default(),
            p.metadata.uid.clone().unwrap_or_default(),
        );
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let spec = p.spec.clone().unwrap_or_default();
        if p.metadata.deletion_timestamp.is_some() {
            self.gone(&p);
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            };
            let _ = api.delete(&name, &dp).await;
            return;
        }
        let node = spec.node_name.as_deref().unwrap_or_default();
        if node.is_empty() {
            let binding = json!({
                "apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": name, "namespace": ns},
                "target": {"apiVersion": "v1", "kind": "Node", "name": NODE},
            });
            if let Err(e) = api
                .create_subresource::<serde_json::Value, serde_json::Value>(
                    "binding",
                    &name,
                    &PostParams::default(),
                    &binding,
                )
                .await
            {
                eprintln!("kubelet: binding {ns}/{name}: {e}");
            }
            return;
        }
        if node != NODE || self.running.contains_key(&uid) {
            return;
        }
        assert!(self.next <= 250, "kubelet: out of Pod addresses");
        let n = self.next;
        self.next += 1;
        let ip = format!("203.0.113.{n}");
        let pod_ns = self.lab.node(&format!("p{n}"));
        let veth = format!("{}p{n}", self.lab.id());
        crate::harness::run(std::process::Command::new("ip").args([
            "link",
            "add",
            &veth,
            "netns",
            &self.switch.ns,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &pod_ns.ns,
        ]));
        self.switch
            .exec("ip", &["link", "set", &veth, "master", BRIDGE, "up"]);
        pod_ns.exec("ip", &["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        pod_ns.exec("ip", &["link", "set", "eth0", "up"]);
        pod_ns.exec("ip", &["route", "add", "default", "via", GATEWAY]);

        let container = spec.containers.first().cloned().unwrap_or_default();
        let echo = container
            .image
            .as_deref()
            .unwrap_or_default()
            .contains("echo-basic");
        let mut process = String::new();
        if echo {
            let dir = self.lab.path(&format!("p{n}"));
            std::fs::create_dir_all(&dir).unwrap();
            let mounts = self.volumes(&ns, &spec, &container, &dir).await;
            let env = environment(&p, &container, &ip, &mounts);
            let mut args: Vec<String> = vec!["-i".into()];
            args.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
            args.push(self.echo_basic.display().to_string());
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            process = format!("pod-{n}-{ns}-{name}");
            self.lab.spawn(&pod_ns, &process, "env", &args);
            // Ready once it listens (echo-basic opens its ports at once).
            for _ in 0..100 {
                let out = pod_ns.try_exec("ss", &["-Hltn"]);
                if !out.stdout.is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        self.running.insert(uid, process);
        let t = now();
        let status = json!({"status": {
            "phase": "Running", "hostIP": GATEWAY, "hostIPs": [{"ip": GATEWAY}],
            "podIP": ip, "podIPs": [{"ip": ip}], "startTime": t,
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": t},
                {"type": "Initialized", "status": "True", "lastTransitionTime": t},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": t},
                {"type": "Ready", "status": "True", "lastTransitionTime": t},
            ],
            "containerStatuses": spec.containers.iter().map(|c| json!({
                "name": c.name, "image": c.image, "imageID": "", "ready": true, "started": true,
                "restartCount": 0, "state": {"running": {"startedAt": t}},
            })).collect::<Vec<_>>(),
        }});
        if let Err(e) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await
        {
            eprintln!("kubelet: status of {ns}/{name}: {e}");
        }
    }

    fn gone(&mut self, p: &Pod) {
        let uid = p.metadata.uid.clone().unwrap_or_default();
        if let Some(process) = self.running.get_mut(&uid) {
            if !process.is_empty() {
                self.lab.stop(process, Duration::from_secs(2));
                process.clear();
            }
        }
    }

    /// Writes the container's Secret and ConfigMap volumes under `dir`; returns mountPath →
    /// directory.
    async fn volumes(
        &self,
        ns: &str,
        spec: &k8s_openapi::api::core::v1::PodSpec,
        container: &Container,
        dir: &Path,
    ) -> Vec<(String, PathBuf)> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let config_maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns);
        let mut out = Vec::new();
        for m in container.volume_mounts.iter().flatten() {
            let Some(v) = spec.volumes.iter().flatten().find(|v| v.name == m.name) else {
                continue;
            };
            // The volume's data and its items (key → path), from a Secret or a ConfigMap.
            let (kind, name, items) = match (&v.secret, &v.config_map) {
                (Some(src), _) => (
                    "Secret",
                    src.secret_name.clone().unwrap_or_default(),
                    src.items.clone(),
                ),
                (None, Some(src)) => ("ConfigMap", src.name.clone(), src.items.clone()),
                (None, None) => continue,
            };
            // The suite creates them with the Deployment: wait for one a little.
            let mut data: Option<BTreeMap<String, Vec<u8>>> = None;
            for _ in 0..50 {
                data = if kind == "Secret" {
                    secrets.get(&name).await.ok().map(|s| {
                        s.data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, v.0))
                            .collect()
                    })
                } else {
                    config_maps.get(&name).await.ok().map(|c| {
                        c.data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, v.into_bytes()))
                            .collect()
                    })
                };
                if data.is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let Some(data) = data else {
                eprintln!("kubelet: {kind} {ns}/{name} not found");
                continue;
            };
            let vdir = dir.join(&v.name);
            std::fs::create_dir_all(&vdir).unwrap();
            let items: Vec<(String, String)> = match items {
                Some(items) => items.into_iter().map(|i| (i.key, i.path)).collect(),
                None => data.keys().map(|k| (k.clone(), k.clone())).collect(),
            };
            for (key, path) in items {
                if let Some(bytes) = data.get(&key) {
                    std::fs::write(vdir.join(path), bytes).unwrap();
                }
            }
            out.push((m.mount_path.clone(), vdir));
        }
        out
    }
}

/// The container's environment as the kubelet would give it, with paths under a volume's
/// `mountPath` pointing at the files written for it.
fn environment(
    p: &Pod,
    c: &Container,
    ip: &str,
    mounts: &[(String, PathBuf)],
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in c.env.iter().flatten() {
        let value = if let Some(v) = &e.value {
            let mut v = v.clone();
            for (mount, dir) in mounts {
                if let Some(rest) = v.strip_prefix(&format!("{mount}/")) {
                    v = dir.join(rest).display().to_string();
                }
            }
            v
        } else if let Some(f) = e.value_from.as_ref().and_then(|f| f.field_ref.as_ref()) {
            match f.field_path.as_str() {
                "metadata.name" => p.metadata.name.clone().unwrap_or_default(),
                "metadata.namespace" => p.metadata.namespace.clone().unwrap_or_default(),
                "status.podIP" => ip.to_string(),
                "status.hostIP" => GATEWAY.to_string(),
                "spec.nodeName" => NODE.to_string(),
                other => {
                    eprintln!("kubelet: fieldRef {other} is not supported");
                    continue;
                }
            }
        } else {
            eprintln!("kubelet: env {} has a source this stand-in lacks", e.name);
            continue;
        };
        out.push((e.name.clone(), value));
    }
    out
}
