"""NYSE trading calendar (pandas_market_calendars' "NYSE", correct back to 1885).

All functions take and return ``datetime.date`` objects; nothing depends on the host's time zone.
exchange_calendars' XNYS is deliberately not used: it treats every holiday before 1970 as a session.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from zoneinfo import ZoneInfo

from condvest.errors import ParameterError

NEW_YORK = ZoneInfo("America/New_York")
UTC = dt.UTC
FIRST_SUPPORTED = dt.date(1962, 1, 1)
_LAST_SUPPORTED = dt.date(2099, 12, 31)


@lru_cache(maxsize=1)
def _all_sessions() -> tuple[dt.date, ...]:
    import pandas_market_calendars as mcal

    days = mcal.get_calendar("NYSE").valid_days(FIRST_SUPPORTED.isoformat(), _LAST_SUPPORTED.isoformat())
    return tuple(d.date() for d in days)


@lru_cache(maxsize=1)
def _session_set() -> frozenset[dt.date]:
    return frozenset(_all_sessions())


def _check_range(day: dt.date) -> None:
    if not FIRST_SUPPORTED <= day <= _LAST_SUPPORTED:
        raise ParameterError(
            f"date {day.isoformat()} is outside the supported calendar range "
            f"{FIRST_SUPPORTED.isoformat()}..{_LAST_SUPPORTED.isoformat()}"
        )


def is_session(day: dt.date) -> bool:
    """True when the NYSE traded on ``day`` (half days included)."""
    _check_range(day)
    return day in _session_set()


def sessions_between(start: dt.date, end: dt.date) -> list[dt.date]:
    """NYSE sessions in the closed interval [start, end], in order."""
    import bisect

    _check_range(start)
    _check_range(end)
    days = _all_sessions()
    lo = bisect.bisect_left(days, start)
    hi = bisect.bisect_right(days, end)
    return list(days[lo:hi])


def previous_session(day: dt.date) -> dt.date:
    """The last session strictly before ``day``."""
    import bisect

    _check_range(day)
    days = _all_sessions()
    i = bisect.bisect_left(days, day)
    if i == 0:
        raise ParameterError(f"no NYSE session before {day.isoformat()} in the supported range")
    return days[i - 1]


def last_n_sessions(end: dt.date, n: int) -> list[dt.date]:
    """The ``n`` sessions ending at ``end`` (inclusive when ``end`` is a session)."""
    import bisect

    _check_range(end)
    days = _all_sessions()
    hi = bisect.bisect_right(days, end)
    return list(days[max(0, hi - n) : hi])


def session_date_from_epoch_ms(t: int) -> dt.date:
    """The New York calendar date of a Polygon ``t`` (UTC epoch milliseconds)."""
    return dt.datetime.fromtimestamp(t / 1000, tz=UTC).astimezone(NEW_YORK).date()


def ny_midnight_epoch_ms(day: dt.date) -> int:
    """Epoch milliseconds of 00:00 New York on ``day`` (how Polygon stamps range bars)."""
    return int(dt.datetime.combine(day, dt.time(0), tzinfo=NEW_YORK).timestamp() * 1000)


def ny_close_epoch_ms(day: dt.date) -> int:
    """Epoch milliseconds of 16:00 New York on ``day`` (how Polygon stamps grouped-daily bars)."""
    return int(dt.datetime.combine(day, dt.time(16), tzinfo=NEW_YORK).timestamp() * 1000)


def today_in_new_york(now: dt.datetime | None = None) -> dt.date:
    """Today's date in New York (``now`` must be aware when given)."""
    now = now or dt.datetime.now(tz=UTC)
    return now.astimezone(NEW_YORK).date()


#: grouped-daily bars are final some time after the 16:00 close; before this hour today is not complete
_SESSION_COMPLETE_HOUR = 18


def latest_complete_session(as_of: dt.date, now: dt.datetime | None = None) -> dt.date:
    """The newest session whose bars are final on ``as_of`` (``as_of`` itself once the evening has come)."""
    now = now or dt.datetime.now(tz=NEW_YORK)
    now_ny = now.astimezone(NEW_YORK)
    if is_session(as_of) and (as_of < now_ny.date() or now_ny.hour >= _SESSION_COMPLETE_HOUR):
        return as_of
    return previous_session(as_of)
