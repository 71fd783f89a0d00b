-- Recurring jobs of the scheduler (the warehouse fills): who runs each one now, under a lease, so
-- two processes never run one job at once; and how its runs ended, for /healthz and the backoff
-- after failures (kept here, so a restart does not forget it).
CREATE TABLE scheduled_jobs (
    job              text PRIMARY KEY,
    holder           text,
    lease_until      timestamptz,
    last_success_at  timestamptz,
    last_failure_at  timestamptz,
    last_error       text,
    failures         integer NOT NULL DEFAULT 0 CHECK (failures >= 0)
);
