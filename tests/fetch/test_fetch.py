"""01_fetch end to end against the local Polygon-compatible server, a real PostgreSQL and a local lake."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import logging
import os
import subprocess
import sys
import threading
from dataclasses import replace

import pandas as pd
import psycopg
import pyarrow.parquet as pq
import pytest

from condvest import calendar as cal
from condvest import manifest
from condvest.errors import FetchFailed, ParameterError
from condvest.fetch.run import FetchParams, run_fetch
from condvest.offline import SyntheticMarket, serve_in_thread
from condvest.settings import HttpLimits, Secret, Settings
from condvest.storage import LocalStore
from tests.fixtures.stepping import Schedule, StepStore, run_actors

AS_OF = dt.date(2025, 10, 17)
KEY = "sentinel-key-7f3a9c"
# rate_window: a 429 without Retry-After pauses every request for the vendor's minute; here a tenth of a second
FAST = HttpLimits(concurrency=8, read_timeout=1.0, max_retries=3, backoff_base=0.01, backoff_cap=0.05, rate_window=0.1)


@pytest.fixture(scope="module")
def market():
    return SyntheticMarket(n_symbols=12, seed=11)


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


def fetch(cfg, **params):
    return asyncio.run(run_fetch(cfg, FetchParams(**params), progress=False))


def bronze(cfg) -> pd.DataFrame:
    store = LocalStore(cfg.lake_uri)
    frames = [pq.read_table(io.BytesIO(store.get(o.key))).to_pandas() for o in store.list("bronze/raw_ohlcv/")]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def pg_rows(cfg) -> pd.DataFrame:
    with psycopg.connect(cfg.pg_dsn.reveal()) as c:
        rows = c.execute(
            "SELECT symbol, (\"timestamp\" AT TIME ZONE 'America/New_York')::date AS date, open, high,"
            " low, close, volume FROM raw_ohlcv ORDER BY 1, 2"
        ).fetchall()
    return pd.DataFrame(rows, columns=["symbol", "date", "open", "high", "low", "close", "volume"])


def expected(market, start, end) -> pd.DataFrame:
    df = market.frame(start, end)
    df["date"] = pd.to_datetime(df["date"]).dt.date
    return df.sort_values(["symbol", "date"]).reset_index(drop=True)


def test_daily_run_fills_the_window_once_and_a_rerun_does_nothing(cfg, srv, market):
    report = fetch(cfg, max_backfill_days=5)
    assert report.status == "ok", report.failed
    sessions = cal.last_n_sessions(AS_OF, 5)
    assert [r.session for r in report.sessions] == sessions
    got = bronze(cfg).sort_values(["symbol", "date"]).reset_index(drop=True)
    want = expected(market, sessions[0], sessions[-1])
    cols = ["symbol", "date", "open", "high", "low", "close", "volume"]
    pd.testing.assert_frame_equal(got[cols], want[cols], check_dtype=False)
    assert len(pg_rows(cfg)) == len(want)
    # one grouped request a session, nothing else but the market status
    grouped = [r for r in srv.requests if r.endpoint == "grouped"]
    assert sorted(r.date for r in grouped) == sessions
    again = fetch(cfg, max_backfill_days=5)
    assert again.status == "skipped" and not [r for r in srv.requests if r.endpoint == "grouped"][len(grouped) :]


def test_history_backfill_lands_exact_bars_and_postgres_keeps_only_the_window(cfg, srv, market):
    as_of = dt.date(2025, 3, 14)
    cutoff = cfg.retention.cutoff(as_of)
    start, end = cutoff - dt.timedelta(days=20), cutoff + dt.timedelta(days=20)
    report = fetch(
        cfg,
        start=start.isoformat(),
        end=end.isoformat(),
        as_of=as_of.isoformat(),
        symbols="all",
        skip_market_check=True,
    )
    assert report.status == "ok", report.failed
    got = bronze(cfg).sort_values(["symbol", "date"]).reset_index(drop=True)
    want = expected(market, start, end)
    assert set(got["date"]) <= set(cal.sessions_between(start, end))
    pd.testing.assert_frame_equal(
        got[["symbol", "date", "close", "volume"]], want[["symbol", "date", "close", "volume"]], check_dtype=False
    )
    store = LocalStore(cfg.lake_uri)
    assert all(o.key.endswith("/data.parquet") for o in store.list("bronze/raw_ohlcv/"))
    pg = pg_rows(cfg)
    assert len(pg) == int((want["date"] >= cutoff).sum()) > 0 and pg["date"].min() >= cutoff
    # no request ever names a day that is not a session
    asked = [d for r in srv.requests for d in (r.date, r.to_date) if d is not None]
    assert asked and all(cal.is_session(d) for d in asked)
    assert manifest.missing_sessions(store, cal.sessions_between(start, end)) == []


def test_holidays_are_neither_missing_nor_requested(cfg, srv):
    as_of = dt.date(2025, 12, 1)  # window spans Thanksgiving
    fetch(cfg, as_of=as_of.isoformat(), max_backfill_days=8)
    asked = {r.date for r in srv.requests if r.endpoint == "grouped"}
    assert dt.date(2025, 11, 27) not in asked and asked == set(cal.last_n_sessions(as_of, 8))


def test_symbol_subset_uses_range_requests(cfg, srv, market):
    syms = market.symbols[:2]
    report = fetch(cfg, symbols=",".join(s.lower() for s in syms), max_backfill_days=3)
    assert report.status == "ok", report.failed
    assert {r.endpoint for r in srv.requests} <= {"range", "marketstatus", "splits"}
    assert set(bronze(cfg)["symbol"]) == set(syms)


@pytest.mark.parametrize(
    "kind",
    ["http_429", "http_429_no_retry_after", "http_5xx", "truncated_json", "error_200", "connection_reset", "slow_body"],
)
def test_transient_faults_are_retried(cfg, srv, kind):
    srv.faults.add(kind, path="/grouped/", times=2, retry_after=0.05, delay=3.0)
    report = fetch(cfg, max_backfill_days=2)
    assert report.status == "ok", report.failed
    assert report.retries >= 2 and report.summary()["bronze_rows"] == 2 * 12


def test_a_persistent_failure_fails_the_session_and_the_next_run_retries_it(cfg, srv):
    srv.faults.add("http_5xx", path=f"/grouped/locale/us/market/stocks/{AS_OF}", status=503)
    report = fetch(cfg, max_backfill_days=3)
    assert report.status == "failed" and list(report.failed) == [AS_OF.isoformat()]
    with pytest.raises(FetchFailed, match=AS_OF.isoformat()):
        report.raise_for_status()
    store = LocalStore(cfg.lake_uri)
    assert manifest.missing_sessions(store, cal.last_n_sessions(AS_OF, 3)) == [AS_OF]
    srv.faults.clear()
    again = fetch(cfg, max_backfill_days=3)
    assert [r.session for r in again.sessions] == [AS_OF] and again.status == "ok"


def test_empty_answer_on_a_session_is_reported_missing_and_retried_next_run(cfg, srv):
    srv.faults.add("empty_session", path=str(AS_OF))
    report = fetch(cfg, max_backfill_days=2)
    assert report.failed == {AS_OF.isoformat(): "empty answer on a trading session (date=2025-10-17)"}
    srv.faults.clear()
    srv.reset()
    again = fetch(cfg, max_backfill_days=2)  # the next daily run asks for exactly that session again
    assert again.status == "ok" and [r.session for r in again.sessions] == [AS_OF]
    assert [r.date for r in srv.requests if r.endpoint == "grouped"] == [AS_OF]
    assert sorted(bronze(cfg)["date"].unique()) == cal.last_n_sessions(AS_OF, 2)


def test_a_persistent_truncated_body_fails_the_session_after_its_retries(cfg, srv):
    srv.faults.add("truncated_json", path=f"/grouped/locale/us/market/stocks/{AS_OF}")
    report = fetch(cfg, max_backfill_days=2)
    assert report.status == "failed" and list(report.failed) == [AS_OF.isoformat()]
    assert "invalid JSON" in report.failed[AS_OF.isoformat()]
    asked = [r for r in srv.requests if r.endpoint == "grouped" and r.date == AS_OF]
    assert len(asked) == FAST.max_retries + 1  # retried, then given up: never a hang, never "done"
    assert manifest.missing_sessions(LocalStore(cfg.lake_uri), [AS_OF]) == [AS_OF]
    assert set(bronze(cfg)["date"]) == {cal.last_n_sessions(AS_OF, 2)[0]}


def test_retry_after_is_honoured_measured_at_the_server(cfg, srv):
    srv.faults.add("http_429", path=f"/grouped/locale/us/market/stocks/{AS_OF}", times=1, retry_after=1.0)
    report = fetch(cfg, date=AS_OF.isoformat())
    assert report.status == "ok" and report.retries == 1
    first, second = [r for r in srv.requests if r.endpoint == "grouped"]
    assert first.status == 429 and second.status == 200
    assert second.at - first.at >= 1.0  # the client waited as told (its own backoff here is 0.01-0.05 s)


def test_the_concurrency_cap_is_never_exceeded_counted_at_the_server(cfg, srv):
    srv.faults.add("slow_body", path="/grouped/", delay=0.3)
    # a generous read timeout: a request the client gives up on stays "in flight" at the server until its slow
    # body ends, so a retry under load would be counted twice there
    report = fetch(cfg.with_(http=replace(FAST, concurrency=3, read_timeout=15.0)), max_backfill_days=9)
    assert report.status == "ok", report.failed
    assert report.retries == 0
    assert srv.max_in_flight == 3  # the cap was reached, never passed


def test_duplicates_across_a_real_page_boundary_are_dropped(cfg, srv, market):
    sym = market.symbols[0]
    srv.faults.add("duplicate_bars", path=f"/ticker/{sym}/", times=1, count=1)
    small = cfg.with_(http=replace(FAST, page_size=10))
    report = fetch(small, start="2025-09-02", end="2025-10-17", symbols=sym, skip_market_check=True)
    pages = [r for r in srv.requests if r.endpoint == "range"]
    assert len(pages) >= 3  # 33 sessions in pages of 10
    assert report.status == "ok" and report.summary()["duplicates"] >= 2  # in the page and across the boundary
    b = bronze(cfg)
    assert not b.duplicated(["symbol", "date"]).any()
    assert sorted(b["date"]) == cal.sessions_between(dt.date(2025, 9, 2), dt.date(2025, 10, 17))


def test_two_fetches_of_the_same_day_at_once_leave_one_row_per_key(cfg, srv):
    srv.faults.add("slow_body", path="/grouped/", delay=0.3)  # both are in flight at the same time
    reports = []
    threads = [
        threading.Thread(target=lambda: reports.append(fetch(cfg, date=AS_OF.isoformat(), force=True)))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [r.status for r in reports] == ["ok", "ok"] and srv.max_in_flight == 2
    b = bronze(cfg)
    assert len(b) == 12 and not b.duplicated(["symbol", "date"]).any() and len(pg_rows(cfg)) == 12
    assert manifest.missing_sessions(LocalStore(cfg.lake_uri), [AS_OF]) == []


def test_two_fetches_of_one_day_whose_manifest_updates_interleave_both_stay_recorded(cfg, srv, market):
    """Fault row 5's mechanism: the manifest is updated only over the version read (a conditional write). Two
    symbol-list fetches of the same day both read the manifest before either writes it; the second write loses
    the race, reads again and merges, so the manifest records both symbols (an unconditional write keeps one)."""
    day = cal.previous_session(AS_OF)
    a, b = market.symbols[0], market.symbols[1]
    sched = Schedule(["a", "b", "a", "b"])
    lake = LocalStore(cfg.lake_uri)

    def one(actor: str, symbol: str):
        store = StepStore(lake, actor, sched, "bronze/_manifest/")
        params = FetchParams(date=day.isoformat(), symbols=symbol, skip_market_check=True)
        return asyncio.run(run_fetch(cfg, params, store=store, progress=False))

    reports = run_actors(sched, {"a": lambda: one("a", a), "b": lambda: one("b", b)})
    assert [reports[k].status for k in ("a", "b")] == ["ok", "ok"]
    assert [(actor, op) for actor, op, _ in sched.trace[:4]] == [("a", "get"), ("b", "get"), ("a", "put"), ("b", "put")]
    held = manifest.read_sessions(lake, day, day)[day]
    assert manifest.missing_sessions(lake, [day], [a]) == [] and manifest.missing_sessions(lake, [day], [b]) == []
    assert held.covers([a, b])


def test_duplicate_and_bad_bars(cfg, srv):
    srv.faults.add("duplicate_bars", path="/grouped/", times=1, count=3)
    srv.faults.add("bad_bars", path="/grouped/", times=1, count=2)
    report = fetch(cfg, max_backfill_days=2)
    t = report.summary()
    assert report.status == "ok" and t["duplicates"] == 3 and t["quarantined"] == 2
    b = bronze(cfg)
    assert not b.duplicated(["symbol", "date"]).any() and len(b) == 2 * 12 - 2
    assert ((b["low"] <= b[["open", "close"]].min(axis=1)) & (b["high"] >= b[["open", "close"]].max(axis=1))).all()
    q = [o.key for o in LocalStore(cfg.lake_uri).list("bronze/_quarantine/")]
    assert len(q) == 1
    qdf = pq.read_table(os.path.join(cfg.lake_uri, q[0])).to_pandas()
    assert len(qdf) == 2 and qdf["reason"].str.len().gt(0).all()
    assert len(pg_rows(cfg)) == len(b)


def test_the_api_key_never_reaches_logs_urls_or_reports(cfg, srv, caplog):
    caplog.set_level(logging.DEBUG)
    srv.faults.add("http_5xx", path="/grouped/", times=1)
    report = fetch(cfg, max_backfill_days=2)
    assert KEY not in caplog.text and KEY not in repr(report) and KEY not in report.to_frame().to_string()
    assert all(KEY not in r.path_qs for r in srv.requests)
    assert {r.authorization for r in srv.requests} == {"bearer"}


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"start": "2025-01-10", "end": "2025-01-02"}, "end"),
        ({"date": "2025-02-30"}, "date"),
        ({"symbols": "AAPL,../x"}, "symbols"),
        ({"max_backfill_days": 0}, "max_backfill_days"),
        ({"start": "2025-01-02"}, "end"),
    ],
)
def test_bad_parameters_fail_before_anything_is_written(cfg, srv, params, name):
    with pytest.raises(ParameterError) as err:
        fetch(cfg, **params)
    assert err.value.parameter == name
    assert srv.requests == [] and not os.path.exists(cfg.lake_uri)


def test_two_runs_for_the_same_day_leave_one_row_per_key(cfg, srv):
    fetch(cfg, date=AS_OF.isoformat())
    fetch(cfg, date=AS_OF.isoformat(), force=True)
    assert len(bronze(cfg)) == 12 and len(pg_rows(cfg)) == 12


@pytest.mark.slow  # a stage killed at a crash point in a child process, then run again
def test_crash_between_bronze_and_postgres_loses_nothing(cfg, srv):
    code = (
        "import asyncio,datetime as dt;from condvest.fetch.run import run_fetch,FetchParams;"
        "from condvest.settings import Settings,Secret,HttpLimits;"
        f"s=Settings(lake_uri={cfg.lake_uri!r},polygon_base_url={srv.base_url!r},polygon_api_key=Secret({KEY!r}),"
        f"pg_dsn=Secret({cfg.pg_dsn.reveal()!r}),as_of=dt.date(2025,10,17));"
        "asyncio.run(run_fetch(s,FetchParams(max_backfill_days=2),progress=False))"
    )
    env = {**os.environ, "CONDVEST_CRASH_AT": "fetch.after_bronze"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode == 77, r.stderr
    assert len(bronze(cfg)) > 0 and manifest.missing_sessions(LocalStore(cfg.lake_uri), cal.last_n_sessions(AS_OF, 2))
    report = fetch(cfg, max_backfill_days=2)
    assert report.status == "ok"
    assert len(bronze(cfg)) == 24 and len(pg_rows(cfg)) == 24


def test_the_key_can_come_from_secrets_manager(cfg, srv, monkeypatch):
    from moto.server import ThreadedMotoServer

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    moto.start()
    try:
        host, port = moto.get_host_and_port()
        for k, v in {
            "AWS_ENDPOINT_URL_SECRETS_MANAGER": f"http://{host}:{port}",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }.items():
            monkeypatch.setenv(k, v)
        import boto3

        arn = boto3.client("secretsmanager").create_secret(Name="polygon", SecretString=f'{{"api_key": "{KEY}"}}')[
            "ARN"
        ]
        report = fetch(cfg.with_(polygon_api_key=None, polygon_api_key_secret_arn=arn), max_backfill_days=1)
        assert report.status == "ok"
    finally:
        moto.stop()


def test_duplicates_across_range_pages_are_counted_and_dropped(cfg, srv, market):
    sym = market.symbols[0]
    srv.faults.add("duplicate_bars", path=f"/ticker/{sym}/", times=1, count=2)
    report = fetch(cfg, start="2025-09-02", end="2025-10-17", symbols=sym, skip_market_check=True)
    assert report.status == "ok" and report.summary()["duplicates"] == 2
    b = bronze(cfg)
    assert not b.duplicated(["symbol", "date"]).any() and len(b) == len(
        cal.sessions_between(max(dt.date(2025, 9, 2), market.listing_date(sym)), dt.date(2025, 10, 17))
    )
