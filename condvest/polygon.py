"""An async client for Polygon's REST API (aiohttp): bounded concurrency, capped exponential backoff
with jitter, Retry-After honoured, schema-checked payloads.

The API key travels in the ``Authorization: Bearer`` header, never in a URL, so it cannot reach a log,
a notebook output or an error message. ``next_url`` pages are followed only on the configured host.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from condvest.aws_secrets import resolve_api_key
from condvest.bars import check_envelope
from condvest.errors import AuthError, BadPayload, RateLimited, SourceError, SourceUnavailable
from condvest.settings import HttpLimits, Secret, Settings

log = logging.getLogger(__name__)

_RETRY_AFTER_CAP = 120.0


@dataclass
class ClientStats:
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    by_status: dict[int, int] = field(default_factory=dict)


class PolygonClient:
    """Use ``async with PolygonClient.open(settings) as client:``."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, limits: HttpLimits) -> None:
        self._session = session
        self.base_url = base_url.rstrip("/")
        self._host = urlsplit(self.base_url).netloc
        self.limits = limits
        self._sem = asyncio.Semaphore(limits.concurrency)
        self._paused_until = 0.0
        self.stats = ClientStats()

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

    async def _wait_pause(self) -> None:
        delay = self._paused_until - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    async def get_json(
        self, url: str, params: dict[str, Any] | None = None, *, symbol: str | None = None, date: str | None = None
    ) -> dict[str, Any]:
        """GET ``url`` (a path under the base URL, or a same-host absolute URL) and return the checked JSON."""
        if url.startswith("/"):
            url = self.base_url + url
        parts = urlsplit(url)
        if parts.netloc != self._host:
            raise SourceError("refusing to follow a URL on another host", path=parts.path, symbol=symbol, date=date)
        path = parts.path
        last: SourceError | None = None
        for attempt in range(self.limits.max_retries + 1):
            if attempt:
                self.stats.retries += 1
            await self._wait_pause()
            try:
                async with self._sem:
                    self.stats.requests += 1
                    async with self._session.get(url, params=params) as resp:
                        status = resp.status
                        self.stats.by_status[status] = self.stats.by_status.get(status, 0) + 1
                        body = await resp.read()
                        retry_after = resp.headers.get("Retry-After")
            except (TimeoutError, aiohttp.ClientError) as exc:
                last = SourceUnavailable(
                    f"{type(exc).__name__}: {exc}".strip(": "), path=path, symbol=symbol, date=date
                )
                log.warning("polygon=retry path=%s reason=%s attempt=%d", path, type(exc).__name__, attempt)
                await asyncio.sleep(self._backoff(attempt))
                continue
            if status == 429:
                self.stats.rate_limited += 1
                wait = self._backoff(attempt)
                if retry_after:
                    try:
                        wait = min(_RETRY_AFTER_CAP, max(float(retry_after), 0.0)) + random.uniform(0, 0.1)
                    except ValueError:
                        pass
                # everyone waits: the plan's rate is shared by all in-flight requests
                self._paused_until = max(self._paused_until, time.monotonic() + wait)
                last = RateLimited("HTTP 429 rate limited", path=path, status=429, symbol=symbol, date=date)
                log.warning("polygon=rate_limited path=%s wait_s=%.2f attempt=%d", path, wait, attempt)
                continue
            if status in (401, 403):
                raise AuthError(
                    "not authorized (check the API key)", path=path, status=status, symbol=symbol, date=date
                )
            if status >= 500 or status == 408:
                last = SourceUnavailable(f"HTTP {status}", path=path, status=status, symbol=symbol, date=date)
                log.warning("polygon=retry path=%s status=%d attempt=%d", path, status, attempt)
                await asyncio.sleep(self._backoff(attempt))
                continue
            if status != 200:
                raise BadPayload(
                    f"HTTP {status}: {body[:200].decode('utf-8', 'replace')}",
                    path=path,
                    status=status,
                    symbol=symbol,
                    date=date,
                )
            try:
                payload = json.loads(body)
                if isinstance(payload, dict) and payload.get("status") == "NOT_AUTHORIZED":
                    raise AuthError("not authorized", path=path, status=status, symbol=symbol, date=date)
                if not isinstance(payload, dict) or payload.get("status") == "ERROR":
                    detail = payload.get("error") or payload.get("message") if isinstance(payload, dict) else None
                    raise BadPayload(
                        f"error body in HTTP 200: {detail or 'not a JSON object'}",
                        path=path,
                        status=200,
                        symbol=symbol,
                        date=date,
                    )
                return payload
            except ValueError as exc:  # truncated or invalid JSON
                last = BadPayload(
                    f"invalid JSON ({exc.__class__.__name__})", path=path, status=200, symbol=symbol, date=date
                )
            except BadPayload as exc:
                last = exc
            log.warning("polygon=retry path=%s reason=bad_payload attempt=%d", path, attempt)
            await asyncio.sleep(self._backoff(attempt))
        assert last is not None
        raise last

    async def grouped_daily(self, day: dt.date) -> list[dict[str, Any]]:
        """Every ticker's bar for one session (one request)."""
        path = f"/v2/aggs/grouped/locale/us/market/stocks/{day.isoformat()}"
        payload = await self.get_json(path, {"adjusted": "true"}, date=day.isoformat())
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
            out.extend(check_envelope(payload, path=path, symbol=symbol))
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
