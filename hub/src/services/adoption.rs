//! `AdoptionService`: adoption reports, ratings and pre-flight results, the hot write path
//! of 11,000 nodes.

use crate::error::status;
use crate::state::HubState;
use efa_domain::authz::acting_kommune;
use efa_domain::model::adoption::AdoptionReport;
use efa_domain::model::preflight::NewPreflight;
use efa_domain::model::rating::NewRating;
use efa_domain::model::routing::RoutingDeclaration;
use efa_proto::v1 as pb;
use efa_proto::v1::adoption_service_server::AdoptionService;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The `AdoptionService` implementation.
pub struct Adoption(pub Arc<HubState>);

#[tonic::async_trait]
impl AdoptionService for Adoption {
    async fn report_adoption(&self, req: Request<pb::AdoptionReport>) -> Result<Response<pb::AdoptionRecord>, Status> {
        let ags = acting_kommune(&self.0.auth.identify(&req)?).map_err(status)?;
        let report = AdoptionReport::try_from(req.into_inner()).map_err(status)?;
        // Its checks are a few cached point reads, so they run here, and durability is
        // awaited without a blocking-pool thread.
        let reg = &self.0.registry;
        let (record, event) = reg.report_adoption(&ags, report).await.map_err(status)?;
        let name = reg.kommune_name(&ags).map_err(status)?;
        tracing::info!(ags = %record.latest.ags, service = %record.latest.service_id, state = %record.latest.state, "adoption reported");
        self.0.metrics.adoption_reports.inc();
        let seq = event.seq;
        self.0.feed.publish(event);
        Ok(Response::new(pb::AdoptionRecord { event_seq: seq, ..efa_proto::convert::record(&record, &name) }))
    }

    async fn submit_rating(&self, req: Request<pb::RatingRequest>) -> Result<Response<pb::RatingInfo>, Status> {
        let ags = acting_kommune(&self.0.auth.identify(&req)?).map_err(status)?;
        let rating = NewRating::try_from(req.into_inner()).map_err(status)?;
        let reg = &self.0.registry;
        let (rating, event) = reg.rate(&ags, rating).await.map_err(status)?;
        let name = reg.kommune_name(&ags).map_err(status)?;
        tracing::info!(ags = %rating.ags, service = %rating.service_id, version = %rating.version, stars = rating.stars, "rating recorded");
        self.0.metrics.ratings.inc();
        self.0.feed.publish(event);
        Ok(Response::new(efa_proto::convert::rating(&rating, &name)))
    }

    async fn report_preflight(
        &self,
        req: Request<pb::PreflightReport>,
    ) -> Result<Response<pb::PreflightRecord>, Status> {
        let ags = acting_kommune(&self.0.auth.identify(&req)?).map_err(status)?;
        let report = NewPreflight::try_from(req.into_inner()).map_err(status)?;
        let reg = &self.0.registry;
        let record = reg.report_preflight(&ags, report).await.map_err(status)?;
        let name = reg.kommune_name(&ags).map_err(status)?;
        tracing::info!(ags = %record.ags, service = %record.service_id, version = %record.version, ready = record.is_ready(), "pre-flight reported");
        Ok(Response::new((&record, name.as_str()).into()))
    }

    async fn declare_routing(
        &self,
        req: Request<pb::RoutingDeclaration>,
    ) -> Result<Response<pb::RoutingDeclaration>, Status> {
        let ags = acting_kommune(&self.0.auth.identify(&req)?).map_err(status)?;
        let declaration = RoutingDeclaration::try_from(req.into_inner()).map_err(status)?;
        let record = self.0.registry.declare_routing(&ags, declaration).await.map_err(status)?;
        tracing::info!(ags = %record.ags, service = %record.service_id, destinations = record.destinations.len(), "routing declared");
        Ok(Response::new((&record).into()))
    }
}
