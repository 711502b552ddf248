//! Writes the Gateway API statuses the gateway computed, from the one switch that holds the
//! status Lease (`leader`). Every switch computes the same statuses from the same objects;
//! only the leader writes them.
//!
//! - Inputs: `watch<Arc<Statuses>>` (from the gateway), `watch<bool>` (leadership).
//! - For each object: re-read it, build its status from the computed one (keeping a
//!   condition's `lastTransitionTime` while its status is unchanged), and write it with a JSON
//!   merge patch of `/status` that carries the object's `resourceVersion`: a write based on a
//!   stale read fails (409) and is retried on the next round instead of overwriting.
//! - Route `status.parents` is shared with other controllers: only entries with kube-gw's
//!   `controllerName` are replaced; the others are kept as they are.
//! - Rounds: on every change of the statuses, on becoming leader, and every 30 s (a status
//!   someone else overwrote is put back).

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube::Client;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::gateway::{BackendTlsPolicy, Gateway, GatewayClass, HttpRoute, TlsRoute};
use crate::gateway::plan::{Condition, ListenerStatus, ParentStatus, RouteStatus, Statuses};
use crate::model::gateway::{ParentRef, GROUP};

/// How often statuses are written again even without a change.
const RESYNC: Duration = Duration::from_secs(30);

/// Runs the writer until dropped.
pub async fn run(
    client: Client,
    controller: String,
    mut statuses: watch::Receiver<Arc<Statuses>>,
    mut leader: watch::Receiver<bool>,
) {
    loop {
        if *leader.borrow_and_update() {
            let s = statuses.borrow_and_update().clone();
            let (written, failed) = write_all(&client, &controller, &s).await;
            if written > 0 || failed > 0 {
                tracing::info!(written, failed, "gateway: statuses written");
            }
        }
        tokio::select! {
            r = statuses.changed() => if r.is_err() { return },
            r = leader.changed() => if r.is_err() { return },
            () = tokio::time::sleep(RESYNC) => {}
        }
    }
}

fn rfc3339_now() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap_or_else(|_| jiff::Timestamp::now())
        .to_string()
}

/// Conditions as the API wants them, keeping `lastTransitionTime` where the status is as
/// before.
fn conditions(new: &[Condition], old: Option<&Value>, generation: i64) -> Value {
    let now = rfc3339_now();
    Value::Array(
        new.iter()
            .map(|c| {
                let status = if c.status { "True" } else { "False" };
                let prev = old.and_then(Value::as_array).and_then(|a| {
                    a.iter()
                        .find(|o| o["type"] == c.type_ && o["status"] == status)
                });
                let time = prev
                    .and_then(|p| p["lastTransitionTime"].as_str())
                    .map_or_else(|| now.clone(), str::to_string);
                json!({
                    "type": c.type_,
                    "status": status,
                    "reason": c.reason,
                    "message": c.message,
                    "observedGeneration": generation,
                    "lastTransitionTime": time,
                })
            })
            .collect(),
    )
}

fn listener(l: &ListenerStatus, old: Option<&Value>, generation: i64) -> Value {
    let prev = old
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|o| o["name"] == l.name.as_str()));
    json!({
        "name": l.name,
        "supportedKinds": l.supported_kinds.iter().map(|k| json!({"group": GROUP, "kind": k})).collect::<Vec<_>>(),
        "attachedRoutes": l.attached_routes,
        "conditions": conditions(&l.conditions, prev.map(|p| &p["conditions"]), generation),
    })
}

/// A parentRef as the API spells it (absent fields left out).
fn parent_ref(p: &ParentRef) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("group".into(), json!(p.group.as_deref().unwrap_or(GROUP)));
    m.insert("kind".into(), json!(p.kind.as_deref().unwrap_or("Gateway")));
    if let Some(ns) = &p.namespace {
        m.insert("namespace".into(), json!(ns));
    }
    m.insert("name".into(), json!(p.name));
    if let Some(s) = &p.section_name {
        m.insert("sectionName".into(), json!(s));
    }
    if let Some(port) = p.port {
        m.insert("port".into(), json!(port));
    }
    Value::Object(m)
}

fn same_parent(a: &Value, b: &Value) -> bool {
    let norm = |v: &Value| {
        let mut v = v.clone();
        if v.get("group").is_none() {
            v["group"] = json!(GROUP);
        }
        if v.get("kind").is_none() {
            v["kind"] = json!("Gateway");
        }
        v
    };
    norm(a) == norm(b)
}

fn route_parents(controller: &str, r: &RouteStatus, old: &Value) -> Value {
    entries(controller, r, old, "parents", "parentRef")
}

