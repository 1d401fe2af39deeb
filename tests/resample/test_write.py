"""The full rebuild's month writer: a stream of bars in date order is cut into whole months."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from condvest.resample.write import _months


@given(
    st.lists(st.dates(dt.date(1990, 1, 1), dt.date(1993, 12, 31)), max_size=300),
    st.integers(1, 50),
)
def test_each_month_is_yielded_once_whole_and_in_order(days, batch_rows):
    days = sorted(days)
    table = pa.table({"date": pa.array(days, pa.date32()), "i": pa.array(range(len(days)), pa.int64())})
    reader = pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=batch_rows))
    got = [(m, t.column("i").to_pylist()) for m, t in _months(reader)]
    want: dict[int, list[int]] = {}
    for i, d in enumerate(days):
        want.setdefault(d.year * 12 + d.month - 1, []).append(i)
    assert got == sorted(want.items())
