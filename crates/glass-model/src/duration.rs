//! Human durations as users write them: `500ms`, `5s`, `1m`, `2h`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ModelError;

/// Parses `5s`, `250ms`, `1m30s`, `2h`; a bare number is refused because
/// its unit would be a guess.
pub fn parse_duration(field: &str, text: &str) -> Result<Duration, ModelError> {
    let bad = |why: &str| {
        ModelError::invalid(
            field,
            format!("{text:?} is not a duration ({why}); write e.g. \"500ms\", \"5s\", \"1m\""),
        )
    };
    if text.is_empty() {
        return Err(bad("empty"));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad("expected a number"));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| bad("number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(number),
            "s" => Duration::from_secs(number),
            "m" => Duration::from_secs(number.saturating_mul(60)),
            "h" => Duration::from_secs(number.saturating_mul(3600)),
            "" => return Err(bad("missing unit")),
            _ => return Err(bad("unknown unit")),
        };
        total = total.saturating_add(part);
    }
    Ok(total)
}

/// A duration that reads and writes as text (`"5s"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(pub Duration);

impl Serialize for HumanDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let d = self.0;
        if d.subsec_millis() != 0 || d.as_secs() == 0 {
            s.serialize_str(&format!("{}ms", d.as_millis()))
        } else {
            s.serialize_str(&format!("{}s", d.as_secs()))
        }
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration("duration", &text)
            .map(HumanDuration)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Option<u64>) {
        let got = parse_duration("f", text).ok().map(|d| d.as_millis() as u64);
        assert_eq!(got, expected, "{text:?}");
    }

    #[test]
    fn durations() {
        check("5s", Some(5000));
        check("250ms", Some(250));
        check("1m30s", Some(90_000));
        check("2h", Some(7_200_000));
        check("0s", Some(0));
        check("5", None);
        check("", None);
        check("s", None);
        check("5x", None);
        check("-5s", None);
    }

    #[test]
    fn round_trip() {
        for text in ["5s", "250ms", "90s"] {
            let d: HumanDuration = serde_json::from_str(&format!("{text:?}")).unwrap();
            assert_eq!(serde_json::to_string(&d).unwrap(), format!("{text:?}"));
        }
    }
}
