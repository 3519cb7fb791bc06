-- Feeds: the SQLite schema (migrations/sqlite/0003_feeds.sql) with the same column names.
-- A topic's events (feed 'topic:NAME') and a user's notifications (feed 'user:ID'); Unix milliseconds.
CREATE TABLE feeds (
    feed     TEXT PRIMARY KEY,
    -- The seq of the last item: each post takes the next one under this row's
    -- lock, which keeps seq gapless across nodes.
    last_seq BIGINT NOT NULL DEFAULT 0,
    -- Notifications: every item up to this seq is read.
    read_seq BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE feed_items (
    feed  TEXT NOT NULL,
    seq   BIGINT NOT NULL,
    -- A notification's id; empty for a topic event.
    id    TEXT NOT NULL,
    -- The event name, or the notification's kind.
    name  TEXT NOT NULL,
    -- JSON: the event's data, or the notification's {title, body, link}.
    body  TEXT NOT NULL,
    at    BIGINT NOT NULL,
    PRIMARY KEY (feed, seq)
);

-- The idempotency keys of the server API, per feed, kept 24 h.
CREATE TABLE feed_keys (
    feed    TEXT NOT NULL,
    key     TEXT NOT NULL,
    -- SHA-256 of the request the key was first used with.
    digest  TEXT NOT NULL,
    seq     BIGINT NOT NULL,
    item_id TEXT NOT NULL,
    at      BIGINT NOT NULL,
    PRIMARY KEY (feed, key)
);

-- A post in one statement, so that a batch's posts pipeline like its appends:
-- the idempotency key first (under the feed row's lock, so the same key sent
-- to two nodes at once is posted once), then the next seq, the item, what the
-- retention drops, and the key. Answers ('posted', seq, id), ('before', the
-- first post's seq and id) or ('conflict', NULL, NULL).
CREATE FUNCTION petchat_post(
    p_feed TEXT, p_id TEXT, p_name TEXT, p_body TEXT, p_at BIGINT,
    p_key TEXT, p_digest TEXT, p_keys_not_before BIGINT,
    p_keep BIGINT, p_keep_unread BOOLEAN, p_not_before BIGINT
) RETURNS TABLE (out_outcome TEXT, out_seq BIGINT, out_item_id TEXT) AS $$
DECLARE
    known RECORD;
    next_seq BIGINT;
    read BIGINT;
    bound BIGINT;
BEGIN
    IF p_key IS NOT NULL THEN
        INSERT INTO feeds (feed) VALUES (p_feed) ON CONFLICT DO NOTHING;
        PERFORM 1 FROM feeds f WHERE f.feed = p_feed FOR UPDATE;
        DELETE FROM feed_keys k WHERE k.feed = p_feed AND k.at < p_keys_not_before;
        SELECT k.digest, k.seq, k.item_id INTO known FROM feed_keys k WHERE k.feed = p_feed AND k.key = p_key;
        IF FOUND THEN
            IF known.digest = p_digest THEN
                RETURN QUERY SELECT 'before'::TEXT, known.seq, known.item_id;
            ELSE
                RETURN QUERY SELECT 'conflict'::TEXT, NULL::BIGINT, NULL::TEXT;
            END IF;
            RETURN;
        END IF;
    END IF;
    INSERT INTO feeds AS f (feed, last_seq) VALUES (p_feed, 1)
        ON CONFLICT (feed) DO UPDATE SET last_seq = f.last_seq + 1
        RETURNING f.last_seq, f.read_seq INTO next_seq, read;
    INSERT INTO feed_items (feed, seq, id, name, body, at) VALUES (p_feed, next_seq, p_id, p_name, p_body, p_at);
    bound := GREATEST(next_seq - p_keep, 0);
    IF p_keep_unread THEN
        bound := LEAST(bound, read);
    END IF;
    IF bound > 0 THEN
        DELETE FROM feed_items i WHERE i.feed = p_feed AND i.seq <= bound;
    END IF;
    IF p_not_before IS NOT NULL THEN
        DELETE FROM feed_items i WHERE i.feed = p_feed AND i.at < p_not_before;
    END IF;
    IF p_key IS NOT NULL THEN
        INSERT INTO feed_keys (feed, key, digest, seq, item_id, at)
            VALUES (p_feed, p_key, p_digest, next_seq, p_id, p_at);
    END IF;
    RETURN QUERY SELECT 'posted'::TEXT, next_seq, p_id;
END
$$ LANGUAGE plpgsql;
