-- raw_ohlcv: the 3-year hot cache of daily bars (the lake's bronze layer is the source of truth).
-- One row per (symbol, session): "timestamp" is the session date at 00:00 America/New_York (the way
-- Polygon stamps range bars), whatever stamp the source bar carried, so the key is (symbol, session date).
-- double precision keeps sub-dollar prices and fractional volumes exactly as the lake stores them.
--
-- On a fresh database the table is range-partitioned by month (New York month boundaries) so that the
-- retention procedure can move whole months to raw_ohlcv_archive by DETACH/ATTACH; a DEFAULT partition
-- catches any row whose month has no partition yet, so an insert never fails for want of a partition.
-- Monthly partitions are created by ensure_raw_ohlcv_partitions() (sql/003). A raw_ohlcv that already
-- exists unpartitioned (an older deployment) is left as it is: everything keeps working, rows are then
-- archived row by row. The contract either way: PK (symbol, "timestamp"), upserts
-- ON CONFLICT (symbol, "timestamp") DO UPDATE. Safe to re-apply.
CREATE TABLE IF NOT EXISTS raw_ohlcv (
    symbol       text             NOT NULL,
    "timestamp"  timestamptz      NOT NULL,
    open         double precision NOT NULL,
    high         double precision NOT NULL,
    low          double precision NOT NULL,
    close        double precision NOT NULL,
    volume       double precision NOT NULL,
    "interval"   text             NOT NULL DEFAULT '1d',
    vwap         double precision,
    transactions bigint,
    CONSTRAINT raw_ohlcv_pkey PRIMARY KEY (symbol, "timestamp"),
    CONSTRAINT raw_ohlcv_bar_check CHECK (low <= open AND open <= high AND low <= close AND close <= high
                                          AND volume >= 0)
) PARTITION BY RANGE ("timestamp");

DO $$
BEGIN
    IF (SELECT relkind FROM pg_class WHERE oid = 'raw_ohlcv'::regclass) = 'p' THEN
        CREATE TABLE IF NOT EXISTS raw_ohlcv_default PARTITION OF raw_ohlcv DEFAULT;
    END IF;
END
$$;

CREATE INDEX IF NOT EXISTS raw_ohlcv_timestamp_idx ON raw_ohlcv ("timestamp");
