//! The local parameters a Kommune fills in when it adopts a service (the EfA
//! "Parametrisierung"): the schema a service declares, validation of a Kommune's values,
//! and rendering them into the service's config templates.

use crate::error::{echo, Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Default length limit for text-like parameters without their own.
pub const DEFAULT_MAX_LEN: usize = 500;
/// Most parameters one service may declare.
pub const MAX_PARAMETERS: usize = 64;
/// Longest description of a parameter, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1000;
/// Largest `max_length` a parameter may declare, in characters.
pub const MAX_VALUE_LEN: usize = 10_000;

/// What kind of value a parameter takes; decides how a Kommune's value is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParameterKind {
    /// Free text, bounded by the spec's length limit.
    Text,
    /// An `http://` or `https://` URL.
    Url,
    /// An e-mail address (`local@domain.tld`, no whitespace).
    Email,
    /// A fee as a non-negative whole number of euro cents.
    AmountCents,
    /// A non-empty list of 5-digit postcodes (Postleitzahlen).
    Postcodes,
    /// `true` or `false`.
    Boolean,
    /// Any whole number.
    Integer,
    /// A FIT-Connect destination ID, a UUID (`8-4-4-4-12` hex digits): where the service
    /// sends applications for this Kommune (routing is Leistungsschlüssel + ARS →
    /// destination).
    FitConnectDestination,
    /// A telephone number: digits, spaces, `+`, `/`, `-`, `(`, `)`, at least 3 digits.
    Phone,
}

impl ParameterKind {
    /// Every kind, in the order the CLIs list them.
    pub const ALL: [ParameterKind; 9] = [
        ParameterKind::Text,
        ParameterKind::Url,
        ParameterKind::Email,
        ParameterKind::AmountCents,
        ParameterKind::Postcodes,
        ParameterKind::Boolean,
        ParameterKind::Integer,
        ParameterKind::FitConnectDestination,
        ParameterKind::Phone,
    ];

    /// The name used in node configs and on the command line, e.g. `amount_cents`.
    pub fn as_str(self) -> &'static str {
        match self {
            ParameterKind::Text => "text",
            ParameterKind::Url => "url",
            ParameterKind::Email => "email",
            ParameterKind::AmountCents => "amount_cents",
            ParameterKind::Postcodes => "postcodes",
            ParameterKind::Boolean => "boolean",
            ParameterKind::Integer => "integer",
            ParameterKind::FitConnectDestination => "fit_connect_destination",
            ParameterKind::Phone => "phone",
        }
    }
}

impl std::fmt::Display for ParameterKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ParameterKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        ParameterKind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            let names: Vec<&str> = ParameterKind::ALL.iter().map(|k| k.as_str()).collect();
            Error::invalid("parameter kind", format!("{} is not one of {}", echo(s), names.join(", ")))
        })
    }
}

/// One parameter a service declares for Kommunen to fill in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParameterSpec {
    /// Name used in node configs and `{{ name }}` placeholders: a-z, 0-9, `_`, starting with a letter.
    pub name: String,
    /// What kind of value it takes.
    pub kind: ParameterKind,
    /// A Kommune must give a (non-empty) value; an optional one may be left out.
    pub required: bool,
    /// Explains the parameter to the Kommune; may be empty.
    #[serde(default)]
    pub description: String,
    /// 0 means [`DEFAULT_MAX_LEN`].
    #[serde(default)]
    pub max_length: u32,
}

/// A parameter value as a Kommune writes it in its node config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParamValue {
    /// For [`ParameterKind::Boolean`].
    Bool(bool),
    /// For [`ParameterKind::Integer`] and [`ParameterKind::AmountCents`].
    Integer(i64),
    /// For text, URL and e-mail parameters.
    Text(String),
    /// For [`ParameterKind::Postcodes`]; rendered comma-separated.
    List(Vec<String>),
}

impl ParamValue {
    /// How the value appears when rendered into a template.
    pub fn render(&self) -> String {
        match self {
            ParamValue::Bool(b) => b.to_string(),
            ParamValue::Integer(i) => i.to_string(),
            ParamValue::Text(s) => s.clone(),
            ParamValue::List(v) => v.join(","),
        }
    }
}

