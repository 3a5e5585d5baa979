//! A stream's state on the connection: flow control both ways, the
//! request body's feed, the response waiting for window, and the handle
//! that cancels its work.

use bytes::Bytes;
use futures_util::future::AbortHandle;
use tokio::sync::mpsc;

use super::body::Piece;
use crate::body::ProxyBody;

/// A stream the client opened and the server has not finished.
pub(super) struct Stream {
    /// Where the request body's pieces go, while the client still sends.
    pub(super) body: Option<mpsc::UnboundedSender<Piece>>,
    /// The client has not ended its side.
    pub(super) remote_open: bool,
    /// Bytes the client may still send on this stream.
    pub(super) recv_window: i64,
    /// Credit taken by the body and not yet returned.
    pub(super) unreleased: u32,
    pub(super) length: Option<u64>,
    pub(super) received: u64,
    /// Bytes the server may still send.
    pub(super) send_window: i64,
    /// Response data waiting for window, the body it came from, and
    /// whether that body has ended.
    pub(super) blocked: Option<(Bytes, ProxyBody, bool)>,
    /// Cancels the stream's current work.
    pub(super) abort: Option<AbortHandle>,
    /// The response head has been sent.
    pub(super) answered: bool,
}

impl Stream {
    pub(super) fn cancel(&mut self, why: &'static str) {
        if let Some(a) = self.abort.take() {
            a.abort();
        }
        if let Some(body) = self.body.take() {
            let _ = body.send(Piece::Broken(why));
        }
    }
}
