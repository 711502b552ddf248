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
//!   watcher's business: it re-lists with backoff. A list or watch that fails is started
//!   over with a list after kube-gw's own backoff, not resumed: a resumed watch says
//!   nothing until the next change, so nothing would tell that the API server is back. The snapshot keeps its contents meanwhile,
//!   and a re-list replaces a resource's objects only once it completes, so the snapshot
//!   never shrinks because the API server went away. Losing the API server changes nothing
//!   downstream. A list that goes quiet for [`LIST_IDLE`] before its end (a streaming list
//!   from an API server that restarted can wait for its end bookmark until the watch's idle
//!   timeout) is started again, in pages.
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
use std::sync::atomic::Ordering::Relaxed;
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
use crate::backoff::Backoff;
use crate::model::cluster as snapshot;
use crate::model::{ClusterSnapshot, ObjectKey};

/// Objects between two partial views during the first list.
const PARTIAL_EVERY: usize = 500;
/// A list (or re-list) that brings nothing for this long is started again, in pages: an
/// API server that restarted with a new watch cache can leave a streaming list waiting
/// for its end-of-list bookmark until the watch's idle timeout (about 5 minutes), with
/// every change since kept from the view.
const LIST_IDLE: std::time::Duration = std::time::Duration::from_secs(20);

