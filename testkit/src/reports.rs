//! Report reads over gRPC, for a hub in this process or in another one alike.

use efa_proto::v1 as pb;
use efa_proto::v1::report_service_client::ReportServiceClient;
use tonic::transport::Channel;

/// The adoption records of a service (the caller's certificate decides what it may see).
pub async fn adopters(channel: Channel, service: &str) -> Vec<pb::AdoptionRecord> {
    ReportServiceClient::new(channel)
        .service_adopters(pb::ServiceAdoptersRequest { service_id: service.into() })
        .await
        .expect("adopters report")
        .into_inner()
        .adopters
}

/// The adoption history of a Kommune, oldest first.
pub async fn history(channel: Channel, ags: &str) -> Vec<pb::AdoptionRecord> {
    ReportServiceClient::new(channel)
        .kommune_history(pb::KommuneHistoryRequest { ags: ags.into() })
        .await
        .expect("kommune history")
        .into_inner()
        .history
}

/// The state of an adoption record (`Unspecified` for an unknown value).
pub fn state(r: &pb::AdoptionRecord) -> pb::AdoptionState {
    pb::AdoptionState::try_from(r.state).unwrap_or(pb::AdoptionState::Unspecified)
}
