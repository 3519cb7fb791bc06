-- The shared agent pool (SPEC §6, §10): every agent the pool knows, and the
-- nodes where each has connections. An agent is online while it has a row in
-- agent_connections. Written under the pool's advisory lock. Times are Unix
-- milliseconds.
CREATE TABLE agents (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    available     BOOLEAN NOT NULL,
    -- Ties of least-loaded assignment go to the longest idle.
    idle_since    BIGINT NOT NULL,
    -- When its last connection on any node closed; NULL while online.
    offline_since BIGINT
);

CREATE TABLE agent_connections (
    agent_id TEXT NOT NULL REFERENCES agents (id),
    node_id  TEXT NOT NULL,
    PRIMARY KEY (agent_id, node_id)
);
-- A node that is gone takes its rows with it (NodeGone).
CREATE INDEX agent_connections_by_node ON agent_connections (node_id);
