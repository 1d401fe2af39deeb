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

from condvest import params
from condvest.calendar import FIRST_SUPPORTED, is_session, last_n_sessions, latest_complete_session, sessions_between
from condvest.errors import ParameterError
from condvest.shards import Shard


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
    rebase: str | None = None  # "YYYY-MM-DD" or "all": also rebase symbols with a split since then
    shard: str = ""  # a sharded history backfill: "I/N" fetches shard I of N, "commit/N" records the manifest
    shard_group: str = ""  # the id the shards and their commit share

    def sharding(self) -> Shard | None:
        """The shard of a sharded history backfill (``condvest.fetch.sharded``), or ``None``."""
        return Shard.parse(self.shard, self.shard_group)


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


def validate(p: FetchParams, today: dt.date) -> tuple[dt.date, dt.date | None, dt.date | None, dt.date | None]:
    """Check every parameter before anything is written; returns (as_of, date, start, end)."""
    as_of = params.iso_date(p.as_of, "as_of") or today
    day = params.iso_date(p.date, "date")
    params.count(p.max_backfill_days, "max_backfill_days", 1, 2000)
    for name in ("force", "skip_market_check", "backfill_missing", "write_postgres"):
        params.flag(getattr(p, name), name)
    span = params.date_range(p.start, p.end, as_of=as_of)
    start, end = span if span else (None, None)
    if span is not None and day is not None:
        raise ParameterError("give either date or start/end, not both", parameter="date")
    if day is not None and day > as_of:
        raise ParameterError(f"date {day} is after as_of {as_of}", parameter="date")
    params.symbol_list(p.symbols)
    rebase_since(p, as_of)
    if p.sharding() is not None and span is None:
        raise ParameterError("sharding applies to history backfills (start/end)", parameter="shard")
    return as_of, day, start, end


def rebase_since(p: FetchParams, as_of: dt.date) -> dt.date | None:
    """The ``rebase`` parameter as the first execution date to check (``all``: every split), or None."""
    if p.rebase is None or p.rebase == "":
        return None
    if p.rebase == "all":
        return FIRST_SUPPORTED
    try:
        since = params.iso_date(p.rebase, "rebase")
    except ParameterError:
        raise ParameterError(f"rebase must be YYYY-MM-DD or 'all', got {p.rebase!r}", parameter="rebase") from None
    if since is not None and since > as_of:
        raise ParameterError(f"rebase {since} is after as_of {as_of}", parameter="rebase")
    return since


def plan(
    p: FetchParams, today: dt.date, missing: list[dt.date] | None = None, now: dt.datetime | None = None
) -> FetchPlan:
    """Decide what to fetch. ``missing`` are the window's sessions absent from the manifest (daily mode)."""
    as_of, day, start, end = validate(p, today)
    symbols = params.symbol_list(p.symbols)
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
    if p.backfill_missing:
        sessions = sorted(set(missing or []) | ({latest} if p.force else set()))
    else:
        sessions = [latest] if p.force or latest in (missing or []) else []
    if not sessions:
        return FetchPlan("skip", as_of, (), symbols, reason=f"bronze already holds every session up to {latest}")
    return FetchPlan("daily", as_of, tuple(sessions), symbols)


def backfill_window(as_of: dt.date, max_backfill_days: int, now: dt.datetime | None = None) -> list[dt.date]:
    """The sessions gap detection looks at: the last ``max_backfill_days`` complete sessions."""
    return last_n_sessions(latest_complete_session(as_of, now), max_backfill_days)
