//! The cluster watch: kube-runtime watchers for Services, EndpointSlices and Nodes, applied
//! as they arrive to one [`ClusterSnapshot`] that is published after each burst.
//!
//! ```text
//!  watcher(Service) ───────┐  convert the object, apply it to      "changed"
//!  watcher(EndpointSlice) ──┼─► one persistent ClusterSnapshot ──► (Notify) ──► publish a clone
//!  watcher(Node) ───────────┘  (only the change is touched)                   watch<Arc<ClusterSnapshot>>
//! ```
//!
//! - Watch errors, expired resource versions (410 Gone) and API-server restarts are the
//!   watcher's business: it re-lists with backoff. The snapshot keeps its contents meanwhile,
//!   and a re-list replaces a resource's objects only once it completes, so the snapshot
//!   never shrinks because the API server went away. Losing the API server changes nothing
//!   downstream.
//! - Objects are converted to kube-gw's own view when their event arrives and the API object
//!   is dropped: the daemon never holds the full API objects of a large cluster, and an event
//!   costs the conversion of one object, not a rebuild of the whole view. An event that does
//!   not change the view (a status heartbeat, a resync) publishes nothing.
//! - Until all three resources have been listed once, the views published are marked
//!   partial (`complete: false`): Nodes complete, Services and EndpointSlices as far as
//!   they have arrived (every 500 objects). Downstream may start adding VIPs from them —
//!   with 10 000 Services, programming overlaps the list — but removes nothing and reports
//!   nothing to Services, since a partial view would look like Services disappearing.
//!   This is for the daemon's first list only: watches restarted after a re-join publish
//!   nothing until all three are listed again, and the last complete view stays.
//! - Each resource's health (listing, synced, failing; object count; relists; errors) is
//!   written to the [`KubeReport`] that status and metrics read.

use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, PoisonError};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource};
use tokio::sync::{watch, Notify};
use tracing::Instrument;

use super::convert;
use super::report::{KubeReport, WatchState};
use crate::model::cluster as snapshot;
use crate::model::{ClusterSnapshot, ObjectKey};

/// Objects between two partial views during the first list.
const PARTIAL_EVERY: usize = 500;

/// The snapshot being kept up to date, and the re-lists in progress.
#[derive(Default)]
struct Builder {
    snap: ClusterSnapshot,
    /// Resources listed at least once by these watches.
    listed: BTreeSet<&'static str>,
    /// Publish partial views during the first lists: only when no complete view was ever
    /// published. Watches restarted after a re-join keep the last complete view downstream
    /// until everything has been listed again.
    partial_views: bool,
    /// Objects applied during first lists since the last partial view.
    since_partial: usize,
    services: Option<Vec<snapshot::Service>>,
    slices: Option<Vec<snapshot::EndpointSlice>>,
    nodes: Option<Vec<snapshot::Node>>,
}

/// A watched resource: how its objects become (and leave) the snapshot.
trait Tracked:
    Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static
where
    Self::DynamicType: Default,
{
    const NAME: &'static str;
    /// Objects may enter partial views during the first list.
    const PARTIAL: bool;
    /// Listed as a stream (`sendInitialEvents`): for resources that can be large, so that
    /// their objects are used while the rest arrives. The others are listed in one
    /// request from the API server's cache, which answers at once: a streaming list ends
    /// with a bookmark that the API server sometimes sends only tens of milliseconds
    /// later, and the Nodes hold back the first view.
    const STREAM: bool;
    type View: Clone;
    fn view(&self) -> Option<Self::View>;
    fn upsert(snap: &mut ClusterSnapshot, view: Self::View) -> bool;
    /// Removes the object (by its key); true if it was there.
    fn remove(&self, snap: &mut ClusterSnapshot) -> bool;
    fn replace(snap: &mut ClusterSnapshot, all: Vec<Self::View>) -> bool;
    fn count(snap: &ClusterSnapshot) -> usize;
    fn relist(b: &mut Builder) -> &mut Option<Vec<Self::View>>;
}

fn object_key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> ObjectKey {
    ObjectKey {
        namespace: meta.namespace.as_deref().unwrap_or("default").into(),
        name: meta.name.as_deref().unwrap_or_default().into(),
    }
}

impl Tracked for Service {
    const NAME: &'static str = "services";
    const PARTIAL: bool = true;
    const STREAM: bool = true;
    type View = snapshot::Service;
    fn view(&self) -> Option<Self::View> {
        convert::service_view(self)
    }
    fn upsert(snap: &mut ClusterSnapshot, view: Self::View) -> bool {
        snap.upsert_service(view)
    }
    fn remove(&self, snap: &mut ClusterSnapshot) -> bool {
        snap.remove_service(&object_key(&self.metadata))
    }
    fn replace(snap: &mut ClusterSnapshot, all: Vec<Self::View>) -> bool {
        snap.replace_services(all)
    }
    fn count(snap: &ClusterSnapshot) -> usize {
        snap.services.len()
    }
    fn relist(b: &mut Builder) -> &mut Option<Vec<Self::View>> {
        &mut b.services
    }
}

