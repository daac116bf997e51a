//! Deliveries created claimed ([`EnqueueRequest::claim`]): InFlight under the caller's lease from
//! the insert on, read back exactly as a claim would return them, and recovered like any claim.
use std::collections::BTreeSet;

use super::{at, claim_all, endpoint, event, names, result, Harness};
use crate::store::{ClaimOnInsert, DeliveryState, EnqueueRequest, NextStep, RecordOutcome, Result};

/// An enqueue of `id` to `endpoints`, claiming `claim` at insert as `w1` (lease until `at(60)`),
/// with endpoint `o` ordered.
fn request(id: &str, endpoints: &[&str], claim: &[&str]) -> EnqueueRequest {
    let mut request = EnqueueRequest::unordered(event(id, "user.created", 0), names(endpoints));
    request.lanes.insert("o".into(), "lane".into());
    request.claim = Some(ClaimOnInsert {
        owner: "w1".into(),
        lease_expires_at: at(60),
        endpoints: claim.iter().map(|name| (*name).to_owned()).collect(),
    });
    request
}

/// Only the named deliveries that would be Pending are claimed (not an ordered one, not a held
/// endpoint's, not a duplicate's); a claim and a recovery treat them as claimed ones.
pub async fn deliveries_claimed_at_insert<H: Harness>(harness: &H) -> Result<()> {
    let store = harness.open().await?;
    store.hold_endpoint(endpoint("h"), at(0)).await?;
    let mut outcomes = store
        .enqueue_batch(vec![request(
            "evt_1",
            &["a", "b", "h", "o", "c"],
            &["a", "b", "h", "o"],
        )])
        .await?;
    let outcome = outcomes.pop().expect("one outcome");
    assert_eq!(outcome.deliveries.len(), 5);
    let claimed: BTreeSet<&str> = outcome
        .claimed
        .iter()
        .map(|c| c.delivery.endpoint.name.as_str())
        .collect();
    assert_eq!(
        claimed,
        BTreeSet::from(["a", "b"]),
        "only unordered deliveries of endpoints not held are claimed at insert"
    );

    // What the insert returns is what the store holds (and what a claim would have read).
    let status = store.event_status("evt_1").await?.expect("stored");
    for claimed in &outcome.claimed {
        let stored = status
            .deliveries
            .iter()
            .find(|d| d.id == claimed.delivery.id)
            .expect("the claimed delivery is stored");
        assert_eq!(&claimed.delivery, stored);
        assert_eq!(claimed.delivery.state, DeliveryState::InFlight);
        assert_eq!(claimed.event, status.event);
        assert_eq!(claimed.lease_expires_at, at(60));
    }
    let state_of = |name: &str| {
        status
            .deliveries
            .iter()
            .find(|d| d.endpoint.name == name)
            .map(|d| d.state)
    };
    assert_eq!(state_of("h"), Some(DeliveryState::Held));
    assert_eq!(state_of("o"), Some(DeliveryState::Pending));
    assert_eq!(state_of("c"), Some(DeliveryState::Pending));

    let taken: BTreeSet<String> = store
        .claim_due(claim_all("w2", 1))
        .await?
        .into_iter()
        .map(|c| c.delivery.endpoint.name)
        .collect();
    assert_eq!(
        taken,
        BTreeSet::from(["c".to_owned(), "o".to_owned()]),
        "deliveries claimed at insert are not claimed again"
    );

    // The lease is the inserter's: its result applies, another claimer's does not.
    let id_of = |name: &str| {
        outcome
            .claimed
            .iter()
            .find(|c| c.delivery.endpoint.name == name)
            .map(|c| c.delivery.id)
            .expect("claimed")
    };
    let (a, b) = (id_of("a"), id_of("b"));
    assert_eq!(
        store
            .record_attempt(result(a, "w1", 1, 1, Some(200), 5, NextStep::Delivered))
            .await?,
        RecordOutcome::Applied
    );
    assert_eq!(
        store
            .record_attempt(result(b, "w2", 1, 1, Some(200), 5, NextStep::Delivered))
            .await?,
        RecordOutcome::LeaseLost
    );

    // A duplicate creates and claims nothing.
    let again = store
        .enqueue_batch(vec![request("evt_1", &["a", "b"], &["a", "b"])])
        .await?;
    assert!(again[0].duplicate);
    assert!(again[0].claimed.is_empty());

    // A crash of the inserter: its claim is recovered like any other.
    assert_eq!(store.recover_in_flight(Some("w1".into()), at(2)).await?, 1);
    let recovered = store.claim_due(claim_all("w3", 3)).await?;
    assert_eq!(recovered.len(), 1);
    assert_eq!(recovered[0].delivery.id, b);
    Ok(())
}
