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
