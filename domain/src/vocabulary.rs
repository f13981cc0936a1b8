//! The well-known EfA parameters: what Kommunen set for nearly every Onlinedienst (the
//! FIT-Connect destination, ePayBL identifiers, the responsible office, imprint, privacy and
//! accessibility statements, fees, logo), each with one name and one kind across services.
//!
//! A building Land that uses one of these names must declare it with its kind, so a
//! Kommune's value (e.g. `datenschutz_url`, set once in its node config for all services)
//! means the same in every service. Other names stay free for what a service needs.

use crate::params::ParameterKind;

/// One well-known parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WellKnown {
    /// Its name in schemas, node configs and templates.
    pub name: &'static str,
    /// Its kind in every service.
    pub kind: ParameterKind,
    /// What it is, in the practitioners' words.
    pub description: &'static str,
    /// A sensible length limit for text-like kinds (0: the default).
    pub max_length: u32,
}

const fn p(name: &'static str, kind: ParameterKind, description: &'static str, max_length: u32) -> WellKnown {
    WellKnown { name, kind, description, max_length }
}

/// The vocabulary, grouped as a Kommune fills it in.
pub const WELL_KNOWN: &[WellKnown] = &[
    // Routing: where applications go.
    p(
        "fit_connect_destination",
        ParameterKind::FitConnectDestination,
        "FIT-Connect-Destination-ID der zuständigen Stelle",
        0,
    ),
    // Payment through ePayBL.
    p("epaybl_mandant", ParameterKind::Text, "ePayBL-Mandantennummer", 64),
    p("epaybl_bewirtschafter", ParameterKind::Text, "ePayBL-Bewirtschafternummer", 64),
    p("epaybl_haushaltsstelle", ParameterKind::Text, "Haushaltsstelle", 64),
    p("epaybl_objektnummer", ParameterKind::Text, "Objektnummer", 64),
    p("fee_cents", ParameterKind::AmountCents, "Gebühr in Cent (0: gebührenfrei)", 0),
    // The responsible office.
    p("zustaendige_stelle", ParameterKind::Text, "Name der zuständigen Stelle", 200),
    p("stelle_anschrift", ParameterKind::Text, "Anschrift der zuständigen Stelle", 300),
    p("stelle_organisationseinheit", ParameterKind::Text, "Kennung der Organisationseinheit", 64),
    p("kontakt_email", ParameterKind::Email, "E-Mail der zuständigen Stelle", 0),
    p("kontakt_telefon", ParameterKind::Phone, "Telefon der zuständigen Stelle", 0),
    p("postleitzahlen", ParameterKind::Postcodes, "Postleitzahlen, für die die Stelle zuständig ist", 0),
    // Legal pages and presentation.
    p("impressum_url", ParameterKind::Url, "Impressum", 0),
    p("datenschutz_url", ParameterKind::Url, "Datenschutzerklärung", 0),
    p("barrierefreiheit_url", ParameterKind::Url, "Erklärung zur Barrierefreiheit", 0),
    p("logo_url", ParameterKind::Url, "Logo der Kommune", 0),
];

/// The well-known parameter of that name, if it is one.
pub fn lookup(name: &str) -> Option<&'static WellKnown> {
    WELL_KNOWN.iter().find(|w| w.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_valid_schema_names() {
        let specs: Vec<crate::params::ParameterSpec> = WELL_KNOWN
            .iter()
            .map(|w| crate::params::ParameterSpec {
                name: w.name.into(),
                kind: w.kind,
                required: false,
                description: w.description.into(),
                max_length: w.max_length,
            })
            .collect();
        crate::params::validate_schema(&specs).unwrap();
        assert_eq!(lookup("datenschutz_url").unwrap().kind, ParameterKind::Url);
        assert!(lookup("payment_purpose").is_none());
    }
}
