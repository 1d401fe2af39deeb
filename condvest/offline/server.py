"""A local HTTP server that speaks Polygon's REST JSON over a ``SyntheticMarket``, with switchable faults.

Endpoints (as on api.polygon.io; auth by ``apiKey`` query parameter or ``Authorization: Bearer``):

    GET /v2/aggs/grouped/locale/us/market/stocks/{date}          every ticker's bar, t = 16:00 New York
    GET /v2/aggs/ticker/{T}/range/1/day/{from}/{to}              one ticker's bars, t = 00:00 New York,
                                                                 paged by ``limit`` through ``next_url``
    GET /v1/marketstatus/now                                     from the server's clock
    GET /v3/reference/tickers                                    paged by ``limit`` through ``next_url``
    GET /v3/reference/splits                                     the market's splits, filtered by ticker and
                                                                 execution_date(.gte/.lte), paged likewise

``adjusted=true`` (the default) answers are split-adjusted as of the server clock's New York date.

Bars of a session exist once its 16:00 New York close has passed on the server's clock. ``plan`` plays one of
the vendor's plans (``plans.py``: refusals with the vendor's bodies, a rate limit over a ``minute`` that tests
shorten, DELAYED, revisions after the close, ``next_url`` on the vendor's host); the default ``unlimited`` is
the demo's. Test control
(no auth): ``GET|POST|DELETE /_control/faults`` (see ``faults.py``), ``GET|DELETE /_control/requests``,
``POST /_control/clock`` with ``{"now": ISO-8601 | null}``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import itertools
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from condvest.calendar import NEW_YORK, UTC
from condvest.errors import ParameterError
from condvest.offline import endpoints
from condvest.offline.faults import FAULT_KINDS, Fault, FaultPlan
from condvest.offline.market import SyntheticMarket
from condvest.offline.plans import RateWindow, VendorPlan, plan_named, refusal

log = logging.getLogger(__name__)

__all__ = [
    "FAULT_KINDS",
    "Fault",
    "FaultPlan",
    "RequestRecord",
    "ServerHandle",
    "make_app",
    "serve_in_thread",
    "start_in_thread",
]

Clock = dt.datetime | Callable[[], dt.datetime] | None
_STATE: web.AppKey[_State] = web.AppKey("condvest_offline_state")
# typed request keys where aiohttp has them (3.13+), plain strings before
_FAULT_KEY: Any = web.RequestKey("condvest_fault", object) if hasattr(web, "RequestKey") else "condvest_fault"
_RECORD_KEY: Any = web.RequestKey("condvest_record", object) if hasattr(web, "RequestKey") else "condvest_record"
_PRE_FAULTS = frozenset({"http_429", "http_429_no_retry_after", "http_5xx", "error_200"})
_ROUTES = (
    ("grouped", re.compile(r"^/v2/aggs/grouped/locale/us/market/stocks/(?P<date>[^/]+)$")),
    (
        "range",
        re.compile(
            r"^/v2/aggs/ticker/(?P<ticker>[^/]+)/range/(?P<mult>[^/]+)/(?P<span>[^/]+)/"
            r"(?P<start>[^/]+)/(?P<end>[^/]+)$"
        ),
    ),
    ("marketstatus", re.compile(r"^/v1/marketstatus/now$")),
    ("tickers", re.compile(r"^/v3/reference/tickers$")),
    ("splits", re.compile(r"^/v3/reference/splits$")),
)
_RATE_MSG = (
    "You've exceeded the maximum requests per minute, please wait or upgrade your subscription to "
    "continue. https://polygon.io/pricing"
)
_GATEWAY_HTML = (
    "<html>\r\n<head><title>{0}</title></head>\r\n<body>\r\n<center><h1>{0}</h1></center>\r\n</body>\r\n</html>\r\n"
)
_REASONS = {
    500: "500 Internal Server Error",
    502: "502 Bad Gateway",
    503: "503 Service Temporarily Unavailable",
    504: "504 Gateway Time-out",
}


@dataclass
class RequestRecord:
    """One request as the server saw it; ``query`` and ``path_qs`` never contain the apiKey."""

    method: str
    path: str
    query: dict[str, str]
    path_qs: str
    endpoint: str
    date: dt.date | None = None
    to_date: dt.date | None = None
    symbol: str | None = None
    status: int | None = None
    fault: str | None = None
    authorization: str = "none"  # "query", "bearer" or "none" (how the key came, never the key)
    at: float = 0.0  # arrival, time.monotonic() of the server's process (waits between requests)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["date"] = self.date.isoformat() if self.date else None
        d["to_date"] = self.to_date.isoformat() if self.to_date else None
        return d


def _check_clock(now: Clock) -> Clock:
    if isinstance(now, dt.datetime) and now.tzinfo is None:
        raise ParameterError(f"the server clock must be timezone-aware, got {now.isoformat()}", parameter="now")
    return now


class _State:
    def __init__(
        self, market: SyntheticMarket, api_key: str, now: Clock, plan: VendorPlan, minute: float = 60.0
    ) -> None:
        self.market, self.api_key, self.now = market, api_key, _check_clock(now)
        self.plan, self.minute = plan, minute
        self.rate = RateWindow(plan.requests_per_minute, minute)
        self.delisted: dict[str, dt.date] = {}  # symbol -> its last session
        self.faults = FaultPlan()
        self.requests: list[RequestRecord] = []
        self.in_flight = 0  # data requests being answered now (a slow body included)
        self.max_in_flight = 0  # the most at once since the last reset: a client's concurrency cap, measured
        #: requests still being answered from before the last reset (an abandoned trickle) are not counted
        self.generation = 0
        self.in_flight_since_reset = 0
        self._ids = itertools.count(1)

    def clock(self) -> dt.datetime:
        now = self.now() if callable(self.now) else self.now
        now = now or dt.datetime.now(tz=UTC)
        if now.tzinfo is None:
            raise ParameterError("the server clock must be timezone-aware", parameter="now")
        return now

    def request_id(self) -> str:
        return hashlib.md5(f"condvest-offline-{next(self._ids)}".encode()).hexdigest()


def make_app(
    market: SyntheticMarket,
    *,
    api_key: str = "test-key",
    now: Clock = None,
    plan: str | VendorPlan = "unlimited",
    minute: float = 60.0,
) -> web.Application:
    """The aiohttp application; ``now`` fixes the server clock (an aware datetime or a callable), ``plan`` the
    vendor's plan it plays (``plans.PLANS``), ``minute`` the seconds of its rate window."""
    app = web.Application(middlewares=[_middleware])
    app[_STATE] = _State(market, api_key, now, plan_named(plan), minute)
    app.router.add_route("*", "/_control/faults", _control_faults)
    app.router.add_route("*", "/_control/requests", _control_requests)
    app.router.add_post("/_control/clock", _control_clock)
    app.router.add_route("*", "/{tail:.*}", _dispatch)
    return app


