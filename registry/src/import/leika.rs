//! Parser for the LeiKa services: `leistungsschluessel,name,leika_typ,ozg_id`.
//!
//! The source is a dump of the kdn-nrw OZG database, which also lists services that have no
//! LeiKa key yet (marked `nicht im LeiKa`) and ends with two test rows. Neither is a LeiKa
//! service, so both are skipped; any other row without a valid key is an error.

use super::{csv_line, ImportError, LEIKA_FILE as FILE};
use efa_domain::model::catalog::LeikaEntry;
use efa_domain::model::ids::{Leistungsschluessel, OzgId};
use serde::Deserialize;
use std::collections::HashSet;

/// Marker the dump uses for a service without a Leistungsschlüssel.
pub const NOT_IN_LEIKA: &str = "nicht im LeiKa";

/// `(key, name)` of the dump's test rows. Matched exactly, so a real malformed key still fails.
const TEST_ROWS: [(&str, &str); 2] = [("25323525", "Test 124"), ("3233", "Test 4")];

#[derive(Deserialize)]
struct Row {
    leistungsschluessel: String,
    name: String,
    // `leika_typ` (the LeiKa Typisierung, e.g. "2/3") is not part of the model and not read.
    ozg_id: String,
}

/// Reads the LeiKa services that have a key. When a key appears twice the first row wins, so a
/// stray later copy cannot change an entry (the bundled file has no duplicates).
pub fn parse(reader: impl std::io::Read) -> Result<Vec<LeikaEntry>, ImportError> {
    let mut csv = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(reader);
    let headers = csv.headers().map_err(|source| ImportError::Csv { file: FILE, source })?.clone();
    let mut seen: HashSet<Leistungsschluessel> = HashSet::new();
    let mut out = Vec::new();
    for record in csv.records() {
        let record = record.map_err(|source| ImportError::Csv { file: FILE, source })?;
        let line = csv_line(&record);
        let row: Row = record.deserialize(Some(&headers)).map_err(|source| ImportError::Csv { file: FILE, source })?;
        let key = row.leistungsschluessel.as_str();
        if key == NOT_IN_LEIKA || TEST_ROWS.contains(&(key, row.name.as_str())) {
            continue;
        }
        let bad = |reason: String| ImportError::malformed(FILE, line, reason);
        let schluessel: Leistungsschluessel = key.parse().map_err(|e| bad(format!("{e}")))?;
        if row.name.is_empty() {
            return Err(bad(format!("LeiKa service {schluessel} has no name")));
        }
        let ozg_id = match row.ozg_id.as_str() {
            "" => None,
            id => Some(id.parse::<OzgId>().map_err(|e| bad(format!("{e}")))?),
        };
        if seen.insert(schluessel.clone()) {
            out.push(LeikaEntry { schluessel, name: row.name, ozg_id });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::bundled_leika;

    const HEADER: &str = "leistungsschluessel,name,leika_typ,ozg_id\n";

    fn parse_str(body: &str) -> Result<Vec<LeikaEntry>, ImportError> {
        parse(format!("{HEADER}{body}").as_bytes())
    }

    #[test]
    fn bundled_leika_has_every_keyed_service_once() {
        let all = bundled_leika().unwrap();
        // 5,251 rows: 436 "nicht im LeiKa", 2 test rows, 4,813 distinct keys.
        assert_eq!(all.len(), 4_813);
        let keys: HashSet<_> = all.iter().map(|e| &e.schluessel).collect();
        assert_eq!(keys.len(), all.len());
        let first = &all[0];
        assert_eq!(first.schluessel.as_str(), "99012001000000");
        assert_eq!(first.name, "Abbruchgenehmigung");
        assert_eq!(first.ozg_id.as_ref().map(OzgId::as_str), Some("10513"));
        assert!(all.iter().any(|e| e.ozg_id.is_none()));
    }

    #[test]
    fn skips_unkeyed_rows_and_keeps_the_first_duplicate() {
        let all = parse_str(
            "nicht im LeiKa,Ohne Schlüssel,1,10478\n\
             99012001000000,Abbruchgenehmigung,4,10513\n\
             99012001000000,Abbruch (Kopie),4,\n\
             99012002000000,Ohne OZG,2/3,\n",
        )
        .unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].name, "Abbruchgenehmigung");
        assert_eq!(all[1].ozg_id, None);
    }

    #[test]
    fn bad_rows_are_errors_naming_the_line() {
        let err = parse_str("99012001000000,A,1,10513\n12012001000000,B,1,10513\n").unwrap_err().to_string();
        assert!(err.starts_with("leika.csv, line 3: "), "{err}");
        assert!(err.contains("not 14 digits starting with 99"), "{err}");

        // Only the dump's exact test rows are skipped, not anything named "Test".
        let err = parse_str("3233,Test 5,44,10513\n").unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");

        let err = parse_str("99012001000000,A,1,1051x\n").unwrap_err().to_string();
        assert!(err.contains("line 2: invalid OZG-ID"), "{err}");

        let err = parse_str("99012001000000,,1,10513\n").unwrap_err().to_string();
        assert!(err.contains("has no name"), "{err}");

        let err = parse_str("99012001000000,\"A,1,10513\n").unwrap_err();
        assert!(matches!(err, ImportError::Csv { .. }), "{err}");
    }
}
