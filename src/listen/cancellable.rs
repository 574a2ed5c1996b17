//! A stream that fails once its token is cancelled: handed to a library
//! that runs the connection in a task of its own (russh), so that the
//! socket closes when our connection task ends, not when the library's
//! timeouts say.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

pub struct Cancellable<S> {
    inner: S,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl<S> Cancellable<S> {
    pub fn new(inner: S, token: &CancellationToken) -> Cancellable<S> {
        Cancellable {
            inner,
            cancelled: Box::pin(token.clone().cancelled_owned()),
        }
    }

    /// Ready with an error once cancelled; registers the waker otherwise,
    /// so that a read or write pending on the socket wakes up to fail.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.cancelled.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the gateway ended the connection",
            )),
            Poll::Pending => Ok(()),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Cancellable<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check(cx)?;
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Cancellable<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check(cx)?;
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check(cx)?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_read_pending_on_a_silent_peer_fails_once_cancelled() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let token = CancellationToken::new();
        let mut stream = Cancellable::new(ours, &token);
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            stream.read(&mut buf).await
        });
        tokio::task::yield_now().await;
        token.cancel();
        let r = tokio::time::timeout(std::time::Duration::from_secs(10), reader)
            .await
            .expect("the read woke up")
            .unwrap();
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::ConnectionAborted);
        // Before the cancel, bytes flowed as usual.
        let token = CancellationToken::new();
        let (ours, _keep) = tokio::io::duplex(64);
        let mut stream = Cancellable::new(ours, &token);
        stream.write_all(b"hello").await.unwrap();
        theirs.shutdown().await.unwrap();
    }
}
