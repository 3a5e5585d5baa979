//! Catalog errors; each variant says what the caller can do.

use glass_model::ModelError;
use glass_store::StoreError;

/// Why a catalog call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// The input is invalid; nothing was changed.
    #[error("{field}: {reason}")]
    Invalid {
        /// The offending field.
        field: String,
        /// Why it is refused.
        reason: String,
    },
    /// No such instance.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the catalog's state (an ambiguous id, ...).
    #[error("{0}")]
    Conflict(String),
    /// The store failed; the request may be retried.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ModelError> for CatalogError {
    fn from(err: ModelError) -> Self {
        match err {
            ModelError::Invalid { field, reason } => CatalogError::Invalid { field, reason },
            other => CatalogError::Invalid {
                field: "request".into(),
                reason: other.to_string(),
            },
        }
    }
}
