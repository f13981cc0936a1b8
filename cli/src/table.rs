//! Tabular output for the CLIs: one value, three renderings (table, CSV, JSON).
//!
//! Every cell carries the text people read and the typed value machines read: a count is a
//! JSON number, a share a number in a `…_percent` column, an absent value `null`.
//!
//! JSON shape: a command that prints one table prints one JSON array of objects (one per
//! row, keyed by column); a command that prints several prints one object with an array per
//! table (e.g. `{"ratings": [...], "rejections": [...]}`). CSV is one table per file: the
//! first by default, another with `--table NAME`; no byte order mark unless `--bom` (for
//! spreadsheet programs that need it to read umlauts).

use comfy_table::{presets::UTF8_FULL_CONDENSED, ContentArrangement};
use serde_json::Value;

/// One cell: what a person reads and what a machine reads.
#[derive(Clone, Debug, PartialEq)]
pub struct Cell {
    text: String,
    value: Value,
}

impl Cell {
    /// Text, as is.
    pub fn text(s: impl Into<String>) -> Self {
        let s = s.into();
        Cell { value: Value::String(s.clone()), text: s }
    }

    /// Text that may be absent: `-` for people, `null` for machines.
    pub fn opt(s: impl Into<String>) -> Self {
        let s = s.into();
        if s.is_empty() {
            Self::none()
        } else {
            Self::text(s)
        }
    }

    /// No value.
    pub fn none() -> Self {
        Cell { text: "-".into(), value: Value::Null }
    }

    /// A number shown with `decimals` places, a JSON number.
    pub fn float(x: f64, decimals: usize) -> Self {
        let rounded = format!("{x:.decimals$}");
        let value =
            rounded.parse::<f64>().ok().and_then(serde_json::Number::from_f64).map_or(Value::Null, Value::Number);
        Cell { text: rounded, value }
    }

    /// Any readable text with a structured value (a list, a map).
    pub fn with_value(text: impl Into<String>, value: Value) -> Self {
        Cell { text: text.into(), value }
    }

    /// What a person reads.
    pub fn as_text(&self) -> &str {
        &self.text
    }

    /// What a machine reads.
    pub fn value(&self) -> &Value {
        &self.value
    }

    /// The CSV field: plain numbers, empty for none, text otherwise.
    fn csv(&self) -> String {
        match &self.value {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Array(_) | Value::Object(_) => self.text.clone(),
        }
    }
}

impl From<String> for Cell {
    fn from(s: String) -> Self {
        Cell::text(s)
    }
}

impl From<&str> for Cell {
    fn from(s: &str) -> Self {
        Cell::text(s)
    }
}

macro_rules! integer_cell {
    ($($t:ty),*) => {$(
        impl From<$t> for Cell {
            fn from(n: $t) -> Self {
                Cell { text: n.to_string(), value: Value::from(n) }
            }
        }
    )*};
}
integer_cell!(u32, u64, i64, usize);

/// A report: a title, column headers and rows of cells.
#[derive(Clone, Debug, Default)]
pub struct Table {
    /// Names the table in multi-table JSON and for `--table`, e.g. `history`.
    pub name: String,
    /// Printed above the table; empty for none. CSV and JSON leave it out.
    pub title: String,
    /// Column names; also the CSV header. JSON keys are these in snake_case.
    pub headers: Vec<String>,
    /// One cell per header in each row.
    pub rows: Vec<Vec<Cell>>,
}

/// How a [`Table`] is rendered (`--format table|csv|json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    /// Box-drawn table for the terminal, with the title above it.
    #[default]
    Table,
    /// CSV with a header line.
    Csv,
    /// JSON with typed values.
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

/// How to print: the format, and for CSV which table and whether with a byte order mark.
#[derive(Clone, Debug, Default)]
pub struct Output {
    /// The rendering.
    pub format: Format,
    /// CSV only: the table to print when a command has several (default: the first).
    pub table: Option<String>,
    /// CSV only: start with a UTF-8 byte order mark.
    pub bom: bool,
}

/// The JSON key of a column header: `avg stars` → `avg_stars`, `coverage %` →
/// `coverage_percent`.
pub fn json_key(header: &str) -> String {
    let mut key = String::new();
    for c in header.replace('%', " percent ").chars() {
        if c.is_alphanumeric() {
            key.extend(c.to_lowercase());
        } else if !key.is_empty() && !key.ends_with('_') {
            key.push('_');
        }
    }
    key.trim_end_matches('_').to_string()
}

impl Table {
    /// An empty table named `name` with these column headers.
    pub fn new(name: &str, title: impl Into<String>, headers: &[&str]) -> Self {
        Table {
            name: name.into(),
            title: title.into(),
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: vec![],
        }
    }

    /// Appends a row.
    pub fn push(&mut self, row: Vec<Cell>) {
        self.rows.push(row);
    }

