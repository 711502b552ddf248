//! The LoadBalancer allocator: every switch computes the allocation table ([`crate::ipam`])
//! from each complete cluster view, so `kube-gw vips` shows the same table everywhere; the
//! one elected writer ([`super::leader`], label `kube-gw.io/allocator`, group = the
//! `loadBalancerClass`) writes it to the Services' `status.loadBalancer` and tells with Events
//! why a Service waits.
//!
//! - Inputs: the cluster view (`watch<Arc<ClusterSnapshot>>`, complete views only), the
//!   configuration (`[vip]` pools, class), leadership (`watch<bool>`).
//! - Output: `watch<Arc<Allocations>>` for the admin views; the statuses and Events (leader
//!   only).
//! - Taking over: a new leader computes its first table from a fresh (quorum) list of the
//!   Services, not from its watch, which may lag the previous leader's last writes; and from
//!   the statuses alone (its own earlier table was a follower's guess). From then on its table
//!   also holds what it wrote and has not seen back yet.
//! - Writing: for each Service whose status differs, re-read it (a Lease is no fence: the
//!   write is based on what the API server has now, and only if this switch still leads),
//!   then a JSON merge patch of `/status` carrying that `resourceVersion`, so a write based
//!   on a stale read fails (409) and is retried instead of overwriting. Writes go eight at a
//!   time; failures are retried every [`RETRY`].
//! - Services of other classes are never read for writing, let alone written.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1 as core;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::Client;
use serde_json::json;
use tokio::sync::watch;

use super::events::{publish, Regarding, TokenBucket, EVENT_BURST, EVENT_RATE};
use crate::config::Config;
use crate::ipam::{self, Allocations, Entry, Table};
use crate::model::{ClusterSnapshot, ObjectKey};

/// How soon failed writes are tried again.
pub const RETRY: Duration = Duration::from_secs(2);
/// Status writes in flight at once.
const PARALLEL: usize = 8;
/// The field manager of kube-gw's status writes.
pub const FIELD_MANAGER: &str = "kube-gw";

/// Runs the allocator until dropped.
pub async fn run(
    client: Client,
    node: String,
    mut config: watch::Receiver<Arc<Config>>,
    mut snapshot: watch::Receiver<Arc<ClusterSnapshot>>,
    mut leader: watch::Receiver<bool>,
    out: watch::Sender<Arc<Allocations>>,
) {
    let mut table = Arc::new(Table::default());
    // The table's holds are this leader's own (false: a follower's guess, or not yet taken
    // over).
    let mut trusted = false;
    let mut writes = Writes::default();
    let mut told: BTreeMap<ObjectKey, Vec<String>> = BTreeMap::new();
    let events = EventSender::spawn(client.clone(), node.clone());
    loop {
        let cfg = config.borrow_and_update().clone();
        let mut snap = snapshot.borrow_and_update().clone();
        let is_leader = *leader.borrow_and_update();
        let mut retry = false;
        if !is_leader {
            trusted = false;
        }
        if snap.complete {
            let mut ready = true;
            if is_leader && !trusted {
                match fresh(&client).await {
                    Ok(s) => snap = Arc::new(s),
                    Err(e) => {
                        tracing::warn!(error = %e, "allocator: cannot list the Services to take over; retrying");
                        ready = false;
                        retry = true;
                    }
                }
            }
            if ready {
                let selector = cfg
                    .vip
                    .service_selector
                    .as_deref()
                    .and_then(crate::config::validate::parse_selector)
                    .unwrap_or_default();
                table = Arc::new(ipam::allocate(&ipam::Inputs {
                    snapshot: &snap,
                    pools: &cfg.vip.pools,
                    class: &cfg.vip.load_balancer_class,
                    without_class: cfg.vip.allocate_without_class,
                    selector: &selector,
                    previous: &table,
                    trust_previous: trusted,
                    now: jiff::Timestamp::now().as_second(),
                }));
                if is_leader {
                    if !trusted {
                        tracing::info!(
                            services = table.entries.len(),
                            "allocator: took over; the table is rebuilt from the statuses"
                        );
                        told.clear();
                    }
                    trusted = true;
                    let failed = writes
                        .write(&client, &node, &snap, &table, &leader, &events)
                        .await;
                    tell_waiting(&table, &mut told, &events);
                    retry = failed > 0;
                }
                out.send_replace(Arc::new(Allocations {
                    table: table.clone(),
                    leader: Some(is_leader),
                }));
            }
        }
        tokio::select! {
            r = config.changed() => if r.is_err() { return },
            r = snapshot.changed() => if r.is_err() { return },
            r = leader.changed() => if r.is_err() { return },
            () = tokio::time::sleep(RETRY), if retry => {}
        }
    }
}

