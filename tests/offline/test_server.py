"""The offline Polygon server: endpoint shapes, paging, auth, the clock, and every fault switch."""

from __future__ import annotations

import asyncio
import datetime as dt
import http.client
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from condvest.calendar import UTC, ny_close_epoch_ms, ny_midnight_epoch_ms, session_date_from_epoch_ms
from condvest.errors import ParameterError
from condvest.offline.faults import FAULT_KINDS

GROUPED = "/v2/aggs/grouped/locale/us/market/stocks/{}"
DAY = dt.date(2024, 1, 5)


def _get(url: str, headers: dict | None = None, timeout: float = 5.0) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def _json(url: str, **kw) -> tuple[int, dict]:
    status, _, body = _get(url, **kw)
    return status, json.loads(body)


def _post(url: str, doc: dict | None, method: str = "POST") -> tuple[int, dict]:
    data = json.dumps(doc).encode() if doc is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _bar_ok(b: dict) -> bool:
    return b["l"] <= min(b["o"], b["c"]) and max(b["o"], b["c"]) <= b["h"] and b["v"] >= 0


def _range_path(symbol: str, start, end) -> str:
    return f"/v2/aggs/ticker/{symbol}/range/1/day/{start}/{end}"


def _follow(server, url: str) -> list[dict]:
    """Every page of a range or tickers answer, appending the apiKey to next_url as a Polygon client does."""
    pages = []
    while url:
        status, doc = _json(url)
        assert status == 200 and doc["status"] == "OK", doc
        pages.append(doc)
        nxt = doc.get("next_url")
        if nxt:
            assert nxt.startswith(server.base_url + "/") and "apiKey" not in nxt and "cursor=" in nxt
            nxt += "&apiKey=" + server.api_key
        url = nxt
    return pages


# -- shapes -------------------------------------------------------------------------------------------


def test_grouped_daily_shape_and_values(polygon_server, synthetic_market):
    status, doc = _json(polygon_server.url(GROUPED.format(DAY), adjusted="true"))
    assert status == 200
    assert set(doc) == {"queryCount", "resultsCount", "adjusted", "status", "request_id", "results"}
    assert doc["status"] == "OK" and doc["adjusted"] is True and len(doc["request_id"]) == 32
    assert doc["resultsCount"] == doc["queryCount"] == len(doc["results"]) > 0
    assert doc["results"] == synthetic_market.grouped(DAY)
    for b in doc["results"]:
        assert set(b) == {"T", "o", "h", "l", "c", "v", "vw", "n", "t"}
        assert b["t"] == ny_close_epoch_ms(DAY) and _bar_ok(b)


@pytest.mark.parametrize("day", ["2024-01-06", "2024-07-04", "2024-12-25", "1962-12-25"])
def test_grouped_on_a_non_session_is_ok_and_empty(polygon_server, day):
    status, doc = _json(polygon_server.url(GROUPED.format(day), adjusted="true"))
    assert status == 200 and doc["status"] == "OK"
    assert doc["resultsCount"] == 0 and doc["queryCount"] == 0 and "results" not in doc


def test_bars_appear_after_the_close_on_the_server_clock(polygon_server):
    polygon_server.set_now(dt.datetime(2024, 1, 5, 15, 0, tzinfo=UTC))  # 10:00 New York
    assert _json(polygon_server.url(GROUPED.format(DAY)))[1]["resultsCount"] == 0
    polygon_server.set_now(dt.datetime(2024, 1, 5, 21, 5, tzinfo=UTC))  # 16:05 New York
    assert _json(polygon_server.url(GROUPED.format(DAY)))[1]["resultsCount"] > 0
    assert _json(polygon_server.url(GROUPED.format("2024-01-08")))[1]["resultsCount"] == 0
    with pytest.raises(ParameterError):
        polygon_server.set_now(dt.datetime(2024, 1, 5, 21, 5))  # naive: refused


def test_grouped_bad_date_is_a_400(polygon_server):
    status, doc = _json(polygon_server.url(GROUPED.format("2024-13-01")))
    assert status == 400 and doc["status"] == "ERROR" and "error" in doc


