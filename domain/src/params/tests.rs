//! The parameter rules: schemas, values, layers, templates, schema changes, pre-flight.

use super::*;

#[test]
fn layers_fill_in_only_what_the_schema_declares_and_the_nearest_wins() {
    let schema = vec![
        spec("fee_cents", ParameterKind::AmountCents, true, 0),
        spec("datenschutz_url", ParameterKind::Url, true, 0),
    ];
    let land = BTreeMap::from([
        ("fee_cents".to_string(), ParamValue::Integer(0)),
        ("epaybl_mandant".to_string(), text("NRW")),
    ]);
    let kommune = BTreeMap::from([
        ("datenschutz_url".to_string(), text("https://stadt.example/datenschutz")),
        ("logo_url".to_string(), text("https://stadt.example/logo.svg")),
    ]);
    let service = BTreeMap::from([("fee_cents".to_string(), ParamValue::Integer(500))]);
    let got = layered(&schema, &land, &kommune, &service);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got["fee_cents"], ParamValue::Integer(500), "the service's own value wins");
    assert!(validate_values(&schema, &got).is_ok());
    let without = layered(&schema, &land, &kommune, &BTreeMap::new());
    assert_eq!(without["fee_cents"], ParamValue::Integer(0), "the Land's value fills the gap");
    let typo = BTreeMap::from([("fee_cent".to_string(), ParamValue::Integer(1))]);
    assert!(validate_values(&schema, &layered(&schema, &land, &kommune, &typo)).is_err(), "a typo is reported");
}

#[test]
fn a_well_known_name_keeps_its_kind() {
    let err = validate_schema(&[spec("datenschutz_url", ParameterKind::Text, true, 0)]).unwrap_err().to_string();
    assert!(err.contains("well-known") && err.contains("url"), "{err}");
    assert!(validate_schema(&[spec("datenschutz_url", ParameterKind::Url, true, 0)]).is_ok());
}

fn spec(name: &str, kind: ParameterKind, required: bool, max: u32) -> ParameterSpec {
    ParameterSpec { name: name.into(), kind, required, description: String::new(), max_length: max }
}

fn payment_schema() -> Vec<ParameterSpec> {
    vec![
        spec("payment_purpose", ParameterKind::Text, true, 27),
        spec("fee_cents", ParameterKind::AmountCents, true, 0),
        spec("privacy_url", ParameterKind::Url, true, 0),
        spec("postcodes", ParameterKind::Postcodes, false, 0),
        spec("contact_email", ParameterKind::Email, false, 0),
    ]
}

fn text(s: &str) -> ParamValue {
    ParamValue::Text(s.into())
}

#[test]
fn valid_values_pass() {
    let values = BTreeMap::from([
        ("payment_purpose".to_string(), text("Wohngeld Dortmund")),
        ("fee_cents".to_string(), ParamValue::Integer(0)),
        ("privacy_url".to_string(), text("https://www.dortmund.de/datenschutz")),
        ("postcodes".to_string(), ParamValue::List(vec!["44135".into(), "44137".into()])),
    ]);
    assert_eq!(validate_values(&payment_schema(), &values).unwrap().len(), 4);
}

#[test]
fn every_problem_is_reported_at_once() {
    let values = BTreeMap::from([
        ("payment_purpose".to_string(), text("Verwendungszweck der viel zu lang ist")),
        ("fee_cents".to_string(), ParamValue::Integer(-5)),
        ("postcodes".to_string(), ParamValue::List(vec!["4413".into()])),
        ("contact_email".to_string(), text("not-an-email")),
        ("colour".to_string(), text("blue")),
    ]);
    let err = validate_values(&payment_schema(), &values).unwrap_err().to_string();
    for needle in [
        "payment_purpose",
        "limit of 27",
        "fee_cents",
        "privacy_url",
        "4413",
        "contact_email",
        "unknown parameter 'colour'",
    ] {
        assert!(err.contains(needle), "{needle} missing in: {err}");
    }
}