/// Every Service, read from the API server now (a quorum read, not a cache).
async fn fresh(client: &Client) -> Result<ClusterSnapshot, kube::Error> {
    let api: Api<core::Service> = Api::all(client.clone());
    let mut snap = ClusterSnapshot::default();
    let mut params = ListParams::default().limit(500);
    loop {
        let page = api.list(&params).await?;
        for s in &page.items {
            if let Some(v) = super::convert::service_view(s) {
                snap.upsert_service(v);
            }
        }
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => params = params.continue_token(&c),
            _ => break,
        }
    }
    snap.complete = true;
    Ok(snap)
}

/// What was written and not yet seen back in the cluster view: Service → (the status it had
/// in the view then, the addresses written).
#[derive(Debug, Default)]
struct Writes {
    pending: BTreeMap<ObjectKey, (Vec<IpAddr>, Vec<IpAddr>)>,
}

impl Writes {
    /// Writes every status that differs from the table; returns how many failed.
    async fn write(
        &mut self,
        client: &Client,
        node: &str,
        snap: &ClusterSnapshot,
        table: &Table,
        leader: &watch::Receiver<bool>,
        events: &EventSender,
    ) -> usize {
        self.pending.retain(|k, _| table.entries.contains_key(k));
        let mut todo = Vec::new();
        for (key, entry) in &table.entries {
            let Some(svc) = snap.services.get(key) else {
                continue;
            };
            let want = entry.ips();
            if svc.load_balancer_ips == want {
                self.pending.remove(key);
                continue;
            }
            // Written, and the view still shows what it showed before: not back yet.
            if self.pending.get(key).is_some_and(|(before, written)| {
                *before == svc.load_balancer_ips && *written == want
            }) {
                continue;
            }
            todo.push((key.clone(), entry.clone(), svc.load_balancer_ips.clone()));
        }
        let results: Vec<_> = futures::stream::iter(todo.into_iter().map(|(key, entry, seen)| {
            let (client, leader) = (client.clone(), leader.clone());
            async move {
                let r = write_one(&client, &key, &entry, &leader).await;
                (key, entry, seen, r)
            }
        }))
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
        let mut failed = 0;
        for (key, entry, seen, r) in results {
            let (key, entry) = (&key, &entry);
            match r {
                Ok(true) => {
                    self.pending.insert(key.clone(), (seen, entry.ips()));
                    if !entry.addresses.is_empty() {
                        let note = entry
                            .addresses
                            .iter()
                            .map(|h| format!("{} (pool {})", h.address, h.pool))
                            .collect::<Vec<_>>()
                            .join(", ");
                        events.send(
                            key,
                            &entry.uid,
                            (false, "AddressAllocated"),
                            format!("{note} allocated by switch {node}"),
                        );
                    }
                }
                Ok(false) => {}
                Err(e) => {
                    failed += 1;
                    tracing::warn!(service = %key, error = %e, "allocator: cannot write the status; retrying");
                }
            }
        }
        failed
    }
}

/// Why a status write did not happen.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error("{0}")]
    Api(#[from] kube::Error),
    #[error("this switch no longer leads")]
    NotLeader,
}

