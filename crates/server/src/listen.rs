//! The accept loop: one HTTP/1.1 connection task per socket, under the limits
//! SPEC §1 puts on connections that have not become WebSockets yet.
//!
//! axum's own `serve` keeps a socket that never completes its request open
//! forever and waits for every connection without bound when it shuts down.
//! Here instead:
//!
//! - a connection must send complete request headers within the handshake
//!   timeout of its accept (and, kept alive, of its previous response);
//! - at most `max_handshakes` connections are in their HTTP phase at once; a
//!   WebSocket leaves that count when it upgrades and enters the hub's
//!   connection caps instead;
//! - a write that makes no progress for the write timeout ends the connection
//!   (a client that does not read costs one bounded buffer, not a growing one);
//! - an accept that fails for want of resources (EMFILE, ENFILE, ENOBUFS)
//!   pauses the loop briefly instead of spinning;
//! - on shutdown each connection is asked to finish, and `run` abandons what
//!   is left at the deadline.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use tracing::{debug, warn};

/// The first pause after an accept failed for want of resources; it doubles
/// while the failures go on.
const ACCEPT_PAUSE_MIN: Duration = Duration::from_millis(50);
/// The longest pause between accepts while resources are exhausted.
const ACCEPT_PAUSE_MAX: Duration = Duration::from_secs(1);

/// The limits of the HTTP phase of a connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// Complete request headers must arrive within this long.
    pub(crate) handshake_timeout: Duration,
    /// A write that makes no progress for this long ends the connection.
    pub(crate) write_timeout: Duration,
    /// Connections in their HTTP phase at once; more are closed at accept.
    pub(crate) max_handshakes: usize,
}

/// Accepts connections on `listener` and serves `app` on each until `stop`
/// is cancelled; every connection task is spawned on `connections`.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    settings: Settings,
    stop: CancellationToken,
    connections: TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(settings.max_handshakes.max(1)));
    let mut pause = ACCEPT_PAUSE_MIN;
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => {
                pause = ACCEPT_PAUSE_MIN;
                tcp
            }
            // The peer gave up between its SYN and our accept: nothing to do.
            Err(e) if is_peer_error(&e) => continue,
            Err(e) => {
                metrics::counter!("petchat_accept_errors_total").increment(1);
                warn!(error = %e, pause_ms = pause.as_millis() as u64, "accept failed; pausing before the next");
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(ACCEPT_PAUSE_MAX);
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics::counter!("petchat_handshakes_refused_total").increment(1);
            debug!("too many connections in their HTTP phase: closed at accept");
            continue;
        };
        // Chat frames are small: Nagle's algorithm would hold them back for up to 40 ms.
        if let Err(e) = tcp.set_nodelay(true) {
            debug!(error = %e, "TCP_NODELAY could not be set");
        }
        // In the accept loop's span: a cluster's node id is on every line.
        connections.spawn(connection(tcp, app.clone(), settings, stop.clone(), slot).in_current_span());
    }
}

/// A connection's place among those in their HTTP phase, in every request's
/// extensions: a long-lived response (an SSE stream) gives it back, as an
/// upgraded WebSocket does, since the hub's connection caps count it instead.
#[derive(Clone)]
pub(crate) struct HandshakeSlot(Arc<std::sync::Mutex<Option<OwnedSemaphorePermit>>>);

impl HandshakeSlot {
    /// Gives the slot back now.
    pub(crate) fn release(&self) {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
    }
}

/// Serves one connection's HTTP phase: requests until it closes or upgrades.
async fn connection(
    tcp: TcpStream,
    app: Router,
    settings: Settings,
    stop: CancellationToken,
    slot: OwnedSemaphorePermit,
) {
    metrics::gauge!("petchat_http_connections").increment(1.0);
    let io = TokioIo::new(WriteDeadline::new(tcp, settings.write_timeout));
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(settings.handshake_timeout);
    let slot = HandshakeSlot(Arc::new(std::sync::Mutex::new(Some(slot))));
    let request_slot = slot.clone();
    let app = tower::ServiceExt::map_request(app, move |mut request: hyper::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(request_slot.clone());
        request
    });
    let conn = builder.serve_connection(io, TowerToHyperService::new(app)).with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stop.cancelled() => {
            // Finish the request in flight, then close; `run` abandons this
            // task if that takes longer than the shutdown grace.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        if e.is_timeout() {
            metrics::counter!("petchat_handshake_timeouts_total").increment(1);
        }
        debug!(error = %e, "HTTP connection ended");
    }
    metrics::gauge!("petchat_http_connections").decrement(1.0);
    slot.release();
}

/// Accept errors that concern one connection only, not the listener.
fn is_peer_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

/// A socket whose writes fail with `TimedOut` once they have made no progress
/// for a while: hyper and tungstenite then end the connection and free its
/// buffers, whoever was writing.
struct WriteDeadline<T> {
    inner: T,
    timeout: Duration,
    /// Armed when a write first returned `Pending`, cleared by any progress.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<T> WriteDeadline<T> {
    fn new(inner: T, timeout: Duration) -> Self {
        Self { inner, timeout, stalled: None }
    }

    fn watch<R>(&mut self, cx: &mut Context<'_>, result: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if result.is_ready() {
            self.stalled = None;
            return result;
        }
        let timeout = self.timeout;
        let stalled = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if stalled.as_mut().poll(cx).is_ready() {
            metrics::counter!("petchat_write_timeouts_total").increment(1);
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "the peer has not read for too long")));
        }
        Poll::Pending
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteDeadline<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch(cx, result)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch(cx, result)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.watch(cx, result)
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use tokio::io::AsyncWriteExt;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_write_that_makes_no_progress_fails_after_the_timeout() {
        // A duplex pipe with a 16-byte buffer that nobody reads.
        let (near, _far) = tokio::io::duplex(16);
        let mut writer = WriteDeadline::new(near, Duration::from_secs(5));
        writer.write_all(&[0; 16]).await.expect("the buffer takes 16 bytes");
        let started = tokio::time::Instant::now();
        let error = writer.write_all(&[0; 1]).await.expect_err("nobody reads");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn progress_rearms_the_timeout() {
        let (near, mut far) = tokio::io::duplex(16);
        let mut writer = WriteDeadline::new(near, Duration::from_secs(5));
        writer.write_all(&[0; 16]).await.expect("fits");
        // Stalled for 4 s, then the reader takes 8 bytes: the write completes.
        let reader = async {
            tokio::time::sleep(Duration::from_secs(4)).await;
            let mut buf = [0; 8];
            tokio::io::AsyncReadExt::read_exact(&mut far, &mut buf).await.expect("read");
            far
        };
        let (written, far) = tokio::join!(writer.write_all(&[0; 8]), reader);
        written.expect("progress before the timeout");
        // A new stall gets the whole timeout again.
        let started = tokio::time::Instant::now();
        let error = poll_fn(|cx| Pin::new(&mut writer).poll_write(cx, &[0; 1])).await.expect_err("stalled");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        drop(far);
    }
}
