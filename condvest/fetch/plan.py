"""Planning a fetch run (pure): decide the mode and the sessions to fetch from the checked parameters
(``condvest.fetch.params``).

A named ``date`` that has not closed yet (before 18:00 New York on that day) is refused with
``ParameterError`` before any request: its bars would be the day in progress.

Modes: ``history`` (``start``/``end``: per-symbol range requests merged into each symbol's history
file), ``date`` (one named session), ``daily`` (the latest complete session plus, with
``backfill_missing``, every session of the last ``max_backfill_days`` sessions missing from the
bronze manifest). Sessions come from the NYSE calendar only: a holiday or a weekend is never
"missing" and is never requested.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from condvest.calendar import (
    NEW_YORK,
    is_session,
    last_n_sessions,
    latest_complete_session,
    previous_session,
    sessions_between,
)
from condvest.errors import ParameterError
from condvest.fetch.params import CheckedFetch, FetchParams, rebase_since
from condvest.manifest import SessionEntry

__all__ = ["FetchParams", "FetchPlan", "backfill_window", "plan", "rebase_since", "settle_candidates"]


def next_session(day: dt.date) -> dt.date:
    """The first NYSE session after ``day``."""
    return sessions_between(day + dt.timedelta(days=1), day + dt.timedelta(days=15))[0]


@dataclass(frozen=True)
class FetchPlan:
    mode: str  # "history" | "date" | "daily" | "skip"
    as_of: dt.date
    sessions: tuple[dt.date, ...]
    symbols: tuple[str, ...] | None  # None: every symbol
    reason: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)
    #: held sessions asked again because they were fetched before they were final (the vendor revises a
    #: session's volume, VWAP and trade count after the close): only what changed is stored
    settle: tuple[dt.date, ...] = ()

    @property
    def all_symbols(self) -> bool:
        return self.symbols is None


def plan(
    p: FetchParams | CheckedFetch,
    today: dt.date,
    missing: list[dt.date] | None = None,
    now: dt.datetime | None = None,
    settle: list[dt.date] | None = None,
) -> FetchPlan:
    """Decide what to fetch. ``missing`` are the window's sessions absent from the manifest (daily mode), ``settle``
    the held ones to ask again (``settle_candidates``); ``p`` checked parameters (``FetchParams`` are checked here,
    with ``today``)."""
    c = p.check(today) if isinstance(p, FetchParams) else p
    as_of, day, start, end, symbols = c.as_of or today, c.date, c.start, c.end, c.symbols
    if start is not None and end is not None:
        sessions = sessions_between(start, min(end, latest_complete_session(as_of, now)))
        return FetchPlan(
            "history",
            as_of,
            tuple(sessions),
            symbols,
            reason="" if sessions else f"no NYSE session between {start} and {end}",
        )
    if day is not None:
        if not is_session(day):
            return FetchPlan("skip", as_of, (), symbols, reason=f"{day} is not an NYSE session (holiday or weekend)")
        if day > latest_complete_session(as_of, now):  # its bars would be the day in progress, not final ones
            raise ParameterError(
                f"session {day} has not closed yet (complete from 18:00 New York); fetch it after the close",
                parameter="date",
            )
        return FetchPlan("date", as_of, (day,), symbols)
    latest = latest_complete_session(as_of, now)
    if c.backfill_missing:
        sessions = sorted(set(missing or []) | ({latest} if c.force else set()))
    else:
        sessions = [latest] if c.force or latest in (missing or []) else []
    again = tuple(sorted(set(settle or ()) - set(sessions)))
    if not sessions and not again:
        return FetchPlan("skip", as_of, (), symbols, reason=f"bronze already holds every session up to {latest}")
    return FetchPlan("daily", as_of, tuple(sorted({*sessions, *again})), symbols, settle=again)


def settle_candidates(
    held: dict[dt.date, SessionEntry], latest: dt.date, n: int, symbols: tuple[str, ...] | None
) -> list[dt.date]:
    """Of the ``n`` sessions before ``latest``, those bronze holds from a write made before they were final: before
    the next session had closed (18:00 New York), when the vendor still revises volume, VWAP and trade count."""
    if n <= 0:
        return []
    out = []
    for day in last_n_sessions(previous_session(latest), n):
        entry = held.get(day)
        if entry is None or not entry.covers(symbols) or not entry.written_at:
            continue
        final_at = dt.datetime.combine(next_session(day), dt.time(18), tzinfo=NEW_YORK)
        try:
            written = dt.datetime.fromisoformat(entry.written_at)
        except ValueError:
            continue
        if written.tzinfo is not None and written < final_at:
            out.append(day)
    return out


def backfill_window(as_of: dt.date, max_backfill_days: int, now: dt.datetime | None = None) -> list[dt.date]:
    """The sessions gap detection looks at: the last ``max_backfill_days`` complete sessions."""
    return last_n_sessions(latest_complete_session(as_of, now), max_backfill_days)
