//! Storage backends that implement the engine's traits (SQLite now; PostgreSQL and Redis later).
