"""The migration's write side: one ``bronze/raw_ohlcv/symbol=SYM/data.parquet`` per symbol.

Symbols are written in sorted order (a symbol group at a time, ``migrate_read``), in batches, by a thread
pool (parquet encoding and the store's I/O release the GIL). After each batch the progress state is saved; a
killed run resumes after the last saved symbol, and rewrites at most one batch.

A symbol whose ``data.parquet`` already exists (an earlier backfill, or this migration's own write
before a crash) is merged, never replaced, by ``condvest.bronze``'s one merge rule (the newest
``ingested_at`` wins; a tie goes to the row already in bronze). Migrated rows carry the DMS load time, so a
bar a daily fetch wrote later stays; merging the same export twice gives the same file. The write is
``bronze.update_history``'s: conditional on the version read and retried from a fresh read, so a concurrent
writer's rows are never dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
from tqdm.auto import tqdm

from condvest.bronze import HistoryWrite, update_history
from condvest.crash import crash_point
from condvest.lake import BRONZE_PREFIX, parse_bronze_key
from condvest.migrate.read import SourceRows
from condvest.migrate.state import MigrationState
from condvest.storage import Store

log = logging.getLogger(__name__)


def existing_histories(store: Store) -> set[str]:
    """Symbols that already have a ``data.parquet`` (one listing of the bronze prefix)."""
    out = set()
    for o in store.list(BRONZE_PREFIX + "/"):
        parsed = parse_bronze_key(o.key)
        if parsed is not None and parsed[1] is None:
            out.add(parsed[0])
    return out


def write_symbol(store: Store, symbol: str, rows: pa.Table, exists: bool) -> HistoryWrite:
    """Write (or merge into) the symbol's ``data.parquet``: ``bronze.update_history``, the rows ranked as the
    DMS export (a row already in bronze wins a tie)."""
    return update_history(store, symbol, [(rows, "dms")], exists=exists)


def _batches(n: int, size: int) -> list[tuple[int, int]]:
    return [(i, min(n, i + size)) for i in range(0, n, size)]


def write_histories(
    store: Store,
    src: SourceRows,
    state: MigrationState,
    *,
    threads: int = 4,
    batch_symbols: int = 256,
    existing: set[str] | None = None,
    batches_before: int = 0,
    bar: tqdm | None = None,
    on_batch: Callable[[list[HistoryWrite]], None] | None = None,
) -> list[HistoryWrite]:
    """Write every symbol of ``src`` (one symbol group, or the whole export) after ``state.written_through``;
    save ``state`` after each batch; ``threads`` histories at a time (at least ``store.write_threads``).
    ``existing``: the symbols that already have a history (default: listed here); ``batches_before``: this run's
    batches already written by earlier groups (the crash points count the run's batches); ``bar``: a progress bar
    to advance by the symbols written."""
    todo = [i for i, s in enumerate(src.symbols) if state.written_through is None or s > state.written_through]
    if not todo:
        return []
    if existing is None:
        existing = existing_histories(store)
    done: list[HistoryWrite] = []

    def one(i: int) -> HistoryWrite:
        sym = src.symbols[i]
        return write_symbol(store, sym, src.symbol_rows(i), sym in existing)

    # an object store's conditional PUTs wait on the network: at least ``store.write_threads`` of them in flight
    with ThreadPoolExecutor(max_workers=max(1, threads, store.write_threads)) as pool:
        for k, (lo, hi) in enumerate(_batches(len(todo), batch_symbols), start=batches_before + 1):
            batch = list(pool.map(one, todo[lo:hi]))
            crash_point(f"migrate.write_batch.{k}")  # files of this run's k-th batch written, state not saved
            state.written_through = batch[-1].symbol
            state.files_written += len(batch)
            state.rows_written += sum(w.rows for w in batch)
            state.merged_symbols += sum(1 for w in batch if w.prior_rows)
            state.save(store)
            done.extend(batch)
            if bar is not None:
                bar.update(len(batch))
            if on_batch is not None:
                on_batch(batch)
    log.info(
        "bronze histories written run_id=%s files=%d merged=%d",
        state.run_id,
        len(done),
        sum(1 for w in done if w.prior_rows),
    )
    return done


def batches(n_written: int, batch_symbols: int) -> int:
    """How many batches ``write_histories`` used for ``n_written`` symbols."""
    return -(-n_written // batch_symbols)
