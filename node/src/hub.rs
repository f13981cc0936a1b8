//! The node's network edge: the only module with tonic clients and wire (`pb`) types. Every
//! call returns domain values, converted through the one mapping in `efa_proto::convert`
//! (in the spirit of tough's `Transport`), so the rest of the node reasons about releases,
//! not messages.

use efa_domain::bundle::Digest;
use efa_domain::model::adoption::AdoptionReport;
use efa_domain::model::catalog::CatalogEntry;
use efa_domain::model::event::StreamEvent;
use efa_domain::model::ids::{Ags, Channel, LandCode, ServiceId};
use efa_domain::model::offer::SignedOffer;
use efa_domain::model::preflight::NewPreflight;
use efa_domain::model::rating::{NewRating, Rating};
use efa_domain::model::release::{ReleaseSummary, SignedRelease};
use efa_domain::model::routing::RoutingDeclaration;
use efa_domain::model::subscription::NewSubscription;
use efa_proto::v1 as pb;
use efa_proto::v1::adoption_service_client::AdoptionServiceClient;
use efa_proto::v1::catalog_service_client::CatalogServiceClient;
use efa_proto::v1::log_service_client::LogServiceClient;
use efa_proto::v1::release_service_client::ReleaseServiceClient;
use efa_proto::v1::subscription_service_client::SubscriptionServiceClient;
use std::pin::Pin;
use tokio_stream::{Stream, StreamExt};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::Channel as GrpcChannel;
use tonic::{Code, Status};

/// What a node checks in a leaf of the hub's transparency log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeafFacts {
    /// A release was published.
    Release {
        /// The service.
        service: String,
        /// The version.
        version: String,
        /// SHA-256 of the signed manifest.
        manifest_sha256: Vec<u8>,
    },
    /// An adoption report.
    Adoption {
        /// The Gemeinde.
        ags: String,
        /// The service.
        service: String,
        /// The version, or empty.
        version: String,
        /// The state reported.
        state: efa_domain::model::adoption::AdoptionState,
    },
    /// A Land's signed key set.
    KeySet {
        /// The Land, as the leaf names it.
        land: String,
        /// The set as published.
        signed: efa_domain::model::keyset::SignedKeySet,
    },
    /// Any other event.
    Other,
}

/// The facts of a leaf, and its seq.
pub fn leaf_facts(leaf: &[u8]) -> Result<(u64, LeafFacts)> {
    use efa_proto::convert::WireEnum;
    use prost::Message;
    let leaf = pb::LogLeaf::decode(leaf)
        .map_err(|e| HubError::InvalidAnswer(efa_domain::Error::invalid("log leaf", e.to_string())))?;
    let facts = match leaf.kind {
        Some(pb::log_leaf::Kind::ReleasePublished(r)) => {
            LeafFacts::Release { service: r.service_id, version: r.version, manifest_sha256: r.manifest_sha256 }
        }
        Some(pb::log_leaf::Kind::AdoptionReported(a)) => LeafFacts::Adoption {
            ags: a.ags,
            service: a.service_id,
            version: a.version,
            state: efa_domain::model::adoption::AdoptionState::from_wire(a.state).map_err(HubError::InvalidAnswer)?,
        },
        Some(pb::log_leaf::Kind::KeySetPublished(k)) => {
            LeafFacts::KeySet { land: k.land_code, signed: k.key_set.unwrap_or_default().into() }
        }
        _ => LeafFacts::Other,
    };
    Ok((leaf.seq, facts))
}

fn hashes(raw: Vec<Vec<u8>>) -> Result<Vec<efa_tlog::Hash>> {
    efa_tlog::tree::proof_from_wire(&raw)
        .map_err(|e| HubError::InvalidAnswer(efa_domain::Error::invalid("proof", e.to_string())))
}

