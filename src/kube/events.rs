//! Kubernetes Events on Services: "served on switch X" and "refused by switch X, because …",
//! one Event per change of a Service's outcome, not one per recompute or resync.
//!
//! Input: the desired state (watch channel). The task keeps, per Service, the last outcome
//! it reported; a new desired state is diffed structurally against the previous one (cost:
//! the size of the change), the Services it touches get their outcome updated, and only
//! differences become Events (events.k8s.io/v1, reporting controller `kube-gw`, instance = the Node name).
//! Each change is its own Event object: kube-runtime's `Recorder` would fold a second
//! "Serving" for the same Service into the first one's count and keep the first note, which
//! hides exactly the change the operator needs to see.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use imbl::ordmap::DiffItem;
use imbl::ordset::DiffItem as SetDiff;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::Client;
use tokio::sync::watch;

use crate::desired::{DesiredState, Vip};
use crate::model::{ClusterSnapshot, ObjectKey};

/// What one Service got from this switch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// VIP → announceable (ready to be announced once the BGP speaker exists)?
    pub served: BTreeMap<IpAddr, bool>,
    /// Refusal messages.
    pub refused: BTreeSet<String>,
}

/// Brings the per-Service outcomes from `before` to `after` with one structural diff of
/// each map (the cost is the size of the change). Returns the Services it touched, each
/// with the outcome it had before.
pub fn apply(
    outcomes: &mut BTreeMap<ObjectKey, Outcome>,
    before: &DesiredState,
    after: &DesiredState,
) -> BTreeMap<ObjectKey, Outcome> {
    /// The Service's outcome, remembering what it was before the first change.
    fn outcome<'a>(
        outcomes: &'a mut BTreeMap<ObjectKey, Outcome>,
        previous: &mut BTreeMap<ObjectKey, Outcome>,
        s: &ObjectKey,
    ) -> &'a mut Outcome {
        previous
            .entry(s.clone())
            .or_insert_with(|| outcomes.get(s).cloned().unwrap_or_default());
        outcomes.entry(s.clone()).or_default()
    }
    let mut previous: BTreeMap<ObjectKey, Outcome> = BTreeMap::new();
    let mut serve = |vip: &Vip, on: bool| {
        for s in &vip.services {
            let o = outcome(outcomes, &mut previous, s);
            if on {
                o.served.insert(vip.address, vip.announceable);
            } else {
                o.served.remove(&vip.address);
            }
        }
    };
    for d in before.vips.diff(&after.vips) {
        match d {
            DiffItem::Add(_, v) => serve(v, true),
            DiffItem::Remove(_, v) => serve(v, false),
            DiffItem::Update { old, new } => {
                serve(old.1, false);
                serve(new.1, true);
            }
        }
    }
    for d in before.refusals.diff(&after.refusals) {
        match d {
            SetDiff::Add(r) => {
                outcome(outcomes, &mut previous, &r.service)
                    .refused
                    .insert(r.message());
            }
            SetDiff::Remove(r) => {
                outcome(outcomes, &mut previous, &r.service)
                    .refused
                    .remove(&r.message());
            }
        }
    }
    outcomes.retain(|_, o| *o != Outcome::default());
    previous
}

/// The Events that take a Service from `before` to `after`: (warning?, reason, note).
pub fn changes(node: &str, before: &Outcome, after: &Outcome) -> Vec<(bool, &'static str, String)> {
    let mut ev = Vec::new();
    for (vip, announced) in &after.served {
        if before.served.get(vip) != Some(announced) {
            let how = if *announced {
                "announceable"
            } else {
                "not announceable: no ready endpoint"
            };
            ev.push((
                false,
                "Serving",
                format!("{vip} is served by switch {node} ({how})"),
            ));
        }
    }
    for vip in before
        .served
        .keys()
        .filter(|v| !after.served.contains_key(*v))
    {
        ev.push((
            false,
            "Withdrawn",
            format!("{vip} is no longer served by switch {node}"),
        ));
    }
    for msg in after.refused.difference(&before.refused) {
        let reason = if msg.contains(crate::desired::COMMUNITIES_ANNOTATION) {
            "CommunityRefused"
        } else {
            "AddressRefused"
        };
        ev.push((true, reason, format!("{msg} (switch {node})")));
    }
    ev
}

/// Events sent at once before the rate applies.
pub(crate) const EVENT_BURST: f64 = 50.0;
/// Events per second after a burst. A switch that starts into a cluster of 10 000 Services
/// has 10 000 "Serving" Events to tell; sent as fast as the API server takes them they would
/// load it (and the switch) exactly while the VIPs are being programmed. client-go's event
/// recorder rate-limits for the same reason.
pub(crate) const EVENT_RATE: f64 = 20.0;

/// A token bucket: `take` waits until a token is there.
#[derive(Debug)]
pub struct TokenBucket {
    tokens: f64,
    burst: f64,
    rate: f64,
    at: tokio::time::Instant,
}

impl TokenBucket {
    pub fn new(burst: f64, rate: f64) -> Self {
        Self {
            tokens: burst,
            burst,
            rate,
            at: tokio::time::Instant::now(),
        }
    }

