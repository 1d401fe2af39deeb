"""01_fetch on a lake written by the previous fetcher: gap detection builds the manifest once from a listing,
the old files are neither re-fetched nor rewritten, and the old-shape history is merged as it is."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import logging

import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from condvest import calendar as cal
from condvest import manifest
from condvest.bronze import read_bronze_bytes
from condvest.fetch.run import FetchParams, run_fetch
from condvest.lake import bronze_daily_key
from condvest.offline import SyntheticMarket, serve_in_thread
from condvest.settings import HttpLimits, Secret
from condvest.storage import LocalStore

AS_OF = dt.date(2025, 10, 17)
KEY = "sentinel-key-prev"
FAST = HttpLimits(concurrency=8, read_timeout=1.0, max_retries=3, backoff_base=0.01, backoff_cap=0.05)


@pytest.fixture(scope="module")
def market():
    return SyntheticMarket(n_symbols=6, seed=5)


@pytest.fixture(scope="module")
def server(market):
    with serve_in_thread(market, api_key=KEY) as srv:
        yield srv


def _old_daily(row: pd.Series) -> bytes:
    """One bar as the previous fetcher wrote it: no date column, naive UTC timestamp (us), int volume."""
    stamp = pd.Timestamp(row["date"]).tz_localize("America/New_York").tz_convert("UTC").tz_localize(None)
    t = pa.table(
        {
            "symbol": [row["symbol"]],
            **{c: [float(row[c])] for c in ("open", "high", "low", "close")},
            "volume": pa.array([int(row["volume"])], pa.int64()),
            "timestamp": pa.array([stamp], pa.timestamp("us")),
            "interval": ["1d"],
        }
    )
    buf = io.BytesIO()
    pq.write_table(t, buf)
    return buf.getvalue()


def test_gap_detection_builds_the_manifest_once_and_leaves_old_files_alone(server, market, pg_settings, caplog):
    caplog.set_level(logging.INFO, logger="condvest.manifest")
    server.reset()
    cfg = pg_settings.with_(polygon_base_url=server.base_url, polygon_api_key=Secret(KEY), as_of=AS_OF, http=FAST)
    store = LocalStore(cfg.lake_uri)
    window = cal.last_n_sessions(AS_OF, 5)
    old_days = window[:3]
    bars = market.frame(old_days[0], old_days[-1])
    bars["date"] = pd.to_datetime(bars["date"]).dt.date
    for _, row in bars.iterrows():
        store.put(bronze_daily_key(row["symbol"], row["date"]), _old_daily(row))
    old_etags = {o.key: o.etag for o in store.list("bronze/raw_ohlcv/")}
    assert not manifest.has_manifest(store)

    report = asyncio.run(run_fetch(cfg, FetchParams(max_backfill_days=5), progress=False))
    assert report.status == "ok"
    assert "manifest=built_from_listing sessions=3" in caplog.text
    assert report.plan.sessions == tuple(window[3:])  # the old sessions are not fetched again
    entries = manifest.read_sessions(store, window[0], window[-1])
    assert {d for d, e in entries.items() if e.source == "listing" and e.scope == manifest.ALL} == set(old_days)
    assert {k: e for k, e in ((o.key, o.etag) for o in store.list("bronze/raw_ohlcv/")) if k in old_etags} == old_etags

    # the old file reads as the same bar 01_fetch would write
    row = bars.iloc[0]
    key = bronze_daily_key(row["symbol"], row["date"])
    t = read_bronze_bytes(key, store.get(key)).to_pylist()[0]
    assert (t["date"], t["close"], t["volume"]) == (row["date"], row["close"], float(row["volume"]))

    # the manifest is kept from now on: the next run reads it and lists nothing
    caplog.clear()
    again = asyncio.run(run_fetch(cfg, FetchParams(max_backfill_days=5), progress=False))
    assert again.plan.sessions == () and "built_from_listing" not in caplog.text


def test_a_database_not_yet_adopted_fails_the_session_and_says_to_adopt(server, pg_settings):
    server.reset()
    cfg = pg_settings.with_(polygon_base_url=server.base_url, polygon_api_key=Secret(KEY), as_of=AS_OF, http=FAST)
    with psycopg.connect(cfg.pg_dsn.reveal(), autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE raw_ohlcv (symbol VARCHAR(10) NOT NULL, open DECIMAL(10, 2), high DECIMAL(10, 2),"
            ' low DECIMAL(10, 2), close DECIMAL(10, 2), volume BIGINT, "timestamp" TIMESTAMP NOT NULL,'
            ' "interval" VARCHAR(10) NOT NULL DEFAULT \'1d\', PRIMARY KEY (symbol, "timestamp", "interval"))'
        )
    report = asyncio.run(run_fetch(cfg, FetchParams(date=AS_OF.isoformat()), progress=False))
    assert report.failed == {AS_OF.isoformat(): report.failed[AS_OF.isoformat()]}
    assert "previous pipeline's shape" in report.failed[AS_OF.isoformat()]
    assert "mode='adopt'" in report.failed[AS_OF.isoformat()]
