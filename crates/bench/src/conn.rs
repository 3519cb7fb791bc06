//! One benchmark connection: a TCP socket from a chosen loopback source
//! address, the petchat.v1 handshake with a real JWT in the subprotocol, and
//! the few frame shapes the scenarios read.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use petchat_protocol::{Role, UserId};
use serde::Deserialize;
use serde_json::Value;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

use crate::target::SECRET;

/// An open petchat connection.
pub(crate) type Ws = WebSocketStream<TcpStream>;

/// A frame as the scenarios read it: the type and the data.
#[derive(Debug, Deserialize)]
pub(crate) struct Frame {
    /// The wire type (`chat.ack`…).
    #[serde(rename = "type")]
    pub(crate) kind: String,
    /// The message's data.
    #[serde(default)]
    pub(crate) data: Value,
}

/// A TCP connection to `server` from `source`, without Nagle's delay.
pub(crate) async fn tcp_from(server: SocketAddr, source: IpAddr) -> Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0)).with_context(|| format!("binding {source}"))?;
    let stream = socket.connect(server).await.context("connecting")?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A real JWT for `user`, valid for an hour.
pub(crate) fn token(user: &str, role: Role) -> Result<String> {
    Ok(petchat_client::mint(SECRET, &UserId::new(user).context("a user id")?, role, user, Duration::from_secs(3600)))
}

/// The WebSocket client's buffers: small, for many connections and small frames.
pub(crate) fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0)
}

/// Connects `user` from `source` and waits for `session.ready`.
pub(crate) async fn connect(server: SocketAddr, source: IpAddr, user: &str, role: Role) -> Result<Ws> {
    let stream = tcp_from(server, source).await?;
    let token = token(user, role)?;
    let mut request = format!("ws://{server}/v1/ws/chat").into_client_request()?;
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_str(&format!("petchat.v1, bearer.{token}"))?);
    let (mut ws, _) = client_async_with_config(request, stream, Some(ws_config())).await.context("handshake")?;
    let ready = next_frame(&mut ws).await?;
    if ready.kind != "session.ready" {
        bail!("expected session.ready, got {}", ready.kind);
    }
    Ok(ws)
}

/// The next text frame, parsed; answers nothing (tungstenite answers pings).
pub(crate) async fn next_frame(ws: &mut Ws) -> Result<Frame> {
    serde_json::from_str(&next_text(ws).await?).context("a frame that is not JSON")
}

/// The next text frame (tungstenite answers WebSocket pings).
pub(crate) async fn next_text(ws: &mut Ws) -> Result<Utf8Bytes> {
    loop {
        match ws.next().await.context("the server closed the connection")?? {
            Message::Text(text) => return Ok(text),
            Message::Close(close) => bail!("closed by the server: {close:?}"),
            _ => continue,
        }
    }
}

/// Sends one message (`{"type", "data"}`).
pub(crate) async fn send(ws: &mut Ws, kind: &str, data: Value) -> Result<()> {
    ws.send(Message::Text(Utf8Bytes::from(serde_json::json!({"type": kind, "data": data}).to_string()))).await?;
    Ok(())
}

/// Microseconds since the Unix epoch: latencies between processes on one
/// machine are measured on the wall clock they share.
pub(crate) fn wall_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// A loopback source address no earlier run of this process used: 127.0.0.2,
/// then 127.0.0.3… Closed connections leave their ports in TIME_WAIT for a
/// minute, and a socket bound before `connect` cannot reuse them, so a fresh
/// address per connection group keeps every run's ports free.
pub(crate) fn fresh_source_address() -> IpAddr {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let index = NEXT.fetch_add(1, Ordering::Relaxed);
    IpAddr::from([127, (index / 62_500) as u8, (2 + index / 250 % 250) as u8, (2 + index % 250) as u8])
}
