//! Instances: one running copy of a job, with its address and named ports.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{CheckSpec, ModelError, RawCheck, validate_label};

/// Limits on free-form fields, so one registration cannot bloat every snapshot.
const MAX_TAGS: usize = 64;
const MAX_TAG_LEN: usize = 128;
const MAX_META: usize = 64;
const MAX_META_KEY_LEN: usize = 128;
const MAX_META_VALUE_LEN: usize = 1024;
const MAX_PORTS: usize = 32;
const MAX_VERSION_LEN: usize = 128;

/// A registration exactly as a user sends it (`POST /api/v1/instances`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// Instance id, unique within its job; generated when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Product the job belongs to.
    pub product: String,
    /// Environment (`prod`, `staging`, ...).
    pub env: String,
    /// The deployable unit.
    pub job: String,
    /// Zone the instance runs in; defaults to the registering node's zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// IPv4 or IPv6 address the ports listen on.
    pub address: String,
    /// Named ports: `{"http": 8080, "grpc": 9090}`.
    pub ports: BTreeMap<String, u16>,
    /// Version of the code the instance runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Free-form tags, e.g. `canary`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Free-form metadata; `weight` (1–65535) sets the DNS SRV weight.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
    /// Health check; without one the instance is always passing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<RawCheck>,
}

/// Where an instance is stored: unique per instance in the whole catalog.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct InstanceKey {
    /// Product.
    pub product: String,
    /// Environment.
    pub env: String,
    /// Job.
    pub job: String,
    /// Id within the job.
    pub id: String,
}

impl InstanceKey {
    /// Parses the `product/env/job/id` form used in store keys.
    pub fn parse_path(path: &str) -> Option<Self> {
        let mut parts = path.split('/');
        let key = InstanceKey {
            product: parts.next()?.to_owned(),
            env: parts.next()?.to_owned(),
            job: parts.next()?.to_owned(),
            id: parts.next()?.to_owned(),
        };
        parts.next().is_none().then_some(key)
    }
}

impl fmt::Display for InstanceKey {
    /// `product/env/job/id`, the form used in store keys.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}/{}", self.product, self.env, self.job, self.id)
    }
}

/// A validated, stored instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Instance {
    /// Id, unique within the job.
    pub id: String,
    /// Product.
    pub product: String,
    /// Environment.
    pub env: String,
    /// Job.
    pub job: String,
    /// Zone.
    pub zone: String,
    /// Address the ports listen on.
    #[schema(value_type = String)]
    pub address: IpAddr,
    /// Named ports.
    pub ports: BTreeMap<String, u16>,
    /// Version of the running code ("" when not given).
    #[serde(default)]
    pub version: String,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Metadata.
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// Health check, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<RawCheck>)]
    pub check: Option<CheckSpec>,
    /// Who registered it: `api`, `file:<name>`, `node`.
    #[serde(default)]
    pub source: String,
}

impl Instance {
    /// The instance's storage key.
    pub fn key(&self) -> InstanceKey {
        InstanceKey {
            product: self.product.clone(),
            env: self.env.clone(),
            job: self.job.clone(),
            id: self.id.clone(),
        }
    }

    /// SRV weight from `meta.weight` (default 1).
    pub fn weight(&self) -> u16 {
        self.meta
            .get("weight")
            .and_then(|w| w.parse().ok())
            .unwrap_or(1)
    }

    /// SRV priority from `meta.priority` (default 0).
    pub fn priority(&self) -> u16 {
        self.meta
            .get("priority")
            .and_then(|w| w.parse().ok())
            .unwrap_or(0)
    }
}

impl Registration {
    /// Validates the registration. `default_zone` fills a missing zone, `new_id`
    /// a missing id; `source` records who registered it.
    pub fn validate(
        &self,
        default_zone: &str,
        new_id: impl FnOnce() -> String,
        source: &str,
    ) -> Result<Instance, ModelError> {
        let id = match &self.id {
            Some(id) => id.clone(),
            None => new_id(),
        };
        validate_label("id", &id)?;
        validate_label("product", &self.product)?;
        validate_label("env", &self.env)?;
        validate_label("job", &self.job)?;
        let zone = self.zone.clone().unwrap_or_else(|| default_zone.to_owned());
        validate_label("zone", &zone)?;
        if zone == "any" {
            return Err(ModelError::invalid(
                "zone",
                "\"any\" is reserved for queries across all zones",
            ));
        }
        let address: IpAddr = self.address.parse().map_err(|_| {
            ModelError::invalid(
                "address",
                format!("{:?} is not an IPv4 or IPv6 address", self.address),
            )
        })?;
        if self.ports.is_empty() {
            return Err(ModelError::invalid(
                "ports",
                "name at least one port, e.g. {\"http\": 8080}",
            ));
        }
        if self.ports.len() > MAX_PORTS {
            return Err(ModelError::invalid(
                "ports",
                format!("at most {MAX_PORTS} ports"),
            ));
        }
        for (name, port) in &self.ports {
            validate_label(&format!("ports.{name}"), name)?;
            if *port == 0 {
                return Err(ModelError::invalid(
                    format!("ports.{name}"),
                    "must be 1-65535",
                ));
            }
        }
        let version = self.version.clone().unwrap_or_default();
        if version.len() > MAX_VERSION_LEN || version.chars().any(char::is_control) {
            return Err(ModelError::invalid(
                "version",
                "at most 128 printable characters",
            ));
        }
        self.validate_tags_and_meta()?;
        let check = self
            .check
            .as_ref()
            .map(|raw| CheckSpec::from_raw(raw, self.ports.keys().map(String::as_str)))
            .transpose()?;
        Ok(Instance {
            id,
            product: self.product.clone(),
            env: self.env.clone(),
            job: self.job.clone(),
            zone,
            address,
            ports: self.ports.clone(),
            version,
            tags: self.tags.clone(),
            meta: self.meta.clone(),
            check,
            source: source.to_owned(),
        })
    }

