//! Stopping a hub: once it says it stopped, nothing of it holds the store any more, so a
//! restart (or an operator's tool) can open the store at once.

use efa_domain::authz::Identity;
use efa_domain::model::catalog::NewService;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_hub_has_closed_its_store() {
    let dir = tempfile::tempdir().unwrap();
    let ozg = efa_registry::import::bundled_ozg().unwrap();
    let land = Identity::Land("05".parse().unwrap());
    for round in 0..5 {
        let mut config = efa_hub::HubConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf(), None);
        config.insecure_dev = true;
        // The log's integrator starts a round for every new event, so the stop finds it busy.
        config.checkpoint_interval = Duration::from_millis(1);
        let hub = efa_hub::start(config).await.unwrap();
        let registry = Arc::downgrade(&hub.registry);
        for i in 0..20 {
            let new = NewService {
                id: format!("stop-{round}-{i}").parse().unwrap(),
                ozg_id: ozg[i % ozg.len()].ozg_id.clone(),
                leistungsschluessel: None,
                title: format!("Stop {round}.{i}"),
                description: String::new(),
                parameters: vec![],
                adoption_public: false,
                more_leistungsschluessel: vec![],
            };
            hub.registry.register_service(&land, new).unwrap();
        }
        hub.shutdown().await.unwrap();
        assert!(registry.upgrade().is_none(), "round {round}: the registry outlived the hub's stop");
        for db in [dir.path().join("db"), efa_registry::store::sled::log_path(&dir.path().join("db"))] {
            efa_registry::store::sled::database_config(&db)
                .open()
                .unwrap_or_else(|e| panic!("round {round}: {} is still held: {e}", db.display()));
        }
    }
}
