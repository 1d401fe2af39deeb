"""Planning a fetch run (pure): validate parameters, decide the mode and the sessions to fetch.

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
from condvest.lake import check_symbol


@dataclass(frozen=True)
class FetchParams:
    date: str | None = None
    symbols: str = "all"
    force: bool = False
    skip_market_check: bool = False
    backfill_missing: bool = True
    max_backfill_days: int = 30
    start: str | None = None
    end: str | None = None
    as_of: str | None = None
    write_postgres: bool = True


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


def _parse_date(value: str | dt.date | None, name: str) -> dt.date | None:
    if value in (None, "", "None"):
        return None
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value).strip())
    except ValueError:
        raise ParameterError(f"expected an ISO date YYYY-MM-DD, got {value!r}", parameter=name) from None


def parse_symbols(value: str | list[str] | None) -> tuple[str, ...] | None:
    """``"all"`` -> ``None``; ``"AAPL, msft"`` -> ``("AAPL", "MSFT")`` (validated, deduplicated, sorted)."""
    if value is None:
        return None
    items = value if isinstance(value, list) else str(value).split(",")
    items = [s.strip() for s in items if s.strip()]
    if not items:
        raise ParameterError("no symbols given (use 'all' or a comma list)", parameter="symbols")
    if len(items) == 1 and items[0].lower() == "all":
        return None
    return tuple(sorted({check_symbol(s.upper()) for s in items}))


def validate(params: FetchParams, today: dt.date) -> tuple[dt.date, dt.date | None, dt.date | None, dt.date | None]:
    """Check every parameter before anything is written; returns (as_of, date, start, end)."""
    as_of = _parse_date(params.as_of, "as_of") or today
    day = _parse_date(params.date, "date")
    start = _parse_date(params.start, "start")
    end = _parse_date(params.end, "end")
    if (
        isinstance(params.max_backfill_days, bool)
        or not isinstance(params.max_backfill_days, int)
        or not 1 <= params.max_backfill_days <= 2000
    ):
        raise ParameterError(
            f"must be an integer in 1..2000, got {params.max_backfill_days!r}", parameter="max_backfill_days"
        )
    if (start is None) != (end is None):
        raise ParameterError(
            "give both start and end for a historical backfill", parameter="start" if start is None else "end"
        )
    if start is not None and end is not None:
        if end < start:
            raise ParameterError(f"end {end} is before start {start}", parameter="end")
        if day is not None:
            raise ParameterError("give either date or start/end, not both", parameter="date")
        if end > as_of:
            raise ParameterError(f"end {end} is after as_of {as_of}", parameter="end")
    if day is not None and day > as_of:
        raise ParameterError(f"date {day} is after as_of {as_of}", parameter="date")
    parse_symbols(params.symbols)
    return as_of, day, start, end


def plan(
    params: FetchParams, today: dt.date, missing: list[dt.date] | None = None, now: dt.datetime | None = None
) -> FetchPlan:
    """Decide what to fetch. ``missing`` are the window's sessions absent from the manifest (daily mode)."""
    as_of, day, start, end = validate(params, today)
    symbols = parse_symbols(params.symbols)
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
        return FetchPlan("date", as_of, (day,), symbols)
    latest = latest_complete_session(as_of, now)
    if params.backfill_missing:
        sessions = sorted(set(missing or []) | ({latest} if params.force else set()))
    else:
        sessions = [latest] if params.force or latest in (missing or []) else []
    if not sessions:
        return FetchPlan("skip", as_of, (), symbols, reason=f"bronze already holds every session up to {latest}")
    return FetchPlan("daily", as_of, tuple(sessions), symbols)


def backfill_window(as_of: dt.date, max_backfill_days: int, now: dt.datetime | None = None) -> list[dt.date]:
    """The sessions gap detection looks at: the last ``max_backfill_days`` complete sessions."""
    return last_n_sessions(latest_complete_session(as_of, now), max_backfill_days)
