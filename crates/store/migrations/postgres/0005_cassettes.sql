-- Recorded turns (cassettes) of conversations, for `switchboard eval export` and `eval replay`.
-- One row per turn, redacted by the guard like everything else stored; deleted with the
-- conversation.
CREATE TABLE srv_cassettes (
    tenant TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    assistant TEXT NOT NULL,
    customer_id TEXT,
    turn TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (conversation_id, seq)
);
