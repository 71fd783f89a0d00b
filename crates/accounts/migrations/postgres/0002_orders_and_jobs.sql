-- Orders and provisioning jobs (PostgreSQL). migrations/sqlite/0002_orders_and_jobs.sql is the same
-- in SQLite types; change both together.
--
-- An order is a `payments` row from the moment of checkout: `pending` with our `out_trade_no`, the
-- plan bought and when the checkout expires. The payment notification (or reconciliation) turns it
-- `paid` in the same transaction that creates or renews the user and enqueues provisioning.

ALTER TABLE payments ADD COLUMN out_trade_no text;
ALTER TABLE payments ADD COLUMN plan text CHECK (plan IN ('pro', 'lite', 'alpha'));
ALTER TABLE payments ADD COLUMN expires_at timestamptz;
ALTER TABLE payments ADD COLUMN refunded_at timestamptz;
-- SHA-256 hex of the onboarding link's token: the link is the payer's only credential.
ALTER TABLE payments ADD COLUMN onboarding_token_hash text
    CHECK (onboarding_token_hash ~ '^[0-9a-f]{64}$');
-- The processor's payment link of a pending order, shown again as a QR code on the payer's page.
ALTER TABLE payments ADD COLUMN code_url text;
CREATE UNIQUE INDEX payments_out_trade_no ON payments (out_trade_no);
CREATE UNIQUE INDEX payments_onboarding_token ON payments (onboarding_token_hash);
CREATE INDEX payments_pending ON payments (created_at) WHERE status = 'pending';

-- Work for the provisioner, one row per (payment, kind) so a repeated notification cannot enqueue
-- twice. `state` is the provisioning step reached; the provisioner owns its vocabulary.
CREATE TABLE provisioning_jobs (
    job_id                uuid PRIMARY KEY,
    user_id               uuid NOT NULL REFERENCES users (user_id),
    kind                  text NOT NULL CHECK (kind IN ('provision', 'deprovision')),
    payment_id            uuid REFERENCES payments (payment_id),
    state                 text NOT NULL,
    attempts              integer NOT NULL DEFAULT 0,
    last_error            text,
    next_attempt_at       timestamptz NOT NULL,
    locked_by             text,
    locked_until          timestamptz,
    onboarding_token_hash text UNIQUE CHECK (onboarding_token_hash ~ '^[0-9a-f]{64}$'),
    -- The onboarding page and the provisioner talk through these: the provisioner posts the
    -- pairing QR and its status, the page posts the verify code and the bot's name.
    pairing_qr            text,
    pairing_status        text,
    verify_code           text CHECK (verify_code ~ '^[0-9]{6}$'),
    bot_name              text,
    created_at            timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL,
    UNIQUE (payment_id, kind)
);
CREATE INDEX provisioning_jobs_user ON provisioning_jobs (user_id);
CREATE INDEX provisioning_jobs_due ON provisioning_jobs (next_attempt_at);

-- A deprovisioned profile (refund, expiry) keeps its row for the record.
ALTER TABLE hermes_profiles DROP CONSTRAINT hermes_profiles_status_check;
ALTER TABLE hermes_profiles ADD CONSTRAINT hermes_profiles_status_check
    CHECK (status IN ('provisioning', 'active', 'error', 'deprovisioned'));
CREATE UNIQUE INDEX hermes_profiles_user ON hermes_profiles (user_id);