impl Tracked for EndpointSlice {
    const NAME: &'static str = "endpointslices";
    const PARTIAL: bool = true;
    const STREAM: bool = true;
    type View = snapshot::EndpointSlice;
    fn view(&self) -> Option<Self::View> {
        convert::endpoint_slice_view(self)
    }
    fn upsert(snap: &mut ClusterSnapshot, view: Self::View) -> bool {
        snap.upsert_slice(view)
    }
    fn remove(&self, snap: &mut ClusterSnapshot) -> bool {
        snap.remove_slice(&object_key(&self.metadata))
    }
    fn replace(snap: &mut ClusterSnapshot, all: Vec<Self::View>) -> bool {
        snap.replace_slices(all)
    }
    fn count(snap: &ClusterSnapshot) -> usize {
        snap.endpoint_slices.len()
    }
    fn relist(b: &mut Builder) -> &mut Option<Vec<Self::View>> {
        &mut b.slices
    }
}

impl Tracked for Node {
    const NAME: &'static str = "nodes";
    const PARTIAL: bool = false;
    const STREAM: bool = false;
    type View = snapshot::Node;
    fn view(&self) -> Option<Self::View> {
        convert::node_view(self)
    }
    fn upsert(snap: &mut ClusterSnapshot, view: Self::View) -> bool {
        snap.upsert_node(view)
    }
    fn remove(&self, snap: &mut ClusterSnapshot) -> bool {
        snap.remove_node(self.metadata.name.as_deref().unwrap_or_default())
    }
    fn replace(snap: &mut ClusterSnapshot, all: Vec<Self::View>) -> bool {
        snap.replace_nodes(all)
    }
    fn count(snap: &ClusterSnapshot) -> usize {
        snap.nodes.len()
    }
    fn relist(b: &mut Builder) -> &mut Option<Vec<Self::View>> {
        &mut b.nodes
    }
}

/// Runs the watches until the future is dropped, publishing snapshots on `out`.
pub async fn run(
    client: Client,
    out: watch::Sender<Arc<ClusterSnapshot>>,
    report: Arc<KubeReport>,
    hb: crate::lifecycle::Heartbeat,
) {
    let changed = Arc::new(Notify::new());
    let snap = (**out.borrow()).clone();
    let builder = Arc::new(Mutex::new(Builder {
        partial_views: !snap.complete,
        snap,
        ..Builder::default()
    }));
    report.reset_watches();
    let svc = track::<Service>(Api::all(client.clone()), &builder, &report, &changed);
    let eps = track::<EndpointSlice>(Api::all(client.clone()), &builder, &report, &changed);
    let nodes = track::<Node>(Api::all(client), &builder, &report, &changed);
    let publish = async {
        let mut first = true;
        loop {
            hb.turn().await;
            tokio::select! {
                () = changed.notified() => {}
                () = hb.idle() => continue,
            }
            // Let events that arrived in the same instant land in this snapshot too.
            tokio::task::yield_now().await;
            let started = std::time::Instant::now();
            let snap = {
                let b = builder.lock().unwrap_or_else(PoisonError::into_inner);
                let ready = if b.partial_views {
                    b.listed.contains(Node::NAME)
                } else {
                    b.listed.len() == 3
                };
                if !ready {
                    continue;
                }
                b.snap.clone()
            };
            let complete = snap.complete;
            // The first complete view is always published, even when empty: it tells
            // downstream that the cluster is known.
            let published = out.send_if_modified(|cur| {
                if **cur == snap && !(first && complete) {
                    false
                } else {
                    *cur = Arc::new(snap);
                    true
                }
            });
            if complete {
                first = false;
            }
            if published && complete {
                report.snapshot_published();
            }
            if published {
                tracing::debug!(
                    complete,
                    micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                    "cluster snapshot published"
                );
            }
        }
    };
    tokio::join!(svc, eps, nodes, publish);
}

