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

from condvest.calendar import is_session, last_n_sessions, latest_complete_session, sessions_between
from condvest.errors import ParameterError
from condvest.fetch.params import CheckedFetch, FetchParams, rebase_since

__all__ = ["FetchParams", "FetchPlan", "backfill_window", "plan", "rebase_since"]


@dataclass(frozen=True)
class FetchPlan:
    mode: str  # "history" | "date" | "daily" | "skip"
    as_of: dt.date
    sessions: tuple[dt.date, ...]
    symbols: tuple[str, ...] | None  # None: every symbol
    reason: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def all_symbols(self) -> bool:
        return self.symbols is None


def plan(
    p: FetchParams | CheckedFetch, today: dt.date, missing: list[dt.date] | None = None, now: dt.datetime | None = None
) -> FetchPlan:
    """Decide what to fetch. ``missing`` are the window's sessions absent from the manifest (daily mode); ``p``
    checked parameters (``FetchParams`` are checked here, with ``today``)."""
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
    if not sessions:
        return FetchPlan("skip", as_of, (), symbols, reason=f"bronze already holds every session up to {latest}")
    return FetchPlan("daily", as_of, tuple(sessions), symbols)


def backfill_window(as_of: dt.date, max_backfill_days: int, now: dt.datetime | None = None) -> list[dt.date]:
    """The sessions gap detection looks at: the last ``max_backfill_days`` complete sessions."""
    return last_n_sessions(latest_complete_session(as_of, now), max_backfill_days)
