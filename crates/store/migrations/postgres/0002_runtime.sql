-- Tables of the distributed runtime (crate switchboard-runtime).

-- Accepted customer messages: a message is acknowledged once its row (and its run) committed.
CREATE TABLE rt_messages (
    id BIGSERIAL PRIMARY KEY,
    conversation TEXT NOT NULL,
    client_key TEXT NOT NULL,
    body TEXT NOT NULL,
    accepted_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (conversation, client_key)
);

-- The runs queue: one run per accepted message, executed in id order within a conversation.
-- status: queued | running | done | dead. `attempts` counts claims, `failures` runs that failed.
CREATE TABLE rt_runs (
    id BIGSERIAL PRIMARY KEY,
    conversation TEXT NOT NULL,
    message_id BIGINT NOT NULL REFERENCES rt_messages(id),
    status TEXT NOT NULL DEFAULT 'queued',
    attempts INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    owner TEXT,
    lease_token BIGINT,
    input_checkpoint BIGINT,
    error TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    claimed_at TIMESTAMPTZ,
    finished_at TIMESTAMPTZ
);
CREATE INDEX rt_runs_open ON rt_runs (conversation, id) WHERE status IN ('queued', 'running');
CREATE INDEX rt_runs_queued ON rt_runs (id) WHERE status = 'queued';

-- Effect journal: one row per side effect, keyed by the engine's idempotency key. `result` is set
-- once the effect returned; a row without one was started by the lease token it carries.
CREATE TABLE rt_effects (
    key TEXT PRIMARY KEY,
    conversation TEXT NOT NULL,
    token BIGINT NOT NULL,
    result TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at TIMESTAMPTZ
);

-- Outbox of replies to customers: at most one per key (conversation and message).
CREATE TABLE rt_outbox (
    id BIGSERIAL PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    conversation TEXT NOT NULL,
    message_id BIGINT NOT NULL,
    body TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX rt_outbox_conversation ON rt_outbox (conversation, id);
