//! What the DNS server is told: its domain, TTLs and health policy.

use crate::wire;

/// How the DNS server answers. Validated when the server binds or an index is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// The domain Glass is authoritative for, e.g. `glass.` (trailing dot optional).
    pub domain: String,
    /// TTL of positive answers, in seconds.
    pub ttl: u32,
    /// TTL of negative answers (NXDOMAIN, NODATA): the SOA TTL and minimum, in seconds.
    pub negative_ttl: u32,
    /// Whether instances whose health is `warning` are answered too.
    pub allow_warning: bool,
    /// This node's zone: with the zone label `any`, its instances come first.
    pub local_zone: String,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            domain: "glass.".into(),
            ttl: 5,
            negative_ttl: 5,
            allow_warning: false,
            local_zone: "local".into(),
        }
    }
}

/// Why the DNS server cannot start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// A configuration field has a value the server cannot use.
    #[error("dns {field}: {reason}")]
    Invalid {
        /// The field (`domain`, ...).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// The domain in wire format, lowercased, with its label count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Domain {
    pub(crate) wire: Vec<u8>,
    pub(crate) labels: usize,
    pub(crate) text: String,
}

impl Domain {
    pub(crate) fn parse(text: &str) -> Result<Self, DnsError> {
        let invalid = |reason: String| DnsError::Invalid {
            field: "domain",
            reason,
        };
        let trimmed = text.trim_end_matches('.').to_ascii_lowercase();
        let labels: Vec<&str> = if trimmed.is_empty() {
            Vec::new()
        } else {
            trimmed.split('.').collect()
        };
        for label in &labels {
            let ok = !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok {
                return Err(invalid(format!(
                    "{text:?} has the label {label:?}; use letters, digits and '-'"
                )));
            }
        }
        let wire = wire::name_wire(labels.iter().copied(), &[0]);
        // Service names add six labels of up to 63 bytes: leave room for common ones.
        if wire.len() > 128 {
            return Err(invalid(format!(
                "{text:?} is too long; at most 127 characters"
            )));
        }
        let text = if trimmed.is_empty() {
            ".".to_owned()
        } else {
            format!("{trimmed}.")
        };
        Ok(Domain {
            wire,
            labels: labels.len(),
            text,
        })
    }
}

impl DnsConfig {
    /// Checks the configuration without binding anything.
    pub fn validate(&self) -> Result<(), DnsError> {
        Domain::parse(&self.domain)?;
        glass_model::validate_label("local_zone", &self.local_zone).map_err(|e| DnsError::Invalid {
            field: "local_zone",
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains() {
        let d = Domain::parse("Glass.").expect("valid");
        assert_eq!(
            (d.wire.as_slice(), d.labels, d.text.as_str()),
            (&b"\x05glass\x00"[..], 1, "glass.")
        );
        let d = Domain::parse("svc.example").expect("valid");
        assert_eq!((d.labels, d.text.as_str()), (2, "svc.example."));
        assert_eq!(Domain::parse(".").expect("root").wire, vec![0]);
        for bad in ["a..b", "a b.", &"x".repeat(64), &"abcdefgh.".repeat(20)] {
            assert!(Domain::parse(bad).is_err(), "{bad}");
        }
    }
}
