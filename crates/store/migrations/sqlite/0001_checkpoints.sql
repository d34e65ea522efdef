-- Conversations are keyed by an integer so that every checkpoint row stays small.
CREATE TABLE conversations (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);

-- One row per checkpoint: a snapshot, or a delta on its parent (same conversation).
CREATE TABLE checkpoints (
    conv INTEGER NOT NULL REFERENCES conversations(id),
    id INTEGER NOT NULL,
    parent INTEGER,
    run_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    schema_version INTEGER NOT NULL,
    snapshot INTEGER NOT NULL,
    payload BLOB NOT NULL,
    PRIMARY KEY (conv, id),
    FOREIGN KEY (conv, parent) REFERENCES checkpoints(conv, id)
) WITHOUT ROWID;

-- Outcomes of finished or interrupted tasks of a step whose checkpoint is not written yet.
CREATE TABLE pending_writes (
    conv INTEGER NOT NULL,
    checkpoint INTEGER NOT NULL,
    task TEXT NOT NULL,
    payload BLOB NOT NULL,
    PRIMARY KEY (conv, checkpoint, task)
) WITHOUT ROWID;

-- Customer- and assistant-scoped state fields.
CREATE TABLE scoped_context (
    scope TEXT NOT NULL,
    owner TEXT NOT NULL,
    field TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (scope, owner, field)
) WITHOUT ROWID;
