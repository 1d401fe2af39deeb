"""Validation of a migration: per symbol, the export's rows against what bronze now holds.

Both sides are DuckDB aggregates. The source side is the deduplicated export (the rows the migration chose,
in memory: one symbol group at a time, see ``migrate_read``); the target side is read back from the written
``data.parquet`` objects (on S3 fetched many at a time by ``storage.local_files``, then read as files). Per
symbol: row count, first and last session, and a checksum, the sum (mod 2**64) of a 64-bit hash of every row's
values (session, timestamp, OHLCV, vwap, transactions, interval, ingested_at).

1. Both sides are aggregated per symbol without a join. Where all four agree, bronze holds exactly the
   export's rows for that symbol: ``ok``. That is every symbol of a migration into an empty bronze.
2. The other symbols (a history that existed before, or a real fault) are joined on (symbol, session):
   every source row must be found in bronze (``missing`` = 0) exactly once (``target_matches``) with
   identical values (``checksum_ok`` over the matched rows), except rows that a newer bronze write
   legitimately replaced (``superseded``, counted apart); rows bronze holds beyond the export (earlier
   fetches) are reported as ``other_rows`` and are fine; bronze's first and last session must not lie
   inside the source's range.

Everything is bound (the file lists and the symbol list are parameters or registered tables); the SQL
is fixed text.
"""

from __future__ import annotations

import logging

import duckdb
import pandas as pd
import pyarrow as pa

from condvest.bronze import find_corrupt_object
from condvest.duck import connect
from condvest.lake import bronze_history_key
from condvest.migrate.read import SourceRows
from condvest.storage import Store, local_files

log = logging.getLogger(__name__)

_HASH = 'hash(date, "timestamp", open, high, low, close, volume, vwap, transactions, "interval", ingested_at)'
_AGG = (
    "SELECT symbol, count(*) AS n, min(date) AS lo, max(date) AS hi, "
    "CAST(coalesce(sum(h), 0) % 18446744073709551616 AS UBIGINT) AS checksum FROM ({rows}) GROUP BY symbol"
)
_SOURCE_ROWS = f"SELECT symbol, date, ingested_at, {_HASH} AS h FROM src WHERE _win"
_TARGET_ROWS = (
    f"SELECT CAST(symbol AS VARCHAR) AS symbol, date, CAST(ingested_at AS TIMESTAMPTZ) AS ingested_at, "
    f"{_HASH} AS h FROM read_parquet($files)"
)
_SOURCE = f"CREATE OR REPLACE TEMP TABLE s AS {_SOURCE_ROWS} AND symbol IN (SELECT symbol FROM wanted)"
_TARGET = f"CREATE OR REPLACE TEMP TABLE t AS {_TARGET_ROWS}"
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


def _connect(store: Store, memory_limit: str | None) -> duckdb.DuckDBPyConnection:
    con = connect(store, memory_limit=memory_limit)
    con.execute("SET preserve_insertion_order = false")
    return con


def empty_validation() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in COLUMNS})


def validate(store: Store, src: SourceRows, *, memory_limit: str | None = None) -> pd.DataFrame:
    """One row per symbol of ``src`` (the export, or one symbol group of it; columns ``COLUMNS``), sorted by
    symbol; ``ok`` is the verdict. DuckDB works within ``memory_limit`` (default: its own)."""
    if not src.symbols:
        return empty_validation()
    keys = [bronze_history_key(s) for s in src.symbols]
    con = _connect(store, memory_limit)
    try:
        with local_files(store, keys) as paths:
            df = _validate(con, store, src, keys, paths)
    finally:
        con.close()
    log.info(
        "validation symbols=%d failed=%d source_rows=%d target_rows=%d",
        len(df),
        int((~df["ok"]).sum()),
        int(df["source_rows"].sum()),
        int(df["target_rows"].sum()),
    )
    return df[COLUMNS]


