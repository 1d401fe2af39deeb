-- The retention policy: retention_cutoff(), ensure_raw_ohlcv_partitions(), archive_old_ohlcv_data().
--
-- CALL archive_old_ohlcv_data();                                   -- 3 years 1 month before today (New York)
-- CALL archive_old_ohlcv_data('37 months', '2025-10-17', '5s');      -- explicit window, as-of date, lock_timeout
--
-- Call it outside an explicit transaction block (psql autocommit, pg_cron, a psycopg autocommit
-- connection): it commits its log row before it re-raises a failure, so that the failure stays logged.
-- Safe to re-apply.

-- The one cutoff rule (Python: condvest.settings.Retention.cutoff): the first session date kept is
-- as_of minus the window, months counted on the calendar and the day clipped to the month's end
-- (2024-03-31 - 37 months = 2021-02-28). Bars dated before it belong in the archive.
CREATE OR REPLACE FUNCTION retention_cutoff(p_retention interval, p_as_of date) RETURNS date
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT (p_as_of - p_retention)::date
$$;

-- Create the missing monthly partitions of raw_ohlcv for the months [p_from, p_to) (New York month
-- boundaries). Rows of such a month already in the DEFAULT partition (inserted before the partition
-- existed) are moved into the new partition in the same transaction, so they never leave raw_ohlcv.
-- A month that collides with a partition of another shape is skipped with a NOTICE (its rows stay
-- where they are and are archived row by row). Returns the number of partitions created.
-- No-op when raw_ohlcv is not partitioned.
CREATE OR REPLACE FUNCTION ensure_raw_ohlcv_partitions(p_from date, p_to date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_month   date;
    v_name    text;
    v_lo      timestamptz;
    v_hi      timestamptz;
    v_created integer := 0;
BEGIN
    IF (SELECT relkind FROM pg_class WHERE oid = 'raw_ohlcv'::regclass) <> 'p' THEN
        RETURN 0;
    END IF;
    v_month := date_trunc('month', p_from)::date;
    WHILE v_month < p_to LOOP
        v_name := 'raw_ohlcv_p' || to_char(v_month, 'YYYYMM');
        v_lo := v_month::timestamp AT TIME ZONE 'America/New_York';
        v_hi := (v_month + interval '1 month')::timestamp AT TIME ZONE 'America/New_York';
        IF to_regclass(v_name) IS NULL THEN
            BEGIN
                IF to_regclass('raw_ohlcv_default') IS NOT NULL
                   AND EXISTS (SELECT 1 FROM raw_ohlcv_default WHERE "timestamp" >= v_lo AND "timestamp" < v_hi)
                THEN
                    EXECUTE format('CREATE TABLE %I (LIKE raw_ohlcv INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                                   v_name);
                    EXECUTE format('WITH m AS (DELETE FROM raw_ohlcv_default WHERE "timestamp" >= $1'
                                   || ' AND "timestamp" < $2 RETURNING *) INSERT INTO %I SELECT * FROM m', v_name)
                      USING v_lo, v_hi;
                    EXECUTE format('ALTER TABLE raw_ohlcv ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                                   v_name, v_lo, v_hi);
                ELSE
                    EXECUTE format('CREATE TABLE %I PARTITION OF raw_ohlcv FOR VALUES FROM (%L) TO (%L)',
                                   v_name, v_lo, v_hi);
                END IF;
                v_created := v_created + 1;
            EXCEPTION WHEN invalid_object_definition OR duplicate_table THEN
                RAISE NOTICE 'partition=% skipped reason=%', v_name, SQLERRM;
            END;
        END IF;
        v_month := (v_month + interval '1 month')::date;
    END LOOP;
    RETURN v_created;
END
$$;

-- Bounds of a range partition, read from the catalog (NULL for a DEFAULT partition).
CREATE OR REPLACE FUNCTION _retention_partition_bounds(p_part regclass, OUT lo timestamptz, OUT hi timestamptz)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_expr text := pg_get_expr((SELECT relpartbound FROM pg_class WHERE oid = p_part), p_part);
    v_m    text[];
BEGIN
    v_m := regexp_match(v_expr, 'FROM \(''([^'']+)''\) TO \(''([^'']+)''\)');
    IF v_m IS NOT NULL THEN
        lo := v_m[1]::timestamptz;
        hi := v_m[2]::timestamptz;
    END IF;
END
$$;

-- Move every bar dated before the cutoff from raw_ohlcv to raw_ohlcv_archive, in one transaction:
--   * one cutoff per run: retention_cutoff(p_retention, p_as_of), p_as_of defaulting to today in New York;
--   * an advisory lock: a second run while one is going logs 'skipped' and returns;
--   * lock_timeout (p_lock_timeout) bounds every lock wait, so ingestion is never held up for long;
--   * whole months move by DETACH/ATTACH when both tables are month-partitioned (p_method 'auto'), the
--     rest by one statement, WITH moved AS (DELETE ... RETURNING) INSERT ..., so a bar inserted
--     concurrently is either moved or left in raw_ohlcv, never copied without being deleted;
--   * archived = deleted is checked before commit, else the work is rolled back;
--   * the log row is written ('running') and committed before anything else, then completed after the work's
--     subtransaction, whatever its outcome, and committed before a failure is re-raised: a failed run is logged
--     and still fails; a run the server's crash (or a killed session) stopped stays 'running', and the next
--     run, once it holds the lock (so no other run is going), marks it 'interrupted'.
-- p_method: 'auto' (partitions where possible, then rows) or 'rows' (row by row only).
-- p_run_id returns the data_retention_log id of the run.
CREATE OR REPLACE PROCEDURE archive_old_ohlcv_data(
    p_retention    interval DEFAULT '3 years 1 month',
    p_as_of        date     DEFAULT NULL,
    p_lock_timeout text     DEFAULT '5s',
    p_method       text     DEFAULT 'auto',
    INOUT p_run_id bigint   DEFAULT NULL
)
LANGUAGE plpgsql AS $$
DECLARE
    c_lock_key  constant bigint := 727361208454;  -- condvest archive_old_ohlcv_data
    v_started   timestamptz := clock_timestamp();
    v_as_of     date := coalesce(p_as_of, (now() AT TIME ZONE 'America/New_York')::date);
    v_cutoff    date;
    v_threshold timestamptz;
    v_status    text := 'success';
    v_archived  bigint := 0;
    v_deleted   bigint := 0;
    v_parts     integer := 0;
    v_n_arch    bigint;
    v_n_del     bigint;
    v_state     text;
    v_message   text;
    v_part      record;
    v_name      text;
    v_arch_lo   timestamptz[];
    v_arch_hi   timestamptz[];
BEGIN
    IF p_retention IS NULL OR v_as_of - p_retention >= v_as_of::timestamp THEN
        RAISE EXCEPTION 'archive_old_ohlcv_data: retention must be a positive interval, got %', p_retention
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_method NOT IN ('auto', 'rows') THEN
        RAISE EXCEPTION 'archive_old_ohlcv_data: method must be auto or rows, got %', p_method
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_cutoff := retention_cutoff(p_retention, v_as_of);
    v_threshold := v_cutoff::timestamp AT TIME ZONE 'America/New_York';

    INSERT INTO data_retention_log (started_at, retention, as_of, cutoff_date, archive_threshold, method, status)
    VALUES (v_started, p_retention, v_as_of, v_cutoff, v_threshold, p_method, 'running')
    RETURNING id INTO p_run_id;
    COMMIT;  -- the run is logged before it does anything: a server crash from here on leaves it 'running'

    IF NOT pg_try_advisory_xact_lock(c_lock_key) THEN
        UPDATE data_retention_log
           SET finished_at = clock_timestamp(), status = 'skipped',
               error_message = 'another archive_old_ohlcv_data run holds the lock',
               execution_time_seconds = extract(epoch FROM clock_timestamp() - v_started)
         WHERE id = p_run_id;
        RAISE NOTICE 'archive status=skipped reason=locked run_id=%', p_run_id;
        RETURN;
    END IF;
    -- no other run is going (this one holds the lock): an earlier run still 'running' never logged its end
    UPDATE data_retention_log
       SET status = 'interrupted', finished_at = clock_timestamp(),
           error_message = format('stopped before it logged its end (the server stopped or its session was killed);'
                                  ' found by run %s; nothing it did was committed', p_run_id)
     WHERE status = 'running' AND id < p_run_id;

    BEGIN
        PERFORM set_config('lock_timeout', p_lock_timeout, true);

        -- 1. whole months, when both tables are partitioned by month
        IF p_method = 'auto'
           AND (SELECT relkind FROM pg_class WHERE oid = 'raw_ohlcv'::regclass) = 'p'
           AND (SELECT relkind FROM pg_class WHERE oid = 'raw_ohlcv_archive'::regclass) = 'p' THEN
            -- DETACH/ATTACH need ACCESS EXCLUSIVE: taken only when a whole month is due, bounded by lock_timeout
            IF EXISTS (SELECT 1 FROM pg_inherits i
                        CROSS JOIN LATERAL _retention_partition_bounds(i.inhrelid::regclass) b
                        WHERE i.inhparent = 'raw_ohlcv'::regclass AND b.hi <= v_threshold) THEN
                LOCK TABLE raw_ohlcv, raw_ohlcv_archive IN ACCESS EXCLUSIVE MODE;
            END IF;
            SELECT coalesce(array_agg(b.lo), '{}'), coalesce(array_agg(b.hi), '{}') INTO v_arch_lo, v_arch_hi
              FROM pg_inherits i CROSS JOIN LATERAL _retention_partition_bounds(i.inhrelid::regclass) b
             WHERE i.inhparent = 'raw_ohlcv_archive'::regclass AND b.hi IS NOT NULL;
            FOR v_part IN
                SELECT i.inhrelid::regclass AS part, c.relname, b.lo, b.hi
                  FROM pg_inherits i
                  JOIN pg_class c ON c.oid = i.inhrelid
                 CROSS JOIN LATERAL _retention_partition_bounds(i.inhrelid::regclass) b
                 WHERE i.inhparent = 'raw_ohlcv'::regclass AND b.hi IS NOT NULL AND b.hi <= v_threshold
                 ORDER BY b.lo
            LOOP
                -- a month already present in the archive as a partition: leave it to the row move
                CONTINUE WHEN EXISTS (SELECT 1 FROM unnest(v_arch_lo, v_arch_hi) AS ab(lo, hi)
                                       WHERE ab.lo < v_part.hi AND ab.hi > v_part.lo);
                EXECUTE format('SELECT count(*) FROM %s', v_part.part) INTO v_n_del;
                EXECUTE format('ALTER TABLE raw_ohlcv DETACH PARTITION %s', v_part.part);
                EXECUTE format('ALTER TABLE %s ADD COLUMN archived_at timestamptz NOT NULL DEFAULT now()',
                               v_part.part);
                -- rows of this month archived earlier row by row sit in the archive's default partition
                IF to_regclass('raw_ohlcv_archive_default') IS NOT NULL THEN
                    EXECUTE format(
                        'WITH m AS (DELETE FROM raw_ohlcv_archive_default WHERE "timestamp" >= $1'
                        || ' AND "timestamp" < $2 RETURNING *)'
                        || ' INSERT INTO %s (symbol, "timestamp", open, high, low, close, volume, "interval",'
                        || ' vwap, transactions, archived_at) SELECT symbol, "timestamp", open, high, low, close,'
                        || ' volume, "interval", vwap, transactions, archived_at FROM m', v_part.part)
                    USING v_part.lo, v_part.hi;
                END IF;
                v_name := 'raw_ohlcv_archive_' || substr(v_part.relname, length('raw_ohlcv_') + 1);
                IF v_part.relname LIKE 'raw_ohlcv_p%' AND to_regclass(v_name) IS NULL THEN
                    EXECUTE format('ALTER TABLE %s RENAME TO %I', v_part.part, v_name);
                END IF;
                EXECUTE format('ALTER TABLE raw_ohlcv_archive ATTACH PARTITION %s FOR VALUES FROM (%L) TO (%L)',
                               v_part.part, v_part.lo, v_part.hi);
                v_deleted := v_deleted + v_n_del;
                v_archived := v_archived + v_n_del;
                v_parts := v_parts + 1;
            END LOOP;
        END IF;

        -- 2. the remaining rows (the cutoff's own month, the default partition, an unpartitioned table):
        --    one statement, so that a row is deleted exactly when it is archived
        WITH moved AS (
            DELETE FROM raw_ohlcv WHERE "timestamp" < v_threshold
            RETURNING symbol, "timestamp", open, high, low, close, volume, "interval", vwap, transactions
        ), archived AS (
            INSERT INTO raw_ohlcv_archive (symbol, "timestamp", open, high, low, close, volume, "interval",
                                           vwap, transactions, archived_at)
            SELECT symbol, "timestamp", open, high, low, close, volume, "interval", vwap, transactions, now()
              FROM moved
            ON CONFLICT (symbol, "timestamp") DO UPDATE
               SET open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close,
                   volume = EXCLUDED.volume, "interval" = EXCLUDED."interval", vwap = EXCLUDED.vwap,
                   transactions = EXCLUDED.transactions, archived_at = EXCLUDED.archived_at
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM archived), (SELECT count(*) FROM moved) INTO v_n_arch, v_n_del;
        v_archived := v_archived + v_n_arch;
        v_deleted := v_deleted + v_n_del;

        IF v_archived <> v_deleted THEN
            RAISE EXCEPTION 'archived % rows but deleted %: rolled back', v_archived, v_deleted
                USING ERRCODE = 'data_exception';
        END IF;

        -- 3. keep monthly partitions ready for the coming months (a failure here keeps the move)
        BEGIN
            PERFORM ensure_raw_ohlcv_partitions(v_cutoff, (v_as_of + interval '4 months')::date);
        EXCEPTION WHEN OTHERS THEN
            v_status := 'partial_success';
            v_message := 'partition maintenance failed: ' || SQLERRM;
            v_state := NULL;
        END;
    EXCEPTION WHEN OTHERS OR query_canceled THEN  -- query_canceled: statement_timeout, a cancel request
        GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT;
        v_status := 'failed';
        v_archived := 0;
        v_deleted := 0;
        v_parts := 0;
    END;

    UPDATE data_retention_log
       SET finished_at = clock_timestamp(), records_archived = v_archived, records_deleted = v_deleted,
           partitions_moved = v_parts, status = v_status, error_message = v_message, error_sqlstate = v_state,
           execution_time_seconds = extract(epoch FROM clock_timestamp() - v_started)
     WHERE id = p_run_id;

    IF v_status = 'failed' THEN
        COMMIT;  -- keep the log row: the work above was already rolled back to its savepoint
        RAISE EXCEPTION 'archive_old_ohlcv_data failed (run_id %): %', p_run_id, v_message
            USING ERRCODE = v_state;
    END IF;
    RAISE NOTICE 'archive status=% archived=% deleted=% partitions=% cutoff=% run_id=%',
        v_status, v_archived, v_deleted, v_parts, v_cutoff, p_run_id;
END
$$;
