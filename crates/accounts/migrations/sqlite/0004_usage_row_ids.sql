-- Usage row ids (SQLite). migrations/postgres/0004_usage_row_ids.sql is the reference; change
-- both together.
ALTER TABLE usage_log ADD COLUMN row_id BLOB CHECK (row_id IS NULL OR length(row_id) = 16);
CREATE UNIQUE INDEX usage_log_row_id ON usage_log (row_id);
