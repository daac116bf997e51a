//! Partition ownership through `coordination.k8s.io` Leases, for several dispatcher replicas on
//! one shared store: endpoints are hashed into partitions, each partition is held by one replica
//! at a time, and replicas rebalance as they come and go (see [`plan`] for the rules).
//!
//! Every round (the Lease retry period) a replica renews its member Lease, lists the group's
//! Leases, plans, and writes: renewals, takeovers and releases, each with the Lease's
//! resourceVersion so two replicas never both win one. A replica trusts a partition only until
//! its Lease's expiry minus a margin by its own clock, so when it cannot renew (API unreachable)
//! it stops claiming before anyone else may take over. A replica whose member Lease expired is
//! dead: its in-flight deliveries are made due again at once (at least once), not after their
//! claim lease.
pub mod plan;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use tracing::{debug, info, info_span, warn, Instrument};

use super::ownership::{Ownership, Partitioned};
use super::Shared;
use crate::runtime::lease::{give_up, holder, next_spec, Decision, LeaseTimings, RecordClock};
use plan::{plan, remaining, Ages, Observed, Timings};

/// Label naming the dispatcher group a Lease belongs to (its value: the Lease prefix).
pub const GROUP_LABEL: &str = "webhooks.pitchey.io/dispatcher-group";
/// Label telling partition Leases (`partition`) from member Leases (`member`).
pub const ROLE_LABEL: &str = "webhooks.pitchey.io/lease-role";
/// Label holding a partition Lease's partition number.
pub const PARTITION_LABEL: &str = "webhooks.pitchey.io/partition";

/// Where and how partitions are leased.
#[derive(Clone, Debug)]
pub struct Settings {
    pub count: u32,
    /// Lease name prefix and group label value.
    pub prefix: String,
    pub timings: Timings,
    /// How often a round runs.
    pub period: Duration,
}

impl Settings {
    fn lease_timings(&self) -> LeaseTimings {
        LeaseTimings {
            duration: self.timings.duration,
            retry: self.period,
        }
    }
}

pub fn partition_lease_name(prefix: &str, partition: u32) -> String {
    format!("{prefix}-p{partition}")
}

/// The member Lease's name: the identity made a valid object name.
pub fn member_lease_name(prefix: &str, identity: &str) -> String {
    let cleaned: String = identity
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let cleaned = cleaned.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    let mut name = format!("{prefix}-m-{cleaned}");
    name.truncate(253);
    name.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

fn labels(prefix: &str, role: &str, partition: Option<u32>) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (GROUP_LABEL.to_string(), prefix.to_string()),
        (ROLE_LABEL.to_string(), role.to_string()),
    ]);
    if let Some(partition) = partition {
        labels.insert(PARTITION_LABEL.to_string(), partition.to_string());
    }
    labels
}

/// Runs ownership rounds until the task is dropped.
pub async fn run(shared: Arc<Shared>, api: Api<Lease>, settings: Settings) {
    let Ownership::Partitions(partitioned) = &*shared.ownership else {
        return;
    };
    let mut drained = BTreeSet::new();
    // Per Lease name: when this replica last saw its record change (expiry by our own clock).
    let mut clocks: BTreeMap<String, RecordClock> = BTreeMap::new();
    loop {
        let span = info_span!("partitions", replica = %shared.owner);
        if let Err(error) = round(
            &shared,
            partitioned,
            &api,
            &settings,
            &mut drained,
            &mut clocks,
        )
        .instrument(span)
        .await
        {
            warn!(%error, "partition ownership round failed; held partitions lapse unless renewed");
        }
        tokio::time::sleep(settings.period).await;
    }
}

