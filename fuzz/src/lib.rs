//! The fuzz targets of petchat, as plain functions: AFL calls them from
//! `src/bin/` (`scripts/fuzz.sh`), and `tests/replay.rs` runs the committed
//! corpora and every fixed crash through them with plain `cargo test`.
//!
//! Each target panics when an invariant breaks, which is what the fuzzer
//! reports as a crash:
//!
//! - [`client_decode`] and [`server_decode`]: the decoders never panic, and a
//!   frame that decodes re-encodes to a frame that decodes to the same
//!   encoding (the encoder's normal form is stable);
//! - [`session`]: see [`session::run`].

pub mod session;

use petchat_protocol::{ClientEnvelope, ServerEnvelope};

/// `ClientEnvelope::decode`, what the server runs on every client frame.
pub fn client_decode(data: &[u8]) {
    let Ok(frame) = std::str::from_utf8(data) else { return };
    match ClientEnvelope::decode(frame) {
        Ok(envelope) => {
            let encoded = envelope.encode();
            let again = ClientEnvelope::decode(&encoded)
                .unwrap_or_else(|e| panic!("a decoded client frame re-encodes to one that does not decode: {e}"));
            assert_eq!(again.encode(), encoded, "the client encoding is not stable");
        }
        Err(error) => {
            // What the server does with a refused frame: answer it with an `error`.
            let reply = error.to_error_data();
            assert_eq!(reply.code, error.code());
            let _ = (error.field(), error.to_string());
        }
    }
}

/// `ServerEnvelope::decode`, what both clients run on every server frame.
pub fn server_decode(data: &[u8]) {
    let Ok(frame) = std::str::from_utf8(data) else { return };
    match ServerEnvelope::decode(frame) {
        Ok(envelope) => {
            let encoded = envelope.encode();
            let again = ServerEnvelope::decode(&encoded)
                .unwrap_or_else(|e| panic!("a decoded server frame re-encodes to one that does not decode: {e}"));
            assert_eq!(again.encode(), encoded, "the server encoding is not stable");
        }
        Err(error) => {
            let _ = (error.code(), error.field(), error.ref_id(), error.to_string());
        }
    }
}

/// The client session core driven by an arbitrary sequence of server frames,
/// closes, clock jumps and commands; see [`session::run`].
pub fn session(data: &[u8]) {
    use arbitrary::Arbitrary;
    if let Ok(script) = session::Script::arbitrary_take_rest(arbitrary::Unstructured::new(data)) {
        session::run(&script);
    }
}

/// The input as the target named `target` reads it, for people: the frame as
/// text, or the session script's steps.
pub fn describe(target: &str, data: &[u8]) -> String {
    use arbitrary::Arbitrary;
    if target == "session" {
        match session::Script::arbitrary_take_rest(arbitrary::Unstructured::new(data)) {
            Ok(script) => format!("{script:#?}"),
            Err(e) => format!("not a script: {e}"),
        }
    } else {
        format!("{:?}", String::from_utf8_lossy(data))
    }
}
