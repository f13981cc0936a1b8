//! Validated identifiers. Each is checked once at the edge (`FromStr`) and carried as a type
//! afterwards, so no bare `String` key travels through the domain.

use crate::error::{echo, Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

fn all_digits(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_digit())
}

/// A validated string key: `$check` trims or refuses (with why) the text; the rest is the
/// same for every key (serde through `String`, `Display`, `as_str`).
macro_rules! string_key {
    ($(#[$doc:meta])* $name:ident, $field:literal, $check:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The key as validated.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                let check: fn(&str) -> std::result::Result<&str, String> = $check;
                check(s).map(|ok| Self(ok.to_string())).map_err(|why| Error::invalid($field, format!("{} {why}", echo(s))))
            }
        }

        impl TryFrom<String> for $name {
            type Error = Error;
            fn try_from(s: String) -> Result<Self> {
                s.parse()
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

/// Keys of `len` digits; surrounding whitespace is dropped.
macro_rules! digit_key {
    ($(#[$doc:meta])* $name:ident, $len:expr, $field:literal, $example:literal) => {
        string_key!($(#[$doc])* $name, $field, |s| {
            let s = s.trim();
            if all_digits(s, $len) { Ok(s) } else { Err(format!("is not {} digits (e.g. {})", $len, $example)) }
        });
    };
}

/// Slugs: `$min..=$max` characters of a-z, 0-9 and '-', not starting or ending with '-'.
macro_rules! slug {
    ($(#[$doc:meta])* $name:ident, $field:literal, $min:expr, $max:expr) => {
        string_key!($(#[$doc])* $name, $field, |s| {
            let ok = (($min)..=($max)).contains(&s.len())
                && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !s.starts_with('-')
                && !s.ends_with('-');
            if ok {
                Ok(s)
            } else {
                Err(format!(
                    "must be {}..{} characters of a-z, 0-9 and '-', not starting or ending with '-'",
                    $min, $max
                ))
            }
        });
    };
}

digit_key!(
    /// Amtlicher Gemeindeschlüssel: 8 digits, Land (2) + RB (1) + Kreis (2) + Gemeinde (3).
    Ags, 8, "AGS", "05913000 for Dortmund"
);
digit_key!(
    /// Amtlicher Regionalschlüssel: 12 digits, AGS with the Gemeindeverband inserted.
    Ars, 12, "ARS", "059130000000 for Dortmund"
);
digit_key!(
    /// Land code: 2 digits, 01 (Schleswig-Holstein) to 16 (Thüringen).
    LandCode, 2, "Land code", "05 for Nordrhein-Westfalen"
);
digit_key!(
    /// Kreis code: 5 digits, the first five of the AGS.
    KreisCode, 5, "Kreis code", "05913 for Dortmund"
);
digit_key!(
    /// Gemeindeverband (Amt, Verbandsgemeinde, Samtgemeinde, ...): the first 9 digits of its
    /// Gemeinden's ARS, Land (2) + RB (1) + Kreis (2) + Verband (4).
    VerbandCode, 9, "Gemeindeverband code", "010575747"
);
digit_key!(
    /// OZG-ID of an OZG-Leistung: 5 digits.
    OzgId, 5, "OZG-ID", "10513"
);

impl Ags {
    /// The Land this Gemeinde lies in: the first two digits.
    pub fn land(&self) -> LandCode {
        LandCode(self.0[..2].to_string())
    }
    /// The Kreis (or kreisfreie Stadt) this Gemeinde belongs to: the first five digits.
    pub fn kreis(&self) -> KreisCode {
        KreisCode(self.0[..5].to_string())
    }
}

impl LandCode {
    /// `00`: the Bund, which builds and publishes services too (BAföG Digital, the eWA with
    /// Hamburg) under its own identity, `efa://land/00`. It has no Kommunen, so it offers
    /// nothing; Länder offer its services to theirs.
    pub fn bund() -> Self {
        LandCode("00".to_string())
    }

    /// True for the Bund's code.
    pub fn is_bund(&self) -> bool {
        self.0 == "00"
    }
}

impl KreisCode {
    /// The Land this Kreis lies in: the first two digits.
    pub fn land(&self) -> LandCode {
        LandCode(self.0[..2].to_string())
    }
}

string_key!(
    /// LeiKa Leistungsschlüssel: 14 digits starting with `99`.
    Leistungsschluessel,
    "Leistungsschlüssel",
    |s| {
        let s = s.trim();
        if all_digits(s, 14) && s.starts_with("99") {
            Ok(s)
        } else {
            Err("is not 14 digits starting with 99 (e.g. 99012001000000)".into())
        }
    }
);

slug!(
    /// Stable id of an EfA service, e.g. `wohngeld-nrw`.
    ServiceId, "service id", 3, 64
);
slug!(
    /// Release channel, e.g. `stable` or `beta`.
    Channel, "channel", 2, 32
);

impl Channel {
    /// The `stable` channel, the default when none is given.
    pub fn stable() -> Self {
        Channel("stable".to_string())
    }
}

impl Default for Channel {
    fn default() -> Self {
        Self::stable()
    }
}

/// Parses a semantic version with a clear error.
pub fn parse_version(s: &str) -> Result<semver::Version> {
    semver::Version::parse(s.trim())
        .map_err(|e| Error::invalid("version", format!("{} is not a semantic version like 1.2.3 ({e})", echo(s))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ags_accepts_eight_digits_and_derives_land_and_kreis() {
        let ags: Ags = "05913000".parse().unwrap();
        assert_eq!(ags.land().as_str(), "05");
        assert_eq!(ags.kreis().as_str(), "05913");
    }

    #[test]
    fn ags_rejects_wrong_length_and_letters() {
        for bad in ["0591300", "059130000", "05913a00", "", "０5913000"] {
            let err = bad.parse::<Ags>().unwrap_err();
            assert!(err.to_string().contains("AGS"), "{err}");
        }
    }

    #[test]
    fn leistungsschluessel_must_start_with_99() {
        assert!("99012001000000".parse::<Leistungsschluessel>().is_ok());
        assert!("12012001000000".parse::<Leistungsschluessel>().is_err());
        assert!("9901200100000".parse::<Leistungsschluessel>().is_err());
    }

    #[test]
    fn service_id_is_a_slug() {
        assert!("wohngeld-nrw".parse::<ServiceId>().is_ok());
        for bad in ["Wohngeld", "ab", "-x-y", "a/b", "x..y", "wohn geld"] {
            assert!(bad.parse::<ServiceId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn versions_order_semantically_not_lexically() {
        let a = parse_version("1.10.0").unwrap();
        let b = parse_version("1.9.3").unwrap();
        let pre = parse_version("1.10.0-rc.1").unwrap();
        assert!(a > b);
        assert!(pre < a && pre > b);
        assert!(parse_version("1.2").is_err());
        assert!(parse_version("v1.2.3").is_err());
    }
}
