//! Every size, rate and timing the contract fixes, as documented constants.
//!
//! The server announces the ones a client must respect in `session.ready`
//! (`limits`); the defaults here are what it announces unless it is configured
//! otherwise. Clients and server take their numbers from this one place.
//!
//! The last group bounds what a client believes of the server: numbers it
//! reads from `session.ready`, errors and close reasons are clamped to these
//! ranges, so a hostile or buggy server can make a client neither panic on an
//! overflow nor spin on a zero delay.

use std::ops::RangeInclusive;

/// Largest text frame, in bytes, that the server accepts; a bigger frame is
/// closed with 1009 (`message_too_big`).
///
/// Large enough for a `chat.send` carrying [`MAX_TEXT_CHARS`] characters that
/// are all escaped as JSON surrogate pairs (12 bytes each), plus the envelope.
pub const MAX_MESSAGE_BYTES: usize = 65_536;

/// Longest chat message, in Unicode scalar values, counted after trimming
/// leading and trailing white space (Unicode `White_Space`, as `str::trim`).
pub const MAX_TEXT_CHARS: usize = 4_000;

/// Longest identifier (conversation, message, user, pet, order, request id),
/// in characters. Identifiers are never empty.
pub const MAX_ID_CHARS: usize = 128;

/// Most attachments one `chat.send` may reference.
pub const MAX_ATTACHMENTS_PER_MESSAGE: usize = 4;

/// Longest display name of an attachment (`?name=` of the upload), in characters.
pub const MAX_ATTACHMENT_NAME_CHARS: usize = 200;

/// Default `--max-attachment-bytes`: the largest file an upload may carry (10 MiB).
pub const DEFAULT_MAX_ATTACHMENT_BYTES: u64 = 10 * 1024 * 1024;

/// Default `--max-image-pixels`: the largest photo, in pixels (width × height), the
/// server decodes (a 12 Mpx phone photo is 4032 × 3024); bigger ones are refused.
pub const DEFAULT_MAX_IMAGE_PIXELS: u64 = 25_000_000;

/// The longest side of an attachment's thumbnail, in pixels.
pub const THUMBNAIL_MAX_SIDE: u32 = 320;

/// Longest `topic` of `conversation.open`, in characters.
pub const MAX_TOPIC_CHARS: usize = 200;

/// Longest topic name (SPEC §11), in characters.
pub const MAX_TOPIC_NAME_CHARS: usize = 128;

/// Longest `event` of a `topic.event` and `kind` of a `notification`, in characters.
pub const MAX_EVENT_NAME_CHARS: usize = 64;

/// Largest `data` of a published topic event, in bytes of JSON as the
/// server stores and sends it; the server API answers 413 beyond it.
pub const MAX_EVENT_DATA_BYTES: usize = 16_384;

/// Largest request body of the server API, in bytes (413 beyond it): an
/// event's data at its largest with room for the rest of the request.
pub const MAX_API_BODY_BYTES: usize = 32_768;

/// Longest `title` of a notification, in characters.
pub const MAX_NOTIFICATION_TITLE_CHARS: usize = 200;

/// Longest `body` of a notification, in characters.
pub const MAX_NOTIFICATION_BODY_CHARS: usize = 4_000;

/// Longest `link` of a notification, in characters.
pub const MAX_LINK_CHARS: usize = 2_048;

/// Longest `idempotencyKey` of the server API, in characters.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 128;

/// How long the server API remembers an `idempotencyKey` (24 h): the same
/// key within this time returns the first result and does nothing more.
pub const IDEMPOTENCY_WINDOW_MS: u64 = 86_400_000;

/// Topics one connection (or one SSE stream) may be subscribed to at once;
/// a `topic.subscribe` beyond it gets `limit_reached`.
pub const MAX_TOPICS_PER_CONNECTION: usize = 100;

/// Default `--topic-history`: events each topic keeps for replay.
pub const DEFAULT_TOPIC_HISTORY: usize = 100;

/// Default `--topic-history-ttl-ms`: the longest a topic keeps an event (24 h).
pub const DEFAULT_TOPIC_HISTORY_TTL_MS: u64 = 86_400_000;

/// An SSE stream sends a comment line after this long without an event, so
/// that proxies never see it silent for 15 s (SPEC §14).
pub const SSE_KEEPALIVE_MS: u64 = 10_000;

/// How long an SSE ticket (`POST /v1/sse/tickets`) may be used: once, within 60 s.
pub const SSE_TICKET_TTL_MS: u64 = 60_000;

/// Largest `seq` or `upToSeq` on the wire: JavaScript's
/// `Number.MAX_SAFE_INTEGER`, so that every client reads sequence numbers exactly.
pub const MAX_SEQ: u64 = 9_007_199_254_740_991;

/// Default `maxReplay`: at most this many `chat.message`s follow one
/// `conversation.joined`; `hasMore: true` tells the client to join again.
pub const MAX_REPLAY: usize = 500;

/// Default `messagesPerSecond`: client messages (all but `ping`) a connection
/// may send per second, sustained.
pub const DEFAULT_MESSAGES_PER_SECOND: u32 = 10;

/// The burst a connection may send at once, as a multiple of its
/// `messagesPerSecond`.
pub const RATE_BURST_FACTOR: u32 = 2;

/// Default `heartbeatIntervalMs`: the server pings every connection this often.
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 25_000;

/// A peer that stays silent for this many heartbeat intervals is dead: the
/// server closes it with 4000 and a client reconnects.
pub const HEARTBEAT_MISSED_INTERVALS: u32 = 2;