/// Largest message the node accepts (a blob chunk is 256 KiB by default).
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// Why a call to the hub did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The hub or the network is away for now; the call is worth retrying later.
    #[error("the hub is unreachable ({:?}): {}", .0.code(), .0.message())]
    Unreachable(Status),
    /// The hub answered and refused; trying again will not help.
    #[error("the hub refused ({:?}): {}", .0.code(), .0.message())]
    Refused(Status),
    /// The hub's answer does not parse into domain values.
    #[error("the hub sent an invalid answer: {0}")]
    InvalidAnswer(efa_domain::Error),
    /// The hub no longer has the events after the node's cursor; reconcile, then resume at `head`.
    #[error("the hub's event retention passed this node's cursor; resync from seq {head}")]
    ResyncNeeded {
        /// The hub's head seq, from which the node resumes after reconciling.
        head: u64,
    },
}

impl HubError {
    /// The event stream ended without an error (the hub went away).
    pub fn stream_ended() -> Self {
        HubError::Unreachable(Status::unavailable("the event stream ended"))
    }

    /// Worth retrying later (the hub or the network was away).
    pub fn is_transient(&self) -> bool {
        matches!(self, HubError::Unreachable(_))
    }

    /// The status the hub answered with, if it answered.
    pub fn status(&self) -> Option<&Status> {
        match self {
            HubError::Unreachable(s) | HubError::Refused(s) => Some(s),
            _ => None,
        }
    }
}

impl From<Status> for HubError {
    fn from(s: Status) -> Self {
        match s.code() {
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown | Code::Aborted => {
                HubError::Unreachable(s)
            }
            // The hub asks the caller to slow down; the same call works later.
            Code::ResourceExhausted => HubError::Unreachable(s),
            _ => HubError::Refused(s),
        }
    }
}

impl From<efa_domain::Error> for HubError {
    fn from(e: efa_domain::Error) -> Self {
        HubError::InvalidAnswer(e)
    }
}

type Result<T, E = HubError> = std::result::Result<T, E>;

/// A stream of delivered events: `(seq, event)`, `None` for a kind this node does not know.
pub type Events = Pin<Box<dyn Stream<Item = Result<(u64, Option<StreamEvent>)>> + Send>>;

/// Parts of a blob as they arrive: `(offset, bytes)`.
pub type BlobParts = Pin<Box<dyn Stream<Item = Result<(u64, bytes::Bytes)>> + Send>>;

/// Names the Kommune a node acts for on every call (`x-efa-on-behalf-of`): a node run by
/// an IT service provider authenticates with the provider's certificate and acts for the
/// Kommune of its config, as far as an operator granted it.
#[derive(Clone, Default)]
pub struct ActFor(Option<MetadataValue<Ascii>>);

impl Interceptor for ActFor {
    fn call(&mut self, mut req: tonic::Request<()>) -> std::result::Result<tonic::Request<()>, Status> {
        if let Some(ags) = &self.0 {
            req.metadata_mut().insert("x-efa-on-behalf-of", ags.clone());
        }
        Ok(req)
    }
}

type Svc = InterceptedService<GrpcChannel, ActFor>;

/// A connection to the hub (connects lazily and reconnects after failures).
#[derive(Clone)]
pub struct HubClient {
    /// One lazily connecting channel per hub address (replicas of one hub), and which one
    /// is in use: calls stay on one replica until [`fail_over`](Self::fail_over) moves on.
    channels: std::sync::Arc<[(String, GrpcChannel)]>,
    current: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    act_for: ActFor,
}

impl HubClient {
    /// A client on `channel`.
    pub fn new(channel: GrpcChannel) -> Self {
        Self::replicas(vec![(String::new(), channel)])
    }

    /// A client over several replicas of one hub, `(address, channel)` in order of
    /// preference; it uses the first until it fails over.
    pub fn replicas(channels: Vec<(String, GrpcChannel)>) -> Self {
        HubClient { channels: channels.into(), current: Default::default(), act_for: ActFor::default() }
    }

    /// Moves on to the next replica after the current one failed (nothing with one
    /// address). Returns the address now in use.
    pub fn fail_over(&self) -> Option<&str> {
        if self.channels.len() < 2 {
            return None;
        }
        let next = (self.current.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1) % self.channels.len();
        Some(self.channels[next].0.as_str())
    }

    /// How many replica addresses it knows.
    pub fn replica_count(&self) -> usize {
        self.channels.len()
    }

    fn channel(&self) -> GrpcChannel {
        let i = self.current.load(std::sync::atomic::Ordering::SeqCst) % self.channels.len();
        self.channels[i].1.clone()
    }