#[test]
fn schema_rejects_duplicate_and_bad_names() {
    assert!(
        validate_schema(&[spec("a", ParameterKind::Text, true, 0), spec("a", ParameterKind::Url, true, 0)]).is_err()
    );
    assert!(validate_schema(&[spec("Fee", ParameterKind::Text, true, 0)]).is_err());
    assert!(validate_schema(&payment_schema()).is_ok());
}

#[test]
fn templates_render_and_refuse_unknown_placeholders() {
    let values = BTreeMap::from([("fee_cents".to_string(), ParamValue::Integer(1250))]);
    assert_eq!(render_template("fee={{ fee_cents }};", &values).unwrap(), "fee=1250;");
    assert!(render_template("{{ missing }}", &values).is_err());
    assert!(render_template("{{ fee_cents", &values).is_err());
    assert_eq!(render_template("Grüße {{fee_cents}}€", &values).unwrap(), "Grüße 1250€");
}

#[test]
fn schema_changes_name_what_an_update_asks_of_a_kommune() {
    let old = payment_schema();
    let mut new = payment_schema();
    new.retain(|p| p.name != "postcodes");
    new.push(spec("office_email", ParameterKind::Email, true, 0));
    new.push(spec("logo_url", ParameterKind::Url, false, 0));
    let purpose = new.iter_mut().find(|p| p.name == "payment_purpose").unwrap();
    purpose.max_length = 10;
    let changes: Vec<String> = schema_changes(&old, &new).iter().map(|c| c.to_string()).collect();
    assert!(changes.contains(&"new required parameter 'office_email'".to_string()), "{changes:?}");
    assert!(changes.contains(&"new optional parameter 'logo_url'".to_string()), "{changes:?}");
    assert!(changes.contains(&"parameter 'postcodes' removed".to_string()), "{changes:?}");
    assert!(changes.iter().any(|c| c.starts_with("parameter 'payment_purpose' is now at most 10")), "{changes:?}");
    assert!(schema_changes(&old, &old).is_empty());
}

#[test]
fn preflight_lists_every_problem_and_is_ready_without_one() {
    let mut schema = payment_schema();
    schema.push(spec("office_email", ParameterKind::Email, true, 0));
    let values = BTreeMap::from([
        ("payment_purpose".to_string(), text("Wohngeld")),
        ("fee_cents".to_string(), ParamValue::Integer(0)),
        ("privacy_url".to_string(), text("https://www.dortmund.de/datenschutz")),
    ]);
    let p = preflight(&schema, Some(&payment_schema()), &values);
    assert!(!p.is_ready());
    assert!(p.problems.iter().any(|m| m.contains("missing required parameter 'office_email'")), "{p:?}");
    assert_eq!(p.changes, vec![SchemaChange::NewRequired("office_email".into())]);
    let mut fixed = values.clone();
    fixed.insert("office_email".into(), text("wohngeld@example.org"));
    assert!(preflight(&schema, None, &fixed).is_ready());
}

#[test]
fn fit_connect_destinations_are_uuids_and_phones_are_numbers() {
    let dest = spec("fit_connect_destination", ParameterKind::FitConnectDestination, true, 0);
    let ok = check_value(&dest, &text("7B0B3D6E-1F0A-4C2E-9A4B-2D1F0E9C8A7B")).unwrap();
    assert_eq!(ok, text("7b0b3d6e-1f0a-4c2e-9a4b-2d1f0e9c8a7b"), "kept in lower case");
    for bad in ["dest-05913000", "7b0b3d6e1f0a4c2e9a4b2d1f0e9c8a7b", "7b0b3d6e-1f0a-4c2e-9a4b-2d1f0e9c8a7g", ""] {
        assert!(check_value(&dest, &text(bad)).unwrap_err().contains("not a FIT-Connect destination"), "{bad}");
    }
    let phone = spec("phone", ParameterKind::Phone, true, 0);
    assert!(check_value(&phone, &text("+49 231 50-0")).is_ok());
    assert!(check_value(&phone, &text("call us")).is_err());
}
