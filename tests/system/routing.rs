//! FIT-Connect routing: a node declares the destination it is configured with for the
//! version it runs; the hub answers "Leistungsschlüssel + ARS → destination".

use efa_domain::model::release::UpdatePolicy;
use efa_domain::params::ParamValue;
use efa_node::Handled;
use efa_proto::v1 as pb;
use efa_tests::*;
use tonic::Code;

const WOHNGELD_KEY: &str = "99107023000000";
/// Wohngeld Bewilligung erneut (LeiKa), a further key the service covers.
const WOHNGELD_WEITERLEISTUNG: &str = "99107023017002";
const DORTMUND_DESTINATION: &str = "7b0b3d6e-1f0a-4c2e-9a4b-2d1f0e9c8a7b";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_routing_table_lists_per_ars_the_destination_the_running_node_declared() {
    let w = World::new().await;
    let mut parameters = standard_parameters();
    parameters.push(pb::ParameterSpec {
        name: "fit_connect_destination".into(),
        kind: pb::ParameterKind::FitConnectDestination as i32,
        required: true,
        description: "FIT-Connect Destination-ID".into(),
        max_length: 0,
    });
    CatalogServiceClient::new(w.channel(&land(NRW)).await)
        .register_service(pb::RegisterServiceRequest {
            id: "wohngeld-nrw".into(),
            ozg_id: "10092".into(),
            leistungsschluessel: WOHNGELD_KEY.into(),
            title: "Wohngeld".into(),
            description: String::new(),
            parameters,
            adoption_public: false,
            // A service may cover further Leistungen; routing answers for each key.
            more_leistungsschluessel: vec![WOHNGELD_WEITERLEISTUNG.into()],
        })
        .await
        .unwrap();
    w.publish(NRW, "wohngeld-nrw", "1.0.0", &w.standard_bundle("1.0.0")).await.unwrap();

    // A destination that is no UUID is caught by the pre-flight check, before deploying.
    let mut config = w.node_config(DORTMUND, &[Sub { service: "wohngeld-nrw", policy: UpdatePolicy::Auto }]);
    let params = &mut config.services.get_mut(&"wohngeld-nrw".parse().unwrap()).unwrap().parameters;
    params.insert("fit_connect_destination".into(), ParamValue::Text("dest-dortmund".into()));
    let handled = efa_node::Agent::new(config.clone()).unwrap().sync().await.unwrap();
    let [Handled::Failed { reason, .. }] = &handled[..] else { panic!("{handled:?}") };
    assert!(reason.contains("not a FIT-Connect destination"), "{reason}");

    let params = &mut config.services.get_mut(&"wohngeld-nrw".parse().unwrap()).unwrap().parameters;
    params.insert("fit_connect_destination".into(), ParamValue::Text(DORTMUND_DESTINATION.to_uppercase()));
    let node = efa_node::Agent::new(config).unwrap();
    assert!(matches!(node.sync().await.unwrap()[..], [Handled::Deployed { .. }]));

    let routing = |id: efa_domain::authz::Identity| {
        let w = &w;
        async move {
            ReportServiceClient::new(w.channel(&id).await)
                .routing(pb::RoutingRequest { leistungsschluessel: WOHNGELD_KEY.into() })
                .await
        }
    };
    let table = routing(kommune(ESSEN)).await.unwrap().into_inner();
    assert_eq!(table.rows.len(), 1, "{table:?}");
    let further = ReportServiceClient::new(w.channel(&kommune(ESSEN)).await)
        .routing(pb::RoutingRequest { leistungsschluessel: WOHNGELD_WEITERLEISTUNG.into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(further.rows, table.rows, "the further key routes to the same destination");
    let row = &table.rows[0];
    assert_eq!((row.ars.as_str(), row.ags.as_str()), ("059130000000", DORTMUND));
    assert_eq!((row.service_id.as_str(), row.version.as_str()), ("wohngeld-nrw", "1.0.0"));
    assert_eq!(row.destination, DORTMUND_DESTINATION, "kept in lower case");

    // A Kommune declares only for what it runs; a bad key or destination is refused.
    let mut essen = AdoptionServiceClient::new(w.channel(&kommune(ESSEN)).await);
    let declaration = |destination: &str| pb::RoutingDeclaration {
        service_id: "wohngeld-nrw".into(),
        version: "1.0.0".into(),
        destinations: vec![pb::Destination {
            parameter: "fit_connect_destination".into(),
            destination: destination.into(),
        }],
    };
    let err = essen.declare_routing(declaration(DORTMUND_DESTINATION)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    let err = essen.declare_routing(declaration("not-a-uuid")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    let err = routing(operator()).await;
    assert!(err.is_ok());
    let err = ReportServiceClient::new(w.channel(&operator()).await)
        .routing(pb::RoutingRequest { leistungsschluessel: "12345".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}
