//! Import of the reference data the register is built from: the Destatis Gemeindeverzeichnis
//! (GV100AD), the OZG catalogue and LeiKa.
//!
//! The files ship inside the crate (`registry/data/`) and are compiled in, so a hub starts with a
//! complete register and no data directory to get wrong. Parsers also accept other copies of the
//! same formats, e.g. a newer GV100AD.
//!
//! Every parser checks each row once and hands out validated ids ([`efa_domain::model::ids`]); a bad
//! row stops the import with an [`ImportError`] naming the file and line, because a register that
//! silently lacks Gemeinden or services is worse than one that refuses to load.

pub mod gv100ad;
pub mod leika;
pub mod ozg;

pub use gv100ad::Gv100ad;

use efa_domain::model::catalog::{LeikaEntry, OzgLeistung};
use efa_domain::model::ids::Ags;
use thiserror::Error;

/// Destatis Gemeindeverzeichnis, status 2023-11-30.
pub const GV100AD_TEXT: &str = include_str!("../../data/GV100AD_301123.txt");
/// OZG-Leistungen (kdn-nrw OZG-Datenbank dump).
pub const OZG_CSV: &str = include_str!("../../data/ozg_leistungen.csv");
/// LeiKa services (same dump).
pub const LEIKA_CSV: &str = include_str!("../../data/leika.csv");

/// File name of the bundled GV100AD, as errors name it.
pub const GV100AD_FILE: &str = "GV100AD_301123.txt";
/// File name of the bundled OZG catalogue, as errors name it.
pub(crate) const OZG_FILE: &str = "ozg_leistungen.csv";
/// File name of the bundled LeiKa, as errors name it.
pub(crate) const LEIKA_FILE: &str = "leika.csv";

/// Why a register or catalogue file could not be imported.
#[derive(Debug, Error)]
pub enum ImportError {
    /// A row that does not fit the format. `line` is 1-based, as an editor shows it.
    #[error("{file}, line {line}: {reason}")]
    Malformed {
        /// Name of the bundled file of this format, also when another copy was parsed.
        file: &'static str,
        /// 1-based line number.
        line: u64,
        /// What is wrong with the row.
        reason: String,
    },
    /// The CSV reader itself failed (broken quoting, invalid UTF-8, missing column).
    #[error("{file}: {source}")]
    Csv {
        /// Name of the bundled file of this format, also when another copy was parsed.
        file: &'static str,
        /// The reader's error, which carries the position.
        #[source]
        source: csv::Error,
    },
}

impl ImportError {
    pub(crate) fn malformed(file: &'static str, line: u64, reason: impl Into<String>) -> Self {
        ImportError::Malformed { file, line, reason: reason.into() }
    }
}

/// Länder, Kreise and Gemeinden from the bundled GV100AD.
pub fn bundled_gv100ad() -> Result<Gv100ad, ImportError> {
    gv100ad::parse(GV100AD_TEXT)
}

/// The bundled OZG catalogue (557 OZG-Leistungen).
pub fn bundled_ozg() -> Result<Vec<OzgLeistung>, ImportError> {
    ozg::parse(OZG_CSV.as_bytes())
}

/// The bundled LeiKa services that have a Leistungsschlüssel.
pub fn bundled_leika() -> Result<Vec<LeikaEntry>, ImportError> {
    leika::parse(LEIKA_CSV.as_bytes())
}

/// File name used in errors about a successors list.
pub const SUCCESSORS_FILE: &str = "successors list";

/// Reads a list of Gemeinden that leave the register and their successors, one
/// `OLD_AGS,SUCCESSOR_AGS` per line (from Destatis' list of territorial changes); blank
/// lines, `#` comments and a header line are skipped.
pub fn parse_successors(text: &str) -> Result<std::collections::BTreeMap<Ags, Ags>, ImportError> {
    let mut out = std::collections::BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || (i == 0 && !line.starts_with(|c: char| c.is_ascii_digit())) {
            continue;
        }
        let bad = |why: String| ImportError::malformed(SUCCESSORS_FILE, i as u64 + 1, why);
        let (from, to) = line.split_once([',', ';']).ok_or_else(|| bad("expected OLD_AGS,SUCCESSOR_AGS".into()))?;
        let from: Ags = from.trim().parse().map_err(|e: efa_domain::Error| bad(e.to_string()))?;
        let to: Ags = to.trim().parse().map_err(|e: efa_domain::Error| bad(e.to_string()))?;
        if from == to {
            return Err(bad(format!("{from} cannot succeed itself")));
        }
        out.insert(from, to);
    }
    Ok(out)
}

/// A register file as text: UTF-8, or ISO-8859-1 as Destatis also ships it.
pub fn register_text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => bytes.iter().map(|&b| b as char).collect(),
    }
}

/// Line number of a CSV record: the reader counts from 1, like an editor, and the header is
/// line 1.
fn csv_line(record: &csv::StringRecord) -> u64 {
    record.position().map_or(0, |p| p.line())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_error_maps_to_invalid_and_keeps_the_location() {
        use efa_domain::error::{Classify, ErrorKind};
        let err: crate::Error = ImportError::malformed(LEIKA_FILE, 7, "bad key").into();
        assert_eq!(err.kind(), ErrorKind::Invalid);
        assert_eq!(err.to_string(), "leika.csv, line 7: bad key");
    }

    #[test]
    fn leika_services_point_at_known_ozg_leistungen() {
        let ozg: std::collections::HashSet<_> = bundled_ozg().unwrap().into_iter().map(|l| l.ozg_id).collect();
        for entry in bundled_leika().unwrap() {
            if let Some(id) = &entry.ozg_id {
                assert!(ozg.contains(id), "{} -> {id}", entry.schluessel);
            }
        }
    }
}
