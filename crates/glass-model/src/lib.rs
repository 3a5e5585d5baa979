//! The Glass data model: names, service addresses, instances and health.
//!
//! Everything here is plain data plus validation. No crate below the
//! composition root needs more than these types to talk about the catalog.

mod duration;
mod health;
mod instance;
mod name;
mod route;
mod service;

pub use duration::{HumanDuration, parse_duration};
pub use health::{CheckKind, CheckSpec, Health, HealthStatus, RawCheck};
pub use instance::{Instance, InstanceKey, Registration};
pub use name::{Label, ModelError, validate_label};
pub use route::{
    HashOn, HeaderEdits, LbPolicy, RawTimeouts, Route, RouteMatch, RouteSpec, RouteTarget, Target,
    Timeouts, UpstreamProtocol,
};
pub use service::ServiceAddr;

/// A store revision: the number of the transaction that last changed
/// something. Revisions start at 1 and only grow.
pub type Revision = i64;
