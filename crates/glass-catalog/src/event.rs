//! Store events decoded into catalog terms, for watchers and the SSE stream.

use futures::StreamExt;
use futures::stream::BoxStream;
use glass_model::Revision;
use glass_store::{EventKind, StoreError, WatchStream};
use serde::Serialize;

use crate::keys::{self, Decoded};

/// Put or delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// Created or changed.
    Put,
    /// Removed.
    Delete,
}

/// One change to the catalog.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CatalogEvent {
    /// Store revision of the change; events of one write share it.
    pub revision: Revision,
    /// Put or delete.
    pub kind: ChangeKind,
    /// `instance`, `health` or `route`.
    pub record: &'static str,
    /// `product/env/job/id`, or the route name.
    pub key: String,
    /// The record after the change (`null` for deletes).
    pub value: serde_json::Value,
}

/// Batches of catalog events, one batch per store transaction.
pub type EventStream = BoxStream<'static, Result<Vec<CatalogEvent>, StoreError>>;

pub(crate) fn decode_stream(stream: WatchStream) -> EventStream {
    stream
        .map(|batch| {
            batch.map(|events| {
                events
                    .into_iter()
                    .filter_map(|e| {
                        let (record, key) = match keys::decode(&e.kv.key)? {
                            Decoded::Instance(k) => ("instance", k.to_string()),
                            Decoded::Health(k) => ("health", k.to_string()),
                            Decoded::Route(name) => ("route", name),
                        };
                        let (kind, value) = match e.kind {
                            EventKind::Put => {
                                (ChangeKind::Put, serde_json::from_slice(&e.kv.value).ok()?)
                            }
                            EventKind::Delete => (ChangeKind::Delete, serde_json::Value::Null),
                        };
                        Some(CatalogEvent {
                            revision: e.kv.mod_revision,
                            kind,
                            record,
                            key: key.to_string(),
                            value,
                        })
                    })
                    .collect::<Vec<_>>()
            })
        })
        .filter(|batch| futures::future::ready(!matches!(batch, Ok(events) if events.is_empty())))
        .boxed()
}
