//! Kubernetes: joining the cluster, watching it, and being a Node in it.
//!
//! ```text
//!   [kubernetes] config ──► supervisor ──credentials──► permission check ──► run:
//!        (watch<Config>)      │  kubeconfig, or TLS bootstrap        ├─ watch::run ──► watch<Arc<ClusterSnapshot>>
//!                             │  (CSR → signed cert in state-dir)    └─ NodeAgent: Node, Lease, Ready
//!                             └─ restarts the run on: credential renewal, [kubernetes]/[node] change,
//!                                a failure (with backoff)
//!   KubeReport ◄── every part writes its health; status, metrics and the Ready condition read it
//! ```
//!
//! Who owns what: the supervisor owns the client and the lifetimes of the watch and the
//! Node agent; the watch owns the stores and publishes snapshots; the Node agent owns the
//! Node object (when kube-gw created it) and its Lease. Kubernetes API types do not leave
//! this module: downstream sees the model's [`ClusterSnapshot`] (converted in [`convert`]).
//!
//! Losing the API server changes nothing downstream: the last snapshot stays published,
//! the report says degraded, and the watches relist when it returns.

pub mod access;
pub mod allocator;
pub mod backend_identity;
pub mod convert;
pub mod credentials;
pub mod events;
pub mod gateway;
pub mod gateway_status;
pub mod leader;
pub mod node;
pub mod report;
pub mod watch;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use kube::api::{Api, PostParams};
use kube::Client;
use tokio::sync::watch as channel;
use tracing::Instrument;

use crate::backoff::Backoff;
use crate::config::Config;
use crate::lifecycle::Heartbeat;
use crate::model::gateway::GatewaySnapshot;
use crate::model::ClusterSnapshot;
use report::{JoinState, KubeReport};

/// The longest wait between attempts to join.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Addresses registered on the Node: the BGP router ID, the switch's stable address.
pub fn node_addresses(cfg: &Config) -> Vec<IpAddr> {
    cfg.bgp
        .as_ref()
        .map(|b| vec![IpAddr::V4(b.router_id)])
        .unwrap_or_default()
}

/// What the rest of the daemon gets from this module.
#[derive(Debug, Clone)]
pub struct KubeHandle {
    pub report: Arc<KubeReport>,
    pub snapshot: channel::Receiver<Arc<ClusterSnapshot>>,
    /// The Gateway API objects (with `[gateway]` only; empty and incomplete otherwise).
    pub gateway: channel::Receiver<Arc<GatewaySnapshot>>,
    /// The LoadBalancer allocation table (with an allocating pool only).
    pub allocations: channel::Receiver<Arc<crate::ipam::Allocations>>,
}

/// What the serving pipeline tells the Kubernetes side (for Events).
#[derive(Debug, Clone)]
pub struct Serving {
    pub desired: channel::Receiver<Arc<crate::desired::DesiredState>>,
    pub programmed: channel::Receiver<crate::model::Programmed>,
    /// The Gateway API statuses to write (by the leader).
    pub gateway_status: channel::Receiver<Arc<crate::gateway::plan::Statuses>>,
}

/// Health of the daemon as the Node's Ready condition should reflect it.
pub type HealthFn = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// Starts the supervisor; it runs until `stop` turns true.
pub fn spawn(
    config: channel::Receiver<Arc<Config>>,
    report: Arc<KubeReport>,
    health: HealthFn,
    serving: Serving,
    stop: channel::Receiver<bool>,
    hb: Heartbeat,
) -> (KubeHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = channel::channel(Arc::new(ClusterSnapshot::default()));
    let (gw_tx, gw_rx) = channel::channel(Arc::new(GatewaySnapshot::default()));
    let (alloc_tx, alloc_rx) = channel::channel(Arc::new(crate::ipam::Allocations::default()));
    let task = tokio::spawn(supervise(
        config,
        health,
        report.clone(),
        (tx, gw_tx, alloc_tx),
        serving,
        stop,
        hb,
    ));
    (
        KubeHandle {
            report,
            snapshot: rx,
            gateway: gw_rx,
            allocations: alloc_rx,
        },
        task,
    )
}

/// The parts of the configuration whose change restarts the Kubernetes side.
/// What the session depends on (a reload that changes it restarts the session): the
/// cluster, the node, its addresses, and what the gateway side watches and elects for
/// (controller name, session-ticket Secret).
type Relevant = (
    Option<crate::config::KubernetesConfig>,
    crate::config::NodeConfig,
    Vec<IpAddr>,
    Option<(String, String)>,
    (String, bool),
);