def test_range_shape_and_paging_through_next_url(polygon_server, synthetic_market):
    sym = synthetic_market.symbols[3]
    start, end = dt.date(2023, 11, 1), dt.date(2024, 1, 31)
    url = polygon_server.url(_range_path(sym, start, end), adjusted="true", sort="asc", limit=10)
    pages = _follow(polygon_server, url)
    assert len(pages) > 3
    first = pages[0]
    assert set(first) == {
        "ticker",
        "queryCount",
        "resultsCount",
        "adjusted",
        "results",
        "status",
        "request_id",
        "count",
        "next_url",
    }
    assert first["ticker"] == sym and first["resultsCount"] == first["queryCount"] == first["count"] == 10
    assert "next_url" not in pages[-1]
    bars = [b for p in pages for b in p["results"]]
    assert bars == synthetic_market.range_bars(sym, start, end)
    assert all(b["t"] == ny_midnight_epoch_ms(session_date_from_epoch_ms(b["t"])) for b in bars)
    assert all(set(b) == {"o", "h", "l", "c", "v", "vw", "n", "t"} for b in bars)
    # the log has the dates asked for and never the key
    recs = [r for r in polygon_server.requests if r.endpoint == "range"]
    assert recs[0].date == start and recs[0].to_date == end and recs[0].symbol == sym
    assert all("apiKey" not in r.path_qs and "apiKey" not in r.query for r in polygon_server.requests)


def test_range_descending_and_epoch_ms_bounds(polygon_server, synthetic_market):
    sym = synthetic_market.symbols[3]
    start, end = dt.date(2024, 2, 1), dt.date(2024, 3, 29)
    url = polygon_server.url(
        _range_path(sym, ny_midnight_epoch_ms(start), ny_midnight_epoch_ms(end)), sort="desc", limit=7
    )
    bars = [b for p in _follow(polygon_server, url) for b in p["results"]]
    assert bars == list(reversed(synthetic_market.range_bars(sym, start, end)))


def test_range_of_one_day_unknown_ticker_and_bad_timespan(polygon_server, synthetic_market):
    sym = synthetic_market.symbols[0]
    status, doc = _json(polygon_server.url(_range_path(sym, DAY, DAY), adjusted="true"))
    assert status == 200 and doc["resultsCount"] == 1 and doc["results"][0]["t"] == ny_midnight_epoch_ms(DAY)
    status, doc = _json(polygon_server.url(_range_path("NOPE", DAY, DAY)))
    assert status == 200 and doc["resultsCount"] == 0 and "results" not in doc and doc["status"] == "OK"
    status, doc = _json(polygon_server.url(_range_path(sym, DAY, "2024-01-06")))  # weekend inside: one bar
    assert doc["resultsCount"] == 1
    status, doc = _json(polygon_server.url(f"/v2/aggs/ticker/{sym}/range/1/minute/{DAY}/{DAY}"))
    assert status == 400 and doc["status"] == "ERROR"
    for bad in (_range_path(sym, "99999999999999999999", DAY), _range_path(sym, "2024-02-30", DAY)):
        status, doc = _json(polygon_server.url(bad))
        assert status == 400 and doc["status"] == "ERROR" and doc["error"]


@pytest.mark.parametrize(
    ("now", "market", "early", "after"),
    [
        (dt.datetime(2024, 1, 10, 15, 0, tzinfo=UTC), "open", False, False),
        (dt.datetime(2024, 1, 10, 12, 0, tzinfo=UTC), "extended-hours", True, False),
        (dt.datetime(2024, 1, 10, 22, 0, tzinfo=UTC), "extended-hours", False, True),
        (dt.datetime(2024, 1, 11, 2, 0, tzinfo=UTC), "closed", False, False),
        (dt.datetime(2024, 1, 13, 15, 0, tzinfo=UTC), "closed", False, False),
        (dt.datetime(2024, 7, 4, 15, 0, tzinfo=UTC), "closed", False, False),
        (dt.datetime(2024, 7, 10, 13, 45, tzinfo=UTC), "open", False, False),  # 09:45 EDT
        (dt.datetime(2024, 11, 29, 18, 30, tzinfo=UTC), "extended-hours", False, True),  # half day, 13:30
    ],
)
def test_market_status_follows_the_clock(polygon_server, now, market, early, after):
    polygon_server.set_now(now)
    status, doc = _json(polygon_server.url("/v1/marketstatus/now"))
    assert status == 200
    assert doc["market"] == market and doc["earlyHours"] is early and doc["afterHours"] is after
    assert set(doc["exchanges"]) == {"nyse", "nasdaq", "otc"} and doc["exchanges"]["nyse"] == market
    assert set(doc["currencies"]) == {"fx", "crypto"}
    assert dt.datetime.fromisoformat(doc["serverTime"]) == now


