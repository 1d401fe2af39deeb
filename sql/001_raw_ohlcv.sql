-- raw_ohlcv: the 3-year hot cache of daily bars (the lake's bronze layer is the source of truth).
-- One row per (symbol, session): "timestamp" is the session date at 00:00 America/New_York (the way
-- Polygon stamps range bars), whatever stamp the source bar carried, so the key is (symbol, session date).
-- double precision keeps sub-dollar prices and fractional volumes exactly as the lake stores them.
-- Safe to re-apply.
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
);

CREATE INDEX IF NOT EXISTS raw_ohlcv_timestamp_idx ON raw_ohlcv ("timestamp");
