//! The behavioural test suite every [`super::Store`] backend must pass.

/// One behavioural test suite that every backend must pass.
#[cfg(test)]
#[macro_export]
macro_rules! store_test_suite {
    ($make:expr) => {
        use efa_domain::error::Classify as _;
        use efa_domain::model::adoption::*;
        use efa_domain::model::catalog::*;
        use efa_domain::model::event::EventKind;
        use efa_domain::model::release::*;
        use $crate::store::Store;

        fn service() -> Service {
            Service {
                id: "wohngeld-nrw".parse().unwrap(),
                ozg_id: "10001".parse().unwrap(),
                leistungsschluessel: None,
                title: "Wohngeld".into(),
                description: String::new(),
                land: "05".parse().unwrap(),
                themenfeld: "Bauen & Wohnen".into(),
                lebenslage: "Wohnen".into(),
                parameters: vec![],
                registered_at_ms: 1,
                adoption_public: false,
                more_leistungsschluessel: vec![],
                deprecated: None,
            }
        }

        /// Registers [`service`] in the store and returns it.
        fn registered(store: &dyn Store) -> Service {
            let s = service();
            store
                .put_service(&s, EventKind::ServiceRegistered { service_id: s.id.clone(), land: s.land.clone() })
                .unwrap();
            s
        }

        fn release(v: &str) -> Release {
            Release {
                service_id: "wohngeld-nrw".parse().unwrap(),
                version: v.parse().unwrap(),
                channel: Default::default(),
                land: "05".parse().unwrap(),
                content_digest: efa_domain::bundle::Digest::of(v.as_bytes()),
                total_size: 1,
                file_count: 1,
                release_notes: String::new(),
                published_at_ms: 2,
                manifest: vec![],
                signature: vec![],
                yank: None,
            }
        }

        #[test]
        fn a_rollout_is_stored_with_each_transition_as_an_event() {
            use efa_domain::model::rollout::{Gates, Members, Ring, Rollout, RolloutPlan, Status, Transition};
            let store = $make;
            let sid: efa_domain::model::ids::ServiceId = "wohngeld-nrw".parse().unwrap();
            let v: semver::Version = "1.1.0".parse().unwrap();
            assert!(store.rollout(&sid, &v, None).unwrap().is_none());
            let plan = RolloutPlan {
                rings: vec![Ring {
                    name: "Pilot".into(),
                    members: Members::Kommunen(["05913000".parse().unwrap()].into()),
                }],
                gates: Gates { min_healthy: 1, ..Default::default() },
                decide_within_secs: None,
            };
            let mut r = Rollout::start(plan, 10).unwrap();
            let started = store.put_rollout(&sid, &v, None, &r, Transition::Started, 10).unwrap();
            let t = r.promote(20).unwrap();
            let opened = store.put_rollout(&sid, &v, None, &r, t.clone(), 20).unwrap();
            assert_eq!(opened.seq, started.seq + 1);
            assert_eq!(store.rollout(&sid, &v, None).unwrap(), Some(r.clone()));
            assert_eq!(r.status, Status::Complete);
            // An offering Land's own plan for the same release sits beside it.
            let bayern: efa_domain::model::ids::LandCode = "09".parse().unwrap();
            let own = Rollout::start(r.plan.clone(), 30).unwrap();
            let land_started = store.put_rollout(&sid, &v, Some(&bayern), &own, Transition::Started, 30).unwrap();
            assert_eq!(store.rollout(&sid, &v, Some(&bayern)).unwrap(), Some(own.clone()));
            assert_eq!(store.rollout(&sid, &v, None).unwrap(), Some(r.clone()));
            let all = store.rollouts().unwrap();
            assert_eq!(
                all,
                vec![(sid.clone(), v.clone(), None, r), (sid.clone(), v.clone(), Some(bayern.clone()), own)]
            );
            assert_eq!(
                land_started.kind,
                EventKind::LandRolloutChanged {
                    service_id: sid.clone(),
                    version: v.clone(),
                    land: bayern,
                    transition: Transition::Started
                }
            );
            let kinds: Vec<_> = store.events_after(0, 10).unwrap().into_iter().map(|e| e.kind).collect();
            assert_eq!(
                kinds,
                vec![
                    EventKind::RolloutChanged {
                        service_id: sid.clone(),
                        version: v.clone(),
                        transition: Transition::Started
                    },
                    EventKind::RolloutChanged { service_id: sid.clone(), version: v.clone(), transition: t },
                    land_started.kind.clone(),
                ]
            );
        }
        #[test]
        fn a_release_and_its_rollout_are_stored_together_or_not_at_all() {
            use efa_domain::model::rollout::{Gates, Members, Ring, Rollout, RolloutPlan, Transition};
            let store = $make;
            registered(&store);
            let plan = RolloutPlan {
                rings: vec![Ring { name: "Pilot".into(), members: Members::Share { percent: 10 } }],
                gates: Gates { min_healthy: 1, ..Default::default() },
                decide_within_secs: None,
            };
            let r = Rollout::start(plan, 2).unwrap();
            let rel = release("1.1.0");
            let (published, started) = store.insert_release_with_rollout(&rel, &r, &[]).unwrap();
            assert_eq!(started.seq, published.seq + 1);
            assert_eq!(
                published.kind,
                EventKind::ReleasePublished { service_id: rel.service_id.clone(), version: rel.version.clone() }
            );
            assert_eq!(
                started.kind,
                EventKind::RolloutChanged {
                    service_id: rel.service_id.clone(),
                    version: rel.version.clone(),
                    transition: Transition::Started
                }
            );
            assert_eq!(store.rollout(&rel.service_id, &rel.version, None).unwrap(), Some(r.clone()));
            assert!(store.release(&rel.service_id, &rel.version).unwrap().is_some());

            // The version exists: refused, and neither the rollout nor the log changes.
            let mut other = r.clone();
            other.pause("a second plan").unwrap();
            let head = store.head_seq().unwrap();
            let err = store.insert_release_with_rollout(&rel, &other, &[]).unwrap_err();
            assert_eq!(err.kind(), efa_domain::error::ErrorKind::AlreadyExists, "{err}");
            assert_eq!(store.rollout(&rel.service_id, &rel.version, None).unwrap(), Some(r));
            assert_eq!(store.head_seq().unwrap(), head);
        }

        /// The commit thread hands a run of publishes over at once: each release gets its
        /// events in order, and one whose version exists fails alone.
        #[test]
        fn a_run_of_releases_is_inserted_as_one_after_another() {
            use efa_domain::model::rollout::{Gates, Members, Ring, Rollout, RolloutPlan};
            use $crate::store::{InlineBlob, NewRelease};
            let store = $make;
            let s = registered(&store);
            store.insert_release(&release("1.0.0"), &[]).unwrap();
            let head = store.head_seq().unwrap();
            let plan = RolloutPlan {
                rings: vec![Ring { name: "Pilot".into(), members: Members::Share { percent: 10 } }],
                gates: Gates { min_healthy: 1, ..Default::default() },
                decide_within_secs: None,
            };
            let small = InlineBlob {
                digest: efa_domain::bundle::Digest::of(b"<h1>1.2.0</h1>"),
                bytes: b"<h1>1.2.0</h1>".to_vec(),
            };
            let new = |v: &str, rollout: Option<Rollout>, inline: Vec<InlineBlob>| NewRelease {
                release: release(v),
                rollout,
                inline,
            };
            let run = [
                new("1.1.0", None, vec![]),
                new("1.0.0", None, vec![]), // exists
                new("1.2.0", Some(Rollout::start(plan, 2).unwrap()), vec![small.clone()]),
            ];
            store.begin_batch();
            let out = store.insert_releases(&run);
            store.flush().unwrap();
            assert_eq!(out.len(), 3);
            let seqs = |r: &$crate::Result<Vec<efa_domain::model::event::Event>>| -> Vec<u64> {
                r.as_ref().unwrap().iter().map(|e| e.seq).collect()
            };
            assert_eq!(seqs(&out[0]), [head + 1]);
            assert_eq!(out[1].as_ref().unwrap_err().kind(), efa_domain::error::ErrorKind::AlreadyExists);
            assert_eq!(seqs(&out[2]), [head + 2, head + 3], "published, then its rollout started");
            assert_eq!(store.head_seq().unwrap(), head + 3, "no event for the refused one, no gap");
            let versions: Vec<String> = store.releases(&s.id).unwrap().iter().map(|r| r.version.to_string()).collect();
            assert_eq!(versions, ["1.2.0", "1.1.0", "1.0.0"]);
            assert!(store.rollout(&s.id, &"1.2.0".parse().unwrap(), None).unwrap().is_some());
            assert!(store.rollout(&s.id, &"1.1.0".parse().unwrap(), None).unwrap().is_none());
            assert_eq!(store.inline_blob(&small.digest).unwrap(), Some(small.bytes));
        }

        #[test]
        fn releases_are_immutable_and_sorted_by_semver() {
            let store = $make;
            let s = registered(&store);
            for v in ["1.9.0", "1.10.0", "1.2.0"] {
                store.insert_release(&release(v), &[]).unwrap();
            }
            let err = store.insert_release(&release("1.10.0"), &[]).unwrap_err();
            assert_eq!(err.kind(), efa_domain::ErrorKind::AlreadyExists);
            let versions: Vec<String> = store.releases(&s.id).unwrap().iter().map(|r| r.version.to_string()).collect();
            assert_eq!(versions, ["1.10.0", "1.9.0", "1.2.0"]);
        }

        #[test]
        fn the_blobs_of_published_releases_are_indexed() {
            use efa_domain::bundle::{BundleLimits, BundlePath, Digest, FileEntry, Manifest};
            let store = $make;
            let file = Digest::of(b"index.html");
            let manifest = Manifest {
                format: 1,
                service_id: "wohngeld-nrw".parse().unwrap(),
                version: "1.0.0".into(),
                channel: "stable".parse().unwrap(),
                land: "05".parse().unwrap(),
                created_at_ms: 0,
                parameters: None,
                files: vec![FileEntry {
                    path: BundlePath::parse("index.html", &BundleLimits::default()).unwrap(),
                    size: 10,
                    digest: file,
                    chunks: vec![],
                }],
            };
            assert!(!store.blob_referenced(&file).unwrap());
            store.insert_release(&Release { manifest: manifest.to_bytes(), ..release("1.0.0") }, &[]).unwrap();
            assert!(store.blob_referenced(&file).unwrap());
            assert!(!store.blob_referenced(&Digest::of(b"other")).unwrap());
        }

        #[test]
        fn small_files_commit_with_their_release_or_not_at_all() {
            use efa_domain::bundle::{BundleLimits, BundlePath, Digest, FileEntry, Manifest};
            use $crate::store::InlineBlob;
            let store = $make;
            let s = registered(&store);
            let content = b"<h1>Wohngeld</h1>".to_vec();
            let file = Digest::of(&content);
            let manifest = |v: &str| Manifest {
                format: 1,
                service_id: s.id.clone(),
                version: v.into(),
                channel: "stable".parse().unwrap(),
                land: s.land.clone(),
                created_at_ms: 0,
                parameters: None,
                files: vec![FileEntry {
                    path: BundlePath::parse("index.html", &BundleLimits::default()).unwrap(),
                    size: content.len() as u64,
                    digest: file,
                    chunks: vec![],
                }],
            };
            let inline = [InlineBlob { digest: file, bytes: content.clone() }];
            store
                .insert_release(&Release { manifest: manifest("1.0.0").to_bytes(), ..release("1.0.0") }, &inline)
                .unwrap();
            assert_eq!(store.inline_blob(&file).unwrap(), Some(content.clone()));
            assert!(store.blob_referenced(&file).unwrap());
            // A refused insert (the version exists) stores none of its small files.
            let other = InlineBlob { digest: Digest::of(b"other"), bytes: b"other".to_vec() };
            let dup = Release { manifest: manifest("1.0.0").to_bytes(), ..release("1.0.0") };
            assert!(store.insert_release(&dup, std::slice::from_ref(&other)).is_err());
            assert_eq!(store.inline_blob(&other.digest).unwrap(), None);
            // The same content in a later release is stored once and stays readable.
            store
                .insert_release(&Release { manifest: manifest("1.1.0").to_bytes(), ..release("1.1.0") }, &inline)
                .unwrap();
            assert_eq!(store.inline_blob(&file).unwrap(), Some(content));
        }

        #[test]
        fn event_log_is_gapless_and_ordered() {
            let store = $make;
            let s = registered(&store);
            store.insert_release(&release("1.0.0"), &[]).unwrap();
            let _ = store.insert_release(&release("1.0.0"), &[]);
            store
                .yank_release(&s.id, &"1.0.0".parse().unwrap(), Yank { reason: "bug".into(), at_ms: 3, recall: false })
                .unwrap();
            let seqs: Vec<u64> = store.events_after(0, 100).unwrap().iter().map(|e| e.seq).collect();
            assert_eq!(seqs, [1, 2, 3]);
            assert_eq!(store.head_seq().unwrap(), 3);
            assert_eq!(store.events_after(2, 100).unwrap().len(), 1);
            assert!(store
                .yank_release(&s.id, &"1.0.0".parse().unwrap(), Yank { reason: "x".into(), at_ms: 4, recall: false })
                .is_err());
            assert_eq!(store.oldest_seq().unwrap(), Some(1));
            assert_eq!(store.trim_events(3).unwrap(), 2);
            assert_eq!(store.oldest_seq().unwrap(), Some(3));
            assert_eq!(store.head_seq().unwrap(), 3, "trimming never moves the head back");
            assert_eq!(store.events_after(0, 100).unwrap().len(), 1);
        }

        #[test]
        fn adoption_ledger_keeps_history_and_current_state() {
            let store = $make;
            let ags: efa_domain::model::ids::Ags = "05913000".parse().unwrap();
            let sid: efa_domain::model::ids::ServiceId = "wohngeld-nrw".parse().unwrap();
            for (state, v) in [
                (AdoptionState::Evaluating, "1.0.0"),
                (AdoptionState::Deployed, "1.0.0"),
                (AdoptionState::Failed, "1.1.0"),
            ] {
                store
                    .append_adoption(&AdoptionEntry {
                        ags: ags.clone(),
                        service_id: sid.clone(),
                        version: Some(v.parse().unwrap()),
                        state,
                        reason: "r".into(),
                        at_ms: 5,
                    })
                    .unwrap();
            }
            assert_eq!(store.history_of(&ags).unwrap().len(), 3);
            let rec = store.adoption(&sid, &ags).unwrap().unwrap();
            assert_eq!(rec.running, Some("1.0.0".parse().unwrap()));
            assert_eq!(rec.latest.state, AdoptionState::Failed);
            assert_eq!(store.adopters(&sid).unwrap().len(), 1);
            assert_eq!(store.adoptions_of(&ags).unwrap().len(), 1);
            // Several Kommunen at once: each one's records, none of others.
            let essen: efa_domain::model::ids::Ags = "05113000".parse().unwrap();
            let other: efa_domain::model::ids::ServiceId = "elfe-hb".parse().unwrap();
            for service in [&sid, &other] {
                let entry = AdoptionEntry {
                    ags: essen.clone(),
                    service_id: service.clone(),
                    version: None,
                    state: AdoptionState::Rejected,
                    reason: "r".into(),
                    at_ms: 6,
                };
                store.append_adoption(&entry).unwrap();
            }
            let many = store.adoptions_of_many(&[ags.clone(), essen.clone()]).unwrap();
            let mut pairs: Vec<(String, String)> =
                many.iter().map(|r| (r.latest.ags.to_string(), r.latest.service_id.to_string())).collect();
            pairs.sort();
            assert_eq!(
                pairs,
                [("05113000", "elfe-hb"), ("05113000", "wohngeld-nrw"), ("05913000", "wohngeld-nrw")]
                    .map(|(a, s)| (a.to_string(), s.to_string()))
            );
            assert_eq!(store.adoptions_of_many(&[essen]).unwrap().len(), 2);
            assert!(store.adoptions_of_many(&[]).unwrap().is_empty());
        }

        #[test]
        fn bulk_load_adoptions_matches_the_ledger_without_events() {
            let store = $make;
            let sid: efa_domain::model::ids::ServiceId = "wohngeld-nrw".parse().unwrap();
            let dortmund: efa_domain::model::ids::Ags = "05913000".parse().unwrap();
            let essen: efa_domain::model::ids::Ags = "05113000".parse().unwrap();
            let entry = |ags: &efa_domain::model::ids::Ags, state, v: &str| AdoptionEntry {
                ags: ags.clone(),
                service_id: sid.clone(),
                version: Some(v.parse().unwrap()),
                state,
                reason: "r".into(),
                at_ms: 1,
            };
            // Logged first, bulk history is older and sorts before it.
            store.append_adoption(&entry(&dortmund, AdoptionState::Evaluating, "2.0.0")).unwrap();
            let head = store.head_seq().unwrap();
            store
                .bulk_load_adoptions(&[
                    entry(&dortmund, AdoptionState::Evaluating, "1.0.0"),
                    entry(&essen, AdoptionState::Deployed, "1.0.0"),
                    entry(&dortmund, AdoptionState::Deployed, "1.0.0"),
                ])
                .unwrap();
            store.bulk_load_adoptions(&[entry(&essen, AdoptionState::Failed, "1.1.0")]).unwrap();
            assert_eq!(store.head_seq().unwrap(), head, "bulk loading appends no events");
            let history = store.history_of(&dortmund).unwrap();
            let versions: Vec<String> = history.iter().map(|e| e.version.as_ref().unwrap().to_string()).collect();
            assert_eq!(versions, ["1.0.0", "1.0.0", "2.0.0"]);
            assert_eq!(store.history_of(&essen).unwrap().len(), 2);
            let rec = store.adoption(&sid, &dortmund).unwrap().unwrap();
            assert_eq!(rec.running, Some("1.0.0".parse().unwrap()));
            let essen_rec = store.adoption(&sid, &essen).unwrap().unwrap();
            assert_eq!(essen_rec.latest.state, AdoptionState::Failed);
            assert_eq!(essen_rec.running, Some("1.0.0".parse().unwrap()));
            assert_eq!(store.adopters(&sid).unwrap().len(), 2);
            assert_eq!(store.adoptions_of(&essen).unwrap().len(), 1);
        }

        /// The commit thread hands a run of reports over at once: they fold exactly as they
        /// would one at a time (records, totals, history, one event each in order).
        #[test]
        fn a_run_of_reports_folds_as_one_report_after_another() {
            let store = $make;
            let one: efa_domain::model::ids::ServiceId = "wohngeld-nrw".parse().unwrap();
            let run: efa_domain::model::ids::ServiceId = "elfe-hb".parse().unwrap();
            let entries = |sid: &efa_domain::model::ids::ServiceId| -> Vec<AdoptionEntry> {
                [
                    ("05913000", AdoptionState::Evaluating, Some("1.0.0")),
                    ("05913000", AdoptionState::Deployed, Some("1.0.0")),
                    ("05113000", AdoptionState::Rejected, None),
                    ("05711000", AdoptionState::Deployed, Some("1.0.0")),
                    ("05913000", AdoptionState::Failed, Some("1.1.0")),
                    ("05711000", AdoptionState::Retired, None),
                ]
                .into_iter()
                .map(|(a, state, v)| AdoptionEntry {
                    ags: a.parse().unwrap(),
                    service_id: sid.clone(),
                    version: v.map(|v| v.parse().unwrap()),
                    state,
                    reason: "r".into(),
                    at_ms: 7,
                })
                .collect()
            };
            let alone: Vec<_> = entries(&one).iter().map(|e| store.append_adoption(e).unwrap()).collect();
            store.begin_batch();
            let queued = store.queue_adoptions(&entries(&run));
            store.flush().unwrap();
            let together: Vec<_> = queued.into_iter().map(|q| q.unwrap().take().unwrap()).collect();
            assert_eq!(together.len(), alone.len());
            let head = alone.last().unwrap().1.seq;
            for (i, ((a_rec, _), (t_rec, t_event))) in alone.iter().zip(&together).enumerate() {
                assert_eq!(t_event.seq, head + 1 + i as u64, "one event per report, in order");
                assert_eq!((&a_rec.running, &a_rec.latest.state), (&t_rec.running, &t_rec.latest.state));
            }
            assert_eq!(store.head_seq().unwrap(), head + alone.len() as u64);
            let mut t1 = store.service_totals(&one).unwrap();
            let t2 = store.service_totals(&run).unwrap();
            t1.ratings = t2.ratings;
            assert_eq!(t1, t2);
            assert_eq!(t2.records, 3);
            assert_eq!(store.adopters(&run).unwrap().len(), 3);
            assert_eq!(store.history_of(&"05913000".parse().unwrap()).unwrap().len(), 6);
            let rec = store.adoption(&run, &"05913000".parse().unwrap()).unwrap().unwrap();
            assert_eq!(rec.running, Some("1.0.0".parse().unwrap()));
            assert_eq!(rec.latest.state, AdoptionState::Failed);
        }

        #[test]
        fn service_totals_match_a_recount_after_every_kind_of_write() {
            use efa_domain::model::rating::Rating;
            let store = $make;
            let sid: efa_domain::model::ids::ServiceId = "wohngeld-nrw".parse().unwrap();
            let ags = |s: &str| -> efa_domain::model::ids::Ags { s.parse().unwrap() };
            let entry = |a: &str, state, v: Option<&str>| AdoptionEntry {
                ags: ags(a),
                service_id: sid.clone(),
                version: v.map(|v| v.parse().unwrap()),
                state,
                reason: "r".into(),
                at_ms: 1,
            };
            let recount = |store: &dyn Store| {
                let records = store.adopters(&sid).unwrap();
                let ratings = store.ratings(&sid).unwrap();
                ServiceTotals {
                    records: records.len() as u32,
                    running: records.iter().filter(|r| r.running.is_some()).count() as u32,
                    rejected: records.iter().filter(|r| r.latest.state == AdoptionState::Rejected).count() as u32,
                    ratings: ratings.len() as u32,
                    stars_sum: ratings.iter().map(|r| u64::from(r.stars)).sum(),
                }
            };
            store.append_adoption(&entry("05913000", AdoptionState::Deployed, Some("1.0.0"))).unwrap();
            store.append_adoption(&entry("05113000", AdoptionState::Rejected, None)).unwrap();
            store.append_adoption(&entry("05913000", AdoptionState::Retired, None)).unwrap();
            store
                .bulk_load_adoptions(&[
                    entry("05113000", AdoptionState::Deployed, Some("1.0.0")),
                    entry("05711000", AdoptionState::Rejected, None),
                    entry("05711000", AdoptionState::Deployed, Some("1.0.0")),
                    entry("05515000", AdoptionState::Evaluating, Some("1.0.0")),
                ])
                .unwrap();
            store.bulk_load_adoptions(&[entry("05515000", AdoptionState::Rejected, None)]).unwrap();
            let rate = |a: &str, stars| Rating {
                ags: ags(a),
                service_id: sid.clone(),
                version: "1.0.0".parse().unwrap(),
                stars,
                criteria: vec![],
                comment: String::new(),
                at_ms: 1,
                met: vec![(efa_domain::model::rating::Criterion::Payment, true)],
            };
            store.put_rating(&rate("05113000", 2)).unwrap();
            store.put_rating(&rate("05711000", 5)).unwrap();
            store.put_rating(&rate("05113000", 4)).unwrap(); // re-rating replaces the 2
            let stored = store.ratings(&sid).unwrap();
            assert!(stored.iter().all(|r| r.met == vec![(efa_domain::model::rating::Criterion::Payment, true)]));
            let totals = store.service_totals(&sid).unwrap();
            assert_eq!(totals, recount(&store));
            assert_eq!(
                totals,
                ServiceTotals { records: 4, running: 2, rejected: 1, ratings: 2, stars_sum: 9 },
                "05913000 retired, 05113000 and 05711000 running, 05515000 rejected"
            );
            assert!((totals.average_stars() - 4.5).abs() < 1e-9);
            assert_eq!(store.kommunen_with_records().unwrap(), 4);
            let under = |p: &str| -> Vec<String> {
                store.kommunen_with_records_under(p).unwrap().iter().map(|a| a.to_string()).collect()
            };
            assert_eq!(under("059"), ["05913000"]);
            assert_eq!(under("05").len(), 4);
            assert!(under("09").is_empty());
            assert_eq!(store.service_totals(&"other".parse().unwrap()).unwrap(), ServiceTotals::default());
        }

        #[test]
        fn the_transparency_log_appends_only_at_its_size_and_serves_what_it_stored() {
            use efa_tlog::tree::{leaf_hash, root, MemoryHashes};
            use $crate::store::{Beside, LogStore};
            let store = $make;
            assert_eq!(store.log_size().unwrap(), 0);
            assert!(store.latest_checkpoint().unwrap().is_none());
            let leaves: Vec<Vec<u8>> = (0..300u32).map(|i| format!("leaf {i}").into_bytes()).collect();
            let mut mem = MemoryHashes::default();
            // Two appends, the way the integrator catches up in steps.
            for (from, to) in [(0usize, 257usize), (257, 300)] {
                let before = mem.0.len();
                mem.append(&leaves[from..to].iter().map(|l| leaf_hash(l)).collect::<Vec<_>>()).unwrap();
                let hashes: Vec<[u8; 32]> = mem.0[before..].iter().map(|h| h.0).collect();
                let beside = vec![Beside { index: from as u64 + 1, salt: [7; 16], text: "Begründung".into() }];
                let releases = vec![(format!("wohngeld-nrw 1.{from}.0"), from as u64)];
                store.append_log(from as u64, &leaves[from..to], &hashes, &beside, &releases).unwrap();
            }
            assert_eq!(store.log_size().unwrap(), 300);
            // Not at its size: refused, nothing written.
            let e = store.append_log(299, &leaves[..1], &[[0; 32]], &[], &[]).unwrap_err();
            assert_eq!(e.kind(), efa_domain::error::ErrorKind::FailedPrecondition, "{e}");
            assert!(store.append_log(301, &leaves[..1], &[[0; 32]], &[], &[]).is_err());
            assert_eq!(store.log_size().unwrap(), 300);

            assert_eq!(store.log_leaves(255, 258).unwrap(), leaves[255..258].to_vec());
            assert_eq!(store.log_leaves(298, 1000).unwrap().len(), 2);
            assert!(store.log_leaves(5, 5).unwrap().is_empty());
            let indexes: Vec<u64> = (0..mem.0.len() as u64).collect();
            let stored: Vec<[u8; 32]> = store.log_hashes(&indexes).unwrap();
            assert_eq!(stored, mem.0.iter().map(|h| h.0).collect::<Vec<_>>());
            assert!(store.log_hashes(&[mem.0.len() as u64]).is_err(), "a hash not stored");
            let _ = root(300, &mem).unwrap();

            assert_eq!(store.release_leaf("wohngeld-nrw 1.257.0").unwrap(), Some(257));
            assert_eq!(store.release_leaf("wohngeld-nrw 9.9.9").unwrap(), None);
            assert_eq!(store.beside_text(258).unwrap().unwrap().text, "Begründung");
            assert!(store.erase_beside_text(258).unwrap());
            assert!(store.beside_text(258).unwrap().is_none());
            assert!(!store.erase_beside_text(258).unwrap());
            assert!(store.beside_text(1).unwrap().is_some(), "only the one erased");

            store.put_checkpoint(257, b"cp 257").unwrap();
            store.put_checkpoint(300, b"cp 300").unwrap();
            store.put_checkpoint(257, b"cp 257 cosigned").unwrap();
            assert_eq!(store.latest_checkpoint().unwrap(), Some((300, b"cp 300".to_vec())));
            assert_eq!(store.checkpoint(257).unwrap(), Some(b"cp 257 cosigned".to_vec()));
            assert_eq!(store.checkpoint(1).unwrap(), None);
        }
    };
}
