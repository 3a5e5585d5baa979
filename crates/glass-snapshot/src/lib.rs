//! The catalog's read model: an immutable [`Snapshot`] that readers get
//! from a [`SnapshotHandle`] without taking a lock.
//!
//! The catalog feeds store changes into a [`SnapshotState`], which uses
//! persistent maps so that publishing a new snapshot after a change costs
//! O(log n), not a copy of the whole catalog.

mod handle;
mod state;
mod view;

pub use handle::SnapshotHandle;
pub use state::SnapshotState;
pub use view::{InstanceFilter, Member, ServiceSummary, Snapshot};
