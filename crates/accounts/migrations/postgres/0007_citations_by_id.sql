-- Citations are pruned by their time-ordered tool_call_id (tc_ and a UUIDv7, which sorts by the
-- time it was minted), over the primary key: the served_at index is one write per citation on
-- the metering path that nothing needs.
DROP INDEX citations_served_at;
