//! Municipal IT service providers: one certificate runs the nodes of several Kommunen, as
//! far as an operator granted it; every report names the Kommune it is for.

use efa_domain::authz::Identity;
use efa_domain::model::release::UpdatePolicy;
use efa_node::Handled;
use efa_proto::v1 as pb;
use efa_tests::*;
use tonic::Code;

fn provider() -> Identity {
    Identity::Provider("citkomm".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_runs_the_nodes_of_the_kommunen_it_was_granted_and_no_others() {
    let w = World::new().await;
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    w.publish(NRW, "wohngeld-nrw", "1.0.0", &w.standard_bundle("1.0.0")).await.unwrap();

    // Only an operator grants; a provider or a Land cannot grant itself anything.
    let grant = |ags: &[&str]| pb::ProviderGrant {
        provider: "citkomm".into(),
        kommunen: ags.iter().map(|a| a.to_string()).collect(),
        updated_at_ms: 0,
    };
    for who in [provider(), land(NRW)] {
        let err = CatalogServiceClient::new(w.channel(&who).await).set_provider_grant(grant(&[DORTMUND])).await;
        assert_eq!(err.unwrap_err().code(), Code::PermissionDenied);
    }
    let err = CatalogServiceClient::new(w.channel(&operator()).await).set_provider_grant(grant(&["99999999"])).await;
    assert_eq!(err.unwrap_err().code(), Code::PermissionDenied, "an AGS outside the register");
    let set = CatalogServiceClient::new(w.channel(&operator()).await)
        .set_provider_grant(grant(&[ESSEN, BIELEFELD]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(set.kommunen, vec![ESSEN.to_string(), BIELEFELD.to_string()], "sorted by AGS");

    // Two nodes with the provider's certificate, one per granted Kommune.
    let tls = w.fed.client_tls(&provider()).unwrap();
    for ags in [ESSEN, BIELEFELD] {
        let config =
            w.node_config(ags, &[Sub { service: "wohngeld-nrw", policy: UpdatePolicy::Auto }]).with_tls(tls.clone());
        let node = efa_node::Agent::new(config).unwrap();
        assert!(matches!(node.sync().await.unwrap()[..], [Handled::Deployed { .. }]), "{ags}");
    }
    // Each report names its Kommune.
    let adopters = w.adopters("wohngeld-nrw").await;
    let mut running: Vec<&str> = adopters.iter().map(|a| a.ags.as_str()).collect();
    running.sort();
    assert_eq!(running, vec![ESSEN, BIELEFELD]);

    // A Kommune it was not granted is refused, naming the rule.
    let config =
        w.node_config(DORTMUND, &[Sub { service: "wohngeld-nrw", policy: UpdatePolicy::Auto }]).with_tls(tls.clone());
    let err = efa_node::Agent::new(config).unwrap().sync().await.unwrap_err().to_string();
    assert!(err.contains("not granted to act for Kommune 05913000"), "{err}");
    // As itself, a provider is no Kommune.
    let err = report_as_itself(&w, &provider(), "wohngeld-nrw").await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // A provider reads its own grant.
    let mine = CatalogServiceClient::new(w.channel(&provider()).await)
        .get_provider_grant(pb::GetProviderGrantRequest { provider: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(mine.kommunen.len(), 2);
}
