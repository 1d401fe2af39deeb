"""Honest coverage: the manifest records per session what bronze really holds, and the next run fetches the rest.

The offline server's market (20 symbols, seed 7) lists a few symbols in 1962 and the others later; the lake is a
temporary folder and nothing is written to Postgres (``write_postgres=False``), so no cluster is needed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io

import pandas as pd
import pyarrow.parquet as pq
import pytest

from condvest import calendar as cal
from condvest import manifest
from condvest.errors import FetchFailed
from condvest.fetch import FetchParams, run_fetch
from condvest.offline.faults import ODD_TICKERS
from condvest.settings import HttpLimits, Secret, Settings
from condvest.storage import LocalStore

AS_OF = dt.date(2025, 10, 17)
FAST = HttpLimits(concurrency=4, read_timeout=1.0, max_retries=1, backoff_base=0.01, backoff_cap=0.02)


@pytest.fixture
def cfg(polygon_server, tmp_path) -> Settings:
    return Settings(
        lake_uri=str(tmp_path / "lake"),
        runs_uri=str(tmp_path / "runs"),
        home=tmp_path / ".condvest",
        polygon_base_url=polygon_server.base_url,
        polygon_api_key=Secret(polygon_server.api_key),
        as_of=AS_OF,
        http=FAST,
    )


def fetch(cfg: Settings, **params):
    params.setdefault("write_postgres", False)
    params.setdefault("skip_market_check", True)
    return asyncio.run(run_fetch(cfg, FetchParams(**params), progress=False))


def bronze(cfg: Settings) -> pd.DataFrame:
    store = LocalStore(cfg.lake_uri)
    frames = [pq.read_table(io.BytesIO(store.get(o.key))).to_pandas() for o in store.list("bronze/raw_ohlcv/")]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["symbol", "date"])


def ranged_symbols(srv) -> list[str]:
    return sorted({r.path.split("/ticker/")[1].split("/")[0] for r in srv.requests if r.endpoint == "range"})


@pytest.fixture
def old_symbols(synthetic_market) -> list[str]:
    """Three symbols listed long before the test window."""
    return [s for s in synthetic_market.symbols if synthetic_market.listing_date(s) < dt.date(2020, 1, 1)][:3]


def test_a_failing_symbol_fails_the_run_is_not_recorded_and_the_next_run_fetches_only_it(
    cfg, polygon_server, old_symbols
):
    bad, *good = old_symbols
    polygon_server.faults.add("http_5xx", path=f"/ticker/{bad}/", status=503)
    report = fetch(cfg, symbols=",".join(old_symbols), max_backfill_days=3)
    window = cal.last_n_sessions(AS_OF, 3)
    # a partial session is not a success: the failures, the summary and the error all count it
    assert report.status == "failed"
    assert report.failed == {f"symbol {bad}": report.symbol_errors[bad]} | {
        d.isoformat(): f"not fetched: {bad}" for d in window
    }
    assert report.summary()["sessions_failed"] == 3
    with pytest.raises(FetchFailed, match=bad):
        report.raise_for_status()
    assert set(report.to_frame()["status"]) == {"partial"}
    store = LocalStore(cfg.lake_uri)
    held = manifest.read_sessions(store, window[0], window[-1])
    assert sorted(held) == window and all(e.scope == tuple(sorted(good)) for e in held.values())
    assert manifest.missing_sessions(store, window, good) == []
    assert manifest.missing_sessions(store, window, [bad]) == window
    assert set(bronze(cfg)["symbol"]) == set(good)

    # the clean re-run is not "skipped": it asks for the failed symbol, and only for it
    polygon_server.reset()
    again = fetch(cfg, symbols=",".join(old_symbols), max_backfill_days=3)
    assert again.status == "ok", again.failed
    assert ranged_symbols(polygon_server) == [bad]
    assert manifest.missing_sessions(store, window, old_symbols) == []
    b = bronze(cfg)
    assert len(b) == 9 and set(b["symbol"]) == set(old_symbols)
    assert fetch(cfg, symbols=",".join(old_symbols), max_backfill_days=3).status == "skipped"


def test_an_empty_answer_for_one_symbol_fails_the_run(cfg, polygon_server, old_symbols):
    polygon_server.faults.add("empty_session", path=f"/ticker/{old_symbols[0]}/")
    report = fetch(cfg, symbols=",".join(old_symbols), max_backfill_days=2)
    assert report.status == "failed" and "empty answer" in report.failed[f"symbol {old_symbols[0]}"]
    window = cal.last_n_sessions(AS_OF, 2)
    assert manifest.missing_sessions(LocalStore(cfg.lake_uri), window, old_symbols[:1]) == window


def test_a_backfill_of_recently_listed_symbols_from_a_common_start_lands_their_bars(cfg, synthetic_market):
    start, end = dt.date(2015, 1, 2), dt.date(2025, 9, 30)
    recent = sorted(
        (s for s in synthetic_market.symbols if start + dt.timedelta(days=60) < synthetic_market.listing_date(s) < end),
        key=synthetic_market.listing_date,
    )[:2]
    assert len(recent) == 2, "the synthetic market has symbols listed after 2015"
    report = fetch(cfg, symbols=",".join(recent), start=start.isoformat(), end=end.isoformat())
    assert report.status == "ok", report.failed
    b = bronze(cfg)
    for sym in recent:
        listed = synthetic_market.listing_date(sym)
        got = sorted(b.loc[b["symbol"] == sym, "date"])
        assert got == cal.sessions_between(max(listed, start), end)
    store = LocalStore(cfg.lake_uri)
    sessions = cal.sessions_between(start, end)
    # the sessions before a listing are outside the symbol's life: held as "absent", never asked again
    assert manifest.missing_sessions(store, sessions, recent) == []
    first = manifest.read_sessions(store, sessions[0], sessions[0])[sessions[0]]
    assert first.scope == () and first.absent == tuple(sorted(recent))


def test_a_halt_is_a_gap_warned_not_a_failed_run_and_asked_again(cfg, polygon_server, old_symbols):
    sym = old_symbols[0]
    polygon_server.faults.add("halt", path=f"/ticker/{sym}/", times=1, count=1)
    report = fetch(cfg, symbols=",".join(old_symbols), max_backfill_days=5)
    assert report.status == "ok" and not report.failed
    t = report.to_frame()
    warned = t[t["status"] == "warn"]
    assert len(warned) == 1 and warned["gaps"].tolist() == [sym]
    halted = warned["session"].iloc[0]
    store = LocalStore(cfg.lake_uri)
    entry = manifest.read_sessions(store, halted, halted)[halted]
    assert entry.gaps == (sym,) and sym not in entry.scope
    assert manifest.missing_sessions(store, cal.last_n_sessions(AS_OF, 5), old_symbols) == [halted]
    polygon_server.reset()
    again = fetch(cfg, symbols=",".join(old_symbols), max_backfill_days=5)
    assert again.status == "ok" and [r.session for r in again.sessions] == [halted]
    assert ranged_symbols(polygon_server) == [sym]
    assert manifest.missing_sessions(store, cal.last_n_sessions(AS_OF, 5), old_symbols) == []


def test_an_all_symbol_backfill_with_a_failing_session_records_only_the_sessions_that_came(cfg, polygon_server):
    # every symbol comes from each session's grouped answer (survivorship-free): a session whose request fails is
    # failed and not recorded, the next backfill asks for it; the sessions that came are complete
    polygon_server.faults.add("http_5xx", path="/stocks/2025-10-08", status=503)
    report = fetch(cfg, symbols="all", start="2025-10-06", end="2025-10-10")
    assert report.status == "failed" and list(report.failed) == ["2025-10-08"] and "503" in report.failed["2025-10-08"]
    sessions = cal.sessions_between(dt.date(2025, 10, 6), dt.date(2025, 10, 10))
    assert manifest.missing_sessions(LocalStore(cfg.lake_uri), sessions) == [dt.date(2025, 10, 8)]
    assert dt.date(2025, 10, 8) not in set(bronze(cfg)["date"])


def test_tickers_the_lake_cannot_store_are_quarantined_and_the_session_goes_on(cfg, polygon_server):
    polygon_server.faults.add("odd_tickers", path="/grouped/", count=len(ODD_TICKERS))
    report = fetch(cfg, max_backfill_days=1)
    assert report.status == "ok", report.failed
    stored = {"BRK.A", "BACpB", "XYZ.WS.A", "XYZ.U", "ABCw"}
    assert stored <= set(bronze(cfg)["symbol"])  # real shapes kept as Polygon spells them
    store = LocalStore(cfg.lake_uri)
    (qkey,) = [o.key for o in store.list("bronze/_quarantine/")]
    q = pq.read_table(io.BytesIO(store.get(qkey))).to_pandas()
    assert sorted(q["symbol"]) == sorted(set(ODD_TICKERS) - stored)  # stored literally, with the reason
    assert q["reason"].str.contains("ticker the lake cannot store").all()
    assert manifest.missing_sessions(store, [AS_OF]) == []
