//! The offering Land's side: sign an offer of a service another Land built (Nachnutzung),
//! or its withdrawal, and hand it to the hub.

use super::PublishError;
use efa_domain::model::ids::{Ags, Channel, LandCode, ServiceId};
use efa_domain::model::offer::{Offer, OFFER_FORMAT};
use efa_domain::params::{ParamValue, ParameterKind};
use efa_domain::signing::SigningKey;
use efa_proto::convert::WireEnum;
use efa_proto::v1 as pb;
use efa_proto::v1::catalog_service_client::CatalogServiceClient;
use std::collections::BTreeMap;
use tonic::transport::Channel as GrpcChannel;

/// What a Land offers.
pub struct OfferSpec {
    /// The service, built by another Land.
    pub service_id: ServiceId,
    /// The channel offered.
    pub channel: Channel,
    /// The first version offered.
    pub from_version: String,
    /// `NAME=VALUE` pairs for parameters of the service's schema, typed by the schema.
    pub land_parameters: Vec<(String, String)>,
    /// The Kommunen it is meant for; empty: all of the Land's.
    pub kommunen: Vec<Ags>,
    /// `Some(reason)` withdraws the offer.
    pub withdrawn: Option<String>,
}

/// Signs `spec` as Land `land` with `key` and publishes it.
pub async fn publish_offer(
    channel: GrpcChannel,
    land: &LandCode,
    key: &SigningKey,
    spec: OfferSpec,
) -> Result<pb::OfferInfo, PublishError> {
    let mut catalog = CatalogServiceClient::new(channel);
    let service = catalog.get_service(pb::GetServiceRequest { id: spec.service_id.to_string() }).await?.into_inner();
    let mut land_parameters = BTreeMap::new();
    for (name, raw) in spec.land_parameters {
        let kind =
            service.parameters.iter().find(|p| p.name == name).and_then(|p| ParameterKind::from_wire(p.kind).ok());
        land_parameters.insert(name, typed(kind, &raw));
    }
    let offer = Offer {
        format: OFFER_FORMAT,
        land: land.clone(),
        service_id: spec.service_id,
        channel: spec.channel,
        from_version: spec.from_version,
        land_parameters,
        kommunen: spec.kommunen,
        issued_at_ms: efa_domain::now_ms(),
        withdrawn: spec.withdrawn,
    };
    // Checked here too, so a mistake is named before anything is signed or sent.
    let bytes = offer.to_bytes();
    Offer::from_bytes(&bytes)?;
    let signature = key.sign(&bytes);
    Ok(catalog.publish_offer(pb::SignedOffer { offer: bytes, signature }).await?.into_inner())
}

/// A command-line value as the schema types it (unknown names stay text; the hub names them).
fn typed(kind: Option<ParameterKind>, raw: &str) -> ParamValue {
    match kind {
        Some(ParameterKind::Integer | ParameterKind::AmountCents) => {
            raw.trim().parse().map(ParamValue::Integer).unwrap_or_else(|_| ParamValue::Text(raw.into()))
        }
        Some(ParameterKind::Boolean) => {
            raw.trim().parse().map(ParamValue::Bool).unwrap_or_else(|_| ParamValue::Text(raw.into()))
        }
        Some(ParameterKind::Postcodes) => ParamValue::List(raw.split(',').map(|c| c.trim().to_string()).collect()),
        _ => ParamValue::Text(raw.into()),
    }
}