    fn validate_tags_and_meta(&self) -> Result<(), ModelError> {
        if self.tags.len() > MAX_TAGS {
            return Err(ModelError::invalid(
                "tags",
                format!("at most {MAX_TAGS} tags"),
            ));
        }
        for tag in &self.tags {
            if tag.is_empty()
                || tag.len() > MAX_TAG_LEN
                || tag.chars().any(|c| c.is_control() || c == ',')
            {
                return Err(ModelError::invalid(
                    "tags",
                    format!("{tag:?}: a tag is 1-{MAX_TAG_LEN} printable characters without ','"),
                ));
            }
        }
        if self.meta.len() > MAX_META {
            return Err(ModelError::invalid(
                "meta",
                format!("at most {MAX_META} entries"),
            ));
        }
        for (key, value) in &self.meta {
            if key.is_empty() || key.len() > MAX_META_KEY_LEN || key.chars().any(char::is_control) {
                return Err(ModelError::invalid(
                    "meta",
                    format!("key {key:?}: 1-{MAX_META_KEY_LEN} printable characters"),
                ));
            }
            if value.len() > MAX_META_VALUE_LEN {
                return Err(ModelError::invalid(
                    format!("meta.{key}"),
                    format!("at most {MAX_META_VALUE_LEN} bytes"),
                ));
            }
        }
        for field in ["weight", "priority"] {
            if let Some(v) = self.meta.get(field) {
                let ok = v.parse::<u16>().is_ok_and(|n| field == "priority" || n > 0);
                if !ok {
                    return Err(ModelError::invalid(
                        format!("meta.{field}"),
                        format!("{v:?} must be a number 0-65535 (weight: 1-65535)"),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(json: &str) -> Result<Instance, String> {
        let r: Registration = serde_json::from_str(json).map_err(|e| e.to_string())?;
        r.validate("local", || "gen1".into(), "api")
            .map_err(|e| e.to_string())
    }

    const BRIEF: &str = r#"{"id": "i1", "product": "shop", "env": "prod", "job": "users-api", "zone": "eu1",
 "address": "10.1.2.3", "ports": {"http": 8080, "grpc": 9090},
 "version": "1.4.2", "tags": ["canary"], "meta": {"weight": "10"},
 "check": {"http": "/healthz", "port": "http", "interval": "5s", "timeout": "1s"}}"#;

    #[test]
    fn brief_registration_is_valid() {
        let i = reg(BRIEF).unwrap();
        assert_eq!(i.weight(), 10);
        assert_eq!(i.key().to_string(), "shop/prod/users-api/i1");
        let stored: Instance = serde_json::from_str(&serde_json::to_string(&i).unwrap()).unwrap();
        assert_eq!(stored, i);
    }

    #[test]
    fn defaults_fill_zone_and_id() {
        let i = reg(r#"{"product":"a","env":"b","job":"c","address":"::1","ports":{"http":1}}"#)
            .unwrap();
        assert_eq!((i.zone.as_str(), i.id.as_str()), ("local", "gen1"));
    }

    #[test]
    fn refuses_bad_registrations() {
        let cases = [
            r#"{"product":"Shop","env":"b","job":"c","address":"::1","ports":{"http":1}}"#,
            r#"{"product":"a","env":"b","job":"c","address":"nope","ports":{"http":1}}"#,
            r#"{"product":"a","env":"b","job":"c","address":"::1","ports":{}}"#,
            r#"{"product":"a","env":"b","job":"c","address":"::1","ports":{"http":0}}"#,
            r#"{"product":"a","env":"b","job":"c","address":"::1","ports":{"http":70000}}"#,
            r#"{"product":"a","env":"b","job":"c","address":"::1","ports":{"h_p":1}}"#,
            r#"{"product":"a","env":"b","job":"c","zone":"any","address":"::1","ports":{"http":1}}"#,
            r#"{"product":"a","env":"b","job":"c","address":"::1","ports":{"http":1},"meta":{"weight":"x"}}"#,
            r#"{"product":"a","env":"b","job":"c","address":"::1","ports":{"http":1},"extra":1}"#,
            r#"{"id":"a.b","product":"a","env":"b","job":"c","address":"::1","ports":{"http":1}}"#,
        ];
        for json in cases {
            assert!(reg(json).is_err(), "{json} should be refused");
        }
    }
}
