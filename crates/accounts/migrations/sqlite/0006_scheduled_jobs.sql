-- Scheduled jobs (SQLite). migrations/postgres/0006_scheduled_jobs.sql is the reference; change both together.
CREATE TABLE scheduled_jobs (
    job              TEXT PRIMARY KEY,
    holder           TEXT,
    lease_until      TEXT,
    last_success_at  TEXT,
    last_failure_at  TEXT,
    last_error       TEXT,
    failures         INTEGER NOT NULL DEFAULT 0 CHECK (failures >= 0)
) STRICT;
