-- Accounts schema (PostgreSQL). migrations/sqlite/0001_accounts.sql is the same schema in SQLite types;
-- change both together. Timestamps are always bound from Rust, so no column defaults to now().

CREATE TABLE users (
    user_id       uuid PRIMARY KEY,
    email         text,
    weixin_openid text,
    display_name  text,
    plan          text NOT NULL CHECK (plan IN ('pro', 'lite', 'alpha')),
    status        text NOT NULL DEFAULT 'active'
                  CHECK (status IN ('active', 'suspended', 'refunded', 'cancelled')),
    created_at    timestamptz NOT NULL,
    paid_until    timestamptz
);

-- Only the SHA-256 hex of a key is stored: a leaked table grants nothing.
CREATE TABLE api_keys (
    key_hash           text PRIMARY KEY CHECK (key_hash ~ '^[0-9a-f]{64}$'),
    user_id            uuid NOT NULL REFERENCES users (user_id),
    scope              text NOT NULL DEFAULT 'data:read',
    rate_limit_per_min integer NOT NULL DEFAULT 60 CHECK (rate_limit_per_min > 0),
    created_at         timestamptz NOT NULL,
    last_used_at       timestamptz,
    revoked_at         timestamptz
);
CREATE INDEX api_keys_user_id ON api_keys (user_id);

CREATE TABLE admin_tokens (
    token_hash   text PRIMARY KEY CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    label        text NOT NULL,
    scope        text NOT NULL DEFAULT 'admin',
    created_at   timestamptz NOT NULL,
    last_used_at timestamptz,
    revoked_at   timestamptz
);

CREATE TABLE payments (
    payment_id    uuid PRIMARY KEY,
    user_id       uuid REFERENCES users (user_id),
    amount_cents  bigint NOT NULL CHECK (amount_cents >= 0),
    currency      text NOT NULL,
    processor     text NOT NULL,
    processor_ref text UNIQUE,
    status        text NOT NULL CHECK (status IN ('pending', 'paid', 'refunded', 'closed')),
    created_at    timestamptz NOT NULL,
    paid_at       timestamptz
);

CREATE TABLE hermes_profiles (
    profile_name  text PRIMARY KEY,
    user_id       uuid NOT NULL REFERENCES users (user_id),
    host          text NOT NULL,
    weixin_bot_id text,
    status        text NOT NULL CHECK (status IN ('provisioning', 'active', 'error')),
    created_at    timestamptz NOT NULL
);

-- No foreign key on user_id: rows arrive in buffered batches on the request hot path, and a
-- per-row check against users would slow every flush for no benefit (keys are checked at auth time).
CREATE TABLE usage_log (
    id                bigserial PRIMARY KEY,
    user_id           uuid NOT NULL,
    endpoint          text NOT NULL,
    occurred_at       timestamptz NOT NULL,
    upstream_cost_pts integer NOT NULL DEFAULT 0,
    status            smallint NOT NULL
);
CREATE INDEX usage_log_user_time ON usage_log (user_id, occurred_at DESC);

-- One row, bumped in the same transaction as every revocation: processes that cache key lookups
-- poll this single row and drop their cache when the version moves.
CREATE TABLE auth_epoch (
    id      integer PRIMARY KEY CHECK (id = 1),
    version bigint NOT NULL
);
INSERT INTO auth_epoch (id, version) VALUES (1, 0);
