//! WebSocket by hand: an upgrade over a plain `TcpStream` and frames built
//! and read byte by byte, to send what no well-behaved library would (bad
//! frames, floods) and to see exactly what the server answers.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::WAIT;

/// Opens a TCP connection; with `receive_buffer`, SO_RCVBUF is set before
/// connecting, so the advertised window stays that small.
pub async fn tcp(addr: SocketAddr, receive_buffer: Option<u32>) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    if let Some(size) = receive_buffer {
        socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
    }
    tokio::time::timeout(WAIT, socket.connect(addr)).await.expect("connect in time").expect("connect")
}

/// Sends the upgrade request of `/v1/ws/chat?token=…` and reads the response
/// head; panics unless it is `101`.
pub async fn upgrade(stream: &mut TcpStream, host: SocketAddr, token: &str) {
    let request = format!(
        "GET /v1/ws/chat?token={token} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: petchat.v1\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("write the upgrade");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(WAIT, stream.read(&mut byte)).await.expect("a response in time").expect("read");
        assert_eq!(n, 1, "the server closed during the upgrade");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
}

/// A client frame: `first` is the first byte (FIN, RSV bits and opcode),
/// the payload is masked unless `masked` is false.
pub fn frame(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = vec![first];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// A masked text frame.
pub fn text(payload: &str) -> Vec<u8> {
    frame(0x81, payload.as_bytes(), true)
}

/// Reads one server frame: (first byte, payload), or `None` at the end of
/// the stream.
pub async fn read_frame(stream: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).await.ok()?;
    assert_eq!(head[1] & 0x80, 0, "server frames are not masked");
    let len = match head[1] & 0x7f {
        126 => {
            let mut n = [0u8; 2];
            stream.read_exact(&mut n).await.ok()?;
            u64::from(u16::from_be_bytes(n))
        }
        127 => {
            let mut n = [0u8; 8];
            stream.read_exact(&mut n).await.ok()?;
            u64::from_be_bytes(n)
        }
        n => u64::from(n),
    };
    let mut payload = vec![0u8; usize::try_from(len).expect("a frame that fits in memory")];
    stream.read_exact(&mut payload).await.ok()?;
    Some((head[0], payload))
}

/// Reads frames until the server's Close; returns its code, or `None` when
/// the connection ended without one.
pub async fn read_close(stream: &mut TcpStream) -> Option<u16> {
    tokio::time::timeout(WAIT, async {
        loop {
            let (first, payload) = read_frame(stream).await?;
            if first & 0x0f == 0x8 {
                return Some(payload.get(..2).map_or(1005, |code| u16::from_be_bytes([code[0], code[1]])));
            }
        }
    })
    .await
    .expect("the server closes in time")
}

/// Whether the server ends the connection within `WAIT`: reads (and drops)
/// whatever arrives until the end of the stream or a reset.
pub async fn ends(stream: &mut TcpStream) -> bool {
    tokio::time::timeout(WAIT, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
    .is_ok()
}
