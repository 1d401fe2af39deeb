"""A lake written by the previous pipeline: its bronze read as it is, its silver and checkpoints replaced.

The old fetcher's bronze files have no ``date`` column, a naive ``timestamp`` (the UTC instant of New York
midnight; microseconds in daily files, nanoseconds in ``data.parquet``) and an integer volume. The same
bars written by 01_fetch must give the same silver; the old checkpoint makes the first run rebuild in full.
"""

from __future__ import annotations

import datetime as dt
import io
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from condvest.bars import BRONZE_SCHEMA
from condvest.bronze import read_bronze_bytes
from condvest.calendar import sessions_between
from condvest.lake import bronze_daily_key, bronze_history_key, checkpoint_key
from condvest.resample import CompactionParams, ResampleParams, compact_bronze
from condvest.resample.run import run_resample
from condvest.settings import Settings
from condvest.storage import LocalStore
from tests.fixtures.resample import assert_silver_matches, silver_frame

DAYS = sessions_between(dt.date(2024, 2, 1), dt.date(2024, 4, 30))  # across the DST change of March 10
HISTORY, DAILY = DAYS[:-5], DAYS[-5:]
OLD_SILVER = "silver/silver_3d/year=2023/month=01/data_3d_202301.parquet"


def _bars(symbol: str, days: list[dt.date], seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = np.round(20 + rng.random(len(days)) * 5, 2)
    return pd.DataFrame(
        {
            "symbol": symbol,
            "day": days,
            "open": close - 0.1,
            "high": close + 0.5,
            "low": close - 0.5,
            "close": close,
            "volume": rng.integers(0, 10**7, len(days)),
        }
    )


def _old_file(df: pd.DataFrame, unit: str) -> bytes:
    """As the old fetcher wrote it: naive UTC of New York midnight, int64 volume, no date column."""
    stamps = pd.DatetimeIndex(pd.to_datetime(df["day"])).tz_localize("America/New_York").tz_convert("UTC")
    t = pa.table(
        {
            "symbol": df["symbol"].tolist(),
            "open": df["open"],
            "high": df["high"],
            "low": df["low"],
            "close": df["close"],
            "volume": pa.array(df["volume"], pa.int64()),
            "timestamp": pa.array(stamps.tz_localize(None), pa.timestamp(unit)),
            "interval": ["1d"] * len(df),
        }
    )
    buf = io.BytesIO()
    pq.write_table(t, buf)
    return buf.getvalue()


def _new_file(df: pd.DataFrame) -> bytes:
    """The same bars as 01_fetch writes them."""
    stamps = pd.DatetimeIndex(pd.to_datetime(df["day"])).tz_localize("America/New_York").tz_convert("UTC")
    frame = pd.DataFrame(
        {
            "symbol": df["symbol"],
            "date": df["day"],
            "timestamp": stamps,
            **{c: df[c].astype(float) for c in ("open", "high", "low", "close", "volume")},
            "vwap": None,
            "transactions": None,
            "interval": "1d",
            "ingested_at": None,
        }
    )
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, schema=BRONZE_SCHEMA, preserve_index=False), buf)
    return buf.getvalue()


def _write_lake(store: LocalStore, encode) -> None:
    for seed, symbol in enumerate(("AAA", "BBB")):
        bars = _bars(symbol, DAYS, seed)
        store.put(bronze_history_key(symbol), encode(bars[bars["day"].isin(HISTORY)], "ns"))
        for _, row in bars[bars["day"].isin(DAILY)].iterrows():
            store.put(bronze_daily_key(symbol, row["day"]), encode(row.to_frame().T.astype(bars.dtypes), "us"))


def test_old_fetcher_lake_gives_the_same_silver_as_the_workbench_lake(tmp_path):
    old, new = LocalStore(tmp_path / "old"), LocalStore(tmp_path / "new")
    _write_lake(old, _old_file)
    _write_lake(new, lambda df, unit: _new_file(df))
    # the previous pipeline's silver file (no date column) and checkpoint
    old_silver = pa.table({"ts": pa.array([dt.datetime(2023, 1, 3, 5)], pa.timestamp("ns")), "symbol": ["AAA"]})
    buf = io.BytesIO()
    pq.write_table(old_silver, buf)
    old.put(OLD_SILVER, buf.getvalue())
    legacy_cp = {
        "last_processed_date": "2023-01-31",
        "last_run_timestamp": "2023-02-01T03:00:00",
        "interval": "3d",
        "total_records_processed": 1805,
        "status": "completed",
    }
    old.put(checkpoint_key(3), json.dumps(legacy_cp).encode())
    bronze_before = {o.key: o.etag for o in old.list("bronze/")}

    # the reader: the session is the New York date of the naive UTC timestamp, volume as float
    t = read_bronze_bytes(bronze_history_key("AAA"), old.get(bronze_history_key("AAA")))
    assert t.column("date").to_pylist() == HISTORY and t.schema == BRONZE_SCHEMA

    r_old = run_resample(Settings(lake_uri=str(tmp_path / "old")), ResampleParams("3,5"), store=old)
    run_resample(Settings(lake_uri=str(tmp_path / "new")), ResampleParams("3,5"), store=new)
    assert r_old.message.startswith("the previous pipeline's checkpoint found for 3d: rebuilt in full")
    assert r_old.message.count("\n") == 0 and {x.mode for x in r_old.results} == {"full"}
    for n in (3, 5):
        pd.testing.assert_frame_equal(silver_frame(old, n), silver_frame(new, n))
    assert_silver_matches(new, (3, 5))  # and both equal a recompute over all bronze
    assert OLD_SILVER not in {o.key for o in old.list("silver/")}  # no mix of old and new month files
    assert {o.key: o.etag for o in old.list("bronze/")} == bronze_before  # read as it is, never rewritten
    assert json.loads(old.get(checkpoint_key(3)))["status"] == "complete"

    # silver keeps the old files' ts column: the first session's 00:00 New York, naive UTC
    month = next(o.key for o in new.list("silver/silver_3d/year=2024/month=03/"))
    silver = pq.read_table(io.BytesIO(new.get(month))).to_pandas()
    want = pd.to_datetime(silver["date"]).dt.tz_localize("America/New_York").dt.tz_convert("UTC").dt.tz_localize(None)
    assert (silver["ts"] == want).all() and silver["ts"].dt.hour.isin([4, 5]).all()

    # compaction folds the old daily files into the history (now in the workbench's shape); silver unchanged
    report = compact_bronze(Settings(lake_uri=str(tmp_path / "old")), CompactionParams(1, 1), store=old)
    assert report.files_folded == 2 * (len(DAILY) - 1)
    run_resample(Settings(lake_uri=str(tmp_path / "old")), ResampleParams("3,5"), store=old)
    for n in (3, 5):
        pd.testing.assert_frame_equal(silver_frame(old, n), silver_frame(new, n))
