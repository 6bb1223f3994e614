//! Response bodies sent in parts, so a cached metrics body is never copied per request.
//!
//! warp's body type cannot be built from several buffers, so the metrics handler leaves
//! the body empty and puts the parts in a [`PartsExtension`]; the connection's service
//! ([`into_served`]) swaps them in as a [`PartsBody`] with an exact length (so responses
//! keep their `Content-Length`).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::Either;

/// The body type of warp responses (not nameable otherwise).
pub type WarpBody = <warp::reply::Response as ResponseBody>::Body;

/// Names the body type of a response type.
pub trait ResponseBody {
    /// The body.
    type Body;
}

impl<B> ResponseBody for http::Response<B> {
    type Body = B;
}

/// What the connection sends: warp's body, or a metrics body in parts.
pub type ServedBody = Either<WarpBody, PartsBody>;

/// A response extension carrying the body parts that replace the (empty) warp body.
#[derive(Clone, Debug)]
pub struct PartsExtension(pub Vec<Bytes>);

/// A body of buffers sent one after the other, with an exact size hint.
#[derive(Debug)]
pub struct PartsBody {
    parts: VecDeque<Bytes>,
    remaining: u64,
}

impl PartsBody {
    /// A body of these parts.
    pub fn new(parts: Vec<Bytes>) -> Self {
        let remaining = parts.iter().map(|p| p.len() as u64).sum();
        PartsBody {
            parts: parts.into_iter().filter(|p| !p.is_empty()).collect(),
            remaining,
        }
    }
}

impl http_body::Body for PartsBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.parts.pop_front().map(|part| {
            self.remaining -= part.len() as u64;
            Ok(Frame::data(part))
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.parts.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// A body with nothing in it (HEAD responses).
pub(crate) fn empty() -> ServedBody {
    Either::Right(PartsBody::new(Vec::new()))
}

/// Turns a warp response into what the connection sends, swapping in body parts when the
/// handler left them in a [`PartsExtension`].
pub fn into_served(response: warp::reply::Response) -> http::Response<ServedBody> {
    let (mut head, body) = response.into_parts();
    match head.extensions.remove::<PartsExtension>() {
        Some(PartsExtension(parts)) => {
            http::Response::from_parts(head, Either::Right(PartsBody::new(parts)))
        }
        None => http::Response::from_parts(head, Either::Left(body)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn parts_are_sent_in_order_with_an_exact_length() {
        let body = PartsBody::new(vec![
            Bytes::from_static(b"abc"),
            Bytes::new(),
            Bytes::from_static(b"de"),
        ]);
        assert_eq!(http_body::Body::size_hint(&body).exact(), Some(5));
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(&collected[..], b"abcde");
    }

    #[tokio::test]
    async fn the_extension_replaces_the_empty_warp_body() {
        let mut response = warp::reply::Response::new(Default::default());
        response.extensions_mut().insert(PartsExtension(vec![
            Bytes::from_static(b"x"),
            Bytes::from_static(b"y"),
        ]));
        let served = into_served(response);
        assert!(served.extensions().get::<PartsExtension>().is_none());
        let bytes = served.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"xy");
    }
}