    /// The rows as JSON objects keyed by [`json_key`].
    pub fn to_json(&self) -> Value {
        let keys: Vec<String> = self.headers.iter().map(|h| json_key(h)).collect();
        Value::Array(
            self.rows
                .iter()
                .map(|r| Value::Object(keys.iter().cloned().zip(r.iter().map(|c| c.value.clone())).collect()))
                .collect(),
        )
    }

    fn to_text(&self) -> String {
        let mut t = comfy_table::Table::new();
        t.load_preset(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic);
        t.set_header(&self.headers);
        for r in &self.rows {
            t.add_row(r.iter().map(Cell::as_text));
        }
        let body = if self.rows.is_empty() { "(none)".to_string() } else { t.to_string() };
        if self.title.is_empty() {
            format!("{body}\n")
        } else {
            format!("{}\n{body}\n", self.title)
        }
    }

    fn to_csv(&self, bom: bool) -> String {
        let mut w = csv::Writer::from_writer(vec![]);
        let _ = w.write_record(&self.headers);
        for r in &self.rows {
            let _ = w.write_record(r.iter().map(Cell::csv));
        }
        let body = String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default();
        if bom {
            format!("\u{feff}{body}")
        } else {
            body
        }
    }
}

/// Renders the tables of one command as one document in `out.format`.
pub fn render(tables: &[&Table], out: &Output) -> Result<String, String> {
    match out.format {
        Format::Table => Ok(tables.iter().map(|t| t.to_text()).collect::<Vec<_>>().join("\n")),
        Format::Json => {
            let doc = match tables {
                [one] => one.to_json(),
                many => Value::Object(many.iter().map(|t| (t.name.clone(), t.to_json())).collect()),
            };
            Ok(serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n")
        }
        Format::Csv => {
            let names = || tables.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ");
            let table = match &out.table {
                None => tables.first().ok_or("nothing to print")?,
                Some(name) => tables
                    .iter()
                    .find(|t| &t.name == name)
                    .ok_or_else(|| format!("no table {name:?} in this report; it has: {}", names()))?,
            };
            Ok(table.to_csv(out.bom))
        }
    }
}

/// `2026-11-26 10:15` from epoch milliseconds (UTC).
pub fn timestamp(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    let s = humantime::format_rfc3339_seconds(t).to_string();
    s.replace('T', " ").trim_end_matches('Z').get(..16).unwrap_or(&s).to_string()
}

/// A timestamp cell: readable UTC minutes for people, RFC 3339 for machines, none for 0.
pub fn time_cell(ms: i64) -> Cell {
    if ms <= 0 {
        return Cell::none();
    }
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64);
    Cell::with_value(timestamp(ms), Value::String(humantime::format_rfc3339_millis(t).to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Table {
        let mut t = Table::new("adopters", "x", &["name", "stars", "coverage %", "running"]);
        t.push(vec!["Lünen, Stadt".into(), 4u32.into(), Cell::float(0.25, 1), Cell::opt("")]);
        t
    }

    #[test]
    fn every_format_keeps_umlauts_and_types() {
        let t = sample();
        let text = render(&[&t], &Output::default()).unwrap();
        assert!(text.contains("Lünen, Stadt") && text.contains(" - "), "{text}");
        let csv = render(&[&t], &Output { format: Format::Csv, ..Default::default() }).unwrap();
        assert_eq!(csv, "name,stars,coverage %,running\n\"Lünen, Stadt\",4,0.2,\n", "no BOM by default");
        let bom = render(&[&t], &Output { format: Format::Csv, bom: true, ..Default::default() }).unwrap();
        assert!(bom.starts_with('\u{feff}'));
        let json: Value =
            serde_json::from_str(&render(&[&t], &Output { format: Format::Json, ..Default::default() }).unwrap())
                .unwrap();
        assert_eq!(
            json,
            serde_json::json!([{"name": "Lünen, Stadt", "stars": 4, "coverage_percent": 0.2, "running": null}])
        );
    }

    #[test]
    fn several_tables_are_one_json_document_and_csv_picks_one() {
        let (a, mut b) = (sample(), Table::new("history", "", &["at"]));
        b.push(vec!["2026".into()]);
        let json = render(&[&a, &b], &Output { format: Format::Json, ..Default::default() }).unwrap();
        let doc: Value = serde_json::from_str(&json).expect("one JSON document");
        assert_eq!(doc["history"][0]["at"], "2026");
        let csv =
            render(&[&a, &b], &Output { format: Format::Csv, table: Some("history".into()), ..Default::default() })
                .unwrap();
        assert_eq!(csv, "at\n2026\n");
        let err = render(&[&a, &b], &Output { format: Format::Csv, table: Some("nope".into()), ..Default::default() })
            .unwrap_err();
        assert!(err.contains("adopters, history"), "{err}");
    }

    #[test]
    fn json_keys_are_snake_case() {
        assert_eq!(json_key("avg stars"), "avg_stars");
        assert_eq!(json_key("coverage %"), "coverage_percent");
        assert_eq!(json_key("1-5 stars"), "1_5_stars");
    }
}
