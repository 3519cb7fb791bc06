-- Attachments (docs/protocol.md, "Attachments"): the photos and PDFs uploaded
-- to a conversation. The files live in --attachments-dir, named by id; this
-- table holds their metadata and which message sent each (NULL until sent).
CREATE TABLE attachments (
    id              TEXT PRIMARY KEY NOT NULL,
    conversation_id TEXT NOT NULL REFERENCES conversations (id),
    uploader_id     TEXT NOT NULL,
    uploader_role   TEXT NOT NULL CHECK (uploader_role IN ('customer', 'agent')),
    name            TEXT NOT NULL,
    content_type    TEXT NOT NULL,
    size            INTEGER NOT NULL,
    width           INTEGER,
    height          INTEGER,
    sha256          TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    message_id      TEXT
);
CREATE INDEX attachments_by_conversation ON attachments (conversation_id, uploader_id);
-- A message's attachments as chat.message carries them (a JSON array), NULL when none.
ALTER TABLE messages ADD COLUMN attachments TEXT;
