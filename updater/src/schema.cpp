// The updater's PostgreSQL schema (component "updater"). Forward-only migrations: a released
// migration is never edited; changes go into a new one (db/migrate.hpp checks the checksums).
#include "upkeep/updater/service.hpp"

namespace upkeep::updater {

const std::vector<db::Migration>& Migrations() {
  static const std::vector<db::Migration> kMigrations = {
      {1, "tokens, repository, releases, channels, fleet, rollouts, audit", R"sql(
-- Operator bearer tokens: only the SHA-256 of the token is kept.
CREATE TABLE operator_tokens (
  id BIGSERIAL PRIMARY KEY,
  name TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
  role TEXT NOT NULL CHECK (role IN ('admin', 'publisher', 'support')),
  token_sha256 TEXT NOT NULL UNIQUE CHECK (token_sha256 ~ '^[0-9a-f]{64}$'),
  created_at TIMESTAMPTZ NOT NULL,
  expires_at TIMESTAMPTZ NOT NULL,
  revoked_at TIMESTAMPTZ
);

-- Every TUF metadata version the updater served, as the exact signed bytes. The repository
-- directory is materialised from here, so a crash between commit and file write heals at start.
CREATE TABLE tuf_metadata (
  role TEXT NOT NULL CHECK (role IN ('root', 'targets', 'snapshot', 'timestamp')),
  version BIGINT NOT NULL CHECK (version > 0),
  body TEXT NOT NULL,
  expires_at TIMESTAMPTZ NOT NULL,
  created_at TIMESTAMPTZ NOT NULL,
  PRIMARY KEY (role, version)
);

-- Content-addressed encrypted package blobs (files under the blob directory).
CREATE TABLE blobs (
  sha256 TEXT PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
  sha512 TEXT NOT NULL CHECK (sha512 ~ '^[0-9a-f]{128}$'),
  length BIGINT NOT NULL CHECK (length >= 0),
  created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE releases (
  name TEXT NOT NULL,
  version TEXT NOT NULL,
  -- Numeric parts so SQL can order versions.
  version_major BIGINT NOT NULL,
  version_minor BIGINT NOT NULL,
  version_build BIGINT NOT NULL,
  kind TEXT NOT NULL CHECK (kind IN ('base', 'addon', 'software', 'client')),
  manifest TEXT NOT NULL,            -- manifest.json bytes exactly as signed
  manifest_signature TEXT NOT NULL,  -- manifest.sig bytes
  target_path TEXT NOT NULL UNIQUE,
  blob_sha256 TEXT NOT NULL REFERENCES blobs (sha256),
  blob_length BIGINT NOT NULL,
  sealed_content_key TEXT NOT NULL,  -- sealed to the keyserver's content key, never in plaintext here
  targets_version BIGINT NOT NULL,   -- the targets metadata version that added it
  published_at TIMESTAMPTZ NOT NULL,
  published_by TEXT NOT NULL,
  yanked_at TIMESTAMPTZ,
  yank_reason TEXT,
  yank_targets_version BIGINT,
  PRIMARY KEY (name, version)
);

CREATE TABLE channels (
  name TEXT PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9-]{0,31}$'),
  description TEXT NOT NULL DEFAULT '',
  created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
INSERT INTO channels (name, description) VALUES ('stable', 'the default channel');

CREATE TABLE channel_releases (
  channel TEXT NOT NULL REFERENCES channels (name),
  name TEXT NOT NULL,
  version TEXT NOT NULL,
  added_at TIMESTAMPTZ NOT NULL,
  PRIMARY KEY (channel, name, version),
  FOREIGN KEY (name, version) REFERENCES releases (name, version)
);

-- Bumped by every change that alters what an appliance may be offered (publish, yank, channel
-- membership, rollout state or wave); updater instances reload their catalog when it moves.
CREATE TABLE catalog_generation (
  id BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
  generation BIGINT NOT NULL
);
INSERT INTO catalog_generation (id, generation) VALUES (TRUE, 1);

-- The fleet as the updater sees it: identity data copied from the keyserver at first check-in,
-- state from each check-in.
CREATE TABLE appliances (
  appliance_id TEXT PRIMARY KEY CHECK (appliance_id ~ '^apl-[a-z2-7]{32}$'),
  public_key TEXT NOT NULL,          -- TUF ed25519 public key JSON as enrolled
  customer TEXT NOT NULL,
  channel TEXT NOT NULL DEFAULT 'stable' REFERENCES channels (name),
  groups TEXT[] NOT NULL DEFAULT '{}',
  status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
  enrolled_at TIMESTAMPTZ NOT NULL,
  maintenance_end TIMESTAMPTZ NOT NULL,
  revoked_at TIMESTAMPTZ,
  installed JSONB NOT NULL DEFAULT '{}',
  state_digest TEXT,
  agent_version TEXT,
  first_seen TIMESTAMPTZ NOT NULL,
  last_checkin TIMESTAMPTZ,
  clock_offset_seconds BIGINT
);
CREATE INDEX appliances_customer ON appliances (customer);
CREATE INDEX appliances_channel ON appliances (channel);

-- The last signed assignment per appliance, reused while state and plan are unchanged.
CREATE TABLE assignments (
  appliance_id TEXT PRIMARY KEY REFERENCES appliances (appliance_id),
  state_digest TEXT NOT NULL,
  plan_hash TEXT NOT NULL,
  envelope TEXT NOT NULL,
  issued_at TIMESTAMPTZ NOT NULL,
  expires_at TIMESTAMPTZ NOT NULL
);

-- Appliance reports. The appliance picks the id, so a retried report is a no-op.
CREATE TABLE events (
  appliance_id TEXT NOT NULL REFERENCES appliances (appliance_id),
  event_id TEXT NOT NULL CHECK (event_id ~ '^[0-9a-f]{32}$'),
  type TEXT NOT NULL CHECK (type IN ('download', 'install', 'success', 'failure', 'rollback')),
  name TEXT NOT NULL,
  version TEXT NOT NULL,
  at TIMESTAMPTZ NOT NULL,
  received_at TIMESTAMPTZ NOT NULL,
  detail JSONB NOT NULL DEFAULT '{}',
  log_tail TEXT,
  PRIMARY KEY (appliance_id, event_id)
);
CREATE INDEX events_by_appliance_time ON events (appliance_id, received_at DESC);
CREATE INDEX events_by_release ON events (name, version, type);

CREATE TABLE rollouts (
  id BIGSERIAL PRIMARY KEY,
  name TEXT NOT NULL,
  version TEXT NOT NULL,
  channel TEXT NOT NULL REFERENCES channels (name),
  state TEXT NOT NULL CHECK (state IN ('scheduled', 'active', 'paused', 'aborted', 'completed')),
  start_at TIMESTAMPTZ NOT NULL,
  success_threshold INTEGER NOT NULL CHECK (success_threshold BETWEEN 0 AND 100),
  error_threshold INTEGER NOT NULL CHECK (error_threshold BETWEEN 0 AND 100),
  min_wave_members INTEGER NOT NULL DEFAULT 1 CHECK (min_wave_members >= 0),
  current_wave INTEGER NOT NULL DEFAULT 0,
  pause_reason TEXT,
  created_by TEXT NOT NULL,
  created_at TIMESTAMPTZ NOT NULL,
  updated_at TIMESTAMPTZ NOT NULL,
  FOREIGN KEY (name, version) REFERENCES releases (name, version)
);
-- One live rollout per release and channel.
CREATE UNIQUE INDEX rollouts_one_live ON rollouts (name, version, channel) WHERE state <> 'aborted';

CREATE TABLE rollout_waves (
  rollout_id BIGINT NOT NULL REFERENCES rollouts (id),
  idx INTEGER NOT NULL CHECK (idx >= 0),
  percent INTEGER CHECK (percent BETWEEN 0 AND 100),
  groups TEXT[],
  opened_at TIMESTAMPTZ,
  PRIMARY KEY (rollout_id, idx),
  CHECK ((percent IS NULL) <> (groups IS NULL))
);

CREATE TABLE rollout_members (
  rollout_id BIGINT NOT NULL REFERENCES rollouts (id),
  appliance_id TEXT NOT NULL REFERENCES appliances (appliance_id),
  wave INTEGER NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('assigned', 'succeeded', 'failed')),
  updated_at TIMESTAMPTZ NOT NULL,
  PRIMARY KEY (rollout_id, appliance_id)
);

CREATE TABLE audit (
  id BIGSERIAL PRIMARY KEY,
  at TIMESTAMPTZ NOT NULL,
  actor TEXT NOT NULL,
  action TEXT NOT NULL,
  target TEXT NOT NULL,
  detail JSONB NOT NULL DEFAULT '{}'
);
CREATE FUNCTION updater_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'the audit table is append-only';
END;
$$;
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit
  FOR EACH ROW EXECUTE FUNCTION updater_audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
  FOR EACH STATEMENT EXECUTE FUNCTION updater_audit_append_only();
)sql"},
      {2, "appliances.allow_major: per-appliance opt-in to newer major lines", R"sql(
-- Package names this appliance may take into a newer MAJOR line (PlanOptions::allow_major);
-- empty: every package stays in its installed line. Set by operators (POST /api/v1/appliances/ID).
ALTER TABLE appliances ADD COLUMN allow_major TEXT[] NOT NULL DEFAULT '{}';
)sql"},
      {3, "download portal: seen download keys, bundles, downloaded packages", R"sql(
-- Download keys the portal used to build a bundle (docs/updater-api.md, "Download portal"). A key
-- issued before the newest one seen for its appliance is refused (download_key_replayed).
CREATE TABLE portal_keys (
  appliance_id TEXT NOT NULL REFERENCES appliances (appliance_id),
  nonce TEXT NOT NULL CHECK (nonce ~ '^[0-9a-f]{32}$'),
  issued_at TIMESTAMPTZ NOT NULL,
  first_seen TIMESTAMPTZ NOT NULL,
  PRIMARY KEY (appliance_id, nonce)
);
CREATE INDEX portal_keys_newest ON portal_keys (appliance_id, issued_at DESC);

-- Bundle files under BLOB_DIR/bundles/<token>.upkb; the link works until expires_at, then a
-- background job deletes the file and the row.
CREATE TABLE portal_bundles (
  bundle_id TEXT PRIMARY KEY CHECK (bundle_id ~ '^[0-9a-f]{32}$'),
  token TEXT NOT NULL UNIQUE CHECK (token ~ '^[0-9a-f]{32}$'),
  appliance_id TEXT NOT NULL REFERENCES appliances (appliance_id),
  file_name TEXT NOT NULL,
  bytes BIGINT NOT NULL,
  created_at TIMESTAMPTZ NOT NULL,
  expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX portal_bundles_expiry ON portal_bundles (expires_at);

-- Packages already put in a bundle for an appliance: not offered to it again until support
-- re-enables them (which deletes the row; the audit log keeps the history).
CREATE TABLE portal_downloads (
  appliance_id TEXT NOT NULL REFERENCES appliances (appliance_id),
  name TEXT NOT NULL,
  version TEXT NOT NULL,
  bundle_id TEXT NOT NULL,
  downloaded_at TIMESTAMPTZ NOT NULL,
  PRIMARY KEY (appliance_id, name, version)
);
)sql"},
      {4, "dashboard accounts (docs/dashboard.md)", R"sql(
-- Web accounts of the support dashboard (upkeep::web::AccountRepository). Only Argon2id hashes
-- are kept. `first` marks the account made by the first-start setup: the partial unique index
-- lets at most one row carry it, so two racing setups cannot both create a first admin.
CREATE TABLE dashboard_accounts (
  name TEXT PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
  role TEXT NOT NULL CHECK (role IN ('read-only', 'support', 'admin')),
  password_hash TEXT NOT NULL CHECK (password_hash LIKE '$argon2id$%'),
  created_at TIMESTAMPTZ NOT NULL,
  disabled BOOLEAN NOT NULL DEFAULT FALSE,
  first BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE UNIQUE INDEX dashboard_accounts_one_first ON dashboard_accounts (first) WHERE first;
)sql"},
      {5, "licence references, pins (docs/dashboard.md)", R"sql(
-- The licence an appliance enrolled with, learned from the keyserver's enrolment answer relayed
-- by POST /api/v1/enrol (before the appliance has a row here, hence no foreign key). The licence
-- key is a bearer credential: only its SHA-256 is kept, and support searches by a hex prefix.
CREATE TABLE appliance_licences (
  appliance_id TEXT PRIMARY KEY CHECK (appliance_id ~ '^apl-[a-z2-7]{32}$'),
  licence_sha256 TEXT NOT NULL CHECK (licence_sha256 ~ '^[0-9a-f]{64}$'),
  recorded_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX appliance_licences_prefix ON appliance_licences (licence_sha256 text_pattern_ops);

-- A pinned appliance is offered nothing (held at its installed versions) until unpinned.
ALTER TABLE appliances ADD COLUMN pinned_by TEXT, ADD COLUMN pinned_reason TEXT, ADD COLUMN pinned_at TIMESTAMPTZ,
  ADD CONSTRAINT appliances_pin_whole CHECK ((pinned_by IS NULL) = (pinned_reason IS NULL) AND
                                             (pinned_by IS NULL) = (pinned_at IS NULL));
)sql"},
  };
  return kMigrations;
}

}  // namespace upkeep::updater
