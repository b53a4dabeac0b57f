-- slatrack's PostgreSQL store, schema version 3 (kept in meta.schema_version).
-- Tables hold what SQLite's store holds, column for column (docs/stores.md); the views
-- at the end are the stable surface for SQL readers (Grafana, reporting jobs).
-- Times: *_ms columns are epoch milliseconds (UTC), *_us epoch microseconds.

CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

-- One row per (source, tenant, platform, bucket): a closed minute, a day of minutes
-- merged by one commit, or a folded hour. bucket_secs says which.
CREATE TABLE IF NOT EXISTS buckets (
    source            TEXT   NOT NULL,
    tenant            TEXT   NOT NULL,
    platform          TEXT   NOT NULL,
    direction         TEXT   NOT NULL,
    bucket_start_ms   BIGINT NOT NULL,
    bucket_secs       BIGINT NOT NULL,
    attempts          BIGINT NOT NULL,
    events            BIGINT NOT NULL,
    delivered         BIGINT NOT NULL,
    failed            BIGINT NOT NULL,
    dead_lettered     BIGINT NOT NULL,
    on_time           BIGINT NOT NULL,
    retried           BIGINT NOT NULL,
    max_retries       BIGINT NOT NULL,
    latency_sum_us    BIGINT NOT NULL,
    target_latency_ms BIGINT NOT NULL,
    latency_hist      BYTEA  NOT NULL,
    PRIMARY KEY (source, tenant, platform, bucket_start_ms)
);
CREATE INDEX IF NOT EXISTS buckets_by_tenant ON buckets (tenant, bucket_start_ms);
CREATE INDEX IF NOT EXISTS buckets_to_fold ON buckets (bucket_start_ms) WHERE bucket_secs < 3600;
CREATE INDEX IF NOT EXISTS buckets_folded ON buckets (bucket_start_ms) WHERE bucket_secs >= 3600;

CREATE TABLE IF NOT EXISTS rejects (
    source          TEXT   NOT NULL,
    tenant          TEXT   NOT NULL,
    platform        TEXT   NOT NULL,
    bucket_start_ms BIGINT NOT NULL,
    reason          TEXT   NOT NULL,
    count           BIGINT NOT NULL,
    PRIMARY KEY (source, tenant, platform, bucket_start_ms, reason)
);

CREATE TABLE IF NOT EXISTS checkpoints (
    source      TEXT PRIMARY KEY,
    version     BIGINT NOT NULL,
    next_offset BIGINT NOT NULL,
    state       BYTEA  NOT NULL,
    updated_ms  BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS dedup_keys (
    source          TEXT   NOT NULL,
    bucket_start_us BIGINT NOT NULL,
    keys            BYTEA  NOT NULL
);
CREATE INDEX IF NOT EXISTS dedup_keys_by_bucket ON dedup_keys (source, bucket_start_us);

CREATE TABLE IF NOT EXISTS closed_keys (
    source          TEXT   NOT NULL,
    bucket_start_us BIGINT NOT NULL,
    segment         BIGINT,
    keys            BYTEA  NOT NULL,
    last_start_us   BIGINT NOT NULL
);
-- Version 3: key sets in blocks of buckets (store::key_blocks); a per-bucket row of an
-- older database is a block of one bucket.
ALTER TABLE closed_keys ADD COLUMN IF NOT EXISTS last_start_us BIGINT;
UPDATE closed_keys SET last_start_us = bucket_start_us WHERE last_start_us IS NULL;
ALTER TABLE closed_keys ALTER COLUMN last_start_us SET NOT NULL;
CREATE INDEX IF NOT EXISTS closed_keys_by_bucket ON closed_keys (source, bucket_start_us);
CREATE INDEX IF NOT EXISTS closed_keys_by_start ON closed_keys (bucket_start_us);

CREATE TABLE IF NOT EXISTS replay_rejects (
    source      TEXT   NOT NULL,
    record_hash BIGINT NOT NULL,
    PRIMARY KEY (source, record_hash)
);

CREATE TABLE IF NOT EXISTS unread (
    source      TEXT   NOT NULL,
    from_offset BIGINT NOT NULL,
    to_offset   BIGINT NOT NULL,
    noticed_ms  BIGINT NOT NULL,
    PRIMARY KEY (source, from_offset)
);

-- Windows committed but not yet published to kafka.windows_topic (version 2), numbered
-- per source from window_queue_seq.last_seq.
CREATE TABLE IF NOT EXISTS window_queue (
    source  TEXT   NOT NULL,
    seq     BIGINT NOT NULL,
    summary BYTEA  NOT NULL,
    PRIMARY KEY (source, seq)
);
CREATE TABLE IF NOT EXISTS window_queue_seq (
    source   TEXT   PRIMARY KEY,
    last_seq BIGINT NOT NULL
);

-- Every bucket row with UTC timestamps, without the histogram.
CREATE OR REPLACE VIEW sla_buckets AS
SELECT source, tenant, platform, direction,
       to_timestamp(bucket_start_ms / 1000.0) AS bucket_start,
       to_timestamp((bucket_start_ms + bucket_secs * 1000) / 1000.0) AS bucket_end,
       attempts, events, delivered, failed, dead_lettered, on_time, retried, max_retries,
       latency_sum_us, target_latency_ms
FROM buckets;

-- Per tenant, platform and UTC day: the scorecard's counters and ratios (over events),
-- all sources added (each attempt is counted by exactly one source).
CREATE OR REPLACE VIEW sla_daily AS
SELECT tenant, platform, direction,
       (date_trunc('day', to_timestamp(bucket_start_ms / 1000.0) AT TIME ZONE 'UTC')
           AT TIME ZONE 'UTC') AS day,
       SUM(attempts)::BIGINT AS attempts,
       SUM(events)::BIGINT AS events,
       SUM(delivered)::BIGINT AS delivered,
       SUM(failed)::BIGINT AS failed,
       SUM(dead_lettered)::BIGINT AS dead_lettered,
       SUM(on_time)::BIGINT AS on_time,
       SUM(retried)::BIGINT AS retried,
       SUM(max_retries)::BIGINT AS max_retries,
       SUM(on_time)::FLOAT8 / NULLIF(SUM(events), 0) AS on_time_ratio,
       SUM(failed + dead_lettered)::FLOAT8 / NULLIF(SUM(events), 0) AS failed_ratio,
       SUM(retried)::FLOAT8 / NULLIF(SUM(events), 0) AS retry_ratio,
       SUM(dead_lettered)::FLOAT8 / NULLIF(SUM(events), 0) AS dlq_ratio,
       SUM(latency_sum_us)::FLOAT8 / NULLIF(SUM(attempts), 0) / 1000.0 AS avg_latency_ms
FROM buckets
GROUP BY tenant, platform, direction, 4;

-- Rejected records per tenant, platform, UTC day and reason.
CREATE OR REPLACE VIEW sla_rejects_daily AS
SELECT tenant, platform, reason,
       (date_trunc('day', to_timestamp(bucket_start_ms / 1000.0) AT TIME ZONE 'UTC')
           AT TIME ZONE 'UTC') AS day,
       SUM(count)::BIGINT AS records
FROM rejects
GROUP BY tenant, platform, reason, 4;
