-- Retention tables: raw_ohlcv_archive (raw_ohlcv's columns + archived_at) and data_retention_log
-- (one row per archive run, written as it starts), and the guard that keeps a bar out of both tables at once.
-- Plain PostgreSQL first. Where TimescaleDB is installed in this database (and the archive does not
-- exist yet), the archive becomes a compressed hypertable instead of a month-partitioned table.
-- Safe to re-apply.

DO $$
DECLARE
    v_timescale   boolean := EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb');
    -- partitioned like raw_ohlcv (so that whole months can be attached here) unless TimescaleDB is there
    v_partitioned boolean := NOT v_timescale
                             AND (SELECT relkind FROM pg_class WHERE oid = 'raw_ohlcv'::regclass) = 'p';
BEGIN
    IF to_regclass('raw_ohlcv_archive') IS NOT NULL THEN
        RETURN;
    END IF;
    -- one column list for every variant; only the trailing PARTITION BY differs (a constant, no input)
    EXECUTE 'CREATE TABLE raw_ohlcv_archive (
            symbol       text             NOT NULL,
            "timestamp"  timestamptz      NOT NULL,
            open         double precision NOT NULL,
            high         double precision NOT NULL,
            low          double precision NOT NULL,
            close        double precision NOT NULL,
            volume       double precision NOT NULL,
            "interval"   text             NOT NULL DEFAULT ''1d'',
            vwap         double precision,
            transactions bigint,
            archived_at  timestamptz      NOT NULL DEFAULT now(),
            CONSTRAINT raw_ohlcv_archive_pkey PRIMARY KEY (symbol, "timestamp"),
            CONSTRAINT raw_ohlcv_bar_check CHECK (low <= open AND open <= high AND low <= close
                                                  AND close <= high AND volume >= 0)
        )' || CASE WHEN v_partitioned THEN ' PARTITION BY RANGE ("timestamp")' ELSE '' END;
    IF v_partitioned THEN
        CREATE TABLE raw_ohlcv_archive_default PARTITION OF raw_ohlcv_archive DEFAULT;
    ELSIF v_timescale THEN
        -- dynamic SQL: these functions exist only with the extension
        EXECUTE 'SELECT create_hypertable(''raw_ohlcv_archive'', ''timestamp'','
                || ' chunk_time_interval => interval ''1 year'', if_not_exists => true)';
        EXECUTE 'ALTER TABLE raw_ohlcv_archive SET (timescaledb.compress,'
                || ' timescaledb.compress_segmentby = ''symbol'', timescaledb.compress_orderby = ''"timestamp"'')';
        EXECUTE 'SELECT add_compression_policy(''raw_ohlcv_archive'', interval ''30 days'', if_not_exists => true)';
    END IF;
END
$$;

CREATE INDEX IF NOT EXISTS raw_ohlcv_archive_timestamp_idx ON raw_ohlcv_archive ("timestamp");

CREATE TABLE IF NOT EXISTS data_retention_log (
    id                     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at             timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at            timestamptz,
    retention              interval    NOT NULL,
    as_of                  date        NOT NULL,
    -- the first session date kept: bars dated before it were (or would be) archived
    cutoff_date            date        NOT NULL,
    archive_threshold      timestamptz NOT NULL,
    method                 text        NOT NULL DEFAULT 'auto',
    records_archived       bigint      NOT NULL DEFAULT 0,
    records_deleted        bigint      NOT NULL DEFAULT 0,
    partitions_moved       integer     NOT NULL DEFAULT 0,
    -- running: logged at the start and committed before any work; a run that never logged its end (the server
    -- stopped, its session was killed) is marked interrupted by the next run
    status                 text        NOT NULL
        CHECK (status IN ('success', 'partial_success', 'failed', 'skipped', 'running', 'interrupted')),
    error_message          text,
    error_sqlstate         text,
    execution_time_seconds numeric(12, 3)
);

CREATE INDEX IF NOT EXISTS data_retention_log_started_idx ON data_retention_log (started_at DESC);

-- a log of an earlier deployment: the statuses a run in progress and an interrupted run write
ALTER TABLE data_retention_log DROP CONSTRAINT IF EXISTS data_retention_log_status_check;
ALTER TABLE data_retention_log ADD CONSTRAINT data_retention_log_status_check
    CHECK (status IN ('success', 'partial_success', 'failed', 'skipped', 'running', 'interrupted'));

-- A bar lives in raw_ohlcv xor raw_ohlcv_archive. When a backfill writes a bar into raw_ohlcv whose key
-- is already archived, the archived copy is removed in the same statement (the newest write wins; the
-- next archive run moves the bar back). Statement-level with transition tables: one cheap check per
-- statement, never a per-row lookup; only rows not newer than the archive's newest bar are looked up.
-- SECURITY DEFINER so that the fetcher's role needs no DELETE privilege on the archive.
CREATE OR REPLACE FUNCTION raw_ohlcv_unarchive_overwritten() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    v_newest timestamptz;
BEGIN
    SELECT max("timestamp") INTO v_newest FROM raw_ohlcv_archive;
    IF v_newest IS NULL OR NOT EXISTS (SELECT 1 FROM written WHERE "timestamp" <= v_newest) THEN
        RETURN NULL;
    END IF;
    DELETE FROM raw_ohlcv_archive a
     USING (SELECT DISTINCT symbol, "timestamp" FROM written WHERE "timestamp" <= v_newest) w
     WHERE a.symbol = w.symbol AND a."timestamp" = w."timestamp";
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS raw_ohlcv_unarchive_on_insert ON raw_ohlcv;
CREATE TRIGGER raw_ohlcv_unarchive_on_insert AFTER INSERT ON raw_ohlcv
    REFERENCING NEW TABLE AS written FOR EACH STATEMENT EXECUTE FUNCTION raw_ohlcv_unarchive_overwritten();
DROP TRIGGER IF EXISTS raw_ohlcv_unarchive_on_update ON raw_ohlcv;
CREATE TRIGGER raw_ohlcv_unarchive_on_update AFTER UPDATE ON raw_ohlcv
    REFERENCING NEW TABLE AS written FOR EACH STATEMENT EXECUTE FUNCTION raw_ohlcv_unarchive_overwritten();
