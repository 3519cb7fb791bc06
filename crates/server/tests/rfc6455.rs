//! RFC 6455 to the letter (SPEC §1): a client's Close is echoed, and every
//! protocol violation gets a Close frame with 1002 (1007 for text that is not
//! UTF-8) before the TCP connection ends, not a dropped socket.

mod common;

use common::TestServer;
use common::raw::{self, frame, read_close, text};
use futures_util::{SinkExt, StreamExt};
use petchat_protocol::Role;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;

/// An upgraded raw connection that has read its `session.ready`.
async fn ready(server: &TestServer) -> TcpStream {
    let mut stream = raw::tcp(server.addr, None).await;
    raw::upgrade(&mut stream, server.addr, &server.token("cust-raw", Role::Customer)).await;
    let (first, payload) = raw::read_frame(&mut stream).await.expect("session.ready");
    assert_eq!(first, 0x81, "a final text frame");
    assert!(String::from_utf8_lossy(&payload).contains("session.ready"));
    stream
}

/// Sends `bytes` on a fresh connection and returns the close code the server answers with.
async fn answer_to(server: &TestServer, bytes: &[u8]) -> Option<u16> {
    let mut stream = ready(server).await;
    stream.write_all(bytes).await.expect("write");
    read_close(&mut stream).await
}

#[tokio::test]
async fn a_clients_close_frame_is_answered_with_a_close_frame() {
    let server = TestServer::start().await;
    let mut client = server.connect("cust-1", Role::Customer).await;
    client
        .ws
        .send(Message::Close(Some(CloseFrame { code: WsCloseCode::Normal, reason: "bye".into() })))
        .await
        .expect("send close");
    // tungstenite reports the peer's echo as a Close message; a dropped
    // socket would end the stream with an error instead.
    let echoed = tokio::time::timeout(common::WAIT, client.ws.next()).await.expect("an answer in time");
    match echoed {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1000),
        other => panic!("expected the echo of the Close frame, got {other:?}"),
    }
}

#[tokio::test]
async fn a_raw_close_is_echoed_with_its_code() {
    let server = TestServer::start().await;
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"bye");
    assert_eq!(answer_to(&server, &frame(0x88, &payload, true)).await, Some(1000));
}

#[tokio::test]
async fn invalid_utf8_in_a_text_frame_is_closed_with_1007() {
    let server = TestServer::start().await;
    assert_eq!(answer_to(&server, &frame(0x81, &[b'{', 0xff, 0xfe, b'}'], true)).await, Some(1007));
    // Split across fragments too: the message as a whole is checked.
    let mut fragmented = frame(0x01, &[b'"', 0xe2, 0x82], true);
    fragmented.extend(frame(0x80, &[0x28, b'"'], true));
    assert_eq!(answer_to(&server, &fragmented).await, Some(1007));
}

#[tokio::test]
async fn a_continuation_without_a_start_is_closed_with_1002() {
    let server = TestServer::start().await;
    assert_eq!(answer_to(&server, &frame(0x80, b"{}", true)).await, Some(1002));
}

#[tokio::test]
async fn an_oversized_or_fragmented_control_frame_is_closed_with_1002() {
    let server = TestServer::start().await;
    assert_eq!(answer_to(&server, &frame(0x89, &[0u8; 126], true)).await, Some(1002));
    assert_eq!(answer_to(&server, &frame(0x09, b"ping", true)).await, Some(1002));
}

#[tokio::test]
async fn reserved_bits_are_closed_with_1002() {
    let server = TestServer::start().await;
    for rsv in [0x40, 0x20, 0x10] {
        assert_eq!(answer_to(&server, &frame(0x80 | rsv | 0x1, b"{}", true)).await, Some(1002), "RSV {rsv:#x}");
    }
}

#[tokio::test]
async fn an_unmasked_client_frame_is_closed_with_1002() {
    let server = TestServer::start().await;
    let ping = r#"{"type":"ping","data":{}}"#;
    assert_eq!(answer_to(&server, &frame(0x81, ping.as_bytes(), false)).await, Some(1002));
}

#[tokio::test]
async fn reserved_opcodes_are_closed_with_1002() {
    let server = TestServer::start().await;
    for opcode in [0x3, 0x7, 0xb, 0xf] {
        assert_eq!(answer_to(&server, &frame(0x80 | opcode, b"", true)).await, Some(1002), "opcode {opcode:#x}");
    }
}

#[tokio::test]
async fn the_server_keeps_serving_others_after_violations() {
    let server = TestServer::start().await;
    let mut bystander = server.connect("cust-2", Role::Customer).await;
    assert_eq!(answer_to(&server, &frame(0x83, b"", true)).await, Some(1002));
    bystander.send(serde_json::json!({"type": "ping", "id": "p", "data": {}})).await;
    assert_eq!(bystander.recv_type("pong").await["id"], "p");
    // And a well-formed raw text frame is served like any other.
    let mut stream = ready(&server).await;
    stream.write_all(&text(r#"{"type":"ping","id":"raw","data":{}}"#)).await.expect("write");
    let (_, payload) = raw::read_frame(&mut stream).await.expect("pong");
    assert!(String::from_utf8_lossy(&payload).contains("\"raw\""));
}
