-- What every data answer cited, by its tool_call_id, so a number a bot quoted can be traced to
-- who asked, what was asked and answered, and from which upstream row. Written in the same
-- transaction as the answer's usage row; JSON kept as text, as the SQLite schema does.
CREATE TABLE citations (
    tool_call_id text PRIMARY KEY,
    user_id      uuid NOT NULL,
    endpoint     text NOT NULL,
    served_at    timestamptz NOT NULL,
    request      text NOT NULL,
    cited        text NOT NULL
);
CREATE INDEX citations_served_at ON citations (served_at);
