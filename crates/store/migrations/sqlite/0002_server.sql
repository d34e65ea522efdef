-- Tables of the HTTP server. Every row belongs to a tenant; every query filters by it.

-- API keys: only the SHA-256 of the key is stored.
CREATE TABLE srv_api_keys (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    scopes TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

-- Conversation metadata (the state itself is in `checkpoints`, keyed by the same id).
CREATE TABLE srv_conversations (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    assistant TEXT NOT NULL,
    customer_id TEXT,
    metadata TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX srv_conversations_list ON srv_conversations (tenant, created_at DESC, id DESC);

-- Runs (turns) and their outcome.
CREATE TABLE srv_runs (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    result TEXT,
    error TEXT,
    created_at INTEGER NOT NULL,
    finished_at INTEGER
);
CREATE INDEX srv_runs_conversation ON srv_runs (conversation_id);

-- Events of a run, persisted so that a client reconnecting with Last-Event-ID replays them.
CREATE TABLE srv_run_events (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;

-- Feedback on a message.
CREATE TABLE srv_feedback (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    message_id TEXT,
    rating INTEGER NOT NULL,
    comment TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX srv_feedback_conversation ON srv_feedback (conversation_id);

-- Idempotency keys of turns: the same key never runs a second turn.
CREATE TABLE srv_idempotency (
    tenant TEXT NOT NULL,
    key TEXT NOT NULL,
    body_hash TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    run_id TEXT,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, key)
) WITHOUT ROWID;
