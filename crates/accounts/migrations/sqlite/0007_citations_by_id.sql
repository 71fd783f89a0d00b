-- Citations keyed, found and pruned by their time-ordered tool_call_id alone (SQLite).
-- migrations/postgres/0007_citations_by_id.sql is the reference; change both together.
-- The table becomes its primary key (WITHOUT ROWID) and the served_at index goes: one B-tree
-- write per citation instead of three, on the request path's metering writer.
CREATE TABLE citations_by_id (
    tool_call_id TEXT PRIMARY KEY,
    user_id      BLOB NOT NULL CHECK (length(user_id) = 16),
    endpoint     TEXT NOT NULL,
    served_at    TEXT NOT NULL,
    request      TEXT NOT NULL,
    cited        TEXT NOT NULL
) STRICT, WITHOUT ROWID;
INSERT INTO citations_by_id SELECT tool_call_id, user_id, endpoint, served_at, request, cited FROM citations;
DROP TABLE citations;
ALTER TABLE citations_by_id RENAME TO citations;
