"""Splits: after a run that crosses a split, bronze, Postgres and silver hold one price basis per symbol.

The lake is built before a 2-for-1 split and a 3-for-2 split of one symbol (two splits in one backfill
window), a 1-for-10 reverse split of another, and a 2-for-1 split of a symbol whose bar of that day was
quarantined (no bar that day); then the server's clock moves past them and the daily pipeline runs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import logging
import os
import subprocess
import sys

import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from condvest.errors import ParameterError
from condvest.fetch.plan import FetchParams, rebase_since
from condvest.fetch.run import run_fetch
from condvest.lake import BASIS_KEY, bronze_daily_key, bronze_history_key
from condvest.offline import Split, SyntheticMarket, serve_in_thread
from condvest.resample import ResampleParams
from condvest.resample.run import run_resample
from condvest.settings import HttpLimits, Secret, Settings
from condvest.splits import read_splits
from condvest.storage import LocalStore
from tests.fixtures.resample import assert_silver_matches, reference_bars, reference_rows, silver_frame

KEY = "rebase-key"
FAST = HttpLimits(concurrency=4, read_timeout=2.0, max_retries=2, backoff_base=0.01, backoff_cap=0.02)
NY = dt.timezone(dt.timedelta(hours=-4))  # EDT: both clocks are in October
START, BEFORE, AS_OF = dt.date(2025, 7, 1), dt.date(2025, 10, 3), dt.date(2025, 10, 17)
A, B, Q = "QBDA", "RWB", "BJRC"  # Q is the first ticker of a grouped answer: bad_bars breaks its bar
SPLITS = (
    Split(A, dt.date(2025, 10, 8), 1, 2),
    Split(Q, dt.date(2025, 10, 9), 1, 2),
    Split(B, dt.date(2025, 10, 10), 10, 1),
    Split(A, dt.date(2025, 10, 15), 2, 3),
)
NS = (3, 5, 8, 13, 21, 34)
COLS = ["symbol", "date", "open", "high", "low", "close", "volume"]


@pytest.fixture(scope="module")
def market():
    return SyntheticMarket(n_symbols=6, seed=11, splits=SPLITS)


@pytest.fixture(scope="module")
def server(market):
    with serve_in_thread(market, api_key=KEY) as srv:
        yield srv


@pytest.fixture
def cfg(server, pg_settings) -> Settings:
    server.reset()
    server.set_now(dt.datetime.combine(BEFORE, dt.time(21), tzinfo=NY))
    yield pg_settings.with_(polygon_base_url=server.base_url, polygon_api_key=Secret(KEY), http=FAST)
    server.reset()
    server.set_now(None)


def fetch(cfg: Settings, as_of: dt.date, **params):
    p = FetchParams(as_of=as_of.isoformat(), skip_market_check=True, **params)
    return asyncio.run(run_fetch(cfg.with_(as_of=as_of), p, progress=False))


def build_lake_before_splits(cfg: Settings, server) -> None:
    """History to 2025-10-01, then daily files of 10-02 and 10-03 fetched on their evenings (the old basis)."""
    server.set_now(dt.datetime.combine(dt.date(2025, 10, 1), dt.time(21), tzinfo=NY))
    report = fetch(cfg, dt.date(2025, 10, 1), start=START.isoformat(), end="2025-10-01")
    assert report.status == "ok", report.failed
    server.set_now(dt.datetime.combine(BEFORE, dt.time(21), tzinfo=NY))
    daily = fetch(cfg, BEFORE, max_backfill_days=5)
    assert [r.session for r in daily.sessions] == [dt.date(2025, 10, 2), BEFORE]
    assert report.rebase.rebased == daily.rebase.rebased == []
    server.set_now(dt.datetime.combine(AS_OF, dt.time(21), tzinfo=NY))
    server.reset()


def expected(market: SyntheticMarket, end: dt.date, as_of: dt.date) -> pd.DataFrame:
    df = market.frame(START, end, as_of=as_of)
    df["date"] = pd.to_datetime(df["date"].astype(str)).dt.date
    return df[COLS].reset_index(drop=True)


def pg_rows(cfg: Settings) -> pd.DataFrame:
    with psycopg.connect(cfg.pg_dsn.reveal()) as c:
        rows = c.execute(
            "SELECT symbol, (\"timestamp\" AT TIME ZONE 'America/New_York')::date AS date, open, high,"
            " low, close, volume FROM raw_ohlcv ORDER BY 1, 2"
        ).fetchall()
    return pd.DataFrame(rows, columns=["symbol", "date", "open", "high", "low", "close", "volume"])


def every_stored_row(store: LocalStore) -> pd.DataFrame:
    """Every row of every bronze object (daily files and histories), duplicates kept: nothing may be stale."""
    frames = [pq.read_table(io.BytesIO(store.get(o.key))).to_pandas()[COLS] for o in store.list("bronze/raw_ohlcv/")]
    return pd.concat(frames, ignore_index=True)


def assert_no_stale_row(store: LocalStore, want: pd.DataFrame) -> None:
    got = every_stored_row(store).merge(want, on=["symbol", "date"], suffixes=("", "_want"))
    stale = got[(got["close"] != got["close_want"]) | (got["volume"] != got["volume_want"])]
    assert stale.empty, stale


def range_requests(server) -> list[str]:
    return sorted(r.symbol for r in server.requests if r.endpoint == "range")


def test_the_daily_pipeline_across_splits_leaves_one_basis_everywhere(cfg, server, market):
    build_lake_before_splits(cfg, server)
    store = LocalStore(cfg.lake_uri)
    first = run_resample(cfg, ResampleParams(intervals=",".join(map(str, NS))))
    assert first.results[0].mode == "full"
    server.faults.add("bad_bars", path="/stocks/2025-10-09", times=1, count=1)  # Q has no bar that day

    report = fetch(cfg, AS_OF, max_backfill_days=15)

    assert report.status == "ok", report.failed
    assert len(report.sessions) == 10 and report.sessions[3].quarantined == 1
    assert [r.daily_files for r in report.rebase.symbols] == [2 + 9, 2 + 10, 2 + 10]  # Q lacked 10-09
    # one paged splits request for the fetched sessions' window, one range request per symbol with a split (A
    # twice: once)
    asked = [r.query for r in server.requests if r.endpoint == "splits"]
    first = report.sessions[0].session.isoformat()
    assert [(q.get("execution_date.gte"), q.get("execution_date.lte")) for q in asked] == [(first, AS_OF.isoformat())]
    assert range_requests(server) == sorted([A, B, Q])
    assert report.rebase.rebased == sorted([A, B, Q]) and report.summary()["rebased"] == 3
    assert read_splits(store)[["ticker", "execution_date"]].values.tolist() == [
        [s.symbol, s.execution_date] for s in SPLITS
    ]
    basis = json.loads(store.get(BASIS_KEY))["symbols"]
    assert {s: basis[s]["basis"] for s in basis} == {A: "2025-10-17", B: "2025-10-17", Q: "2025-10-17"}

    want = expected(market, AS_OF, AS_OF)
    pd.testing.assert_frame_equal(reference_rows(store), want, check_dtype=False, obj="bronze")
    assert_no_stale_row(store, want)  # daily files of the rebased symbols were rewritten too
    pd.testing.assert_frame_equal(pg_rows(cfg), want, check_dtype=False, obj="postgres")

    second = run_resample(cfg, ResampleParams(intervals=",".join(map(str, NS))))
    assert second.results[0].mode == "incremental"
    assert_silver_matches(store, NS)
    for n in NS:  # equal to a full recompute from the server's adjusted history
        pd.testing.assert_frame_equal(silver_frame(store, n), reference_bars(want, n), check_dtype=False)


def test_a_failing_refetch_keeps_the_old_basis_says_so_and_is_retried(cfg, server, market, caplog):
    build_lake_before_splits(cfg, server)
    store = LocalStore(cfg.lake_uri)
    old_history = store.get(bronze_history_key(B))
    server.faults.add("http_5xx", path=f"/ticker/{B}/range/", status=503)

    with caplog.at_level(logging.WARNING, logger="condvest.fetch.rebase"):
        report = fetch(cfg, AS_OF, max_backfill_days=15)

    assert report.status == "ok", report.failed  # the sessions went on
    assert set(report.rebase.failed) == {B} and "503" in report.rebase.failed[B]
    assert any("rebase=failed" in r.message and f"symbol={B}" in r.message for r in caplog.records)
    assert store.get(bronze_history_key(B)) == old_history
    assert B not in json.loads(store.get(BASIS_KEY))["symbols"]
    rows = reference_rows(store)
    old_basis = expected(market, BEFORE, BEFORE)
    kept = rows[(rows["symbol"] == B) & (rows["date"] <= BEFORE)].reset_index(drop=True)
    want_kept = old_basis[old_basis["symbol"] == B].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, want_kept, check_dtype=False)

    server.faults.clear()
    server.reset()
    again = fetch(cfg, AS_OF, max_backfill_days=15)  # nothing to fetch; the pending rebase is retried
    assert again.plan.mode == "skip" and again.rebase.rebased == [B]
    assert range_requests(server) == [B]
    pd.testing.assert_frame_equal(reference_rows(store), expected(market, AS_OF, AS_OF), check_dtype=False)


def test_rebase_parameter_checks_older_splits_for_history_of_unknown_basis(cfg, server, market):
    build_lake_before_splits(cfg, server)
    store = LocalStore(cfg.lake_uri)
    plain = fetch(cfg, AS_OF, date=BEFORE.isoformat())  # its session has no split: nothing to rebase
    assert plain.rebase.rebased == [] and read_splits(store).empty

    # a session the source no longer serves (here: a row on a holiday) makes Q's re-fetch incomplete
    holiday = pq.read_table(io.BytesIO(store.get(bronze_daily_key(Q, BEFORE)))).to_pandas()
    holiday["date"] = dt.date(2025, 7, 4)
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(holiday, preserve_index=False), buf)
    store.put(bronze_daily_key(Q, dt.date(2025, 7, 4)), buf.getvalue())
    q_history = store.get(bronze_history_key(Q))
    # a split of a symbol the lake holds nothing of (never fetched, and its bar of this run quarantined):
    # nothing to re-fetch, only its basis is recorded
    store.delete_many([o.key for o in store.list(f"bronze/raw_ohlcv/symbol={B}/")])
    server.reset()
    server.faults.add("bad_bars", path=f"/stocks/{BEFORE}", times=1, count=5)  # the first five tickers, B too

    report = fetch(cfg, AS_OF, date=BEFORE.isoformat(), rebase="2025-10-01")

    assert report.status == "ok", report.failed
    assert report.sessions[0].quarantined == 5
    status = dict(zip(report.rebase.to_frame()["symbol"], report.rebase.to_frame()["status"], strict=True))
    assert status == {A: "rebased", B: "no bronze", Q: "failed"}
    assert "lacks 1 session(s) bronze holds (2025-07-04..2025-07-04)" in report.rebase.failed[Q]
    assert store.get(bronze_history_key(Q)) == q_history
    assert range_requests(server) == sorted([A, Q])
    assert sorted(json.loads(store.get(BASIS_KEY))["symbols"]) == [A, B]
    rows = reference_rows(store)
    want = expected(market, BEFORE, AS_OF)
    got = rows[rows["symbol"] == A].reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want[want["symbol"] == A].reset_index(drop=True), check_dtype=False)
    assert rebase_since(FetchParams(rebase="all"), AS_OF) == dt.date(1962, 1, 1)
    for bad in ("yesterday", "2030-01-01"):
        with pytest.raises(ParameterError, match="rebase"):
            fetch(cfg, AS_OF, rebase=bad)


@pytest.mark.slow  # a stage killed at a crash point in a child process, then run again
def test_a_crash_after_the_new_history_is_finished_by_the_next_run(cfg, server, market):
    build_lake_before_splits(cfg, server)
    store = LocalStore(cfg.lake_uri)
    code = (
        "import asyncio,datetime as dt;from condvest.fetch.run import run_fetch,FetchParams;"
        "from condvest.settings import Settings,Secret;"
        f"s=Settings(lake_uri={cfg.lake_uri!r},polygon_base_url={server.base_url!r},polygon_api_key=Secret({KEY!r}),"
        f"pg_dsn=Secret({cfg.pg_dsn.reveal()!r}),as_of=dt.date(2025,10,17));"
        "asyncio.run(run_fetch(s,FetchParams(max_backfill_days=15,skip_market_check=True),progress=False))"
    )
    env = {**os.environ, "CONDVEST_CRASH_AT": "rebase.after_history"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 77, r.stderr
    assert not store.exists(BASIS_KEY)  # no basis recorded: the split is still due
    again = fetch(cfg, AS_OF, max_backfill_days=15)  # the sessions were not recorded either: fetched again
    assert again.status == "ok" and again.rebase.rebased == sorted([A, B, Q])
    want = expected(market, AS_OF, AS_OF)
    pd.testing.assert_frame_equal(reference_rows(store), want, check_dtype=False)
    assert_no_stale_row(store, want)
    pd.testing.assert_frame_equal(pg_rows(cfg), want, check_dtype=False)


def test_a_session_whose_splits_cannot_be_read_is_failed_and_fetched_again(cfg, server, market):
    build_lake_before_splits(cfg, server)
    store = LocalStore(cfg.lake_uri)
    server.faults.add("http_5xx", path="/v3/reference/splits", status=502)

    report = fetch(cfg, AS_OF, max_backfill_days=15)

    assert report.status == "failed" and len(report.failed) == 10
    assert all("splits reference unavailable" in why for why in report.failed.values())
    assert report.rebase.rebased == [] and not store.exists(BASIS_KEY)
    server.faults.clear()
    again = fetch(cfg, AS_OF, max_backfill_days=15)  # the manifest did not record them: all fetched again
    assert again.status == "ok" and len(again.sessions) == 10
    assert again.rebase.rebased == sorted([A, B, Q])
    pd.testing.assert_frame_equal(reference_rows(store), expected(market, AS_OF, AS_OF), check_dtype=False)
