use crate::auth::acting_kommune;
use crate::convert::{criterion_from_proto, rating_to_proto, record_to_proto, state_from_proto};
use crate::error::{parse, status};
use crate::state::HubState;
use efa_proto::v1 as pb;
use efa_proto::v1::adoption_service_server::AdoptionService;
use efa_registry::model::ids::ServiceId;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct Adoption(pub Arc<HubState>);

#[tonic::async_trait]
impl AdoptionService for Adoption {
    async fn report_adoption(&self, req: Request<pb::AdoptionReport>) -> Result<Response<pb::AdoptionRecord>, Status> {
        let ags = acting_kommune(&self.0.auth.identify(&req)?)?;
        let r = req.into_inner();
        let service: ServiceId = parse(&r.service_id)?;
        let state = state_from_proto(r.state)?;
        // The hot write path of 11,000 nodes: its checks are a few cached point reads, so
        // they run here, and durability is awaited without a blocking-pool thread.
        let reg = &self.0.registry;
        let (record, event) =
            reg.report_adoption(&ags, &service, Some(r.version.as_str()), state, &r.reason).await.map_err(status)?;
        let name = reg.kommune(&ags).map_err(status)?.name;
        tracing::info!(ags = %record.latest.ags, service = %record.latest.service_id, state = %record.latest.state, "adoption reported");
        self.0.metrics.adoption_reports.inc();
        self.0.bus.publish(event);
        Ok(Response::new(record_to_proto(&record, &name)))
    }

    async fn submit_rating(&self, req: Request<pb::RatingRequest>) -> Result<Response<pb::RatingInfo>, Status> {
        let ags = acting_kommune(&self.0.auth.identify(&req)?)?;
        let r = req.into_inner();
        let service: ServiceId = parse(&r.service_id)?;
        let criteria = r
            .criteria
            .iter()
            .map(|c| Ok((criterion_from_proto(c.criterion)?, c.score)))
            .collect::<Result<Vec<_>, Status>>()?;
        let reg = &self.0.registry;
        let (rating, event) =
            reg.rate(&ags, &service, &r.version, r.stars, criteria, r.comment).await.map_err(status)?;
        let name = reg.kommune(&ags).map_err(status)?.name;
        tracing::info!(ags = %rating.ags, service = %rating.service_id, version = %rating.version, stars = rating.stars, "rating recorded");
        self.0.metrics.ratings.inc();
        self.0.bus.publish(event);
        Ok(Response::new(rating_to_proto(&rating, &name)))
    }
}
