//! `petchat-server`: until the chat server lands, prints the contract it will serve.

use petchat_protocol::handshake::{PATH, SUBPROTOCOL};
use petchat_protocol::{ClientMessage, CloseCode, ErrorCode, ServerMessage, limits};

fn main() {
    println!("petchat {} — the contract the server speaks (see docs/protocol.md)\n", env!("CARGO_PKG_VERSION"));
    println!("endpoint   ws://127.0.0.1:8080{PATH}  subprotocol {SUBPROTOCOL}");
    println!("client ->  {}", ClientMessage::TYPES.join(", "));
    println!("server ->  {}", ServerMessage::TYPES.join(", "));
    let errors: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    println!("errors     {}", errors.join(", "));
    println!(
        "limits     frames {} bytes, text {} chars, {} msg/s",
        limits::MAX_MESSAGE_BYTES,
        limits::MAX_TEXT_CHARS,
        limits::DEFAULT_MESSAGES_PER_SECOND
    );
    println!("\nclose codes:");
    for code in CloseCode::ALL {
        println!("  {:>4} {:<22} {}", code.code(), code.name().unwrap_or_default(), code.description());
    }
    println!("\nThe server itself is being built (issue 3); the schemas are in schemas/.");
}
