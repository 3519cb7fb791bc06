//! WebSocket close codes of SPEC §4, each with the reconnect rule clients follow.
//!
//! Centrifugo's rule is adopted: 4000–4499 means "reconnect", 4500–4999 means
//! "do not reconnect without something new". Codes this table does not name
//! follow their range; anything else (1006 when a network drops, say) means
//! reconnect with backoff.

use std::fmt;

/// What a client does after the server closed the connection with a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reconnect {
    /// Do not reconnect.
    Stop,
    /// Reconnect with full-jitter exponential backoff.
    Backoff,
    /// Reconnect with backoff, but never sooner than the delay the server
    /// hinted (the close reason's `retryAfterMs`, or an earlier
    /// `rate_limited` error's `retryAfterMs`).
    AfterHint,
    /// Reconnect only with a fresh token from the application; stop if none
    /// comes.
    NewToken,
}

/// A WebSocket close code (RFC 6455 §7.4), with petchat's meaning of each.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the connection ended normally (a client closes with it when the
    /// user leaves). Do not reconnect.
    pub const NORMAL: Self = Self(1000);
    /// 1001: the server is shutting down. Reconnect with backoff.
    pub const GOING_AWAY: Self = Self(1001);
    /// 1002: the peer broke RFC 6455 (reserved bits or opcode, an unmasked
    /// client frame, a control frame over 125 bytes or fragmented, a
    /// continuation without a start). Reconnect with backoff.
    pub const PROTOCOL_ERROR: Self = Self(1002);
    /// 1003: a binary frame arrived; v1 is text only (binary is reserved for
    /// attachments). Reconnect with backoff.
    pub const UNSUPPORTED_DATA: Self = Self(1003);
    /// 1007: a text frame was not valid UTF-8. Reconnect with backoff.
    pub const INVALID_PAYLOAD: Self = Self(1007);
    /// 1008: the `Origin` is not allowed. Do not reconnect.
    pub const POLICY_VIOLATION: Self = Self(1008);
    /// 1009: a frame exceeded `maxMessageBytes`. Reconnect with backoff and
    /// drop the offending message from the outbox.
    pub const MESSAGE_TOO_BIG: Self = Self(1009);
    /// 1011: the server failed unexpectedly. Reconnect with backoff.
    pub const INTERNAL_ERROR: Self = Self(1011);
    /// 1012: the server is restarting. Reconnect with backoff.
    pub const SERVICE_RESTART: Self = Self(1012);
    /// 1013: the server is at capacity. Reconnect with backoff, never sooner
    /// than the server's hint.
    pub const TRY_AGAIN_LATER: Self = Self(1013);
    /// 4000: the client stayed silent for two heartbeat intervals. Reconnect.
    pub const HEARTBEAT_TIMEOUT: Self = Self(4000);
    /// 4001: the client read too slowly and its outbound queue filled up.
    /// Reconnect and resume with `afterSeq`.
    pub const SLOW_CONSUMER: Self = Self(4001);
    /// 4002: the client kept flooding after `rate_limited` errors. Reconnect
    /// after the hinted delay.
    pub const RATE_LIMITED: Self = Self(4002);
    /// 4500: the token is missing, malformed or wrongly signed. Stop and ask
    /// the application for a new token.
    pub const UNAUTHORIZED: Self = Self(4500);
    /// 4501: the token has expired. Reconnect only with a fresh token.
    pub const TOKEN_EXPIRED: Self = Self(4501);
    /// 4503: the user may not use this service. Stop.
    pub const FORBIDDEN: Self = Self(4503);
    /// 4505: the client offered only protocol versions this server does not
    /// speak. Stop (a new client version is needed).
    pub const UNSUPPORTED_PROTOCOL: Self = Self(4505);

    /// Every code the contract names, in numeric order.
    pub const ALL: [Self; 17] = [
        Self::NORMAL,
        Self::GOING_AWAY,
        Self::PROTOCOL_ERROR,
        Self::UNSUPPORTED_DATA,
        Self::INVALID_PAYLOAD,
        Self::POLICY_VIOLATION,
        Self::MESSAGE_TOO_BIG,
        Self::INTERNAL_ERROR,
        Self::SERVICE_RESTART,
        Self::TRY_AGAIN_LATER,
        Self::HEARTBEAT_TIMEOUT,
        Self::SLOW_CONSUMER,
        Self::RATE_LIMITED,
        Self::UNAUTHORIZED,
        Self::TOKEN_EXPIRED,
        Self::FORBIDDEN,
        Self::UNSUPPORTED_PROTOCOL,
    ];

    /// The numeric code.
    pub const fn code(self) -> u16 {
        self.0
    }

    /// The contract's name of the code (`going_away`…), or `None` for a code
    /// the contract does not name.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            1000 => "normal",
            1001 => "going_away",
            1002 => "protocol_error",
            1003 => "unsupported_data",
            1007 => "invalid_payload",
            1008 => "policy_violation",
            1009 => "message_too_big",
            1011 => "internal_error",
            1012 => "service_restart",
            1013 => "try_again_later",
            4000 => "heartbeat_timeout",
            4001 => "slow_consumer",
            4002 => "rate_limited",
            4500 => "unauthorized",
            4501 => "token_expired",
            4503 => "forbidden",
            4505 => "unsupported_protocol",
            _ => return None,
        })
    }

    /// What a client does after a close with this code.
    pub const fn reconnect(self) -> Reconnect {
        match self.0 {
            4500 | 4501 => Reconnect::NewToken,
            1013 | 4002 => Reconnect::AfterHint,
            // 4503, 4505 and the rest of the "do not reconnect" range.
            1000 | 1008 | 4502..=4999 => Reconnect::Stop,
            _ => Reconnect::Backoff,
        }
    }

    /// Whether a client should reconnect (after its backoff delay) without
    /// anything new from the application.
    pub const fn should_reconnect(self) -> bool {
        matches!(self.reconnect(), Reconnect::Backoff | Reconnect::AfterHint)
    }

    /// Whether the message that caused this close must be dropped from the
    /// client's outbox, because sending it again would only repeat the close.
    pub const fn drops_offending_message(self) -> bool {
        self.0 == Self::MESSAGE_TOO_BIG.0
    }

    /// One sentence on what the code means and what a client does.
    pub const fn description(self) -> &'static str {
        match self.0 {
            1000 => "Normal closure; the client closes with it when the user leaves. Do not reconnect.",
            1001 => "The server is shutting down. Reconnect with backoff.",
            1002 => {
                "The peer broke RFC 6455 (reserved bits or opcode, an unmasked client frame, an oversized or fragmented control frame, a continuation without a start). Reconnect with backoff."
            }
            1007 => "A text frame was not valid UTF-8. Reconnect with backoff.",
            1003 => {
                "A binary frame arrived; v1 is text only, binary is reserved for attachments. Reconnect with backoff."
            }
            1008 => "The Origin is not allowed. Do not reconnect.",
            1009 => {
                "A frame exceeded maxMessageBytes. Reconnect with backoff; drop the offending message from the outbox."
            }
            1011 => "The server failed unexpectedly. Reconnect with backoff.",
            1012 => "The server is restarting. Reconnect with backoff.",
            1013 => {
                "The server is at capacity. Reconnect with backoff, never sooner than the retryAfterMs hint of the close reason."
            }
            4000 => "No frame from the client for two heartbeat intervals. Reconnect with backoff.",
            4001 => "The client read too slowly and its outbound queue filled up. Reconnect and resume with afterSeq.",
            4002 => "The client kept flooding after rate_limited errors. Reconnect after the hinted retryAfterMs.",
            4500 => "The token is missing, malformed or wrongly signed. Stop; ask the application for a new token.",
            4501 => "The token has expired. Reconnect only with a fresh token.",
            4503 => "The user may not use this service. Stop.",
            4505 => "The client offered only protocol versions this server does not speak. Stop.",
            _ => match self.reconnect() {
                Reconnect::Stop => "Not named by the contract: do not reconnect without something new.",
                _ => "Not named by the contract: reconnect with backoff.",
            },
        }
    }
}

