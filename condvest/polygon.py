"""An async client for Polygon's (Massive's) REST API (aiohttp), in three layers as httpx has them:

- transport (``_Transport.send``): sends one request, measures it and returns an ``Answer`` (status, body,
  Retry-After); a timeout or a connection reset is ``SourceUnavailable``;
- classification (``classify``, pure): an ``Answer`` becomes the checked JSON or a typed error that keeps the
  vendor's status and own words: 401 ``AuthError`` (the key), 403 ``NotYetAvailable`` (today's data before the
  end of day on this plan) or ``PlanLimit`` (a timeframe or an entitlement beyond the plan), 429
  ``RateLimited``, 5xx ``SourceUnavailable``, an error inside a 200 ``BadPayload``;
- retry policy (``PolygonClient.get_json``): waits for the pace (``Pacer``), then sends, classifies, and
  decides to retry (429, 5xx, resets, bad bodies: capped exponential backoff with jitter, Retry-After
  honoured) or to stop (a refusal is never retried).

The pace: ``HttpLimits.requests_per_minute`` (``POLYGON_REQUESTS_PER_MINUTE``) spaces every request of the
run; a 429 without Retry-After pauses every request for the vendor's window and the run then keeps to the
rate it observed. Unlimited (the default) adds no wait and no lock to a request.

The API key travels in the ``Authorization: Bearer`` header, never in a URL, so it cannot reach a log, a
notebook output or an error message. ``next_url`` pages are followed as path and query on the configured
base URL, whatever host they name (the vendor's answers name ``api.massive.com``): the key never goes to
another host.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from condvest.aws_secrets import resolve_api_key
from condvest.bars import check_envelope
from condvest.calendar import session_date_from_epoch_ms as _ny_date
from condvest.calendar import today_in_new_york
from condvest.errors import (
    AuthError,
    BadPayload,
    NotYetAvailable,
    PlanLimit,
    RateLimited,
    Refused,
    SourceUnavailable,
)
from condvest.settings import HttpLimits, Secret, Settings

log = logging.getLogger(__name__)

__all__ = ["Answer", "ClientStats", "Pacer", "PolygonClient", "classify", "refusal"]

_RETRY_AFTER_CAP = 120.0
_MARGIN = 1.05  # a paced request keeps 5% clear of the vendor's window edge (clocks and latency differ)
_CALM = 5  # windows without a 429 after which a learned pace doubles (a 429 that was not the plan's limit)


@dataclass
class ClientStats:
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    paused_s: float = 0.0  # seconds requests waited for the pace (a limited plan)
    by_status: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Answer:
    """One HTTP answer as the transport received it."""

    status: int
    body: bytes
    retry_after: str | None = None
    sent_at: float = 0.0  # time.monotonic() when the request left
    seconds: float = 0.0


# -- transport: send and measure ---------------------------------------------------------------------------


class _Transport:
    def __init__(self, session: aiohttp.ClientSession, concurrency: int, stats: ClientStats) -> None:
        self._session, self._sem, self._stats = session, asyncio.Semaphore(concurrency), stats

    async def send(self, url: str, params: dict[str, Any] | None, ctx: dict[str, Any]) -> Answer:
        stats = self._stats
        async with self._sem:
            stats.requests += 1
            t0 = time.monotonic()
            try:
                async with self._session.get(url, params=params) as resp:
                    status = resp.status
                    body = await resp.read()
                    retry_after = resp.headers.get("Retry-After")
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise SourceUnavailable(f"{type(exc).__name__}: {exc}".strip(": "), **ctx) from exc
        stats.by_status[status] = stats.by_status.get(status, 0) + 1
        return Answer(status, body, retry_after, t0, time.monotonic() - t0)


# -- classification: status and body to a result or a typed error (pure) --------------------------------------


def _vendor_words(body: bytes) -> tuple[str, Any]:
    """The vendor's own message of an answer (``message`` or ``error`` of its JSON, else its text) and the JSON."""
    try:
        doc = json.loads(body)
    except ValueError:
        return body[:200].decode("utf-8", "replace").strip(), None
    if isinstance(doc, dict):
        return str(doc.get("message") or doc.get("error") or "").strip(), doc
    return "", doc


