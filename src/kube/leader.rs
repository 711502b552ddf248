//! Leader election: exactly one switch writes what only one should write (Gateway API status;
//! LoadBalancer addresses), over `coordination.k8s.io/v1` Leases.
//!
//! Why not one shared Lease, as client-go elects: a switch authenticates as its Node
//! (`system:node:<name>`), and the API server's NodeRestriction admission lets a node create
//! and update only its own Lease in `kube-node-lease`, whatever RBAC says (seen: "can only
//! access leases in the kube-node-lease system namespace"). So the election reads the Leases
//! the switches already keep: every kube-gw switch renews its node Lease (`kube::node`), and
//! the candidates label their Node `<label>=<group>` — `kube-gw.io/gateway=<controller name,
//! '/' as '.'>` for the Gateway API status writer, `kube-gw.io/allocator=<loadBalancerClass,
//! '/' as '.'>` for the LoadBalancer allocator. The leader is the candidate with the smallest
//! name among those whose Lease is alive.
//!
//! - Alive: its `renewTime` changed within the Lease duration, timed by this switch's clock
//!   since it saw the change (never by comparing clocks across switches); a Lease seen for
//!   the first time counts as alive for one duration. Erring towards "alive" errs towards no
//!   writer for a while, never towards two.
//! - A switch always counts itself as alive while it can reach the API server; one that cannot
//!   read the Leases for a whole duration stops calling itself leader.
//! - Failover: a leader that dies is replaced one Lease duration (`[kubernetes]
//!   lease-duration`, 40 s by default) after its last renewal.
//! - No fence: a leader that was paused may write once after it lost. Writers therefore
//!   re-read what they write and carry its `resourceVersion` (see `gateway_status`); and every
//!   switch computes the same statuses, so two writers write the same thing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::Client;
use tokio::sync::watch;

/// The label that makes a Node a candidate for the Gateway API status writer.
pub const GATEWAY_LABEL: &str = "kube-gw.io/gateway";
/// The label that makes a Node a candidate for the LoadBalancer allocator.
pub const ALLOCATOR_LABEL: &str = "kube-gw.io/allocator";
/// How often the Leases are read, at most (a quarter of the Lease duration if shorter).
pub const ROUND: Duration = Duration::from_secs(2);

/// One election.
#[derive(Clone)]
pub struct Election {
    pub client: Client,
    /// This switch (its Node name).
    pub identity: String,
    /// The label that makes a Node a candidate ([`GATEWAY_LABEL`], [`ALLOCATOR_LABEL`]).
    pub label: &'static str,
    /// What the candidates share: the value of their label (switches serving another
    /// `controllerName` or class elect their own writer).
    pub group: String,
    /// How long a Lease is alive without renewal: the node Leases' duration (`kube::node`).
    pub duration: Duration,
    /// Where the outcome is shown (`kube-gw status`: this component).
    pub component: &'static str,
    /// What the leader does, for the log ("writes Gateway API status").
    pub duty: &'static str,
    pub report: std::sync::Arc<super::report::KubeReport>,
}

/// A label value for a controller name (`kube-gw.io/switch` → `kube-gw.io.switch`): label
/// values allow neither `/` nor more than 63 characters.
pub fn group_of(controller: &str) -> String {
    let v: String = controller
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '.'
            }
        })
        .collect();
    let v = v.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    v.chars()
        .take(63)
        .collect::<String>()
        .trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

impl std::fmt::Debug for Election {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Election")
            .field("identity", &self.identity)
            .field("label", &self.label)
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

/// What this switch saw of the other candidates' Leases: `renewTime`, and when it changed.
type Seen = BTreeMap<String, (Option<String>, Instant)>;

/// The leader among `alive` candidates (this switch always among them).
pub fn leader<'a>(me: &'a str, alive: &'a BTreeSet<String>) -> &'a str {
    alive
        .iter()
        .map(String::as_str)
        .chain([me])
        .min()
        .unwrap_or(me)
}

impl Election {
    /// Runs the election for ever, telling `leader` whether this switch is the leader.
    pub async fn run(self, leader_tx: watch::Sender<bool>) {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), "kube-node-lease");
        let mut labelled = false;
        let mut seen = Seen::new();
        let mut last_ok: Option<Instant> = None;
        loop {
            match self.round(&nodes, &leases, &mut labelled, &mut seen).await {
                Ok((lead, alive)) => {
                    last_ok = Some(Instant::now());
                    let is_leader = lead == self.identity;
                    if is_leader && !*leader_tx.borrow() {
                        tracing::info!(node = %self.identity, duty = self.duty, "this switch is the leader");
                    }
                    leader_tx.send_if_modified(|l| std::mem::replace(l, is_leader) != is_leader);
                    self.report.election(
                        self.component,
                        is_leader,
                        format!(
                            "leader {lead}; {} other candidate(s) alive of group {}",
                            alive, self.group
                        ),
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, "leader election: cannot read the candidates' Leases");
                    if last_ok.is_none_or(|t| t.elapsed() >= self.duration) {
                        leader_tx.send_if_modified(|l| std::mem::replace(l, false));
                        self.report.election(
                            self.component,
                            false,
                            format!("cannot read the candidates' Leases: {e}"),
                        );
                    }
                }
            }
            tokio::time::sleep(ROUND.min(self.duration / 4)).await;
        }
    }

    async fn round(
        &self,
        nodes: &Api<Node>,
        leases: &Api<Lease>,
        labelled: &mut bool,
        seen: &mut Seen,
    ) -> Result<(String, usize), kube::Error> {
        if !*labelled {
            let patch = serde_json::json!({"metadata": {"labels": {self.label: self.group}}});
            nodes
                .patch(
                    &self.identity,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
            *labelled = true;
        }
        let candidates = nodes
            .list_metadata(&ListParams::default().labels(&format!("{}={}", self.label, self.group)))
            .await?;
        let names: BTreeSet<String> = candidates
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .filter(|n| *n != self.identity)
            .collect();
        seen.retain(|n, _| names.contains(n));
        let mut alive = BTreeSet::new();
        for name in names {
            let renew = leases
                .get_opt(&name)
                .await?
                .and_then(|l| l.spec)
                .and_then(|s| s.renew_time)
                .map(|t| t.0.to_string());
            let entry = seen
                .entry(name.clone())
                .or_insert_with(|| (renew.clone(), Instant::now()));
            if entry.0 != renew {
                *entry = (renew.clone(), Instant::now());
            }
            if renew.is_some() && entry.1.elapsed() < self.duration {
                alive.insert(name);
            }
        }
        Ok((leader(&self.identity, &alive).to_string(), alive.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_controller_name_becomes_a_label_value() {
        assert_eq!(group_of("kube-gw.io/switch"), "kube-gw.io.switch");
        assert_eq!(group_of("example.com/a b/"), "example.com.a.b");
        assert!(group_of(&"x".repeat(100)).len() <= 63);
    }

    #[test]
    fn the_smallest_alive_name_leads() {
        let alive: BTreeSet<String> = ["spine-2".to_string(), "spine-3".to_string()].into();
        assert_eq!(leader("spine-1", &alive), "spine-1");
        assert_eq!(leader("spine-4", &alive), "spine-2");
        assert_eq!(leader("spine-4", &BTreeSet::new()), "spine-4");
    }
}
