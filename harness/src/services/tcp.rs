//! What the lab's TCP services share: a backlog of listening sockets that half-open
//! connections cannot hold ([`accept`]), streams closed when idle ([`Idle`]), and streams
//! that end with a FIN, not in silence ([`Lingering`]).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_smoltcp::TcpStream;

use crate::net::host::IpHost;

/// Listening sockets per TCP port: this many handshakes may be in progress at once.
pub const BACKLOG: usize = 16;
/// A listening socket that completed no handshake for this long (up to twice this, staggered)
/// is replaced, in case a half-open connection holds it.
pub const RECYCLE_AFTER: Duration = Duration::from_secs(5);

/// Runs its closure when dropped.
pub struct Closed(pub Option<Box<dyn FnOnce() + Send>>);

impl Drop for Closed {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

/// Serves one accepted connection.
pub type Handler = Arc<dyn Fn(Idle<Lingering>, SocketAddr) -> BoxFuture<'static, ()> + Send + Sync>;

/// How long a closed connection's socket is kept for its FIN to be sent and acknowledged.
pub const LINGER: Duration = Duration::from_secs(3);

/// A connection of the userspace stack that closes in order.
///
/// tokio-smoltcp removes a stream's socket the moment the stream is dropped, without a FIN
/// or a RST: the peer was never told (an NFS client closed for idleness kept a dead
/// connection), and the data still unacknowledged was lost. Its `shutdown` resolves only
/// once the socket is closed, past TIME-WAIT or never when the peer went away, which held
/// an HTTP connection (and its slot of the client's bound) after `Connection: close`.
/// Here `shutdown` sends the FIN and resolves at once, and a drop keeps the socket up to
/// [`LINGER`] in a task of its own, for the data and the FIN to be acknowledged.
pub struct Lingering(Option<TcpStream>);

impl Lingering {
    pub fn new(stream: TcpStream) -> Self {
        Lingering(Some(stream))
    }

    fn stream(&mut self) -> Pin<&mut TcpStream> {
        Pin::new(self.0.as_mut().expect("a stream until dropped"))
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let Some(mut stream) = self.0.take() else { return };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = tokio::time::timeout(LINGER, tokio::io::AsyncWriteExt::shutdown(&mut stream)).await;
            });
        }
    }
}

impl AsyncRead for Lingering {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        self.stream().poll_read(cx, buf)
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        self.stream().poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.stream().poll_flush(cx)
    }

    /// Queues the FIN (after the data not yet sent) and resolves: the drop waits for it.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.stream().poll_shutdown(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(())),
        }
    }
}

/// Accept on `addr` with [`BACKLOG`] listening sockets; each connection runs `handler` in a
/// task of its own, closed after `idle` without traffic. Connection tasks end with this
/// future (a server stop closes every connection).
///
/// A listening socket that has completed no handshake for [`RECYCLE_AFTER`] is replaced by a
/// fresh one: the userspace stack keeps a socket whose handshake never completes (a SYN
/// from an address that never answers, a SYN flood) half-open for good, and eight of them
/// kept every client out until the lab restarted. A handshake takes milliseconds, so a
/// client rarely meets a socket as it is replaced, and its SYN retransmission finds another.
pub async fn accept(host: Arc<IpHost>, addr: SocketAddr, idle: Duration, handler: Handler) -> std::io::Result<()> {
    let (done, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut listeners = tokio::task::JoinSet::new();
    for slot in 0..BACKLOG {
        let (host, handler, done) = (host.clone(), handler.clone(), done.clone());
        listeners.spawn(async move {
            // Staggered, so that the sockets are not all replaced at once.
            let recycle = RECYCLE_AFTER + RECYCLE_AFTER * slot as u32 / BACKLOG as u32;
            loop {
                let mut listener = host.net().tcp_bind(addr).await?;
                while let Ok(accepted) = tokio::time::timeout(recycle, listener.accept()).await {
                    let (stream, peer) = accepted?;
                    let (handler, mut stop) = (handler.clone(), done.subscribe());
                    tokio::spawn(async move {
                        let (stream, last) = Idle::new(Lingering::new(stream));
                        tokio::select! {
                            _ = handler(stream, peer) => {}
                            _ = last.expired(idle) => tracing::info!("{addr}: closed the connection from {peer}, idle for {idle:?}"),
                            _ = stop.recv() => {}
                        }
                    });
                }
                tracing::debug!("{addr}: listening socket {slot} replaced after {recycle:?} without a handshake");
            }
        });
    }
    let ended = listeners.join_next().await.expect("a listener");
    drop(done);
    match ended {
        Ok(result) => result,
        Err(e) => Err(std::io::Error::other(e)),
    }
}

/// A stream that notes when it last moved data, for idle timeouts.
pub struct Idle<S> {
    inner: S,
    last: Arc<LastActivity>,
}

/// When a connection last moved data, in milliseconds since it opened.
pub struct LastActivity {
    opened: Instant,
    at_ms: AtomicU64,
}

impl LastActivity {
    fn touch(&self) {
        self.at_ms.store(self.opened.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Resolve once no data has moved for `idle`.
    pub async fn expired(&self, idle: Duration) {
        loop {
            let last = self.opened + Duration::from_millis(self.at_ms.load(Ordering::Relaxed));
            if last.elapsed() >= idle {
                return;
            }
            tokio::time::sleep_until(last + idle).await;
        }
    }
}

impl<S> Idle<S> {
    pub fn new(inner: S) -> (Self, Arc<LastActivity>) {
        let last = Arc::new(LastActivity { opened: Instant::now(), at_ms: AtomicU64::new(0) });
        (Idle { inner, last: last.clone() }, last)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Idle<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.last.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Idle<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.last.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_connection_expires_only_after_its_idle_time_without_traffic() {
        let (near, mut far) = tokio::io::duplex(64);
        let (mut near, last) = Idle::new(near);
        let idle = Duration::from_millis(300);
        let begun = Instant::now();
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            near.write_all(b"x").await.unwrap();
            let mut byte = [0u8; 1];
            far.read_exact(&mut byte).await.unwrap();
        }
        last.expired(idle).await;
        let waited = begun.elapsed();
        assert!(waited >= Duration::from_millis(900), "traffic kept it open: {waited:?}");
        assert!(waited < Duration::from_millis(1500), "{waited:?}");
    }
}