def refusal(status: int, vendor: str, ctx: dict[str, Any]) -> Refused:
    """The typed refusal of a 401/403 (or a ``NOT_AUTHORIZED`` body) from the vendor's status and words."""
    words = vendor or "no reason given"
    low = vendor.lower()
    if status == 401 or "api key" in low:
        return AuthError(f"the vendor does not accept this API key (check the API key): {words}", vendor=vendor, **ctx)
    if "end of day" in low or "today's data" in low:
        return NotYetAvailable(
            f"not yet available on this plan (the next run fetches it): {words}", vendor=vendor, **ctx
        )
    asked = ctx.get("path") or "the request"
    return PlanLimit(
        f"beyond the plan of this key (asked for {asked}); upgrade the plan or ask for less: {words}",
        vendor=vendor,
        **ctx,
    )


def classify(answer: Answer, *, path: str, symbol: str | None = None, date: str | None = None) -> dict[str, Any]:
    """The checked JSON of an answer, or its typed error (``BadPayload`` with status 200 is worth a retry)."""
    ctx: dict[str, Any] = {"path": path, "status": answer.status, "symbol": symbol, "date": date}
    status = answer.status
    if status == 200:
        try:
            payload = json.loads(answer.body)
        except ValueError as exc:  # truncated or invalid JSON
            raise BadPayload(f"invalid JSON ({exc.__class__.__name__})", **ctx) from None
        if isinstance(payload, dict) and payload.get("status") == "NOT_AUTHORIZED":
            raise refusal(403, str(payload.get("message") or payload.get("error") or ""), ctx)
        if not isinstance(payload, dict) or payload.get("status") == "ERROR":
            detail = (payload.get("error") or payload.get("message")) if isinstance(payload, dict) else None
            raise BadPayload(f"error body in HTTP 200: {detail or 'not a JSON object'}", **ctx)
        return payload
    vendor, _ = _vendor_words(answer.body)
    if status in (401, 403):
        raise refusal(status, vendor, ctx)
    if status == 429:
        raise RateLimited(f"HTTP 429 rate limited: {vendor or 'no message'}", **ctx)
    if status >= 500 or status == 408:
        raise SourceUnavailable(f"HTTP {status}", **ctx)
    raise BadPayload(f"HTTP {status}: {vendor}", **ctx)


def _retry_after(answer: Answer) -> float | None:
    if not answer.retry_after:
        return None
    try:
        return min(_RETRY_AFTER_CAP, max(float(answer.retry_after), 0.0))
    except ValueError:
        return None


# -- retry policy: the pace, and wait, retry or stop ---------------------------------------------------------


class Pacer:
    """Spaces requests at the plan's rate and holds them all during a rate-limit pause.

    A 429 without Retry-After pauses every request for one window; the pace then kept is the number of requests
    the vendor answered within the window before it, doubled after each ``_CALM`` windows without another 429.
    Unlimited and never rate limited, ``wait`` returns at once (no sleep, no lock)."""

    def __init__(self, per_minute: int | None, window: float) -> None:
        self.window = window
        self.interval = self._base = window * _MARGIN / per_minute if per_minute else 0.0
        self._next_at = 0.0
        self.paused_until = 0.0
        self._paused_at = 0.0
        self._observed = 0  # requests answered within the window before the last pause: the vendor's rate
        self._calm_until = 0.0  # no 429 until then: the learned pace doubles
        self._answered: deque[float] = deque()

    async def wait(self) -> float:
        """Wait for this request's turn; returns the seconds waited."""
        if not self.interval and not self.paused_until:
            return 0.0
        waited = 0.0
        while True:
            now = time.monotonic()
            start = max(now, self._next_at, self.paused_until)
            self._next_at = start + self.interval
            if start <= now:
                return waited
            await asyncio.sleep(start - now)
            waited += start - now
            if self.paused_until <= time.monotonic():
                return waited

    def answered(self, at: float) -> None:
        """A request sent at ``at`` was answered (not rate limited): the observed rate counts it."""
        q = self._answered
        q.append(at)
        while q and q[0] < at - self.window:
            q.popleft()
        if self._paused_at - self.window < at <= self._paused_at:  # answered after the 429 that paused the run
            self._observe(self._observed + 1)
        elif self._observed and at > self._calm_until and self.interval > self._base:
            self._calm_until = at + _CALM * self.window
            self._observe(self._observed * 2)

    def _observe(self, seen: int) -> None:
        self._observed = seen
        if seen:
            self.interval = max(self._base, self.window * _MARGIN / seen)

    def rate_limited(self, sent_at: float, retry_after: float | None) -> float:
        """A 429 for a request sent at ``sent_at``: pause everyone; returns the pause in seconds from now."""
        now = time.monotonic()
        if retry_after is not None:
            self.paused_until = max(self.paused_until, now + retry_after + random.uniform(0, 0.1))
        elif sent_at >= self._paused_at or self.paused_until <= now:  # not one of a burst already paused for
            # keep to the rate the vendor allowed within its window (answers still in flight count when they come)
            self._paused_at = now
            self._observe(sum(1 for t in self._answered if t > now - self.window))
            self.paused_until = max(self.paused_until, now + self.window * _MARGIN)
            self._calm_until = now + (1 + _CALM) * self.window
            log.warning("polygon=rate_paced pause_s=%.1f answered_in_window=%d", self.window * _MARGIN, self._observed)
        return max(0.0, self.paused_until - now)