impl fmt::Debug for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "CloseCode({} {name})", self.0),
            None => write!(f, "CloseCode({})", self.0),
        }
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{} ({name})", self.0),
            None => write!(f, "{}", self.0),
        }
    }
}

impl From<u16> for CloseCode {
    fn from(code: u16) -> Self {
        Self(code)
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> Self {
        code.0
    }
}

/// The marker of a retry hint inside a close reason (`… retryAfterMs=5000`).
pub const RETRY_HINT_MARKER: &str = "retryAfterMs=";

/// Builds a close reason that carries a retry hint, e.g. `"at capacity;
/// retryAfterMs=5000"`, cut to [`MAX_CLOSE_REASON_BYTES`](crate::limits::MAX_CLOSE_REASON_BYTES).
pub fn reason_with_retry_hint(text: &str, retry_after_ms: u64) -> String {
    let hint = format!("; {RETRY_HINT_MARKER}{retry_after_ms}");
    let room = crate::limits::MAX_CLOSE_REASON_BYTES.saturating_sub(hint.len());
    let mut end = text.len().min(room);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{hint}", &text[..end])
}

/// Reads the retry hint out of a close reason, if it carries one; a number
/// too large for a `u64` reads as `u64::MAX` (clients clamp it to
/// [`MAX_RETRY_HINT_MS`](crate::limits::MAX_RETRY_HINT_MS)).
pub fn retry_hint_ms(reason: &str) -> Option<u64> {
    let start = reason.find(RETRY_HINT_MARKER)? + RETRY_HINT_MARKER.len();
    let digits = &reason[start..];
    let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
    let digits = &digits[..end];
    if digits.is_empty() {
        return None;
    }
    Some(digits.parse().unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SPEC §4, row by row, with the two codes of RFC 6455 that §1 names.
    #[test]
    fn every_code_follows_the_spec_table() {
        use Reconnect::*;
        let table = [
            (1000, "normal", Stop),
            (1001, "going_away", Backoff),
            (1002, "protocol_error", Backoff),
            (1003, "unsupported_data", Backoff),
            (1007, "invalid_payload", Backoff),
            (1008, "policy_violation", Stop),
            (1009, "message_too_big", Backoff),
            (1011, "internal_error", Backoff),
            (1012, "service_restart", Backoff),
            (1013, "try_again_later", AfterHint),
            (4000, "heartbeat_timeout", Backoff),
            (4001, "slow_consumer", Backoff),
            (4002, "rate_limited", AfterHint),
            (4500, "unauthorized", NewToken),
            (4501, "token_expired", NewToken),
            (4503, "forbidden", Stop),
            (4505, "unsupported_protocol", Stop),
        ];
        assert_eq!(table.len(), CloseCode::ALL.len());
        for ((code, name, rule), listed) in table.into_iter().zip(CloseCode::ALL) {
            assert_eq!(listed, CloseCode(code));
            assert_eq!(listed.name(), Some(name));
            assert_eq!(listed.reconnect(), rule, "{listed}");
            assert_eq!(listed.should_reconnect(), matches!(rule, Backoff | AfterHint));
        }
    }

    #[test]
    fn unnamed_codes_follow_their_range() {
        assert_eq!(CloseCode(4100).reconnect(), Reconnect::Backoff);
        assert_eq!(CloseCode(4999).reconnect(), Reconnect::Stop);
        assert_eq!(CloseCode(1006).reconnect(), Reconnect::Backoff);
        assert!(!CloseCode(4600).should_reconnect());
        assert_eq!(CloseCode(4100).name(), None);
    }

    #[test]
    fn only_1009_drops_the_offending_message() {
        let dropping: Vec<_> = CloseCode::ALL.into_iter().filter(|c| c.drops_offending_message()).collect();
        assert_eq!(dropping, [CloseCode::MESSAGE_TOO_BIG]);
    }

    #[test]
    fn a_retry_hint_survives_the_close_reason() {
        let reason = reason_with_retry_hint("at capacity", 5_000);
        assert_eq!(reason, "at capacity; retryAfterMs=5000");
        assert_eq!(retry_hint_ms(&reason), Some(5_000));
        assert_eq!(retry_hint_ms("at capacity"), None);
        let long = reason_with_retry_hint(&"é".repeat(200), u64::MAX);
        assert!(long.len() <= crate::limits::MAX_CLOSE_REASON_BYTES);
        assert_eq!(retry_hint_ms(&long), Some(u64::MAX));
        assert_eq!(retry_hint_ms("full; retryAfterMs=99999999999999999999999"), Some(u64::MAX));
        assert_eq!(retry_hint_ms("full; retryAfterMs="), None);
    }
}
