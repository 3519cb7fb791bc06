-- An agent's open conversations (session.ready), as conversations_by_customer serves a customer's.
CREATE INDEX conversations_by_agent ON conversations (agent_id, status);
