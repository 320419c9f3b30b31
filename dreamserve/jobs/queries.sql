-- Every SQL statement the store runs, by name (loaded by dreamserve/jobs/queries.py).
--
-- Parameters are :named. A block named `name@dialect` (e.g. `claim_next@postgresql`) replaces
-- `name` on that dialect, so dialect-specific SQL stays in this one file, next to the portable
-- version. Today only SQLite is implemented; the blocks marked [sqlite] are the ones PostgreSQL
-- will override (FOR UPDATE SKIP LOCKED instead of BEGIN IMMEDIATE, a SEQUENCE for change_seq).

-- name: schema
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);

CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO counters (name, value) VALUES ('change_seq', 0) ON CONFLICT (name) DO NOTHING;

CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

CREATE TABLE IF NOT EXISTS predictions (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,                 -- change sequence: bumped by every visible change
    dialect TEXT NOT NULL,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    input TEXT NOT NULL,                  -- JSON
    request TEXT NOT NULL,                -- JSON
    owner TEXT,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,                      -- first claim
    attempt_started_at REAL,              -- latest claim: predict_time counts from here
    completed_at REAL,
    output TEXT NOT NULL DEFAULT '[]',    -- JSON list of blob keys
    logs TEXT NOT NULL DEFAULT '',
    error TEXT,
    progress_step INTEGER,
    progress_total INTEGER,
    metrics TEXT NOT NULL DEFAULT '{}',   -- JSON
    webhook TEXT,
    webhook_events_filter TEXT NOT NULL,  -- JSON list
    webhook_throttled_at REAL,            -- when the last output/logs webhook was (or is) due
    cancel_after REAL,
    deadline REAL,                        -- created_at + cancel_after
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    worker_id TEXT,
    lease_expires_at REAL
);
CREATE INDEX IF NOT EXISTS predictions_queue
    ON predictions (created_at, id) WHERE status = 'starting';
CREATE INDEX IF NOT EXISTS predictions_leases
    ON predictions (lease_expires_at) WHERE status = 'processing';
CREATE INDEX IF NOT EXISTS predictions_newest ON predictions (created_at, id);
CREATE INDEX IF NOT EXISTS predictions_owner ON predictions (owner, created_at, id);
CREATE INDEX IF NOT EXISTS predictions_seq ON predictions (seq);

CREATE TABLE IF NOT EXISTS webhook_outbox (
    n INTEGER PRIMARY KEY,                -- send order
    id TEXT NOT NULL UNIQUE,              -- the webhook-id header: the same on every retry
    prediction_id TEXT NOT NULL,
    event TEXT NOT NULL,
    url TEXT NOT NULL,
    snapshot TEXT NOT NULL,               -- JSON of the prediction at the event
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    next_attempt_at REAL NOT NULL,
    first_attempt_at REAL,
    claimed_until REAL,                   -- a dispatcher is sending it until then
    gave_up INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS webhook_outbox_due
    ON webhook_outbox (next_attempt_at) WHERE gave_up = 0;
CREATE INDEX IF NOT EXISTS webhook_outbox_prediction ON webhook_outbox (prediction_id);

CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY,
    owner TEXT,
    name TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    blob_key TEXT NOT NULL,
    metadata TEXT NOT NULL,               -- JSON
    created_at REAL NOT NULL,
    expires_at REAL
);
CREATE INDEX IF NOT EXISTS files_newest ON files (owner, created_at);

CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    revoked_at REAL
);

-- name: schema_version
SELECT version FROM schema_version LIMIT 1;

-- name: set_schema_version
INSERT INTO schema_version (version) VALUES (:version);

-- name: next_seq
-- [sqlite] writers are serialized, so commit order is seq order; PostgreSQL needs care here.
UPDATE counters SET value = value + 1 WHERE name = 'change_seq' RETURNING value;

-- name: last_seq
SELECT value FROM counters WHERE name = 'change_seq';

-- name: changes
SELECT id, seq FROM predictions WHERE seq > :after ORDER BY seq LIMIT :limit;

