"""The bronze layer's owner: daily files, each symbol's history file, the quarantine, and the one merge rule.

Every writer of a symbol's ``data.parquet`` (fetch's history backfills, the migration, compaction) goes
through ``update_history``, and every reader that meets the same bar twice (those three and the
resampler's SQL) resolves it by the same rule, ``merge_rows`` / ``DEDUP_ORDER_SQL``:

    per (symbol, session date) the row with the newest ``ingested_at`` wins; a row without one is the
    oldest; on a tie the source ranked higher wins (a daily file 2 > a history file 1 > the DMS export 0);
    on a full tie the smallest (close, volume, open, high, low), so the result never depends on read order.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from condvest.bars import BRONZE_SCHEMA, QUARANTINE_SCHEMA, to_table
from condvest.changes import record_changes
from condvest.errors import CorruptObject, StorageError
from condvest.lake import batch_key, bronze_daily_key, bronze_history_key, parse_bronze_key, quarantine_key
from condvest.parquet_rows import parquet_bytes, row_files
from condvest.storage import Store, update_object

log = logging.getLogger(__name__)

_NY = "America/New_York"


def write_daily_files(store: Store, df: pd.DataFrame, threads: int | None = None, run_id: str | None = None) -> int:
    """One ``symbol=X/date=D.parquet`` per row (rows already unique on (symbol, date)); returns files written.

    The files are encoded at once (``parquet_rows.row_files``), then written by ``threads`` workers (default
    ``store.write_threads``). With ``run_id``, the rows are then also written as one batch object per session
    (``bronze/_batches/date=D/<run_id>.parquet``) naming each file's key and etag: a reader that finds the
    same etag on a file may take the row from the batch instead of opening the file (02_resample's
    incremental run reads one object instead of thousands). The daily files stay the source of truth; a
    file rewritten later has another etag and is read itself. Last, one change object names every file written
    and its etag (``condvest.changes``: a daily 02_resample reads it instead of listing bronze).
    """
    if df.empty:
        if run_id is not None:  # the run's manifest entries are explained by the change log (condvest.changes)
            record_changes(store, [], [], run_id)
        return 0
    table = to_table(df).replace_schema_metadata(None)
    dates = table.column("date").to_pylist()
    keys = [bronze_daily_key(sym, day) for sym, day in zip(table.column("symbol").to_pylist(), dates, strict=True)]

    files = row_files(table)  # encoded at once, by layout (condvest.parquet_rows; figures in BENCHMARKS.md)

    def write(i: int) -> str:
        return store.put(keys[i], files[i])

    with ThreadPoolExecutor(max_workers=max(1, threads or store.write_threads)) as pool:
        etags = list(pool.map(write, range(len(keys))))
    if run_id is not None:
        batch = table.append_column("key", pa.array(keys, pa.string())).append_column(
            "etag", pa.array(etags, pa.string())
        )
        for day in sorted(set(dates)):
            part = batch.filter(pc.equal(batch.column("date"), pa.scalar(day, pa.date32())))
            store.put(batch_key(day, run_id), parquet_bytes(part))
    record_changes(store, keys, etags, run_id)  # last: a daily resample reads the log instead of listing bronze
    return len(keys)


#: columns a bronze object may lack (older writers); filled with nulls when read
OPTIONAL_COLUMNS = ("vwap", "transactions", "ingested_at")


def _legacy_columns(t: pa.Table, key: str) -> pa.Table:
    """The previous fetcher's shape made readable: a naive ``timestamp`` (micro- or nanoseconds) is UTC, and
    without a ``date`` column the session is the New York date of ``timestamp``."""
    if "timestamp" not in t.column_names:
        return t
    ts = t.column("timestamp")
    if not pa.types.is_timestamp(ts.type):
        raise CorruptObject(f"column timestamp is {ts.type}, not a timestamp", key=key)
    if ts.type.tz is None:
        ts = ts.cast(pa.timestamp(ts.type.unit, tz="UTC"))
        t = t.set_column(t.column_names.index("timestamp"), "timestamp", ts)
    if "date" not in t.column_names:
        stamps = pd.Series(ts.to_pandas(), copy=False)
        days = pd.to_datetime(stamps, utc=True).dt.tz_convert(_NY).dt.date
        t = t.append_column("date", pa.array(days, pa.date32()))
    return t


def read_bronze_bytes(key: str, data: bytes) -> pa.Table:
    """A bronze parquet object's bytes in ``BRONZE_SCHEMA``; anything unreadable is an error naming ``key``.

    Files of the previous fetcher are read as they are: no ``date`` column (the New York date of
    ``timestamp`` is taken), a naive ``timestamp`` (read as UTC, micro- or nanoseconds), integer volume."""
    try:
        t = pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError) as exc:
        raise CorruptObject(f"unreadable parquet: {exc}", key=key) from exc
    t = _legacy_columns(t, key)
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
    """After a bulk (DuckDB) read failed with ``exc``: the first of ``keys`` that is unreadable or, for a bronze
    object, lacks a column or holds one that does not cast to ``BRONZE_SCHEMA``, named. When no single object
    is at fault, the error names the common prefix of ``keys`` (never a healthy object)."""
    for key in keys:
        try:
            data = store.get(key)
            if parse_bronze_key(key) is not None:
                read_bronze_bytes(key, data)
            else:
                pq.read_metadata(io.BytesIO(data))
        except (pa.ArrowException, OSError) as bad:
            return CorruptObject(f"unreadable parquet: {bad}", key=key)
        except StorageError as bad:
            return bad
    prefix = os.path.commonprefix(keys).rpartition("/")[0] + "/" if keys else "<none>"
    return StorageError(f"{len(keys)} objects could not be read together, none alone at fault: {exc}", key=prefix)


#: the rank of each source on an ``ingested_at`` tie (higher wins); the resampler's SQL uses the same numbers
SOURCE_RANK = {"dms": 0, "history": 1, "daily": 2}
#: the merge rule as a DuckDB ORDER BY within (symbol, date), over columns ``ingested_at`` and ``src_rank``
DEDUP_ORDER_SQL = "ingested_at DESC NULLS LAST, src_rank DESC, close, volume, open, high, low"
_TIE_BREAK = ("close", "volume", "open", "high", "low")


def merge_rows(parts: Sequence[tuple[pa.Table, str]]) -> pa.Table:
    """One row per (symbol, date) of ``parts`` (tables in ``BRONZE_SCHEMA``, each with its source: ``"daily"``,
    ``"history"`` or ``"dms"``), sorted by symbol and date, by the module's merge rule. Pure; merging the same
    rows again changes nothing."""
    tables = [t.append_column("_rank", pa.array([SOURCE_RANK[src]] * t.num_rows, pa.int8())) for t, src in parts]
    if not tables:
        return BRONZE_SCHEMA.empty_table()
    t = pa.concat_tables(tables)
    t = t.append_column("_ing", pc.fill_null(t.column("ingested_at").cast(pa.int64()), -(2**62)))
    keys = [("symbol", "ascending"), ("date", "ascending"), ("_ing", "descending"), ("_rank", "descending")]
    t = t.sort_by([*keys, *((c, "ascending") for c in _TIE_BREAK if c in t.column_names)])
    sym = t.column("symbol").combine_chunks()
    day = t.column("date").combine_chunks().cast(pa.int32())
    return t.filter(pc.or_(_changed(sym), _changed(day))).drop_columns(["_rank", "_ing"])


def _changed(col: pa.Array) -> pa.Array:
    """True where a value differs from the one before it (the first row is always True)."""
    n = len(col)
    if n == 0:
        return pa.array([], pa.bool_())
    prev = pa.concat_arrays([col.slice(0, 1), col.slice(0, n - 1)])
    out = pc.not_equal(col, prev).to_numpy(zero_copy_only=False).copy()
    out[0] = True
    return pa.array(out)


def history_bytes(table: pa.Table) -> bytes:
    """Parquet bytes of one history: snappy, dictionary pages only for the repetitive text columns (encoding
    every float column as a dictionary costs twice the time and makes the file bigger)."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="snappy", use_dictionary=["symbol", "interval"])
    return buf.getvalue()