/// Checks a parameter schema itself (done when a Land registers a service).
pub fn validate_schema(specs: &[ParameterSpec]) -> Result<()> {
    if specs.len() > MAX_PARAMETERS {
        return Err(Error::invalid(
            "parameter schema",
            format!("has {} parameters, more than the limit of {MAX_PARAMETERS}", specs.len()),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for s in specs {
        crate::text::check("parameter description", &s.description, MAX_DESCRIPTION_CHARS, crate::text::Lines::Multi)?;
        if s.max_length as usize > MAX_VALUE_LEN {
            return Err(Error::invalid(
                "parameter max_length",
                format!("{} of {} is more than the limit of {MAX_VALUE_LEN}", s.max_length, echo(&s.name)),
            ));
        }
        let ok_name = !s.name.is_empty()
            && s.name.len() <= 64
            && s.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && s.name.as_bytes()[0].is_ascii_lowercase();
        if !ok_name {
            return Err(Error::invalid(
                "parameter name",
                format!("{} must be 1..64 characters of a-z, 0-9 and _, starting with a letter", echo(&s.name)),
            ));
        }
        if !seen.insert(s.name.as_str()) {
            return Err(Error::invalid("parameter schema", format!("{} is declared twice", echo(&s.name))));
        }
        if let Some(w) = crate::vocabulary::lookup(&s.name).filter(|w| w.kind != s.kind) {
            return Err(Error::invalid(
                "parameter schema",
                format!(
                    "'{}' is a well-known EfA parameter of kind {} ({}); declare it as {} or pick another name",
                    w.name,
                    w.kind.as_str(),
                    w.description,
                    w.kind.as_str()
                ),
            ));
        }
    }
    Ok(())
}

/// Validates a Kommune's values against a service's schema. Reports every problem at
/// once, so a Kommune can fix its config in one go.
pub fn validate_values(
    specs: &[ParameterSpec],
    values: &BTreeMap<String, ParamValue>,
) -> Result<BTreeMap<String, ParamValue>> {
    let mut problems = Vec::new();
    let mut out = BTreeMap::new();
    for spec in specs {
        match values.get(&spec.name) {
            None if spec.required => problems.push(format!(
                "missing required parameter '{}' ({})",
                spec.name,
                if spec.description.is_empty() { "no description" } else { &spec.description }
            )),
            None => {}
            Some(v) => match check_value(spec, v) {
                Ok(v) => {
                    out.insert(spec.name.clone(), v);
                }
                Err(why) => problems.push(format!("parameter '{}' {why}", spec.name)),
            },
        }
    }
    for name in values.keys() {
        if !specs.iter().any(|s| &s.name == name) {
            problems.push(format!("unknown parameter '{name}' (not in the service's schema)"));
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(Error::invalid("parameters", problems.join("; ")))
    }
}

/// Checks the values a Land sets in an offer: every name in the schema, every value valid.
/// Required parameters may stay unset: the Kommune sets those.
pub fn validate_land_values(specs: &[ParameterSpec], values: &BTreeMap<String, ParamValue>) -> Result<()> {
    let mut problems = Vec::new();
    for (name, v) in values {
        match specs.iter().find(|s| &s.name == name) {
            None => problems.push(format!("unknown parameter {} (not in the service's schema)", echo(name))),
            Some(spec) => {
                if let Err(why) = check_value(spec, v) {
                    problems.push(format!("parameter '{name}' {why}"));
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::invalid("Land parameters", problems.join("; ")))
    }
}

/// The values a deployment uses, from three layers, the nearer one winning: the Land's
/// (from its offer), the Kommune's for all its services (`[parameters]` of the node config,
/// e.g. its `datenschutz_url`), and the Kommune's for this service. The first two count
/// only for names the release's `schema` has (they are shared, and a service takes what it
/// declares); the last is taken whole, so a typo there is reported.
pub fn layered(
    schema: &[ParameterSpec],
    land: &BTreeMap<String, ParamValue>,
    kommune: &BTreeMap<String, ParamValue>,
    service: &BTreeMap<String, ParamValue>,
) -> BTreeMap<String, ParamValue> {
    let declared = |name: &String| schema.iter().any(|s| &s.name == name);
    let mut out: BTreeMap<String, ParamValue> = BTreeMap::new();
    for layer in [land, kommune] {
        out.extend(layer.iter().filter(|(k, _)| declared(k)).map(|(k, v)| (k.clone(), v.clone())));
    }
    out.extend(service.iter().map(|(k, v)| (k.clone(), v.clone())));
    out
}

fn check_value(spec: &ParameterSpec, v: &ParamValue) -> std::result::Result<ParamValue, String> {
    let max = if spec.max_length == 0 { DEFAULT_MAX_LEN } else { spec.max_length as usize };
    let text = |v: &ParamValue| match v {
        ParamValue::Text(s) => Ok(s.clone()),
        _ => Err("must be text".to_string()),
    };
    let bounded = |s: String| {
        let n = s.chars().count();
        if n > max {
            Err(format!("is {n} characters, more than the limit of {max}"))
        } else if spec.required && s.trim().is_empty() {
            Err("must not be empty".to_string())
        } else {
            Ok(s)
        }
    };
    match spec.kind {
        ParameterKind::Text => Ok(ParamValue::Text(bounded(text(v)?)?)),
        ParameterKind::Url => {
            let s = bounded(text(v)?)?;
            let rest = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://"));
            match rest {
                Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => Ok(ParamValue::Text(s)),
                _ => Err(format!("{} is not an http(s) URL", echo(&s))),
            }
        }
        ParameterKind::Email => {
            let s = bounded(text(v)?)?;
            match s.split_once('@') {
                Some((l, d)) if !l.is_empty() && d.contains('.') && !s.contains(char::is_whitespace) => {
                    Ok(ParamValue::Text(s))
                }
                _ => Err(format!("{} is not an e-mail address", echo(&s))),
            }
        }
        ParameterKind::AmountCents => match v {
            ParamValue::Integer(i) if *i >= 0 => Ok(v.clone()),
            _ => Err("must be a non-negative whole number of euro cents".to_string()),
        },
        ParameterKind::Integer => match v {
            ParamValue::Integer(_) => Ok(v.clone()),
            _ => Err("must be a whole number".to_string()),
        },
        ParameterKind::Boolean => match v {
            ParamValue::Bool(_) => Ok(v.clone()),
            _ => Err("must be true or false".to_string()),
        },
        ParameterKind::Postcodes => match v {
            ParamValue::List(codes) if !codes.is_empty() => {
                match codes.iter().find(|c| !(c.len() == 5 && c.bytes().all(|b| b.is_ascii_digit()))) {
                    Some(bad) => Err(format!("contains {}, which is not a 5-digit postcode", echo(bad))),
                    None => Ok(v.clone()),
                }
            }
            _ => Err("must be a non-empty list of 5-digit postcodes".to_string()),
        },
        ParameterKind::FitConnectDestination => {
            let s = text(v)?;
            if is_uuid(s.trim()) {
                Ok(ParamValue::Text(s.trim().to_ascii_lowercase()))
            } else {
                Err(format!(
                    "{} is not a FIT-Connect destination ID (a UUID such as 7b0b3d6e-1f0a-4c2e-9a4b-2d1f0e9c8a7b)",
                    echo(&s)
                ))
            }
        }
        ParameterKind::Phone => {
            let s = bounded(text(v)?)?;
            let allowed = s.chars().all(|c| c.is_ascii_digit() || " +/-()".contains(c));
            if allowed && s.chars().filter(char::is_ascii_digit).count() >= 3 {
                Ok(ParamValue::Text(s))
            } else {
                Err(format!("{} is not a telephone number", echo(&s)))
            }
        }
    }
}

/// `8-4-4-4-12` hexadecimal digits, as RFC 9562 writes a UUID.
pub fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Replaces every `{{ name }}` in `template` with the parameter's value. A placeholder
/// without a value is an error, so a deployed config never ships a raw placeholder.
pub fn render_template(template: &str, values: &BTreeMap<String, ParamValue>) -> Result<String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| Error::invalid("template", "a '{{' is not closed by '}}'"))?;
        let name = after[..end].trim();
        let value = values.get(name).ok_or_else(|| {
            Error::invalid("template", format!("placeholder '{{{{ {name} }}}}' has no parameter value"))
        })?;
        out.push_str(&value.render());
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// How a release's parameter schema differs from the one of the version a Kommune runs:
/// what may make an update stop at the Kommune's door (in the spirit of OLM's upgrade
/// safety check).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SchemaChange {
    /// A parameter the running version did not have, which must be given.
    NewRequired(String),
    /// A new optional parameter.
    NewOptional(String),
    /// A parameter the running version had and this one no longer has.
    Removed(String),
    /// A parameter now takes another kind of value.
    KindChanged {
        /// The parameter.
        name: String,
        /// Its kind before.
        from: ParameterKind,
        /// Its kind now.
        to: ParameterKind,
    },
    /// An optional parameter became required.
    NowRequired(String),
    /// A parameter's length limit got tighter.
    Tighter {
        /// The parameter.
        name: String,
        /// Its limit before.
        from: usize,
        /// Its limit now.
        to: usize,
    },
}

impl std::fmt::Display for SchemaChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SchemaChange::NewRequired(n) => write!(f, "new required parameter '{n}'"),
            SchemaChange::NewOptional(n) => write!(f, "new optional parameter '{n}'"),
            SchemaChange::Removed(n) => write!(f, "parameter '{n}' removed"),
            SchemaChange::KindChanged { name, from, to } => write!(f, "parameter '{name}' is now {to} (was {from})"),
            SchemaChange::NowRequired(n) => write!(f, "parameter '{n}' is now required"),
            SchemaChange::Tighter { name, from, to } => {
                write!(f, "parameter '{name}' is now at most {to} characters (was {from})")
            }
        }
    }
}

fn limit(spec: &ParameterSpec) -> usize {
    if spec.max_length == 0 {
        DEFAULT_MAX_LEN
    } else {
        spec.max_length as usize
    }
}

/// The changes from `old` (the running version's schema) to `new`, in the order of `new`,
/// then removals.
pub fn schema_changes(old: &[ParameterSpec], new: &[ParameterSpec]) -> Vec<SchemaChange> {
    let mut out = Vec::new();
    for n in new {
        match old.iter().find(|o| o.name == n.name) {
            None if n.required => out.push(SchemaChange::NewRequired(n.name.clone())),
            None => out.push(SchemaChange::NewOptional(n.name.clone())),
            Some(o) => {
                if o.kind != n.kind {
                    out.push(SchemaChange::KindChanged { name: n.name.clone(), from: o.kind, to: n.kind });
                }
                if n.required && !o.required {
                    out.push(SchemaChange::NowRequired(n.name.clone()));
                }
                if limit(n) < limit(o) {
                    out.push(SchemaChange::Tighter { name: n.name.clone(), from: limit(o), to: limit(n) });
                }
            }
        }
    }
    for o in old.iter().filter(|o| !new.iter().any(|n| n.name == o.name)) {
        out.push(SchemaChange::Removed(o.name.clone()));
    }
    out
}

/// Whether a Kommune's parameters fit a release before anything is deployed: `problems`
/// empty means ready.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Preflight {
    /// Every missing or invalid parameter, in words.
    pub problems: Vec<String>,
    /// How the schema differs from the running version's (empty without one).
    pub changes: Vec<SchemaChange>,
}

impl Preflight {
    /// No problems: the release can be deployed with the Kommune's parameters as they are.
    pub fn is_ready(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The pre-flight check of `values` against a release's `schema`, with the changes from
/// `running` (the schema of the version the Kommune runs, if known).
pub fn preflight(
    schema: &[ParameterSpec],
    running: Option<&[ParameterSpec]>,
    values: &BTreeMap<String, ParamValue>,
) -> Preflight {
    let problems = match validate_values(schema, values) {
        Ok(_) => Vec::new(),
        Err(Error::Invalid { reason, .. }) => reason.split("; ").map(str::to_string).collect(),
        Err(other) => vec![other.to_string()],
    };
    let changes = running.map(|old| schema_changes(old, schema)).unwrap_or_default();
    Preflight { problems, changes }
}

#[cfg(test)]
mod tests;
