-- The subscription lifecycle: users whose paid period ran out (`expired`), profiles whose gateway
-- is stopped meanwhile (`suspended`), jobs that stop and start a gateway, jobs cancelled by a
-- refund, partial refunds, the renewal code behind a user's renewal link, and the messages a bot
-- sends its owner once (the welcome, the renewal reminder).

ALTER TABLE users DROP CONSTRAINT users_status_check;
ALTER TABLE users ADD CONSTRAINT users_status_check
    CHECK (status IN ('active', 'expired', 'suspended', 'refunded', 'cancelled'));
-- Shown in the bot's 402 answers and reminders; it lets its holder pay this user's renewal and
-- see the plan and end date, nothing more, so it is kept as is (a hash could not be shown again).
ALTER TABLE users ADD COLUMN renewal_code text;
UPDATE users SET renewal_code = replace(gen_random_uuid()::text, '-', '');
ALTER TABLE users ALTER COLUMN renewal_code SET NOT NULL;
ALTER TABLE users ADD CONSTRAINT users_renewal_code_check CHECK (renewal_code ~ '^[0-9a-f]{32}$');
CREATE UNIQUE INDEX users_renewal_code ON users (renewal_code);
-- The `paid_until` the renewal reminder was sent for: a renewal moves `paid_until` on, so the
-- next period gets its own reminder, and a restart never sends one twice.
ALTER TABLE users ADD COLUMN reminded_for timestamptz;
CREATE INDEX users_paid_until ON users (paid_until) WHERE status IN ('active', 'expired');

ALTER TABLE provisioning_jobs DROP CONSTRAINT provisioning_jobs_kind_check;
ALTER TABLE provisioning_jobs ADD CONSTRAINT provisioning_jobs_kind_check
    CHECK (kind IN ('provision', 'deprovision', 'suspend', 'resume'));

ALTER TABLE hermes_profiles DROP CONSTRAINT hermes_profiles_status_check;
ALTER TABLE hermes_profiles ADD CONSTRAINT hermes_profiles_status_check
    CHECK (status IN ('provisioning', 'active', 'suspended', 'error', 'deprovisioned'));
-- When the bot greeted its owner; set once, so a restart never greets twice.
ALTER TABLE hermes_profiles ADD COLUMN welcomed_at timestamptz;

-- What each host's provisioner last saw of its gateways, for /healthz: how many active profiles it
-- should run and how many run.
CREATE TABLE gateway_census (
    host        text PRIMARY KEY,
    expected    integer NOT NULL CHECK (expected >= 0),
    running     integer NOT NULL CHECK (running >= 0),
    observed_at timestamptz NOT NULL
);

-- One row per refund the processor completed (its `out_refund_no`): a repeated notification adds
-- nothing, and the sum tells a partial refund from a full one.
CREATE TABLE refunds (
    out_refund_no text PRIMARY KEY,
    payment_id    uuid NOT NULL REFERENCES payments (payment_id),
    amount_cents  bigint NOT NULL CHECK (amount_cents > 0),
    refunded_at   timestamptz NOT NULL
);
CREATE INDEX refunds_payment ON refunds (payment_id);
