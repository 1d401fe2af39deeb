-- Adoption of the previous pipeline's tables (condvest.retention.adopt runs these, named blocks, in one
-- transaction; this file is not one of the NNN_ schema files and is never applied as a whole).
--
-- The previous pipeline's raw_ohlcv and raw_ohlcv_archive: open/high/low/close DECIMAL(10,2), volume BIGINT,
-- "timestamp" TIMESTAMP without time zone holding UTC instants of New York midnight (so 04:00 or 05:00),
-- primary key (symbol, "timestamp", "interval"); the archive adds archived_at. Its data_retention_log:
-- execution_date, retention_threshold, records_archived, records_deleted, status, error_message,
-- execution_time_seconds. A bar's session is the New York date of its "timestamp" read as UTC.
--
-- {table}, {session} and {instant} are filled in by the caller (an Identifier, and the expressions below for a
-- naive "timestamp" (legacy_*) or a timestamptz one); values are bound.

-- name: legacy_session
(("timestamp" AT TIME ZONE 'UTC') AT TIME ZONE 'America/New_York')::date

-- name: session
("timestamp" AT TIME ZONE 'America/New_York')::date

-- name: legacy_instant
("timestamp" AT TIME ZONE 'UTC')

-- name: instant
"timestamp"

-- name: checksum
-- Row count and an order-independent checksum of (symbol, session, prices, volume): equal before and after.
SELECT count(*),
       coalesce(sum(('x' || substr(md5(concat_ws('|', symbol, {session},
                                                  round(open::numeric, 4), round(high::numeric, 4),
                                                  round(low::numeric, 4), round(close::numeric, 4),
                                                  round(volume::numeric, 3))), 1, 15))::bit(60)::bigint::numeric), 0)
  FROM {table}

-- name: duplicates
-- (symbol, session) holding more than one row: the new key cannot take them.
SELECT symbol, {session} AS session, count(*) AS rows
  FROM {table}
 GROUP BY 1, 2
HAVING count(*) > 1
 ORDER BY 1, 2
 LIMIT 20

-- name: bad_bars
-- Rows the workbench's bar check (and NOT NULL columns) would refuse.
SELECT symbol, {session} AS session
  FROM {table}
 WHERE NOT coalesce(low <= open AND open <= high AND low <= close AND close <= high AND volume >= 0, false)
 ORDER BY 1, 2
 LIMIT 20

-- name: restamped
-- Rows whose "timestamp" is not 00:00 New York of their session (they are stored at that time after adoption).
SELECT count(*) FROM {table}
 WHERE {instant} <> ({session})::timestamp AT TIME ZONE 'America/New_York'

-- name: overlaps
-- (symbol, session) present in both the hot table and the archive: a bar lives in one of them only.
SELECT h.symbol, h.session
  FROM (SELECT DISTINCT symbol, {session} AS session FROM raw_ohlcv) h
  JOIN (SELECT DISTINCT symbol, {session_archive} AS session FROM raw_ohlcv_archive) a USING (symbol, session)
 ORDER BY 1, 2
 LIMIT 20

-- name: span
SELECT min({session}), max({session}) FROM {table}

-- name: stash
-- A copy of the old rows, converted, for the length of the transaction (the old table is then dropped).
CREATE TEMP TABLE {stash} ON COMMIT DROP AS
SELECT symbol, {session} AS session,
       open::double precision AS open, high::double precision AS high, low::double precision AS low,
       close::double precision AS close, volume::double precision AS volume,
       coalesce("interval"::text, '1d') AS "interval"{extra}
  FROM {table}

-- name: drop_old_routines
-- The previous pipeline's archive procedure, whatever its signature (sql/003 creates the workbench's).
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT p.oid::regprocedure AS sig, p.prokind FROM pg_proc p
              WHERE p.proname = 'archive_old_ohlcv_data' AND p.pronamespace = current_schema()::regnamespace
    LOOP
        EXECUTE format('DROP %s %s', CASE WHEN r.prokind = 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END, r.sig);
    END LOOP;
END
$$

-- name: load_hot
INSERT INTO raw_ohlcv (symbol, "timestamp", open, high, low, close, volume, "interval")
SELECT symbol, session::timestamp AT TIME ZONE 'America/New_York', open, high, low, close, volume, "interval"
  FROM _adopt_hot

-- name: load_archive
INSERT INTO raw_ohlcv_archive (symbol, "timestamp", open, high, low, close, volume, "interval", archived_at)
SELECT symbol, session::timestamp AT TIME ZONE 'America/New_York', open, high, low, close, volume, "interval",
       coalesce(archived_at, now())
  FROM _adopt_archive

-- name: stash_log
CREATE TEMP TABLE _adopt_log ON COMMIT DROP AS
SELECT coalesce(execution_date::timestamp AT TIME ZONE 'UTC', now()) AS started_at,
       retention_threshold::timestamp AT TIME ZONE 'UTC' AS threshold,
       records_archived, records_deleted, status::text AS status, error_message::text AS error_message,
       execution_time_seconds::numeric AS seconds
  FROM data_retention_log

-- name: load_log
-- The old log's history, oldest first: the old runs' threshold gives the cutoff, their date the as-of date.
INSERT INTO data_retention_log (started_at, finished_at, retention, as_of, cutoff_date, archive_threshold, method,
                                records_archived, records_deleted, status, error_message, execution_time_seconds)
SELECT started_at,
       started_at + coalesce(seconds, 0) * interval '1 second',
       CASE WHEN cutoff < as_of THEN age(as_of, cutoff) ELSE interval '3 years 1 month' END,
       as_of,
       cutoff,
       coalesce(threshold, cutoff::timestamp AT TIME ZONE 'America/New_York'),
       'previous pipeline',
       coalesce(records_archived, 0),
       coalesce(records_deleted, 0),
       CASE WHEN lower(status) IN ('success', 'partial_success', 'failed', 'skipped') THEN lower(status)
            ELSE 'failed' END,
       CASE WHEN lower(status) IN ('success', 'partial_success', 'failed', 'skipped') THEN error_message
            ELSE concat_ws(': ', 'previous pipeline status ' || coalesce(status, 'NULL'), error_message) END,
       seconds
  FROM (SELECT l.*, (started_at AT TIME ZONE 'America/New_York')::date AS as_of,
               coalesce((threshold AT TIME ZONE 'America/New_York')::date,
                        ((started_at AT TIME ZONE 'America/New_York')::date
                         - interval '3 years 1 month')::date) AS cutoff
          FROM _adopt_log l) s
 ORDER BY started_at
