//! Parser for the OZG catalogue: `ozg_id,name,lebenslage,themenfeld`, one OZG-Leistung a row.

use super::{csv_line, ImportError, OZG_FILE as FILE};
use efa_domain::model::catalog::OzgLeistung;
use efa_domain::model::ids::OzgId;
use serde::Deserialize;
use std::collections::HashMap;

#[derive(Deserialize)]
struct Row {
    ozg_id: String,
    name: String,
    lebenslage: String,
    themenfeld: String,
}

/// Reads the catalogue. Every column is required, and an OZG-ID may appear only once: services
/// refer to OZG-Leistungen by id, so a second row would make that reference ambiguous.
pub fn parse(reader: impl std::io::Read) -> Result<Vec<OzgLeistung>, ImportError> {
    let mut csv = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(reader);
    let headers = csv.headers().map_err(|source| ImportError::Csv { file: FILE, source })?.clone();
    let mut first_line: HashMap<OzgId, u64> = HashMap::new();
    let mut out = Vec::new();
    for record in csv.records() {
        let record = record.map_err(|source| ImportError::Csv { file: FILE, source })?;
        let line = csv_line(&record);
        let row: Row = record.deserialize(Some(&headers)).map_err(|source| ImportError::Csv { file: FILE, source })?;
        let bad = |reason: String| ImportError::malformed(FILE, line, reason);
        let ozg_id: OzgId = row.ozg_id.parse().map_err(|e| bad(format!("{e}")))?;
        for (column, value) in [("name", &row.name), ("lebenslage", &row.lebenslage), ("themenfeld", &row.themenfeld)] {
            if value.is_empty() {
                return Err(bad(format!("OZG-Leistung {ozg_id} has an empty {column}")));
            }
        }
        if let Some(first) = first_line.insert(ozg_id.clone(), line) {
            return Err(bad(format!("OZG-ID {ozg_id} appears again (first on line {first})")));
        }
        out.push(OzgLeistung { ozg_id, name: row.name, lebenslage: row.lebenslage, themenfeld: row.themenfeld });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::bundled_ozg;
    use std::collections::HashSet;

    const HEADER: &str = "ozg_id,name,lebenslage,themenfeld\n";

    fn parse_str(body: &str) -> Result<Vec<OzgLeistung>, ImportError> {
        parse(format!("{HEADER}{body}").as_bytes())
    }

    #[test]
    fn bundled_catalogue_has_557_leistungen_in_14_themenfelder() {
        let all = bundled_ozg().unwrap();
        assert_eq!(all.len(), 557);
        let themenfelder: HashSet<_> = all.iter().map(|l| l.themenfeld.as_str()).collect();
        assert_eq!(themenfelder.len(), 14);
        let lebenslagen: HashSet<_> = all.iter().map(|l| l.lebenslage.as_str()).collect();
        assert_eq!(lebenslagen.len(), 55);
        let first = &all[0];
        assert_eq!(first.ozg_id.as_str(), "10513");
        assert_eq!(first.name, "Abbruchgenehmigung");
        assert_eq!(first.lebenslage, "Bauen & Immobilien");
        assert_eq!(first.themenfeld, "Bauen & Wohnen");
    }

    #[test]
    fn quoted_fields_and_crlf_are_read() {
        let all = parse_str("10110,\"Abfall, Entsorgung\",Wohnen,Bauen & Wohnen\r\n").unwrap();
        assert_eq!(all[0].name, "Abfall, Entsorgung");
    }

    #[test]
    fn bad_rows_are_errors_naming_the_line() {
        let err = parse_str("10513,Abbruch,Bauen,Bauen & Wohnen\n1051,Kurz,Bauen,Bauen\n").unwrap_err().to_string();
        assert!(err.starts_with("ozg_leistungen.csv, line 3: "), "{err}");
        assert!(err.contains("\"1051\" is not 5 digits"), "{err}");

        let err = parse_str("10513,Abbruch,,Bauen & Wohnen\n").unwrap_err().to_string();
        assert!(err.contains("line 2: OZG-Leistung 10513 has an empty lebenslage"), "{err}");

        let err = parse_str("10513,A,B,C\n10513,A,B,C\n").unwrap_err().to_string();
        assert!(err.contains("line 3: OZG-ID 10513 appears again (first on line 2)"), "{err}");

        let err = parse_str("10513,A,B\n").unwrap_err();
        assert!(matches!(err, ImportError::Csv { .. }), "{err}");
        let err = parse("ozg,name\n10513,A\n".as_bytes()).unwrap_err();
        assert!(matches!(err, ImportError::Csv { .. }), "{err}");
    }
}
