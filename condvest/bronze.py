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
from condvest.errors import CorruptObject, ObjectNotFound, StorageError
from condvest.lake import batch_key, bronze_daily_key, bronze_history_key, quarantine_key
from condvest.storage import Store

log = logging.getLogger(__name__)


def write_daily_files(store: Store, df: pd.DataFrame, threads: int = 4, run_id: str | None = None) -> int:
    """One ``symbol=X/date=D.parquet`` per row (rows already unique on (symbol, date)); returns files written.

    Each worker both encodes and writes its files. With ``run_id``, the rows are then also written as one
    batch object per session (``bronze/_batches/date=D/<run_id>.parquet``) naming each file's key and
    etag: a reader that finds the same etag on a file may take the row from the batch instead of opening
    the file (02_resample's incremental run reads one object instead of thousands). The daily files stay
    the source of truth; a file rewritten later has another etag and is read itself.
    """
    if df.empty:
        return 0
    table = to_table(df).replace_schema_metadata(None)
    dates = table.column("date").to_pylist()
    keys = [bronze_daily_key(sym, day) for sym, day in zip(table.column("symbol").to_pylist(), dates, strict=True)]

    def write(i: int) -> str:
        return store.put(keys[i], parquet_bytes(table.slice(i, 1)))

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        etags = list(pool.map(write, range(len(keys))))
    if run_id is not None:
        batch = table.append_column("key", pa.array(keys, pa.string())).append_column(
            "etag", pa.array(etags, pa.string())
        )
        for day in sorted(set(dates)):
            part = batch.filter(pc.equal(batch.column("date"), pa.scalar(day, pa.date32())))
            store.put(batch_key(day, run_id), parquet_bytes(part))
    return len(keys)


#: columns a bronze object may lack (older writers); filled with nulls when read
OPTIONAL_COLUMNS = ("vwap", "transactions", "ingested_at")


def read_bronze_bytes(key: str, data: bytes) -> pa.Table:
    """A bronze parquet object's bytes in ``BRONZE_SCHEMA``; anything unreadable is an error naming ``key``."""
    try:
        t = pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError) as exc:
        raise CorruptObject(f"unreadable parquet: {exc}", key=key) from exc
    cols = []
    for f in BRONZE_SCHEMA:
        if f.name in t.column_names:
            try:
                cols.append(t.column(f.name).cast(f.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise CorruptObject(f"column {f.name}: {exc}", key=key) from exc
        elif f.name in OPTIONAL_COLUMNS:
            cols.append(pa.chunked_array([pa.nulls(t.num_rows, f.type)]))
        else:
            raise CorruptObject(f"bronze object lacks column {f.name}", key=key)
    return pa.Table.from_arrays(cols, schema=BRONZE_SCHEMA)


def find_corrupt_object(store: Store, keys: list[str], exc: Exception) -> StorageError:
    """After a bulk (DuckDB) read failed with ``exc``: the first of ``keys`` that is unreadable, named."""
    for key in keys:
        try:
            pq.read_metadata(io.BytesIO(store.get(key)))
        except (pa.ArrowException, OSError) as bad:
            return CorruptObject(f"unreadable parquet: {bad}", key=key)
        except StorageError as bad:
            return bad
    return StorageError(f"bronze objects could not be read: {exc}", key=keys[0] if keys else "<none>")


def merge_history(store: Store, symbol: str, df: pd.DataFrame) -> int:
    """Merge bars into ``symbol=X/data.parquet``: one row per date, the newest ``ingested_at`` winning."""
    key = bronze_history_key(symbol)
    new = to_table(df).replace_schema_metadata(None)
    try:
        old = read_bronze_bytes(key, store.get(key))
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
