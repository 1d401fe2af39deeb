"""What a fetch run holds per session, and what the manifest records of it (see ``condvest.fetch.run``).

A symbol list's sessions: each symbol's trading life in the answer, the sessions outside it (``absent``), the
gaps inside it (``warn``), the symbols not fetched (``partial``); every symbol's sessions: done when their
bars came. The manifest records what bronze really holds, never more.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import replace

import pandas as pd

from condvest import manifest
from condvest.fetch.plan import FetchPlan
from condvest.fetch.report import FetchReport, SessionOutcome, SessionResult
from condvest.fetch.sharded import Held, Life
from condvest.storage import Store

__all__ = ["only_missing_symbols", "record_manifest", "settle_history", "settle_symbols", "trading_life"]

log = logging.getLogger(__name__)


def trading_life(raw: pd.DataFrame) -> dict[str, tuple[dt.date, dt.date]]:
    """Each symbol's first and last bar in a range answer (its trading life, as far as the span shows it)."""
    if raw.empty:
        return {}
    g = raw.groupby("symbol")["date"]
    return {s: (a, b) for s, a, b in zip(g.min().index, g.min(), g.max(), strict=True)}


def settle_symbols(
    report: FetchReport,
    res: SessionResult,
    requested: list[str],
    held: set[str],
    life: dict[str, tuple[dt.date, dt.date]],
    *,
    after_last_is_absent: bool,
) -> None:
    """A symbol-list session's outcome: what bronze holds, what is outside a symbol's life, the gaps."""
    day = res.session
    absent: set[str] = set()
    gaps: set[str] = set()
    for sym in requested:
        if sym in held or sym in report.symbol_errors or sym not in life:
            continue
        first, last = life[sym]
        if day < first or (after_last_is_absent and day > last):
            absent.add(sym)
        else:
            gaps.add(sym)
    failed = sorted(s for s in requested if s in report.symbol_errors)
    res.symbols, res.gaps = len(held), ",".join(sorted(gaps))
    report.coverage[day] = (held, absent, gaps)
    if failed:
        res.status, res.error = SessionOutcome.PARTIAL, f"not fetched: {', '.join(failed)}"
    elif gaps:
        res.status, res.error = SessionOutcome.WARN, f"no bar inside the trading life of {res.gaps}"
        log.warning("fetch=gap session=%s symbols=%s", day, res.gaps)
    else:
        res.status = SessionOutcome.DONE


def settle_history(report: FetchReport, symbols: list[str], held: Held, life: Life) -> None:
    """The sessions' outcome of a history backfill (of a sharded one: in its commit, from every shard)."""
    for res in report.sessions:
        if res.status in (SessionOutcome.FAILED, SessionOutcome.WARN):  # its request failed, or not yet available
            continue
        if not report.plan.all_symbols:
            settle_symbols(report, res, symbols, held[res.session], life, after_last_is_absent=True)
        elif res.source_rows == 0:
            res.status, res.error = SessionOutcome.FAILED, "no bars for any symbol on a trading session"
        elif report.symbol_errors:
            res.status, res.error = SessionOutcome.PARTIAL, f"{len(report.symbol_errors)} symbol(s) not fetched"
        else:
            res.status = SessionOutcome.DONE


def only_missing_symbols(store: Store, plan_: FetchPlan) -> FetchPlan:
    """A symbol-list daily run asks only for the symbols some planned session lacks (e.g. the one that failed
    last run), not the whole list again."""
    have = manifest.read_sessions(store, min(plan_.sessions), max(plan_.sessions))
    need = tuple(
        s for s in plan_.symbols or () if any(d not in have or not have[d].covers([s]) for d in plan_.sessions)
    )
    return replace(plan_, symbols=need) if need else plan_


def record_manifest(store: Store, report: FetchReport, clock: dt.datetime | None = None) -> None:
    """The manifest entries of the run: what bronze really holds per session (see the module docstring)."""
    plan_ = report.plan
    now = (clock or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).isoformat(timespec="seconds")
    source = "grouped" if plan_.all_symbols else "range"
    entries = {}
    for r in report.sessions:
        if plan_.all_symbols:
            if r.status == SessionOutcome.DONE:  # what bronze holds (a settled session: more than this run wrote)
                held = r.source_rows - r.duplicates - r.quarantined
                entries[r.session] = manifest.SessionEntry(manifest.ALL, held, held, source, report.run_id, now)
            continue
        held, absent, gaps = report.coverage.get(r.session, (set(), set(), set()))
        if r.status != SessionOutcome.FAILED and (held or absent or gaps):
            scope = tuple(sorted(held))
            entries[r.session] = manifest.SessionEntry(
                scope, len(scope), r.bronze_rows, source, report.run_id, now,
                absent=tuple(sorted(absent)), gaps=tuple(sorted(gaps)),
            )  # fmt: skip
    if entries:
        manifest.record_sessions(store, entries)
