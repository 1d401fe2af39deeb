"""Nothing false enters the lake (issue 21): the bar checks of one grouped answer, each bad bar quarantined with its
reason and never filed as a daily file, and a move without a recorded split listed as suspect.

The answers come from a tiny Polygon-compatible server on loopback that serves exactly the bars a test names."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pandas as pd
import pyarrow.parquet as pq
from aiohttp import web

from condvest import calendar as cal
from condvest.fetch import FetchParams, SessionOutcome, run_fetch
from condvest.settings import HttpLimits, Secret, Settings
from condvest.storage import LocalStore

THURSDAY, FRIDAY, SATURDAY = dt.date(2025, 10, 16), dt.date(2025, 10, 17), dt.date(2025, 10, 18)
EVENING = dt.datetime(2025, 10, 17, 18, 30, tzinfo=cal.NEW_YORK)


def bar(ticker: str, day: dt.date, c: float = 10.5, **kw: float) -> dict:
    b = {"T": ticker, "o": 10.0, "h": max(11.0, c), "l": min(9.5, c), "c": c, "v": 1000.0, "vw": 10.2, "n": 12}
    b["t"] = cal.ny_close_epoch_ms(day)
    b.update(kw)
    return b


@contextmanager
def serve(
    grouped: dict[dt.date, list[dict]], splits: list[dict] | None = None, ranges: dict[str, list[dict]] | None = None
) -> Iterator[str]:
    """A loopback server answering grouped-daily requests with ``grouped[day]``, range requests with
    ``ranges[ticker]`` and the splits endpoint with ``splits``; yields its base URL."""

    async def grouped_daily(request: web.Request) -> web.Response:
        results = grouped.get(dt.date.fromisoformat(request.match_info["day"]), [])
        return web.json_response({"status": "OK", "resultsCount": len(results), "results": results})

    async def reference_splits(request: web.Request) -> web.Response:
        return web.json_response({"status": "OK", "results": splits or []})

    async def range_daily(request: web.Request) -> web.Response:
        results = (ranges or {}).get(request.match_info["ticker"], [])
        return web.json_response({"status": "OK", "resultsCount": len(results), "results": results})

    app = web.Application()
    app.router.add_get("/v2/aggs/ticker/{ticker}/range/1/day/{start}/{end}", range_daily)
    app.router.add_get("/v2/aggs/grouped/locale/us/market/stocks/{day}", grouped_daily)
    app.router.add_get("/v3/reference/splits", reference_splits)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.run_until_complete(runner.cleanup())
        loop.close()


def settings(tmp_path, base_url: str) -> Settings:
    return Settings(
        lake_uri=str(tmp_path / "lake"),
        runs_uri=str(tmp_path / "runs"),
        home=tmp_path / ".condvest",
        polygon_base_url=base_url,
        polygon_api_key=Secret("truth-key-7f3a"),
        as_of=FRIDAY,
        http=HttpLimits(backoff_base=0.01, backoff_cap=0.05, max_retries=1),
    )


def fetch(cfg: Settings, day: dt.date):
    params = FetchParams(date=day.isoformat(), skip_market_check=True, write_postgres=False)
    return asyncio.run(run_fetch(cfg, params, progress=False, now=EVENING))


def objects(cfg: Settings, prefix: str) -> pd.DataFrame:
    store = LocalStore(cfg.lake_uri)
    frames = [pq.read_table(io.BytesIO(store.get(o.key))).to_pandas() for o in store.list(prefix)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["symbol", "date", "reason"])


def test_a_grouped_answer_with_bad_bars_stores_only_the_good_ones_each_bad_one_quarantined_with_its_reason(tmp_path):
    answer = [
        bar("GOOD", FRIDAY),
        bar("SAT", SATURDAY),  # stamped on a day the exchange was closed
        bar("ZERO", FRIDAY, o=0.0, h=0.0, l=0.0, c=0.0),
        bar("NEG", FRIDAY, o=-2.0, h=-1.0, l=-3.0, c=-1.5),
        bar("CLASH", FRIDAY, c=10.5),
        bar("CLASH", FRIDAY, c=10.9),  # the same key with another value: which one is true?
        bar("TWICE", FRIDAY),
        bar("TWICE", FRIDAY),  # an identical repeat: a plain duplicate
    ]
    with serve({FRIDAY: answer}) as url:
        cfg = settings(tmp_path, url)
        report = fetch(cfg, FRIDAY)
    res = report.sessions[0]
    assert res.status == SessionOutcome.DONE and report.status == "ok"
    assert (res.source_rows, res.duplicates, res.quarantined, res.bronze_rows) == (8, 1, 5, 2)
    stored = objects(cfg, "bronze/raw_ohlcv/")
    assert sorted(stored["symbol"]) == ["GOOD", "TWICE"] and set(stored["date"]) == {FRIDAY}
    files = [o.key for o in LocalStore(cfg.lake_uri).list("bronze/raw_ohlcv/")]
    assert not any(f"date={SATURDAY}" in k for k in files)  # no daily file for a closed day
    q = objects(cfg, "bronze/_quarantine/")
    reasons = sorted(zip(q["symbol"], q["reason"], strict=True))
    assert reasons == [
        ("CLASH", "conflicting duplicates: the same key twice in one answer with different values"),
        ("CLASH", "conflicting duplicates: the same key twice in one answer with different values"),
        ("NEG", "price <= 0"),
        ("SAT", f"dated {SATURDAY}, not an NYSE session (the session asked for is {FRIDAY})"),
        ("ZERO", "price <= 0"),
    ]


def test_a_doubled_price_without_a_split_is_listed_as_suspect_and_a_split_explains_a_halving(tmp_path):
    days = {
        THURSDAY: [bar("UP", THURSDAY, c=10.0), bar("HALF", THURSDAY, c=10.0), bar("CALM", THURSDAY, c=10.0)],
        FRIDAY: [bar("UP", FRIDAY, c=20.5), bar("HALF", FRIDAY, c=5.0), bar("CALM", FRIDAY, c=10.4)],
    }
    split = {"ticker": "HALF", "execution_date": FRIDAY.isoformat(), "split_from": 1, "split_to": 2, "id": "s1"}
    with serve(days, [split]) as url:
        cfg = settings(tmp_path, url)
        assert fetch(cfg, THURSDAY).suspects.empty
        report = fetch(cfg, FRIDAY)  # the previous close comes from Thursday's stored session
    assert report.status == "ok" and report.summary()["suspect"] == 1
    assert report.suspects[["symbol", "date", "previous_close", "close", "ratio"]].values.tolist() == [
        ["UP", FRIDAY, 10.0, 20.5, 2.05]
    ]
    assert report.suspects["check"].tolist() == [f"python -m runner run 01_fetch -p rebase {THURSDAY}"]
    assert report.to_frame()["suspect"].tolist() == ["UP x2.05"]
    assert sorted(objects(cfg, "bronze/raw_ohlcv/").query("date == @FRIDAY")["symbol"]) == ["CALM", "HALF", "UP"]
    listed = objects(cfg, "bronze/_suspect/")  # what 05_monitoring lists
    assert listed["symbol"].tolist() == ["UP"] and listed["ratio"].tolist() == [2.05]


def test_a_move_inside_a_backfilled_range_is_suspect_unless_a_split_explains_it(tmp_path):
    days = cal.sessions_between(dt.date(2025, 10, 6), FRIDAY)
    closes = {"JUMP": [10.0] * 5 + [25.0] * 5, "SPLIT": [10.0] * 5 + [1.0] * 5}  # x2.5 and x0.1 on the 6th session
    ranges = {sym: [bar(sym, d, c=c) for d, c in zip(days, cs, strict=True)] for sym, cs in closes.items()}
    split = {"ticker": "SPLIT", "execution_date": days[5].isoformat(), "split_from": 10, "split_to": 1, "id": "s2"}
    with serve({}, [split], ranges) as url:
        cfg = settings(tmp_path, url)
        params = FetchParams(
            start=days[0].isoformat(), end=FRIDAY.isoformat(), symbols="JUMP,SPLIT", write_postgres=False
        )
        report = asyncio.run(run_fetch(cfg, params, progress=False, now=EVENING))
    assert report.suspects[["symbol", "date", "ratio"]].values.tolist() == [["JUMP", days[5], 2.5]]
    assert report.to_frame().set_index("session").loc[days[5], "suspect"] == "JUMP x2.5"
