//! A building Land deprecates a service (with a successor) and recalls a release: nodes
//! show both, keep serving until their operator decides, and report the retirement.

use efa_domain::model::release::UpdatePolicy;
use efa_proto::v1 as pb;
use efa_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deprecated_service_and_a_recalled_release_reach_the_node_and_the_operator_retires() {
    let w = World::with_dashboard().await;
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    w.register(NRW, "wohngeld-plus", "10092").await.unwrap();
    w.publish(NRW, "wohngeld-nrw", "1.0.0", &w.standard_bundle("1.0.0")).await.unwrap();
    let node = w.node(DORTMUND, &[Sub { service: "wohngeld-nrw", policy: UpdatePolicy::Auto }]);
    node.sync().await.unwrap();

    // Only the building Land deprecates, with a reason and an existing successor.
    let deprecate = |reason: &str, successor: &str| pb::DeprecateServiceRequest {
        service_id: "wohngeld-nrw".into(),
        reason: reason.into(),
        successor_id: successor.into(),
    };
    let refused = |r: Result<tonic::Response<pb::ServiceInfo>, tonic::Status>| r.unwrap_err().code();
    let mut bayern = CatalogServiceClient::new(w.channel(&land("09")).await);
    assert_eq!(refused(bayern.deprecate_service(deprecate("weg", "")).await), tonic::Code::PermissionDenied);
    let mut nrw = CatalogServiceClient::new(w.channel(&land(NRW)).await);
    assert_eq!(refused(nrw.deprecate_service(deprecate(" ", "")).await), tonic::Code::InvalidArgument);
    assert_eq!(refused(nrw.deprecate_service(deprecate("weg", "gibt-es-nicht")).await), tonic::Code::NotFound);
    assert_eq!(refused(nrw.deprecate_service(deprecate("weg", "wohngeld-nrw")).await), tonic::Code::InvalidArgument);
    let info =
        nrw.deprecate_service(deprecate("Ab 2027 nur noch Wohngeld Plus", "wohngeld-plus")).await.unwrap().into_inner();
    let d = info.deprecated.expect("the notice");
    assert_eq!((d.reason.as_str(), d.successor_id.as_str()), ("Ab 2027 nur noch Wohngeld Plus", "wohngeld-plus"));
    // Re-registering keeps the notice.
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    let again = CatalogServiceClient::new(w.channel(&kommune(DORTMUND)).await)
        .get_service(pb::GetServiceRequest { id: "wohngeld-nrw".into() })
        .await
        .unwrap()
        .into_inner();
    assert!(again.deprecated.is_some());

    node.sync().await.unwrap();
    let service = |node: &efa_node::Agent| {
        node.status().unwrap().services.into_iter().find(|s| s.service == "wohngeld-nrw").unwrap()
    };
    assert_eq!(
        service(&node).deprecated.as_deref(),
        Some("deprecated by Land 05: Ab 2027 nur noch Wohngeld Plus (successor: wohngeld-plus)")
    );

    // A recall: the node keeps serving, says so, and tells the hub; the operator retires.
    let yanked = ReleaseServiceClient::new(w.channel(&land(NRW)).await)
        .yank_release(pb::YankReleaseRequest {
            service_id: "wohngeld-nrw".into(),
            version: "1.0.0".into(),
            reason: "Fehlerhafte Bescheide".into(),
            recall: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(yanked.yanked && yanked.recalled);
    node.sync().await.unwrap();
    let s = service(&node);
    assert_eq!(s.running.as_deref(), Some("1.0.0"), "nothing stops on its own");
    assert_eq!(s.recalled, vec![("1.0.0".to_string(), "Fehlerhafte Bescheide".to_string())]);
    let record = w.adopters("wohngeld-nrw").await.into_iter().find(|a| a.ags == DORTMUND).unwrap();
    assert!(record.reason.contains("still serving recalled release"), "{}", record.reason);
    node.retire("wohngeld-nrw", "Rückruf des Landes umgesetzt").await.unwrap();
    // The operator's service page shows the notice, the successor and the recall.
    let page = w
        .dashboard_client()
        .get(format!("{}services/wohngeld-nrw", w.dashboard_url()))
        .bearer_auth(w.dashboard_token("bund"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for text in ["Abgekündigt", "Ab 2027 nur noch Wohngeld Plus", "/services/wohngeld-plus", "Rückruf"] {
        assert!(page.contains(text), "the service page should show {text:?}");
    }
    let record = w.adopters("wohngeld-nrw").await.into_iter().find(|a| a.ags == DORTMUND).unwrap();
    assert_eq!((record.state, record.running_version.as_str()), (pb::AdoptionState::Retired as i32, ""));
}
