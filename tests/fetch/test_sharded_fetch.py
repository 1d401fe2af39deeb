"""A history backfill split over shards: bronze, quarantine, splits, manifest and Postgres equal the unsharded run's.

Two lakes and two databases get the same window from the same offline market (with a split inside the window
and faults that fire on every request of their symbol, so both runs see the same answers): one unsharded
backfill, one of three shards plus the commit.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import io
import os
import secrets
import subprocess
import sys

import pandas as pd
import psycopg
import pyarrow.parquet as pq
import pytest

from condvest import manifest
from condvest import splits as corp
from condvest.calendar import sessions_between
from condvest.errors import ParameterError
from condvest.fetch.run import FetchParams, run_fetch
from condvest.offline import Split, SyntheticMarket, serve_in_thread
from condvest.offline.sandbox import offline_world
from condvest.settings import HttpLimits, Secret, Settings
from condvest.shards import Shard, ShardsIncomplete
from condvest.storage import LocalStore
from tests.fixtures.paths import ROOT

KEY = "shard-key"
FAST = HttpLimits(concurrency=4, read_timeout=2.0, max_retries=2, backoff_base=0.01, backoff_cap=0.02)
AS_OF = dt.date(2025, 3, 14)
NAMES = SyntheticMarket(n_symbols=12, seed=11).symbols
SPLIT_DAY = dt.date(2022, 2, 23)
SPLITS = (Split(NAMES[3], SPLIT_DAY, 1, 2), Split(NAMES[8], SPLIT_DAY + dt.timedelta(days=1), 10, 1))
STAGING = "processing_metadata/shards/fetch/"
BARS = ["symbol", "date", "open", "high", "low", "close", "volume", "vwap", "transactions"]


@pytest.fixture(scope="module")
def market():
    return SyntheticMarket(n_symbols=12, seed=11, splits=SPLITS)


@pytest.fixture(scope="module")
def server(market):
    with serve_in_thread(market, api_key=KEY) as srv:
        yield srv


@pytest.fixture
def srv(server):
    server.reset()
    yield server
    server.reset()


@pytest.fixture
def cfg(srv, pg_settings) -> Settings:
    return pg_settings.with_(polygon_base_url=srv.base_url, polygon_api_key=Secret(KEY), as_of=AS_OF, http=FAST)


@pytest.fixture
def twin(cfg, pg_cluster, tmp_path) -> Settings:
    """The same settings with another lake and another database: the sharded run's."""
    name = "t_" + secrets.token_hex(6)
    admin = pg_cluster.dsn("postgres").reveal()
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    yield cfg.with_(lake_uri=str(tmp_path / "sharded-lake"), pg_dsn=pg_cluster.dsn(name))
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def window(cfg: Settings) -> tuple[dt.date, dt.date]:
    """Forty days around the retention cutoff: Postgres gets only the later half."""
    cutoff = cfg.retention.cutoff(AS_OF)
    return cutoff - dt.timedelta(days=20), cutoff + dt.timedelta(days=20)


def fetch(cfg: Settings, **params):
    start, end = window(cfg)
    p = FetchParams(start=start.isoformat(), end=end.isoformat(), as_of=AS_OF.isoformat(), **params)
    return asyncio.run(run_fetch(cfg, p, progress=False))


def sharded(cfg: Settings, count: int, group: str, skip: tuple[int, ...] = (), **params) -> list:
    reports = [fetch(cfg, shard=f"{i}/{count}", shard_group=group, **params) for i in range(count) if i not in skip]
    return [*reports, fetch(cfg, shard=f"commit/{count}", shard_group=group, **params)]


def bronze(cfg: Settings) -> dict[str, pd.DataFrame]:
    """Every bars object (``ingested_at`` left out: when a row was fetched differs between any two runs)."""
    store = LocalStore(cfg.lake_uri)
    return {
        o.key: pq.read_table(io.BytesIO(store.get(o.key))).to_pandas()[BARS]
        for o in store.list("bronze/raw_ohlcv/")
        if o.key.endswith(".parquet")
    }


def quarantine(cfg: Settings) -> pd.DataFrame:
    store = LocalStore(cfg.lake_uri)
    frames = [pq.read_table(io.BytesIO(store.get(o.key))).to_pandas() for o in store.list("bronze/_quarantine/")]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*BARS, "reason"])
    return df[[*BARS, "reason"]].sort_values(["symbol", "date"]).reset_index(drop=True)


def corporate_actions(cfg: Settings) -> tuple[pd.DataFrame, dict]:
    store = LocalStore(cfg.lake_uri)
    basis = {s: (b.basis, b.rows) for s, b in corp.read_basis(store).items()}
    return corp.read_splits(store).drop(columns="first_seen"), basis


