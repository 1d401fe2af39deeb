"""condvest.params: the one place where notebook parameters are checked (properties with Hypothesis)."""

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from condvest import params
from condvest.errors import ParameterError


@given(st.dates())
def test_iso_dates_round_trip_and_unset_means_none(day):
    assert params.iso_date(day.isoformat(), "d") == day
    assert params.iso_date(day, "d") == day
    for unset in (None, "", "None"):
        assert params.iso_date(unset, "d") is None


@given(st.text(max_size=12).filter(lambda s: s.strip() not in ("", "None")))
def test_anything_else_is_refused_naming_the_parameter(text):
    try:
        dt.date.fromisoformat(text.strip())
    except ValueError:
        with pytest.raises(ParameterError, match="parameter as_of:"):
            params.iso_date(text, "as_of")


@pytest.mark.parametrize("bad", [20251017, 2025.1, dt.datetime(2025, 1, 1), ["2025-01-01"]])
def test_non_strings_are_refused(bad):
    with pytest.raises(ParameterError, match="parameter date:"):
        params.iso_date(bad, "date")


@given(st.dates(), st.dates())
def test_a_range_is_both_bounds_in_order(a, b):
    if b < a:
        with pytest.raises(ParameterError, match="parameter end: end .* is before start"):
            params.date_range(a.isoformat(), b.isoformat())
    else:
        assert params.date_range(a.isoformat(), b.isoformat()) == (a, b)
    with pytest.raises(ParameterError, match="give both"):
        params.date_range(a.isoformat(), None)
    assert params.date_range(None, None) is None


def test_a_range_may_not_end_after_as_of():
    with pytest.raises(ParameterError, match="after as_of"):
        params.date_range("2025-01-01", "2025-02-01", as_of=dt.date(2025, 1, 31))


@given(st.integers(-5, 50), st.integers(0, 10), st.integers(10, 40))
def test_counts_accept_exactly_their_range(n, low, high):
    if low <= n <= high:
        assert params.count(n, "n", low, high) == n
    else:
        with pytest.raises(ParameterError, match=r"parameter n: must be an integer in"):
            params.count(n, "n", low, high)


@pytest.mark.parametrize("bad", [True, False, 3.0, "3", None])
def test_counts_refuse_booleans_floats_and_text(bad):
    with pytest.raises(ParameterError):
        params.count(bad, "n", 0, 10)


@given(st.one_of(st.booleans(), st.integers(), st.text(max_size=5), st.none()))
def test_flags_are_real_booleans_only(value):
    if isinstance(value, bool):
        assert params.flag(value, "f") is value
    else:
        with pytest.raises(ParameterError, match="expected True or False"):
            params.flag(value, "f")


def test_choice():
    assert params.choice("archive", "mode", ("deploy", "archive")) == "archive"
    with pytest.raises(ParameterError, match="choose one of deploy, archive"):
        params.choice("purge", "mode", ("deploy", "archive"))


_TICKER = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9.\-]{0,10}", fullmatch=True).filter(lambda s: ".." not in s)


@given(st.lists(_TICKER, min_size=1, max_size=6))
def test_symbol_lists_are_upper_cased_unique_and_sorted(tickers):
    got = params.symbol_list(", ".join(tickers))
    assert got == tuple(sorted({t if any(c.isupper() for c in t) else t.upper() for t in tickers}))
    assert params.symbol_list(list(tickers)) == got


@pytest.mark.parametrize("bad", ["../etc", "A/B", "AAPL;DROP", "a b", "x" * 17, "A..B", "'", ""])
def test_unsafe_symbols_are_refused(bad):
    with pytest.raises(ParameterError, match="parameter symbols"):
        params.symbol_list([bad, "AAPL"] if bad else "  ,  ")


@pytest.mark.parametrize(
    ("typed", "stored"),
    [("brk.a", "BRK.A"), ("BF.B", "BF.B"), ("BACpB", "BACpB"), ("xyz.ws.a", "XYZ.WS.A"), ("XYZ.U", "XYZ.U"),
     ("ABCw", "ABCw"), ("GSpD", "GSpD"), ("BF-B", "BF-B")],
)  # fmt: skip
def test_real_ticker_shapes_are_accepted_and_lowercase_suffixes_kept(typed, stored):
    assert params.symbol_list(typed) == (stored,) and params.storable_symbol(stored)


@pytest.mark.parametrize("odd", ["ABC/WS", "TEST^", "XYZ+", "GRP=", "A B", "ÄBC", "X" * 17, "..", ".A", "", None, 7])
def test_tickers_the_lake_cannot_store_are_recognised(odd):
    assert not params.storable_symbol(odd)


def test_all_means_every_symbol():
    assert params.symbol_list("all") is None and params.symbol_list(" ALL ") is None


@given(st.lists(st.integers(1, params.MAX_INTERVAL), min_size=1, max_size=8))
def test_intervals_from_text_or_ints(ns):
    want = tuple(sorted(set(ns)))
    assert params.intervals(",".join(map(str, ns))) == want == params.intervals(ns)


@pytest.mark.parametrize("bad", ["", "3,,5", "3;5", "0", "-3", "3.5", str(params.MAX_INTERVAL + 1), [0], [True], []])
def test_bad_intervals_are_refused(bad):
    with pytest.raises(ParameterError, match="parameter intervals"):
        params.intervals(bad)


@pytest.mark.parametrize("bad", ["../x", "a/b", ".hidden", "", "x" * 129, 7])
def test_run_ids_cannot_escape_a_folder(bad):
    with pytest.raises(ParameterError, match="parameter run_id"):
        params.run_id(bad)
