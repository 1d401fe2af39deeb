"""01_fetch's parameters, checked once: ``FetchParams(...).check(today) -> CheckedFetch`` or ``ParameterError``.

Pure: no I/O, no clock. ``today`` is the run's "today" (``settings.today()``); without it (the runner's
pre-flight) the checks against the run's date (``date``, ``end`` and ``rebase`` not after ``as_of``) use
``as_of`` when it is given and are otherwise left to the run, which checks with its today.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from condvest import params
from condvest.calendar import FIRST_SUPPORTED
from condvest.errors import ParameterError
from condvest.shards import Shard

__all__ = ["CheckedFetch", "FetchParams", "rebase_since"]

_FLAGS = ("force", "skip_market_check", "backfill_missing", "write_postgres")


@dataclass(frozen=True)
class FetchParams:
    """01_fetch's parameters, as the notebook's ``parameters`` cell names them (same names, same defaults)."""

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
    settle_sessions: int = 2  # a daily run asks again for this many held sessions fetched before they were final
    shard: str = ""  # a sharded history backfill: "I/N" fetches shard I of N, "commit/N" records the manifest
    shard_group: str = ""  # the id the shards and their commit share

    def sharding(self) -> Shard | None:
        """The shard of a sharded history backfill (``condvest.fetch.sharded``), or ``None``."""
        return Shard.parse(self.shard, self.shard_group)

    def check(self, today: dt.date | None = None) -> CheckedFetch:
        """Every parameter checked before anything is fetched or written (``ParameterError`` naming it)."""
        as_of = params.iso_date(self.as_of, "as_of") or today
        day = params.iso_date(self.date, "date")
        backfill_days = params.count(self.max_backfill_days, "max_backfill_days", 1, 2000)
        settle = params.count(self.settle_sessions, "settle_sessions", 0, 30)
        flags = {name: params.flag(getattr(self, name), name) for name in _FLAGS}
        span = params.date_range(self.start, self.end, as_of=as_of)
        if span is not None and day is not None:
            raise ParameterError("give either date or start/end, not both", parameter="date")
        if day is not None and as_of is not None and day > as_of:
            raise ParameterError(f"date {day} is after as_of {as_of}", parameter="date")
        symbols = params.symbol_list(self.symbols)
        since = rebase_since(self, as_of)
        shard = self.sharding()
        if shard is not None and span is None:
            raise ParameterError("sharding applies to history backfills (start/end)", parameter="shard")
        start, end = span if span else (None, None)
        return CheckedFetch(
            day,
            symbols,
            max_backfill_days=backfill_days,
            settle_sessions=settle,
            start=start,
            end=end,
            as_of=as_of,
            rebase=since,
            shard=shard,
            **flags,
        )


@dataclass(frozen=True)
class CheckedFetch:
    """``FetchParams`` parsed: dates as dates, symbols as a sorted tuple (``None``: every symbol), the rebase as
    the first execution date to check, the shard parsed; ``as_of`` is ``None`` only when checked without a
    today (the run's date then decides)."""

    date: dt.date | None
    symbols: tuple[str, ...] | None
    force: bool = False
    skip_market_check: bool = False
    backfill_missing: bool = True
    max_backfill_days: int = 30
    settle_sessions: int = 2
    start: dt.date | None = None
    end: dt.date | None = None
    as_of: dt.date | None = None
    write_postgres: bool = True
    rebase: dt.date | None = None
    shard: Shard | None = None

    @property
    def daily(self) -> bool:
        """Neither a named session nor a history range: the latest session plus the missing ones."""
        return self.date is None and self.start is None


def rebase_since(p: FetchParams, as_of: dt.date | None) -> dt.date | None:
    """The ``rebase`` parameter as the first execution date to check (``all``: every split), or None."""
    if p.rebase is None or p.rebase == "":
        return None
    if p.rebase == "all":
        return FIRST_SUPPORTED
    try:
        since = params.iso_date(p.rebase, "rebase")
    except ParameterError:
        raise ParameterError(f"rebase must be YYYY-MM-DD or 'all', got {p.rebase!r}", parameter="rebase") from None
    if since is not None and as_of is not None and since > as_of:
        raise ParameterError(f"rebase {since} is after as_of {as_of}", parameter="rebase")
    return since
