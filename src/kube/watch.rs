//! The cluster watch: kube-runtime reflectors for Services, EndpointSlices and Nodes, and
//! one task that turns their stores into a [`ClusterSnapshot`].
//!
//! ```text
//!  watcher(Service) ──reflect──► store ─┐
//!  watcher(EndpointSlice) ─────► store ─┼─ "changed" (Notify) ─► coalescer ─► watch<Arc<ClusterSnapshot>>
//!  watcher(Node) ──────────────► store ─┘      a burst of events = one snapshot
//! ```
//!
//! - Watch errors, expired resource versions (410 Gone) and API-server restarts are the
//!   watcher's business: it re-lists with backoff. The stores keep their contents meanwhile,
//!   and a re-list replaces a store only once it completes, so the snapshot never shrinks
//!   because the API server went away. Losing the API server changes nothing downstream.
//! - No snapshot is published until all three resources have been listed once: a partial
//!   first view would look like Services disappearing.
//! - Each resource's health (listing, synced, failing; object count; relists; errors) is
//!   written to the [`KubeReport`] that status and metrics read.

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource};
use tokio::sync::{watch, Notify};
use tracing::Instrument;

use super::report::{KubeReport, WatchState};
use super::snapshot::ClusterSnapshot;

/// Quiet time that ends a burst of events.
const COALESCE_QUIET: Duration = Duration::from_millis(5);
/// Longest a burst may delay a snapshot.
const COALESCE_MAX: Duration = Duration::from_millis(100);

/// Runs the watches until the future is dropped, publishing snapshots on `out`.
pub async fn run(
    client: Client,
    out: watch::Sender<Arc<ClusterSnapshot>>,
    report: Arc<KubeReport>,
) {
    let changed = Arc::new(Notify::new());
    report.reset_watches();
    let (svc_store, svc) =
        reflect::<Service>(Api::all(client.clone()), "services", &report, &changed);
    let (eps_store, eps) = reflect::<EndpointSlice>(
        Api::all(client.clone()),
        "endpointslices",
        &report,
        &changed,
    );
    let (node_store, nodes) = reflect::<Node>(Api::all(client), "nodes", &report, &changed);
    let coalesce = async {
        let mut first = true;
        loop {
            changed.notified().await;
            let burst_start = tokio::time::Instant::now();
            while burst_start.elapsed() < COALESCE_MAX
                && tokio::time::timeout(COALESCE_QUIET, changed.notified())
                    .await
                    .is_ok()
            {}
            if !report.all_synced_once() {
                continue;
            }
            let started = std::time::Instant::now();
            let snap = ClusterSnapshot::from_objects(
                svc_store.state().iter().map(AsRef::as_ref),
                eps_store.state().iter().map(AsRef::as_ref),
                node_store.state().iter().map(AsRef::as_ref),
            );
            // The first complete view is always published, even when empty: it tells
            // downstream that the cluster is known.
            let published = out.send_if_modified(|cur| {
                if **cur == snap && !first {
                    false
                } else {
                    *cur = Arc::new(snap);
                    true
                }
            });
            first = false;
            if published {
                report.snapshot_published();
                tracing::debug!(
                    micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                    "cluster snapshot published"
                );
            }
        }
    };
    tokio::join!(svc, eps, nodes, coalesce);
}

/// A reflector for `K` and the future that drives it, recording health as it goes.
fn reflect<K>(
    api: Api<K>,
    name: &'static str,
    report: &Arc<KubeReport>,
    changed: &Arc<Notify>,
) -> (Store<K>, impl std::future::Future<Output = ()>)
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, writer) = reflector::store::<K>();
    report.watch_state(name, WatchState::Listing, None);
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    let report = report.clone();
    let changed = changed.clone();
    let count_store = reader.clone();
    let span = tracing::info_span!("watch", resource = name);
    let fut = drive(stream, move |item| match item {
        Ok(Event::Init) => {
            report.relist_started(name);
        }
        Ok(Event::InitApply(_)) => {}
        Ok(Event::InitDone) => {
            report.watch_state(name, WatchState::Synced, None);
            report.objects(name, count_store.state().len());
            changed.notify_one();
        }
        Ok(Event::Apply(_) | Event::Delete(_)) => {
            tracing::debug!(resource = name, "watch event");
            report.watch_state(name, WatchState::Synced, None);
            report.objects(name, count_store.state().len());
            changed.notify_one();
        }
        Err(e) => {
            tracing::warn!(resource = name, error = %e, "watch failed; retrying with backoff");
            report.watch_state(name, WatchState::Failing, Some(e.to_string()));
        }
    })
    .instrument(span);
    (reader, fut)
}

async fn drive<S, T>(stream: S, mut on: impl FnMut(T))
where
    S: Stream<Item = T>,
{
    futures::pin_mut!(stream);
    while let Some(item) = stream.next().await {
        on(item);
    }
}

use kube::runtime::watcher::watcher;
