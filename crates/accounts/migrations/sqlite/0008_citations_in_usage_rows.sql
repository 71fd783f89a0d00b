-- Citations in usage rows (SQLite). migrations/postgres/0008_citations_in_usage_rows.sql is the
-- reference; change both together.
ALTER TABLE usage_log ADD COLUMN request TEXT;
ALTER TABLE usage_log ADD COLUMN cited TEXT;