fn relevant(c: &Config) -> Relevant {
    (
        c.kubernetes.clone(),
        c.node.clone(),
        node_addresses(c),
        c.gateway
            .as_ref()
            .map(|g| (g.controller_name.clone(), g.session_ticket_secret.clone())),
        (
            c.vip.load_balancer_class.clone(),
            c.vip.pools.iter().any(|p| p.allocate),
        ),
    )
}

/// The supervisor's outputs: the cluster view, the Gateway API view, the allocation table.
type Outputs = (
    channel::Sender<Arc<ClusterSnapshot>>,
    channel::Sender<Arc<GatewaySnapshot>>,
    channel::Sender<Arc<crate::ipam::Allocations>>,
);

async fn supervise(
    mut config: channel::Receiver<Arc<Config>>,
    health: HealthFn,
    report: Arc<KubeReport>,
    (out, gw_out, alloc_out): Outputs,
    serving: Serving,
    mut stop: channel::Receiver<bool>,
    hb: Heartbeat,
) {
    let mut backoff = Backoff::new(Duration::from_secs(1), MAX_BACKOFF).with_jitter();
    let mut renew = false;
    // A bootstrap join's kubeconfig the state directory did not take (disk full, read-only):
    // used from memory, stored as soon as the directory takes it.
    let mut unstored: Option<String> = None;
    loop {
        hb.turn().await;
        let cfg = config.borrow_and_update().clone();
        let Some(k) = cfg.kubernetes.clone() else {
            report.join(JoinState::Off, "no [kubernetes] section");
            tokio::select! {
                () = crate::lifecycle::stopped(&mut stop) => return,
                r = config.changed() => if r.is_err() { return } else { continue },
                () = hb.idle() => continue,
            }
        };
        let name = cfg.node_name();
        let server = k
            .server
            .clone()
            .unwrap_or_else(|| "(from the kubeconfig)".into());
        report.join(JoinState::Joining, "obtaining credentials");
        let attempt = async {
            let creds = credentials::obtain(&k, &name, renew, unstored.as_deref(), &report)
                .await
                .map_err(|e| e.to_string())?;
            let url = creds.config.cluster_url.to_string();
            let client = Client::try_from(creds.config.clone())
                .map_err(|e| credentials::explain(&e, &url))?;
            // Both checks at once: one round trip less before the watches start.
            let (who, missing) = tokio::try_join!(whoami(&client), access::missing(&client, &name))
                .map_err(|e| credentials::explain(&e, &url))?;
            if !missing.is_empty() {
                return Err(access::describe(&missing, &who));
            }
            Ok::<_, String>((client, creds, who))
        };
        let (client, creds, who) = tokio::select! {
            () = crate::lifecycle::stopped(&mut stop) => return,
            r = hb.during(attempt) => match r {
                Ok(x) => x,
                Err(msg) => {
                    tracing::error!(node = %name, server = %server, error = %msg, retry_in = ?backoff.peek(), "cannot join the cluster");
                    report.join(JoinState::Failing, msg);
                    tokio::select! {
                        () = crate::lifecycle::stopped(&mut stop) => return,
                        () = hb.during(backoff.wait()) => {}
                    }
                    continue;
                }
            }
        };
        backoff.reset();
        renew = false;
        report.unstored(creds.unstored.as_ref().map(|(_, e)| e.clone()));
        unstored = creds.unstored.as_ref().map(|(text, _)| text.clone());
        tracing::info!(node = %name, identity = %who, credentials = %creds.source, "joined the cluster");
        report.join(JoinState::Joined, format!("as {who}; {}", creds.source));
        report.client_certificate(creds.not_after);
        let agent = node::NodeAgent {
            client: client.clone(),
            name: name.clone(),
            config: cfg.node.clone(),
            addresses: node_addresses(&cfg),
            lease: k.lease_duration,
            report: report.clone(),
            health: {
                let h = health.clone();
                Box::new(move || h())
            },
        };
        let renew_in = creds.renew_at.map(|t| {
            t.duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
        });
        let before = relevant(&cfg);
        let config_for_allocator = config.clone();
        tokio::select! {
            () = crate::lifecycle::stopped(&mut stop) => return,
            () = watch::run(client.clone(), out.clone(), report.clone(), hb.clone()) => {}
            () = agent.run().instrument(tracing::info_span!("node", name = %name)) => {}
            () = events::run(client.clone(), name.clone(), serving.clone(), out.subscribe()) => {}
            () = gateway_side(&client, &cfg, &name, (&gw_out, out.subscribe()), &report, &serving) => {}
            () = allocator_side(&client, (&config_for_allocator, &name), out.subscribe(), &alloc_out, &report) => {}
            () = store_later(&k.state_dir, unstored.as_deref(), &report) => {}
            () = async {
                match renew_in {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            } => {
                tracing::info!("the client certificate is due for renewal");
                renew = true;
            }
            () = async {
                loop {
                    if config.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                    if relevant(&config.borrow()) != before {
                        break;
                    }
                }
            } => {
                tracing::info!("the [kubernetes] or [node] configuration changed; joining again");
            }
        }
    }
}

/// Tries to store `text` (a bootstrap join's kubeconfig the state directory did not take)
/// until it is stored, with backoff; the report says why it is not stored meanwhile, and
/// clears once it is. Nothing to store, or stored: never returns.
async fn store_later(dir: &std::path::Path, text: Option<&str>, report: &KubeReport) {
    if let Some(text) = text {
        let mut backoff = Backoff::new(Duration::from_secs(2), MAX_BACKOFF);
        loop {
            backoff.wait().await;
            match credentials::store(dir, text) {
                Ok(()) => {
                    tracing::info!(dir = %dir.display(), "the client certificate held in memory is stored now");
                    report.unstored(None);
                    break;
                }
                Err(e) => report.unstored(Some(e.to_string())),
            }
        }
    }
    std::future::pending().await
}

/// With an allocating pool: the allocator's election and the allocator; without, nothing
/// (for ever).
async fn allocator_side(
    client: &Client,
    (config, name): (&channel::Receiver<Arc<Config>>, &str),
    cluster: channel::Receiver<Arc<ClusterSnapshot>>,
    out: &channel::Sender<Arc<crate::ipam::Allocations>>,
    report: &Arc<KubeReport>,
) {
    let cfg = config.borrow().clone();
    if !cfg.vip.pools.iter().any(|p| p.allocate) {
        out.send_replace(Arc::new(crate::ipam::Allocations::default()));
        return std::future::pending().await;
    }
    let (leader_tx, leader_rx) = channel::channel(false);
    let election = leader::Election {
        client: client.clone(),
        identity: name.to_string(),
        label: leader::ALLOCATOR_LABEL,
        group: leader::group_of(&cfg.vip.load_balancer_class),
        duration: lease_duration(&cfg),
        component: "lb-allocator",
        duty: "allocates LoadBalancer addresses and writes their statuses",
        report: report.clone(),
    };
    tokio::join!(
        election.run(leader_tx),
        allocator::run(
            client.clone(),
            name.to_string(),
            config.clone(),
            cluster,
            leader_rx,
            out.clone()
        ),
    );
}

/// With `[gateway]`: the Gateway API watch, the status Lease and the status writer; without
/// it, nothing (for ever).
async fn gateway_side(
    client: &Client,
    cfg: &Config,
    name: &str,
    (out, cluster): (
        &channel::Sender<Arc<GatewaySnapshot>>,
        channel::Receiver<Arc<ClusterSnapshot>>,
    ),
    report: &Arc<KubeReport>,
    serving: &Serving,
) {
    let Some(g) = &cfg.gateway else {
        return std::future::pending().await;
    };
    let (minted_tx, minted_rx) = channel::channel(None);
    let state_dir = cfg
        .kubernetes
        .as_ref()
        .map(|k| k.state_dir.clone())
        .unwrap_or_else(|| std::path::PathBuf::from("/var/lib/kube-gw"));
    let (leader_tx, leader_rx) = channel::channel(false);
    let election = leader::Election {
        client: client.clone(),
        identity: name.to_string(),
        label: leader::GATEWAY_LABEL,
        group: leader::group_of(&g.controller_name),
        duration: lease_duration(cfg),
        component: "gateway-status-writer",
        duty: "writes Gateway API status",
        report: report.clone(),
    };
    tokio::join!(
        gateway::run(
            client.clone(),
            out.clone(),
            report.clone(),
            g.ticket_secret(),
            minted_rx
        ),
        backend_identity::run(
            client.clone(),
            name.to_string(),
            state_dir,
            g.backend_identity_signer.clone(),
            cluster,
            out.subscribe(),
            minted_tx
        ),
        election.run(leader_tx),
        gateway_status::run(
            client.clone(),
            g.controller_name.clone(),
            serving.gateway_status.clone(),
            leader_rx
        ),
    );
}

/// `[kubernetes] lease-duration` (the default without the section).
fn lease_duration(cfg: &Config) -> Duration {
    cfg.kubernetes
        .as_ref()
        .map_or(Duration::from_secs(40), |k| k.lease_duration)
}

/// The user the API server sees (`SelfSubjectReview`).
async fn whoami(client: &Client) -> Result<String, kube::Error> {
    let api: Api<SelfSubjectReview> = Api::all(client.clone());
    let r = api
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await?;
    Ok(r.status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .unwrap_or_else(|| "(unknown user)".into()))
}
