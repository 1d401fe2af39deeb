"""Payloads of the offline Polygon server's endpoints (pure: state and query in, JSON dict out).

Shapes follow api.polygon.io: a grouped-daily answer on a day without bars has ``resultsCount: 0``
and no ``results`` key; long ranges and ticker lists page through an absolute ``next_url`` that carries
a ``cursor`` and never the apiKey (the client appends its key, as with Polygon).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

from condvest.calendar import (
    FIRST_SUPPORTED,
    NEW_YORK,
    is_session,
    ny_close_epoch_ms,
    ny_midnight_epoch_ms,
    session_date_from_epoch_ms,
    sessions_between,
)
from condvest.errors import ParameterError
from condvest.offline.faults import ODD_TICKERS
from condvest.offline.plans import provisional

if TYPE_CHECKING:
    from aiohttp import web

    from condvest.offline.faults import Fault

_LAST = dt.date(2099, 12, 31)
_WORDS = (
    "Apex",
    "Blue",
    "Cedar",
    "Delta",
    "Eagle",
    "First",
    "Global",
    "Harbor",
    "Iron",
    "Jade",
    "Keystone",
    "Liberty",
    "Meridian",
    "North",
    "Orion",
    "Pacific",
    "Quantum",
    "River",
    "Summit",
    "Titan",
    "United",
    "Vector",
    "Western",
    "Zenith",
)
_TRADES = (
    "Industries",
    "Energy",
    "Financial",
    "Pharmaceuticals",
    "Semiconductor",
    "Retail",
    "Logistics",
    "Materials",
    "Software",
    "Biosciences",
    "Foods",
    "Realty",
    "Networks",
    "Motors",
    "Utilities",
)
_FORMS = ("Inc.", "Corp.", "Holdings Inc.", "Group Inc.", "Co.", "Ltd.")
_EXCHANGES = ("XNYS", "XNAS", "XNAS", "ARCX", "XASE")


def parse_day(text: str) -> dt.date:
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        raise ParameterError(f"Could not parse the date {text!r}; expected YYYY-MM-DD", parameter="date")
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ParameterError(f"Could not parse the date {text!r}; expected YYYY-MM-DD", parameter="date") from None


def parse_bound(text: str, is_end: bool) -> dt.date:
    """A range bound (YYYY-MM-DD or epoch ms) as the first (or last) New York date it admits."""
    if text.isdigit() and len(text) > 8:
        ms = int(text)
        try:
            day = session_date_from_epoch_ms(ms)
        except (OverflowError, ValueError, OSError):
            raise ParameterError(f"timestamp {text} is out of range", parameter="from/to") from None
        if not is_end and _midnight(day) < ms:
            day += dt.timedelta(days=1)
        return day
    return parse_day(text)


def _midnight(day: dt.date) -> int:
    return int(dt.datetime.combine(day, dt.time(0), tzinfo=NEW_YORK).timestamp() * 1000)


def _is_session(day: dt.date) -> bool:
    return FIRST_SUPPORTED <= day <= _LAST and is_session(day)


def _last_available(now: dt.datetime) -> dt.date:
    """The last day whose bars are published: a session's bar appears at its 16:00 New York close."""
    today = now.astimezone(NEW_YORK).date()
    if FIRST_SUPPORTED <= today <= _LAST and ny_close_epoch_ms(today) <= int(now.timestamp() * 1000):
        return today
    return today - dt.timedelta(days=1)


def _today(st: Any) -> dt.date:
    """The server's New York date: ``adjusted=true`` answers apply every split executed on or before it."""
    return st.clock().astimezone(NEW_YORK).date()


def _bool(text: str) -> bool:
    return text.strip().lower() not in ("false", "0", "no")


def _int(text: str, name: str, lo: int, hi: int) -> int:
    try:
        n = int(text)
    except ValueError:
        raise ParameterError(f"{name} must be an integer, got {text!r}", parameter=name) from None
    if not lo <= n <= hi:
        raise ParameterError(f"{name} must be between {lo} and {hi}, got {n}", parameter=name)
    return n


