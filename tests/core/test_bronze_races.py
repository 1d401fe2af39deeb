"""The bronze write protocol under races: 01_fetch (a daily re-fetch, a history backfill) and compaction, and two
backfills of one symbol, stepped through every interleaving of their bronze reads, writes and deletes, on the
local store and on SeaweedFS. Nothing a writer wrote may be lost, and the newest write of a bar must win.

The writers are the real stage functions against the offline Polygon server; each gets its own view of the same
store (tests/fixtures/stepping.py) that only fixes the order of its operations on ``bronze/raw_ohlcv/``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest

from condvest import calendar as cal
from condvest.bars import bars_frame
from condvest.bronze import merge_rows, read_bronze_bytes, write_daily_files
from condvest.errors import PreconditionFailed
from condvest.fetch import FetchParams, run_fetch
from condvest.lake import BRONZE_PREFIX, checkpoint_key
from condvest.resample import CompactionParams, ResampleParams, compact_bronze, run_resample
from condvest.settings import HttpLimits, Secret, Settings
from condvest.storage import LocalStore, Store, open_store
from tests.fixtures.resample import write_daily, write_history
from tests.fixtures.stepping import Schedule, StepStore, interleavings, run_actors

AS_OF = dt.date(2025, 10, 17)
DAILY = dt.date(2025, 10, 10)  # the daily file compaction folds
BACKFILL_1 = (dt.date(2025, 9, 22), dt.date(2025, 9, 26))
BACKFILL_2 = (dt.date(2025, 9, 29), dt.date(2025, 10, 3))
FAST = HttpLimits(concurrency=2, read_timeout=2.0, max_retries=1, backoff_base=0.01, backoff_cap=0.02)


@pytest.fixture(params=["local", "s3"])
def new_store(request, tmp_path) -> Callable[[int], Store]:
    """A fresh, empty lake per call (a folder, or a prefix of the test's SeaweedFS bucket)."""
    if request.param == "local":
        return lambda i: LocalStore(tmp_path / f"lake{i}")
    s3 = request.getfixturevalue("s3_settings")
    return lambda i: open_store(f"{s3.lake_uri}/race{i}", settings=s3)


@pytest.fixture
def cfg(polygon_server, tmp_path) -> Settings:
    return Settings(
        lake_uri=str(tmp_path / "unused"),
        home=tmp_path / ".condvest",
        polygon_base_url=polygon_server.base_url,
        polygon_api_key=Secret(polygon_server.api_key),
        as_of=AS_OF,
        http=FAST,
    )


@pytest.fixture
def symbol(synthetic_market) -> str:
    return next(s for s in synthetic_market.symbols if synthetic_market.listing_date(s) < dt.date(2020, 1, 1))


def _fetch(cfg: Settings, store: Store, **params: Any) -> Callable[[], Any]:
    p = FetchParams(write_postgres=False, skip_market_check=True, **params)

    def run() -> Any:
        report = asyncio.run(run_fetch(cfg, p, store=store, progress=False))
        report.raise_for_status()
        return report

    return run


def _compact(cfg: Settings, store: Store) -> Callable[[], Any]:
    return lambda: compact_bronze(cfg, CompactionParams(keep_sessions=0, min_fold_sessions=1), store=store)


def _bronze(store: Store, symbol: str) -> pd.DataFrame:
    """What a reader of bronze sees for ``symbol``: history and daily files merged by the one merge rule."""
    parts = []
    for o in store.list(f"{BRONZE_PREFIX}/symbol={symbol}/"):
        src = "history" if o.key.endswith("/data.parquet") else "daily"
        parts.append((read_bronze_bytes(o.key, store.get(o.key)), src))
    return merge_rows(parts).to_pandas()


def _seed_daily(store: Store, market, symbol: str) -> pd.Timestamp:
    """A daily file for ``DAILY`` (as an earlier fetch left it); returns its ``ingested_at``."""
    df = bars_frame(
        market.range_bars(symbol, DAILY, DAILY), symbol=symbol, ingested_at=dt.datetime(2025, 10, 10, tzinfo=dt.UTC)
    )
    write_daily_files(store, df)
    return df["ingested_at"].iloc[0]


def _run(store: Store, order: tuple[str, ...], actors: dict[str, Callable[[Store], Callable[[], Any]]]) -> Schedule:
    sched = Schedule(order)
    run_actors(sched, {name: make(StepStore(store, name, sched, BRONZE_PREFIX + "/")) for name, make in actors.items()})
    ran = [a for a, _, _ in sched.trace[: len(order)]]
    assert ran == list(order), f"the interleaving was not exercised as planned: {sched.trace}"
    return sched


def test_fetch_rewriting_a_daily_file_while_compaction_folds_it(cfg, new_store, synthetic_market, symbol):
    # fetch: put the daily file; compaction: get daily, get history, put history, delete the daily file
    orders = list(interleavings({"fetch": 1, "compaction": 4}))
    for i, order in enumerate(orders):
        store = new_store(i)
        old = _seed_daily(store, synthetic_market, symbol)
        actors = {
            "fetch": lambda s: _fetch(cfg, s, date=DAILY.isoformat(), symbols=symbol),
            "compaction": lambda s: _compact(cfg, s),
        }
        sched = _run(store, order, actors)
        got = _bronze(store, symbol)
        assert got["date"].tolist() == [DAILY], (order, sched.trace)
        assert got["ingested_at"].iloc[0] > old, f"the fetch's newer bar was lost: {order} {sched.trace}"
    assert len(orders) == 5


def test_a_history_backfill_while_compaction_folds_the_same_symbol(cfg, new_store, synthetic_market, symbol):
    # backfill: get history, put history; compaction: get daily, get history, put history, delete daily
    orders = list(interleavings({"backfill": 2, "compaction": 4}))
    want = [*cal.sessions_between(*BACKFILL_1), DAILY]
    for i, order in enumerate(orders):
        store = new_store(i)
        _seed_daily(store, synthetic_market, symbol)
        actors = {
            "backfill": lambda s: _fetch(
                cfg, s, start=BACKFILL_1[0].isoformat(), end=BACKFILL_1[1].isoformat(), symbols=symbol
            ),
            "compaction": lambda s: _compact(cfg, s),
        }
        sched = _run(store, order, actors)
        assert _bronze(store, symbol)["date"].tolist() == want, f"bars lost: {order} {sched.trace}"
    assert len(orders) == 15


def test_two_backfills_of_the_same_symbol(cfg, new_store, symbol):
    orders = list(interleavings({"first": 2, "second": 2}))
    want = [*cal.sessions_between(*BACKFILL_1), *cal.sessions_between(*BACKFILL_2)]
    for i, order in enumerate(orders):
        store = new_store(i)
        actors = {
            name: lambda s, span=span: _fetch(
                cfg, s, start=span[0].isoformat(), end=span[1].isoformat(), symbols=symbol
            )
            for name, span in (("first", BACKFILL_1), ("second", BACKFILL_2))
        }
        sched = _run(store, order, actors)
        assert _bronze(store, symbol)["date"].tolist() == want, f"bars lost: {order} {sched.trace}"
    assert len(orders) == 6


def test_a_resample_never_overwrites_a_checkpoint_written_during_its_run(tmp_path):
    """A second writer (a resample whose lock lease was taken over) commits a checkpoint after this run read it:
    this run's conditional checkpoint write fails, and the other commit stands."""
    store = LocalStore(tmp_path / "lake")
    settings = Settings(lake_uri=str(tmp_path / "lake"))
    write_history(store, "AAA", cal.sessions_between(dt.date(2024, 3, 1), dt.date(2024, 4, 30)), 1)
    run_resample(settings, ResampleParams(intervals="3"), store=store)
    key = checkpoint_key(3)
    write_daily(store, "AAA", dt.date(2024, 5, 1), 2)
    other = b'{"status": "complete", "state": "other", "run_id": "the-other-run"}'
    sched = Schedule(["resample", "other"])  # the run reads the checkpoint, then the other writer commits
    actors = {
        "resample": lambda: run_resample(
            settings, ResampleParams(intervals="3"), store=StepStore(store, "resample", sched, key)
        ),
        "other": lambda: StepStore(store, "other", sched, key).put(key, other),
    }
    with pytest.raises(PreconditionFailed) as err:
        run_actors(sched, actors)
    assert err.value.key == key and store.get(key) == other
