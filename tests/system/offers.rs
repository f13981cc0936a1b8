//! Nachnutzung: a service built by one Land (here Bremen) reaches the Kommunen of another
//! (NRW) only through NRW's signed offer, with NRW's Land-level parameters; NRW reads about
//! its own Kommunen, and a node refuses an offer its Land did not sign.

use efa_cli::publish::{publish_offer, OfferSpec};
use efa_domain::model::ids::{LandCode, ServiceId};
use efa_domain::model::offer::{Offer, OFFER_FORMAT};
use efa_domain::model::release::UpdatePolicy;
use efa_domain::params::ParamValue;
use efa_domain::signing::SigningKey;
use efa_node::config::SubscriptionConfig;
use efa_node::{Agent, Handled, NodeConfig};
use efa_proto::v1 as pb;
use efa_tests::*;
use std::collections::BTreeMap;
use tonic::Code;

const BREMEN: &str = "04";
const BREMEN_STADT: &str = "04011000";
const SERVICE: &str = "hundehaltung-hb";
/// Hundehaltung (OZG-ID 10160) is filed under this Themenfeld.
const THEMENFELD: &str = "Engagement & Hobby";

/// A node that follows a Themenfeld, trusts NRW's and Bremen's keys, and sets only the
/// payment purpose: the fee must come from its Land's offer.
fn themenfeld_node(w: &World, ags: &str) -> Agent {
    let mut config: NodeConfig = w.node_config(ags, &[]);
    config.subscriptions.push(SubscriptionConfig {
        service: None,
        themenfeld: Some(THEMENFELD.into()),
        channel: "stable".parse().unwrap(),
        policy: UpdatePolicy::Auto,
    });
    let bremen: LandCode = BREMEN.parse().unwrap();
    let config = config
        .trust(bremen.clone(), w.fed.trusted_key(&bremen).unwrap())
        .parameters(SERVICE.parse().unwrap(), purpose_only(ags));
    Agent::new(config).unwrap()
}

fn purpose_only(ags: &str) -> BTreeMap<String, ParamValue> {
    BTreeMap::from([("payment_purpose".to_string(), ParamValue::Text(format!("Hund {ags}")))])
}

fn offer(land: &str, kommunen: &[&str], params: &[(&str, ParamValue)]) -> Offer {
    Offer {
        format: OFFER_FORMAT,
        land: land.parse().unwrap(),
        service_id: SERVICE.parse().unwrap(),
        channel: "stable".parse().unwrap(),
        from_version: "1.0.0".into(),
        land_parameters: params.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
        kommunen: kommunen.iter().map(|a| a.parse().unwrap()).collect(),
        issued_at_ms: efa_domain::now_ms(),
        withdrawn: None,
    }
}

fn signed(key: &SigningKey, offer: &Offer) -> pb::SignedOffer {
    let bytes = offer.to_bytes();
    pb::SignedOffer { signature: key.sign(&bytes), offer: bytes }
}

fn spec(params: &[(&str, &str)], withdrawn: Option<&str>) -> OfferSpec {
    OfferSpec {
        service_id: SERVICE.parse().unwrap(),
        channel: "stable".parse().unwrap(),
        from_version: "1.0.0".into(),
        land_parameters: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        kommunen: vec![],
        withdrawn: withdrawn.map(str::to_string),
    }
}

async fn publish_as(w: &World, land_code: &str, offer: pb::SignedOffer) -> Result<pb::OfferInfo, tonic::Status> {
    CatalogServiceClient::new(w.channel(&land(land_code)).await).publish_offer(offer).await.map(|r| r.into_inner())
}

