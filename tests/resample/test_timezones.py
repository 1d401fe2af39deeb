"""RELIABILITY.md row 19: fetch and resample, each in a subprocess whose host time zone is UTC, Asia/Tokyo or
America/Los_Angeles, over sessions across the end of US daylight saving time (2025-11-02), give identical bronze
and silver. Range bars are stamped 00:00 New York, grouped bars 16:00 New York: both kinds are fetched."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest

from condvest.bronze import merge_rows, read_bronze_bytes
from condvest.lake import BRONZE_PREFIX
from condvest.storage import LocalStore
from tests.fixtures.paths import ROOT
from tests.fixtures.resample import silver_frame

ZONES = ("UTC", "Asia/Tokyo", "America/Los_Angeles")

_RUN = """
import asyncio, datetime as dt, sys
from condvest.fetch import FetchParams, run_fetch
from condvest.resample import ResampleParams, run_resample
from condvest.settings import HttpLimits, Secret, Settings

lake, base_url, key = sys.argv[1:4]
s = Settings(lake_uri=lake, polygon_base_url=base_url, polygon_api_key=Secret(key), as_of=dt.date(2025, 11, 14),
             http=HttpLimits(concurrency=4, max_retries=1, backoff_base=0.01, backoff_cap=0.02))
common = dict(write_postgres=False, skip_market_check=True)
for p in (FetchParams(start="2025-10-27", end="2025-11-05", symbols="all", **common),  # range bars
          FetchParams(max_backfill_days=12, **common)):  # grouped bars for the sessions still missing
    asyncio.run(run_fetch(s, p, progress=False)).raise_for_status()
run_resample(s, ResampleParams(intervals="3,5")).raise_for_status()
"""


def _bronze(store: LocalStore) -> pd.DataFrame:
    parts = [
        (read_bronze_bytes(o.key, store.get(o.key)), "history" if o.key.endswith("data.parquet") else "daily")
        for o in store.list(f"{BRONZE_PREFIX}/")
    ]
    return merge_rows(parts).to_pandas().drop(columns=["ingested_at"])


@pytest.mark.slow
def test_fetch_and_resample_give_the_same_lake_in_every_host_time_zone(tmp_path, polygon_server):
    out = {}
    for zone in ZONES:
        lake = tmp_path / zone.replace("/", "_")
        r = subprocess.run(
            [sys.executable, "-c", _RUN, str(lake), polygon_server.base_url, polygon_server.api_key],
            env={**os.environ, "TZ": zone},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert r.returncode == 0, r.stderr[-3000:]
        store = LocalStore(lake)
        out[zone] = (_bronze(store), silver_frame(store, 3), silver_frame(store, 5))
    ref = out["UTC"]
    days = sorted(ref[0]["date"].unique())
    assert days[0].isoformat() <= "2025-10-31" and days[-1].isoformat() >= "2025-11-03"  # across the DST change
    assert len(days) == 15  # 2025-10-27 .. 2025-11-14
    for zone in ZONES[1:]:
        for want, got in zip(ref, out[zone], strict=True):
            pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True))