/// After a list or watch fails, the list starts again after this, doubling up to
/// [`WATCH_RESTART_MAX`] while failures follow each other (reset by a watch that ran for
/// twice that).
const WATCH_RESTART: std::time::Duration = std::time::Duration::from_secs(1);
const WATCH_RESTART_MAX: std::time::Duration = std::time::Duration::from_secs(30);

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
                // The event→kernel latency runs from here (reconcile::stats).
                crate::reconcile::stats::cluster_changed();
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
    let mut restart = Backoff::new(WATCH_RESTART, WATCH_RESTART_MAX).with_jitter();
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
        // Between a list's start (Init) and its end (InitDone).
        let listing = std::sync::atomic::AtomicBool::new(false);
        // When this watcher's list ended (InitDone): the watch has run since.
        let watching: Mutex<Option<std::time::Instant>> = Mutex::new(None);
        let failed = std::sync::atomic::AtomicBool::new(false);
        let ended = drive(stream, &listing, |item| {
            let lock = || builder.lock().unwrap_or_else(PoisonError::into_inner);
            if streaming && item.is_err() && !lock().listed.contains(name) {
                if let Err(e) = &item {
                    tracing::info!(resource = name, error = %e, "the API server does not stream lists; listing in pages");
                }
                return ControlFlow::Break(());
            }
            match &item {
                Ok(Event::Init) => listing.store(true, Relaxed),
                Ok(Event::InitDone) => {
                    listing.store(false, Relaxed);
                    *watching.lock().unwrap_or_else(PoisonError::into_inner) =
                        Some(std::time::Instant::now());
                }
                Err(_) => {
                    listing.store(false, Relaxed);
                    failed.store(true, Relaxed);
                }
                _ => {}
            }
            let stop = item.is_err();
            on_event::<K>(item, builder, report, changed);
            if stop {
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        })
        .instrument(span.clone())
        .await;
        match ended {
            Ended::Closed => return,
            Ended::Broke if failed.load(Relaxed) => {
                // A failure, of the list or of the watch after it, starts over with a list
                // after kube-gw's own backoff (1 s doubling to 30 s, with jitter). The
                // watcher left to itself would resume a failed watch from its
                // resourceVersion, silently: nothing would say the API server is back
                // until the next change, which may be hours away, and status would stay
                // degraded meanwhile. A list ends in InitDone as soon as the API server
                // answers, and publishes nothing if nothing changed. And the watcher
                // retries a failed list about every second (the Init that starts each
                // attempt resets its backoff): too often, from every switch, for an API
                // server that is struggling.
                let watched = *watching.lock().unwrap_or_else(PoisonError::into_inner);
                if watched.is_some_and(|t| t.elapsed() >= WATCH_RESTART_MAX * 2) {
                    restart.reset();
                }
                tracing::info!(resource = name, retry_in = ?restart.peek(), "listing again after the failure");
                restart.wait().await;
            }
            Ended::Broke => {}
            Ended::ListIdle => {
                tracing::warn!(resource = name, idle = ?LIST_IDLE, streaming, "a list brought nothing; listing again, in pages");
                report.watch_state(
                    name,
                    WatchState::Failing,
                    Some(format!(
                        "a list brought nothing for {LIST_IDLE:?}; listing again"
                    )),
                );
            }
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

/// How [`drive`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// The stream ended.
    Closed,
    /// `on` broke.
    Broke,
    /// A list (`listing` set) brought nothing for [`LIST_IDLE`].
    ListIdle,
}

/// Feeds the stream to `on` until it ends, `on` breaks, or a list in progress (`listing`,
/// which `on` keeps) goes quiet for [`LIST_IDLE`].
async fn drive<S, T>(
    stream: S,
    listing: &std::sync::atomic::AtomicBool,
    mut on: impl FnMut(T) -> ControlFlow<()>,
) -> Ended
where
    S: Stream<Item = T>,
{
    futures::pin_mut!(stream);
    loop {
        let next = if listing.load(Relaxed) {
            match tokio::time::timeout(LIST_IDLE, stream.next()).await {
                Ok(next) => next,
                Err(_) => return Ended::ListIdle,
            }
        } else {
            stream.next().await
        };
        let Some(item) = next else {
            return Ended::Closed;
        };
        if on(item).is_break() {
            return Ended::Broke;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `1` starts a list, `2` ends it (as Init and InitDone do).
    fn on(listing: &std::sync::atomic::AtomicBool, seen: &mut Vec<i32>, item: i32) {
        match item {
            1 => listing.store(true, Relaxed),
            2 => listing.store(false, Relaxed),
            _ => {}
        }
        seen.push(item);
    }

    #[tokio::test(start_paused = true)]
    async fn a_list_that_goes_quiet_ends_the_drive_and_a_quiet_watch_does_not() {
        // A list starts and then nothing comes: over after LIST_IDLE.
        let listing = std::sync::atomic::AtomicBool::new(false);
        let mut seen = Vec::new();
        let stream = futures::stream::iter([1, 3]).chain(futures::stream::pending());
        let started = tokio::time::Instant::now();
        let ended = drive(stream, &listing, |i| {
            on(&listing, &mut seen, i);
            ControlFlow::Continue(())
        })
        .await;
        assert_eq!(ended, Ended::ListIdle);
        assert_eq!(seen, [1, 3]);
        assert_eq!(started.elapsed(), LIST_IDLE);
        // A list that ends, then a watch quiet for longer: still running.
        let listing = std::sync::atomic::AtomicBool::new(false);
        let mut seen = Vec::new();
        let stream = futures::stream::iter([1, 3, 2]).chain(futures::stream::pending());
        let quiet = tokio::time::timeout(
            LIST_IDLE * 10,
            drive(stream, &listing, |i| {
                on(&listing, &mut seen, i);
                ControlFlow::Continue(())
            }),
        )
        .await;
        assert!(quiet.is_err(), "a quiet watch must not end the drive");
        assert_eq!(seen, [1, 3, 2]);
        // The stream's end and a break.
        let listing = std::sync::atomic::AtomicBool::new(false);
        let ended = drive(futures::stream::iter([3]), &listing, |_| {
            ControlFlow::Continue(())
        })
        .await;
        assert_eq!(ended, Ended::Closed);
        let ended = drive(futures::stream::iter([3]), &listing, |_| {
            ControlFlow::Break(())
        })
        .await;
        assert_eq!(ended, Ended::Broke);
    }
}
