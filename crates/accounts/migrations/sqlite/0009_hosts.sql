-- Hosts that run users' gateways (SQLite). migrations/postgres/0009_hosts.sql is the reference;
-- change both together.
ALTER TABLE gateway_census RENAME TO hosts;
ALTER TABLE hosts ADD COLUMN gateway_slots INTEGER NOT NULL DEFAULT 0 CHECK (gateway_slots >= 0);
ALTER TABLE provisioning_jobs ADD COLUMN host TEXT;
CREATE INDEX provisioning_jobs_host ON provisioning_jobs (host) WHERE host IS NOT NULL;
CREATE INDEX hermes_profiles_host ON hermes_profiles (host);