fn deployed(handled: &[Handled]) -> Vec<String> {
    handled
        .iter()
        .filter_map(|h| match h {
            Handled::Deployed { service, version } => Some(format!("{service} {version}")),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_brings_a_service_built_elsewhere_to_the_offering_lands_kommunen() {
    let w = World::new().await;
    let info = w.register(BREMEN, SERVICE, "10160").await.unwrap();
    assert_eq!(info.themenfeld, THEMENFELD);
    w.publish(BREMEN, SERVICE, "1.0.0", &w.standard_bundle("1.0.0")).await.unwrap();

    // Without an offer, Dortmund's Themenfeld subscription does not reach Bremen's service.
    let dortmund = themenfeld_node(&w, DORTMUND);
    assert!(deployed(&dortmund.sync().await.unwrap()).is_empty());
    assert!(w.adopters(SERVICE).await.is_empty());

    // Offers the hub refuses, each with its code; nothing is stored.
    let nrw_key = w.fed.signing_key(&NRW.parse().unwrap()).unwrap();
    let bremen_key = w.fed.signing_key(&BREMEN.parse().unwrap()).unwrap();
    let fee = |c: i64| ("fee_cents", ParamValue::Integer(c));
    let cases: Vec<(&str, &str, pb::SignedOffer, Code, &str)> = vec![
        (
            "the building Land",
            BREMEN,
            signed(&bremen_key, &offer(BREMEN, &[], &[])),
            Code::PermissionDenied,
            "without an offer",
        ),
        (
            "for another Land's Kommunen",
            NRW,
            signed(&nrw_key, &offer(NRW, &["09162000"], &[])),
            Code::PermissionDenied,
            "lies in Land 09",
        ),
        (
            "in another Land's name",
            "09",
            signed(&nrw_key, &offer(NRW, &[], &[])),
            Code::PermissionDenied,
            "caller is Land 09",
        ),
        (
            "an unknown parameter",
            NRW,
            signed(&nrw_key, &offer(NRW, &[], &[("epaybl_tenant", ParamValue::Text("x".into()))])),
            Code::InvalidArgument,
            "unknown parameter",
        ),
        (
            "a fee that is no amount",
            NRW,
            signed(&nrw_key, &offer(NRW, &[], &[("fee_cents", ParamValue::Text("zehn".into()))])),
            Code::InvalidArgument,
            "euro cents",
        ),
        (
            "a Kommune not in the register",
            NRW,
            signed(&nrw_key, &offer(NRW, &["05999999"], &[])),
            Code::InvalidArgument,
            "not a Gemeinde",
        ),
        (
            "no JSON",
            NRW,
            pb::SignedOffer { offer: b"{not json".to_vec(), signature: vec![0; 64] },
            Code::InvalidArgument,
            "not a valid offer",
        ),
        (
            "a short signature",
            NRW,
            pb::SignedOffer { offer: offer(NRW, &[], &[]).to_bytes(), signature: vec![1; 3] },
            Code::InvalidArgument,
            "64-byte",
        ),
    ];
    for (what, caller, o, code, says) in cases {
        let err = publish_as(&w, caller, o).await.unwrap_err();
        assert_eq!(err.code(), code, "{what}: {}", err.message());
        assert!(err.message().contains(says), "{what}: {}", err.message());
    }
    let mut unknown = offer(NRW, &[], &[fee(990)]);
    unknown.service_id = "gibt-es-nicht".parse().unwrap();
    assert_eq!(publish_as(&w, NRW, signed(&nrw_key, &unknown)).await.unwrap_err().code(), Code::NotFound);
    let listed = CatalogServiceClient::new(w.channel(&land(NRW)).await)
        .list_offers(pb::ListOffersRequest { service_id: SERVICE.into(), land_code: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.offers.is_empty(), "refused offers are not stored");

    // NRW offers it with its Land-level fee, as `efa offer --set fee_cents=990` does.
    let info = publish_offer(
        w.channel(&land(NRW)).await,
        &NRW.parse().unwrap(),
        &nrw_key,
        spec(&[("fee_cents", "990")], None),
    )
    .await
    .unwrap();
    assert_eq!((info.land_code.as_str(), info.building_land_code.as_str()), (NRW, BREMEN));
    assert_eq!(info.land_parameters.get("fee_cents").map(String::as_str), Some("990"));
    let entry = CatalogServiceClient::new(w.channel(&kommune(DORTMUND)).await)
        .get_service(pb::GetServiceRequest { id: SERVICE.into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((entry.land_code.as_str(), entry.offered_by), (BREMEN, vec![NRW.to_string()]));

    // Now Dortmund's Themenfeld subscription reaches it, and the Land's fee fills the gap.
    assert_eq!(deployed(&dortmund.sync().await.unwrap()), vec![format!("{SERVICE} 1.0.0")]);
    let rendered =
        std::fs::read_to_string(dortmund.config().deploy_dir.join(SERVICE).join("current/config/payment.toml"))
            .unwrap();
    assert!(rendered.contains("fee_cents = 990") && rendered.contains("Hund 05913000"), "{rendered}");

    // A replayed, older offer is refused.
    let mut old = offer(NRW, &[], &[fee(990)]);
    old.issued_at_ms = 1;
    let err = publish_as(&w, NRW, signed(&nrw_key, &old)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());

    // Bremen's own Kommune subscribes to it directly.
    let bremen_stadt = {
        let bremen: LandCode = BREMEN.parse().unwrap();
        let config = w
            .node_config(BREMEN_STADT, &[Sub { service: SERVICE, policy: UpdatePolicy::Auto }])
            .trust(bremen.clone(), w.fed.trusted_key(&bremen).unwrap());
        Agent::new(config).unwrap()
    };
    assert_eq!(deployed(&bremen_stadt.sync().await.unwrap()), vec![format!("{SERVICE} 1.0.0")]);

    // NRW reads about its own Kommunen only; Bremen about all; Bayern about none.
    let w = &w;
    let adopters = |who| async move {
        ReportServiceClient::new(w.channel(&who).await)
            .service_adopters(pb::ServiceAdoptersRequest { service_id: SERVICE.into() })
            .await
            .map(|r| r.into_inner().adopters.into_iter().map(|a| a.ags).collect::<Vec<_>>())
    };
    assert_eq!(adopters(land(NRW)).await.unwrap(), vec![DORTMUND.to_string()]);
    assert_eq!(adopters(land(BREMEN)).await.unwrap(), vec![BREMEN_STADT.to_string(), DORTMUND.to_string()]);
    assert_eq!(adopters(land("09")).await.unwrap_err().code(), Code::PermissionDenied);
    let coverage = |who, land_code: &str| {
        let land_code = land_code.to_string();
        async move {
            ReportServiceClient::new(w.channel(&who).await)
                .coverage(pb::CoverageRequest { service_id: SERVICE.into(), land_code })
                .await
                .map(|r| r.into_inner().rows)
        }
    };
    let rows = coverage(land(NRW), "").await.unwrap();
    assert!(rows.iter().all(|r| r.code.starts_with(NRW)), "only NRW rows: {rows:?}");
    assert!(rows.iter().any(|r| r.code == NRW && r.adopted == 1));
    assert_eq!(coverage(land(NRW), BREMEN).await.unwrap_err().code(), Code::PermissionDenied);

    // NRW withdraws; a newer release no longer reaches Dortmund, which keeps what it runs.
    let info = publish_offer(
        w.channel(&land(NRW)).await,
        &NRW.parse().unwrap(),
        &nrw_key,
        spec(&[], Some("Landesvertrag zur Nachnutzung endet")),
    )
    .await
    .unwrap();
    assert!(info.withdrawn);
    w.publish(BREMEN, SERVICE, "1.1.0", &w.standard_bundle("1.1.0")).await.unwrap();
    let handled = dortmund.sync().await.unwrap();
    assert!(deployed(&handled).is_empty(), "{handled:?}");
    let service: ServiceId = SERVICE.parse().unwrap();
    assert_eq!(
        dortmund.status().unwrap().services.iter().find(|s| s.service == service.as_str()).unwrap().running.as_deref(),
        Some("1.0.0")
    );
    // Bremen's own Kommune gets it as before.
    assert_eq!(deployed(&bremen_stadt.sync().await.unwrap()), vec![format!("{SERVICE} 1.1.0")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_an_offer_its_land_did_not_sign() {
    let w = World::new().await;
    w.register(BREMEN, SERVICE, "10160").await.unwrap();
    w.publish(BREMEN, SERVICE, "1.0.0", &w.standard_bundle("1.0.0")).await.unwrap();
    // NRW registered no keys with the hub, so the hub takes any signature: as a hub that
    // forges offers would serve them. The node checks against the key it pins for NRW.
    let forger = SigningKey::generate();
    publish_as(&w, NRW, signed(&forger, &offer(NRW, &[], &[("fee_cents", ParamValue::Integer(1))]))).await.unwrap();

    let dortmund = themenfeld_node(&w, DORTMUND);
    let handled = dortmund.sync().await.unwrap();
    assert!(deployed(&handled).is_empty(), "{handled:?}");
    let why = handled
        .iter()
        .find_map(|h| match h {
            Handled::Ignored { service, why, .. } if service == SERVICE => Some(why.clone()),
            _ => None,
        })
        .expect("the release is handled and refused");
    assert!(why.contains("does not verify") && why.contains("Land 05"), "{why}");
    assert!(w.adopters(SERVICE).await.is_empty());

    // A Kommune that subscribes to the service itself may still take it (its own choice),
    // with its own parameters: the forged offer's fee is not used.
    let mut config = w.node_config(ESSEN, &[Sub { service: SERVICE, policy: UpdatePolicy::Auto }]);
    let bremen: LandCode = BREMEN.parse().unwrap();
    config = config.trust(bremen.clone(), w.fed.trusted_key(&bremen).unwrap());
    let essen = Agent::new(config).unwrap();
    assert_eq!(deployed(&essen.sync().await.unwrap()), vec![format!("{SERVICE} 1.0.0")]);
    let rendered =
        std::fs::read_to_string(essen.config().deploy_dir.join(SERVICE).join("current/config/payment.toml")).unwrap();
    assert!(rendered.contains("fee_cents = 1250"), "{rendered}");
}

/// The Bund builds and publishes as `efa://land/00`; a Land offers its service to its
/// Kommunen like any other; the Bund itself offers nothing (it has no Kommunen).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bund_builds_and_a_land_offers_its_service() {
    const BUND: &str = "00";
    let w = World::new().await;
    let me = CatalogServiceClient::new(w.channel(&land(BUND)).await)
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((me.role.as_str(), me.key.as_str(), me.display_name.as_str()), ("land", BUND, "Bund"));
    w.register(BUND, "hundehaltung-bund", "10160").await.unwrap();
    w.publish(BUND, "hundehaltung-bund", "1.0.0", &w.standard_bundle("1.0.0")).await.unwrap();

    let bund_key = w.fed.signing_key(&BUND.parse().unwrap()).unwrap();
    let mut own = offer(BUND, &[], &[]);
    own.service_id = "hundehaltung-bund".parse().unwrap();
    let err = publish_as(&w, BUND, signed(&bund_key, &own)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());

    let nrw_key = w.fed.signing_key(&NRW.parse().unwrap()).unwrap();
    let mut nrw = offer(NRW, &[], &[("fee_cents", ParamValue::Integer(0))]);
    nrw.service_id = "hundehaltung-bund".parse().unwrap();
    publish_as(&w, NRW, signed(&nrw_key, &nrw)).await.unwrap();

    let mut config: NodeConfig = w.node_config(DORTMUND, &[]);
    config.subscriptions.push(SubscriptionConfig {
        service: None,
        themenfeld: Some(THEMENFELD.into()),
        channel: "stable".parse().unwrap(),
        policy: UpdatePolicy::Auto,
    });
    let bund: LandCode = BUND.parse().unwrap();
    let config = config
        .trust(bund.clone(), w.fed.trusted_key(&bund).unwrap())
        .parameters("hundehaltung-bund".parse().unwrap(), purpose_only(DORTMUND));
    let node = Agent::new(config).unwrap();
    assert_eq!(deployed(&node.sync().await.unwrap()), vec!["hundehaltung-bund 1.0.0".to_string()]);
}

/// An offering Land sets its own rollout plan for its Kommunen: they follow it instead of
/// the building Land's, each plan counts only its own Kommunen, and a Land that neither
/// builds nor offers the service, or names another Land's Kommunen, is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offering_land_rolls_a_release_out_to_its_kommunen_by_its_own_plan() {
    use efa_domain::model::rollout::{Gates, Members, Ring, RolloutPlan};
    use efa_proto::v1::rollout_service_client::RolloutServiceClient;
    let w = World::new().await;
    w.register(BREMEN, SERVICE, "10160").await.unwrap();
    w.publish(BREMEN, SERVICE, "1.0.0", &w.standard_bundle("1.0.0")).await.unwrap();
    let nrw_key = w.fed.signing_key(&NRW.parse().unwrap()).unwrap();
    publish_offer(w.channel(&land(NRW)).await, &NRW.parse().unwrap(), &nrw_key, spec(&[("fee_cents", "0")], None))
        .await
        .unwrap();
    // Bremen's plan: Bremen first. NRW's own: Dortmund first, then the rest of NRW.
    let ring =
        |name: &str, ags: &str| Ring { name: name.into(), members: Members::Kommunen([ags.parse().unwrap()].into()) };
    let plan = |r: Ring| RolloutPlan {
        rings: vec![r],
        gates: Gates { min_healthy: 1, ..Default::default() },
        decide_within_secs: None,
    };
    w.publish_rolled_out(BREMEN, SERVICE, "1.1.0", &w.standard_bundle("1.1.0"), plan(ring("Bremen", BREMEN_STADT)))
        .await
        .unwrap();
    let set = |p: &RolloutPlan| pb::SetRolloutPlanRequest {
        service_id: SERVICE.into(),
        version: "1.1.0".into(),
        plan: Some(p.into()),
    };
    // NRW's pilot also has to rate it, so nothing moves before the test says so.
    let nrw_plan = RolloutPlan {
        gates: Gates { min_healthy: 1, min_ratings: 1, ..Default::default() },
        ..plan(ring("Pilot NRW", DORTMUND))
    };
    // Bayern offers nothing; NRW may not name Bremen's Kommunen.
    let refused = RolloutServiceClient::new(w.channel(&land("09")).await).set_rollout_plan(set(&nrw_plan)).await;
    assert_eq!(refused.unwrap_err().code(), Code::PermissionDenied);
    let mut as_nrw = RolloutServiceClient::new(w.channel(&land(NRW)).await);
    let foreign = as_nrw.set_rollout_plan(set(&plan(ring("Fremd", BREMEN_STADT)))).await.unwrap_err();
    assert_eq!(foreign.code(), Code::InvalidArgument, "{foreign:?}");
    assert!(foreign.message().contains("not of Land 05"), "{}", foreign.message());
    let status = as_nrw.set_rollout_plan(set(&nrw_plan)).await.unwrap().into_inner();
    assert_eq!((status.land_code.as_str(), status.rings[0].name.as_str()), ("05", "Pilot NRW"));
    assert_eq!(as_nrw.set_rollout_plan(set(&nrw_plan)).await.unwrap_err().code(), Code::AlreadyExists);

    // Where each Kommune stands: Dortmund by NRW's pilot ring (though Bremen's ring is the
    // only one open there), Essen in NRW's last ring, Bremen by Bremen's plan.
    let position = |ags: &'static str| {
        let w = &w;
        async move {
            ReleaseServiceClient::new(w.channel(&kommune(ags)).await)
                .get_release(pb::GetReleaseRequest { service_id: SERVICE.into(), version: "1.1.0".into() })
                .await
                .unwrap()
                .into_inner()
                .info
                .unwrap()
                .rollout
                .unwrap()
        }
    };
    let p = position(DORTMUND).await;
    assert_eq!((p.ring_name.as_str(), p.admitted), ("Pilot NRW", true));
    let p = position(ESSEN).await;
    assert_eq!((p.ring_name.as_str(), p.admitted), ("alle übrigen", false));
    let p = position(BREMEN_STADT).await;
    assert_eq!((p.ring_name.as_str(), p.admitted), ("Bremen", true));

    // Dortmund runs it: NRW's plan counts it, Bremen's does not.
    let dortmund = themenfeld_node(&w, DORTMUND);
    assert_eq!(deployed(&dortmund.sync().await.unwrap()), vec![format!("{SERVICE} 1.1.0")]);
    let read = |land_code: &str| pb::GetRolloutStatusRequest {
        service_id: SERVICE.into(),
        version: "1.1.0".into(),
        land_code: land_code.into(),
    };
    let mut as_operator = RolloutServiceClient::new(w.channel(&operator()).await);
    let nrw_status = as_operator.get_rollout_status(read(NRW)).await.unwrap().into_inner();
    let bremen_status = as_operator.get_rollout_status(read("")).await.unwrap().into_inner();
    assert_eq!(nrw_status.rings[0].healthy, 1);
    assert_eq!(bremen_status.rings.iter().map(|r| r.healthy).sum::<u32>(), 0, "Dortmund follows NRW's plan");
    assert_eq!(as_operator.get_rollout_status(read("09")).await.unwrap_err().code(), Code::NotFound);

    // NRW moves its own plan by hand; Bremen may not move NRW's (its moves are its own plan's).
    let act = |action: pb::RolloutAction, reason: &str| pb::RolloutActionRequest {
        service_id: SERVICE.into(),
        version: "1.1.0".into(),
        action: action as i32,
        reason: reason.into(),
    };
    let paused = as_nrw.act_on_rollout(act(pb::RolloutAction::Pause, "Rückmeldung abwarten")).await.unwrap();
    assert_eq!((paused.get_ref().land_code.as_str(), paused.get_ref().state.as_str()), ("05", "paused"));
    let bremen_status = as_operator.get_rollout_status(read("")).await.unwrap().into_inner();
    assert_eq!(bremen_status.state, "running", "Bremen's plan is not NRW's");
    as_nrw.act_on_rollout(act(pb::RolloutAction::Resume, "")).await.unwrap();

    // The pilot's rating passes NRW's gates: the controller opens NRW's last ring, Essen may
    // deploy; Bremen's plan waits for Bremen.
    rate(&dortmund, SERVICE, "1.1.0", 4, vec![], "läuft").await.unwrap();
    eventually(20, "the controller opens NRW's last ring", || async {
        RolloutServiceClient::new(w.channel(&operator()).await)
            .get_rollout_status(read(NRW))
            .await
            .is_ok_and(|s| s.get_ref().state == "complete")
    })
    .await;
    assert!(position(ESSEN).await.admitted);
    let bremen_status = as_operator.get_rollout_status(read("")).await.unwrap().into_inner();
    assert_eq!((bremen_status.state.as_str(), bremen_status.open_ring), ("running", 0));
}
