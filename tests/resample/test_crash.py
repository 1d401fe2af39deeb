"""Crash safety: a resample or compaction killed at a fault point (``CONDVEST_CRASH_AT``, ``os._exit`` in a
subprocess) leaves a readable lake; the stale lock names its holder, and after clearing it the next run
gives exactly the bars of a clean run."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import pytest

from condvest.calendar import sessions_between
from condvest.crash import CRASH_EXIT_CODE
from condvest.errors import BusyError
from condvest.lake_lock import clear_lock
from condvest.resample import CompactionParams, ResampleParams
from condvest.resample.run import run_resample
from condvest.settings import Settings
from condvest.storage import LocalStore
from tests.fixtures.resample import assert_silver_matches, reference_rows, write_daily, write_history

pytestmark = pytest.mark.slow  # stages killed at crash points in child processes, then run again

DAYS = sessions_between(dt.date(2024, 1, 2), dt.date(2024, 6, 28))
NS = (3, 5, 8)
IV = "3,5,8"
_SCRIPT = """
import sys
from condvest.settings import Settings

if sys.argv[1] == "resample":
    from condvest.resample import ResampleParams, run_resample
    run_resample(Settings.from_env(), ResampleParams(sys.argv[2], force_full_resample=sys.argv[3] == "full"))
else:
    from condvest.resample import CompactionParams, compact_bronze
    compact_bronze(Settings.from_env(), CompactionParams(keep_sessions=2, min_fold_sessions=1))
"""


def _crash(root, point, *args):
    env = {**os.environ, "CONDVEST_LAKE_URI": str(root), "CONDVEST_CRASH_AT": point}
    p = subprocess.run([sys.executable, "-c", _SCRIPT, *args], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == CRASH_EXIT_CODE, p.stderr[-2000:]


def _lake(tmp_path):
    root = tmp_path / "lake"
    store = LocalStore(root)
    for i, sym in enumerate(("AAA", "BBB", "CCC")):
        write_history(store, sym, DAYS[i * 5 : 80], i)
    return root, store, Settings(lake_uri=str(root))


def _add_new_symbol(store):
    """A symbol no checkpoint knows yet, in months before every other symbol's (no other change rewrites them): the
    stopped run writes its bars there."""
    write_history(store, "DDD", sessions_between(dt.date(2023, 10, 2), dt.date(2023, 12, 29)), 7)


def _move_new_symbol(store):
    """Between the stopped run and the next: the new symbol's history is replaced by one that starts months later
    (a rebase, a fix). No incremental run touches its first months again, so only the in-flight marker (fault row 2:
    the next run rebuilds in full) removes the bars the stopped run left there."""
    write_history(store, "DDD", DAYS[100:120], 8)


def _recover(store, settings):
    with pytest.raises(BusyError, match="since"):
        run_resample(settings, ResampleParams(IV), store=store)
    assert clear_lock(store) is not None
    run_resample(settings, ResampleParams(IV), store=store)
    assert_silver_matches(store, NS)
    assert {r.mode for r in run_resample(settings, ResampleParams(IV), store=store).results} == {"unchanged"}


@pytest.mark.parametrize("point", ["resample.mid_silver", "resample.before_checkpoint"])
def test_crash_in_a_full_run(tmp_path, point):
    root, store, settings = _lake(tmp_path)
    _crash(root, point, "resample", IV, "inc")  # the first run: full
    _recover(store, settings)
    _add_new_symbol(store)
    _crash(root, point, "resample", IV, "full")  # a forced full run over checkpoints
    _move_new_symbol(store)
    _recover(store, settings)


@pytest.mark.parametrize("point", ["resample.mid_silver", "resample.after_silver", "resample.after_first_checkpoint"])
def test_crash_in_an_incremental_run(tmp_path, point):
    root, store, settings = _lake(tmp_path)
    run_resample(settings, ResampleParams(IV), store=store)
    for i, d in enumerate(DAYS[80:84]):
        write_daily(store, "AAA", d, 100 + i)
    write_daily(store, "CCC", DAYS[2], 200)  # a late backfill
    _add_new_symbol(store)
    _crash(root, point, "resample", IV, "inc")
    _move_new_symbol(store)
    _recover(store, settings)


@pytest.mark.parametrize("point", ["compaction.after_history", "compaction.after_journal"])
def test_crash_in_compaction_loses_nothing(tmp_path, point):
    root, store, settings = _lake(tmp_path)
    run_resample(settings, ResampleParams(IV), store=store)
    for i, d in enumerate(DAYS[80:86]):
        write_daily(store, "AAA", d, 100 + i)
        write_daily(store, "BBB", d, 200 + i)
    run_resample(settings, ResampleParams(IV), store=store)
    before = reference_rows(store)
    _crash(root, point, "compact")
    assert reference_rows(store).equals(before)  # readers see every bar once, mid-way too
    _recover(store, settings)
    from condvest.resample.compaction import compact_bronze

    compact_bronze(settings, CompactionParams(keep_sessions=2, min_fold_sessions=1), store=store)
    assert reference_rows(store).equals(before)
    assert len([o for o in store.list("bronze/raw_ohlcv/") if "date=" in o.key]) == 4
    assert_silver_matches(store, NS)
    assert {r.mode for r in run_resample(settings, ResampleParams(IV), store=store).results} == {"unchanged"}