-- name: insert_prediction
INSERT INTO predictions (
    id, seq, dialect, model, version, input, request, owner, status, created_at,
    webhook, webhook_events_filter, cancel_after, deadline
) VALUES (
    :id, :seq, :dialect, :model, :version, :input, :request, :owner, 'starting', :created_at,
    :webhook, :webhook_events_filter, :cancel_after, :deadline
) RETURNING *;

-- name: get_prediction
SELECT * FROM predictions WHERE id = :id;

-- name: list_older
-- One query per case (all owners / one owner) so each walks its own index.
SELECT * FROM predictions
WHERE (created_at, id) < (:created_at, :id)
ORDER BY created_at DESC, id DESC LIMIT :limit;

-- name: list_newer
SELECT * FROM predictions
WHERE (created_at, id) > (:created_at, :id)
ORDER BY created_at ASC, id ASC LIMIT :limit;

-- name: list_older_of_owner
SELECT * FROM predictions
WHERE owner = :owner AND (created_at, id) < (:created_at, :id)
ORDER BY created_at DESC, id DESC LIMIT :limit;

-- name: list_newer_of_owner
SELECT * FROM predictions
WHERE owner = :owner AND (created_at, id) > (:created_at, :id)
ORDER BY created_at ASC, id ASC LIMIT :limit;

-- name: any_claimable
SELECT 1 FROM predictions
WHERE status = 'starting' AND (deadline IS NULL OR deadline > :now) LIMIT 1;

-- name: claim_next
-- [sqlite] run inside BEGIN IMMEDIATE; PostgreSQL: SELECT ... FOR UPDATE SKIP LOCKED.
UPDATE predictions SET
    status = 'processing', seq = :seq, worker_id = :worker_id, lease_expires_at = :lease,
    attempts = attempts + 1, started_at = COALESCE(started_at, :now), attempt_started_at = :now,
    progress_step = NULL, progress_total = NULL
WHERE id = (
    SELECT id FROM predictions
    WHERE status = 'starting' AND (deadline IS NULL OR deadline > :now)
    ORDER BY created_at, id LIMIT 1
)
RETURNING *;

-- name: heartbeat
UPDATE predictions SET lease_expires_at = :lease
WHERE id = :id AND worker_id = :worker_id AND status = 'processing';

-- name: record_progress
UPDATE predictions SET
    seq = :seq, progress_step = :step, progress_total = :total, logs = logs || :log
WHERE id = :id AND worker_id = :worker_id AND status = 'processing'
RETURNING cancel_requested, deadline, webhook, webhook_events_filter;

-- name: stop_state
-- Only the few columns the worker's between-steps check needs: input can be megabytes.
SELECT status, worker_id, cancel_requested, deadline FROM predictions WHERE id = :id;

-- name: finish_prediction
UPDATE predictions SET
    seq = :seq, status = :status, output = :output, error = :error, metrics = :metrics,
    logs = logs || :log, completed_at = :now, worker_id = NULL, lease_expires_at = NULL
WHERE id = :id
RETURNING *;

-- name: flag_cancel
UPDATE predictions SET seq = :seq, cancel_requested = 1 WHERE id = :id RETURNING *;

-- name: requeue
UPDATE predictions SET
    seq = :seq, status = 'starting', worker_id = NULL, lease_expires_at = NULL,
    progress_step = NULL, progress_total = NULL, attempts = attempts - :refund
WHERE id = :id
RETURNING *;

-- name: expired_leases
SELECT * FROM predictions WHERE status = 'processing' AND lease_expires_at < :now;

-- name: all_leases
SELECT * FROM predictions WHERE status = 'processing';

-- name: overdue_unclaimed
SELECT * FROM predictions WHERE status = 'starting' AND deadline <= :now;

-- name: overdue_claimed
SELECT * FROM predictions
WHERE status = 'processing' AND deadline <= :now AND cancel_requested = 0;

-- name: queue_depth
SELECT COUNT(*) AS n FROM predictions WHERE status = 'starting';

