//! The contract suite: what every [`Store`] backend must do, as generic async functions over a
//! [`Harness`]. A backend's test file implements `Harness` and expands
//! [`store_contract_tests!`](crate::store_contract_tests) to get one test per function.
//!
//! ```ignore
//! webhook_operator::store_contract_tests!(MyHarness::new().await);
//! ```
//!
//! This is test code: failures panic with a message saying what broke the contract.
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use jiff::Timestamp;

use super::{
    AttemptRecord, AttemptResult, ClaimRequest, ClaimScope, ClaimedDelivery, DeliveryId,
    EndpointRef, EventSource, NewEvent, NextStep, Result, Store,
};

mod batches;
mod filtered;
mod flow;
mod insert_claims;
mod load;
mod ordering;
mod queries;
mod recovery;
mod replay;
mod security;

pub use batches::{batched_counters, batched_records, capped_claims};
pub use filtered::filtered_deliveries_finish_without_failing;
pub use flow::{claim_scopes, enqueue_claim_record, held_endpoints, idempotency};
pub use insert_claims::deliveries_claimed_at_insert;
pub use load::{
    concurrent_enqueues_are_durable, concurrent_enqueues_share_commits,
    saturation_refuses_without_loss, CommitCounter,
};
pub use ordering::{
    filtered_heads_advance_their_lanes, ordered_lanes,
    ordered_lanes_survive_crashes_suspension_and_replays, paused_endpoints_resume,
};
pub use queries::{
    analytics_and_endpoint_stats, attempt_scopes, pagination, windows_from_minute_rollups,
};
pub use recovery::{
    crash_recovery_and_leases, purge_keeps_totals_and_replays, records_retried_after_their_commit,
};
pub use replay::dead_letter_and_replay_once;
pub use security::{event_search, security_log};

/// Gives the suite fresh storage and a way to reopen it.
#[async_trait]
pub trait Harness: Send + Sync {
    /// Opens the backend on this harness's storage. Every call opens the same storage: dropping
    /// the store and opening again is a restart.
    async fn open(&self) -> Result<Arc<dyn Store>>;

    /// Opens the backend on the same storage with a write queue of `capacity` operations and one
    /// operation per commit, so that a burst saturates it.
    async fn open_with_tiny_queue(&self, capacity: usize) -> Result<Arc<dyn Store>>;

    /// The idempotency window the opened stores use.
    fn idempotency_window(&self) -> Duration;
}

/// Expands to one `#[tokio::test]` per contract function, each with a fresh harness from
/// `$harness` (an expression, evaluated inside the async test, may `.await`).
#[macro_export]
macro_rules! store_contract_tests {
    ($harness:expr) => {
        $crate::store_contract_tests!(@each $harness;
            enqueue_claim_record,
            idempotency,
            held_endpoints,
            claim_scopes,
            dead_letter_and_replay_once,
            crash_recovery_and_leases,
            purge_keeps_totals_and_replays,
            records_retried_after_their_commit,
            pagination,
            attempt_scopes,
            analytics_and_endpoint_stats,
            windows_from_minute_rollups,
            saturation_refuses_without_loss,
            concurrent_enqueues_are_durable,
            capped_claims,
            batched_records,
            batched_counters,
            ordered_lanes,
            ordered_lanes_survive_crashes_suspension_and_replays,
            paused_endpoints_resume,
            filtered_deliveries_finish_without_failing,
            security_log,
            event_search,
            filtered_heads_advance_their_lanes,
            deliveries_claimed_at_insert
        );
    };
    (@each $harness:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() -> ::std::result::Result<(), $crate::store::StoreError> {
                let harness = $harness;
                $crate::store::contract::$name(&harness).await
            }
        )*
    };
}

/// Midnight UTC, so hour and day buckets start at `at(0)`.
const BASE_SECONDS: i64 = 1_699_920_000;

/// `BASE + seconds`.
pub fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(BASE_SECONDS + seconds).expect("test time in range")
}

/// An ingested event of namespace `ns` created at `at(seconds)`.
pub fn event(id: &str, event_type: &str, seconds: i64) -> NewEvent {
    NewEvent {
        event_id: id.to_owned(),
        namespace: "ns".to_owned(),
        event_type: event_type.to_owned(),
        data: Bytes::from(format!(r#"{{"id":"{id}","n":{seconds}}}"#)),
        created_at: at(seconds),
        source: EventSource::Ingest,
        idempotency_key: None,
        trace_parent: None,
    }
}

pub fn endpoint(name: &str) -> EndpointRef {
    EndpointRef::new("ns", name)
}

pub fn names(endpoints: &[&str]) -> Vec<String> {
    endpoints.iter().map(|name| (*name).to_owned()).collect()
}

/// Claims up to 1000 deliveries of any endpoint, lease 60 s.
pub fn claim_all(owner: &str, seconds: i64) -> ClaimRequest {
    ClaimRequest {
        now: at(seconds),
        limit: 1000,
        per_endpoint_limit: None,
        owner: owner.to_owned(),
        lease: Duration::from_secs(60),
        scope: ClaimScope::All,
    }
}

/// An attempt result.
pub fn result(
    delivery_id: DeliveryId,
    owner: &str,
    attempt: u32,
    seconds: i64,
    status: Option<u16>,
    latency_ms: u64,
    next: NextStep,
) -> AttemptResult {
    AttemptResult {
        delivery_id,
        owner: owner.to_owned(),
        record: AttemptRecord {
            at: at(seconds),
            attempt,
            status_code: status,
            latency_ms: Some(latency_ms),
            error: match status {
                Some(code) if (200..300).contains(&code) => None,
                Some(code) => Some(format!("HTTP {code}")),
                None => Some("connection refused".to_owned()),
            },
            response_snippet: status.map(|code| format!("body of {code}")),
        },
        next,
        pause_on_dead_letter: false,
    }
}

/// A filtered attempt, as the engine records one when the endpoint's transform drops the event:
/// no request, so no status, latency, error or response.
pub fn filtered(delivery_id: DeliveryId, owner: &str, attempt: u32, seconds: i64) -> AttemptResult {
    AttemptResult {
        delivery_id,
        owner: owner.to_owned(),
        record: AttemptRecord {
            at: at(seconds),
            attempt,
            status_code: None,
            latency_ms: None,
            error: None,
            response_snippet: None,
        },
        next: NextStep::Filtered,
        pause_on_dead_letter: false,
    }
}

/// Claims everything due at `seconds` as `owner` and finishes each with `next` (attempt 1).
pub async fn claim_and_finish(
    store: &dyn Store,
    owner: &str,
    seconds: i64,
    status: u16,
    next: NextStep,
) -> Result<Vec<ClaimedDelivery>> {
    let claimed = store.claim_due(claim_all(owner, seconds)).await?;
    for c in &claimed {
        let attempt = c.delivery.attempts + 1;
        store
            .record_attempt(result(
                c.delivery.id,
                owner,
                attempt,
                seconds,
                Some(status),
                100,
                next.clone(),
            ))
            .await?;
    }
    Ok(claimed)
}
