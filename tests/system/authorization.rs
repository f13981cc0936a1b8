//! Who may do what: each rule of the authorization table, over real mTLS.

use efa_domain::model::release::UpdatePolicy;
use efa_proto::v1 as pb;
use efa_tests::*;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use tonic::Code;

async fn setup() -> World {
    let w = World::new().await;
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    w.publish(NRW, "wohngeld-nrw", "1.0.0", &w.standard_bundle("1.0.0")).await.unwrap();
    w
}

fn denied<T: std::fmt::Debug>(r: Result<T, tonic::Status>, what: &str) {
    match r {
        Err(s) => assert_eq!(s.code(), Code::PermissionDenied, "{what}: {}", s.message()),
        Ok(v) => panic!("{what} should be denied, got {v:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_rpc_works_without_a_client_certificate_except_health() {
    let w = setup().await;
    let ca = std::fs::read(w.fed.pki_dir().join("ca.pem")).unwrap();
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)).domain_name("localhost");
    let ch = Endpoint::from_shared(w.fed.url()).unwrap().tls_config(tls).unwrap().connect().await.unwrap();
    let err =
        CatalogServiceClient::new(ch.clone()).list_services(pb::ListServicesRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{}", err.message());
    let err = ReportServiceClient::new(ch.clone())
        .service_adopters(pb::ServiceAdoptersRequest { service_id: "wohngeld-nrw".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    let health = tonic_health::pb::health_client::HealthClient::new(ch)
        .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_owning_land_manages_a_service() {
    let w = setup().await;
    let yank = |id: &str| pb::YankReleaseRequest {
        service_id: id.into(),
        version: "1.0.0".into(),
        reason: "x".into(),
        recall: false,
    };
    denied(
        ReleaseServiceClient::new(w.channel(&land("09")).await).yank_release(yank("wohngeld-nrw")).await,
        "Bayern yanks NRW's release",
    );
    denied(
        ReleaseServiceClient::new(w.channel(&kommune(DORTMUND)).await).yank_release(yank("wohngeld-nrw")).await,
        "a Kommune yanks",
    );
    denied(
        ReleaseServiceClient::new(w.channel(&operator()).await).yank_release(yank("wohngeld-nrw")).await,
        "an operator yanks",
    );
    denied(
        CatalogServiceClient::new(w.channel(&kommune(DORTMUND)).await)
            .register_service(pb::RegisterServiceRequest {
                id: "x-y-z".into(),
                ozg_id: "10092".into(),
                title: "t".into(),
                ..Default::default()
            })
            .await,
        "a Kommune registers a service",
    );
    ReleaseServiceClient::new(w.channel(&land(NRW)).await).yank_release(yank("wohngeld-nrw")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kommunen_act_only_as_themselves() {
    let w = setup().await;
    let report = pb::AdoptionReport {
        service_id: "wohngeld-nrw".into(),
        version: "1.0.0".into(),
        state: pb::AdoptionState::Evaluating as i32,
        reason: String::new(),
    };
    denied(
        AdoptionServiceClient::new(w.channel(&land(NRW)).await).report_adoption(report.clone()).await,
        "a Land reports adoption",
    );
    denied(
        AdoptionServiceClient::new(w.channel(&operator()).await).report_adoption(report.clone()).await,
        "an operator reports adoption",
    );
    let sub = pb::SubscribeRequest {
        target: Some(pb::SubscriptionTarget {
            target: Some(pb::subscription_target::Target::ServiceId("wohngeld-nrw".into())),
        }),
        channel: "stable".into(),
        policy: pb::UpdatePolicy::Auto as i32,
    };
    denied(
        SubscriptionServiceClient::new(w.channel(&land(NRW)).await).subscribe(sub.clone()).await,
        "a Land subscribes",
    );

    // The report is recorded for the caller's own AGS: there is no field to claim another.
    let rec = AdoptionServiceClient::new(w.channel(&kommune(DORTMUND)).await)
        .report_adoption(report)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rec.ags, DORTMUND);

    // A syntactically valid AGS that is no Gemeinde in the register is refused at
    // authentication already.
    let err = SubscriptionServiceClient::new(w.channel(&kommune("05999999")).await).subscribe(sub).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adoption_details_and_feedback_are_visible_to_operators_and_the_owning_land_only() {
    let w = setup().await;
    let node = w.node(DORTMUND, &[Sub { service: "wohngeld-nrw", policy: UpdatePolicy::Auto }]);
    node.register_subscriptions().await.unwrap();
    node.reconcile().await.unwrap();
    rate(&node, "wohngeld-nrw", "1.0.0", 3, vec![], "ok").await.unwrap();

    let adopters = |id| pb::ServiceAdoptersRequest { service_id: id };
    denied(
        ReportServiceClient::new(w.channel(&kommune(ESSEN)).await)
            .service_adopters(adopters("wohngeld-nrw".into()))
            .await,
        "Essen reads adopters",
    );
    denied(
        ReportServiceClient::new(w.channel(&land("09")).await).service_adopters(adopters("wohngeld-nrw".into())).await,
        "Bayern reads NRW adopters",
    );
    ReportServiceClient::new(w.channel(&land(NRW)).await)
        .service_adopters(adopters("wohngeld-nrw".into()))
        .await
        .unwrap();

    let history = |ags: &str| pb::KommuneHistoryRequest { ags: ags.into() };
    denied(
        ReportServiceClient::new(w.channel(&kommune(ESSEN)).await).kommune_history(history(DORTMUND)).await,
        "Essen reads Dortmund's ledger",
    );
    denied(
        ReportServiceClient::new(w.channel(&land(NRW)).await).kommune_history(history(DORTMUND)).await,
        "a Land reads a Kommune's ledger",
    );
    let own = ReportServiceClient::new(w.channel(&kommune(DORTMUND)).await)
        .kommune_history(history(""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(own.history.len(), 2);

    let fb = |land_code: &str| pb::FeedbackRequest { service_id: String::new(), land_code: land_code.into() };
    denied(ReportServiceClient::new(w.channel(&land("09")).await).feedback(fb(NRW)).await, "Bayern reads NRW feedback");
    denied(
        ReportServiceClient::new(w.channel(&kommune(DORTMUND)).await).feedback(fb(NRW)).await,
        "a Kommune reads feedback",
    );
    let all = ReportServiceClient::new(w.channel(&operator()).await).feedback(fb("")).await.unwrap().into_inner();
    assert_eq!(all.ratings.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ratings_need_an_evaluation_and_stay_in_range() {
    let w = setup().await;
    let rate = |stars: u32, comment: String| pb::RatingRequest {
        service_id: "wohngeld-nrw".into(),
        version: "1.0.0".into(),
        stars,
        criteria: vec![],
        comment,
        met: vec![],
    };
    let ch = w.channel(&kommune(ESSEN)).await;
    let err = AdoptionServiceClient::new(ch.clone()).submit_rating(rate(4, String::new())).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());

    let node = w.node(ESSEN, &[Sub { service: "wohngeld-nrw", policy: UpdatePolicy::Manual }]);
    node.register_subscriptions().await.unwrap();
    node.reconcile().await.unwrap(); // evaluating 1.0.0
    for (stars, comment, needle) in [(0, "", "stars"), (6, "", "stars"), (3, &"ä".repeat(2001) as &str, "comment")] {
        let err = AdoptionServiceClient::new(ch.clone()).submit_rating(rate(stars, comment.into())).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains(needle), "{}", err.message());
    }
    let err = AdoptionServiceClient::new(ch.clone())
        .submit_rating(pb::RatingRequest { version: "9.9.9".into(), ..rate(3, String::new()) })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    AdoptionServiceClient::new(ch).submit_rating(rate(5, "läuft".into())).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_land_can_make_adoption_of_a_service_public_to_kommunen() {
    let w = setup().await;
    let mut req = pb::RegisterServiceRequest {
        id: "hundehaltung-nrw".into(),
        ozg_id: "10160".into(),
        title: "Hundeanmeldung".into(),
        adoption_public: true,
        ..Default::default()
    };
    CatalogServiceClient::new(w.channel(&land(NRW)).await).register_service(req.clone()).await.unwrap();
    let ask = |id: &str| pb::ServiceAdoptersRequest { service_id: id.into() };
    let essen = ReportServiceClient::new(w.channel(&kommune(ESSEN)).await);
    essen.clone().service_adopters(ask("hundehaltung-nrw")).await.unwrap();
    essen
        .clone()
        .coverage(pb::CoverageRequest { service_id: "hundehaltung-nrw".into(), land_code: NRW.into() })
        .await
        .unwrap();
    denied(essen.clone().service_adopters(ask("wohngeld-nrw")).await, "Essen reads adopters of a non-public service");
    // Other Länder still may not; and the Land can take it back.
    denied(
        ReportServiceClient::new(w.channel(&land("09")).await).service_adopters(ask("hundehaltung-nrw")).await,
        "Bayern reads",
    );
    req.adoption_public = false;
    CatalogServiceClient::new(w.channel(&land(NRW)).await).register_service(req).await.unwrap();
    denied(essen.clone().service_adopters(ask("hundehaltung-nrw")).await, "Essen reads after the Land withdrew it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_an_ags_outside_the_register_reads_nothing() {
    let w = World::new().await;
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    w.publish(NRW, "wohngeld-nrw", "1.0.0", &w.standard_bundle("1.0.0")).await.unwrap();
    // Eight valid digits, signed by the federation CA, but no Gemeinde has this AGS.
    let ch = w.channel(&kommune("05999999")).await;
    let denied = |r: Result<(), tonic::Status>, what: &str| {
        let s = r.expect_err(what);
        assert_eq!(s.code(), tonic::Code::PermissionDenied, "{what}: {s:?}");
        assert!(s.message().contains("not a Gemeinde of the register"), "{what}: {}", s.message());
    };
    let catalog = || CatalogServiceClient::new(ch.clone());
    let releases = || ReleaseServiceClient::new(ch.clone());
    denied(catalog().who_am_i(pb::WhoAmIRequest {}).await.map(drop), "WhoAmI");
    denied(catalog().list_services(pb::ListServicesRequest::default()).await.map(drop), "ListServices");
    denied(catalog().get_kommune(pb::GetKommuneRequest { ags: DORTMUND.into() }).await.map(drop), "GetKommune");
    let get = pb::GetReleaseRequest { service_id: "wohngeld-nrw".into(), version: "1.0.0".into() };
    denied(releases().get_release(get).await.map(drop), "GetRelease");
    let digest = efa_domain::bundle::Digest::of(b"x").to_string();
    let fetched = releases().fetch_blob(pb::FetchBlobRequest { digest, offset: 0 }).await;
    denied(fetched.map(drop), "FetchBlob");
    let summary = ReportServiceClient::new(ch.clone())
        .rating_summary(pb::RatingSummaryRequest { service_id: "wohngeld-nrw".into() })
        .await;
    denied(summary.map(drop), "RatingSummary");
    let watched =
        SubscriptionServiceClient::new(ch.clone()).watch_events(pb::WatchEventsRequest { after_seq: 0 }).await;
    denied(watched.map(drop), "WatchEvents");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_kommune_is_throttled_while_another_syncs_normally() {
    let w = World::tuned(|c| {
        c.caller_limits = efa_hub::limits::Limits { calls: 64, streams: 2, writes_per_second: 5.0, write_burst: 5.0 };
    })
    .await;
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    w.publish(NRW, "wohngeld-nrw", "1.0.0", &w.standard_bundle("1.0.0")).await.unwrap();

    // Essen floods the hub with reports.
    let essen = AdoptionServiceClient::new(w.channel(&kommune(ESSEN)).await);
    let flood = (0..40).map(|i| {
        let mut c = essen.clone();
        async move {
            c.report_adoption(pb::AdoptionReport {
                service_id: "wohngeld-nrw".into(),
                version: String::new(),
                state: pb::AdoptionState::Rejected as i32,
                reason: format!("Flut {i}"),
            })
            .await
        }
    });
    let results = futures_util_join_all(flood).await;
    let throttled: Vec<&tonic::Status> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(throttled.len() >= 30, "{} of 40 throttled", throttled.len());
    for s in &throttled {
        assert_eq!(s.code(), Code::ResourceExhausted, "{}", s.message());
        assert!(s.metadata().get("retry-after-ms").is_some(), "a retry hint");
    }
    assert!(throttled[0].message().contains("faster than 5 per second"), "{}", throttled[0].message());

    // Dortmund is not affected: it syncs and reports as usual.
    let node = w.node(DORTMUND, &[Sub { service: "wohngeld-nrw", policy: UpdatePolicy::Auto }]);
    node.register_subscriptions().await.unwrap();
    let handled = node.reconcile().await.unwrap();
    assert!(matches!(&handled[..], [efa_node::Handled::Deployed { .. }]), "{handled:?}");
    assert_eq!(node.state().unwrap().outbox.len(), 0, "its reports went through");

    // Streams: two per caller here; a third is refused until one ends.
    let ch = w.channel(&kommune(DORTMUND)).await;
    let open = || {
        let mut c = SubscriptionServiceClient::new(ch.clone());
        async move { c.watch_events(pb::WatchEventsRequest { after_seq: 0 }).await }
    };
    let first = open().await.unwrap();
    let _second = open().await.unwrap();
    let third = open().await.unwrap_err();
    assert_eq!(third.code(), Code::ResourceExhausted, "{}", third.message());
    drop(first);
    efa_tests::eventually(5, "a stream slot frees up", || async { open().await.is_ok() }).await;
}

/// Runs futures concurrently and collects their results in order.
async fn futures_util_join_all<F>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}
