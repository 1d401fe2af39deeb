"""The parquet row encoder: a day's one-row daily files, encoded per layout and patched, are byte for byte the
files pyarrow writes for each row."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from condvest.bars import BRONZE_SCHEMA
from condvest.parquet_rows import row_files, row_parquet_bytes

_ROW = st.fixed_dictionaries(
    {
        "T": st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ.-ÄÖ", min_size=1, max_size=12),
        "o": st.floats(allow_nan=True, allow_infinity=True),
        "vw": st.none() | st.floats(),
        "n": st.none() | st.integers(-(2**63), 2**63 - 1),
        "t": st.integers(0, 4_000_000_000_000),
    }
)


@settings(max_examples=40, deadline=None)
@given(st.lists(_ROW, min_size=1, max_size=60), st.integers(0, 5))
def test_daily_files_encoded_by_layout_are_pyarrows_own_bytes(rows, cut):
    # a day's one-row files, patched into one file per layout, must be exactly what pyarrow writes for each row:
    # any text length, nulls, NaN and infinities, -0.0, several chunks, a sliced table
    n = len(rows)
    table = pa.table(
        {
            "symbol": [r["T"] for r in rows],
            "date": pa.array([dt.date(2025, 11, 3) + dt.timedelta(days=i) for i in range(n)], pa.date32()),
            "timestamp": pa.array([r["t"] * 1000 for r in rows], pa.timestamp("us", tz="UTC")),
            "open": [r["o"] for r in rows],
            "high": [-0.0] * n,
            "low": [float(i) for i in range(n)],
            "close": [1.5] * n,
            "volume": [1e9 + i for i in range(n)],
            "vwap": pa.array([r["vw"] for r in rows], pa.float64()),
            "transactions": pa.array([r["n"] for r in rows], pa.int64()),
            "interval": ["1d" if i % 3 else "day" for i in range(n)],
            "ingested_at": pa.array([1_700_000_000_000_000] * n, pa.timestamp("us", tz="UTC")),
        },
        schema=BRONZE_SCHEMA,
    )
    table = pa.concat_tables([table.slice(0, cut), table.slice(cut)]).slice(min(cut, n - 1) // 2)
    want = [row_parquet_bytes(table.slice(i, 1)) for i in range(table.num_rows)]
    assert row_files(table) == want


def test_daily_files_of_other_column_types_are_encoded_by_pyarrow():
    table = pa.table({"symbol": ["A", "BB", "C"], "flag": [True, False, None], "x": [1.0, 2.0, 3.0]})
    assert row_files(table) == [row_parquet_bytes(table.slice(i, 1)) for i in range(3)]
    assert row_files(table.slice(0, 0)) == []
