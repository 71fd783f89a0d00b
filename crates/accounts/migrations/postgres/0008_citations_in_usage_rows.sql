-- A data answer's citation is stored in its usage row, whose row_id is the UUIDv7 its
-- tool_call_id carries (`tc_` + row_id): one row and one B-tree write per answer on the metering
-- path instead of two. The citations table keeps what was written before this migration, is read
-- when a tool_call_id names no usage row, and empties as retention prunes it.
ALTER TABLE usage_log ADD COLUMN request text, ADD COLUMN cited text;