@dataclass(frozen=True)
class HistoryWrite:
    symbol: str
    rows: int  # rows in the written file
    prior_rows: int  # rows the file held before (0: a new file)
    old_etag: str | None  # the version merged into (None: there was none)
    new_etag: str


def update_history(
    store: Store, symbol: str, parts: Sequence[tuple[pa.Table, str]], *, exists: bool = True
) -> HistoryWrite:
    """Merge ``parts`` into ``symbol=X/data.parquet`` by ``merge_rows`` through ``storage.update_object``: the write
    is conditional on the version read and retried from a fresh read when another writer got in between, so no
    writer's rows are lost. ``exists=False`` skips the first read (a new symbol). An unreadable history is
    ``CorruptObject`` (never overwritten); ``UpdateContended`` (a ``PreconditionFailed``) when the races run out."""
    done = update_object(
        store,
        bronze_history_key(symbol),
        partial(_merge_into_history, parts),
        read=read_bronze_bytes,
        write=history_bytes,
        exists=exists,
        what="bronze history write",
    )
    prior_rows = done.before.num_rows if done.before is not None else 0
    return HistoryWrite(symbol, done.after.num_rows, prior_rows, done.old_etag, done.etag)


def _merge_into_history(parts: Sequence[tuple[pa.Table, str]], prior: pa.Table | None) -> pa.Table:
    return merge_rows([*([(prior, "history")] if prior is not None else []), *parts])


def write_quarantine(store: Store, day: dt.date, run_id: str, df: pd.DataFrame) -> str | None:
    """Rows that failed the bar checks, with their reason; returns the key or None when there were none."""
    if df.empty:
        return None
    key = quarantine_key(day, run_id)
    table = pa.Table.from_pandas(df[QUARANTINE_SCHEMA.names], schema=QUARANTINE_SCHEMA, preserve_index=False)
    store.put(key, parquet_bytes(table.replace_schema_metadata(None)))
    log.warning("quarantine=written key=%s rows=%d", key, len(df))
    return key