    /// Names `ags` on every call as the Kommune this node acts for.
    pub fn acting_for(mut self, ags: &Ags) -> Self {
        self.act_for = ActFor(ags.as_str().parse().ok());
        self
    }

    fn catalog(&self) -> CatalogServiceClient<Svc> {
        CatalogServiceClient::with_interceptor(self.channel(), self.act_for.clone())
    }

    fn releases(&self) -> ReleaseServiceClient<Svc> {
        ReleaseServiceClient::with_interceptor(self.channel(), self.act_for.clone())
            .max_decoding_message_size(MAX_MESSAGE)
    }

    fn subscriptions(&self) -> SubscriptionServiceClient<Svc> {
        SubscriptionServiceClient::with_interceptor(self.channel(), self.act_for.clone())
    }

    fn adoption(&self) -> AdoptionServiceClient<Svc> {
        AdoptionServiceClient::with_interceptor(self.channel(), self.act_for.clone())
    }

    /// Registers a subscription (idempotent).
    pub async fn subscribe(&self, sub: &NewSubscription) -> Result<()> {
        self.subscriptions().subscribe(pb::SubscribeRequest::from(sub)).await?;
        Ok(())
    }

    /// A service with its published versions.
    pub async fn service(&self, id: &ServiceId) -> Result<CatalogEntry> {
        let info = self.catalog().get_service(pb::GetServiceRequest { id: id.to_string() }).await?.into_inner();
        Ok(info.try_into()?)
    }

    /// The services of a Themenfeld.
    pub async fn services_of_themenfeld(&self, themenfeld: &str) -> Result<Vec<CatalogEntry>> {
        let list = self
            .catalog()
            .list_services(pb::ListServicesRequest { land_code: String::new(), themenfeld: themenfeld.to_string() })
            .await?
            .into_inner();
        Ok(list.services.into_iter().map(CatalogEntry::try_from).collect::<Result<_, _>>()?)
    }

    /// The releases of a service on a channel, newest version first.
    pub async fn release_list(&self, service: &ServiceId, channel: &Channel) -> Result<Vec<ReleaseSummary>> {
        let list = self
            .releases()
            .list_releases(pb::ListReleasesRequest { service_id: service.to_string(), channel: channel.to_string() })
            .await?
            .into_inner();
        Ok(list.releases.into_iter().map(ReleaseSummary::try_from).collect::<Result<_, _>>()?)
    }

    /// A release with its signed manifest.
    pub async fn release(&self, service: &ServiceId, version: &semver::Version) -> Result<SignedRelease> {
        let detail = self
            .releases()
            .get_release(pb::GetReleaseRequest { service_id: service.to_string(), version: version.to_string() })
            .await?
            .into_inner();
        Ok(detail.try_into()?)
    }