# -- request plumbing --------------------------------------------------------------------------------


def _classify(path: str) -> tuple[str, dict[str, str]]:
    for name, rx in _ROUTES:
        m = rx.match(path)
        if m:
            return name, m.groupdict()
    return "unknown", {}


def _record(request: web.Request) -> RequestRecord:
    query = {k: v for k, v in request.query.items() if k.lower() != "apikey"}
    path_qs = request.path + (f"?{urlencode(query)}" if query else "")
    endpoint, parts = _classify(request.path)
    rec = RequestRecord(request.method, request.path, query, path_qs, endpoint, at=time.monotonic())
    try:
        if endpoint == "grouped":
            rec.date = endpoints.parse_day(parts["date"])
        elif endpoint == "range":
            rec.symbol = parts["ticker"]
            rec.date = endpoints.parse_bound(parts["start"], False)
            rec.to_date = endpoints.parse_bound(parts["end"], True)
        elif endpoint == "splits" and request.query.get("execution_date"):
            rec.date = endpoints.parse_day(request.query["execution_date"])
    except ParameterError:
        pass
    return rec


def _auth(request: web.Request, key: str) -> str | None:
    """How the right key came ("query" / "bearer"), or None."""
    if request.query.get("apiKey") == key:
        return "query"
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer ") and header[len("Bearer ") :].strip() == key:
        return "bearer"
    return None


