//! WebhookReplays: each runs once (the store requeues what matches) and its status follows its
//! progress until complete. Status documents are built in [`crate::dispatcher::status::replay`].
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use jiff::Timestamp;
use kube::runtime::watcher;
use kube::ResourceExt;
use tracing::{info, warn};

use crate::api::replay::{ReplayOutcome, ReplayPhase};
use crate::api::validation::validate_replay;
use crate::api::WebhookReplay;
use crate::dispatcher::status::apply::apply_status;
use crate::dispatcher::status::replay::{invalid_replay_status, replay_progress_status};
use crate::dispatcher::Shared;
use crate::store::{EndpointRef, FinalOutcome, ReplayFilter, ReplayRequest};

/// A running replay: its namespace, name and generation (what its conditions describe).
type ActiveReplay = (String, String, Option<i64>);
/// Running replays by UID.
type ActiveReplays = Arc<Mutex<HashMap<String, ActiveReplay>>>;

/// Runs each WebhookReplay once and reports its progress until complete.
pub async fn watch_replays(
    shared: Arc<Shared>,
    replays: impl Stream<Item = Result<WebhookReplay, watcher::Error>>,
) {
    let active: ActiveReplays = Arc::default();
    let progress = tokio::spawn(report_replays(shared.clone(), active.clone()));
    let mut replays = std::pin::pin!(replays);
    while let Some(item) = replays.next().await {
        let Ok(replay) = item else { continue };
        let complete = replay.status.as_ref().and_then(|s| s.phase) == Some(ReplayPhase::Complete);
        let uid = replay.uid().unwrap_or_default();
        if complete || active.lock().map(|a| a.contains_key(&uid)).unwrap_or(true) {
            continue;
        }
        let namespace = replay.namespace().unwrap_or_default();
        let name = replay.name_any();
        let (from, to) = match validate_replay(&replay.spec) {
            Ok(range) => range,
            Err(errors) => {
                let status = invalid_replay_status(
                    &errors.to_string(),
                    replay.metadata.generation,
                    Timestamp::now(),
                );
                let written =
                    apply_status::<WebhookReplay>(&shared.client, &namespace, &name, &status).await;
                if let Err(error) = written {
                    warn!(%error, replay = %name, "reporting an invalid WebhookReplay failed");
                }
                continue;
            }
        };
        let filter = ReplayFilter {
            endpoint: EndpointRef::new(&namespace, &replay.spec.endpoint_ref.name),
            from,
            to: to.unwrap_or_else(Timestamp::now),
            event_types: replay.spec.event_types.clone(),
            outcomes: replay
                .spec
                .outcomes
                .iter()
                .map(|o| match o {
                    ReplayOutcome::DeadLettered => FinalOutcome::DeadLettered,
                    ReplayOutcome::Delivered => FinalOutcome::Delivered,
                })
                .collect(),
        };
        match shared
            .store
            .replay(ReplayRequest {
                replay_id: uid.clone(),
                filter,
                now: Timestamp::now(),
            })
            .await
        {
            Ok(result) => {
                info!(replay = %name, matched = result.matched, requeued = result.requeued, first_run = result.first_run, "replay started");
                shared.wake.notify_one();
                if let Ok(mut a) = active.lock() {
                    a.insert(uid, (namespace, name, replay.metadata.generation));
                }
            }
            Err(error) => warn!(%error, replay = %name, "starting a replay failed"),
        }
    }
    progress.abort();
}

async fn report_replays(shared: Arc<Shared>, active: ActiveReplays) {
    loop {
        tokio::time::sleep(Duration::from_secs(
            shared.config.status_interval_seconds.max(1),
        ))
        .await;
        let current: Vec<(String, ActiveReplay)> = active
            .lock()
            .map(|a| a.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        for (uid, (namespace, name, generation)) in current {
            let Ok(Some(progress)) = shared.store.replay_progress(&uid).await else {
                continue;
            };
            let status = replay_progress_status(&progress, generation, Timestamp::now());
            let done = status.phase == Some(ReplayPhase::Complete);
            match apply_status::<WebhookReplay>(&shared.client, &namespace, &name, &status).await {
                Ok(_) if done => {
                    if let Ok(mut a) = active.lock() {
                        a.remove(&uid);
                    }
                }
                Ok(_) => {}
                Err(error) => warn!(%error, replay = %name, "writing replay status failed"),
            }
        }
    }
}
