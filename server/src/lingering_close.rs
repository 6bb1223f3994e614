//! Lingering close (RFC 9112 §9.6): when the server ends a connection, it half-closes it
//! and reads what the client still sends until the client closes too, instead of closing
//! at once.
//!
//! Why: closing a socket that holds unread bytes makes the kernel send a reset, and a
//! reset makes the client's kernel throw away whatever it received but the client has not
//! read yet. An HTTP/2 client that opened one more stream, or sent a window update, just
//! before a graceful shutdown's GOAWAY would lose the end of a response that the server
//! had already sent in full: a complete scrape turned into a cut one. Reading until the
//! client's own close (or [`LINGER_LIMIT`]) lets those bytes arrive and be dropped here.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// The longest a closed connection waits for its client to close too.
const LINGER_LIMIT: Duration = Duration::from_secs(1);
/// The most a closing connection reads from its client before it stops waiting.
const LINGER_READ_LIMIT: usize = 256 * 1024;
/// Reads per poll while lingering, so a flooding client cannot hold a worker thread.
const READS_PER_POLL: usize = 16;

/// A connection whose shutdown lingers: `poll_shutdown` half-closes the connection, then
/// reads and discards until the client closes, an error, [`LINGER_LIMIT`] or
/// [`LINGER_READ_LIMIT`] bytes.
pub(crate) struct LingeringClose<I> {
    io: I,
    linger: Option<Linger>,
}

/// The state of a lingering close once the write side is shut.
struct Linger {
    deadline: Pin<Box<Sleep>>,
    read: usize,
    done: bool,
}

impl<I> LingeringClose<I> {
    /// Wraps a connection.
    pub(crate) fn new(io: I) -> Self {
        LingeringClose { io, linger: None }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for LingeringClose<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncWrite for LingeringClose<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.linger.is_none() {
            std::task::ready!(Pin::new(&mut this.io).poll_shutdown(cx))?;
            this.linger = Some(Linger {
                deadline: Box::pin(tokio::time::sleep(LINGER_LIMIT)),
                read: 0,
                done: false,
            });
        }
        let Some(linger) = this.linger.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        if linger.done || linger.deadline.as_mut().poll(cx).is_ready() {
            linger.done = true;
            return Poll::Ready(Ok(()));
        }
        let mut scratch = [0u8; 4096];
        for _ in 0..READS_PER_POLL {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.io).poll_read(cx, &mut buf) {
                Poll::Pending => return Poll::Pending,
                // The client closed (or broke) its side: nothing more can be lost.
                Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                    linger.done = true;
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Err(_)) => {
                    linger.done = true;
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Ok(())) => {
                    linger.read += buf.filled().len();
                    if linger.read >= LINGER_READ_LIMIT {
                        linger.done = true;
                        return Poll::Ready(Ok(()));
                    }
                }
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn shutdown_waits_for_the_peer_to_close_and_drains_what_it_sent() {
        let (server, mut client) = tokio::io::duplex(64);
        let mut server = LingeringClose::new(server);
        server.write_all(b"response").await.expect("write");
        let closing = tokio::spawn(async move { server.shutdown().await });
        // The client reads the whole response, sends late bytes, then closes.
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, b"response");
        client.write_all(b"late request").await.expect("late bytes");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!closing.is_finished(), "closed before the client did");
        drop(client);
        closing.await.expect("task").expect("shutdown");
    }

    #[tokio::test]
    async fn a_client_that_never_closes_is_waited_for_at_most_the_limit() {
        let (server, _client) = tokio::io::duplex(64);
        let mut server = LingeringClose::new(server);
        let started = std::time::Instant::now();
        server.shutdown().await.expect("shutdown");
        assert!(started.elapsed() >= LINGER_LIMIT);
        assert!(started.elapsed() < LINGER_LIMIT + Duration::from_millis(500));
    }

    #[tokio::test]
    async fn a_flooding_client_is_read_only_up_to_the_read_limit() {
        let (server, mut client) = tokio::io::duplex(64 * 1024);
        let mut server = LingeringClose::new(server);
        let flood = tokio::spawn(async move {
            let chunk = [7u8; 8192];
            let mut sent = 0;
            while client.write_all(&chunk).await.is_ok() {
                sent += chunk.len();
                if sent > 4 * LINGER_READ_LIMIT {
                    break;
                }
            }
            client
        });
        tokio::time::timeout(LINGER_LIMIT / 2, server.shutdown())
            .await
            .expect("stopped at the read limit, not the time limit")
            .expect("shutdown");
        drop(server);
        drop(flood.await.expect("flood task"));
    }
}
