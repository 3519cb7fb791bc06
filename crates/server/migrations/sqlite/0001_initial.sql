-- Conversations, their messages and the members' receipts. Times are Unix milliseconds.
CREATE TABLE conversations (
    id            TEXT PRIMARY KEY NOT NULL,
    customer_id   TEXT NOT NULL,
    customer_name TEXT NOT NULL,
    agent_id      TEXT,
    agent_name    TEXT,
    status        TEXT NOT NULL CHECK (status IN ('queued', 'active', 'closed')),
    last_seq      INTEGER NOT NULL DEFAULT 0,
    topic         TEXT,
    pet_id        TEXT,
    order_id      TEXT,
    created_at    INTEGER NOT NULL,
    queued_at     INTEGER,
    closed_at     INTEGER,
    closed_by     TEXT
);
CREATE INDEX conversations_by_customer ON conversations (customer_id, status);
CREATE INDEX conversations_by_status ON conversations (status, queued_at);

CREATE TABLE messages (
    conversation_id   TEXT NOT NULL REFERENCES conversations (id),
    seq               INTEGER NOT NULL,
    id                TEXT NOT NULL UNIQUE,
    author_id         TEXT NOT NULL,
    author_role       TEXT NOT NULL,
    author_name       TEXT NOT NULL,
    client_message_id TEXT NOT NULL,
    text              TEXT NOT NULL,
    sent_at           INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, seq)
) WITHOUT ROWID;
-- The idempotency key of chat.send: one message per author and clientMessageId.
CREATE UNIQUE INDEX messages_by_client_id ON messages (conversation_id, author_id, client_message_id);

CREATE TABLE receipts (
    conversation_id TEXT NOT NULL REFERENCES conversations (id),
    user_id         TEXT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('delivered', 'read')),
    up_to_seq       INTEGER NOT NULL,
    at              INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, user_id, kind)
) WITHOUT ROWID;
