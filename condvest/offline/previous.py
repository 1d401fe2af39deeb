"""A deployment of the previous pipeline, for the demo: its Postgres tables and rows, its bronze and silver.

    seed_previous_deployment(conn, store, market, start, end, lake_days=3) -> dict of counts

Postgres gets the previous pipeline's DDL (DECIMAL(10,2) prices, BIGINT volume, a naive "timestamp" holding
the UTC instant of New York midnight, key (symbol, "timestamp", "interval"); raw_ohlcv_archive; its
data_retention_log; data_ingestion_watermark, symbol_metadata, batch_jobs) with the market's bars of
[start, end]; the lake gets the old fetcher's daily files for the last ``lake_days`` sessions (no ``date``
column, naive timestamps, integer volume) and an old checkpoint of silver_3d. 04_retention ``mode="adopt"``
and the daily pipeline then take it over. Nothing is written when raw_ohlcv already exists.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from condvest.lake import bronze_daily_key, checkpoint_key
from condvest.offline.market import SyntheticMarket
from condvest.storage import Store

log = logging.getLogger(__name__)

PREVIOUS_DDL = """
CREATE TABLE raw_ohlcv (
    symbol VARCHAR(10) NOT NULL, open DECIMAL(10, 2), high DECIMAL(10, 2), low DECIMAL(10, 2),
    close DECIMAL(10, 2), volume BIGINT, "timestamp" TIMESTAMP NOT NULL, "interval" VARCHAR(10) NOT NULL DEFAULT '1d',
    PRIMARY KEY (symbol, "timestamp", "interval"));
CREATE TABLE raw_ohlcv_archive (
    symbol VARCHAR(10) NOT NULL, open DECIMAL(10, 2), high DECIMAL(10, 2), low DECIMAL(10, 2),
    close DECIMAL(10, 2), volume BIGINT, "timestamp" TIMESTAMP NOT NULL, "interval" VARCHAR(10) NOT NULL DEFAULT '1d',
    archived_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP, PRIMARY KEY (symbol, "timestamp", "interval"));
CREATE TABLE data_retention_log (
    id SERIAL PRIMARY KEY, execution_date TIMESTAMP DEFAULT CURRENT_TIMESTAMP, retention_threshold TIMESTAMP,
    records_archived INTEGER DEFAULT 0, records_deleted INTEGER DEFAULT 0, status VARCHAR(20), error_message TEXT,
    execution_time_seconds DECIMAL(10, 2));
CREATE TABLE data_ingestion_watermark (symbol VARCHAR(10) PRIMARY KEY, latest_date DATE, updated_at TIMESTAMP);
CREATE TABLE symbol_metadata (symbol VARCHAR(10) PRIMARY KEY, name TEXT, exchange VARCHAR(20));
CREATE TABLE batch_jobs (job_id SERIAL PRIMARY KEY, job_name TEXT, status VARCHAR(20), created_at TIMESTAMP);
INSERT INTO data_retention_log (execution_date, retention_threshold, status, error_message, execution_time_seconds)
VALUES (now() - interval '7 days', now() - interval '7 days' - interval '3 years 1 month', 'failed',
        'invalid RAISE level', 0.1);
"""


def _old_frame(bars: pd.DataFrame) -> pd.DataFrame:
    stamps = pd.DatetimeIndex(pd.to_datetime(bars["date"])).tz_localize("America/New_York").tz_convert("UTC")
    return pd.DataFrame(
        {
            "symbol": bars["symbol"].astype(str).to_numpy(),
            **{c: bars[c].round(2).to_numpy() for c in ("open", "high", "low", "close")},
            "volume": bars["volume"].round().astype("int64").to_numpy(),
            "timestamp": stamps.tz_localize(None),
            "interval": "1d",
        }
    )


def seed_previous_deployment(
    conn: Any, store: Store, market: SyntheticMarket, start: dt.date, end: dt.date, lake_days: int = 3
) -> dict[str, int]:
    """Write the previous pipeline's deployment (see the module docstring); ``{}`` when one is already there."""
    if conn.execute("SELECT to_regclass('raw_ohlcv')").fetchone()[0] is not None:
        return {}
    old = _old_frame(market.frame(start, end))
    with conn.transaction():
        conn.execute(PREVIOUS_DDL)
        cols = ("symbol", "open", "high", "low", "close", "volume", "timestamp")
        with conn.cursor().copy(
            'COPY raw_ohlcv (symbol, open, high, low, close, volume, "timestamp") FROM STDIN'
        ) as cp:
            for rec in old[list(cols)].itertuples(index=False):
                cp.write_row([rec[0], *map(str, rec[1:5]), int(rec[5]), rec[6].to_pydatetime()])
    sessions = sorted(old["timestamp"].unique())[-lake_days:]
    files = 0
    for (symbol, stamp), group in old[old["timestamp"].isin(sessions)].groupby(["symbol", "timestamp"]):
        t = pa.table(
            {
                "symbol": group["symbol"].tolist(),
                **{c: pa.array(group[c], pa.float64()) for c in ("open", "high", "low", "close")},
                "volume": pa.array(group["volume"], pa.int64()),
                "timestamp": pa.array(group["timestamp"], pa.timestamp("us")),
                "interval": group["interval"].tolist(),
            }
        )
        day = pd.Timestamp(stamp).tz_localize("UTC").tz_convert("America/New_York").date()
        buf = io.BytesIO()
        pq.write_table(t, buf)
        store.put(bronze_daily_key(str(symbol), day), buf.getvalue())
        files += 1
    checkpoint = {
        "interval": "3d",
        "last_processed_date": end.isoformat(),
        "last_run_timestamp": f"{end.isoformat()}T23:00:00",
        "total_records_processed": len(old),
        "status": "completed",
    }
    store.put(checkpoint_key(3), json.dumps(checkpoint).encode())
    log.info("previous_deployment rows=%d bronze_files=%d", len(old), files)
    return {"raw_ohlcv rows": len(old), "bronze files": files}
