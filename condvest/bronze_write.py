"""Writing bars into the bronze layer and the quarantine (the source of truth: written first)."""

from __future__ import annotations

import datetime as dt
import io
import logging
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from condvest.bars import BRONZE_SCHEMA, QUARANTINE_SCHEMA, parquet_bytes, to_table
from condvest.errors import CorruptObject, ObjectNotFound
from condvest.lake import bronze_daily_key, bronze_history_key, quarantine_key
from condvest.storage import Store

log = logging.getLogger(__name__)


def write_daily_files(store: Store, df: pd.DataFrame, threads: int = 4) -> int:
    """One ``symbol=X/date=D.parquet`` per row (rows already unique on (symbol, date)); returns files written.

    Each worker both encodes and writes its files, so encoding runs in parallel with the I/O.
    """
    if df.empty:
        return 0
    table = to_table(df).replace_schema_metadata(None)
    keys = [
        bronze_daily_key(sym, day)
        for sym, day in zip(table.column("symbol").to_pylist(), table.column("date").to_pylist(), strict=True)
    ]

    def write(i: int) -> None:
        store.put(keys[i], parquet_bytes(table.slice(i, 1)))

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for _ in pool.map(write, range(len(keys)), chunksize=64):
            pass
    return len(keys)


def read_parquet_object(store: Store, key: str, schema: pa.Schema = BRONZE_SCHEMA) -> pa.Table:
    """Read one parquet object into ``schema``; a file that cannot be parsed is an error naming it."""
    raw = store.get(key)
    try:
        table = pq.read_table(io.BytesIO(raw))
    except (pa.ArrowInvalid, OSError) as exc:
        raise CorruptObject(key, f"unreadable parquet: {exc}") from exc
    try:
        return table.select(schema.names).cast(schema)
    except (KeyError, pa.ArrowInvalid) as exc:
        raise CorruptObject(key, f"unexpected columns or types: {exc}") from exc


def merge_history(store: Store, symbol: str, df: pd.DataFrame) -> int:
    """Merge bars into ``symbol=X/data.parquet``: one row per date, the newest ``ingested_at`` winning."""
    key = bronze_history_key(symbol)
    new = to_table(df).replace_schema_metadata(None)
    try:
        old = read_parquet_object(store, key)
        merged = pa.concat_tables([old, new])
    except ObjectNotFound:
        merged = new
    # newest write wins: sort by date, then ingested_at descending, keep the first of each date
    order = pc.sort_indices(merged, sort_keys=[("date", "ascending"), ("ingested_at", "descending")])
    merged = merged.take(order)
    dates = merged.column("date").to_numpy(zero_copy_only=False)
    keep = [0] + [i for i in range(1, len(dates)) if dates[i] != dates[i - 1]] if len(dates) else []
    merged = merged.take(pa.array(keep, type=pa.int64()))
    store.put(key, parquet_bytes(merged))
    return merged.num_rows


def write_quarantine(store: Store, day: dt.date, run_id: str, df: pd.DataFrame) -> str | None:
    """Rows that failed the bar checks, with their reason; returns the key or None when there were none."""
    if df.empty:
        return None
    key = quarantine_key(day, run_id)
    table = pa.Table.from_pandas(df[QUARANTINE_SCHEMA.names], schema=QUARANTINE_SCHEMA, preserve_index=False)
    store.put(key, parquet_bytes(table.replace_schema_metadata(None)))
    log.warning("quarantine=written key=%s rows=%d", key, len(df))
    return key
