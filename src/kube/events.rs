//! Kubernetes Events on Services: "served on switch X" and "refused by switch X, because …",
//! one Event per change of a Service's outcome, not one per recompute or resync.
//!
//! Input: the desired state (watch channel). The task keeps, per Service, the last outcome
//! it reported; a new desired state is compared against it and only differences become
//! Events (events.k8s.io/v1, reporting controller `kube-gw`, instance = the Node name).
//! Each change is its own Event object: kube-runtime's `Recorder` would fold a second
//! "Serving" for the same Service into the first one's count and keep the first note, which
//! hides exactly the change the operator needs to see.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::Client;
use tokio::sync::watch;

use super::snapshot::{ClusterSnapshot, ObjectKey};
use crate::desired::DesiredState;

/// What one Service got from this switch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// VIP → announceable (ready to be announced once the BGP speaker exists)?
    pub served: BTreeMap<String, bool>,
    /// Refusal messages.
    pub refused: BTreeSet<String>,
}

/// Outcomes per Service in a desired state.
pub fn outcomes(d: &DesiredState) -> BTreeMap<ObjectKey, Outcome> {
    let mut out: BTreeMap<ObjectKey, Outcome> = BTreeMap::new();
    for vip in d.vips.values() {
        for s in &vip.services {
            out.entry(s.clone())
                .or_default()
                .served
                .insert(vip.address.to_string(), vip.announceable);
        }
    }
    for r in &d.refusals {
        out.entry(r.service.clone())
            .or_default()
            .refused
            .insert(r.message());
    }
    out
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
        ev.push((true, "AddressRefused", format!("{msg} (switch {node})")));
    }
    ev
}

/// Publishes Events as desired states come in. Runs until dropped.
pub async fn run(
    client: Client,
    node: String,
    mut desired: watch::Receiver<Arc<DesiredState>>,
    snapshot: watch::Receiver<Arc<ClusterSnapshot>>,
) {
    let mut last: BTreeMap<ObjectKey, Outcome> = BTreeMap::new();
    loop {
        let now = outcomes(&desired.borrow_and_update());
        let snap = snapshot.borrow().clone();
        for (key, after) in &now {
            let before = last.get(key).cloned().unwrap_or_default();
            let Some(svc) = snap.services.get(key) else {
                continue;
            };
            let reference = ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Service".into()),
                name: Some(key.name.clone()),
                namespace: Some(key.namespace.clone()),
                uid: Some(svc.uid.clone()),
                ..Default::default()
            };
            let api: Api<Event> = Api::namespaced(client.clone(), &key.namespace);
            for (warning, reason, note) in changes(&node, &before, after) {
                let ev = Event {
                    metadata: ObjectMeta {
                        generate_name: Some(format!("{}-", key.name)),
                        namespace: Some(key.namespace.clone()),
                        ..Default::default()
                    },
                    type_: Some(if warning { "Warning" } else { "Normal" }.into()),
                    reason: Some(reason.into()),
                    note: Some(note.clone()),
                    action: Some("Serve".into()),
                    event_time: Some(MicroTime(jiff::Timestamp::now())),
                    reporting_controller: Some("kube-gw.io/kube-gw".into()),
                    reporting_instance: Some(node.clone()),
                    regarding: Some(reference.clone()),
                    ..Default::default()
                };
                if let Err(e) = api.create(&PostParams::default(), &ev).await {
                    tracing::warn!(service = %key, error = %e, "cannot publish an Event");
                } else {
                    tracing::debug!(service = %key, reason, note, "event published");
                }
            }
        }
        last = now;
        if desired.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changes_make_events() {
        let mut a = Outcome::default();
        a.served.insert("198.51.100.1".into(), false);
        a.refused.insert("203.0.113.1 refused: outside".into());
        let ev = changes("spine-1", &Outcome::default(), &a);
        assert_eq!(ev.len(), 2);
        assert!(changes("spine-1", &a, &a).is_empty());
        let mut b = a.clone();
        b.served.insert("198.51.100.1".into(), true);
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