def encode_cursor(params: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(urlencode(params).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> dict[str, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ParameterError("invalid cursor", parameter="cursor") from None
    return dict(parse_qsl(raw, keep_blank_values=True))


def _origin(request: web.Request, st: Any = None) -> str:
    """Where ``next_url`` points: the plan's vendor host (the client follows it on its own), else this server."""
    plan = getattr(st, "plan", None)
    if plan is not None and plan.next_origin:
        return plan.next_origin
    return f"{request.scheme}://{request.host}"


def _latest_session(st: Any) -> dt.date | None:
    """The newest session whose bars are published on the server's clock."""
    last = _last_available(st.clock())
    days = sessions_between(last - dt.timedelta(days=10), last)
    return days[-1] if days else None


def _as_plan_answers(st: Any, bars: list[dict], payload: dict[str, Any]) -> list[dict]:
    """The plan's view of published bars: a delisted symbol's bars after its last session gone, the newest
    session's bars provisional (before the vendor's revision) on a revising plan, ``DELAYED`` for today."""
    plan, delisted = st.plan, st.delisted
    if delisted:
        bars = [
            b for b in bars if b.get("T", payload.get("ticker")) not in delisted
            or session_date_from_epoch_ms(b["t"]) <= delisted[b.get("T", payload.get("ticker"))]
        ]  # fmt: skip
    if not bars or plan.name == "unlimited":
        return bars
    newest = _latest_session(st)
    today = _today(st)
    out = []
    for b in bars:
        day = session_date_from_epoch_ms(b["t"])
        if plan.today == "delayed" and day >= today:
            payload["status"] = "DELAYED"
        out.append(provisional(b) if plan.revises and day == newest else b)
    return out


def _duplicate(bars: list[dict], count: int, adjacent: bool) -> None:
    dups = [(i, dict(b)) for i, b in enumerate(bars[:count])]
    for i, copy in reversed(dups):
        if adjacent:
            bars.insert(i + 1, copy)
        else:
            bars.append(copy)


def _corrupt(bars: list[dict], count: int, symbol: str | None) -> list[dict[str, Any]]:
    """Break ``count`` bars in turn: high below the body, low above it, negative volume."""
    broken = []
    for i, bar in enumerate(bars[:count]):
        o, c = bar["o"], bar["c"]
        if i % 3 == 0:
            bar["h"] = round(min(o, c) * 0.9, 4)
            problem = "high<min(open,close)"
        elif i % 3 == 1:
            bar["l"] = round(max(o, c) * 1.1 + 0.0001, 4)
            problem = "low>max(open,close)"
        else:
            bar["v"] = -abs(bar["v"]) or -1
            problem = "volume<0"
        broken.append({"symbol": bar.get("T", symbol), "t": bar["t"], "problem": problem})
    return broken


def _data_fault(st: Any, request: web.Request, fault: Fault | None, bars: list[dict], symbol: str | None) -> None:
    if fault is None:
        return
    if fault.kind == "duplicate_bars":
        _duplicate(bars, fault.count, adjacent=symbol is not None)
        st.faults.note(request.path, duplicated=fault.count)
    elif fault.kind == "bad_bars":
        st.faults.note(request.path, broken=_corrupt(bars, fault.count, symbol))
    elif fault.kind == "odd_tickers" and symbol is None:
        for bar, ticker in zip(bars[: fault.count], ODD_TICKERS, strict=False):
            bar["T"] = ticker
        st.faults.note(request.path, renamed=list(ODD_TICKERS[: fault.count]))
    elif fault.kind == "misdated":
        shift = 86_400_000 * (7 if symbol is not None else 1)
        for bar in bars[: fault.count]:
            bar["t"] -= shift
        st.faults.note(request.path, misdated=[b["t"] for b in bars[: fault.count]])
    elif fault.kind == "halt" and bars:
        mid = len(bars) // 2
        gone = bars[mid : mid + fault.count]
        del bars[mid : mid + fault.count]
        st.faults.note(request.path, halted=[b["t"] for b in gone])


def grouped(st: Any, request: web.Request, date_text: str, fault: Fault | None) -> dict[str, Any]:
    """``/v2/aggs/grouped/locale/us/market/stocks/{date}``: every listed ticker's bar of one session."""
    day = parse_day(date_text)
    payload: dict[str, Any] = {
        "queryCount": 0,
        "resultsCount": 0,
        "adjusted": _bool(request.query.get("adjusted", "true")),
        "status": "OK",
        "request_id": st.request_id(),
    }
    if not _is_session(day) or day > _last_available(st.clock()):
        return payload
    if fault is not None and fault.kind == "empty_session":
        st.faults.note(request.path, emptied=day.isoformat())
        return payload
    adjusted = _bool(request.query.get("adjusted", "true"))
    results = _as_plan_answers(st, st.market.grouped(day, _today(st) if adjusted else None), payload)
    _data_fault(st, request, fault, results, None)
    payload.update(queryCount=len(results), resultsCount=len(results), results=results)
    return payload


def aggregates(st: Any, request: web.Request, parts: dict[str, str], fault: Fault | None) -> dict[str, Any]:
    """``/v2/aggs/ticker/{T}/range/1/day/{from}/{to}``: one ticker's daily bars, paged by ``limit``."""
    ticker = parts["ticker"]
    if parts["mult"] != "1" or parts["span"] != "day":
        raise ParameterError("the offline server serves 1/day aggregates only", parameter="timespan")
    opts = decode_cursor(request.query["cursor"]) if "cursor" in request.query else dict(request.query)
    adjusted = _bool(opts.get("adjusted", "true"))
    sort = opts.get("sort", "asc")
    if sort not in ("asc", "desc"):
        raise ParameterError(f"sort must be asc or desc, got {sort!r}", parameter="sort")
    limit = _int(opts.get("limit", "5000"), "limit", 1, 50000)
    start, end = parse_bound(parts["start"], False), parse_bound(parts["end"], True)
    payload: dict[str, Any] = {
        "ticker": ticker,
        "queryCount": 0,
        "resultsCount": 0,
        "adjusted": adjusted,
        "status": "OK",
        "request_id": st.request_id(),
        "count": 0,
    }
    market = st.market
    if not market.has_symbol(ticker):
        return payload
    lo = max(start, market.listing_date(ticker), FIRST_SUPPORTED)
    hi = min(end, _last_available(st.clock()), _LAST)
    days = sessions_between(lo, hi) if lo <= hi else []
    if not days:
        return payload
    if fault is not None and fault.kind == "empty_session":
        st.faults.note(request.path, emptied=f"{days[0]}..{days[-1]}")
        return payload
    if sort == "desc":
        days.reverse()
    page = days[:limit]
    as_of = _today(st) if adjusted else None
    bars = _as_plan_answers(
        st, market.range_bars(ticker, min(page[0], page[-1]), max(page[0], page[-1]), as_of), payload
    )
    if sort == "desc":
        bars.reverse()
    _data_fault(st, request, fault, bars, ticker)
    payload.update(queryCount=len(bars), resultsCount=len(bars), count=len(bars), results=bars)
    if len(days) > limit:
        repeat = fault is not None and fault.kind == "duplicate_bars"
        nxt = ny_midnight_epoch_ms(days[limit - 1] if repeat else days[limit])
        cursor = encode_cursor({"adjusted": str(adjusted).lower(), "limit": limit, "sort": sort})
        bounds = f"{nxt}/{parts['end']}" if sort == "asc" else f"{parts['start']}/{nxt}"
        payload["next_url"] = f"{_origin(request, st)}/v2/aggs/ticker/{ticker}/range/1/day/{bounds}?cursor={cursor}"
    return payload


def _close_time(day: dt.date) -> dt.time:
    """The session's New York close: 13:00 on today's half days (July 3, the day after Thanksgiving,
    December 24, when they are sessions), else 16:00."""
    thanksgiving = 22 + (3 - dt.date(day.year, 11, 1).weekday()) % 7
    half = (day.month, day.day) in ((7, 3), (12, 24), (11, thanksgiving + 1))
    return dt.time(13) if half and _is_session(day) else dt.time(16)


def market_status(now: dt.datetime) -> dict[str, Any]:
    """``/v1/marketstatus/now`` at ``now``: open 09:30-close, extended-hours 04:00-09:30 and close-20:00."""
    ny = now.astimezone(NEW_YORK)
    minute = ny.time()
    session = _is_session(ny.date())
    early = session and dt.time(4) <= minute < dt.time(9, 30)
    is_open = session and dt.time(9, 30) <= minute < _close_time(ny.date())
    after = session and not is_open and not early and _close_time(ny.date()) <= minute < dt.time(20)
    market = "open" if is_open else "extended-hours" if early or after else "closed"
    wd = ny.weekday()
    fx_closed = wd == 5 or (wd == 4 and minute >= dt.time(17)) or (wd == 6 and minute < dt.time(17))
    index = "open" if is_open else "closed"
    return {
        "afterHours": after,
        "currencies": {"crypto": "open", "fx": "closed" if fx_closed else "open"},
        "earlyHours": early,
        "exchanges": {"nasdaq": market, "nyse": market, "otc": market},
        "indicesGroups": {
            "s_and_p": index,
            "societe_generale": index,
            "msci": index,
            "ftse_russell": index,
            "mstar": index,
            "mstarc": index,
            "cccy": index,
            "cgi": index,
            "nasdaq": index,
            "dow_jones": index,
        },
        "market": market,
        "serverTime": ny.isoformat(timespec="seconds"),
    }


def reference(seed: int, symbol: str, as_of: dt.date) -> dict[str, Any]:
    """A deterministic reference record for ``symbol`` in the shape of ``/v3/reference/tickers``."""
    h = int(hashlib.sha256(f"{seed}:{symbol}".encode()).hexdigest(), 16)
    name = f"{_WORDS[h % len(_WORDS)]} {_TRADES[(h >> 8) % len(_TRADES)]} {_FORMS[(h >> 16) % len(_FORMS)]}"
    if "." in symbol:
        name += f" Class {symbol.rsplit('.', 1)[1]}"
    alnum = "BCDFGHJKLMNPQRSTVWXYZ0123456789"
    figi = "".join(alnum[(h >> (24 + 5 * i)) % len(alnum)] for i in range(9))
    share = "".join(alnum[(h >> (80 + 5 * i)) % len(alnum)] for i in range(9))
    return {
        "ticker": symbol,
        "name": name,
        "market": "stocks",
        "locale": "us",
        "primary_exchange": _EXCHANGES[(h >> 20) % len(_EXCHANGES)],
        "type": "CS",
        "active": True,
        "currency_name": "usd",
        "cik": f"{(h >> 130) % 2_000_000:010d}",
        "composite_figi": f"BBG{figi}",
        "share_class_figi": f"BBG{share}",
        "last_updated_utc": f"{as_of.isoformat()}T00:00:00Z",
    }


def tickers(st: Any, request: web.Request) -> dict[str, Any]:
    """``/v3/reference/tickers``: listed tickers in ticker order, paged by ``limit`` (max 1000)."""
    q = decode_cursor(request.query["cursor"]) if "cursor" in request.query else dict(request.query)
    limit = _int(q.get("limit", "100"), "limit", 1, 1000)
    as_of = parse_day(q["date"]) if q.get("date") else st.clock().astimezone(NEW_YORK).date()
    market = st.market
    names = list(market.symbols)
    if q.get("market", "stocks") != "stocks" or not _bool(q.get("active", "true")):
        names = []
    gone = getattr(st, "delisted", {})
    names = [s for s in names if market.listing_date(s) <= as_of and (s not in gone or gone[s] >= as_of)]
    for key, keep in (
        ("ticker", lambda s, v: s == v),
        ("ticker.gte", lambda s, v: s >= v),
        ("ticker.gt", lambda s, v: s > v),
        ("ticker.lte", lambda s, v: s <= v),
        ("ticker.lt", lambda s, v: s < v),
    ):
        if q.get(key):
            names = [s for s in names if keep(s, q[key])]
    if q.get("search"):
        needle = q["search"].lower()
        names = [s for s in names if needle in s.lower() or needle in reference(market.seed, s, as_of)["name"].lower()]
    desc = q.get("order", "asc") == "desc"
    if desc:
        names.reverse()
    if q.get("after"):
        names = [s for s in names if (s < q["after"] if desc else s > q["after"])]
    page = names[:limit]
    payload: dict[str, Any] = {
        "results": [reference(market.seed, s, as_of) for s in page],
        "status": "OK",
        "request_id": st.request_id(),
        "count": len(page),
    }
    if len(names) > limit:
        nxt = {k: v for k, v in q.items() if k not in ("cursor", "after", "apiKey")}
        nxt.update(after=page[-1], limit=str(limit), date=as_of.isoformat())
        payload["next_url"] = f"{_origin(request, st)}/v3/reference/tickers?cursor={encode_cursor(nxt)}"
    return payload


def splits(st: Any, request: web.Request) -> dict[str, Any]:
    """``/v3/reference/splits``: the market's splits (announced ones included), filtered by ``ticker`` and
    ``execution_date`` (also ``.gt/.gte/.lt/.lte``), ordered by execution date (``order``), paged by ``limit``
    (default 10, max 1000) through ``next_url``."""
    q = decode_cursor(request.query["cursor"]) if "cursor" in request.query else dict(request.query)
    limit = _int(q.get("limit", "10"), "limit", 1, 1000)
    items = [(sp.execution_date, sp.symbol, sp) for sp in st.market.splits]
    for key, keep in (
        ("execution_date", lambda d, v: d == v),
        ("execution_date.gte", lambda d, v: d >= v),
        ("execution_date.gt", lambda d, v: d > v),
        ("execution_date.lte", lambda d, v: d <= v),
        ("execution_date.lt", lambda d, v: d < v),
    ):
        if q.get(key):
            bound = parse_day(q[key])
            items = [i for i in items if keep(i[0], bound)]
    if q.get("ticker"):
        items = [i for i in items if i[1] == q["ticker"]]
    desc = q.get("order", "asc") == "desc"
    items.sort(key=lambda i: (i[0], i[1]), reverse=desc)
    offset = _int(q.get("offset", "0"), "offset", 0, 10**9)
    page = items[offset : offset + limit]
    payload: dict[str, Any] = {
        "results": [
            {
                "execution_date": d.isoformat(),
                "id": "E" + hashlib.sha256(f"{sym}:{d.isoformat()}".encode()).hexdigest()[:32],
                "split_from": _ratio(sp.split_from),
                "split_to": _ratio(sp.split_to),
                "ticker": sym,
            }
            for d, sym, sp in page
        ],
        "status": "OK",
        "request_id": st.request_id(),
    }
    if len(items) > offset + limit:
        nxt = {k: v for k, v in q.items() if k not in ("cursor", "offset", "apiKey")}
        nxt.update(offset=str(offset + limit), limit=str(limit))
        payload["next_url"] = f"{_origin(request, st)}/v3/reference/splits?cursor={encode_cursor(nxt)}"
    return payload


def _ratio(x: float) -> int | float:
    return int(x) if float(x).is_integer() else x