def test_reference_tickers_page_through_every_symbol(polygon_server, synthetic_market):
    url = polygon_server.url("/v3/reference/tickers", market="stocks", active="true", limit=7)
    pages = _follow(polygon_server, url)
    assert len(pages) == 3
    results = [r for p in pages for r in p["results"]]
    assert [r["ticker"] for r in results] == synthetic_market.symbols
    keys = {
        "ticker",
        "name",
        "market",
        "locale",
        "primary_exchange",
        "type",
        "active",
        "currency_name",
        "cik",
        "composite_figi",
        "share_class_figi",
        "last_updated_utc",
    }
    assert all(set(r) == keys and r["market"] == "stocks" and r["active"] is True for r in results)
    assert pages[0]["count"] == 7
    status, doc = _json(polygon_server.url("/v3/reference/tickers", ticker=synthetic_market.symbols[2]))
    assert [r["ticker"] for r in doc["results"]] == [synthetic_market.symbols[2]]
    status, doc = _json(polygon_server.url("/v3/reference/tickers", market="crypto"))
    assert status == 200 and doc["results"] == [] and "next_url" not in doc


def test_reference_tickers_as_of_a_date_lists_only_listed_symbols(polygon_server, synthetic_market):
    status, doc = _json(polygon_server.url("/v3/reference/tickers", date="1970-01-02", limit=1000))
    listed = [s for s in synthetic_market.symbols if synthetic_market.listing_date(s) <= dt.date(1970, 1, 2)]
    assert [r["ticker"] for r in doc["results"]] == listed and 0 < len(listed) < 20


# -- auth and errors -------------------------------------------------------------------------------------


def test_auth_by_query_or_bearer_else_401(polygon_server):
    path = "/v1/marketstatus/now"
    status, doc = _json(polygon_server.url(path, auth=False))
    assert status == 401 and doc["status"] == "NOT_AUTHORIZED" and doc["message"] and doc["request_id"]
    status, doc = _json(polygon_server.base_url + path + "?apiKey=wrong")
    assert status == 401 and doc["status"] == "NOT_AUTHORIZED"
    status, doc = _json(polygon_server.url(path, auth=False), headers={"Authorization": "Bearer wrong"})
    assert status == 401
    assert _get(polygon_server.url(path, auth=False), headers={"Authorization": "Bearer test-key"})[0] == 200
    assert _get(polygon_server.url(path))[0] == 200
    assert [r.authorization for r in polygon_server.requests] == ["none", "none", "none", "bearer", "query"]
    assert [r.status for r in polygon_server.requests] == [401, 401, 401, 200, 200]
    assert all("wrong" not in r.path_qs for r in polygon_server.requests)


def test_unknown_path_is_a_404_error(polygon_server):
    status, doc = _json(polygon_server.url("/v2/nothing/here"))
    assert status == 404 and doc["status"] == "ERROR" and doc["error"]


def test_an_aiohttp_client_with_a_bearer_token_pages_like_against_polygon(polygon_server, synthetic_market):
    sym = synthetic_market.symbols[3]

    async def fetch() -> list[dict]:
        headers = {"Authorization": f"Bearer {polygon_server.api_key}"}
        out, url = [], polygon_server.base_url + _range_path(sym, "2023-06-01", "2023-12-31")
        params: dict | None = {"adjusted": "true", "sort": "asc", "limit": "50"}
        async with aiohttp.ClientSession(headers=headers) as session:
            while url:
                async with session.get(url, params=params) as resp:
                    doc = await resp.json()
                out.extend(doc["results"])
                url, params = doc.get("next_url"), None
        return out

    bars = asyncio.run(fetch())
    assert bars == synthetic_market.range_bars(sym, dt.date(2023, 6, 1), dt.date(2023, 12, 31))


# -- faults -----------------------------------------------------------------------------------------------


def test_every_fault_kind_is_known():
    assert set(FAULT_KINDS) == {
        "http_429",
        "http_429_no_retry_after",
        "http_5xx",
        "connection_reset",
        "truncated_json",
        "error_200",
        "slow_body",
        "duplicate_bars",
        "bad_bars",
        "empty_session",
        "halt",
        "odd_tickers",
        "misdated",
    }


def test_misdated_bars_are_stamped_on_another_day(polygon_server):
    polygon_server.faults.add("misdated", path="/grouped/", times=1, count=2)
    _, doc = _json(polygon_server.url(GROUPED.format(DAY)))
    days = [session_date_from_epoch_ms(b["t"]) for b in doc["results"]]
    assert days[:2] == [DAY - dt.timedelta(days=1)] * 2 and set(days[2:]) == {DAY}