async fn round(
    shared: &Shared,
    partitioned: &Partitioned,
    api: &Api<Lease>,
    settings: &Settings,
    drained: &mut BTreeSet<u32>,
    clocks: &mut BTreeMap<String, RecordClock>,
) -> Result<(), kube::Error> {
    let me = shared.owner.as_str();
    let started = Instant::now();
    let now = Timestamp::now();
    let listed = list_group(api, settings).await?;
    let member_name = member_lease_name(&settings.prefix, me);
    let own_member = listed
        .iter()
        .find(|l| l.metadata.name.as_deref() == Some(member_name.as_str()));
    renew_member(api, settings, me, now, own_member).await?;
    let mut observed = Observed::default();
    let mut ages = Ages::default();
    let seen_at = Instant::now();
    clocks.retain(|name, _| {
        listed
            .iter()
            .any(|l| l.metadata.name.as_deref() == Some(name.as_str()))
    });
    let mut partition_leases: BTreeMap<u32, Lease> = BTreeMap::new();
    let mut member_leases: Vec<Lease> = Vec::new();
    for lease in listed {
        let spec = lease.spec.clone().unwrap_or_default();
        let age = clocks
            .entry(lease.metadata.name.clone().unwrap_or_default())
            .or_default()
            .age(Some(&spec), seen_at);
        match role(&lease) {
            Some("member") => {
                observed.members.push(spec);
                ages.members.push(age);
                member_leases.push(lease);
            }
            Some("partition") => {
                let number = lease
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(PARTITION_LABEL))
                    .and_then(|p| p.parse::<u32>().ok())
                    .filter(|p| *p < settings.count);
                if let Some(number) = number {
                    if let Some(age) = age {
                        ages.partitions.insert(number, age);
                    }
                    observed.partitions.insert(number, spec);
                    partition_leases.insert(number, lease);
                }
            }
            _ => {}
        }
    }
    observed.ages = Some(ages);
    let plan = plan(
        settings.count,
        me,
        now,
        settings.timings,
        &observed,
        drained,
    );
    debug!(
        members = plan.members.len(),
        share = plan.share,
        keep = plan.keep.len(),
        acquire = plan.acquire.len(),
        drain = plan.drain.len(),
        release = plan.release.len(),
        "planned"
    );

    // Dead replicas first, so their in-flight deliveries are due before their partitions are
    // claimed from.
    for dead in &plan.dead_members {
        recover_dead_member(shared, api, dead, &member_leases).await;
    }

    let lease_timings = settings.lease_timings();
    let full = remaining(now, now, settings.timings);
    let mut held: BTreeMap<u32, Instant> = BTreeMap::new();
    for partition in plan.keep.iter().chain(&plan.drain) {
        let Some(lease) = partition_leases.get(partition) else {
            continue;
        };
        let spec = lease.spec.as_ref();
        let valid = if plan.renew_due.contains(partition) || plan.drain.contains(partition) {
            match write(
                api,
                lease.clone(),
                spec,
                &Decision::Renew,
                me,
                now,
                lease_timings,
            )
            .await
            {
                Ok(true) => Some(full),
                Ok(false) => None,
                Err(error) => {
                    warn!(%error, partition, "renewing a partition Lease failed");
                    last_renewal(spec).map(|at| remaining(at, now, settings.timings))
                }
            }
        } else {
            last_renewal(spec).map(|at| remaining(at, now, settings.timings))
        };
        if let (Some(valid), true) = (valid, plan.keep.contains(partition)) {
            held.insert(*partition, started + valid);
        }
    }
    for partition in &plan.acquire {
        let existing = partition_leases.get(partition);
        let previous = existing.and_then(holder).map(str::to_string);
        let lease = existing.cloned().unwrap_or_else(|| Lease {
            metadata: ObjectMeta {
                name: Some(partition_lease_name(&settings.prefix, *partition)),
                labels: Some(labels(&settings.prefix, "partition", Some(*partition))),
                ..Default::default()
            },
            spec: None,
        });
        let spec = existing.and_then(|l| l.spec.as_ref());
        match write(api, lease, spec, &Decision::Acquire, me, now, lease_timings).await {
            Ok(true) => {
                info!(
                    partition,
                    previous = previous.as_deref().unwrap_or("-"),
                    "took a partition"
                );
                held.insert(*partition, started + full);
            }
            Ok(false) => debug!(partition, "another replica took the partition first"),
            Err(error) => warn!(%error, partition, "taking a partition Lease failed"),
        }
    }
    for partition in &plan.release {
        if let Some(lease) = partition_leases.get(partition) {
            match release(api, lease.clone(), me).await {
                Ok(()) => info!(partition, "released a partition to rebalance"),
                Err(error) => warn!(%error, partition, "releasing a partition Lease failed"),
            }
        }
    }
    drained.clone_from(&plan.drain);
    if partitioned.set(held) {
        shared.wake.notify_one();
        partitioned.gained.notify_waiters();
    }
    forget_unowned(shared);
    shared
        .metrics
        .partitions_owned
        .set(i64::try_from(partitioned.owned(Instant::now()).len()).unwrap_or(i64::MAX));
    Ok(())
}

/// Drops the breaker and limiter state, and the circuit gauge, of endpoints another replica
/// owns now: that replica reports them, and a stale "open" here would raise a false alert.
fn forget_unowned(shared: &Shared) {
    for endpoint in shared
        .gates
        .forget_unless(|e| shared.ownership.owns_endpoint(e))
    {
        shared.metrics.forget_circuit(&endpoint);
    }
}

/// The Leases of this dispatcher group (partitions and members).
async fn list_group(api: &Api<Lease>, settings: &Settings) -> Result<Vec<Lease>, kube::Error> {
    let selector = format!("{GROUP_LABEL}={}", settings.prefix);
    Ok(api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items)
}

/// `partition` or `member`, from the role label.
fn role(lease: &Lease) -> Option<&str> {
    lease
        .metadata
        .labels
        .as_ref()?
        .get(ROLE_LABEL)
        .map(String::as_str)
}

