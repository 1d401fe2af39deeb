"""Fetch's session batches as a read shortcut for the incremental resample: same bars, and a daily file
rewritten after its batch is read itself."""

from __future__ import annotations

import datetime as dt
import os

import pandas as pd

from condvest.bronze import write_daily_files
from condvest.calendar import sessions_between
from condvest.lake import BATCH_PREFIX, bronze_daily_key
from condvest.resample import CompactionParams, ResampleParams
from condvest.resample.run import run_resample
from condvest.settings import Settings
from condvest.storage import LocalStore
from tests.fixtures.resample import assert_silver_matches, bronze_table, write_history

NS = (3, 5)
DAYS = sessions_between(dt.date(2025, 9, 1), dt.date(2025, 10, 17))
SYMS = ["AAA", "BBB", "CCC"]


def _session(day: dt.date, seed: int) -> pd.DataFrame:
    return pd.concat([bronze_table(s, [day], seed + i).to_pandas() for i, s in enumerate(SYMS)], ignore_index=True)


def _lake(tmp_path):
    store = LocalStore(tmp_path / "lake")
    settings = Settings(lake_uri=str(tmp_path / "lake"), home=tmp_path / ".condvest")
    for i, s in enumerate(SYMS):
        write_history(store, s, DAYS[:-2], seed=i)
    run_resample(settings, ResampleParams(NS))
    return store, settings


def test_incremental_run_with_batches_equals_the_reference(tmp_path):
    store, settings = _lake(tmp_path)
    for k, day in enumerate(DAYS[-2:]):
        write_daily_files(store, _session(day, 10 + k), run_id=f"run{k}")
        assert [o.key for o in store.list(f"{BATCH_PREFIX}/date={day}/")]
        report = run_resample(settings, ResampleParams(NS))
        assert {r.mode for r in report.results} == {"incremental"}
        assert_silver_matches(store, NS)


def test_a_batch_is_used_only_while_the_file_keeps_its_etag(tmp_path):
    store, settings = _lake(tmp_path)
    day = DAYS[-2]
    write_daily_files(store, _session(day, 20), run_id="first")
    # a corrected re-fetch of one symbol rewrites its file (new etag): the batch row must not win
    corrected = bronze_table("BBB", [day], 99).to_pandas()
    write_daily_files(store, corrected)
    run_resample(settings, ResampleParams(NS))
    assert_silver_matches(store, NS)

    # and while the etag is unchanged the batch row is what is read: prove it with a file whose bytes
    # are damaged in place but whose etag (size, mtime, inode) is restored
    day2 = DAYS[-1]
    write_daily_files(store, _session(day2, 30), run_id="second")
    path = os.path.join(store.root, bronze_daily_key("CCC", day2))
    st = os.stat(path)
    with open(path, "r+b") as f:
        f.write(b"\0" * 8)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    report = run_resample(settings, ResampleParams(NS))  # would fail naming the file if it were opened
    assert {r.mode for r in report.results} == {"incremental"}


def test_compaction_removes_the_batches_of_folded_sessions(tmp_path):
    from condvest.resample.compaction import compact_bronze

    store, settings = _lake(tmp_path)
    for k, day in enumerate(DAYS[-2:]):
        write_daily_files(store, _session(day, 40 + k), run_id=f"r{k}")
    compact_bronze(settings, CompactionParams(keep_sessions=1, min_fold_sessions=1))
    left = [o.key for o in store.list(f"{BATCH_PREFIX}/")]
    assert left == [f"{BATCH_PREFIX}/date={DAYS[-1]}/r1.parquet"]
    run_resample(settings, ResampleParams(NS))
    assert_silver_matches(store, NS)
