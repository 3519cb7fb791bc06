//! Building server frames: serialized once, shared by every recipient.

use axum::extract::ws::Utf8Bytes;
use petchat_protocol::{RequestId, ServerEnvelope, ServerMessage, Timestamp};

/// Now, at the millisecond precision of the wire.
pub(crate) fn now() -> Timestamp {
    Timestamp::from_unix_ms(jiff::Timestamp::now().as_millisecond()).expect("the clock reads a year between 1 and 9999")
}

/// A frame of `message`, answering request `id` if any, stamped now.
pub(crate) fn frame(message: ServerMessage, id: Option<RequestId>) -> Utf8Bytes {
    Utf8Bytes::from(ServerEnvelope::new(message, now()).with_id(id).encode())
}
