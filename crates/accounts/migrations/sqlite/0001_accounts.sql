-- Accounts schema (SQLite). migrations/postgres/0001_accounts.sql is the reference; change both
-- together. STRICT tables make SQLite enforce the column types. Encodings are sqlx's:
-- uuid = 16-byte BLOB, timestamp = RFC 3339 TEXT in UTC ("2026-04-30T11:00:00.123456+00:00"),
-- which sorts chronologically as text, so comparisons and max() on it are correct.

CREATE TABLE users (
    user_id       BLOB PRIMARY KEY CHECK (length(user_id) = 16),
    email         TEXT,
    weixin_openid TEXT,
    display_name  TEXT,
    plan          TEXT NOT NULL CHECK (plan IN ('pro', 'lite', 'alpha')),
    status        TEXT NOT NULL DEFAULT 'active'
                  CHECK (status IN ('active', 'suspended', 'refunded', 'cancelled')),
    created_at    TEXT NOT NULL,
    paid_until    TEXT
) STRICT;

-- Only the SHA-256 hex of a key is stored: a leaked table grants nothing.
CREATE TABLE api_keys (
    key_hash           TEXT PRIMARY KEY
                       CHECK (length(key_hash) = 64 AND key_hash NOT GLOB '*[^0-9a-f]*'),
    user_id            BLOB NOT NULL REFERENCES users (user_id),
    scope              TEXT NOT NULL DEFAULT 'data:read',
    rate_limit_per_min INTEGER NOT NULL DEFAULT 60 CHECK (rate_limit_per_min > 0),
    created_at         TEXT NOT NULL,
    last_used_at       TEXT,
    revoked_at         TEXT
) STRICT;
CREATE INDEX api_keys_user_id ON api_keys (user_id);

CREATE TABLE admin_tokens (
    token_hash   TEXT PRIMARY KEY
                 CHECK (length(token_hash) = 64 AND token_hash NOT GLOB '*[^0-9a-f]*'),
    label        TEXT NOT NULL,
    scope        TEXT NOT NULL DEFAULT 'admin',
    created_at   TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at   TEXT
) STRICT;

CREATE TABLE payments (
    payment_id    BLOB PRIMARY KEY CHECK (length(payment_id) = 16),
    user_id       BLOB REFERENCES users (user_id),
    amount_cents  INTEGER NOT NULL CHECK (amount_cents >= 0),
    currency      TEXT NOT NULL,
    processor     TEXT NOT NULL,
    processor_ref TEXT UNIQUE,
    status        TEXT NOT NULL CHECK (status IN ('pending', 'paid', 'refunded', 'closed')),
    created_at    TEXT NOT NULL,
    paid_at       TEXT
) STRICT;

CREATE TABLE hermes_profiles (
    profile_name  TEXT PRIMARY KEY,
    user_id       BLOB NOT NULL REFERENCES users (user_id),
    host          TEXT NOT NULL,
    weixin_bot_id TEXT,
    status        TEXT NOT NULL CHECK (status IN ('provisioning', 'active', 'error')),
    created_at    TEXT NOT NULL
) STRICT;

-- No foreign key on user_id: rows arrive in buffered batches on the request hot path, and a
-- per-row check against users would slow every flush for no benefit (keys are checked at auth time).
-- AUTOINCREMENT so ids are never reused, like Postgres' bigserial.
CREATE TABLE usage_log (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id           BLOB NOT NULL CHECK (length(user_id) = 16),
    endpoint          TEXT NOT NULL,
    occurred_at       TEXT NOT NULL,
    upstream_cost_pts INTEGER NOT NULL DEFAULT 0,
    status            INTEGER NOT NULL
) STRICT;
CREATE INDEX usage_log_user_time ON usage_log (user_id, occurred_at DESC);

-- One row, bumped in the same transaction as every revocation: processes that cache key lookups
-- poll this single row and drop their cache when the version moves.
CREATE TABLE auth_epoch (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
) STRICT;
INSERT INTO auth_epoch (id, version) VALUES (1, 0);
