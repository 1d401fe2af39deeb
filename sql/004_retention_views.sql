-- Monitoring views of the retention policy. Safe to re-apply.

-- Rows per New York calendar month, in the hot table and in the archive side by side.
DROP VIEW IF EXISTS v_raw_ohlcv_data_distribution;
CREATE VIEW v_raw_ohlcv_data_distribution AS
WITH hot AS (
    SELECT date_trunc('month', "timestamp" AT TIME ZONE 'America/New_York')::date AS month,
           count(*) AS records, count(DISTINCT symbol) AS symbols
      FROM raw_ohlcv GROUP BY 1
), arc AS (
    SELECT date_trunc('month', "timestamp" AT TIME ZONE 'America/New_York')::date AS month,
           count(*) AS records, count(DISTINCT symbol) AS symbols
      FROM raw_ohlcv_archive GROUP BY 1
)
SELECT month,
       coalesce(hot.records, 0)                       AS hot_records,
       coalesce(arc.records, 0)                       AS archived_records,
       coalesce(hot.symbols, 0)                       AS hot_symbols,
       coalesce(arc.symbols, 0)                       AS archived_symbols,
       coalesce(hot.records, 0) + coalesce(arc.records, 0) AS total_records
  FROM hot FULL JOIN arc USING (month)
 ORDER BY month;

-- One row describing the archive: rows, symbols, the span of session dates, when it last grew, its size.
DROP VIEW IF EXISTS v_archive_statistics;
CREATE VIEW v_archive_statistics AS
SELECT count(*)                                                          AS total_records,
       (SELECT count(*) FROM (SELECT DISTINCT symbol FROM raw_ohlcv_archive) s) AS symbols,  -- hashed: fast
       (min("timestamp") AT TIME ZONE 'America/New_York')::date          AS oldest_date,
       (max("timestamp") AT TIME ZONE 'America/New_York')::date          AS newest_date,
       max(archived_at)                                                  AS last_archived_at,
       (SELECT coalesce(sum(pg_total_relation_size(relid)), 0)
          FROM pg_partition_tree('raw_ohlcv_archive'))                   AS total_bytes,
       (SELECT count(*) FROM pg_partition_tree('raw_ohlcv_archive') WHERE isleaf) AS partitions
  FROM raw_ohlcv_archive;

-- The last 20 runs, newest first; consistency compares the archived and deleted counts of each run.
DROP VIEW IF EXISTS v_retention_log_summary;
CREATE VIEW v_retention_log_summary AS
SELECT id                              AS run_id,
       started_at,
       as_of,
       cutoff_date,
       retention,
       method,
       status,
       records_archived,
       records_deleted,
       partitions_moved,
       CASE WHEN status IN ('skipped', 'failed', 'running', 'interrupted') THEN 'n/a'
            WHEN records_archived = records_deleted THEN 'consistent'
            ELSE 'MISMATCH' END        AS consistency,
       execution_time_seconds,
       error_message
  FROM data_retention_log
 ORDER BY id DESC
 LIMIT 20;
