//! `SubscriptionService`: subscriptions and the event stream.

use crate::error::status;
use crate::events::watch;
use crate::state::HubState;
use efa_domain::authz::{acting_kommune, authorize, Action, Identity};
use efa_domain::model::ids::Ags;
use efa_domain::model::subscription::NewSubscription;
use efa_proto::convert::{parse, target};
use efa_proto::v1 as pb;
use efa_proto::v1::subscription_service_server::SubscriptionService;
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// Events buffered per stream before the hub waits on the reader.
const STREAM_BUFFER: usize = 64;

/// The `SubscriptionService` implementation.
pub struct Subscriptions(pub Arc<HubState>);

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

#[tonic::async_trait]
impl SubscriptionService for Subscriptions {
    async fn subscribe(&self, req: Request<pb::SubscribeRequest>) -> Result<Response<pb::SubscriptionInfo>, Status> {
        let ags = acting_kommune(&self.0.auth.identify(&req)?).map_err(status)?;
        let NewSubscription { target, channel, policy } = req.into_inner().try_into().map_err(status)?;
        let (sub, event) = self.0.registry(move |reg| reg.subscribe(&ags, target, channel, policy)).await?;
        tracing::info!(ags = %sub.ags, target = %sub.target, channel = %sub.channel, "subscribed");
        self.0.feed.publish(event);
        Ok(Response::new((&sub).into()))
    }

    async fn unsubscribe(
        &self,
        req: Request<pb::UnsubscribeRequest>,
    ) -> Result<Response<pb::UnsubscribeResponse>, Status> {
        let ags = acting_kommune(&self.0.auth.identify(&req)?).map_err(status)?;
        let target = target(req.into_inner().target).map_err(status)?;
        let removed = self.0.registry(move |reg| reg.unsubscribe(&ags, &target)).await?;
        Ok(Response::new(pb::UnsubscribeResponse { removed }))
    }

    async fn list_subscriptions(
        &self,
        req: Request<pb::ListSubscriptionsRequest>,
    ) -> Result<Response<pb::ListSubscriptionsResponse>, Status> {
        let who = self.0.auth.identify(&req)?;
        let r = req.into_inner();
        // An empty AGS means the calling Kommune itself.
        let ags: Ags = match (&who, r.ags.is_empty()) {
            (Identity::Kommune(me), true) => me.clone(),
            _ => parse(&r.ags).map_err(status)?,
        };
        authorize(&who, Action::ReadSubscriptions { ags: &ags }).map_err(status)?;
        let subs = self.0.registry(move |reg| reg.subscriptions(&ags)).await?;
        Ok(Response::new(pb::ListSubscriptionsResponse { subscriptions: subs.iter().map(Into::into).collect() }))
    }

    type WatchEventsStream = EventStream;

    async fn watch_events(&self, req: Request<pb::WatchEventsRequest>) -> Result<Response<EventStream>, Status> {
        let ags = acting_kommune(&self.0.auth.identify(&req)?).map_err(status)?;
        let after = req.into_inner().after_seq;
        let (head, oldest) = self.0.registry(|r| Ok((r.head_seq()?, r.oldest_seq()?))).await?;
        if after > head {
            return Err(Status::out_of_range(format!(
                "cursor {after} is ahead of the hub's event log (head {head}); the hub lost state or this is another hub — resync with a full reconcile and cursor 0"
            )));
        }
        // `after <= head < u64::MAX` here, so `after + 1` cannot overflow.
        if let Some(oldest) = oldest.filter(|&oldest| after + 1 < oldest) {
            let mut status = Status::failed_precondition(format!(
                "resync needed: events {}..{} were removed by the hub's retention; reconcile from the catalog (ListReleases) and resume from seq {head}",
                after + 1,
                oldest - 1
            ));
            if let Ok(v) = head.to_string().parse() {
                status.metadata_mut().insert(efa_proto::RESYNC_HEAD_METADATA, v);
            }
            return Err(status);
        }
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_BUFFER);
        tracing::debug!(%ags, after, "event stream opened");
        tokio::spawn(watch(self.0.feed.clone(), ags, after, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
