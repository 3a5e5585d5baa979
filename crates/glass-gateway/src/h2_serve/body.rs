//! A request body arriving in DATA frames: the connection pushes what it
//! reads, the body hands it on and returns the flow-control credit once
//! the bytes are taken, so a slow upstream slows the client down instead
//! of filling the gateway's memory.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

use crate::body::BoxError;

/// What the connection passes to a request body.
pub(crate) enum Piece {
    Data(Bytes),
    Trailers(HeaderMap),
    /// The body ended (END_STREAM without trailers).
    End,
    /// The stream broke: reset by the client, malformed, or the connection went.
    Broken(&'static str),
}

/// Credit to return: (stream, bytes), read by the connection.
pub(crate) type Releases = mpsc::UnboundedSender<(u32, u32)>;

/// The body of a request received over HTTP/2.
pub(crate) struct RequestBody {
    pieces: mpsc::UnboundedReceiver<Piece>,
    releases: Releases,
    stream: u32,
    length: Option<u64>,
    ended: bool,
}

impl RequestBody {
    pub(crate) fn new(
        stream: u32,
        length: Option<u64>,
        releases: Releases,
    ) -> (RequestBody, mpsc::UnboundedSender<Piece>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let body = RequestBody {
            pieces: rx,
            releases,
            stream,
            length,
            ended: false,
        };
        (body, tx)
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        let piece = match this.pieces.poll_recv(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(piece) => piece,
        };
        match piece {
            Some(Piece::Data(data)) => {
                // The credit goes back once the bytes are on their way.
                let _ = this.releases.send((this.stream, data.len() as u32));
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Some(Piece::Trailers(trailers)) => {
                this.ended = true;
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
            Some(Piece::End) => {
                this.ended = true;
                Poll::Ready(None)
            }
            Some(Piece::Broken(why)) => {
                this.ended = true;
                Poll::Ready(Some(Err(why.into())))
            }
            None => {
                this.ended = true;
                Poll::Ready(Some(Err("the client's connection closed mid-body".into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        self.length.map_or_else(SizeHint::new, SizeHint::with_exact)
    }
}
