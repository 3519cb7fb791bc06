//! A TCP proxy on loopback that holds every byte for a fixed time in each
//! direction: a node whose Redis sits behind it hears the cluster late, as
//! one across a slow network or on a starved machine does, which opens the
//! windows between a `SUBSCRIBE` sent and the subscription in effect.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// A running proxy; its connections end when it is dropped.
pub struct SlowLink {
    /// Where to connect instead of the upstream.
    pub addr: SocketAddr,
    _tasks: JoinSet<()>,
}

impl SlowLink {
    /// A proxy to `upstream` that delays each direction by `delay`.
    pub async fn start(upstream: SocketAddr, delay: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the slow link");
        let addr = listener.local_addr().expect("the slow link's address");
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            // Each connection's pumps end with it; the accept loop with the proxy.
            let mut connections = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else { continue };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                connections.spawn(pump(client_read, server_write, delay));
                connections.spawn(pump(server_read, client_write, delay));
            }
        });
        Self { addr, _tasks: tasks }
    }
}

/// Copies `from` to `to`, each chunk written `delay` after it was read, in order.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration) {
    let (chunks, mut due) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = async move {
        while let Some((at, chunk)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    let reader = async move {
        let mut buffer = vec![0; 64 * 1024];
        loop {
            match from.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if chunks.send((Instant::now() + delay, buffer[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    };
    tokio::join!(reader, writer);
}
