"""A history backfill split by symbol (``condvest.shards``): N shards fetch, one commit records the manifest.

Shard I of N (``shard="I/N"``) fetches only the symbols of the list (of the reference tickers for "all")
whose stable hash falls in shard I, and writes only what belongs to them: each symbol's bronze history,
its quarantine files and its Postgres rows. It reads no splits and rebases nothing (the splits file and
the basis are shared objects) and leaves the manifest alone. Its outcome is its done record,
``processing_metadata/shards/fetch/<group>/done/part-<i>.json``, removed when the shard starts and written
last:

    plan           mode, as_of, sessions (first, last, count), symbols, write_postgres: what it fetched
    sessions       per session: source rows, duplicates, quarantined, bronze rows, Postgres rows, seconds
    coverage       a symbol list's symbols: first and last bar in the window, the sessions without a bar
    symbol_errors, unstorable_tickers, requests, retries

The commit (``shard="commit/N"``) reads the N records before any request or write (``ShardsIncomplete``
when one is missing or ran another plan), combines them into the report of an unsharded backfill of the
same symbols (``combine``: the statuses are then settled as that run settles them), reads the splits and
rebases once for the whole window, records the manifest and removes the staging area.
"""

from __future__ import annotations

import bisect
import datetime as dt
from typing import TYPE_CHECKING, Any

from condvest.crash import crash_point
from condvest.shards import Shard, ShardsIncomplete, clear_part, read_parts, write_part
from condvest.storage import Store

if TYPE_CHECKING:
    from condvest.fetch.plan import FetchPlan
    from condvest.fetch.report import FetchReport

STAGE = "fetch"

#: the symbols bronze holds per session, and each symbol's first and last bar (a symbol list's coverage)
Held = dict[dt.date, set[str]]
Life = dict[str, tuple[dt.date, dt.date]]

_COUNTS = ("source_rows", "duplicates", "quarantined", "bronze_rows", "postgres_rows", "seconds")


def plan_record(plan_: FetchPlan, write_postgres: bool) -> dict[str, Any]:
    """What a shard fetched, as its done record states it; the commit expects its own plan there."""
    s = plan_.sessions
    return {
        "mode": plan_.mode,
        "as_of": plan_.as_of.isoformat(),
        "sessions": [s[0].isoformat(), s[-1].isoformat(), len(s)] if s else [None, None, 0],
        "symbols": None if plan_.symbols is None else list(plan_.symbols),
        "write_postgres": bool(write_postgres),
    }


def _describe(rec: object) -> str:
    if not isinstance(rec, dict):
        return "an unknown plan"
    first, last, n = (rec.get("sessions") or [None, None, 0])[:3]
    symbols = rec.get("symbols")
    who = "all symbols" if symbols is None else f"{len(symbols)} listed symbol(s)"
    pg = "" if rec.get("write_postgres", True) else ", no Postgres"
    return f"{n} session(s) {first}..{last} of {who} as of {rec.get('as_of')}{pg}"


def begin(store: Store, shard: Shard) -> None:
    """A shard's first step: its done record from an earlier attempt goes before anything is fetched."""
    clear_part(store, STAGE, shard, [])


def stage(store: Store, shard: Shard, report: FetchReport, held: Held, life: Life, write_postgres: bool) -> None:
    """Write the shard's done record (its last step) from its report and its symbols' coverage."""
    plan_ = report.plan
    coverage: dict[str, list[Any]] = {}
    if not plan_.all_symbols:
        for sym, (first, last) in sorted(life.items()):
            if sym in report.symbol_errors:
                continue
            gaps = [d.isoformat() for d in plan_.sessions if first <= d <= last and sym not in held.get(d, ())]
            coverage[sym] = [first.isoformat(), last.isoformat(), gaps]
    doc = {
        "run_id": report.run_id,
        "plan": plan_record(plan_, write_postgres),
        "sessions": {r.session.isoformat(): [getattr(r, c) for c in _COUNTS] for r in report.sessions},
        "coverage": coverage,
        "symbol_errors": dict(sorted(report.symbol_errors.items())),
        "unstorable_tickers": list(report.unstorable_tickers),
        "requests": report.requests,
        "retries": report.retries,
    }
    crash_point("fetch.shard_before_done")
    write_part(store, STAGE, shard, doc)


def read_outcomes(store: Store, commit: Shard, plan_: FetchPlan, write_postgres: bool) -> list[dict[str, Any]]:
    """Every shard's done record; ``ShardsIncomplete`` (nothing asked or written) when one is missing or
    fetched another plan than the commit's."""
    parts = read_parts(store, STAGE, commit)
    want = plan_record(plan_, write_postgres)
    for i, p in enumerate(parts):
        if p.get("plan") != want:
            raise ShardsIncomplete(
                f"this shard fetched {_describe(p.get('plan'))}, the commit expects {_describe(want)}",
                group=commit.group,
                shard=f"{i}/{commit.count}",
            )
    return parts


def combine(report: FetchReport, parts: list[dict[str, Any]]) -> tuple[Held, Life]:
    """Add every shard's counts, errors, tickers and requests to ``report`` (its sessions already listed, all
    pending); returns the symbols held per session and each symbol's trading life, for the settling."""
    plan_ = report.plan
    results = {r.session: r for r in report.sessions}
    days = list(plan_.sessions)
    held: Held = {d: set() for d in days} if not plan_.all_symbols else {}
    life: Life = {}
    errors: dict[str, str] = {}
    for p in parts:
        for day, counts in p["sessions"].items():
            r = results[dt.date.fromisoformat(day)]
            for name, value in zip(_COUNTS, counts, strict=True):
                setattr(r, name, getattr(r, name) + value)
        for sym, (first, last, gaps) in p["coverage"].items():
            a, b = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
            life[sym] = (a, b)
            missing = set(map(dt.date.fromisoformat, gaps))
            for d in days[bisect.bisect_left(days, a) : bisect.bisect_right(days, b)]:
                if d not in missing:
                    held[d].add(sym)
        errors.update(p["symbol_errors"])
        for t in p["unstorable_tickers"]:  # every shard saw the whole reference list
            if t not in report.unstorable_tickers:
                report.unstorable_tickers.append(t)
        report.requests += int(p["requests"])
        report.retries += int(p["retries"])
    report.symbol_errors.update(sorted(errors.items()))
    for r in report.sessions:
        r.seconds = round(r.seconds, 3)
    return held, life
