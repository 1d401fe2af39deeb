"""The offline server plays the vendor's plans (``--plan free|starter|developer``): one test per behaviour."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from condvest.calendar import NEW_YORK, session_date_from_epoch_ms
from condvest.offline.market import SyntheticMarket
from condvest.offline.plans import TIMEFRAME_MSG, TODAY_MSG
from condvest.offline.server import serve_in_thread

KEY = "plan-key"
FRIDAY = dt.date(2025, 10, 17)
EVENING = dt.datetime(2025, 10, 17, 18, 30, tzinfo=NEW_YORK)  # after the close, before the day has ended
GROUPED = "/v2/aggs/grouped/locale/us/market/stocks/{}"


def _get(srv, path: str, **query) -> tuple[int, dict, dict]:
    req = urllib.request.Request(srv.url(path, **query))
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


@pytest.fixture(scope="module")
def market():
    return SyntheticMarket(n_symbols=6, seed=3)


def test_free_refuses_today_before_the_end_of_day_with_the_vendors_body(market):
    with serve_in_thread(market, api_key=KEY, plan="free", now=EVENING) as srv:
        status, _, doc = _get(srv, GROUPED.format(FRIDAY))
        assert status == 403 and doc["status"] == "NOT_AUTHORIZED" and doc["message"] == TODAY_MSG
        assert doc["request_id"]
        status, _, doc = _get(srv, GROUPED.format(FRIDAY - dt.timedelta(days=1)))
        assert status == 200 and doc["resultsCount"] > 0
        srv.set_now(EVENING + dt.timedelta(hours=6))  # the day has ended: Friday is yesterday
        status, _, doc = _get(srv, GROUPED.format(FRIDAY))
        assert status == 200 and doc["resultsCount"] > 0


@pytest.mark.parametrize(("plan", "years"), [("free", 2), ("starter", 5), ("developer", 10)])
def test_history_beyond_the_plan_and_future_dates_are_refused_as_a_timeframe(market, plan, years):
    with serve_in_thread(market, api_key=KEY, plan=plan, now=EVENING) as srv:
        old = dt.date(FRIDAY.year - years, 10, 1)
        status, _, doc = _get(srv, GROUPED.format(old))
        assert status == 403 and doc["message"] == TIMEFRAME_MSG
        sym = market.symbols[0]
        status, _, doc = _get(srv, f"/v2/aggs/ticker/{sym}/range/1/day/{old}/{FRIDAY}")
        assert status == 403 and doc["message"] == TIMEFRAME_MSG
        status, _, doc = _get(srv, GROUPED.format(FRIDAY + dt.timedelta(days=3)))
        assert status == 403 and doc["message"] == TIMEFRAME_MSG
        inside = dt.date(FRIDAY.year - years + 1, 10, 1)
        status, _, _ = _get(srv, f"/v2/aggs/ticker/{sym}/range/1/day/{inside}/{FRIDAY}")
        assert status == 200


def test_free_allows_five_requests_a_minute_then_429_without_retry_after(market):
    with serve_in_thread(market, api_key=KEY, plan="free", now=EVENING, minute=1.0) as srv:
        answers = [_get(srv, "/v1/marketstatus/now") for _ in range(7)]
        assert [a[0] for a in answers] == [200] * 5 + [429, 429]
        assert all("Retry-After" not in h for _, h, _ in answers) and "maximum requests" in answers[5][2]["error"]
        time.sleep(1.05)  # the (shortened) minute has passed
        assert _get(srv, "/v1/marketstatus/now")[0] == 200


@pytest.mark.parametrize("plan", ["starter", "developer"])
def test_delayed_plans_answer_today_as_delayed(market, plan):
    with serve_in_thread(market, api_key=KEY, plan=plan, now=EVENING) as srv:
        status, _, doc = _get(srv, GROUPED.format(FRIDAY))
        assert status == 200 and doc["status"] == "DELAYED" and doc["resultsCount"] > 0
        assert _get(srv, GROUPED.format(FRIDAY - dt.timedelta(days=1)))[2]["status"] == "OK"


def test_the_newest_session_is_revised_after_the_next_close(market):
    day = dt.date(2025, 10, 16)
    with serve_in_thread(market, api_key=KEY, plan="starter", now=dt.datetime(2025, 10, 17, 8, tzinfo=NEW_YORK)) as srv:
        first = {b["T"]: b for b in _get(srv, GROUPED.format(day))[2]["results"]}
        srv.set_now(EVENING)  # Friday has closed: Thursday's bars are final
        final = {b["T"]: b for b in _get(srv, GROUPED.format(day))[2]["results"]}
        assert first.keys() == final.keys()
        assert all(first[s]["v"] < final[s]["v"] and first[s]["n"] <= final[s]["n"] for s in final)
        assert all((first[s]["o"], first[s]["c"]) == (final[s]["o"], final[s]["c"]) for s in final)
        assert final == {b["T"]: b for b in market.grouped(day, FRIDAY)}
    with serve_in_thread(market, api_key=KEY, now=dt.datetime(2025, 10, 17, 8, tzinfo=NEW_YORK)) as srv:
        assert _get(srv, GROUPED.format(day))[2]["results"] == market.grouped(day, day)  # unlimited: final at once


def test_a_delisted_symbol_leaves_the_answers_after_its_last_session(market):
    with serve_in_thread(market, api_key=KEY, now=EVENING) as srv:
        gone = market.symbols[1]
        srv.delist(gone, dt.date(2025, 10, 10))
        before = [b["T"] for b in _get(srv, GROUPED.format(dt.date(2025, 10, 10)))[2]["results"]]
        after = [b["T"] for b in _get(srv, GROUPED.format(dt.date(2025, 10, 13)))[2]["results"]]
        assert gone in before and gone not in after
        bars = _get(srv, f"/v2/aggs/ticker/{gone}/range/1/day/2025-10-01/2025-10-17")[2]["results"]
        assert max(session_date_from_epoch_ms(b["t"]) for b in bars) == dt.date(2025, 10, 10)
        listed = [r["ticker"] for r in _get(srv, "/v3/reference/tickers", limit=1000)[2]["results"]]
        assert gone not in listed and market.symbols[0] in listed


def test_next_url_names_the_vendors_host_on_a_vendor_plan(market):
    sym = market.symbols[0]
    with serve_in_thread(market, api_key=KEY, plan="developer", now=EVENING) as srv:
        doc = _get(srv, f"/v2/aggs/ticker/{sym}/range/1/day/2025-09-01/2025-10-17", limit=5)[2]
        assert doc["next_url"].startswith("https://api.massive.com/v2/aggs/ticker/")
    with serve_in_thread(market, api_key=KEY, now=EVENING) as srv:
        doc = _get(srv, f"/v2/aggs/ticker/{sym}/range/1/day/2025-09-01/2025-10-17", limit=5)[2]
        assert doc["next_url"].startswith(srv.base_url)


def test_serve_takes_the_plan_on_the_command_line():
    out = subprocess.run(
        [sys.executable, "-m", "condvest.offline", "serve", "--plan", "gold"], capture_output=True, text=True
    )
    assert out.returncode != 0 and "free" in out.stderr and "developer" in out.stderr
