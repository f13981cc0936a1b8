//! Fan-out of new events to the live `WatchEvents` streams.
//!
//! The event log in the store is the source of truth; the broadcast channel only wakes
//! streams up early. A stream first subscribes to the broadcast, then catches up from the
//! log after its cursor, then follows the broadcast. Whenever it sees a gap (it lagged, or
//! two writers committed out of broadcast order) it reads the log again. So every relevant
//! event is delivered exactly once and in order, whatever the timing.

use crate::metrics::HubMetrics;
use efa_domain::model::event::{Event, EventKind};
use efa_domain::model::ids::{Ags, Channel, LandCode};
use efa_domain::model::offer::Offer;
use efa_domain::model::rollout::Transition;
use efa_domain::model::subscription::{in_reach, Subscription};
use efa_proto::v1 as pb;
use efa_registry::Registry;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tonic::Status;

/// Events read from the log per catch-up step.
const CATCH_UP_BATCH: usize = 512;
/// Default for how long a subscriber may leave its stream unread before the hub drops it.
/// It resumes from its cursor when it reconnects, so nothing is lost; the hub just won't
/// buffer for it.
pub const SLOW_SUBSCRIBER_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Arc<Event>>,
    /// Release events resolved to what streams send, by seq: with thousands of streams,
    /// one store read per event instead of one per stream and event. A cell per seq, so
    /// the streams that receive an event together wait for one read instead of each
    /// missing the cache and reading (on PostgreSQL, thousands of round trips at once).
    resolved: Arc<std::sync::Mutex<std::collections::HashMap<u64, ResolvedCell>>>,
}

type ResolvedCell = Arc<tokio::sync::OnceCell<Arc<Resolved>>>;

/// A release event as streams need it: the service's Themenfeld (for matching) and the
/// release as sent on the wire.
pub struct Resolved {
    /// The service's Themenfeld, for Themenfeld subscriptions.
    pub themenfeld: String,
    /// The building Land and the active offers: a Themenfeld subscription follows a service
    /// only if one of them brings it to the Kommune.
    pub builder: LandCode,
    /// Active offers of the service.
    pub offers: Vec<Offer>,
    /// The release's channel.
    pub channel: Channel,
    /// The release as streams send it.
    pub info: pb::ReleaseInfo,
    /// Its rollouts (the building Land's, `None`, and offering Länder's own): each Kommune
    /// is told where it stands in the one it follows.
    pub rollouts: Vec<(Option<LandCode>, efa_domain::model::rollout::Rollout)>,
}

impl Resolved {
    /// The rollout Kommune `ags` follows: its own Land's plan, else the building Land's;
    /// with whose plan it is.
    fn rollout_for(&self, ags: &Ags) -> Option<(Option<&LandCode>, &efa_domain::model::rollout::Rollout)> {
        let own = ags.land();
        self.rollouts
            .iter()
            .find(|(l, _)| l.as_ref() == Some(&own))
            .or_else(|| self.rollouts.iter().find(|(l, _)| l.is_none()))
            .map(|(l, r)| (l.as_ref(), r))
    }
}

/// Resolved events kept; older ones are read from the store again when a stream needs them.
const RESOLVED_CACHE: usize = 1024;

impl EventBus {
    pub fn new(capacity: usize) -> Self {
        EventBus { tx: broadcast::channel(capacity).0, resolved: Default::default() }
    }

    /// The cell holding event `seq` resolved, shared by every stream that needs it.
    fn resolved_cell(&self, seq: u64) -> ResolvedCell {
        let Ok(mut cache) = self.resolved.lock() else { return Default::default() };
        if cache.len() >= RESOLVED_CACHE && !cache.contains_key(&seq) {
            cache.clear();
        }
        cache.entry(seq).or_default().clone()
    }

