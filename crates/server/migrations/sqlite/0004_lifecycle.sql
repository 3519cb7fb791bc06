-- The conversation lifecycle (docs/protocol.md, "Conversation lifecycle"): why a
-- conversation was closed, since when its customer has had no connection,
-- who handed a queued conversation back (it is not offered to them again),.
ALTER TABLE conversations ADD COLUMN close_reason TEXT
    CHECK (close_reason IN ('closed', 'resolved', 'customer_away', 'idle'));
ALTER TABLE conversations ADD COLUMN customer_away_since INTEGER;
ALTER TABLE conversations ADD COLUMN declined_by TEXT;
UPDATE conversations SET close_reason = 'closed' WHERE status = 'closed';
-- A user's conversations newest first (conversation.list, session.ready's
-- pastConversations); they serve what the two indexes they replace served.
DROP INDEX conversations_by_customer;
DROP INDEX conversations_by_agent;
CREATE INDEX conversations_by_customer ON conversations (customer_id, status, created_at);
CREATE INDEX conversations_by_agent ON conversations (agent_id, status, created_at);