def sessions_recorded(cfg: Settings, span: tuple[dt.date, dt.date] | None = None) -> dict:
    start, end = span or window(cfg)
    entries = manifest.read_sessions(LocalStore(cfg.lake_uri), start, end)
    return {d: dataclasses.replace(e, run_id="", written_at="") for d, e in entries.items()}


def pg_rows(cfg: Settings) -> pd.DataFrame:
    with psycopg.connect(cfg.pg_dsn.reveal()) as c:
        rows = c.execute(
            "SELECT symbol, (\"timestamp\" AT TIME ZONE 'America/New_York')::date, open, high, low, close, volume"
            " FROM raw_ohlcv ORDER BY 1, 2"
        ).fetchall()
    return pd.DataFrame(rows, columns=["symbol", "date", "open", "high", "low", "close", "volume"])


def live(cfg: Settings) -> dict[str, str]:
    """Every object of the lake but the staging area, with its version."""
    return {o.key: o.etag for o in LocalStore(cfg.lake_uri).list("") if not o.key.startswith(STAGING)}


def assert_same_outcome(plain_cfg: Settings, sharded_cfg: Settings, plain, commit) -> None:
    a, b = bronze(plain_cfg), bronze(sharded_cfg)
    assert sorted(a) == sorted(b) and a
    for key in a:
        pd.testing.assert_frame_equal(a[key], b[key], obj=key)
    pd.testing.assert_frame_equal(quarantine(plain_cfg), quarantine(sharded_cfg))
    (splits_a, basis_a), (splits_b, basis_b) = corporate_actions(plain_cfg), corporate_actions(sharded_cfg)
    pd.testing.assert_frame_equal(splits_a, splits_b)
    assert basis_a == basis_b
    assert sessions_recorded(plain_cfg) == sessions_recorded(sharded_cfg) != {}
    pg = pg_rows(plain_cfg)
    pd.testing.assert_frame_equal(pg, pg_rows(sharded_cfg))
    assert len(pg) and pg["date"].min() >= plain_cfg.retention.cutoff(AS_OF)
    # the commit's report is the unsharded run's (only the number of requests may differ)
    frame = ["session", "status", "symbols", "gaps", "source_rows", "duplicates", "quarantined", "bronze_rows"]
    pd.testing.assert_frame_equal(
        plain.to_frame()[[*frame, "postgres_rows", "error"]], commit.to_frame()[[*frame, "postgres_rows", "error"]]
    )
    assert {k: v for k, v in plain.summary().items() if k != "requests"} == {
        k: v for k, v in commit.summary().items() if k != "requests"
    }
    assert plain.failed == commit.failed and plain.status == commit.status
    assert (
        plain.rebase.to_frame()
        .drop(columns="postgres_rows")
        .equals(commit.rebase.to_frame().drop(columns="postgres_rows"))
    )
    assert not list(LocalStore(sharded_cfg.lake_uri).list(STAGING))  # the commit removed the staging area


def test_three_shards_of_all_symbols_equal_the_unsharded_backfill(cfg, twin, srv, market):
    def faults():  # February's grouped answers: the first bar broken; March's: the first two twice (both runs)
        srv.faults.add("bad_bars", path="/stocks/2022-02-", count=1)
        srv.faults.add("duplicate_bars", path="/stocks/2022-03-", count=2)

    faults()
    plain = fetch(cfg)
    assert plain.status == "ok", plain.failed
    grouped = sum(r.endpoint == "grouped" for r in srv.requests)
    assert grouped == len(plain.sessions) and not any(r.endpoint == "tickers" for r in srv.requests)
    assert plain.rebase.rebased and all(plain.summary()[k] > 0 for k in ("quarantined", "duplicates"))

    srv.reset()
    faults()
    *shards, commit = sharded(twin, 3, "B1")
    assert all(any(Shard(i, 3, "B1").holds(s) for s in NAMES) for i in range(3))  # every shard has symbols
    for i, r in enumerate(shards):
        assert r.status == "staged" and r.summary()["sessions_failed"] == 0
        assert r.summary()["message"].startswith(f"shard {i}/3 of sharded run B1: ")
        assert r.message.endswith("staged; the commit (shard=commit/3) records the manifest")
    assert commit.status == "ok" and "message" not in commit.summary()
    # the shards and the commit asked what the unsharded run asked, and each shard every session's grouped answer
    assert commit.requests == plain.requests + 2 * grouped
    assert commit.rebase.rebased == plain.rebase.rebased == sorted({sp.symbol for sp in SPLITS})
    assert_same_outcome(cfg, twin, plain, commit)