def test_429_with_and_without_retry_after(polygon_server):
    url = polygon_server.url(GROUPED.format(DAY))
    polygon_server.faults.add("http_429", times=1, retry_after=2)
    polygon_server.faults.add("http_429_no_retry_after", times=1)
    status, headers, body = _get(url)
    assert status == 429 and headers["Retry-After"] == "2" and json.loads(body)["status"] == "ERROR"
    status, headers, body = _get(url)
    assert status == 429 and "Retry-After" not in headers
    assert _get(url)[0] == 200
    assert polygon_server.faults.fired_kinds() == ["http_429", "http_429_no_retry_after"]
    assert [r.fault for r in polygon_server.requests] == ["http_429", "http_429_no_retry_after", None]


@pytest.mark.parametrize("code", [500, 502, 503])
def test_5xx(polygon_server, code):
    polygon_server.faults.add("http_5xx", status=code, times=1)
    status, headers, body = _get(polygon_server.url(GROUPED.format(DAY)))
    assert status == code
    if code == 500:
        assert json.loads(body)["status"] == "ERROR"
    else:
        assert headers["Content-Type"].startswith("text/html")


def test_connection_reset_mid_response(polygon_server):
    polygon_server.faults.add("connection_reset", times=1)
    with pytest.raises((http.client.IncompleteRead, ConnectionError, http.client.RemoteDisconnected)):
        _get(polygon_server.url(GROUPED.format(DAY)))
    assert _get(polygon_server.url(GROUPED.format(DAY)))[0] == 200


def test_connection_reset_seen_by_aiohttp(polygon_server):
    polygon_server.faults.add("connection_reset", times=1)

    async def fetch() -> None:
        async with aiohttp.ClientSession() as session:
            async with session.get(polygon_server.url(GROUPED.format(DAY))) as resp:
                await resp.read()

    with pytest.raises(aiohttp.ClientError):
        asyncio.run(fetch())


def test_truncated_json_and_error_inside_a_200(polygon_server):
    url = polygon_server.url(GROUPED.format(DAY))
    polygon_server.faults.add("truncated_json", times=1)
    polygon_server.faults.add("error_200", times=1)
    status, _, body = _get(url)
    assert status == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(body)
    status, doc = _json(url)
    assert status == 200 and doc["status"] == "ERROR" and doc["error"] and "results" not in doc


def test_slow_body_stalls_after_the_headers(polygon_server):
    url = polygon_server.url(GROUPED.format(DAY))
    polygon_server.faults.add("slow_body", times=2, delay=0.6)
    req = urllib.request.urlopen(url, timeout=0.3)  # headers arrive in time
    assert req.status == 200
    with pytest.raises(TimeoutError):
        req.read()
    req.close()
    t0 = time.monotonic()
    status, doc = _json(url, timeout=5)
    assert status == 200 and doc["resultsCount"] > 0 and time.monotonic() - t0 >= 0.5


def test_duplicate_bars_in_grouped(polygon_server, synthetic_market):
    polygon_server.faults.add("duplicate_bars", count=2, times=1)
    doc = _json(polygon_server.url(GROUPED.format(DAY)))[1]
    clean = synthetic_market.grouped(DAY)
    assert doc["resultsCount"] == len(doc["results"]) == len(clean) + 2
    keys = [(b["T"], b["t"]) for b in doc["results"]]
    assert len(set(keys)) == len(clean)


def test_duplicate_bars_within_a_page_and_across_the_page_boundary(polygon_server, synthetic_market):
    sym = synthetic_market.symbols[3]
    polygon_server.faults.add("duplicate_bars", path="/range/", count=1, times=1)
    url = polygon_server.url(_range_path(sym, "2024-01-02", "2024-01-31"), limit=5)
    pages = _follow(polygon_server, url)
    assert pages[0]["results"][0] == pages[0]["results"][1]  # twice in one response
    assert pages[1]["results"][0] == pages[0]["results"][-1]  # repeated across the boundary
    unique = {b["t"]: b for p in pages for b in p["results"]}
    assert list(unique.values()) == synthetic_market.range_bars(sym, dt.date(2024, 1, 2), dt.date(2024, 1, 31))


def test_bad_bars_break_the_invariants(polygon_server):
    polygon_server.faults.add("bad_bars", count=3, times=1)
    doc = _json(polygon_server.url(GROUPED.format(DAY)))[1]
    bad = [b for b in doc["results"] if not _bar_ok(b)]
    assert len(bad) == 3 and any(b["v"] < 0 for b in bad)
    details = polygon_server.faults.fired[-1]["details"]["broken"]
    assert sorted(d["symbol"] for d in details) == sorted(b["T"] for b in bad)
    assert all(_bar_ok(b) for b in _json(polygon_server.url(GROUPED.format(DAY)))[1]["results"])


