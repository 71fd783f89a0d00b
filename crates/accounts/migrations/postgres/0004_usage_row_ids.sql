-- Every usage row carries the id the metering layer gave it when the request was answered, so a
-- batch that reaches the database twice (its write timed out after committing, or a replay of
-- the local spill file was cut short) is counted once. Rows from before have none.
ALTER TABLE usage_log ADD COLUMN row_id uuid;
CREATE UNIQUE INDEX usage_log_row_id ON usage_log (row_id);
