//! The hub's background jobs. Replicas sharing a store run each on one replica at a time,
//! under a lease another takes over when the holder dies: blob garbage collection, the
//! rollout controller and event retention.

use crate::blobs::BlobStore;
use crate::events::Feed;
use crate::server::HubConfig;
use efa_domain::model::event::EventKind;
use efa_registry::Registry;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Whether `"service version"` names a committed release.
pub(crate) fn committed(registry: &Registry, release: &str) -> bool {
    let Some((service, version)) = release.trim().split_once(' ') else { return false };
    service.parse().is_ok_and(|id| registry.release(&id, version).is_ok())
}

/// Collects blob garbage every `interval` (see [`BlobStore::collect_garbage`]).
pub(crate) fn spawn_blob_gc(
    jobs: &TaskTracker,
    registry: Arc<Registry>,
    blobs: BlobStore,
    config: &HubConfig,
    replica: String,
    shutdown: CancellationToken,
) {
    let (interval, grace) = (config.blob_gc_interval, config.blob_gc_grace);
    jobs.spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.tick().await; // not at start: recovery just ran
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if !holds_lease(&registry, "blob-gc", &replica, interval * 3).await {
                continue;
            }
            let (r, b) = (registry.clone(), blobs.clone());
            let run = tokio::task::spawn_blocking(move || {
                // A failed lookup keeps the blob: removing content is the one mistake to avoid.
                b.collect_garbage(grace, |d| r.blob_referenced(d).unwrap_or(true), |rel| committed(&r, rel))
            });
            match run.await {
                Ok(Ok(report)) if report != Default::default() => tracing::info!(?report, "blob garbage collected"),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "blob garbage collection failed"),
                Err(e) => tracing::error!(error = %e, "blob garbage collection task failed"),
            }
        }
    });
}

/// Whether this replica holds (or now takes) the lease on `job`: replicas sharing a store
/// run such jobs one at a time, and another takes over when the holder dies.
pub(crate) async fn holds_lease(registry: &Arc<Registry>, job: &'static str, replica: &str, ttl: Duration) -> bool {
    let (r, holder) = (registry.clone(), replica.to_string());
    match tokio::task::spawn_blocking(move || r.take_lease(job, &holder, ttl)).await {
        Ok(Ok(held)) => held,
        Ok(Err(e)) => {
            tracing::warn!(job, error = %e, "cannot take the job's lease; skipping this round");
            false
        }
        Err(e) => {
            tracing::warn!(job, error = %e, "lease task failed; skipping this round");
            false
        }
    }
}

/// The rollout controller: on one replica at a time, every `every`, the open ring
/// of every running rollout is judged by its gates; a ring that passes opens the next one,
/// a broken gate halts the rollout, an overdue ring pauses it. Each move is an event.
pub(crate) fn spawn_rollout_controller(
    jobs: &TaskTracker,
    feed: Arc<Feed>,
    every: Duration,
    replica: String,
    shutdown: CancellationToken,
) {
    jobs.spawn(async move {
        let mut tick = tokio::time::interval(every);
        // Reports and ratings wake it early (a report on this replica; others' reach it at
        // the next tick), so a pilot ring's verdict follows its last report closely.
        let mut bus = feed.bus.subscribe();
        let mut ctl = Some(efa_registry::RolloutController::default());
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
                got = bus.recv() => match got {
                    Ok(e) if matches!(e.kind, EventKind::AdoptionReported(_) | EventKind::Rated(_)) => {
                        // Let a burst of reports settle into one round.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        while bus.try_recv().is_ok() {}
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
            }
            if !holds_lease(&feed.registry, "rollout-controller", &replica, every * 3).await {
                // Another replica judges; counts kept here would go stale.
                ctl = Some(Default::default());
                continue;
            }
            let r = feed.registry.clone();
            let Some(mut c) = ctl.take() else { continue };
            let round = tokio::task::spawn_blocking(move || {
                let moved = r.controller_round(&mut c, efa_domain::now_ms());
                (c, moved)
            });
            match round.await {
                Ok((c, Ok(events))) => {
                    ctl = Some(c);
                    for event in events {
                        tracing::info!(seq = event.seq, kind = ?event.kind, "rollout moved");
                        feed.publish(event);
                    }
                }
                Ok((_, Err(e))) => {
                    ctl = Some(Default::default());
                    tracing::warn!(error = %e, "the rollout controller could not read the rollouts");
                }
                Err(e) => {
                    ctl = Some(Default::default());
                    tracing::error!(error = %e, "the rollout controller's round failed");
                }
            }
        }
    });
}

/// Trims the event log to the newest `keep` events once a minute.
pub(crate) fn spawn_retention(
    jobs: &TaskTracker,
    registry: Arc<Registry>,
    keep: u64,
    replica: String,
    shutdown: CancellationToken,
) {
    jobs.spawn(async move {
        let every = Duration::from_secs(60);
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if !holds_lease(&registry, "event-retention", &replica, every * 3).await {
                continue;
            }
            let r = registry.clone();
            match tokio::task::spawn_blocking(move || r.trim_events_keep(keep)).await {
                Ok(Err(e)) => tracing::error!(error = %e, "event log trimming failed"),
                Err(e) => tracing::error!(error = %e, "event log trimming task failed"),
                Ok(Ok(_)) => {}
            }
        }
    });
}