    pub async fn take(&mut self) {
        loop {
            let now = tokio::time::Instant::now();
            self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate)
                .min(self.burst);
            self.at = now;
            if self.tokens >= 1.0 {
                self.tokens -= 1.0;
                return;
            }
            let wait = (1.0 - self.tokens) / self.rate;
            tokio::time::sleep(std::time::Duration::from_secs_f64(wait)).await;
        }
    }
}

/// How long the first Events wait for the address reconciler to apply a complete desired
/// state before they are told anyway (a reconciler that cannot work must not silence
/// refusals).
const FIRST_EVENTS_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The Service an Event is about.
#[derive(Debug, Clone, Copy)]
pub struct Regarding<'a> {
    pub key: &'a ObjectKey,
    pub uid: &'a str,
}

/// Publishes one Event about a Service: (warning?, reason, action) and its note, reported by
/// `kube-gw.io/kube-gw` from this switch. A failure is logged and forgotten (Events are
/// best effort).
pub async fn publish(
    client: &Client,
    node: &str,
    about: &Regarding<'_>,
    (warning, reason, action): (bool, &str, &str),
    note: &str,
) {
    let key = about.key;
    let reference = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Service".into()),
        name: Some(key.name.to_string()),
        namespace: Some(key.namespace.to_string()),
        uid: Some(about.uid.to_string()),
        ..Default::default()
    };
    let ev = Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", key.name)),
            namespace: Some(key.namespace.to_string()),
            ..Default::default()
        },
        type_: Some(if warning { "Warning" } else { "Normal" }.into()),
        reason: Some(reason.into()),
        note: Some(note.to_string()),
        action: Some(action.into()),
        event_time: Some(MicroTime(jiff::Timestamp::now())),
        reporting_controller: Some("kube-gw.io/kube-gw".into()),
        reporting_instance: Some(node.to_string()),
        regarding: Some(reference),
        ..Default::default()
    };
    let api: Api<Event> = Api::namespaced(client.clone(), &key.namespace);
    if let Err(e) = api.create(&PostParams::default(), &ev).await {
        tracing::warn!(service = %key, error = %e, "cannot publish an Event");
    } else {
        tracing::debug!(service = %key, reason, note, "event published");
    }
}

/// Publishes Events as desired states come in. Runs until dropped.
///
/// The first Events wait until the address reconciler has applied a complete desired state
/// (at most [`FIRST_EVENTS_WAIT`]): "Serving" should not be told before the address is on
/// the interface, and a switch that starts into 10 000 Services programs them without the
/// API server and etcd taking Events at the same time on the same machine.
pub async fn run(
    client: Client,
    node: String,
    serving: super::Serving,
    snapshot: watch::Receiver<Arc<ClusterSnapshot>>,
) {
    let super::Serving {
        mut desired,
        mut programmed,
        ..
    } = serving;
    if tokio::time::timeout(FIRST_EVENTS_WAIT, programmed.wait_for(|p| p.complete))
        .await
        .is_err()
    {
        tracing::warn!(
            waited = ?FIRST_EVENTS_WAIT,
            "the addresses are not programmed yet; publishing Events anyway"
        );
    }
    let mut bucket = TokenBucket::new(EVENT_BURST, EVENT_RATE);
    let mut last_state = Arc::new(DesiredState::default());
    let mut last: BTreeMap<ObjectKey, Outcome> = BTreeMap::new();
    loop {
        let now = desired.borrow_and_update().clone();
        let before = apply(&mut last, &last_state, &now);
        last_state = now;
        let snap = snapshot.borrow().clone();
        for (key, before) in before {
            let after = last.get(&key).cloned().unwrap_or_default();
            let Some(svc) = snap.services.get(&key) else {
                continue;
            };
            for (warning, reason, note) in changes(&node, &before, &after) {
                bucket.take().await;
                let what = Regarding {
                    key: &key,
                    uid: &svc.uid,
                };
                publish(&client, &node, &what, (warning, reason, "Serve"), &note).await;
            }
        }
        if desired.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn events_are_rate_limited_after_a_burst() {
        let mut b = TokenBucket::new(3.0, 2.0);
        let start = tokio::time::Instant::now();
        for _ in 0..3 {
            b.take().await;
        }
        assert_eq!(
            start.elapsed(),
            std::time::Duration::ZERO,
            "the burst is free"
        );
        for _ in 0..4 {
            b.take().await;
        }
        // Four more at two per second.
        let took = start.elapsed().as_secs_f64();
        assert!((1.9..2.1).contains(&took), "took {took} s");
    }

    #[test]
    fn only_changes_make_events() {
        let mut a = Outcome::default();
        let vip: IpAddr = "198.51.100.1".parse().unwrap();
        a.served.insert(vip, false);
        a.refused.insert("203.0.113.1 refused: outside".into());
        let ev = changes("spine-1", &Outcome::default(), &a);
        assert_eq!(ev.len(), 2);
        assert!(changes("spine-1", &a, &a).is_empty());
        let mut b = a.clone();
        b.served.insert(vip, true);
        let ev = changes("spine-1", &a, &b);
        assert_eq!(
            ev,
            vec![(
                false,
                "Serving",
                "198.51.100.1 is served by switch spine-1 (announceable)".to_string()
            )]
        );
    }
}
