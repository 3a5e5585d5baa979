//! Service addresses: `<port>.<job>.<env>.<product>.<zone>`.

use std::fmt;
use std::str::FromStr;

use crate::{ModelError, validate_label};

/// The address of one named port of a job, in one zone or in all of them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceAddr {
    /// Port name.
    pub port: String,
    /// Job.
    pub job: String,
    /// Environment.
    pub env: String,
    /// Product.
    pub product: String,
    /// Zone; `None` means every zone (written `any` or left out).
    pub zone: Option<String>,
}

impl FromStr for ServiceAddr {
    type Err = ModelError;

    /// Parses `port.job.env.product.zone` or `port.job.env.product`
    /// (all zones); the zone `any` also means all zones.
    fn from_str(text: &str) -> Result<Self, ModelError> {
        let parts: Vec<&str> = text.trim_end_matches('.').split('.').collect();
        if !(4..=5).contains(&parts.len()) {
            return Err(ModelError::invalid(
                "address",
                format!(
                    "{text:?} is not a service address; write <port>.<job>.<env>.<product>[.<zone>]"
                ),
            ));
        }
        for (field, value) in ["port", "job", "env", "product", "zone"].iter().zip(&parts) {
            validate_label(field, value)?;
        }
        let zone = parts
            .get(4)
            .filter(|z| **z != "any")
            .map(|z| (*z).to_owned());
        Ok(ServiceAddr {
            port: parts[0].to_owned(),
            job: parts[1].to_owned(),
            env: parts[2].to_owned(),
            product: parts[3].to_owned(),
            zone,
        })
    }
}

impl fmt::Display for ServiceAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let zone = self.zone.as_deref().unwrap_or("any");
        write!(
            f,
            "{}.{}.{}.{}.{}",
            self.port, self.job, self.env, self.product, zone
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_display_round_trip() {
        for text in ["http.users-api.prod.shop.eu1", "grpc.a.b.c.any"] {
            assert_eq!(text.parse::<ServiceAddr>().unwrap().to_string(), text);
        }
        let all: ServiceAddr = "http.users-api.prod.shop".parse().unwrap();
        assert_eq!(all.zone, None);
        for bad in ["http.users-api", "a.b.c.d.e.f", "HTTP.a.b.c", "a..b.c"] {
            assert!(bad.parse::<ServiceAddr>().is_err(), "{bad}");
        }
    }
}