fn last_renewal(spec: Option<&LeaseSpec>) -> Option<Timestamp> {
    spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0)
}

/// Writes the Lease after a decision; `Ok(false)` when another replica wrote first.
async fn write(
    api: &Api<Lease>,
    mut lease: Lease,
    current: Option<&LeaseSpec>,
    decision: &Decision,
    me: &str,
    now: Timestamp,
    timings: LeaseTimings,
) -> Result<bool, kube::Error> {
    let Some(next) = next_spec(current, decision, me, now, timings) else {
        return Ok(false);
    };
    lease.spec = Some(next);
    let name = lease.metadata.name.clone().unwrap_or_default();
    let result = if lease.metadata.resource_version.is_some() {
        api.replace(&name, &PostParams::default(), &lease).await
    } else {
        api.create(&PostParams::default(), &lease).await
    };
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error),
    }
}

async fn release(api: &Api<Lease>, mut lease: Lease, me: &str) -> Result<(), kube::Error> {
    if !give_up(&mut lease, me) {
        return Ok(());
    }
    let name = lease.metadata.name.clone().unwrap_or_default();
    match api.replace(&name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => Ok(()),
        Err(error) => Err(error),
    }
}

/// Renews (or creates) this replica's member Lease, `existing` as listed this round.
async fn renew_member(
    api: &Api<Lease>,
    settings: &Settings,
    me: &str,
    now: Timestamp,
    existing: Option<&Lease>,
) -> Result<(), kube::Error> {
    let lease = existing.cloned().unwrap_or_else(|| Lease {
        metadata: ObjectMeta {
            name: Some(member_lease_name(&settings.prefix, me)),
            labels: Some(labels(&settings.prefix, "member", None)),
            ..Default::default()
        },
        spec: None,
    });
    let spec = existing.and_then(|l| l.spec.as_ref());
    // Our own member Lease: renewed when ours, taken otherwise (a stale one from a previous run).
    let decision = if existing.and_then(holder) == Some(me) {
        Decision::Renew
    } else {
        Decision::Acquire
    };
    write(
        api,
        lease,
        spec,
        &decision,
        me,
        now,
        settings.lease_timings(),
    )
    .await?;
    Ok(())
}

/// Makes a dead replica's in-flight deliveries due again, then deletes its member Lease(s).
async fn recover_dead_member(shared: &Shared, api: &Api<Lease>, dead: &str, members: &[Lease]) {
    match shared
        .store
        .recover_in_flight(Some(dead.to_string()), Timestamp::now())
        .await
    {
        Ok(recovered) => {
            info!(replica = %dead, recovered, "a dispatcher replica's member Lease expired; its in-flight deliveries are due again");
        }
        Err(error) => {
            warn!(%error, replica = %dead, "recovering a dead replica's deliveries failed; retrying next round");
            return;
        }
    }
    for lease in members.iter().filter(|l| holder(l) == Some(dead)) {
        let name = lease.metadata.name.clone().unwrap_or_default();
        // Only the version we judged expired: a replica that just came back keeps its Lease.
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: lease.metadata.resource_version.clone(),
                uid: None,
            }),
            ..DeleteParams::default()
        };
        if let Err(error) = api.delete(&name, &params).await {
            debug!(%error, lease = %name, "deleting a dead replica's member Lease failed");
        }
    }
}

/// Gives every held partition back and deletes the member Lease (graceful shutdown), so the
/// other replicas take over at once instead of after the Lease duration.
pub async fn release_all(shared: &Shared, api: &Api<Lease>, settings: &Settings) {
    let me = shared.owner.as_str();
    let Ok(listed) = list_group(api, settings).await else {
        warn!("listing partition Leases at shutdown failed; they expire on their own");
        return;
    };
    if let Ownership::Partitions(partitioned) = &*shared.ownership {
        partitioned.set(BTreeMap::new());
    }
    for lease in listed.into_iter().filter(|l| holder(l) == Some(me)) {
        let name = lease.metadata.name.clone().unwrap_or_default();
        let result = if role(&lease) == Some("member") {
            api.delete(&name, &DeleteParams::default())
                .await
                .map(|_| ())
        } else {
            release(api, lease, me).await
        };
        if let Err(error) = result {
            warn!(%error, lease = %name, "releasing a Lease at shutdown failed");
        }
    }
    info!("released partitions");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_names_are_valid_object_names() {
        assert_eq!(partition_lease_name("wd", 7), "wd-p7");
        assert_eq!(member_lease_name("wd", "Host_1:42"), "wd-m-host-1-42");
        assert_eq!(member_lease_name("wd", "-a-"), "wd-m-a");
        let long = member_lease_name("wd", &"x".repeat(400));
        assert_eq!(long.len(), 253);
    }
}
