//! Writes from many threads go through the commit thread: every one is acknowledged once,
//! the event log stays gapless, and everything acknowledged is there after a reopen.

use efa_domain::authz::Identity;
use efa_domain::model::adoption::{AdoptionReport, AdoptionState};
use efa_domain::model::catalog::NewService;
use efa_domain::model::ids::{Channel, LandCode, ServiceId};
use efa_domain::model::release::UpdatePolicy;
use efa_domain::model::subscription::SubscriptionTarget;
use efa_registry::import::{bundled_gv100ad, bundled_ozg};
use efa_registry::store::SledStore;
use efa_registry::Registry;
use std::sync::Arc;

#[test]
fn concurrent_writes_are_acknowledged_once_each_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let threads = 8;
    let per_thread = 25;
    let head = {
        let registry = Registry::new(Arc::new(SledStore::open(dir.path()).unwrap()));
        registry.seed_bundled().unwrap();
        let nrw: LandCode = "05".parse().unwrap();
        let service: ServiceId = "wohngeld-nrw".parse().unwrap();
        registry
            .register_service(
                &Identity::Land(nrw.clone()),
                NewService {
                    id: service.clone(),
                    ozg_id: bundled_ozg().unwrap()[0].ozg_id.clone(),
                    leistungsschluessel: None,
                    title: "Wohngeld".into(),
                    description: String::new(),
                    parameters: vec![],
                    adoption_public: false,
                    more_leistungsschluessel: vec![],
                },
            )
            .unwrap();
        let kommunen: Vec<_> = bundled_gv100ad()
            .unwrap()
            .kommunen
            .into_iter()
            .filter(|k| k.ags.land() == nrw)
            .take(threads * per_thread)
            .map(|k| k.ags)
            .collect();
        assert_eq!(kommunen.len(), threads * per_thread);
        let mut seqs: Vec<u64> = std::thread::scope(|s| {
            let handles: Vec<_> = kommunen
                .chunks(per_thread)
                .map(|chunk| {
                    let (registry, service) = (&registry, service.clone());
                    s.spawn(move || {
                        // Each Kommune subscribes and reports: subscriptions (one transaction
                        // each) and reports (runs) interleave in the commit thread's batches.
                        chunk
                            .iter()
                            .flat_map(|ags| {
                                let target = SubscriptionTarget::Service(service.clone());
                                let channel: Channel = "stable".parse().unwrap();
                                let subscribed =
                                    registry.subscribe(ags, target, channel, UpdatePolicy::Auto).unwrap().1.seq;
                                let report = AdoptionReport {
                                    service_id: service.clone(),
                                    version: None,
                                    state: AdoptionState::Rejected,
                                    reason: "kein Bedarf".into(),
                                };
                                let (record, event) =
                                    futures_executor::block_on(registry.report_adoption(ags, report)).unwrap();
                                assert_eq!(&record.latest.ags, ags);
                                [subscribed, event.seq]
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        seqs.sort_unstable();
        // One registration event, then one event per subscription and report, none missing or doubled.
        assert_eq!(seqs, (2..2 + 2 * (threads * per_thread) as u64).collect::<Vec<_>>());
        let totals = registry.service_totals(&service).unwrap();
        assert_eq!((totals.records, totals.rejected), ((threads * per_thread) as u32, (threads * per_thread) as u32));
        registry.head_seq().unwrap()
    };
    let reopened = Registry::new(Arc::new(SledStore::open(dir.path()).unwrap()));
    assert_eq!(reopened.head_seq().unwrap(), head);
    assert_eq!(reopened.events_after(0, usize::MAX).unwrap().len() as u64, head);
}