    /// Announces a committed event.
    pub fn publish(&self, event: Event) {
        // A yank changes how earlier release events resolve (their `yanked` flag), an offer
        // whom they reach.
        if matches!(
            event.kind,
            EventKind::ReleaseYanked { .. }
                | EventKind::Offered { .. }
                | EventKind::RolloutChanged { .. }
                | EventKind::LandRolloutChanged { .. }
        ) {
            if let Ok(mut cache) = self.resolved.lock() {
                cache.clear();
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = self.tx.send(Arc::new(event));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    pub fn watchers(&self) -> usize {
        self.tx.receiver_count()
    }
}

/// What the event streams need of the hub: the log, the wake-up bus, metrics, shutdown.
pub struct Feed {
    /// The store's event log is the source of truth.
    pub registry: Arc<Registry>,
    /// Wakes streams up early.
    pub bus: EventBus,
    /// Delivery lag and dropped streams.
    pub metrics: Arc<HubMetrics>,
    /// Streams end when it is cancelled.
    pub shutdown: CancellationToken,
    /// How long a subscriber may leave its stream unread before it is dropped.
    pub slow_subscriber_timeout: Duration,
    /// With a store shared by several replicas, `None` with an embedded store: how often
    /// [`follow_log`](Self::follow_log) reads the log even without a wake-up.
    pub poll_interval: Option<Duration>,
    /// Wakes [`follow_log`](Self::follow_log): this replica committed an event, or another
    /// one did (PostgreSQL NOTIFY). A wake-up while it reads is kept for its next round.
    pub wake: tokio::sync::Notify,
}

impl Feed {
    /// Announces a committed event to every stream. With a shared store, events reach the
    /// bus only through [`follow_log`](Self::follow_log), in seq order with those of the
    /// other replicas; this one is committed, so it just wakes it.
    pub fn publish(&self, event: Event) {
        if self.poll_interval.is_some() {
            self.wake.notify_one();
        } else {
            self.bus.publish(event)
        }
    }

    /// With a store several replicas share: the one reader of the log for this replica's
    /// streams. Woken by a commit here or a notification from another replica (and every
    /// `poll_interval` in case one was lost), it reads what was committed after the last
    /// event it saw and puts it on the bus in seq order. So a release reaches thousands of
    /// streams with one read of the database, not one per stream.
    pub async fn follow_log(self: Arc<Self>) {
        let every = self.poll_interval.unwrap_or(Duration::from_secs(5));
        let mut head = match self.registry(|r| r.head_seq()).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e.message(), "cannot read the log's head; following from the start");
                0
            }
        };
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(every) => {}
            }
            loop {
                let after = head;
                match self.registry(move |r| r.events_after(after, CATCH_UP_BATCH)).await {
                    Ok(batch) if batch.is_empty() => break,
                    Ok(batch) => {
                        for event in batch {
                            head = event.seq;
                            self.bus.publish(event);
                        }
                    }
                    Err(e) => {
                        // The database is away: streams keep their cursors; try again later.
                        tracing::warn!(error = %e.message(), "cannot read the event log; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        break;
                    }
                }
            }
        }
    }

    async fn registry<T, F>(&self, f: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&Registry) -> efa_registry::Result<T> + Send + 'static,
    {
        crate::blocking::registry(&self.registry, f).await
    }
}

/// Feeds one Kommune's stream until the client leaves, is too slow, or the hub stops.
pub async fn watch(state: Arc<Feed>, ags: Ags, mut cursor: u64, out: mpsc::Sender<Result<pb::Event, Status>>) {
    let mut live = state.bus.subscribe();
    let mut subs = match load_subs(&state, &ags).await {
        Ok(s) => s,
        Err(e) => {
            let _ = out.send(Err(e)).await;
            return;
        }
    };
    let result: Result<(), Status> = async {
        loop {
            // Catch up from the log until it has nothing after the cursor.
            loop {
                let after = cursor;
                let batch = state.registry(move |r| r.events_after(after, CATCH_UP_BATCH)).await?;
                if batch.is_empty() {
                    break;
                }
                for event in batch {
                    cursor = event.seq;
                    if !deliver(&state, &ags, &mut subs, &event, &out).await? {
                        return Ok(());
                    }
                }
            }
            if !send(&state, &out, caught_up(cursor)).await {
                return Ok(());
            }
            // Follow the broadcast until a gap forces another catch-up.
            loop {
                tokio::select! {
                    _ = state.shutdown.cancelled() => {
                        let _ = out.send(Err(Status::unavailable("hub is shutting down; reconnect and resume from your cursor"))).await;
                        return Ok(());
                    }
                    _ = out.closed() => return Ok(()),
                    msg = live.recv() => match msg {
                        Ok(event) if event.seq <= cursor => continue,
                        Ok(event) if Some(event.seq) == cursor.checked_add(1) => {
                            cursor = event.seq;
                            if !deliver(&state, &ags, &mut subs, &event, &out).await? {
                                return Ok(());
                            }
                        }
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => break,
                        Err(broadcast::error::RecvError::Closed) => return Ok(()),
                    }
                }
            }
        }
    }
    .await;
    if let Err(status) = result {
        let _ = out.send(Err(status)).await;
    }
}

async fn load_subs(state: &Feed, ags: &Ags) -> Result<Vec<Subscription>, Status> {
    let ags = ags.clone();
    state.registry(move |r| r.subscriptions(&ags)).await
}

fn caught_up(head: u64) -> pb::Event {
    pb::Event {
        seq: head,
        at_ms: efa_domain::now_ms(),
        kind: Some(pb::event::Kind::CaughtUp(pb::CaughtUp { head_seq: head })),
    }
}

/// Sends with a bound on how long a slow reader can hold the hub up. False: stop.
async fn send(state: &Feed, out: &mpsc::Sender<Result<pb::Event, Status>>, event: pb::Event) -> bool {
    let committed_at_ms = event.at_ms;
    // A stream with room takes the event at once; only a full one waits, with a timer.
    // (Fanning one release out to 50,000 streams, a timer armed and cancelled per stream
    // was CPU spent for nothing.)
    let sent = match out.try_send(Ok(event)) {
        Ok(()) => Ok(()),
        Err(mpsc::error::TrySendError::Closed(_)) => return false,
        Err(mpsc::error::TrySendError::Full(event)) => out.send_timeout(event, state.slow_subscriber_timeout).await,
    };
    match sent {
        Ok(()) => {
            let lag_ms = efa_domain::now_ms().saturating_sub(committed_at_ms).max(0);
            state.metrics.event_delivery_seconds.observe(lag_ms as f64 / 1000.0);
            true
        }
        Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
            tracing::warn!("dropping a subscriber that stopped reading; it will resume from its cursor");
            state.metrics.streams_dropped_slow.inc();
            false
        }
        Err(mpsc::error::SendTimeoutError::Closed(_)) => false,
    }
}

