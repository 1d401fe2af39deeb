"""The migration's write side: one ``bronze/raw_ohlcv/symbol=SYM/data.parquet`` per symbol.

Symbols are written in sorted order, in batches, by a thread pool (parquet encoding and the store's
I/O release the GIL). After each batch the progress state is saved; a killed run resumes after the last
saved symbol, and rewrites at most one batch.

A symbol whose ``data.parquet`` already exists (an earlier backfill, or this migration's own write
before a crash) is merged, never replaced: one row per session, the newest ``ingested_at`` winning
(null oldest), ties to the row already in bronze. Migrated rows carry the DMS load time, so a bar a
daily fetch wrote later stays; merging the same export twice gives the same file. Writes are
conditional (``If-None-Match`` for a new file, ``If-Match`` on the etag read for a merge) and a lost
race is retried with a fresh read, so a concurrent writer's rows are never dropped.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from condvest.bronze import read_bronze_bytes
from condvest.crash import crash_point
from condvest.errors import ObjectNotFound, PreconditionFailed, StorageError
from condvest.lake import BRONZE_PREFIX, bronze_history_key, parse_bronze_key
from condvest.migrate.read import SourceRows
from condvest.migrate.state import MigrationState
from condvest.storage import Store

log = logging.getLogger(__name__)

_ATTEMPTS = 5


@dataclass(frozen=True)
class SymbolWrite:
    symbol: str
    rows: int  # rows in the written file
    prior_rows: int  # rows the existing data.parquet held (0: new file)


def existing_histories(store: Store) -> set[str]:
    """Symbols that already have a ``data.parquet`` (one listing of the bronze prefix)."""
    out = set()
    for o in store.list(BRONZE_PREFIX + "/"):
        parsed = parse_bronze_key(o.key)
        if parsed is not None and parsed[1] is None:
            out.add(parsed[0])
    return out


def merge_history(prior: pa.Table, migrated: pa.Table) -> pa.Table:
    """One row per date from ``prior`` (bronze) and ``migrated`` (DMS), sorted by date: the newest
    ``ingested_at`` wins (null oldest), ties to ``prior``. Pure; merging the same rows again changes nothing."""
    t = pa.concat_tables([prior, migrated])
    rank = np.concatenate([np.ones(prior.num_rows, np.int8), np.zeros(migrated.num_rows, np.int8)])
    ing = pc.fill_null(t.column("ingested_at").combine_chunks().cast(pa.int64()), -(2**62)).to_numpy()
    days = t.column("date").combine_chunks().view(pa.int32()).to_numpy()
    order = np.lexsort((rank, ing, days))  # the last of each date wins
    d = days[order]
    last = np.ones(len(d), dtype=bool)
    last[:-1] = d[1:] != d[:-1]
    return t.take(pa.array(order[last]))


def history_bytes(table: pa.Table) -> bytes:
    """Parquet bytes of one history: snappy, dictionary pages only for the repetitive text columns (encoding
    every float column as a dictionary costs twice the time and makes the file bigger)."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="snappy", use_dictionary=["symbol", "interval"])
    return buf.getvalue()


def write_symbol(store: Store, symbol: str, rows: pa.Table, exists: bool) -> SymbolWrite:
    """Write (or merge into) the symbol's ``data.parquet``; conditional, retried on a lost race."""
    key = bronze_history_key(symbol)
    for _ in range(_ATTEMPTS):
        if not exists:
            try:
                store.put(key, history_bytes(rows), if_none_match=True)
                return SymbolWrite(symbol, rows.num_rows, 0)
            except PreconditionFailed:
                exists = True  # someone wrote it meanwhile: merge with theirs
                continue
        try:
            data, etag = store.get_with_etag(key)
        except ObjectNotFound:
            exists = False
            continue
        prior = read_bronze_bytes(key, data)
        merged = merge_history(prior, rows)
        try:
            store.put(key, history_bytes(merged), if_match=etag)
        except PreconditionFailed:
            continue
        return SymbolWrite(symbol, merged.num_rows, prior.num_rows)
    raise StorageError(f"lost {_ATTEMPTS} write races in a row to another bronze writer", key=key)


def _batches(n: int, size: int) -> list[tuple[int, int]]:
    return [(i, min(n, i + size)) for i in range(0, n, size)]


def write_histories(
    store: Store,
    src: SourceRows,
    state: MigrationState,
    *,
    threads: int = 4,
    batch_symbols: int = 256,
    progress: bool = True,
    on_batch: Callable[[list[SymbolWrite]], None] | None = None,
) -> list[SymbolWrite]:
    """Write every symbol after ``state.written_through``; save ``state`` after each batch."""
    todo = [i for i, s in enumerate(src.symbols) if state.written_through is None or s > state.written_through]
    if not todo:
        return []
    existing = existing_histories(store)
    done: list[SymbolWrite] = []

    def one(i: int) -> SymbolWrite:
        sym = src.symbols[i]
        return write_symbol(store, sym, src.symbol_rows(i), sym in existing)

    bar = tqdm(total=len(todo), desc="write bronze", unit="symbol", disable=not progress)
    try:
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            for k, (lo, hi) in enumerate(_batches(len(todo), batch_symbols), start=1):
                batch = list(pool.map(one, todo[lo:hi]))
                crash_point(f"migrate.write_batch.{k}")  # files of this run's k-th batch written, state not saved
                state.written_through = batch[-1].symbol
                state.files_written += len(batch)
                state.rows_written += sum(w.rows for w in batch)
                state.merged_symbols += sum(1 for w in batch if w.prior_rows)
                state.save(store)
                done.extend(batch)
                bar.update(len(batch))
                if on_batch is not None:
                    on_batch(batch)
    finally:
        bar.close()
    log.info(
        "bronze histories written run_id=%s files=%d merged=%d",
        state.run_id,
        len(done),
        sum(1 for w in done if w.prior_rows),
    )
    return done