-- name: set_throttled_at
UPDATE predictions SET webhook_throttled_at = :at WHERE id = :id;

-- name: insert_delivery
INSERT INTO webhook_outbox (id, prediction_id, event, url, snapshot, created_at, next_attempt_at)
VALUES (:id, :prediction_id, :event, :url, :snapshot, :now, :due);

-- name: refresh_deferred
-- A throttled event still waiting for its slot gets the newer snapshot instead of a second row.
UPDATE webhook_outbox SET snapshot = :snapshot
WHERE prediction_id = :prediction_id AND event = :event AND attempts = 0 AND gave_up = 0
    AND claimed_until IS NULL AND next_attempt_at > :now;

-- name: flush_deferred
-- At the end, waiting output/logs events carry the final state and go out before `completed`.
UPDATE webhook_outbox SET snapshot = :snapshot, next_attempt_at = :now
WHERE prediction_id = :prediction_id AND attempts = 0 AND gave_up = 0
    AND claimed_until IS NULL AND next_attempt_at > :now;

-- name: any_due
SELECT 1 FROM webhook_outbox
WHERE gave_up = 0 AND next_attempt_at <= :now AND (claimed_until IS NULL OR claimed_until < :now)
LIMIT 1;

-- name: claim_due
-- [sqlite] inside BEGIN IMMEDIATE; the claim keeps two dispatchers from sending the same row.
UPDATE webhook_outbox SET claimed_until = :until
WHERE n IN (
    SELECT n FROM webhook_outbox
    WHERE gave_up = 0 AND next_attempt_at <= :now
        AND (claimed_until IS NULL OR claimed_until < :now)
    ORDER BY next_attempt_at, n LIMIT :limit
)
RETURNING *;

-- name: release_deliveries
UPDATE webhook_outbox SET claimed_until = NULL WHERE claimed_until IS NOT NULL;

-- name: delivery_done
DELETE FROM webhook_outbox WHERE id = :id;

-- name: delivery_retry
UPDATE webhook_outbox SET
    attempts = attempts + 1, first_attempt_at = COALESCE(first_attempt_at, :now),
    next_attempt_at = :next, claimed_until = NULL
WHERE id = :id;

-- name: delivery_give_up
UPDATE webhook_outbox SET
    attempts = attempts + 1, first_attempt_at = COALESCE(first_attempt_at, :now),
    gave_up = 1, claimed_until = NULL
WHERE id = :id;

-- name: deliveries_for
SELECT * FROM webhook_outbox WHERE prediction_id = :prediction_id ORDER BY n;

-- name: get_meta
SELECT value FROM meta WHERE key = :key;

-- name: put_meta_if_absent
INSERT INTO meta (key, value) VALUES (:key, :value) ON CONFLICT (key) DO NOTHING;

-- name: insert_file
INSERT INTO files (
    id, owner, name, content_type, size, sha256, blob_key, metadata, created_at, expires_at
) VALUES (
    :id, :owner, :name, :content_type, :size, :sha256, :blob_key, :metadata, :created_at,
    :expires_at
);

-- name: get_file
SELECT * FROM files WHERE id = :id;

-- name: list_files
SELECT * FROM files WHERE (:owner IS NULL OR owner = :owner)
ORDER BY created_at DESC, id DESC LIMIT :limit;

-- name: delete_file
DELETE FROM files WHERE id = :id;

-- name: insert_key
INSERT INTO api_keys (id, name, token_hash, created_at) VALUES (:id, :name, :token_hash, :now)
RETURNING *;

-- name: key_for_hash
SELECT * FROM api_keys WHERE token_hash = :token_hash AND revoked_at IS NULL;

-- name: list_keys
SELECT * FROM api_keys ORDER BY created_at, id;

-- name: revoke_key
UPDATE api_keys SET revoked_at = COALESCE(revoked_at, :now) WHERE id = :id RETURNING *;

-- name: has_keys
SELECT 1 FROM api_keys WHERE revoked_at IS NULL LIMIT 1;