class PolygonClient:
    """Use ``async with PolygonClient.open(settings) as client:``."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, limits: HttpLimits) -> None:
        self.base_url = base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        self._host, self._origin = parts.netloc, f"{parts.scheme}://{parts.netloc}"
        self.limits = limits
        self.stats = ClientStats()
        self._transport = _Transport(session, limits.concurrency, self.stats)
        self.pacer = Pacer(limits.requests_per_minute, limits.rate_window)

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: Settings, api_key: Secret | None = None) -> AsyncIterator[PolygonClient]:
        key = api_key or resolve_api_key(settings)
        lim = settings.http
        timeout = aiohttp.ClientTimeout(
            total=lim.total_timeout, sock_connect=lim.connect_timeout, sock_read=lim.read_timeout
        )
        connector = aiohttp.TCPConnector(limit=lim.concurrency, ttl_dns_cache=300)
        headers = {"Authorization": f"Bearer {key.reveal()}", "User-Agent": "condvest-workbench/0.1"}
        async with aiohttp.ClientSession(timeout=timeout, connector=connector, headers=headers) as session:
            yield cls(session, settings.polygon_base_url, lim)

    def _backoff(self, attempt: int) -> float:
        base = min(self.limits.backoff_cap, self.limits.backoff_base * (2**attempt))
        return base * random.uniform(0.5, 1.0)

    def _on_base(self, url: str) -> tuple[str, str]:
        """The URL to send (always on the configured host) and its path: a path goes under the base URL; an
        absolute URL (a ``next_url``) keeps its path and query, on the configured host whatever host it names."""
        if url.startswith("/"):
            return self.base_url + url, url
        parts = urlsplit(url)
        path_qs = parts.path + (f"?{parts.query}" if parts.query else "")
        if parts.netloc == self._host:
            return self._origin + path_qs, parts.path
        log.debug("polygon=next_url_on_base host=%s path=%s", parts.netloc, parts.path)
        return self.base_url + path_qs, parts.path

    async def get_json(
        self, url: str, params: dict[str, Any] | None = None, *, symbol: str | None = None, date: str | None = None
    ) -> dict[str, Any]:
        """GET ``url`` (a path under the base URL, or a ``next_url``) and return the checked JSON."""
        url, path = self._on_base(url)
        ctx: dict[str, Any] = {"path": path, "symbol": symbol, "date": date}
        pacer, stats = self.pacer, self.stats
        attempt, rate_budget = 0, max(10, 2 * self.limits.max_retries)
        while True:
            waited = await pacer.wait()
            if waited:
                stats.paused_s += waited
            try:
                answer = await self._transport.send(url, params, ctx)
                payload = classify(answer, path=path, symbol=symbol, date=date)
                pacer.answered(answer.sent_at)
                return payload
            except RateLimited:
                stats.rate_limited += 1
                rate_budget -= 1
                if rate_budget < 0:
                    raise
                wait = pacer.rate_limited(answer.sent_at, _retry_after(answer))
                log.warning("polygon=rate_limited path=%s wait_s=%.2f", path, wait)
                if not wait:
                    await asyncio.sleep(self._backoff(attempt))
            except Refused:
                raise  # the vendor's answer stands: never retried
            except (SourceUnavailable, BadPayload) as exc:
                if isinstance(exc, BadPayload) and exc.status != 200:
                    raise
                if attempt >= self.limits.max_retries:
                    raise
                log.warning("polygon=retry path=%s reason=%s attempt=%d", path, type(exc).__name__, attempt)
                await asyncio.sleep(self._backoff(attempt))
                attempt += 1
            stats.retries += 1

    async def grouped_daily(self, day: dt.date) -> list[dict[str, Any]]:
        """Every ticker's bar for one session (one request)."""
        path = f"/v2/aggs/grouped/locale/us/market/stocks/{day.isoformat()}"
        payload = await self.get_json(path, {"adjusted": "true"}, date=day.isoformat())
        if payload.get("status") == "DELAYED":  # the plan's delayed view of a session in progress: never final
            raise NotYetAvailable(
                "the vendor answered DELAYED: this plan's bars of the session are not final yet (the next run "
                "fetches it)",
                vendor="DELAYED",
                path=path,
                status=200,
                date=day.isoformat(),
            )
        return check_envelope(payload, path=path, date=day.isoformat())

    async def range_daily(
        self, symbol: str, start: dt.date, end: dt.date, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """A symbol's daily bars in [start, end], following ``next_url`` pages of ``limit`` bars (default: the
        limits' ``page_size``)."""
        path = f"/v2/aggs/ticker/{symbol}/range/1/day/{start.isoformat()}/{end.isoformat()}"
        url: str | None = path
        page = limit or self.limits.page_size
        params: dict[str, Any] | None = {"adjusted": "true", "sort": "asc", "limit": str(page)}
        out: list[dict[str, Any]] = []
        while url:
            payload = await self.get_json(url, params, symbol=symbol)
            bars = check_envelope(payload, path=path, symbol=symbol)
            if payload.get("status") == "DELAYED":  # today's bar of a delayed plan is the day in progress
                today = today_in_new_york()
                bars = [b for b in bars if not isinstance(b.get("t"), int) or _ny_date(b["t"]) < today]
            out.extend(bars)
            url, params = payload.get("next_url"), None
        return out

    async def market_status(self) -> dict[str, Any]:
        return await self.get_json("/v1/marketstatus/now")

    async def tickers(self, limit: int = 1000) -> list[str]:
        """Active US stock tickers from the reference endpoint (paged)."""
        url: str | None = "/v3/reference/tickers"
        params: dict[str, Any] | None = {"market": "stocks", "active": "true", "limit": str(limit)}
        out: list[str] = []
        while url:
            payload = await self.get_json(url, params)
            results = payload.get("results") or []
            out.extend(r["ticker"] for r in results if isinstance(r, dict) and isinstance(r.get("ticker"), str))
            url, params = payload.get("next_url"), None
        return sorted(set(out))

    async def splits(self, limit: int = 1000, **filters: str) -> list[dict[str, Any]]:
        """Split records of ``/v3/reference/splits`` (paged), e.g. ``splits(execution_date="2025-10-17")`` or
        ``splits(**{"execution_date.gte": "2020-01-01"})``; each checked for ticker, date and positive ratios."""
        path = "/v3/reference/splits"
        url: str | None = path
        params: dict[str, Any] | None = {**filters, "limit": str(limit)}
        date = filters.get("execution_date")
        out: list[dict[str, Any]] = []
        while url:
            payload = await self.get_json(url, params, date=date)
            results = payload.get("results", [])
            if payload.get("status") not in ("OK", "DELAYED") or not isinstance(results, list):
                raise BadPayload("not a splits answer", path=path, date=date)
            for r in results:
                ok = isinstance(r, dict) and all(isinstance(r.get(k), str) for k in ("ticker", "execution_date"))
                ratios = [r.get("split_from"), r.get("split_to")] if ok else []
                if not ok or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0 for x in ratios):
                    raise BadPayload(f"malformed split record: {r!r}"[:200], path=path, date=date)
            out.extend(results)
            url, params = payload.get("next_url"), None
        return out
