-- Orders and provisioning jobs (SQLite). migrations/postgres/0002_orders_and_jobs.sql is the
-- reference; change both together.

ALTER TABLE payments ADD COLUMN out_trade_no TEXT;
ALTER TABLE payments ADD COLUMN plan TEXT CHECK (plan IN ('pro', 'lite', 'alpha'));
ALTER TABLE payments ADD COLUMN expires_at TEXT;
ALTER TABLE payments ADD COLUMN refunded_at TEXT;
ALTER TABLE payments ADD COLUMN onboarding_token_hash TEXT
    CHECK (length(onboarding_token_hash) = 64 AND onboarding_token_hash NOT GLOB '*[^0-9a-f]*');
-- The processor's payment link of a pending order, shown again as a QR code on the payer's page.
ALTER TABLE payments ADD COLUMN code_url TEXT;
CREATE UNIQUE INDEX payments_out_trade_no ON payments (out_trade_no);
CREATE UNIQUE INDEX payments_onboarding_token ON payments (onboarding_token_hash);
CREATE INDEX payments_pending ON payments (created_at) WHERE status = 'pending';

CREATE TABLE provisioning_jobs (
    job_id                BLOB PRIMARY KEY CHECK (length(job_id) = 16),
    user_id               BLOB NOT NULL REFERENCES users (user_id),
    kind                  TEXT NOT NULL CHECK (kind IN ('provision', 'deprovision')),
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
CREATE INDEX provisioning_jobs_user ON provisioning_jobs (user_id);
CREATE INDEX provisioning_jobs_due ON provisioning_jobs (next_attempt_at);

-- SQLite cannot alter a CHECK constraint: rebuild the (so far unused) table.
CREATE TABLE hermes_profiles_new (
    profile_name  TEXT PRIMARY KEY,
    user_id       BLOB NOT NULL REFERENCES users (user_id),
    host          TEXT NOT NULL,
    weixin_bot_id TEXT,
    status        TEXT NOT NULL CHECK (status IN ('provisioning', 'active', 'error', 'deprovisioned')),
    created_at    TEXT NOT NULL
) STRICT;
INSERT INTO hermes_profiles_new SELECT * FROM hermes_profiles;
DROP TABLE hermes_profiles;
ALTER TABLE hermes_profiles_new RENAME TO hermes_profiles;
CREATE UNIQUE INDEX hermes_profiles_user ON hermes_profiles (user_id);
