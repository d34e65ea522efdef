-- Conversations are keyed by an integer so that every checkpoint row stays small.
CREATE TABLE conversations (
    id BIGSERIAL PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

-- One row per checkpoint: a snapshot, or a delta on its parent (same conversation).
CREATE TABLE checkpoints (
    conv BIGINT NOT NULL REFERENCES conversations(id),
    id BIGINT NOT NULL,
    parent BIGINT,
    run_id TEXT NOT NULL,
    step BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    schema_version INTEGER NOT NULL,
    snapshot BOOLEAN NOT NULL,
    payload BYTEA NOT NULL,
    PRIMARY KEY (conv, id),
    FOREIGN KEY (conv, parent) REFERENCES checkpoints(conv, id)
);

-- Outcomes of finished or interrupted tasks of a step whose checkpoint is not written yet.
CREATE TABLE pending_writes (
    conv BIGINT NOT NULL,
    checkpoint BIGINT NOT NULL,
    task TEXT NOT NULL,
    payload BYTEA NOT NULL,
    PRIMARY KEY (conv, checkpoint, task)
);

-- Customer- and assistant-scoped state fields (JSON text, kept as written).
CREATE TABLE scoped_context (
    scope TEXT NOT NULL,
    owner TEXT NOT NULL,
    field TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (scope, owner, field)
);

-- Per-conversation leases. The token only ever grows (a release keeps the row), so a write
-- carrying an older token than the row's is from a worker that lost the conversation.
CREATE TABLE leases (
    conversation TEXT PRIMARY KEY,
    owner TEXT,
    token BIGINT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
