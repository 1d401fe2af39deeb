"""A history backfill of every symbol, survivorship-free: each session's universe is that session's grouped answer.

Today's ticker list names only the symbols trading now; a company delisted since would be missing from the
backfill while the manifest records each session as complete. The grouped-daily answer of a past session holds
every symbol that traded that day, delisted ones included, in one request per session. The sessions are fetched
``GROUP`` at a time; their bars are merged into each symbol's history file whenever ``ROW_BUDGET`` bars have
gathered (bounded memory; a small market is merged once, one history write per symbol).

A session whose request fails is ``failed`` (not recorded; asked again by the next backfill), one not yet
available on the plan is a ``warn``; a refusal of the plan fails the run (``PlanLimit``, ``AuthError``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import Any

from tqdm.auto import tqdm

from condvest.bars import bars_frame
from condvest.calendar import ny_midnight_epoch_ms
from condvest.errors import BadPayload, SourceError
from condvest.fetch.report import SessionOutcome, SessionResult, session_outcome
from condvest.fetch.writer import SessionWriter
from condvest.polygon import PolygonClient

__all__ = ["GROUP", "ROW_BUDGET", "fetch_every_symbol"]

log = logging.getLogger(__name__)

#: sessions asked at once (the client's concurrency and pace still apply)
GROUP = 64
#: bars gathered before they are merged into the symbols' histories (about 180 sessions of 11,000 symbols)
ROW_BUDGET = 2_000_000


async def fetch_every_symbol(
    client: PolygonClient,
    w: SessionWriter,
    results: dict[dt.date, SessionResult],
    progress: bool,
    keep: Callable[[str], bool] | None = None,
) -> dict[dt.date, str]:
    """Fetch every session of ``results`` by its grouped answer and merge the bars of the symbols ``keep`` holds (a
    shard's; None: all) into each symbol's history. A session's outcome is set here when it failed or is not yet
    available (the others are settled after); returns the sessions that did not come, with why."""
    days = sorted(results)
    sem = asyncio.Semaphore(max(1, client.limits.concurrency))
    gathered: list[dict[str, Any]] = []
    with tqdm(total=len(days), desc="backfill sessions", unit="sessions", disable=not progress, leave=False) as bar:
        for i in range(0, len(days), GROUP):
            group = days[i : i + GROUP]
            for bars in await asyncio.gather(*(_one(client, w, results[d], sem, keep) for d in group)):
                gathered.extend(bars)
            bar.update(len(group))
            if len(gathered) >= ROW_BUDGET or i + GROUP >= len(days):
                await _merge(w, gathered, results)
                gathered = []
    return {r.session: r.error for r in results.values() if r.status in (SessionOutcome.FAILED, SessionOutcome.WARN)}


async def _merge(w: SessionWriter, bars: list[dict[str, Any]], results: dict[dt.date, SessionResult]) -> None:
    """The gathered sessions' bars into each symbol's history (one frame, one write per symbol)."""
    if not bars:
        return
    raw = bars_frame(bars)
    for symbol, part in raw.groupby("symbol", sort=True):
        await w.history(str(symbol), part, results)


async def _one(
    client: PolygonClient,
    w: SessionWriter,
    res: SessionResult,
    sem: asyncio.Semaphore,
    keep: Callable[[str], bool] | None,
) -> list[dict[str, Any]]:
    """One session's grouped answer: the bars of ``keep``'s symbols stamped on the session; a bar stamped on
    another day is quarantined with the reason (``SessionWriter.outside``)."""
    day, t0 = res.session, time.monotonic()
    try:
        with session_outcome(res):
            async with sem:
                bars = await client.grouped_daily(day)
            if not bars:
                raise SourceError("empty answer on a trading session", date=day.isoformat())
            if any(not isinstance(b.get("T"), str) for b in bars):
                raise BadPayload("grouped result without a ticker 'T'", date=day.isoformat())
            if keep is not None:
                bars = [b for b in bars if keep(b["T"])]
            lo, hi = ny_midnight_epoch_ms(day), ny_midnight_epoch_ms(day + dt.timedelta(days=1))
            elsewhere = [b for b in bars if not lo <= int(b["t"]) < hi]
            if elsewhere:
                await w.outside(bars_frame(elsewhere), {day: res}, "grouped")
                bars = [b for b in bars if lo <= int(b["t"]) < hi]
            return bars
    finally:
        res.seconds = round(res.seconds + time.monotonic() - t0, 3)
    return []