def test_three_shards_of_a_symbol_list_with_a_failing_symbol_and_a_halt(cfg, twin, srv, market):
    start, _ = window(cfg)
    listed = [s for s in NAMES if market.listing_date(s) < start][:8]
    failing, halted, quarantined = listed[2], listed[4], listed[6]

    def faults():
        srv.faults.add("http_5xx", path=f"/ticker/{failing}/", status=503)
        srv.faults.add("halt", path=f"/ticker/{halted}/", count=1)
        srv.faults.add("bad_bars", path=f"/ticker/{quarantined}/", count=1)

    faults()
    plain = fetch(cfg, symbols=",".join(listed))
    assert plain.status == "failed" and f"symbol {failing}" in plain.failed
    assert set(plain.failed) - {f"symbol {failing}"} == {r.session.isoformat() for r in plain.sessions}
    assert {r.status for r in plain.sessions} == {"partial"}  # so no split is read: nothing is done
    srv.reset()
    faults()
    *shards, commit = sharded(twin, 3, "L1", symbols=",".join(listed))
    assert all(r.status == "staged" for r in shards)
    shards[0].raise_for_status()  # a shard never fails on a symbol: the commit does
    assert commit.requests == plain.requests  # a symbol list: the same requests, split over the shards
    assert_same_outcome(cfg, twin, plain, commit)
    assert [r.gaps for r in commit.sessions] == [r.gaps for r in plain.sessions] and any(
        r.gaps for r in commit.sessions
    )
    assert commit.coverage == plain.coverage


def test_a_missing_shard_fails_the_commit_which_writes_nothing(cfg, srv):
    for i in (0, 2):  # shard 1 failed or was killed before its done record
        assert fetch(cfg, shard=f"{i}/3", shard_group="M1").status == "staged"
    store = LocalStore(cfg.lake_uri)
    before = live(cfg)
    assert not list(store.list("bronze/_manifest")) and not corp.read_basis(store)  # the shards recorded nothing
    asked = len(srv.requests)
    with pytest.raises(ShardsIncomplete, match=r"shard 1/3.*wrote nothing"):
        fetch(cfg, shard="commit/3", shard_group="M1")
    assert live(cfg) == before and len(srv.requests) == asked  # nothing written, nothing asked
    # a shard of another window does not count either
    start, end = window(cfg)
    other = FetchParams(start=start.isoformat(), end=(end - dt.timedelta(days=7)).isoformat(), as_of=AS_OF.isoformat())
    asyncio.run(run_fetch(cfg, dataclasses.replace(other, shard="1/3", shard_group="M1"), progress=False))
    with pytest.raises(ShardsIncomplete, match=r"the commit expects 28 session.*shard 1/3"):
        fetch(cfg, shard="commit/3", shard_group="M1")
    assert not manifest.read_sessions(store, start, end)
    # shard 1 runs again: the commit then records every session
    fetch(cfg, shard="1/3", shard_group="M1")
    assert fetch(cfg, shard="commit/3", shard_group="M1").status == "ok"
    assert manifest.missing_sessions(store, sessions_between(start, end)) == []


def test_a_shard_needs_a_history_backfill(cfg):
    for p in (
        FetchParams(shard="0/2", shard_group="G"),
        FetchParams(date="2025-03-13", shard="commit/2", shard_group="G"),
    ):
        with pytest.raises(ParameterError, match="sharding applies to history backfills") as e:
            asyncio.run(run_fetch(cfg, p, progress=False))
        assert e.value.parameter == "shard"
    for shard, group in (("2/2", "G"), ("0/2", ""), ("", "G"), ("x/2", "G")):
        with pytest.raises(ParameterError):
            fetch(cfg, shard=shard, shard_group=group)
    assert not list(LocalStore(cfg.lake_uri).list(""))


