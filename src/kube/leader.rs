//! Leader election with a `coordination.k8s.io/v1` Lease: exactly one switch writes what only
//! one should write (Gateway API status today; allocations with the IPAM issue).
//!
//! The algorithm is client-go's: the holder renews `renewTime` every [`RENEW`]; another switch
//! takes the Lease over when it has seen neither the holder nor `renewTime` change for the
//! Lease's duration (timed by its own clock since it last saw a change, never by comparing
//! clocks across switches). Every write carries the Lease's `resourceVersion`, so two
//! candidates racing for it cannot both win. A holder that cannot renew within the duration
//! stops calling itself leader before anyone else may take over.
//!
//! A Lease is no fence: a leader that was paused for longer than the duration may still write
//! once after it lost. Writers therefore re-read what they write and carry its
//! `resourceVersion` (see `gateway_status`).

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::Client;
use tokio::sync::watch;

/// How long a Lease is valid without renewal.
pub const DURATION: Duration = Duration::from_secs(15);
/// How often the holder renews, and candidates look.
pub const RENEW: Duration = Duration::from_secs(2);

/// One election.
#[derive(Clone)]
pub struct Election {
    pub client: Client,
    pub namespace: String,
    pub name: String,
    /// This switch (its Node name).
    pub identity: String,
}

impl std::fmt::Debug for Election {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Election")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

fn now() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

impl Election {
    /// Runs the election for ever, telling `leader` whether this switch holds the Lease.
    pub async fn run(self, leader: watch::Sender<bool>) {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), &self.namespace);
        // What we last saw of another holder, and since when.
        let mut seen: Option<(Option<String>, Option<String>, Instant)> = None;
        let mut renewed: Option<Instant> = None;
        loop {
            let result = self.round(&api, &mut seen).await;
            match result {
                Ok(true) => {
                    renewed = Some(Instant::now());
                    if !*leader.borrow() {
                        tracing::info!(lease = %self.name, namespace = %self.namespace, "this switch is the leader (it writes status)");
                    }
                    leader.send_if_modified(|l| !std::mem::replace(l, true));
                }
                Ok(false) => {
                    renewed = None;
                    leader.send_if_modified(|l| std::mem::replace(l, false));
                }
                Err(e) => {
                    tracing::warn!(lease = %self.name, error = %e, "leader election: cannot read or write the Lease");
                    // Leadership ends before anyone else may take over.
                    if renewed.is_none_or(|t| t.elapsed() + RENEW >= DURATION) {
                        leader.send_if_modified(|l| std::mem::replace(l, false));
                    }
                }
            }
            tokio::time::sleep(RENEW).await;
        }
    }

    /// One look at the Lease: renew, take over, or wait. True if this switch holds it.
    async fn round(
        &self,
        api: &Api<Lease>,
        seen: &mut Option<(Option<String>, Option<String>, Instant)>,
    ) -> Result<bool, kube::Error> {
        let secs = i32::try_from(DURATION.as_secs()).unwrap_or(15);
        let Some(mut lease) = api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    namespace: Some(self.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(now()),
                    renew_time: Some(now()),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        if holder.as_deref() == Some(self.identity.as_str()) {
            spec.renew_time = Some(now());
            spec.lease_duration_seconds = Some(secs);
            return match api
                .replace(&self.name, &PostParams::default(), &lease)
                .await
            {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        }
        let renew = spec.renew_time.as_ref().map(|t| t.0.to_string());
        let unchanged = seen
            .as_ref()
            .is_some_and(|(h, r, _)| *h == holder && *r == renew);
        if !unchanged {
            *seen = Some((holder.clone(), renew, Instant::now()));
        }
        let expired = holder.is_none()
            || seen
                .as_ref()
                .is_some_and(|(_, _, since)| since.elapsed() >= DURATION);
        if !expired {
            return Ok(false);
        }
        tracing::info!(lease = %self.name, previous = holder.as_deref().unwrap_or("-"), "the Lease expired; taking it over");
        spec.holder_identity = Some(self.identity.clone());
        spec.acquire_time = Some(now());
        spec.renew_time = Some(now());
        spec.lease_duration_seconds = Some(secs);
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        match api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                *seen = None;
                Ok(true)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}