/// Forwards `event` if it concerns this Kommune. Returns false when the stream should end.
async fn deliver(
    state: &Arc<Feed>,
    ags: &Ags,
    subs: &mut Vec<Subscription>,
    event: &Event,
    out: &mpsc::Sender<Result<pb::Event, Status>>,
) -> Result<bool, Status> {
    match &event.kind {
        EventKind::Subscribed(s) if &s.ags == ags => *subs = load_subs(state, ags).await?,
        EventKind::Unsubscribed { ags: who, .. } if who == ags => *subs = load_subs(state, ags).await?,
        EventKind::ReleasePublished { service_id, version }
        | EventKind::ReleaseYanked { service_id, version, .. }
        | EventKind::RolloutChanged { service_id, version, .. }
        | EventKind::LandRolloutChanged { service_id, version, .. } => {
            if subs.is_empty() {
                return Ok(true);
            }
            let cell = state.bus.resolved_cell(event.seq);
            let resolved = cell
                .get_or_try_init(|| async {
                    let (sid, v) = (service_id.clone(), version.to_string());
                    let (service, release, offers, rollouts) = state
                        .registry(move |r| {
                            let release = r.release(&sid, &v)?;
                            let rollouts = r.release_rollouts(&sid, &release.version)?;
                            Ok((r.service(&sid)?, release, r.offers(&sid)?, rollouts))
                        })
                        .await?;
                    Ok::<_, Status>(Arc::new(Resolved {
                        themenfeld: service.themenfeld,
                        builder: service.land,
                        offers: offers.into_iter().filter(|o| o.is_active()).collect(),
                        channel: release.channel.clone(),
                        info: (&release.summary()).into(),
                        rollouts,
                    }))
                })
                .await?
                .clone();
            let followed = resolved.rollout_for(ags);
            let position = followed.map(|(_, r)| r.position(ags, service_id, version));
            // A rollout's move concerns the Kommunen that follow that plan: those of the ring
            // that opened (they may now deploy) and, when it pauses, halts or resumes, every
            // Kommune of an open ring.
            let moved = match &event.kind {
                EventKind::RolloutChanged { transition, .. } => Some((None, transition)),
                EventKind::LandRolloutChanged { land, transition, .. } => Some((Some(land), transition)),
                _ => None,
            };
            if let Some((whose, transition)) = moved {
                let concerned = match (followed, &position) {
                    (Some((plan, r)), Some(p)) if plan == whose => match transition {
                        Transition::Opened { ring, .. } => p.ring == *ring,
                        Transition::Started => false,
                        _ => p.ring <= r.open,
                    },
                    _ => false,
                };
                if !concerned {
                    return Ok(true);
                }
            }
            let reach = in_reach(ags, &resolved.builder, &resolved.offers);
            if subs.iter().any(|s| s.matches(service_id, &resolved.themenfeld, &resolved.channel, reach)) {
                let mut info = resolved.info.clone();
                info.rollout = position.as_ref().map(Into::into);
                let kind = if matches!(event.kind, EventKind::ReleaseYanked { .. }) {
                    pb::event::Kind::ReleaseYanked(info)
                } else {
                    pb::event::Kind::ReleasePublished(info)
                };
                let event = pb::Event { seq: event.seq, at_ms: event.at_ms, kind: Some(kind) };
                return Ok(send(state, out, event).await);
            }
        }
        // A new offer to this Kommune brings the newest release it covers, as if just
        // published: a Themenfeld subscriber learns of a service built elsewhere.
        EventKind::Offered { service_id, land, withdrawn: false } if land == &ags.land() && !subs.is_empty() => {
            let (sid, me) = (service_id.clone(), ags.clone());
            let offered = state
                .registry(move |r| {
                    let service = r.service(&sid)?;
                    let Some(offer) = r.offers(&sid)?.into_iter().find(|o| o.land == me.land()) else {
                        return Ok(None);
                    };
                    let newest = r
                        .releases(&sid, Some(&offer.channel))?
                        .into_iter()
                        .find(|rel| rel.yank.is_none() && offer.covers(&me, &rel.channel, &rel.version).is_ok());
                    Ok(newest.map(|rel| (service, offer, rel)))
                })
                .await?;
            if let Some((service, offer, release)) = offered {
                let reach = in_reach(ags, &service.land, std::slice::from_ref(&offer));
                if subs.iter().any(|s| s.matches(service_id, &service.themenfeld, &release.channel, reach)) {
                    let info = (&release.summary()).into();
                    let kind = Some(pb::event::Kind::ReleasePublished(info));
                    return Ok(send(state, out, pb::Event { seq: event.seq, at_ms: event.at_ms, kind }).await);
                }
            }
        }
        _ => {}
    }
    Ok(true)
}
