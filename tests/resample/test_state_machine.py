"""Hypothesis state machine: appends, late backfills, corrections, history rewrites, compaction, re-runs,
forced full runs and crashes, in any order. After every completed resample the silver bars equal an
independent pandas computation over bronze, and a re-run without new data writes nothing.

Crashes here are in-process: ``os._exit`` (the crash hook's exit) raises instead, so the run stops at the
fault point with whatever it had written. Real process kills are in test_crash.py.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from unittest import mock

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from condvest.calendar import sessions_between
from condvest.resample import CompactionParams, ResampleParams
from condvest.resample.compaction import compact_bronze
from condvest.resample.run import run_resample
from condvest.settings import Settings
from condvest.storage import LocalStore
from tests.fixtures.resample import assert_silver_matches, write_daily, write_history

DAYS = sessions_between(dt.date(2024, 1, 2), dt.date(2024, 5, 31))
SYMBOLS = ("AA", "BB", "CC")
NS = (2, 3, 5)
IV = "2,3,5"
POINTS = (
    "resample.mid_silver",
    "resample.after_silver",
    "resample.before_checkpoint",
    "resample.after_first_checkpoint",
    "compaction.after_history",
    "compaction.after_journal",
)


class _Crash(BaseException):
    pass


class ResampleMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = tempfile.mkdtemp(prefix="cv-sm-")
        self.store = LocalStore(self.root)
        self.settings = Settings(lake_uri=self.root)
        self.dates: dict[str, set[dt.date]] = {s: set() for s in SYMBOLS}
        self.seed = 0
        self.clean = False  # the last action was a completed resample

    def teardown(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def _seed(self) -> int:
        self.seed += 1
        return self.seed

    def _ingested(self) -> dt.datetime:
        return dt.datetime(2025, 1, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=self.seed)

    @initialize(sym=st.sampled_from(SYMBOLS), start=st.integers(0, 30), length=st.integers(1, 40))
    def start(self, sym, start, length):
        days = DAYS[start : start + length]
        write_history(self.store, sym, days, self._seed())
        self.dates[sym] |= set(days)

    @rule(sym=st.sampled_from(SYMBOLS), k=st.integers(1, 4))
    def append(self, sym, k):
        have = self.dates[sym]
        first = DAYS.index(max(have)) + 1 if have else 40
        for d in DAYS[first : first + k]:
            write_daily(self.store, sym, d, self._seed(), self._ingested())
            have.add(d)
        self.clean = False

    @rule(sym=st.sampled_from(SYMBOLS), idx=st.integers(0, len(DAYS) - 1))
    def backfill_or_correct(self, sym, idx):
        d = DAYS[idx]
        write_daily(self.store, sym, d, self._seed(), self._ingested())
        self.dates[sym].add(d)
        self.clean = False

    @rule(sym=st.sampled_from(SYMBOLS), start=st.integers(0, 60), length=st.integers(1, 30))
    def rewrite_history(self, sym, start, length):
        """A migration or historical backfill writes data.parquet directly."""
        from condvest.lake import bronze_symbol_prefix

        days = DAYS[start : start + length]
        write_history(self.store, sym, days, self._seed(), self._ingested())
        daily = {d for d in self.dates[sym] if self.store.exists(f"{bronze_symbol_prefix(sym)}date={d}.parquet")}
        self.dates[sym] = set(days) | daily
        self.clean = False

    @rule(keep=st.integers(0, 3))
    def compact(self, keep):
        compact_bronze(self.settings, CompactionParams(keep_sessions=keep, min_fold_sessions=1), store=self.store)
        self.clean = False

    @rule(force=st.booleans())
    def resample(self, force):
        run_resample(self.settings, ResampleParams(IV, force_full_resample=force), store=self.store)
        assert_silver_matches(self.store, NS)
        self.clean = True

    @precondition(lambda self: self.clean)
    @rule()
    def rerun_changes_nothing(self):
        before = {o.key: o.etag for o in self.store.list("") if not o.key.startswith("bronze/")}
        report = run_resample(self.settings, ResampleParams(IV), store=self.store)
        assert {r.mode for r in report.results} == {"unchanged"}
        after = {o.key: o.etag for o in self.store.list("") if not o.key.startswith("bronze/")}
        assert after == before

    @rule(point=st.sampled_from(POINTS), force=st.booleans())
    def crash(self, point, force):
        with mock.patch.dict("os.environ", {"CONDVEST_CRASH_AT": point}), mock.patch("os._exit", side_effect=_Crash):
            try:
                if point.startswith("compaction"):
                    compact_bronze(self.settings, CompactionParams(1, 1), store=self.store)
                else:
                    run_resample(self.settings, ResampleParams(IV, force_full_resample=force), store=self.store)
            except _Crash:
                pass
        self.clean = False


ResampleMachine.TestCase.settings = settings(
    max_examples=25, stateful_step_count=12, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestResampleMachine = ResampleMachine.TestCase


def test_a_run_stopped_mid_silver_leaves_no_stale_bar_behind():
    """Found by the machine above (fault table row 2): a crashed incremental run wrote AA's bar into January's
    month file; AA's history then moved to February, so no later incremental run touched January again."""
    state = ResampleMachine()
    try:
        state.start(sym="BB", start=0, length=1)
        state.resample(force=False)
        state.rewrite_history(sym="AA", start=0, length=1)
        state.crash(point="resample.mid_silver", force=False)
        state.rewrite_history(sym="AA", start=21, length=1)
        state.resample(force=False)  # asserts silver == the pandas reference over bronze
        state.rerun_changes_nothing()
    finally:
        state.teardown()