def test_empty_answer_on_a_real_session(polygon_server, synthetic_market):
    polygon_server.faults.add("empty_session", path="2024-01-05")
    doc = _json(polygon_server.url(GROUPED.format(DAY)))[1]
    assert doc["status"] == "OK" and doc["resultsCount"] == 0 and "results" not in doc
    assert _json(polygon_server.url(GROUPED.format("2024-01-04")))[1]["resultsCount"] > 0
    doc = _json(polygon_server.url(_range_path(synthetic_market.symbols[0], DAY, DAY)))[1]
    assert doc["resultsCount"] == 0  # the rule never runs out (times=None)


def test_data_faults_skip_endpoints_without_bars(polygon_server):
    polygon_server.faults.add("bad_bars", times=1)
    assert _json(polygon_server.url("/v1/marketstatus/now"))[0] == 200
    assert polygon_server.faults.fired == [] and polygon_server.faults.rules[0].times == 1


def test_faults_scoped_by_path_and_limited_in_count(polygon_server):
    polygon_server.faults.add("http_5xx", status=503, path="2024-01-05", times=2)
    assert _get(polygon_server.url(GROUPED.format("2024-01-04")))[0] == 200
    assert [_get(polygon_server.url(GROUPED.format(DAY)))[0] for _ in range(3)] == [503, 503, 200]


def test_faults_through_the_control_endpoint(polygon_server):
    ctl = polygon_server.base_url + "/_control/faults"
    status, doc = _post(ctl, {"faults": [{"kind": "http_429", "path": "/grouped/", "times": 1, "retry_after": 0}]})
    assert status == 200 and doc["faults"][0]["kind"] == "http_429"
    assert polygon_server.faults.rules[0].path == "/grouped/"
    status, headers, _ = _get(polygon_server.url(GROUPED.format(DAY)))
    assert status == 429 and headers["Retry-After"] == "0"
    status, doc = _post(ctl, {"kind": "error_200"})
    assert status == 200 and [f["kind"] for f in doc["faults"]] == ["http_429", "error_200"]
    assert _json(ctl)[1]["fired"][0]["kind"] == "http_429"
    assert _post(ctl, {"kind": "no_such_fault"})[0] == 400
    assert _post(ctl, None, method="DELETE") == (200, _json(ctl)[1]) and polygon_server.faults.rules == []
    status, doc = _post(polygon_server.base_url + "/_control/clock", {"now": "2024-01-10T15:00:00+00:00"})
    assert status == 200 and _json(polygon_server.url("/v1/marketstatus/now"))[1]["market"] == "open"
    status, doc = _json(polygon_server.base_url + "/_control/requests")
    assert doc["requests"][-1]["path"] == "/v1/marketstatus/now"
    assert all("apiKey" not in r["path_qs"] for r in doc["requests"])


def test_requests_log_dates_of_grouped_and_range_requests(polygon_server, synthetic_market):
    _get(polygon_server.url(GROUPED.format(DAY), adjusted="true"))
    _get(polygon_server.url(_range_path(synthetic_market.symbols[1], "2024-01-03", "2024-01-03"), adjusted="true"))
    g, r = polygon_server.requests
    assert (g.endpoint, g.date, g.status) == ("grouped", DAY, 200)
    assert g.path_qs == GROUPED.format(DAY) + "?adjusted=true" and g.query == {"adjusted": "true"}
    assert (r.endpoint, r.date, r.to_date, r.symbol) == (
        "range",
        dt.date(2024, 1, 3),
        dt.date(2024, 1, 3),
        synthetic_market.symbols[1],
    )


def test_cli_serves_until_stopped(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "condvest.offline",
            "serve",
            "--port",
            "0",
            "--symbols",
            "5",
            "--seed",
            "3",
            "--api-key",
            "cli-key",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        line = proc.stdout.readline()
        url = line.split(" at ", 1)[1].split(" ", 1)[0]
        assert urlsplit(url).hostname == "127.0.0.1"
        status, doc = _json(url + "/v3/reference/tickers?apiKey=cli-key")
        assert status == 200 and len(doc["results"]) == 5
        assert parse_qs(urlsplit(url + "/x?a=1").query) == {"a": ["1"]}
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()
