//! A newer register: Gemeinden merge and are renamed. The import reports it, keeps the
//! history of a Gemeinde that is no longer listed, refuses its identity naming its successor,
//! and loses no adoption record.
//!
//! The newer register is hand-made from the shipped one (GV100AD, 2023-11-30): Holzwickede
//! (05978016) is merged into Unna (05978036) and Bönen (05978008) gets a new name. Neither
//! change happened; they only exercise the import.

use efa_domain::authz::Identity;
use efa_domain::error::{Classify, ErrorKind};
use efa_domain::model::adoption::{AdoptionReport, AdoptionState};
use efa_domain::model::catalog::NewService;
use efa_registry::import::{self, GV100AD_TEXT};
use efa_registry::store::SledStore;
use efa_registry::Registry;
use std::sync::Arc;

const HOLZWICKEDE: &str = "05978016";
const UNNA: &str = "05978036";
const BOENEN: &str = "05978008";

/// The shipped register with Holzwickede removed, Bönen renamed and a later status date.
pub fn derived_register() -> String {
    GV100AD_TEXT
        .lines()
        .filter(|l| !(l.starts_with("60") && l.chars().skip(10).take(8).collect::<String>() == HOLZWICKEDE))
        .map(|l| {
            let mut l = l.replacen("20231130", "20241231", 1);
            if l.starts_with("60") && l.chars().skip(10).take(8).collect::<String>() == BOENEN {
                let chars: Vec<char> = l.chars().collect();
                let name = format!("{:<50}", "Bönen an der Seseke");
                l = chars[..22]
                    .iter()
                    .chain(name.chars().collect::<Vec<_>>().iter())
                    .chain(chars[72..].iter())
                    .collect();
            }
            l + "\n"
        })
        .collect()
}

#[test]
fn a_merge_and_a_rename_are_reported_and_nothing_is_lost() {
    let reg = Registry::new(Arc::new(SledStore::temporary().unwrap()));
    reg.seed_bundled().unwrap();
    assert_eq!(reg.register_as_of().unwrap(), "2023-11-30");
    let operator = Identity::Operator("audit".into());
    let holzwickede = Identity::Kommune(HOLZWICKEDE.parse().unwrap());
    reg.check_identity(&holzwickede).unwrap();

    // Holzwickede adopted a service before the merge.
    let nrw = Identity::Land("05".parse().unwrap());
    let service = NewService {
        id: "wohngeld-nrw".parse().unwrap(),
        ozg_id: "10092".parse().unwrap(),
        leistungsschluessel: None,
        title: "Wohngeld".into(),
        description: String::new(),
        parameters: vec![],
        adoption_public: false,
        more_leistungsschluessel: vec![],
    };
    reg.register_service(&nrw, service).unwrap();
    let report = AdoptionReport {
        service_id: "wohngeld-nrw".parse().unwrap(),
        version: None,
        state: AdoptionState::Rejected,
        reason: "kein Bedarf".into(),
    };
    futures_executor::block_on(reg.report_adoption(&HOLZWICKEDE.parse().unwrap(), report)).unwrap();
    let unna_before = reg.coverage(&operator, &"wohngeld-nrw".parse().unwrap(), Some(&"05".parse().unwrap())).unwrap();
    let kreis_total = |rows: &[efa_domain::model::report::CoverageRow]| {
        rows.iter().find(|r| r.code == "05978").map(|r| r.total).unwrap_or(0)
    };
    assert_eq!(kreis_total(&unna_before), 10);

    let successors = import::parse_successors(&format!("old,successor\n{HOLZWICKEDE},{UNNA}\n")).unwrap();
    let changes = reg.update_register(import::gv100ad::parse(&derived_register()).unwrap(), &successors).unwrap();
    assert_eq!(changes.as_of, "2024-12-31");
    assert_eq!(changes.dissolved.len(), 1);
    assert_eq!(changes.dissolved[0].0.ags.as_str(), HOLZWICKEDE);
    assert_eq!(changes.dissolved[0].1.as_ref().map(|a| a.as_str()), Some(UNNA));
    assert_eq!(changes.renamed.len(), 1);
    assert_eq!(changes.renamed[0].2, "Bönen an der Seseke");
    assert!(changes.added.is_empty());
    assert_eq!(changes.unchanged + changes.updated + changes.renamed.len(), 10_772);

    // Its identity is refused, naming the successor; its record and history stay.
    let err = reg.check_identity(&holzwickede).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    let text = err.to_string();
    assert!(text.contains("Unna") && text.contains(UNNA) && text.contains("2024-12-31"), "{text}");
    let history = reg.kommune_report(&operator, &HOLZWICKEDE.parse().unwrap()).unwrap();
    assert_eq!(history.history.len(), 1);
    assert!(history.kommune.dissolved.is_some());
    assert_eq!(reg.adopters(&operator, &"wohngeld-nrw".parse().unwrap()).unwrap().len(), 1);
    // Coverage counts the Gemeinden of the current register.
    let after = reg.coverage(&operator, &"wohngeld-nrw".parse().unwrap(), Some(&"05".parse().unwrap())).unwrap();
    assert_eq!(kreis_total(&after), 9);
    assert_eq!(reg.kommune(&BOENEN.parse().unwrap()).unwrap().name, "Bönen an der Seseke");

    // An AGS no register ever had is refused too, and re-importing changes nothing.
    let err = reg.check_identity(&Identity::Kommune("05999999".parse().unwrap())).unwrap_err().to_string();
    assert!(err.contains("not a Gemeinde of the register"), "{err}");
    let again = reg.update_register(import::gv100ad::parse(&derived_register()).unwrap(), &successors).unwrap();
    assert!(again.dissolved.is_empty() && again.renamed.is_empty() && again.added.is_empty());
}

#[test]
fn statistics_come_from_the_register() {
    let reg = Registry::new(Arc::new(SledStore::temporary().unwrap()));
    reg.seed_bundled().unwrap();
    let dortmund = reg.kommune(&"05913000".parse().unwrap()).unwrap();
    assert_eq!(dortmund.population, Some(593_317));
    assert_eq!(dortmund.postcode.as_deref(), Some("44135"));
}