/// The watch of one resource, applying its events to the builder and recording health.
async fn track<K>(api: Api<K>, builder: &Mutex<Builder>, report: &KubeReport, changed: &Notify)
where
    K: Tracked,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let name = K::NAME;
    report.watch_state(name, WatchState::Listing, None);
    let span = tracing::info_span!("watch", resource = name);
    // Streaming lists (`sendInitialEvents`, Kubernetes ≥ 1.32) let the API server send the
    // objects while kube-gw converts them, instead of one page after the other. An API
    // server that refuses them fails the first list; kube-gw then lists in pages.
    let mut streaming = K::STREAM;
    loop {
        let config = if streaming {
            watcher::Config::default().streaming_lists()
        } else if K::STREAM {
            watcher::Config::default()
        } else {
            // From the watch cache (resourceVersion=0): no wait for a quorum read; the
            // watch that follows brings anything newer.
            watcher::Config::default().any_semantic()
        };
        let stream = watcher(api.clone(), config).default_backoff();
        let fell_back = drive(stream, |item| {
            let lock = || builder.lock().unwrap_or_else(PoisonError::into_inner);
            if streaming && item.is_err() && !lock().listed.contains(name) {
                if let Err(e) = &item {
                    tracing::info!(resource = name, error = %e, "the API server does not stream lists; listing in pages");
                }
                return ControlFlow::Break(());
            }
            on_event::<K>(item, builder, report, changed);
            ControlFlow::Continue(())
        })
        .instrument(span.clone())
        .await;
        if !fell_back {
            return;
        }
        streaming = false;
        *K::relist(&mut builder.lock().unwrap_or_else(PoisonError::into_inner)) = None;
    }
}

/// Applies one watch event of `K` to the builder and records health.
/// Is this `K`'s first list, with partial views: its objects go straight into the view?
fn first_partial<K: Tracked>(b: &Builder) -> bool
where
    K::DynamicType: Default,
{
    K::PARTIAL && b.partial_views && !b.listed.contains(K::NAME)
}

fn on_event<K>(
    item: Result<Event<K>, watcher::Error>,
    builder: &Mutex<Builder>,
    report: &KubeReport,
    changed: &Notify,
) where
    K: Tracked,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let name = K::NAME;
    let lock = || builder.lock().unwrap_or_else(PoisonError::into_inner);
    match item {
        Ok(Event::Init) => {
            report.relist_started(name);
            let mut b = lock();
            if first_partial::<K>(&b) {
                // The first list goes into the view object by object (nothing to replace:
                // no copy of 10 000 objects is held until the list ends). A first list
                // that starts over starts from nothing; partial views only ever add.
                K::replace(&mut b.snap, Vec::new());
                *K::relist(&mut b) = None;
            } else {
                *K::relist(&mut b) = Some(Vec::new());
            }
        }
        Ok(Event::InitApply(obj)) => {
            if let Some(v) = obj.view() {
                let mut b = lock();
                // During the very first list of Services and EndpointSlices the objects
                // go into the view at once, for partial views (see the module doc);
                // Nodes must be complete before any view is published.
                if first_partial::<K>(&b) {
                    K::upsert(&mut b.snap, v);
                    b.since_partial += 1;
                    if b.since_partial >= PARTIAL_EVERY {
                        b.since_partial = 0;
                        changed.notify_one();
                    }
                } else {
                    K::relist(&mut b).get_or_insert_with(Vec::new).push(v);
                }
            }
        }
        Ok(Event::InitDone) => {
            let count = {
                let mut b = lock();
                // A re-list replaces what was there; a first list is in place already.
                if let Some(all) = K::relist(&mut b).take() {
                    K::replace(&mut b.snap, all);
                }
                b.listed.insert(name);
                b.snap.complete = b.listed.len() == 3;
                K::count(&b.snap)
            };
            tracing::info!(resource = name, objects = count, "listed");
            report.watch_state(name, WatchState::Synced, None);
            report.objects(name, count);
            changed.notify_one();
        }
        Ok(Event::Apply(obj)) => {
            tracing::debug!(resource = name, "watch event");
            let (did, count) = {
                let mut b = lock();
                let did = match obj.view() {
                    Some(v) => K::upsert(&mut b.snap, v),
                    None => obj.remove(&mut b.snap),
                };
                (did, K::count(&b.snap))
            };
            report.watch_state(name, WatchState::Synced, None);
            report.objects(name, count);
            if did {
                changed.notify_one();
            }
        }
        Ok(Event::Delete(obj)) => {
            tracing::debug!(resource = name, "watch event");
            let (did, count) = {
                let mut b = lock();
                (obj.remove(&mut b.snap), K::count(&b.snap))
            };
            report.watch_state(name, WatchState::Synced, None);
            report.objects(name, count);
            if did {
                changed.notify_one();
            }
        }
        Err(e) => {
            tracing::warn!(resource = name, error = %e, "watch failed; retrying with backoff");
            report.watch_state(name, WatchState::Failing, Some(e.to_string()));
        }
    }
}

/// Feeds the stream to `on` until it ends or `on` breaks; true if it broke.
async fn drive<S, T>(stream: S, mut on: impl FnMut(T) -> ControlFlow<()>) -> bool
where
    S: Stream<Item = T>,
{
    futures::pin_mut!(stream);
    while let Some(item) = stream.next().await {
        if on(item).is_break() {
            return true;
        }
    }
    false
}
