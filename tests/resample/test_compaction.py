"""Compaction of bronze daily files into data.parquet: what readers see never changes, and re-runs are no-ops."""

from __future__ import annotations

import datetime as dt
import io
import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from condvest.bronze import write_daily_files
from condvest.calendar import sessions_between
from condvest.errors import BusyError, ParameterError
from condvest.lake import bronze_daily_key, bronze_history_key
from condvest.lake_lock import lake_lock
from condvest.resample import CompactionParams, ResampleParams
from condvest.resample.compaction import compact_bronze
from condvest.resample.run import run_resample
from condvest.settings import Settings
from condvest.storage import LocalStore
from tests.fixtures.resample import assert_silver_matches, bronze_table, reference_rows, write_daily, write_history

DAYS = sessions_between(dt.date(2024, 3, 1), dt.date(2024, 5, 31))


@pytest.fixture
def lake(tmp_path):
    store = LocalStore(tmp_path / "lake")
    return store, Settings(lake_uri=str(tmp_path / "lake"))


def _daily(store):
    return sorted(o.key for o in store.list("bronze/raw_ohlcv/") if "/date=" in o.key)


def test_folds_old_daily_files_and_readers_see_the_same_bars(lake):
    store, settings = lake
    write_history(store, "AAA", DAYS[:20], 1)
    for i, d in enumerate(DAYS[20:32]):
        write_daily(store, "AAA", d, 10 + i)
        write_daily(store, "BBB", d, 50 + i)  # BBB has no history object yet
    write_daily(store, "AAA", DAYS[5], 99, ingested=dt.datetime(2025, 6, 1, tzinfo=dt.UTC))  # a correction
    before = reference_rows(store)
    report = compact_bronze(settings, CompactionParams(keep_sessions=4, min_fold_sessions=2), store=store)
    assert report.cutoff == DAYS[28].isoformat() and report.symbols == 2
    assert report.files_folded == 2 * 8 + 1
    assert _daily(store) == sorted(bronze_daily_key(s, d) for s in ("AAA", "BBB") for d in DAYS[28:32])
    assert reference_rows(store).equals(before)
    hist = pq.read_table(io.BytesIO(store.get(bronze_history_key("AAA"))))
    assert hist.column("date").to_pylist() == DAYS[:28]  # one row per date, in order
    again = compact_bronze(settings, CompactionParams(keep_sessions=4, min_fold_sessions=2), store=store)
    assert again.files_folded == 0 and "nothing to compact" in again.message
    assert reference_rows(store).equals(before)


def test_waits_until_enough_sessions_are_due(lake):
    store, settings = lake
    for d in DAYS[:5]:
        write_daily(store, "AAA", d, 1)
    assert compact_bronze(settings, CompactionParams(3, 3), store=store).files_folded == 0
    assert compact_bronze(settings, CompactionParams(3, 2), store=store).files_folded == 2
    assert compact_bronze(settings, CompactionParams(0, 1), store=store).files_folded == 3
    assert _daily(store) == []


def test_rows_without_ingested_at_prefer_the_daily_file(lake):
    store, settings = lake
    write_history(store, "AAA", DAYS[:5], 1, ingested=None)
    write_daily(store, "AAA", DAYS[2], 2, ingested=None)
    want = reference_rows(store)
    compact_bronze(settings, CompactionParams(0, 1), store=store)
    assert reference_rows(store).equals(want)


def test_resample_after_compaction_reads_nothing_again(lake):
    store, settings = lake
    write_history(store, "AAA", DAYS[:30], 1)
    for i, d in enumerate(DAYS[30:40]):
        write_daily(store, "AAA", d, 10 + i)
    run_resample(settings, ResampleParams("3,5"), store=store)
    compact_bronze(settings, CompactionParams(keep_sessions=2, min_fold_sessions=1), store=store)
    journals = [o.key for o in store.list("bronze/_compaction/")]
    assert len(journals) == 1 and "AAA" in json.loads(store.get(journals[0]))["symbols"]
    report = run_resample(settings, ResampleParams("3,5"), store=store)
    assert {r.mode for r in report.results} == {"unchanged"} and report.results[0].rows_read == 0
    assert_silver_matches(store, (3, 5))
    write_daily(store, "AAA", DAYS[40], 77)
    report = run_resample(settings, ResampleParams("3,5"), store=store)
    assert report.results[0].mode == "incremental" and report.results[0].rows_read == 1
    assert_silver_matches(store, (3, 5))


def test_parameters_and_lock(lake):
    store, settings = lake
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(ParameterError):
            compact_bronze(settings, CompactionParams(keep_sessions=bad), store=store)
    assert list(store.list("")) == []
    with lake_lock(store, "resample", run_id="someone"):
        with pytest.raises(BusyError, match="someone"):
            compact_bronze(settings, store=store)


class ListingStore(LocalStore):
    """A local lake that remembers the prefixes listed (a test double, not a patch: the store is the test's)."""

    def __init__(self, root):
        super().__init__(root)
        self.listed: list[str] = []

    def list(self, prefix, start_after=None):
        self.listed.append(prefix)
        return super().list(prefix, start_after)


def _fetched(store, day):
    """The session as 01_fetch writes it: daily files and the session's batch object."""
    rows = pd.concat([bronze_table(s, [day], 3).to_pandas() for s in ("AAA", "BBB")], ignore_index=True)
    write_daily_files(store, rows, run_id=f"20260101T000000Z-01_fetch-{day:%m%d}00")


def test_a_day_with_nothing_due_lists_no_bronze_and_a_file_without_batch_is_folded_later(tmp_path):
    """Most days compaction folds nothing: it knows the dates from its last listing and the session batches, so
    on S3 it does not page through bronze every day; a daily file written without a batch (a rebase, a previous
    pipeline's) is still folded, by the next listing."""
    store, settings = ListingStore(tmp_path / "lake"), Settings(lake_uri=str(tmp_path / "lake"))
    p = CompactionParams(keep_sessions=3, min_fold_sessions=3)
    write_history(store, "AAA", DAYS[:19], 1)
    write_daily(store, "BBB", DAYS[19], 7)  # no batch object
    for d in DAYS[20:23]:
        _fetched(store, d)
    first = compact_bronze(settings, p, store=store)  # no record yet: it lists bronze
    assert first.files_folded == 0 and any(x.startswith("bronze/raw_ohlcv/") for x in store.listed)
    _fetched(store, DAYS[23])
    store.listed.clear()
    second = compact_bronze(settings, p, store=store)  # 5 dates, 2 due: nothing to fold
    assert second.files_folded == 0 and "bronze not listed" in second.message
    assert not any(x.startswith("bronze/raw_ohlcv/") for x in store.listed), store.listed
    _fetched(store, DAYS[24])
    before = reference_rows(store)
    third = compact_bronze(settings, p, store=store)  # 3 due: it lists and folds, the batchless file too
    assert third.cutoff == DAYS[22].isoformat() and not store.exists(bronze_daily_key("BBB", DAYS[19]))
    assert third.files_folded == 1 + 2 * 2 and reference_rows(store).equals(before)