    /// A Land's signed snapshot (snapshot bytes, signature); `None` if it has none.
    pub async fn snapshot(&self, land: &LandCode) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        match self.releases().get_snapshot(pb::GetSnapshotRequest { land_code: land.to_string() }).await {
            Ok(r) => {
                let r = r.into_inner();
                Ok(Some((r.snapshot, r.signature)))
            }
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(s.into()),
        }
    }

    /// Who the hub takes this client for (role, key); it refuses a Kommune acted for
    /// without the right to.
    pub async fn who_am_i(&self) -> Result<(String, String)> {
        let me = self.catalog().who_am_i(pb::WhoAmIRequest {}).await?.into_inner();
        Ok((me.role, me.key))
    }

    /// A Land's signed offer of a service; `None` if that Land never offered it.
    pub async fn offer(&self, service: &ServiceId, land: &LandCode) -> Result<Option<SignedOffer>> {
        let req = pb::GetOfferRequest { service_id: service.to_string(), land_code: land.to_string() };
        match self.catalog().get_offer(req).await {
            Ok(r) => Ok(Some(r.into_inner().into())),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(s.into()),
        }
    }

    /// Streams a blob from `offset`.
    pub async fn blob(&self, digest: &Digest, offset: u64) -> Result<BlobParts> {
        let stream =
            self.releases().fetch_blob(pb::FetchBlobRequest { digest: digest.to_string(), offset }).await?.into_inner();
        Ok(Box::pin(stream.map(|c| c.map(|c| (c.offset, c.data)).map_err(HubError::from))))
    }

    /// Sends one adoption report; returns the seq of the hub's event for it (0 from a hub
    /// that does not say).
    pub async fn report(&self, report: &AdoptionReport) -> Result<u64> {
        let record = self.adoption().report_adoption(pb::AdoptionReport::from(report)).await?;
        Ok(record.into_inner().event_seq)
    }

    fn log_client(&self) -> LogServiceClient<InterceptedService<GrpcChannel, ActFor>> {
        LogServiceClient::with_interceptor(self.channel(), self.act_for.clone()).max_decoding_message_size(MAX_MESSAGE)
    }

    /// The leaf indexes and versions of a Land's key sets, as the hub lists them (unverified:
    /// the node reads each set from its leaf).
    pub async fn key_sets(&self, land: &LandCode) -> Result<Vec<(u64, u64)>> {
        let list = self.catalog().list_key_sets(pb::ListKeySetsRequest { land_code: land.to_string() }).await?;
        Ok(list.into_inner().key_sets.iter().map(|k| (k.leaf_index, k.version)).collect())
    }

    /// The newest signed checkpoint of the hub's transparency log, unverified.
    pub async fn checkpoint(&self) -> Result<Vec<u8>> {
        Ok(self.log_client().get_checkpoint(pb::GetCheckpointRequest {}).await?.into_inner().note)
    }

    /// The consistency proof between two tree sizes.
    pub async fn consistency_proof(&self, old_size: u64, new_size: u64) -> Result<Vec<efa_tlog::Hash>> {
        let proof = self.log_client().get_consistency_proof(pb::ConsistencyProofRequest { old_size, new_size }).await?;
        hashes(proof.into_inner().hashes)
    }

    /// A leaf (by index, or the one that published a release) and its inclusion proof in the
    /// tree of `tree_size` leaves: (index, leaf bytes, proof).
    pub async fn inclusion_proof(
        &self,
        index: u64,
        release: Option<(&ServiceId, &semver::Version)>,
        tree_size: u64,
    ) -> Result<(u64, Vec<u8>, Vec<efa_tlog::Hash>)> {
        let (service_id, version) = release.map(|(s, v)| (s.to_string(), v.to_string())).unwrap_or_default();
        let p = self
            .log_client()
            .get_inclusion_proof(pb::InclusionProofRequest { index, tree_size, service_id, version })
            .await?
            .into_inner();
        Ok((p.index, p.leaf, hashes(p.hashes)?))
    }

    /// Submits a rating; returns it as the hub recorded it.
    pub async fn rate(&self, rating: &NewRating) -> Result<Rating> {
        let info = self.adoption().submit_rating(pb::RatingRequest::from(rating)).await?;
        Ok(info.into_inner().try_into()?)
    }

    /// Declares the FIT-Connect destinations for a service this Kommune runs.
    pub async fn declare_routing(&self, declaration: &RoutingDeclaration) -> Result<()> {
        self.adoption().declare_routing(pb::RoutingDeclaration::from(declaration)).await?;
        Ok(())
    }

    /// Reports a pre-flight result.
    pub async fn preflight(&self, report: &NewPreflight) -> Result<()> {
        self.adoption().report_preflight(pb::PreflightReport::from(report)).await?;
        Ok(())
    }

    /// Opens the event stream after `cursor`.
    pub async fn watch(&self, cursor: u64) -> Result<Events> {
        let opened = self.subscriptions().watch_events(pb::WatchEventsRequest { after_seq: cursor }).await;
        match opened {
            Ok(s) => Ok(Box::pin(s.into_inner().map(|e| {
                let e = e.map_err(HubError::from)?;
                Ok(efa_proto::convert::stream_event(e)?)
            }))),
            Err(status) if status.code() == Code::FailedPrecondition => {
                // "Resync needed": the head to resume from travels in the metadata.
                let head = status
                    .metadata()
                    .get(efa_proto::RESYNC_HEAD_METADATA)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                match head {
                    Some(head) => Err(HubError::ResyncNeeded { head }),
                    None => Err(HubError::Refused(status)),
                }
            }
            Err(status) => Err(status.into()),
        }
    }
}
