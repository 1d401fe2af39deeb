"""Polygon payloads: parsing bars, checking them, deduping; session dates in every host time zone."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from condvest import calendar as cal
from condvest.bars import (
    MoveLimits,
    bars_frame,
    check_bars,
    check_envelope,
    conflicting,
    dedupe,
    misdated,
    suspect_moves,
)
from condvest.errors import AuthError, BadPayload, ParameterError

TZS = ["UTC", "Asia/Tokyo", "America/Los_Angeles"]


def _bar(t, **kw):
    b = {"o": 10.0, "h": 11.0, "l": 9.5, "c": 10.5, "v": 1000.0, "vw": 10.2, "n": 12, "t": t}
    b.update(kw)
    return b


def test_envelope_shapes_from_polygon():
    assert check_envelope({"status": "OK", "resultsCount": 0, "queryCount": 0, "adjusted": True}) == []
    with pytest.raises(AuthError):
        check_envelope({"status": "NOT_AUTHORIZED", "message": "Unknown API Key", "request_id": "x"})
    with pytest.raises(BadPayload, match="ERROR"):
        check_envelope({"status": "ERROR", "error": "Something went wrong"})
    with pytest.raises(BadPayload, match="'h'"):
        check_envelope({"status": "OK", "results": [{"o": 1, "l": 1, "c": 1, "v": 1, "t": 1}]})
    with pytest.raises(BadPayload):
        check_envelope({"status": "OK", "resultsCount": 3})


finite = st.floats(min_value=0.0001, max_value=1e6, allow_nan=False)


@given(
    o=finite,
    c=finite,
    spread=st.floats(0, 100),
    v=st.floats(0, 1e9),
    day=st.dates(dt.date(1990, 1, 1), dt.date(2030, 1, 1)),
)
@settings(max_examples=200, deadline=None)
def test_parsed_bars_keep_values_exactly_and_valid_bars_pass(o, c, spread, v, day):
    hi, lo = max(o, c) + spread, max(0.0001, min(o, c) - spread)  # a price of 0 is quarantined
    df = bars_frame([_bar(cal.ny_close_epoch_ms(day), o=o, c=c, h=hi, l=lo, v=v, T="ZZ")])
    row = df.iloc[0]
    assert (row["open"], row["close"], row["high"], row["low"], row["volume"]) == (o, c, hi, lo, v)
    assert row["date"] == day
    good, bad = check_bars(df)
    assert len(good) == 1 and bad.empty


def test_broken_bars_are_quarantined_with_reasons():
    t = cal.ny_close_epoch_ms(dt.date(2025, 10, 17))
    df = bars_frame([_bar(t, T="OK1"), _bar(t, T="HI", h=10.0), _bar(t, T="NEG", v=-5.0), _bar(t, T="LOW", l=10.8)])
    good, bad = check_bars(df)
    assert list(good["symbol"]) == ["OK1"]
    reasons = dict(zip(bad["symbol"], bad["reason"], strict=True))
    assert reasons == {"HI": "close > high", "NEG": "volume < 0", "LOW": "low > open; low > close"}


def test_dedupe_keys_on_symbol_and_session_not_the_whole_row():
    day = dt.date(2025, 10, 17)
    df = bars_frame(
        [
            _bar(cal.ny_midnight_epoch_ms(day), T="A"),
            _bar(cal.ny_close_epoch_ms(day), T="A", c=10.7),
            _bar(cal.ny_close_epoch_ms(day), T="B"),
        ]
    )
    out, dropped = dedupe(df)
    assert dropped == 1 and len(out) == 2
    assert out.set_index("symbol").loc["A", "close"] == 10.7  # the last one seen wins


def test_non_positive_prices_are_quarantined():
    t = cal.ny_close_epoch_ms(dt.date(2025, 10, 17))
    zero = _bar(t, T="ZERO", o=0.0, h=0.0, l=0.0, c=0.0)
    negative = _bar(t, T="NEG", o=-2.0, h=-1.0, l=-3.0, c=-1.5)
    good, bad = check_bars(bars_frame([_bar(t, T="OK"), zero, negative]))
    assert list(good["symbol"]) == ["OK"]
    assert dict(zip(bad["symbol"], bad["reason"], strict=True)) == {"ZERO": "price <= 0", "NEG": "price <= 0"}


def test_conflicting_duplicates_are_all_quarantined_and_identical_repeats_stay_plain_duplicates():
    t = cal.ny_close_epoch_ms(dt.date(2025, 10, 17))
    df = bars_frame([_bar(t, T="A"), _bar(t, T="A"), _bar(t, T="B"), _bar(t, T="B", c=10.9), _bar(t, T="C")])
    kept, clashing = conflicting(df)
    assert sorted(clashing["symbol"]) == ["B", "B"]
    assert set(clashing["reason"]) == {"conflicting duplicates: the same key twice in one answer with different values"}
    out, dropped = dedupe(kept)
    assert sorted(out["symbol"]) == ["A", "C"] and dropped == 1


def test_a_bar_on_a_closed_day_is_quarantined_naming_it():
    friday, saturday = dt.date(2025, 10, 17), dt.date(2025, 10, 18)
    df = bars_frame([_bar(cal.ny_close_epoch_ms(friday), T="A"), _bar(cal.ny_close_epoch_ms(saturday), T="B")])
    good, bad = misdated(df, friday, friday)
    assert list(good["symbol"]) == ["A"]
    assert bad["reason"].tolist() == ["dated 2025-10-18, not an NYSE session (the session asked for is 2025-10-17)"]


def _closes(rows):
    return pd.DataFrame(rows, columns=["symbol", "date", "close"])


def test_a_move_beyond_the_limits_without_a_split_is_suspect():
    d = [dt.date(2025, 10, 15), dt.date(2025, 10, 16), dt.date(2025, 10, 17)]
    previous = _closes([("UP", d[0], 10.0), ("DOWN", d[0], 10.0), ("SPLIT", d[0], 10.0), ("CALM", d[0], 10.0)])
    bars = _closes(
        [
            ("UP", d[1], 20.5),  # x2.05 from the previous session's close
            ("DOWN", d[1], 9.0),
            ("DOWN", d[2], 0.9),  # x0.1 inside the answer itself
            ("SPLIT", d[1], 5.0),  # x0.5 ... and a 2-for-1 split executed that day: not suspect
            ("SPLIT", d[2], 2.0),  # x0.4: suspect, no split that day
            ("CALM", d[1], 17.9),  # x1.79: inside the limits
        ]
    )
    splits = pd.DataFrame({"ticker": ["SPLIT"], "execution_date": [d[1]]})
    out = suspect_moves(bars, previous, splits)
    got = {(r.symbol, r.date): r.ratio for r in out.itertuples()}
    assert got == {("UP", d[1]): 2.05, ("DOWN", d[2]): 0.1, ("SPLIT", d[2]): 0.4}
    assert out.set_index("symbol").loc["UP", "previous_close"] == 10.0
    assert suspect_moves(bars, previous, splits, MoveLimits(0.05, 3.0)).empty
    assert MoveLimits.parse("0.5, 2") == MoveLimits(0.5, 2.0)
    with pytest.raises(ParameterError):
        MoveLimits.parse("2,0.5")


def test_fractional_volume_survives():
    df = bars_frame([_bar(cal.ny_close_epoch_ms(dt.date(2025, 10, 17)), v=1234.5678, T="F")])
    assert df["volume"].iloc[0] == 1234.5678
    assert isinstance(df, pd.DataFrame)


# --- host time zones ------------------------------------------------------------------------------------------


def _with_tz(tz: str, fn):
    old = os.environ.get("TZ")
    os.environ["TZ"] = tz
    time.tzset()
    try:
        return fn()
    finally:
        if old is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old
        time.tzset()


@given(day=st.dates(min_value=dt.date(1962, 1, 2), max_value=dt.date(2035, 12, 31)))
@settings(max_examples=150, deadline=None)
def test_session_date_from_either_stamp_is_the_new_york_date_in_every_host_zone(day):
    for stamp in (cal.ny_midnight_epoch_ms(day), cal.ny_close_epoch_ms(day)):
        got = {_with_tz(tz, lambda s=stamp: cal.session_date_from_epoch_ms(s)) for tz in TZS}
        assert got == {day}
        frame = {tz: _with_tz(tz, lambda s=stamp: bars_frame([_bar(s)], symbol="X")["date"].iloc[0]) for tz in TZS}
        assert set(frame.values()) == {day}


def test_parsing_is_identical_in_subprocesses_with_other_host_zones():
    code = (
        "import datetime as dt;from condvest import calendar as c;from condvest.bars import bars_frame;"
        "d=[dt.date(2024,3,8)+dt.timedelta(days=i) for i in range(0,400,7)];"
        "r=[{'o':1,'h':2,'l':1,'c':2,'v':1,'t':f(x)} for x in d for f in (c.ny_midnight_epoch_ms,c.ny_close_epoch_ms)];"
        "print(bars_frame(r,symbol='X')['date'].astype(str).str.cat(sep=','))"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code], env={**os.environ, "TZ": tz}, capture_output=True, text=True, check=True
        ).stdout
        for tz in TZS
    }
    assert len(outs) == 1
