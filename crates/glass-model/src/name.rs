//! DNS-safe labels: the names of zones, products, envs, jobs, ports and ids.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a piece of user input was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A field holds a value that is not allowed.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field, as the user wrote it (`product`, `ports.http`, ...).
        field: String,
        /// What is wrong with it, in words a user can act on.
        reason: String,
    },
}

impl ModelError {
    /// Builds an [`ModelError::Invalid`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ModelError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Checks that `value` is a DNS label (RFC 1123): 1–63 characters of
/// lowercase ASCII letters, digits and `-`, not starting or ending with `-`.
///
/// Lowercase only, so the name a user registers is exactly the name DNS
/// answers (DNS compares names case-insensitively).
pub fn validate_label(field: &str, value: &str) -> Result<(), ModelError> {
    if value.is_empty() {
        return Err(ModelError::invalid(field, "must not be empty"));
    }
    if value.len() > 63 {
        return Err(ModelError::invalid(
            field,
            format!(
                "{value:?} is {} characters long; at most 63 are allowed",
                value.len()
            ),
        ));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(ModelError::invalid(
            field,
            format!("{value:?} contains {bad:?}; only a-z, 0-9 and '-' are allowed"),
        ));
    }
    if value.starts_with('-') || value.ends_with('-') {
        return Err(ModelError::invalid(
            field,
            format!("{value:?} must not start or end with '-'"),
        ));
    }
    Ok(())
}

/// A validated DNS label.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Label(String);

impl Label {
    /// Validates `value` as the field named `field`.
    pub fn parse(field: &str, value: &str) -> Result<Self, ModelError> {
        validate_label(field, value)?;
        Ok(Label(value.to_owned()))
    }

    /// The label as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Label {
    type Error = ModelError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        validate_label("name", &value)?;
        Ok(Label(value))
    }
}

impl From<Label> for String {
    fn from(label: Label) -> String {
        label.0
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(value: &str, ok: bool) {
        assert_eq!(validate_label("f", value).is_ok(), ok, "{value:?}");
    }

    #[test]
    fn labels() {
        check("users-api", true);
        check("a", true);
        check("a1-b2", true);
        check(&"a".repeat(63), true);
        check(&"a".repeat(64), false);
        check("", false);
        check("-a", false);
        check("a-", false);
        check("Users", false);
        check("a.b", false);
        check("a_b", false);
        check("ä", false);
    }
}
