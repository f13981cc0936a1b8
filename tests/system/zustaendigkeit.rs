//! Zuständigkeit: a Kreis (or a Gemeindeverband) runs one deployment for its Gemeinden and
//! reports it for each, so coverage counts them; it acts for its own Gemeinden only, and
//! its identity is checked against the register.

use efa_domain::authz::Identity;
use efa_domain::model::release::UpdatePolicy;
use efa_node::{Agent, Handled};
use efa_proto::v1 as pb;
use efa_tests::*;
use tonic::Code;

const UNNA: &str = "05978";
/// The Gemeinden of Kreis Unna (register 2023-11-30); the Kreisstadt Unna first.
const KREIS_UNNA: [&str; 10] = [
    "05978036", "05978004", "05978008", "05978012", "05978016", "05978020", "05978024", "05978028", "05978032",
    "05978040",
];

fn kreis(code: &str) -> Identity {
    Identity::parse_uri(&format!("efa://kreis/{code}")).unwrap()
}

/// WhoAmI as `who`, acting for `ags`.
async fn who_am_i_for(w: &World, who: &Identity, ags: &str) -> Result<pb::WhoAmIResponse, tonic::Status> {
    let mut req = tonic::Request::new(pb::WhoAmIRequest {});
    req.metadata_mut().insert("x-efa-on-behalf-of", ags.parse().unwrap());
    CatalogServiceClient::new(w.channel(who).await).who_am_i(req).await.map(|r| r.into_inner())
}

/// A node of Kreis Unna that runs `service` for the Kreisstadt and `covers`.
fn kreis_node(w: &World, service: &'static str, covers: &[&str]) -> Agent {
    let mut config = w
        .node_config(KREIS_UNNA[0], &[Sub { service, policy: UpdatePolicy::Auto }])
        .with_tls(w.fed.client_tls(&kreis(UNNA)).unwrap());
    config.covers = covers.iter().map(|a| a.parse().unwrap()).collect();
    Agent::new(config).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kreis_deployment_covers_its_gemeinden() {
    let w = World::new().await;
    w.register(NRW, "bafoeg-nrw", "10056").await.unwrap();
    w.publish(NRW, "bafoeg-nrw", "1.0.0", &w.standard_bundle("1.0.0")).await.unwrap();

    let node = kreis_node(&w, "bafoeg-nrw", &KREIS_UNNA[1..]);
    let handled = node.sync().await.unwrap();
    assert!(matches!(&handled[..], [Handled::Deployed { .. }]), "{handled:?}");
    // One deployment on disk, reported for each of the ten Gemeinden.
    let adopters = w.adopters("bafoeg-nrw").await;
    let mut running: Vec<&str> =
        adopters.iter().filter(|a| a.running_version == "1.0.0").map(|a| a.ags.as_str()).collect();
    running.sort();
    let mut all = KREIS_UNNA.to_vec();
    all.sort();
    assert_eq!(running, all);
    let rows = ReportServiceClient::new(w.channel(&operator()).await)
        .coverage(pb::CoverageRequest { service_id: "bafoeg-nrw".into(), land_code: String::new() })
        .await
        .unwrap()
        .into_inner()
        .rows;
    let unna = rows.iter().find(|r| r.code == UNNA).expect("a row for Kreis Unna");
    assert_eq!((unna.adopted, unna.total), (10, 10));
    assert_eq!(unna.inhabitants_adopted, unna.inhabitants_total, "all of the Kreis's inhabitants are covered");
    assert!(unna.inhabitants_total > 390_000, "{}", unna.inhabitants_total);

    // A second sync sends nothing twice.
    node.sync().await.unwrap();
    let history = w.history("05978024").await;
    assert_eq!(history.len(), 2, "Lünen: evaluating, deployed: {history:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kreis_or_amt_acts_for_its_own_gemeinden_only() {
    let w = World::new().await;
    w.register(NRW, "bafoeg-nrw", "10056").await.unwrap();
    w.publish(NRW, "bafoeg-nrw", "1.0.0", &w.standard_bundle("1.0.0")).await.unwrap();

    // Kreis Unna for Lünen, yes; for Dortmund (kreisfrei, Kreis 05913), no.
    let me = who_am_i_for(&w, &kreis(UNNA), "05978024").await.unwrap();
    assert_eq!((me.role.as_str(), me.key.as_str()), ("kommune", "05978024"));
    let err = who_am_i_for(&w, &kreis(UNNA), DORTMUND).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("lies in Kreis 05913"), "{}", err.message());
    // As itself a Kreis reports nothing.
    let err = report_as_itself(&w, &kreis(UNNA), "bafoeg-nrw").await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // A Kreis code the register does not know.
    let err =
        CatalogServiceClient::new(w.channel(&kreis("05999")).await).who_am_i(pb::WhoAmIRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("not a Kreis of the register"), "{}", err.message());

    // An Amt in Kreis Plön (Schleswig-Holstein) acts for its members: Barmissen is one,
    // Ascheberg (Holstein), amtsfrei, is not.
    let amt = Identity::parse_uri("efa://verband/010575747").unwrap();
    assert_eq!(who_am_i_for(&w, &amt, "01057002").await.unwrap().key, "01057002");
    assert_eq!(who_am_i_for(&w, &amt, "01057001").await.unwrap_err().code(), Code::PermissionDenied);
    let nowhere = Identity::parse_uri("efa://verband/059789999").unwrap();
    let err = CatalogServiceClient::new(w.channel(&nowhere).await).who_am_i(pb::WhoAmIRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());

    // A node configured to cover a Gemeinde outside the Kreis is stopped before it reports.
    let node = kreis_node(&w, "bafoeg-nrw", &["05978024", DORTMUND]);
    let err = node.sync().await.unwrap_err().to_string();
    assert!(err.contains("covers") && err.contains("05913000") && err.contains("lies in Kreis 05913"), "{err}");
    assert!(w.adopters("bafoeg-nrw").await.is_empty(), "nothing was reported");
}
