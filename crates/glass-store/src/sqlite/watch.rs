//! Watch streams: replay of the history table, then the live broadcast,
//! deduplicated by revision.
//!
//! A watch subscribes to the broadcast *before* it reads anything, so a
//! transaction is either in what it reads from the history table or in
//! what it receives live (or both: then the revision already delivered
//! is skipped). A watcher that falls behind the broadcast buffer goes back
//! to the history table from the last revision it delivered.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::broadcast::{self, error::RecvError};

use super::writer::LiveBatch;
use super::{Shared, lock, read};
use crate::{Event, Result, Revision, StoreError, WatchStream};

/// Events read from the history table per query.
const PAGE: usize = 1024;

struct WatchState {
    shared: Arc<Shared>,
    prefix: Bytes,
    rx: broadcast::Receiver<LiveBatch>,
    /// Every revision up to this one has been delivered (or skipped).
    last: Revision,
    /// Reading the history table rather than the broadcast.
    replay: bool,
    /// Batches ready to hand out.
    pending: VecDeque<Vec<Event>>,
    /// The stream has ended (after an error item).
    done: bool,
}

/// Starts a watch of `prefix` from revision `from` (0 = after now).
///
/// A `from` beyond the current revision is allowed (as in etcd): the
/// stream simply starts with the first transaction at or after `from`.
pub(super) fn watch(shared: Arc<Shared>, prefix: Bytes, from: Revision) -> Result<WatchStream> {
    if from < 0 {
        return Err(StoreError::Invalid(format!(
            "negative watch revision {from}"
        )));
    }
    let rx = lock(&shared.live)
        .as_ref()
        .map(broadcast::Sender::subscribe)
        .ok_or(StoreError::Closed)?;
    // Read after subscribing: anything later is received live.
    let current = shared.revision.load(Ordering::Acquire);
    let compacted = shared.compacted.load(Ordering::Acquire);
    let (last, replay) = if from == 0 {
        (current, false)
    } else if from < compacted {
        return Err(StoreError::Compacted {
            requested: from,
            oldest: compacted,
        });
    } else {
        (from - 1, from <= current)
    };
    let state = WatchState {
        shared,
        prefix,
        rx,
        last,
        replay,
        pending: VecDeque::new(),
        done: false,
    };
    Ok(futures::stream::unfold(state, step).boxed())
}

async fn step(mut st: WatchState) -> Option<(Result<Vec<Event>>, WatchState)> {
    loop {
        if let Some(batch) = st.pending.pop_front() {
            return Some((Ok(batch), st));
        }
        if st.done {
            return None;
        }
        if st.replay {
            if let Err(e) = replay_page(&mut st).await {
                st.done = true;
                return Some((Err(e), st));
            }
            continue;
        }
        match st.rx.recv().await {
            Ok(batch) => {
                for txn in batch.iter() {
                    if txn.revision <= st.last {
                        continue;
                    }
                    st.last = txn.revision;
                    let events: Vec<Event> = txn
                        .events
                        .iter()
                        .filter(|e| e.kv.key.starts_with(&st.prefix))
                        .cloned()
                        .collect();
                    if !events.is_empty() {
                        st.pending.push_back(events);
                    }
                }
            }
            Err(RecvError::Lagged(skipped)) => {
                tracing::debug!(
                    skipped,
                    last = st.last,
                    "watcher lagged; re-reading history"
                );
                st.replay = true;
            }
            Err(RecvError::Closed) => {
                st.done = true;
                return Some((Err(StoreError::Closed), st));
            }
        }
    }
}

/// Reads the next page of history into `pending`; switches to the live
/// broadcast once the page reaches the end of the history.
async fn replay_page(st: &mut WatchState) -> Result<()> {
    let shared = Arc::clone(&st.shared);
    let prefix = st.prefix.clone();
    let from = st.last + 1;
    let page = tokio::task::spawn_blocking(move || {
        shared
            .reads
            .with(|conn| read::history_page(conn, &prefix, from, PAGE))
    })
    .await
    .map_err(|e| StoreError::Unavailable(format!("watch read task failed: {e}")))??;
    for (rev, events) in page.txns {
        st.last = rev;
        st.pending.push_back(events);
    }
    if page.complete {
        st.last = st.last.max(page.revision);
        st.replay = false;
    }
    Ok(())
}
