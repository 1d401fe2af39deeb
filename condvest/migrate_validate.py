"""Validation of a migration: per symbol, the export's rows against what bronze now holds.

Both sides are DuckDB aggregates. The source side is the deduplicated export (the rows the migration
chose, in memory); the target side is read back from the written ``data.parquet`` objects through
``Store.url`` (also on S3). They are joined on (symbol, session):

* every source row must be found in bronze (``missing`` = 0), exactly once (``target_matches``);
* its values must be identical: the sum of a 64-bit hash of each row (session, timestamp, OHLCV,
  vwap, transactions, interval, ingested_at) must agree on both sides (``checksum_ok``), except for
  rows that a newer bronze write legitimately replaced (``superseded``, counted apart);
* the first and last session of the symbol in bronze must not be inside the source's range.

Rows that bronze holds beyond the export (earlier fetches) are reported as ``other_rows`` and are fine.
Everything is bound: the file list and nothing else reaches DuckDB as data; the SQL is fixed text.
"""

from __future__ import annotations

import logging

import duckdb
import pandas as pd
import pyarrow as pa

from condvest.errors import CorruptObject, StorageError
from condvest.lake import bronze_history_key
from condvest.migrate_read import SourceRows
from condvest.storage import Store

log = logging.getLogger(__name__)

_HASH = 'hash(date, "timestamp", open, high, low, close, volume, vwap, transactions, "interval", ingested_at)'
_SOURCE = f"CREATE OR REPLACE TEMP TABLE s AS SELECT symbol, date, ingested_at, {_HASH} AS h FROM src WHERE _win"
_TARGET = (
    f"CREATE OR REPLACE TEMP TABLE t AS SELECT CAST(symbol AS VARCHAR) AS symbol, date, "
    f"CAST(ingested_at AS TIMESTAMPTZ) AS ingested_at, {_HASH} AS h FROM read_parquet($files)"
)
_JOINED = """
SELECT s.symbol,
       count(*) AS target_matches,
       count(t.date) AS found,
       min(s.date) AS first_session, max(s.date) AS last_session,
       count(*) FILTER (WHERE t.ingested_at > s.ingested_at
                        OR (s.ingested_at IS NULL AND t.ingested_at IS NOT NULL)) AS superseded,
       CAST(coalesce(sum(s.h) FILTER (WHERE NOT coalesce(t.ingested_at > s.ingested_at
                     OR (s.ingested_at IS NULL AND t.ingested_at IS NOT NULL), false)), 0)
            % 18446744073709551616 AS UBIGINT) AS source_checksum,
       CAST(coalesce(sum(t.h) FILTER (WHERE NOT coalesce(t.ingested_at > s.ingested_at
                     OR (s.ingested_at IS NULL AND t.ingested_at IS NOT NULL), false)), 0)
            % 18446744073709551616 AS UBIGINT) AS target_checksum
FROM s LEFT JOIN t ON s.symbol = t.symbol AND s.date = t.date
GROUP BY s.symbol
"""
_TARGET_TOTALS = (
    "SELECT symbol, count(*) AS target_rows, min(date) AS target_first, max(date) AS target_last FROM t GROUP BY symbol"
)

COLUMNS = [
    "symbol",
    "source_rows",
    "duplicates",
    "target_rows",
    "missing",
    "superseded",
    "other_rows",
    "first_session",
    "last_session",
    "target_first",
    "target_last",
    "source_checksum",
    "target_checksum",
    "checksum_ok",
    "ok",
]


def _connect(store: Store) -> duckdb.DuckDBPyConnection:
    from condvest.duck import connect

    con = connect(store)
    con.execute("SET preserve_insertion_order = false")
    return con


def empty_validation() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in COLUMNS})


def validate(store: Store, src: SourceRows) -> pd.DataFrame:
    """One row per symbol of the export (columns ``COLUMNS``); ``ok`` is the verdict."""
    if not src.symbols:
        return empty_validation()
    keys = [bronze_history_key(s) for s in src.symbols]
    con = _connect(store)
    try:
        con.register("src", src.table.append_column("_win", src.winners_mask()))
        con.execute(_SOURCE)
        try:
            con.execute(_TARGET, {"files": [store.url(k) for k in keys]})
        except duckdb.Error as exc:
            raise _bad_target(store, keys, exc) from exc
        joined = con.execute(_JOINED).df()
        totals = con.execute(_TARGET_TOTALS).df()
    finally:
        con.close()
    base = pd.DataFrame(
        {
            "symbol": src.symbols,
            "source_rows": src.ends - src.starts,
            "duplicates": src.raw_counts - (src.ends - src.starts),
        }
    )
    df = base.merge(joined, on="symbol", how="left").merge(totals, on="symbol", how="left")
    for c in ("target_rows", "found", "target_matches", "superseded"):
        df[c] = df[c].fillna(0).astype("int64")
    df["missing"] = df["source_rows"] - df["found"]
    df["other_rows"] = df["target_rows"] - df["found"]
    df["checksum_ok"] = df["source_checksum"] == df["target_checksum"]
    for c in ("source_checksum", "target_checksum"):
        df[c] = df[c].map(lambda v: f"{int(v):016x}" if pd.notna(v) else "")
    for c in ("first_session", "last_session", "target_first", "target_last"):
        df[c] = pd.to_datetime(df[c]).dt.date
    df["ok"] = (
        (df["missing"] == 0)
        & (df["target_matches"] == df["source_rows"])
        & df["checksum_ok"]
        & (df["target_first"] <= df["first_session"])
        & (df["target_last"] >= df["last_session"])
    )
    log.info(
        "validation symbols=%d failed=%d source_rows=%d target_rows=%d",
        len(df),
        int((~df["ok"]).sum()),
        int(df["source_rows"].sum()),
        int(df["target_rows"].sum()),
    )
    return df[COLUMNS]


def _bad_target(store: Store, keys: list[str], exc: Exception) -> StorageError:
    """Name the bronze object DuckDB could not read."""
    import io

    import pyarrow.parquet as pq

    for key in keys:
        try:
            pq.read_metadata(io.BytesIO(store.get(key)))
        except (pa.ArrowException, OSError) as bad:
            return CorruptObject(key, f"unreadable parquet: {bad}")
        except StorageError as bad:
            return bad
    return StorageError(keys[0], f"bronze histories could not be read: {exc}")