@web.middleware
async def _middleware(request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
    st = request.app[_STATE]
    if request.path.startswith("/_control/"):
        return await handler(request)
    rec = _record(request)
    request[_RECORD_KEY] = rec
    st.requests.append(rec)
    if rec.endpoint == "unknown":
        rec.status = 404
        return _json(
            request,
            {"status": "ERROR", "request_id": st.request_id(), "error": f"Not Found: {request.method} {request.path}"},
            404,
        )
    how = _auth(request, st.api_key)
    if how is None:
        rec.status = 401
        given = "apiKey" in request.query or "Authorization" in request.headers
        msg = "Unknown API Key" if given else "API Key was not provided"
        return _json(request, {"status": "NOT_AUTHORIZED", "request_id": st.request_id(), "message": msg}, 401)
    rec.authorization = how
    if not st.rate.admit():  # the plan's limit: the vendor's 429 carries no Retry-After
        rec.status, rec.fault = 429, "plan_rate"
        return _json(request, {"status": "ERROR", "request_id": st.request_id(), "error": _RATE_MSG}, 429)
    today = st.clock().astimezone(NEW_YORK).date()
    refused = refusal(st.plan, rec.endpoint, rec.date, rec.to_date, today)
    if refused:
        rec.status, rec.fault = 403, "plan_refusal"
        return _json(request, {"status": "NOT_AUTHORIZED", "request_id": st.request_id(), "message": refused}, 403)
    fault = st.faults.take(request.path, rec.endpoint)
    request[_FAULT_KEY] = fault
    rec.fault = fault.kind if fault else None
    if fault is not None:
        log.info("fault=%s path=%s", fault.kind, request.path)
    st.in_flight += 1
    generation = st.generation
    st.in_flight_since_reset += 1
    st.max_in_flight = max(st.max_in_flight, st.in_flight_since_reset)
    try:
        resp = _pre_fault(request, fault) if fault and fault.kind in _PRE_FAULTS else await handler(request)
    finally:
        st.in_flight -= 1
        if generation == st.generation:
            st.in_flight_since_reset -= 1
    rec.status = resp.status
    return resp


def _pre_fault(request: web.Request, fault: Fault) -> web.Response:
    st = request.app[_STATE]
    rid = st.request_id()
    if fault.kind == "http_429":
        headers = {"Retry-After": f"{fault.retry_after:g}"}
        return _json(request, {"status": "ERROR", "request_id": rid, "error": _RATE_MSG}, 429, headers)
    if fault.kind == "http_429_no_retry_after":
        return _json(request, {"status": "ERROR", "request_id": rid, "error": _RATE_MSG}, 429)
    if fault.kind == "http_5xx":
        if fault.status == 500:
            return _json(request, {"status": "ERROR", "request_id": rid, "error": "Internal Server Error"}, 500)
        return web.Response(
            status=fault.status, text=_GATEWAY_HTML.format(_REASONS[fault.status]), content_type="text/html"
        )
    return _json(
        request,
        {"status": "ERROR", "request_id": rid, "error": "Internal error while processing the request, please retry."},
        200,
    )


def _json(
    request: web.Request, payload: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return web.Response(body=body, status=status, headers=headers, content_type="application/json")


async def _send(request: web.Request, payload: dict[str, Any], status: int = 200) -> web.StreamResponse:
    """Serialise ``payload``, applying the request's transport fault (truncation, stall, reset)."""
    fault: Fault | None = request.get(_FAULT_KEY)
    body = json.dumps(payload, separators=(",", ":")).encode()
    kind = fault.kind if fault else None
    if kind == "truncated_json":
        return web.Response(body=body[: max(1, len(body) // 2)], status=status, content_type="application/json")
    if kind not in ("slow_body", "connection_reset"):
        return web.Response(body=body, status=status, content_type="application/json")
    rec: RequestRecord | None = request.get(_RECORD_KEY)
    if rec is not None:
        rec.status = status  # the log is complete before the client sees the (partial) body
    resp = web.StreamResponse(status=status, headers={"Content-Type": "application/json; charset=utf-8"})
    resp.content_length = len(body)
    await resp.prepare(request)
    half = len(body) // 2
    await resp.write(body[:half])
    if kind == "connection_reset":
        if request.transport is not None:
            request.transport.abort()
        raise asyncio.CancelledError()  # aiohttp drops the aborted connection quietly
    await asyncio.sleep(fault.delay if fault else 0)
    try:
        await resp.write(body[half:])
        await resp.write_eof()
    except ConnectionResetError:  # the client gave up during the stall (its read timeout): expected
        log.info("client_gone_during_stall path=%s", request.path)
        raise asyncio.CancelledError() from None
    return resp


async def _dispatch(request: web.Request) -> web.StreamResponse:
    st = request.app[_STATE]
    endpoint, parts = _classify(request.path)
    fault: Fault | None = request.get(_FAULT_KEY)
    try:
        if endpoint == "grouped":
            payload = endpoints.grouped(st, request, parts["date"], fault)
        elif endpoint == "range":
            payload = endpoints.aggregates(st, request, parts, fault)
        elif endpoint == "marketstatus":
            payload = endpoints.market_status(st.clock())
        elif endpoint == "splits":
            payload = endpoints.splits(st, request)
        else:
            payload = endpoints.tickers(st, request)
    except ParameterError as exc:
        return await _send(request, {"status": "ERROR", "request_id": st.request_id(), "error": str(exc)}, 400)
    return await _send(request, payload)


# -- control endpoints (tests and demos; no auth) --------------------------------------------------------


async def _control_faults(request: web.Request) -> web.Response:
    plan = request.app[_STATE].faults
    try:
        if request.method == "DELETE":
            plan.clear()
        elif request.method in ("POST", "PUT"):
            doc = await request.json()
            items = doc.get("faults", []) if "faults" in doc or "kind" not in doc else [doc]
            plan.set(items, replace=bool(doc.get("replace", request.method == "PUT")))
    except (ParameterError, TypeError, ValueError, AttributeError) as exc:
        return web.json_response({"status": "ERROR", "error": str(exc)}, status=400)
    return web.json_response(plan.to_dict())


async def _control_requests(request: web.Request) -> web.Response:
    st = request.app[_STATE]
    if request.method == "DELETE":
        st.requests.clear()
    return web.json_response({"requests": [r.to_dict() for r in st.requests]})


async def _control_clock(request: web.Request) -> web.Response:
    st = request.app[_STATE]
    try:
        value = (await request.json()).get("now")
        st.now = None if value is None else _check_clock(dt.datetime.fromisoformat(value))
        now = st.clock()
    except (ParameterError, TypeError, ValueError, AttributeError) as exc:
        return web.json_response({"status": "ERROR", "error": str(exc)}, status=400)
    return web.json_response({"now": now.isoformat()})


# -- running in a thread -------------------------------------------------------------------------------


class ServerHandle:
    """A running server: ``base_url``, the live ``faults`` plan and ``requests`` log, ``stop()``."""

    def __init__(self, app: web.Application, base_url: str, stop: Callable[[], None]) -> None:
        self.app, self.base_url, self._stop = app, base_url, stop
        self._state = app[_STATE]

    @property
    def faults(self) -> FaultPlan:
        return self._state.faults

    @property
    def requests(self) -> list[RequestRecord]:
        return self._state.requests

    @property
    def market(self) -> SyntheticMarket:
        return self._state.market

    @property
    def api_key(self) -> str:
        return self._state.api_key

    @property
    def plan(self) -> VendorPlan:
        return self._state.plan

    def delist(self, symbol: str, last_session: dt.date) -> None:
        """``symbol`` trades until ``last_session``: no bars after it, and it leaves the ticker list."""
        self._state.delisted[symbol] = last_session

    def set_now(self, now: Clock) -> None:
        """Fix (or with None, release) the server clock: an aware datetime or a callable returning one."""
        self._state.now = _check_clock(now)

    def now(self) -> dt.datetime:
        return self._state.clock()

    @property
    def max_in_flight(self) -> int:
        """The most data requests answered at once since the last reset (counted at the server)."""
        return self._state.max_in_flight

    def reset(self) -> None:
        """Clear faults, the request log and the in-flight high-water mark."""
        self._state.faults.clear()
        self._state.requests.clear()
        self._state.max_in_flight = 0
        self._state.generation += 1
        self._state.in_flight_since_reset = 0

    def url(self, path: str, *, auth: bool = True, **params: Any) -> str:
        """An absolute URL on this server, with the apiKey unless ``auth=False``."""
        query = dict(params, **({"apiKey": self.api_key} if auth else {}))
        return self.base_url + path + (f"?{urlencode(query)}" if query else "")

    def stop(self) -> None:
        self._stop()


def start_in_thread(
    market: SyntheticMarket,
    host: str = "127.0.0.1",
    port: int = 0,
    api_key: str = "test-key",
    *,
    now: Clock = None,
    plan: str | VendorPlan = "unlimited",
    minute: float = 60.0,
) -> ServerHandle:
    """Start the server on its own event loop in a daemon thread; call ``handle.stop()`` when done."""
    app = make_app(market, api_key=api_key, now=now, plan=plan, minute=minute)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    bound_port = sock.getsockname()[1]
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
    started = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.SockSite(runner, sock).start())
        except BaseException as exc:  # reported to the caller below
            failure.append(exc)
            started.set()
            return
        started.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=run, name=f"offline-polygon-{bound_port}", daemon=True)
    thread.start()
    started.wait(30)
    if failure:
        raise failure[0]
    stopped = threading.Event()

    def stop() -> None:
        if not stopped.is_set():
            stopped.set()
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            sock.close()
            log.info("offline_server_stopped port=%d", bound_port)

    base_url = f"http://{host}:{bound_port}"
    log.info("offline_server_started url=%s symbols=%d", base_url, market.n_symbols)
    return ServerHandle(app, base_url, stop)


@contextmanager
def serve_in_thread(
    market: SyntheticMarket,
    host: str = "127.0.0.1",
    port: int = 0,
    api_key: str = "test-key",
    *,
    now: Clock = None,
    plan: str | VendorPlan = "unlimited",
    minute: float = 60.0,
) -> Iterator[ServerHandle]:
    """Run the server in a thread for the ``with`` block; yields its ``ServerHandle``."""
    handle = start_in_thread(market, host, port, api_key, now=now, plan=plan, minute=minute)
    try:
        yield handle
    finally:
        handle.stop()
