"""The exchange calendar: sessions, holidays, half days."""

from __future__ import annotations

import datetime as dt

from condvest import calendar as cal


def test_calendar_knows_old_holidays_and_half_days():
    assert not cal.is_session(dt.date(1962, 12, 25))  # XNYS gets this one wrong
    assert not cal.is_session(dt.date(2025, 7, 4))
    assert not cal.is_session(dt.date(2025, 10, 18))  # a Saturday
    assert cal.is_session(dt.date(2025, 11, 28))  # half day after Thanksgiving
    assert cal.previous_session(dt.date(2025, 7, 7)) == dt.date(2025, 7, 3)
    assert cal.sessions_between(dt.date(2025, 12, 24), dt.date(2025, 12, 29)) == [
        dt.date(2025, 12, 24),
        dt.date(2025, 12, 26),
        dt.date(2025, 12, 29),
    ]


def test_the_shipped_sessions_are_the_librarys_own():
    # the file that spares every kernel the library's 0.5-1 s must say exactly what the library says
    shipped = cal.SESSIONS_FILE.read_text()
    assert shipped == cal.sessions_file_text(cal.computed_sessions()), (
        f"{cal.SESSIONS_FILE.name} is stale for the installed pandas_market_calendars: run {cal.WRITE_SESSIONS_FILE}"
    )
    assert cal._all_sessions() == cal.computed_sessions()
    assert cal.is_session(dt.date(2001, 9, 17)) and not cal.is_session(dt.date(2001, 9, 11))