/// A policy's `status.ancestors`: a route's parents by other names.
fn policy_ancestors(controller: &str, r: &RouteStatus, old: &Value) -> Value {
    entries(controller, r, old, "ancestors", "ancestorRef")
}

/// `status.<list>[]` of (`<reference>`, controllerName, conditions): kube-gw's entries are
/// replaced, other controllers' kept.
fn entries(controller: &str, r: &RouteStatus, old: &Value, list: &str, reference: &str) -> Value {
    let old_parents = old[list].as_array().cloned().unwrap_or_default();
    let mut out: Vec<Value> = old_parents
        .iter()
        .filter(|p| p["controllerName"] != controller)
        .cloned()
        .collect();
    for ParentStatus {
        parent,
        conditions: c,
    } in &r.parents
    {
        let pr = parent_ref(parent);
        let prev = old_parents
            .iter()
            .find(|p| p["controllerName"] == controller && same_parent(&p[reference], &pr));
        let mut e = serde_json::Map::new();
        e.insert(reference.into(), pr);
        e.insert("controllerName".into(), json!(controller));
        e.insert(
            "conditions".into(),
            conditions(c, prev.map(|p| &p["conditions"]), r.generation),
        );
        out.push(Value::Object(e));
    }
    let mut m = serde_json::Map::new();
    m.insert(list.into(), Value::Array(out));
    Value::Object(m)
}

/// Patches `/status` when it differs; true if written.
async fn patch<K>(
    api: &Api<K>,
    name: &str,
    build: impl FnOnce(&Value) -> Value,
) -> Result<bool, kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let Some(obj) = api.get_opt(name).await? else {
        return Ok(false);
    };
    let v = serde_json::to_value(&obj).unwrap_or_default();
    let old = v.get("status").cloned().unwrap_or(Value::Null);
    let new = build(&old);
    if strip_times(&old) == strip_times(&new) {
        return Ok(false);
    }
    let rv = v["metadata"]["resourceVersion"].clone();
    let body = json!({ "metadata": { "resourceVersion": rv }, "status": new });
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&body))
        .await?;
    Ok(true)
}

/// A status without `lastTransitionTime`s and with kube-gw's shapes only, for comparison.
fn strip_times(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| k.as_str() != "lastTransitionTime")
                .map(|(k, v)| (k.clone(), strip_times(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_times).collect()),
        other => other.clone(),
    }
}

async fn write_all(client: &Client, controller: &str, s: &Statuses) -> (usize, usize) {
    let (mut written, mut failed) = (0, 0);
    let mut count = |what: String, r: Result<bool, kube::Error>| match r {
        Ok(true) => written += 1,
        Ok(false) => {}
        Err(e) => {
            failed += 1;
            tracing::warn!(object = %what, error = %e, "gateway: cannot write status; retrying later");
        }
    };
    let classes: Api<GatewayClass> = Api::all(client.clone());
    for (name, (generation, c)) in &s.classes {
        let r = patch(
            &classes,
            name,
            |old| json!({ "conditions": conditions(c, old.get("conditions"), *generation) }),
        )
        .await;
        count(format!("GatewayClass {name}"), r);
    }
    for (key, g) in &s.gateways {
        let api: Api<Gateway> = Api::namespaced(client.clone(), &key.namespace);
        let r = patch(&api, &key.name, |old| {
            json!({
                "addresses": g.addresses.iter().map(|a| json!({"type": "IPAddress", "value": a.to_string()})).collect::<Vec<_>>(),
                "conditions": conditions(&g.conditions, old.get("conditions"), g.generation),
                "listeners": g.listeners.iter().map(|l| listener(l, old.get("listeners"), g.generation)).collect::<Vec<_>>(),
            })
        })
        .await;
        count(format!("Gateway {key}"), r);
    }
    for (key, r) in &s.http_routes {
        let api: Api<HttpRoute> = Api::namespaced(client.clone(), &key.namespace);
        let res = patch(&api, &key.name, |old| route_parents(controller, r, old)).await;
        count(format!("HTTPRoute {key}"), res);
    }
    for (key, r) in &s.tls_routes {
        let api: Api<TlsRoute> = Api::namespaced(client.clone(), &key.namespace);
        let res = patch(&api, &key.name, |old| route_parents(controller, r, old)).await;
        count(format!("TLSRoute {key}"), res);
    }
    for (key, r) in &s.backend_tls_policies {
        let api: Api<BackendTlsPolicy> = Api::namespaced(client.clone(), &key.namespace);
        let res = patch(&api, &key.name, |old| policy_ancestors(controller, r, old)).await;
        count(format!("BackendTLSPolicy {key}"), res);
    }
    (written, failed)
}