def _validate(
    con: duckdb.DuckDBPyConnection, store: Store, src: SourceRows, keys: list[str], paths: dict[str, str]
) -> pd.DataFrame:
    """Steps 1 and 2 with the written histories at ``paths`` (key -> local path or URL)."""
    con.register("src", src.table.append_column("_win", src.winners_mask()))
    source = con.execute(_AGG.format(rows=_SOURCE_ROWS)).df()
    files = [paths[k] for k in keys]
    try:
        target = con.execute(_AGG.format(rows=_TARGET_ROWS), {"files": files}).df()
    except duckdb.Error as exc:
        raise find_corrupt_object(store, keys, exc) from exc
    df = _compare(src, source, target)
    odd = df.loc[~df["ok"], "symbol"].tolist()
    if odd:
        log.info("validation joining symbols=%d whose aggregates differ", len(odd))
        df = pd.concat([df[df["ok"]], _joined(con, src, odd, keys, store, paths)], ignore_index=True)
        df = df.sort_values("symbol", ignore_index=True)
    return df


def _base(src: SourceRows) -> pd.DataFrame:
    n = src.ends - src.starts
    return pd.DataFrame({"symbol": src.symbols, "source_rows": n, "duplicates": src.raw_counts - n})


def _hex(col: pd.Series) -> pd.Series:
    return col.map(lambda v: f"{int(v):016x}" if pd.notna(v) else "")


def _dates(df: pd.DataFrame) -> pd.DataFrame:
    for c in ("first_session", "last_session", "target_first", "target_last"):
        df[c] = pd.to_datetime(df[c]).dt.date
    return df


def _compare(src: SourceRows, source: pd.DataFrame, target: pd.DataFrame) -> pd.DataFrame:
    """Step 1: per-symbol aggregates side by side; ``ok`` where they agree exactly."""
    s = source.rename(columns={"lo": "first_session", "hi": "last_session", "checksum": "source_checksum"})
    t = target.rename(
        columns={"n": "target_rows", "lo": "target_first", "hi": "target_last", "checksum": "target_checksum"}
    )
    df = _base(src).merge(s.drop(columns="n"), on="symbol", how="left").merge(t, on="symbol", how="left")
    df["target_rows"] = df["target_rows"].fillna(0).astype("int64")
    df["checksum_ok"] = df["source_checksum"] == df["target_checksum"]
    same = (
        df["checksum_ok"]
        & (df["target_rows"] == df["source_rows"])
        & (df["target_first"] == df["first_session"])
        & (df["target_last"] == df["last_session"])
    )
    df["missing"] = 0
    df["superseded"] = 0
    df["other_rows"] = 0
    df["ok"] = same
    df["source_checksum"], df["target_checksum"] = _hex(df["source_checksum"]), _hex(df["target_checksum"])
    return _dates(df)


def _joined(
    con: duckdb.DuckDBPyConnection,
    src: SourceRows,
    symbols: list[str],
    keys: list[str],
    store: Store,
    paths: dict[str, str],
) -> pd.DataFrame:
    """Step 2: the row-level join for ``symbols`` (those whose aggregates differ)."""
    wanted = set(symbols)
    con.register("wanted", pa.table({"symbol": pa.array(sorted(wanted), pa.string())}))
    con.execute(_SOURCE)
    files = [k for k, sym in zip(keys, src.symbols, strict=True) if sym in wanted]
    try:
        con.execute(_TARGET, {"files": [paths[k] for k in files]})
    except duckdb.Error as exc:
        raise find_corrupt_object(store, files, exc) from exc
    joined = con.execute(_JOINED).df()
    totals = con.execute(_TARGET_TOTALS).df()
    base = _base(src)
    df = base[base["symbol"].isin(wanted)].merge(joined, on="symbol", how="left").merge(totals, on="symbol", how="left")
    for c in ("target_rows", "found", "target_matches", "superseded"):
        df[c] = df[c].fillna(0).astype("int64")
    df["missing"] = df["source_rows"] - df["found"]
    df["other_rows"] = df["target_rows"] - df["found"]
    df["checksum_ok"] = df["source_checksum"] == df["target_checksum"]
    df["source_checksum"], df["target_checksum"] = _hex(df["source_checksum"]), _hex(df["target_checksum"])
    df = _dates(df)
    df["ok"] = (
        (df["missing"] == 0)
        & (df["target_matches"] == df["source_rows"])
        & df["checksum_ok"]
        & (df["target_first"] <= df["first_session"])
        & (df["target_last"] >= df["last_session"])
    )
    return df
