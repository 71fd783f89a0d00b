-- Citations (SQLite). migrations/postgres/0005_citations.sql is the reference; change both together.
CREATE TABLE citations (
    tool_call_id TEXT PRIMARY KEY,
    user_id      BLOB NOT NULL CHECK (length(user_id) = 16),
    endpoint     TEXT NOT NULL,
    served_at    TEXT NOT NULL,
    request      TEXT NOT NULL,
    cited        TEXT NOT NULL
) STRICT;
CREATE INDEX citations_served_at ON citations (served_at);
