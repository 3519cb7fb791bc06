-- The uploads no message has sent, oldest first: what the sweep of
-- --unsent-attachment-ms reads (docs/protocol.md, "Attachments").
CREATE INDEX attachments_unsent ON attachments (created_at) WHERE message_id IS NULL;
