-- Hosts that run users' gateways. The gateway census becomes the hosts table: each provisioner
-- records its host every minute with what it counted and how many gateways the host can hold
-- (`gateway_slots`), and a new user's provisioning is claimed by the live host with the most room.
-- A job carries the host working it, so the jobs of a user whose bot runs on a host are worked
-- there and nowhere else.
ALTER TABLE gateway_census RENAME TO hosts;
ALTER TABLE hosts ADD COLUMN gateway_slots integer NOT NULL DEFAULT 0 CHECK (gateway_slots >= 0);
ALTER TABLE provisioning_jobs ADD COLUMN host text;
CREATE INDEX provisioning_jobs_host ON provisioning_jobs (host) WHERE host IS NOT NULL;
CREATE INDEX hermes_profiles_host ON hermes_profiles (host);
