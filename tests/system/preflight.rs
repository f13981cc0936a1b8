//! Pre-flight: before a release is deployed, each node checks its Kommune's parameters
//! against the release's signed schema and reports ready or blocked (with what is missing
//! and how the schema changed), under every policy and before approval under manual. The
//! publishing Land sees the result per release.

use efa_domain::model::release::UpdatePolicy;
use efa_domain::params::ParamValue;
use efa_node::Handled;
use efa_proto::v1 as pb;
use efa_tests::*;
use tonic::Code;

fn with_office_email() -> Vec<pb::ParameterSpec> {
    let mut p = standard_parameters();
    p.push(pb::ParameterSpec {
        name: "office_email".into(),
        kind: pb::ParameterKind::Email as i32,
        required: true,
        description: "Postfach des zuständigen Amts".into(),
        max_length: 0,
    });
    p
}

async fn preflight(w: &World, version: &str) -> pb::PreflightResponse {
    ReportServiceClient::new(w.channel(&land(NRW)).await)
        .preflight(pb::PreflightRequest { service_id: "wohngeld-nrw".into(), version: version.into() })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_required_parameter_blocks_the_update_and_the_land_sees_who_and_why() {
    let w = World::new().await;
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    w.publish(NRW, "wohngeld-nrw", "1.0.0", &w.standard_bundle("1.0.0")).await.unwrap();

    let dortmund = w.node(DORTMUND, &[Sub { service: "wohngeld-nrw", policy: UpdatePolicy::Auto }]);
    assert!(matches!(dortmund.sync().await.unwrap()[..], [Handled::Deployed { .. }]));
    // Under manual, the check runs and is reported before anyone approves.
    let essen = w.node(ESSEN, &[Sub { service: "wohngeld-nrw", policy: UpdatePolicy::Manual }]);
    assert!(matches!(essen.sync().await.unwrap()[..], [Handled::AwaitingApproval { .. }]));
    // Under patch_only the first install waits for approval; checked all the same.
    let bielefeld = w.node(BIELEFELD, &[Sub { service: "wohngeld-nrw", policy: UpdatePolicy::PatchOnly }]);
    assert!(matches!(bielefeld.sync().await.unwrap()[..], [Handled::AwaitingApproval { .. }]));
    let first = preflight(&w, "1.0.0").await;
    assert_eq!((first.ready, first.blocked), (3, 0), "{first:?}");

    // 1.1.0 needs the office's e-mail address, which neither Kommune has set.
    w.register_with(NRW, "wohngeld-nrw", "10092", with_office_email()).await.unwrap();
    w.publish(NRW, "wohngeld-nrw", "1.1.0", &w.standard_bundle("1.1.0")).await.unwrap();
    let handled = dortmund.sync().await.unwrap();
    let [Handled::Failed { reason, .. }] = &handled[..] else { panic!("{handled:?}") };
    assert!(reason.contains("missing required parameter 'office_email'"), "{reason}");
    let current = dortmund.deployer().current_version(&"wohngeld-nrw".parse().unwrap()).unwrap();
    assert_eq!(current.as_deref(), Some("1.0.0"), "a blocked update leaves the running version alone");
    let handled = essen.sync().await.unwrap();
    assert!(handled.iter().any(|h| matches!(h, Handled::AwaitingApproval { version, .. } if version == "1.1.0")));
    bielefeld.sync().await.unwrap();
    let st = essen.status().unwrap();
    let last_error = st.services[0].last_error.clone().unwrap_or_default();
    assert!(last_error.contains("pre-flight of 1.1.0") && last_error.contains("office_email"), "{last_error}");

    // The Land sees both blocked, why, and what changed for the one that runs 1.0.0.
    let report = preflight(&w, "1.1.0").await;
    assert_eq!((report.ready, report.blocked), (0, 3), "{report:?} (auto, manual and patch_only alike)");
    let row = report.kommunen.iter().find(|k| k.ags == DORTMUND).unwrap();
    assert!(!row.ready);
    assert_eq!(row.kommune_name, "Dortmund, Stadt");
    assert!(row.problems.iter().any(|p| p.contains("office_email")), "{row:?}");
    assert_eq!(row.schema_changes, vec!["new required parameter 'office_email'".to_string()]);

    // Dortmund sets the parameter: ready, and deployed.
    let mut config = w.node_config(DORTMUND, &[Sub { service: "wohngeld-nrw", policy: UpdatePolicy::Auto }]);
    let service = config.services.get_mut(&"wohngeld-nrw".parse().unwrap()).unwrap();
    service.parameters.insert("office_email".into(), ParamValue::Text("wohngeld@stadtdo.de".into()));
    let dortmund = efa_node::Agent::new(config).unwrap();
    let handled = dortmund.sync().await.unwrap();
    assert!(
        handled.iter().any(|h| matches!(h, Handled::Deployed { version, .. } if version == "1.1.0")),
        "{handled:?}"
    );
    let report = preflight(&w, "1.1.0").await;
    assert_eq!((report.ready, report.blocked), (1, 2), "{report:?}");
    assert_eq!(report.kommunen[0].ags, ESSEN, "blocked Kommunen come first, by AGS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_checks_the_signed_schema_not_the_hubs_word() {
    let w = World::new().await;
    w.register_with(NRW, "wohngeld-nrw", "10092", with_office_email()).await.unwrap();
    w.publish(NRW, "wohngeld-nrw", "1.0.0", &w.standard_bundle("1.0.0")).await.unwrap();
    // The registered schema changes afterwards (a hub could claim anything here); the
    // release was signed with office_email required, and that is what counts.
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    let node = w.node(DORTMUND, &[Sub { service: "wohngeld-nrw", policy: UpdatePolicy::Auto }]);
    let handled = node.sync().await.unwrap();
    let [Handled::Failed { reason, .. }] = &handled[..] else { panic!("{handled:?}") };
    assert!(reason.contains("office_email"), "{reason}");

    // A manifest whose signed schema differs from the registered one is refused at once.
    let key = w.fed.signing_key(&NRW.parse().unwrap()).unwrap();
    let dir = w.standard_bundle("1.0.1");
    let spec = efa_cli::publish::PublishSpec {
        dir: &dir,
        service_id: "wohngeld-nrw".parse().unwrap(),
        version: "1.0.1".into(),
        channel: "stable".parse().unwrap(),
        land: NRW.parse().unwrap(),
        release_notes: String::new(),
        signing_key: &key,
        rollout: None,
    };
    let stale: Vec<efa_domain::params::ParameterSpec> =
        with_office_email().into_iter().map(|p| p.try_into().unwrap()).collect();
    let signed = efa_cli::publish::build_signed_manifest_with(&spec, Some(stale)).unwrap();
    let err = efa_cli::publish::publish_raw(
        w.channel(&land(NRW)).await,
        signed.manifest,
        signed.signature,
        String::new(),
        signed.files,
        |_, _| {},
    )
    .await
    .unwrap_err();
    let status = hub_status(err);
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("differ from those registered"), "{}", status.message());
    // `efa publish` signs the registered schema and goes through.
    w.publish(NRW, "wohngeld-nrw", "1.0.1", &w.standard_bundle("1.0.1")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_reports_and_results_are_checked() {
    let w = World::new().await;
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    w.publish(NRW, "wohngeld-nrw", "1.0.0", &w.standard_bundle("1.0.0")).await.unwrap();
    let mut adoption = AdoptionServiceClient::new(w.channel(&kommune(DORTMUND)).await);
    let report = |version: &str, problems: Vec<String>| pb::PreflightReport {
        service_id: "wohngeld-nrw".into(),
        version: version.into(),
        problems,
        schema_changes: vec![],
    };
    let err = adoption.report_preflight(report("9.9.9", vec![])).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{}", err.message());
    let err = adoption.report_preflight(report("1.0.0", vec!["x".into(); 65])).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    let err = adoption.report_preflight(report("1.0.0", vec!["a\u{1b}[2Jb".into()])).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    let err = AdoptionServiceClient::new(w.channel(&land(NRW)).await)
        .report_preflight(report("1.0.0", vec![]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "only a Kommune reports its pre-flight");

    // Results: for operators and the publishing Land, not for other Länder or Kommunen.
    let ask = |id: &efa_domain::authz::Identity| {
        let id = id.clone();
        let w = &w;
        async move {
            ReportServiceClient::new(w.channel(&id).await)
                .preflight(pb::PreflightRequest { service_id: "wohngeld-nrw".into(), version: "1.0.0".into() })
                .await
        }
    };
    assert!(ask(&operator()).await.is_ok());
    assert_eq!(ask(&land("09")).await.unwrap_err().code(), Code::PermissionDenied);
    assert_eq!(ask(&kommune(ESSEN)).await.unwrap_err().code(), Code::PermissionDenied);
}

/// A Kommune sets its well-known values (here its privacy statement) once for all services;
/// a Land cannot declare a well-known name with another kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kommune_wide_values_fill_every_service_that_declares_them() {
    let w = World::new().await;
    let mut schema = standard_parameters();
    schema.push(pb::ParameterSpec {
        name: "datenschutz_url".into(),
        kind: pb::ParameterKind::Text as i32,
        required: true,
        ..Default::default()
    });
    let err = w.register_with(NRW, "wohngeld-nrw", "10092", schema.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("well-known EfA parameter of kind url"), "{}", err.message());
    schema.last_mut().unwrap().kind = pb::ParameterKind::Url as i32;
    for id in ["wohngeld-nrw", "hundehaltung-nrw"] {
        w.register_with(NRW, id, if id == "wohngeld-nrw" { "10092" } else { "10160" }, schema.clone()).await.unwrap();
        w.publish(NRW, id, "1.0.0", &w.standard_bundle("1.0.0")).await.unwrap();
    }
    let mut config = w.node_config(
        DORTMUND,
        &[
            Sub { service: "wohngeld-nrw", policy: UpdatePolicy::Auto },
            Sub { service: "hundehaltung-nrw", policy: UpdatePolicy::Auto },
        ],
    );
    config
        .parameters
        .insert("datenschutz_url".into(), ParamValue::Text("https://www.dortmund.example/datenschutz".into()));
    // A value no service declares is not an error for the shared table.
    config.parameters.insert("logo_url".into(), ParamValue::Text("https://www.dortmund.example/logo.svg".into()));
    let handled = efa_node::Agent::new(config).unwrap().sync().await.unwrap();
    assert_eq!(handled.iter().filter(|h| matches!(h, Handled::Deployed { .. })).count(), 2, "{handled:?}");
}
