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

import pandas as pd
from tqdm.auto import tqdm

from condvest.bars import bars_frame
from condvest.errors import AuthError, CondvestError, NotYetAvailable, PlanLimit, SourceError
from condvest.fetch.report import SessionOutcome, SessionResult
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
    gathered: list[pd.DataFrame] = []
    with tqdm(total=len(days), desc="backfill sessions", unit="sessions", disable=not progress, leave=False) as bar:
        for i in range(0, len(days), GROUP):
            group = days[i : i + GROUP]
            frames = await asyncio.gather(*(_one(client, w, results[d], sem, keep) for d in group))
            bar.update(len(group))
            gathered.extend(f for f in frames if f is not None and not f.empty)
            if sum(len(f) for f in gathered) >= ROW_BUDGET or i + GROUP >= len(days):
                await _merge(w, gathered, results)
                gathered = []
    return {r.session: r.error for r in results.values() if r.status in (SessionOutcome.FAILED, SessionOutcome.WARN)}


async def _merge(w: SessionWriter, frames: list[pd.DataFrame], results: dict[dt.date, SessionResult]) -> None:
    """The gathered sessions' bars into each symbol's history (one write per symbol)."""
    if not frames:
        return
    raw = pd.concat(frames, ignore_index=True)
    for symbol, part in raw.groupby("symbol", sort=True):
        await w.history(str(symbol), part, results)


async def _one(
    client: PolygonClient,
    w: SessionWriter,
    res: SessionResult,
    sem: asyncio.Semaphore,
    keep: Callable[[str], bool] | None,
) -> pd.DataFrame | None:
    day, t0 = res.session, time.monotonic()
    try:
        async with sem:
            raw = bars_frame(await client.grouped_daily(day))
        if raw.empty:
            raise SourceError("empty answer on a trading session", date=day.isoformat())
        if keep is not None:
            raw = raw[raw["symbol"].map(keep).astype(bool)].reset_index(drop=True)
        return await w.outside(raw, {day: res}, "grouped")  # a bar of another day: quarantined
    except NotYetAvailable as exc:
        res.status, res.error = SessionOutcome.WARN, str(exc)
        log.warning("fetch=session_not_yet_available session=%s vendor=%r", day, exc.vendor)
    except (AuthError, PlanLimit):
        raise
    except CondvestError as exc:
        res.status, res.error = SessionOutcome.FAILED, str(exc)
        log.error("fetch=session_failed session=%s error=%s", day, exc)
    finally:
        res.seconds = round(res.seconds + time.monotonic() - t0, 3)
    return None
