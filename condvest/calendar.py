"""NYSE trading calendar (pandas_market_calendars' "NYSE", correct back to 1885).

All functions take and return ``datetime.date`` objects; nothing depends on the host's time zone.
exchange_calendars' XNYS is deliberately not used: it treats every holiday before 1970 as a session.
The sessions of 1962-2099 ship with the package (``nyse_sessions.txt``, written by the pinned release of the
library and checked against it by the tests): a process reads them in milliseconds instead of importing and
asking the library (0.5-1 s); with another release of the library installed, the library is asked.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from zoneinfo import ZoneInfo

from condvest.errors import ParameterError

NEW_YORK = ZoneInfo("America/New_York")
UTC = dt.UTC
FIRST_SUPPORTED = dt.date(1962, 1, 1)
_LAST_SUPPORTED = dt.date(2099, 12, 31)


#: the sessions of the supported range as pandas_market_calendars computed them, shipped with the package: reading
#: it takes milliseconds where importing and asking the library takes 0.5-1 s (in every kernel that fetches).
#: Line 1 names the library's version; line 2 is the first session, line 3 the days from each session to the next.
SESSIONS_FILE = Path(__file__).resolve().parent / "nyse_sessions.txt"


def _calendar_version() -> str:
    try:
        return metadata.version("pandas_market_calendars")
    except metadata.PackageNotFoundError:
        return "none"


def computed_sessions() -> tuple[dt.date, ...]:
    """The sessions of the supported range, from pandas_market_calendars itself."""
    import pandas_market_calendars as mcal

    days = mcal.get_calendar("NYSE").valid_days(FIRST_SUPPORTED.isoformat(), _LAST_SUPPORTED.isoformat())
    return tuple(d.date() for d in days)


#: the command that rewrites ``SESSIONS_FILE`` (after pandas_market_calendars is upgraded)
WRITE_SESSIONS_FILE = 'python -c "from condvest.calendar import write_sessions_file; write_sessions_file()"'


def sessions_file_text(days: tuple[dt.date, ...]) -> str:
    """``SESSIONS_FILE``'s text for ``days``."""
    gaps = "".join(str((b - a).days) for a, b in zip(days, days[1:], strict=False))
    return f"pandas_market_calendars {_calendar_version()} NYSE\n{days[0].isoformat()}\n{gaps}\n"


def write_sessions_file() -> None:
    """Rewrite ``SESSIONS_FILE`` from the installed pandas_market_calendars (``WRITE_SESSIONS_FILE``)."""
    SESSIONS_FILE.write_text(sessions_file_text(computed_sessions()))


@lru_cache(maxsize=1)
def _all_sessions() -> tuple[dt.date, ...]:
    """The supported range's sessions: from ``SESSIONS_FILE`` when it was written by the installed
    pandas_market_calendars, else from the library (a newer release may know other closures)."""
    try:
        head, first, gaps = SESSIONS_FILE.read_text().split("\n")[:3]
    except (OSError, ValueError):
        return computed_sessions()
    if head != f"pandas_market_calendars {_calendar_version()} NYSE":
        return computed_sessions()
    day = dt.date.fromisoformat(first)
    days = [day]
    for g in gaps:
        day += dt.timedelta(days=int(g))
        days.append(day)
    return tuple(days)


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
