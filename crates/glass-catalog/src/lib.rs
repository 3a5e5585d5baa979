//! The write side of the catalog.
//!
//! Writes are validated here and become store transactions; nothing else
//! writes catalog keys. A follower task watches the store and publishes a
//! new [`glass_snapshot::Snapshot`] after every batch of changes, so every
//! node's readers see every write, whichever node accepted it. Health
//! checkers probe instances and write status changes (only changes) back.

mod catalog;
mod error;
mod event;
mod file_provider;
mod follow;
mod health;
mod keys;
mod probe;
mod routes;

pub use catalog::{Catalog, Registered};
pub use error::CatalogError;
pub use event::{CatalogEvent, ChangeKind, EventStream};
pub use file_provider::{FileProvider, ProviderFile, ProviderStatus};
pub use health::HealthChecker;
pub use routes::{ApplyReport, RouteChange};
