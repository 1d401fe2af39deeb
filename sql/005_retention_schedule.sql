-- Optional weekly archive job (Sunday 02:00 UTC, the seed's cron(0 2 ? * SUN *)) where pg_cron is
-- installed in this database; elsewhere the runner's schedule runs 04_retention. Never fails without
-- pg_cron. Safe to re-apply (pg_cron >= 1.3 replaces a job of the same name).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
        -- dynamic SQL: the cron schema exists only with the extension
        EXECUTE 'SELECT cron.schedule($1, $2, $3)'
          USING 'condvest_weekly_archive', '0 2 * * 0', 'CALL archive_old_ohlcv_data()';
        RAISE NOTICE 'pg_cron job condvest_weekly_archive scheduled (Sunday 02:00 UTC)';
    END IF;
END
$$;
