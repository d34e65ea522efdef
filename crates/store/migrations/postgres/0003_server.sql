-- Tables of the HTTP server on PostgreSQL (the same rows as in SQLite). Every row belongs to a
-- tenant; every query filters by it.

CREATE TABLE srv_api_keys (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    scopes TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE srv_conversations (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    assistant TEXT NOT NULL,
    customer_id TEXT,
    metadata TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX srv_conversations_list ON srv_conversations (tenant, created_at DESC, id DESC);

-- Runs (turns). With replicas a run is `queued` until a worker claims it; `cancel_requested`
-- tells the worker that runs it (whatever replica) to stop, when the signal over Redis is lost.
CREATE TABLE srv_runs (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    result TEXT,
    error TEXT,
    created_at BIGINT NOT NULL,
    finished_at BIGINT,
    cancel_requested BOOLEAN NOT NULL DEFAULT false
);
CREATE INDEX srv_runs_conversation ON srv_runs (conversation_id);

-- Events of a run, written while it runs (a stream on any replica reads them from here).
CREATE TABLE srv_run_events (
    run_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    event TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE srv_feedback (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    message_id TEXT,
    rating BIGINT NOT NULL,
    comment TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX srv_feedback_conversation ON srv_feedback (conversation_id);

CREATE TABLE srv_idempotency (
    tenant TEXT NOT NULL,
    key TEXT NOT NULL,
    body_hash TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    run_id TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, key)
);

-- The server run (`srv_runs.id`) a queued runtime run executes.
ALTER TABLE rt_runs ADD COLUMN ref TEXT;
CREATE INDEX rt_runs_ref ON rt_runs (ref);