@pytest.mark.slow
def test_runner_backfill_pipeline_with_two_shards(tmp_path, pg_cluster):
    """``python -m runner pipeline backfill --shards 2`` in the offline world: fetch shards, their commit, then the
    sharded rebuild; bronze, manifest and the Postgres rows equal an unsharded backfill's: 01_fetch's ``run_fetch``
    on the same market, called here in-process (those three are all it writes; the runner's unsharded pipeline is
    run by tests/runner/test_secret_scan.py)."""
    admin = pg_cluster.dsn("postgres").reveal()
    names = ["t_" + secrets.token_hex(6) for _ in range(2)]
    with psycopg.connect(admin, autocommit=True) as c:
        for name in names:
            c.execute(f"CREATE DATABASE {name}")
    start, end = dt.date(2025, 8, 1), dt.date(2025, 9, 30)
    outcomes = []
    try:
        for name, sharded_run in zip(names, (True, False), strict=True):
            root = tmp_path / name
            with offline_world(root, n_symbols=5, dms=False, pg_dsn=pg_cluster.dsn(name).reveal()) as env:
                if sharded_run:
                    r = subprocess.run(
                        [sys.executable, "-m", "runner", "pipeline", "backfill", "--shards", "2"]
                        + ["-p", "start", start.isoformat(), "-p", "end", end.isoformat(), "--no-progress"],
                        env={**os.environ, **env, "CONDVEST_CHART_PNG": "0"},  # no browser: charts are not compared
                        cwd=ROOT,
                        capture_output=True,
                        text=True,
                        timeout=600,
                    )
                    assert r.returncode == 0, r.stderr[-3000:]
                else:
                    plain = FetchParams(start=start.isoformat(), end=end.isoformat())
                    report = asyncio.run(run_fetch(Settings.from_env({**os.environ, **env}), plain, progress=False))
                    assert report.status == "ok", report.failed
                s = Settings(lake_uri=env["CONDVEST_LAKE_URI"], pg_dsn=Secret(env["CONDVEST_PG_DSN"]))
                outcomes.append((s, bronze(s), sessions_recorded(s, (start, end)), pg_rows(s)))
    finally:
        with psycopg.connect(admin, autocommit=True) as c:
            for name in names:
                c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    (s_a, bronze_a, manifest_a, pg_a), (_, bronze_b, manifest_b, pg_b) = outcomes
    assert sorted(bronze_a) == sorted(bronze_b) and bronze_a
    for key in bronze_a:
        pd.testing.assert_frame_equal(bronze_a[key], bronze_b[key], obj=key)
    assert manifest_a == manifest_b and len(manifest_a) == len(sessions_between(start, end))
    pd.testing.assert_frame_equal(pg_a, pg_b)
    store = LocalStore(s_a.lake_uri)
    assert not list(store.list("processing_metadata/shards/"))
    assert any(o.key.endswith("_checkpoint.json") for o in store.list("processing_metadata/"))
    runs = {p.parent.name for p in (tmp_path / names[0] / "runs").rglob("*.ipynb")}
    assert len(runs) == 6  # per stage: two shards and the commit


def test_a_window_without_a_session_is_reported_not_a_crash(cfg, srv):
    weekend = FetchParams(start="2025-03-08", end="2025-03-09", as_of=AS_OF.isoformat(), skip_market_check=True)
    plain = asyncio.run(run_fetch(cfg, weekend, progress=False))
    assert plain.status == "ok" and plain.summary()["sessions"] == 0
    assert plain.plan.reason == "no NYSE session between 2025-03-08 and 2025-03-09"
    for shard in ("0/2", "1/2", "commit/2"):
        p = dataclasses.replace(weekend, shard=shard, shard_group="W1")
        last = asyncio.run(run_fetch(cfg, p, progress=False))
    assert last.summary() == plain.summary()
    assert not [r for r in srv.requests if r.endpoint in ("range", "tickers")]


@pytest.mark.slow  # a stage killed at a crash point in a child process, then run again
def test_a_retried_shard_killed_before_its_done_record_fails_the_commit(cfg, srv):
    """A shard's first step removes the done record of its earlier attempt: a retry killed half way through
    leaves no record, so the commit cannot take the earlier attempt's outcome for the latest one."""
    for i in range(2):
        fetch(cfg, shard=f"{i}/2", shard_group="K1")
    start, end = window(cfg)
    code = (
        "import asyncio,datetime as dt;from condvest.fetch.run import run_fetch,FetchParams;"
        "from condvest.settings import Settings,Secret;"
        f"s=Settings(lake_uri={cfg.lake_uri!r},polygon_base_url={srv.base_url!r},polygon_api_key=Secret({KEY!r}),"
        f"pg_dsn=Secret({cfg.pg_dsn.reveal()!r}),as_of=dt.date(2025,3,14));"
        f"p=FetchParams(start={start.isoformat()!r},end={end.isoformat()!r},as_of='2025-03-14',shard='1/2',"
        "shard_group='K1');asyncio.run(run_fetch(s,p,progress=False))"
    )
    env = {**os.environ, "CONDVEST_CRASH_AT": "fetch.shard_before_done"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 77, r.stderr[-2000:]
    before = live(cfg)
    with pytest.raises(ShardsIncomplete, match=r"no done record.*shard 1/2"):
        fetch(cfg, shard="commit/2", shard_group="K1")
    assert live(cfg) == before
    fetch(cfg, shard="1/2", shard_group="K1")
    assert fetch(cfg, shard="commit/2", shard_group="K1").status == "ok"
