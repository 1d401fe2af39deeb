"""Lake paths: symbols that could escape a path, bronze keys."""

from __future__ import annotations

import datetime as dt

import pytest

from condvest.errors import ParameterError
from condvest.lake import bronze_daily_key, parse_bronze_key
from condvest.params import symbol as check_symbol


@pytest.mark.parametrize("bad", ["../etc", "A/B", "", "x;DROP TABLE raw_ohlcv", "A B", "..", "a" * 30])
def test_symbols_that_could_escape_a_path_are_rejected(bad):
    with pytest.raises(ParameterError):
        check_symbol(bad)


def test_bronze_keys_round_trip():
    key = bronze_daily_key("BRK.B", dt.date(2025, 10, 17))
    assert key == "bronze/raw_ohlcv/symbol=BRK.B/date=2025-10-17.parquet"
    assert parse_bronze_key(key) == ("BRK.B", dt.date(2025, 10, 17))
    assert parse_bronze_key("bronze/raw_ohlcv/symbol=A/data.parquet") == ("A", None)
