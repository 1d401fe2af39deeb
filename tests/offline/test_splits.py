"""The offline market's splits: traded prices jump at a split, ``adjusted=true`` answers are on the basis of
the server's day, and ``/v3/reference/splits`` filters and pages like Polygon's."""

from __future__ import annotations

import datetime as dt
import json
import urllib.request

import pytest

from condvest.errors import ParameterError
from condvest.offline import Split, SyntheticMarket, serve_in_thread

NY = dt.timezone(dt.timedelta(hours=-4))
E1, E2 = dt.date(2025, 10, 8), dt.date(2025, 10, 10)
BASE = SyntheticMarket(n_symbols=5, seed=3)
A, B, C = BASE.symbols[0], BASE.symbols[1], BASE.symbols[2]
SPLITS = (Split(A, E1, 1, 2), Split(B, E2, 10, 1), Split(A, dt.date(2025, 10, 15), 2, 3))
START, END = dt.date(2025, 10, 1), dt.date(2025, 10, 17)


@pytest.fixture(scope="module")
def market():
    return SyntheticMarket(n_symbols=5, seed=3, splits=SPLITS)


@pytest.fixture(scope="module")
def server(market):
    with serve_in_thread(market, api_key="k") as srv:
        yield srv


def get(server, path: str, **params) -> dict:
    with urllib.request.urlopen(server.url(path, **params), timeout=5) as r:
        return json.loads(r.read())


def closes(rows: list[dict]) -> list[float]:
    return [r["c"] for r in rows]


def test_traded_prices_jump_at_the_split_and_adjusted_prices_do_not(market):
    plain = BASE.range_bars(A, START, END)
    traded = market.range_bars(A, START, END)
    adjusted = market.range_bars(A, START, END, as_of=END)
    days = [dt.date(2025, 10, d) for d in (1, 2, 3, 6, 7, 8, 9, 10, 13, 14, 15, 16, 17)]
    for day, p, t, a in zip(days, plain, traded, adjusted, strict=True):
        factor = (0.5 if day >= E1 else 1.0) * (2 / 3 if day >= dt.date(2025, 10, 15) else 1.0)
        assert t["c"] == pytest.approx(p["c"] * factor, rel=1e-12)
        assert a["c"] == pytest.approx(p["c"] / 3, rel=1e-12)  # every bar on today's basis: 1/2 * 2/3
        assert a["v"] == pytest.approx(p["v"] * 3, rel=1e-12)
        assert a["l"] <= min(a["o"], a["c"]) <= max(a["o"], a["c"]) <= a["h"]
    reverse = market.frame(START, END, [B], as_of=END)
    assert reverse["close"].tolist() == pytest.approx([b["c"] * 10 for b in BASE.range_bars(B, START, END)])
    assert market.range_bars(C, START, END, as_of=END) == BASE.range_bars(C, START, END)  # no split: unchanged
    assert market.range_bars(A, START, dt.date(2025, 10, 7), as_of=dt.date(2025, 10, 7)) == plain[:5]
    with pytest.raises(ParameterError):
        SyntheticMarket(n_symbols=5, seed=3, splits=[Split(A, E1, 0, 2)])


def test_adjusted_answers_follow_the_server_day(server, market):
    server.set_now(dt.datetime.combine(dt.date(2025, 10, 9), dt.time(21), tzinfo=NY))
    try:
        path = f"/v2/aggs/ticker/{A}/range/1/day/{START}/{END}"
        before_second = get(server, path)["results"]
        assert closes(before_second) == closes(market.range_bars(A, START, dt.date(2025, 10, 9), as_of=E1))
        assert closes(get(server, path, adjusted="false")["results"]) == closes(
            market.range_bars(A, START, dt.date(2025, 10, 9))
        )
        server.set_now(dt.datetime.combine(END, dt.time(21), tzinfo=NY))
        assert closes(get(server, path)["results"]) == closes(market.range_bars(A, START, END, as_of=END))
        grouped = get(server, f"/v2/aggs/grouped/locale/us/market/stocks/{START}")["results"]
        by_ticker = {r["T"]: r["c"] for r in grouped}
        assert by_ticker[B] == market.range_bars(B, START, START, as_of=END)[0]["c"]
        raw = get(server, f"/v2/aggs/grouped/locale/us/market/stocks/{START}", adjusted="false")["results"]
        assert {r["T"]: r["c"] for r in raw}[B] == BASE.range_bars(B, START, START)[0]["c"]
    finally:
        server.set_now(None)


def test_splits_reference_filters_and_pages(server):
    path = "/v3/reference/splits"
    one = get(server, path, execution_date=E1.isoformat())
    assert one["status"] == "OK" and [r["ticker"] for r in one["results"]] == [A]
    assert set(one["results"][0]) == {"execution_date", "id", "split_from", "split_to", "ticker"}
    assert one["results"][0]["split_from"] == 1 and one["results"][0]["split_to"] == 2
    assert get(server, path, execution_date="2025-10-09")["results"] == []
    window = get(server, path, **{"execution_date.gte": "2025-10-09", "execution_date.lte": "2025-10-15"})
    assert [(r["ticker"], r["execution_date"]) for r in window["results"]] == [(B, "2025-10-10"), (A, "2025-10-15")]
    assert [r["execution_date"] for r in get(server, path, ticker=A)["results"]] == ["2025-10-08", "2025-10-15"]
    seen, page = [], get(server, path, limit=1)
    while True:
        seen += page["results"]
        if "next_url" not in page:
            break
        assert "apiKey" not in page["next_url"]
        with urllib.request.urlopen(page["next_url"] + "&apiKey=k", timeout=5) as r:
            page = json.loads(r.read())
    assert [(r["ticker"], r["execution_date"]) for r in seen] == [
        (s.symbol, s.execution_date.isoformat()) for s in SPLITS
    ]
    assert [r.endpoint for r in server.requests][-1] == "splits"