/// A `typing.start` that no `typing.stop` follows expires after this long.
pub const TYPING_EXPIRY_MS: u64 = 6_000;

/// Clients send at most one `typing.start` per this interval of typing.
pub const TYPING_THROTTLE_MS: u64 = 3_000;

/// Default size, in frames, of the server's outbound queue per connection; a
/// reader too slow to keep it from filling up is closed with 4001.
///
/// It holds a whole replay ([`MAX_REPLAY`] messages) with room to spare.
pub const DEFAULT_OUTBOUND_QUEUE_FRAMES: usize = 1_024;

/// Messages a client keeps in its outbox (sent while disconnected or not yet
/// acknowledged); the client reports an error instead of queueing more.
pub const OUTBOX_CAPACITY: usize = 256;

/// Default cap on simultaneous connections of one user (1013 beyond it).
pub const DEFAULT_MAX_CONNECTIONS_PER_USER: usize = 10;

/// Default cap on simultaneous connections of one server process (1013 beyond it).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// Default time an agent who disconnected keeps its conversations before they
/// are re-queued.
pub const DEFAULT_AGENT_GRACE_MS: u64 = 60_000;

/// Default time after which a conversation whose customer has been offline
/// (no connection, so no message either) all along is closed by the server
/// (`by: "system"`, `reason: "customer_away"`).
pub const DEFAULT_CUSTOMER_AWAY_MS: u64 = 600_000;

/// Default time after which an open conversation without a new message is
/// closed by the server (`by: "system"`, `reason: "idle"`).
pub const DEFAULT_CONVERSATION_IDLE_MS: u64 = 86_400_000;

/// Default page of `conversation.list` (`limit` when absent).
pub const DEFAULT_LIST_PAGE: u32 = 20;

/// Largest page of `conversation.list`.
pub const MAX_LIST_PAGE: u32 = 50;

/// How many of the user's closed conversations `session.ready` lists
/// (`pastConversations`, newest first); older ones come from `conversation.list`.
pub const PAST_CONVERSATIONS_IN_READY: usize = 10;

/// Longest search text of `conversation.list` (`query`), in characters.
pub const MAX_QUERY_CHARS: usize = 100;

/// Longest preview of a conversation's last message in a list, in characters.
pub const MAX_PREVIEW_CHARS: usize = 200;

/// Reconnect backoff: the first delay is drawn from `0..=RECONNECT_BASE_MS`.
pub const RECONNECT_BASE_MS: u64 = 1_000;

/// Reconnect backoff: delays double up to this cap.
pub const RECONNECT_CAP_MS: u64 = 30_000;

/// Reconnect backoff starts over once a connection has stayed up this long.
pub const RECONNECT_RESET_AFTER_MS: u64 = 30_000;

/// Most clock leeway, in milliseconds, a server may allow on a token's `exp`
/// and `nbf` (SPEC §1); `--token-leeway-ms` above it refuses to start.
///
/// A live connection is closed with 4501 at its token's `exp` plus the leeway
/// unless a `session.refresh` moved that on.
pub const MAX_TOKEN_LEEWAY_MS: u64 = 60_000;

/// Default clock leeway on a token's `exp` and `nbf`: the most allowed.
pub const DEFAULT_TOKEN_LEEWAY_MS: u64 = MAX_TOKEN_LEEWAY_MS;

/// Longest close reason, in bytes (RFC 6455 §5.5: control frames carry at most
/// 125 bytes, two of which are the code).
pub const MAX_CLOSE_REASON_BYTES: usize = 123;

/// Default page size of the history endpoint (`limit` when absent).
pub const DEFAULT_HISTORY_PAGE: usize = 50;

/// Largest page the history endpoint returns, whatever `limit` asks for.
pub const MAX_HISTORY_PAGE: usize = 500;

/// Largest history page in bytes of JSON: a page stops before the message
/// that would cross it (always holding at least one message) and says
/// `hasMore: true`, so a page costs the server a bounded buffer whatever the
/// messages hold.
pub const MAX_HISTORY_PAGE_BYTES: usize = 1 << 20;

/// Longest display name (`name` claim), in characters; a longer one is cut
/// to this length, since every message its author sends carries it.
pub const MAX_NAME_CHARS: usize = 64;

/// The `heartbeatIntervalMs` a client accepts from `session.ready`: 1 s to
/// 10 min. A server announcing less would have the client ping in a tight
/// loop; more, and a dead server would go unnoticed for hours.
pub const HEARTBEAT_INTERVAL_MS_BOUNDS: RangeInclusive<u64> = 1_000..=600_000;

/// The longest wait a server's retry hint imposes on a client (the
/// `retryAfterMs` of an `error`, `retryAfterMs=N` in a close reason): 5 min.
/// A longer hint is cut to it.
pub const MAX_RETRY_HINT_MS: u64 = 300_000;

/// The `messagesPerSecond` a client accepts from `session.ready`. Zero would
/// stall the client for good; the top is what benchmarks configure.
pub const MESSAGES_PER_SECOND_BOUNDS: RangeInclusive<u32> = 1..=1_000_000;

/// The `maxMessageBytes` a client accepts from `session.ready`: below 1 KiB no
/// `chat.send` fits in its envelope, so the announcement is taken as broken;
/// 16 MiB is far above any frame a client builds.
pub const MAX_MESSAGE_BYTES_BOUNDS: RangeInclusive<u32> = 1_024..=16_777_216;
