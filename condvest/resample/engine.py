"""The resampler's own DuckDB SQL: aggregate numbered bronze rows into bars, and encode silver month files.

The rows come from ``condvest.lake_read`` (bronze deduplicated and numbered, shared with 06_explore). All SQL is
fixed text; table names come from ``lake_read.TABLES``, every value (intervals, dates) is bound. Bars of
interval N: per symbol, sessions numbered 0, 1, … from its first bar (column ``i``); sessions
``k·N … k·N+N−1`` form bar k: first open, max high, min low, last close, summed volume, labelled with the first
session (``date``), plus ``end_date`` and ``sessions`` (< N: the trailing, still-open bar).
"""

from __future__ import annotations

import io
import re

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from condvest.lake_read import TABLES

SILVER_SCHEMA = pa.schema(
    [
        ("symbol", pa.string()),
        ("date", pa.date32()),
        ("end_date", pa.date32()),
        ("open", pa.float64()),
        ("high", pa.float64()),
        ("low", pa.float64()),
        ("close", pa.float64()),
        ("volume", pa.float64()),
        ("sessions", pa.int32()),
    ]
)
SILVER_COLUMNS = SILVER_SCHEMA.names
#: a silver file: the bars plus ``ts``, the first session's 00:00 New York as a naive UTC timestamp (the column
#: the previous pipeline's silver files had, so their readers keep working); derived from ``date`` on write
SILVER_FILE_SCHEMA = SILVER_SCHEMA.insert(2, pa.field("ts", pa.timestamp("us")))

# the bars of one interval from table {src} (an allow-listed name), rows at or after each symbol's cut. Volume is
# summed exactly (as a decimal of 4 places, as cheap as a double sum): a double sum depends on the order DuckDB's
# threads add the sessions in, so two runs over the same bronze could differ in a volume's last bit; this way
# full, incremental and sharded runs give the same bits.
_BARS = """
SELECT symbol, min(date) AS date, max(date) AS end_date, arg_min(open, i) AS open, max(high) AS high,
       min(low) AS low, arg_max(close, i) AS close, CAST(sum(CAST(volume AS DECIMAL(18, 4))) AS DOUBLE) AS volume,
       CAST(count(*) AS INTEGER) AS sessions
FROM {src} {where}
GROUP BY symbol, i // {n}
"""


def bars_sql(src: str, param: str = "n", with_cut: bool = False) -> str:
    """The aggregation over table ``src`` of the interval bound to ``$<param>``; with ``with_cut`` only the
    rows at or after each symbol's first recomputed index (table ``cuts``)."""
    if src not in TABLES or not re.fullmatch(r"n\d{0,2}", param):
        raise ValueError(f"bad bars_sql arguments {src!r} {param!r}")
    where = f"JOIN cuts c USING (symbol) WHERE {src}.i >= c.b" if with_cut else ""
    return _BARS.format(src=src, where=where, n="$" + param)


def _session_ts(dates: pa.ChunkedArray | pa.Array) -> pa.Array:
    """00:00 New York of each date, as naive UTC timestamps."""
    local = pc.cast(pc.cast(dates, pa.timestamp("s")), pa.timestamp("us"))
    utc = pc.assume_timezone(local, "America/New_York")
    return pc.cast(utc, pa.timestamp("us"))


def silver_table(table: pa.Table) -> pa.Table:
    """The bars of ``table`` as a silver file holds them: its columns and types, plus ``ts``."""
    bars = table.select(SILVER_COLUMNS).cast(SILVER_SCHEMA)
    return bars.add_column(2, "ts", _session_ts(bars.column("date"))).cast(SILVER_FILE_SCHEMA)


def encode_silver(bars: pa.Table) -> bytes:
    """A silver file's bytes from a ``silver_table``."""
    buf = io.BytesIO()
    # dictionary pages for the symbol only: a month's prices repeat nowhere, and trying a dictionary for each
    # float column then falling back was a third of the cost of writing a small month file
    pq.write_table(bars, buf, compression="zstd", use_dictionary=["symbol"])
    return buf.getvalue()


def silver_bytes(table: pa.Table) -> bytes:
    return encode_silver(silver_table(table))
