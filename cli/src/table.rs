//! Tabular output for the CLIs: one value, three renderings (table, CSV, JSON).

use comfy_table::{presets::UTF8_FULL_CONDENSED, ContentArrangement};

/// A report: a title, column headers and rows of already formatted cells.
#[derive(Clone, Debug, Default)]
pub struct Table {
    /// Printed above the table; empty for none. CSV and JSON leave it out.
    pub title: String,
    /// Column names; also the CSV header and the JSON keys.
    pub headers: Vec<String>,
    /// One cell per header in each row.
    pub rows: Vec<Vec<String>>,
}

/// How a [`Table`] is rendered (`--format table|csv|json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    /// Box-drawn table for the terminal, with the title above it.
    #[default]
    Table,
    /// CSV with a header line.
    Csv,
    /// A JSON array of objects keyed by header, every value a string.
    Json,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "table" => Ok(Format::Table),
            "csv" => Ok(Format::Csv),
            "json" => Ok(Format::Json),
            other => Err(format!("unknown format {other:?} (table, csv or json)")),
        }
    }
}

impl Table {
    /// An empty table with these column headers.
    pub fn new(title: impl Into<String>, headers: &[&str]) -> Self {
        Table { title: title.into(), headers: headers.iter().map(|h| h.to_string()).collect(), rows: vec![] }
    }

    /// Appends a row.
    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// The whole table as text in `format`, ending with a newline.
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Table => {
                let mut t = comfy_table::Table::new();
                t.load_preset(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic);
                t.set_header(&self.headers);
                for r in &self.rows {
                    t.add_row(r);
                }
                if self.title.is_empty() {
                    format!("{t}\n")
                } else {
                    format!("{}\n{t}\n", self.title)
                }
            }
            Format::Csv => {
                let mut w = csv::Writer::from_writer(vec![]);
                let _ = w.write_record(&self.headers);
                for r in &self.rows {
                    let _ = w.write_record(r);
                }
                String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
            }
            Format::Json => {
                let rows: Vec<serde_json::Map<String, serde_json::Value>> = self
                    .rows
                    .iter()
                    .map(|r| {
                        self.headers
                            .iter()
                            .zip(r)
                            .map(|(h, v)| (h.clone(), serde_json::Value::String(v.clone())))
                            .collect()
                    })
                    .collect();
                serde_json::to_string_pretty(&rows).unwrap_or_default() + "\n"
            }
        }
    }
}

/// `2026-11-26 10:15` from epoch milliseconds (UTC).
pub fn timestamp(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    let s = humantime::format_rfc3339_seconds(t).to_string();
    s.replace('T', " ").trim_end_matches('Z').get(..16).unwrap_or(&s).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_umlauts_in_every_format() {
        let mut t = Table::new("x", &["name", "stars"]);
        t.push(vec!["Lünen, Stadt".into(), "4".into()]);
        assert!(t.render(Format::Table).contains("Lünen, Stadt"));
        assert_eq!(t.render(Format::Csv), "name,stars\n\"Lünen, Stadt\",4\n");
        assert!(t.render(Format::Json).contains("\"name\": \"Lünen, Stadt\""));
    }
}
