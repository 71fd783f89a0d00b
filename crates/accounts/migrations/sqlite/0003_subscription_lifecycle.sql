-- The subscription lifecycle (SQLite). migrations/postgres/0003_subscription_lifecycle.sql is the
-- reference; change both together.
--
-- SQLite cannot alter a CHECK constraint, so `users`, `provisioning_jobs` and `hermes_profiles`
-- are rebuilt. `users` is referenced by every other table, so this relies on SQLite's documented
-- procedure for that (https://www.sqlite.org/lang_altertable.html#otheralter): `SqlAccounts::migrate`
-- runs the SQLite migrations with foreign keys off and checks them afterwards.

CREATE TABLE users_new (
    user_id       BLOB PRIMARY KEY CHECK (length(user_id) = 16),
    email         TEXT,
    weixin_openid TEXT,
    display_name  TEXT,
    plan          TEXT NOT NULL CHECK (plan IN ('pro', 'lite', 'alpha')),
    status        TEXT NOT NULL DEFAULT 'active'
                  CHECK (status IN ('active', 'expired', 'suspended', 'refunded', 'cancelled')),
    created_at    TEXT NOT NULL,
    paid_until    TEXT,
    renewal_code  TEXT NOT NULL UNIQUE
                  CHECK (length(renewal_code) = 32 AND renewal_code NOT GLOB '*[^0-9a-f]*'),
    reminded_for  TEXT
) STRICT;
INSERT INTO users_new
    SELECT user_id, email, weixin_openid, display_name, plan, status, created_at, paid_until,
           lower(hex(randomblob(16))), NULL
    FROM users;
DROP TABLE users;
ALTER TABLE users_new RENAME TO users;
CREATE INDEX users_paid_until ON users (paid_until) WHERE status IN ('active', 'expired');

CREATE TABLE provisioning_jobs_new (
    job_id                BLOB PRIMARY KEY CHECK (length(job_id) = 16),
    user_id               BLOB NOT NULL REFERENCES users (user_id),
    kind                  TEXT NOT NULL CHECK (kind IN ('provision', 'deprovision', 'suspend', 'resume')),
    payment_id            BLOB REFERENCES payments (payment_id),
    state                 TEXT NOT NULL,
    attempts              INTEGER NOT NULL DEFAULT 0,
    last_error            TEXT,
    next_attempt_at       TEXT NOT NULL,
    locked_by             TEXT,
    locked_until          TEXT,
    onboarding_token_hash TEXT UNIQUE
        CHECK (length(onboarding_token_hash) = 64 AND onboarding_token_hash NOT GLOB '*[^0-9a-f]*'),
    pairing_qr            TEXT,
    pairing_status        TEXT,
    verify_code           TEXT CHECK (length(verify_code) = 6 AND verify_code NOT GLOB '*[^0-9]*'),
    bot_name              TEXT,
    created_at            TEXT NOT NULL,
    updated_at            TEXT NOT NULL,
    UNIQUE (payment_id, kind)
) STRICT;
INSERT INTO provisioning_jobs_new SELECT * FROM provisioning_jobs;
DROP TABLE provisioning_jobs;
ALTER TABLE provisioning_jobs_new RENAME TO provisioning_jobs;
CREATE INDEX provisioning_jobs_user ON provisioning_jobs (user_id);
CREATE INDEX provisioning_jobs_due ON provisioning_jobs (next_attempt_at);

CREATE TABLE hermes_profiles_new (
    profile_name  TEXT PRIMARY KEY,
    user_id       BLOB NOT NULL REFERENCES users (user_id),
    host          TEXT NOT NULL,
    weixin_bot_id TEXT,
    status        TEXT NOT NULL
                  CHECK (status IN ('provisioning', 'active', 'suspended', 'error', 'deprovisioned')),
    created_at    TEXT NOT NULL,
    welcomed_at   TEXT
) STRICT;
INSERT INTO hermes_profiles_new SELECT *, NULL FROM hermes_profiles;
DROP TABLE hermes_profiles;
ALTER TABLE hermes_profiles_new RENAME TO hermes_profiles;
CREATE UNIQUE INDEX hermes_profiles_user ON hermes_profiles (user_id);

CREATE TABLE gateway_census (
    host        TEXT PRIMARY KEY,
    expected    INTEGER NOT NULL CHECK (expected >= 0),
    running     INTEGER NOT NULL CHECK (running >= 0),
    observed_at TEXT NOT NULL
) STRICT;

CREATE TABLE refunds (
    out_refund_no TEXT PRIMARY KEY,
    payment_id    BLOB NOT NULL REFERENCES payments (payment_id),
    amount_cents  INTEGER NOT NULL CHECK (amount_cents > 0),
    refunded_at   TEXT NOT NULL
) STRICT;
CREATE INDEX refunds_payment ON refunds (payment_id);