/// Re-reads one Service and writes its status if it still differs. Ok(true): written.
async fn write_one(
    client: &Client,
    key: &ObjectKey,
    entry: &Entry,
    leader: &watch::Receiver<bool>,
) -> Result<bool, WriteError> {
    let api: Api<core::Service> = Api::namespaced(client.clone(), &key.namespace);
    let Some(now) = api.get_opt(&key.name).await? else {
        return Ok(false);
    };
    // Deleted and made again meanwhile: the next view brings the new one.
    if now.metadata.uid.as_deref() != Some(entry.uid.as_str()) {
        return Ok(false);
    }
    let current: Vec<IpAddr> = now
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|i| {
            i.iter()
                .filter_map(|x| x.ip.as_deref()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let want = entry.ips();
    if current == want {
        return Ok(false);
    }
    if !*leader.borrow() {
        return Err(WriteError::NotLeader);
    }
    let ingress = if want.is_empty() {
        serde_json::Value::Null
    } else {
        json!(want
            .iter()
            .map(|a| json!({"ip": a.to_string(), "ipMode": "VIP"}))
            .collect::<Vec<_>>())
    };
    let patch = json!({
        "metadata": {"resourceVersion": now.metadata.resource_version},
        "status": {"loadBalancer": {"ingress": ingress}},
    });
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    api.patch_status(&key.name, &params, &Patch::Merge(&patch))
        .await?;
    tracing::info!(service = %key, addresses = ?want, "allocator: status written");
    Ok(true)
}

/// Events for Services whose reasons to wait changed (once per change).
fn tell_waiting(table: &Table, told: &mut BTreeMap<ObjectKey, Vec<String>>, events: &EventSender) {
    told.retain(|k, _| table.entries.contains_key(k));
    for (key, entry) in &table.entries {
        let before = told.get(key).map_or(&[][..], Vec::as_slice);
        if entry.waiting.as_slice() == before {
            continue;
        }
        if !entry.waiting.is_empty() {
            events.send(
                key,
                &entry.uid,
                (true, "AllocationFailed"),
                format!(
                    "no address yet: {} (allocator on switch {})",
                    entry.waiting.join("; "),
                    events.node
                ),
            );
        }
        told.insert(key.clone(), entry.waiting.clone());
    }
}

/// Events wait in a queue of this many; beyond it they are dropped (and counted in the log):
/// Events are best effort and must never hold up a status write.
const EVENT_QUEUE: usize = 4096;

/// One Event to publish: the Service, its uid, (warning?, reason), the note.
type Pending = (ObjectKey, String, (bool, &'static str), String);

/// The allocator's Events, published by a task of their own at the Events' rate (a cold start
/// allocates thousands of addresses in seconds; their Events follow at 20 a second).
struct EventSender {
    tx: tokio::sync::mpsc::Sender<Pending>,
    node: String,
    dropped: std::sync::atomic::AtomicU64,
}

impl EventSender {
    fn spawn(client: Client, node: String) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Pending>(EVENT_QUEUE);
        let n = node.clone();
        tokio::spawn(async move {
            let mut bucket = TokenBucket::new(EVENT_BURST, EVENT_RATE);
            while let Some((key, uid, kind, note)) = rx.recv().await {
                bucket.take().await;
                let about = Regarding {
                    key: &key,
                    uid: &uid,
                };
                publish(&client, &n, &about, (kind.0, kind.1, "Allocate"), &note).await;
            }
        });
        Self {
            tx,
            node,
            dropped: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn send(&self, key: &ObjectKey, uid: &str, kind: (bool, &'static str), note: String) {
        if self
            .tx
            .try_send((key.clone(), uid.to_string(), kind, note))
            .is_err()
        {
            let n = self
                .dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1;
            if n.is_power_of_two() {
                tracing::warn!(
                    dropped = n,
                    "allocator: the Events queue is full; Events dropped"
                );
            }
        }
    }
}
