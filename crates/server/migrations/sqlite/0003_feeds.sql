-- Feeds: numbered streams of items, a topic's events (feed 'topic:NAME', SPEC §11)
-- and a user's notifications (feed 'user:ID', SPEC §12). Times are Unix milliseconds.
CREATE TABLE feeds (
    feed     TEXT PRIMARY KEY NOT NULL,
    -- The seq of the last item: each post takes the next one.
    last_seq INTEGER NOT NULL DEFAULT 0,
    -- Notifications: every item up to this seq is read.
    read_seq INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

CREATE TABLE feed_items (
    feed  TEXT NOT NULL,
    seq   INTEGER NOT NULL,
    -- A notification's id; empty for a topic event.
    id    TEXT NOT NULL,
    -- The event name, or the notification's kind.
    name  TEXT NOT NULL,
    -- JSON: the event's data, or the notification's {title, body, link}.
    body  TEXT NOT NULL,
    at    INTEGER NOT NULL,
    PRIMARY KEY (feed, seq)
) WITHOUT ROWID;

-- The idempotency keys of the server API, per feed, kept 24 h.
CREATE TABLE feed_keys (
    feed    TEXT NOT NULL,
    key     TEXT NOT NULL,
    -- SHA-256 of the request the key was first used with.
    digest  TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    item_id TEXT NOT NULL,
    at      INTEGER NOT NULL,
    PRIMARY KEY (feed, key)
) WITHOUT ROWID;
